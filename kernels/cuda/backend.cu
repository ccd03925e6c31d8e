/* backend.cu: the CUDA backend's table (kernels/kernels.h's cav_backend) over the ops of the .cu files beside
 * it, device memory for its memory, pinned host memory and a copy stream for the batch upload and the block
 * download, and device discovery: cav_backend_cuda(device, err) opens device N (one per process),
 * cav_backend_cuda_open(name, err) parses "cuda" / "cuda:N" for cav_backend_open. Where there is no usable
 * GPU (no driver, no device, N out of range) it answers NULL with "no CUDA device: <reason>", error code 1 (a
 * usage error: the tools exit 1). The attention path is chosen when the device opens, from the environment:
 * CAV_ATTENTION=plain (the default: attention.cu, cuBLAS and the N x N probabilities, the oracle) or fused
 * (flash.cu); cav_backend_cuda_attention sets it on a copy of the table (the tests compare the two). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_ops.h"

cav_cuda_ctx cav_cuda = {-1, NULL, NULL, NULL, 0, {NULL, NULL}, {0, 0}};

/* cuBLASLt's workspace: 32 MiB, NVIDIA's advice for Hopper (4 MiB would do on Ampere) */
#define LT_WORK_BYTES ((size_t)32 << 20)

void cav_cuda_die(const char *call, const char *file, int line, const char *why) {
    fprintf(stderr, "cuda backend: %s failed at %s:%d: %s\n", call, file, line, why);
    exit(3);
}

void *cav_cuda_scratch(int slot, size_t bytes) {
    if (bytes > cav_cuda.scratch_bytes[slot]) {
        size_t want = bytes < ((size_t)1 << 20) ? (size_t)1 << 20 : bytes + bytes / 2;
        CUDA_CHECK(cudaFree(cav_cuda.scratch[slot])); /* synchronises: no op still reads it */
        cav_cuda.scratch[slot] = NULL, cav_cuda.scratch_bytes[slot] = 0;
        CUDA_CHECK(cudaMalloc(&cav_cuda.scratch[slot], want));
        cav_cuda.scratch_bytes[slot] = want;
    }
    return cav_cuda.scratch[slot];
}

/* ---- memory: device memory, the default stream -----------------------------------------------------------
 */

static void *cuda_alloc(size_t bytes) {
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
        cudaGetLastError(); /* out of memory is the caller's to report: clear it */
        return NULL;
    }
    CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, 0));
    return p;
}
static void cuda_free(void *p) {
    CUDA_CHECK(cudaFree(p));
}
static void cuda_zero(void *p, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, 0));
}
static void cuda_copy(void *dst, const void *src, size_t bytes) {
    if (bytes && dst != src) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, 0));
}
static void cuda_upload(void *dst, const void *host, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemcpy(dst, host, bytes, cudaMemcpyHostToDevice));
}
static void cuda_download(void *host, const void *src, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemcpy(host, src, bytes, cudaMemcpyDeviceToHost));
}

/* ---- the batch upload: pinned host memory, a copy stream and two events --------------------------------
 * The compute stream is the default stream; the copy stream does not synchronise with it implicitly
 * (cudaStreamNonBlocking), so both orders are events: the copy waits for the compute issued before it (which
 * may still read dst: the previous step's backward), and the compute issued after it waits for the copy. */
static cudaStream_t copy_stream;
static cudaEvent_t ev_issued, ev_copied;

static void *cuda_host_alloc(size_t bytes) {
    void *p = NULL;
    if (cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocDefault) != cudaSuccess) {
        cudaGetLastError(); /* out of memory is the caller's to report: clear it */
        return NULL;
    }
    return p;
}
static void cuda_host_free(void *p) {
    CUDA_CHECK(cudaFreeHost(p));
}
static void cuda_upload_async(void *dst, const void *host, size_t bytes) {
    if (!bytes) return;
    CUDA_CHECK(cudaEventRecord(ev_issued, 0));
    CUDA_CHECK(cudaStreamWaitEvent(copy_stream, ev_issued, 0));
    CUDA_CHECK(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, copy_stream));
    CUDA_CHECK(cudaEventRecord(ev_copied, copy_stream));
    CUDA_CHECK(cudaStreamWaitEvent(0, ev_copied, 0));
}
static void cuda_upload_wait(void) {
    /* the copy stream runs in order: its last copy done means all are (never recorded: returns at once) */
    CUDA_CHECK(cudaEventSynchronize(ev_copied));
}
/* The block download (kernels.h): on the same copy stream, after the compute issued before it (an event on
 * the compute stream, as for the upload), each slot's completion its own event. Unlike the upload, the
 * compute stream does not wait for it: the next block's product, into another buffer, runs while it copies. */
static cudaEvent_t ev_downloaded[CAV_DOWNLOAD_SLOTS];
static_assert(CAV_DOWNLOAD_SLOTS == 2, "cav_backend_cuda creates one event per slot");
static void cuda_download_async(void *host, const void *src, size_t bytes, int slot) {
    CUDA_CHECK(cudaEventRecord(ev_issued, 0));
    CUDA_CHECK(cudaStreamWaitEvent(copy_stream, ev_issued, 0));
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, copy_stream));
    CUDA_CHECK(cudaEventRecord(ev_downloaded[slot], copy_stream));
}
static void cuda_download_wait(int slot) {
    CUDA_CHECK(cudaEventSynchronize(ev_downloaded[slot])); /* never recorded: returns at once */
}

/* the profiler's wait (kernels.h): the compute stream and the copy stream */
static void cuda_sync(void) {
    CUDA_CHECK(cudaDeviceSynchronize());
}

static cav_backend cuda_be;
static char cuda_name[32];

/* The table's sizing functions (the plain attention's state, the workspaces) into t: host arithmetic, usable
 * without a GPU, so that a model can be sized for the GPU anywhere (cav_model_memory; tests/unit/test_model.c).
 * The plain path's N x N state is the larger: the fused path's sizes can only lower the figure. */
extern "C" void cav_backend_cuda_sizes(cav_backend *t) {
    t->attention_state_size = cav_cuda_attention_state_size;
    t->attention_workspace = cav_cuda_attention_workspace;
    t->contrastive_workspace = cav_cuda_contrastive_workspace;
    t->attention_bf16_state_size = cav_cuda_flash_bf16_state_size;
    t->attention_bf16_workspace = cav_cuda_flash_bf16_workspace;
}

static void fill_table(cav_backend *t) {
    memset(t, 0, sizeof *t);
    t->name = cuda_name;
    t->alloc = cuda_alloc, t->free = cuda_free, t->zero = cuda_zero, t->copy = cuda_copy;
    t->upload = cuda_upload, t->download = cuda_download;
    t->host_alloc = cuda_host_alloc, t->host_free = cuda_host_free;
    t->upload_async = cuda_upload_async, t->upload_wait = cuda_upload_wait;
    t->download_async = cuda_download_async, t->download_wait = cuda_download_wait, t->sync = cuda_sync;
    t->linear_forward = cav_cuda_linear_forward, t->linear_backward = cav_cuda_linear_backward;
    t->cast_bf16 = cav_cuda_cast_bf16, t->widen_bf16 = cav_cuda_widen_bf16;
    t->linear_forward_bf16 = cav_cuda_linear_forward_bf16;
    t->linear_backward_bf16 = cav_cuda_linear_backward_bf16;
    t->layernorm_forward = cav_cuda_layernorm_forward, t->layernorm_backward = cav_cuda_layernorm_backward;
    t->layernorm_forward_bf16 = cav_cuda_layernorm_forward_bf16;
    t->add_layernorm_forward = cav_cuda_add_layernorm_forward;
    t->gelu_forward = cav_cuda_gelu_forward, t->gelu_backward = cav_cuda_gelu_backward;
    t->gelu_forward_bf16 = cav_cuda_gelu_forward_bf16;
    t->add_forward = cav_cuda_add_forward, t->accumulate = cav_cuda_accumulate;
    t->average_forward = cav_cuda_average_forward, t->average_backward = cav_cuda_average_backward;
    cav_backend_cuda_sizes(t); /* the plain attention's; cav_backend_cuda_attention sets the path chosen */
    t->attention_forward_bf16 = cav_cuda_flash_forward_bf16; /* one path: flash_bf16.cu */
    t->attention_backward_bf16 = cav_cuda_flash_backward_bf16;
    t->gather_tokens_forward = cav_cuda_gather_tokens_forward;
    t->gather_tokens_backward = cav_cuda_gather_tokens_backward;
    t->mask_from_keep = cav_cuda_mask_from_keep;
    t->unshuffle_forward = cav_cuda_unshuffle_forward, t->unshuffle_backward = cav_cuda_unshuffle_backward;
    t->concat_forward = cav_cuda_concat_forward, t->concat_backward = cav_cuda_concat_backward;
    t->add_pos_forward = cav_cuda_add_pos_forward, t->add_pos_backward = cav_cuda_add_pos_backward;
    t->mean_tokens_forward = cav_cuda_mean_tokens_forward,
    t->mean_tokens_backward = cav_cuda_mean_tokens_backward;
    t->patchify_audio = cav_cuda_patchify_audio, t->patchify_video = cav_cuda_patchify_video;
    t->im2col_video = cav_cuda_im2col_video;
    t->l2norm_forward = cav_cuda_l2norm_forward, t->l2norm_backward = cav_cuda_l2norm_backward;
    t->contrastive_forward = cav_cuda_contrastive_forward,
    t->contrastive_backward = cav_cuda_contrastive_backward;
    t->normpix = cav_cuda_normpix;
    t->masked_mse_sums = cav_cuda_masked_mse_sums,
    t->masked_mse_backward_den = cav_cuda_masked_mse_backward_den;
    t->masked_mse_forward = cav_cuda_masked_mse_forward,
    t->masked_mse_backward = cav_cuda_masked_mse_backward;
    t->bce_logits_forward = cav_cuda_bce_logits_forward,
    t->bce_logits_backward = cav_cuda_bce_logits_backward;
    t->soft_ce_forward = cav_cuda_soft_ce_forward, t->soft_ce_backward = cav_cuda_soft_ce_backward;
    t->adam_step = cav_cuda_adam_step, t->all_finite = cav_cuda_all_finite;
}

/* The attention ops of table t: fused (flash.cu) when fused, else plain (attention.cu). */
extern "C" void cav_backend_cuda_attention(cav_backend *t, int fused) {
    if (fused) {
        t->attention_state_size = cav_cuda_flash_state_size;
        t->attention_workspace = cav_cuda_flash_workspace;
        t->attention_forward = cav_cuda_flash_forward;
        t->attention_backward = cav_cuda_flash_backward;
    } else {
        t->attention_state_size = cav_cuda_attention_state_size;
        t->attention_workspace = cav_cuda_attention_workspace;
        t->attention_forward = cav_cuda_attention_forward;
        t->attention_backward = cav_cuda_attention_backward;
    }
}

extern "C" cav_backend *cav_backend_cuda(int device, cav_err *err) {
    const char *mode = getenv("CAV_ATTENTION");
    if (mode && *mode && strcmp(mode, "plain") != 0 && strcmp(mode, "fused") != 0) {
        cav_fail(err, 1, "CAV_ATTENTION=%.64s: expected plain or fused", mode);
        return NULL;
    }
    if (cav_cuda.device >= 0) {
        if (device == cav_cuda.device) return &cuda_be;
        cav_fail(err, 1, "cuda:%d: this process already uses cuda:%d (one device per process)", device,
                 cav_cuda.device);
        return NULL;
    }
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        cudaGetLastError();
        cav_fail(err, 1, "cuda:%d: no CUDA device: %s", device, cudaGetErrorString(e));
        return NULL;
    }
    if (device < 0 || device >= count) {
        cav_fail(err, 1, "cuda:%d: no CUDA device: %d present (cuda:0 to cuda:%d)", device, count, count - 1);
        return NULL;
    }
    if ((e = cudaSetDevice(device)) != cudaSuccess || (e = cudaFree(0)) != cudaSuccess) {
        cudaGetLastError();
        cav_fail(err, 3, "cuda:%d: cannot start the device: %s", device, cudaGetErrorString(e));
        return NULL;
    }
    cublasStatus_t s;
    if ((s = cublasCreate(&cav_cuda.blas)) != CUBLAS_STATUS_SUCCESS ||
        (s = cublasSetMathMode(cav_cuda.blas, CUBLAS_DEFAULT_MATH)) != CUBLAS_STATUS_SUCCESS ||
        (s = cublasLtCreate(&cav_cuda.lt)) != CUBLAS_STATUS_SUCCESS) {
        cav_fail(err, 3, "cuda:%d: cuBLAS: %s", device, cublasGetStatusString(s));
        return NULL;
    }
    if ((e = cudaMalloc(&cav_cuda.lt_work, LT_WORK_BYTES)) != cudaSuccess) {
        cudaGetLastError();
        cav_fail(err, 3, "cuda:%d: cuBLASLt workspace: %s", device, cudaGetErrorString(e));
        return NULL;
    }
    cav_cuda.lt_work_bytes = LT_WORK_BYTES;
    if ((e = cudaStreamCreateWithFlags(&copy_stream, cudaStreamNonBlocking)) != cudaSuccess ||
        (e = cudaEventCreateWithFlags(&ev_issued, cudaEventDisableTiming)) != cudaSuccess ||
        (e = cudaEventCreateWithFlags(&ev_copied, cudaEventDisableTiming)) != cudaSuccess ||
        (e = cudaEventCreateWithFlags(&ev_downloaded[0], cudaEventDisableTiming)) != cudaSuccess ||
        (e = cudaEventCreateWithFlags(&ev_downloaded[1], cudaEventDisableTiming)) != cudaSuccess) {
        cudaGetLastError();
        cav_fail(err, 3, "cuda:%d: copy stream: %s", device, cudaGetErrorString(e));
        return NULL;
    }
    cav_cuda.device = device;
    snprintf(cuda_name, sizeof cuda_name, "cuda:%d", device);
    fill_table(&cuda_be);
    cav_backend_cuda_attention(&cuda_be, mode && strcmp(mode, "fused") == 0);
    return &cuda_be;
}

extern "C" cav_backend *cav_backend_cuda_open(const char *name, cav_err *err) {
    int device = 0;
    if (strcmp(name, "cuda") != 0) {
        char *end;
        long n = strtol(name + 5, &end, 10); /* name is "cuda:..." (cav_backend_open checked the prefix) */
        if (name[5] < '0' || name[5] > '9' || *end || n > 1 << 20) {
            cav_fail(err, 1, "--device %s: expected cuda or cuda:N with N a device number", name);
            return NULL;
        }
        device = (int)n;
    }
    cav_backend *be = cav_backend_cuda(device, err);
    if (!be && err) { /* say which --device was asked for */
        char m[sizeof err->msg];
        snprintf(m, sizeof m, "--device %.32s: %.980s", name, err->msg);
        memcpy(err->msg, m, sizeof m);
    }
    return be;
}
