/* record.c: in-memory records (ids, tensors, attributes), the shape guard against hostile sizes, and the
 * half-precision conversions. Nothing here touches a file. */
#include "record.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
} dtypes[] = {{NULL, 0}, {"u8", 1}, {"i16", 2}, {"i32", 4}, {"i64", 8}, {"f16", 2}, {"f32", 4}, {"f64", 8}};
#define NDTYPES (int)(sizeof dtypes / sizeof dtypes[0])

size_t cav_dtype_size(cav_dtype t) {
    return (int)t > 0 && (int)t < NDTYPES ? dtypes[t].size : 0;
}
const char *cav_dtype_name(cav_dtype t) {
    return (int)t > 0 && (int)t < NDTYPES ? dtypes[t].name : NULL;
}
int cav_dtype_parse(const char *name) {
    for (int i = 1; i < NDTYPES; i++)
        if (strcmp(name, dtypes[i].name) == 0) return i;
    return -1;
}

int64_t cav_shape_count(int ndim, const int64_t *shape, size_t elem_size, uint64_t limit) {
    if (ndim < 0 || ndim > CAV_MAX_NDIM || elem_size == 0) return -1;
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return -1;
        uint64_t d = (uint64_t)shape[i];
        if (d != 0 && n > limit / d) return -1;
        n *= d;
    }
    if (n > limit / elem_size) return -1;
    return (int64_t)n;
}

void cav_attrs_init(cav_attrs *a) {
    memset(a, 0, sizeof *a);
}

void cav_attrs_clear(cav_attrs *a) {
    for (int i = 0; i < a->n; i++) {
        free(a->v[i].key);
        free(a->v[i].value);
    }
    free(a->v);
    cav_attrs_init(a);
}

const char *cav_attrs_get(const cav_attrs *a, const char *key) {
    for (int i = 0; i < a->n; i++)
        if (strcmp(a->v[i].key, key) == 0) return a->v[i].value;
    return NULL;
}

int cav_attrs_set(cav_attrs *a, const char *key, const char *value) {
    char *v = strdup(value);
    if (!v) return -1;
    for (int i = 0; i < a->n; i++)
        if (strcmp(a->v[i].key, key) == 0) {
            free(a->v[i].value);
            a->v[i].value = v;
            return 0;
        }
    if (a->n == a->cap) {
        int cap = a->cap ? 2 * a->cap : 8;
        cav_attr *nv = realloc(a->v, (size_t)cap * sizeof *nv);
        if (!nv) return free(v), -1;
        a->v = nv;
        a->cap = cap;
    }
    char *k = strdup(key);
    if (!k) return free(v), -1;
    a->v[a->n].key = k;
    a->v[a->n].value = v;
    a->n++;
    return 0;
}

int cav_attrs_copy(cav_attrs *dst, const cav_attrs *src) {
    for (int i = 0; i < src->n; i++)
        if (cav_attrs_set(dst, src->v[i].key, src->v[i].value)) return -1;
    return 0;
}

void cav_record_init(cav_record *r) {
    memset(r, 0, sizeof *r);
}

void cav_record_clear(cav_record *r) {
    for (int i = 0; i < r->ntensors; i++) {
        free(r->tensors[i].name);
        free(r->tensors[i].data);
    }
    free(r->tensors);
    free(r->id);
    cav_attrs_clear(&r->attrs);
    cav_record_init(r);
}

int cav_record_set_id(cav_record *r, const char *id) {
    char *d = strdup(id);
    if (!d) return -1;
    free(r->id);
    r->id = d;
    return 0;
}

cav_tensor *cav_record_find(const cav_record *r, const char *name) {
    for (int i = 0; i < r->ntensors; i++)
        if (strcmp(r->tensors[i].name, name) == 0) return &r->tensors[i];
    return NULL;
}

/* Records stay small (a clip's waveform, frames, fbank...), but a single tensor is capped so that a wrong
 * shape cannot ask for the whole machine. */
#define CAV_TENSOR_LIMIT (UINT64_C(1) << 34)

cav_tensor *cav_record_add(cav_record *r, const char *name, cav_dtype t, int ndim, const int64_t *shape) {
    size_t es = cav_dtype_size(t);
    if (!name[0] || strlen(name) > CAV_MAX_NAME) return NULL;
    int64_t n = cav_shape_count(ndim, shape, es, CAV_TENSOR_LIMIT);
    if (n < 0) return NULL;
    size_t nbytes = (size_t)n * es;
    void *data = calloc(nbytes ? nbytes : 1, 1);
    if (!data) return NULL;
    cav_tensor *x = cav_record_find(r, name);
    if (x) {
        free(x->data);
    } else {
        if (r->ntensors == r->cap) {
            int cap = r->cap ? 2 * r->cap : 8;
            cav_tensor *nt = realloc(r->tensors, (size_t)cap * sizeof *nt);
            if (!nt) return free(data), NULL;
            r->tensors = nt;
            r->cap = cap;
        }
        x = &r->tensors[r->ntensors];
        x->name = strdup(name);
        if (!x->name) return free(data), NULL;
        r->ntensors++;
    }
    x->dtype = t;
    x->ndim = ndim;
    memset(x->shape, 0, sizeof x->shape);
    for (int i = 0; i < ndim; i++) x->shape[i] = shape[i];
    x->nbytes = nbytes;
    x->data = data;
    return x;
}

cav_tensor *cav_record_put(cav_record *r, const char *name, cav_dtype t, int ndim, const int64_t *shape,
                           const void *data) {
    cav_tensor *x = cav_record_add(r, name, t, ndim, shape);
    if (x && x->nbytes) memcpy(x->data, data, x->nbytes);
    return x;
}

int cav_record_remove(cav_record *r, const char *name) {
    cav_tensor *x = cav_record_find(r, name);
    if (!x) return 0;
    free(x->name);
    free(x->data);
    int i = (int)(x - r->tensors);
    memmove(&r->tensors[i], &r->tensors[i + 1], (size_t)(r->ntensors - i - 1) * sizeof *x);
    r->ntensors--;
    return 1;
}

int cav_record_copy(cav_record *dst, const cav_record *src) {
    cav_record_clear(dst);
    if (src->id && cav_record_set_id(dst, src->id)) return -1;
    for (int i = 0; i < src->ntensors; i++) {
        const cav_tensor *x = &src->tensors[i];
        if (!cav_record_put(dst, x->name, x->dtype, x->ndim, x->shape, x->data)) return -1;
    }
    return cav_attrs_copy(&dst->attrs, &src->attrs);
}

int cav_record_equal(const cav_record *a, const cav_record *b) {
    if ((a->id == NULL) != (b->id == NULL)) return 0;
    if (a->id && strcmp(a->id, b->id)) return 0;
    if (a->ntensors != b->ntensors || a->attrs.n != b->attrs.n) return 0;
    for (int i = 0; i < a->ntensors; i++) {
        const cav_tensor *x = &a->tensors[i], *y = cav_record_find(b, x->name);
        if (!y || x->dtype != y->dtype || x->ndim != y->ndim || x->nbytes != y->nbytes) return 0;
        for (int d = 0; d < x->ndim; d++)
            if (x->shape[d] != y->shape[d]) return 0;
        if (x->nbytes && memcmp(x->data, y->data, x->nbytes)) return 0;
    }
    for (int i = 0; i < a->attrs.n; i++) {
        const char *v = cav_attrs_get(&b->attrs, a->attrs.v[i].key);
        if (!v || strcmp(v, a->attrs.v[i].value)) return 0;
    }
    return 1;
}

uint16_t cav_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u | ((absx >> 13) & 0x3ffu) : 0));
    if (absx >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to inf */
    if (absx < 0x38800000u) {                                   /* subnormal half or zero */
        float a;
        memcpy(&a, &absx, 4);
        /* scale so the half's subnormal unit becomes 1, then round to nearest even in float */
        uint32_t m = (uint32_t)lrintf(a * 16777216.0f);
        return (uint16_t)(sign | m);
    }
    uint32_t mant = absx & 0x7fffffu;
    int32_t e = (int32_t)(absx >> 23) - 127 + 15;
    uint32_t h = ((uint32_t)e << 10) | (mant >> 13);
    uint32_t rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++; /* carries into the exponent correctly */
    return (uint16_t)(sign | h);
}

float cav_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu, x;
    if (e == 0) {
        float v = ldexpf((float)m, -24);
        memcpy(&x, &v, 4);
        x |= sign;
    } else if (e == 31) {
        x = sign | 0x7f800000u | (m << 13);
    } else {
        x = sign | ((e - 15 + 127) << 23) | (m << 13);
    }
    float f;
    memcpy(&f, &x, 4);
    return f;
}

uint64_t cav_record_limit(void) {
    const uint64_t dflt = UINT64_C(256) << 20, max = UINT64_C(1) << 34;
    const char *e = getenv("CAV_MAX_RECORD_BYTES");
    if (!e || !*e) return dflt;
    char *end;
    double v = strtod(e, &end), m = 1;
    if (*end == 'K' || *end == 'k')
        m = 1024.0, end++;
    else if (*end == 'M' || *end == 'm')
        m = 1024.0 * 1024, end++;
    else if (*end == 'G' || *end == 'g')
        m = 1024.0 * 1024 * 1024, end++;
    if (end == e || *end || !(v > 0)) return dflt; /* unreadable: the default, not no limit */
    return v * m >= (double)max ? max : (uint64_t)(v * m);
}

int cav_text_ok(const char *s, int allow_lines) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        if (c < 0x80) {
            if ((c < 0x20 && !(allow_lines && (c == '\t' || c == '\n'))) || c == 0x7f) return 0;
            p++;
            continue;
        }
        int n = c >= 0xf0 && c <= 0xf4 ? 3 : c >= 0xe0 ? (c <= 0xef ? 2 : -1) : c >= 0xc2 ? 1 : -1;
        if (n < 0) return 0;
        uint32_t cp = c & (0x3fu >> n);
        for (int k = 1; k <= n; k++) {
            if ((p[k] & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (p[k] & 0x3fu);
        }
        if ((n == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (n == 3 && (cp < 0x10000 || cp > 0x10ffff)))
            return 0;
        if (cp >= 0x80 && cp < 0xa0) return 0; /* C1 controls */
        p += n + 1;
    }
    return 1;
}
