/*
 * test_predict.c -- prediction is a proper probability model (acceptance 4
 * of the core issue): the predictive density integrates to 1, gate and
 * class probabilities sum to 1, quantiles invert the mixture CDF, the mean
 * and variance follow the law of total variance, posteriors are Bayes'
 * rule, and every row is computed independently of its batch.
 */
#include "check.h"
#include "moe.h"

static moe_model *fit_mcycle(size_t k, const char *tree, check_csv *csv) {
    char path[512];
    snprintf(path, sizeof path, "%s/mcycle.csv", check_data_dir());
    if (check_csv_read(path, csv) != 0) return NULL;
    moe_dataset d = {csv->n_rows, csv->n_cols, csv->v, csv->n_cols, 1, csv->v + 2, csv->n_cols,
                     0, NULL, NULL};
    moe_train_params p = moe_train_params_default();
    if (tree) moe_tree_shape_parse(tree, &p.tree, NULL);
    else p.tree.branching[0] = k;
    size_t cols[1] = {0};
    p.n_expert_cols = 1;
    p.expert_cols = cols;
    p.n_gate_cols = 1;
    p.gate_cols = cols;
    p.n_restarts = 5;
    moe_model *m = NULL;
    moe_train(&d, &p, &m, NULL);
    return m;
}

static void test_density_integrates(void) {
    check_csv csv;
    moe_model *m = fit_mcycle(0, "2x2", &csv);
    REQUIRE(m, "fit failed");
    /* At several inputs: integrate exp(log-density) over a wide grid by
     * Simpson's rule (the density is smooth; 40,001 points over +-60 sd). */
    double xs[4] = {5.0, 15.0, 25.0, 45.0};
    size_t G = 40001;
    double *x = malloc(G * 3 * sizeof *x), *ld = malloc(G * sizeof *ld);
    for (int q = 0; q < 4; q++) {
        double row[3] = {xs[q], xs[q] * xs[q], 0}, mean, var;
        moe_model_predict_mean(m, 1, row, 3, &mean, &var, NULL);
        double lo = mean - 60 * sqrt(var) - 300, hi = mean + 60 * sqrt(var) + 300;
        double h = (hi - lo) / (double)(G - 1);
        for (size_t i = 0; i < G; i++) {
            x[i * 3] = xs[q];
            x[i * 3 + 1] = xs[q] * xs[q];
            x[i * 3 + 2] = lo + h * (double)i;
        }
        moe_dataset d = {G, 3, x, 3, 1, x + 2, 3, 0, NULL, NULL};
        REQUIRE(moe_model_log_density(m, &d, ld, NULL) == MOE_STATUS_OK, "log_density");
        double s = 0.0;
        for (size_t i = 0; i < G; i++)
            s += (i == 0 || i == G - 1 ? 1 : (i % 2 ? 4 : 2)) * exp(ld[i]);
        s *= h / 3.0;
        CHECK(fabs(s - 1.0) < 1e-6, "x = %g: density integrates to %.12g", xs[q], s);
    }
    free(x);
    free(ld);
    moe_model_free(m);
    free(csv.v);
}

static void test_gates_quantiles_moments(void) {
    check_csv csv;
    moe_model *m = fit_mcycle(3, NULL, &csv);
    REQUIRE(m, "fit failed");
    size_t n = csv.n_rows, K = moe_model_n_experts(m);
    double *g = malloc(n * K * sizeof *g), *mu = malloc(n * K * sizeof *mu),
           *sd = malloc(n * K * sizeof *sd), *mean = malloc(n * sizeof *mean),
           *var = malloc(n * sizeof *var), *q = malloc(n * sizeof *q),
           *lo = malloc(n * sizeof *lo), *hi = malloc(n * sizeof *hi);
    int32_t *best = malloc(n * sizeof *best);
    REQUIRE(moe_model_predict_gates(m, n, csv.v, 3, g, NULL) == MOE_STATUS_OK, "gates");
    REQUIRE(moe_model_predict_experts(m, n, csv.v, 3, mu, sd, NULL) == MOE_STATUS_OK, "experts");
    REQUIRE(moe_model_predict_mean(m, n, csv.v, 3, mean, var, NULL) == MOE_STATUS_OK, "mean");
    REQUIRE(moe_model_predict_expert(m, n, csv.v, 3, best, NULL) == MOE_STATUS_OK, "expert");
    for (size_t i = 0; i < n; i++) {
        double s = 0, e = 0, e2 = 0;
        size_t bk = 0;
        for (size_t k = 0; k < K; k++) {
            double gk = g[i * K + k];
            CHECK(gk >= 0 && gk <= 1, "gate out of [0,1]");
            s += gk;
            e += gk * mu[i * K + k];
            e2 += gk * (sd[i * K + k] * sd[i * K + k] + mu[i * K + k] * mu[i * K + k]);
            if (gk > g[i * K + bk]) bk = k;
        }
        CHECK(fabs(s - 1) < 1e-12, "row %zu: gates sum to %.17g", i, s);
        CHECK_NEAR(mean[i], e, 1e-10);
        CHECK(fabs(var[i] - (e2 - e * e)) <= 1e-8 * fmax(1.0, var[i]), "row %zu var", i);
        CHECK(best[i] == (int32_t)bk, "row %zu: most responsible %d vs %zu", i, best[i], bk);
    }
    /* Quantiles invert the mixture CDF built from the experts' own outputs. */
    double probs[5] = {0.001, 0.05, 0.5, 0.9, 0.999};
    for (int j = 0; j < 5; j++) {
        REQUIRE(moe_model_predict_quantile(m, n, csv.v, 3, 0, probs[j], q, NULL) == MOE_STATUS_OK,
                "quantile");
        for (size_t i = 0; i < n; i++) {
            double F = 0;
            for (size_t k = 0; k < K; k++)
                F += g[i * K + k] * 0.5 * erfc(-(q[i] - mu[i * K + k]) / (sd[i * K + k] * sqrt(2.0)));
            CHECK(fabs(F - probs[j]) < 1e-9, "row %zu: F(q(%g)) = %.15g", i, probs[j], F);
        }
    }
    REQUIRE(moe_model_predict_interval(m, n, csv.v, 3, 0.9, lo, hi, NULL) == MOE_STATUS_OK, "interval");
    moe_model_predict_quantile(m, n, csv.v, 3, 0, 0.5 * (1.0 - 0.9), q, NULL);
    for (size_t i = 0; i < n; i++) CHECK(lo[i] == q[i] && hi[i] > lo[i], "row %zu interval", i);
    /* Posteriors: Bayes' rule from gates and expert densities. */
    moe_dataset d = {n, 3, csv.v, 3, 1, csv.v + 2, 3, 0, NULL, NULL};
    double *post = malloc(n * K * sizeof *post);
    REQUIRE(moe_model_posterior(m, &d, post, NULL) == MOE_STATUS_OK, "posterior");
    for (size_t i = 0; i < n; i++) {
        double y = csv.v[i * 3 + 2], tot = 0, pk[16];
        for (size_t k = 0; k < K; k++) {
            double z = (y - mu[i * K + k]) / sd[i * K + k];
            tot += pk[k] = g[i * K + k] * exp(-0.5 * z * z) / sd[i * K + k];
        }
        for (size_t k = 0; k < K; k++)
            CHECK(fabs(post[i * K + k] - pk[k] / tot) < 1e-9, "row %zu posterior %zu", i, k);
    }
    /* Row independence: predicting row by row gives the same bits. */
    for (size_t i = 0; i < n; i += 7) {
        double m1, v1;
        moe_model_predict_mean(m, 1, csv.v + i * 3, 3, &m1, &v1, NULL);
        CHECK(m1 == mean[i] && v1 == var[i], "row %zu differs alone", i);
    }
    free(g); free(mu); free(sd); free(mean); free(var); free(q); free(lo); free(hi); free(best);
    free(post);
    moe_model_free(m);
    free(csv.v);
}

static void test_class_probabilities(void) {
    /* A small 3-class problem: probabilities sum to 1 per row. */
    size_t n = 600;
    double *x = malloc(n * 2 * sizeof *x);
    int32_t *lab = malloc(n * sizeof *lab);
    for (size_t i = 0; i < n; i++) {
        x[2 * i] = sin((double)i * 0.37) * 3;
        x[2 * i + 1] = cos((double)i * 0.11) * 2;
        lab[i] = (int32_t)((x[2 * i] > 0) + (x[2 * i + 1] > 1));
    }
    moe_dataset d = {n, 2, x, 2, 0, NULL, 0, 3, lab, NULL};
    moe_train_params p = moe_train_params_default();
    p.task = MOE_TASK_CLASSIFICATION;
    p.tree.branching[0] = 3;
    p.max_iter = 50;
    moe_model *m = NULL;
    moe_error err;
    REQUIRE(moe_train(&d, &p, &m, &err) == MOE_STATUS_OK, "%s", err.message);
    double *pr = malloc(n * 3 * sizeof *pr), *ld = malloc(n * sizeof *ld);
    REQUIRE(moe_model_predict_proba(m, n, x, 2, pr, NULL) == MOE_STATUS_OK, "proba");
    REQUIRE(moe_model_log_density(m, &d, ld, NULL) == MOE_STATUS_OK, "logdensity");
    double s = 0.0;
    for (size_t i = 0; i < n; i++) {
        double t = pr[3 * i] + pr[3 * i + 1] + pr[3 * i + 2];
        CHECK(fabs(t - 1) < 1e-12, "row %zu: probabilities sum to %.17g", i, t);
        CHECK(fabs(log(pr[3 * i + lab[i]]) - ld[i]) < 1e-9, "row %zu: log p(y) mismatch", i);
        s += ld[i];
    }
    CHECK_NEAR(s, moe_model_report(m).loglik, 1e-9);
    CHECK(moe_model_predict_mean(m, n, x, 2, pr, NULL, NULL) == MOE_STATUS_INVALID_ARGUMENT,
          "mean of a classifier accepted");
    free(pr);
    free(ld);
    free(x);
    free(lab);
    moe_model_free(m);
}

/* Two outputs, full covariance: the fit finds the correlation. */
static void test_multi_output_full(void) {
    size_t n = 4000;
    double *x = malloc(n * sizeof *x), *y = malloc(n * 2 * sizeof *y);
    uint64_t s = 99;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        double u1 = ((double)(s >> 11) + 0.5) * 0x1.0p-53;
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        double u2 = ((double)(s >> 11) + 0.5) * 0x1.0p-53;
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        double u3 = ((double)(s >> 11) + 0.5) * 0x1.0p-53;
        double z1 = sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2);
        double z2 = sqrt(-2 * log(u1)) * sin(6.283185307179586 * u2);
        x[i] = 4 * u3 - 2;
        int k = x[i] > 0;
        /* expert k: y = (a + b x) + L z with correlation +-0.8 */
        double r = k ? 0.8 : -0.8;
        y[2 * i] = (k ? 3 : -3) + x[i] + 0.5 * z1;
        y[2 * i + 1] = (k ? -1 : 1) * x[i] + 0.5 * (r * z1 + sqrt(1 - r * r) * z2);
    }
    moe_dataset d = {n, 1, x, 1, 2, y, 2, 0, NULL, NULL};
    moe_train_params p = moe_train_params_default();
    p.variance = MOE_VARIANCE_FULL;
    p.n_restarts = 3;
    moe_model *m = NULL;
    moe_error err;
    REQUIRE(moe_train(&d, &p, &m, &err) == MOE_STATUS_OK, "%s", err.message);
    CHECK(moe_model_report(m).df == 1 * 2 + 2 * (2 * 2 + 3), "df %zu", moe_model_report(m).df);
    for (size_t k = 0; k < 2; k++) {
        double cov[4], coef[4];
        moe_model_expert_cov(m, k, cov);
        moe_model_expert_coef(m, k, coef);
        double corr = cov[1] / sqrt(cov[0] * cov[3]);
        double want = coef[0] > 0 ? 0.8 : -0.8;
        CHECK(fabs(corr - want) < 0.05, "expert %zu correlation %g vs %g", k, corr, want);
        CHECK(fabs(cov[1] - cov[2]) == 0.0, "covariance not symmetric");
    }
    double *ld = malloc(n * sizeof *ld), tot = 0;
    moe_model_log_density(m, &d, ld, NULL);
    for (size_t i = 0; i < n; i++) tot += ld[i];
    CHECK_NEAR(tot, moe_model_report(m).loglik, 1e-9);
    free(ld);
    free(x);
    free(y);
    moe_model_free(m);
}

int main(void) {
    RUN(test_density_integrates);
    RUN(test_gates_quantiles_moments);
    RUN(test_class_probabilities);
    RUN(test_multi_output_full);
    return check_finish();
}
