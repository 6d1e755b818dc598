/*
 * bench_sparse.c -- prediction with a sparse top-k gate against dense
 * prediction of the same experts (issue 5, acceptance 4): 256 MLP experts
 * (one hidden layer of 64 tanh units over 16 inputs), a linear gate, k = 2.
 * The model is trained for one epoch by gradient (its parameter values do
 * not matter for the speed); the dense model is the same model with top-k
 * off (moe_model_with_top_k(m, 0)). Both predict the mixture mean of the
 * same rows; the best of 3 runs of each is reported, and the ratio.
 *
 *   bench_sparse [N_ROWS [K [TOP_K [HIDDEN]]]]     defaults 20000 256 2 64
 */
#include "moe.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double best_time(const moe_model *m, size_t n, const double *x, size_t D, double *out) {
    double best = INFINITY;
    for (int r = 0; r < 3; r++) {
        double t0 = now();
        if (moe_model_predict_mean(m, n, x, D, out, NULL, NULL) != MOE_STATUS_OK) return NAN;
        double t = now() - t0;
        if (t < best) best = t;
    }
    return best;
}

int main(int argc, char **argv) {
    size_t n = argc > 1 ? (size_t)atol(argv[1]) : 20000;
    size_t K = argc > 2 ? (size_t)atol(argv[2]) : 256;
    size_t k = argc > 3 ? (size_t)atol(argv[3]) : 2;
    size_t H = argc > 4 ? (size_t)atol(argv[4]) : 64;
    size_t D = 16;
    double *x = malloc(n * D * sizeof *x), *y = malloc(n * sizeof *y);
    double *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    if (!x || !y || !a || !b) return 2;
    unsigned long long s = 12345;
    for (size_t i = 0; i < n * D; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        x[i] = (double)(s >> 11) / 9007199254740992.0 * 2.0 - 1.0;
    }
    for (size_t i = 0; i < n; i++) y[i] = sin(3.0 * x[i * D]) + x[i * D + 1] * x[i * D + 2];
    moe_dataset d = {n, D, x, D, 1, y, 1, 0, NULL, NULL};
    moe_train_params p = moe_train_params_default();
    p.tree.n_levels = 1;
    p.tree.branching[0] = K;
    moe_grad_params g = moe_grad_params_default();
    g.expert.n_hidden = 1;
    g.expert.hidden[0] = H;
    g.top_k = k;
    g.epochs = 1;
    g.batch = 256;
    g.valid = 0.0;
    moe_model *sparse = NULL, *dense = NULL;
    moe_error err;
    double t0 = now();
    if (moe_train_gradient(&d, &p, &g, &sparse, &err) != MOE_STATUS_OK) {
        fprintf(stderr, "bench_sparse: %s\n", err.message);
        return 2;
    }
    double t_train = now() - t0;
    if (moe_model_with_top_k(sparse, 0, &dense, &err) != MOE_STATUS_OK) return 2;
    double td = best_time(dense, n, x, D, a), ts = best_time(sparse, n, x, D, b);
    printf("bench_sparse: %zu rows, %zu inputs, %zu MLP experts (%zu tanh units), linear gate, "
           "top-%zu (trained 1 epoch in %.2f s)\n",
           n, D, K, H, k, t_train);
    printf("  dense  prediction: %8.4f s  (%.2f us/row)\n", td, 1e6 * td / (double)n);
    printf("  sparse prediction: %8.4f s  (%.2f us/row)\n", ts, 1e6 * ts / (double)n);
    printf("  speedup: %.1fx\n", td / ts);
    moe_model_free(sparse);
    moe_model_free(dense);
    free(x);
    free(y);
    free(a);
    free(b);
    return 0;
}
