/*
 * sparse_full.c -- sparse EM's full pass (sparse_em.c) for the common
 * model: one flat linear gate over linear Gaussian experts with one target,
 * gate and experts on the same inputs, k <= 4, on AVX-512.
 *
 * The pass asks every leaf of every row for its log joint, keeps the k
 * largest and sums the gate's prior part -sum w g z (estep.c; or, with
 * every iteration full, the gate's whole gradient, from the kept leaves'
 * posterior slots). The general
 * path (moe_block_forward_joint, moe_sparse_keep) runs phase by phase over
 * a block of 256 rows with the leaves as the vector lanes: each phase reads
 * and writes nb K arrays (K = 64: 128 KB each, out of L1), and each row's
 * max, sum and top-k is a chain along its leaves. Here 8 rows at a time
 * are the lanes instead: their standardised inputs are transposed into 8
 * vectors of the block's scratch, each leaf's logit and mean is one vector
 * (a dot product over the inputs), and the max, the exps and their sum,
 * the log joints and the top-k (topk_lanes.h, each lane a row) run down
 * the leaves on values in L1, 8 rows per instruction. Only the gate's
 * probabilities are transposed back, for the gradient (gram.c).
 *
 * The operations and their order are the general path's, lane for lane:
 * the logits and means as moe_gemm_nt sums them (products added in input
 * order, no fused multiply-add), the max and the sum of the exps in leaf
 * order, the log-softmax and log joints as forward.c forms them, the same
 * choice of kept leaves (the largest, ties to the lower index). So the
 * statistics keep their bits (tests/test_sparse_pass.c compares the two
 * paths), but where K or the inputs exceed 64: there forward.c's maps
 * are BLAS's, and the two differ in the last bits.
 */
#include "moe_impl.h"

#include <math.h>
#if MOE_ISA_X86
#include <immintrin.h>
#include "topk_lanes.h"
#include "vmath_impl.h"
#endif

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF /* the general path's bits */
#endif

#define LOG_2PI 1.8378770664093454836

int moe_sparse_full_fits(const moe_fit *f) {
#if MOE_ISA_X86
    const moe_model *m = f->m;
    return f->sp_lean && !f->sp_general &&
           (f->sp_gate_part == MOE_GATE_PRIOR || f->sp_gate_part == MOE_GATE_WHOLE) &&
           f->sparse_k <= TOPK_LANES &&
           moe_isa_best() == MOE_ISA_AVX512 && m->task == MOE_TASK_REGRESSION && m->n_out == 1 &&
           !m->log_var && m->n_gates == 1 && m->gnet.n_hidden == 0 && m->enet.n_hidden == 0 &&
           m->top_k == 0 && m->coef_rows == 1 && m->gd == m->ed && moe_gates_share_columns(m);
#else
    (void)f;
    return 0;
#endif
}

#if MOE_ISA_X86
#define AVX512 __attribute__((target("avx512f"))) static

/* Lane l of r[c] into lane c of r[l] (c, l < 8): 8 x 8 doubles transposed
 * in three rounds of shuffles. */
__attribute__((target("avx512f"))) static inline void transpose8(__m512d r[8]) {
    const __m512i a = _mm512_set_epi64(13, 12, 5, 4, 9, 8, 1, 0);
    const __m512i b = _mm512_set_epi64(15, 14, 7, 6, 11, 10, 3, 2);
    const __m512i lo = _mm512_set_epi64(11, 10, 9, 8, 3, 2, 1, 0);
    const __m512i hi = _mm512_set_epi64(15, 14, 13, 12, 7, 6, 5, 4);
    __m512d t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm512_unpacklo_pd(r[i], r[i + 1]);     /* 0 1 | 0 1 at 0, 2, 4, 6 */
        t[i + 1] = _mm512_unpackhi_pd(r[i], r[i + 1]); /* at 1, 3, 5, 7 */
    }
    for (int i = 0; i < 8; i += 4)
        for (int h = 0; h < 2; h++) {
            u[i + h] = _mm512_permutex2var_pd(t[i + h], a, t[i + 2 + h]);     /* lanes 0, 4 */
            u[i + 2 + h] = _mm512_permutex2var_pd(t[i + h], b, t[i + 2 + h]); /* lanes 2, 6 */
        }
    /* u[0]: lanes 0 and 4 of r[0..3]; u[1]: 1 and 5; u[2]: 2 and 6; u[3]: 3 and 7 */
    for (int h = 0; h < 4; h++) {
        r[h] = _mm512_permutex2var_pd(u[h], lo, u[4 + h]);
        r[h + 4] = _mm512_permutex2var_pd(u[h], hi, u[4 + h]);
    }
}

#define INLINE_AVX512                                                                           \
    __attribute__((target("avx512f"))) static inline __attribute__((always_inline))

/* The gate logits and means of n leaves (1 or 2, a constant where
 * inlined: their four chains hide the additions' latency), gate rows w and
 * expert rows c (d each), for the 8 rows whose inputs are zt (d vectors),
 * into lt and mt (8 doubles a leaf): moe_gemm_nt's sums, z_0 w_0 + z_1 w_1
 * + ... in order, each product and sum rounded. */
INLINE_AVX512 void maps(const double *zt, size_t d, const double *w, const double *c, int n,
                        double *lt, double *mt) {
    __m512d a[2], e[2], z = _mm512_load_pd(zt);
    for (int r = 0; r < n; r++) {
        a[r] = _mm512_mul_pd(z, _mm512_set1_pd(w[(size_t)r * d]));
        e[r] = _mm512_mul_pd(z, _mm512_set1_pd(c[(size_t)r * d]));
    }
    for (size_t j = 1; j < d; j++) {
        z = _mm512_load_pd(zt + 8 * j);
        for (int r = 0; r < n; r++) {
            a[r] = _mm512_add_pd(a[r], _mm512_mul_pd(z, _mm512_set1_pd(w[(size_t)r * d + j])));
            e[r] = _mm512_add_pd(e[r], _mm512_mul_pd(z, _mm512_set1_pd(c[(size_t)r * d + j])));
        }
    }
    for (int r = 0; r < n; r++) {
        _mm512_store_pd(lt + 8 * r, a[r]);
        _mm512_store_pd(mt + 8 * r, e[r]);
    }
}

/* The probabilities p = e inv into et, and the log joints lp + -0.5 (dt +
 * u^2), u = (t - mean) / sd, into each lane's list of its KC largest (a
 * constant where inlined: the lists and their masks stay in registers). */
INLINE_AVX512 void joints(size_t K, const double *il, const double *dt, const double *lt,
                          const double *mt, double *et, __m512d t, __m512d sh, __m512d inv,
                          __m512d *ml, __m512i *ix, int KC) {
    for (int r = 0; r < KC; r++) {
        ml[r] = _mm512_set1_pd(-INFINITY);
        ix[r] = _mm512_set1_epi64(-1);
    }
    const __m512d zero = _mm512_setzero_pd(), half = _mm512_set1_pd(-0.5);
    for (size_t o = 0; o < K; o++) {
        _mm512_store_pd(et + 8 * o, _mm512_mul_pd(_mm512_load_pd(et + 8 * o), inv));
        __m512d lp = _mm512_add_pd(zero, _mm512_sub_pd(_mm512_load_pd(lt + 8 * o), sh));
        __m512d u = _mm512_mul_pd(_mm512_sub_pd(t, _mm512_load_pd(mt + 8 * o)),
                                  _mm512_set1_pd(il[o]));
        __m512d lj = _mm512_add_pd(
            lp, _mm512_mul_pd(half, _mm512_add_pd(_mm512_set1_pd(dt[o]), _mm512_mul_pd(u, u))));
        moe_lanes_insert(ml, ix, lj, _mm512_set1_epi64((int64_t)o), KC);
    }
}

/* The rows i0 .. i0 + nv - 1 (nv <= 8) of the block, the lanes. Scratch:
 * zt (8 ed), and lt, mt, et (8 K each), all 64-byte aligned. The kept
 * leaves' log joints go to lk, their log priors to lpk (k a row). */
AVX512 void rows8(const moe_fit *f, moe_block *b, size_t i0, size_t nv, const double *il,
                  const double *dt, double *zt, double *lt, double *mt, double *et,
                  double *lmass, size_t *kept, double *hk, double *lk, double *lpk) {
    const moe_model *m = f->m;
    size_t K = m->n_leaves, d = m->ed, k = f->sparse_k;
    int KC = (int)k;
    /* the rows' inputs, transposed; absent rows 0 */
    for (size_t j = 0; j < d; j++)
        for (size_t l = 0; l < 8; l++) zt[8 * j + l] = l < nv ? b->ze[(i0 + l) * d + j] : 0.0;
    __mmask8 valid = (__mmask8)((1u << nv) - 1);
    __m512d t = _mm512_maskz_loadu_pd(valid, b->tgt + i0);
    size_t o = 0;
    for (; o + 2 <= K; o += 2)
        maps(zt, d, m->gate_coef + o * d, m->coef + o * d, 2, lt + 8 * o, mt + 8 * o);
    if (o < K) maps(zt, d, m->gate_coef + o * d, m->coef + o * d, 1, lt + 8 * o, mt + 8 * o);
    /* the gate's softmax: max, exps and their sum in leaf order */
    __m512d mx = _mm512_set1_pd(-INFINITY);
    for (o = 0; o < K; o++) mx = _mm512_max_pd(_mm512_load_pd(lt + 8 * o), mx);
    __m512d s = _mm512_setzero_pd();
    for (o = 0; o < K; o++) {
        __m512d e = moe_exp512(_mm512_sub_pd(_mm512_load_pd(lt + 8 * o), mx), 1);
        _mm512_store_pd(et + 8 * o, e);
        s = _mm512_add_pd(s, e);
    }
    __m512d sh = _mm512_add_pd(mx, moe_log512(s));
    __m512d inv = _mm512_div_pd(_mm512_set1_pd(1.0), s);
    __m512d ml[TOPK_LANES];
    __m512i ix[TOPK_LANES];
    switch (KC) {
    case 1: joints(K, il, dt, lt, mt, et, t, sh, inv, ml, ix, 1); break;
    case 2: joints(K, il, dt, lt, mt, et, t, sh, inv, ml, ix, 2); break;
    case 3: joints(K, il, dt, lt, mt, et, t, sh, inv, ml, ix, 3); break;
    default: joints(K, il, dt, lt, mt, et, t, sh, inv, ml, ix, 4); break;
    }
    /* the probabilities back in the rows, 8 leaves at a time */
    double *gp = b->gp;
    for (o = 0; o + 8 <= K; o += 8) {
        __m512d r[8];
        for (int c = 0; c < 8; c++) r[c] = _mm512_load_pd(et + 8 * (o + (size_t)c));
        transpose8(r);
        for (size_t l = 0; l < nv; l++) _mm512_storeu_pd(gp + (i0 + l) * K + o, r[l]);
    }
    for (; o < K; o++)
        for (size_t l = 0; l < nv; l++) gp[(i0 + l) * K + o] = et[8 * o + l];
    /* each row's choice */
    double mv[TOPK_LANES][8], shv[8];
    int64_t iv[TOPK_LANES][8];
    for (int r = 0; r < KC; r++) {
        _mm512_storeu_pd(mv[r], ml[r]);
        _mm512_storeu_epi64(iv[r], ix[r]);
    }
    _mm512_storeu_pd(shv, sh);
    for (size_t l = 0; l < nv; l++) {
        size_t i = i0 + l, n = 0, *top = kept + i * k;
        double *lki = lk + i * k, *lpi = lpk + i * k;
        for (; n < k && iv[n][l] >= 0; n++) {
            top[n] = (size_t)iv[n][l];
            lki[n] = mv[n][l];
        }
        if (n == 0) /* the row's log priors, for moe_sparse_keep_choice's fallback */
            for (o = 0; o < K; o++) et[o] = 0.0 + (lt[8 * o + l] - shv[l]);
        moe_sparse_keep_choice(f, n, et, top, lki, hk + i * k, lmass + i);
        for (size_t r = 0; r < k; r++) lpi[r] = 0.0 + (lt[8 * top[r] + l] - shv[l]);
    }
}

AVX512 void full_block(const moe_fit *f, moe_block *b, size_t nb, const double *x, size_t ld_x,
                       const double *y, size_t ld_y, size_t row, double *lmass, size_t *kept,
                       double *hk) {
    const moe_model *m = f->m;
    size_t K = m->n_leaves, d = m->ed;
    /* the inputs and the target standardised, as forward.c does */
    double *ie = b->inv;
    for (size_t j = 0; j < m->n_ecols; j++) ie[j] = 1.0 / m->x_scale[m->ecols[j]];
    moe_standardise_rows(m, nb, x, ld_x, m->ecols, m->n_ecols, ie, b->ze, d);
    double iy = 1.0 / m->y_scale[0];
    for (size_t i = 0; i < nb; i++) b->tgt[i] = (y[i * ld_y] - m->y_mean[0]) * iy;
    /* per leaf: 1 / sd and LOG_2PI + log det, in the scratch, then the
     * rows' transposed inputs and three 8 K arrays, 64-byte aligned */
    double *il = b->scr, *dt = il + K;
    size_t K8 = (K + 7) / 8 * 8;
    double *zt = b->scr + 2 * K8, *lt = zt + 8 * d, *mt = lt + 8 * K, *et = mt + 8 * K;
    for (size_t o = 0; o < K; o++) {
        il[o] = 1.0 / m->chol[o];
        dt[o] = LOG_2PI + m->logdet[o];
    }
    for (size_t i0 = 0; i0 < nb; i0 += 8)
        rows8(f, b, i0, nb - i0 < 8 ? nb - i0 : 8, il, dt, zt, lt, mt, et, lmass, kept, hk,
              b->ld, b->lp);
    moe_sparse_keep_tail(f, b, nb, row, lmass, kept, hk, b->lp);
}
#endif

void moe_sparse_full_block(const moe_fit *f, moe_block *b, size_t nb, const double *x,
                           size_t ld_x, const double *y, size_t ld_y, size_t row, double *lmass,
                           size_t *kept, double *hk) {
#if MOE_ISA_X86
    full_block(f, b, nb, x, ld_x, y, ld_y, row, lmass, kept, hk);
#else
    (void)f, (void)b, (void)nb, (void)x, (void)ld_x, (void)y, (void)ld_y, (void)row;
    (void)lmass, (void)kept, (void)hk;
#endif
}
