/*
 * bench_stream.c -- `make bench-stream`: seconds per EM pass over a .moed
 * file streamed from disk (moe_moed_source_open), with 1 and 2 Open MPI
 * processes, against the time it takes just to read the file.
 *
 *   bench_stream --generate FILE ROWS COLS   write FILE (rank 0 only)
 *   mpirun -np R bench_stream FILE [ITERS]   time it (default 4 iterations)
 *
 * The data (seed 20261124): x ~ N(0, I_D); a flat gate over 4 experts with
 * logits 2 N(0,1) weights on x; expert k linear with N(0,1) weights,
 * intercept 3 N(0,1) and sd 0.25 + 0.5 U(0,1). Each process streams its
 * own rows (moe_shard_rows) with 1 thread per process unless OMP_NUM_THREADS
 * says otherwise, and prints, from process 0:
 *   read s     the slowest process's time to pread all of its rows once
 *   pass s     seconds per EM iteration (one pass + M-step), the mean over
 *              ITERS iterations after initialisation
 *   ratio      pass s / read s
 * The page cache is not dropped (that needs root and a quiet machine): with
 * the file cached, "read" is the memory-copy floor; cold, both grow by the
 * disk time, which the pass then overlaps with nothing.
 */
#include "moe.h"
#include "bench_util.h"
#include "../tools/mpi/mpi_sum.h"

#include <math.h>
#include <mpi.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>


#define K_GEN 4
#define CHUNK 65536

static int generate(const char *path, size_t N, size_t D) {
    uint64_t s = 20261124;
    double gw[K_GEN][256], ew[K_GEN][258];
    if (D > 256) return 1;
    for (int k = 0; k < K_GEN; k++) {
        for (size_t c = 0; c < D; c++) gw[k][c] = 2.0 * bench_norm(&s) / sqrt((double)D);
        ew[k][0] = 3.0 * bench_norm(&s);
        for (size_t c = 0; c < D; c++) ew[k][1 + c] = bench_norm(&s);
        ew[k][D + 1] = 0.25 + 0.5 * bench_unif(&s);
    }
    double *x = malloc(CHUNK * D * sizeof(double)), *y = malloc(CHUNK * sizeof(double));
    moe_moed_writer *w = NULL;
    moe_error err;
    if (!x || !y || moe_moed_writer_open(path, D, 1, 0, 0, NULL, &w, &err) != MOE_STATUS_OK) {
        fprintf(stderr, "bench_stream: %s\n", x && y ? err.message : "out of memory");
        return 1;
    }
    for (size_t r0 = 0; r0 < N; r0 += CHUNK) {
        size_t n = N - r0 < CHUNK ? N - r0 : CHUNK;
        for (size_t i = 0; i < n; i++) {
            double *xi = x + i * D, l[K_GEN], mx = -INFINITY, sum = 0.0;
            for (size_t c = 0; c < D; c++) xi[c] = bench_norm(&s);
            for (int k = 0; k < K_GEN; k++) {
                l[k] = 0.0;
                for (size_t c = 0; c < D; c++) l[k] += gw[k][c] * xi[c];
                if (l[k] > mx) mx = l[k];
            }
            for (int k = 0; k < K_GEN; k++) sum += (l[k] = exp(l[k] - mx));
            double u = bench_unif(&s) * sum;
            int k = 0;
            while (k + 1 < K_GEN && u >= l[k]) u -= l[k++];
            y[i] = ew[k][0] + ew[k][D + 1] * bench_norm(&s);
            for (size_t c = 0; c < D; c++) y[i] += ew[k][1 + c] * xi[c];
        }
        moe_dataset d;
        memset(&d, 0, sizeof d);
        d.n_rows = n;
        d.n_cols = D;
        d.x = x;
        d.ld_x = D;
        d.n_outputs = 1;
        d.y = y;
        d.ld_y = 1;
        if (moe_moed_writer_append(w, &d, &err) != MOE_STATUS_OK) {
            fprintf(stderr, "bench_stream: %s\n", err.message);
            return 1;
        }
    }
    int rc = moe_moed_writer_commit(w, &err) == MOE_STATUS_OK ? 0 : 1;
    if (rc) fprintf(stderr, "bench_stream: %s\n", err.message);
    moe_moed_writer_free(w);
    free(x);
    free(y);
    return rc;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank = 0, size = 1, rc = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc >= 5 && strcmp(argv[1], "--generate") == 0) {
        if (rank == 0) rc = generate(argv[2], strtoul(argv[3], NULL, 10), strtoul(argv[4], NULL, 10));
        MPI_Finalize();
        return rc;
    }
    if (argc < 2) {
        if (rank == 0) fprintf(stderr, "usage: bench_stream FILE [ITERS] | --generate FILE ROWS COLS\n");
        MPI_Finalize();
        return 1;
    }
    int iters = argc > 2 ? atoi(argv[2]) : 4;
    moe_moed *h = NULL;
    moe_error err;
    if (moe_moed_open_header(argv[1], &h, &err) != MOE_STATUS_OK) {
        if (rank == 0) fprintf(stderr, "bench_stream: %s\n", err.message);
        MPI_Finalize();
        return 1;
    }
    moe_dataset hd = moe_moed_dataset(h);
    size_t N = hd.n_rows, D = hd.n_cols, b, e;
    moe_moed_close(h);
    moe_shard_rows(N, size, rank, &b, &e);
    moe_source src;
    if (moe_moed_source_open(argv[1], b, e, &src, &err) != MOE_STATUS_OK) {
        fprintf(stderr, "bench_stream: %s\n", err.message);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }

    /* Reading alone: every row of this process once, in the trainer's chunks. */
    size_t cr = 8192;
    double *bx = malloc(cr * D * sizeof(double)), *by = malloc(cr * sizeof(double));
    double *bw = malloc(cr * sizeof(double));
    int32_t *bl = malloc(cr * sizeof(int32_t));
    moe_row_buffers buf = {bx, by, bl, bw, cr};
    double sink = 0.0;
    MPI_Barrier(MPI_COMM_WORLD);
    double t = bench_now();
    for (size_t r0 = 0; r0 < src.n_rows; r0 += cr) {
        size_t n = src.n_rows - r0 < cr ? src.n_rows - r0 : cr;
        moe_rows v;
        if (src.read(src.ctx, r0, n, &buf, &v, &err) != MOE_STATUS_OK) {
            fprintf(stderr, "bench_stream: %s\n", err.message);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        sink += v.x[0] + v.y[n - 1];
    }
    double t_read = bench_now() - t, t_read_max = 0.0;
    MPI_Allreduce(&t_read, &t_read_max, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);

    MPI_Comm comm = MPI_COMM_WORLD;
    moe_reducer red = {mpi_sum_doubles, &comm, rank, size};
    moe_train_params p = moe_train_params_default();
    p.tree.n_levels = 1;
    p.tree.branching[0] = 4;
    p.max_iter = iters;
    p.tol = 0.0;
    p.reducer = size > 1 ? &red : NULL;
    bench_timer tm = {0, 0, 0};
    p.on_iter = bench_timer_iter;
    p.user_data = &tm;
    moe_model *m = NULL;
    t = bench_now();
    if (moe_train_source(&src, &p, &m, &err) != MOE_STATUS_OK) {
        fprintf(stderr, "bench_stream: %s\n", err.message);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    double t_fit = bench_now() - t, pass = tm.n > 0 ? (tm.t_last - tm.t_first) / tm.n : NAN;
    if (rank == 0) {
        double mb = (double)N * (double)(D + 1) * 8.0 / 1e6;
        printf("%d process(es), %zu rows x %zu inputs (%.0f MB of doubles), threads/process %d\n",
               size, N, D, mb, omp_get_max_threads());
        printf("  read s %.3f (%.0f MB/s)   pass s %.3f   ratio %.2f   fit s %.1f   loglik %.6g%s\n",
               t_read_max, mb / t_read_max, pass, pass / t_read_max, t_fit,
               moe_model_report(m).loglik, sink == 12345.678 ? "!" : "");
    }
    moe_model_free(m);
    moe_moed_source_close(&src);
    free(bx);
    free(by);
    free(bw);
    free(bl);
    MPI_Finalize();
    return 0;
}
