/* idset.c: the string set of idset.h (FNV-1a hashing, linear probing, load factor at most 1/2). */
#include "idset.h"

#include <stdlib.h>
#include <string.h>

void cav_idset_init(cav_idset *s) {
    memset(s, 0, sizeof *s);
}

void cav_idset_clear(cav_idset *s) {
    for (size_t i = 0; i < s->cap; i++) free(s->keys[i]);
    free(s->keys);
    free(s->vals);
    cav_idset_init(s);
}

static uint64_t hash(const char *k) {
    uint64_t h = UINT64_C(1469598103934665603);
    for (const unsigned char *p = (const unsigned char *)k; *p; p++) h = (h ^ *p) * UINT64_C(1099511628211);
    return h;
}

static size_t slot(char **keys, size_t cap, const char *key) {
    size_t i = (size_t)hash(key) & (cap - 1);
    while (keys[i] && strcmp(keys[i], key)) i = (i + 1) & (cap - 1);
    return i;
}

int64_t cav_idset_get(const cav_idset *s, const char *key) {
    if (!s->cap) return -1;
    size_t i = slot(s->keys, s->cap, key);
    return s->keys[i] ? s->vals[i] : -1;
}

static int grow(cav_idset *s) {
    size_t cap = s->cap ? 2 * s->cap : 64;
    char **keys = calloc(cap, sizeof *keys);
    int64_t *vals = calloc(cap, sizeof *vals);
    if (!keys || !vals) return free(keys), free(vals), -1;
    for (size_t i = 0; i < s->cap; i++)
        if (s->keys[i]) {
            size_t j = slot(keys, cap, s->keys[i]);
            keys[j] = s->keys[i];
            vals[j] = s->vals[i];
        }
    free(s->keys);
    free(s->vals);
    s->keys = keys;
    s->vals = vals;
    s->cap = cap;
    return 0;
}

int cav_idset_add(cav_idset *s, const char *key, int64_t val) {
    if (2 * (s->n + 1) > s->cap && grow(s)) return -1;
    size_t i = slot(s->keys, s->cap, key);
    if (s->keys[i]) return 0;
    size_t n = strlen(key) + 1;
    if (!(s->keys[i] = malloc(n))) return -1;
    memcpy(s->keys[i], key, n);
    s->vals[i] = val;
    s->n++;
    return 1;
}
