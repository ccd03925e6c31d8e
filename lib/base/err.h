/* err.h: the error value every fallible libcav call fills, in its own header so that code which knows
 * nothing of records (the codecs: jpeg, fbank) can report errors the same way. */
#ifndef CAV_ERR_H
#define CAV_ERR_H

/* Error: code is the exit status a tool should use (CAV_EXIT_INPUT for bad data, CAV_EXIT_INTERNAL for
 * resources), msg names the file, the record and the field where they are known. */
typedef struct {
    int code;
    char msg[1024];
} cav_err;

/* Fills err (if not NULL) and returns -1, so callers can write `return cav_fail(err, 2, "...")`. */
int cav_fail(cav_err *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
