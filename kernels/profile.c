/* profile.c: where a run's time goes, op by op, on any backend. With CAV_PROFILE set in the environment,
 * cav_backend_open hands out a copy of the backend's table whose every entry times the real one: the wall
 * time from the call until the device has finished it (the backend's sync), summed per op with its call
 * count, and a table of them is written when the program exits (to standard error, or to the file CAV_PROFILE
 * names when it is not "1"). Waiting for each op serialises what would overlap (the batch upload with the
 * compute, a kernel with the next launch), so the profiled run is slower than a plain one; the shares are
 * what to read. Time spent outside the backend (decoding, the loader's waits, the host's own arithmetic) is
 * the difference between the ops' sum and the wall time since the backend was opened, also printed. */
#include <errno.h> /* program_invocation_short_name (_GNU_SOURCE) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels.h"

typedef struct prof_stat prof_stat;
struct prof_stat {
    const char *op;
    long calls;
    double seconds;
    prof_stat *next; /* the ops called so far, in order of first call */
};

static cav_backend *inner; /* the backend profiled (one a process) */
static cav_backend outer;  /* its timed copy */
static prof_stat *seen, **seen_tail = &seen;
static double t_open;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}
static void done(prof_stat *s, double t0) {
    if (inner->sync) inner->sync();
    s->seconds += now() - t0;
    if (!s->calls++) {
        *seen_tail = s;
        seen_tail = &s->next;
    }
}

/* One timed entry per op: OP, its parameter list and its argument list (a void op or one returning R). */
#define TIME_V(OP, PARAMS, ARGS)                                                                             \
    static prof_stat st_##OP = {#OP, 0, 0, NULL};                                                            \
    static void p_##OP PARAMS {                                                                              \
        double t0 = now();                                                                                   \
        inner->OP ARGS;                                                                                      \
        done(&st_##OP, t0);                                                                                  \
    }
#define TIME_R(R, OP, PARAMS, ARGS)                                                                          \
    static prof_stat st_##OP = {#OP, 0, 0, NULL};                                                            \
    static R p_##OP PARAMS {                                                                                 \
        double t0 = now();                                                                                   \
        R r = inner->OP ARGS;                                                                                \
        done(&st_##OP, t0);                                                                                  \
        return r;                                                                                            \
    }

TIME_R(void *, alloc, (size_t n), (n))
TIME_V(free, (void *p), (p))
TIME_V(zero, (void *p, size_t n), (p, n))
TIME_V(copy, (void *d, const void *s, size_t n), (d, s, n))
TIME_V(upload, (void *d, const void *h, size_t n), (d, h, n))
TIME_V(download, (void *h, const void *s, size_t n), (h, s, n))
TIME_R(void *, host_alloc, (size_t n), (n))
TIME_V(host_free, (void *p), (p))
TIME_V(upload_async, (void *d, const void *h, size_t n), (d, h, n))
TIME_V(upload_wait, (void), ())
TIME_V(download_async, (void *h, const void *s, size_t n, int slot), (h, s, n, slot))
TIME_V(download_wait, (int slot), (slot))
TIME_V(linear_forward, (float *o, const float *i, const float *w, const float *b, int M, int IC, int OC),
       (o, i, w, b, M, IC, OC))
TIME_V(linear_backward,
       (float *di, float *dw, float *db, const float *dout, const float *i, const float *w, int M, int IC,
        int OC),
       (di, dw, db, dout, i, w, M, IC, OC))
TIME_V(cast_bf16, (uint16_t * o, const float *i, size_t n), (o, i, n))
TIME_V(widen_bf16, (float *o, const uint16_t *i, size_t n), (o, i, n))
TIME_V(linear_forward_bf16,
       (float *o, const uint16_t *i, const uint16_t *w, const uint16_t *b, int M, int IC, int OC),
       (o, i, w, b, M, IC, OC))
TIME_V(linear_backward_bf16,
       (float *di, float *dw, float *db, const float *dout, const uint16_t *dout16, const uint16_t *i,
        const uint16_t *w, int M, int IC, int OC),
       (di, dw, db, dout, dout16, i, w, M, IC, OC))
TIME_V(layernorm_forward,
       (float *o, float *mean, float *rstd, const float *i, const float *w, const float *b, int M, int C),
       (o, mean, rstd, i, w, b, M, C))
TIME_V(layernorm_backward,
       (float *di, float *dw, float *db, const float *dout, const float *i, const float *w, const float *mean,
        const float *rstd, int M, int C),
       (di, dw, db, dout, i, w, mean, rstd, M, C))
TIME_V(layernorm_forward_bf16,
       (uint16_t * o, float *mean, float *rstd, const float *i, const float *w, const float *b, int M, int C),
       (o, mean, rstd, i, w, b, M, C))
TIME_V(add_layernorm_forward,
       (float *s, float *o, uint16_t *o16, float *mean, float *rstd, const float *a, const float *r,
        const float *w, const float *b, int M, int C),
       (s, o, o16, mean, rstd, a, r, w, b, M, C))
TIME_V(gelu_forward, (float *o, const float *i, size_t n), (o, i, n))
TIME_V(gelu_forward_bf16, (uint16_t * o, const float *i, size_t n), (o, i, n))
TIME_V(gelu_backward, (float *di, const float *i, const float *dout, size_t n), (di, i, dout, n))
TIME_V(add_forward, (float *o, const float *a, const float *b, size_t n), (o, a, b, n))
TIME_V(accumulate, (float *d, const float *s, size_t n), (d, s, n))
TIME_V(average_forward, (float *o, const float *a, const float *b, size_t n), (o, a, b, n))
TIME_V(average_backward, (float *da, const float *dout, size_t n), (da, dout, n))
TIME_V(attention_forward, (float *o, float *state, const float *qkv, int B, int N, int C, int H),
       (o, state, qkv, B, N, C, H))
TIME_V(attention_backward,
       (float *dqkv, const float *dout, const float *qkv, const float *o, const float *state, float *work,
        int B, int N, int C, int H),
       (dqkv, dout, qkv, o, state, work, B, N, C, H))
TIME_V(attention_forward_bf16, (float *o, float *state, const float *qkv, int B, int N, int C, int H),
       (o, state, qkv, B, N, C, H))
TIME_V(attention_backward_bf16,
       (float *dqkv, const float *dout, const float *qkv, const float *o, const float *state, float *work,
        int B, int N, int C, int H),
       (dqkv, dout, qkv, o, state, work, B, N, C, H))
TIME_V(gather_tokens_forward, (float *o, const float *i, const int64_t *idx, int B, int N, int L, int C),
       (o, i, idx, B, N, L, C))
TIME_V(gather_tokens_backward, (float *di, const float *dout, const int64_t *idx, int B, int N, int L, int C),
       (di, dout, idx, B, N, L, C))
TIME_V(mask_from_keep, (float *m, const int64_t *idx, int B, int N, int L), (m, idx, B, N, L))
TIME_V(unshuffle_forward,
       (float *o, const float *src, const int64_t *idx, const float *fill, int B, int N, int L, int Ns,
        int off, int C),
       (o, src, idx, fill, B, N, L, Ns, off, C))
TIME_V(unshuffle_backward,
       (float *dsrc, float *dfill, const float *dout, const int64_t *idx, int B, int N, int L, int Ns,
        int off, int C),
       (dsrc, dfill, dout, idx, B, N, L, Ns, off, C))
TIME_V(concat_forward, (float *o, const float *a, const float *b, int B, int N1, int N2, int C),
       (o, a, b, B, N1, N2, C))
TIME_V(concat_backward, (float *da, float *db, const float *dout, int B, int N1, int N2, int C),
       (da, db, dout, B, N1, N2, C))
TIME_V(add_pos_forward,
       (float *x, const float *pos, const float *mod, int B, int Ntot, int off, int N, int C),
       (x, pos, mod, B, Ntot, off, N, C))
TIME_V(add_pos_backward, (float *dpos, float *dmod, const float *dx, int B, int Ntot, int off, int N, int C),
       (dpos, dmod, dx, B, Ntot, off, N, C))
TIME_V(mean_tokens_forward, (float *o, const float *i, int B, int N, int C), (o, i, B, N, C))
TIME_V(mean_tokens_backward, (float *di, const float *dout, int B, int N, int C), (di, dout, B, N, C))
TIME_V(patchify_audio, (float *o, const float *a, int B, int T, int F), (o, a, B, T, F))
TIME_V(patchify_video, (float *o, const float *v, int B, int S), (o, v, B, S))
TIME_V(im2col_video, (float *o, const float *v, int B, int S), (o, v, B, S))
TIME_V(l2norm_forward, (float *o, float *norm, const float *i, int B, int C), (o, norm, i, B, C))
TIME_V(l2norm_backward, (float *di, const float *dout, const float *o, const float *norm, int B, int C),
       (di, dout, o, norm, B, C))
TIME_R(float, contrastive_forward,
       (float *acc, const float *a, const float *v, int B, int C, int bidirect, double *work),
       (acc, a, v, B, C, bidirect, work))
TIME_V(contrastive_backward,
       (float *da, float *dv, float dloss, const float *a, const float *v, int B, int C, int bidirect,
        double *work),
       (da, dv, dloss, a, v, B, C, bidirect, work))
TIME_V(normpix, (float *t, int M, int P, float eps), (t, M, P, eps))
TIME_V(masked_mse_sums,
       (const float *pred, const float *t, const float *mask, int M, int P, double *num, double *den),
       (pred, t, mask, M, P, num, den))
TIME_V(masked_mse_backward_den,
       (float *dpred, float dloss, const float *pred, const float *t, const float *mask, int M, int P,
        double den),
       (dpred, dloss, pred, t, mask, M, P, den))
TIME_R(float, masked_mse_forward, (const float *pred, const float *t, const float *mask, int M, int P),
       (pred, t, mask, M, P))
TIME_V(masked_mse_backward,
       (float *dpred, float dloss, const float *pred, const float *t, const float *mask, int M, int P),
       (dpred, dloss, pred, t, mask, M, P))
TIME_R(float, bce_logits_forward, (const float *x, const float *y, int B, int K), (x, y, B, K))
TIME_V(bce_logits_backward, (float *dx, float dloss, const float *x, const float *y, int B, int K),
       (dx, dloss, x, y, B, K))
TIME_R(float, soft_ce_forward, (const float *x, const float *y, int B, int K), (x, y, B, K))
TIME_V(soft_ce_backward, (float *dx, float dloss, const float *x, const float *y, int B, int K),
       (dx, dloss, x, y, B, K))
TIME_V(adam_step,
       (float *p, const float *g, float *m, float *v, size_t n, double lr, double b1, double b2, double eps,
        double wd, int t),
       (p, g, m, v, n, lr, b1, b2, eps, wd, t))
TIME_R(int, all_finite, (const float *x, size_t n), (x, n))

static void report(void) {
    const char *to = getenv("CAV_PROFILE");
    FILE *f = to && strcmp(to, "1") ? fopen(to, "w") : stderr;
    if (!f) {
        fprintf(stderr, "%s: profile: cannot write %s; to standard error instead\n",
                program_invocation_short_name, to);
        f = stderr;
    }
    /* on standard error every line starts with the program's name, as the tools' own lines do */
    char pre[64] = "";
    if (f == stderr) snprintf(pre, sizeof pre, "%.40s: ", program_invocation_short_name);
    double total = 0, wall = now() - t_open;
    for (prof_stat *s = seen; s; s = s->next) total += s->seconds;
    /* the ops by time spent, largest first (a few dozen: a selection sort) */
    prof_stat *order[128];
    int n = 0;
    for (prof_stat *s = seen; s && n < 128; s = s->next) order[n++] = s;
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (order[j]->seconds > order[i]->seconds) {
                prof_stat *t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
    fprintf(f, "%sprofile of the backend %s: each op timed until the device finished it\n", pre, inner->name);
    fprintf(f, "%s%-24s %10s %12s %7s %12s\n", pre, "op", "calls", "seconds", "share", "ms per call");
    for (int i = 0; i < n; i++)
        fprintf(f, "%s%-24s %10ld %12.4f %6.2f%% %12.4f\n", pre, order[i]->op, order[i]->calls,
                order[i]->seconds, total > 0 ? 100 * order[i]->seconds / total : 0,
                1e3 * order[i]->seconds / order[i]->calls);
    fprintf(f, "%s%-24s %10s %12.4f %6.2f%%\n", pre, "all ops", "", total, 100.0);
    fprintf(f, "%s%-24s %10s %12.4f   (outside the backend: %.4f s)\n", pre, "wall since opened", "", wall,
            wall - total);
    if (f != stderr) fclose(f);
}

/* Install every timed entry that the profiled table has (a NULL entry stays NULL). */
#define SET(OP) outer.OP = inner->OP ? p_##OP : NULL
cav_backend *cav_backend_profiled(cav_backend *be) {
    if (inner) return be == inner ? &outer : be; /* one backend a process: a second one runs untimed */
    inner = be;
    outer = *be;
    SET(alloc), SET(free), SET(zero), SET(copy), SET(upload), SET(download), SET(host_alloc), SET(host_free);
    SET(upload_async), SET(upload_wait), SET(download_async), SET(download_wait);
    SET(linear_forward), SET(linear_backward), SET(cast_bf16), SET(widen_bf16), SET(linear_forward_bf16);
    SET(linear_backward_bf16), SET(layernorm_forward), SET(layernorm_backward), SET(gelu_forward);
    SET(gelu_backward), SET(add_forward), SET(accumulate), SET(average_forward), SET(average_backward);
    SET(attention_forward), SET(attention_backward), SET(attention_forward_bf16),
        SET(attention_backward_bf16);
    SET(gather_tokens_forward), SET(gather_tokens_backward);
    SET(mask_from_keep), SET(unshuffle_forward), SET(unshuffle_backward), SET(concat_forward);
    SET(concat_backward), SET(add_pos_forward), SET(add_pos_backward), SET(mean_tokens_forward);
    SET(mean_tokens_backward), SET(patchify_audio), SET(patchify_video), SET(im2col_video),
        SET(l2norm_forward);
    SET(l2norm_backward), SET(contrastive_forward), SET(contrastive_backward), SET(normpix);
    SET(masked_mse_sums), SET(masked_mse_backward_den), SET(masked_mse_forward), SET(masked_mse_backward);
    SET(bce_logits_forward), SET(bce_logits_backward), SET(soft_ce_forward), SET(soft_ce_backward);
    SET(adam_step), SET(all_finite), SET(layernorm_forward_bf16), SET(add_layernorm_forward);
    SET(gelu_forward_bf16);
    t_open = now();
    atexit(report);
    return &outer;
}
