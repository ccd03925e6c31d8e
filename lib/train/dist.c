/* dist.c: see dist.h. The MPI side of the module: start-up, the host-memory collectives, and the MPI
 * transport of the model-buffer collectives, which dispatch to the NCCL transport (dist_nccl.c) when that
 * one is bound. A sum of x[lo, hi) over ranks is an ordered reduce-scatter: an all-to-all sends each rank
 * the other ranks' values of its own part, which it adds in rank order from 0; an all-reduce then shares
 * the parts (all-gather). Message counts are int in MPI: buffers go in chunks below 2^30 elements.
 * With bf16 gradients (dist.h) the payloads are bf16 on both legs: the values cast into a bf16 copy of the
 * buffer (the wire), the received ones widened and added in fp32 in rank order, the sum rounded to bf16 in
 * the wire and shared from there, then widened into x. */
#include "dist.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#ifdef CAV_HAVE_MPI
#include <mpi.h>
#endif

#define CHUNK ((size_t)1 << 30)

/* A started MPI collective: the all-to-all of a reduce-scatter, summed and (for an all-reduce) shared at
 * the wait. */
typedef struct {
    float *x;
    size_t lo, hi;
    size_t mine_lo, mine_n; /* this rank's part of [lo, hi) */
    int share;              /* all-reduce: all-gather the parts at the wait */
    int *counts, *displs;   /* [world] each: every rank's part of [lo, hi), relative to lo */
    float *recv;            /* [world, mine_n]: every rank's values of this rank's part */
    int bf16;               /* the payloads are the wire's bf16 values, recv16 receives */
    uint16_t *recv16;       /* [world, mine_n] */
#ifdef CAV_HAVE_MPI
    MPI_Request req;
#endif
} mpi_op;

/* a part x[lo, hi) of a gradient buffer whose bf16 sum is in the wire */
typedef struct {
    float *x;
    size_t lo, hi;
} widen_range;

struct cav_dist_state {
    const char *transport; /* "none", "mpi", "nccl" */
    cav_nccl *nccl;
    mpi_op *ops;
    int nops, cap;
    /* the gradients' wire type (cav_dist_set_grad_dtype) */
    int dtype;
    const cav_backend *be; /* whose memory the gradients and the wire are in */
    uint16_t *wire;        /* [n] bf16 payloads, element i for the gradient's i (backend memory) */
    size_t nwire;
    widen_range *widen; /* [capw] NCCL: the bf16 results to widen into x at the wait */
    int nwiden, capw;
};

void cav_dist_init(cav_dist *d, int *argc, char ***argv) {
    d->rank = 0;
    d->world = 1;
    d->mpi = 0;
    d->st = NULL;
    d->local_rank = cav_dist_local_rank();
#ifdef CAV_HAVE_MPI
    /* Only when started by a launcher: a plain run must not need an MPI runtime. */
    if (getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK")) {
        int provided;
        MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
        MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
        MPI_Comm_size(MPI_COMM_WORLD, &d->world);
        d->mpi = 1;
        if (d->local_rank < 0) { /* a launcher without a local-rank variable: ranks sharing this node */
            MPI_Comm node;
            MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL, &node);
            MPI_Comm_rank(node, &d->local_rank);
            MPI_Comm_free(&node);
        }
        if (d->world > 1 && (d->st = calloc(1, sizeof *d->st))) d->st->transport = "none";
        if (d->world > 1 && !d->st) MPI_Abort(MPI_COMM_WORLD, 3);
    }
#else
    (void)argc;
    (void)argv;
#endif
    if (d->local_rank < 0) d->local_rank = 0;
}

void cav_dist_finalize(cav_dist *d) {
    if (d->st) {
#ifdef CAV_HAVE_NCCL
        if (d->st->nccl) cav_nccl_close(d->st->nccl);
#endif
        if (d->st->wire) d->st->be->free(d->st->wire);
        free(d->st->ops), free(d->st->widen);
        free(d->st);
        d->st = NULL;
    }
#ifdef CAV_HAVE_MPI
    if (d->mpi) MPI_Finalize();
#endif
    d->mpi = 0;
}

/* ---- the MPI transport ---------------------------------------------------------------------------- */

#ifdef CAV_HAVE_MPI
/* Starts the ordered reduce-scatter of x[lo, hi) (hi - lo below CHUNK) over the parts part[0..world];
 * bf16: in bf16 payloads through the wire. */
static int mpi_start(const cav_dist *d, float *x, size_t lo, size_t hi, const size_t *part, int share,
                     int bf16, cav_err *err) {
    cav_dist_state *st = d->st;
    if (st->nops == st->cap) {
        int cap = st->cap ? 2 * st->cap : 16;
        mpi_op *o = realloc(st->ops, (size_t)cap * sizeof *o);
        if (!o) return cav_fail(err, 3, "out of memory for the gradient exchange");
        st->ops = o, st->cap = cap;
    }
    mpi_op *o = &st->ops[st->nops];
    memset(o, 0, sizeof *o);
    int W = d->world;
    int *sc = malloc(4 * (size_t)W * sizeof *sc);
    if (!sc) return cav_fail(err, 3, "out of memory for the gradient exchange");
    int *sd = sc + W, *rc = sc + 2 * W, *rd = sc + 3 * W;
    for (int s = 0; s < W; s++) {
        size_t a = part[s] > lo ? part[s] : lo, b = part[s + 1] < hi ? part[s + 1] : hi;
        sc[s] = b > a ? (int)(b - a) : 0;
        sd[s] = b > a ? (int)(a - lo) : 0;
    }
    o->x = x, o->lo = lo, o->hi = hi, o->share = share, o->bf16 = bf16;
    o->counts = sc, o->displs = sd;
    o->mine_n = (size_t)sc[d->rank];
    o->mine_lo = lo + (size_t)sd[d->rank];
    if (o->mine_n && !(bf16 ? (void *)(o->recv16 = malloc((size_t)W * o->mine_n * sizeof *o->recv16))
                            : (void *)(o->recv = malloc((size_t)W * o->mine_n * sizeof *o->recv)))) {
        free(sc);
        return cav_fail(err, 3, "out of memory for the gradient exchange");
    }
    for (int r = 0; r < W; r++) rc[r] = (int)o->mine_n, rd[r] = r * (int)o->mine_n;
    int mrc;
    if (bf16) {
        st->be->cast_bf16(st->wire + lo, x + lo, hi - lo);
        mrc = MPI_Ialltoallv(st->wire + lo, sc, sd, MPI_UINT16_T, o->recv16, rc, rd, MPI_UINT16_T,
                             MPI_COMM_WORLD, &o->req);
    } else {
        mrc = MPI_Ialltoallv(x + lo, sc, sd, MPI_FLOAT, o->recv, rc, rd, MPI_FLOAT, MPI_COMM_WORLD, &o->req);
    }
    if (mrc != MPI_SUCCESS) {
        free(sc), free(o->recv), free(o->recv16);
        return cav_fail(err, 3, "MPI_Ialltoallv failed");
    }
    st->nops++;
    return 0;
}

/* the bf16 op's end: this rank's part summed into the wire, shared in bf16 (all-reduce), widened into x */
static int mpi_finish_bf16(const cav_dist *d, mpi_op *o) {
    uint16_t *wire = d->st->wire;
    if (o->mine_n) cav_dist_sum_bf16(wire + o->mine_lo, o->recv16, d->world, o->mine_n);
    if (!o->share) {
        d->st->be->widen_bf16(o->x + o->mine_lo, wire + o->mine_lo, o->mine_n);
        return 0;
    }
    if (MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, wire + o->lo, o->counts, o->displs, MPI_UINT16_T,
                       MPI_COMM_WORLD) != MPI_SUCCESS)
        return -1;
    d->st->be->widen_bf16(o->x + o->lo, wire + o->lo, o->hi - o->lo);
    return 0;
}

static int mpi_finish(const cav_dist *d, mpi_op *o, cav_err *err) {
    int rc = 0;
    if (MPI_Wait(&o->req, MPI_STATUS_IGNORE) != MPI_SUCCESS) rc = cav_fail(err, 3, "MPI_Wait failed");
    if (!rc && o->bf16) {
        if (mpi_finish_bf16(d, o)) rc = cav_fail(err, 3, "MPI_Allgatherv failed");
        free(o->counts), free(o->recv16);
        return rc;
    }
    for (size_t i = 0; !rc && i < o->mine_n; i++) {
        float s = 0.0f; /* from 0, as one process's accumulator of its groups' gradients */
        for (int r = 0; r < d->world; r++) s += o->recv[(size_t)r * o->mine_n + i];
        o->x[o->mine_lo + i] = s;
    }
    if (!rc && o->share &&
        MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, o->x + o->lo, o->counts, o->displs, MPI_FLOAT,
                       MPI_COMM_WORLD) != MPI_SUCCESS)
        rc = cav_fail(err, 3, "MPI_Allgatherv failed");
    free(o->counts), free(o->recv), free(o->recv16);
    return rc;
}

static int mpi_wait_all(const cav_dist *d, cav_err *err) {
    int rc = 0;
    for (int i = 0; i < d->st->nops; i++)
        if (mpi_finish(d, &d->st->ops[i], err)) rc = -1;
    d->st->nops = 0;
    return rc;
}

/* parts of [lo, hi) for an all-reduce: the range split evenly */
static void range_parts(const cav_dist *d, size_t lo, size_t hi, size_t *part) {
    cav_dist_parts(d, hi - lo, part);
    for (int r = 0; r <= d->world; r++) part[r] += lo;
}

#ifdef CAV_HAVE_NCCL
static void bcast_world(void *buf, size_t bytes) {
    MPI_Bcast(buf, (int)bytes, MPI_BYTE, 0, MPI_COMM_WORLD);
}
#endif
#endif

/* ---- host-memory collectives ------------------------------------------------------------------------ */

void cav_dist_sum_f32(const cav_dist *d, float *x, size_t n) {
    if (d->world <= 1 || !d->st) return;
#ifdef CAV_HAVE_MPI
    cav_err err = {0, ""};
    size_t *part = malloc((size_t)(d->world + 1) * sizeof *part);
    int rc = !part;
    for (size_t o = 0; !rc && o < n; o += CHUNK) {
        size_t hi = n - o < CHUNK ? n : o + CHUNK;
        range_parts(d, o, hi, part);
        rc = mpi_start(d, x, o, hi, part, 1, 0, &err) || mpi_wait_all(d, &err);
    }
    free(part);
    if (rc) {
        if (!err.msg[0]) cav_fail(&err, 3, "out of memory");
        cav_dist_abort(d, &err);
    }
#else
    (void)x;
    (void)n;
#endif
}

void cav_dist_sum_f64(const cav_dist *d, double *x, size_t n) {
    if (d->world <= 1) return;
#ifdef CAV_HAVE_MPI
    double *all = malloc((size_t)d->world * n * sizeof *all);
    if (!all) MPI_Abort(MPI_COMM_WORLD, 3);
    MPI_Allgather(x, (int)n, MPI_DOUBLE, all, (int)n, MPI_DOUBLE, MPI_COMM_WORLD);
    for (size_t i = 0; i < n; i++) {
        double s = 0;
        for (int r = 0; r < d->world; r++) s += all[(size_t)r * n + i];
        x[i] = s;
    }
    free(all);
#else
    (void)x;
    (void)n;
#endif
}

int cav_dist_max_int(const cav_dist *d, int v) {
#ifdef CAV_HAVE_MPI
    if (d->world > 1) MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
#else
    (void)d;
#endif
    return v;
}

int cav_dist_rank0_wrote(const cav_dist *d, int rc, const char *what, cav_err *err) {
    int code = cav_dist_max_int(d, rc > 0 ? rc : rc ? (err->code ? err->code : 3) : 0); /* rc -1: err's */
    if (code && !rc) cav_fail(err, code, "rank 0 could not write %s", what);
    return code;
}

void cav_dist_gather_parts_f32(const cav_dist *d, float *x, const size_t *part) {
    if (d->world <= 1) return;
#ifdef CAV_HAVE_MPI
    int W = d->world, *c = malloc(2 * (size_t)W * sizeof *c);
    if (!c) MPI_Abort(MPI_COMM_WORLD, 3);
    for (int r = 0; r < W; r++) c[r] = (int)(part[r + 1] - part[r]), c[W + r] = (int)part[r];
    if (d->rank == 0)
        MPI_Gatherv(MPI_IN_PLACE, 0, MPI_FLOAT, x, c, c + W, MPI_FLOAT, 0, MPI_COMM_WORLD);
    else
        MPI_Gatherv(x + part[d->rank], c[d->rank], MPI_FLOAT, NULL, NULL, NULL, MPI_FLOAT, 0, MPI_COMM_WORLD);
    free(c);
#else
    (void)x;
    (void)part;
#endif
}

/* ---- model-buffer collectives ----------------------------------------------------------------------- */

int cav_dist_bind(const cav_dist *d, const char *backend, cav_err *err) {
    if (!d->st || strcmp(d->st->transport, "none")) return 0; /* one process, or bound already */
    int gpu = !strncmp(backend, "cuda", 4);
    if (!gpu) return d->st->transport = "mpi", 0;
#if defined(CAV_HAVE_NCCL) && defined(CAV_HAVE_MPI)
    /* the ranks that made their part of the communicator wait in ncclCommInitRank for the others: a
     * failure on one rank cannot be agreed on, so it ends the job */
    if (!(d->st->nccl = cav_nccl_open(d->rank, d->world, bcast_world, err)))
        return cav_dist_abort(d, err), -1;
    d->st->transport = "nccl";
    return 0;
#else
    return cav_fail(err, 1,
                    "--device %s with %d processes: this build has no NCCL (multi-GPU training needs it)",
                    backend, d->world);
#endif
}

const char *cav_dist_transport(const cav_dist *d) {
    return d->st ? d->st->transport : "none";
}

int cav_dist_set_grad_dtype(const cav_dist *d, int dtype, const cav_backend *be, size_t n, cav_err *err) {
    cav_dist_state *st = d->st;
    if (!st) return 0;
    if (st->wire) st->be->free(st->wire);
    st->wire = NULL, st->nwire = 0, st->dtype = CAV_DIST_FP32, st->be = be;
    if (dtype != CAV_DIST_BF16) return 0;
    if (!(st->wire = be->alloc((n ? n : 1) * sizeof *st->wire)))
        return cav_fail(err, 3, "out of memory for the bf16 gradient payload");
    st->nwire = n, st->dtype = CAV_DIST_BF16;
    return 0;
}

#ifdef CAV_HAVE_NCCL
/* the bf16 payload of x[lo, hi) (cast on the compute stream, before the collective queued after it), and
 * the part [a, b) to widen back into x at the wait */
static int nccl_bf16(const cav_dist *d, float *x, size_t lo, size_t hi, size_t a, size_t b, cav_err *err) {
    cav_dist_state *st = d->st;
    if (st->nwiden == st->capw) {
        int cap = st->capw ? 2 * st->capw : 16;
        widen_range *w = realloc(st->widen, (size_t)cap * sizeof *w);
        if (!w) return cav_fail(err, 3, "out of memory for the gradient exchange");
        st->widen = w, st->capw = cap;
    }
    st->be->cast_bf16(st->wire + lo, x + lo, hi - lo);
    if (b > a) st->widen[st->nwiden++] = (widen_range){x, a, b};
    return 0;
}
#endif

/* the collectives' hi is within the wire (cav_dist_set_grad_dtype's n) */
static int bf16_on(const cav_dist *d, size_t hi, cav_err *err) {
    if (d->st->dtype != CAV_DIST_BF16) return 0;
    if (hi > d->st->nwire)
        return cav_fail(err, 3, "gradient exchange of element %zu past the bf16 payload's %zu", hi - 1,
                        d->st->nwire);
    return 1;
}

int cav_dist_sum_start(const cav_dist *d, float *x, size_t lo, size_t hi, cav_err *err) {
    if (!d->st || hi <= lo) return 0;
    int bf16 = bf16_on(d, hi, err);
    if (bf16 < 0) return -1;
#ifdef CAV_HAVE_NCCL
    if (d->st->nccl) {
        if (!bf16) return cav_nccl_sum(d->st->nccl, x, lo, hi, 0, err);
        if (nccl_bf16(d, x, lo, hi, lo, hi, err)) return -1;
        return cav_nccl_sum(d->st->nccl, d->st->wire, lo, hi, 1, err);
    }
#endif
#ifdef CAV_HAVE_MPI
    size_t *part = malloc((size_t)(d->world + 1) * sizeof *part);
    if (!part) return cav_fail(err, 3, "out of memory for the gradient exchange");
    int rc = 0;
    for (size_t o = lo; !rc && o < hi; o += CHUNK) {
        size_t e = hi - o < CHUNK ? hi : o + CHUNK;
        range_parts(d, o, e, part);
        rc = mpi_start(d, x, o, e, part, 1, bf16, err);
    }
    free(part);
    return rc;
#else
    (void)x;
    return cav_fail(err, 3, "no MPI in this build");
#endif
}

int cav_dist_scatter_start(const cav_dist *d, float *x, size_t lo, size_t hi, const size_t *part,
                           cav_err *err) {
    if (!d->st || hi <= lo) return 0;
    int bf16 = bf16_on(d, hi, err);
    if (bf16 < 0) return -1;
#ifdef CAV_HAVE_NCCL
    if (d->st->nccl) {
        if (!bf16) return cav_nccl_scatter(d->st->nccl, x, lo, hi, part, 0, err);
        size_t a = part[d->rank] > lo ? part[d->rank] : lo,
               b = part[d->rank + 1] < hi ? part[d->rank + 1] : hi;
        if (nccl_bf16(d, x, lo, hi, a, b, err)) return -1;
        return cav_nccl_scatter(d->st->nccl, d->st->wire, lo, hi, part, 1, err);
    }
#endif
#ifdef CAV_HAVE_MPI
    for (size_t o = lo; o < hi; o += CHUNK)
        if (mpi_start(d, x, o, hi - o < CHUNK ? hi : o + CHUNK, part, 0, bf16, err)) return -1;
    return 0;
#else
    (void)x;
    (void)part;
    return cav_fail(err, 3, "no MPI in this build");
#endif
}

int cav_dist_wait(const cav_dist *d, cav_err *err) {
    if (!d->st) return 0;
#ifdef CAV_HAVE_NCCL
    if (d->st->nccl) { /* the compute stream waits for the collectives, then widens the bf16 results */
        int rc = cav_nccl_wait(d->st->nccl, err);
        for (int i = 0; !rc && i < d->st->nwiden; i++) {
            widen_range *w = &d->st->widen[i];
            d->st->be->widen_bf16(w->x + w->lo, d->st->wire + w->lo, w->hi - w->lo);
        }
        d->st->nwiden = 0;
        return rc;
    }
#endif
#ifdef CAV_HAVE_MPI
    return mpi_wait_all(d, err);
#else
    return (void)err, 0;
#endif
}

int cav_dist_gather_parts(const cav_dist *d, float *x, const size_t *part, cav_err *err) {
    if (!d->st) return 0;
#ifdef CAV_HAVE_NCCL
    if (d->st->nccl) return cav_nccl_gather(d->st->nccl, x, part, err);
#endif
#ifdef CAV_HAVE_MPI
    int W = d->world, *c = malloc(2 * (size_t)W * sizeof *c);
    if (!c) return cav_fail(err, 3, "out of memory for the parameter exchange");
    for (int r = 0; r < W; r++) c[r] = (int)(part[r + 1] - part[r]), c[W + r] = (int)part[r];
    int rc = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, x, c, c + W, MPI_FLOAT, MPI_COMM_WORLD);
    free(c);
    return rc == MPI_SUCCESS ? 0 : cav_fail(err, 3, "MPI_Allgatherv failed");
#else
    (void)x;
    (void)part;
    (void)err;
    return 0;
#endif
}

void cav_dist_abort(const cav_dist *d, const cav_err *err) {
#ifdef CAV_HAVE_MPI
    if (d->world <= 1) return;
    fprintf(stderr, "%s: rank %d: %s\n", cav_tool(), d->rank, err->msg[0] ? err->msg : "failed");
    MPI_Abort(MPI_COMM_WORLD, err->code ? err->code : 3);
#else
    (void)d;
    (void)err;
#endif
}

/* ---- rank blocks -------------------------------------------------------------------------------- */

int cav_dist_block_open(const cav_dist *d, int size, cav_dist_block *b) {
    b->rank = 0;
    b->size = 1;
    b->comm = NULL;
    b->d = d;
    b->nccl = NULL;
    if (size == 1) return 0;
    if (size < 1 || d->world % size || !d->mpi) return -1;
#ifdef CAV_HAVE_MPI
    MPI_Comm *c = malloc(sizeof *c);
    if (!c) return -1;
    if (MPI_Comm_split(MPI_COMM_WORLD, d->rank / size, d->rank % size, c) != MPI_SUCCESS) return free(c), -1;
    b->comm = c;
    b->rank = d->rank % size;
    b->size = size;
    return 0;
#else
    return -1;
#endif
}

void cav_dist_block_close(cav_dist_block *b) {
#ifdef CAV_HAVE_NCCL
    if (b->nccl) cav_nccl_close(b->nccl);
#endif
    b->nccl = NULL;
#ifdef CAV_HAVE_MPI
    if (b->comm) MPI_Comm_free((MPI_Comm *)b->comm);
#endif
    free(b->comm);
    b->comm = NULL;
}

void cav_dist_block_gather_f32(cav_dist_block *b, const float *mine, float *all, size_t n) {
    if (!b->comm) {
        if (all != mine) memcpy(all, mine, n * sizeof *all);
        return;
    }
#if defined(CAV_HAVE_NCCL) && defined(CAV_HAVE_MPI)
    if (b->d->st && b->d->st->nccl) {
        cav_err err = {0, ""};
        if (!b->nccl) b->nccl = cav_nccl_split(b->d->st->nccl, b->d->rank / b->size, b->rank, &err);
        if (!b->nccl || cav_nccl_gather_host(b->nccl, mine, all, n, &err)) {
            fprintf(stderr, "%s: rank %d: %s\n", cav_tool(), b->d->rank, err.msg);
            MPI_Abort(MPI_COMM_WORLD, 3);
        }
        return;
    }
#endif
#ifdef CAV_HAVE_MPI
    /* contrastive embeddings: rows x embed_dim, far below 2^31 */
    MPI_Allgather(mine, (int)n, MPI_FLOAT, all, (int)n, MPI_FLOAT, *(MPI_Comm *)b->comm);
#endif
}

void cav_dist_block_sum_f64(const cav_dist_block *b, double *x, size_t n) {
    if (!b->comm) return;
#ifdef CAV_HAVE_MPI
    MPI_Allreduce(MPI_IN_PLACE, x, (int)n, MPI_DOUBLE, MPI_SUM, *(MPI_Comm *)b->comm);
#else
    (void)x;
    (void)n;
#endif
}
