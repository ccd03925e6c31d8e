/* shard.c: the HDF5 shard of cav-shard(5). The writer buffers its first rows to learn which fields keep
 * one shape (those become [N, ...] datasets with per-sample chunks) and which vary (those become ragged:
 * flat data, per-row offset/ndim/shape); a field that changes shape later is converted to ragged. The
 * small per-row columns (ids, row attributes, ragged indexes) stay in memory and are written at close,
 * together with cav_rows, the marker of a complete shard. The reader loads and checks all of that at open,
 * then reads tensor rows on demand. One process-wide mutex serialises HDF5 (see shard.h). */
#include "shard.h"

#include <hdf5.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include "atomicfile.h"
#include "cli.h"
#include "clip.h"
#include "h5zstd.h"
#include "idset.h"

static pthread_mutex_t h5lock = PTHREAD_MUTEX_INITIALIZER;
#define LOCK() pthread_mutex_lock(&h5lock)
#define UNLOCK() pthread_mutex_unlock(&h5lock)

#define PENDING_ROWS 64                   /* rows buffered before the fields' layouts are chosen */
#define PENDING_BYTES ((size_t)256 << 20) /* ...or this many tensor bytes */
#define RAGGED_CHUNK_BYTES (256 << 10) /* chunk of a ragged field's flat data, unless rows tell otherwise:   \
                                        */
#define RAGGED_CHUNK_MIN (16 << 10)    /* ...the mean row size of the buffered rows, within these bounds */
#define RAGGED_CHUNK_MAX (1 << 20)
#define FIXED_CHUNK_BYTES (64 << 10)   /* small fixed rows are grouped up to this size per chunk */
#define INDEX_CHUNK 4096               /* rows per chunk of the per-row columns */
#define READ_LIMIT (UINT64_C(1) << 32) /* largest tensor a reader allocates for one row */

static const char *reserved[] = {CAV_FIELD_ID, "attrs", "attrs_set"};

/* ---------------------------------------------------------------- HDF5 helpers (call under the lock) */

static hid_t f16_type;
static herr_t keep_reason(hid_t stack, void *data);
static void h5_init(void) {
    static int done;
    if (done) return;
    done = 1;
    /* No HDF5 exit handler: after a failed H5Fclose (a full disk) the library's own cleanup at exit reads
     * freed state and crashes (H5F__close_cb) after printing "infinite loop closing library". Every file is
     * closed explicitly here; an output abandoned by an error is removed anyway. */
    H5dont_atexit();
    H5open();
    /* errors are reported by us, with file/row/field and HDF5's innermost reason; CAV_HDF5_DEBUG=1 shows
     * HDF5's own stack as well */
    if (!getenv("CAV_HDF5_DEBUG")) H5Eset_auto2(H5E_DEFAULT, keep_reason, NULL);
    cav_h5zstd_register();
    f16_type = H5Tcopy(H5T_IEEE_F32LE);
    H5Tset_fields(f16_type, 15, 10, 5, 0, 10);
    H5Tset_size(f16_type, 2);
    H5Tset_ebias(f16_type, 15);
}

/* HDF5 clears its error stack at the next API call, so the reason is kept when the failure happens (the
 * automatic error handler runs then). Only touched under the lock. */
static char last_reason[256];
static herr_t walk_cb(unsigned n, const H5E_error2_t *e, void *data) {
    (void)n;
    (void)data;
    if (e->desc && e->desc[0]) snprintf(last_reason, sizeof last_reason, "%s", e->desc);
    return 0;
}
static herr_t keep_reason(hid_t stack, void *data) {
    (void)data;
    H5Ewalk2(stack, H5E_WALK_DOWNWARD, walk_cb, NULL);
    return 0;
}
/* The reason of the last failed HDF5 call. */
static const char *h5_why(char *buf) {
    snprintf(buf, 256, "%s", last_reason[0] ? last_reason : "HDF5 call failed");
    last_reason[0] = 0;
    return buf;
}

static hid_t file_type(cav_dtype t) {
    switch (t) {
    case CAV_U8:
        return H5T_STD_U8LE;
    case CAV_I16:
        return H5T_STD_I16LE;
    case CAV_I32:
        return H5T_STD_I32LE;
    case CAV_I64:
        return H5T_STD_I64LE;
    case CAV_F16:
        return f16_type;
    case CAV_F32:
        return H5T_IEEE_F32LE;
    case CAV_F64:
        return H5T_IEEE_F64LE;
    }
    return -1;
}
static hid_t mem_type(cav_dtype t) {
    switch (t) {
    case CAV_U8:
        return H5T_NATIVE_UINT8;
    case CAV_I16:
        return H5T_NATIVE_INT16;
    case CAV_I32:
        return H5T_NATIVE_INT32;
    case CAV_I64:
        return H5T_NATIVE_INT64;
    case CAV_F16:
        return f16_type; /* raw half bits, no conversion */
    case CAV_F32:
        return H5T_NATIVE_FLOAT;
    case CAV_F64:
        return H5T_NATIVE_DOUBLE;
    }
    return -1;
}
/* Does the stored HDF5 type hold dtype t without conversion loss? */
static int type_matches(hid_t ft, cav_dtype t) {
    H5T_class_t c = H5Tget_class(ft);
    size_t sz = H5Tget_size(ft);
    if (sz != cav_dtype_size(t)) return 0;
    if (t == CAV_F16 || t == CAV_F32 || t == CAV_F64) {
        if (c != H5T_FLOAT) return 0;
        if (t == CAV_F16) {
            size_t spos, epos, esize, mpos, msize;
            H5Tget_fields(ft, &spos, &epos, &esize, &mpos, &msize);
            return spos == 15 && epos == 10 && esize == 5 && mpos == 0 && msize == 10 &&
                   H5Tget_ebias(ft) == 15;
        }
        return 1;
    }
    if (c != H5T_INTEGER) return 0;
    return H5Tget_sign(ft) == (t == CAV_U8 ? H5T_SGN_NONE : H5T_SGN_2);
}

static int write_str_attr(hid_t loc, const char *name, const char *value) {
    hid_t st = H5Tcopy(H5T_C_S1);
    H5Tset_size(st, H5T_VARIABLE);
    H5Tset_cset(st, H5T_CSET_UTF8);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, st, sp, H5P_DEFAULT, H5P_DEFAULT);
    int bad = a < 0 || H5Awrite(a, st, &value) < 0;
    if (a >= 0) bad = H5Aclose(a) < 0 || bad;
    H5Sclose(sp);
    H5Tclose(st);
    return bad ? -1 : 0;
}
static int write_i64_attr(hid_t loc, const char *name, int64_t v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    int bad = a < 0 || H5Awrite(a, H5T_NATIVE_INT64, &v) < 0;
    if (a >= 0) bad = H5Aclose(a) < 0 || bad;
    H5Sclose(sp);
    return bad ? -1 : 0;
}
/* A string attribute (variable or fixed length) as a new allocation; NULL if absent or not a string. */
static char *read_str_attr(hid_t loc, const char *name) {
    if (H5Aexists(loc, name) <= 0) return NULL;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return NULL;
    hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
    char *out = NULL;
    if (H5Tget_class(t) == H5T_STRING && H5Sget_simple_extent_npoints(sp) == 1) {
        if (H5Tis_variable_str(t) > 0) {
            hid_t mt = H5Tcopy(t); /* same character set: HDF5 does not convert between them */
            char *v = NULL;
            if (H5Aread(a, mt, &v) >= 0 && v) {
                out = strdup(v);
                H5free_memory(v);
            }
            H5Tclose(mt);
        } else {
            size_t n = H5Tget_size(t);
            hid_t mt = H5Tcopy(t);
            out = calloc(n + 1, 1);
            if (out && H5Aread(a, mt, out) < 0) out = (free(out), NULL);
            H5Tclose(mt);
        }
    }
    H5Sclose(sp);
    H5Tclose(t);
    H5Aclose(a);
    return out;
}
static int read_i64_attr(hid_t loc, const char *name, int64_t *v) {
    if (H5Aexists(loc, name) <= 0) return -1;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
    int ok = H5Tget_class(t) == H5T_INTEGER && H5Sget_simple_extent_npoints(sp) == 1 &&
             H5Aread(a, H5T_NATIVE_INT64, v) >= 0;
    H5Sclose(sp);
    H5Tclose(t);
    H5Aclose(a);
    return ok ? 0 : -1;
}

static hid_t vlen_str_type(void) {
    hid_t st = H5Tcopy(H5T_C_S1);
    H5Tset_size(st, H5T_VARIABLE);
    H5Tset_cset(st, H5T_CSET_UTF8);
    return st;
}

/* Creates a chunked, extendible dataset: dims [0, row...] growing along the first axis. zstd-filtered
 * unless level < 0 (variable-length strings: the filter would only see heap pointers). */
static hid_t create_ext(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *row_dims,
                        hsize_t chunk_rows, int level) {
    hsize_t dims[H5S_MAX_RANK], maxd[H5S_MAX_RANK], chunk[H5S_MAX_RANK];
    dims[0] = 0;
    maxd[0] = H5S_UNLIMITED;
    chunk[0] = chunk_rows;
    for (int i = 1; i < rank; i++) dims[i] = maxd[i] = chunk[i] = row_dims[i - 1];
    hid_t sp = H5Screate_simple(rank, dims, maxd);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, rank, chunk);
    if (H5Tis_variable_str(type) <= 0) H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER);
    if (level >= 0) {
        unsigned cd = (unsigned)level;
        H5Pset_filter(dcpl, CAV_H5Z_ZSTD, H5Z_FLAG_MANDATORY, 1, &cd);
    }
    hid_t d = H5Dcreate2(loc, name, type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    H5Sclose(sp);
    return d;
}

/* Writes count rows of buf at first-axis offset row0 (extending the dataset to at least row0+count). */
static int write_rows(hid_t d, hid_t mtype, int64_t row0, int64_t count, const void *buf) {
    if (count == 0) return 0;
    hid_t sp = H5Dget_space(d);
    int rank = H5Sget_simple_extent_ndims(sp);
    hsize_t dims[H5S_MAX_RANK], start[H5S_MAX_RANK] = {0}, cnt[H5S_MAX_RANK];
    H5Sget_simple_extent_dims(sp, dims, NULL);
    H5Sclose(sp);
    if (dims[0] < (hsize_t)(row0 + count)) {
        hsize_t want = dims[0] * 2;
        if (want < (hsize_t)(row0 + count)) want = (hsize_t)(row0 + count);
        dims[0] = want;
        if (H5Dset_extent(d, dims) < 0) return -1;
    }
    for (int i = 0; i < rank; i++) cnt[i] = dims[i];
    start[0] = (hsize_t)row0;
    cnt[0] = (hsize_t)count;
    sp = H5Dget_space(d);
    H5Sselect_hyperslab(sp, H5S_SELECT_SET, start, NULL, cnt, NULL);
    hid_t ms = H5Screate_simple(rank, cnt, NULL);
    herr_t st = H5Dwrite(d, mtype, ms, sp, H5P_DEFAULT, buf);
    H5Sclose(ms);
    H5Sclose(sp);
    return st < 0 ? -1 : 0;
}
static int read_rows(hid_t d, hid_t mtype, int64_t row0, int64_t count, void *buf) {
    if (count == 0) return 0;
    hid_t sp = H5Dget_space(d);
    int rank = H5Sget_simple_extent_ndims(sp);
    hsize_t dims[H5S_MAX_RANK], start[H5S_MAX_RANK] = {0}, cnt[H5S_MAX_RANK];
    H5Sget_simple_extent_dims(sp, dims, NULL);
    for (int i = 0; i < rank; i++) cnt[i] = dims[i];
    start[0] = (hsize_t)row0;
    cnt[0] = (hsize_t)count;
    H5Sselect_hyperslab(sp, H5S_SELECT_SET, start, NULL, cnt, NULL);
    hid_t ms = H5Screate_simple(rank, cnt, NULL);
    herr_t st = H5Dread(d, mtype, ms, sp, H5P_DEFAULT, buf);
    H5Sclose(ms);
    H5Sclose(sp);
    return st < 0 ? -1 : 0;
}
static int set_rows(hid_t d, int64_t rows) {
    hid_t sp = H5Dget_space(d);
    hsize_t dims[H5S_MAX_RANK];
    H5Sget_simple_extent_dims(sp, dims, NULL);
    H5Sclose(sp);
    dims[0] = (hsize_t)rows;
    return H5Dset_extent(d, dims) < 0 ? -1 : 0;
}

/* Names that become HDF5 link names: no '/', not starting with '.', not one of the reserved columns. */
static int link_name_ok(const char *s, int check_reserved) {
    if (!s || !s[0] || strlen(s) > CAV_MAX_NAME || strchr(s, '/') || s[0] == '.') return 0;
    for (size_t i = 0; check_reserved && i < sizeof reserved / sizeof *reserved; i++)
        if (strcmp(s, reserved[i]) == 0) return 0;
    return 1;
}

/* ================================================================================ writer */

typedef struct {
    char *name;
    cav_dtype dtype;
    int ragged;
    int ndim; /* fixed: row shape */
    int64_t shape[CAV_MAX_NDIM];
    hid_t d;       /* fixed: [N, shape...]; ragged: flat data */
    int64_t nelem; /* ragged: elements written */
    int64_t *off;  /* ragged, per row: element offset, ndim (-1 absent), shape */
    int32_t *nd;
    int64_t *shp; /* [rows][CAV_MAX_NDIM] */
} wfield;

typedef struct {
    char *key;
    char **vals; /* per row; NULL = absent */
} wattr;

typedef struct {
    char *name;
    cav_dtype dtype;
} dtype_seen;

struct cav_shard_writer {
    char *path, *tmp;
    cav_afile *out; /* the temporary file HDF5 writes, renamed into place by a successful close */
    hid_t file;
    int level, planned, failed;
    cav_attrs attrs;
    wfield *f;
    int nf;
    wattr *a;
    int na;
    dtype_seen *seen;
    int nseen;
    char **ids;
    int64_t rows, cap;
    cav_idset idset;
    cav_record *pending;
    int npending;
    size_t pending_bytes;
};

static int grow_rows(cav_shard_writer *w, int64_t need) {
    if (need <= w->cap) return 0;
    int64_t cap = w->cap ? 2 * w->cap : 256;
    while (cap < need) cap *= 2;
    char **ids = realloc(w->ids, (size_t)cap * sizeof *ids);
    if (!ids) return -1;
    w->ids = ids;
    for (int i = 0; i < w->na; i++) {
        char **v = realloc(w->a[i].vals, (size_t)cap * sizeof *v);
        if (!v) return -1;
        w->a[i].vals = v;
    }
    for (int i = 0; i < w->nf; i++) {
        wfield *f = &w->f[i];
        if (!f->ragged) continue;
        int64_t *o = realloc(f->off, (size_t)cap * sizeof *o);
        if (o) f->off = o;
        int32_t *n = realloc(f->nd, (size_t)cap * sizeof *n);
        if (n) f->nd = n;
        int64_t *s = realloc(f->shp, (size_t)cap * CAV_MAX_NDIM * sizeof *s);
        if (s) f->shp = s;
        if (!o || !n || !s) return -1;
    }
    w->cap = cap;
    return 0;
}

static int ragged_alloc(cav_shard_writer *w, wfield *f) {
    size_t cap = w->cap ? (size_t)w->cap : 1;
    f->off = malloc(cap * sizeof *f->off);
    f->nd = malloc(cap * sizeof *f->nd);
    f->shp = calloc(cap * CAV_MAX_NDIM, sizeof *f->shp);
    return f->off && f->nd && f->shp ? 0 : -1;
}

static hid_t create_ragged_group(cav_shard_writer *w, const char *link, wfield *f, size_t row_hint) {
    hid_t g = H5Gcreate2(w->file, link, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) return -1;
    hsize_t none[1] = {0};
    size_t es = cav_dtype_size(f->dtype);
    /* Random access reads whole chunks: a chunk about one mean row long costs at most ~2 rows per read. */
    size_t bytes = RAGGED_CHUNK_BYTES, total = 0, n = 0;
    for (int p = 0; p < w->npending; p++) {
        const cav_tensor *t = cav_record_find(&w->pending[p], f->name);
        if (t) total += t->nbytes, n++;
    }
    if (n)
        bytes = total / n;
    else if (row_hint)
        bytes = row_hint;
    if (bytes < RAGGED_CHUNK_MIN) bytes = RAGGED_CHUNK_MIN;
    if (bytes > RAGGED_CHUNK_MAX) bytes = RAGGED_CHUNK_MAX;
    hsize_t chunk = bytes / es;
    f->d = create_ext(g, "data", file_type(f->dtype), 1, none, chunk, w->level);
    int bad = f->d < 0 || write_str_attr(g, "cav_layout", "ragged") ||
              write_str_attr(g, "cav_dtype", cav_dtype_name(f->dtype));
    return bad ? (H5Gclose(g), -1) : g;
}

/* Appends one row's tensor (or its absence, t == NULL) to a ragged field. */
static int ragged_put(wfield *f, int64_t row, const cav_tensor *t) {
    f->off[row] = f->nelem;
    memset(&f->shp[row * CAV_MAX_NDIM], 0, CAV_MAX_NDIM * sizeof *f->shp);
    if (!t) {
        f->nd[row] = -1;
        return 0;
    }
    f->nd[row] = t->ndim;
    for (int k = 0; k < t->ndim; k++) f->shp[row * CAV_MAX_NDIM + k] = t->shape[k];
    int64_t n = (int64_t)(t->nbytes / cav_dtype_size(t->dtype));
    if (write_rows(f->d, mem_type(f->dtype), f->nelem, n, t->data)) return -1;
    f->nelem += n;
    return 0;
}

static int fixed_rowbytes_ok(const cav_tensor *t) {
    if (t->nbytes == 0 || t->nbytes > UINT32_MAX) return 0; /* zero dims cannot be chunked; 4 GiB chunks */
    return 1;
}

static int create_fixed(cav_shard_writer *w, wfield *f, const cav_tensor *t) {
    hsize_t row[CAV_MAX_NDIM];
    for (int k = 0; k < t->ndim; k++) row[k] = (hsize_t)t->shape[k];
    hsize_t cr = FIXED_CHUNK_BYTES / t->nbytes;
    if (cr < 1) cr = 1;
    if (cr > INDEX_CHUNK) cr = INDEX_CHUNK;
    f->d = create_ext(w->file, f->name, file_type(f->dtype), 1 + t->ndim, row, cr, w->level);
    if (f->d < 0) return -1;
    f->ndim = t->ndim;
    memcpy(f->shape, t->shape, sizeof f->shape);
    return write_str_attr(f->d, "cav_layout", "fixed") ||
           write_str_attr(f->d, "cav_dtype", cav_dtype_name(f->dtype));
}

/* A fixed field met a row with another shape (or without it): move its rows so far into a ragged group. */
static int convert_to_ragged(cav_shard_writer *w, wfield *f) {
    char tmp[CAV_MAX_NAME + 16];
    snprintf(tmp, sizeof tmp, ".ragged-%s", f->name);
    hid_t fixed = f->d;
    int64_t n = w->rows;
    f->ragged = 1;
    f->nelem = 0;
    if (ragged_alloc(w, f)) return -1;
    size_t rowbytes = (size_t)cav_shape_count(f->ndim, f->shape, cav_dtype_size(f->dtype), UINT64_MAX) *
                      cav_dtype_size(f->dtype);
    hid_t g = create_ragged_group(w, tmp, f, rowbytes);
    if (g < 0) return -1;
    cav_tensor t = {.name = f->name, .dtype = f->dtype, .ndim = f->ndim};
    memcpy(t.shape, f->shape, sizeof t.shape);
    t.nbytes = (size_t)cav_shape_count(f->ndim, f->shape, cav_dtype_size(f->dtype), UINT64_MAX) *
               cav_dtype_size(f->dtype);
    t.data = malloc(t.nbytes);
    int bad = !t.data;
    for (int64_t r = 0; !bad && r < n; r++)
        bad = read_rows(fixed, mem_type(f->dtype), r, 1, t.data) || ragged_put(f, r, &t);
    free(t.data);
    /* a close flushes: its failure is a write failure */
    bad = H5Dclose(fixed) < 0 || bad;
    bad = bad || H5Ldelete(w->file, f->name, H5P_DEFAULT) < 0;
    bad = H5Dclose(f->d) < 0 || bad;
    f->d = -1;
    bad = H5Gclose(g) < 0 || bad;
    bad = bad || H5Lmove(w->file, tmp, w->file, f->name, H5P_DEFAULT, H5P_DEFAULT) < 0;
    if (bad) return -1;
    g = H5Gopen2(w->file, f->name, H5P_DEFAULT);
    f->d = H5Dopen2(g, "data", H5P_DEFAULT);
    H5Gclose(g);
    return f->d < 0 ? -1 : 0;
}

static wfield *new_field(cav_shard_writer *w, const char *name, cav_dtype dt) {
    wfield *nf = realloc(w->f, (size_t)(w->nf + 1) * sizeof *nf);
    if (!nf) return NULL;
    w->f = nf;
    wfield *f = &w->f[w->nf];
    memset(f, 0, sizeof *f);
    f->d = -1;
    if (!(f->name = strdup(name))) return NULL;
    f->dtype = dt;
    w->nf++;
    return f;
}

/* Writes one (validated) row. I/O errors only. */
static int write_row(cav_shard_writer *w, const cav_record *rec) {
    int64_t row = w->rows;
    if (grow_rows(w, row + 1)) return -1;
    /* fields new in this row are ragged, absent in every earlier row */
    for (int i = 0; i < rec->ntensors; i++) {
        const cav_tensor *t = &rec->tensors[i];
        int found = 0;
        for (int j = 0; j < w->nf && !found; j++) found = strcmp(w->f[j].name, t->name) == 0;
        if (found) continue;
        wfield *f = new_field(w, t->name, t->dtype);
        if (!f) return -1;
        f->ragged = 1;
        if (ragged_alloc(w, f)) return -1;
        hid_t g = create_ragged_group(w, f->name, f, t->nbytes);
        if (g < 0) return -1;
        H5Gclose(g);
        for (int64_t r = 0; r < row; r++) ragged_put(f, r, NULL);
    }
    for (int j = 0; j < w->nf; j++) {
        wfield *f = &w->f[j];
        const cav_tensor *t = cav_record_find(rec, f->name);
        if (!f->ragged) {
            int same = t && t->ndim == f->ndim && fixed_rowbytes_ok(t);
            for (int k = 0; same && k < t->ndim; k++) same = t->shape[k] == f->shape[k];
            if (same) {
                if (write_rows(f->d, mem_type(f->dtype), row, 1, t->data)) return -1;
                continue;
            }
            if (convert_to_ragged(w, f)) return -1;
        }
        if (ragged_put(f, row, t)) return -1;
    }
    for (int i = 0; i < rec->attrs.n; i++) {
        const cav_attr *at = &rec->attrs.v[i];
        int j = 0;
        while (j < w->na && strcmp(w->a[j].key, at->key)) j++;
        if (j == w->na) {
            wattr *na = realloc(w->a, (size_t)(w->na + 1) * sizeof *na);
            if (!na) return -1;
            w->a = na;
            w->a[j].key = strdup(at->key);
            w->a[j].vals = calloc((size_t)w->cap, sizeof(char *));
            if (!w->a[j].key || !w->a[j].vals) return -1;
            w->na++;
        }
    }
    for (int j = 0; j < w->na; j++) {
        const char *v = cav_attrs_get(&rec->attrs, w->a[j].key);
        w->a[j].vals[row] = v ? strdup(v) : NULL;
        if (v && !w->a[j].vals[row]) return -1;
    }
    if (!(w->ids[row] = strdup(rec->id))) return -1;
    w->rows++;
    return 0;
}

/* Chooses each field's layout from the buffered rows, then writes them. */
static int plan_and_flush(cav_shard_writer *w) {
    w->planned = 1;
    for (int p = 0; p < w->npending; p++) {
        const cav_record *rec = &w->pending[p];
        for (int i = 0; i < rec->ntensors; i++) {
            const cav_tensor *t = &rec->tensors[i];
            int j = 0;
            while (j < w->nf && strcmp(w->f[j].name, t->name)) j++;
            if (j < w->nf) continue;
            /* fixed when every buffered row has it with this shape */
            int fixed = fixed_rowbytes_ok(t) && p == 0;
            for (int q = 1; fixed && q < w->npending; q++) {
                const cav_tensor *u = cav_record_find(&w->pending[q], t->name);
                fixed = u && u->ndim == t->ndim;
                for (int k = 0; fixed && k < t->ndim; k++) fixed = u->shape[k] == t->shape[k];
            }
            if (!fixed) continue; /* created ragged by write_row when first met */
            wfield *f = new_field(w, t->name, t->dtype);
            if (!f || create_fixed(w, f, t)) return -1;
        }
    }
    for (int p = 0; p < w->npending; p++)
        if (write_row(w, &w->pending[p])) return -1;
    for (int p = 0; p < w->npending; p++) cav_record_clear(&w->pending[p]);
    free(w->pending);
    w->pending = NULL;
    w->npending = 0;
    return 0;
}

static void writer_free(cav_shard_writer *w) {
    for (int i = 0; i < w->nf; i++) {
        if (w->f[i].d >= 0) H5Dclose(w->f[i].d);
        free(w->f[i].name);
        free(w->f[i].off);
        free(w->f[i].nd);
        free(w->f[i].shp);
    }
    free(w->f);
    for (int i = 0; i < w->na; i++) {
        for (int64_t r = 0; r < w->rows; r++) free(w->a[i].vals[r]);
        free(w->a[i].vals);
        free(w->a[i].key);
    }
    free(w->a);
    for (int i = 0; i < w->nseen; i++) free(w->seen[i].name);
    free(w->seen);
    for (int64_t r = 0; r < w->rows; r++) free(w->ids[r]);
    free(w->ids);
    for (int p = 0; p < w->npending; p++) cav_record_clear(&w->pending[p]);
    free(w->pending);
    cav_idset_clear(&w->idset);
    cav_attrs_clear(&w->attrs);
    if (w->file >= 0) H5Fclose(w->file);
    cav_afile_abort(w->out);
    free(w->path);
    free(w->tmp);
    free(w);
}

cav_shard_writer *cav_shard_create(const char *path, const cav_attrs *attrs, int level, cav_err *err) {
    for (int i = 0; attrs && i < attrs->n; i++)
        if (strncmp(attrs->v[i].key, "cav_", 4) == 0) {
            cav_fail(err, CAV_EXIT_INPUT, "%s: dataset attribute '%s': names starting with cav_ are reserved",
                     path, attrs->v[i].key);
            return NULL;
        }
    cav_shard_writer *w = calloc(1, sizeof *w);
    if (!w) return cav_fail(err, CAV_EXIT_INTERNAL, "%s: out of memory", path), NULL;
    w->file = -1;
    w->level = level ? level : 3;
    w->path = strdup(path);
    if (!w->path || (attrs && cav_attrs_copy(&w->attrs, attrs))) {
        cav_fail(err, CAV_EXIT_INTERNAL, "%s: out of memory", path);
        writer_free(w);
        return NULL;
    }
    if (!(w->out = cav_afile_open(path, CAV_AFILE_SEEKABLE, err))) {
        writer_free(w);
        return NULL;
    }
    if (!(w->tmp = strdup(cav_afile_name(w->out)))) {
        cav_fail(err, CAV_EXIT_INTERNAL, "%s: out of memory", path);
        writer_free(w);
        return NULL;
    }
    LOCK();
    h5_init();
    w->file = H5Fcreate(w->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    char why[256];
    if (w->file < 0) cav_fail(err, CAV_EXIT_INTERNAL, "%s: cannot create: %s", w->tmp, h5_why(why));
    UNLOCK();
    if (w->file < 0) {
        writer_free(w);
        return NULL;
    }
    return w;
}

uint64_t cav_shard_writer_bytes(cav_shard_writer *w) {
    hsize_t sz = 0;
    LOCK();
    if (w->file >= 0) H5Fget_filesize(w->file, &sz);
    UNLOCK();
    return (uint64_t)sz + w->pending_bytes;
}

/* Checks that rec can become row (no I/O). */
static int validate(cav_shard_writer *w, const cav_record *rec, cav_err *err) {
    int64_t row = w->rows + w->npending;
    if (!rec->id || !rec->id[0] || strlen(rec->id) > CAV_MAX_NAME)
        return cav_fail(err, CAV_EXIT_INPUT, "%s: row %lld: id: missing, empty or longer than %d bytes",
                        w->path, (long long)row, CAV_MAX_NAME);
    int64_t first = cav_idset_get(&w->idset, rec->id);
    if (first >= 0)
        return cav_fail(err, CAV_EXIT_INPUT, "%s: row %lld (id '%s'): id: duplicated (first at row %lld)",
                        w->path, (long long)row, rec->id, (long long)first);
    for (int i = 0; i < rec->ntensors; i++) {
        const cav_tensor *t = &rec->tensors[i];
        if (!link_name_ok(t->name, 1))
            return cav_fail(err, CAV_EXIT_INPUT,
                            "%s: row %lld (id '%s'): tensor '%s': name not allowed in a shard (empty, '/', "
                            "leading '.', or one of id, attrs, attrs_set)",
                            w->path, (long long)row, rec->id, t->name);
        for (int j = 0; j < w->nseen; j++)
            if (strcmp(w->seen[j].name, t->name) == 0 && w->seen[j].dtype != t->dtype)
                return cav_fail(err, CAV_EXIT_INPUT,
                                "%s: row %lld (id '%s'): tensor '%s': dtype %s, earlier rows %s", w->path,
                                (long long)row, rec->id, t->name, cav_dtype_name(t->dtype),
                                cav_dtype_name(w->seen[j].dtype));
    }
    for (int i = 0; i < rec->attrs.n; i++)
        if (!link_name_ok(rec->attrs.v[i].key, 0))
            return cav_fail(
                err, CAV_EXIT_INPUT,
                "%s: row %lld (id '%s'): attribute '%s': name not allowed in a shard ('/' or leading '.')",
                w->path, (long long)row, rec->id, rec->attrs.v[i].key);
    return 0;
}

int cav_shard_append(cav_shard_writer *w, const cav_record *rec, cav_err *err) {
    if (w->failed) return cav_fail(err, CAV_EXIT_INTERNAL, "%s: writer already failed", w->path);
    if (validate(w, rec, err)) return -1;
    int64_t row = w->rows + w->npending;
    for (int i = 0; i < rec->ntensors; i++) {
        int j = 0;
        while (j < w->nseen && strcmp(w->seen[j].name, rec->tensors[i].name)) j++;
        if (j < w->nseen) continue;
        dtype_seen *ns = realloc(w->seen, (size_t)(w->nseen + 1) * sizeof *ns);
        if (!ns) return w->failed = 1, cav_fail(err, CAV_EXIT_INTERNAL, "%s: out of memory", w->path);
        w->seen = ns;
        if (!(ns[w->nseen].name = strdup(rec->tensors[i].name)))
            return w->failed = 1, cav_fail(err, CAV_EXIT_INTERNAL, "%s: out of memory", w->path);
        ns[w->nseen++].dtype = rec->tensors[i].dtype;
    }
    if (cav_idset_add(&w->idset, rec->id, row) < 0)
        return w->failed = 1, cav_fail(err, CAV_EXIT_INTERNAL, "%s: out of memory", w->path);
    int st = 0;
    char why[256] = "";
    if (!w->planned) {
        cav_record *np = realloc(w->pending, (size_t)(w->npending + 1) * sizeof *np);
        if (!np) return w->failed = 1, cav_fail(err, CAV_EXIT_INTERNAL, "%s: out of memory", w->path);
        w->pending = np;
        cav_record_init(&np[w->npending]);
        if (cav_record_copy(&np[w->npending], rec))
            return w->failed = 1, cav_fail(err, CAV_EXIT_INTERNAL, "%s: out of memory", w->path);
        w->npending++;
        for (int i = 0; i < rec->ntensors; i++) w->pending_bytes += rec->tensors[i].nbytes;
        if (w->npending >= PENDING_ROWS || w->pending_bytes >= PENDING_BYTES) {
            LOCK();
            st = plan_and_flush(w);
            if (st) h5_why(why);
            UNLOCK();
            w->pending_bytes = 0;
        }
    } else {
        LOCK();
        st = write_row(w, rec);
        if (st) h5_why(why);
        UNLOCK();
    }
    if (st) {
        w->failed = 1;
        return cav_fail(err, CAV_EXIT_INTERNAL, "%s: row %lld (id '%s'): write failed: %s", w->tmp,
                        (long long)row, rec->id, why);
    }
    return 0;
}

/* Writes a per-row column of n rows (an extendible chunked dataset, so the schema looks the same at any
 * row count). */
static int write_column(hid_t loc, const char *name, hid_t ftype, hid_t mtype, int rank,
                        const hsize_t *row_dims, int64_t n, const void *buf, int level) {
    hsize_t chunk = n < 1 ? 1 : n < INDEX_CHUNK ? (hsize_t)n : INDEX_CHUNK;
    hid_t d = create_ext(loc, name, ftype, rank, row_dims, chunk, level);
    if (d < 0) return -1;
    int bad = write_rows(d, mtype, 0, n, buf) || set_rows(d, n);
    bad = H5Dclose(d) < 0 || bad; /* a close flushes: its failure is a write failure */
    return bad ? -1 : 0;
}

static int finish(cav_shard_writer *w) {
    hid_t st = vlen_str_type();
    int bad = 0;
    hsize_t none[1] = {0}, sh[1] = {CAV_MAX_NDIM};
    bad = write_column(w->file, CAV_FIELD_ID, st, st, 1, none, w->rows, w->ids, -1);
    for (int i = 0; !bad && i < w->nf; i++) {
        wfield *f = &w->f[i];
        if (!f->ragged) {
            bad = set_rows(f->d, w->rows);
            continue;
        }
        hid_t g = H5Gopen2(w->file, f->name, H5P_DEFAULT);
        bad =
            g < 0 || set_rows(f->d, f->nelem) ||
            write_column(g, "offset", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, none, w->rows, f->off, w->level) ||
            write_column(g, "ndim", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, none, w->rows, f->nd, w->level) ||
            write_column(g, "shape", H5T_STD_I64LE, H5T_NATIVE_INT64, 2, sh, w->rows, f->shp, w->level);
        if (g >= 0) bad = H5Gclose(g) < 0 || bad;
    }
    if (!bad && w->na) {
        hid_t g = H5Gcreate2(w->file, "attrs", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        hid_t gs = -1;
        bad = g < 0;
        static const char empty[] = "";
        const char **vals = malloc((size_t)(w->rows ? w->rows : 1) * sizeof *vals);
        uint8_t *set = malloc((size_t)(w->rows ? w->rows : 1));
        bad = bad || !vals || !set;
        for (int i = 0; !bad && i < w->na; i++) {
            int all = 1;
            for (int64_t r = 0; r < w->rows; r++) {
                vals[r] = w->a[i].vals[r] ? w->a[i].vals[r] : empty;
                set[r] = w->a[i].vals[r] != NULL;
                all &= set[r];
            }
            bad = write_column(g, w->a[i].key, st, st, 1, none, w->rows, vals, -1);
            if (!bad && !all) {
                if (gs < 0) gs = H5Gcreate2(w->file, "attrs_set", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
                bad = gs < 0 || write_column(gs, w->a[i].key, H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, none,
                                             w->rows, set, w->level);
            }
        }
        free(vals);
        free(set);
        if (g >= 0) bad = H5Gclose(g) < 0 || bad;
        if (gs >= 0) bad = H5Gclose(gs) < 0 || bad;
    }
    H5Tclose(st);
    for (int i = 0; !bad && i < w->attrs.n; i++)
        bad = write_str_attr(w->file, w->attrs.v[i].key, w->attrs.v[i].value);
    bad = bad || write_str_attr(w->file, "cav_schema", CAV_SHARD_SCHEMA) ||
          write_i64_attr(w->file, "cav_schema_version", CAV_SHARD_VERSION) ||
          write_i64_attr(w->file, "cav_rows", w->rows); /* last: marks the shard complete */
    for (int i = 0; i < w->nf; i++)
        if (w->f[i].d >= 0) bad = H5Dclose(w->f[i].d) < 0 || bad, w->f[i].d = -1;
    bad = H5Fclose(w->file) < 0 || bad;
    w->file = -1;
    return bad ? -1 : 0;
}

int cav_shard_writer_close(cav_shard_writer *w, cav_err *err) {
    int st = -1;
    char why[256] = "";
    if (w->failed) {
        cav_fail(err, CAV_EXIT_INTERNAL, "%s: not written (an earlier error)", w->path);
    } else {
        LOCK();
        st = w->planned ? 0 : plan_and_flush(w);
        st = st ? st : finish(w);
        if (st) h5_why(why);
        UNLOCK();
        if (st) {
            cav_fail(err, CAV_EXIT_INTERNAL, "%s: write failed: %s", w->tmp, why);
        } else {
            st = cav_afile_commit(w->out, err);
            w->out = NULL;
        }
    }
    if (st) {
        LOCK();
        if (w->file >= 0) H5Fclose(w->file);
        w->file = -1;
        UNLOCK();
    }
    LOCK();
    writer_free(w);
    UNLOCK();
    return st;
}

void cav_shard_writer_abort(cav_shard_writer *w) {
    if (!w) return;
    LOCK();
    if (w->file >= 0) H5Fclose(w->file);
    w->file = -1;
    writer_free(w);
    UNLOCK();
}

/* ================================================================================ reader */

typedef struct {
    char *name;
    cav_dtype dtype;
    int ragged, ndim;
    int64_t shape[CAV_MAX_NDIM];
    hid_t d;      /* fixed dataset, or the ragged flat data */
    int direct;   /* fixed, one row per chunk, zstd only: raw chunks are decompressed outside the lock */
    int64_t *off; /* ragged: per row */
    int32_t *nd;
    int64_t *shp;
    int64_t present;
} rfield;

typedef struct {
    char *key;
    char **vals; /* per row, NULL = absent */
} rattr;

struct cav_shard {
    char *path;
    hid_t file;
    int64_t rows;
    cav_attrs attrs;
    char **ids;
    cav_idset idset;
    rfield *f;
    int nf;
    rattr *a;
    int na;
};

typedef struct {
    char **names;
    int n;
} name_list;
static herr_t list_cb(hid_t g, const char *name, const H5L_info_t *info, void *data) {
    (void)g;
    (void)info;
    name_list *l = data;
    char **nn = realloc(l->names, (size_t)(l->n + 1) * sizeof *nn);
    if (!nn) return -1;
    l->names = nn;
    if (!(nn[l->n] = strdup(name))) return -1;
    l->n++;
    return 0;
}
static int list_links(hid_t g, name_list *l) {
    hsize_t idx = 0;
    return H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, &idx, list_cb, l) < 0 ? -1 : 0;
}
static void free_list(name_list *l) {
    for (int i = 0; i < l->n; i++) free(l->names[i]);
    free(l->names);
}

static herr_t attr_cb(hid_t loc, const char *name, const H5A_info_t *info, void *data) {
    (void)info;
    if (strncmp(name, "cav_", 4) == 0) return 0;
    char *v = read_str_attr(loc, name);
    if (!v) return 0; /* attributes other tools added that are not strings are not ours */
    int st = cav_attrs_set(data, name, v);
    free(v);
    return st ? -1 : 0;
}

/* Opens a dataset that must be 1-D (or [rows, cols]) with rows rows; returns it or -1 with a message. */
static hid_t open_column(hid_t loc, const char *name, int64_t rows, int rank, hsize_t cols, const char *path,
                         const char *field, cav_err *err) {
    hid_t d = H5Lexists(loc, name, H5P_DEFAULT) > 0 ? H5Dopen2(loc, name, H5P_DEFAULT) : -1;
    if (d < 0) return cav_fail(err, CAV_EXIT_INPUT, "%s: %s: dataset '%s' missing", path, field, name), -1;
    hid_t sp = H5Dget_space(d);
    hsize_t dims[H5S_MAX_RANK];
    int r = H5Sget_simple_extent_ndims(sp);
    if (r == rank) H5Sget_simple_extent_dims(sp, dims, NULL);
    H5Sclose(sp);
    if (r != rank || dims[0] != (hsize_t)rows || (rank == 2 && dims[1] != cols)) {
        H5Dclose(d);
        return cav_fail(err, CAV_EXIT_INPUT, "%s: %s: '%s' has %s shape than the %lld rows of the shard",
                        path, field, name, r != rank ? "another" : "a different", (long long)rows),
               -1;
    }
    return d;
}

/* Reads a variable-length string column into owned strings. */
static int read_strings(hid_t d, int64_t rows, char **out) {
    if (rows == 0) return 0;
    hid_t ft = H5Dget_type(d);
    int isvs = H5Tget_class(ft) == H5T_STRING && H5Tis_variable_str(ft) > 0;
    if (!isvs) return H5Tclose(ft), -1;
    char **tmp = calloc((size_t)rows, sizeof *tmp);
    if (!tmp) return H5Tclose(ft), -1;
    hid_t st = ft; /* the stored character set (ASCII from h5py, UTF-8 from us) */
    int read_ok = H5Dread(d, st, H5S_ALL, H5S_ALL, H5P_DEFAULT, tmp) >= 0, bad = !read_ok;
    for (int64_t r = 0; !bad && r < rows; r++)
        if (!(out[r] = strdup(tmp[r] ? tmp[r] : ""))) bad = 1;
    if (read_ok) {
        hid_t sp = H5Dget_space(d);
        H5Dvlen_reclaim(st, sp, H5P_DEFAULT, tmp);
        H5Sclose(sp);
    }
    H5Tclose(st);
    free(tmp);
    return bad ? -1 : 0;
}

static int dtype_of(hid_t obj, const char *path, const char *field, cav_dtype *out, cav_err *err) {
    char *dn = read_str_attr(obj, "cav_dtype");
    int t = dn ? cav_dtype_parse(dn) : -1;
    free(dn);
    if (t < 0)
        return cav_fail(err, CAV_EXIT_INPUT, "%s: field '%s': missing or unknown cav_dtype attribute", path,
                        field);
    *out = (cav_dtype)t;
    return 0;
}

/* Can rows of this fixed field be fetched as raw chunks? One row per chunk, zstd the only filter, and the
 * stored bytes already in host order (little-endian hosts). */
static int direct_ok(const rfield *f) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    hid_t dcpl = H5Dget_create_plist(f->d);
    hsize_t chunk[H5S_MAX_RANK];
    int ok = H5Pget_layout(dcpl) == H5D_CHUNKED && H5Pget_chunk(dcpl, H5S_MAX_RANK, chunk) == 1 + f->ndim &&
             chunk[0] == 1 && H5Pget_nfilters(dcpl) == 1;
    for (int k = 0; ok && k < f->ndim; k++) ok = chunk[k + 1] == (hsize_t)f->shape[k];
    if (ok) {
        unsigned flags, cd[4];
        size_t ncd = 4;
        char name[64];
        ok = H5Pget_filter2(dcpl, 0, &flags, &ncd, cd, sizeof name, name, NULL) == CAV_H5Z_ZSTD;
    }
    H5Pclose(dcpl);
    return ok;
#else
    (void)f;
    return 0;
#endif
}

static int open_field(cav_shard *s, const char *name, cav_err *err) {
    const char *p = s->path;
    rfield *nf = realloc(s->f, (size_t)(s->nf + 1) * sizeof *nf);
    if (!nf) return cav_fail(err, CAV_EXIT_INTERNAL, "%s: out of memory", p);
    s->f = nf;
    rfield *f = &s->f[s->nf];
    memset(f, 0, sizeof *f);
    f->d = -1;
    if (!(f->name = strdup(name))) return cav_fail(err, CAV_EXIT_INTERNAL, "%s: out of memory", p);
    s->nf++;
    H5O_info_t oi;
    if (H5Oget_info_by_name(s->file, name, &oi, H5P_DEFAULT) < 0)
        return cav_fail(err, CAV_EXIT_INPUT, "%s: field '%s': unreadable object", p, name);
    if (oi.type == H5O_TYPE_DATASET) {
        f->d = H5Dopen2(s->file, name, H5P_DEFAULT);
        if (f->d < 0 || dtype_of(f->d, p, name, &f->dtype, err)) return -1;
        hid_t ft = H5Dget_type(f->d), sp = H5Dget_space(f->d);
        int ok = type_matches(ft, f->dtype);
        int rank = H5Sget_simple_extent_ndims(sp);
        hsize_t dims[H5S_MAX_RANK];
        if (rank >= 1 && rank <= 1 + CAV_MAX_NDIM) H5Sget_simple_extent_dims(sp, dims, NULL);
        H5Tclose(ft);
        H5Sclose(sp);
        if (!ok)
            return cav_fail(err, CAV_EXIT_INPUT, "%s: field '%s': stored type does not match cav_dtype %s", p,
                            name, cav_dtype_name(f->dtype));
        if (rank < 1 || rank > 1 + CAV_MAX_NDIM)
            return cav_fail(err, CAV_EXIT_INPUT, "%s: field '%s': rank %d (1 to %d allowed)", p, name, rank,
                            1 + CAV_MAX_NDIM);
        if (dims[0] != (hsize_t)s->rows)
            return cav_fail(err, CAV_EXIT_INPUT, "%s: field '%s': %llu rows, the shard has %lld", p, name,
                            (unsigned long long)dims[0], (long long)s->rows);
        f->ndim = rank - 1;
        for (int k = 0; k < f->ndim; k++) {
            if (dims[k + 1] > INT64_MAX)
                return cav_fail(err, CAV_EXIT_INPUT, "%s: field '%s': bad shape", p, name);
            f->shape[k] = (int64_t)dims[k + 1];
        }
        if (cav_shape_count(f->ndim, f->shape, cav_dtype_size(f->dtype), READ_LIMIT) < 0)
            return cav_fail(err, CAV_EXIT_INPUT, "%s: field '%s': row shape overflows or exceeds %llu bytes",
                            p, name, (unsigned long long)READ_LIMIT);
        f->present = s->rows;
        f->direct = direct_ok(f);
        return 0;
    }
    if (oi.type != H5O_TYPE_GROUP)
        return cav_fail(err, CAV_EXIT_INPUT, "%s: field '%s': neither a dataset nor a group", p, name);
    hid_t g = H5Gopen2(s->file, name, H5P_DEFAULT);
    if (g < 0) return cav_fail(err, CAV_EXIT_INPUT, "%s: field '%s': unreadable group", p, name);
    f->ragged = 1;
    int st = dtype_of(g, p, name, &f->dtype, err);
    char what[300];
    snprintf(what, sizeof what, "field '%s'", name);
    hid_t doff = -1, dnd = -1, dshp = -1;
    if (!st) {
        f->d = H5Lexists(g, "data", H5P_DEFAULT) > 0 ? H5Dopen2(g, "data", H5P_DEFAULT) : -1;
        if (f->d < 0) st = cav_fail(err, CAV_EXIT_INPUT, "%s: %s: dataset 'data' missing", p, what);
    }
    int64_t dlen = 0;
    if (!st) {
        hid_t ft = H5Dget_type(f->d), sp = H5Dget_space(f->d);
        int ok = type_matches(ft, f->dtype), rank = H5Sget_simple_extent_ndims(sp);
        hsize_t n = 0;
        if (rank == 1) H5Sget_simple_extent_dims(sp, &n, NULL);
        H5Tclose(ft);
        H5Sclose(sp);
        dlen = (int64_t)n;
        if (!ok || rank != 1 || n > INT64_MAX)
            st = cav_fail(err, CAV_EXIT_INPUT, "%s: %s: 'data' is not a 1-D %s dataset", p, what,
                          cav_dtype_name(f->dtype));
    }
    if (!st && ((doff = open_column(g, "offset", s->rows, 1, 0, p, what, err)) < 0 ||
                (dnd = open_column(g, "ndim", s->rows, 1, 0, p, what, err)) < 0 ||
                (dshp = open_column(g, "shape", s->rows, 2, CAV_MAX_NDIM, p, what, err)) < 0))
        st = -1;
    if (!st) {
        size_t n = s->rows ? (size_t)s->rows : 1;
        f->off = malloc(n * sizeof *f->off);
        f->nd = malloc(n * sizeof *f->nd);
        f->shp = malloc(n * CAV_MAX_NDIM * sizeof *f->shp);
        if (!f->off || !f->nd || !f->shp) st = cav_fail(err, CAV_EXIT_INTERNAL, "%s: out of memory", p);
    }
    if (!st && (read_rows(doff, H5T_NATIVE_INT64, 0, s->rows, f->off) ||
                read_rows(dnd, H5T_NATIVE_INT32, 0, s->rows, f->nd) ||
                read_rows(dshp, H5T_NATIVE_INT64, 0, s->rows, f->shp))) {
        char why[256];
        st = cav_fail(err, CAV_EXIT_INPUT, "%s: %s: index unreadable: %s", p, what, h5_why(why));
    }
    /* every present row must lie inside the flat data */
    for (int64_t r = 0; !st && r < s->rows; r++) {
        int nd = f->nd[r];
        if (nd == -1) continue;
        int64_t n = nd >= 0 && nd <= CAV_MAX_NDIM
                        ? cav_shape_count(nd, &f->shp[r * CAV_MAX_NDIM], cav_dtype_size(f->dtype), READ_LIMIT)
                        : -1;
        if (n < 0)
            st = cav_fail(err, CAV_EXIT_INPUT, "%s: row %lld (id '%s'): %s: bad ndim or shape", p,
                          (long long)r, s->ids[r], what);
        else if (f->off[r] < 0 || f->off[r] > dlen || n > dlen - f->off[r])
            st = cav_fail(err, CAV_EXIT_INPUT,
                          "%s: row %lld (id '%s'): %s: offset %lld + %lld elements outside the "
                          "%lld stored",
                          p, (long long)r, s->ids[r], what, (long long)f->off[r], (long long)n,
                          (long long)dlen);
        else
            f->present++;
    }
    if (doff >= 0) H5Dclose(doff);
    if (dnd >= 0) H5Dclose(dnd);
    if (dshp >= 0) H5Dclose(dshp);
    H5Gclose(g);
    return st;
}

static int open_attrs(cav_shard *s, cav_err *err) {
    if (H5Lexists(s->file, "attrs", H5P_DEFAULT) <= 0) return 0;
    hid_t g = H5Gopen2(s->file, "attrs", H5P_DEFAULT);
    hid_t gs =
        H5Lexists(s->file, "attrs_set", H5P_DEFAULT) > 0 ? H5Gopen2(s->file, "attrs_set", H5P_DEFAULT) : -1;
    name_list l = {0};
    int st = g < 0 || list_links(g, &l)
                 ? cav_fail(err, CAV_EXIT_INPUT, "%s: attrs: unreadable group", s->path)
                 : 0;
    s->a = calloc(l.n ? (size_t)l.n : 1, sizeof *s->a);
    if (!s->a) st = cav_fail(err, CAV_EXIT_INTERNAL, "%s: out of memory", s->path);
    uint8_t *set = malloc(s->rows ? (size_t)s->rows : 1);
    for (int i = 0; !st && i < l.n; i++) {
        char what[300];
        snprintf(what, sizeof what, "attribute '%s'", l.names[i]);
        rattr *a = &s->a[s->na++];
        a->key = strdup(l.names[i]);
        a->vals = calloc(s->rows ? (size_t)s->rows : 1, sizeof *a->vals);
        if (!a->key || !a->vals || !set) {
            st = cav_fail(err, CAV_EXIT_INTERNAL, "%s: out of memory", s->path);
            break;
        }
        hid_t d = open_column(g, l.names[i], s->rows, 1, 0, s->path, what, err);
        if (d < 0) {
            st = -1;
            break;
        }
        if (read_strings(d, s->rows, a->vals))
            st = cav_fail(err, CAV_EXIT_INPUT, "%s: %s: not a readable string column", s->path, what);
        H5Dclose(d);
        if (!st && gs >= 0 && H5Lexists(gs, l.names[i], H5P_DEFAULT) > 0) {
            d = open_column(gs, l.names[i], s->rows, 1, 0, s->path, what, err);
            if (d < 0 || read_rows(d, H5T_NATIVE_UINT8, 0, s->rows, set))
                st = d < 0
                         ? -1
                         : cav_fail(err, CAV_EXIT_INPUT, "%s: attrs_set/%s: unreadable", s->path, l.names[i]);
            if (d >= 0) H5Dclose(d);
            for (int64_t r = 0; !st && r < s->rows; r++)
                if (!set[r]) a->vals[r] = (free(a->vals[r]), NULL);
        }
    }
    free(set);
    free_list(&l);
    if (g >= 0) H5Gclose(g);
    if (gs >= 0) H5Gclose(gs);
    return st;
}

static void shard_free(cav_shard *s) {
    for (int i = 0; i < s->nf; i++) {
        if (s->f[i].d >= 0) H5Dclose(s->f[i].d);
        free(s->f[i].name);
        free(s->f[i].off);
        free(s->f[i].nd);
        free(s->f[i].shp);
    }
    free(s->f);
    for (int i = 0; i < s->na; i++) {
        for (int64_t r = 0; s->a[i].vals && r < s->rows; r++) free(s->a[i].vals[r]);
        free(s->a[i].vals);
        free(s->a[i].key);
    }
    free(s->a);
    for (int64_t r = 0; s->ids && r < s->rows; r++) free(s->ids[r]);
    free(s->ids);
    cav_idset_clear(&s->idset);
    cav_attrs_clear(&s->attrs);
    if (s->file >= 0) H5Fclose(s->file);
    free(s->path);
    free(s);
}

static int shard_open_locked(cav_shard *s, cav_err *err) {
    const char *p = s->path;
    char why[256];
    h5_init();
    if (H5Fis_hdf5(p) <= 0) {
        FILE *f = fopen(p, "rb");
        if (!f) return cav_fail(err, CAV_EXIT_INPUT, "%s: cannot open: %m", p);
        fclose(f);
        return cav_fail(err, CAV_EXIT_INPUT, "%s: not an HDF5 file", p);
    }
    s->file = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (s->file < 0)
        return cav_fail(err, CAV_EXIT_INPUT, "%s: unreadable HDF5 file (truncated?): %s", p, h5_why(why));
    char *schema = read_str_attr(s->file, "cav_schema");
    int ok = schema && strcmp(schema, CAV_SHARD_SCHEMA) == 0;
    free(schema);
    if (!ok) return cav_fail(err, CAV_EXIT_INPUT, "%s: cav_schema: not a cav shard", p);
    int64_t ver;
    if (read_i64_attr(s->file, "cav_schema_version", &ver) || ver != CAV_SHARD_VERSION)
        return cav_fail(err, CAV_EXIT_INPUT,
                        "%s: cav_schema_version: missing or unsupported (this build reads %d)", p,
                        CAV_SHARD_VERSION);
    if (read_i64_attr(s->file, "cav_rows", &s->rows) || s->rows < 0)
        return cav_fail(err, CAV_EXIT_INPUT, "%s: cav_rows: missing or negative (an incomplete shard?)", p);
    if (H5Aiterate2(s->file, H5_INDEX_NAME, H5_ITER_INC, NULL, attr_cb, &s->attrs) < 0)
        return cav_fail(err, CAV_EXIT_INPUT, "%s: dataset attributes unreadable: %s", p, h5_why(why));
    hid_t d = open_column(s->file, CAV_FIELD_ID, s->rows, 1, 0, p, CAV_FIELD_ID, err);
    if (d < 0) return -1;
    s->ids = calloc(s->rows ? (size_t)s->rows : 1, sizeof *s->ids);
    int st = !s->ids || read_strings(d, s->rows, s->ids);
    H5Dclose(d);
    if (st) return cav_fail(err, CAV_EXIT_INPUT, "%s: id: not a readable string column", p);
    for (int64_t r = 0; r < s->rows; r++) {
        if (!s->ids[r][0]) return cav_fail(err, CAV_EXIT_INPUT, "%s: row %lld: id: empty", p, (long long)r);
        int a = cav_idset_add(&s->idset, s->ids[r], r);
        if (a < 0) return cav_fail(err, CAV_EXIT_INTERNAL, "%s: out of memory", p);
        if (a == 0)
            return cav_fail(err, CAV_EXIT_INPUT, "%s: row %lld (id '%s'): id: duplicated (first at row %lld)",
                            p, (long long)r, s->ids[r], (long long)cav_idset_get(&s->idset, s->ids[r]));
    }
    name_list l = {0};
    if (list_links(s->file, &l)) {
        free_list(&l);
        return cav_fail(err, CAV_EXIT_INPUT, "%s: root group unreadable", p);
    }
    st = 0;
    for (int i = 0; !st && i < l.n; i++) {
        int skip = 0;
        for (size_t k = 0; k < sizeof reserved / sizeof *reserved; k++)
            skip |= strcmp(l.names[i], reserved[k]) == 0;
        if (!skip) st = open_field(s, l.names[i], err);
    }
    free_list(&l);
    return st ? -1 : open_attrs(s, err);
}

cav_shard *cav_shard_open(const char *path, cav_err *err) {
    cav_shard *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path))) {
        free(s);
        cav_fail(err, CAV_EXIT_INTERNAL, "%s: out of memory", path);
        return NULL;
    }
    s->file = -1;
    LOCK();
    int st = shard_open_locked(s, err);
    if (st) shard_free(s);
    UNLOCK();
    return st ? NULL : s;
}

void cav_shard_close(cav_shard *s) {
    if (!s) return;
    LOCK();
    shard_free(s);
    UNLOCK();
}

const char *cav_shard_path(const cav_shard *s) {
    return s->path;
}
int64_t cav_shard_rows(const cav_shard *s) {
    return s->rows;
}
const cav_attrs *cav_shard_attrs(const cav_shard *s) {
    return &s->attrs;
}
const char *cav_shard_id(const cav_shard *s, int64_t row) {
    return row >= 0 && row < s->rows ? s->ids[row] : NULL;
}
int64_t cav_shard_find(const cav_shard *s, const char *id) {
    return cav_idset_get(&s->idset, id);
}
const char *cav_shard_row_attr(const cav_shard *s, int64_t row, const char *key) {
    if (row < 0 || row >= s->rows) return NULL;
    for (int i = 0; i < s->na; i++) /* held in memory since open: no HDF5 call, no lock */
        if (strcmp(s->a[i].key, key) == 0) return s->a[i].vals[row];
    return NULL;
}
int cav_shard_nfields(const cav_shard *s) {
    return s->nf;
}

int cav_shard_field_info(const cav_shard *s, int i, cav_shard_field *out) {
    if (i < 0 || i >= s->nf) return -1;
    const rfield *f = &s->f[i];
    out->name = f->name;
    out->dtype = f->dtype;
    out->ragged = f->ragged;
    out->ndim = f->ndim;
    memcpy(out->shape, f->shape, sizeof out->shape);
    out->present = f->present;
    return 0;
}

/* Decodes one raw chunk of a direct field (a single zstd frame, or the bytes themselves when HDF5 skipped
 * the filter) into exactly n bytes at out. 0 ok, -1 corrupt. */
static int decode_chunk(const unsigned char *raw, size_t rn, uint32_t mask, void *out, size_t n) {
    if (mask & 1u) return rn == n ? (memcpy(out, raw, n), 0) : -1;
    unsigned long long cs = ZSTD_getFrameContentSize(raw, rn);
    if (cs != ZSTD_CONTENTSIZE_UNKNOWN && cs != n) return -1;
    if (cs == n) {
        size_t fsz = ZSTD_findFrameCompressedSize(raw, rn);
        if (ZSTD_isError(fsz) || fsz != rn) return -1;
        size_t d = ZSTD_decompress(out, n, raw, rn);
        return ZSTD_isError(d) || d != n ? -1 : 0;
    }
    ZSTD_DCtx *dc = ZSTD_createDCtx();
    if (!dc) return -1;
    ZSTD_inBuffer ib = {raw, rn, 0};
    ZSTD_outBuffer ob = {out, n, 0};
    size_t z;
    do z = ZSTD_decompressStream(dc, &ob, &ib);
    while (!ZSTD_isError(z) && z != 0 && ob.pos < ob.size && ib.pos < ib.size);
    ZSTD_freeDCtx(dc);
    return ZSTD_isError(z) || z != 0 || ob.pos != n || ib.pos != rn ? -1 : 0;
}

/* Reads field f of row into rec; 0 ok or absent-and-allowed, -1 error. Takes the lock for the HDF5 part:
 * a fixed field stored one row per zstd chunk is fetched raw (H5Dread_chunk) and decompressed after the
 * lock is released, so threads that share shards decompress in parallel. */
static int read_field(cav_shard *s, rfield *f, int64_t row, cav_record *rec, int required, cav_err *err) {
    const char *p = s->path;
    cav_tensor *t;
    int st = 0;
    char why[256] = "";
    if (!f->ragged) {
        t = cav_record_add(rec, f->name, f->dtype, f->ndim, f->shape);
        if (!t)
            return cav_fail(err, CAV_EXIT_INTERNAL, "%s: row %lld: field '%s': out of memory", p,
                            (long long)row, f->name);
        if (f->direct) {
            hsize_t off[H5S_MAX_RANK] = {(hsize_t)row};
            hsize_t sz = 0;
            uint32_t mask = 0;
            unsigned char *raw = NULL;
            LOCK();
            st = H5Dget_chunk_storage_size(f->d, off, &sz) < 0 || sz == 0 || sz > READ_LIMIT ||
                 !(raw = malloc((size_t)sz)) || H5Dread_chunk(f->d, H5P_DEFAULT, off, &mask, raw) < 0;
            if (st) h5_why(why);
            UNLOCK();
            if (!st && decode_chunk(raw, (size_t)sz, mask, t->data, t->nbytes))
                st = -1, snprintf(why, sizeof why, "corrupt zstd chunk");
            free(raw);
        } else {
            LOCK();
            st = read_rows(f->d, mem_type(f->dtype), row, 1, t->data);
            if (st) h5_why(why);
            UNLOCK();
        }
    } else {
        int nd = f->nd[row];
        if (nd < 0) {
            if (!required) return 0;
            return cav_fail(err, CAV_EXIT_INPUT, "%s: row %lld (id '%s'): field '%s': absent in this row", p,
                            (long long)row, s->ids[row], f->name);
        }
        t = cav_record_add(rec, f->name, f->dtype, nd, &f->shp[row * CAV_MAX_NDIM]);
        if (!t)
            return cav_fail(err, CAV_EXIT_INTERNAL, "%s: row %lld: field '%s': out of memory", p,
                            (long long)row, f->name);
        int64_t n = (int64_t)(t->nbytes / cav_dtype_size(f->dtype));
        LOCK();
        st = read_rows(f->d, mem_type(f->dtype), f->off[row], n, t->data);
        if (st) h5_why(why);
        UNLOCK();
    }
    if (st)
        return cav_fail(err, CAV_EXIT_INPUT, "%s: row %lld (id '%s'): field '%s': unreadable: %s", p,
                        (long long)row, s->ids[row], f->name, why);
    return 0;
}

static int read_row(cav_shard *s, int64_t row, const char *const *names, int n, cav_record *rec,
                    cav_err *err) {
    cav_record_clear(rec);
    if (row < 0 || row >= s->rows)
        return cav_fail(err, CAV_EXIT_INPUT, "%s: row %lld: out of range (%lld rows)", s->path,
                        (long long)row, (long long)s->rows);
    if (cav_record_set_id(rec, s->ids[row])) return cav_fail(err, CAV_EXIT_INTERNAL, "out of memory");
    for (int i = 0; i < s->na; i++)
        if (s->a[i].vals[row] && cav_attrs_set(&rec->attrs, s->a[i].key, s->a[i].vals[row]))
            return cav_fail(err, CAV_EXIT_INTERNAL, "out of memory");
    int st = 0;
    if (!names) {
        for (int i = 0; !st && i < s->nf; i++) st = read_field(s, &s->f[i], row, rec, 0, err);
    } else {
        for (int k = 0; !st && k < n; k++) {
            int i = 0;
            while (i < s->nf && strcmp(s->f[i].name, names[k])) i++;
            st = i == s->nf
                     ? cav_fail(err, CAV_EXIT_INPUT, "%s: field '%s': not in this shard", s->path, names[k])
                     : read_field(s, &s->f[i], row, rec, 1, err);
        }
    }
    if (st) cav_record_clear(rec);
    return st;
}

int cav_shard_read(cav_shard *s, int64_t row, cav_record *rec, cav_err *err) {
    return read_row(s, row, NULL, 0, rec, err);
}
int cav_shard_read_fields(cav_shard *s, int64_t row, const char *const *names, int n, cav_record *rec,
                          cav_err *err) {
    return read_row(s, row, names, n, rec, err);
}
