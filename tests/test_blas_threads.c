/*
 * test_blas_threads.c -- a fit does not depend on OpenBLAS's own thread
 * count. A threaded OpenBLAS factors a larger system in another order
 * (dpotrf from about 80 unknowns: the gates' Newton step of 9 experts on
 * 10 inputs has 88), so without moe_blas_serial_begin a fit's last bits
 * followed OPENBLAS_NUM_THREADS / OMP_NUM_THREADS. With OpenBLAS at 1 and
 * at 2 threads before the call, and OpenMP at 1 and 3 (OpenBLAS 0.3.21's
 * OpenMP build sets its own count back to OpenMP's at each dpotrf, so a
 * guard on OpenBLAS's count alone left the factorisation threaded when
 * OpenMP had threads to spare): the same model bytes, and the caller's
 * OpenBLAS and OpenMP thread counts are as they were afterwards.
 *
 * Data (seed 31): 3000 rows, 10 standard normal inputs, y from 9 linear
 * experts under a softmax gate, noise sd 0.3.
 */
#include "check.h"
#include "moe_impl.h"

#include <cblas.h>
#include <omp.h>
#include <string.h>

#define N 3000
#define D 10
#define K 9

static double X[N * D], Y[N];

static void make_data(void) {
    check_gen s = {31};
    double gw[K * D], ew[K * (D + 1)];
    for (size_t i = 0; i < K * D; i++) gw[i] = check_gen_norm(&s);
    for (size_t i = 0; i < K * (D + 1); i++) ew[i] = check_gen_norm(&s);
    for (size_t i = 0; i < N; i++) {
        double l[K], mx = -1e300, sum = 0.0;
        for (size_t c = 0; c < D; c++) X[i * D + c] = check_gen_norm(&s);
        for (size_t j = 0; j < K; j++) {
            l[j] = 0.0;
            for (size_t c = 0; c < D; c++) l[j] += gw[j * D + c] * X[i * D + c];
            if (l[j] > mx) mx = l[j];
        }
        for (size_t j = 0; j < K; j++) sum += (l[j] = exp(l[j] - mx));
        double u = check_gen_unif(&s) * sum;
        size_t j = 0;
        while (j + 1 < K && u >= l[j]) u -= l[j++];
        Y[i] = ew[j * (D + 1)] + 0.3 * check_gen_norm(&s);
        for (size_t c = 0; c < D; c++) Y[i] += ew[j * (D + 1) + 1 + c] * X[i * D + c];
    }
}

/* The model's bytes after a fit (on one thread of moe's) with OpenBLAS at
 * blas threads and OpenMP at omp (the caller's counts) into *out
 * (malloc'd, the caller frees; NULL on failure), their number into *size. */
static void fit_bytes(int blas, int omp, void **out, size_t *size) {
    *out = NULL;
    moe_dataset d;
    memset(&d, 0, sizeof d);
    d.n_rows = N;
    d.n_cols = D;
    d.x = X;
    d.ld_x = D;
    d.n_outputs = 1;
    d.y = Y;
    d.ld_y = 1;
    moe_train_params p = moe_train_params_default();
    p.tree.n_levels = 1;
    p.tree.branching[0] = K;
    p.n_restarts = 1;
    p.max_iter = 15;
    p.seed = 5;
    p.n_threads = 1;
    openblas_set_num_threads(blas);
    omp_set_num_threads(omp);
    moe_model *m = NULL;
    moe_error err;
    REQUIRE(moe_train(&d, &p, &m, &err) == MOE_STATUS_OK, "%s", err.message);
    CHECK(openblas_get_num_threads() == blas, "OpenBLAS threads %d after the fit, %d before",
          openblas_get_num_threads(), blas);
    CHECK(omp_get_max_threads() == omp, "OpenMP threads %d after the fit, %d before",
          omp_get_max_threads(), omp);
    CHECK(moe_model_save_buffer(m, out, size, &err) == MOE_STATUS_OK, "%s", err.message);
    moe_model_free(m);
}

static void test_fit_ignores_blas_threads(void) {
    size_t n1 = 0, n2 = 0;
    void *a = NULL, *b = NULL;
    fit_bytes(1, 1, &a, &n1);
    fit_bytes(2, 3, &b, &n2);
    REQUIRE(a && b, "no model");
    CHECK(n1 == n2 && memcmp(a, b, n1) == 0,
          "the model differs with OpenBLAS and OpenMP at 1 thread and at 2 and 3");
    free(a);
    free(b);
}

static void test_guard_restores(void) {
    openblas_set_num_threads(2);
    omp_set_num_threads(3);
    moe_blas_saved s = moe_blas_serial_begin();
    CHECK(openblas_get_num_threads() == 1, "OpenBLAS threads %d inside", openblas_get_num_threads());
    CHECK(omp_get_max_threads() == 3, "OpenMP threads %d inside", omp_get_max_threads());
    moe_blas_serial_end(s);
    CHECK(openblas_get_num_threads() == 2, "OpenBLAS threads %d after", openblas_get_num_threads());
    CHECK(omp_get_max_threads() == 3, "OpenMP threads %d after", omp_get_max_threads());
}

int main(void) {
#if defined(OPENBLAS_VERSION)
    make_data();
    RUN(test_guard_restores);
    RUN(test_fit_ignores_blas_threads);
#else
    printf("  (not OpenBLAS: nothing to test)\n");
#endif
    return check_finish();
}
