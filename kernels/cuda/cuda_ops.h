/* cuda_ops.h: what the CUDA backend's files share (CUDA C++, included only by the .cu files of kernels/cuda):
 * the process's one device context (cuBLAS and cuBLASLt handles, their workspace, a scratch buffer for the
 * column sums' partials), the error checks, the block reductions in the order of reduce.h, and the
 * declarations of each family's ops (kernels.h's contracts; names mirror kernels/cpu's cav_* with
 * cav_cuda_*). Every op runs on the default stream, so the order of calls is the order of execution and the
 * copies to the host synchronise. A failing CUDA or cuBLAS call inside an op is a resource or internal
 * failure the op cannot report (the table's ops return nothing): it prints the call and the reason and exits
 * with status 3. */
#ifndef CAV_CUDA_OPS_H
#define CAV_CUDA_OPS_H

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

extern "C" {
#include "kernels.h"
}
#include "reduce.h"

struct cav_cuda_ctx {
    int device;
    cublasHandle_t blas;
    cublasLtHandle_t lt;
    void *lt_work; /* cuBLASLt's workspace (split-K counters and partials) */
    size_t lt_work_bytes;
    void *scratch[2]; /* cav_cuda_scratch's slots, grown on demand */
    size_t scratch_bytes[2];
};
extern cav_cuda_ctx cav_cuda;

[[noreturn]] void cav_cuda_die(const char *call, const char *file, int line, const char *why);
#define CUDA_CHECK(x)                                                                                        \
    do {                                                                                                     \
        cudaError_t e_ = (x);                                                                                \
        if (e_ != cudaSuccess) cav_cuda_die(#x, __FILE__, __LINE__, cudaGetErrorString(e_));                 \
    } while (0)
#define CUBLAS_CHECK(x)                                                                                      \
    do {                                                                                                     \
        cublasStatus_t s_ = (x);                                                                             \
        if (s_ != CUBLAS_STATUS_SUCCESS) cav_cuda_die(#x, __FILE__, __LINE__, cublasGetStatusString(s_));    \
    } while (0)
/* after a kernel launch: a bad configuration shows here, a fault in the kernel at the next synchronisation */
#define LAUNCHED() CUDA_CHECK(cudaGetLastError())

/* Device scratch of at least bytes in one of two slots (0: the column sums' partials and per-row loss
 * values; 1: what an op keeps while it calls a column sum, and the few doubles a loss returns), valid until
 * the next request of that slot; ops run in order on one stream, so an op may reuse its slot freely. */
void *cav_cuda_scratch(int slot, size_t bytes);

static inline unsigned cav_grid(size_t n, unsigned threads) {
    size_t b = (n + threads - 1) / threads;
    return (unsigned)(b < 65535u * 16u ? (b ? b : 1) : 65535u * 16u); /* grid-stride loops cover the rest */
}

/* a grid-stride loop over n elements */
#define CAV_FOR_EACH(i, n)                                                                                   \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (size_t)(n);                          \
         i += (size_t)gridDim.x * blockDim.x)

/* Block reductions over CAV_RD_T threads in reduce.h's tree order (STEP: its sum or max step); every thread
 * gets the result. sh holds CAV_RD_T values. */
template <typename T, void (*STEP)(T *, int, int)> static __device__ inline T cav_block_reduce(T v, T *sh) {
    int l = threadIdx.x;
    sh[l] = v;
    __syncthreads();
    for (int s = CAV_RD_T / 2; s > 0; s >>= 1) {
        STEP(sh, l, s);
        __syncthreads();
    }
    T r = sh[0];
    __syncthreads();
    return r;
}
static __device__ inline double cav_block_sum(double v, double *sh) {
    return cav_block_reduce<double, cav_rd_step>(v, sh);
}
static __device__ inline float cav_block_sum_f(float v, float *sh) {
    return cav_block_reduce<float, cav_rd_step_f>(v, sh);
}
static __device__ inline float cav_block_max(float v, float *sh) {
    return cav_block_reduce<float, cav_rd_step_max>(v, sh);
}

/* Column sums in reduce.h's chunk order, added (+=, float) into out[C]: of x's rows (cav_col_row's n, ntot,
 * off; rows with keep[r] == 0 left out, keep may be NULL), and LayerNorm's dw = sum dy * xhat. */
void cav_cuda_colsum(float *out, const float *x, const float *keep, int rows, int C, int n, int ntot,
                     int off);
void cav_cuda_colsum_ln(float *dw, const float *dy, const float *x, const float *mean, const float *rstd,
                        int rows, int C);

/* ---- dense.cu ---- */
void cav_cuda_linear_forward(float *out, const float *inp, const float *w, const float *b, int M, int IC,
                             int OC);
void cav_cuda_linear_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                              const float *w, int M, int IC, int OC);
void cav_cuda_cast_bf16(uint16_t *out, const float *inp, size_t n);
void cav_cuda_widen_bf16(float *out, const uint16_t *inp, size_t n);
void cav_cuda_linear_forward_bf16(float *out, const uint16_t *inp, const uint16_t *w, const uint16_t *b,
                                  int M, int IC, int OC);
void cav_cuda_linear_backward_bf16(float *dinp, float *dw, float *db, const float *dout,
                                   const uint16_t *dout16, const uint16_t *inp, const uint16_t *w, int M,
                                   int IC, int OC);
void cav_cuda_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                                const float *b, int M, int C);
void cav_cuda_layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                                 const float *w, const float *mean, const float *rstd, int M, int C);
void cav_cuda_layernorm_forward_bf16(uint16_t *out16, float *mean, float *rstd, const float *inp,
                                     const float *w, const float *b, int M, int C);
void cav_cuda_add_layernorm_forward(float *sum, float *out, uint16_t *out16, float *mean, float *rstd,
                                    const float *a, const float *r, const float *w, const float *b, int M,
                                    int C);
void cav_cuda_gelu_forward(float *out, const float *inp, size_t n);
void cav_cuda_gelu_forward_bf16(uint16_t *out16, const float *inp, size_t n);
void cav_cuda_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n);
void cav_cuda_add_forward(float *out, const float *a, const float *b, size_t n);
void cav_cuda_accumulate(float *dst, const float *src, size_t n);
void cav_cuda_average_forward(float *out, const float *a, const float *b, size_t n);
void cav_cuda_average_backward(float *da, const float *dout, size_t n);

/* ---- attention.cu ---- */
size_t cav_cuda_attention_state_size(int B, int H, int N);
size_t cav_cuda_attention_workspace(int B, int H, int N);
void cav_cuda_attention_forward(float *out, float *state, const float *qkv, int B, int N, int C, int H);
void cav_cuda_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *out,
                                 const float *state, float *work, int B, int N, int C, int H);

/* ---- flash.cu: the fused path (state lse[B,H,N], work D[B,H,N]; head dims 32 and 64) ---- */
size_t cav_cuda_flash_state_size(int B, int H, int N);
size_t cav_cuda_flash_workspace(int B, int H, int N);
void cav_cuda_flash_forward(float *out, float *lse, const float *qkv, int B, int N, int C, int H);
void cav_cuda_flash_backward(float *dqkv, const float *dout, const float *qkv, const float *out,
                             const float *lse, float *D, int B, int N, int C, int H);
/* D[B,H,N] = rowsum(dout * out) per head, d in order (the fused backwards' first step, fp32 and bf16) */
void cav_cuda_attention_rowdot(float *D, const float *dout, const float *out, int B, int N, int C, int H);

/* ---- flash_bf16.cu: the bf16 attention, tensor cores (state lse[B,H,N], work D[B,H,N]; head dims <= 64) */
size_t cav_cuda_flash_bf16_state_size(int B, int H, int N);
size_t cav_cuda_flash_bf16_workspace(int B, int H, int N);
void cav_cuda_flash_forward_bf16(float *out, float *lse, const float *qkv, int B, int N, int C, int H);
void cav_cuda_flash_backward_bf16(float *dqkv, const float *dout, const float *qkv, const float *out,
                                  const float *lse, float *D, int B, int N, int C, int H);

/* ---- tokens.cu ---- */
void cav_cuda_gather_tokens_forward(float *out, const float *inp, const int64_t *idx, int B, int N, int L,
                                    int C);
void cav_cuda_gather_tokens_backward(float *dinp, const float *dout, const int64_t *idx, int B, int N, int L,
                                     int C);
void cav_cuda_mask_from_keep(float *mask, const int64_t *idx, int B, int N, int L);
void cav_cuda_unshuffle_forward(float *out, const float *src, const int64_t *idx, const float *fill, int B,
                                int N, int L, int Ns, int off, int C);
void cav_cuda_unshuffle_backward(float *dsrc, float *dfill, const float *dout, const int64_t *idx, int B,
                                 int N, int L, int Ns, int off, int C);
void cav_cuda_concat_forward(float *out, const float *a, const float *b, int B, int N1, int N2, int C);
void cav_cuda_concat_backward(float *da, float *db, const float *dout, int B, int N1, int N2, int C);
void cav_cuda_add_pos_forward(float *x, const float *pos, const float *mod, int B, int Ntot, int off, int N,
                              int C);
void cav_cuda_add_pos_backward(float *dpos, float *dmod, const float *dx, int B, int Ntot, int off, int N,
                               int C);
void cav_cuda_mean_tokens_forward(float *out, const float *inp, int B, int N, int C);
void cav_cuda_mean_tokens_backward(float *dinp, const float *dout, int B, int N, int C);
void cav_cuda_patchify_audio(float *out, const float *a, int B, int T, int F);
void cav_cuda_patchify_video(float *out, const float *v, int B, int S);
void cav_cuda_im2col_video(float *out, const float *v, int B, int S);

/* ---- loss.cu ---- */
void cav_cuda_l2norm_forward(float *out, float *norm, const float *inp, int B, int C);
void cav_cuda_l2norm_backward(float *dinp, const float *dout, const float *out, const float *norm, int B,
                              int C);
size_t cav_cuda_contrastive_workspace(int B);
float cav_cuda_contrastive_forward(float *acc, const float *a, const float *v, int B, int C, int bidirect,
                                   double *work);
void cav_cuda_contrastive_backward(float *da, float *dv, float dloss, const float *a, const float *v, int B,
                                   int C, int bidirect, double *work);
void cav_cuda_normpix(float *t, int M, int P, float eps);
void cav_cuda_masked_mse_sums(const float *pred, const float *t, const float *mask, int M, int P, double *num,
                              double *den);
void cav_cuda_masked_mse_backward_den(float *dpred, float dloss, const float *pred, const float *t,
                                      const float *mask, int M, int P, double den);
float cav_cuda_masked_mse_forward(const float *pred, const float *t, const float *mask, int M, int P);
void cav_cuda_masked_mse_backward(float *dpred, float dloss, const float *pred, const float *t,
                                  const float *mask, int M, int P);
float cav_cuda_bce_logits_forward(const float *x, const float *y, int B, int K);
void cav_cuda_bce_logits_backward(float *dx, float dloss, const float *x, const float *y, int B, int K);
float cav_cuda_soft_ce_forward(const float *x, const float *y, int B, int K);
void cav_cuda_soft_ce_backward(float *dx, float dloss, const float *x, const float *y, int B, int K);

/* ---- adam.cu ---- */
void cav_cuda_adam_step(float *p, const float *grad, float *m, float *v, size_t n, double lr, double beta1,
                        double beta2, double eps, double wd, int t);
int cav_cuda_all_finite(const float *x, size_t n);

#endif
