#include "common/data/spec.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/data/cifar.h"
#include "common/data/idx.h"
#include "common/data/leaf.h"
#include "common/data/text.h"
#include "common/data/tff.h"
#include "common/base/error.h"
#include "common/base/log.h"

void fl_data_spec_init(fl_data_spec_t *s)
{
    memset(s, 0, sizeof *s);
    snprintf(s->source, sizeof s->source, "fmnist");
    s->client_index = -1;
}

const char *fl_data_spec_usage(void)
{
    return "  --data SOURCE       fmnist | idx:DIR | cifar10:DIR | cifar100:DIR | leaf:DIR |\n"
           "                      tff:FILE[:SPLIT] | text:PATH   (default fmnist)\n"
           "  --data-view VIEW    auto | chars | words | bow   (how text becomes examples)\n"
           "  --partition P       none | iid | dirichlet:A[,B] | shards[:S] | natural\n"
           "  --clients N         split the training data into N clients\n"
           "  --client-index I    use only client I's share (0-based)\n"
           "  --data-seed S       seed of the partition (default 0)\n";
}

static int parse_u64(const char *v, uint64_t max, uint64_t *out)
{
    if (!v || !*v || *v == '-')
        return FL_EINVAL;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (*end || errno || x > max)
        return FL_EINVAL;
    *out = x;
    return 0;
}

/* Applies one option by name (kebab-case, no dashes); *why says what is
 * wrong with a refused value. */
static int spec_set(fl_data_spec_t *s, const char *name, const char *value, const char **why)
{
    uint64_t u;
    *why = "is not valid";
    if (strcmp(name, "data") == 0) {
        *why = "is not a data source (empty or too long)";
        if (!value || !*value || strlen(value) >= sizeof s->source)
            return FL_EINVAL;
        snprintf(s->source, sizeof s->source, "%s", value);
        return 0;
    }
    if (strcmp(name, "data-view") == 0) {
        static const char *const views[] = {"auto", "chars", "words", "bow"};
        static const fl_data_view_t kinds[] = {FL_DATA_VIEW_AUTO, FL_DATA_VIEW_CHARS, FL_DATA_VIEW_WORDS,
                                               FL_DATA_VIEW_BOW};
        *why = "is not one of: auto, chars, words, bow";
        for (size_t i = 0; value && i < sizeof views / sizeof views[0]; i++)
            if (strcmp(value, views[i]) == 0) {
                s->view = kinds[i];
                return 0;
            }
        return FL_EINVAL;
    }
    if (strcmp(name, "partition") == 0) {
        *why = "is not a partition (none | iid | dirichlet:A[,B] | shards[:S] | natural)";
        if (!value || fl_partition_parse(value, &s->partition))
            return FL_EINVAL;
        s->partition_set = 1;
        return 0;
    }
    if (strcmp(name, "clients") == 0 || strcmp(name, "client-index") == 0) {
        *why = "is not an integer in [0, 4294967295]";
        if (parse_u64(value, UINT32_MAX, &u))
            return FL_EINVAL;
        if (strcmp(name, "clients") == 0)
            s->clients = (size_t)u;
        else
            s->client_index = (long)u;
        return 0;
    }
    if (strcmp(name, "data-seed") == 0) {
        *why = "is not an integer in [0, 18446744073709551615]";
        if (parse_u64(value, UINT64_MAX, &u))
            return FL_EINVAL;
        s->seed = u;
        return 0;
    }
    return FL_ENOTFOUND;
}

int fl_data_spec_set(fl_data_spec_t *s, const char *name, const char *value)
{
    if (!s || !name)
        return FL_EINVAL;
    while (*name == '-')
        name++;
    char norm[32];
    size_t n = strlen(name);
    if (n >= sizeof norm)
        return FL_ENOTFOUND;
    for (size_t i = 0; i <= n; i++)
        norm[i] = name[i] == '_' ? '-' : name[i];
    const char *why;
    int rc = spec_set(s, norm, value, &why);
    if (rc == FL_EINVAL)
        FL_LOG_E("data", "--%s: '%s' %s", norm, value ? value : "(missing)", why);
    return rc;
}

enum { O_DATA = FL_DATA_SPEC_OPT_ID, O_VIEW, O_PARTITION, O_CLIENTS, O_INDEX, O_SEED };

const fl_cli_opt_t fl_data_spec_opts[] = {
    {"data", 1, O_DATA},       {"data-view", 1, O_VIEW},   {"partition", 1, O_PARTITION},
    {"clients", 1, O_CLIENTS}, {"client-index", 1, O_INDEX}, {"data-seed", 1, O_SEED},
    {NULL, 0, 0},
};

int fl_data_spec_apply(fl_data_spec_t *s, const fl_cli_t *c)
{
    if (strncmp(c->what, "--", 2) != 0)
        return FL_EINVAL;
    const char *why;
    int rc = spec_set(s, c->what + 2, c->val, &why); /* what is "--name" */
    if (rc == FL_EINVAL)
        fl_cli_bad_value(c, why);
    return rc ? FL_EINVAL : 0;
}

/* The source's kind and its argument (the text after the first ':'). */
typedef enum { SRC_BAD, SRC_FMNIST, SRC_IDX, SRC_CIFAR10, SRC_CIFAR100, SRC_LEAF, SRC_TFF, SRC_TEXT } src_t;

static src_t source_kind(const char *src, const char **arg)
{
    static const struct {
        const char *prefix;
        src_t kind;
    } kinds[] = {{"idx:", SRC_IDX},   {"cifar10:", SRC_CIFAR10}, {"cifar100:", SRC_CIFAR100},
                 {"leaf:", SRC_LEAF}, {"tff:", SRC_TFF},         {"text:", SRC_TEXT}};
    *arg = NULL;
    if (strcmp(src, "fmnist") == 0)
        return SRC_FMNIST;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        size_t n = strlen(kinds[i].prefix);
        if (strncmp(src, kinds[i].prefix, n) == 0 && src[n]) {
            *arg = src + n;
            return kinds[i].kind;
        }
    }
    return SRC_BAD;
}

int fl_data_spec_validate(const fl_data_spec_t *s)
{
    const char *arg;
    if (!s)
        return FL_EINVAL;
    if (source_kind(s->source, &arg) == SRC_BAD) {
        FL_LOG_E("data", "--data '%s': unknown source (expected fmnist, idx:DIR, cifar10:DIR, "
                         "cifar100:DIR, leaf:DIR, tff:FILE[:SPLIT] or text:PATH)", s->source);
        return FL_EINVAL;
    }
    if (s->client_index >= 0 && s->clients == 0 &&
        !(s->partition_set && s->partition.kind == FL_PARTITION_NATURAL)) {
        FL_LOG_E("data", "--client-index needs --clients (or --partition natural)");
        return FL_EINVAL;
    }
    if (s->client_index >= 0 && s->clients > 0 && (size_t)s->client_index >= s->clients) {
        FL_LOG_E("data", "--client-index %ld is not below --clients %zu", s->client_index,
                 s->clients);
        return FL_EINVAL;
    }
    if (s->partition_set && s->partition.kind != FL_PARTITION_NONE &&
        s->partition.kind != FL_PARTITION_NATURAL && s->clients == 0) {
        FL_LOG_E("data", "--partition needs --clients N");
        return FL_EINVAL;
    }
    return 0;
}

/* Reads the whole split of the source, unpartitioned. */
static int load_source(const fl_data_spec_t *s, const char *split, fl_dataset_t *out)
{
    const char *arg;
    switch (source_kind(s->source, &arg)) {
    case SRC_FMNIST:
        return fl_fmnist_load(split, out);
    case SRC_IDX:
        return fl_idx_load_dir(arg, split, out);
    case SRC_CIFAR10:
        return fl_cifar_load(arg, 10, split, out);
    case SRC_CIFAR100:
        return fl_cifar_load(arg, 100, split, out);
    case SRC_TEXT:
        return fl_text_load(arg, split, s->view, out);
    case SRC_LEAF:
        return fl_leaf_load(arg, split, out);
    case SRC_TFF:
        return fl_tff_load(arg, split, s->view, out);
    default:
        return FL_EINVAL;
    }
}

int fl_data_spec_load_partitioned(const fl_data_spec_t *s, const char *split, fl_dataset_t *all,
                                  fl_partition_t *parts)
{
    int rc;
    if (!s || !split || !all || !parts)
        return FL_EINVAL;
    memset(parts, 0, sizeof *parts);
    if (strcmp(split, "train") != 0 && strcmp(split, "test") != 0) {
        FL_LOG_E("data", "unknown split '%s' (train or test)", split);
        return FL_EINVAL;
    }
    if ((rc = fl_data_spec_validate(s)) || (rc = load_source(s, split, all)))
        goto fail;
    if (s->clients == 0 && !(s->partition_set && s->partition.kind == FL_PARTITION_NATURAL))
        return 0;
    fl_partition_spec_t p = s->partition;
    if (!s->partition_set)
        p.kind = all->group ? FL_PARTITION_NATURAL : FL_PARTITION_IID;
    if ((rc = fl_partition_make(all, &p, s->clients, s->seed, parts))) {
        FL_LOG_E("data", "%s: cannot partition into %zu clients: %s", s->source, s->clients,
                 fl_strerror(rc));
        goto fail;
    }
    return 0;
fail:
    fl_dataset_free(all);
    fl_partition_free(parts);
    return rc;
}

int fl_data_spec_load(const fl_data_spec_t *s, const char *split, fl_dataset_t *out)
{
    fl_dataset_t all;
    fl_partition_t parts;
    fl_dataset_init(&all);
    if (!s || !split || !out)
        return FL_EINVAL;
    int want_share = strcmp(split, "train") == 0 && s->client_index >= 0;
    if (!want_share) {
        fl_data_spec_t whole = *s;
        whole.clients = 0;
        whole.client_index = -1;
        whole.partition_set = 0;
        int rc = fl_data_spec_validate(s);
        if (rc)
            return rc;
        return fl_data_spec_load_partitioned(&whole, split, out, &parts);
    }
    const char *arg;
    if (source_kind(s->source, &arg) == SRC_TFF &&
        (!s->partition_set || s->partition.kind == FL_PARTITION_NATURAL)) {
        /* A TFF client is read alone, streaming, never the whole split. */
        int rc = fl_data_spec_validate(s);
        if (rc)
            return rc;
        return fl_tff_load_client(arg, split, s->view, (size_t)s->client_index, out);
    }
    int rc = fl_data_spec_load_partitioned(s, split, &all, &parts);
    if (rc)
        return rc;
    if ((size_t)s->client_index >= parts.clients) {
        FL_LOG_E("data", "%s: client %ld does not exist (%zu clients)", s->source, s->client_index,
                 parts.clients);
        rc = FL_ERANGE;
        goto done;
    }
    size_t k;
    const uint32_t *idx = fl_partition_client(&parts, (size_t)s->client_index, &k);
    rc = fl_dataset_subset(&all, idx, k, out);
done:
    fl_dataset_free(&all);
    fl_partition_free(&parts);
    return rc;
}
