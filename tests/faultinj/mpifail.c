/* mpifail.c: an LD_PRELOAD library for the exchange-failure test (tests/tools/test_pretrain.py). On the rank
 * MPIFAIL_RANK (of MPI_COMM_WORLD), call number MPIFAIL_AT (1-based) of MPI_Ialltoallv, the collective the
 * MPI transport's gradient exchange starts, returns MPI_ERR_OTHER without starting, as a transport failure on
 * that rank alone would; the other ranks start theirs and wait in it. Every other call goes on to the MPI
 * library (its PMPI_ entry). */
#include <mpi.h>
#include <stdlib.h>

static long calls;

int MPI_Ialltoallv(const void *sendbuf, const int sendcounts[], const int sdispls[], MPI_Datatype sendtype,
                   void *recvbuf, const int recvcounts[], const int rdispls[], MPI_Datatype recvtype,
                   MPI_Comm comm, MPI_Request *request) {
    const char *r = getenv("MPIFAIL_RANK"), *at = getenv("MPIFAIL_AT");
    int rank = -1;
    PMPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (r && at && rank == atoi(r) && ++calls == atol(at)) return MPI_ERR_OTHER;
    return PMPI_Ialltoallv(sendbuf, sendcounts, sdispls, sendtype, recvbuf, recvcounts, rdispls, recvtype,
                           comm, request);
}
