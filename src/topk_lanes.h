/*
 * topk_lanes.h -- the k largest values seen by each lane of an AVX-512
 * vector, with their indices (sparse EM's top-k: sparse_em.c over a row's
 * values, sparse_full.c over the leaves with the rows as lanes). x86-64
 * only; include after <immintrin.h>.
 */
#ifndef MOE_TOPK_LANES_H
#define MOE_TOPK_LANES_H

#define TOPK_LANES 4 /* the largest k kept this way */
#define MOE_LANES_FN __attribute__((target("avx512f"))) static inline __attribute__((always_inline))

/* Each lane's list m[0 .. KC-1] (values, largest first; ix their indices)
 * takes value a with index j where a is strictly larger than an entry (so
 * of equal values the one seen first stays ahead, and NaN never enters);
 * the last entry drops out. Lists start at lo (never chosen) and index -1. */
MOE_LANES_FN void moe_lanes_insert(__m512d *m, __m512i *ix, __m512d a, __m512i j, int KC) {
    __mmask8 gt[TOPK_LANES];
    for (int r = 0; r < KC; r++) gt[r] = _mm512_cmp_pd_mask(a, m[r], _CMP_GT_OQ);
    for (int r = KC - 1; r > 0; r--) {
        m[r] = _mm512_mask_mov_pd(_mm512_mask_mov_pd(m[r], gt[r], a), gt[r - 1], m[r - 1]);
        ix[r] = _mm512_mask_mov_epi64(_mm512_mask_mov_epi64(ix[r], gt[r], j), gt[r - 1], ix[r - 1]);
    }
    m[0] = _mm512_mask_mov_pd(m[0], gt[0], a);
    ix[0] = _mm512_mask_mov_epi64(ix[0], gt[0], j);
}

/* The list whose head index is bi (one lane at most) loses its head. */
MOE_LANES_FN void moe_lanes_pop(__m512d *m, __m512i *ix, int64_t bi, double lo, int KC) {
    __mmask8 p = _mm512_cmpeq_epi64_mask(ix[0], _mm512_set1_epi64(bi));
    for (int r = 0; r + 1 < KC; r++) {
        m[r] = _mm512_mask_mov_pd(m[r], p, m[r + 1]);
        ix[r] = _mm512_mask_mov_epi64(ix[r], p, ix[r + 1]);
    }
    m[KC - 1] = _mm512_mask_mov_pd(m[KC - 1], p, _mm512_set1_pd(lo));
    ix[KC - 1] = _mm512_mask_mov_epi64(ix[KC - 1], p, _mm512_set1_epi64(-1));
}

#endif /* MOE_TOPK_LANES_H */
