/* cpu.h: the CPU backend's kernels, the readable specification of every op of kernels/kernels.h's
 * cav_backend (kernels/cpu/backend.c fills the table from them; tests/unit/test_kernels.c checks them
 * against finite differences and other backends against them). Shapes are given next to each argument:
 * B batch, N tokens, C channels, H heads, K classes, L kept tokens, P patch elements. Pointers are host
 * memory. Conventions as kernels.h: forwards overwrite, backwards accumulate, NULL gradients are skipped;
 * the one backward that overwrites its gradient (attention's dqkv) says so.
 *
 * Threads: OpenMP only. OpenBLAS is switched to one thread inside the kernels that call it and the products
 * are split over OpenMP threads (row bands; (batch, head) pairs in attention), because the two pools'
 * spinning idle threads starve each other. On a shared, oversubscribed machine OMP_WAIT_POLICY=passive
 * matters as much again (measured here at the tiny config, 2 threads, load ~11: 1.2 s per training step
 * against 6.6-8.6 s with the default policy). */
#ifndef CAV_CPU_H
#define CAV_CPU_H

#include <stddef.h>
#include <stdint.h>

#include "kernels.h"

/* Loops over fewer elements than this run on one thread: below it, waking the OpenMP team costs more than
 * the work (and far more on a loaded machine). */
#define CAV_PAR_MIN 32768

/* ---- dense layers ------------------------------------------------------------------------------ */

/* out[M,OC] = inp[M,IC] @ w[OC,IC]^T + b[OC] (b may be NULL), as torch.nn.Linear. */
void cav_linear_forward(float *out, const float *inp, const float *w, const float *b, int M, int IC, int OC);
/* dinp[M,IC] += dout @ w; dw[OC,IC] += dout^T @ inp; db[OC] += sum_m dout. */
void cav_linear_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                         const float *w, int M, int IC, int OC);
/* bf16 mixed precision (kernels.h): the cast, and the Linear on bf16 operands with fp32 results */
void cav_cast_bf16(uint16_t *out, const float *inp, size_t n);
void cav_widen_bf16(float *out, const uint16_t *inp, size_t n);
void cav_linear_forward_bf16(float *out, const uint16_t *inp, const uint16_t *w, const uint16_t *b, int M,
                             int IC, int OC);
void cav_linear_backward_bf16(float *dinp, float *dw, float *db, const float *dout, const uint16_t *dout16,
                              const uint16_t *inp, const uint16_t *w, int M, int IC, int OC);

/* LayerNorm over the last dimension, eps 1e-5 (torch default): out[M,C], and mean[M], rstd[M] saved. */
void cav_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                           const float *b, int M, int C);
void cav_layernorm_forward_bf16(uint16_t *out16, float *mean, float *rstd, const float *inp, const float *w,
                                const float *b, int M, int C);
void cav_add_layernorm_forward(float *sum, float *out, uint16_t *out16, float *mean, float *rstd,
                               const float *a, const float *r, const float *w, const float *b, int M, int C);
void cav_layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                            const float *w, const float *mean, const float *rstd, int M, int C);

/* Exact GELU, 0.5 x (1 + erf(x / sqrt 2)), elementwise over n values. */
void cav_gelu_forward(float *out, const float *inp, size_t n);
void cav_gelu_forward_bf16(uint16_t *out16, const float *inp, size_t n);
void cav_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n);

/* Row softmax: out[M,N] = softmax(inp[M,N]) over the last dimension (in place allowed). */
void cav_softmax_forward(float *out, const float *inp, int M, int N);
/* dinp[M,N] += out * (dout - sum(dout * out)). */
void cav_softmax_backward(float *dinp, const float *dout, const float *out, int M, int N);

/* Elementwise out[n] = a + b (in place allowed); its backward is two accumulations, done by callers. */
void cav_add_forward(float *out, const float *a, const float *b, size_t n);
void cav_accumulate(float *dst, const float *src, size_t n); /* dst += src */
/* out[n] = (a + b) / 2; backward da[n] = dout / 2 (SET). */
void cav_average_forward(float *out, const float *a, const float *b, size_t n);
void cav_average_backward(float *da, const float *dout, size_t n);

/* Multi-head self-attention core in timm's form. qkv[B,N,3C] is the qkv Linear output, rows [q | k | v]
 * with heads contiguous (C/H channels each). att[B,H,N,N] = softmax((q @ k^T) * (C/H)^-0.5), saved for the
 * backward; out[B,N,C] = (att @ v) with the heads put back side by side (transpose(1,2).reshape). The
 * output projection is a separate cav_linear. */
void cav_attention_forward(float *out, float *att, const float *qkv, int B, int N, int C, int H);
/* dqkv[B,N,3C] is SET (overwritten), not accumulated. Both run the (batch, head) pairs on OpenMP threads
 * with OpenBLAS single-threaded for the duration of the call. work: cav_attention_workspace(N) floats. */
size_t cav_attention_workspace(int N);
void cav_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att, float *work,
                            int B, int N, int C, int H);
/* The bf16 attention (kernels.h's attention_*_bf16: its rounding points are the contract): state lse[B,H,N]
 * (cav_attention_bf16_state_size), work D[B,H,N] (cav_attention_bf16_workspace); dqkv SET. The (batch, head)
 * pairs run on OpenMP threads, each with its own N x N scratch. */
size_t cav_attention_bf16_state_size(int B, int H, int N);
size_t cav_attention_bf16_workspace(int B, int H, int N);
void cav_attention_forward_bf16(float *out, float *lse, const float *qkv, int B, int N, int C, int H);
void cav_attention_backward_bf16(float *dqkv, const float *dout, const float *qkv, const float *out,
                                 const float *lse, float *D, int B, int N, int C, int H);

/* ---- token bookkeeping ------------------------------------------------------------------------- */

/* Masking: out[B,L,C] = inp[b, idx[b,l], :] for inp[B,N,C] and kept-token indices idx[B,L] (the order
 * kept). Backward: dinp[b, idx[b,l], :] += dout[b,l,:]. */
void cav_gather_tokens_forward(float *out, const float *inp, const int64_t *idx, int B, int N, int L, int C);
void cav_gather_tokens_backward(float *dinp, const float *dout, const int64_t *idx, int B, int N, int L,
                                int C);
/* mask[B,N] = 1 except 0 at the kept indices idx[B,L]. */
void cav_mask_from_keep(float *mask, const int64_t *idx, int B, int N, int L);

/* The decoder's un-shuffle: out[B,N,C] holds fill[C] (the mask token) everywhere, except out[b, idx[b,l]] =
 * src[b, off + l] for the L visible tokens taken from src[B,Ns,C] starting at token off. Equivalent to
 * gather(cat(x_visible, mask_token x (N-L)), ids_restore). Backward: dsrc[b, off+l] += dout[b, idx[b,l]],
 * dfill += sum of dout over the masked positions. */
void cav_unshuffle_forward(float *out, const float *src, const int64_t *idx, const float *fill, int B, int N,
                           int L, int Ns, int off, int C);
void cav_unshuffle_backward(float *dsrc, float *dfill, const float *dout, const int64_t *idx, int B, int N,
                            int L, int Ns, int off, int C);

/* Concatenation along tokens: out[B,N1+N2,C] = cat(a[B,N1,C], b[B,N2,C]); backward splits and accumulates. */
void cav_concat_forward(float *out, const float *a, const float *b, int B, int N1, int N2, int C);
void cav_concat_backward(float *da, float *db, const float *dout, int B, int N1, int N2, int C);

/* x[b, off+n, :] = (x + pos[n,:]) + mod[:] for n < N inside x[B,Ntot,C] (PyTorch adds the position table
 * first, then the modality embedding). Backward: dpos[N,C] += sum_b dx, dmod[C] += sum_{b,n} dx. */
void cav_add_pos_forward(float *x, const float *pos, const float *mod, int B, int Ntot, int off, int N,
                         int C);
void cav_add_pos_backward(float *dpos, float *dmod, const float *dx, int B, int Ntot, int off, int N, int C);

/* out[B,C] = mean over N of inp[B,N,C]. Backward: dinp += dout / N. */
void cav_mean_tokens_forward(float *out, const float *inp, int B, int N, int C);
void cav_mean_tokens_backward(float *dinp, const float *dout, int B, int N, int C);

/* ---- patches ----------------------------------------------------------------------------------- */

/* Audio fbank a[B,T,F] (time, mel) is seen by the model as the image [B,1,F,T] (cav-numerics(7) 2.3): a grid
 * of (F/16) frequency rows x (T/16) time columns, token k = f*(T/16) + t, element p*16 + q (p frequency
 * offset, q time offset). This is both the patch-embedding conv's im2col and the MAE target (c = 1).
 * out[B, (F/16)*(T/16), 256]. */
void cav_patchify_audio(float *out, const float *a, int B, int T, int F);
/* Video v[B,3,S,S]: token k = r*(S/16) + c. The MAE target (einsum nchpwq->nhwpqc) orders a patch's
 * elements (p*16+q)*3 + ch; the conv weight [D,3,16,16] wants ch*256 + p*16 + q (im2col). Both
 * out[B, (S/16)^2, 768]. */
void cav_patchify_video(float *out, const float *v, int B, int S);
void cav_im2col_video(float *out, const float *v, int B, int S);

/* ---- losses ------------------------------------------------------------------------------------ */

/* F.normalize(x, dim=-1, eps=1e-12): out[B,C] = x / max(|x|, eps); norm[B] saved. */
void cav_l2norm_forward(float *out, float *norm, const float *inp, int B, int C);
void cav_l2norm_backward(float *dinp, const float *dout, const float *out, const float *norm, int B, int C);

/* Contrastive loss on normalised embeddings a[B,C], v[B,C] (cav-numerics(7) 2.10): S = a @ v^T / 0.05;
 * single direction nce = -mean_j log_softmax(S, dim=0)[j,j], c_acc = mean_j [argmax_i S[i,j] == j];
 * bidirectional: the mean of that and the same on S^T. Returns nce, writes *acc. */
/* work: cav_contrastive_workspace(B) doubles. */
size_t cav_contrastive_workspace(int B);
float cav_contrastive_forward(float *acc, const float *a, const float *v, int B, int C, int bidirect,
                              double *work);
/* da[B,C] += dloss * d nce / da, dv likewise. */
void cav_contrastive_backward(float *da, float *dv, float dloss, const float *a, const float *v, int B, int C,
                              int bidirect, double *work);

/* In place norm-pix target (cav-numerics(7) 2.9): each row of t[M,P] becomes (t - mean) / sqrt(var + eps)
 * with the unbiased variance (the reference's eps is 1e-6); float arithmetic as the reference's, NaN for P =
 * 1 as torch.var. */
void cav_normpix(float *t, int M, int P, float eps);
/* Masked MSE: loss = sum_m mask[m] * mean_p (pred[m,p] - t[m,p])^2 / sum_m mask[m] over M = B*N patches. */
float cav_masked_mse_forward(const float *pred, const float *t, const float *mask, int M, int P);
/* dpred[M,P] += dloss * d loss / d pred. */
void cav_masked_mse_backward(float *dpred, float dloss, const float *pred, const float *t, const float *mask,
                             int M, int P);
/* The two sums of the masked MSE (loss = *num / *den), for a loss whose rows are spread over processes:
 * the parts' sums add up to the whole's. */
void cav_masked_mse_sums(const float *pred, const float *t, const float *mask, int M, int P, double *num,
                         double *den);
/* cav_masked_mse_backward with the denominator given (the whole's mask count when these M rows are a part).
 */
void cav_masked_mse_backward_den(float *dpred, float dloss, const float *pred, const float *t,
                                 const float *mask, int M, int P, double den);

/* BCEWithLogitsLoss, mean over B*K: logits x[B,K], targets y[B,K]. */
float cav_bce_logits_forward(const float *x, const float *y, int B, int K);
void cav_bce_logits_backward(float *dx, float dloss, const float *x, const float *y, int B, int K);
/* CrossEntropyLoss with probability targets: -mean_b sum_k y[b,k] log_softmax(x[b])[k]. */
float cav_soft_ce_forward(const float *x, const float *y, int B, int K);
void cav_soft_ce_backward(float *dx, float dloss, const float *x, const float *y, int B, int K);

/* ---- optimiser --------------------------------------------------------------------------------- */

/* One torch.optim.Adam step (cav-numerics(7) 3.1: coupled L2, g = grad + wd * p) on n parameters; t is the
 * step number after increment (1 for the first step), m and v are the moments. Bias correction as torch 1.13:
 * p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps). */
void cav_adam_step(float *p, const float *grad, float *m, float *v, size_t n, double lr, double beta1,
                   double beta2, double eps, double wd, int t);
/* 1 when all n values are finite. */
int cav_all_finite(const float *x, size_t n);

#endif
