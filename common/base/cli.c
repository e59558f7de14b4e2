#include "common/base/cli.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/error.h"
#include "common/base/version.h"

static void usage(FILE *out, const char *prog, const fl_cli_cmd_t *table)
{
    fprintf(out, "usage: %s COMMAND [ARGS]   (COMMAND --help for its options)\n\ncommands:\n", prog);
    for (const fl_cli_cmd_t *c = table; c->name; c++)
        fprintf(out, "  %-12s %s\n", c->name, c->summary);
    fprintf(out, "  %-12s %s\n  %-12s %s\n", "--version", "print the version", "--help", "this text");
}

int fl_cli_wants_help(int argc, char *const *argv)
{
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            return 0;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return 1;
    }
    return 0;
}

int fl_cli_dispatch(const char *prog, const fl_cli_cmd_t *table, int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout, prog, table);
        return argc < 2 ? FL_CLI_USAGE : 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("%s %s\n", prog, FL_VERSION);
        return 0;
    }
    for (const fl_cli_cmd_t *c = table; c->name; c++) {
        if (strcmp(argv[1], c->name) != 0)
            continue;
        /* Help first, before the command can touch anything: `certs init
         * --help` must not create a directory named --help. */
        if (fl_cli_wants_help(argc - 2, argv + 2)) {
            c->usage(stdout);
            return 0;
        }
        return c->fn(argc - 1, argv + 1);
    }
    fprintf(stderr, "%s: unknown command '%s'\n", prog, argv[1]);
    usage(stderr, prog, table);
    return FL_CLI_USAGE;
}

void fl_cli_init(fl_cli_t *c, const char *prog, const char *cmd, const fl_cli_opt_t *opts,
                 const fl_cli_opt_t *more, int argc, char **argv)
{
    memset(c, 0, sizeof *c);
    c->prog = prog;
    c->cmd = cmd;
    c->opts[0] = opts;
    c->opts[1] = more;
    c->argc = argc;
    c->argv = argv;
    c->ind = 1;
    c->err = stderr;
}

int fl_cli_split_flag(const char *arg, char *buf, size_t len, const char **value)
{
    if (!arg || strncmp(arg, "--", 2) != 0 || !arg[2] || arg[2] == '=')
        return FL_EINVAL;
    arg += 2;
    const char *eq = strchr(arg, '=');
    size_t n = eq ? (size_t)(eq - arg) : strlen(arg);
    if (n >= len)
        return FL_EINVAL;
    for (size_t i = 0; i < n; i++)
        buf[i] = arg[i] == '_' ? '-' : arg[i];
    buf[n] = 0;
    *value = eq ? eq + 1 : NULL;
    return 0;
}

static const fl_cli_opt_t *find_opt(const fl_cli_t *c, const char *name)
{
    for (int t = 0; t < 2; t++)
        for (const fl_cli_opt_t *o = c->opts[t]; o && o->name; o++)
            if (strcmp(o->name, name) == 0)
                return o;
    return NULL;
}

static void set_what(fl_cli_t *c, const char *prefix, const char *name)
{
    snprintf(c->what, sizeof c->what, "%s%s", prefix, name);
}

int fl_cli_next(fl_cli_t *c)
{
    if (c->ind >= c->argc)
        return FL_CLI_END;
    const char *a = c->argv[c->ind++];
    if (!c->rest && strcmp(a, "--") == 0) {
        c->rest = 1;
        return fl_cli_next(c);
    }
    /* "-" (stdin by convention) and negative numbers are arguments. */
    if (c->rest || a[0] != '-' || a[1] == 0 || (a[1] >= '0' && a[1] <= '9')) {
        set_what(c, "", "argument");
        c->val = a;
        return FL_CLI_ARG;
    }
    char name[64];
    const char *val;
    if (a[1] != '-' || fl_cli_split_flag(a, name, sizeof name, &val)) {
        c->val = NULL;
        c->what[0] = 0;
        fl_cli_error(c, "unknown option '%s'", a);
        return FL_CLI_ERR;
    }
    set_what(c, "--", name);
    const fl_cli_opt_t *o = find_opt(c, name);
    if (!o) {
        fl_cli_error(c, "unknown option %s", c->what);
        return FL_CLI_ERR;
    }
    if (!o->has_arg) {
        if (val) {
            fl_cli_error(c, "%s takes no value (given '%s')", c->what, val);
            return FL_CLI_ERR;
        }
        c->val = NULL;
        return o->id;
    }
    if (!val) {
        if (c->ind >= c->argc) {
            fl_cli_error(c, "%s needs a value", c->what);
            return FL_CLI_ERR;
        }
        val = c->argv[c->ind++];
    }
    c->val = val;
    return o->id;
}

int fl_cli_positionals(fl_cli_t *c, const char *synopsis, int min, int max, const char **pos, int *n)
{
    int id;
    *n = 0;
    while ((id = fl_cli_next(c)) != FL_CLI_END) {
        if (id == FL_CLI_ERR)
            return FL_CLI_USAGE;
        if (id != FL_CLI_ARG)
            return fl_cli_error(c, "unexpected option %s", c->what);
        if (*n == max)
            return fl_cli_error(c, "unexpected argument '%s' (wants %s)", c->val, synopsis);
        pos[(*n)++] = c->val;
    }
    if (*n < min)
        return fl_cli_error(c, "missing arguments (wants %s)", synopsis);
    return 0;
}

void fl_cli_arg(fl_cli_t *c, const char *what, const char *val)
{
    snprintf(c->what, sizeof c->what, "%s", what);
    c->val = val;
}

int fl_cli_error(const fl_cli_t *c, const char *fmt, ...)
{
    FILE *out = c->err ? c->err : stderr;
    va_list ap;
    va_start(ap, fmt);
    fprintf(out, "%s: ", c->prog);
    vfprintf(out, fmt, ap);
    va_end(ap);
    fprintf(out, "\n(%s %s --help lists the options)\n", c->prog, c->cmd);
    return FL_CLI_USAGE;
}

int fl_cli_bad_value(const fl_cli_t *c, const char *why)
{
    return fl_cli_error(c, "%s: '%s' %s", c->what, c->val ? c->val : "", why);
}

int fl_cli_get_long(const fl_cli_t *c, long min, long max, long *out)
{
    const char *s = c->val;
    char *end;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || !*s || isspace((unsigned char)*s) || *end) {
        fl_cli_bad_value(c, "is not an integer");
        return FL_EINVAL;
    }
    if (errno == ERANGE || v < min || v > max) {
        char why[96];
        snprintf(why, sizeof why, "is out of range [%ld, %ld]", min, max);
        fl_cli_bad_value(c, why);
        return FL_EINVAL;
    }
    *out = v;
    return 0;
}

int fl_cli_get_u64(const fl_cli_t *c, uint64_t *out)
{
    const char *s = c->val;
    char *end;
    errno = 0;
    int ok = s && *s >= '0' && *s <= '9'; /* no sign, no space: strtoull would negate "-1" */
    unsigned long long v = ok ? strtoull(s, &end, 10) : 0;
    if (!ok || *end || errno) {
        fl_cli_bad_value(c, "is not an integer in [0, 18446744073709551615]");
        return FL_EINVAL;
    }
    *out = (uint64_t)v;
    return 0;
}

int fl_cli_get_double(const fl_cli_t *c, double min, double max, double *out)
{
    const char *s = c->val;
    char *end;
    errno = 0;
    double v = s ? strtod(s, &end) : 0;
    if (!s || !*s || isspace((unsigned char)*s) || *end || !isfinite(v) || (errno == ERANGE && fabs(v) > 1)) {
        fl_cli_bad_value(c, "is not a number");
        return FL_EINVAL;
    }
    if (!(v >= min && v <= max)) {
        char why[96];
        snprintf(why, sizeof why, "is out of range [%g, %g]", min, max);
        fl_cli_bad_value(c, why);
        return FL_EINVAL;
    }
    *out = v;
    return 0;
}

int fl_cli_get_choice(const fl_cli_t *c, const char *const *choices, int *out)
{
    char why[256] = "is not one of:";
    size_t n = strlen(why);
    for (int i = 0; choices[i]; i++) {
        if (c->val && strcmp(c->val, choices[i]) == 0) {
            *out = i;
            return 0;
        }
        int k = snprintf(why + n, sizeof why - n, "%s %s", i ? "," : "", choices[i]);
        if (k > 0 && (size_t)k < sizeof why - n)
            n += (size_t)k;
    }
    fl_cli_bad_value(c, why);
    return FL_EINVAL;
}
