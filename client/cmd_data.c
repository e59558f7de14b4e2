/* fedopt-client data inspect: shows what a data spec gives — per-client
 * example counts, label histograms and a skew summary — so a user sees the
 * non-IID data they are about to train on before training on it. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/cli.h"
#include "client/commands.h"
#include "common/data/partition.h"
#include "common/data/spec.h"
#include "common/base/error.h"
#include "common/base/json.h"

void fl_client_cmd_data_usage(FILE *out)
{
    fprintf(out,
            "usage: fedopt-client data inspect [--data SPEC] [--partition P --clients N]\n"
            "         [--client-index I] [--split train|test] [--show K] [--json]\n"
            "  prints per-client example counts, label histograms and a skew summary\n"
            "  (--show K: the first K clients in text form, 0 = all; default 20).\n"
            "  --json prints one object: {source, split, examples, classes, label_dim,\n"
            "  partition, clients: [{index, name?, examples, labels: {label: count}}],\n"
            "  totals: {examples, labels}, skew: {...}}. Labels of sequence data are the\n"
            "  per-step targets (pad excluded); of multi-hot data, the tags.\n"
            "data options:\n%s",
            fl_data_spec_usage());
}

/* Adds the labels of example i to the histogram h (num_classes entries). */
static void count_labels(const fl_dataset_t *d, size_t i, size_t *h)
{
    const int32_t *y = d->y + i * d->label_dim;
    if (d->label_dim == 1) {
        if (y[0] >= 0 && y[0] < d->num_classes)
            h[y[0]]++;
        return;
    }
    if (d->multi_hot) { /* label j present when y[j] == 1 */
        for (size_t j = 0; j < d->label_dim; j++)
            h[j] += y[j] == 1;
        return;
    }
    for (size_t j = 0; j < d->label_dim; j++) /* per-step targets; 0 is padding */
        if (y[j] > 0 && y[j] < d->num_classes)
            h[y[j]]++;
}

static void print_hist(const size_t *h, size_t n)
{
    for (size_t l = 0; l < n; l++)
        if (h[l])
            printf(" %zu:%zu", l, h[l]);
}

/* A label histogram as {"label":count,...}, labels with a count only. */
static void json_hist(fl_json_t *j, const size_t *h, size_t n)
{
    char key[32];
    fl_json_obj_begin(j);
    for (size_t l = 0; l < n; l++) {
        if (!h[l])
            continue;
        snprintf(key, sizeof key, "%zu", l);
        fl_json_key(j, key);
        fl_json_u64(j, h[l]);
    }
    fl_json_obj_end(j);
}

static int inspect(int argc, char **argv)
{
    enum { O_SPLIT = 1, O_SHOW, O_JSON };
    static const fl_cli_opt_t opts[] = {{"split", 1, O_SPLIT}, {"show", 1, O_SHOW}, {"json", 0, O_JSON}, {NULL, 0, 0}};
    static const char *const splits[] = {"train", "test", NULL};
    fl_data_spec_t spec;
    fl_data_spec_init(&spec);
    fl_dataset_t d;
    fl_dataset_init(&d);
    fl_partition_t p = {0};
    size_t *h = NULL, *tot = NULL;
    const char *split = "train";
    long show = 20;
    int json = 0, status = FL_CLI_USAGE, id, bad = 0, k = 0;
    fl_cli_t cli;
    fl_cli_init(&cli, "fedopt-client", "data inspect", opts, fl_data_spec_opts, argc, argv);
    while (!bad && (id = fl_cli_next(&cli)) != FL_CLI_END) {
        switch (id) {
        case FL_CLI_ERR: bad = 1; break;
        case FL_CLI_ARG: bad = fl_cli_error(&cli, "unexpected argument '%s'", cli.val); break;
        case O_SPLIT:
            if (!(bad = fl_cli_get_choice(&cli, splits, &k) != 0))
                split = splits[k];
            break;
        case O_SHOW: bad = fl_cli_get_long(&cli, 0, LONG_MAX, &show) != 0; break;
        case O_JSON: json = 1; break;
        default: bad = fl_data_spec_apply(&spec, &cli) != 0; break;
        }
    }
    if (bad)
        goto out;
    status = 1;
    int rc = fl_data_spec_load_partitioned(&spec, split, &d, &p);
    if (rc) {
        fprintf(stderr, "data inspect: cannot load %s: %s\n", spec.source, fl_strerror(rc));
        goto out;
    }
    /* Without a partition the whole split is one client. */
    if (p.clients == 0) {
        p.clients = 1;
        p.offsets = calloc(2, sizeof(size_t));
        p.index = malloc((d.n ? d.n : 1) * sizeof(uint32_t));
        if (!p.offsets || !p.index)
            goto oom;
        p.offsets[1] = d.n;
        for (size_t i = 0; i < d.n; i++)
            p.index[i] = (uint32_t)i;
    }
    fl_partition_stats_t st;
    if (fl_partition_stats(&d, &p, &st))
        goto oom;
    size_t L = (size_t)d.num_classes;
    if (d.multi_hot)
        L = d.label_dim;
    h = calloc(L, sizeof(size_t));
    tot = calloc(L, sizeof(size_t));
    if (!h || !tot)
        goto oom;
    char part[64];
    fl_partition_spec_t ps = spec.partition;
    if (!spec.partition_set && spec.clients > 0)
        ps.kind = d.group ? FL_PARTITION_NATURAL : FL_PARTITION_IID;
    fl_partition_format(&ps, part, sizeof part);
    size_t lo = 0, hi = p.clients;
    if (spec.client_index >= 0) {
        lo = (size_t)spec.client_index;
        hi = lo + 1;
        if (lo >= p.clients) {
            fprintf(stderr, "data inspect: client %zu does not exist (%zu clients)\n", lo,
                    p.clients);
            goto out;
        }
    }
    fl_json_t j;
    fl_json_init_file(&j, stdout);
    if (json) {
        fl_json_obj_begin(&j);
        fl_json_key(&j, "source");
        fl_json_str(&j, spec.source);
        fl_json_key(&j, "split");
        fl_json_str(&j, split);
        fl_json_key(&j, "examples");
        fl_json_u64(&j, d.n);
        fl_json_key(&j, "classes");
        fl_json_i64(&j, d.num_classes);
        fl_json_key(&j, "label_dim");
        fl_json_u64(&j, d.label_dim);
        fl_json_key(&j, "shape");
        fl_json_arr_begin(&j);
        for (int i = 0; i < d.ndim; i++)
            fl_json_i64(&j, d.shape[i]);
        fl_json_arr_end(&j);
        fl_json_key(&j, "partition");
        fl_json_str(&j, part);
        fl_json_key(&j, "seed");
        fl_json_u64(&j, spec.seed);
        fl_json_key(&j, "clients");
        fl_json_arr_begin(&j);
    } else {
        printf("data %s, split %s: %zu examples, features", spec.source, split, d.n);
        for (int i = 0; i < d.ndim; i++)
            printf("%s%lld", i ? "x" : " ", (long long)d.shape[i]);
        printf(", %d classes%s\n", d.num_classes,
               d.label_dim > 1 ? (d.multi_hot ? " (multi-hot tags)" : " (per-step targets)")
                               : "");
        printf("partition %s into %zu clients (seed %llu)\n", part, p.clients,
               (unsigned long long)spec.seed);
        printf("%8s %9s  labels (label:count)\n", "client", "examples");
    }
    for (size_t c = 0; c < p.clients; c++) {
        size_t m;
        const uint32_t *ix = fl_partition_client(&p, c, &m);
        memset(h, 0, L * sizeof(size_t));
        for (size_t j = 0; j < m; j++)
            count_labels(&d, ix[j], h);
        for (size_t l = 0; l < L; l++)
            tot[l] += h[l];
        if (c < lo || c >= hi)
            continue;
        const char *name = NULL;
        if (ps.kind == FL_PARTITION_NATURAL && d.group_names && c < d.num_groups)
            name = d.group_names[c];
        if (json) {
            fl_json_obj_begin(&j);
            fl_json_key(&j, "index");
            fl_json_u64(&j, c);
            if (name) {
                fl_json_key(&j, "name");
                fl_json_str(&j, name);
            }
            fl_json_key(&j, "examples");
            fl_json_u64(&j, m);
            fl_json_key(&j, "labels");
            json_hist(&j, h, L);
            fl_json_obj_end(&j);
        } else if (show == 0 || c < lo + (size_t)show) {
            printf("%8zu %9zu ", c, m);
            print_hist(h, L);
            if (name)
                printf("   (%s)", name);
            putchar('\n');
        } else if (c == lo + (size_t)show) {
            printf("%8s (%zu more clients; --show 0 lists all)\n", "...", hi - c);
        }
    }
    if (json) {
        fl_json_arr_end(&j);
        fl_json_key(&j, "totals");
        fl_json_obj_begin(&j);
        fl_json_key(&j, "examples");
        fl_json_u64(&j, st.used);
        fl_json_key(&j, "labels");
        json_hist(&j, tot, L);
        fl_json_obj_end(&j);
        fl_json_key(&j, "skew");
        fl_json_obj_begin(&j);
        fl_json_key(&j, "min_examples");
        fl_json_u64(&j, st.min_size);
        fl_json_key(&j, "mean_examples");
        fl_json_fixed(&j, st.mean_size, 3);
        fl_json_key(&j, "max_examples");
        fl_json_u64(&j, st.max_size);
        fl_json_key(&j, "mean_labels_per_client");
        fl_json_fixed(&j, st.mean_labels, 3);
        fl_json_key(&j, "max_labels_per_client");
        fl_json_u64(&j, st.max_labels);
        fl_json_key(&j, "mean_tv_distance");
        fl_json_fixed(&j, st.mean_tv, 4);
        fl_json_obj_end(&j);
        fl_json_obj_end(&j);
        fl_json_finish(&j, NULL, NULL);
        putchar('\n');
    } else {
        printf("totals: %zu examples in %zu clients (%zu unused)\n", st.used, p.clients,
               d.n - st.used);
        printf("sizes: min %zu, mean %.1f, max %zu\n", st.min_size, st.mean_size, st.max_size);
        printf("skew: %.2f distinct labels per client (max %zu); mean total-variation distance "
               "from the global label distribution %.3f (0 = IID, 1 = disjoint)\n",
               st.mean_labels, st.max_labels, st.mean_tv);
    }
    status = 0;
    goto out;
oom:
    fprintf(stderr, "data inspect: out of memory\n");
    status = 1;
out:
    free(h);
    free(tot);
    fl_partition_free(&p);
    fl_dataset_free(&d);
    return status;
}

int fl_client_cmd_data(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "inspect") == 0)
        return inspect(argc - 1, argv + 1);
    fl_cli_t cli;
    fl_cli_init(&cli, "fedopt-client", "data", NULL, NULL, argc, argv);
    return argc < 2 ? fl_cli_error(&cli, "which subcommand? (inspect)")
                    : fl_cli_error(&cli, "unknown subcommand '%s' (inspect)", argv[1]);
}
