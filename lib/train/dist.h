/* dist.h: data parallelism across processes. With Open MPI (built with CAV_HAVE_MPI and started by
 * mpirun/srun), ranks exchange gradients and metrics with MPI_Allreduce; without it, or with one process,
 * every call is the identity, so the training code has one path. */
#ifndef CAV_DIST_H
#define CAV_DIST_H

#include <stddef.h>

typedef struct {
    int rank, world;
    int mpi; /* MPI was initialised here (and must be finalised) */
} cav_dist;

void cav_dist_init(cav_dist *d, int *argc, char ***argv);
void cav_dist_finalize(cav_dist *d);
/* In-place sums over ranks. */
void cav_dist_sum_f32(const cav_dist *d, float *x, size_t n);
void cav_dist_sum_f64(const cav_dist *d, double *x, size_t n);
/* The largest value over ranks (e.g. an error code, so that all ranks stop together). */
int cav_dist_max_int(const cav_dist *d, int v);

/* A block of `size` consecutive ranks (rank / size names the block; a contrast group spread over ranks)
 * and the collectives within it. One process, or size 1: the identity. */
typedef struct {
    int rank, size; /* this process's index in its block, and the block's size */
    void *comm;     /* the block's MPI communicator (NULL without one) */
} cav_dist_block;

/* Splits the world into blocks of size ranks (size must divide the world). 0 ok, -1 MPI failed. */
int cav_dist_block_open(const cav_dist *d, int size, cav_dist_block *b);
void cav_dist_block_close(cav_dist_block *b);
/* all[size * n] <- every block member's mine[n], in block rank order. */
void cav_dist_block_gather_f32(const cav_dist_block *b, const float *mine, float *all, size_t n);
/* In-place sums over the block. */
void cav_dist_block_sum_f64(const cav_dist_block *b, double *x, size_t n);

#endif
