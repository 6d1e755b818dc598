/*
 * gram.c -- the weighted Gram matrices of one block of rows (estep.c).
 *
 * The Gaussian experts': for every expert k and every pair a <= b < q,
 *
 *   G_k[a][b] += sum_i ((w_i h_ik) u_ia) u_ib,
 *
 * with u_i = [z_i, t_i] the row's design and targets (q = ed + P entries),
 * h_ik its posterior and w_i its case weight. One matrix holds sum w h z z',
 * sum w h z t' and sum w h t t' at once; mstep.c reads its upper triangle.
 * And a gate's (moe_gram_softmax): the gradient sum_i r_ic z_i and the Gram
 * sum_i w_i z_i z_i' of its weighted multinomial log-likelihood, the
 * statistics of moe_softmax_accumulate without the Hessian, for the blocks
 * that do not sample it -- the gradient with the classes as lanes (row 0
 * of the experts' kernel with the residuals as weights, formed in its loop
 * for whole lane groups), the Gram with its columns as lanes: 2 (C-1) d +
 * d(d+1) flops per row.
 *
 * The experts' cost per row: K q(q+1)/2 multiply-adds, K q(q+1) flops, plus K q
 * multiplies for the w h u_a -- half the flops of a GEMM of K scaled copies
 * of the rows against the rows (2 K q^2), and no copies. The experts are
 * the vector lanes: K rounded up to the lane count V (8 with AVX-512, 4 with
 * AVX2, 2 otherwise), so up to V - 1 lanes idle when K is not a multiple of
 * V. The pairs are cut into tiles of one row a by up to C columns b (C = 24
 * with AVX-512's 32 registers, 12 with the 16 of AVX2 and SSE2) whose
 * accumulators stay in registers while the loop runs over the block's
 * rows; each tile is added to G once per block. (Two rows per tile, each
 * broadcast u_ib serving both, measured slower on AMD Zen 4: 45 against
 * 35 ns per row at K = 8, q = 12.) With z and t given apart (below), the
 * last three rows, of 3, 2 and 1 columns, are one tile of 6 sums (ztail):
 * alone, their loops of 1 to 3 chains wait on the fused multiply-add's
 * latency (28.3 -> 27.6 ns a row at K = 8, q = 12). Scratch: nb V doubles
 * (one lane group's weighted posteriors, row by row). With one target and
 * a row that fits one tile, the design z and the target t are read where
 * they are (moe_gram_accumulate_zt, the same sums), not from copies
 * [z, t], and a whole lane group without case weights reads its
 * posteriors in place, not from a copy (27.6 -> 26.5 ns a row).
 *
 * Determinism: every entry of every tile is acc <- fma(a_i, u_ib, acc) from
 * 0 in row order, a_i = (w_i h_ik) u_ia rounded, then added to G -- the
 * accumulation of OpenBLAS's GEMM and SYRK kernels, which computed these
 * sums before, so the statistics keep their bits on this machine (a test's
 * choice between two label-switched optima that tie to the last bit
 * depends on them); likewise the gates' r_ic z_ij and (sqrt(w_i) z_ia)
 * (sqrt(w_i) z_ib), as moe_softmax_accumulate forms them. The
 * fused multiply-add is correctly rounded wherever it runs: the AVX-512 and
 * AVX2 versions use the instruction, the baseline one C's fma() where the
 * compiler says it is fast (FP_FAST_FMA, e.g. on ARMv8). An x86-64
 * processor without FMA (before 2013) runs the baseline version with the
 * product and the sum rounded separately (libm's fma would be a hundred
 * times slower there), so its bits differ from the others' in the last
 * places, as OpenBLAS's kernels did between processors. The multiplies are
 * single roundings (ISO C mode gives GCC -ffp-contract=off, clang is told
 * below). So every fusing version and a plain triple loop give the same
 * bits (tests/test_gram.c), and a fit does not depend on the thread count.
 */
#include "moe_impl.h"

#include <math.h>
#include <string.h>
#if MOE_ISA_X86
#include <immintrin.h>
#endif

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

/* the experts' Gram rows ztail sums in one loop (6 chains: fits every
 * version's tile) */
#define ZTAIL_ROWS 3

typedef double gram_v2 __attribute__((vector_size(16)));
typedef double gram_v4 __attribute__((vector_size(32)));
typedef double gram_v8 __attribute__((vector_size(64)));

/* acc + h x with one rounding in every lane (x a scalar); two without a
 * fast fma. */
#if defined(FP_FAST_FMA)
#define GRAM_BASE_FUSED 1
#define FMA_BASE(acc, h, x) ((gram_v2){fma((h)[0], (x), (acc)[0]), fma((h)[1], (x), (acc)[1])})
#else
#define GRAM_BASE_FUSED 0
#define FMA_BASE(acc, h, x) ((acc) + (h) * (x))
#endif
#define FMA_AVX2(acc, h, x)                                                                     \
    ((gram_v4)_mm256_fmadd_pd((__m256d)(h), _mm256_set1_pd(x), (__m256d)(acc)))
#define FMA_AVX512(acc, h, x)                                                                   \
    ((gram_v8)_mm512_fmadd_pd((__m512d)(h), _mm512_set1_pd(x), (__m512d)(acc)))

/* One version of the kernels: SFX names it, ATTR its target, VT the vector
 * of V lanes, FMA its fused multiply-add, C the widest tile. The tiles are
 * always-inlined functions called with their sizes as constants (through
 * the switches of the GRAM_CASES macros), so that their loops unroll and
 * their accumulators live in registers.
 *
 * tile: lanes over experts (or classes), the lane group's weights hw
 * (nb x V); row a of the Gram by columns b0 .. b0 + n - 1, read at fixed
 * offsets from one pointer into u; times u_ia when sa (the experts), not
 * (a gradient: a = 0); lane l's sums go to G + (l - l0) ls, lanes below l0
 * nowhere.
 *
 * wtile: lanes over the columns b0 .. b0 + V - 1 of zs (rows of W), rows
 * a0 .. a0 + n - 1 of one Gram sum_i zs_ia zs_ib; only the entries with
 * a <= b < d go to G. */
#define GRAM_VERSION(SFX, ATTR, VT, V, FMA, C)                                                  \
    /* The weighted posteriors of experts k0 .. k0 + nl - 1 (nl <= V), row   \
     * by row (nb x V), zero in the other lanes: hw[i][l] = w_i h_i,k0+l     \
     * (h_i,k0+l when w is NULL). */                                          \
    ATTR static void weighted_lanes_##SFX(size_t nb, size_t nl, const double *h, size_t ldh,    \
                                          const double *w, double *hw) {                        \
        VT v, zero = {0};                                                                       \
        for (size_t i = 0; i < nb && nl == V; i++) {                                            \
            memcpy(&v, h + i * ldh, sizeof v);                                                  \
            if (w) v *= w[i];                                                                   \
            memcpy(hw + i * V, &v, sizeof v);                                                   \
        }                                                                                       \
        for (size_t i = 0; i < nb && nl < V; i++) {                                             \
            const double *hi = h + i * ldh;                                                     \
            double *o = hw + i * V;                                                             \
            memcpy(o, &zero, sizeof zero);                                                      \
            for (size_t l = 0; l < nl; l++) o[l] = w ? w[i] * hi[l] : hi[l];                    \
        }                                                                                       \
    }                                                                                           \
                                                                                                \
    /* The residuals of classes c0 .. c0 + nl - 1 of a softmax, row by row    \
     * (nb x V): r[i][l] = w_i (t_i,c - p_i,c), c = c0 + l, zero past nl. */  \
    ATTR static void residual_lanes_##SFX(size_t nb, size_t nl, size_t c0, const double *w,     \
                                          const double *t, size_t ld_t, const double *p,        \
                                          size_t ld_p, double *r) {                             \
        VT a, b, zero = {0};                                                                    \
        for (size_t i = 0; i < nb && nl == V; i++) {                                            \
            memcpy(&a, t + i * ld_t + c0, sizeof a);                                            \
            memcpy(&b, p + i * ld_p + c0, sizeof b);                                            \
            a = w[i] * (a - b);                                                                 \
            memcpy(r + i * V, &a, sizeof a);                                                    \
        }                                                                                       \
        for (size_t i = 0; i < nb && nl < V; i++) {                                             \
            const double *ti = t + i * ld_t + c0, *pi = p + i * ld_p + c0;                      \
            double *o = r + i * V;                                                              \
            memcpy(o, &zero, sizeof zero);                                                      \
            for (size_t l = 0; l < nl; l++) o[l] = w[i] * (ti[l] - pi[l]);                      \
        }                                                                                       \
    }                                                                                           \
                                                                                                \
    /* The rows z (nb x d) times sqrt(w_i), in rows of W (a multiple of V,   \
     * >= d) with zeros past d. */                                            \
    ATTR static void sqrt_weighted_rows_##SFX(size_t nb, size_t d, size_t W, const double *z,   \
                                              const double *w, double *zs) {                    \
        VT zero = {0};                                                                          \
        for (size_t i = 0; i < nb; i++) {                                                       \
            double s = sqrt(w[i]), *o = zs + i * W;                                             \
            const double *zi = z + i * d;                                                       \
            size_t j = 0;                                                                       \
            memcpy(o + W - V, &zero, sizeof zero); /* the padding, overwritten below d */       \
            for (VT v; j + V <= d; j += V) {                                                    \
                memcpy(&v, zi + j, sizeof v);                                                   \
                v *= s;                                                                         \
                memcpy(o + j, &v, sizeof v);                                                    \
            }                                                                                   \
            for (; j < d; j++) o[j] = s * zi[j];                                                \
        }                                                                                       \
    }                                                                                           \
                                                                                                \
    ATTR static inline __attribute__((always_inline)) void tile_##SFX(                          \
        size_t nb, size_t q, const double *u, const double *hw, size_t a, size_t b0, int sa,    \
        size_t l0, size_t nl, double *G, size_t ls, double *sw, int n) {                        \
        VT acc[C];                                                                              \
        for (int c = 0; c < n; c++) acc[c] = (VT){0};                                           \
        const double *ua = u + a, *ub = u + b0;                                                 \
        for (size_t i = 0; i < nb; i++, ua += q, ub += q) {                                     \
            VT h;                                                                               \
            memcpy(&h, hw + i * V, sizeof h);                                                   \
            if (sa) h *= ua[0];                                                                 \
            for (int c = 0; c < n; c++) acc[c] = FMA(acc[c], h, ub[c]);                         \
        }                                                                                       \
        double *g = G + a * q + b0, s[V];                                                       \
        for (int c = 0; c < n; c++) {                                                           \
            memcpy(s, &acc[c], sizeof s);                                                       \
            for (size_t l = l0; l < nl; l++) g[(l - l0) * ls + c] += s[l];                      \
            if (sw && c == 0 && a == 0 && b0 == 0)                                              \
                for (size_t l = 0; l < nl; l++) sw[l] += s[l];                                  \
        }                                                                                       \
    }                                                                                           \
                                                                                                \
    /* tile's row a of the experts' Grams when u = [z, t] is given as z     \
     * (nb x ed) and t (nb, one target): the n = ed + 1 - a columns a .. ed, \
     * the last from t; the same products and sums as tile's. */             \
    ATTR static inline __attribute__((always_inline)) void ztile_##SFX(                         \
        size_t nb, size_t ed, const double *z, const double *t, const double *hw, size_t hs,    \
        size_t a, size_t nl, double *G, double *sw, int n) {                                    \
        VT acc[C];                                                                              \
        for (int c = 0; c < n; c++) acc[c] = (VT){0};                                           \
        const double *ub = z + a;                                                               \
        for (size_t i = 0; i < nb; i++, ub += ed) {                                             \
            VT h;                                                                               \
            memcpy(&h, hw + i * hs, sizeof h);                                                  \
            h *= a < ed ? ub[0] : t[i];                                                         \
            for (int c = 0; c < n - 1; c++) acc[c] = FMA(acc[c], h, ub[c]);                     \
            acc[n - 1] = FMA(acc[n - 1], h, t[i]);                                              \
        }                                                                                       \
        size_t q = ed + 1;                                                                      \
        double *g = G + a * q + a, s[V];                                                        \
        for (int c = 0; c < n; c++) {                                                           \
            memcpy(s, &acc[c], sizeof s);                                                       \
            for (size_t l = 0; l < nl; l++) g[l * q * q + c] += s[l];                           \
            if (sw && c == 0 && a == 0)                                                         \
                for (size_t l = 0; l < nl; l++) sw[l] += s[l];                                  \
        }                                                                                       \
    }                                                                                           \
                                                                                                \
    /* ztile's last R rows a = q - R .. q - 1 (R .. 1 columns) in one loop \
     * of R (R + 1) / 2 chains (alone, a loop of 1 to 3 chains of fused     \
     * multiply-adds waits on their latency); the same products and sums.   \
     * R < q. */                                                             \
    ATTR static inline __attribute__((always_inline)) void ztail_##SFX(                         \
        size_t nb, size_t ed, const double *z, const double *t, const double *hw, size_t hs,    \
        size_t nl, double *G, int R) {                                                          \
        VT acc[C];                                                                              \
        for (int c = 0; c < R * (R + 1) / 2; c++) acc[c] = (VT){0};                             \
        size_t q = ed + 1, a0 = q - (size_t)R;                                                  \
        const double *ub = z + a0;                                                              \
        for (size_t i = 0; i < nb; i++, ub += ed) {                                             \
            VT h, ha;                                                                           \
            memcpy(&h, hw + i * hs, sizeof h);                                                  \
            for (int r = 0, c = 0; r < R; r++) {                                                \
                ha = h * (r < R - 1 ? ub[r] : t[i]);                                            \
                for (int b = r; b < R - 1; b++, c++) acc[c] = FMA(acc[c], ha, ub[b]);           \
                acc[c] = FMA(acc[c], ha, t[i]);                                                 \
                c++;                                                                            \
            }                                                                                   \
        }                                                                                       \
        double s[V];                                                                            \
        for (int r = 0, c = 0; r < R; r++)                                                      \
            for (int b = r; b < R; b++, c++) {                                                  \
                double *g = G + (a0 + (size_t)r) * q + a0 + (size_t)b;                          \
                memcpy(s, &acc[c], sizeof s);                                                   \
                for (size_t l = 0; l < nl; l++) g[l * q * q] += s[l];                           \
            }                                                                                   \
    }                                                                                           \
                                                                                                \
    /* A gradient's lane group (V classes from t and p) over the n = d      \
     * columns of z: tile's sums with the residuals w_i (t_ic - p_ic) formed \
     * as residual_lanes forms them, in the loop; lanes below l0 nowhere,    \
     * lane l's sums to g + (l - l0) d. */                                   \
    ATTR static inline __attribute__((always_inline)) void rtile_##SFX(                         \
        size_t nb, const double *z, const double *w, const double *t, size_t ld_t,              \
        const double *p, size_t ld_p, size_t l0, double *g, int n) {                            \
        VT acc[C];                                                                              \
        for (int c = 0; c < n; c++) acc[c] = (VT){0};                                           \
        for (size_t i = 0; i < nb; i++) {                                                       \
            VT a, b;                                                                            \
            memcpy(&a, t + i * ld_t, sizeof a);                                                 \
            memcpy(&b, p + i * ld_p, sizeof b);                                                 \
            a = w[i] * (a - b);                                                                 \
            for (int c = 0; c < n; c++) acc[c] = FMA(acc[c], a, z[i * (size_t)n + c]);          \
        }                                                                                       \
        double s[V];                                                                            \
        for (int c = 0; c < n; c++) {                                                           \
            memcpy(s, &acc[c], sizeof s);                                                       \
            for (size_t l = l0; l < V; l++) g[(l - l0) * (size_t)n + c] += s[l];                \
        }                                                                                       \
    }                                                                                           \
                                                                                                \
    ATTR static inline __attribute__((always_inline)) void wtile_##SFX(                         \
        size_t nb, size_t W, const double *zs, size_t a0, size_t b0, size_t d, double *G,       \
        int n) {                                                                                \
        VT acc[C];                                                                              \
        for (int r = 0; r < n; r++) acc[r] = (VT){0};                                           \
        const double *za = zs + a0, *zb = zs + b0;                                              \
        for (size_t i = 0; i < nb; i++, za += W, zb += W) {                                     \
            VT h;                                                                               \
            memcpy(&h, zb, sizeof h);                                                           \
            for (int r = 0; r < n; r++) acc[r] = FMA(acc[r], h, za[r]);                         \
        }                                                                                       \
        double s[V];                                                                            \
        for (int r = 0; r < n; r++) {                                                           \
            size_t a = a0 + (size_t)r;                                                          \
            memcpy(s, &acc[r], sizeof s);                                                       \
            for (size_t l = 0, b = b0; l < V && b < d; l++, b++)                                \
                if (a <= b) G[a * d + b] += s[l];                                               \
        }                                                                                       \
    }                                                                                           \
                                                                                                \
    /* Rows a < na of the Grams of the lanes hw (lane l >= l0 to G + (l - l0) \
     * ls), times u_ia when sa. */                                            \
    /* (always inlined: each caller's constant sa, not the compiler's       \
     * choice of clones, decides the code: the experts' loop measured 5-9%   \
     * slower at D = 50 when a new caller changed that choice) */            \
    ATTR static inline __attribute__((always_inline)) void lanes_##SFX(                         \
        size_t nb, size_t q, size_t na, int sa, const double *u, const double *hw, size_t l0,   \
        size_t nl, double *G, size_t ls, double *sw) {                                          \
        for (size_t a = 0; a < na; a++)                                                         \
            for (size_t b0 = a; b0 < q; b0 += C) {                                              \
                size_t n = q - b0 < C ? q - b0 : C;                                             \
                if (sa) {                                                                       \
                    switch (n) {                                                                \
                        GRAM_CASES_##C(tile_##SFX, nb, q, u, hw, a, b0, 1, l0, nl, G, ls, sw)   \
                    }                                                                           \
                } else {                                                                        \
                    switch (n) {                                                                \
                        GRAM_CASES_##C(tile_##SFX, nb, q, u, hw, a, b0, 0, l0, nl, G, ls, sw)   \
                    }                                                                           \
                }                                                                               \
            }                                                                                   \
    }                                                                                           \
                                                                                                \
    ATTR static void gram_##SFX(size_t nb, size_t K, size_t q, const double *u, const double *h, \
                                size_t ldh, const double *w, double *G, double *sw,             \
                                double *hw) {                                                   \
        for (size_t k0 = 0; k0 < K; k0 += V) {                                                  \
            size_t nl = K - k0 < V ? K - k0 : V;                                                \
            weighted_lanes_##SFX(nb, nl, h + k0, ldh, w, hw);                                   \
            lanes_##SFX(nb, q, q, 1, u, hw, 0, nl, G + k0 * q * q, q * q, sw ? sw + k0 : NULL); \
        }                                                                                       \
    }                                                                                           \
                                                                                                \
    /* gram_'s sums with u = [z, t] from z and t (one target, ed + 1 <= C). */ \
    ATTR static void gram_zt_##SFX(size_t nb, size_t K, size_t ed, const double *z,             \
                                   const double *t, const double *h, size_t ldh,                \
                                   const double *w, double *G, double *sw, double *hw) {        \
        size_t q = ed + 1;                                                                      \
        for (size_t k0 = 0; k0 < K; k0 += V) {                                                  \
            size_t nl = K - k0 < V ? K - k0 : V;                                                \
            double *Gk = G + k0 * q * q, *swk = sw ? sw + k0 : NULL;                            \
            /* a whole lane group without weights: the posteriors in place */                  \
            const double *hl = h + k0;                                                          \
            size_t hs = ldh;                                                                    \
            if (w || nl < V) {                                                                  \
                weighted_lanes_##SFX(nb, nl, h + k0, ldh, w, hw);                               \
                hl = hw;                                                                        \
                hs = V;                                                                         \
            }                                                                                   \
            size_t na = q > ZTAIL_ROWS ? q - ZTAIL_ROWS : q; /* (the last rows: ztail) */       \
            for (size_t a = 0; a < na; a++) {                                                   \
                switch (q - a) {                                                                \
                    GRAM_CASES_##C(ztile_##SFX, nb, ed, z, t, hl, hs, a, nl, Gk, swk)           \
                }                                                                               \
            }                                                                                   \
            if (na < q) ztail_##SFX(nb, ed, z, t, hl, hs, nl, Gk, ZTAIL_ROWS);                  \
        }                                                                                       \
    }                                                                                           \
                                                                                                \
    ATTR static void softmax_##SFX(size_t nb, size_t C_, size_t d, const double *z,            \
                                   const double *w, const double *t, size_t ld_t,               \
                                   const double *p, size_t ld_p, double *grad, double *gram,    \
                                   double *scratch) {                                           \
        /* the gradient: lanes over the classes (class 0's, the reference,     \
         * not kept), row 0 of their Grams */                                     \
        for (size_t c0 = 0; c0 < C_; c0 += V) {                                                 \
            size_t nl = C_ - c0 < V ? C_ - c0 : V;                                              \
            size_t l0 = c0 == 0;                                                                \
            double *g = grad + (c0 + l0 - 1) * d;                                               \
            if (nl == V && d <= C) { /* residuals formed in the tile's loop */                  \
                switch (d) {                                                                    \
                    GRAM_CASES_##C(rtile_##SFX, nb, z, w, t + c0, ld_t, p + c0, ld_p, l0, g)    \
                }                                                                               \
                continue;                                                                       \
            }                                                                                   \
            residual_lanes_##SFX(nb, nl, c0, w, t, ld_t, p, ld_p, scratch);                     \
            lanes_##SFX(nb, d, 1, 0, z, scratch, l0, nl, g, d, NULL);                           \
        }                                                                                       \
        /* the Gram (unless not wanted): lanes over its columns */                             \
        if (!gram) return;                                                                      \
        size_t W = (d + V - 1) / V * V;                                                         \
        sqrt_weighted_rows_##SFX(nb, d, W, z, w, scratch);                                      \
        for (size_t b0 = 0; b0 < d; b0 += V)                                                    \
            for (size_t a0 = 0, ae = b0 + V < d ? b0 + V : d; a0 < ae; a0 += C) {               \
                size_t n = ae - a0 < C ? ae - a0 : C;                                           \
                switch (n) { GRAM_CASES_##C(wtile_##SFX, nb, W, scratch, a0, b0, d, gram) }    \
            }                                                                                   \
    }

/* case N: f(..., N), a tile of size N. */
#define GRAM_CASE(N, f, ...)                                                                    \
    case N:                                                                                     \
        f(__VA_ARGS__, N);                                                                      \
        break;
#define GRAM_CASES_4(f, ...)                                                                    \
    GRAM_CASE(1, f, __VA_ARGS__)                                                                \
    GRAM_CASE(2, f, __VA_ARGS__) GRAM_CASE(3, f, __VA_ARGS__) GRAM_CASE(4, f, __VA_ARGS__)
#define GRAM_CASES_12(f, ...)                                                                   \
    GRAM_CASES_4(f, __VA_ARGS__)                                                                \
    GRAM_CASE(5, f, __VA_ARGS__) GRAM_CASE(6, f, __VA_ARGS__) GRAM_CASE(7, f, __VA_ARGS__)      \
    GRAM_CASE(8, f, __VA_ARGS__) GRAM_CASE(9, f, __VA_ARGS__) GRAM_CASE(10, f, __VA_ARGS__)     \
    GRAM_CASE(11, f, __VA_ARGS__) GRAM_CASE(12, f, __VA_ARGS__)
#define GRAM_CASES_24(f, ...)                                                                   \
    GRAM_CASES_12(f, __VA_ARGS__)                                                               \
    GRAM_CASE(13, f, __VA_ARGS__) GRAM_CASE(14, f, __VA_ARGS__) GRAM_CASE(15, f, __VA_ARGS__)   \
    GRAM_CASE(16, f, __VA_ARGS__) GRAM_CASE(17, f, __VA_ARGS__) GRAM_CASE(18, f, __VA_ARGS__)   \
    GRAM_CASE(19, f, __VA_ARGS__) GRAM_CASE(20, f, __VA_ARGS__) GRAM_CASE(21, f, __VA_ARGS__)   \
    GRAM_CASE(22, f, __VA_ARGS__) GRAM_CASE(23, f, __VA_ARGS__) GRAM_CASE(24, f, __VA_ARGS__)

GRAM_VERSION(base, , gram_v2, 2, FMA_BASE, 12)
#if MOE_ISA_X86
GRAM_VERSION(avx2, __attribute__((target("avx2,fma"))), gram_v4, 4, FMA_AVX2, 12)
GRAM_VERSION(avx512, __attribute__((target("avx512f"))), gram_v8, 8, FMA_AVX512, 24)
#endif

size_t moe_gram_scratch_size(size_t nb) {
    return nb * 8;
}

size_t moe_gram_softmax_scratch_size(size_t nb, size_t d) {
    size_t W = (d + 7) / 8 * 8;
    return nb * (W > 8 ? W : 8);
}

int moe_gram_accumulate_isa(int isa, size_t nb, size_t K, size_t q, const double *u,
                            const double *h, size_t ldh, const double *w, double *G, double *sw,
                            double *scratch) {
    if (!moe_isa_has(isa)) return -1;
    MOE_ISA_CALL(isa, gram, nb, K, q, u, h, ldh, w, G, sw, scratch);
    return 0;
}

void moe_gram_accumulate(size_t nb, size_t K, size_t q, const double *u, const double *h,
                         size_t ldh, const double *w, double *G, double *sw, double *scratch) {
    moe_gram_accumulate_isa(moe_isa_best(), nb, K, q, u, h, ldh, w, G, sw, scratch);
}

int moe_gram_accumulate_zt_isa(int isa, size_t nb, size_t K, size_t ed, const double *z,
                               const double *t, const double *h, size_t ldh, const double *w,
                               double *G, double *sw, double *scratch) {
    if (!moe_isa_has(isa) || ed + 1 > (isa == MOE_ISA_AVX512 ? 24u : 12u)) return -1;
    MOE_ISA_CALL(isa, gram_zt, nb, K, ed, z, t, h, ldh, w, G, sw, scratch);
    return 0;
}

int moe_gram_accumulate_zt(size_t nb, size_t K, size_t ed, const double *z, const double *t,
                           const double *h, size_t ldh, const double *w, double *G, double *sw,
                           double *scratch) {
    return moe_gram_accumulate_zt_isa(moe_isa_best(), nb, K, ed, z, t, h, ldh, w, G, sw,
                                      scratch);
}

int moe_gram_softmax_isa(int isa, size_t nb, size_t C, size_t d, const double *z, const double *w,
                         const double *t, size_t ld_t, const double *p, size_t ld_p, double *grad,
                         double *gram, double *scratch) {
    if (!moe_isa_has(isa)) return -1;
    MOE_ISA_CALL(isa, softmax, nb, C, d, z, w, t, ld_t, p, ld_p, grad, gram, scratch);
    return 0;
}

void moe_gram_softmax(size_t nb, size_t C, size_t d, const double *z, const double *w,
                      const double *t, size_t ld_t, const double *p, size_t ld_p, double *grad,
                      double *gram, double *scratch) {
    moe_gram_softmax_isa(moe_isa_best(), nb, C, d, z, w, t, ld_t, p, ld_p, grad, gram, scratch);
}

int moe_gram_fused(int isa) {
    return isa != MOE_ISA_BASE || GRAM_BASE_FUSED;
}
