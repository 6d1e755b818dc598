/*
 * test_em.c -- EM recovers known models, never lowers the log-likelihood,
 * and gives the same model for any thread count (acceptance 1, 3, 6 of the
 * core issue); model selection picks the true size.
 *
 * Data are generated here from fixed models with a splitmix64/Box-Muller
 * generator seeded with the documented seeds below, independent of the
 * library's own generator.
 */
#include "check.h"
#include "moe.h"

#include <stdint.h>

static size_t gen_cat(check_gen *g, const double *logit, size_t n) {
    double mx = logit[0], s = 0.0, p[16];
    for (size_t i = 1; i < n; i++) if (logit[i] > mx) mx = logit[i];
    for (size_t i = 0; i < n; i++) s += (p[i] = exp(logit[i] - mx));
    double u = check_gen_unif(g) * s;
    for (size_t i = 0; i < n; i++) { if (u < p[i]) return i; u -= p[i]; }
    return n - 1;
}

/* ---- the 2x2 HME of Gaussian experts --------------------------------------- */

/* Truth (seed 20260101, 20,000 rows, x ~ N(0, I_3)):
 *   top gate:   logit(child 1 vs 0) = 0.3 + 3 x1
 *   gate under child 0: logit = -0.2 + 3 x2;  under child 1: 0.4 - 3 x3
 *   experts (intercept, x1, x2, x3; sd):                                   */
static const double hme_gate[3][4] = {{0.3, 3, 0, 0}, {-0.2, 0, 3, 0}, {0.4, 0, 0, -3}};
static const double hme_exp[4][5] = {{1, 2, 0, -1, 0.5},
                                     {-2, 0, 1, 1, 0.3},
                                     {3, -1, 2, 0, 0.4},
                                     {0, 1, -2, 2, 0.6}};
#define HME_N 20000

static void make_hme(double *x, double *y) {
    check_gen g = {20260101};
    for (size_t i = 0; i < HME_N; i++) {
        double *xi = x + i * 3;
        for (int j = 0; j < 3; j++) xi[j] = check_gen_norm(&g);
        double l[2];
        l[0] = 0;
        l[1] = hme_gate[0][0] + hme_gate[0][1] * xi[0];
        size_t top = gen_cat(&g, l, 2);
        const double *gg = hme_gate[1 + top];
        l[1] = gg[0] + gg[1] * xi[0] + gg[2] * xi[1] + gg[3] * xi[2];
        size_t k = top * 2 + gen_cat(&g, l, 2);
        const double *e = hme_exp[k];
        y[i] = e[0] + e[1] * xi[0] + e[2] * xi[1] + e[3] * xi[2] + e[4] * check_gen_norm(&g);
    }
}

static void test_recover_hme(void) {
    double *x = malloc(HME_N * 3 * sizeof *x), *y = malloc(HME_N * sizeof *y);
    make_hme(x, y);
    moe_dataset d = {HME_N, 3, x, 3, 1, y, 1, 0, NULL, NULL};
    moe_train_params p = moe_train_params_default();
    moe_error err;
    REQUIRE(moe_tree_shape_parse("2x2", &p.tree, &err) == MOE_STATUS_OK, "%s", err.message);
    p.n_restarts = 4;
    p.seed = 7;
    p.tol = 1e-10;
    moe_model *m = NULL;
    REQUIRE(moe_train(&d, &p, &m, &err) == MOE_STATUS_OK, "%s", err.message);
    /* Match fitted leaves to true experts by their coefficients. */
    int perm[4];
    double coef[4], cov;
    for (int k = 0; k < 4; k++) {
        moe_model_expert_coef(m, (size_t)k, coef);
        double best = INFINITY;
        for (int t = 0; t < 4; t++) {
            double e = 0;
            for (int j = 0; j < 4; j++) e += fabs(coef[j] - hme_exp[t][j]);
            if (e < best) { best = e; perm[k] = t; }
        }
        /* Standard error of a coefficient: sd / sqrt(rows of the expert,
         * about 5,000) < 0.01; 0.06 is six of them plus the gate's blur. */
        for (int j = 0; j < 4; j++)
            CHECK(fabs(coef[j] - hme_exp[perm[k]][j]) < 0.06, "expert %d coef %d: %g vs %g", k, j,
                  coef[j], hme_exp[perm[k]][j]);
        moe_model_expert_cov(m, (size_t)k, &cov);
        CHECK(fabs(sqrt(cov) - hme_exp[perm[k]][4]) < 0.03, "expert %d sd %g vs %g", k, sqrt(cov),
              hme_exp[perm[k]][4]);
    }
    /* The permutation must respect the tree: leaves 0,1 share a parent. */
    CHECK(perm[0] / 2 == perm[1] / 2 && perm[2] / 2 == perm[3] / 2 && perm[0] / 2 != perm[2] / 2,
          "leaf permutation %d%d%d%d breaks the tree", perm[0], perm[1], perm[2], perm[3]);
    /* Gates: fitted child-1 row vs the true one, negated if the children
     * are swapped. A logistic slope's standard error here is about 0.05-0.1
     * (3,000-10,000 rows near the boundary); 0.35 allows for that and the
     * posterior's blur at the boundary. */
    double gc[2 * 4];
    int top_swap = perm[0] / 2 == 1;
    moe_model_gate_coef(m, 0, gc);
    for (int j = 0; j < 4; j++) {
        double want = (top_swap ? -1 : 1) * hme_gate[0][j];
        CHECK(fabs(gc[4 + j] - want) < 0.35, "top gate coef %d: %g vs %g", j, gc[4 + j], want);
    }
    for (int c = 0; c < 2; c++) {
        int leaf0 = perm[2 * c], leaf1 = perm[2 * c + 1];
        int truth = leaf0 / 2, swap = leaf0 > leaf1;
        moe_model_gate_coef(m, (size_t)(1 + c), gc);
        for (int j = 0; j < 4; j++) {
            double want = (swap ? -1 : 1) * hme_gate[1 + truth][j];
            CHECK(fabs(gc[4 + j] - want) < 0.35, "gate %d coef %d: %g vs %g", 1 + c, j, gc[4 + j],
                  want);
        }
    }
    moe_fit_report r = moe_model_report(m);
    CHECK(r.converged, "did not converge in %d iterations", r.iterations);
    double tr[1000];
    size_t nt = moe_model_trace(m, tr, 1000);
    CHECK(check_monotone(tr, nt < 1000 ? nt : 1000, 1e-9) == 0, "trace decreases");
    moe_model_free(m);
    free(x);
    free(y);
}

/* ---- a flat ME of multinomial experts -------------------------------------- */

/* Truth (seed 777, 20,000 rows, x ~ N(0, I_2), 3 classes, 2 experts):
 *   gate: logit(expert 1 vs 0) = 0.5 + 4 x1
 *   logits of classes 1 and 2 against class 0, (intercept, x1, x2):
 *   expert 0: (1, 0, 3) and (-1, 0, -3); expert 1: (-1, 2, 0) and (2, 0, 3) */
static const double mn_gate[3] = {0.5, 4, 0};
static const double mn_exp[2][2][3] = {{{1, 0, 3}, {-1, 0, -3}}, {{-1, 2, 0}, {2, 0, 3}}};
#define MN_N 20000

static void test_recover_multinomial(void) {
    double *x = malloc(MN_N * 2 * sizeof *x);
    int32_t *lab = malloc(MN_N * sizeof *lab);
    check_gen g = {777};
    for (size_t i = 0; i < MN_N; i++) {
        double *xi = x + 2 * i;
        xi[0] = check_gen_norm(&g);
        xi[1] = check_gen_norm(&g);
        double l[3] = {0, mn_gate[0] + mn_gate[1] * xi[0] + mn_gate[2] * xi[1], 0};
        size_t k = gen_cat(&g, l, 2);
        for (int c = 0; c < 2; c++)
            l[1 + c] = mn_exp[k][c][0] + mn_exp[k][c][1] * xi[0] + mn_exp[k][c][2] * xi[1];
        l[0] = 0;
        lab[i] = (int32_t)gen_cat(&g, l, 3);
    }
    moe_dataset d = {MN_N, 2, x, 2, 0, NULL, 0, 3, lab, NULL};
    moe_train_params p = moe_train_params_default();
    p.task = MOE_TASK_CLASSIFICATION;
    p.n_restarts = 4;
    p.tol = 1e-10;
    moe_model *m = NULL;
    moe_error err;
    REQUIRE(moe_train(&d, &p, &m, &err) == MOE_STATUS_OK, "%s", err.message);
    double c0[9];
    moe_model_expert_coef(m, 0, c0);
    /* Which fitted expert is true expert 0: compare class-1 x2 slopes. */
    int swap = fabs(c0[3 + 2] - mn_exp[0][0][2]) > fabs(c0[3 + 2] - mn_exp[1][0][2]);
    /* Multinomial slopes from ~10,000 rows each, blurred near the gate's
     * boundary: standard errors about 0.05-0.1; tolerance 0.3. */
    for (int k = 0; k < 2; k++) {
        double c[9];
        moe_model_expert_coef(m, (size_t)k, c);
        int t = swap ? 1 - k : k;
        for (int cl = 0; cl < 2; cl++)
            for (int j = 0; j < 3; j++)
                CHECK(fabs(c[(1 + cl) * 3 + j] - mn_exp[t][cl][j]) < 0.3,
                      "expert %d class %d coef %d: %g vs %g", k, cl + 1, j, c[(1 + cl) * 3 + j],
                      mn_exp[t][cl][j]);
        for (int j = 0; j < 3; j++) CHECK(c[j] == 0.0, "class 0 row not zero");
    }
    double gc[6];
    moe_model_gate_coef(m, 0, gc);
    for (int j = 0; j < 3; j++) {
        double want = (swap ? -1 : 1) * mn_gate[j];
        CHECK(fabs(gc[3 + j] - want) < 0.4, "gate coef %d: %g vs %g", j, gc[3 + j], want);
    }
    double tr[1000];
    size_t nt = moe_model_trace(m, tr, 1000);
    CHECK(check_monotone(tr, nt < 1000 ? nt : 1000, 1e-9) == 0, "trace decreases");
    moe_model_free(m);
    free(x);
    free(lab);
}

/* ---- thread independence ------------------------------------------------------ */

static moe_model *fit_threads(const moe_dataset *d, int threads, const char *tree) {
    moe_train_params p = moe_train_params_default();
    moe_tree_shape_parse(tree, &p.tree, NULL);
    p.n_threads = threads;
    p.n_restarts = 2;
    p.max_iter = 60;
    p.tol = 0;
    moe_model *m = NULL;
    moe_train(d, &p, &m, NULL);
    return m;
}

static void test_threads_bit_identical(void) {
    double *x = malloc(HME_N * 3 * sizeof *x), *y = malloc(HME_N * sizeof *y);
    make_hme(x, y);
    moe_dataset d = {HME_N, 3, x, 3, 1, y, 1, 0, NULL, NULL};
    moe_model *a = fit_threads(&d, 1, "2x2"), *b = fit_threads(&d, 2, "2x2");
    REQUIRE(a && b, "fit failed");
    void *ba = NULL, *bb = NULL;
    size_t na = 0, nb = 0;
    moe_fit_report ra = moe_model_report(a), rb = moe_model_report(b);
    CHECK(memcmp(&ra.loglik, &rb.loglik, sizeof(double)) == 0, "loglik %.17g vs %.17g", ra.loglik,
          rb.loglik);
    for (size_t k = 0; k < 4; k++) {
        double ca[4], cb[4];
        moe_model_expert_coef(a, k, ca);
        moe_model_expert_coef(b, k, cb);
        CHECK(memcmp(ca, cb, sizeof ca) == 0, "expert %zu differs", k);
    }
    for (size_t g = 0; g < 3; g++) {
        double ga[8], gb[8];
        moe_model_gate_coef(a, g, ga);
        moe_model_gate_coef(b, g, gb);
        CHECK(memcmp(ga, gb, sizeof ga) == 0, "gate %zu differs", g);
    }
    /* The whole model, byte for byte, when model files are available. */
    if (moe_model_save_buffer(a, &ba, &na, NULL) == MOE_STATUS_OK &&
        moe_model_save_buffer(b, &bb, &nb, NULL) == MOE_STATUS_OK)
        CHECK(na == nb && memcmp(ba, bb, na) == 0, "saved models differ");
    free(ba);
    free(bb);
    moe_model_free(a);
    moe_model_free(b);
    free(x);
    free(y);
}

/* ---- model selection ---------------------------------------------------------- */

static void test_select_true_size(void) {
    /* Three well-separated lines behind a gate on x: BIC picks 3. Seed 99. */
    size_t n = 3000;
    double *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    check_gen g = {99};
    for (size_t i = 0; i < n; i++) {
        x[i] = 6 * check_gen_unif(&g) - 3;
        int k = x[i] < -1 ? 0 : x[i] < 1 ? 1 : 2;
        double a[3] = {-4, 0, 4}, b[3] = {2, -3, 2};
        y[i] = a[k] + b[k] * x[i] + 0.3 * check_gen_norm(&g);
    }
    moe_dataset d = {n, 1, x, 1, 1, y, 1, 0, NULL, NULL};
    moe_train_params p = moe_train_params_default();
    p.n_restarts = 5;
    moe_tree_shape shapes[8];
    size_t ns = 0;
    moe_error err;
    REQUIRE(moe_tree_shape_parse_list("1,2,3,4,6", shapes, 8, &ns, &err) == MOE_STATUS_OK, "%s",
            err.message);
    double scores[8];
    moe_model *m = NULL;
    REQUIRE(moe_select(&d, &p, shapes, ns, MOE_CRITERION_BIC, &m, scores, &err) == MOE_STATUS_OK,
            "%s", err.message);
    CHECK(moe_model_n_experts(m) == 3, "selected %zu experts", moe_model_n_experts(m));
    for (size_t s = 0; s < ns; s++) CHECK(isfinite(scores[s]), "score %zu not finite", s);
    moe_fit_report r = moe_model_report(m);
    CHECK_NEAR(r.bic, -2 * r.loglik + (double)r.df * log((double)n), 1e-12);
    CHECK_NEAR(r.aic, -2 * r.loglik + 2.0 * (double)r.df, 1e-12);
    CHECK(r.icl >= r.bic, "ICL %g < BIC %g", r.icl, r.bic);
    moe_model_free(m);
    free(x);
    free(y);
}

/* One expert is plain least squares: compare with the normal equations. */
static void test_one_expert_is_ols(void) {
    size_t n = 500;
    double *x = malloc(n * 2 * sizeof *x), *y = malloc(n * sizeof *y);
    check_gen g = {5};
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (size_t i = 0; i < n; i++) {
        x[2 * i] = check_gen_norm(&g);
        x[2 * i + 1] = 7.0; /* a column the experts do not use */
        y[i] = 1.5 - 2 * x[2 * i] + check_gen_norm(&g);
        sx += x[2 * i]; sy += y[i]; sxx += x[2 * i] * x[2 * i]; sxy += x[2 * i] * y[i];
    }
    double b = (sxy - sx * sy / n) / (sxx - sx * sx / n), a = (sy - b * sx) / n;
    moe_dataset d = {n, 2, x, 2, 1, y, 1, 0, NULL, NULL};
    moe_train_params p = moe_train_params_default();
    p.tree.branching[0] = 1;
    size_t ec[1] = {0};
    p.n_expert_cols = 1;
    p.expert_cols = ec;
    p.n_gate_cols = 0;
    moe_model *m = NULL;
    moe_error err;
    REQUIRE(moe_train(&d, &p, &m, &err) == MOE_STATUS_OK, "%s", err.message);
    double c[2];
    moe_model_expert_coef(m, 0, c);
    CHECK_NEAR(c[0], a, 1e-8);
    CHECK_NEAR(c[1], b, 1e-8);
    CHECK(moe_model_report(m).df == 3, "df %zu", moe_model_report(m).df);
    moe_model_free(m);
    free(x);
    free(y);
}

/* flexmix's trick: short runs from many starts, the best one continued. */
static int count_iter(const moe_iter_info *info, void *user) {
    int *c = user;
    c[info->short_run ? 0 : 1]++;
    return info->iteration >= 1000; /* never reached here */
}

static int cancel_at_5(const moe_iter_info *info, void *user) {
    (void)user;
    return info->iteration >= 5;
}

static void test_short_runs_and_callback(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/mcycle.csv", check_data_dir());
    check_csv csv;
    REQUIRE(check_csv_read(path, &csv) == 0, "cannot read %s", path);
    moe_dataset d = {csv.n_rows, 1, csv.v, 3, 1, csv.v + 2, 3, 0, NULL, NULL};
    moe_train_params p = moe_train_params_default();
    p.tree.branching[0] = 3;
    p.n_restarts = 10;
    p.short_iter = 5;
    p.tol = 1e-10;
    p.max_iter = 3000;
    int counts[2] = {0, 0};
    p.on_iter = count_iter;
    p.user_data = counts;
    moe_model *m = NULL;
    moe_error err;
    REQUIRE(moe_train(&d, &p, &m, &err) == MOE_STATUS_OK, "%s", err.message);
    moe_fit_report r = moe_model_report(m);
    /* 10 short runs of 5 iterations (6 log-likelihoods each), then one. */
    CHECK(counts[0] == 10 * 6, "short-run callbacks: %d", counts[0]);
    CHECK(counts[1] > 0, "no continued run");
    CHECK(r.loglik >= -580.5255 - 0.01, "short runs reached %.4f (reference -580.5255)", r.loglik);
    CHECK(r.iterations > 5 && r.converged, "iterations %d", r.iterations);
    double tr[4000];
    size_t nt = moe_model_trace(m, tr, 4000);
    CHECK(nt == (size_t)r.iterations + 1, "trace %zu for %d iterations", nt, r.iterations);
    CHECK(check_monotone(tr, nt, 1e-9) == 0, "trace decreases");
    moe_model_free(m);
    /* Cancelling from the callback. */
    p.on_iter = cancel_at_5;
    p.short_iter = 0;
    CHECK(moe_train(&d, &p, &m, &err) == MOE_STATUS_CANCELLED && m == NULL, "not cancelled");
    /* tol = 0 runs exactly max_iter iterations. */
    p.on_iter = NULL;
    p.tol = 0;
    p.max_iter = 17;
    p.n_restarts = 1;
    REQUIRE(moe_train(&d, &p, &m, &err) == MOE_STATUS_OK, "%s", err.message);
    CHECK(moe_model_report(m).iterations == 17 && !moe_model_report(m).converged, "iterations %d",
          moe_model_report(m).iterations);
    moe_model_free(m);
    free(csv.v);
}

int main(void) {
    RUN(test_recover_hme);
    RUN(test_recover_multinomial);
    RUN(test_threads_bit_identical);
    RUN(test_select_true_size);
    RUN(test_one_expert_is_ols);
    RUN(test_short_runs_and_callback);
    return check_finish();
}
