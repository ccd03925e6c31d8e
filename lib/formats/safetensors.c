/* safetensors.c: the strict safetensors reader (mmap, header validated before use) and the writer (temp
 * file + rename, header padded to 8 bytes). See safetensors.h for the format and the checks. */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atomicfile.h"
#include "json.h"

static const struct {
    const char *name;
    size_t size;
    cav_dtype dtype; /* 0: no record type */
} st_types[] = {
    {"F64", 8, CAV_F64}, {"F32", 4, CAV_F32}, {"F16", 2, CAV_F16}, {"BF16", 2, 0},    {"I64", 8, CAV_I64},
    {"I32", 4, CAV_I32}, {"I16", 2, CAV_I16}, {"I8", 1, 0},        {"U8", 1, CAV_U8}, {"U16", 2, 0},
    {"U32", 4, 0},       {"U64", 8, 0},       {"BOOL", 1, 0},
};
#define N_ST_TYPES (int)(sizeof st_types / sizeof st_types[0])

void cav_st_close(cav_safetensors *st) {
    if (!st) return;
    for (int i = 0; i < st->n; i++) free(st->t[i].name);
    free(st->t);
    for (int i = 0; i < st->nmeta; i++) free(st->meta_keys[i]), free(st->meta_vals[i]);
    free(st->meta_keys);
    free(st->meta_vals);
    if (st->map && st->map != MAP_FAILED) munmap(st->map, st->map_len);
    free(st->path);
    memset(st, 0, sizeof *st);
}

/* A JSON number that is a non-negative integer representable exactly (< 2^53). */
static int json_uint(const cav_json *j, uint64_t *out) {
    if (!j || j->type != CAV_JSON_NUMBER) return 0;
    double d = j->number;
    if (!(d >= 0) || d > 9007199254740992.0 || floor(d) != d) return 0;
    *out = (uint64_t)d;
    return 1;
}

typedef struct {
    uint64_t begin, end;
    int idx;
} span;

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static int parse_entry(cav_safetensors *st, const char *name, const cav_json *e, uint64_t data_len,
                       cav_st_tensor *t, span *sp, cav_err *err) {
    const char *path = st->path;
    if (!*name) return cav_fail(err, 2, "%s: safetensors header: empty tensor name", path);
    if (strlen(name) > CAV_MAX_NAME)
        return cav_fail(err, 2, "%s: safetensors header: tensor name longer than %d bytes", path,
                        CAV_MAX_NAME);
    if (e->type != CAV_JSON_OBJECT)
        return cav_fail(err, 2, "%s: tensor %s: header entry is not an object", path, name);
    for (int k = 0; k < e->n; k++) {
        if (strcmp(e->keys[k], "dtype") && strcmp(e->keys[k], "shape") && strcmp(e->keys[k], "data_offsets"))
            return cav_fail(err, 2, "%s: tensor %s: unknown header field \"%s\"", path, name, e->keys[k]);
    }
    const cav_json *dt = cav_json_get(e, "dtype"), *sh = cav_json_get(e, "shape"),
                   *off = cav_json_get(e, "data_offsets");
    if (!dt || !sh || !off)
        return cav_fail(err, 2, "%s: tensor %s: header entry lacks dtype, shape or data_offsets", path, name);
    if (dt->type != CAV_JSON_STRING)
        return cav_fail(err, 2, "%s: tensor %s: dtype is not a string", path, name);
    int ti = -1;
    for (int k = 0; k < N_ST_TYPES; k++)
        if (!strcmp(dt->string, st_types[k].name)) ti = k;
    if (ti < 0) return cav_fail(err, 2, "%s: tensor %s: unknown dtype \"%.32s\"", path, name, dt->string);
    if (sh->type != CAV_JSON_ARRAY)
        return cav_fail(err, 2, "%s: tensor %s: shape is not an array", path, name);
    if (sh->n > CAV_MAX_NDIM)
        return cav_fail(err, 2, "%s: tensor %s: %d dimensions (at most %d)", path, name, sh->n, CAV_MAX_NDIM);
    t->ndim = sh->n;
    for (int k = 0; k < sh->n; k++) {
        uint64_t d;
        if (!json_uint(sh->items[k], &d) || d > (uint64_t)INT64_MAX)
            return cav_fail(err, 2, "%s: tensor %s: shape[%d] is not a non-negative integer", path, name, k);
        t->shape[k] = (int64_t)d;
    }
    if (off->type != CAV_JSON_ARRAY || off->n != 2)
        return cav_fail(err, 2, "%s: tensor %s: data_offsets is not a pair", path, name);
    uint64_t b, en;
    if (!json_uint(off->items[0], &b) || !json_uint(off->items[1], &en) || b > en)
        return cav_fail(err, 2, "%s: tensor %s: data_offsets are not integers begin <= end", path, name);
    if (en > data_len)
        return cav_fail(err, 2, "%s: tensor %s: data_offsets [%llu, %llu) beyond the %llu-byte data area",
                        path, name, (unsigned long long)b, (unsigned long long)en,
                        (unsigned long long)data_len);
    int64_t numel = cav_shape_count(t->ndim, t->shape, st_types[ti].size, data_len ? data_len : 1);
    if (numel < 0 || (uint64_t)numel * st_types[ti].size != en - b)
        return cav_fail(err, 2,
                        "%s: tensor %s: shape and dtype %s need a different byte count than [%llu, %llu)",
                        path, name, st_types[ti].name, (unsigned long long)b, (unsigned long long)en);
    t->name = strdup(name);
    if (!t->name) return cav_fail(err, 3, "%s: out of memory", path);
    t->st_dtype = st_types[ti].name;
    t->dtype = st_types[ti].dtype;
    t->elem_size = st_types[ti].size;
    t->numel = (size_t)numel;
    t->nbytes = (size_t)(en - b);
    sp->begin = b;
    sp->end = en;
    return 0;
}

int cav_st_open(cav_safetensors *st, const char *path, cav_err *err) {
    memset(st, 0, sizeof *st);
    st->path = strdup(path);
    if (!st->path) return cav_fail(err, 3, "%s: out of memory", path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        cav_fail(err, 2, "%s: cannot open: %s", path, strerror(errno));
        cav_st_close(st);
        return -1;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        cav_fail(err, 2, "%s: not a regular file", path);
        cav_st_close(st);
        return -1;
    }
    uint64_t fsize = (uint64_t)sb.st_size;
    if (fsize < 8) {
        close(fd);
        cav_fail(err, 2, "%s: %llu bytes: too short for a safetensors file", path, (unsigned long long)fsize);
        cav_st_close(st);
        return -1;
    }
    st->map_len = (size_t)fsize;
    st->map = mmap(NULL, st->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (st->map == MAP_FAILED) {
        st->map = NULL;
        cav_fail(err, 3, "%s: cannot map: %s", path, strerror(errno));
        cav_st_close(st);
        return -1;
    }
    const unsigned char *p = st->map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | p[i];
    int rc = -1;
    cav_json *h = NULL;
    span *spans = NULL;
    if (hlen < 2 || hlen > CAV_ST_MAX_HEADER || hlen > fsize - 8) {
        cav_fail(err, 2, "%s: safetensors header length %llu is not within 2..%u and the %llu-byte file",
                 path, (unsigned long long)hlen, CAV_ST_MAX_HEADER, (unsigned long long)fsize);
        goto done;
    }
    if (p[8] != '{') {
        cav_fail(err, 2, "%s: safetensors header does not start with '{'", path);
        goto done;
    }
    char jerr[256];
    h = cav_json_parse((const char *)p + 8, (size_t)hlen, jerr, sizeof jerr);
    if (!h) {
        cav_fail(err, 2, "%s: safetensors header: %s", path, jerr);
        goto done;
    }
    if (h->type != CAV_JSON_OBJECT) {
        cav_fail(err, 2, "%s: safetensors header is not a JSON object", path);
        goto done;
    }
    uint64_t data_len = fsize - 8 - hlen;
    st->t = calloc((size_t)h->n + 1, sizeof *st->t);
    spans = calloc((size_t)h->n + 1, sizeof *spans);
    if (!st->t || !spans) {
        cav_fail(err, 3, "%s: out of memory", path);
        goto done;
    }
    for (int i = 0; i < h->n; i++) {
        const char *key = h->keys[i];
        const cav_json *e = h->items[i];
        if (!strcmp(key, "__metadata__")) {
            if (e->type == CAV_JSON_NULL) continue;
            if (e->type != CAV_JSON_OBJECT) {
                cav_fail(err, 2, "%s: safetensors __metadata__ is not an object", path);
                goto done;
            }
            st->meta_keys = calloc((size_t)e->n + 1, sizeof(char *));
            st->meta_vals = calloc((size_t)e->n + 1, sizeof(char *));
            if (!st->meta_keys || !st->meta_vals) {
                cav_fail(err, 3, "%s: out of memory", path);
                goto done;
            }
            for (int k = 0; k < e->n; k++) {
                if (e->items[k]->type != CAV_JSON_STRING) {
                    cav_fail(err, 2, "%s: safetensors __metadata__ value \"%s\" is not a string", path,
                             e->keys[k]);
                    goto done;
                }
                st->meta_keys[k] = strdup(e->keys[k]);
                st->meta_vals[k] = strdup(e->items[k]->string);
                st->nmeta = k + 1;
                if (!st->meta_keys[k] || !st->meta_vals[k]) {
                    cav_fail(err, 3, "%s: out of memory", path);
                    goto done;
                }
            }
            continue;
        }
        cav_st_tensor *t = &st->t[st->n];
        spans[st->n].idx = st->n;
        if (parse_entry(st, key, e, data_len, t, &spans[st->n], err)) goto done;
        st->n++;
    }
    qsort(spans, (size_t)st->n, sizeof *spans, span_cmp);
    uint64_t pos = 0;
    for (int i = 0; i < st->n; i++) {
        if (spans[i].begin < pos) {
            cav_fail(err, 2, "%s: tensor %s: data_offsets overlap another tensor", path,
                     st->t[spans[i].idx].name);
            goto done;
        }
        if (spans[i].begin > pos) {
            cav_fail(err, 2, "%s: tensor %s: a hole of %llu bytes before its data", path,
                     st->t[spans[i].idx].name, (unsigned long long)(spans[i].begin - pos));
            goto done;
        }
        pos = spans[i].end;
    }
    if (pos != data_len) {
        cav_fail(err, 2, "%s: %llu bytes after the last tensor", path, (unsigned long long)(data_len - pos));
        goto done;
    }
    for (int i = 0; i < st->n; i++) st->t[spans[i].idx].data = p + 8 + hlen + spans[i].begin;
    rc = 0;
done:
    cav_json_free(h);
    free(spans);
    if (rc) cav_st_close(st);
    return rc;
}

const cav_st_tensor *cav_st_find(const cav_safetensors *st, const char *name) {
    for (int i = 0; i < st->n; i++)
        if (!strcmp(st->t[i].name, name)) return &st->t[i];
    return NULL;
}

const char *cav_st_meta(const cav_safetensors *st, const char *key) {
    for (int i = 0; i < st->nmeta; i++)
        if (!strcmp(st->meta_keys[i], key)) return st->meta_vals[i];
    return NULL;
}

static float half_to_f32(uint16_t h) {
    uint32_t s = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 31, m = h & 1023, bits;
    if (e == 0) {
        if (m == 0)
            bits = s;
        else { /* subnormal: renormalise */
            int sh = 0;
            while (!(m & 1024)) m <<= 1, sh++;
            bits = s | (uint32_t)(113 - sh) << 23 | (m & 1023) << 13;
        }
    } else if (e == 31)
        bits = s | 0x7f800000u | m << 13;
    else
        bits = s | (e + 112) << 23 | m << 13;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* A tensor's element count against the caller's; 0 or -1 with err (exit code 2). */
static int check_count(const cav_safetensors *st, const cav_st_tensor *t, size_t count, cav_err *err) {
    if (count == t->numel) return 0;
    return cav_fail(err, 2, "%s: tensor %s: %zu values, expected %zu", st->path, t->name, t->numel, count);
}

int cav_st_copy_f32(const cav_safetensors *st, const cav_st_tensor *t, float *dst, size_t count,
                    cav_err *err) {
    if (check_count(st, t, count, err)) return -1;
    const unsigned char *s = t->data;
    const char *d = t->st_dtype;
    if (!strcmp(d, "F32")) {
        memcpy(dst, s, count * 4);
    } else if (!strcmp(d, "F64")) {
        for (size_t i = 0; i < count; i++) {
            double v;
            memcpy(&v, s + 8 * i, 8);
            dst[i] = (float)v;
        }
    } else if (!strcmp(d, "F16") || !strcmp(d, "BF16")) {
        int bf = d[0] == 'B';
        for (size_t i = 0; i < count; i++) {
            uint16_t v;
            memcpy(&v, s + 2 * i, 2);
            if (bf) {
                uint32_t bits = (uint32_t)v << 16;
                memcpy(&dst[i], &bits, 4);
            } else {
                dst[i] = half_to_f32(v);
            }
        }
    } else {
        return cav_fail(err, 2, "%s: tensor %s: dtype %s where a float tensor is expected", st->path, t->name,
                        d);
    }
    return 0;
}

int cav_st_copy_i64(const cav_safetensors *st, const cav_st_tensor *t, int64_t *dst, size_t count,
                    cav_err *err) {
    if (check_count(st, t, count, err)) return -1;
    const unsigned char *s = t->data;
    const char *d = t->st_dtype;
    for (size_t i = 0; i < count; i++) {
        if (!strcmp(d, "I64"))
            memcpy(&dst[i], s + 8 * i, 8);
        else if (!strcmp(d, "I32")) {
            int32_t v;
            memcpy(&v, s + 4 * i, 4);
            dst[i] = v;
        } else if (!strcmp(d, "I16")) {
            int16_t v;
            memcpy(&v, s + 2 * i, 2);
            dst[i] = v;
        } else if (!strcmp(d, "I8"))
            dst[i] = (int8_t)s[i];
        else if (!strcmp(d, "U8"))
            dst[i] = s[i];
        else
            return cav_fail(err, 2, "%s: tensor %s: dtype %s where an integer tensor is expected", st->path,
                            t->name, d);
    }
    return 0;
}

static const char *st_name_of(cav_dtype t) {
    for (int k = 0; k < N_ST_TYPES; k++)
        if (st_types[k].dtype == t && t) return st_types[k].name;
    return NULL;
}

int cav_st_write(const char *path, const cav_st_entry *e, int n, const char *const *meta_keys,
                 const char *const *meta_vals, int nmeta, cav_err *err) {
    char *h = NULL;
    size_t hl = 0, hc = 0;
    uint64_t *sizes = calloc((size_t)n + 1, sizeof *sizes);
    cav_afile *out = NULL;
    FILE *f = NULL;
    int rc = -1;
    if (!sizes) return cav_fail(err, 3, "%s: out of memory", path);
#define APPEND(s)                                                                                            \
    do {                                                                                                     \
        const char *as_ = (s);                                                                               \
        size_t an_ = strlen(as_);                                                                            \
        if (hl + an_ + 1 > hc) {                                                                             \
            size_t nc_ = (hc + an_ + 1) * 2;                                                                 \
            char *nh_ = realloc(h, nc_);                                                                     \
            if (!nh_) {                                                                                      \
                cav_fail(err, 3, "%s: out of memory", path);                                                 \
                goto out;                                                                                    \
            }                                                                                                \
            h = nh_, hc = nc_;                                                                               \
        }                                                                                                    \
        memcpy(h + hl, as_, an_ + 1);                                                                        \
        hl += an_;                                                                                           \
    } while (0)
#define APPEND_STR(s)                                                                                        \
    do {                                                                                                     \
        if (cav_json_append_string(&h, &hl, &hc, (s))) {                                                     \
            cav_fail(err, 3, "%s: out of memory", path);                                                     \
            goto out;                                                                                        \
        }                                                                                                    \
    } while (0)
    APPEND("{");
    if (nmeta > 0) {
        APPEND_STR("__metadata__");
        APPEND(":{");
        for (int i = 0; i < nmeta; i++) {
            if (i) APPEND(",");
            APPEND_STR(meta_keys[i]);
            APPEND(":");
            APPEND_STR(meta_vals[i]);
        }
        APPEND("}");
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        const char *dn = st_name_of(e[i].dtype);
        if (!dn) {
            cav_fail(err, 3, "%s: tensor %s: no safetensors dtype for record type %d", path, e[i].name,
                     e[i].dtype);
            goto out;
        }
        if (!e[i].name[0] || !strcmp(e[i].name, "__metadata__")) {
            cav_fail(err, 3, "%s: bad tensor name \"%s\"", path, e[i].name);
            goto out;
        }
        for (int k = 0; k < i; k++)
            if (!strcmp(e[k].name, e[i].name)) {
                cav_fail(err, 3, "%s: tensor %s given twice", path, e[i].name);
                goto out;
            }
        int64_t numel = cav_shape_count(e[i].ndim, e[i].shape, cav_dtype_size(e[i].dtype), UINT64_MAX / 2);
        if (numel < 0) {
            cav_fail(err, 3, "%s: tensor %s: bad shape", path, e[i].name);
            goto out;
        }
        sizes[i] = (uint64_t)numel * cav_dtype_size(e[i].dtype);
        char num[64];
        APPEND(nmeta > 0 || i ? "," : "");
        APPEND_STR(e[i].name);
        APPEND(":{\"dtype\":\"");
        APPEND(dn);
        APPEND("\",\"shape\":[");
        for (int d = 0; d < e[i].ndim; d++) {
            snprintf(num, sizeof num, "%s%lld", d ? "," : "", (long long)e[i].shape[d]);
            APPEND(num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                 (unsigned long long)(off + sizes[i]));
        APPEND(num);
        off += sizes[i];
    }
    APPEND("}");
    while (hl % 8) APPEND(" ");
    out = cav_afile_open(path, 0, err);
    if (!out) goto out;
    if (!(f = cav_afile_stream(out))) {
        cav_fail(err, 3, "%s: cannot create: %s", cav_afile_name(out), strerror(errno));
        goto out;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    int ok = fwrite(len8, 1, 8, f) == 8 && fwrite(h, 1, hl, f) == hl;
    for (int i = 0; ok && i < n; i++)
        if (sizes[i] && fwrite(e[i].data, 1, (size_t)sizes[i], f) != sizes[i]) ok = 0;
    if (!ok) {
        cav_fail(err, 3, "%s: write failed: %s", cav_afile_name(out), strerror(errno));
        goto out;
    }
    cav_afile *done = out;
    out = NULL;
    if (cav_afile_commit(done, err)) goto out;
    rc = 0;
out:
#undef APPEND
#undef APPEND_STR
    cav_afile_abort(out);
    free(h);
    free(sizes);
    return rc;
}
