/* rawdump.h: reader for the ".raw" expected-value files tests/ref/gen_pth.py writes beside its .pth and
 * safetensors files: for every tensor in sorted name order, u32 name length, the name, u32 ndim, ndim x u32
 * sizes, then the values as little-endian f32. Header-only, for the checkpoint tests. */
#ifndef CAV_TEST_RAWDUMP_H
#define CAV_TEST_RAWDUMP_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char name[300];
    int ndim;
    int64_t shape[8];
    size_t numel;
    float *v;
} raw_tensor;

typedef struct {
    int n;
    raw_tensor *t;
} raw_dump;

static void raw_free(raw_dump *d) {
    for (int i = 0; i < d->n; i++) free(d->t[i].v);
    free(d->t);
    d->t = NULL;
    d->n = 0;
}

/* 0 ok, -1 on a malformed or missing file. */
static int raw_load(raw_dump *d, const char *path) {
    memset(d, 0, sizeof *d);
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    int cap = 0;
    for (;;) {
        uint32_t nl, nd;
        if (fread(&nl, 4, 1, f) != 1) break;
        if (d->n == cap) {
            cap = cap ? 2 * cap : 64;
            raw_tensor *nt = realloc(d->t, (size_t)cap * sizeof *nt);
            if (!nt) goto bad;
            d->t = nt;
        }
        raw_tensor *t = &d->t[d->n];
        memset(t, 0, sizeof *t);
        if (nl >= sizeof t->name || fread(t->name, 1, nl, f) != nl || fread(&nd, 4, 1, f) != 1 || nd > 8)
            goto bad;
        t->ndim = (int)nd;
        t->numel = 1;
        for (uint32_t k = 0; k < nd; k++) {
            uint32_t s;
            if (fread(&s, 4, 1, f) != 1) goto bad;
            t->shape[k] = s;
            t->numel *= s;
        }
        t->v = malloc(t->numel * 4 + 4);
        d->n++;
        if (!t->v || fread(t->v, 4, t->numel, f) != t->numel) goto bad;
    }
    fclose(f);
    return 0;
bad:
    fclose(f);
    raw_free(d);
    return -1;
}

#endif
