/*
 * vmath_impl.h -- exp and log of one double, the bodies of vmath.c's array
 * kernels, also inlined where forward.c exponentiates a row's leaves in
 * registers: one algorithm, so every caller, vector lane and instruction
 * set gets the same bits. vmath.c says which algorithms and why.
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

/* exp (fdlibm e_exp.c): x = k ln2 + r, |r| <= ln2/2 (ln2 split in a high
 * part with 21 trailing zero bits, so k ln2_hi is exact); exp(r) from the
 * rational form 1 - ((lo - r c / (2 - c)) - hi) with c = r - r^2 P(r^2);
 * then times 2^k as 2^k1 2^k2, k1 about k/2, so that both factors are
 * normal numbers and the only rounding is the last product (which gives
 * subnormal results and overflow to inf correctly). x is first clamped to
 * [-746, 710], beyond which the result is 0 or inf anyway; NaN passes
 * through the arithmetic. */
MOE_ISA_INLINE double moe_exp_one(double x) {
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
    uint64_t u = moe_as_bits(ks) - moe_as_bits(shift) + 1076, h = u >> 1;
    return y * moe_as_double((h + 485) << 52) * moe_as_double((u - h + 485) << 52);
}

/* log (fdlibm e_log.c): x = 2^k (1 + f) with 1 + f in [sqrt(2)/2, sqrt(2)]
 * (found by adding to the exponent bits, musl's form), s = f / (2 + f),
 * log(1 + f) = f - (hfsq - s (hfsq + R(s^2))), hfsq = f^2 / 2. Subnormal x
 * is scaled by 2^54 first; zero, negative, inf and NaN are selected at the
 * end. */
MOE_ISA_INLINE double moe_log_one(double x) {
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10,
                 Lg1 = 6.666666666666735130e-01, Lg2 = 3.999999999940941908e-01,
                 Lg3 = 2.857142874366239149e-01, Lg4 = 2.222219843214978396e-01,
                 Lg5 = 1.818357216161805012e-01, Lg6 = 1.531383769920937332e-01,
                 Lg7 = 1.479819860511658591e-01;
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

#endif /* MOE_VMATH_IMPL_H */
