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
void cav_dist_barrier(const cav_dist *d);

#endif
