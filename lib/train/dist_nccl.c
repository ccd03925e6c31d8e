/* dist_nccl.c: the NCCL transport of dist.h's model-buffer collectives, on device memory, one GPU per rank
 * (built with CAV_HAVE_NCCL: the config step found NCCL and the CUDA backend is built). The CUDA backend
 * queues its work on the legacy default stream (the compute stream); each collective is queued on a
 * non-blocking communication stream after an event recorded on the compute stream, so a bucket's sum runs
 * while the backward goes on with the next buckets; the wait makes the compute stream wait for the
 * communication stream, and the host until it is done, watching for a failed peer. A reduce-scatter over
 * parts of unequal size is a group of ncclReduce calls, one per owner; the all-gather a group of
 * ncclBroadcast calls. The gradient collectives take fp32 or bf16 payloads (--grad-dtype: dist.c casts before
 * and widens after, on the compute stream); the parameter all-gather is fp32. Nothing here can run without a
 * GPU. */
#include "dist.h"

#ifdef CAV_HAVE_NCCL
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>

#include <cuda_runtime_api.h>
#include <nccl.h>

#if NCCL_VERSION_CODE < NCCL_VERSION(2, 18, 0)
#error "the NCCL transport needs NCCL 2.18 or newer (ncclCommSplit); make NCCL= builds without it"
#endif
/* ncclBfloat16, which nccl.h before 2.20 or so declares only where cuda_bf16.h's types exist (C++) */
#define WIRE_BF16 ((ncclDataType_t)9)

struct cav_nccl {
    ncclComm_t comm;
    cudaStream_t stream;       /* communication */
    cudaEvent_t compute, done; /* recorded on the compute stream / the communication stream */
    int rank, world;
    float *stage; /* device buffer of cav_nccl_gather_host */
    size_t nstage;
};

static int nccl_fail(cav_err *err, const char *what, ncclResult_t r) {
    return cav_fail(err, 3, "NCCL: %s: %s", what, ncclGetErrorString(r));
}

static int cuda_fail(cav_err *err, const char *what, cudaError_t e) {
    return cav_fail(err, 3, "CUDA: %s: %s", what, cudaGetErrorString(e));
}

/* frees what of c was made (the communicator is the caller's) */
static void drop(cav_nccl *c) {
    if (c->done) cudaEventDestroy(c->done);
    if (c->compute) cudaEventDestroy(c->compute);
    if (c->stream) cudaStreamDestroy(c->stream);
    cudaFree(c->stage);
    free(c);
}

/* a communicator's stream and events */
static cav_nccl *new_state(int rank, int world, cav_err *err) {
    cav_nccl *c = calloc(1, sizeof *c);
    if (!c) return cav_fail(err, 3, "out of memory"), NULL;
    c->rank = rank, c->world = world;
    cudaError_t e;
    if ((e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess ||
        (e = cudaEventCreateWithFlags(&c->compute, cudaEventDisableTiming)) != cudaSuccess ||
        (e = cudaEventCreateWithFlags(&c->done, cudaEventDisableTiming)) != cudaSuccess)
        return cuda_fail(err, "stream", e), drop(c), NULL;
    return c;
}

cav_nccl *cav_nccl_open(int rank, int world, void (*bcast)(void *buf, size_t bytes), cav_err *err) {
    struct {
        int ok; /* rank 0 got an id: every rank learns it from the broadcast, so none waits in the init */
        ncclUniqueId id;
    } u = {1, {{0}}};
    ncclResult_t r = ncclSuccess;
    if (rank == 0 && (r = ncclGetUniqueId(&u.id)) != ncclSuccess) u.ok = 0;
    bcast(&u, sizeof u);
    if (!u.ok)
        return rank == 0 ? nccl_fail(err, "ncclGetUniqueId", r)
                         : cav_fail(err, 3, "NCCL: rank 0 has no unique id"),
               NULL;
    ncclUniqueId id = u.id;
    cav_nccl *c = new_state(rank, world, err);
    if (!c) return NULL;
    if ((r = ncclCommInitRank(&c->comm, world, id, rank)) != ncclSuccess)
        return nccl_fail(err, "ncclCommInitRank", r), drop(c), NULL;
    return c;
}

cav_nccl *cav_nccl_split(cav_nccl *parent, int color, int key, cav_err *err) {
    cav_nccl *c = new_state(0, 1, err);
    if (!c) return NULL;
    ncclResult_t r = ncclCommSplit(parent->comm, color, key, &c->comm, NULL);
    if (r != ncclSuccess) return nccl_fail(err, "ncclCommSplit", r), drop(c), NULL;
    if ((r = ncclCommUserRank(c->comm, &c->rank)) != ncclSuccess ||
        (r = ncclCommCount(c->comm, &c->world)) != ncclSuccess) {
        nccl_fail(err, "the split communicator's rank and size", r);
        ncclCommDestroy(c->comm);
        return drop(c), NULL;
    }
    return c;
}

int cav_nccl_gather_host(cav_nccl *c, const float *mine, float *all, size_t n, cav_err *err) {
    size_t need = (size_t)(c->world + 1) * n; /* [world, n] gathered, then [n] this rank's */
    cudaError_t e;
    if (need > c->nstage) {
        cudaFree(c->stage);
        c->stage = NULL, c->nstage = 0;
        if ((e = cudaMalloc((void **)&c->stage, need * sizeof *c->stage)) != cudaSuccess)
            return cuda_fail(err, "cudaMalloc", e);
        c->nstage = need;
    }
    float *send = c->stage + (size_t)c->world * n;
    if ((e = cudaMemcpyAsync(send, mine, n * sizeof *mine, cudaMemcpyHostToDevice, c->stream)) != cudaSuccess)
        return cuda_fail(err, "cudaMemcpyAsync", e);
    ncclResult_t r = ncclAllGather(send, c->stage, n, ncclFloat32, c->comm, c->stream);
    if (r != ncclSuccess) return nccl_fail(err, "ncclAllGather", r);
    if ((e = cudaMemcpyAsync(all, c->stage, (size_t)c->world * n * sizeof *all, cudaMemcpyDeviceToHost,
                             c->stream)) != cudaSuccess ||
        (e = cudaStreamSynchronize(c->stream)) != cudaSuccess)
        return cuda_fail(err, "cudaMemcpyAsync", e);
    return 0;
}

void cav_nccl_close(cav_nccl *c) {
    if (!c) return;
    if (c->comm) { /* NULL: aborted after a failure */
        cudaStreamSynchronize(c->stream);
        ncclCommDestroy(c->comm);
    }
    drop(c);
}

static int compute_waits(cav_nccl *c, cav_err *err);

/* the communication stream after the compute stream's work so far */
static int after_compute(cav_nccl *c, cav_err *err) {
    cudaError_t e;
    if ((e = cudaEventRecord(c->compute, cudaStreamLegacy)) != cudaSuccess ||
        (e = cudaStreamWaitEvent(c->stream, c->compute, 0)) != cudaSuccess)
        return cuda_fail(err, "event", e);
    return 0;
}

/* element i of a float or bf16 buffer */
static void *at(void *x, size_t i, int bf16) {
    return (char *)x + i * (bf16 ? sizeof(uint16_t) : sizeof(float));
}

/* bf16: NCCL adds the bf16 payloads in its ring's order (dist.h says what that means for the result) */
int cav_nccl_sum(cav_nccl *c, void *x, size_t lo, size_t hi, int bf16, cav_err *err) {
    if (after_compute(c, err)) return -1;
    ncclResult_t r = ncclAllReduce(at(x, lo, bf16), at(x, lo, bf16), hi - lo, bf16 ? WIRE_BF16 : ncclFloat32,
                                   ncclSum, c->comm, c->stream);
    return r == ncclSuccess ? 0 : nccl_fail(err, "ncclAllReduce", r);
}

int cav_nccl_scatter(cav_nccl *c, void *x, size_t lo, size_t hi, const size_t *part, int bf16, cav_err *err) {
    if (after_compute(c, err)) return -1;
    ncclResult_t r = ncclGroupStart();
    for (int s = 0; r == ncclSuccess && s < c->world; s++) {
        size_t a = part[s] > lo ? part[s] : lo, b = part[s + 1] < hi ? part[s + 1] : hi;
        if (b > a)
            r = ncclReduce(at(x, a, bf16), at(x, a, bf16), b - a, bf16 ? WIRE_BF16 : ncclFloat32, ncclSum, s,
                           c->comm, c->stream);
    }
    ncclResult_t r2 = ncclGroupEnd();
    if (r == ncclSuccess) r = r2;
    return r == ncclSuccess ? 0 : nccl_fail(err, "ncclReduce", r);
}

int cav_nccl_gather(cav_nccl *c, float *x, const size_t *part, cav_err *err) {
    if (after_compute(c, err)) return -1;
    ncclResult_t r = ncclGroupStart();
    for (int s = 0; r == ncclSuccess && s < c->world; s++)
        if (part[s + 1] > part[s])
            r = ncclBroadcast(x + part[s], x + part[s], part[s + 1] - part[s], ncclFloat32, s, c->comm,
                              c->stream);
    ncclResult_t r2 = ncclGroupEnd();
    if (r == ncclSuccess) r = r2;
    if (r != ncclSuccess) return nccl_fail(err, "ncclBroadcast", r);
    return compute_waits(c, err);
}

/* NCCL reports a peer's failure asynchronously; a communicator that failed is aborted, so that nothing
 * waits on it afterwards (its teardown included) */
static int async_error(cav_nccl *c, cav_err *err) {
    ncclResult_t async, r = ncclCommGetAsyncError(c->comm, &async);
    if (r == ncclSuccess && (async == ncclSuccess || async == ncclInProgress)) return 0;
    nccl_fail(err, r != ncclSuccess ? "ncclCommGetAsyncError" : "a collective", r != ncclSuccess ? r : async);
    ncclCommAbort(c->comm);
    c->comm = NULL;
    return -1;
}

/* the compute stream after the communication stream's work so far */
static int compute_waits(cav_nccl *c, cav_err *err) {
    cudaError_t e;
    if ((e = cudaEventRecord(c->done, c->stream)) != cudaSuccess ||
        (e = cudaStreamWaitEvent(cudaStreamLegacy, c->done, 0)) != cudaSuccess)
        return cuda_fail(err, "event", e);
    return async_error(c, err);
}

/* The host waits too, polling NCCL's error state: a peer that died leaves the collectives unfinished for
 * ever, and a host blocked in a CUDA call (the next host copy) would never see it. The step reads the
 * gradients on the host right after (their finite check), so this wait costs no overlap. */
int cav_nccl_wait(cav_nccl *c, cav_err *err) {
    if (compute_waits(c, err)) return -1;
    for (;;) {
        cudaError_t e = cudaEventQuery(c->done);
        if (e == cudaSuccess) return 0;
        if (e != cudaErrorNotReady) return cuda_fail(err, "cudaEventQuery", e);
        if (async_error(c, err)) return -1;
        sched_yield();
    }
}
#else
typedef int cav_dist_nccl_not_built; /* ISO C wants a translation unit to declare something */
#endif
