/*
 * vmath.c -- exp and log over whole arrays, written so that the compiler
 * vectorises them (the block pass calls them on every gate and posterior
 * entry of a block at once instead of once per entry through libm).
 *
 * The algorithms are fdlibm's (Sun Microsystems 1993, e_exp.c and e_log.c),
 * both accurate to less than 1 ulp, made branch-free: special inputs are
 * handled by clamping and selects, and the scaling by 2^k is done in two
 * steps, so one straight-line body serves every input, including
 * subnormal results, overflow, +-inf, NaN, zero and negative arguments.
 *
 * Determinism: every operation is an IEEE add, multiply or divide of its own
 * (no fused multiply-add: ISO C mode gives GCC -ffp-contract=off, and clang
 * is told the same below), so the vector lanes, the scalar remainder and
 * the SSE2, AVX2 and AVX-512 versions all give the same bits for the same
 * input, whatever the thread count and the x86-64 machine.
 * Each kernel is compiled once per instruction set (VMATH_VERSION below)
 * and the entry points take the widest one the machine runs
 * (moe_isa_best); the _isa entry points let tests/test_vmath.c check the
 * accuracy against libm and the identity of the versions, vector and
 * scalar paths.
 */
#include "moe_impl.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
/* Lets GCC evaluate both arms of the selects (so the loops vectorise); it
 * changes no result, only the status flags nobody here reads. */
#pragma GCC optimize("no-trapping-math")
#endif

/* The instruction sets besides the baseline (SSE2 on x86-64): neither AVX2
 * nor AVX-512F brings fused multiply-adds into this code (contraction is
 * off), so every version rounds exactly as the baseline. */
int moe_isa_best(void) {
#if MOE_ISA_X86
    if (__builtin_cpu_supports("avx512f")) return MOE_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return MOE_ISA_AVX2;
#endif
    return MOE_ISA_BASE;
}

int moe_isa_has(int isa) {
    return isa >= MOE_ISA_BASE && isa <= moe_isa_best();
}

static inline uint64_t as_bits(double x) {
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static inline double as_double(uint64_t u) {
    double x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* exp (fdlibm e_exp.c): x = k ln2 + r, |r| <= ln2/2 (ln2 split in a high
 * part with 21 trailing zero bits, so k ln2_hi is exact); exp(r) from the
 * rational form 1 - ((lo - r c / (2 - c)) - hi) with c = r - r^2 P(r^2);
 * then times 2^k as 2^k1 2^k2, k1 about k/2, so that both factors are
 * normal numbers and the only rounding is the last product (which gives
 * subnormal results and overflow to inf correctly). x is first clamped to
 * [-746, 710], beyond which the result is 0 or inf anyway; NaN passes
 * through the arithmetic. */
MOE_ISA_INLINE double exp_one(double x) {
    const double shift = 0x1.8p52, invln2 = 1.44269504088896338700e+00,
                 ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10,
                 P1 = 1.66666666666666019037e-01, P2 = -2.77777777770155933842e-03,
                 P3 = 6.61375632143793436117e-05, P4 = -1.65339022054652515390e-06,
                 P5 = 4.13813679705723846039e-08;
    double xc = x > 710.0 ? 710.0 : x;
    xc = xc < -746.0 ? -746.0 : xc;
    double ks = xc * invln2 + shift, k = ks - shift; /* nearest integer, held in ks's low bits */
    double hi = xc - k * ln2_hi, lo = k * ln2_lo, r = hi - lo;
    double t = r * r;
    double c = r - t * (P1 + t * (P2 + t * (P3 + t * (P4 + t * P5))));
    double y = 1.0 - ((lo - (r * c) / (2.0 - c)) - hi);
    /* 2^k = 2^k1 2^k2 with k1 = floor((k + 1076) / 2) - 538, from the bits:
     * u = k + 1076 in [0, 2101], the exponent fields k1 + 1023 and k2 + 1023
     * both >= 485. Any split into normal factors gives y 2^k1 exactly and
     * the same one rounding at the end (fdlibm splits k as round(k / 2)). */
    uint64_t u = as_bits(ks) - as_bits(shift) + 1076, h = u >> 1;
    return y * as_double((h + 485) << 52) * as_double((u - h + 485) << 52);
}

/* log (fdlibm e_log.c): x = 2^k (1 + f) with 1 + f in [sqrt(2)/2, sqrt(2)]
 * (found by adding to the exponent bits, musl's form), s = f / (2 + f),
 * log(1 + f) = f - (hfsq - s (hfsq + R(s^2))), hfsq = f^2 / 2. Subnormal x
 * is scaled by 2^54 first; zero, negative, inf and NaN are selected at the
 * end. */
MOE_ISA_INLINE double log_one(double x) {
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10,
                 Lg1 = 6.666666666666735130e-01, Lg2 = 3.999999999940941908e-01,
                 Lg3 = 2.857142874366239149e-01, Lg4 = 2.222219843214978396e-01,
                 Lg5 = 1.818357216161805012e-01, Lg6 = 1.531383769920937332e-01,
                 Lg7 = 1.479819860511658591e-01;
    int sub = x < 0x1p-1022;
    double xs = sub ? x * 0x1p54 : x;
    double kadj = sub ? -54.0 : 0.0;
    uint64_t ix = as_bits(xs) + ((uint64_t)(0x3ff00000 - 0x3fe6a09e) << 32);
    double k = as_double(0x4330000000000000ULL | (ix >> 52)) - (0x1p52 + 1023.0) + kadj;
    ix = (ix & 0x000fffffffffffffULL) + ((uint64_t)0x3fe6a09e << 32);
    double f = as_double(ix) - 1.0;
    double hfsq = 0.5 * f * f, s = f / (2.0 + f), z = s * s, w = z * z;
    double t1 = w * (Lg2 + w * (Lg4 + w * Lg6));
    double t2 = z * (Lg1 + w * (Lg3 + w * (Lg5 + w * Lg7)));
    double R = t2 + t1;
    double y = k * ln2_hi - ((hfsq - (s * (hfsq + R) + k * ln2_lo)) - f);
    /* x == 0: -inf; x == +inf or NaN: x; x < 0: NaN. */
    double special = x == 0.0 ? -INFINITY : (x > 0.0 || x != x ? x : NAN);
    return x > 0.0 && x < INFINITY ? y : special;
}

/* C = A B' for a short inner dimension (the gate logits and the expert
 * outputs of a block: m = 256 rows, n and k a few dozen at most), where
 * OpenBLAS's small-matrix path reaches a fraction of the machine's rate.
 * B' is copied once into bt (k x n); then tiles of 4 rows x 8 outputs are
 * held in registers while j runs over k. Every entry of C is
 * a_i0 b_0 + a_i1 b_1 + ... summed in order of j, on every path (tile or
 * remainder, any instruction set), so the bits never depend on the path. */
/* Eight doubles as one value (GCC and clang vector extension): one AVX-512
 * register, two AVX2 or four SSE2 ones. */
typedef double v8d __attribute__((vector_size(64)));

/* (a macro: a function returning v8d would change the baseline ABI) */
#define LOAD8(v, p) memcpy(&(v), (p), sizeof(v8d))

MOE_ISA_INLINE void gemm_nt_body(size_t m, size_t n, size_t k, const double *A, size_t lda,
                                  const double *B, size_t ldb, double *C, size_t ldc, double *bt) {
    enum { TR = 4, TO = 8 };
    if (k == 0) {
        for (size_t i = 0; i < m; i++)
            for (size_t o = 0; o < n; o++) C[i * ldc + o] = 0.0;
        return;
    }
    for (size_t j = 0; j < k; j++)
        for (size_t o = 0; o < n; o++) bt[j * n + o] = B[o * ldb + j];
    size_t i = 0, nt = n / TO * TO;
    for (; i + TR <= m; i += TR) {
        const double *a = A + i * lda;
        double *c = C + i * ldc;
        for (size_t o0 = 0; o0 < nt; o0 += TO) {
            v8d acc[TR], b0;
            LOAD8(b0, bt + o0);
            for (size_t r = 0; r < TR; r++) acc[r] = a[r * lda] * b0;
            for (size_t j = 1; j < k; j++) {
                LOAD8(b0, bt + j * n + o0);
                for (size_t r = 0; r < TR; r++) acc[r] += a[r * lda + j] * b0;
            }
            for (size_t r = 0; r < TR; r++) memcpy(c + r * ldc + o0, &acc[r], sizeof(v8d));
        }
        for (size_t r = 0; r < TR; r++)
            for (size_t o = nt; o < n; o++) {
                double s = a[r * lda] * bt[o];
                for (size_t j = 1; j < k; j++) s += a[r * lda + j] * bt[j * n + o];
                c[r * ldc + o] = s;
            }
    }
    for (; i < m; i++)
        for (size_t o = 0; o < n; o++) {
            const double *a = A + i * lda;
            double s = a[0] * bt[o];
            for (size_t j = 1; j < k; j++) s += a[j] * bt[j * n + o];
            C[i * ldc + o] = s;
        }
}

/* One version of every kernel for the target ATTR, its functions named
 * with SFX. */
#define VMATH_VERSION(SFX, ATTR)                                                                \
    ATTR static void vexp_##SFX(double *y, const double *x, size_t n) {                         \
        for (size_t i = 0; i < n; i++) y[i] = exp_one(x[i]);                                    \
    }                                                                                           \
    ATTR static void vlog_##SFX(double *y, const double *x, size_t n) {                         \
        for (size_t i = 0; i < n; i++) y[i] = log_one(x[i]);                                    \
    }                                                                                           \
    ATTR static void gemm_nt_##SFX(size_t m, size_t n, size_t k, const double *A, size_t lda,   \
                                   const double *B, size_t ldb, double *C, size_t ldc,          \
                                   double *bt) {                                                \
        gemm_nt_body(m, n, k, A, lda, B, ldb, C, ldc, bt);                                      \
    }
MOE_ISA_VERSIONS(VMATH_VERSION)

/* The entry points: the _isa ones run the version asked for (-1 when this
 * machine lacks it), the others the widest one. */

int moe_vexp_isa(int isa, double *y, const double *x, size_t n) {
    if (!moe_isa_has(isa)) return -1;
    MOE_ISA_CALL(isa, vexp, y, x, n);
    return 0;
}

int moe_vlog_isa(int isa, double *y, const double *x, size_t n) {
    if (!moe_isa_has(isa)) return -1;
    MOE_ISA_CALL(isa, vlog, y, x, n);
    return 0;
}

int moe_gemm_nt_isa(int isa, size_t m, size_t n, size_t k, const double *A, size_t lda,
                    const double *B, size_t ldb, double *C, size_t ldc, double *bt) {
    if (!moe_isa_has(isa)) return -1;
    MOE_ISA_CALL(isa, gemm_nt, m, n, k, A, lda, B, ldb, C, ldc, bt);
    return 0;
}

void moe_vexp(double *y, const double *x, size_t n) {
    moe_vexp_isa(moe_isa_best(), y, x, n);
}

void moe_vlog(double *y, const double *x, size_t n) {
    moe_vlog_isa(moe_isa_best(), y, x, n);
}

void moe_gemm_nt(size_t m, size_t n, size_t k, const double *A, size_t lda, const double *B,
                 size_t ldb, double *C, size_t ldc, double *bt) {
    moe_gemm_nt_isa(moe_isa_best(), m, n, k, A, lda, B, ldb, C, ldc, bt);
}

