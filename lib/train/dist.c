/* dist.c: see dist.h. Sums of large buffers go in chunks below 2^31 elements (MPI counts are int). */
#include "dist.h"

#include <stdlib.h>
#include <string.h>

#ifdef CAV_HAVE_MPI
#include <mpi.h>
#endif

void cav_dist_init(cav_dist *d, int *argc, char ***argv) {
    d->rank = 0;
    d->world = 1;
    d->mpi = 0;
#ifdef CAV_HAVE_MPI
    /* Only when started by a launcher: a plain run must not need an MPI runtime. */
    if (getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK")) {
        int provided;
        MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
        MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
        MPI_Comm_size(MPI_COMM_WORLD, &d->world);
        d->mpi = 1;
    }
#else
    (void)argc;
    (void)argv;
#endif
}

void cav_dist_finalize(cav_dist *d) {
#ifdef CAV_HAVE_MPI
    if (d->mpi) MPI_Finalize();
#endif
    d->mpi = 0;
}

#define CHUNK ((size_t)1 << 30)

void cav_dist_sum_f32(const cav_dist *d, float *x, size_t n) {
    if (d->world <= 1) return;
#ifdef CAV_HAVE_MPI
    for (size_t o = 0; o < n; o += CHUNK)
        MPI_Allreduce(MPI_IN_PLACE, x + o, (int)(n - o < CHUNK ? n - o : CHUNK), MPI_FLOAT, MPI_SUM,
                      MPI_COMM_WORLD);
#else
    (void)x;
    (void)n;
#endif
}

void cav_dist_sum_f64(const cav_dist *d, double *x, size_t n) {
    if (d->world <= 1) return;
#ifdef CAV_HAVE_MPI
    MPI_Allreduce(MPI_IN_PLACE, x, (int)n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
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

int cav_dist_block_open(const cav_dist *d, int size, cav_dist_block *b) {
    b->rank = 0;
    b->size = 1;
    b->comm = NULL;
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
#ifdef CAV_HAVE_MPI
    if (b->comm) MPI_Comm_free((MPI_Comm *)b->comm);
#endif
    free(b->comm);
    b->comm = NULL;
}

void cav_dist_block_gather_f32(const cav_dist_block *b, const float *mine, float *all, size_t n) {
    if (!b->comm) {
        if (all != mine) memcpy(all, mine, n * sizeof *all);
        return;
    }
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
