/*
 * vmath_impl.h -- exp and log of one double and of arrays, the bodies of
 * vmath.c's kernels, also inlined where forward.c exponentiates a block's
 * values: one algorithm per version, so every caller and vector lane of a
 * version gets the same bits, and so do the versions with fused
 * multiply-adds (AVX2, AVX-512: the same operations, whether the compiler
 * vectorises the scalar body or AVX-512 intrinsics spell it out) and those
 * without. vmath.c says which algorithms and why.
 *
 * Loops over them vectorise (GCC and clang) when the including file turns
 * contraction off (GCC in ISO C mode does; clang: #pragma STDC FP_CONTRACT
 * OFF) and, for GCC, lets both arms of a select be evaluated
 * (#pragma GCC optimize("no-trapping-math") before this header).
 */
#ifndef MOE_VMATH_IMPL_H
#define MOE_VMATH_IMPL_H

#include "moe_impl.h"

#include <math.h>
#include <stdint.h>
#include <string.h>
#if MOE_ISA_X86
#include <immintrin.h>
#endif

static inline uint64_t moe_as_bits(double x) {
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static inline double moe_as_double(uint64_t u) {
    double x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* y 2^k, k the integer held in the low bits of ks = k + 0x1.8p52, k in
 * [-1076, 1025]: as 2^k1 2^k2 with k1 = floor((k + 1076) / 2) - 538, from
 * the bits: u = k + 1076 in [0, 2101], the exponent fields k1 + 1023 and
 * k2 + 1023 both >= 485, so both factors are normal numbers, y 2^k1 is
 * exact (y within a factor 2 of 1) and the last product is the only
 * rounding (which gives subnormal results and overflow to inf correctly;
 * fdlibm splits k as round(k / 2), any split into normal factors gives the
 * same bits). */
MOE_ISA_INLINE double moe_exp_scale(double y, double ks) {
    uint64_t u = moe_as_bits(ks) - moe_as_bits(0x1.8p52) + 1076, h = u >> 1;
    return y * moe_as_double((h + 485) << 52) * moe_as_double((u - h + 485) << 52);
}

/* x clamped to [-746, 710], beyond which exp is 0 or inf anyway (so that
 * k stays in moe_exp_scale's range); NaN passes. With le0 (the caller's x
 * is at most 0 or NaN: a value minus its set's max) only the lower bound,
 * which gives the same result for those x at a select less. */
MOE_ISA_INLINE double moe_exp_clamp(double x, int le0) {
    double xc = !le0 && x > 710.0 ? 710.0 : x;
    return xc < -746.0 ? -746.0 : xc;
}

/* exp (fdlibm e_exp.c): x = k ln2 + r, |r| <= ln2/2 (ln2 split in a high
 * part with 21 trailing zero bits, so k ln2_hi is exact); exp(r) from the
 * rational form 1 - ((lo - r c / (2 - c)) - hi) with c = r - r^2 P(r^2);
 * then times 2^k. Each operation rounded on its own: the version of the
 * instruction sets without fused multiply-adds. */
MOE_ISA_INLINE double moe_exp_fdlibm(double x, int le0) {
    const double shift = 0x1.8p52, invln2 = 1.44269504088896338700e+00,
                 ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10,
                 P1 = 1.66666666666666019037e-01, P2 = -2.77777777770155933842e-03,
                 P3 = 6.61375632143793436117e-05, P4 = -1.65339022054652515390e-06,
                 P5 = 4.13813679705723846039e-08;
    double xc = moe_exp_clamp(x, le0);
    double ks = xc * invln2 + shift, k = ks - shift; /* nearest integer, held in ks's low bits */
    double hi = xc - k * ln2_hi, lo = k * ln2_lo, r = hi - lo;
    double t = r * r;
    double c = r - t * (P1 + t * (P2 + t * (P3 + t * (P4 + t * P5))));
    double y = 1.0 - ((lo - (r * c) / (2.0 - c)) - hi);
    return moe_exp_scale(y, ks);
}

/* exp with fused multiply-adds (the AVX2 and AVX-512 versions): the same
 * reduction, x = k ln2 + r, with x - k ln2_hi exact in one fused
 * multiply-add (ln2_hi the double nearest ln2: the difference is a
 * multiple of 2^-54 below ln2/2 in magnitude, or x itself when k = 0) and
 * r = that - k ln2_lo rounded once; then exp(r) = 1 + r (1 + r q(r)) by
 * Horner's rule, q of degree 10 interpolating (e^r - 1 - r) / r^2 at the
 * Chebyshev nodes of [-0.347, 0.347] (error below 0.003 ulp; coefficients
 * computed with mpmath), then times 2^k: 16 multiply-adds and no
 * division. Under 0.9 ulp from exp (measured against long double expl on
 * 4e7 arguments; tests/test_vmath.c checks it against libm); its bits
 * differ from fdlibm's in the last place for about one argument in ten (both
 * under 0.9 ulp). */
#define MOE_EXP_INVLN2 1.44269504088896338700e+00
#define MOE_EXP_LN2_HI 0x1.62e42fefa39efp-1
#define MOE_EXP_LN2_LO 0x1.abc9e3b39803fp-56
MOE_ISA_INLINE double moe_exp_fma(double x, int le0) {
    const double shift = 0x1.8p52, invln2 = MOE_EXP_INVLN2, ln2_hi = MOE_EXP_LN2_HI,
                 ln2_lo = MOE_EXP_LN2_LO, C2 = 0.5, C3 = 0.16666666666666671,
                 C4 = 0.041666666666666671, C5 = 0.0083333333333260838, C6 = 0.0013888888888883711,
                 C7 = 0.00019841269875002279, C8 = 2.4801587325677461e-05,
                 C9 = 2.7557255170000888e-06, C10 = 2.7557273478718582e-07,
                 C11 = 2.5105312729622103e-08, C12 = 2.0914755325893202e-09;
    double xc = moe_exp_clamp(x, le0);
    double ks = __builtin_fma(xc, invln2, shift), k = ks - shift;
    double r = __builtin_fma(k, -ln2_lo, __builtin_fma(k, -ln2_hi, xc));
    double q = __builtin_fma(C12, r, C11);
    q = __builtin_fma(q, r, C10);
    q = __builtin_fma(q, r, C9);
    q = __builtin_fma(q, r, C8);
    q = __builtin_fma(q, r, C7);
    q = __builtin_fma(q, r, C6);
    q = __builtin_fma(q, r, C5);
    q = __builtin_fma(q, r, C4);
    q = __builtin_fma(q, r, C3);
    q = __builtin_fma(q, r, C2);
    double y = __builtin_fma(__builtin_fma(q, r, 1.0), r, 1.0);
    return moe_exp_scale(y, ks);
}

/* exp(x) as version isa computes it (a constant in every version): with
 * fused multiply-adds where moe_isa_fma says so, else fdlibm's form; le0
 * as moe_exp_clamp. Each form is one straight-line body for every input
 * (clamps and selects, no branches), so loops over it vectorise and every
 * lane gives the scalar body's bits. */
MOE_ISA_INLINE double moe_exp_one(int isa, double x, int le0) {
    return isa != MOE_ISA_BASE || MOE_ISA_FMA_BASE ? moe_exp_fma(x, le0)
                                                   : moe_exp_fdlibm(x, le0);
}

#if MOE_ISA_X86
/* moe_exp_fma on y[i] = exp(x[i]) for i < n (y may be x) written for
 * AVX-512: the clamps as one vmaxpd and vminpd each (operands in the order
 * that passes NaN through, as the selects do) and the scaling by 2^k as
 * one vscalefpd, which rounds y 2^k once, to a subnormal number, 0 or inf
 * as needed: the same bits as moe_exp_scale's two products, in 19
 * instructions a vector against the 35 GCC makes of the scalar body (0.90
 * -> 0.54 ns an exp on AMD Zen 4): moe_exp512 on one vector (for kernels
 * that keep their values in registers), moe_exp_avx512 on an array, the
 * last n % 8 under a mask. */
__attribute__((target("avx512f"))) static inline __attribute__((always_inline)) __m512d
moe_exp512(__m512d v, int le0) {
    const __m512d shift = _mm512_set1_pd(0x1.8p52), one = _mm512_set1_pd(1.0);
    const __m512d C[11] = {
        _mm512_set1_pd(0.5),
        _mm512_set1_pd(0.16666666666666671),
        _mm512_set1_pd(0.041666666666666671),
        _mm512_set1_pd(0.0083333333333260838),
        _mm512_set1_pd(0.0013888888888883711),
        _mm512_set1_pd(0.00019841269875002279),
        _mm512_set1_pd(2.4801587325677461e-05),
        _mm512_set1_pd(2.7557255170000888e-06),
        _mm512_set1_pd(2.7557273478718582e-07),
        _mm512_set1_pd(2.5105312729622103e-08),
        _mm512_set1_pd(2.0914755325893202e-09),
    };
    if (!le0) v = _mm512_min_pd(_mm512_set1_pd(710.0), v);
    v = _mm512_max_pd(_mm512_set1_pd(-746.0), v);
    __m512d ks = _mm512_fmadd_pd(v, _mm512_set1_pd(MOE_EXP_INVLN2), shift);
    __m512d k = _mm512_sub_pd(ks, shift);
    __m512d r = _mm512_fmadd_pd(k, _mm512_set1_pd(-MOE_EXP_LN2_HI), v);
    r = _mm512_fmadd_pd(k, _mm512_set1_pd(-MOE_EXP_LN2_LO), r);
    __m512d q = _mm512_fmadd_pd(C[10], r, C[9]);
    for (int j = 8; j >= 0; j--) q = _mm512_fmadd_pd(q, r, C[j]);
    __m512d e = _mm512_fmadd_pd(_mm512_fmadd_pd(q, r, one), r, one);
    return _mm512_scalef_pd(e, k);
}
__attribute__((target("avx512f"))) static inline void moe_exp_avx512(double *y, const double *x,
                                                                    size_t n, int le0) {
    for (size_t i = 0; i < n; i += 8) {
        __mmask8 m = n - i >= 8 ? 0xff : (__mmask8)((1u << (n - i)) - 1);
        _mm512_mask_storeu_pd(y + i, m, moe_exp512(_mm512_maskz_loadu_pd(m, x + i), le0));
    }
}
#endif

/* y[i] = exp(x[i]) for i < n (y may be x) as version isa computes it,
 * vectorised. */
MOE_ISA_INLINE void moe_exp_n(int isa, double *y, const double *x, size_t n, int le0) {
#if MOE_ISA_X86
    if (isa == MOE_ISA_AVX512) {
        moe_exp_avx512(y, x, n, le0);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++) y[i] = moe_exp_one(isa, x[i], le0);
}

/* log (fdlibm e_log.c): x = 2^k (1 + f) with 1 + f in [sqrt(2)/2, sqrt(2)]
 * (found by adding to the exponent bits, musl's form), s = f / (2 + f),
 * log(1 + f) = f - (hfsq - s (hfsq + R(s^2))), hfsq = f^2 / 2. Subnormal x
 * is scaled by 2^54 first; zero, negative, inf and NaN are selected at the
 * end. */
#define MOE_LOG_LN2_HI 6.93147180369123816490e-01
#define MOE_LOG_LN2_LO 1.90821492927058770002e-10
#define MOE_LOG_LG1 6.666666666666735130e-01
#define MOE_LOG_LG2 3.999999999940941908e-01
#define MOE_LOG_LG3 2.857142874366239149e-01
#define MOE_LOG_LG4 2.222219843214978396e-01
#define MOE_LOG_LG5 1.818357216161805012e-01
#define MOE_LOG_LG6 1.531383769920937332e-01
#define MOE_LOG_LG7 1.479819860511658591e-01
MOE_ISA_INLINE double moe_log_one(double x) {
    const double ln2_hi = MOE_LOG_LN2_HI, ln2_lo = MOE_LOG_LN2_LO, Lg1 = MOE_LOG_LG1,
                 Lg2 = MOE_LOG_LG2, Lg3 = MOE_LOG_LG3, Lg4 = MOE_LOG_LG4, Lg5 = MOE_LOG_LG5,
                 Lg6 = MOE_LOG_LG6, Lg7 = MOE_LOG_LG7;
    int sub = x < 0x1p-1022;
    double xs = sub ? x * 0x1p54 : x;
    double kadj = sub ? -54.0 : 0.0;
    uint64_t ix = moe_as_bits(xs) + ((uint64_t)(0x3ff00000 - 0x3fe6a09e) << 32);
    double k = moe_as_double(0x4330000000000000ULL | (ix >> 52)) - (0x1p52 + 1023.0) + kadj;
    ix = (ix & 0x000fffffffffffffULL) + ((uint64_t)0x3fe6a09e << 32);
    double f = moe_as_double(ix) - 1.0;
    double hfsq = 0.5 * f * f, s = f / (2.0 + f), z = s * s, w = z * z;
    double t1 = w * (Lg2 + w * (Lg4 + w * Lg6));
    double t2 = z * (Lg1 + w * (Lg3 + w * (Lg5 + w * Lg7)));
    double R = t2 + t1;
    double y = k * ln2_hi - ((hfsq - (s * (hfsq + R) + k * ln2_lo)) - f);
    /* x == 0: -inf; x == +inf or NaN: x; x < 0: NaN. */
    double special = x == 0.0 ? -INFINITY : (x > 0.0 || x != x ? x : NAN);
    return x > 0.0 && x < INFINITY ? y : special;
}

#if MOE_ISA_X86
/* moe_log_one on y[i] = log(x[i]) for i < n (y may be x) written for
 * AVX-512: 1 + f and k from vgetmantpd and vgetexppd (x = 2^e m, m in [1,
 * 2), subnormal x included), halved and incremented where m's high word
 * reaches 0x3ff6a09e -- exactly moe_log_one's split -- then the same
 * operations in the same order, each rounded on its own, and the same
 * specials: the same bits, in fewer instructions than GCC makes of the
 * scalar body's integer steps and selects: moe_log512 on one vector,
 * moe_log_avx512 on an array, the last n % 8 under a mask. */
#define MOE_SET(c) _mm512_set1_pd(c)
__attribute__((target("avx512f"))) static inline __attribute__((always_inline)) __m512d
moe_log512(__m512d v) {
    __m512d m = _mm512_getmant_pd(v, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_zero);
    __m512d k = _mm512_getexp_pd(v);
    __mmask8 up = _mm512_cmp_pd_mask(m, MOE_SET(0x1.6a09ep+0), _CMP_GE_OQ);
    m = _mm512_mask_mul_pd(m, up, m, MOE_SET(0.5));
    k = _mm512_mask_add_pd(k, up, k, MOE_SET(1.0));
    __m512d f = _mm512_sub_pd(m, MOE_SET(1.0));
    __m512d hfsq = _mm512_mul_pd(_mm512_mul_pd(MOE_SET(0.5), f), f);
    __m512d s = _mm512_div_pd(f, _mm512_add_pd(MOE_SET(2.0), f));
    __m512d z = _mm512_mul_pd(s, s), w = _mm512_mul_pd(z, z);
    __m512d t1 = _mm512_add_pd(MOE_SET(MOE_LOG_LG4), _mm512_mul_pd(w, MOE_SET(MOE_LOG_LG6)));
    t1 = _mm512_mul_pd(w, _mm512_add_pd(MOE_SET(MOE_LOG_LG2), _mm512_mul_pd(w, t1)));
    __m512d t2 = _mm512_add_pd(MOE_SET(MOE_LOG_LG5), _mm512_mul_pd(w, MOE_SET(MOE_LOG_LG7)));
    t2 = _mm512_add_pd(MOE_SET(MOE_LOG_LG3), _mm512_mul_pd(w, t2));
    t2 = _mm512_mul_pd(z, _mm512_add_pd(MOE_SET(MOE_LOG_LG1), _mm512_mul_pd(w, t2)));
    __m512d R = _mm512_add_pd(t2, t1);
    __m512d u = _mm512_mul_pd(s, _mm512_add_pd(hfsq, R));
    u = _mm512_add_pd(u, _mm512_mul_pd(k, MOE_SET(MOE_LOG_LN2_LO)));
    u = _mm512_sub_pd(_mm512_sub_pd(hfsq, u), f);
    __m512d r = _mm512_sub_pd(_mm512_mul_pd(k, MOE_SET(MOE_LOG_LN2_HI)), u);
    /* x == 0: -inf; x == +inf or NaN: x; x < 0: NaN; else r */
    __mmask8 ok = _mm512_cmp_pd_mask(v, _mm512_setzero_pd(), _CMP_GT_OQ) &
                  _mm512_cmp_pd_mask(v, MOE_SET(INFINITY), _CMP_LT_OQ);
    __mmask8 zero = _mm512_cmp_pd_mask(v, _mm512_setzero_pd(), _CMP_EQ_OQ);
    __mmask8 neg = _mm512_cmp_pd_mask(v, _mm512_setzero_pd(), _CMP_LT_OQ);
    v = _mm512_mask_mov_pd(v, zero, MOE_SET(-INFINITY));
    v = _mm512_mask_mov_pd(v, neg, MOE_SET(NAN));
    return _mm512_mask_mov_pd(v, ok, r);
}
#undef MOE_SET
__attribute__((target("avx512f"))) static inline void moe_log_avx512(double *y, const double *x,
                                                                    size_t n) {
    for (size_t i = 0; i < n; i += 8) {
        __mmask8 msk = n - i >= 8 ? 0xff : (__mmask8)((1u << (n - i)) - 1);
        _mm512_mask_storeu_pd(y + i, msk, moe_log512(_mm512_maskz_loadu_pd(msk, x + i)));
    }
}
#endif

/* y[i] = log(x[i]) for i < n (y may be x), vectorised: the same bits on
 * every version. */
MOE_ISA_INLINE void moe_log_n(int isa, double *y, const double *x, size_t n) {
#if MOE_ISA_X86
    if (isa == MOE_ISA_AVX512) {
        moe_log_avx512(y, x, n);
        return;
    }
#else
    (void)isa;
#endif
    for (size_t i = 0; i < n; i++) y[i] = moe_log_one(x[i]);
}

#endif /* MOE_VMATH_IMPL_H */
