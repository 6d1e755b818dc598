/*
 * test_hostile.c -- degenerate data never crash and never give NaN
 * (acceptance 7 of the core issue): duplicated rows, a constant column,
 * collinear columns, a class absent from the data, more experts than
 * distinct points, targets scaled by 1e9 or 1e-9; plus bad input that must
 * be refused with a message naming the place.
 */
#include "check.h"
#include "moe.h"

#include <stdint.h>

static double unif(uint64_t *s) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return ((double)(*s >> 11) + 0.5) * 0x1.0p-53;
}

static int events_of(const moe_model *m, moe_event_kind kind) {
    moe_fit_report r = moe_model_report(m);
    int c = 0;
    for (size_t i = 0; i < r.n_events; i++) {
        moe_event e;
        moe_model_event(m, i, &e);
        c += e.kind == kind;
    }
    return c;
}

/* Every parameter and the log-likelihood are finite. */
static int all_finite(const moe_model *m) {
    size_t nc = moe_model_n_cols(m) + 1, P = moe_model_n_outputs(m), C = moe_model_n_classes(m);
    size_t rows = P ? P : C;
    double *buf = malloc((rows + 8) * (nc + 8) * 64 * sizeof *buf);
    int ok = isfinite(moe_model_report(m).loglik);
    for (size_t k = 0; k < moe_model_n_experts(m); k++) {
        moe_model_expert_coef(m, k, buf);
        for (size_t j = 0; j < rows * nc; j++) ok &= isfinite(buf[j]);
        if (P) {
            moe_model_expert_cov(m, k, buf);
            for (size_t j = 0; j < P * P; j++) ok &= isfinite(buf[j]) && buf[j * 0] > 0;
        }
    }
    for (size_t g = 0; g < moe_model_n_gates(m); g++) {
        moe_model_gate_coef(m, g, buf);
        for (size_t j = 0; j < moe_model_gate_n_children(m, g) * nc; j++) ok &= isfinite(buf[j]);
    }
    free(buf);
    return ok;
}

static moe_model *fit(const moe_dataset *d, const char *tree, moe_task task, moe_error *err) {
    moe_train_params p = moe_train_params_default();
    p.task = task;
    moe_tree_shape_parse(tree, &p.tree, NULL);
    p.n_restarts = 3;
    p.max_iter = 200;
    moe_model *m = NULL;
    moe_status st = moe_train(d, &p, &m, err);
    return st == MOE_STATUS_OK ? m : NULL;
}

static void make_lines(size_t n, double *x, size_t ldx, double *y, uint64_t seed) {
    for (size_t i = 0; i < n; i++) {
        x[i * ldx] = 10 * unif(&seed);
        y[i] = (x[i * ldx] > 5 ? 3 : -1) * x[i * ldx] + unif(&seed);
    }
}

static void test_duplicated_rows(void) {
    size_t n = 400;
    double x[400], y[400];
    make_lines(200, x, 1, y, 1);
    memcpy(x + 200, x, 200 * sizeof *x);
    memcpy(y + 200, y, 200 * sizeof *y);
    moe_dataset d = {n, 1, x, 1, 1, y, 1, 0, NULL, NULL};
    moe_error err;
    moe_model *m = fit(&d, "3", MOE_TASK_REGRESSION, &err);
    REQUIRE(m, "%s", err.message);
    CHECK(all_finite(m), "non-finite parameters");
    moe_model_free(m);
}

static void test_constant_and_collinear_columns(void) {
    size_t n = 300;
    double *x = malloc(n * 4 * sizeof *x), *y = malloc(n * sizeof *y);
    make_lines(n, x, 4, y, 2);
    for (size_t i = 0; i < n; i++) {
        x[i * 4 + 1] = 42.0;                    /* constant */
        x[i * 4 + 2] = 2 * x[i * 4] - 1;        /* collinear with column 0 */
        x[i * 4 + 3] = x[i * 4] + x[i * 4 + 2]; /* and another */
    }
    moe_dataset d = {n, 4, x, 4, 1, y, 1, 0, NULL, NULL};
    moe_error err;
    moe_model *m = fit(&d, "2", MOE_TASK_REGRESSION, &err);
    REQUIRE(m, "%s", err.message);
    CHECK(all_finite(m), "non-finite parameters");
    CHECK(events_of(m, MOE_EVENT_KIND_CONSTANT_COLUMN) == 1, "constant column not reported");
    /* Predictions stay sensible: the ridge splits the slope over the
     * collinear columns without blowing up. */
    double mean[1];
    double row[4] = {8, 42, 15, 23};
    moe_model_predict_mean(m, 1, row, 4, mean, NULL, NULL);
    CHECK(fabs(mean[0] - 24.5) < 2, "prediction %g at x = 8 (truth about 24.5)", mean[0]);
    free(x);
    free(y);
    moe_model_free(m);
}

static void test_absent_class(void) {
    size_t n = 300;
    double x[300];
    int32_t lab[300];
    uint64_t s = 3;
    for (size_t i = 0; i < n; i++) {
        x[i] = unif(&s) * 4 - 2;
        lab[i] = x[i] > 0 ? 2 : 0; /* class 1 never occurs */
        if (unif(&s) < 0.1) lab[i] = 2 - lab[i];
    }
    moe_dataset d = {n, 1, x, 1, 0, NULL, 0, 3, lab, NULL};
    moe_error err;
    moe_model *m = fit(&d, "2", MOE_TASK_CLASSIFICATION, &err);
    REQUIRE(m, "%s", err.message);
    CHECK(all_finite(m), "non-finite parameters");
    CHECK(events_of(m, MOE_EVENT_KIND_ABSENT_CLASS) == 1, "absent class not reported");
    double pr[3];
    moe_model_predict_proba(m, 1, x, 1, pr, NULL);
    CHECK(pr[1] < 1e-3, "absent class has probability %g", pr[1]);
    moe_model_free(m);
}

static void test_more_experts_than_points(void) {
    /* 30 rows but only 3 distinct points: 6 experts. */
    size_t n = 30;
    double x[30], y[30];
    for (size_t i = 0; i < n; i++) {
        x[i] = (double)(i % 3);
        y[i] = (double)(i % 3) * 2 + 1;
    }
    moe_dataset d = {n, 1, x, 1, 1, y, 1, 0, NULL, NULL};
    moe_train_params p = moe_train_params_default();
    p.tree.branching[0] = 6;
    p.n_gate_cols = 0;
    p.n_restarts = 2;
    moe_model *m = NULL;
    moe_error err;
    REQUIRE(moe_train(&d, &p, &m, &err) == MOE_STATUS_OK, "%s", err.message);
    CHECK(all_finite(m), "non-finite parameters");
    /* A perfect fit: variances sit at the floor or experts lose support,
     * and the report says so. */
    CHECK(events_of(m, MOE_EVENT_KIND_VARIANCE_FLOOR) + events_of(m, MOE_EVENT_KIND_LOST_SUPPORT) > 0,
          "degenerate fit not reported");
    moe_model_free(m);
}

/* Scaling the target by s: same fit, log-likelihood shifted by -n log s. */
static void test_scaled_targets(void) {
    size_t n = 500;
    double x[500], y[500], ys[500];
    make_lines(n, x, 1, y, 4);
    moe_error err;
    moe_dataset d = {n, 1, x, 1, 1, y, 1, 0, NULL, NULL};
    moe_model *m0 = fit(&d, "2", MOE_TASK_REGRESSION, &err);
    REQUIRE(m0, "%s", err.message);
    double scales[2] = {1e9, 1e-9};
    for (int j = 0; j < 2; j++) {
        for (size_t i = 0; i < n; i++) ys[i] = y[i] * scales[j];
        moe_dataset ds = {n, 1, x, 1, 1, ys, 1, 0, NULL, NULL};
        moe_model *m = fit(&ds, "2", MOE_TASK_REGRESSION, &err);
        REQUIRE(m, "%s", err.message);
        CHECK(all_finite(m), "non-finite parameters at scale %g", scales[j]);
        double want = moe_model_report(m0).loglik - (double)n * log(scales[j]);
        CHECK(fabs(moe_model_report(m).loglik - want) < 1e-6 * fabs(want),
              "scale %g: loglik %.10g, expected %.10g", scales[j], moe_model_report(m).loglik, want);
        moe_model_free(m);
    }
    /* And inputs scaled by 1e9 too. */
    for (size_t i = 0; i < n; i++) ys[i] = x[i] * 1e9;
    moe_dataset dx = {n, 1, ys, 1, 1, y, 1, 0, NULL, NULL};
    moe_model *m = fit(&dx, "2", MOE_TASK_REGRESSION, &err);
    REQUIRE(m, "%s", err.message);
    CHECK(fabs(moe_model_report(m).loglik - moe_model_report(m0).loglik) < 1e-6 * fabs(moe_model_report(m0).loglik),
          "input scaling changed the fit");
    moe_model_free(m);
    moe_model_free(m0);
}

static void test_bad_input_refused(void) {
    double x[40], y[40];
    make_lines(40, x, 1, y, 5);
    moe_error err;
    moe_model *m = NULL;
    moe_train_params p = moe_train_params_default();
    x[17] = NAN;
    moe_dataset d = {40, 1, x, 1, 1, y, 1, 0, NULL, NULL};
    CHECK(moe_train(&d, &p, &m, &err) == MOE_STATUS_DATA && m == NULL, "NaN input accepted");
    CHECK(err.line == 18 && err.column == 1 && strstr(err.message, "row 18"), "message: %s", err.message);
    x[17] = 1;
    y[3] = INFINITY;
    CHECK(moe_train(&d, &p, &m, &err) == MOE_STATUS_DATA && strstr(err.message, "row 4"),
          "Inf target: %s", err.message);
    y[3] = 1;
    moe_dataset small = {5, 1, x, 1, 1, y, 1, 0, NULL, NULL};
    CHECK(moe_train(&small, &p, &m, &err) == MOE_STATUS_DATA && strstr(err.message, "parameters"),
          "too few rows: %s", err.message);
    p.tree.branching[0] = 0;
    CHECK(moe_train(&d, &p, &m, &err) == MOE_STATUS_INVALID_ARGUMENT, "tree 0 accepted");
    p = moe_train_params_default();
    size_t bad = 3;
    p.n_gate_cols = 1;
    p.gate_cols = &bad;
    CHECK(moe_train(&d, &p, &m, &err) == MOE_STATUS_INVALID_ARGUMENT && strstr(err.message, "out of range"),
          "bad column: %s", err.message);
    p = moe_train_params_default();
    double w[40];
    for (int i = 0; i < 40; i++) w[i] = 1;
    w[9] = -1;
    d.weights = w;
    CHECK(moe_train(&d, &p, &m, &err) == MOE_STATUS_DATA && strstr(err.message, "row 10"),
          "negative weight: %s", err.message);
    moe_tree_shape s;
    CHECK(moe_tree_shape_parse("4x", &s, &err) == MOE_STATUS_INVALID_ARGUMENT, "4x accepted");
    CHECK(moe_tree_shape_parse("2x1", &s, &err) == MOE_STATUS_INVALID_ARGUMENT, "2x1 accepted");
    CHECK(moe_tree_shape_parse("1", &s, &err) == MOE_STATUS_OK, "1 refused");
    CHECK(moe_tree_shape_parse("300x300", &s, &err) == MOE_STATUS_INVALID_ARGUMENT, "huge tree accepted");
}

/* Case weights: an integer weight equals repeating the row. */
static void test_weights_are_repeats(void) {
    size_t n = 200;
    double x[600], y[600], w[200];
    make_lines(n, x, 1, y, 6);
    size_t o = n;
    for (size_t i = 0; i < n; i++) {
        w[i] = (double)(1 + i % 3);
        for (size_t r = 1; r < (size_t)w[i]; r++) {
            x[o] = x[i];
            y[o] = y[i];
            o++;
        }
    }
    moe_train_params p = moe_train_params_default();
    /* The two data sets start EM from different partitions, so compare
     * the optimum that many starts reach. */
    p.n_restarts = 8;
    p.tol = 1e-12;
    p.max_iter = 2000;
    moe_dataset dw = {n, 1, x, 1, 1, y, 1, 0, NULL, w};
    moe_dataset dr = {o, 1, x, 1, 1, y, 1, 0, NULL, NULL};
    moe_model *a = NULL, *b = NULL;
    REQUIRE(moe_train(&dw, &p, &a, NULL) == MOE_STATUS_OK, "weighted");
    REQUIRE(moe_train(&dr, &p, &b, NULL) == MOE_STATUS_OK, "repeated");
    CHECK(fabs(moe_model_report(a).loglik - moe_model_report(b).loglik) < 1e-6 * fabs(moe_model_report(b).loglik),
          "weighted %.10g vs repeated %.10g", moe_model_report(a).loglik, moe_model_report(b).loglik);
    CHECK(moe_model_report(a).sum_weights == (double)o, "sum of weights %g", moe_model_report(a).sum_weights);
    moe_model_free(a);
    moe_model_free(b);
}

int main(void) {
    RUN(test_duplicated_rows);
    RUN(test_constant_and_collinear_columns);
    RUN(test_absent_class);
    RUN(test_more_experts_than_points);
    RUN(test_scaled_targets);
    RUN(test_bad_input_refused);
    RUN(test_weights_are_repeats);
    return check_finish();
}
