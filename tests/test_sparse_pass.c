/*
 * test_sparse_pass.c -- sparse EM's kept passes (sparse_em.c) against their
 * definitions, on 48,000 rows: ten blocks a slab, so a kept pass sums its
 * pairs' Grams in several groups of blocks a slab.
 *
 * A flat gate steps once a cycle, after the cycle's last kept pass, which
 * sums the posterior part of its gradient, sum_i w_i h_il z_i over the
 * rows' kept leaves l > 0 (h: the posteriors over the kept leaves). When
 * the gate's inputs are the experts' design the pass reads that part off
 * the experts' Grams (their row 0: z_0 = 1); else it sums it over the
 * pairs. Both must equal the definition, computed here from the model's
 * parameters and the kept leaves and priors the full pass recorded. And a
 * cycle's first kept pass records its groups' sort of the pairs by
 * expert, which the others reuse: the same statistics, bit for bit. And a
 * full pass's fused path for a flat gate (sparse_full.c, on AVX-512) gives
 * the general path's statistics and kept sets, bit for bit.
 *
 * Data (seed 77): the 8 experts on the circle of tests/test_sparse_em.c.
 */
#include "check.h"
#include "moe_impl.h"

#define N 48000
#define K_EXP 8
#define LOG_2PI 1.8378770664093454836

static double X[N * 2], Y[N], W[N];

static void make_data(void) {
    check_gen s = {77};
    for (size_t i = 0; i < N; i++) {
        int j = (int)(check_gen_next(&s) % K_EXP);
        double a = 6.283185307179586 * j / K_EXP;
        X[i * 2] = 4.0 * cos(a) + 0.7 * check_gen_norm(&s);
        X[i * 2 + 1] = 4.0 * sin(a) + 0.7 * check_gen_norm(&s);
        Y[i] = (j - 3.5) + ((j % 2) ? -1.0 : 1.0) * X[i * 2] + 0.25 * (j - 4) * X[i * 2 + 1] +
               0.2 * check_gen_norm(&s);
        W[i] = 0.25 * (double)(i % 7); /* (some rows weigh 0) */
    }
}

/* The posterior part of the gate's gradient by its definition: row i's
 * kept leaves' log joints lprior + log N(t; c_l . z, sd_l^2) in the
 * model's standardised units, their softmax h, and grad[(l - 1) gd + j] +=
 * h_l zg_j for l > 0. */
static void reference_part(const moe_fit *f, double *grad) {
    const moe_model *m = f->m;
    size_t k = f->sparse_k, ed = m->ed, gd = m->gd, K = m->n_leaves;
    memset(grad, 0, (K - 1) * gd * sizeof(double));
    for (size_t i = 0; i < N; i++) {
        double z[8], zg[8], l[8], t = (Y[i] - m->y_mean[0]) / m->y_scale[0], mx = -INFINITY;
        z[0] = zg[0] = 1.0;
        for (size_t j = 0; j < m->n_ecols; j++) {
            size_t c = m->ecols[j];
            z[1 + j] = (X[i * 2 + c] - m->x_mean[c]) / m->x_scale[c];
        }
        for (size_t j = 0; j < m->n_gcols; j++) {
            size_t c = m->gcols[j];
            zg[1 + j] = (X[i * 2 + c] - m->x_mean[c]) / m->x_scale[c];
        }
        for (size_t r = 0; r < k; r++) {
            size_t e = (size_t)f->sp_keep[i * k + r];
            double mu = 0.0;
            for (size_t j = 0; j < ed; j++) mu += m->coef[e * ed + j] * z[j];
            double s = (t - mu) / m->chol[e];
            l[r] = f->sp_lprior[i * k + r] - 0.5 * (LOG_2PI + m->logdet[e] + s * s);
            if (l[r] > mx) mx = l[r];
        }
        double sum = 0.0;
        for (size_t r = 0; r < k; r++) sum += (l[r] = exp(l[r] - mx));
        for (size_t r = 0; r < k; r++) {
            size_t e = (size_t)f->sp_keep[i * k + r];
            for (size_t j = 0; e > 0 && j < gd; j++) grad[(e - 1) * gd + j] += l[r] / sum * zg[j];
        }
    }
}

/* A model of k = 2 sparse EM after a few iterations (gate on cols, NULL:
 * the experts'), then a full pass and two kept passes that sum the gate's
 * posterior part, the second reusing the first's sort. */
/* The first n rows, and sparse EM's parameters for a flat tree of K
 * experts keeping k: one start, iterations, seed, two threads. */
static moe_train_params setup(moe_dataset *d, size_t n, size_t K, int k, int iters, int seed) {
    memset(d, 0, sizeof *d);
    d->n_rows = n;
    d->n_cols = 2;
    d->x = X;
    d->ld_x = 2;
    d->n_outputs = 1;
    d->y = Y;
    d->ld_y = 1;
    moe_train_params p = moe_train_params_default();
    p.tree.n_levels = 1;
    p.tree.branching[0] = K;
    p.n_restarts = 1;
    p.max_iter = iters;
    p.seed = (uint64_t)seed;
    p.sparse_k = k;
    p.n_threads = 2;
    return p;
}

static void check_gate_part(const size_t *gate_cols, const char *what) {
    moe_dataset d;
    moe_train_params p = setup(&d, N, K_EXP, 2, 6, 11);
    if (gate_cols) {
        p.n_gate_cols = 2;
        p.gate_cols = gate_cols;
    }
    moe_model *m = NULL;
    moe_fit *f = NULL;
    moe_error err;
    REQUIRE(moe_train(&d, &p, &m, &err) == MOE_STATUS_OK, "%s", err.message);
    moe_source src = moe_source_from_dataset(&d);
    double *grad = malloc((K_EXP - 1) * m->gd * sizeof(double)), *s1 = NULL;
    int ok = grad && moe_fit_create(&f, m, &src, &p) == MOE_STATUS_OK &&
             moe_fit_prepare(f, &err) == MOE_STATUS_OK;
    CHECK(ok, "%s: fit state", what);
    if (ok) {
        f->sp_pass = MOE_PASS_FULL;
        f->sp_lean = 1;
        f->sp_gate_part = MOE_GATE_PRIOR;
        ok = moe_fit_pass(f, &err) == MOE_STATUS_OK;
        f->sp_pass = MOE_PASS_KEPT;
        f->sp_lean = 0;
        f->sp_gate_part = MOE_GATE_POST;
        f->sp_sorted = 0;
        ok = ok && moe_fit_pass(f, &err) == MOE_STATUS_OK;
        s1 = malloc(f->stat_size * sizeof(double));
        ok = ok && s1;
        if (ok) memcpy(s1, f->stats, f->stat_size * sizeof(double));
        f->sp_sorted = 1;
        ok = ok && moe_fit_pass(f, &err) == MOE_STATUS_OK;
        CHECK(ok, "%s: passes: %s", what, err.message);
    }
    if (ok) {
        size_t n = (K_EXP - 1) * m->gd, used = f->off_ggram[0];
        CHECK(memcmp(s1, f->stats, used * sizeof(double)) == 0,
              "%s: the pass with the recorded sort differs from the sorting one", what);
        reference_part(f, grad);
        double err_max = 0.0, scale = 0.0;
        for (size_t j = 0; j < n; j++) {
            double e = fabs(f->stats[f->off_ggrad[0] + j] - grad[j]);
            if (e > err_max) err_max = e;
            if (fabs(grad[j]) > scale) scale = fabs(grad[j]);
        }
        printf("  %s: gate's posterior part against its definition: %.3g (largest %.6g)\n",
               what, err_max, scale);
        CHECK(scale > 1.0 && err_max <= 1e-10 * scale, "%s: %.3g of %.6g", what, err_max, scale);
    }
    free(s1);
    free(grad);
    moe_fit_free(f);
    moe_model_free(m);
}

/* A full pass (lean, the gate's prior part, or with every iteration full
 * the gate's whole gradient) of a model of K experts fitted with k kept,
 * on the first n rows (with row `far` moved far from every expert, when it
 * is below n: no leaf gives it a density, so it keeps the largest priors),
 * fused and general; with case weights W when weighted. */
static void check_fused(size_t K, int k, size_t n, size_t far, int all_full, int weighted,
                        const char *what) {
    moe_dataset d;
    moe_train_params p = setup(&d, n, K, k, 5, 5);
    if (weighted) d.weights = W;
    p.sparse_full = all_full ? 1 : 10;
    int part = all_full ? MOE_GATE_WHOLE : MOE_GATE_PRIOR;
    moe_model *m = NULL;
    moe_fit *f = NULL;
    moe_error err;
    REQUIRE(moe_train(&d, &p, &m, &err) == MOE_STATUS_OK, "%s", err.message);
    double y_far = far < n ? Y[far] : 0.0;
    if (far < n) Y[far] = 1e300;
    moe_source src = moe_source_from_dataset(&d);
    int ok = moe_fit_create(&f, m, &src, &p) == MOE_STATUS_OK &&
             moe_fit_prepare(f, &err) == MOE_STATUS_OK;
    CHECK(ok, "%s: fit state", what);
    CHECK(!ok || !moe_isa_has(MOE_ISA_AVX512) ||
              (f->sp_lean = 1, f->sp_gate_part = part, moe_sparse_full_fits(f)),
          "%s: the fused path does not take this model", what);
    double *s[2] = {NULL, NULL}, *lp[2] = {NULL, NULL};
    int32_t *ks[2] = {NULL, NULL};
    for (int g = 0; g < 2 && ok; g++) {
        f->sp_pass = MOE_PASS_FULL;
        f->sp_lean = 1;
        f->sp_gate_part = part;
        f->sp_general = g;
        ok = moe_fit_pass(f, &err) == MOE_STATUS_OK;
        s[g] = malloc(f->stat_size * sizeof(double));
        lp[g] = malloc(n * (size_t)k * sizeof(double));
        ks[g] = malloc(n * (size_t)k * sizeof(int32_t));
        ok = ok && s[g] && lp[g] && ks[g];
        CHECK(ok, "%s: pass: %s", what, err.message);
        if (!ok) break;
        memcpy(s[g], f->stats, f->stat_size * sizeof(double));
        if (f->sp_keep) { /* (the rows' state, kept between passes) */
            memcpy(lp[g], f->sp_lprior, n * (size_t)k * sizeof(double));
            memcpy(ks[g], f->sp_keep, n * (size_t)k * sizeof(int32_t));
        } else {
            memset(lp[g], 0, n * (size_t)k * sizeof(double));
            memset(ks[g], 0, n * (size_t)k * sizeof(int32_t));
        }
    }
    if (ok) {
        printf("  %s: F %.17g (fused) and %.17g\n", what, s[0][0], s[1][0]);
        CHECK(far >= n || s[0][0] == -INFINITY, "%s: F %g with a row of no density", what,
              s[0][0]);
        CHECK(memcmp(s[0], s[1], f->stat_size * sizeof(double)) == 0,
              "%s: the statistics differ", what);
        CHECK(memcmp(ks[0], ks[1], n * (size_t)k * sizeof(int32_t)) == 0 &&
                  memcmp(lp[0], lp[1], n * (size_t)k * sizeof(double)) == 0,
              "%s: the kept sets or their priors differ", what);
    }
    for (int g = 0; g < 2; g++) {
        free(s[g]);
        free(lp[g]);
        free(ks[g]);
    }
    if (far < n) Y[far] = y_far;
    moe_fit_free(f);
    moe_model_free(m);
}

static void test_fused_full_pass(void) {
    check_fused(8, 2, N, N, 0, 0, "K = 8, k = 2");
    check_fused(13, 3, N - 3, N, 0, 1,
                "K = 13, k = 3, case weights, the last block's rows not a multiple of 8");
    check_fused(9, 1, 2000, 1234, 0, 0, "K = 9, k = 1, a row of no density");
    check_fused(21, 4, 3001, 17, 0, 0, "K = 21, k = 4, a row of no density");
    check_fused(8, 2, N, N, 1, 0, "K = 8, k = 2, every iteration full (the gate's whole gradient)");
    check_fused(11, 3, 5003, 4000, 1, 1,
                "K = 11, k = 3, case weights, every iteration full, a row of no density");
}

static void test_gate_part_from_grams(void) {
    check_gate_part(NULL, "gate on the experts' inputs");
}

static void test_gate_part_summed(void) {
    static const size_t swapped[2] = {1, 0};
    check_gate_part(swapped, "gate on (x2, x1)");
}

int main(void) {
    make_data();
    RUN(test_gate_part_from_grams);
    RUN(test_gate_part_summed);
    RUN(test_fused_full_pass);
    return check_finish();
}
