/* cli: flag spelling (kebab-case and snake_case alike), option and argument
 * parsing, help before anything else, and the usage-error format (plain
 * lines naming the option and the value, exit status 2). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/base/cli.h"
#include "common/base/error.h"

/* A parse whose usage errors go to a memory buffer. */
typedef struct {
    fl_cli_t cli;
    FILE *err;
    char *msg;
    size_t len;
} parse_t;

static void parse_start(parse_t *p, const fl_cli_opt_t *opts, int argc, char **argv)
{
    fl_cli_init(&p->cli, "fedopt-client", "train", opts, NULL, argc, argv);
    p->msg = NULL;
    p->len = 0;
    p->err = open_memstream(&p->msg, &p->len);
    assert_non_null(p->err);
    p->cli.err = p->err;
}

/* The usage errors printed so far (the buffer stays owned by p). */
static const char *parse_errors(parse_t *p)
{
    fflush(p->err);
    return p->msg ? p->msg : "";
}

static void parse_end(parse_t *p)
{
    fclose(p->err);
    free(p->msg);
}

enum { O_LOG = 1, O_EPOCHS, O_JSON, O_LR };
static const fl_cli_opt_t opts[] = {
    {"log-level", 1, O_LOG}, {"epochs", 1, O_EPOCHS}, {"json", 0, O_JSON}, {"lr", 1, O_LR}, {NULL, 0, 0}};

static void test_split_flag(void **state)
{
    (void)state;
    char name[16];
    const char *v = "untouched";
    assert_int_equal(fl_cli_split_flag("--log_level=debug", name, sizeof name, &v), 0);
    assert_string_equal(name, "log-level");
    assert_string_equal(v, "debug");
    assert_int_equal(fl_cli_split_flag("--log-level", name, sizeof name, &v), 0);
    assert_string_equal(name, "log-level");
    assert_null(v);
    assert_int_equal(fl_cli_split_flag("--a=b=c", name, sizeof name, &v), 0);
    assert_string_equal(name, "a");
    assert_string_equal(v, "b=c");
    assert_int_equal(fl_cli_split_flag("-h", name, sizeof name, &v), FL_EINVAL);
    assert_int_equal(fl_cli_split_flag("--", name, sizeof name, &v), FL_EINVAL);
    assert_int_equal(fl_cli_split_flag("--=x", name, sizeof name, &v), FL_EINVAL);
    assert_int_equal(fl_cli_split_flag("plain", name, sizeof name, &v), FL_EINVAL);
    assert_int_equal(fl_cli_split_flag("--sixteen-chars-xy", name, sizeof name, &v), FL_EINVAL);
}

static void test_both_spellings(void **state)
{
    (void)state;
    char *argv[] = {"train", "--log_level", "debug", "--log-level=warn", "--log_level=info", "--json",
                    "pos1", "--epochs", "3", "-", "-5", "--", "--json", "-h", NULL};
    parse_t p;
    parse_start(&p, opts, 14, argv);
    struct {
        int id;
        const char *what, *val;
    } want[] = {
        {O_LOG, "--log-level", "debug"}, {O_LOG, "--log-level", "warn"}, {O_LOG, "--log-level", "info"},
        {O_JSON, "--json", NULL},        {FL_CLI_ARG, "argument", "pos1"}, {O_EPOCHS, "--epochs", "3"},
        {FL_CLI_ARG, "argument", "-"},   {FL_CLI_ARG, "argument", "-5"},  {FL_CLI_ARG, "argument", "--json"},
        {FL_CLI_ARG, "argument", "-h"},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        assert_int_equal(fl_cli_next(&p.cli), want[i].id);
        assert_string_equal(p.cli.what, want[i].what);
        if (want[i].val)
            assert_string_equal(p.cli.val, want[i].val);
        else
            assert_null(p.cli.val);
    }
    assert_int_equal(fl_cli_next(&p.cli), FL_CLI_END);
    assert_int_equal(fl_cli_next(&p.cli), FL_CLI_END);
    assert_string_equal(parse_errors(&p), "");
    parse_end(&p);
}

/* Each bad command line gives FL_CLI_ERR and exactly this message. */
static void test_option_errors(void **state)
{
    (void)state;
    struct {
        char *args[3];
        int argc;
        const char *msg;
    } cases[] = {
        {{"train", "--epoch", "3"}, 3, "fedopt-client: unknown option --epoch\n"},
        {{"train", "--no_such"}, 2, "fedopt-client: unknown option --no-such\n"},
        {{"train", "-x"}, 2, "fedopt-client: unknown option '-x'\n"},
        {{"train", "--epochs"}, 2, "fedopt-client: --epochs needs a value\n"},
        {{"train", "--json=yes"}, 2, "fedopt-client: --json takes no value (given 'yes')\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        parse_t p;
        parse_start(&p, opts, cases[i].argc, cases[i].args);
        assert_int_equal(fl_cli_next(&p.cli), FL_CLI_ERR);
        char want[256];
        snprintf(want, sizeof want, "%s(fedopt-client train --help lists the options)\n", cases[i].msg);
        assert_string_equal(parse_errors(&p), want);
        parse_end(&p);
    }
}

static void test_values(void **state)
{
    (void)state;
    char *argv[] = {"train", "--epochs", "x"};
    parse_t p;
    parse_start(&p, opts, 3, argv);
    long l = 7;
    assert_int_equal(fl_cli_next(&p.cli), O_EPOCHS);
    assert_int_equal(fl_cli_get_long(&p.cli, 1, 100, &l), FL_EINVAL);
    assert_int_equal(l, 7);
    /* The exact format: plain lines, no log prefix, option and value named. */
    assert_string_equal(parse_errors(&p), "fedopt-client: --epochs: 'x' is not an integer\n"
                                          "(fedopt-client train --help lists the options)\n");
    parse_end(&p);

    struct {
        const char *val;
        long min, max;
        int rc;
        long out;
        const char *why;
    } longs[] = {
        {"42", 1, 100, 0, 42, NULL},
        {"-3", -5, 0, 0, -3, NULL},
        {"+4", 0, 10, 0, 4, NULL},
        {"", 0, 10, FL_EINVAL, 0, "'' is not an integer"},
        {" 4", 0, 10, FL_EINVAL, 0, "' 4' is not an integer"},
        {"4x", 0, 10, FL_EINVAL, 0, "'4x' is not an integer"},
        {"1.5", 0, 10, FL_EINVAL, 0, "'1.5' is not an integer"},
        {"11", 0, 10, FL_EINVAL, 0, "'11' is out of range [0, 10]"},
        {"0", 1, 10, FL_EINVAL, 0, "'0' is out of range [1, 10]"},
        {"99999999999999999999999", 0, 10, FL_EINVAL, 0, "is out of range [0, 10]"},
    };
    for (size_t i = 0; i < sizeof longs / sizeof longs[0]; i++) {
        parse_start(&p, opts, 0, NULL);
        fl_cli_arg(&p.cli, "--epochs", longs[i].val);
        l = 123;
        assert_int_equal(fl_cli_get_long(&p.cli, longs[i].min, longs[i].max, &l), longs[i].rc);
        assert_int_equal(l, longs[i].rc ? 123 : longs[i].out);
        if (longs[i].why)
            assert_non_null(strstr(parse_errors(&p), longs[i].why));
        else
            assert_string_equal(parse_errors(&p), "");
        parse_end(&p);
    }

    struct {
        const char *val;
        int rc;
        double out;
        const char *why;
    } dbls[] = {
        {"0.5", 0, 0.5, NULL},   {"1e-3", 0, 1e-3, NULL},
        {"nan", FL_EINVAL, 0, "'nan' is not a number"},
        {"inf", FL_EINVAL, 0, "'inf' is not a number"},
        {"1e400", FL_EINVAL, 0, "'1e400' is not a number"},
        {"0.5x", FL_EINVAL, 0, "'0.5x' is not a number"},
        {"2", FL_EINVAL, 0, "'2' is out of range [0, 1]"},
        {"-0.1", FL_EINVAL, 0, "'-0.1' is out of range [0, 1]"},
    };
    for (size_t i = 0; i < sizeof dbls / sizeof dbls[0]; i++) {
        parse_start(&p, opts, 0, NULL);
        fl_cli_arg(&p.cli, "--lr", dbls[i].val);
        double d = 9;
        assert_int_equal(fl_cli_get_double(&p.cli, 0, 1, &d), dbls[i].rc);
        assert_true(d == (dbls[i].rc ? 9 : dbls[i].out));
        if (dbls[i].why)
            assert_non_null(strstr(parse_errors(&p), dbls[i].why));
        parse_end(&p);
    }

    uint64_t u = 5;
    parse_start(&p, opts, 0, NULL);
    fl_cli_arg(&p.cli, "--seed", "18446744073709551615");
    assert_int_equal(fl_cli_get_u64(&p.cli, &u), 0);
    assert_true(u == UINT64_MAX);
    fl_cli_arg(&p.cli, "--seed", "-1"); /* strtoull would wrap it */
    assert_int_equal(fl_cli_get_u64(&p.cli, &u), FL_EINVAL);
    fl_cli_arg(&p.cli, "--seed", "18446744073709551616");
    assert_int_equal(fl_cli_get_u64(&p.cli, &u), FL_EINVAL);
    assert_true(u == UINT64_MAX);
    assert_non_null(strstr(parse_errors(&p), "--seed: '-1' is not an integer"));
    parse_end(&p);

    static const char *const levels[] = {"error", "warn", "info", "debug", NULL};
    int c = -1;
    parse_start(&p, opts, 0, NULL);
    fl_cli_arg(&p.cli, "--log-level", "info");
    assert_int_equal(fl_cli_get_choice(&p.cli, levels, &c), 0);
    assert_int_equal(c, 2);
    fl_cli_arg(&p.cli, "--log-level", "loud");
    assert_int_equal(fl_cli_get_choice(&p.cli, levels, &c), FL_EINVAL);
    assert_int_equal(c, 2);
    assert_string_equal(parse_errors(&p), "fedopt-client: --log-level: 'loud' is not one of: error, warn, "
                                          "info, debug\n(fedopt-client train --help lists the options)\n");
    parse_end(&p);
}

static void test_positionals(void **state)
{
    (void)state;
    const char *pos[3];
    int n = -1;
    parse_t p;
    char *ok[] = {"rounds", "db", "7"};
    parse_start(&p, NULL, 3, ok);
    assert_int_equal(fl_cli_positionals(&p.cli, "DB [RUN]", 1, 2, pos, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(pos[0], "db");
    assert_string_equal(pos[1], "7");
    parse_end(&p);

    char *many[] = {"rounds", "db", "7", "8"};
    parse_start(&p, NULL, 4, many);
    assert_int_equal(fl_cli_positionals(&p.cli, "DB [RUN]", 1, 2, pos, &n), FL_CLI_USAGE);
    assert_non_null(strstr(parse_errors(&p), "unexpected argument '8' (wants DB [RUN])"));
    parse_end(&p);

    char *few[] = {"rounds"};
    parse_start(&p, NULL, 1, few);
    assert_int_equal(fl_cli_positionals(&p.cli, "DB [RUN]", 1, 2, pos, &n), FL_CLI_USAGE);
    assert_non_null(strstr(parse_errors(&p), "missing arguments (wants DB [RUN])"));
    parse_end(&p);

    char *opt[] = {"rounds", "db", "--run", "3"};
    parse_start(&p, NULL, 4, opt);
    assert_int_equal(fl_cli_positionals(&p.cli, "DB [RUN]", 1, 2, pos, &n), FL_CLI_USAGE);
    assert_non_null(strstr(parse_errors(&p), "unknown option --run"));
    parse_end(&p);
}

static void test_wants_help(void **state)
{
    (void)state;
    char *a[] = {"init", "dir", "--help"}, *b[] = {"init", "-h"}, *c[] = {"init", "--", "--help"},
         *d[] = {"init", "--helpme", "-hx", "--help=1"};
    assert_int_equal(fl_cli_wants_help(3, a), 1);
    assert_int_equal(fl_cli_wants_help(2, b), 1);
    assert_int_equal(fl_cli_wants_help(3, c), 0);
    assert_int_equal(fl_cli_wants_help(4, d), 0);
    assert_int_equal(fl_cli_wants_help(0, NULL), 0);
}

/* Dispatch: a command asked for help prints its usage and is never run. */
static int ran, usage_shown;
static char ran_argv0[32];
static int cmd_fn(int argc, char **argv)
{
    ran++;
    snprintf(ran_argv0, sizeof ran_argv0, "%s", argv[0]);
    return argc;
}
static void cmd_usage(FILE *out)
{
    (void)out;
    usage_shown++;
}

static void test_dispatch(void **state)
{
    (void)state;
    static const fl_cli_cmd_t table[] = {{"certs", cmd_fn, "summary", cmd_usage}, {NULL, NULL, NULL, NULL}};
    char *help1[] = {"prog", "certs", "init", "--help"}, *help2[] = {"prog", "certs", "-h", "x"},
         *run[] = {"prog", "certs", "init", "d"}, *unknown[] = {"prog", "nope"};
    ran = usage_shown = 0;
    assert_int_equal(fl_cli_dispatch("prog", table, 4, help1), 0);
    assert_int_equal(fl_cli_dispatch("prog", table, 4, help2), 0);
    assert_int_equal(ran, 0);
    assert_int_equal(usage_shown, 2);
    assert_int_equal(fl_cli_dispatch("prog", table, 4, run), 3);
    assert_int_equal(ran, 1);
    assert_string_equal(ran_argv0, "certs");
    assert_int_equal(fl_cli_dispatch("prog", table, 2, unknown), FL_CLI_USAGE);
    assert_int_equal(ran, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_flag),    cmocka_unit_test(test_both_spellings),
        cmocka_unit_test(test_option_errors), cmocka_unit_test(test_values),
        cmocka_unit_test(test_positionals),   cmocka_unit_test(test_wants_help),
        cmocka_unit_test(test_dispatch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
