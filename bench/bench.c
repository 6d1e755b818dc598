/*
 * bench.c -- `make bench`: how fast EM runs against what the machine can do.
 *
 * For each case (N rows, D inputs, tree) the data come from a known mixture
 * of experts (generator below, seed 20261124 + case index): x ~ N(0, I_D),
 * every gate's logits 2.0 * N(0,1) weights on x, every expert a linear map
 * with N(0,1) weights, intercept 3 N(0,1) and sd 0.25 + 0.5 U(0,1) -- the
 * shape of ../shared/data/gen_synth.py. Each case runs in a child process
 * so its peak resident memory is its own, and prints:
 *   s/iter      seconds per EM iteration (mean over the run)
 *   iters       EM iterations (to convergence at tol 1e-6, or the cap)
 *   fit s       total training time (initialisation included)
 *   GF/s        floating-point rate of the EM pass (flops counted below)
 *   peak GF/s   the machine's best OpenBLAS rate on the shapes of the
 *               pass's dominant work, the expert Gram matrices: DGEMM of a
 *               group of experts' scaled rows (the shape the pass used
 *               before gram.c) or one expert's DSYRK, on all threads
 *   bound s     max(flops / peak, bytes of the data / measured bandwidth)
 *   ratio       s/iter / bound (1 = as fast as the hardware allows)
 *   pred rows/s rows per second of moe_model_predict_mean
 *   train MB    peak resident memory of the case's process when training
 *               ends (data generation included, prediction not) minus the
 *               process's own at start (program, libraries), beside
 *   data MB     the size of the data (x and y as doubles)
 * plus a 1-vs-2-thread comparison at N = 1e6.
 *
 * Flops per row counted for the pass, the work it executes (multiply-add
 * = 2): gate logits 2 G gd, expert means 2 K P ed, expert Gram matrices
 * K q(q+1) with q = ed+P (their upper triangles, gram.c; before gram.c the
 * pass ran one GEMM per expert group, 2 K q^2, and this count was that),
 * gate gradients per gate 2 (b-1) gd (their Gram matrices are sums of the
 * experts', estep.c: a few flops per slab, not per row; gd(gd+1) a row
 * before) and, on the Hessian's sample of rows only, n(n+1) + (b-1) gd (gd+1) with
 * n = (b-1) gd for a full Newton Hessian, or (b-1) gd (gd+1) for the
 * block-diagonal one of gates with n above the Newton limit.
 */
#undef _POSIX_C_SOURCE
#define _GNU_SOURCE
#include "moe.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NEWTON_MAX_PARAMS 160         /* as src/moe_impl.h */
#define HESSIAN_SAMPLE_ROWS (32 * 256) /* MOE_HESSIAN_SAMPLE_BLOCKS blocks */

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

typedef struct gen {
    uint64_t s;
} gen;
static uint64_t gnext(gen *g) {
    uint64_t z = (g->s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static double gunif(gen *g) { return ((double)(gnext(g) >> 11) + 0.5) * 0x1.0p-53; }
static double gnorm(gen *g) {
    return sqrt(-2 * log(gunif(g))) * cos(6.283185307179586 * gunif(g));
}

/* Data from a known HME of the given shape. */
static void generate(size_t n, size_t D, const moe_tree_shape *t, uint64_t seed, double *x,
                     double *y) {
    gen g = {seed};
    size_t K = moe_tree_shape_n_leaves(t), G = moe_tree_shape_n_gates(t);
    size_t rows = 0;
    for (size_t l = 0, w = 1; l < t->n_levels; l++) {
        rows += w * t->branching[l];
        w *= t->branching[l];
    }
    double *V = malloc(rows * (D + 1) * sizeof *V), *W = malloc(K * (D + 1) * sizeof *W);
    double *s = malloc(K * sizeof *s);
    for (size_t j = 0; j < rows * (D + 1); j++) V[j] = (j % (D + 1) == 0 ? 0.5 : 2.0) * gnorm(&g);
    for (size_t k = 0; k < K; k++) {
        W[k * (D + 1)] = 3 * gnorm(&g);
        for (size_t j = 1; j <= D; j++) W[k * (D + 1) + j] = gnorm(&g);
        s[k] = 0.25 + 0.5 * gunif(&g);
    }
    (void)G;
    for (size_t i = 0; i < n; i++) {
        double *xi = x + i * D;
        for (size_t j = 0; j < D; j++) xi[j] = gnorm(&g);
        /* descend the tree */
        size_t q = 0, base = 0, width = 1;
        for (size_t l = 0; l < t->n_levels; l++) {
            size_t b = t->branching[l];
            const double *v = V + (base + q * b) * (D + 1);
            double lg[64], mx = -INFINITY, tot = 0;
            for (size_t c = 0; c < b; c++) {
                lg[c] = v[c * (D + 1)];
                for (size_t j = 0; j < D; j++) lg[c] += v[c * (D + 1) + 1 + j] * xi[j];
                if (lg[c] > mx) mx = lg[c];
            }
            for (size_t c = 0; c < b; c++) tot += (lg[c] = exp(lg[c] - mx));
            double u = gunif(&g) * tot;
            size_t c = 0;
            while (c + 1 < b && u >= lg[c]) u -= lg[c++];
            base += width * b;
            width *= b;
            q = q * b + c;
        }
        const double *w = W + q * (D + 1);
        double m = w[0];
        for (size_t j = 0; j < D; j++) m += w[1 + j] * xi[j];
        y[i] = m + s[q] * gnorm(&g);
    }
    free(V);
    free(W);
    free(s);
}

static double pass_flops(size_t n_rows, size_t D, const moe_tree_shape *t) {
    size_t K = moe_tree_shape_n_leaves(t), ed = D + 1, gd = D + 1, P = 1;
    /* Hessians are accumulated on a sample of HESSIAN_SAMPLE_ROWS rows. */
    double hs = (double)HESSIAN_SAMPLE_ROWS / (double)n_rows;
    if (hs > 1.0) hs = 1.0;
    double f = 2.0 * (double)(K * P * ed) + (double)(K * (ed + P) * (ed + P + 1));
    for (size_t l = 0, w = 1; l < t->n_levels; l++) {
        size_t b = t->branching[l], n = (b - 1) * gd;
        double per = 2.0 * (double)(b * gd) + 2.0 * (double)((b - 1) * gd);
        if (n <= NEWTON_MAX_PARAMS)
            per += hs * ((double)(n * (n + 1)) + (double)((b - 1) * gd * (gd + 1)));
        else
            per += hs * (double)((b - 1) * gd * (gd + 1));
        f += (double)w * per;
        w *= b;
    }
    return f;
}

/* The machine: OpenBLAS on the shapes of the pass's dominant work, the
 * expert Gram matrices of a block of nb = 256 rows with q = D + 2: DGEMM of
 * a group of experts, (g q x 256) times (256 x q) with g q about 512, and
 * one expert's DSYRK, (q x 256) times its transpose; one independent call
 * per thread as a pass would make them. The larger rate. */
static double blas_rate(size_t D, size_t K, int threads) {
    size_t q = D + 2, nb = 256, g = q >= 512 ? 1 : 512 / q;
    if (g > K) g = K;
    size_t m = g * q;
    double best = 0;
    for (int syrk = 0; syrk < 2; syrk++)
        for (int rep = 0; rep < 3; rep++) {
            double fl1 = syrk ? (double)(q * (q + 1) * nb) : 2.0 * (double)(m * q * nb);
            int iters = (int)(4e9 / fl1) + 1;
            double t0 = now();
#pragma omp parallel num_threads(threads)
            {
                double *a = malloc(nb * m * sizeof *a), *u = malloc(nb * q * sizeof *u);
                double *c = calloc(m * q, sizeof *c);
                for (size_t j = 0; j < nb * m; j++) a[j] = 1e-3 * (double)(j % 97);
                for (size_t j = 0; j < nb * q; j++) u[j] = 1e-3 * (double)(j % 89);
                for (int it = 0; it < iters; it++)
                    if (syrk)
                        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)q, (int)nb, 1.0, u,
                                    (int)q, 1.0, c, (int)q);
                    else
                        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)m, (int)q,
                                    (int)nb, 1.0, a, (int)m, u, (int)q, 1.0, c, (int)q);
                free(a);
                free(u);
                free(c);
            }
            double t = now() - t0;
            double fl = (double)threads * iters * fl1;
            if (fl / t > best) best = fl / t;
        }
    return best;
}

static double bandwidth(int threads) {
    size_t n = (size_t)1 << 26; /* 512 MB */
    double *a = malloc(n * sizeof *a), best = 0;
#pragma omp parallel for num_threads(threads)
    for (size_t i = 0; i < n; i++) a[i] = (double)(i & 7);
    for (int rep = 0; rep < 3; rep++) {
        double s = 0, t0 = now();
#pragma omp parallel for reduction(+ : s) num_threads(threads)
        for (size_t i = 0; i < n; i++) s += a[i];
        double t = now() - t0;
        if (s < 0) printf("?");
        if ((double)n * 8 / t > best) best = (double)n * 8 / t;
    }
    free(a);
    return best;
}

typedef struct result {
    double sec_iter, fit_s, gfs, pred_rate, loglik, train_rss_mb;
    int iters, converged;
} result;

static int run_case(size_t n, size_t D, const char *tree, int threads, int max_iter,
                    uint64_t seed, result *r) {
    moe_tree_shape t;
    moe_tree_shape_parse(tree, &t, NULL);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double base_mb = (double)ru.ru_maxrss * 1024.0 / 1e6;
    double *x = malloc(n * D * sizeof *x), *y = malloc(n * sizeof *y);
    if (!x || !y) return -1;
    generate(n, D, &t, seed, x, y);
    moe_dataset d = {n, D, x, D, 1, y, 1, 0, NULL, NULL};
    moe_train_params p = moe_train_params_default();
    p.tree = t;
    p.n_threads = threads;
    p.max_iter = max_iter;
    p.tol = 1e-6;
    p.seed = 1;
    moe_model *m = NULL;
    moe_error err;
    double t0 = now();
    if (moe_train(&d, &p, &m, &err) != MOE_STATUS_OK) {
        fprintf(stderr, "train: %s\n", err.message);
        return -1;
    }
    r->fit_s = now() - t0;
    moe_fit_report rep = moe_model_report(m);
    r->iters = rep.iterations;
    getrusage(RUSAGE_SELF, &ru);
    r->train_rss_mb = (double)ru.ru_maxrss * 1024.0 / 1e6 - base_mb; /* KiB to MB */
    r->converged = rep.converged;
    r->loglik = rep.loglik;
    /* Time per iteration: a second run of exactly 5 iterations from the
     * same start, minus a run of 0 (initialisation alone). */
    p.tol = 0;
    p.max_iter = 0;
    moe_model *m0 = NULL;
    double a0 = now();
    moe_train(&d, &p, &m0, NULL);
    double init_s = now() - a0;
    moe_model_free(m0);
    p.max_iter = 5;
    a0 = now();
    moe_train(&d, &p, &m0, NULL);
    r->sec_iter = (now() - a0 - init_s) / 5.0;
    moe_model_free(m0);
    r->gfs = pass_flops(n, D, &t) * (double)n / r->sec_iter / 1e9;
    double *mean = malloc(n * sizeof *mean);
    omp_set_num_threads(threads);
    a0 = now();
    moe_model_predict_mean(m, n, x, D, mean, NULL, NULL);
    r->pred_rate = (double)n / (now() - a0);
    free(mean);
    moe_model_free(m);
    free(x);
    free(y);
    return 0;
}

/* Run a case in a fresh process (this program re-executed with --case:
 * OpenMP's runtime does not survive a plain fork); returns its peak RSS in
 * MB through *rss. */
static int run_child(size_t n, size_t D, const char *tree, int threads, int max_iter,
                     uint64_t seed, result *r, double *rss) {
    int fd[2];
    if (pipe(fd) != 0) return -1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        char a[6][32];
        snprintf(a[0], 32, "%zu", n);
        snprintf(a[1], 32, "%zu", D);
        snprintf(a[2], 32, "%d", threads);
        snprintf(a[3], 32, "%d", max_iter);
        snprintf(a[4], 32, "%llu", (unsigned long long)seed);
        snprintf(a[5], 32, "%d", fd[1]);
        execl("/proc/self/exe", "bench", "--case", a[0], a[1], tree, a[2], a[3], a[4], a[5],
              (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    ssize_t got = read(fd[0], r, sizeof *r);
    close(fd[0]);
    int status;
    struct rusage ru;
    wait4(pid, &status, 0, &ru);
    *rss = (double)ru.ru_maxrss / 1024.0;
    return got == (ssize_t)sizeof *r && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc == 9 && strcmp(argv[1], "--case") == 0) {
        result res;
        int fd = atoi(argv[8]);
        int st = run_case(strtoull(argv[2], NULL, 10), strtoull(argv[3], NULL, 10), argv[4],
                          atoi(argv[5]), atoi(argv[6]), strtoull(argv[7], NULL, 10), &res);
        if (st == 0 && write(fd, &res, sizeof res) != (ssize_t)sizeof res) st = -1;
        return st == 0 ? 0 : 1;
    }
    int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    int T = omp_get_max_threads();
    printf("moe %s bench: %d threads, %ld MB RAM\n", moe_version(), T,
           (long)((double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGE_SIZE) / 1048576.0));
    double bw = bandwidth(T);
    printf("memory read bandwidth (%d threads): %.1f GB/s\n\n", T, bw / 1e9);
    printf("%-8s %3s %-5s %9s %6s %8s %7s %8s %9s %6s %11s %8s %8s %14s\n", "N", "D", "tree",
           "s/iter", "iters", "fit s", "GF/s", "peakGF/s", "bound s", "ratio", "pred rows/s",
           "train MB", "data MB", "loglik");
    struct {
        size_t n, D;
        const char *tree;
        int max_iter;
    } cases[] = {
        {100000, 10, "8", 500},     {100000, 10, "32", 500},   {100000, 10, "4x4", 500},
        {100000, 50, "8", 500},     {100000, 50, "32", 200},   {100000, 50, "4x4", 300},
        {1000000, 10, "8", 200},    {1000000, 10, "32", 30},   {1000000, 10, "4x4", 60},
        {1000000, 50, "8", 20},     {1000000, 50, "32", 8},    {1000000, 50, "4x4", 10},
    };
    size_t nc = sizeof cases / sizeof cases[0];
    if (quick) nc = 3;
    for (size_t c = 0; c < nc; c++) {
        result r;
        double rss;
        if (run_child(cases[c].n, cases[c].D, cases[c].tree, T, cases[c].max_iter,
                      20261124 + c, &r, &rss) != 0) {
            printf("case %zu failed\n", c);
            continue;
        }
        moe_tree_shape t;
        moe_tree_shape_parse(cases[c].tree, &t, NULL);
        size_t K = moe_tree_shape_n_leaves(&t);
        double peak = blas_rate(cases[c].D, K, T);
        double fl = pass_flops(cases[c].n, cases[c].D, &t) * (double)cases[c].n;
        double bytes = (double)cases[c].n * (double)(cases[c].D + 1) * 8.0;
        double bound = fmax(fl / peak, bytes / bw);
        char it[32];
        snprintf(it, sizeof it, "%d%s", r.iters, r.converged ? "" : "+");
        printf("%-8zu %3zu %-5s %9.4f %6s %8.2f %7.1f %8.1f %9.4f %6.2f %11.3g %8.0f %8.0f %14.1f\n",
               cases[c].n, cases[c].D, cases[c].tree, r.sec_iter, it, r.fit_s, r.gfs, peak / 1e9,
               bound, r.sec_iter / bound, r.pred_rate, r.train_rss_mb, bytes / 1e6, r.loglik);
        fflush(stdout);
    }
    /* Thread scaling on N = 1e6, D = 10, K = 8. */
    result r1, r2;
    double rss;
    if (!quick && T >= 2 && run_child(1000000, 10, "8", 1, 8, 7, &r1, &rss) == 0 &&
        run_child(1000000, 10, "8", 2, 8, 7, &r2, &rss) == 0)
        printf("\nthreads: N=1e6 D=10 K=8: %.4f s/iter on 1 thread, %.4f on 2: speed-up %.2fx\n",
               r1.sec_iter, r2.sec_iter, r1.sec_iter / r2.sec_iter);
    printf("\n'+' after iterations: stopped at the case's iteration cap, not converged.\n");
    return 0;
}
