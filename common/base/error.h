/* error: fedopt's error codes and their messages.
 *
 * Every fedopt function that can fail returns int: 0 on success or one of the
 * negative FL_E* codes below. Codes are stable (they travel in the wire
 * protocol's error message and land in the database), so new codes are only
 * ever appended. */
#ifndef FL_ERROR_H
#define FL_ERROR_H

#define FL_ERRNO_MAP(XX)                                                     \
    XX(EINVAL, -1, "invalid argument")                                       \
    XX(ENOMEM, -2, "out of memory")                                          \
    XX(EIO, -3, "input/output error")                                        \
    XX(EFORMAT, -4, "malformed data")                                        \
    XX(ERANGE, -5, "value out of range")                                     \
    XX(ENONFINITE, -6, "non-finite value (NaN or Inf)")                      \
    XX(ESHAPE, -7, "shape mismatch")                                         \
    XX(ENOTFOUND, -8, "not found")                                           \
    XX(EPROTO, -9, "protocol violation")                                     \
    XX(ETLS, -10, "TLS failure")                                             \
    XX(EDB, -11, "database error")                                           \
    XX(ETOOBIG, -12, "size exceeds limit")                                   \
    XX(ETIMEDOUT, -13, "timed out")                                          \
    XX(ECLOSED, -14, "connection closed")                                    \
    XX(EAGAIN, -15, "try again")                                             \
    XX(EUNSUPPORTED, -16, "not supported")                                   \
    XX(ESTATE, -17, "operation not valid in this state")                     \
    XX(ECHECKSUM, -18, "checksum mismatch")                                  \
    XX(EAUTH, -19, "authentication failed")                                  \
    XX(EEMPTY, -20, "nothing to do (empty input)")                           \
    XX(ETRUNCATED, -21, "truncated data")                                    \
    XX(EEXIST, -22, "already exists")                                        \
    XX(ECONFIG, -23, "bad configuration")                                    \
    XX(ECANCELED, -24, "canceled")                                           \
    XX(ENET, -25, "network error")

typedef enum {
    FL_OK = 0,
#define FL__ERR_ENUM(name, code, msg) FL_##name = (code),
    FL_ERRNO_MAP(FL__ERR_ENUM)
#undef FL__ERR_ENUM
} fl_error_t;

/* Returns a static, human-readable message for an FL_E* code (or "success"
 * for 0, "unknown error" for anything else). Never returns NULL. */
const char *fl_strerror(int err);

/* Returns the symbolic name of an FL_E* code ("FL_EINVAL"), or "FL_OK", or
 * "FL_E?" for an unknown code. Never returns NULL. */
const char *fl_errname(int err);

#endif
