/* retrieval.c: see retrieval.h. Per block of queries x items, one float product F [br, bc]; then, per query,
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
        /* 2^e with mx * 2^e in [1, 2): exact, and the reference's double sums scale by the same power */
        int e;
        frexpf(mx, &e);
        for (int d = 0; d < D; d++) r[d] = ldexpf(r[d], 1 - e);
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
 * order, FMA or not (it is the worst case of a float dot product); it assumes IEEE float products (no TF32).
 */
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

/* Queries [r0, r0 + br) of self against items [c0, c0 + bc) of other; F [br, bc] row-major. */
static void scan_rows(dstate *s, const float *F, int64_t r0, int br, int64_t c0, int bc) {
    const float *rn = s->other->rnorm + c0;
    int64_t rech = 0;
#pragma omp parallel for reduction(+ : rech) schedule(dynamic, 16)
    for (int i = 0; i < br; i++) {
        int64_t qi = r0 + i;
        const float *f = F + (size_t)i * bc;
        int flag = s->mode == CLASSMAX;
        if (s->mode == COUNT) {
            const float hi = s->hi[qi], lo = s->lo[qi], cut = s->cut[qi];
            int gt = 0;
            for (int j = 0; j < bc; j++) {
                float t = f[j] * rn[j];
                gt += t > hi;
                flag |= ((t >= lo) & (t <= hi)) | (t >= cut);
            }
            s->d->rank[qi] += gt;
        }
        if (flag)
            for (int j = 0; j < bc; j++) visit(s, qi, c0 + j, f[j] * rn[j], &rech);
    }
    s->rechecked += rech;
}

/* The reverse direction on the same block: queries [c0, c0 + bc) of self (the columns of F) against items
 * [r0, r0 + br) of other (its rows). Each thread owns a stripe of columns. */
static void scan_cols(dstate *s, const float *F, int64_t r0, int br, int64_t c0, int bc, int *gtbuf,
                      unsigned char *flagbuf) {
    const float *rn = s->other->rnorm + r0;
    int64_t rech = 0;
#pragma omp parallel reduction(+ : rech)
    {
        int nt = omp_get_num_threads(), id = omp_get_thread_num();
        int w = ((bc + nt - 1) / nt + 15) / 16 * 16, j0 = id * w, j1 = j0 + w < bc ? j0 + w : bc;
        int *gt = gtbuf + j0;
        unsigned char *flag = flagbuf + j0;
        const float *hi = s->hi + c0, *lo = s->lo + c0, *cut = s->cut + c0;
        if (j0 < j1) {
            memset(gt, 0, (size_t)(j1 - j0) * sizeof *gt);
            memset(flag, s->mode == CLASSMAX, (size_t)(j1 - j0));
            if (s->mode == COUNT)
                for (int i = 0; i < br; i++) {
                    const float *f = F + (size_t)i * bc;
                    const float r = rn[i];
                    for (int j = j0; j < j1; j++) {
                        float t = f[j] * r;
                        gt[j - j0] += t > hi[j];
                        flag[j - j0] |= ((t >= lo[j]) & (t <= hi[j])) | (t >= cut[j]);
                    }
                }
            for (int j = j0; j < j1; j++) {
                if (s->mode == COUNT) s->d->rank[c0 + j] += gt[j - j0];
                if (flag[j - j0])
                    for (int i = 0; i < br; i++)
                        visit(s, c0 + j, r0 + i, F[(size_t)i * bc + j] * rn[i], &rech);
            }
        }
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

int cav_retrieve(const cav_retr_set *q, const cav_retr_set *g, cav_retr_dir *fwd, cav_retr_dir *rev,
                 int64_t block) {
    if (block <= 0) {
        const char *e = getenv("CAV_RECALL_BLOCK");
        block = e && atoll(e) > 0 ? atoll(e) : DEFAULT_BLOCK;
    }
    int64_t B = block;
    if (B > q->n && B > g->n) B = q->n > g->n ? q->n : g->n;
    if (B < 1) B = 1;
    dstate sf, sr;
    float *F = malloc((size_t)B * B * sizeof *F);
    int *gtbuf = malloc((size_t)B * sizeof *gtbuf);
    unsigned char *flagbuf = malloc((size_t)B);
    int bad = !F || !gtbuf || !flagbuf;
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
            for (int64_t r0 = 0; r0 < q->n; r0 += B) {
                int br = (int)(q->n - r0 < B ? q->n - r0 : B);
                for (int64_t c0 = 0; c0 < g->n; c0 += B) {
                    int bc = (int)(g->n - c0 < B ? g->n - c0 : B);
                    /* F [br, bc] = q[r0:] @ g[c0:]^T: the block product, behind the kernel seam */
                    cav_backend_cpu()->linear_forward(F, q->x + r0 * q->D, g->x + c0 * g->D, NULL, br, q->D,
                                                      bc);
                    if (run_f) scan_rows(&sf, F, r0, br, c0, bc);
                    if (run_r) scan_cols(&sr, F, r0, br, c0, bc, gtbuf, flagbuf);
                }
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
    free(F), free(gtbuf), free(flagbuf);
    return bad ? -1 : 0;
}
