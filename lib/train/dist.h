/* dist.h: data parallelism across processes, one module with two transports behind one interface. Ranks are
 * started by a launcher (mpirun, or srun with Open MPI's PMIx); MPI always carries the small host-side
 * exchanges (statistics, error codes, the NCCL unique id, the Adam moments gathered for a checkpoint). The
 * gradient and parameter collectives run on the model's buffers where the backend keeps them: the MPI
 * transport on host memory (backend cpu), the NCCL transport on device memory (backend cuda, one GPU per
 * rank; built where the config step found NCCL and the CUDA backend is built). Without a launcher, or with
 * one process, every call is the identity, so the training code has one path. No MPI or NCCL name appears
 * outside this module.
 *
 * The MPI transport sums in rank order (rank 0's value, plus rank 1's, ...; each element on the rank that
 * owns it, then shared), so a sum does not depend on Open MPI's choice of algorithm, is the same run to run,
 * and equals one process that adds its groups' gradients in that order. NCCL sums in its ring's order (the
 * same for the same ranks, sizes and NCCL version).
 *
 * The gradient collectives (cav_dist_sum_start, cav_dist_scatter_start) carry fp32, or bf16 as chosen
 * (cav_dist_set_grad_dtype; the tools' --grad-dtype), half the bytes on the wire. In bf16 each rank rounds
 * its values to bf16 (the backend's cast_bf16: kernels/cuda/bf16.h's rounding, ties to even) and sends
 * those; the sum is bf16(fp32(b_0) + fp32(b_1) + ... ) over ranks in rank order from 0, each term widened
 * exactly and the additions in fp32 (cav_dist_sum_bf16), rounded once to bf16; that bf16 result is what
 * goes back to the ranks (the all-gather of an all-reduce in bf16 too), and every rank widens it into x.
 * With a reduce-scatter each rank's part is that same value, so ZeRO-1 sees what an all-reduce gives. The
 * MPI transport computes exactly this, whatever Open MPI's algorithm. The NCCL transport runs ncclAllReduce
 * / ncclReduce on ncclBfloat16 payloads: NCCL adds in its ring's (or tree's) order and rounds each partial
 * sum to bf16 on the way (W - 1 roundings for W ranks), so with u = 2^-8 (bf16's unit roundoff) and b_r
 * the ranks' payloads its sum is within (W - 1) u sum_r |b_r| of the exact sum of the payloads, the MPI
 * transport's within u |sum_r b_r| (plus fp32's (W - 1) 2^-24 sum_r |b_r|): the two differ by at most
 * about W u sum_r |b_r|. NCCL's stays the same run to run on the same ranks, sizes and NCCL version while
 * NCCL picks the same algorithm and protocol (NCCL_ALGO / NCCL_PROTO pin them); and over NCCL a reduce to
 * each part's owner (ZeRO-1) adds in another order than the all-reduce, so the two agree only within that
 * rounding (in fp32 too), where over MPI they are equal. The
 * parameter all-gather (cav_dist_gather_parts) always carries fp32: the master weights. */
#ifndef CAV_DIST_H
#define CAV_DIST_H

#include <stddef.h>

#include "kernels.h"
#include "record.h"

typedef struct cav_dist_state cav_dist_state; /* the transport's state and pending collectives (dist.c) */
typedef struct cav_nccl cav_nccl;             /* an NCCL communicator and its stream (dist_nccl.c) */

typedef struct {
    int rank, world;
    int local_rank; /* on this node: the launcher's (see cav_dist_local_rank), else MPI's shared-memory split
                     */
    int mpi;        /* MPI was initialised here (and must be finalised) */
    cav_dist_state *st; /* several ranks: allocated by cav_dist_init; NULL for one process */
} cav_dist;

void cav_dist_init(cav_dist *d, int *argc, char ***argv);
void cav_dist_finalize(cav_dist *d);

/* ---- the device of a rank --------------------------------------------------------------------------- */

/* This process's index on its node from the launcher's variables, first found of CAV_LOCAL_RANK (the
 * user's override), OMPI_COMM_WORLD_LOCAL_RANK (mpirun), SLURM_LOCALID (srun); -1 when none is set or
 * one is not a number >= 0. */
int cav_dist_local_rank(void);
/* The backend name a rank uses for --device: "cuda" with several ranks becomes cuda:L, L the local rank
 * modulo the devices listed in CUDA_VISIBLE_DEVICES when it is set (srun --gpus-per-task=1 leaves each task
 * one device, its cuda:0); an explicit cuda:N, cpu, or one process: unchanged. out: n bytes. */
void cav_dist_device(const char *device, int world, int local_rank, char *out, size_t n);

/* ---- host-memory collectives (MPI whatever the transport) ----------------------------------------- */

/* In-place sums over ranks, in rank order. */
void cav_dist_sum_f32(const cav_dist *d, float *x, size_t n);
void cav_dist_sum_f64(const cav_dist *d, double *x, size_t n);
/* The largest value over ranks (e.g. an error code, so that all ranks stop together). */
int cav_dist_max_int(const cav_dist *d, int v);
/* After what rank 0 alone writes (rc: its exit code, 0 on the others): every rank learns whether it failed,
 * so that all stop together instead of the others waiting for rank 0 in the next collective (rc -1: err's
 * code). Returns the code every rank exits with (0: written); the others' err says rank 0 could not write
 * `what`. */
int cav_dist_rank0_wrote(const cav_dist *d, int rc, const char *what, cav_err *err);
/* Rank 0's x[0, n) <- every rank's part [part[r], part[r+1]) of its own x (part: world + 1 bounds); the
 * other ranks' x is left alone. */
void cav_dist_gather_parts_f32(const cav_dist *d, float *x, const size_t *part);

/* ---- model-buffer collectives (the transport's memory) --------------------------------------------- */

/* Picks the transport for the backend the run uses (name as cav_backend.name: "cpu", "cuda:N"): NCCL for
 * a CUDA backend, MPI otherwise. One process: none. 0 ok; -1 with err (code 1: this build has no NCCL for
 * several GPU ranks); NCCL failing to make its communicator ends the job (cav_dist_abort). */
int cav_dist_bind(const cav_dist *d, const char *backend, cav_err *err);
/* The transport bound: "none" (one process, or not bound yet), "mpi" or "nccl". */
const char *cav_dist_transport(const cav_dist *d);
/* Splits n elements into world parts of near-equal size on 64-element bounds: part[r] .. part[r+1] is
 * rank r's (part: world + 1 entries). */
void cav_dist_parts(const cav_dist *d, size_t n, size_t *part);
/* The gradient collectives' wire type: CAV_DIST_FP32 (the default) or CAV_DIST_BF16 (see above). be: the
 * backend whose memory the gradient buffer is in (its cast_bf16 and widen_bf16 run the conversions, its
 * alloc holds the bf16 payload); n: the buffer's length in elements (the collectives' hi stays <= n).
 * Setting fp32 again frees the payload, before the backend closes. One process: nothing. 0 ok; -1 with
 * err (code 3: out of memory). */
#define CAV_DIST_FP32 0
#define CAV_DIST_BF16 1
int cav_dist_set_grad_dtype(const cav_dist *d, int dtype, const cav_backend *be, size_t n, cav_err *err);
/* The bf16 sum of world payloads: out[i] = bf16(fp32(in[0 n + i]) + fp32(in[1 n + i]) + ...), the fp32 sum
 * in rank order from 0 (a fp32 zero plus rank 0's first), rounded once to nearest, ties to even. in:
 * [world, n]. */
void cav_dist_sum_bf16(uint16_t *out, const uint16_t *in, int world, size_t n);
/* Starts a sum over ranks of x[lo, hi): every rank ends with the sum (all-reduce). Non-blocking: x[lo, hi)
 * must not be touched before cav_dist_wait. */
int cav_dist_sum_start(const cav_dist *d, float *x, size_t lo, size_t hi, cav_err *err);
/* Starts a reduce-scatter of x[lo, hi) over the parts (cav_dist_parts of the whole buffer): each rank ends
 * with the sum over ranks of x[lo, hi) within its own part [part[rank], part[rank+1]); the rest of
 * x[lo, hi) is undefined afterwards. part must live until cav_dist_wait. */
int cav_dist_scatter_start(const cav_dist *d, float *x, size_t lo, size_t hi, const size_t *part,
                           cav_err *err);
/* Ends every collective started, in start order. 0 ok; -1 with err (code 3) on a transport failure. */
int cav_dist_wait(const cav_dist *d, cav_err *err);
/* All-gather: every rank's part [part[r], part[r+1]) of x to every rank: the host may continue at once (on
 * a GPU the compute stream waits for it), the next op that reads x sees the result. 0 ok, -1 with err. */
int cav_dist_gather_parts(const cav_dist *d, float *x, const size_t *part, cav_err *err);
/* A collective that failed on this rank leaves the other ranks waiting inside it, where no agreement can
 * reach them: with several ranks this prints err under the rank's number and ends the whole job
 * (MPI_Abort, err's code); with one it returns. */
void cav_dist_abort(const cav_dist *d, const cav_err *err);

/* ---- contrast groups spread over ranks -------------------------------------------------------------- */

/* A block of `size` consecutive ranks (rank / size names the block; a contrast group spread over ranks)
 * and the collectives within it, on host memory (the contrastive embeddings, a few rows, and MAE sums).
 * The gather goes over the bound transport: MPI, or NCCL through a device buffer on a communicator split
 * from the world's for the block (made at the first gather, which every rank reaches together). One
 * process, or size 1: the identity. */
typedef struct {
    int rank, size;        /* this process's index in its block, and the block's size */
    void *comm;            /* the block's MPI communicator (NULL without one) */
    const cav_dist *d;     /* the world it was split from */
    struct cav_nccl *nccl; /* the block's NCCL communicator, once made */
} cav_dist_block;

/* Splits the world into blocks of size ranks (size must divide the world). 0 ok, -1 MPI failed. */
int cav_dist_block_open(const cav_dist *d, int size, cav_dist_block *b);
void cav_dist_block_close(cav_dist_block *b);
/* all[size * n] <- every block member's mine[n], in block rank order. */
void cav_dist_block_gather_f32(cav_dist_block *b, const float *mine, float *all, size_t n);
/* In-place sums over the block. */
void cav_dist_block_sum_f64(const cav_dist_block *b, double *x, size_t n);

/* ---- the NCCL transport (dist_nccl.c, built with CAV_HAVE_NCCL; called by dist.c only) ------------- */

/* NCCL's communicator over the world on the current CUDA device (the unique id made by rank 0 and sent to
 * all by bcast), and a non-blocking communication stream. NULL with err. */
cav_nccl *cav_nccl_open(int rank, int world, void (*bcast)(void *buf, size_t bytes), cav_err *err);
void cav_nccl_close(cav_nccl *c);
/* The model-buffer collectives above on device pointers, each queued on the communication stream after the
 * work queued on the compute stream so far. 0 ok, -1 with err. */
/* x: float, or uint16_t bf16 payloads when bf16 (ncclBfloat16); lo, hi in elements */
int cav_nccl_sum(cav_nccl *c, void *x, size_t lo, size_t hi, int bf16, cav_err *err);
int cav_nccl_scatter(cav_nccl *c, void *x, size_t lo, size_t hi, const size_t *part, int bf16, cav_err *err);
int cav_nccl_gather(cav_nccl *c, float *x, const size_t *part, cav_err *err);
/* The compute stream waits for every collective queued so far, and the host until they have finished
 * (watching for a failed peer: the communicator is then aborted and -1 returned). */
int cav_nccl_wait(cav_nccl *c, cav_err *err);
/* The communicator of c's ranks with this color, ranked by key (ncclCommSplit: every rank of c calls it
 * together). NULL with err. */
cav_nccl *cav_nccl_split(cav_nccl *c, int color, int key, cav_err *err);
/* all[size * n] <- every member's mine[n], in rank order; host memory, through a device buffer. Blocking. */
int cav_nccl_gather_host(cav_nccl *c, const float *mine, float *all, size_t n, cav_err *err);

#endif
