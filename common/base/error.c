#include "common/base/error.h"

const char *fl_strerror(int err)
{
    switch (err) {
    case FL_OK:
        return "success";
#define FL__ERR_MSG(name, code, msg) \
    case FL_##name:                  \
        return msg;
        FL_ERRNO_MAP(FL__ERR_MSG)
#undef FL__ERR_MSG
    default:
        return "unknown error";
    }
}

const char *fl_errname(int err)
{
    switch (err) {
    case FL_OK:
        return "FL_OK";
#define FL__ERR_NAME(name, code, msg) \
    case FL_##name:                   \
        return "FL_" #name;
        FL_ERRNO_MAP(FL__ERR_NAME)
#undef FL__ERR_NAME
    default:
        return "FL_E?";
    }
}
