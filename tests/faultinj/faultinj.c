/* faultinj.c: an LD_PRELOAD library for the write-failure tests (tests/tools/test_reliability.py). It
 * counts the calls through which a tool's output reaches the disk — write, pwrite, fwrite, fputs, fflush,
 * fclose, fsync, fdatasync, rename — and makes call number FAULT_AT (1-based) fail as a full disk would
 * (ENOSPC; EIO for the syncs), once. Calls on stderr are neither counted nor failed, so the tool can
 * still say what went wrong. FAULT_COUNT=FILE writes the number of calls counted to FILE at exit, so a test
 * can try every index. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static long calls, fault_at = -1;

static void fini(void) {
    const char *p = getenv("FAULT_COUNT");
    if (!p) return;
    FILE *f = fopen(p, "w");
    if (f) fprintf(f, "%ld\n", calls), fclose(f);
}

__attribute__((constructor)) static void init(void) {
    const char *a = getenv("FAULT_AT");
    if (a) fault_at = atol(a);
    atexit(fini);
}

/* 1 when this call is the one to fail; FAULT_TRACE=1 names each call on stderr (to find an index). */
#define hit() hit_(__func__)
static int hit_(const char *fn) {
    static int trace = -1;
    if (trace < 0) trace = getenv("FAULT_TRACE") != NULL;
    if (trace) fprintf(stderr, "faultinj: %ld %s\n", calls + 1, fn);
    return ++calls == fault_at;
}

#define REAL(name)                                                                                           \
    static __typeof__(name) *real_##name;                                                                    \
    if (!real_##name) real_##name = dlsym(RTLD_NEXT, #name)

ssize_t write(int fd, const void *b, size_t n) {
    REAL(write);
    if (fd != 2 && hit()) return errno = ENOSPC, -1;
    return real_write(fd, b, n);
}
ssize_t pwrite(int fd, const void *b, size_t n, off_t off) {
    REAL(pwrite);
    if (hit()) return errno = ENOSPC, -1;
    return real_pwrite(fd, b, n, off);
}
ssize_t pwrite64(int fd, const void *b, size_t n, off_t off) {
    REAL(pwrite64);
    if (hit()) return errno = ENOSPC, -1;
    return real_pwrite64(fd, b, n, off);
}
size_t fwrite(const void *b, size_t size, size_t n, FILE *f) {
    REAL(fwrite);
    if (f != stderr && hit()) return errno = ENOSPC, 0;
    return real_fwrite(b, size, n, f);
}
int fputs(const char *s, FILE *f) {
    REAL(fputs);
    if (f != stderr && hit()) return errno = ENOSPC, EOF;
    return real_fputs(s, f);
}
int fflush(FILE *f) {
    REAL(fflush);
    if (f && f != stderr && __fpending(f) && hit())
        return errno = ENOSPC, EOF; /* nothing to write: no fault */
    return real_fflush(f);
}
int fclose(FILE *f) {
    REAL(fclose);
    int fail = f != stderr && hit();
    int r = real_fclose(f);
    return fail ? (errno = ENOSPC, EOF) : r;
}
int fsync(int fd) {
    REAL(fsync);
    if (hit()) return errno = EIO, -1;
    return real_fsync(fd);
}
int fdatasync(int fd) {
    REAL(fdatasync);
    if (hit()) return errno = EIO, -1;
    return real_fdatasync(fd);
}
int rename(const char *a, const char *b) {
    REAL(rename);
    if (hit()) return errno = ENOSPC, -1;
    return real_rename(a, b);
}
