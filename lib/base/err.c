/* err.c: cav_fail (see err.h). */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>

int cav_fail(cav_err *err, int code, const char *fmt, ...) {
    if (err) {
        err->code = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}
