/* adam.cu: torch.optim.Adam's step on the GPU (cav-numerics(7) 3.1, coupled L2), mirroring cav_adam_step of
 * kernels/cpu/loss.c: one kernel over all n parameters (the model keeps them in one buffer), the scalars
 * formed on the host in double and rounded to float exactly as the CPU does, and the same float operations
 * in the same order per element. The backend is compiled with -fmad=false and IEEE sqrtf and division, so
 * no multiply-add is contracted and each parameter's new value has the CPU's bits. Also the finiteness
 * check of the gradients. */
#include "cuda_ops.h"

static __global__ void adam_kernel(float *p, const float *grad, float *m, float *v, size_t n, float step,
                                   float bc2s, float c1, float c2, float b1, float b2, float eps, float wd) {
    CAV_FOR_EACH(i, n) {
        float g = grad[i] + wd * p[i];
        float mi = m[i] * b1 + c1 * g;
        float vi = v[i] * b2 + c2 * g * g;
        float denom = sqrtf(vi) / bc2s + eps;
        m[i] = mi, v[i] = vi;
        p[i] = p[i] + step * mi / denom;
    }
}

void cav_cuda_adam_step(float *p, const float *grad, float *m, float *v, size_t n, double lr, double beta1,
                        double beta2, double eps, double wd, int t) {
    if (!n) return;
    double bc1 = 1.0 - pow(beta1, t), bc2 = 1.0 - pow(beta2, t);
    adam_kernel<<<cav_grid(n, 256), 256>>>(p, grad, m, v, n, (float)(-(lr / bc1)), (float)sqrt(bc2),
                                           (float)(1.0 - beta1), (float)(1.0 - beta2), (float)beta1,
                                           (float)beta2, (float)eps, (float)wd);
    LAUNCHED();
}

/* bad = 1 where any value is not finite: every writer stores the same 1, so the race changes no bits */
static __global__ void finite_kernel(int *bad, const float *x, size_t n) {
    CAV_FOR_EACH(i, n) if (!isfinite(x[i])) *bad = 1;
}
int cav_cuda_all_finite(const float *x, size_t n) {
    if (!n) return 1;
    int bad = 0, *dbad = (int *)cav_cuda_scratch(1, sizeof bad);
    CUDA_CHECK(cudaMemsetAsync(dbad, 0, sizeof bad, 0));
    finite_kernel<<<cav_grid(n, 256), 256>>>(dbad, x, n);
    LAUNCHED();
    CUDA_CHECK(cudaMemcpy(&bad, dbad, sizeof bad, cudaMemcpyDeviceToHost));
    return !bad;
}
