/* iniargs: a section of an INI file as command-line flags.
 *
 * `fedopt-client run --config FILE` reads FILE's [client] section and runs as
 * if each "key = value" had been given as --key=value before the command
 * line's own arguments, so a flag on the command line wins (getopt keeps the
 * last value). Underscores in keys become hyphens (backoff_max and
 * backoff-max are the same key); "key = true" gives the bare flag --key and
 * "key = false" nothing. Keys are not checked here: the command's parser
 * rejects one it does not know, naming it. */
#ifndef FL_INIARGS_H
#define FL_INIARGS_H

/* If argv (before any "--") holds "--config FILE" or "--config=FILE", replaces
 * argc and argv by a new, NULL-terminated vector: argv[0], the flags from FILE's
 * [section], then the other arguments (without --config). Without --config
 * argc and argv are untouched. *owned gets what fl_iniargs_free releases
 * (NULL when nothing was made); strings of the old argv are shared, not
 * copied. Returns 0, FL_EINVAL (--config without a value), FL_EIO (FILE
 * cannot be read), FL_EFORMAT (a syntax error; logged with its line) or
 * FL_ENOMEM. */
int fl_iniargs_expand(int *argc, char ***argv, const char *section, void **owned);

void fl_iniargs_free(void *owned);

#endif
