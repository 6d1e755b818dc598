/*
 * test_routing.c -- routing diagnostics (moe_model_routing): a gate built
 * by hand to send every row to one expert is flagged collapsed with its
 * dead experts and the exact entropy; a gate trained into collapse (one
 * linear regime, four experts, experts frozen below a quarter of the rows
 * while the gate learns) is flagged; healthy fits are not; every number
 * matches a naive computation from the gate probabilities; the result does
 * not depend on the thread count; weights act like repeated rows; errors
 * name the row.
 */
#include "check.h"
#include "moe_impl.h"

#include <omp.h>
#include <stdint.h>

/* A flat mixture of 4 Gaussian experts on one input whose gate gives child
 * `hot` the logit `a` + `slope` x and the others 0. */
static moe_model *make_flat4(size_t hot, double a, double slope) {
    moe_model t;
    memset(&t, 0, sizeof t);
    t.task = MOE_TASK_REGRESSION;
    t.variance = MOE_VARIANCE_DIAG;
    t.tree.n_levels = 1;
    t.tree.branching[0] = 4;
    t.n_cols = 1;
    t.n_ecols = 1;
    t.n_gcols = 1;
    t.n_out = 1;
    const size_t cols[] = {0};
    moe_model *m = moe_model_alloc(&t, cols, cols);
    if (!m) return NULL;
    /* Child 0's row stays zero (the reference): for hot = 0 the others go down. */
    for (size_t c = 1; c < 4; c++) {
        double *v = m->gate_coef + m->gate_off[0] + c * m->gd;
        v[0] = hot == 0 ? -a : c == hot ? a : 0.0;
        v[1] = hot == 0 ? -slope : c == hot ? slope : 0.0;
    }
    for (size_t k = 0; k < 4; k++) m->cov[k] = 1.0;
    if (moe_model_refresh_chol(m) != 0) {
        moe_model_free(m);
        return NULL;
    }
    return m;
}

/* Park-Miller uniform in (0, 1), deterministic. */
static double unif(uint64_t *s) {
    *s = (*s * 16807) % 2147483647;
    return (double)*s / 2147483647.0;
}

static void test_built_collapse(void) {
    moe_model *m = make_flat4(2, 12.0, 0.0);
    REQUIRE(m, "model");
    size_t n = 1000;
    double *x = malloc(n * sizeof *x);
    REQUIRE(x, "oom");
    for (size_t i = 0; i < n; i++) x[i] = ((double)i + 0.5) / (double)n - 0.5;
    moe_routing r;
    moe_error err;
    REQUIRE(moe_model_routing(m, n, x, 1, NULL, &r, &err) == MOE_STATUS_OK, "%s", err.message);
    double e = exp(12.0), p = e / (e + 3.0), q = 1.0 / (e + 3.0);
    double h = -(p * log(p) + 3.0 * q * log(q));
    CHECK(r.n_experts == 4 && r.n_gates == 1 && r.n_rows == n && r.sum_weights == 1000.0,
          "sizes");
    CHECK(r.load[2] == 1000.0 && r.rows[2] == 1000, "load %g", r.load[2]);
    CHECK(r.load[0] == 0.0 && r.load[1] == 0.0 && r.load[3] == 0.0, "other loads");
    CHECK(r.top_expert == 2 && r.top_share == 1.0 && r.balance == 4.0, "top %zu %g %g",
          r.top_expert, r.top_share, r.balance);
    CHECK(r.collapsed == 1, "collapsed");
    CHECK(r.n_dead == 3 && r.n_idle == 3, "dead %zu idle %zu", r.n_dead, r.n_idle);
    CHECK(r.dead[0] && r.dead[1] && !r.dead[2] && r.dead[3], "dead flags");
    CHECK_NEAR(r.importance[2], 1000.0 * p, 1e-12);
    CHECK_NEAR(r.importance[0], 1000.0 * q, 1e-12);
    CHECK_NEAR(r.entropy, h, 1e-12);
    CHECK_NEAR(r.entropy_norm, h / log(4.0), 1e-12);
    CHECK_NEAR(r.load_cv2, 3.0, 1e-12); /* one expert takes all: cv2 = K - 1 */
    /* One gate: its numbers are the leaves'. */
    CHECK(r.n_children == 4 && r.gate_first[0] == 0, "children");
    CHECK(r.child_load[2] == 1000.0 && r.gate_reach[0] == 1000.0, "gate load");
    CHECK_NEAR(r.gate_entropy[0], h, 1e-12);
    CHECK_NEAR(r.gate_balance[0], 4.0, 1e-12);
    moe_routing_free(&r);
    CHECK(r.load == NULL && r.n_experts == 0, "free zeroes");
    moe_routing_free(&r); /* twice is fine */
    moe_routing_free(NULL);

    /* A milder lead: every row still goes to expert 3 (collapsed), but the
     * others keep about 4% of the gate each: idle, not dead. */
    moe_model_free(m);
    m = make_flat4(2, 3.0, 0.0);
    REQUIRE(m, "model");
    REQUIRE(moe_model_routing(m, n, x, 1, NULL, &r, &err) == MOE_STATUS_OK, "%s", err.message);
    CHECK(r.collapsed == 1 && r.n_idle == 3 && r.n_dead == 0, "idle %zu dead %zu", r.n_idle,
          r.n_dead);
    moe_routing_free(&r);

    /* A gate that splits the line into two halves: no collapse, two dead. */
    moe_model_free(m);
    m = make_flat4(1, 0.0, 40.0); /* x < 0: expert 1 (reference), x > 0: expert 2 */
    REQUIRE(m, "model");
    for (size_t c = 2; c < 4; c++) m->gate_coef[m->gate_off[0] + c * m->gd] = -30.0;
    REQUIRE(moe_model_routing(m, n, x, 1, NULL, &r, &err) == MOE_STATUS_OK, "%s", err.message);
    CHECK(r.collapsed == 0 && r.n_dead == 2 && r.dead[2] && r.dead[3], "split: dead %zu",
          r.n_dead);
    CHECK(r.load[0] == 500.0 && r.load[1] == 500.0 && r.balance == 2.0, "split loads %g %g",
          r.load[0], r.load[1]);
    moe_routing_free(&r);
    moe_model_free(m);
    free(x);
}

/* One linear regime y = 1 + 2x + noise. */
static double *one_regime(size_t n, uint64_t seed) {
    double *v = malloc(n * 2 * sizeof *v);
    if (!v) return NULL;
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++) {
        double x = 4.0 * unif(&s) - 2.0, e = unif(&s) + unif(&s) + unif(&s) - 1.5;
        v[2 * i] = x;
        v[2 * i + 1] = 1.0 + 2.0 * x + 0.3 * e;
    }
    return v;
}

/* Four regimes along x, each on a quarter of the line. */
static double *four_regimes(size_t n, uint64_t seed) {
    double *v = malloc(n * 2 * sizeof *v);
    if (!v) return NULL;
    uint64_t s = seed;
    const double a[4] = {3, -2, 4, -1}, b[4] = {-4, 5, -3, 2};
    for (size_t i = 0; i < n; i++) {
        double x = 4.0 * unif(&s) - 2.0, e = unif(&s) - 0.5;
        int k = x < -1 ? 0 : x < 0 ? 1 : x < 1 ? 2 : 3;
        v[2 * i] = x;
        v[2 * i + 1] = a[k] + b[k] * x + 0.1 * e;
    }
    return v;
}

static moe_model *fit2(const double *v, size_t n, const char *tree, double min_support,
                       uint64_t seed, int restarts) {
    moe_dataset d = {n, 2, v, 2, 1, v + 1, 2, 0, NULL, NULL};
    moe_train_params p = moe_train_params_default();
    moe_tree_shape_parse(tree, &p.tree, NULL);
    size_t cols[1] = {0};
    p.n_expert_cols = p.n_gate_cols = 1;
    p.expert_cols = p.gate_cols = cols;
    p.min_support = min_support;
    p.seed = seed;
    p.n_restarts = restarts;
    moe_model *m = NULL;
    moe_error err;
    if (moe_train(&d, &p, &m, &err) != MOE_STATUS_OK) fprintf(stderr, "  %s\n", err.message);
    return m;
}

/* Trained into collapse: one regime, 4 experts, and min_support a quarter of
 * the rows, so experts that start with less are frozen while the gate keeps
 * learning; the gate then routes every row around them. */
static void test_trained_collapse(void) {
    size_t n = 400;
    double *v = one_regime(n, 11);
    REQUIRE(v, "oom");
    for (uint64_t seed = 1; seed <= 3; seed++) {
        moe_model *m = fit2(v, n, "4", 100.0, seed, 1);
        REQUIRE(m, "fit");
        moe_routing r;
        moe_error err;
        REQUIRE(moe_model_routing(m, n, v, 2, NULL, &r, &err) == MOE_STATUS_OK, "%s",
                err.message);
        CHECK(r.collapsed && r.top_share >= 0.9, "seed %d: not collapsed (top share %g)",
              (int)seed, r.top_share);
        CHECK(r.n_dead >= 1, "seed %d: no dead expert", (int)seed);
        CHECK(r.balance >= 3.6, "seed %d: balance %g", (int)seed, r.balance);
        moe_routing_free(&r);
        moe_model_free(m);
    }
    free(v);
}

/* Healthy fits are not flagged: four regimes, flat 4 and a 2x2 tree. */
static void test_healthy(void) {
    size_t n = 800;
    double *v = four_regimes(n, 5);
    REQUIRE(v, "oom");
    const char *trees[2] = {"4", "2x2"};
    for (int t = 0; t < 2; t++) {
        moe_model *m = fit2(v, n, trees[t], -1.0, 1, 5);
        REQUIRE(m, "fit");
        moe_routing r;
        moe_error err;
        REQUIRE(moe_model_routing(m, n, v, 2, NULL, &r, &err) == MOE_STATUS_OK, "%s",
                err.message);
        CHECK(!r.collapsed && r.n_dead == 0 && r.n_idle == 0, "%s: collapsed %d dead %zu",
              trees[t], r.collapsed, r.n_dead);
        CHECK(r.balance < 1.3, "%s: balance %g", trees[t], r.balance);
        CHECK(r.entropy_norm < 0.3, "%s: entropy %g of log K", trees[t], r.entropy_norm);
        for (size_t g = 0; g < r.n_gates; g++)
            CHECK(r.gate_balance[g] < 1.3, "%s: gate %zu balance %g", trees[t], g,
                  r.gate_balance[g]);
        moe_routing_free(&r);
        moe_model_free(m);
    }
    free(v);
}

/* Every number against a naive computation from the gate probabilities
 * and moe_model_predict_expert, on a 2x2 tree with case weights. */
static void test_reference(void) {
    size_t n = 600;
    double *v = four_regimes(n, 9);
    REQUIRE(v, "oom");
    moe_model *m = fit2(v, n, "2x2", -1.0, 2, 1);
    REQUIRE(m, "fit");
    size_t K = 4, G = 3;
    double *g = malloc(n * K * sizeof *g), *w = malloc(n * sizeof *w);
    int32_t *top = malloc(n * sizeof *top);
    REQUIRE(g && w && top, "oom");
    uint64_t s = 3;
    for (size_t i = 0; i < n; i++) w[i] = (i % 7 == 0) ? 0.0 : 0.5 + unif(&s);
    REQUIRE(moe_model_predict_gates(m, n, v, 2, g, NULL) == MOE_STATUS_OK, "gates");
    REQUIRE(moe_model_predict_expert(m, n, v, 2, top, NULL) == MOE_STATUS_OK, "expert");
    double W = 0, load[4] = {0}, imp[4] = {0}, H = 0, rows[4] = {0};
    double reach[3] = {0}, gh[3] = {0};
    for (size_t i = 0; i < n; i++) {
        const double *gi = g + i * K;
        W += w[i];
        if (w[i] > 0) {
            load[top[i]] += w[i];
            rows[top[i]] += 1;
        }
        double h = 0;
        for (size_t k = 0; k < K; k++) {
            imp[k] += w[i] * gi[k];
            if (gi[k] > 0) h -= gi[k] * log(gi[k]);
        }
        H += w[i] * h;
        /* gate 0: children {0,1} and {2,3}; gate 1: leaves 0,1; gate 2: leaves 2,3 */
        double a = gi[0] + gi[1], b = gi[2] + gi[3];
        double pr[3][2] = {{a, b}, {gi[0], gi[1]}, {gi[2], gi[3]}};
        for (int q = 0; q < 3; q++) {
            double tot = pr[q][0] + pr[q][1], hq = 0;
            if (!(tot > 0)) continue;
            for (int c = 0; c < 2; c++)
                if (pr[q][c] > 0) hq -= pr[q][c] / tot * log(pr[q][c] / tot);
            reach[q] += w[i] * tot;
            gh[q] += w[i] * tot * hq;
        }
    }
    moe_routing r;
    moe_error err;
    REQUIRE(moe_model_routing(m, n, v, 2, w, &r, &err) == MOE_STATUS_OK, "%s", err.message);
    CHECK(r.n_gates == G && r.n_children == 6, "shape");
    CHECK_NEAR(r.sum_weights, W, 1e-13);
    for (size_t k = 0; k < K; k++) {
        CHECK_NEAR(r.load[k], load[k], 1e-13);
        CHECK(r.rows[k] == (size_t)rows[k], "rows[%zu] %zu vs %g", k, r.rows[k], rows[k]);
        CHECK_NEAR(r.importance[k], imp[k], 1e-12);
    }
    CHECK_NEAR(r.entropy, H / W, 1e-12);
    double mx = 0;
    for (size_t k = 0; k < K; k++) mx = load[k] > mx ? load[k] : mx;
    CHECK_NEAR(r.balance, mx / (W / 4), 1e-12);
    /* Gates: children in breadth-first order: gate 0 -> nodes 1,2; gate 1 ->
     * leaves 0,1; gate 2 -> leaves 2,3. */
    CHECK(r.gate_first[0] == 0 && r.gate_first[1] == 2 && r.gate_first[2] == 4, "first");
    CHECK_NEAR(r.child_load[0], load[0] + load[1], 1e-13);
    CHECK_NEAR(r.child_load[1], load[2] + load[3], 1e-13);
    CHECK_NEAR(r.child_importance[3], imp[1], 1e-12);
    CHECK_NEAR(r.child_importance[4], imp[2], 1e-12);
    double chain = 0;
    for (size_t q = 0; q < G; q++) {
        CHECK_NEAR(r.gate_reach[q], reach[q], 1e-12);
        CHECK_NEAR(r.gate_entropy[q], gh[q] / reach[q], 1e-10);
        CHECK_NEAR(r.gate_entropy_norm[q], r.gate_entropy[q] / log(2.0), 1e-12);
        chain += r.gate_reach[q] * r.gate_entropy[q];
    }
    CHECK_NEAR(chain / W, r.entropy, 1e-10); /* chain rule of entropy */
    moe_routing_free(&r);
    free(g);
    free(w);
    free(top);
    moe_model_free(m);
    free(v);
}

/* Bit-identical whatever the thread count, over several blocks of rows;
 * integer weights act like repeated rows. */
static void test_threads_and_weights(void) {
    size_t n = 20000;
    double *v = four_regimes(n, 17);
    REQUIRE(v, "oom");
    moe_model *m = fit2(v, 800, "4", -1.0, 1, 2);
    REQUIRE(m, "fit");
    moe_routing a, b;
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    moe_status s1 = moe_model_routing(m, n, v, 2, NULL, &a, NULL);
    omp_set_num_threads(4);
    moe_status s2 = moe_model_routing(m, n, v, 2, NULL, &b, NULL);
    omp_set_num_threads(nt);
    REQUIRE(s1 == MOE_STATUS_OK && s2 == MOE_STATUS_OK, "routing");
    CHECK(memcmp(a.load, b.load, 4 * sizeof(double)) == 0 &&
              memcmp(a.importance, b.importance, 4 * sizeof(double)) == 0 &&
              memcmp(&a.entropy, &b.entropy, sizeof(double)) == 0,
          "1 vs 4 threads differ");
    moe_routing_free(&a);
    moe_routing_free(&b);

    /* weights 0..3 against the rows repeated that many times */
    size_t nw = 500, nrep = 0;
    double *w = malloc(nw * sizeof *w), *rep = malloc(nw * 3 * 2 * sizeof *rep);
    REQUIRE(w && rep, "oom");
    for (size_t i = 0; i < nw; i++) {
        w[i] = (double)(i % 4);
        for (size_t t = 0; t < (size_t)w[i]; t++, nrep++) {
            rep[2 * nrep] = v[2 * i];
            rep[2 * nrep + 1] = v[2 * i + 1];
        }
    }
    REQUIRE(moe_model_routing(m, nw, v, 2, w, &a, NULL) == MOE_STATUS_OK, "weighted");
    REQUIRE(moe_model_routing(m, nrep, rep, 2, NULL, &b, NULL) == MOE_STATUS_OK, "repeated");
    CHECK_NEAR(a.sum_weights, (double)nrep, 1e-15);
    for (size_t k = 0; k < 4; k++) {
        CHECK_NEAR(a.load[k], b.load[k], 1e-12);
        CHECK_NEAR(a.importance[k], b.importance[k], 1e-12);
    }
    CHECK_NEAR(a.entropy, b.entropy, 1e-12);
    CHECK(a.top_expert == b.top_expert && a.n_dead == b.n_dead, "flags");
    moe_routing_free(&a);
    moe_routing_free(&b);
    free(w);
    free(rep);
    moe_model_free(m);
    free(v);
}

static void test_errors(void) {
    moe_model *m = make_flat4(1, 1.0, 1.0);
    REQUIRE(m, "model");
    size_t n = 9000; /* more than one block of rows */
    double *x = malloc(n * sizeof *x), *w = malloc(n * sizeof *w);
    REQUIRE(x && w, "oom");
    for (size_t i = 0; i < n; i++) x[i] = (double)i / (double)n, w[i] = 1.0;
    moe_routing r;
    moe_error err;
    memset(&r, 0xff, sizeof r);
    CHECK(moe_model_routing(NULL, n, x, 1, NULL, &r, &err) == MOE_STATUS_INVALID_ARGUMENT,
          "null model");
    CHECK(r.load == NULL && r.n_experts == 0, "zeroed on failure");
    CHECK(moe_model_routing(m, n, x, 1, NULL, NULL, &err) == MOE_STATUS_INVALID_ARGUMENT,
          "null out");
    CHECK(moe_model_routing(m, 0, x, 1, NULL, &r, &err) == MOE_STATUS_INVALID_ARGUMENT,
          "no rows");
    CHECK(moe_model_routing(m, n, NULL, 1, NULL, &r, &err) == MOE_STATUS_INVALID_ARGUMENT,
          "no x");
    CHECK(moe_model_routing(m, n, x, 0, NULL, &r, &err) == MOE_STATUS_INVALID_ARGUMENT, "ld");
    w[4321] = -1.0;
    CHECK(moe_model_routing(m, n, x, 1, w, &r, &err) == MOE_STATUS_DATA && err.line == 4322 &&
              strstr(err.message, "row 4322"),
          "negative weight: %s", err.message);
    w[4321] = NAN;
    CHECK(moe_model_routing(m, n, x, 1, w, &r, &err) == MOE_STATUS_DATA, "NaN weight");
    for (size_t i = 0; i < n; i++) w[i] = 0.0;
    CHECK(moe_model_routing(m, n, x, 1, w, &r, &err) == MOE_STATUS_DATA, "all weights 0: %s",
          err.message);
    x[8765] = INFINITY; /* in the third block of rows */
    CHECK(moe_model_routing(m, n, x, 1, NULL, &r, &err) == MOE_STATUS_DATA && err.line == 8766 &&
              err.column == 1 && strstr(err.message, "row 8766"),
          "non-finite input: line %zu: %s", err.line, err.message);
    CHECK(r.load == NULL, "zeroed on failure");
    moe_routing_free(&r);
    free(x);
    free(w);
    moe_model_free(m);
}

/* A single expert: no gate, everything on expert 1, not "collapsed". */
static void test_single_expert(void) {
    size_t n = 50;
    double *v = one_regime(n, 3);
    REQUIRE(v, "oom");
    moe_model *m = fit2(v, n, "1", -1.0, 1, 1);
    REQUIRE(m, "fit");
    moe_routing r;
    REQUIRE(moe_model_routing(m, n, v, 2, NULL, &r, NULL) == MOE_STATUS_OK, "routing");
    CHECK(r.n_experts == 1 && r.n_gates == 0 && r.load[0] == 50.0 && !r.collapsed &&
              r.n_dead == 0 && r.entropy == 0.0 && r.entropy_norm == 0.0 && r.balance == 1.0 &&
              r.gate_first == NULL,
          "single expert");
    moe_routing_free(&r);
    moe_model_free(m);
    free(v);
}

int main(void) {
    RUN(test_built_collapse);
    RUN(test_trained_collapse);
    RUN(test_healthy);
    RUN(test_reference);
    RUN(test_threads_and_weights);
    RUN(test_errors);
    RUN(test_single_expert);
    return check_finish();
}
