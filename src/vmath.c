/*
 * vmath.c -- exp and log over whole arrays, written so that the compiler
 * vectorises them (the block pass calls them on every gate and posterior
 * entry of a block at once instead of once per entry through libm).
 *
 * log is fdlibm's (Sun Microsystems 1993, e_log.c), exp fdlibm's (e_exp.c)
 * or a polynomial of fused multiply-adds (below), all accurate to less
 * than 1 ulp, made branch-free: special inputs are handled by clamping
 * and selects, and the scaling by 2^k is done so that one straight-line
 * body serves every input, including subnormal results, overflow, +-inf,
 * NaN, zero and negative arguments.
 *
 * Determinism: log's every operation is an IEEE add, multiply or divide of
 * its own (no fused multiply-add: ISO C mode gives GCC -ffp-contract=off,
 * and clang is told the same below), so the vector lanes, the scalar
 * remainder and the SSE2, AVX2 and AVX-512 versions all give the same bits
 * for the same input, whatever the thread count and the x86-64 machine.
 * exp takes fused multiply-adds where the version has them (moe_isa_fma:
 * AVX2 and AVX-512; the baseline on processors where the compiler says
 * fma is fast): a degree-12 polynomial without fdlibm's division, 0.98 ->
 * 0.63 ns an exp on AMD Zen 4 with AVX-512. Its last bit differs from
 * fdlibm's for about one argument in ten, so a fit on an x86-64
 * processor without FMA (before 2013, the baseline version) differs from
 * the others' in the last places -- the policy of gram.c's fused
 * multiply-adds. Every version with them gives the same bits, and every
 * version without them too, whatever the thread count.
 * The bodies of exp and log are in vmath_impl.h, which forward.c includes
 * too for the exps it takes in registers.
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

#include "vmath_impl.h" /* (after the pragmas, which its functions take) */

/* The instruction sets besides the baseline (SSE2 on x86-64): AVX2 with
 * FMA and AVX-512F bring fused multiply-adds where the code asks for them
 * (exp here, gram.c), never by contraction (off). */
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

int moe_isa_fma(int isa) {
    return isa != MOE_ISA_BASE || MOE_ISA_FMA_BASE;
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
        moe_exp_n(MOE_ISA_ID(SFX), y, x, n, 0);                                                 \
    }                                                                                           \
    ATTR static void vlog_##SFX(double *y, const double *x, size_t n) {                         \
        moe_log_n(MOE_ISA_ID(SFX), y, x, n);                                                    \
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

