#include "common/base/iniargs.h"

#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/error.h"
#include "common/base/log.h"

/* The new vector and the flag strings made for it. */
typedef struct {
    char **argv;
    int argc, cap;
    char **made;
    int nmade;
    const char *section;
    int oom;
} iniargs_t;

static int push(iniargs_t *a, char *s)
{
    if (a->argc + 1 >= a->cap) {
        int cap = a->cap ? a->cap * 2 : 16;
        char **n = realloc(a->argv, (size_t)cap * sizeof *n);
        if (!n)
            return FL_ENOMEM;
        a->argv = n;
        a->cap = cap;
    }
    a->argv[a->argc++] = s;
    a->argv[a->argc] = NULL;
    return 0;
}

static int on_entry(void *user, const char *section, const char *name, const char *value)
{
    iniargs_t *a = user;
    if (strcmp(section, a->section) != 0 || strcmp(value, "false") == 0)
        return 1;
    size_t n = strlen(name) + strlen(value) + 4;
    char *flag = malloc(n);
    char **made = realloc(a->made, (size_t)(a->nmade + 1) * sizeof *made);
    if (!flag || !made) {
        free(flag);
        if (made)
            a->made = made;
        a->oom = 1;
        return 0;
    }
    a->made = made;
    a->made[a->nmade++] = flag;
    if (strcmp(value, "true") == 0)
        snprintf(flag, n, "--%s", name);
    else
        snprintf(flag, n, "--%s=%s", name, value);
    for (char *p = flag + 2; *p && *p != '='; p++)
        if (*p == '_')
            *p = '-';
    if (push(a, flag)) {
        a->oom = 1;
        return 0;
    }
    return 1;
}

void fl_iniargs_free(void *owned)
{
    iniargs_t *a = owned;
    if (!a)
        return;
    for (int i = 0; i < a->nmade; i++)
        free(a->made[i]);
    free(a->made);
    free(a->argv);
    free(a);
}

int fl_iniargs_expand(int *argc, char ***argv, const char *section, void **owned)
{
    if (!argc || !argv || !*argv || !section || !owned || *argc < 1)
        return FL_EINVAL;
    *owned = NULL;
    char **in = *argv;
    const char *file = NULL;
    int at = -1, width = 0;
    for (int i = 1; i < *argc; i++) {
        if (strcmp(in[i], "--") == 0)
            break;
        if (strcmp(in[i], "--config") == 0) {
            if (i + 1 >= *argc)
                return FL_EINVAL;
            file = in[i + 1];
            at = i;
            width = 2;
            break;
        }
        if (strncmp(in[i], "--config=", 9) == 0) {
            file = in[i] + 9;
            at = i;
            width = 1;
            break;
        }
    }
    if (!file)
        return 0;
    iniargs_t *a = calloc(1, sizeof *a);
    if (!a)
        return FL_ENOMEM;
    a->section = section;
    int rc = push(a, in[0]);
    if (rc)
        goto fail;
    int line = ini_parse(file, on_entry, a);
    if (a->oom) {
        rc = FL_ENOMEM;
        goto fail;
    }
    if (line < 0) {
        FL_LOG_E("config", "%s: cannot read it", file);
        rc = FL_EIO;
        goto fail;
    }
    if (line > 0) {
        FL_LOG_E("config", "%s:%d: not an INI line (key = value, [section], ; comment)", file, line);
        rc = FL_EFORMAT;
        goto fail;
    }
    for (int i = 1; i < *argc; i++)
        if ((i < at || i >= at + width) && (rc = push(a, in[i])))
            goto fail;
    *argc = a->argc;
    *argv = a->argv;
    *owned = a;
    return 0;
fail:
    fl_iniargs_free(a);
    return rc;
}
