/* kernels.h: the compute ops of CAV-MAE, each with its forward and its backward, on flat float arrays.
 * Shapes are given next to each argument: B batch, N tokens, C channels, H heads, K classes, L kept
 * tokens, P patch elements. Layout is row-major with the last dimension fastest, as in PyTorch.
 *
 * Conventions, following llm.c: forwards overwrite their outputs; backwards ACCUMULATE (+=) into every
 * gradient they are handed (parameters and inputs), so a caller zeroes gradients once per step and lets
 * several streams (e.g. the three passes through the joint block) add into the same parameter gradient.
 * A NULL gradient pointer means "not needed" and is skipped. The exceptions are named (_set).
 * The CPU implementation (kernels/cpu) is the readable specification; the float results follow PyTorch's
 * order of operations where it changes rounding noticeably (bias then matmul, scale after QK^T, ...). */
#ifndef CAV_KERNELS_H
#define CAV_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* Threads: OpenMP only. OpenBLAS is switched to one thread inside the kernels that call it and the products
 * are split over OpenMP threads (row bands; (batch, head) pairs in attention), because the two pools'
 * spinning idle threads starve each other. On a shared, oversubscribed machine OMP_WAIT_POLICY=passive
 * matters as much again (measured here at the tiny config, 2 threads, load ~11: 1.2 s per training step
 * against 6.6-8.6 s with the default policy).
 * Loops over fewer elements than this run on one thread: below it, waking the OpenMP team costs more than
 * the work (and far more on a loaded machine). */
#define CAV_PAR_MIN 32768

/* ---- dense layers ------------------------------------------------------------------------------ */

/* out[M,OC] = inp[M,IC] @ w[OC,IC]^T + b[OC] (b may be NULL), as torch.nn.Linear. */
void cav_linear_forward(float *out, const float *inp, const float *w, const float *b, int M, int IC, int OC);
/* dinp[M,IC] += dout @ w; dw[OC,IC] += dout^T @ inp; db[OC] += sum_m dout. */
void cav_linear_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                         int M, int IC, int OC);

/* LayerNorm over the last dimension, eps 1e-5 (torch default): out[M,C], and mean[M], rstd[M] saved. */
#define CAV_LN_EPS 1e-5f
void cav_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                           const float *b, int M, int C);
void cav_layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                            const float *w, const float *mean, const float *rstd, int M, int C);

/* Exact GELU, 0.5 x (1 + erf(x / sqrt 2)), elementwise over n values. */
void cav_gelu_forward(float *out, const float *inp, size_t n);
void cav_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n);

/* Row softmax: out[M,N] = softmax(inp[M,N]) over the last dimension (in place allowed). */
void cav_softmax_forward(float *out, const float *inp, int M, int N);
/* dinp[M,N] += out * (dout - sum(dout * out)). */
void cav_softmax_backward(float *dinp, const float *dout, const float *out, int M, int N);

/* Elementwise out[n] = a + b (in place allowed); its backward is two accumulations, done by callers. */
void cav_add_forward(float *out, const float *a, const float *b, size_t n);
void cav_accumulate(float *dst, const float *src, size_t n); /* dst += src */

/* Multi-head self-attention core in timm's form. qkv[B,N,3C] is the qkv Linear output, rows [q | k | v]
 * with heads contiguous (C/H channels each). att[B,H,N,N] = softmax((q @ k^T) * (C/H)^-0.5), saved for the
 * backward; out[B,N,C] = (att @ v) with the heads put back side by side (transpose(1,2).reshape). The
 * output projection is a separate cav_linear. */
void cav_attention_forward(float *out, float *att, const float *qkv, int B, int N, int C, int H);
/* dqkv[B,N,3C] is SET (overwritten), not accumulated. Both run the (batch, head) pairs on OpenMP threads
 * with OpenBLAS single-threaded for the duration of the call. */
void cav_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att, int B, int N, int C,
                            int H);

/* ---- token bookkeeping ------------------------------------------------------------------------- */

/* Masking: out[B,L,C] = inp[b, idx[b,l], :] for inp[B,N,C] and kept-token indices idx[B,L] (the order
 * kept). Backward: dinp[b, idx[b,l], :] += dout[b,l,:]. */
void cav_gather_tokens_forward(float *out, const float *inp, const int64_t *idx, int B, int N, int L, int C);
void cav_gather_tokens_backward(float *dinp, const float *dout, const int64_t *idx, int B, int N, int L, int C);

/* The decoder's un-shuffle: out[B,N,C] holds fill[C] (the mask token) everywhere, except out[b, idx[b,l]] =
 * src[b, off + l] for the L visible tokens taken from src[B,Ns,C] starting at token off. Equivalent to
 * gather(cat(x_visible, mask_token x (N-L)), ids_restore). Backward: dsrc[b, off+l] += dout[b, idx[b,l]],
 * dfill += sum of dout over the masked positions. */
void cav_unshuffle_forward(float *out, const float *src, const int64_t *idx, const float *fill, int B, int N,
                           int L, int Ns, int off, int C);
void cav_unshuffle_backward(float *dsrc, float *dfill, const float *dout, const int64_t *idx, int B, int N, int L,
                            int Ns, int off, int C);

/* Concatenation along tokens: out[B,N1+N2,C] = cat(a[B,N1,C], b[B,N2,C]); backward splits and accumulates. */
void cav_concat_forward(float *out, const float *a, const float *b, int B, int N1, int N2, int C);
void cav_concat_backward(float *da, float *db, const float *dout, int B, int N1, int N2, int C);

/* x[b, off+n, :] = (x + pos[n,:]) + mod[:] for n < N inside x[B,Ntot,C] (PyTorch adds the position table
 * first, then the modality embedding). Backward: dpos[N,C] += sum_b dx, dmod[C] += sum_{b,n} dx. */
void cav_add_pos_forward(float *x, const float *pos, const float *mod, int B, int Ntot, int off, int N, int C);
void cav_add_pos_backward(float *dpos, float *dmod, const float *dx, int B, int Ntot, int off, int N, int C);

/* out[B,C] = mean over N of inp[B,N,C]. Backward: dinp += dout / N. */
void cav_mean_tokens_forward(float *out, const float *inp, int B, int N, int C);
void cav_mean_tokens_backward(float *dinp, const float *dout, int B, int N, int C);

/* ---- patches ----------------------------------------------------------------------------------- */

/* Audio fbank a[B,T,F] (time, mel) is seen by the model as the image [B,1,F,T] (SPEC 2.3): a grid of
 * (F/16) frequency rows x (T/16) time columns, token k = f*(T/16) + t, element p*16 + q (p frequency
 * offset, q time offset). This is both the patch-embedding conv's im2col and the MAE target (c = 1).
 * out[B, (F/16)*(T/16), 256]. */
void cav_patchify_audio(float *out, const float *a, int B, int T, int F);
/* Video v[B,3,S,S]: token k = r*(S/16) + c. The MAE target (einsum nchpwq->nhwpqc) orders a patch's
 * elements (p*16+q)*3 + ch; the conv weight [D,3,16,16] wants ch*256 + p*16 + q (im2col). Both
 * out[B, (S/16)^2, 768]. */
void cav_patchify_video(float *out, const float *v, int B, int S);
void cav_im2col_video(float *out, const float *v, int B, int S);

/* The fixed 2-D sin-cos position table (SPEC 2.4) for a gh x gw grid, computed in double and rounded to
 * float: out[gh*gw, D], token k = i*gw + j, [sin(j w), cos(j w), sin(i w), cos(i w)], D/4 each. */
void cav_sincos_pos_2d(float *out, int D, int gh, int gw);

/* ---- losses ------------------------------------------------------------------------------------ */

/* F.normalize(x, dim=-1, eps=1e-12): out[B,C] = x / max(|x|, eps); norm[B] saved. */
void cav_l2norm_forward(float *out, float *norm, const float *inp, int B, int C);
void cav_l2norm_backward(float *dinp, const float *dout, const float *out, const float *norm, int B, int C);

/* Contrastive loss on normalised embeddings a[B,C], v[B,C] (SPEC 2.10): S = a @ v^T / 0.05;
 * single direction nce = -mean_j log_softmax(S, dim=0)[j,j], c_acc = mean_j [argmax_i S[i,j] == j];
 * bidirectional: the mean of that and the same on S^T. Returns nce, writes *acc. */
#define CAV_CONTRAST_TAU 0.05f
float cav_contrastive_forward(float *acc, const float *a, const float *v, int B, int C, int bidirect);
/* da[B,C] += dloss * d nce / da, dv likewise. */
void cav_contrastive_backward(float *da, float *dv, float dloss, const float *a, const float *v, int B, int C,
                              int bidirect);

/* In place norm-pix target (SPEC 2.9): each row of t[M,P] becomes (t - mean) / sqrt(var + 1e-6) with the
 * unbiased variance. */
void cav_normpix(float *t, int M, int P);
/* Masked MSE: loss = sum_m mask[m] * mean_p (pred[m,p] - t[m,p])^2 / sum_m mask[m] over M = B*N patches. */
float cav_masked_mse_forward(const float *pred, const float *t, const float *mask, int M, int P);
/* dpred[M,P] += dloss * d loss / d pred. */
void cav_masked_mse_backward(float *dpred, float dloss, const float *pred, const float *t, const float *mask, int M,
                             int P);
/* The two sums of the masked MSE (loss = *num / *den), for a loss whose rows are spread over processes:
 * the parts' sums add up to the whole's. */
void cav_masked_mse_sums(const float *pred, const float *t, const float *mask, int M, int P, double *num,
                         double *den);
/* cav_masked_mse_backward with the denominator given (the whole's mask count when these M rows are a part). */
void cav_masked_mse_backward_den(float *dpred, float dloss, const float *pred, const float *t, const float *mask,
                                 int M, int P, double den);

/* BCEWithLogitsLoss, mean over B*K: logits x[B,K], targets y[B,K]. */
float cav_bce_logits_forward(const float *x, const float *y, int B, int K);
void cav_bce_logits_backward(float *dx, float dloss, const float *x, const float *y, int B, int K);
/* CrossEntropyLoss with probability targets: -mean_b sum_k y[b,k] log_softmax(x[b])[k]. */
float cav_soft_ce_forward(const float *x, const float *y, int B, int K);
void cav_soft_ce_backward(float *dx, float dloss, const float *x, const float *y, int B, int K);

/* ---- optimiser --------------------------------------------------------------------------------- */

/* One torch.optim.Adam step (SPEC 3.1: coupled L2, g = grad + wd * p) on n parameters; t is the step number
 * after increment (1 for the first step), m and v are the moments. Bias correction as torch 1.13:
 * p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps). */
void cav_adam_step(float *p, const float *grad, float *m, float *v, size_t n, double lr, double beta1,
                   double beta2, double eps, double wd, int t);

#endif
