/*
 * test_vmath.c -- the vectorised exp and log (vmath.c) against libm over
 * their whole range: ordinary arguments, arguments near overflow and
 * underflow (subnormal results), subnormal inputs, zero, negatives, +-inf
 * and NaN; and the same bits from the vector loop as from the scalar
 * remainder (one element per call), in place or not.
 */
#include "check.h"
#include "moe_impl.h"

#include <float.h>
#include <stdint.h>

#define N 200000

static double xs[N], ys[N], ref[N], one[N];

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

/* Max ulp error of f against libm's g on xs[0, n); also checks that the
 * vector call, the in-place call and one element per call agree bit for bit. */
static double check_fn(void (*f)(double *, const double *, size_t), double (*g)(double),
                       size_t n, const char *what) {
    f(ys, xs, n);
    for (size_t i = 0; i < n; i++) f(one + i, xs + i, 1);
    memcpy(ref, xs, n * sizeof(double));
    f(ref, ref, n);
    double worst = 0.0;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (memcmp(ys + i, one + i, 8) != 0 || memcmp(ys + i, ref + i, 8) != 0) {
            if (bad++ < 3)
                CHECK(0, "%s(%.17g): vector %.17g, scalar %.17g, in place %.17g", what, xs[i],
                      ys[i], one[i], ref[i]);
        }
        double u = ulps(ys[i], g(xs[i]));
        if (u > worst) worst = u;
        if (u > 1.0 && bad++ < 3)
            CHECK(0, "%s(%.17g) = %.17g, libm %.17g", what, xs[i], ys[i], g(xs[i]));
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
        double u = check_fn(moe_vexp, exp, N, "exp");
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
    double u = check_fn(moe_vexp, exp, n, "exp");
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
        double u = check_fn(moe_vlog, log, N, "log");
        CHECK(u <= 1.0, "log on exp([%g, %g]): %g ulp", rg[k].lo, rg[k].hi, u);
    }
    /* every binade, arbitrary mantissas */
    for (size_t i = 0; i < N; i++) {
        uint64_t b = moe_rng_next(&r) & 0x7fffffffffffffffULL;
        memcpy(xs + i, &b, 8);
        if (!isfinite(xs[i])) xs[i] = 1.5;
    }
    double u = check_fn(moe_vlog, log, N, "log");
    CHECK(u <= 1.0, "log on random bit patterns: %g ulp", u);
}

static void test_log_special(void) {
    const double x[] = {1.0, 0.0, -0.0, -1.0, INFINITY, -INFINITY, NAN, DBL_MAX, DBL_MIN,
                        0x1p-1074, 0x1p-1060 * 1.3, 2.0, 0.5, 1.0 + DBL_EPSILON, 1.0 - DBL_EPSILON,
                        1.4142135623730951, 0.70710678118654746, 8.0, 1e-300, -1e-300};
    size_t n = sizeof x / sizeof x[0];
    memcpy(xs, x, sizeof x);
    double u = check_fn(moe_vlog, log, n, "log");
    CHECK(u <= 1.0, "log specials: %g ulp", u);
    moe_vlog(ys, xs, n);
    CHECK(ys[0] == 0.0 && !signbit(ys[0]), "log(1) = %g", ys[0]);
    CHECK(isinf(ys[1]) && ys[1] < 0 && isinf(ys[2]) && ys[2] < 0, "log(+-0) = -inf");
    CHECK(isnan(ys[3]) && isnan(ys[5]) && isnan(ys[6]) && isnan(ys[19]), "log of negatives, nan");
    CHECK(isinf(ys[4]) && ys[4] > 0, "log(inf) = inf");
}

int main(void) {
    RUN(test_exp_ranges);
    RUN(test_exp_special);
    RUN(test_log_ranges);
    RUN(test_log_special);
    return check_finish();
}
