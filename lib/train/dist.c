/* dist.c: see dist.h. The MPI side of the module: start-up, the host-memory collectives, and the MPI
 * transport of the model-buffer collectives, which dispatch to the NCCL transport (dist_nccl.c) when that
 * one is bound. A sum of x[lo, hi) over ranks is an ordered reduce-scatter: an all-to-all sends each rank
 * the other ranks' values of its own part, which it adds in rank order from 0; an all-reduce then shares
 * the parts (all-gather). Message counts are int in MPI: buffers go in chunks below 2^30 elements. */
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
#ifdef CAV_HAVE_MPI
    MPI_Request req;
#endif
} mpi_op;

struct cav_dist_state {
    const char *transport; /* "none", "mpi", "nccl" */
    cav_nccl *nccl;
    mpi_op *ops;
    int nops, cap;
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
        free(d->st->ops);
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
/* Starts the ordered reduce-scatter of x[lo, hi) (hi - lo below CHUNK) over the parts part[0..world]. */
static int mpi_start(const cav_dist *d, float *x, size_t lo, size_t hi, const size_t *part, int share,
                     cav_err *err) {
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
    o->x = x, o->lo = lo, o->hi = hi, o->share = share;
    o->counts = sc, o->displs = sd;
    o->mine_n = (size_t)sc[d->rank];
    o->mine_lo = lo + (size_t)sd[d->rank];
    if (o->mine_n && !(o->recv = malloc((size_t)W * o->mine_n * sizeof *o->recv))) {
        free(sc);
        return cav_fail(err, 3, "out of memory for the gradient exchange");
    }
    for (int r = 0; r < W; r++) rc[r] = (int)o->mine_n, rd[r] = r * (int)o->mine_n;
    if (MPI_Ialltoallv(x + lo, sc, sd, MPI_FLOAT, o->recv, rc, rd, MPI_FLOAT, MPI_COMM_WORLD, &o->req) !=
        MPI_SUCCESS) {
        free(sc), free(o->recv);
        return cav_fail(err, 3, "MPI_Ialltoallv failed");
    }
    st->nops++;
    return 0;
}

static int mpi_finish(const cav_dist *d, mpi_op *o, cav_err *err) {
    int rc = 0;
    if (MPI_Wait(&o->req, MPI_STATUS_IGNORE) != MPI_SUCCESS) rc = cav_fail(err, 3, "MPI_Wait failed");
    for (size_t i = 0; !rc && i < o->mine_n; i++) {
        float s = 0.0f; /* from 0, as one process's accumulator of its groups' gradients */
        for (int r = 0; r < d->world; r++) s += o->recv[(size_t)r * o->mine_n + i];
        o->x[o->mine_lo + i] = s;
    }
    if (!rc && o->share &&
        MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, o->x + o->lo, o->counts, o->displs, MPI_FLOAT,
                       MPI_COMM_WORLD) != MPI_SUCCESS)
        rc = cav_fail(err, 3, "MPI_Allgatherv failed");
    free(o->counts), free(o->recv);
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
        rc = mpi_start(d, x, o, hi, part, 1, &err) || mpi_wait_all(d, &err);
    }
    free(part);
    if (rc) {
        fprintf(stderr, "%s: rank %d: %s\n", cav_tool(), d->rank, err.msg[0] ? err.msg : "out of memory");
        MPI_Abort(MPI_COMM_WORLD, 3);
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
    if (!(d->st->nccl = cav_nccl_open(d->rank, d->world, bcast_world, err))) return -1;
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

int cav_dist_sum_start(const cav_dist *d, float *x, size_t lo, size_t hi, cav_err *err) {
    if (!d->st || hi <= lo) return 0;
#ifdef CAV_HAVE_NCCL
    if (d->st->nccl) return cav_nccl_sum(d->st->nccl, x, lo, hi, err);
#endif
#ifdef CAV_HAVE_MPI
    size_t *part = malloc((size_t)(d->world + 1) * sizeof *part);
    if (!part) return cav_fail(err, 3, "out of memory for the gradient exchange");
    int rc = 0;
    for (size_t o = lo; !rc && o < hi; o += CHUNK) {
        size_t e = hi - o < CHUNK ? hi : o + CHUNK;
        range_parts(d, o, e, part);
        rc = mpi_start(d, x, o, e, part, 1, err);
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
#ifdef CAV_HAVE_NCCL
    if (d->st->nccl) return cav_nccl_scatter(d->st->nccl, x, lo, hi, part, err);
#endif
#ifdef CAV_HAVE_MPI
    for (size_t o = lo; o < hi; o += CHUNK)
        if (mpi_start(d, x, o, hi - o < CHUNK ? hi : o + CHUNK, part, 0, err)) return -1;
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
    if (d->st->nccl) return cav_nccl_wait(d->st->nccl, err);
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
