/* `fedopt-client bench`: the device profile of one round (docs/devices.md).
 *
 * Without a server, it goes through what `run` does for one training task,
 * with the session's own pieces (client/task.c) in its order (job_train):
 * the global model as it stands after the receive (one buffer of the
 * model's floats; the frames it came in are counted, not kept), one local
 * epoch at the paper's batch size on the client's share, and the Update plus
 * the delta's tensor frames encoded as they are queued for upload.
 * --low-memory 0 skips the session's low-memory release (the private global
 * model and the trained model's buffers then stay while the delta is
 * encoded, as before that change), for the before/after figure.
 *
 * Peak RSS is the process's high-water mark (VmHWM), so one process measures
 * one model; under qemu-user it includes the emulator, and base_rss (VmRSS
 * before the round) says how much. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "client/commands.h"
#include "client/task.h"
#include "common/base/cli.h"
#include "common/base/error.h"
#include "common/base/rng.h"
#include "common/data/spec.h"
#include "common/net/wire.h"
#include "common/nn/gemm.h"
#include "common/nn/models.h"
#include "common/nn/train.h"

/* The paper's client batch size per model and a typical client share
 * (examples per client: EMNIST's 3,400 writers hold about 200 each, a
 * CIFAR client 100, a Stack Overflow user about 400; Shakespeare's roles
 * vary most). --batch and --examples override them. */
static const struct {
    const char *model;
    size_t batch, examples;
} paper[] = {
    {"logreg", 20, 200},   {"mlp", 20, 200},      {"cnn", 20, 200},      {"autoencoder", 20, 200},
    {"bowlr", 100, 400},   {"charlstm", 4, 100},  {"wordlstm", 16, 400}, {"resnet18gn", 20, 100},
};

void fl_client_cmd_bench_usage(FILE *out)
{
    fprintf(out,
            "usage: fedopt-client bench [--model M] [--json] [--examples N] [--batch B]\n"
            "         [--threads T] [--low-memory 0|1] [data options]\n"
            "  --model M        a model from `fedopt-client models` (default cnn)\n"
            "  --json           one JSON object instead of text\n"
            "  --examples N     the client's share (default: a typical one of the paper's task)\n"
            "  --batch B        minibatch size (default: the paper's for the model)\n"
            "  --threads T      training threads (default 1)\n"
            "  --low-memory V   1 (default): the session's order; 0: the order before its\n"
            "                   low-memory change, for comparison\n"
            "One round of `fedopt-client run` without a server: the received global model,\n"
            "one local epoch, the delta encoded for upload. Prints samples/s, the peak RSS,\n"
            "the bytes of the model and update frames, and the binary's size. Without data\n"
            "options the examples are synthetic, of the paper's shapes.\n"
            "data options:\n%s",
            fl_data_spec_usage());
}

/* User plus system CPU seconds of the process so far: on a loaded machine
 * (or under an emulator sharing its cores) the epoch's CPU time says more
 * than its wall time. */
static double cpu_seconds(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_sec +
           1e-6 * (double)ru.ru_stime.tv_usec;
}

/* A field of /proc/self/status in KiB ("VmHWM", "VmRSS"), or -1. */
static long status_kib(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long v = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, n) == 0 && line[n] == ':') {
            v = strtol(line + n + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

/* Synthetic examples of the model's paper shapes: inputs in [0, 1) (token
 * ids below the vocabulary for sequence models, a few words per bag for
 * bowlr), random labels. Speed does not depend on the values. */
static int synth(const fl_model_info_t *info, size_t n, uint64_t seed, fl_dataset_t *d)
{
    const fl_model_spec_t *s = &info->paper;
    int rc = fl_dataset_alloc_labels(d, n, s->input.ndim, s->input.d, s->label_dim, s->num_classes);
    if (rc)
        return rc;
    fl_rng_t r;
    fl_rng_seed(&r, seed);
    int seq = info->loss == FL_LOSS_SEQ_CE;
    for (size_t i = 0; i < n * d->dim; i++) {
        if (seq)
            d->x[i] = (float)(1 + fl_rng_u64(&r) % (uint64_t)(s->num_classes - 1));
        else if (info->loss == FL_LOSS_SIGMOID_BCE)
            d->x[i] = fl_rng_uniform(&r) < 0.005 ? 1.0f : 0.0f;
        else
            d->x[i] = (float)fl_rng_uniform(&r);
    }
    if (info->loss == FL_LOSS_SIGMOID_BCE) {
        d->multi_hot = 1;
        for (size_t i = 0; i < n * d->label_dim; i++)
            d->y[i] = fl_rng_uniform(&r) < 0.01 ? 1 : 0;
    } else {
        for (size_t i = 0; i < n * d->label_dim; i++)
            d->y[i] = (int32_t)(seq ? 1 + fl_rng_u64(&r) % (uint64_t)(s->num_classes - 1)
                                    : fl_rng_u64(&r) % (uint64_t)s->num_classes);
    }
    return 0;
}

int fl_client_cmd_bench(int argc, char **argv)
{
    enum { O_MODEL = 1, O_JSON, O_EXAMPLES, O_BATCH, O_THREADS, O_LOWMEM };
    static const fl_cli_opt_t opts[] = {
        {"model", 1, O_MODEL},     {"json", 0, O_JSON},       {"examples", 1, O_EXAMPLES},
        {"batch", 1, O_BATCH},     {"threads", 1, O_THREADS}, {"low-memory", 1, O_LOWMEM},
        {NULL, 0, 0}};
    fl_data_spec_t spec;
    fl_data_spec_init(&spec);
    fl_dataset_t data;
    fl_dataset_init(&data);
    fl_model_t *m = NULL;
    fl_task_result_t res;
    memset(&res, 0, sizeof res);
    float *global = NULL;
    fl_buf_t *down = NULL, *up = NULL, *delta = NULL;
    const char *model = "cnn";
    long examples = 0, batch = 0, threads = 1, lowmem = 1;
    int json = 0, status = FL_CLI_USAGE, rc, id, bad = 0, have_data = 0;
    fl_cli_t cli;
    fl_cli_init(&cli, "fedopt-client", "bench", opts, fl_data_spec_opts, argc, argv);
    while (!bad && (id = fl_cli_next(&cli)) != FL_CLI_END) {
        switch (id) {
        case FL_CLI_ERR: bad = 1; break;
        case FL_CLI_ARG: bad = fl_cli_error(&cli, "unexpected argument '%s'", cli.val); break;
        case O_MODEL: model = cli.val; break;
        case O_JSON: json = 1; break;
        case O_EXAMPLES: bad = fl_cli_get_long(&cli, 1, 100000000, &examples) != 0; break;
        case O_BATCH: bad = fl_cli_get_long(&cli, 1, 1000000, &batch) != 0; break;
        case O_THREADS: bad = fl_cli_get_long(&cli, 1, 64, &threads) != 0; break;
        case O_LOWMEM: bad = fl_cli_get_long(&cli, 0, 1, &lowmem) != 0; break;
        default:
            /* Any data option means the client's own data. */
            have_data = 1;
            bad = fl_data_spec_apply(&spec, &cli) != 0;
            break;
        }
    }
    if (bad)
        goto out;
    status = 1;
    const fl_model_info_t *info = fl_models_find(model);
    if (!info) {
        fprintf(stderr, "bench: unknown model '%s' (fedopt-client models lists them)\n", model);
        goto out;
    }
    for (size_t i = 0; i < sizeof paper / sizeof paper[0]; i++)
        if (strcmp(paper[i].model, model) == 0) {
            if (!batch)
                batch = (long)paper[i].batch;
            if (!examples)
                examples = (long)paper[i].examples;
        }
    if (!batch)
        batch = 20;
    if (!examples)
        examples = 200;
    long base_rss = status_kib("VmRSS");

    /* The client's share: its own data, or synthetic examples. */
    if (have_data) {
        if (fl_data_spec_validate(&spec) || fl_data_spec_load(&spec, "train", &data))
            goto out;
        if ((size_t)examples < data.n)
            data.n = (size_t)examples;
    } else if ((rc = synth(info, (size_t)examples, 1, &data))) {
        fprintf(stderr, "bench: synthetic data: %s\n", fl_strerror(rc));
        goto out;
    }
    /* The global model as the session holds it after the receive: its
     * frames are counted (the session holds one frame at a time while
     * receiving), then only the floats stay, in the transport's buffer. */
    fl_model_spec_t ms;
    if ((rc = fl_model_spec_from_dataset(&data, &ms)) || (rc = fl_model_create(model, &ms, &m))) {
        fprintf(stderr, "bench: %s: %s\n", model, fl_strerror(rc));
        goto out;
    }
    fl_model_init_params(m, 1);
    size_t n = m->params.numel;
    if ((rc = fl_wire_encode_tensor(FEDOPT__TENSOR_PURPOSE__TENSOR_MODEL, 1, m->params.data,
                                    n * sizeof(float), 0, &down))) {
        fprintf(stderr, "bench: encoding the model: %s\n", fl_strerror(rc));
        goto out;
    }
    size_t down_bytes = down->len;
    fl_buf_unref(down);
    down = NULL;
    if (!(global = fl_task_alloc_params(n))) {
        fprintf(stderr, "bench: out of memory\n");
        goto out;
    }
    memcpy(global, m->params.data, n * sizeof *global);
    fl_model_free(m);
    m = NULL;

    /* Train (client/task.c, as the session does): one local epoch. */
    fl_task_in_t in = {.model = model, .data = &data, .global = global, .n = n, .gemm_threads = (int)threads};
    fl_train_config_t cfg = {.epochs = 1, .batch = (size_t)batch, .sgd = {.lr = 0.01f}, .seed = 1};
    cfg.sgd.weight_decay = info->weight_decay;
    char why[256];
    double cpu0 = cpu_seconds();
    if ((rc = fl_task_train(&in, &cfg, &res, why, sizeof why))) {
        fprintf(stderr, "bench: %s\n", why);
        goto out;
    }
    double cpu = cpu_seconds() - cpu0;
    fl_train_stats_t st = res.st;

    /* Upload: the Update and the delta's frames, after the session's
     * low-memory release (or without it, --low-memory 0). */
    if (lowmem) {
        free(global);
        global = NULL;
        fl_task_result_slim(&res);
    }
    if (fl_task_encode_update(1, &res, 0, &up, &delta, why, sizeof why)) {
        fprintf(stderr, "bench: %s\n", why);
        goto out;
    }
    size_t up_bytes = up->len + delta->len;
    long peak_rss = status_kib("VmHWM");
    struct stat sb;
    long long bin = stat("/proc/self/exe", &sb) == 0 ? (long long)sb.st_size : -1;
    double sps = st.seconds > 0 ? (double)st.examples / st.seconds : 0;
    double cps = cpu > 0 ? (double)st.examples / cpu : 0;
    if (json)
        printf("{\"model\":\"%s\",\"params\":%zu,\"examples\":%zu,\"batch\":%ld,\"threads\":%ld,"
               "\"data\":\"%s\",\"samples_per_s\":%.1f,\"epoch_seconds\":%.3f,\"samples_per_cpu_s\":%.1f,\"epoch_cpu_seconds\":%.3f,\"base_rss_kib\":%ld,"
               "\"peak_rss_kib\":%ld,\"bytes_down\":%zu,\"bytes_up\":%zu,\"binary_bytes\":%lld,"
               "\"low_memory\":%ld,\"gemm\":\"%s\"}\n",
               model, n, st.examples, batch, threads, have_data ? "spec" : "synthetic", sps, st.seconds, cps,
               cpu, base_rss, peak_rss, down_bytes, up_bytes, bin, lowmem, fl_gemm_backend());
    else
        printf("bench %s: %zu params, %zu %s examples, batch %ld, %ld thread%s, %s\n"
               "  local epoch   %.1f samples/s (%.2f s); %.1f per CPU second (%.2f s)\n"
               "  peak RSS      %ld KiB (%ld KiB before the round)%s\n"
               "  on the wire   %zu bytes down (model), %zu bytes up (update + delta) per round\n"
               "  binary        %lld bytes\n",
               model, n, st.examples, have_data ? "local" : "synthetic", batch, threads,
               threads == 1 ? "" : "s", fl_gemm_backend(), sps, st.seconds, cps, cpu, peak_rss, base_rss,
               lowmem ? "" : " [--low-memory 0]", down_bytes, up_bytes, bin);
    status = 0;
out:
    fl_task_result_free(&res);
    fl_buf_unref(down);
    fl_buf_unref(up);
    fl_buf_unref(delta);
    free(global);
    fl_model_free(m);
    fl_dataset_free(&data);
    return status;
}
