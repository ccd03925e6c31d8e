/* kernels.h: the device seam. Every operation the CAV-MAE models run goes through a cav_backend, a table of
 * function pointers: memory (alloc, free, zero, copy, upload, download; pinned host memory, an
 * asynchronous upload for the batch and an asynchronous download for retrieval's blocks) and each compute op
 * with its forward and its backward, on flat float arrays in the backend's memory. A backend is a folder
 * under kernels/ (kernels/cpu, the readable specification, is always built) and is chosen at run time by name
 * (cav_backend_open; the tools' --device).
 *
 * Conventions, following llm.c: forwards overwrite their outputs; backwards ACCUMULATE (+=) into every
 * gradient they are handed (parameters and inputs), so a caller zeroes gradients once per step and lets
 * several streams (e.g. the three passes through the joint block) add into the same parameter gradient.
 * A NULL gradient pointer means "not needed" and is skipped. The one exception, attention's dqkv, is
 * overwritten. Scratch is the caller's: an op that needs some has a workspace-size query, and attention's
 * saved state is opaque (attention_state_size floats; the CPU keeps the N x N probabilities, a GPU may keep
 * a log-sum-exp per row). Ops that return a scalar (losses) return it on the host.
 *
 * Shapes are given next to each argument: B batch, N tokens, C channels, H heads, K classes, L kept tokens,
 * P patch elements; row-major with the last dimension fastest, as in PyTorch. The float results follow
 * PyTorch's order of operations where it changes rounding noticeably (bias then matmul, scale after QK^T). */
#ifndef CAV_KERNELS_H
#define CAV_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "record.h"

#define CAV_LN_EPS 1e-5f       /* LayerNorm eps (torch default) */
#define CAV_CONTRAST_TAU 0.05f /* contrastive temperature (cav-numerics(7) 2.10) */
#define CAV_DOWNLOAD_SLOTS 2   /* download_async's transfers in flight: a double buffer */

typedef struct cav_backend cav_backend;
struct cav_backend {
    const char *name; /* "cpu", "cuda:0", ... */

    /* ---- memory: bytes; alloc returns zeroed memory (NULL when out of memory) ---- */
    void *(*alloc)(size_t bytes);
    void (*free)(void *p);
    void (*zero)(void *p, size_t bytes);
    void (*copy)(void *dst, const void *src, size_t bytes);      /* within the backend's memory */
    void (*upload)(void *dst, const void *host, size_t bytes);   /* host -> backend */
    void (*download)(void *host, const void *src, size_t bytes); /* backend -> host */
    /* The batch upload, overlapping compute: host_alloc gives host memory the backend copies from fastest
     * (page-locked on a GPU; NULL when out of memory). upload_async copies host -> backend on a copy stream,
     * after the ops already issued are done with dst and before any op issued later runs; host must be
     * host_alloc memory and stay unchanged until upload_wait, which blocks until every upload_async issued
     * has completed. On the CPU: malloc and a plain copy. */
    void *(*host_alloc)(size_t bytes);
    void (*host_free)(void *p);
    void (*upload_async)(void *dst, const void *host, size_t bytes);
    void (*upload_wait)(void);
    /* The block download, overlapping compute (cav-recall's similarity blocks): download_async copies src
     * (backend) -> host (host_alloc memory) on the copy stream once the ops already issued are done with src,
     * as the transfer of one of CAV_DOWNLOAD_SLOTS slots; download_wait(slot) blocks until the slot's last
     * download has completed. Ops issued later do NOT wait for the copy (that is the overlap): until
     * download_wait(slot) returns, host must not be read and src must not be written, so a caller computing
     * the next block writes another buffer. On the CPU the copy is made by download_wait, the latest moment
     * this contract allows: a caller that reads host early, or overwrites src early, goes wrong on the CPU
     * too, where its tests run. */
    void (*download_async)(void *host, const void *src, size_t bytes, int slot);
    void (*download_wait)(int slot);
    /* Blocks until every op issued so far has finished (NULL where ops finish before they return: the CPU).
     * Only the profiler (kernels/profile.c) needs it: the ops' own contracts order them. */
    void (*sync)(void);

    /* ---- dense layers ---- */
    /* out[M,OC] = inp[M,IC] @ w[OC,IC]^T + b[OC] (b may be NULL), as torch.nn.Linear.
     * Backward: dinp[M,IC] += dout @ w; dw[OC,IC] += dout^T @ inp; db[OC] += sum_m dout. */
    void (*linear_forward)(float *out, const float *inp, const float *w, const float *b, int M, int IC,
                           int OC);
    void (*linear_backward)(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                            const float *w, int M, int IC, int OC);
    /* Mixed precision (the tools' --precision bf16). A bf16 value is a uint16_t, the top half of a float.
     * cast_bf16: out[n] = inp rounded to the nearest bf16, ties to even (kernels/cuda/bf16.h, as torch's
     * x.to(torch.bfloat16)). The bf16 Linear takes bf16 operands and computes in fp32, as cuBLASLt with bf16
     * A/B, fp32 C/D and CUBLAS_COMPUTE_32F, and torch.autocast(bfloat16)'s nn.Linear before it rounds its
     * output: a product of two bf16 values is exact in fp32, so the result differs from fp32 arithmetic on
     * the widened operands only by the order of the sums. Outputs and gradients stay fp32.
     * Forward: out[M,OC] = inp[M,IC] @ w[OC,IC]^T, then + b[OC] (b may be NULL) added to each finished
     * dot product. Backward: dinp[M,IC] += dout16 @ w; dw[OC,IC] += dout16^T @ inp; db[OC] += sum_m dout
     * (the column sum of the fp32 gradient dout[M,OC], as linear_backward's; dout16 is dout rounded, and is
     * not read when dinp and dw are both NULL, nor inp when dw is). */
    void (*cast_bf16)(uint16_t *out, const float *inp, size_t n);
    /* out[n] = inp widened to fp32 (exact: the 16 bits on top of a float); the gradient exchange's way back
     * from a bf16 payload (--grad-dtype bf16) */
    void (*widen_bf16)(float *out, const uint16_t *inp, size_t n);
    void (*linear_forward_bf16)(float *out, const uint16_t *inp, const uint16_t *w, const uint16_t *b, int M,
                                int IC, int OC);
    void (*linear_backward_bf16)(float *dinp, float *dw, float *db, const float *dout, const uint16_t *dout16,
                                 const uint16_t *inp, const uint16_t *w, int M, int IC, int OC);
    /* LayerNorm over the last dimension, eps CAV_LN_EPS: out[M,C], mean[M], rstd[M] saved. */
    void (*layernorm_forward)(float *out, float *mean, float *rstd, const float *inp, const float *w,
                              const float *b, int M, int C);
    void (*layernorm_backward)(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                               const float *w, const float *mean, const float *rstd, int M, int C);
    /* The fused forms (one pass over memory where the plain ops take two or three). out16 is the fp32
     * result rounded to bf16 as cast_bf16 rounds: the bf16 Linear's input, kept between the passes in
     * place of the fp32 activation (--precision bf16). Each equals the plain ops it replaces bit for bit.
     * layernorm_forward_bf16: out16[M,C] = bf16(LayerNorm(inp)), mean[M], rstd[M] saved.
     * add_layernorm_forward: sum[M,C] = a + r (sum may be r: in place), then LayerNorm(sum) into out[M,C]
     * (fp32) or out16[M,C] (bf16): exactly one of the two is non-NULL; mean[M], rstd[M] saved. */
    void (*layernorm_forward_bf16)(uint16_t *out16, float *mean, float *rstd, const float *inp,
                                   const float *w, const float *b, int M, int C);
    void (*add_layernorm_forward)(float *sum, float *out, uint16_t *out16, float *mean, float *rstd,
                                  const float *a, const float *r, const float *w, const float *b, int M,
                                  int C);
    /* exact GELU over n values; gelu_forward_bf16: out16[n] = bf16(GELU(inp)) */
    void (*gelu_forward)(float *out, const float *inp, size_t n);
    void (*gelu_forward_bf16)(uint16_t *out16, const float *inp, size_t n);
    void (*gelu_backward)(float *dinp, const float *inp, const float *dout, size_t n);
    /* out[n] = a + b (in place allowed); dst[n] += src */
    void (*add_forward)(float *out, const float *a, const float *b, size_t n);
    void (*accumulate)(float *dst, const float *src, size_t n);
    /* out[n] = (a + b) / 2 (the missing-modality heads' average); backward: da[n] = dout / 2, SET */
    void (*average_forward)(float *out, const float *a, const float *b, size_t n);
    void (*average_backward)(float *da, const float *dout, size_t n);
    /* timm's attention core on qkv[B,N,3C] (rows [q | k | v], heads contiguous): out[B,N,C] =
     * softmax(q k^T (C/H)^-0.5) v, heads side by side; state: attention_state_size(B,H,N) floats, saved for
     * the backward. Backward: dqkv[B,N,3C] SET from dout[B,N,C], qkv, the forward's out[B,N,C] (a fused
     * kernel's D = rowsum(dout * out)) and its state; work: attention_workspace(B,H,N) floats. */
    size_t (*attention_state_size)(int B, int H, int N);
    size_t (*attention_workspace)(int B, int H, int N);
    void (*attention_forward)(float *out, float *state, const float *qkv, int B, int N, int C, int H);
    void (*attention_backward)(float *dqkv, const float *dout, const float *qkv, const float *out,
                               const float *state, float *work, int B, int N, int C, int H);
    /* The bf16 attention (--precision bf16, issue 11): attention_forward/backward's shapes and contract
     * (qkv[B,N,3C] fp32 in, out[B,N,C] fp32 out; backward dqkv[B,N,3C] SET from dout, qkv, the forward's out
     * and its state) with bf16 operands to every product and fp32 sums, as a tensor-core kernel computes it.
     * Per (batch, head), hd = C / H, scale = hd^-0.5, r(x) = x rounded to the nearest bf16, ties to even
     * (kernels/cuda/bf16.h's rounding, cast_bf16's), all else fp32:
     *   forward   S = (r(q) r(k)^T) * scale          the scale on each finished dot product, as timm's
     *             lse_i = log sum_j exp(S_ij)         m_i + log(sum_j exp(S_ij - m_i)), m_i = max_j S_ij
     *             P = exp(S - lse)                    normalised before its rounding
     *             out = r(P) r(v)
     *   backward  P recomputed from the saved lse as above (S the same products)
     *             dV = r(P)^T r(dO)                   dO = dout
     *             dP = r(dO) r(v)^T
     *             D_i = sum_d dout_id out_id          the fp32 values, d in order
     *             dS = P (dP - D) scale               P unrounded; evaluated ((P (dP - D)) scale)
     *             dQ = r(dS) r(k),  dK = r(dS)^T r(q)
     * A product of two bf16 values is exact in fp32, so backends differ only in the order of the fp32 sums
     * (OpenBLAS's on the CPU; tensor-core tiles on a GPU, whose lse is an online softmax's rescaled sum), and
     * where that moves an operand of r() across a rounding boundary, one bf16 ulp of that P or dS
     * (tests/unit/test_cuda_arith.c measures both). state: attention_bf16_state_size(B,H,N) floats
     * (lse[B,H,N] on every backend: nothing N x N); work: attention_bf16_workspace(B,H,N) floats (D[B,H,N]).
     */
    size_t (*attention_bf16_state_size)(int B, int H, int N);
    size_t (*attention_bf16_workspace)(int B, int H, int N);
    void (*attention_forward_bf16)(float *out, float *state, const float *qkv, int B, int N, int C, int H);
    void (*attention_backward_bf16)(float *dqkv, const float *dout, const float *qkv, const float *out,
                                    const float *state, float *work, int B, int N, int C, int H);

    /* ---- token bookkeeping ---- */
    /* Masking: out[B,L,C] = inp[b, idx[b,l], :] for inp[B,N,C]; backward dinp[b, idx[b,l], :] += dout. */
    void (*gather_tokens_forward)(float *out, const float *inp, const int64_t *idx, int B, int N, int L,
                                  int C);
    void (*gather_tokens_backward)(float *dinp, const float *dout, const int64_t *idx, int B, int N, int L,
                                   int C);
    /* The MAE's mask[B,N]: 1 everywhere except 0 at the L kept indices idx[B,L] (the scatter). */
    void (*mask_from_keep)(float *mask, const int64_t *idx, int B, int N, int L);
    /* The decoder's un-shuffle: out[B,N,C] = fill[C] except out[b, idx[b,l]] = src[b, off + l] from
     * src[B,Ns,C]. Backward: dsrc[b, off+l] += dout[b, idx[b,l]], dfill += dout summed over the masked
     * positions. */
    void (*unshuffle_forward)(float *out, const float *src, const int64_t *idx, const float *fill, int B,
                              int N, int L, int Ns, int off, int C);
    void (*unshuffle_backward)(float *dsrc, float *dfill, const float *dout, const int64_t *idx, int B, int N,
                               int L, int Ns, int off, int C);
    /* out[B,N1+N2,C] = cat(a[B,N1,C], b[B,N2,C]) along tokens; backward splits and accumulates. */
    void (*concat_forward)(float *out, const float *a, const float *b, int B, int N1, int N2, int C);
    void (*concat_backward)(float *da, float *db, const float *dout, int B, int N1, int N2, int C);
    /* x[b, off+n] = (x + pos[n]) + mod for n < N inside x[B,Ntot,C]; dpos[N,C] += sum_b dx, dmod[C] += sum
     * dx. */
    void (*add_pos_forward)(float *x, const float *pos, const float *mod, int B, int Ntot, int off, int N,
                            int C);
    void (*add_pos_backward)(float *dpos, float *dmod, const float *dx, int B, int Ntot, int off, int N,
                             int C);
    /* The pooling: out[B,C] = mean over N of inp[B,N,C]; backward dinp += dout / N. */
    void (*mean_tokens_forward)(float *out, const float *inp, int B, int N, int C);
    void (*mean_tokens_backward)(float *dinp, const float *dout, int B, int N, int C);

    /* ---- patches (cav-numerics(7) 2.3; layouts in kernels/cpu/cpu.h) ---- */
    void (*patchify_audio)(float *out, const float *a, int B, int T, int F); /* [B,(F/16)(T/16),256] */
    void (*patchify_video)(float *out, const float *v, int B, int S);        /* MAE target [B,(S/16)^2,768] */
    void (*im2col_video)(float *out, const float *v, int B, int S);          /* conv order [B,(S/16)^2,768] */

    /* ---- losses ---- */
    /* F.normalize: out[B,C] = x / max(|x|, 1e-12), norm[B] saved. */
    void (*l2norm_forward)(float *out, float *norm, const float *inp, int B, int C);
    void (*l2norm_backward)(float *dinp, const float *dout, const float *out, const float *norm, int B,
                            int C);
    /* InfoNCE on normalised a[B,C], v[B,C] (cav-numerics(7) 2.10); returns nce, *acc the accuracy; work:
     * contrastive_workspace(B) doubles. Backward: da, dv += dloss * d nce. */
    size_t (*contrastive_workspace)(int B);
    float (*contrastive_forward)(float *acc, const float *a, const float *v, int B, int C, int bidirect,
                                 double *work);
    void (*contrastive_backward)(float *da, float *dv, float dloss, const float *a, const float *v, int B,
                                 int C, int bidirect, double *work);
    /* norm-pix target in place (cav-numerics(7) 2.9): rows of t[M,P] to (t - mean) / sqrt(var_unbiased +
     * eps) */
    void (*normpix)(float *t, int M, int P, float eps);
    /* masked MSE over M = B*N patches: its two sums (loss = num / den), and its backward with the
     * denominator given (the whole group's mask count when these rows are a part of it) */
    void (*masked_mse_sums)(const float *pred, const float *t, const float *mask, int M, int P, double *num,
                            double *den);
    void (*masked_mse_backward_den)(float *dpred, float dloss, const float *pred, const float *t,
                                    const float *mask, int M, int P, double den);
    float (*masked_mse_forward)(const float *pred, const float *t, const float *mask, int M, int P);
    void (*masked_mse_backward)(float *dpred, float dloss, const float *pred, const float *t,
                                const float *mask, int M, int P);
    /* BCEWithLogits (mean over B*K) and CrossEntropy with probability targets, on logits x[B,K], y[B,K] */
    float (*bce_logits_forward)(const float *x, const float *y, int B, int K);
    void (*bce_logits_backward)(float *dx, float dloss, const float *x, const float *y, int B, int K);
    float (*soft_ce_forward)(const float *x, const float *y, int B, int K);
    void (*soft_ce_backward)(float *dx, float dloss, const float *x, const float *y, int B, int K);

    /* ---- optimiser ---- */
    /* torch.optim.Adam (cav-numerics(7) 3.1, coupled L2) on n parameters, t the step number after
     * increment */
    void (*adam_step)(float *p, const float *grad, float *m, float *v, size_t n, double lr, double beta1,
                      double beta2, double eps, double wd, int t);
    /* 1 when all n values are finite */
    int (*all_finite)(const float *x, size_t n);
};

/* The backend by name: "cpu", or "cuda" / "cuda:N" (device N). NULL with err filled (code 1, a usage error)
 * for an unknown name, or a backend that is not built into this program or has no device here. Backends
 * are static tables: nothing to close. */
cav_backend *cav_backend_open(const char *name, cav_err *err);
/* The CPU backend (always built). */
cav_backend *cav_backend_cpu(void);
/* be's table with every op timed (kernels/profile.c; cav_backend_open's, when CAV_PROFILE is set): a report
 * of the time per op at exit. One backend a process is profiled; another is returned as it is. An op added to
 * the table above needs its line in kernels/profile.c, or it runs untimed. */
cav_backend *cav_backend_profiled(cav_backend *be);

/* The fixed 2-D sin-cos position table (cav-numerics(7) 2.4) for a gh x gw grid, computed in double and
 * rounded to float, in host memory: out[gh*gw, D], token k = i*gw + j, [sin(j w), cos(j w), sin(i w), cos(i
 * w)]. */
void cav_sincos_pos_2d(float *out, int D, int gh, int gw);

#endif
