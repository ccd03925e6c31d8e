/* testdata.h: helpers for C tests that read golden data written by tests/ref/gen_*.py into $CAV_REF. */
#ifndef CAV_TESTDATA_H
#define CAV_TESTDATA_H

#include <stdio.h>
#include <stdlib.h>

/* Path "$CAV_REF/<gen>/<name>" in buf; NULL when CAV_REF is unset. */
static inline const char *ref_path(char *buf, size_t n, const char *gen, const char *name) {
    const char *root = getenv("CAV_REF");
    if (!root) return NULL;
    snprintf(buf, n, "%s/%s/%s", root, gen, name);
    return buf;
}

/* Reads a whole raw file; *nbytes gets its size. NULL if it cannot be read. */
static inline void *ref_read(const char *gen, const char *name, size_t *nbytes) {
    char path[4096];
    if (!ref_path(path, sizeof path, gen, name)) return NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (nbytes) *nbytes = (size_t)n;
    return buf;
}

/* Reads a raw float32 file of exactly count values (NULL if it is shorter, longer or unreadable). */
static inline float *read_f32(const char *path, size_t count) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    float *v = malloc(sizeof(float) * (count ? count : 1));
    size_t got = v ? fread(v, sizeof(float), count, f) : 0;
    int extra = fgetc(f) != EOF;
    fclose(f);
    if (got != count || extra) {
        free(v);
        return NULL;
    }
    return v;
}

#endif
