/*
 * test_vmath.c -- the vectorised exp and log (vmath.c) against libm over
 * their whole range: ordinary arguments, arguments near overflow and
 * underflow (subnormal results), subnormal inputs, zero, negatives, +-inf
 * and NaN; and the same bits from the vector loop as from the scalar
 * remainder (one element per call), in place or not, and from every
 * instruction-set version this machine runs (SSE2, AVX2, AVX-512). The
 * small GEMM kernel against a plain loop summing in the same order: the
 * same bits on every version.
 */
#include "check.h"
#include "moe_impl.h"

#include <float.h>
#include <stdint.h>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#define N 200000

static double xs[N], ys[N], ref[N], one[N], base[N];

/* Distance in units in the last place, counting through zero and the
 * subnormals (the order of the bit patterns). */
static double ulps(double a, double b) {
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b) ? 0.0 : INFINITY;
    if (a == b) return 0.0;
    if (isinf(a) || isinf(b)) return INFINITY;
    int64_t ia, ib;
    memcpy(&ia, &a, 8);
    memcpy(&ib, &b, 8);
    if (ia < 0) ia = INT64_MIN - ia;
    if (ib < 0) ib = INT64_MIN - ib;
    return ia > ib ? (double)(uint64_t)(ia - ib) : (double)(uint64_t)(ib - ia);
}

/* Fill xs[0, n) uniformly in [lo, hi]. */
static void fill(moe_rng *r, size_t n, double lo, double hi) {
    for (size_t i = 0; i < n; i++) xs[i] = lo + (hi - lo) * moe_rng_uniform(r);
}

typedef int (*vfn)(int isa, double *y, const double *x, size_t n);

/* Max ulp error of f against libm's g on xs[0, n); also checks that the
 * vector call, the in-place call and one element per call agree bit for
 * bit, on every instruction set, with the baseline version. */
static double check_fn(vfn f, double (*g)(double), size_t n, const char *what) {
    f(MOE_ISA_BASE, base, xs, n);
    size_t bad = 0;
    for (int isa = MOE_ISA_BASE; isa <= MOE_ISA_AVX512; isa++) {
        if (f(isa, ys, xs, n) != 0) continue;
        for (size_t i = 0; i < n; i++) f(isa, one + i, xs + i, 1);
        memcpy(ref, xs, n * sizeof(double));
        f(isa, ref, ref, n);
        for (size_t i = 0; i < n; i++) {
            if (memcmp(ys + i, one + i, 8) != 0 || memcmp(ys + i, ref + i, 8) != 0 ||
                memcmp(ys + i, base + i, 8) != 0) {
                if (bad++ < 3)
                    CHECK(0, "%s(%.17g) isa %d: vector %.17g, scalar %.17g, in place %.17g, "
                          "baseline %.17g", what, xs[i], isa, ys[i], one[i], ref[i], base[i]);
            }
        }
    }
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double u = ulps(base[i], g(xs[i]));
        if (u > worst) worst = u;
        if (u > 1.0 && bad++ < 3)
            CHECK(0, "%s(%.17g) = %.17g, libm %.17g", what, xs[i], base[i], g(xs[i]));
    }
    return worst;
}

static void test_exp_ranges(void) {
    moe_rng r;
    moe_rng_seed(&r, 7);
    const struct {
        double lo, hi;
    } rg[] = {{-1e-300, 1e-300}, {-1, 1}, {-40, 40}, {-745.2, 709.8}, {-745.2, -708.3},
              {708, 709.79}, {-0.5, 0.5}};
    for (size_t k = 0; k < sizeof rg / sizeof rg[0]; k++) {
        fill(&r, N, rg[k].lo, rg[k].hi);
        double u = check_fn(moe_vexp_isa, exp, N, "exp");
        CHECK(u <= 1.0, "exp on [%g, %g]: %g ulp", rg[k].lo, rg[k].hi, u);
    }
}

static void test_exp_special(void) {
    const double x[] = {0.0, -0.0, 1.0, -1.0, INFINITY, -INFINITY, NAN, 709.782712893383973,
                        709.782712893384, 710.0, 1e300, -745.13321910194110, -745.1332191019412,
                        -746.0, -1e300, DBL_MIN, -DBL_MIN, 0x1p-1074, 1e-17, -1e-17, 700.0,
                        -700.0, -708.39641853226408, -720.5};
    size_t n = sizeof x / sizeof x[0];
    memcpy(xs, x, sizeof x);
    double u = check_fn(moe_vexp_isa, exp, n, "exp");
    CHECK(u <= 1.0, "exp specials: %g ulp", u);
    moe_vexp(ys, xs, n);
    CHECK(ys[0] == 1.0 && ys[1] == 1.0, "exp(+-0) = %g %g", ys[0], ys[1]);
    CHECK(isinf(ys[4]) && ys[4] > 0 && ys[5] == 0.0 && isnan(ys[6]), "exp(inf, -inf, nan)");
    CHECK(isinf(ys[9]) && isinf(ys[10]) && ys[13] == 0.0 && ys[14] == 0.0, "overflow and underflow");
    CHECK(ys[11] > 0.0 && ys[11] < DBL_MIN, "exp(-745.133...) is subnormal: %g", ys[11]);
}

static double exp_uniform(moe_rng *r, double lo, double hi) {
    return exp(lo + (hi - lo) * moe_rng_uniform(r));
}

static void test_log_ranges(void) {
    moe_rng r;
    moe_rng_seed(&r, 8);
    const struct {
        double lo, hi;
    } rg[] = {{-700, 700}, {-0.7, 0.7}, {-1e-6, 1e-6}, {-744, -708}, {0, 4}};
    for (size_t k = 0; k < sizeof rg / sizeof rg[0]; k++) {
        for (size_t i = 0; i < N; i++) xs[i] = exp_uniform(&r, rg[k].lo, rg[k].hi);
        double u = check_fn(moe_vlog_isa, log, N, "log");
        CHECK(u <= 1.0, "log on exp([%g, %g]): %g ulp", rg[k].lo, rg[k].hi, u);
    }
    /* every binade, arbitrary mantissas */
    for (size_t i = 0; i < N; i++) {
        uint64_t b = moe_rng_next(&r) & 0x7fffffffffffffffULL;
        memcpy(xs + i, &b, 8);
        if (!isfinite(xs[i])) xs[i] = 1.5;
    }
    double u = check_fn(moe_vlog_isa, log, N, "log");
    CHECK(u <= 1.0, "log on random bit patterns: %g ulp", u);
}

static void test_log_special(void) {
    const double x[] = {1.0, 0.0, -0.0, -1.0, INFINITY, -INFINITY, NAN, DBL_MAX, DBL_MIN,
                        0x1p-1074, 0x1p-1060 * 1.3, 2.0, 0.5, 1.0 + DBL_EPSILON, 1.0 - DBL_EPSILON,
                        1.4142135623730951, 0.70710678118654746, 8.0, 1e-300, -1e-300};
    size_t n = sizeof x / sizeof x[0];
    memcpy(xs, x, sizeof x);
    double u = check_fn(moe_vlog_isa, log, n, "log");
    CHECK(u <= 1.0, "log specials: %g ulp", u);
    moe_vlog(ys, xs, n);
    CHECK(ys[0] == 0.0 && !signbit(ys[0]), "log(1) = %g", ys[0]);
    CHECK(isinf(ys[1]) && ys[1] < 0 && isinf(ys[2]) && ys[2] < 0, "log(+-0) = -inf");
    CHECK(isnan(ys[3]) && isnan(ys[5]) && isnan(ys[6]) && isnan(ys[19]), "log of negatives, nan");
    CHECK(isinf(ys[4]) && ys[4] > 0, "log(inf) = inf");
}

/* C = A B' for the shapes of the gate and expert maps and around the
 * kernel's 4 x 8 tiles: every version against the plain loop, bit for bit. */
static void test_gemm_nt(void) {
    static const size_t ms[] = {256, 255, 3, 1}, ns[] = {1, 7, 8, 9, 16, 17, 33, 64},
                        ks[] = {1, 2, 11, 51, 64};
    moe_rng r;
    moe_rng_seed(&r, 9);
    size_t lda = 70, ldb = 66, ldc = 65;
    double *A = malloc(256 * lda * sizeof *A), *B = malloc(64 * ldb * sizeof *B);
    double *C = malloc(256 * ldc * sizeof *C), *R = malloc(256 * ldc * sizeof *R);
    double *bt = malloc(64 * 64 * sizeof *bt);
    for (size_t j = 0; j < 256 * lda; j++) A[j] = moe_rng_normal(&r);
    for (size_t j = 0; j < 64 * ldb; j++) B[j] = moe_rng_normal(&r);
    size_t bad = 0;
    for (size_t im = 0; im < sizeof ms / sizeof ms[0]; im++)
        for (size_t in = 0; in < sizeof ns / sizeof ns[0]; in++)
            for (size_t ik = 0; ik < sizeof ks / sizeof ks[0]; ik++) {
                size_t m = ms[im], n = ns[in], k = ks[ik];
                for (size_t i = 0; i < m; i++)
                    for (size_t o = 0; o < n; o++) {
                        double s = A[i * lda] * B[o * ldb];
                        for (size_t j = 1; j < k; j++) s += A[i * lda + j] * B[o * ldb + j];
                        R[i * ldc + o] = s;
                    }
                for (int isa = MOE_ISA_BASE; isa <= MOE_ISA_AVX512; isa++) {
                    if (moe_gemm_nt_isa(isa, m, n, k, A, lda, B, ldb, C, ldc, bt) != 0) continue;
                    for (size_t i = 0; i < m; i++)
                        if (memcmp(C + i * ldc, R + i * ldc, n * sizeof *C) != 0 && bad++ < 3)
                            CHECK(0, "gemm_nt isa %d m %zu n %zu k %zu: row %zu differs", isa, m,
                                  n, k, i);
                }
            }
    free(A);
    free(B);
    free(C);
    free(R);
    free(bt);
}

int main(void) {
    printf("  instruction sets: baseline%s%s\n", moe_isa_has(MOE_ISA_AVX2) ? ", AVX2" : "",
           moe_isa_has(MOE_ISA_AVX512) ? ", AVX-512" : "");
    RUN(test_exp_ranges);
    RUN(test_exp_special);
    RUN(test_log_ranges);
    RUN(test_log_special);
    RUN(test_gemm_nt);
    return check_finish();
}
