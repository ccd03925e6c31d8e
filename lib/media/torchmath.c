/* torchmath.c: cos and log as SLEEF's 1-ulp single-precision functions compute them with FMA (what
 * PyTorch's AVX2 kernels call; see torchmath.h). Both work in "double-float" arithmetic: a value is an
 * unevaluated sum hi + lo of two floats, and products keep their rounding error through a fused
 * multiply-add. Every operation below is one float32 rounding (or one fmaf), in SLEEF's order; the file
 * is built with -ffp-contract=off so the compiler adds no fusions of its own. */
#include "torchmath.h"

#include <float.h>

typedef struct {
    float x, y; /* hi, lo */
} df;

/* s = a + b with its rounding error (no ordering of |a|, |b| assumed) */
static df df_add2_ff(float a, float b) {
    float s = a + b, v = s - a;
    return (df){s, (a - (s - v)) + (b - v)};
}
static df df_add2_df_f(df a, float b) {
    float s = a.x + b, v = s - a.x;
    float t = (a.x - (s - v)) + (b - v);
    return (df){s, t + a.y};
}
/* these assume |a| >= |b| (fast two-sum) */
static df df_add_ff(float a, float b) {
    float s = a + b;
    return (df){s, (a - s) + b};
}
static df df_add_f_df(float a, df b) {
    float s = a + b.x;
    return (df){s, ((a - s) + b.x) + b.y};
}
static df df_add_df_f(df a, float b) {
    float s = a.x + b;
    return (df){s, ((a.x - s) + b) + a.y};
}
static df df_add_df_df(df a, df b) {
    float s = a.x + b.x;
    return (df){s, (((a.x - s) + b.x) + a.y) + b.y};
}
static df df_scale(df a, float s) {
    return (df){a.x * s, a.y * s};
}
static df df_mul_df_f(df a, float b) {
    float s = a.x * b;
    return (df){s, fmaf(a.y, b, fmaf(a.x, b, -s))};
}
static df df_mul_df_df(df a, df b) {
    float s = a.x * b.x;
    return (df){s, fmaf(a.x, b.y, fmaf(a.y, b.x, fmaf(a.x, b.x, -s)))};
}
static float df_mul_df_df_f(df a, df b) {
    return fmaf(a.x, b.x, fmaf(a.y, b.x, a.x * b.y));
}
static df df_squ(df a) {
    float s = a.x * a.x;
    return (df){s, fmaf(a.x + a.x, a.y, fmaf(a.x, a.x, -s))};
}
static df df_div(df n, df d) {
    float t = 1.0f / d.x;
    float s = n.x * t;
    float u = fmaf(t, n.x, -s);
    float v = fmaf(-d.y, t, fmaf(-d.x, t, 1.0f));
    return (df){s, fmaf(s, v, fmaf(n.y, t, u))};
}

float cav_torch_cosf(float d) {
    if (!(fabsf(d) < 125.0f)) return NAN;
    /* d = (q pi/2) + s with q odd: q = 2 rint(d/pi - 1/2) + 1, pi/2 in three parts */
    float dq = fmaf(rintf(fmaf(d, (float)0.318309886183790671537767526745028724, -0.5f)), 2.0f, 1.0f);
    int q = (int)rintf(dq);
    df s = df_add2_ff(d, dq * (-3.1414794921875f * 0.5f));
    s = df_add2_df_f(s, dq * (-0.00011315941810607910156f * 0.5f));
    s = df_add2_df_f(s, dq * (-1.9841872589410058936e-09f * 0.5f));
    df t = s;
    s = df_squ(s);
    float u = 2.6083159809786593541503e-06f;
    u = fmaf(u, s.x, -0.0001981069071916863322258f);
    u = fmaf(u, s.x, 0.00833307858556509017944336f);
    df x = df_add_f_df(1.0f, df_mul_df_df(df_add_ff(-0.166666597127914428710938f, u * s.x), s));
    float r = df_mul_df_df_f(t, x);
    if ((q & 2) == 0) r = -r; /* sign flip by xor with -0.0 */
    return r;
}

static int32_t ilogb2k(float d) {
    uint32_t u;
    memcpy(&u, &d, 4);
    return (int32_t)((u >> 23) & 0xff) - 0x7f;
}

static float ldexp3k(float d, int32_t e) {
    uint32_t u;
    memcpy(&u, &d, 4);
    u += (uint32_t)e << 23;
    memcpy(&d, &u, 4);
    return d;
}

float cav_torch_logf(float d) {
    float in = d;
    int small = d < FLT_MIN;
    if (small) d *= (float)(INT64_C(1) << 32) * (float)(INT64_C(1) << 32);
    int32_t e = ilogb2k(d * (1.0f / 0.75f));
    float m = ldexp3k(d, -e);
    if (small) e -= 64;
    df s = df_mul_df_f((df){0.69314718246459960938f, -1.904654323148236017e-09f}, (float)e);
    df x = df_div(df_add2_ff(-1.0f, m), df_add2_ff(1.0f, m));
    float x2 = x.x * x.x;
    float t = 0.3027294874e+0f;
    t = fmaf(t, x2, 0.3996108174e+0f);
    t = fmaf(t, x2, 0.6666694880e+0f);
    s = df_add_df_df(s, df_scale(x, 2.0f));
    s = df_add_df_f(s, (x2 * x.x) * t);
    float r = s.x + s.y;
    if (isinf(in) && in > 0) r = INFINITY;
    if (in < 0 || isnan(in)) r = NAN;
    if (in == 0) r = -INFINITY;
    return r;
}
