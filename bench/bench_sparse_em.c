/*
 * bench_sparse_em.c -- `make bench-sparse-em`: seconds per EM iteration of
 * sparse EM (params.sparse_k = 2) against dense EM, over 64 experts.
 *
 * Data (seed 20261124): N rows, x ~ N(0, I_D); a flat gate with logits
 * 3 N(0,1) weights on x over K experts; expert k linear with N(0,1)
 * weights, intercept 3 N(0,1), sd 0.25 + 0.5 U(0,1). Every fit starts from
 * the same seed (one start, k-means initialisation excluded from the
 * times) and is timed by the progress callback:
 *   - per iteration: 30 iterations (tol 0): three of sparse EM's cycles of
 *     ten: one full iteration, eight over the kept experts, and one over
 *     the kept experts that also sums the gate's posterior part, after
 *     which the gate steps (a flat tree's deferred gate step, em.c);
 *     also sparse EM with every iteration full (sparse_full = 1);
 *   - over 200 iterations (tol 0), dense and sparse EM: the seconds per
 *     accepted iteration, with the passes of the steps EM retried (a
 *     softmax step that lowered F is retried with half the length; sparse
 *     EM's gate steps need that more often than dense EM's later in a run,
 *     and each retry costs it a full pass);
 *   - with "converge" last: also to convergence (tol 1e-6, at most 300
 *     iterations): time, iterations and the log-likelihood reached.
 * Each per-iteration figure is the fastest of REPEATS runs, dense and
 * sparse EM's runs alternating: on a shared machine another tenant's
 * work stretches a run now and then, and sparse EM's iterations (a few
 * milliseconds, two threads meeting at a barrier several times each) more
 * than dense EM's (ten runs of one run each at D = 10 gave 7.9-10.1x).
 *
 *   bench_sparse_em [N [D [K [k [converge]]]]]      defaults 100000 32 64 2
 */
#include "moe.h"
#include "bench_util.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>


/* The per-iteration timer, also summing the time of each kind of sparse
 * EM's iterations: the pass of iteration i (and the M-step before it) is
 * full when i % full == 0, the last of a cycle (kept experts + the gate's
 * part) when i % full == full - 1, else kept-only
 * (EM's retries aside, which these runs do not need). */
typedef struct kind_timer {
    bench_timer t;
    int full;
    double last, sum[3];
    int n[3];
} kind_timer;

static int kind_iter(const moe_iter_info *info, void *user) {
    kind_timer *kt = user;
    bench_timer_iter(info, &kt->t);
    if (info->iteration > 0 && kt->full > 1) {
        int i = info->iteration % kt->full, kind = i == 0 ? 0 : i == kt->full - 1 ? 1 : 2;
        kt->sum[kind] += kt->t.t_last - kt->last;
        kt->n[kind]++;
    }
    kt->last = kt->t.t_last;
    return 0;
}

static kind_timer last_kinds; /* of the latest per_iter run */

#define REPEATS 3 /* runs of each per-iteration figure, the fastest reported */

/* Seconds per iteration of a fit (tol 0: exactly iters iterations; else to
 * convergence), its log-likelihood into *ll and iterations into *it. */
static double per_iter(const moe_dataset *d, size_t K, int k, int full, int iters, double tol,
                       double *ll, int *it) {
    moe_train_params p = moe_train_params_default();
    p.tree.n_levels = 1;
    p.tree.branching[0] = K;
    p.max_iter = iters;
    p.tol = tol;
    p.seed = 7;
    p.sparse_k = k;
    p.sparse_full = full;
    kind_timer kt;
    memset(&kt, 0, sizeof kt);
    kt.full = full;
    bench_timer *tp = &kt.t;
    p.on_iter = kind_iter;
    p.user_data = &kt;
    moe_model *m = NULL;
    moe_error err;
    if (moe_train(d, &p, &m, &err) != MOE_STATUS_OK) {
        fprintf(stderr, "bench_sparse_em: %s\n", err.message);
        exit(1);
    }
    *ll = moe_model_report(m).loglik;
    *it = moe_model_report(m).iterations;
    moe_model_free(m);
    last_kinds = kt;
    return tp->n > 0 ? (tp->t_last - tp->t_first) / tp->n : NAN;
}

int main(int argc, char **argv) {
    size_t N = argc > 1 ? strtoul(argv[1], NULL, 10) : 100000;
    size_t D = argc > 2 ? strtoul(argv[2], NULL, 10) : 32;
    size_t K = argc > 3 ? strtoul(argv[3], NULL, 10) : 64;
    int k = argc > 4 ? atoi(argv[4]) : 2;
    if (N < 1000 || D < 1 || K < 2 || k < 1) {
        fprintf(stderr, "usage: bench_sparse_em [N >= 1000 [D [K >= 2 [k]]]]\n");
        return 1;
    }
    uint64_t s = 20261124;
    double *gw = malloc(K * D * sizeof(double)), *ew = malloc(K * (D + 2) * sizeof(double));
    double *x = malloc(N * D * sizeof(double)), *y = malloc(N * sizeof(double));
    double *l = malloc(K * sizeof(double));
    if (!gw || !ew || !x || !y || !l) return 1;
    for (size_t i = 0; i < K * D; i++) gw[i] = 3.0 * bench_norm(&s) / sqrt((double)D);
    for (size_t j = 0; j < K; j++) {
        double *e = ew + j * (D + 2);
        e[0] = 3.0 * bench_norm(&s);
        for (size_t c = 0; c < D; c++) e[1 + c] = bench_norm(&s);
        e[D + 1] = 0.25 + 0.5 * bench_unif(&s);
    }
    for (size_t i = 0; i < N; i++) {
        double *xi = x + i * D, mx = -INFINITY, sum = 0.0;
        for (size_t c = 0; c < D; c++) xi[c] = bench_norm(&s);
        for (size_t j = 0; j < K; j++) {
            l[j] = 0.0;
            for (size_t c = 0; c < D; c++) l[j] += gw[j * D + c] * xi[c];
            if (l[j] > mx) mx = l[j];
        }
        for (size_t j = 0; j < K; j++) sum += (l[j] = exp(l[j] - mx));
        double u = bench_unif(&s) * sum;
        size_t j = 0;
        while (j + 1 < K && u >= l[j]) u -= l[j++];
        const double *e = ew + j * (D + 2);
        y[i] = e[0] + e[D + 1] * bench_norm(&s);
        for (size_t c = 0; c < D; c++) y[i] += e[1 + c] * xi[c];
    }
    moe_dataset d;
    memset(&d, 0, sizeof d);
    d.n_rows = N;
    d.n_cols = D;
    d.x = x;
    d.ld_x = D;
    d.n_outputs = 1;
    d.y = y;
    d.ld_y = 1;
    double ll[3], cl[2];
    int it, ci[2];
    double td = INFINITY, ts = INFINITY, tf = INFINITY, td2 = INFINITY, ts2 = INFINITY, ld2[2];
    kind_timer kinds = last_kinds;
    for (int r = 0; r < REPEATS; r++) {
        td = fmin(td, per_iter(&d, K, 0, 10, 30, 0.0, &ll[0], &it));
        double t = per_iter(&d, K, k, 10, 30, 0.0, &ll[1], &it);
        if (t < ts) {
            ts = t;
            kinds = last_kinds;
        }
        tf = fmin(tf, per_iter(&d, K, k, 1, 30, 0.0, &ll[2], &it));
    }
    for (int r = 0; r < REPEATS; r++) {
        td2 = fmin(td2, per_iter(&d, K, 0, 10, 200, 0.0, &ld2[0], &it));
        ts2 = fmin(ts2, per_iter(&d, K, k, 10, 200, 0.0, &ld2[1], &it));
    }
    printf("sparse EM, N = %zu, D = %zu, K = %zu, k = %d (all threads; the fastest of %d runs)\n",
           N, D, K, k, REPEATS);
    printf("  30 iterations          s/iter   speed-up   loglik after 30\n");
    printf("  dense EM             %8.4f   %8s   %.1f\n", td, "", ll[0]);
    printf("  sparse EM            %8.4f   %7.1fx   %.1f\n", ts, td / ts, ll[1]);
    printf("  sparse, all full     %8.4f   %7.1fx   %.1f\n", tf, td / tf, ll[2]);
    printf("  sparse EM's iterations by kind: full %.4f s, last of a cycle %.4f s, kept only %.4f s"
           " (%.1fx faster than dense)\n",
           kinds.sum[0] / kinds.n[0], kinds.sum[1] / kinds.n[1], kinds.sum[2] / kinds.n[2],
           td / (kinds.sum[2] / kinds.n[2]));
    printf("  200 iterations (retried steps included): dense %.4f s/iter (loglik %.1f), sparse "
           "%.4f s/iter (loglik %.1f): %.1fx\n",
           td2, ld2[0], ts2, ld2[1], td2 / ts2);
    if (argc <= 5 || strcmp(argv[5], "converge") != 0) goto done;
    double cd = per_iter(&d, K, 0, 10, 300, 1e-6, &cl[0], &ci[0]) * ci[0];
    double cs = per_iter(&d, K, k, 10, 300, 1e-6, &cl[1], &ci[1]) * ci[1];
    printf("  to convergence (tol 1e-6, cap 300): dense %.2f s (%d iterations, loglik %.1f),\n"
           "  sparse %.2f s (%d iterations, loglik %.1f): %.1fx\n",
           cd, ci[0], cl[0], cs, ci[1], cl[1], cd / cs);
done:
    free(gw);
    free(ew);
    free(x);
    free(y);
    free(l);
    return 0;
}
