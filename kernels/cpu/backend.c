/* backend.c: the CPU backend's table (kernels/kernels.h) over the kernels of kernels/cpu/cpu.h, host memory
 * for its memory, and cav_backend_open, which picks a backend by name among the ones built in. */
#include <stdlib.h>
#include <string.h>

#include "cpu.h"

static void *cpu_alloc(size_t bytes) {
    /* 64-byte aligned, as the activation slices are planned */
    void *p = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    if (p) memset(p, 0, bytes);
    return p;
}
static void cpu_free(void *p) {
    free(p);
}
static void cpu_zero(void *p, size_t bytes) {
    if (bytes) memset(p, 0, bytes);
}
static void cpu_copy(void *dst, const void *src, size_t bytes) {
    if (bytes && dst != src) memcpy(dst, src, bytes);
}
static void cpu_upload_wait(void) {}
/* The downloads in flight, one per slot: copied when waited for (kernels.h), so that the CPU, where the tests
 * run, shows a caller that breaks the contract the way a GPU would at random. A backend table is shared by
 * the process, as a device's copy stream is. */
static struct {
    void *host;
    const void *src;
    size_t bytes;
} pending[CAV_DOWNLOAD_SLOTS];
static void cpu_download_wait(int slot) {
    if (pending[slot].bytes) memcpy(pending[slot].host, pending[slot].src, pending[slot].bytes);
    pending[slot].bytes = 0;
}
static void cpu_download_async(void *host, const void *src, size_t bytes, int slot) {
    cpu_download_wait(slot); /* the slot's earlier download first: a copy stream runs them in order */
    pending[slot].host = host, pending[slot].src = src, pending[slot].bytes = bytes;
}
static size_t cpu_attention_state_size(int B, int H, int N) {
    return (size_t)B * H * N * N;
}
static size_t cpu_attention_workspace(int B, int H, int N) {
    (void)B, (void)H;
    return cav_attention_workspace(N);
}
/* the CPU keeps the probabilities: the forward's output is not needed */
static void cpu_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *out,
                                   const float *att, float *work, int B, int N, int C, int H) {
    (void)out;
    cav_attention_backward(dqkv, dout, qkv, att, work, B, N, C, H);
}

static cav_backend cpu = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .free = cpu_free,
    .zero = cpu_zero,
    .copy = cpu_copy,
    .upload = cpu_copy,
    .download = cpu_copy,
    .host_alloc = cpu_alloc,
    .host_free = cpu_free,
    .upload_async = cpu_copy,
    .upload_wait = cpu_upload_wait,
    .download_async = cpu_download_async,
    .download_wait = cpu_download_wait,
    .linear_forward = cav_linear_forward,
    .linear_backward = cav_linear_backward,
    .cast_bf16 = cav_cast_bf16,
    .widen_bf16 = cav_widen_bf16,
    .linear_forward_bf16 = cav_linear_forward_bf16,
    .linear_backward_bf16 = cav_linear_backward_bf16,
    .layernorm_forward = cav_layernorm_forward,
    .layernorm_backward = cav_layernorm_backward,
    .layernorm_forward_bf16 = cav_layernorm_forward_bf16,
    .add_layernorm_forward = cav_add_layernorm_forward,
    .gelu_forward = cav_gelu_forward,
    .gelu_backward = cav_gelu_backward,
    .gelu_forward_bf16 = cav_gelu_forward_bf16,
    .add_forward = cav_add_forward,
    .accumulate = cav_accumulate,
    .average_forward = cav_average_forward,
    .average_backward = cav_average_backward,
    .attention_state_size = cpu_attention_state_size,
    .attention_workspace = cpu_attention_workspace,
    .attention_forward = cav_attention_forward,
    .attention_backward = cpu_attention_backward,
    .attention_bf16_state_size = cav_attention_bf16_state_size,
    .attention_bf16_workspace = cav_attention_bf16_workspace,
    .attention_forward_bf16 = cav_attention_forward_bf16,
    .attention_backward_bf16 = cav_attention_backward_bf16,
    .gather_tokens_forward = cav_gather_tokens_forward,
    .gather_tokens_backward = cav_gather_tokens_backward,
    .mask_from_keep = cav_mask_from_keep,
    .unshuffle_forward = cav_unshuffle_forward,
    .unshuffle_backward = cav_unshuffle_backward,
    .concat_forward = cav_concat_forward,
    .concat_backward = cav_concat_backward,
    .add_pos_forward = cav_add_pos_forward,
    .add_pos_backward = cav_add_pos_backward,
    .mean_tokens_forward = cav_mean_tokens_forward,
    .mean_tokens_backward = cav_mean_tokens_backward,
    .patchify_audio = cav_patchify_audio,
    .patchify_video = cav_patchify_video,
    .im2col_video = cav_im2col_video,
    .l2norm_forward = cav_l2norm_forward,
    .l2norm_backward = cav_l2norm_backward,
    .contrastive_workspace = cav_contrastive_workspace,
    .contrastive_forward = cav_contrastive_forward,
    .contrastive_backward = cav_contrastive_backward,
    .normpix = cav_normpix,
    .masked_mse_sums = cav_masked_mse_sums,
    .masked_mse_backward_den = cav_masked_mse_backward_den,
    .masked_mse_forward = cav_masked_mse_forward,
    .masked_mse_backward = cav_masked_mse_backward,
    .bce_logits_forward = cav_bce_logits_forward,
    .bce_logits_backward = cav_bce_logits_backward,
    .soft_ce_forward = cav_soft_ce_forward,
    .soft_ce_backward = cav_soft_ce_backward,
    .adam_step = cav_adam_step,
    .all_finite = cav_all_finite,
};

cav_backend *cav_backend_cpu(void) {
    return &cpu;
}

/* CAV_PROFILE set (and not 0): the backend opened, every op timed (kernels/profile.c) */
static cav_backend *profiled(cav_backend *be) {
    const char *p = getenv("CAV_PROFILE");
    return be && p && *p && strcmp(p, "0") ? cav_backend_profiled(be) : be;
}

/* A backend folder other than kernels/cpu registers itself by defining CAV_HAVE_<NAME> in the build and
 * providing cav_backend_<name>_open; until kernels/cuda exists, "cuda" answers that it is not built. */
cav_backend *cav_backend_open(const char *name, cav_err *err) {
    if (!strcmp(name, "cpu")) return profiled(&cpu);
    if (!strcmp(name, "cuda") || !strncmp(name, "cuda:", 5)) {
#ifdef CAV_HAVE_CUDA
        cav_backend *cav_backend_cuda_open(const char *name, cav_err *err);
        return profiled(cav_backend_cuda_open(name, err));
#else
        cav_fail(err, 1, "--device %s: this build has no CUDA backend (only cpu)", name);
        return NULL;
#endif
    }
    cav_fail(err, 1, "--device %s: unknown backend (cpu, cuda, cuda:N)", name);
    return NULL;
}
