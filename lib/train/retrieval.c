/* retrieval.c: see retrieval.h. Per block of queries x items, one float product F [br, bc] (on the host, or
 * on a backend's device with the next block computed while the host scans this one); then, per query,
 * a vectorisable pass counts the items whose float cosine lies above the threshold's band and flags the
 * query when some item falls inside the band (or may enter its top-k list, or its class maximum); only
 * flagged queries are rescanned, and only entries inside the band are recomputed in double. The reverse
 * direction reads the same block column-wise, with per-column counters (rows outer, columns inner, so the
 * loads stay contiguous). */
#include "retrieval.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "vecmath.h" /* CAV_VEC */

/* The scans are streams of compares that vectors pay for (as in kernels/cpu/dense.c); NaN compares keep their
 * IEEE meaning (no -ffinite-math-only). */
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic", "no-math-errno", "no-trapping-math")

#define DEFAULT_BLOCK 2048

int cav_retr_set_init(cav_retr_set *s, float *x, int64_t n, int D) {
    memset(s, 0, sizeof *s);
    s->x = x, s->n = n, s->D = D;
    s->norm = malloc((size_t)(n ? n : 1) * sizeof *s->norm);
    s->rnorm = malloc((size_t)(n ? n : 1) * sizeof *s->rnorm);
    if (!s->norm || !s->rnorm) return cav_retr_set_free(s), -1;
    int64_t bad = 0;
#pragma omp parallel for reduction(+ : bad) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float *r = x + i * D, mx = 0;
        double sq = 0;
        for (int d = 0; d < D; d++) sq += (double)r[d] * r[d], mx = fabsf(r[d]) > mx ? fabsf(r[d]) : mx;
        if (!(sq > 0 && isfinite(sq)) || !isfinite(mx)) {
            for (int d = 0; d < D; d++) r[d] = NAN;
            s->norm[i] = NAN, s->rnorm[i] = NAN, bad++;
            continue;
        }
        /* 2^k with mx * 2^k in [1, 2): exact, and the reference's double sums scale by the same power. As
         * products by powers of two (a libm ldexpf per element was 3 % of the time at 8,000 clips), which
         * round as ldexpf does: k in -127..149, so a scale above 2^127 goes in two steps, both exact (a
         * row of subnormals scaled up). */
        int e;
        frexpf(mx, &e);
        const int k = 1 - e;
        const float p1 = ldexpf(1.0f, k > 127 ? k - 127 : 0), p2 = ldexpf(1.0f, k > 127 ? 127 : k);
        for (int d = 0; d < D; d++) r[d] = r[d] * p1 * p2;
        sq = 0;
        for (int d = 0; d < D; d++) sq += (double)r[d] * r[d];
        s->norm[i] = sqrt(sq), s->rnorm[i] = (float)(1.0 / s->norm[i]);
    }
    s->invalid = bad;
    return 0;
}

void cav_retr_set_free(cav_retr_set *s) {
    free(s->norm), free(s->rnorm);
    s->norm = NULL, s->rnorm = NULL;
}

/* The reference's expression, term for term (cav-numerics(7) 4: get_sim_mat). Scaling both rows by powers of
 * two changes neither the rounding of the double sums nor the quotient. */
double cav_retr_sim(const cav_retr_set *q, int64_t i, const cav_retr_set *g, int64_t j) {
    const float *a = q->x + i * q->D, *b = g->x + j * g->D;
    double dot = 0;
    for (int d = 0; d < q->D; d++) dot += (double)a[d] * b[d];
    return dot / (q->norm[i] * g->norm[j]);
}

/* |t / |q| - sim| where t = F * (1 / |g|) in float: the float sum of D products of rows that were themselves
 * rounded (gamma_D times sum |q_d g_d| <= |q| |g|), two more float roundings (the reciprocal and the
 * product), and the double evaluation of the reference; with 1 % and 1e-12 to spare. Valid for any summation
 * order, FMA or not (it is the worst case of a float dot product), so for any sgemm: OpenBLAS's kernels, and
 * a GPU's (cuBLASLt's tiles, split-K partial sums added in any order, atomics included: every one is a binary
 * tree over the same D products, each path through it at most D - 1 float additions). The device rows'
 * zero padding (cav_retrieve's blocks) adds exact zeros: a sum with a zero is exact, so the tree over the D
 * real terms keeps the bound. Underflow (the rows are scaled so that max |x| is in [1, 2), so |q|, |g| >= 1)
 * costs at most 2^-126 per product and per addition, even where a GPU flushes subnormals to zero: under
 * 2 D 2^-126 absolute, far inside the 1e-12. It assumes IEEE float products and sums: no TF32 (the CUDA
 * backend's GEMM asks cuBLASLt for CUBLAS_COMPUTE_32F and its handle for CUBLAS_DEFAULT_MATH, kernels/cuda),
 * and no emulated-float mode switched on from outside (cuBLAS's CUBLAS_EMULATE_SINGLE_PRECISION). */
double cav_retr_margin(int D) {
    const double u = 0x1p-24, g = (D + 3) * u / (1 - (D + 3) * u);
    return 1.01 * g + (D + 8) * 0x1p-52 + 1e-12;
}

enum { COUNT, CLASSMAX };

typedef struct {
    cav_retr_dir *d;
    const cav_retr_set *self, *other;
    int mode;
    double m;
    float *hi, *lo, *cut; /* [n self]: the band around thr and the top-k / class cut, scaled by |self| */
    int *heapn;           /* [n self] */
    int64_t rechecked;
} dstate;

static float up(double x) {
    return nextafterf((float)x, INFINITY);
}
static float down(double x) {
    return nextafterf((float)x, -INFINITY);
}

static int shares_label(const dstate *s, int64_t qi, int64_t oj) {
    const uint64_t *a = s->d->lab + qi * s->d->lw, *b = s->d->other_lab + oj * s->d->lw;
    for (int w = 0; w < s->d->lw; w++)
        if (a[w] & b[w]) return 1;
    return 0;
}

/* (x, j) ranks before (y, k): higher similarity, then lower index */
static int before(double x, int64_t j, double y, int64_t k) {
    return x > y || (x == y && j < k);
}

/* top [k] as a heap whose root is the worst entry */
static void heap_push(int64_t *top, double *sim, int *n, int k, int64_t j, double x) {
    int p;
    if (*n < k) {
        p = (*n)++;
        while (p > 0 && before(sim[(p - 1) / 2], top[(p - 1) / 2], x, j)) {
            top[p] = top[(p - 1) / 2], sim[p] = sim[(p - 1) / 2];
            p = (p - 1) / 2;
        }
    } else {
        if (!before(x, j, sim[0], top[0])) return;
        p = 0;
        for (;;) {
            int c = 2 * p + 1;
            if (c >= k) break;
            if (c + 1 < k && before(sim[c], top[c], sim[c + 1], top[c + 1])) c++;
            if (!before(x, j, sim[c], top[c])) break;
            top[p] = top[c], sim[p] = sim[c];
            p = c;
        }
    }
    top[p] = j, sim[p] = x;
}

static void set_band(dstate *s, int64_t qi) {
    double t = s->d->thr[qi], nq = s->self->norm[qi];
    s->hi[qi] = up((t + s->m) * nq), s->lo[qi] = down((t - s->m) * nq);
}

/* The slow path for one entry: query qi of self, item oj of other, t its float cosine times |q_i|. */
static void visit(dstate *s, int64_t qi, int64_t oj, float t, int64_t *rechecked) {
    cav_retr_dir *d = s->d;
    if (s->mode == CLASSMAX) {
        if (!(t >= s->cut[qi]) || !shares_label(s, qi, oj)) return;
        double x = cav_retr_sim(s->self, qi, s->other, oj);
        (*rechecked)++;
        if (isnan(d->thr[qi]) || x > d->thr[qi])
            d->thr[qi] = x, s->cut[qi] = down((x - s->m) * s->self->norm[qi]);
        return;
    }
    double x = NAN;
    if (t >= s->lo[qi] && t <= s->hi[qi]) {
        x = cav_retr_sim(s->self, qi, s->other, oj);
        (*rechecked)++;
        d->rank[qi] += x > d->thr[qi], d->ties[qi] += x == d->thr[qi];
    }
    if (d->k && t >= s->cut[qi] && (!d->want_top || d->want_top[qi])) {
        if (isnan(x)) x = cav_retr_sim(s->self, qi, s->other, oj), (*rechecked)++;
        int64_t *top = d->top + qi * d->k;
        double *ts = d->topsim + qi * d->k;
        heap_push(top, ts, &s->heapn[qi], d->k, oj, x);
        if (s->heapn[qi] == d->k) s->cut[qi] = down((ts[0] - s->m) * s->self->norm[qi]);
    }
}

/* Whether visit can act on the entry: visit's own conditions (inside the band; at or above the cut, which a
 * push may have raised), tested before the call. The band is about 2 (D+3) 2^-24 wide, so nearly every query
 * of a block has an entry in it; a call per entry of its row made the rescan cost as much as the counting
 * pass (perf, 8,000 clips: visit alone 6.7 % of the CPU time). */
static inline int acts(const dstate *s, int64_t qi, float t) {
    return t >= s->cut[qi] || (s->mode == COUNT && t >= s->lo[qi] && t <= s->hi[qi]);
}

/* The counting passes, compiled per instruction set (CAV_VEC: the build's baseline is 4 floats wide), and the
 * same tests without the counts for the rescans, which visit only the chunks of RESCAN entries where one
 * holds (a chunk tested with the cuts of its start: a cut only rises, so no entry that acts is skipped). */
#define RESCAN 64

/* One query's row f [n] with the items' 1 / |g| rn [n], its band [lo, hi] and cut: returns the entries above
 * the band; *hit |= whether one lies inside it or at or above the cut. */
CAV_VEC static int count_row(const float *f, const float *rn, int n, float hi, float lo, float cut,
                             int *hit) {
    int gt = 0, h = 0;
    for (int j = 0; j < n; j++) {
        float t = f[j] * rn[j];
        gt += t > hi;
        h |= ((t >= lo) & (t <= hi)) | (t >= cut);
    }
    *hit |= h;
    return gt;
}
CAV_VEC static int hits_row(const float *f, const float *rn, int n, float hi, float lo, float cut) {
    int h = 0;
    for (int j = 0; j < n; j++) {
        float t = f[j] * rn[j];
        h |= ((t >= lo) & (t <= hi)) | (t >= cut);
    }
    return h;
}

/* One item's row f [n] (times its 1 / |g|, r) against n column queries with their bands and cuts: gt [n]
 * counts the entries above each band; returns whether one lies inside its band or at or above its cut. */
CAV_VEC static int count_cols(const float *f, float r, const float *hi, const float *lo, const float *cut,
                              int n, int *gt) {
    int h = 0;
    for (int j = 0; j < n; j++) {
        float t = f[j] * r;
        gt[j] += t > hi[j];
        h |= ((t >= lo[j]) & (t <= hi[j])) | (t >= cut[j]);
    }
    return h;
}
CAV_VEC static int hits_cols(const float *f, float r, const float *hi, const float *lo, const float *cut,
                             int n) {
    int h = 0;
    for (int j = 0; j < n; j++) {
        float t = f[j] * r;
        h |= ((t >= lo[j]) & (t <= hi[j])) | (t >= cut[j]);
    }
    return h;
}

/* Queries [r0, r0 + br) of self against items [c0, c0 + bc) of other; F [br, bc] row-major. */
static void scan_rows(dstate *s, const float *F, int64_t r0, int br, int64_t c0, int bc) {
    const float *rn = s->other->rnorm + c0;
    int64_t rech = 0;
#pragma omp parallel for reduction(+ : rech) schedule(dynamic, 16)
    for (int i = 0; i < br; i++) {
        int64_t qi = r0 + i;
        const float *f = F + (size_t)i * bc;
        int hit = s->mode == CLASSMAX; /* the class pass: every entry may act */
        if (s->mode == COUNT) s->d->rank[qi] += count_row(f, rn, bc, s->hi[qi], s->lo[qi], s->cut[qi], &hit);
        for (int j0 = 0; hit && j0 < bc; j0 += RESCAN) {
            int n = bc - j0 < RESCAN ? bc - j0 : RESCAN;
            if (s->mode == COUNT && !hits_row(f + j0, rn + j0, n, s->hi[qi], s->lo[qi], s->cut[qi])) continue;
            for (int j = j0; j < j0 + n; j++)
                if (acts(s, qi, f[j] * rn[j])) visit(s, qi, c0 + j, f[j] * rn[j], &rech);
        }
    }
    s->rechecked += rech;
}

/* The reverse direction on the same block: queries [c0, c0 + bc) of self (the columns of F) against items
 * [r0, r0 + br) of other (its rows). Each thread owns a stripe of columns and walks the block by rows (a walk
 * down a column strides by bc floats); a row whose stripe has an entry that acts is rescanned at once, so
 * each column query still sees its items in order. */
static void scan_cols(dstate *s, const float *F, int64_t r0, int br, int64_t c0, int bc, int *gtbuf) {
    const float *rn = s->other->rnorm + r0;
    int64_t rech = 0;
#pragma omp parallel reduction(+ : rech)
    {
        int nt = omp_get_num_threads(), id = omp_get_thread_num();
        int w = ((bc + nt - 1) / nt + 15) / 16 * 16, j0 = id * w, j1 = j0 + w < bc ? j0 + w : bc;
        int *gt = gtbuf + j0;
        const float *hi = s->hi + c0, *lo = s->lo + c0, *cut = s->cut + c0;
        for (int j = 0; j < j1 - j0; j++) gt[j] = 0;
        for (int i = 0; i < br && j0 < j1; i++) {
            const float *f = F + (size_t)i * bc;
            if (s->mode == COUNT && !count_cols(f + j0, rn[i], hi + j0, lo + j0, cut + j0, j1 - j0, gt))
                continue;
            for (int k0 = j0; k0 < j1; k0 += RESCAN) {
                int n = j1 - k0 < RESCAN ? j1 - k0 : RESCAN;
                if (s->mode == COUNT && !hits_cols(f + k0, rn[i], hi + k0, lo + k0, cut + k0, n)) continue;
                for (int j = k0; j < k0 + n; j++)
                    if (acts(s, c0 + j, f[j] * rn[i])) visit(s, c0 + j, r0 + i, f[j] * rn[i], &rech);
            }
        }
        if (s->mode == COUNT)
            for (int j = j0; j < j1; j++) s->d->rank[c0 + j] += gt[j - j0];
    }
    s->rechecked += rech;
}

/* The starting cut: every item may enter a top-k list that is not full; +inf keeps queries without one off
 * the slow path. */
static float top_cut(const cav_retr_dir *d, int64_t i) {
    return d->k && (!d->want_top || d->want_top[i]) ? -INFINITY : INFINITY;
}

static int dstate_init(dstate *s, cav_retr_dir *d, const cav_retr_set *self, const cav_retr_set *other) {
    memset(s, 0, sizeof *s);
    s->d = d, s->self = self, s->other = other, s->m = cav_retr_margin(self->D);
    size_t n = (size_t)(self->n ? self->n : 1);
    s->hi = malloc(n * sizeof *s->hi), s->lo = malloc(n * sizeof *s->lo), s->cut = malloc(n * sizeof *s->cut);
    s->heapn = calloc(n, sizeof *s->heapn);
    if (!s->hi || !s->lo || !s->cut || !s->heapn) return -1;
    d->rechecked = 0;
    for (int64_t i = 0; i < self->n; i++) {
        d->rank[i] = 0, d->ties[i] = 0, s->cut[i] = top_cut(d, i);
        if (d->lab)
            d->thr[i] = NAN; /* the class maximum, found by the first pass */
        else {
            int64_t t = d->target ? d->target[i] : -1;
            d->thr[i] = t >= 0 && t < other->n ? cav_retr_sim(self, i, other, t) : NAN;
        }
        for (int k = 0; k < d->k; k++) d->top[i * d->k + k] = -1, d->topsim[i * d->k + k] = NAN;
    }
    s->mode = d->lab ? CLASSMAX : COUNT;
    if (s->mode == CLASSMAX)
        for (int64_t i = 0; i < self->n; i++) s->cut[i] = -INFINITY; /* no class maximum found yet */
    return 0;
}

static void dstate_free(dstate *s) {
    free(s->hi), free(s->lo), free(s->cut), free(s->heapn);
}

/* After a class pass: the band around the found maxima, and the cuts reset for the top-k lists. */
static void to_count(dstate *s) {
    s->mode = COUNT;
    for (int64_t i = 0; i < s->self->n; i++) set_band(s, i), s->cut[i] = top_cut(s->d, i);
}

/* best first: heap order is worst at the root, so sort by before() */
static void sort_top(cav_retr_dir *d, int64_t n, const int *heapn) {
    for (int64_t i = 0; i < n && d->k; i++) {
        int64_t *t = d->top + i * d->k;
        double *x = d->topsim + i * d->k;
        for (int a = 1; a < heapn[i]; a++)
            for (int b = a; b > 0 && before(x[b], t[b], x[b - 1], t[b - 1]); b--) {
                int64_t tj = t[b];
                double tx = x[b];
                t[b] = t[b - 1], x[b] = x[b - 1], t[b - 1] = tj, x[b - 1] = tx;
            }
    }
}

/* Where the blocks' products come from. The host path: each product straight into one host buffer F. A
 * backend (--device): both sets uploaded once, rows padded to a 256-byte stride (cuBLASLt's default alignment
 * for every row a block starts at; the padding's exact zeros add nothing to a dot product, nor any rounding),
 * and a double buffer: block t's product in dF[t & 1], downloaded into the pinned hF[t & 1] in slot t & 1
 * (kernels.h's download_async), so that while the host scans block t the device computes and downloads block
 * t + 1 into the other pair. */
typedef struct {
    const cav_retr_set *q, *g;
    int64_t B, ncb, nb;     /* block size, column blocks, blocks (rows outer, columns inner) */
    struct cav_backend *be; /* NULL: the host path */
    int Dp;                 /* the device rows' stride in floats */
    float *F;               /* host path: [B, B] */
    float *dq, *dg;         /* [nq, Dp], [ng, Dp] on the device */
    float *dF[2], *hF[2];   /* [B, B] each: device products, host copies */
} blocks;

static void block_at(const blocks *b, int64_t t, int64_t *r0, int *br, int64_t *c0, int *bc) {
    *r0 = t / b->ncb * b->B, *c0 = t % b->ncb * b->B;
    *br = (int)(b->q->n - *r0 < b->B ? b->q->n - *r0 : b->B);
    *bc = (int)(b->g->n - *c0 < b->B ? b->g->n - *c0 : b->B);
}

/* x [n, D] into the device as [n, Dp], the padding zero */
static float *upload_padded(struct cav_backend *be, const cav_retr_set *s, int Dp) {
    size_t n = (size_t)(s->n ? s->n : 1);
    float *d = be->alloc(n * Dp * sizeof *d), *h = calloc(n * Dp, sizeof *h);
    if (d && h) {
        for (int64_t i = 0; i < s->n; i++) memcpy(h + i * Dp, s->x + i * s->D, (size_t)s->D * sizeof *h);
        be->upload(d, h, (size_t)s->n * Dp * sizeof *h);
    } else if (d)
        be->free(d), d = NULL;
    free(h);
    return d;
}

static int blocks_init(blocks *b, const cav_retr_set *q, const cav_retr_set *g, int64_t B,
                       struct cav_backend *be) {
    memset(b, 0, sizeof *b);
    b->q = q, b->g = g, b->B = B, b->be = be;
    b->ncb = (g->n + B - 1) / B, b->nb = (q->n + B - 1) / B * b->ncb;
    size_t fb = (size_t)B * B * sizeof(float);
    if (!be) return (b->F = malloc(fb)) ? 0 : -1;
    b->Dp = (q->D + 63) / 64 * 64;
    b->dq = upload_padded(be, q, b->Dp), b->dg = upload_padded(be, g, b->Dp);
    int bad = !b->dq || !b->dg;
    for (int k = 0; k < 2; k++) {
        bad |= !(b->dF[k] = be->alloc(fb));
        bad |= !(b->hF[k] = be->host_alloc(fb));
    }
    return bad ? -1 : 0;
}

static void blocks_free(blocks *b) {
    free(b->F);
    if (!b->be) return;
    for (int k = 0; k < 2; k++) { /* every download was waited for: nothing reads these any more */
        if (b->dF[k]) b->be->free(b->dF[k]);
        if (b->hF[k]) b->be->host_free(b->hF[k]);
    }
    if (b->dq) b->be->free(b->dq);
    if (b->dg) b->be->free(b->dg);
}

/* The device's block t: F [br, bc] = q[r0:] @ g[c0:]^T into dF[t & 1], then its download */
static void issue(blocks *b, int64_t t) {
    int64_t r0, c0;
    int br, bc, k = (int)(t & 1);
    block_at(b, t, &r0, &br, &c0, &bc);
    b->be->linear_forward(b->dF[k], b->dq + r0 * b->Dp, b->dg + c0 * b->Dp, NULL, br, b->Dp, bc);
    b->be->download_async(b->hF[k], b->dF[k], (size_t)br * bc * sizeof(float), k);
}

/* Block t's product F [br, bc] in host memory, for the scans. On a backend, block t was issued one call
 * earlier (block 0 by the caller); block t + 1 is issued before waiting for t, so the device is never idle
 * while the host scans. */
static const float *block_product(blocks *b, int64_t t) {
    int64_t r0, c0;
    int br, bc;
    if (!b->be) {
        block_at(b, t, &r0, &br, &c0, &bc);
        /* the block product behind the kernel seam: OpenBLAS sgemm */
        cav_backend_cpu()->linear_forward(b->F, b->q->x + r0 * b->q->D, b->g->x + c0 * b->g->D, NULL, br,
                                          b->q->D, bc);
        return b->F;
    }
    if (t + 1 < b->nb) issue(b, t + 1);
    b->be->download_wait((int)(t & 1));
    return b->hF[t & 1];
}

int cav_retrieve(const cav_retr_set *q, const cav_retr_set *g, cav_retr_dir *fwd, cav_retr_dir *rev,
                 int64_t block, struct cav_backend *be) {
    if (block <= 0) {
        const char *e = getenv("CAV_RECALL_BLOCK");
        block = e && atoll(e) > 0 ? atoll(e) : DEFAULT_BLOCK;
    }
    int64_t B = block;
    if (B > q->n && B > g->n) B = q->n > g->n ? q->n : g->n;
    if (B < 1) B = 1;
    dstate sf, sr;
    blocks bl;
    int *gtbuf = malloc((size_t)B * sizeof *gtbuf);
    int bad = !gtbuf;
    bad |= blocks_init(&bl, q, g, B, be) != 0;
    bad |= dstate_init(&sf, fwd, q, g) != 0;
    if (rev) bad |= dstate_init(&sr, rev, g, q) != 0;
    if (!bad) {
        if (sf.mode == COUNT)
            for (int64_t i = 0; i < q->n; i++) set_band(&sf, i);
        if (rev && sr.mode == COUNT)
            for (int64_t i = 0; i < g->n; i++) set_band(&sr, i);
        /* class-level directions need their thresholds (a first pass) before anything can be counted */
        int passes = sf.mode == CLASSMAX || (rev && sr.mode == CLASSMAX) ? 2 : 1;
        for (int pass = 0; pass < passes; pass++) {
            int run_f = sf.mode == CLASSMAX || pass == passes - 1;
            int run_r = rev && (sr.mode == CLASSMAX || pass == passes - 1);
            if (be && bl.nb) issue(&bl, 0);
            for (int64_t t = 0; t < bl.nb; t++) {
                int64_t r0, c0;
                int br, bc;
                block_at(&bl, t, &r0, &br, &c0, &bc);
                const float *F = block_product(&bl, t);
                if (run_f) scan_rows(&sf, F, r0, br, c0, bc);
                if (run_r) scan_cols(&sr, F, r0, br, c0, bc, gtbuf);
            }
            if (sf.mode == CLASSMAX) to_count(&sf);
            if (rev && sr.mode == CLASSMAX) to_count(&sr);
        }
        sort_top(fwd, q->n, sf.heapn);
        fwd->rechecked = sf.rechecked;
        if (rev) sort_top(rev, g->n, sr.heapn), rev->rechecked = sr.rechecked;
    }
    dstate_free(&sf);
    if (rev) dstate_free(&sr);
    blocks_free(&bl);
    free(gtbuf);
    return bad ? -1 : 0;
}
