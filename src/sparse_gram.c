/*
 * sparse_gram.c -- sparse EM's Gram matrices (sparse_em.c): the kept
 * (row, expert) pairs sorted by expert, each expert's run of pairs summed
 * into its Gram sum_s w_s u_s u_s' by register-tiled kernels (fused
 * multiply-adds), one version per instruction set (moe_sparse_runs_isa,
 * tested against a plain loop in tests/test_sparse_kernels.c).
 */
#include "moe_impl.h"

#include <math.h>
#include <string.h>
#if MOE_ISA_X86
#include <immintrin.h>
#endif

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF /* every instruction set gives the same bits */
#endif

typedef double v8d __attribute__((vector_size(64))); /* GCC's vector extension */

/* One tile of a Gram: out[r 8 + l] = sum_s u_s[ar[r]] (w_s u_s[c0 + l])
 * over a run of n pairs (rows at offsets ro[s] into u, weights w[s]),
 * r < TR (4, or 8 for AVX-512), l < 8, the sums in registers, each by
 * fused multiply-adds in s order from 0. One version per instruction set;
 * the baseline x86-64 has
 * no fused multiply-add (before 2013), so it rounds the product and the
 * sum apart (libm's fma would be a hundred times slower) and its bits
 * differ in the last places, as gram.c's do (which says more). */
#if defined(FP_FAST_FMA)
#define TILE_FMA(acc, a, v, W)                                                                 \
    for (size_t l_ = 0; l_ < (W); l_++) (acc)[l_] = fma((a), (v)[l_], (acc)[l_])
#else
#define TILE_FMA(acc, a, v, W) (acc) += (a) * (v)
#endif
/* tile_base, and tile4_base: the same over 4 columns c0 .. c0 + 3 (out[r
 * 8 + l], l < 4), the last column block of a Gram whose width leaves at
 * most 4 columns there, at half the vector work of an 8-column tile. */
typedef double v4d __attribute__((vector_size(32)));
#define TILE_BASE(name, vt, W)                                                                  \
    static inline void name(size_t n, const size_t *ro, const double *w, const double *u,       \
                            size_t c0, const size_t *ar, double *out) {                         \
        vt acc[4] = {{0.0}, {0.0}, {0.0}, {0.0}}, v;                                            \
        for (size_t s = 0; s < n; s++) {                                                        \
            const double *us = u + ro[s];                                                       \
            memcpy(&v, us + c0, sizeof v);                                                      \
            v = w[s] * v;                                                                       \
            for (size_t r = 0; r < 4; r++) TILE_FMA(acc[r], us[ar[r]], v, W);                   \
        }                                                                                       \
        for (size_t r = 0; r < 4; r++) memcpy(out + 8 * r, &acc[r], sizeof acc[r]);            \
    }
TILE_BASE(tile_base, v8d, 8)
TILE_BASE(tile4_base, v4d, 4)
#if MOE_ISA_X86
__attribute__((target("avx2,fma"))) static inline void tile_avx2(size_t n, const size_t *ro,
                                                                 const double *w,
                                                                 const double *u, size_t c0,
                                                                 const size_t *ar, double *out) {
    __m256d acc[8];
    for (size_t r = 0; r < 8; r++) acc[r] = _mm256_setzero_pd();
    for (size_t s = 0; s < n; s++) {
        const double *us = u + ro[s];
        __m256d ws = _mm256_set1_pd(w[s]);
        __m256d v0 = _mm256_mul_pd(ws, _mm256_loadu_pd(us + c0));
        __m256d v1 = _mm256_mul_pd(ws, _mm256_loadu_pd(us + c0 + 4));
        for (size_t r = 0; r < 4; r++) {
            __m256d a = _mm256_set1_pd(us[ar[r]]);
            acc[2 * r] = _mm256_fmadd_pd(a, v0, acc[2 * r]);
            acc[2 * r + 1] = _mm256_fmadd_pd(a, v1, acc[2 * r + 1]);
        }
    }
    for (size_t r = 0; r < 8; r++) _mm256_storeu_pd(out + 4 * r, acc[r]);
}
/* (8 rows: eight independent chains of fused multiply-adds hide their
 * latency; AVX2's 16 registers hold the 4 rows' 8.) */
__attribute__((target("avx512f"))) static inline void tile_avx512(size_t n, const size_t *ro,
                                                                  const double *w,
                                                                  const double *u, size_t c0,
                                                                  const size_t *ar, double *out) {
    __m512d acc[8];
    for (size_t r = 0; r < 8; r++) acc[r] = _mm512_setzero_pd();
    for (size_t s = 0; s < n; s++) {
        const double *us = u + ro[s];
        __m512d v = _mm512_mul_pd(_mm512_set1_pd(w[s]), _mm512_loadu_pd(us + c0));
        for (size_t r = 0; r < 8; r++)
            acc[r] = _mm512_fmadd_pd(_mm512_set1_pd(us[ar[r]]), v, acc[r]);
    }
    for (size_t r = 0; r < 8; r++) _mm512_storeu_pd(out + 8 * r, acc[r]);
}
/* The 4-column tiles (tile4_base's) in 256-bit registers, of 4 rows for
 * AVX2 and 8 for AVX-512 (AMD's Zen 4 runs a 512-bit multiply-add as two
 * 256-bit halves, so the narrow tile costs half; every AVX-512 machine has
 * FMA). */
#define TILE4_YMM(name, isa, R)                                                                 \
    __attribute__((target(isa))) static void name(size_t n, const size_t *ro, const double *w,   \
                                                  const double *u, size_t c0, const size_t *ar, \
                                                  double *out) {                                \
        __m256d acc[R];                                                                         \
        for (size_t r = 0; r < (R); r++) acc[r] = _mm256_setzero_pd();                          \
        for (size_t s = 0; s < n; s++) {                                                        \
            const double *us = u + ro[s];                                                       \
            __m256d v = _mm256_mul_pd(_mm256_set1_pd(w[s]), _mm256_loadu_pd(us + c0));          \
            for (size_t r = 0; r < (R); r++)                                                    \
                acc[r] = _mm256_fmadd_pd(_mm256_set1_pd(us[ar[r]]), v, acc[r]);                 \
        }                                                                                       \
        for (size_t r = 0; r < (R); r++) _mm256_storeu_pd(out + 8 * r, acc[r]);                 \
    }
TILE4_YMM(tile4_avx2, "avx2,fma", 4)
TILE4_YMM(tile4_avx512, "avx512f,fma", 8)
TILE4_YMM(tile4s_avx512, "avx512f,fma", 4) /* a last row block of at most 4 rows */
/* An 8-column tile at c0 and the narrow one at c4 over the same rows in one
 * pass over the run (a Gram 9 to 12 columns wide from c0): each row's
 * element broadcast once for both. The same sums as the two tiles'. */
__attribute__((target("avx512f,fma"))) static void tile12_avx512(size_t n, const size_t *ro,
                                                                 const double *w,
                                                                 const double *u, size_t c0,
                                                                 size_t c4, const size_t *ar,
                                                                 double *out, double *out4) {
    __m512d acc[8];
    __m256d acc4[8];
    for (size_t r = 0; r < 8; r++) {
        acc[r] = _mm512_setzero_pd();
        acc4[r] = _mm256_setzero_pd();
    }
    for (size_t s = 0; s < n; s++) {
        const double *us = u + ro[s];
        __m512d v = _mm512_mul_pd(_mm512_set1_pd(w[s]), _mm512_loadu_pd(us + c0));
        __m256d v4 = _mm256_mul_pd(_mm256_set1_pd(w[s]), _mm256_loadu_pd(us + c4));
        for (size_t r = 0; r < 8; r++) {
            double a = us[ar[r]];
            acc[r] = _mm512_fmadd_pd(_mm512_set1_pd(a), v, acc[r]);
            acc4[r] = _mm256_fmadd_pd(_mm256_set1_pd(a), v4, acc4[r]);
        }
    }
    for (size_t r = 0; r < 8; r++) {
        _mm512_storeu_pd(out + 8 * r, acc[r]);
        _mm256_storeu_pd(out4 + 8 * r, acc4[r]);
    }
}
/* A whole Gram q = 8 + m columns wide, m = 1 .. 4 (D = 10's q = 12), in
 * one pass over the run, G += its upper triangle from three blocks: rows
 * 0 .. 7 by the last 8 columns (zmm), rows 0 .. m - 1 by columns 0 .. 3
 * (ymm, the broadcasts shared with the first block's rows) and rows 8 ..
 * q - 1 by the last 4 columns (ymm, their weighted vector the upper half of
 * the first block's). 16 + 2m 256-bit multiply-adds a pair where tile12
 * and tile4s take 28 in two passes; the Gram of 2048 pairs in 64 runs
 * (D = 10's) 14.6 -> 9.3 us on Zen 4, q = 9 14.4 -> 6.8. Each entry a <= c
 * is added by one block only: columns >= m of rows <= 7 by the first, a <=
 * c < m by the second (its columns >= m masked off), rows >= 8 by the
 * third; the first's rows past m and the third's write entries below the
 * diagonal too. The same sums as the tiles'. */
__attribute__((target("avx512f,fma"))) static inline __attribute__((always_inline)) void
gram12m_avx512(size_t n, const size_t *ro, const double *w, const double *u, size_t m,
               double *G) {
    size_t q = 8 + m;
    __m512d acc[8];
    __m256d accb[4], accc[4];
    for (size_t r = 0; r < 8; r++) acc[r] = _mm512_setzero_pd();
    for (size_t r = 0; r < m; r++) accb[r] = accc[r] = _mm256_setzero_pd();
    for (size_t s = 0; s < n; s++) {
        const double *us = u + ro[s];
        __m512d ws = _mm512_set1_pd(w[s]);
        __m512d v = _mm512_mul_pd(ws, _mm512_loadu_pd(us + m));
        __m256d vb = _mm256_mul_pd(_mm512_castpd512_pd256(ws), _mm256_loadu_pd(us));
        __m256d vc = _mm512_extractf64x4_pd(v, 1);
        for (size_t r = 0; r < 8; r++) {
            __m512d a = _mm512_set1_pd(us[r]);
            acc[r] = _mm512_fmadd_pd(a, v, acc[r]);
            if (r < m) accb[r] = _mm256_fmadd_pd(_mm512_castpd512_pd256(a), vb, accb[r]);
        }
        for (size_t r = 0; r < m; r++)
            accc[r] = _mm256_fmadd_pd(_mm256_set1_pd(us[8 + r]), vc, accc[r]);
    }
    __mmask8 mb = (__mmask8)((1u << m) - 1); /* columns 0 .. m - 1 */
    for (size_t r = 0; r < 8; r++) {
        double *g = G + r * q + m;
        _mm512_storeu_pd(g, _mm512_add_pd(_mm512_loadu_pd(g), acc[r]));
    }
    for (size_t r = 0; r < m; r++) {
        double *g = G + r * q;
        _mm512_mask_storeu_pd(g, mb, _mm512_add_pd(_mm512_maskz_loadu_pd(mb, g),
                                                   _mm512_zextpd256_pd512(accb[r])));
        g = G + (8 + r) * q + 4 + m;
        _mm256_storeu_pd(g, _mm256_add_pd(_mm256_loadu_pd(g), accc[r]));
    }
}
__attribute__((target("avx512f,fma"))) static void gram12_avx512(size_t n, const size_t *ro,
                                                                 const double *w,
                                                                 const double *u, size_t q,
                                                                 double *G) {
    switch (q) { /* the width a constant in each */
    case 9: gram12m_avx512(n, ro, w, u, 1, G); break;
    case 10: gram12m_avx512(n, ro, w, u, 2, G); break;
    case 11: gram12m_avx512(n, ro, w, u, 3, G); break;
    default: gram12m_avx512(n, ro, w, u, 4, G); break;
    }
}
#endif

/* The experts' Gram matrices from the kept pairs sorted by expert: for
 * each expert's run of pairs (row offsets roff into u, weights ws), G +=
 * sum_s w_s u_s u_s' over tiles of 4 rows by 8 columns of the upper
 * triangle, each tile's sums held in registers over the whole run (an
 * expert's run is a few rows of a block, too short for a BLAS call to pay
 * for itself). Rows of a tile past q repeat row q - 1, and the last column
 * block is shifted back to end at q, its repeated columns not stored
 * (q >= 8; narrower Grams take the plain loop, and AVX-512 takes one 9 to
 * 12 wide whole, gram12_avx512). The lower triangle's entries a tile
 * covers are written too, and never read. Compiled per instruction set
 * with its tile functions. */
typedef void (*tile_fn)(size_t, const size_t *, const double *, const double *, size_t,
                        const size_t *, double *);
#define TILE12_PAIR(name, tile, tile4)                                                          \
    static void name(size_t n, const size_t *ro, const double *w, const double *u, size_t c0,  \
                     size_t c4, const size_t *ar, double *out, double *out4) {                  \
        tile(n, ro, w, u, c0, ar, out);                                                         \
        tile4(n, ro, w, u, c4, ar, out4);                                                       \
    }
TILE12_PAIR(tile12_base, tile_base, tile4_base)
#if MOE_ISA_X86
TILE12_PAIR(tile12_avx2, tile_avx2, tile4_avx2)
#define tile4s_avx2 tile4_avx2
#endif
#define tile4s_base tile4_base
typedef void (*tile12_fn)(size_t, const size_t *, const double *, const double *, size_t, size_t,
                          const size_t *, double *, double *);
typedef void (*gram12_fn)(size_t, const size_t *, const double *, const double *, size_t,
                          double *);
#define gram12_base ((gram12_fn)0) /* (AVX-512's, for its 8-row tiles) */
#define gram12_avx2 ((gram12_fn)0)
MOE_ISA_INLINE void runs_body(size_t K, size_t q, const size_t *cnt, const size_t *roff,
                              const double *ws, const double *u, double *eg, size_t tr, int fused,
                              tile_fn tile, tile_fn tile4, tile_fn tile4s, tile12_fn tile12,
                              gram12_fn gram12) {
    double out[64], out4[64];
    for (size_t j = 0, s0 = 0; j < K; s0 = cnt[j], j++) {
        size_t n = cnt[j] - s0;
        const size_t *ro = roff + s0;
        const double *w = ws + s0;
        double *G = eg + j * q * q;
        if (n == 0) continue;
        if (q < 8) { /* each entry's sum as a tile forms it */
            for (size_t a = 0; a < q; a++)
                for (size_t c = a; c < q; c++) {
                    double acc = 0.0;
                    for (size_t s = 0; s < n; s++) {
                        double ua = u[ro[s] + a], v = w[s] * u[ro[s] + c];
                        acc = fused ? fma(ua, v, acc) : acc + ua * v;
                    }
                    G[a * q + c] += acc;
                }
            continue;
        }
        if (gram12 && q > 8 && q <= 12) {
            gram12(n, ro, w, u, q, G);
            continue;
        }
        for (size_t a0 = 0; a0 < q; a0 += tr) {
            size_t ar[8];
            for (size_t r = 0; r < tr; r++) ar[r] = a0 + r < q ? a0 + r : q - 1;
            size_t nr = q - a0 < tr ? q - a0 : tr;
            for (size_t c = a0 / 8 * 8; c < q; c += 8) {
                if (q - c > 8 && q - c <= 12) { /* the last two blocks at once */
                    tile12(n, ro, w, u, c, q - 4, ar, out, out4);
                    double *Gt = G + a0 * q + c, *G4 = G + a0 * q + q - 4;
                    for (size_t r = 0; r < nr; r++) {
                        for (size_t l = 0; l < 8; l++) Gt[r * q + l] += out[8 * r + l];
                        for (size_t l = c + 12 - q; l < 4; l++) G4[r * q + l] += out4[8 * r + l];
                    }
                    break;
                }
                size_t wd = q - c <= 4 ? 4 : 8; /* the last block's width */
                size_t c0 = c + wd <= q ? c : q - wd;
                (wd == 8 ? tile : nr <= 4 ? tile4s : tile4)(n, ro, w, u, c0, ar, out);
                double *Gt = G + a0 * q + c0;
                if (c == c0 && wd == 8) { /* whole rows of 8: a vector loop */
                    for (size_t r = 0; r < nr; r++)
                        for (size_t l = 0; l < 8; l++) Gt[r * q + l] += out[8 * r + l];
                } else {
                    for (size_t r = 0; r < nr; r++)
                        for (size_t l = c - c0; l < wd; l++) Gt[r * q + l] += out[8 * r + l];
                }
            }
        }
    }
}
#define RUNS_VERSION(name, attr)                                                                \
    attr static void runs_##name(size_t K, size_t q, const size_t *cnt, const size_t *roff,     \
                                 const double *ws, const double *u, double *eg) {               \
        runs_body(K, q, cnt, roff, ws, u, eg, TR_##name, FUSED_##name, tile_##name,            \
                  tile4_##name, tile4s_##name, tile12_##name, gram12_##name);                   \
    }
enum { TR_base = 4, TR_avx2 = 4, TR_avx512 = 8 };
#if defined(FP_FAST_FMA)
enum { FUSED_base = 1, FUSED_avx2 = 1, FUSED_avx512 = 1 };
#else
enum { FUSED_base = 0, FUSED_avx2 = 1, FUSED_avx512 = 1 };
#endif
MOE_ISA_VERSIONS(RUNS_VERSION)

int moe_sparse_runs_isa(int isa, size_t K, size_t q, const size_t *cnt, const size_t *roff,
                        const double *ws, const double *u, double *eg) {
    if (!moe_isa_has(isa)) return -1;
    MOE_ISA_CALL(isa, runs, K, q, cnt, roff, ws, u, eg);
    return 0;
}
