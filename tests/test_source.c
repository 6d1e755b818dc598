/*
 * test_source.c -- training from row sources: a source that copies its
 * rows in small chunks (as a file reader does) gives bit-for-bit the model
 * of in-memory training; two shards trained at once with a reducer (two
 * threads standing in for two MPI processes) give the single-process
 * model up to the order of the sums; read errors stop training with the
 * source's message.
 */
#include "check.h"
#include "moe.h"

#include <pthread.h>
#include <stdint.h>


/* Three regimes over x1 with a noise input x2, seed 77; weights in [0.5, 2)
 * and every 97th row weighs 0. Labels: the regime index (classification
 * data with the same inputs). */
#define N_ROWS 6000
static double X[N_ROWS * 2], Y[N_ROWS], W[N_ROWS];
static int32_t LAB[N_ROWS];

static void make_data(void) {
    check_gen g = {77};
    for (size_t i = 0; i < N_ROWS; i++) {
        double x1 = 4.0 * check_gen_unif(&g) - 2.0, x2 = check_gen_norm(&g);
        X[i * 2] = x1;
        X[i * 2 + 1] = x2;
        int r = x1 < -0.7 ? 0 : x1 < 0.6 ? 1 : 2;
        Y[i] = (r == 0 ? 1.0 + 2.0 * x1 : r == 1 ? -1.0 - x1 : 0.5 * x1) + 0.3 * check_gen_norm(&g);
        LAB[i] = check_gen_unif(&g) < 0.85 ? r : (int32_t)(check_gen_next(&g) % 3);
        W[i] = i % 97 == 0 ? 0.0 : 0.5 + 1.5 * check_gen_unif(&g);
    }
}

static moe_dataset dataset(int classification, size_t r0, size_t n) {
    moe_dataset d;
    memset(&d, 0, sizeof d);
    d.n_rows = n;
    d.n_cols = 2;
    d.x = X + r0 * 2;
    d.ld_x = 2;
    if (classification) {
        d.n_classes = 3;
        d.labels = LAB + r0;
    } else {
        d.n_outputs = 1;
        d.y = Y + r0;
        d.ld_y = 1;
    }
    d.weights = W + r0;
    return d;
}

/* A source that copies rows into the trainer's buffers, like a file
 * reader, and can fail from a given row on. */
typedef struct copy_src {
    moe_dataset d;
    size_t fail_from;
} copy_src;

static moe_status copy_read(void *ctx, size_t row0, size_t n, const moe_row_buffers *buf,
                            moe_rows *v, moe_error *err) {
    const copy_src *c = ctx;
    if (n > buf->max_rows || row0 + n > c->d.n_rows) {
        err->status = MOE_STATUS_INVALID_ARGUMENT;
        snprintf(err->message, sizeof err->message, "bad read %zu+%zu", row0, n);
        return err->status;
    }
    if (row0 + n > c->fail_from) {
        err->status = MOE_STATUS_IO;
        snprintf(err->message, sizeof err->message, "test.moed: disk on fire at row %zu",
                 c->fail_from + 1);
        return err->status;
    }
    memcpy(buf->x, c->d.x + row0 * 2, n * 2 * sizeof(double));
    if (c->d.y) memcpy(buf->y, c->d.y + row0, n * sizeof(double));
    if (c->d.labels) memcpy(buf->labels, c->d.labels + row0, n * sizeof(int32_t));
    memcpy(buf->weights, c->d.weights + row0, n * sizeof(double));
    v->x = buf->x;
    v->ld_x = 2;
    v->y = c->d.y ? buf->y : NULL;
    v->ld_y = 1;
    v->labels = c->d.labels ? buf->labels : NULL;
    v->weights = buf->weights;
    return MOE_STATUS_OK;
}

static moe_source copy_source(copy_src *c) {
    moe_source s = moe_source_from_dataset(&c->d);
    s.read = copy_read;
    s.ctx = c;
    s.chunk_rows = 1000; /* not a multiple of the block size on purpose */
    return s;
}

static moe_train_params params(int classification) {
    moe_train_params p = moe_train_params_default();
    p.task = classification ? MOE_TASK_CLASSIFICATION : MOE_TASK_REGRESSION;
    p.tree.n_levels = 1;
    p.tree.branching[0] = 3;
    p.n_restarts = 3; /* random, k-means, random */
    p.seed = 5;
    p.n_threads = 2;
    return p;
}

static int same_doubles(const double *a, const double *b, size_t n) {
    return memcmp(a, b, n * sizeof(double)) == 0;
}

static void streamed_equals_in_memory(int classification) {
    moe_dataset d = dataset(classification, 0, N_ROWS);
    moe_train_params p = params(classification);
    moe_model *a = NULL, *b = NULL;
    moe_error err;
    REQUIRE(moe_train(&d, &p, &a, &err) == MOE_STATUS_OK, "%s", err.message);
    copy_src c = {d, SIZE_MAX};
    moe_source s = copy_source(&c);
    moe_status st = moe_train_source(&s, &p, &b, &err);
    CHECK(st == MOE_STATUS_OK, "%s", err.message);
    if (st == MOE_STATUS_OK) {
        moe_fit_report ra = moe_model_report(a), rb = moe_model_report(b);
        CHECK(ra.loglik == rb.loglik, "%.17g vs %.17g", ra.loglik, rb.loglik);
        CHECK(ra.iterations == rb.iterations, "%d vs %d", ra.iterations, rb.iterations);
        size_t w = classification ? 3 : 1;
        double *pa = malloc(N_ROWS * 3 * w * sizeof(double)), *pb = malloc(N_ROWS * 3 * w * sizeof(double));
        REQUIRE(pa && pb, "memory");
        moe_model_predict_experts(a, N_ROWS, X, 2, pa, NULL, &err);
        moe_model_predict_experts(b, N_ROWS, X, 2, pb, NULL, &err);
        CHECK(same_doubles(pa, pb, N_ROWS * 3 * w), "expert predictions differ");
        moe_model_predict_gates(a, N_ROWS, X, 2, pa, &err);
        moe_model_predict_gates(b, N_ROWS, X, 2, pb, &err);
        CHECK(same_doubles(pa, pb, N_ROWS * 3), "gates differ");
        free(pa);
        free(pb);
    }
    moe_model_free(a);
    moe_model_free(b);
}

static void test_streamed_regression_bit_identical(void) { streamed_equals_in_memory(0); }
static void test_streamed_classification_bit_identical(void) { streamed_equals_in_memory(1); }

static void test_read_error_stops_training(void) {
    moe_dataset d = dataset(0, 0, N_ROWS);
    copy_src c = {d, 3000};
    moe_source s = copy_source(&c);
    moe_train_params p = params(0);
    moe_model *m = NULL;
    moe_error err;
    memset(&err, 0, sizeof err);
    moe_status st = moe_train_source(&s, &p, &m, &err);
    CHECK(st == MOE_STATUS_IO, "status %d", (int)st);
    CHECK(m == NULL, "a model despite the error");
    CHECK(strstr(err.message, "disk on fire at row 3001") != NULL, "message: %s", err.message);
    moe_model_free(m);
}

/* ---- two shards with a reducer ------------------------------------------- */

/* Two threads stand in for two processes: sum() puts each one's buffer in
 * its slot, waits for the other, and adds the slots in rank order. */
#define SLOT 400000
typedef struct shared_sum {
    pthread_barrier_t bar;
    double *slot[2];
    int failed;
} shared_sum;

typedef struct rank_ctx {
    shared_sum *sh;
    int rank;
} rank_ctx;

static int two_sum(double *buf, size_t n, void *ctx) {
    rank_ctx *r = ctx;
    shared_sum *sh = r->sh;
    if (n > SLOT) {
        sh->failed = 1;
        return -1; /* both ranks see the same n, so both return here */
    }
    memcpy(sh->slot[r->rank], buf, n * sizeof(double));
    pthread_barrier_wait(&sh->bar);
    for (size_t j = 0; j < n; j++) buf[j] = sh->slot[0][j] + sh->slot[1][j];
    pthread_barrier_wait(&sh->bar);
    return 0;
}

typedef struct shard_job {
    moe_dataset d;
    moe_source src;
    moe_reducer red;
    rank_ctx rc;
    moe_train_params p;
    moe_model *m;
    moe_status st;
    moe_error err;
} shard_job;

static void *shard_run(void *arg) {
    shard_job *j = arg;
    j->st = moe_train_source(&j->src, &j->p, &j->m, &j->err);
    return NULL;
}

static void test_two_shards_match_one_process(void) {
    moe_dataset d = dataset(0, 0, N_ROWS);
    moe_train_params p = params(0);
    moe_model *one = NULL;
    moe_error err;
    REQUIRE(moe_train(&d, &p, &one, &err) == MOE_STATUS_OK, "%s", err.message);

    shared_sum sh;
    sh.failed = 0;
    sh.slot[0] = malloc(SLOT * sizeof(double));
    sh.slot[1] = malloc(SLOT * sizeof(double));
    REQUIRE(sh.slot[0] && sh.slot[1], "memory");
    pthread_barrier_init(&sh.bar, NULL, 2);
    size_t cut, end0, b1, end1;
    moe_shard_rows(N_ROWS, 2, 0, &b1, &end0);
    moe_shard_rows(N_ROWS, 2, 1, &cut, &end1);
    CHECK(b1 == 0 && end0 == cut && end1 == N_ROWS, "shards [%zu, %zu) [%zu, %zu)", b1, end0, cut, end1);
    shard_job jobs[2];
    pthread_t th[2];
    for (int r = 0; r < 2; r++) {
        shard_job *j = &jobs[r];
        memset(j, 0, sizeof *j);
        size_t r0 = r ? cut : 0, n = r ? N_ROWS - cut : cut;
        j->d = dataset(0, r0, n);
        j->src = moe_source_from_dataset(&j->d);
        j->src.first_row = r0;
        j->rc.sh = &sh;
        j->rc.rank = r;
        j->red.sum = two_sum;
        j->red.ctx = &j->rc;
        j->red.rank = r;
        j->red.size = 2;
        j->p = p;
        j->p.n_threads = 1;
        j->p.reducer = &j->red;
        pthread_create(&th[r], NULL, shard_run, j);
    }
    for (int r = 0; r < 2; r++) pthread_join(th[r], NULL);
    CHECK(!sh.failed, "a sum larger than the test's slots");
    for (int r = 0; r < 2; r++) CHECK(jobs[r].st == MOE_STATUS_OK, "rank %d: %s", r, jobs[r].err.message);
    if (jobs[0].st == MOE_STATUS_OK && jobs[1].st == MOE_STATUS_OK) {
        moe_fit_report r1 = moe_model_report(one), r0 = moe_model_report(jobs[0].m),
                       rr = moe_model_report(jobs[1].m);
        /* The acceptance asks for 1e-10; whole-slab shards give identity. */
        CHECK(r0.loglik == r1.loglik, "%.17g vs %.17g", r0.loglik, r1.loglik);
        CHECK(r0.loglik == rr.loglik, "ranks disagree: %.17g vs %.17g", r0.loglik, rr.loglik);
        CHECK(r0.n_rows == r1.n_rows, "row counts differ");
        CHECK_NEAR(r0.sum_weights, r1.sum_weights, 1e-13);
        CHECK(r0.aic == r1.aic && r0.entropy == r1.entropy, "criteria differ");
        CHECK(r0.iterations == r1.iterations && r0.best_restart == r1.best_restart,
              "iterations %d vs %d, best restart %d vs %d", r0.iterations, r1.iterations,
              r0.best_restart, r1.best_restart);
        printf("  two shards: loglik %.17g vs %.17g, %d iterations\n", r0.loglik, r1.loglik, r1.iterations);
        double *ma = malloc(N_ROWS * sizeof(double)), *mb = malloc(N_ROWS * sizeof(double));
        REQUIRE(ma && mb, "memory");
        moe_model_predict_mean(one, N_ROWS, X, 2, ma, NULL, &err);
        moe_model_predict_mean(jobs[0].m, N_ROWS, X, 2, mb, NULL, &err);
        double worst = 0.0;
        for (size_t i = 0; i < N_ROWS; i++) worst = fmax(worst, fabs(ma[i] - mb[i]) / fmax(1.0, fabs(ma[i])));
        CHECK(worst == 0.0, "predictions differ by %g", worst);
        free(ma);
        free(mb);
    }
    for (int r = 0; r < 2; r++) moe_model_free(jobs[r].m);
    moe_model_free(one);
    pthread_barrier_destroy(&sh.bar);
    free(sh.slot[0]);
    free(sh.slot[1]);
}

int main(void) {
    make_data();
    RUN(test_streamed_regression_bit_identical);
    RUN(test_streamed_classification_bit_identical);
    RUN(test_read_error_stops_training);
    RUN(test_two_shards_match_one_process);
    return check_finish();
}
