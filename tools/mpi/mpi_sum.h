/*
 * mpi_sum.h -- the reducer's sum over MPI processes, shared by moe-mpi
 * and bench/bench_stream.c: buf[0..n) <- its sum over the processes of
 * the communicator *ctx (an MPI_Comm), in place, by MPI_Allreduce in
 * chunks that MPI's int counts can hold. Returns 0, or -1 on failure.
 */
#ifndef MOE_MPI_SUM_H
#define MOE_MPI_SUM_H

#include <limits.h>
#include <mpi.h>
#include <stddef.h>

static inline int mpi_sum_doubles(double *buf, size_t n, void *ctx) {
    MPI_Comm comm = *(MPI_Comm *)ctx;
    while (n > 0) {
        int c = n > (size_t)(INT_MAX / 2) ? INT_MAX / 2 : (int)n;
        if (MPI_Allreduce(MPI_IN_PLACE, buf, c, MPI_DOUBLE, MPI_SUM, comm) != MPI_SUCCESS) return -1;
        buf += c;
        n -= (size_t)c;
    }
    return 0;
}

#endif
