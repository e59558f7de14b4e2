// Offline checks of Kubernetes manifests, for tests/integration/test_k8s.sh.
//
//   node check.mjs validate FILE...      every document against the Kubernetes API schema
//   node check.mjs pod FILE NAME [host]  the pod template of workload NAME as a Pod (podman kube play);
//                                        "host": for --network host, without container ports
//                                        (named probe ports become numbers); and with
//                                        SECRET_DIRS="secret=dir,..." those Secret volumes
//                                        become hostPath volumes of those directories;
//                                        POD_NAME renames the pod (and its claims)
//   node check.mjs command FILE NAME     the first container's command and args, one per line, with
//                                        $(VAR) expanded from the environment as the kubelet does
//   node check.mjs data FILE NAME KEY    ConfigMap NAME's data[KEY], as a pod that mounts it reads it
//
// `validate` uses two offline renderings of the Kubernetes OpenAPI schema:
// kubernetes-models (types, enums, required fields, formats) and
// @kubernetes/client-node's attribute maps (the field names: a misspelled or
// unknown field is an error, as `kubectl apply --validate=strict` would make it).
import fs from "node:fs";
import yaml from "js-yaml";
// client-node is large: loaded only by `validate`.
let k8s = null;

const models = {
  "v1/ConfigMap": ["kubernetes-models/v1/ConfigMap", "ConfigMap", "V1ConfigMap"],
  "v1/Secret": ["kubernetes-models/v1/Secret", "Secret", "V1Secret"],
  "v1/Service": ["kubernetes-models/v1/Service", "Service", "V1Service"],
  "v1/Pod": ["kubernetes-models/v1/Pod", "Pod", "V1Pod"],
  "v1/PersistentVolumeClaim": ["kubernetes-models/v1/PersistentVolumeClaim", "PersistentVolumeClaim", "V1PersistentVolumeClaim"],
  "apps/v1/StatefulSet": ["kubernetes-models/apps/v1/StatefulSet", "StatefulSet", "V1StatefulSet"],
  "apps/v1/Deployment": ["kubernetes-models/apps/v1/Deployment", "Deployment", "V1Deployment"],
  "batch/v1/Job": ["kubernetes-models/batch/v1/Job", "Job", "V1Job"],
};

function docs(file) {
  return yaml.loadAll(fs.readFileSync(file, "utf8")).filter((d) => d !== null && d !== undefined);
}

// Unknown field names, walking the object along client-node's type map.
function strict(obj, type, path, errors) {
  if (obj === null || obj === undefined) return;
  let m;
  if ((m = /^Array<(.+)>$/.exec(type))) {
    if (!Array.isArray(obj)) return errors.push(`${path}: want a list`);
    obj.forEach((v, i) => strict(v, m[1], `${path}[${i}]`, errors));
    return;
  }
  if ((m = /^\{ \[key: string\]: (.+); \}$/.exec(type))) {
    if (typeof obj !== "object" || Array.isArray(obj)) return errors.push(`${path}: want a map`);
    for (const [key, v] of Object.entries(obj)) strict(v, m[1], `${path}.${key}`, errors);
    return;
  }
  const cls = k8s[type];
  if (!cls || typeof cls.getAttributeTypeMap !== "function") return; // a scalar, IntOrString, Quantity...
  if (typeof obj !== "object" || Array.isArray(obj)) return errors.push(`${path}: want an object (${type})`);
  const fields = new Map(cls.getAttributeTypeMap().map((a) => [a.baseName, a.type]));
  for (const [key, v] of Object.entries(obj)) {
    if (!fields.has(key)) errors.push(`${path}.${key}: no such field in ${type}`);
    else strict(v, fields.get(key), `${path}.${key}`, errors);
  }
}

async function validate(files) {
  k8s = await import("@kubernetes/client-node");
  let bad = 0, n = 0;
  for (const file of files) {
    for (const d of docs(file)) {
      n++;
      const key = `${d.apiVersion}/${d.kind}`;
      const name = `${file}: ${d.kind}/${d.metadata?.name}`;
      const entry = models[key];
      if (!entry) { console.log(`${name}: no schema here for ${key}`); bad++; continue; }
      const errors = [];
      const Cls = (await import(entry[0]))[entry[1]];
      try { new Cls(d).validate(); } catch (e) { errors.push(`schema: ${e.message}`); }
      strict(d, entry[2], d.kind, errors);
      if (errors.length) { bad++; console.log(`${name}: INVALID\n  ${errors.join("\n  ")}`); }
      else console.log(`${name}: valid (${key})`);
    }
  }
  if (n === 0) { console.log("no documents"); return 1; }
  return bad ? 1 : 0;
}

function find(file, name) {
  const d = docs(file).find((x) => x.metadata?.name === name && x.spec?.template);
  if (!d) throw new Error(`${file}: no workload ${name}`);
  return d;
}

function pod(file, name, mode) {
  const w = find(file, name);
  const podName = process.env.POD_NAME || name; // a test's own name, to run beside others
  const spec = JSON.parse(JSON.stringify(w.spec.template.spec));
  if (mode === "host") {
    for (const c of spec.containers) {
      const ports = new Map((c.ports ?? []).map((p) => [p.name, p.containerPort]));
      for (const probe of [c.livenessProbe, c.readinessProbe, c.startupProbe])
        if (probe?.httpGet && ports.has(probe.httpGet.port)) probe.httpGet.port = ports.get(probe.httpGet.port);
      delete c.ports;
    }
    const dirs = new Map((process.env.SECRET_DIRS ?? "").split(",").filter(Boolean).map((kv) => kv.split("=")));
    for (const v of spec.volumes ?? [])
      if (v.secret && dirs.has(v.secret.secretName)) {
        v.hostPath = { path: dirs.get(v.secret.secretName), type: "Directory" };
        delete v.secret;
      }
  }
  // A StatefulSet's volumeClaimTemplates become claims of the same name.
  for (const t of w.spec.volumeClaimTemplates ?? [])
    (spec.volumes ??= []).push({ name: t.metadata.name, persistentVolumeClaim: { claimName: `${podName}-${t.metadata.name}` } });
  const out = { apiVersion: "v1", kind: "Pod", metadata: { name: podName, labels: w.spec.template.metadata?.labels ?? {} }, spec };
  process.stdout.write(yaml.dump(out));
  for (const t of w.spec.volumeClaimTemplates ?? [])
    process.stdout.write("---\n" + yaml.dump({ apiVersion: "v1", kind: "PersistentVolumeClaim",
      metadata: { name: `${podName}-${t.metadata.name}` }, spec: t.spec }));
  return 0;
}

function command(file, name) {
  const c = find(file, name).spec.template.spec.containers[0];
  // $(VAR) from the environment; $$(VAR) stays $(VAR); unknown stays as written.
  const expand = (s) => s.replace(/\$\$\(|\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, v) =>
    m === "$$(" ? "$(" : process.env[v] !== undefined ? process.env[v] : m);
  for (const a of [...(c.command ?? []), ...(c.args ?? [])]) console.log(expand(a));
  return 0;
}

function data(file, name, key) {
  const d = docs(file).find((x) => x.kind === "ConfigMap" && x.metadata?.name === name);
  if (!d || typeof d.data?.[key] !== "string") throw new Error(`${file}: no ConfigMap ${name} with data.${key}`);
  process.stdout.write(d.data[key]);
  return 0;
}

const [cmd, ...rest] = process.argv.slice(2);
let rc = 2;
try {
  if (cmd === "validate" && rest.length) rc = await validate(rest);
  else if (cmd === "pod" && (rest.length === 2 || rest.length === 3)) rc = pod(...rest);
  else if (cmd === "command" && rest.length === 2) rc = command(...rest);
  else if (cmd === "data" && rest.length === 3) rc = data(...rest);
  else console.error("usage: check.mjs validate FILE... | pod FILE NAME [host] | command FILE NAME | data FILE NAME KEY");
} catch (e) {
  console.error(e.message);
  rc = 1;
}
process.exit(rc);
