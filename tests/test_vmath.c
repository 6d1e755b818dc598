/*
 * test_vmath.c -- the vectorised exp and log (vmath.c) against libm over
 * their whole range: ordinary arguments, arguments near overflow and
 * underflow (subnormal results), subnormal inputs, zero, negatives, +-inf
 * and NaN, on every instruction-set version this machine runs (SSE2,
 * AVX2, AVX-512); and the same bits from the vector loop as from the
 * scalar remainder (one element per call), in place or not, and from every
 * version of a family: log's the same bits on all of them, exp's on those
 * with fused multiply-adds (AVX2 and AVX-512 here, its polynomial form)
 * and on those without (the x86-64 baseline, fdlibm's form). The
 * small GEMM kernel against a plain loop summing in the same order: the
 * same bits on every version. The E-step's fused rows of a flat gate
 * (forward.c, exp and log in registers) against the separate passes: the
 * same bits in every array, on every version.
 */
#include "check.h"
#include "moe_impl.h"

#include <float.h>
#include <stdint.h>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

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

typedef int (*vfn)(int isa, double *y, const double *x, size_t n);

static double fam_ref[2][N];

/* Max ulp error of f against libm's g on xs[0, n), over every instruction
 * set this machine runs; also checks that the vector call, the in-place
 * call and one element per call agree bit for bit, and that the versions
 * agree with each other: all of them when one_form (log: one algorithm,
 * no fused multiply-add anywhere), else those of one family (exp: the
 * versions without fused multiply-adds -- the x86-64 baseline -- take
 * fdlibm's form, those with them -- AVX2, AVX-512, moe_isa_fma -- the
 * polynomial, whose last bits differ; within each family the same bits). */
static double check_fn(vfn f, double (*g)(double), size_t n, const char *what, int one_form) {
    size_t bad = 0;
    int have[2] = {0, 0};
    double worst = 0.0;
    for (int isa = MOE_ISA_BASE; isa <= MOE_ISA_AVX512; isa++) {
        if (f(isa, ys, xs, n) != 0) continue;
        for (size_t i = 0; i < n; i++) f(isa, one + i, xs + i, 1);
        memcpy(ref, xs, n * sizeof(double));
        f(isa, ref, ref, n);
        int fam = one_form ? 0 : moe_isa_fma(isa);
        if (!have[fam]) memcpy(fam_ref[fam], ys, n * sizeof(double));
        have[fam] = 1;
        const double *fr = fam_ref[fam];
        for (size_t i = 0; i < n; i++) {
            if (memcmp(ys + i, one + i, 8) != 0 || memcmp(ys + i, ref + i, 8) != 0 ||
                memcmp(ys + i, fr + i, 8) != 0) {
                if (bad++ < 3)
                    CHECK(0, "%s(%.17g) isa %d: vector %.17g, scalar %.17g, in place %.17g, "
                          "first of its family %.17g", what, xs[i], isa, ys[i], one[i], ref[i],
                          fr[i]);
            }
            double u = ulps(ys[i], g(xs[i]));
            if (u > worst) worst = u;
            if (u > 1.0 && bad++ < 3)
                CHECK(0, "%s(%.17g) isa %d = %.17g, libm %.17g", what, xs[i], isa, ys[i],
                      g(xs[i]));
        }
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
        double u = check_fn(moe_vexp_isa, exp, N, "exp", 0);
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
    double u = check_fn(moe_vexp_isa, exp, n, "exp", 0);
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
        double u = check_fn(moe_vlog_isa, log, N, "log", 1);
        CHECK(u <= 1.0, "log on exp([%g, %g]): %g ulp", rg[k].lo, rg[k].hi, u);
    }
    /* every binade, arbitrary mantissas */
    for (size_t i = 0; i < N; i++) {
        uint64_t b = moe_rng_next(&r) & 0x7fffffffffffffffULL;
        memcpy(xs + i, &b, 8);
        if (!isfinite(xs[i])) xs[i] = 1.5;
    }
    double u = check_fn(moe_vlog_isa, log, N, "log", 1);
    CHECK(u <= 1.0, "log on random bit patterns: %g ulp", u);
}

static void test_log_special(void) {
    const double x[] = {1.0, 0.0, -0.0, -1.0, INFINITY, -INFINITY, NAN, DBL_MAX, DBL_MIN,
                        0x1p-1074, 0x1p-1060 * 1.3, 2.0, 0.5, 1.0 + DBL_EPSILON, 1.0 - DBL_EPSILON,
                        1.4142135623730951, 0.70710678118654746, 8.0, 1e-300, -1e-300};
    size_t n = sizeof x / sizeof x[0];
    memcpy(xs, x, sizeof x);
    double u = check_fn(moe_vlog_isa, log, n, "log", 1);
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

/* The E-step's block pass with a flat gate of K = 8 and 16 leaves, fused
 * (moe_block_forward_isa) and as moe_block_gates, _experts and _posterior:
 * the same bits in every array they leave, on every instruction set and
 * block size, with a row far from every expert (zero densities: the
 * prior's fallback). */
static void test_block_forward(void) {
    enum { NR = 600, D = 10 };
    moe_rng r;
    moe_rng_seed(&r, 10);
    double *x = malloc(NR * D * sizeof *x), *y = malloc(NR * sizeof *y);
    for (size_t i = 0; i < NR; i++) {
        double s = 0.0;
        for (size_t j = 0; j < D; j++) s += (x[i * D + j] = moe_rng_normal(&r)) * (double)(j % 3);
        y[i] = (s > 0 ? s : -2.0 * s) + 0.3 * moe_rng_normal(&r);
    }
    y[7] = 1e200;
    static const size_t Ks[] = {8, 16}, nbs[] = {256, 255, 9, 1};
    for (size_t ik = 0; ik < 2; ik++) {
        moe_dataset d = {NR, D, x, D, 1, y, 1, 0, NULL, NULL};
        moe_train_params p = moe_train_params_default();
        p.tree.n_levels = 1;
        p.tree.branching[0] = Ks[ik];
        p.max_iter = 3;
        p.n_threads = 1;
        moe_model *m = NULL;
        REQUIRE(moe_train(&d, &p, &m, NULL) == MOE_STATUS_OK, "train K = %zu", Ks[ik]);
        moe_nodes nd;
        moe_block b[2];
        REQUIRE(moe_nodes_init(&nd, m) == MOE_STATUS_OK, "nodes");
        REQUIRE(moe_block_alloc(&b[0], m, &nd) == MOE_STATUS_OK &&
                    moe_block_alloc(&b[1], m, &nd) == MOE_STATUS_OK,
                "blocks");
        size_t K = m->n_leaves, NN = nd.n_nodes, GR = nd.gate_rows;
        for (int isa = MOE_ISA_BASE; isa <= MOE_ISA_AVX512; isa++) {
            if (!moe_isa_has(isa)) continue;
            for (size_t in = 0; in < sizeof nbs / sizeof nbs[0]; in++) {
                size_t nb = nbs[in];
                for (int f = 0; f < 2; f++)
                    moe_block_forward_isa(isa, m, &nd, &b[f], nb, x, D, y, 1, NULL, f);
                const struct {
                    const char *name;
                    const double *a, *c;
                    size_t n;
                } arr[] = {{"gl", b[0].gl, b[1].gl, nb * GR},
                           {"gp", b[0].gp, b[1].gp, nb * GR},
                           {"lp", b[0].lp, b[1].lp, nb * NN},
                           {"post", b[0].post, b[1].post, nb * NN},
                           {"tgt", b[0].tgt, b[1].tgt, nb},
                           {"ll", b[0].ll, b[1].ll, nb},
                           {"ent", b[0].ent, b[1].ent, nb}};
                for (size_t a = 0; a < sizeof arr / sizeof arr[0]; a++)
                    CHECK(memcmp(arr[a].a, arr[a].c, arr[a].n * sizeof(double)) == 0,
                          "K %zu isa %d nb %zu: %s differs", K, isa, nb, arr[a].name);
                if (nb > 7)
                    CHECK(isinf(b[1].ll[7]) && b[1].post[7 * NN + 1] > 0.0,
                          "the far row: ll %g", b[1].ll[7]);
            }
        }
        moe_block_free(&b[0]);
        moe_block_free(&b[1]);
        moe_nodes_free(&nd);
        moe_model_free(m);
    }
    free(x);
    free(y);
}

int main(void) {
    printf("  instruction sets: baseline%s%s\n", moe_isa_has(MOE_ISA_AVX2) ? ", AVX2" : "",
           moe_isa_has(MOE_ISA_AVX512) ? ", AVX-512" : "");
    RUN(test_exp_ranges);
    RUN(test_exp_special);
    RUN(test_log_ranges);
    RUN(test_log_special);
    RUN(test_gemm_nt);
    RUN(test_block_forward);
    return check_finish();
}
