/* rfft.c: pocketfft's real forward transform (rfftp) for power-of-two lengths, eight signals at a time (see
 * rfft.h). What has to match pocketfft for the bits to match, and does here:
 *  - the factors: as many 4s as divide n, then a 2 if one is left, the 2 moved to the front of the list
 *    (512 = 2,4,4,4,4); the forward transform runs the passes from the last factor to the first;
 *  - the passes: FFTPACK's radf4 and radf2 butterflies with pocketfft's operand order in every add and
 *    multiply (a rounding differs if a + b becomes b + c or a product is regrouped), sqrt(1/2) rounded to
 *    float for the radix-4 middle column;
 *  - the twiddles: exp(2 pi i m/n) evaluated in double as pocketfft's sincos_2pibyn does (octant-reduced
 *    sin/cos tables of about sqrt(n) entries each, a product of one entry from each), then rounded to float;
 *  - no contraction of a*b + c into a fused multiply-add (the Makefile builds this file with
 *    -ffp-contract=off; pocketfft in PyTorch is built for baseline x86-64, which has no FMA).
 * The lanes of the GCC vector type are eight independent signals; SIMD changes nothing in any lane. */
#include "rfft.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef float v8f __attribute__((vector_size(32)));

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define HOT __attribute__((target_clones("default", "arch=x86-64-v3")))
#else
#define HOT
#endif

enum { MAXFACT = 32 };

struct cav_rfft {
    int n, nf;
    int fct[MAXFACT];   /* pocketfft's factor list */
    float *tw[MAXFACT]; /* per factor but the last: (ip-1)*(ido-1) twiddles, (re, im) pairs */
    float *mem;
};

typedef struct {
    double r, i;
} dcplx;

/* exp(2 pi i x/n) for integer x from the sine and cosine of an angle in [0, pi/4]: with ang = pi/(4n),
 * 2 pi x/n = 8x * ang, and each octant maps onto the first by symmetry (pocketfft's calc()). */
static dcplx octant_sincos(size_t x, size_t n, double ang) {
    x <<= 3;
    if (x < 4 * n) {
        if (x < 2 * n) {
            if (x < n) return (dcplx){cos((double)x * ang), sin((double)x * ang)};
            return (dcplx){sin((double)(2 * n - x) * ang), cos((double)(2 * n - x) * ang)};
        }
        x -= 2 * n;
        if (x < n) return (dcplx){-sin((double)x * ang), cos((double)x * ang)};
        return (dcplx){-cos((double)(2 * n - x) * ang), sin((double)(2 * n - x) * ang)};
    }
    x = 8 * n - x;
    if (x < 2 * n) {
        if (x < n) return (dcplx){cos((double)x * ang), -sin((double)x * ang)};
        return (dcplx){sin((double)(2 * n - x) * ang), -cos((double)(2 * n - x) * ang)};
    }
    x -= 2 * n;
    if (x < n) return (dcplx){-sin((double)x * ang), -cos((double)x * ang)};
    return (dcplx){-cos((double)(2 * n - x) * ang), -sin((double)(2 * n - x) * ang)};
}

/* The twiddle table: exp(2 pi i m/n) for m <= n/2 is v1[m & mask] * v2[m >> shift] in double, rounded to
 * float (the callers only need the first half). */
typedef struct {
    size_t n, mask, shift;
    dcplx *v1, *v2;
} twiddles;

static int twiddles_init(twiddles *t, size_t n) {
    const double ang = (double)(0.25L * 3.141592653589793238462643383279502884197L / (long double)n);
    size_t nval = (n + 2) / 2;
    t->n = n;
    t->shift = 1;
    while (((size_t)1 << t->shift) * ((size_t)1 << t->shift) < nval) t->shift++;
    t->mask = ((size_t)1 << t->shift) - 1;
    size_t n1 = t->mask + 1, n2 = (nval + t->mask) / (t->mask + 1);
    t->v1 = malloc(sizeof(dcplx) * n1);
    t->v2 = malloc(sizeof(dcplx) * n2);
    if (!t->v1 || !t->v2) return -1;
    t->v1[0] = (dcplx){1, 0};
    for (size_t i = 1; i < n1; i++) t->v1[i] = octant_sincos(i, n, ang);
    t->v2[0] = (dcplx){1, 0};
    for (size_t i = 1; i < n2; i++) t->v2[i] = octant_sincos(i * (t->mask + 1), n, ang);
    return 0;
}

static void twiddle_at(const twiddles *t, size_t m, float *re, float *im) {
    dcplx a = t->v1[m & t->mask], b = t->v2[m >> t->shift];
    *re = (float)(a.r * b.r - a.i * b.i);
    *im = (float)(a.r * b.i + a.i * b.r);
}

cav_rfft *cav_rfft_new(int n) {
    if (n < 2 || (n & (n - 1))) return NULL;
    cav_rfft *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = n;
    int len = n;
    while (len % 4 == 0) p->fct[p->nf++] = 4, len /= 4;
    if (len % 2 == 0) { /* the 2 goes first */
        len /= 2;
        p->fct[p->nf++] = 2;
        int t = p->fct[0];
        p->fct[0] = p->fct[p->nf - 1];
        p->fct[p->nf - 1] = t;
    }
    size_t total = 0, l1 = 1;
    for (int k = 0; k < p->nf; k++) {
        size_t ip = p->fct[k], ido = n / (l1 * ip);
        if (k < p->nf - 1) total += (ip - 1) * (ido - 1);
        l1 *= ip;
    }
    p->mem = malloc(sizeof(float) * (total + 1));
    twiddles t = {0};
    if (!p->mem || twiddles_init(&t, n)) {
        free(t.v1), free(t.v2);
        cav_rfft_free(p);
        return NULL;
    }
    float *ptr = p->mem;
    l1 = 1;
    for (int k = 0; k < p->nf; k++) {
        size_t ip = p->fct[k], ido = n / (l1 * ip);
        if (k < p->nf - 1) { /* the last factor (first pass) has ido = 1: no twiddles */
            p->tw[k] = ptr;
            for (size_t j = 1; j < ip; j++)
                for (size_t i = 1; i <= (ido - 1) / 2; i++)
                    twiddle_at(&t, j * l1 * i, &ptr[(j - 1) * (ido - 1) + 2 * i - 2],
                               &ptr[(j - 1) * (ido - 1) + 2 * i - 1]);
            ptr += (ip - 1) * (ido - 1);
        }
        l1 *= ip;
    }
    free(t.v1);
    free(t.v2);
    return p;
}

void cav_rfft_free(cav_rfft *p) {
    if (!p) return;
    free(p->mem);
    free(p);
}

int cav_rfft_size(const cav_rfft *p) {
    return p->n;
}

/* The butterflies. cc is the pass input, ch its output; wa the pass's twiddles (re, im pairs by column i
 * and row x). The expressions keep pocketfft's operand order: MULPM(a, b, c, d, e, f) is a = c*e + d*f,
 * b = c*f - d*e (conj(c + id) * (e + if)); PM(a, b, c, d) is a = c + d, b = c - d. */
#define PM(a, b, c, d)                                                                                       \
    do {                                                                                                     \
        v8f c_ = (c), d_ = (d);                                                                              \
        a = c_ + d_;                                                                                         \
        b = c_ - d_;                                                                                         \
    } while (0)
#define MULPM(a, b, c, d, e, f)                                                                              \
    do {                                                                                                     \
        v8f e_ = (e), f_ = (f);                                                                              \
        a = (c)*e_ + (d)*f_;                                                                                 \
        b = (c)*f_ - (d)*e_;                                                                                 \
    } while (0)

static inline __attribute__((always_inline)) void radf4(size_t ido, size_t l1, const v8f *restrict cc,
                                                        v8f *restrict ch, const float *restrict wa) {
#define CC(a, b, c) cc[(a) + ido * ((b) + l1 * (c))]
#define CH(a, b, c) ch[(a) + ido * ((b) + 4 * (c))]
#define WA(x, i) wa[(i) + (x) * (ido - 1)]
    const float hsqt2 = (float)0.707106781186547524400844362104849L;
    for (size_t k = 0; k < l1; k++) {
        v8f tr1, tr2;
        PM(tr1, CH(0, 2, k), CC(0, k, 3), CC(0, k, 1));
        PM(tr2, CH(ido - 1, 1, k), CC(0, k, 0), CC(0, k, 2));
        PM(CH(0, 0, k), CH(ido - 1, 3, k), tr2, tr1);
    }
    if ((ido & 1) == 0)
        for (size_t k = 0; k < l1; k++) {
            v8f ti1 = -hsqt2 * (CC(ido - 1, k, 1) + CC(ido - 1, k, 3));
            v8f tr1 = hsqt2 * (CC(ido - 1, k, 1) - CC(ido - 1, k, 3));
            PM(CH(ido - 1, 0, k), CH(ido - 1, 2, k), CC(ido - 1, k, 0), tr1);
            PM(CH(0, 3, k), CH(0, 1, k), ti1, CC(ido - 1, k, 2));
        }
    if (ido <= 2) return;
    for (size_t k = 0; k < l1; k++)
        for (size_t i = 2; i < ido; i += 2) {
            size_t ic = ido - i;
            v8f ci2, ci3, ci4, cr2, cr3, cr4, ti1, ti2, ti3, ti4, tr1, tr2, tr3, tr4;
            MULPM(cr2, ci2, WA(0, i - 2), WA(0, i - 1), CC(i - 1, k, 1), CC(i, k, 1));
            MULPM(cr3, ci3, WA(1, i - 2), WA(1, i - 1), CC(i - 1, k, 2), CC(i, k, 2));
            MULPM(cr4, ci4, WA(2, i - 2), WA(2, i - 1), CC(i - 1, k, 3), CC(i, k, 3));
            PM(tr1, tr4, cr4, cr2);
            PM(ti1, ti4, ci2, ci4);
            PM(tr2, tr3, CC(i - 1, k, 0), cr3);
            PM(ti2, ti3, CC(i, k, 0), ci3);
            PM(CH(i - 1, 0, k), CH(ic - 1, 3, k), tr2, tr1);
            PM(CH(i, 0, k), CH(ic, 3, k), ti1, ti2);
            PM(CH(i - 1, 2, k), CH(ic - 1, 1, k), tr3, ti4);
            PM(CH(i, 2, k), CH(ic, 1, k), tr4, ti3);
        }
#undef CH
}

static inline __attribute__((always_inline)) void radf2(size_t ido, size_t l1, const v8f *restrict cc,
                                                        v8f *restrict ch, const float *restrict wa) {
#define CH(a, b, c) ch[(a) + ido * ((b) + 2 * (c))]
    for (size_t k = 0; k < l1; k++) PM(CH(0, 0, k), CH(ido - 1, 1, k), CC(0, k, 0), CC(0, k, 1));
    if ((ido & 1) == 0)
        for (size_t k = 0; k < l1; k++) {
            CH(0, 1, k) = -CC(ido - 1, k, 1);
            CH(ido - 1, 0, k) = CC(ido - 1, k, 0);
        }
    if (ido <= 2) return;
    for (size_t k = 0; k < l1; k++)
        for (size_t i = 2; i < ido; i += 2) {
            size_t ic = ido - i;
            v8f tr2, ti2;
            MULPM(tr2, ti2, WA(0, i - 2), WA(0, i - 1), CC(i - 1, k, 1), CC(i, k, 1));
            PM(CH(i - 1, 0, k), CH(ic - 1, 1, k), CC(i - 1, k, 0), tr2);
            PM(CH(i, 0, k), CH(ic, 1, k), ti2, CC(i, k, 0));
        }
#undef CH
#undef CC
#undef WA
}

HOT float *cav_rfft_forward8(const cav_rfft *p, float *x, float *work) {
    v8f *p1 = (v8f *)x, *p2 = (v8f *)work;
    size_t n = p->n, l1 = n;
    for (int k = p->nf - 1; k >= 0; k--) {
        size_t ip = p->fct[k], ido = n / l1;
        l1 /= ip;
        if (ip == 4)
            radf4(ido, l1, p1, p2, p->tw[k]);
        else
            radf2(ido, l1, p1, p2, p->tw[k]);
        v8f *t = p1;
        p1 = p2, p2 = t;
    }
    return (float *)p1;
}

int cav_rfft_forward(const cav_rfft *p, const float *in, float *out) {
    int n = p->n;
    float *buf = aligned_alloc(32, sizeof(float) * 16 * (size_t)n);
    if (!buf) return -1;
    memset(buf, 0, sizeof(float) * 8 * (size_t)n);
    for (int j = 0; j < n; j++) buf[j * 8] = in[j];
    const float *r = cav_rfft_forward8(p, buf, buf + 8 * (size_t)n);
    out[0] = r[0], out[1] = 0.0f;
    for (int k = 1; k < n / 2; k++) out[2 * k] = r[(2 * k - 1) * 8], out[2 * k + 1] = r[2 * k * 8];
    out[n] = r[(n - 1) * 8], out[n + 1] = 0.0f;
    free(buf);
    return 0;
}
