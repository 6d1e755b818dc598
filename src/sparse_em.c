/*
 * sparse_em.c -- sparse EM (Neal & Hinton 1998, "A view of the EM algorithm
 * that justifies incremental, sparse, and other variants"): each row keeps
 * only its k most probable leaves, and most iterations look at those leaves
 * alone.
 *
 * EM increases the bound F = sum_i w_i log sum_{l in S_i} pi_il p_il, with
 * S_i the row's kept leaves, pi the gates' prior and p the expert's density
 * (the posteriors are those of the kept leaves, renormalised). An iteration
 * of sparse EM (params.sparse_full = R > 1) is one of three passes:
 *   - full (every R-th iteration, and whenever the kept sets are unknown):
 *     the dense E-step; S_i becomes the row's k largest posteriors, which
 *     maximises F over S at the current parameters; then the M-step of the
 *     experts and the gates;
 *   - refresh (the iteration after a gate moved): the gates' priors of the
 *     kept leaves under the new gates (O(gate work) per row), the kept
 *     experts only; M-step of the experts;
 *   - kept (the others): the kept experts only, with the priors recorded by
 *     the refresh pass -- O(k (D + D^2)) per row, nothing in K; M-step of
 *     the experts.
 * A flat tree's gate needs no refresh (em.c, moe_fit.sp_defer): its
 * posterior is 1 on every row, so its Newton step at the current gate,
 * gradient sum_i w_i (h_i - g_i) z_i and Hessian sum_i w_i (diag g_i -
 * g_i g_i') (x) z_i z_i', splits into parts of the gate alone (-sum w g z,
 * the Hessian, the Gram), which the full pass sums and em.c keeps aside
 * while its M-step moves the experts only, and a part of the posteriors,
 * sum w h z over the kept pairs (k gd per row), which the cycle's last kept
 * pass adds (gate_post_part). The gate then steps once, after that pass,
 * with posteriors as fresh as any in the cycle, and the full pass that
 * follows evaluates it; the priors the full pass recorded hold until then.
 * Each pass maximises F over the posteriors on S and each M-step over some
 * parameters with the others fixed, so F never decreases (EM checks it as
 * for dense EM). The per-row state is S_i, the kept leaves' log priors
 * and each pair's place in its group's sort by expert (flush): k (4 + 8 +
 * 4) bytes per row.
 */
#include "moe_impl.h"

#include <math.h>
#include <string.h>
#if MOE_ISA_X86
#include <immintrin.h>
#include "topk_lanes.h"
#endif

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF /* every instruction set gives the same bits */
#endif

#define LOG_2PI 1.8378770664093454836

/* The gate whose child node c (> 0) is. */
static size_t parent(const moe_fit *f, size_t c) {
    size_t g = 0;
    while (g + 1 < f->m->n_gates && f->nd.child0[g + 1] <= c) g++;
    return g;
}

typedef double v8d __attribute__((vector_size(64))); /* GCC's vector extension */
typedef int64_t v8l __attribute__((vector_size(64)));

/* The row's k largest of h[0 .. K-1] above lo into top, largest first,
 * ties to the lower index (NaNs and values <= lo never chosen: posteriors
 * take lo = -1, log joints -inf; when fewer than k are chosen, the caller
 * fills the rest with the first unchosen leaves): k rounds of a vectorised argmax
 * (each lane keeps its largest value and that value's first index, in
 * two interleaved chains; a NaN never replaces the running max), each
 * chosen leaf then set to -inf (h is overwritten afterwards); vals[r]
 * receives h[top[r]]. Compares only: the same on every instruction set.
 * Returns how many it chose. */
#define ARGMAX_STEP(m, ix, a, jv)                                                               \
    do {                                                                                        \
        v8l gt_ = (v8l)((a) > (m));                                                             \
        (m) = (v8d)(((v8l)(a) & gt_) | ((v8l)(m) & ~gt_));                                      \
        (ix) = ((jv) & gt_) | ((ix) & ~gt_);                                                    \
    } while (0)
MOE_ISA_INLINE size_t topk_body(double *h, size_t K, size_t k, double lo, size_t *top,
                                double *vals) {
    const v8l lane = {0, 1, 2, 3, 4, 5, 6, 7};
    size_t n = 0;
    for (; n < k; n++) {
        v8d m0 = {lo, lo, lo, lo, lo, lo, lo, lo}, m1 = m0, a;
        v8l i0 = lane, i1 = lane;
        size_t j = 0;
        for (; j + 16 <= K; j += 16) {
            memcpy(&a, h + j, sizeof a);
            ARGMAX_STEP(m0, i0, a, lane + (int64_t)j);
            memcpy(&a, h + j + 8, sizeof a);
            ARGMAX_STEP(m1, i1, a, lane + (int64_t)(j + 8));
        }
        double best = lo;
        size_t bi = K;
        for (size_t l = 0; l < 8; l++) { /* the lanes' winners, then the rest */
            if (m0[l] > best || (m0[l] == best && (size_t)i0[l] < bi)) {
                best = m0[l];
                bi = (size_t)i0[l];
            }
            if (m1[l] > best || (m1[l] == best && (size_t)i1[l] < bi)) {
                best = m1[l];
                bi = (size_t)i1[l];
            }
        }
        for (; j < K; j++)
            if (h[j] > best) {
                best = h[j];
                bi = j;
            }
        if (!(best > lo)) break; /* only NaNs (or values <= lo) left */
        top[n] = bi;
        vals[n] = best;
        h[bi] = -INFINITY;
    }
    return n;
}
#define TOPK_VERSION(name, attr)                                                                \
    attr static size_t topk_##name(double *h, size_t K, size_t k, double lo, size_t *top,      \
                                   double *vals) {                                              \
        return topk_body(h, K, k, lo, top, vals);                                               \
    }
TOPK_VERSION(base, )
#if MOE_ISA_X86
TOPK_VERSION(avx2, __attribute__((target("avx2,fma"))))
/* AVX-512, k <= TOPK_LANES (KC, a constant): the same choice in one pass
 * over h. Each lane keeps its KC largest values above lo, largest first,
 * with their indices (a value enters only when strictly larger than one
 * kept, so a lane's list is ordered by value descending, index ascending),
 * in two interleaved chains (a: h[j .. j+7], b: h[j+8 .. j+15]); then KC
 * rounds take the largest head of the 16 lists, ties to the lower index,
 * and pop it. Compares and selects only: the choice of topk_body, whose
 * rounds cost a pass over h, a scalar merge of the lanes and a store each
 * (k = 2, K = 64: 54 -> 33 ns a row alone; sparse EM's full iterations
 * 12% faster on one thread at D = 10). h is not written. */
#define AVX512 MOE_LANES_FN
AVX512 void lanes_insert(__m512d *m, __m512i *ix, const double *p, int64_t j0, int KC) {
    __m512i j = _mm512_add_epi64(_mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0), _mm512_set1_epi64(j0));
    moe_lanes_insert(m, ix, _mm512_loadu_pd(p), j, KC);
}
AVX512 size_t topk_lanes(const double *h, size_t K, double lo, size_t *top, double *vals, int KC) {
    __m512d ma[TOPK_LANES], mb[TOPK_LANES];
    __m512i ia[TOPK_LANES], ib[TOPK_LANES];
    for (int r = 0; r < KC; r++) {
        ma[r] = mb[r] = _mm512_set1_pd(lo);
        ia[r] = ib[r] = _mm512_set1_epi64(-1);
    }
    size_t j = 0;
    for (; j + 16 <= K; j += 16) {
        lanes_insert(ma, ia, h + j, (int64_t)j, KC);
        lanes_insert(mb, ib, h + j + 8, (int64_t)(j + 8), KC);
    }
    if (j + 8 <= K) {
        lanes_insert(ma, ia, h + j, (int64_t)j, KC);
        j += 8;
    }
    if (j < K) { /* the last K mod 8, the other lanes lo (never chosen) */
        double t[8] = {lo, lo, lo, lo, lo, lo, lo, lo};
        memcpy(t, h + j, (K - j) * sizeof(double));
        lanes_insert(mb, ib, t, (int64_t)j, KC);
    }
    size_t n = 0;
    for (; n < (size_t)KC; n++) {
        double mx = _mm512_reduce_max_pd(_mm512_max_pd(ma[0], mb[0])); /* (no NaN kept) */
        if (!(mx > lo)) break;
        __m512d mv = _mm512_set1_pd(mx);
        __m512i big = _mm512_set1_epi64(INT64_MAX);
        __m512i ca = _mm512_mask_mov_epi64(big, _mm512_cmp_pd_mask(ma[0], mv, _CMP_EQ_OQ), ia[0]);
        __m512i cb = _mm512_mask_mov_epi64(big, _mm512_cmp_pd_mask(mb[0], mv, _CMP_EQ_OQ), ib[0]);
        int64_t bi = _mm512_reduce_min_epi64(_mm512_min_epi64(ca, cb));
        top[n] = (size_t)bi;
        vals[n] = h[bi];
        moe_lanes_pop(ma, ia, bi, lo, KC);
        moe_lanes_pop(mb, ib, bi, lo, KC);
    }
    return n;
}
__attribute__((target("avx512f"))) static size_t topk_avx512(double *h, size_t K, size_t k,
                                                            double lo, size_t *top,
                                                            double *vals) {
    switch (k) {
    case 1: return topk_lanes(h, K, lo, top, vals, 1);
    case 2: return topk_lanes(h, K, lo, top, vals, 2);
    case 3: return topk_lanes(h, K, lo, top, vals, 3);
    case 4: return topk_lanes(h, K, lo, top, vals, 4);
    default: return topk_body(h, K, k, lo, top, vals);
    }
}
#endif

int moe_sparse_topk_isa(int isa, double *h, size_t K, size_t k, double lo, size_t *top,
                        double *vals) {
    if (!moe_isa_has(isa)) return -1;
    return (int)MOE_ISA_CALL(isa, topk, h, K, k, lo, top, vals);
}

/* Fill top[n .. k-1] with the first leaves not in top[0 .. n-1] (rows
 * with fewer than k leaves to choose: NaN or -inf), their values v. */
static void fill_top(size_t K, size_t k, size_t n, size_t *top, double *vals, const double *v) {
    for (size_t j = 0; n < k && j < K; j++) {
        size_t r = 0;
        while (r < n && top[r] != j) r++;
        if (r == n) {
            vals[n] = v ? v[j] : -INFINITY;
            top[n++] = j;
        }
    }
}

/* Row i's kept leaves top[0 .. k-1] with posteriors h: the leaves' and the
 * gates' posterior slots (the gates' the kept leaves' sums along their
 * paths; the other leaves 0), and with f->sp_keep the row's state for the
 * passes that follow (its kept leaves and their log priors). A flat gate's
 * deferred step with Gaussian experts reads no posterior slot in this
 * pass (estep.c: the gate's targets are 0, the experts take the kept
 * pairs): then they stay unwritten. lpk: the kept leaves' log priors, or
 * NULL: b->lp's. */
static void keep_row(const moe_fit *f, moe_block *b, size_t i, size_t row, const size_t *top,
                     const double *h, const double *lpk) {
    const moe_model *m = f->m;
    size_t K = m->n_leaves, NN = f->nd.n_nodes, G = m->n_gates, k = f->sparse_k;
    double *post = b->post + i * NN;
    int slots = m->task != MOE_TASK_REGRESSION || f->sp_gate_part != MOE_GATE_PRIOR;
    if (slots) memset(post, 0, (G + K) * sizeof(double));
    for (size_t r = 0; r < k && slots; r++) post[G + top[r]] = h[r];
    for (size_t r = 0; r < k && slots; r++)
        for (size_t c = G + top[r]; c > 0;) {
            c = parent(f, c);
            post[c] += h[r];
        }
    if (f->sp_keep) {
        int32_t *ks = f->sp_keep + (row + i) * k;
        double *lp = f->sp_lprior + (row + i) * k;
        for (size_t r = 0; r < k; r++) {
            ks[r] = (int32_t)top[r];
            lp[r] = lpk ? lpk[r] : b->lp[i * NN + G + top[r]];
        }
    }
}

/* The kept pairs' hk[i k + r] = exp(hk[i k + r]) (their log joints minus
 * the row's max), each row's sum in sum[i] and its log in lsum[i]: exp
 * and log over the block at once (vmath.c). */
static void exp_rows(size_t nb, size_t k, double *hk, double *sum, double *lsum) {
    moe_vexp(hk, hk, nb * k);
    for (size_t i = 0; i < nb; i++) {
        double s = 0.0;
        for (size_t r = 0; r < k; r++) s += hk[i * k + r];
        sum[i] = s;
    }
    moe_vlog(lsum, sum, nb);
}

void moe_sparse_keep_choice(const moe_fit *f, size_t n, double *lp, size_t *top, double *l,
                            double *h, double *lmass) {
    size_t K = f->m->n_leaves, k = f->sparse_k;
    *lmass = 0.0;
    if (n == 0) {
        /* No leaf gives the target any density: the posteriors fall back
         * to the k largest priors, renormalised; the row's F is -inf. */
        n = (size_t)moe_sparse_topk_isa(moe_isa_best(), lp, K, k, -INFINITY, top, l);
        *lmass = -INFINITY;
    }
    fill_top(K, k, n, top, l, NULL);
    for (size_t r = 0; r < k; r++) h[r] = n > 0 ? l[r] - l[0] : 0.0;
}

void moe_sparse_keep_tail(const moe_fit *f, moe_block *b, size_t nb, size_t row,
                          const double *lmass, const size_t *kept, double *hk, const double *lpk) {
    size_t k = f->sparse_k;
    const double *lk = b->ld;
    /* log h = lj - F_i, so the entropy -sum h log h needs no log */
    exp_rows(nb, k, hk, b->ent, b->ll);
    for (size_t i = 0; i < nb; i++) {
        double *h = hk + i * k, inv = 1.0 / b->ent[i];
        const double *l = lk + i * k;
        double fi = l[0] + b->ll[i], e = 0.0;
        for (size_t r = 0; r < k; r++) {
            h[r] *= inv;
            if (h[r] > 0.0) e -= h[r] * (l[r] - fi);
        }
        b->ent[i] = e;
        b->ll[i] = isfinite(lmass[i]) ? fi : -INFINITY;
        keep_row(f, b, i, row, kept + i * k, h, lpk ? lpk + i * k : NULL);
    }
}

/* moe_sparse_keep from the leaves' log joints (moe_fit.sp_lean): the k
 * largest log joints, their posteriors exp(lj - max) / sum over the kept
 * leaves, F_i = max + log sum in b->ll (lmass 0): k exps a row, not K. */
static void keep_joint(const moe_fit *f, moe_block *b, size_t nb, size_t row, double *lmass,
                       size_t *kept, double *hk) {
    const moe_model *m = f->m;
    size_t K = m->n_leaves, NN = f->nd.n_nodes, G = m->n_gates, k = f->sparse_k;
    double *lk = b->ld; /* the kept log joints; ld is moe_block_forward_joint's scratch (K > k) */
    int isa = moe_isa_best();
    for (size_t i = 0; i < nb; i++) {
        double *lj = b->post + i * NN + G;
        size_t n = (size_t)moe_sparse_topk_isa(isa, lj, K, k, -INFINITY, kept + i * k, lk + i * k);
        if (n == 0) memcpy(lj, b->lp + i * NN + G, K * sizeof(double)); /* (b->lp kept) */
        moe_sparse_keep_choice(f, n, lj, kept + i * k, lk + i * k, hk + i * k, lmass + i);
    }
    moe_sparse_keep_tail(f, b, nb, row, lmass, kept, hk, NULL);
}

void moe_sparse_keep(const moe_fit *f, moe_block *b, size_t nb, size_t row, double *lmass,
                     size_t *kept, double *hk) {
    if (f->sp_lean) {
        keep_joint(f, b, nb, row, lmass, kept, hk);
        return;
    }
    const moe_model *m = f->m;
    size_t K = m->n_leaves, NN = f->nd.n_nodes, G = m->n_gates, k = f->sparse_k;
    double *lh = b->ld, *ms = b->ld + nb * k; /* free after the posteriors (K > k) */
    int isa = moe_isa_best();
    for (size_t i = 0; i < nb; i++) {
        double *h = b->post + i * NN + G, *val = hk + i * k;
        size_t *top = kept + i * k;
        size_t n = (size_t)moe_sparse_topk_isa(isa, h, K, k, -1.0, top, val);
        fill_top(K, k, n, top, val, h); /* NaN posteriors: any leaves */
        double mass = 0.0;
        for (size_t r = 0; r < k; r++) mass += val[r];
        double inv = mass > 0.0 ? 1.0 / mass : 0.0;
        for (size_t r = 0; r < k; r++) val[r] *= inv;
        ms[i] = mass;
        keep_row(f, b, i, row, top, val, NULL);
    }
    /* The kept mass's log and the kept posteriors' entropy, with the logs of
     * the whole block at once (vmath.c). */
    moe_vlog(lh, hk, nb * k);
    moe_vlog(lmass, ms, nb);
    for (size_t i = 0; i < nb; i++) {
        double ent = 0.0;
        for (size_t r = 0; r < k; r++)
            if (hk[i * k + r] > 0.0) ent -= hk[i * k + r] * lh[i * k + r];
        b->ent[i] = ent;
    }
}

/* Counting sort of the block's nb k (row, leaf) pairs by leaf: idx receives
 * the pairs (row * k + r), rows increasing within a leaf; cnt[j] ends as
 * the end of leaf j's pairs. */
static void sort_pairs(size_t K, size_t nb, size_t k, const size_t *kept, size_t *idx,
                       size_t *cnt) {
    memset(cnt, 0, (K + 1) * sizeof(size_t));
    for (size_t e = 0; e < nb * k; e++) cnt[kept[e] + 1]++;
    for (size_t j = 0; j < K; j++) cnt[j + 1] += cnt[j];
    for (size_t e = 0; e < nb * k; e++) idx[cnt[kept[e]]++] = e;
}

/* The blocks whose kept pairs a kept pass gathers before summing their
 * Grams: an expert's run is then about SB times longer, so its Gram's
 * upper triangle, read and written once a run, costs SB times less a pair
 * (D = 32, K = 64, k = 2: kept-only passes 16% faster with 4 blocks than
 * with 1). */
#define SB 4

/* A thread's scratch (fit.c allocates moe_sparse_scratch() doubles and
 * moe_sparse_iscratch() indices a thread). estep.c uses mx (as the kept
 * masses' logs), hk and kept of a full pass in this order. */
typedef struct sp_area {
    double *mx;    /* [BR] the rows' largest log joint, then F */
    double *hk;    /* [BR k] the kept posteriors */
    double *lj;    /* [BR k] their log joints */
    double *pk;    /* [BR k C] their class probabilities */
    double *u;     /* [SB BR q] the pending blocks' rows [z, t] */
    double *gat;   /* [BR gather] a multinomial expert's gathered rows */
    double *pw;    /* [SB BR k] the pending pairs' weights */
    double *ws;    /* [SB BR k] the same, sorted by expert */
    size_t *kept;  /* [BR k] the block's kept leaves */
    size_t *pend;  /* [3] pending pairs, pending rows, the first one's row */
    size_t *pleaf; /* [SB BR k] the pending pairs' experts */
    size_t *prow;  /* [SB BR k] their rows, as offsets into u */
    size_t *idx;   /* [SB BR k] sorted by expert */
    size_t *cnt;   /* [K + 1] */
} sp_area;

static size_t gather_size(const moe_model *m) {
    size_t C = m->n_cls, ed = m->ed, F = C > 0 ? C - 1 : 0;
    size_t acc = F + ed > F * ed ? F + ed : F * ed;
    size_t P = m->n_out, g = ed + 1 + 2 * C + acc;
    return P > g ? P : g; /* a multinomial expert's rows (or many outputs' solve) */
}

size_t moe_sparse_scratch(const moe_model *m, size_t k) {
    size_t q = m->ed + m->n_out, BR = MOE_BLOCK_ROWS;
    return BR * (1 + 2 * k + k * m->n_cls + SB * q + gather_size(m)) + 2 * SB * BR * k;
}

size_t moe_sparse_iscratch(const moe_model *m, size_t k) {
    size_t BR = MOE_BLOCK_ROWS;
    return BR * k + 3 + 3 * SB * BR * k + m->n_leaves + 1;
}

static sp_area area(const moe_fit *f, size_t tid) {
    const moe_model *m = f->m;
    size_t k = f->sparse_k, BR = MOE_BLOCK_ROWS, q = m->ed + m->n_out;
    sp_area a;
    a.mx = f->sp_mem + tid * f->sp_stride;
    a.hk = a.mx + BR;
    a.lj = a.hk + BR * k;
    a.pk = a.lj + BR * k;
    a.u = a.pk + BR * k * m->n_cls;
    a.gat = a.u + SB * BR * q;
    a.pw = a.gat + BR * gather_size(m);
    a.ws = a.pw + SB * BR * k;
    a.kept = f->sp_idx + tid * f->sp_istride;
    a.pend = a.kept + BR * k;
    a.pleaf = a.pend + 3;
    a.prow = a.pleaf + SB * BR * k;
    a.idx = a.prow + SB * BR * k;
    a.cnt = a.idx + SB * BR * k;
    return a;
}

/* Add a block's kept pairs to the pending ones: weights wt[i] hk[i k + r]
 * (their sums to the experts' weights in st now), row i at offset
 * roff0 + i q of the u the flush is given. */
static void stage(const moe_fit *f, const sp_area *a, size_t roff0, const double *wt, size_t nb,
                  const size_t *kept, const double *hk, double *st) {
    size_t k = f->sparse_k, q = f->m->ed + f->m->n_out, n = a->pend[0];
    double *esw = st + f->off_esw;
    for (size_t i = 0, e = 0; i < nb; i++) /* (no division by k a pair) */
        for (size_t r = 0; r < k; r++, e++, n++) {
            a->pw[n] = (wt ? wt[i] : 1.0) * hk[e];
            a->pleaf[n] = kept[e];
            a->prow[n] = roff0 + i * q;
            esw[kept[e]] += a->pw[n];
        }
    a->pend[0] = n;
}

/* A kept pass's pairs with the order the cycle's first kept pass recorded
 * (moe_fit.sp_sorted): the block's pairs straight to their places in
 * expert order, weights in ws and rows in idx (as flush sorts them), each
 * expert's pairs counted in cnt[1 + j], and their sums to the experts'
 * weights in st in staging order, as stage. */
static void stage_sorted(const moe_fit *f, const sp_area *a, size_t roff0, size_t row,
                         const double *wt, size_t nb, const size_t *kept, const double *hk,
                         double *st) {
    size_t k = f->sparse_k, q = f->m->ed + f->m->n_out;
    const int32_t *pos = f->sp_pos + row * k;
    double *esw = st + f->off_esw;
    if (a->pend[0] == 0) memset(a->cnt, 0, (f->m->n_leaves + 1) * sizeof(size_t));
    for (size_t i = 0, e = 0; i < nb; i++)
        for (size_t r = 0; r < k; r++, e++) {
            size_t s = (size_t)pos[e];
            double w = (wt ? wt[i] : 1.0) * hk[e];
            a->ws[s] = w;
            a->idx[s] = roff0 + i * q;
            a->cnt[kept[e] + 1]++;
            esw[kept[e]] += w;
        }
    a->pend[0] += nb * k;
}

/* The pending pairs' Gram updates into st, sorted by expert (counting sort,
 * pairs in staging order within an expert), each expert's run summed by
 * the tile kernel; then none pending. A kept pass's groups of blocks are
 * the same in every pass of a cycle, and so are their rows' kept leaves:
 * the first kept pass records each pair's place, the others stage their
 * pairs in place and count them by expert (stage_sorted) but do not sort
 * (sort and staging: 12% of a kept pass at D = 10). */
static void flush(const moe_fit *f, const sp_area *a, const double *u, double *st) {
    size_t n = a->pend[0], K = f->m->n_leaves, q = f->m->ed + f->m->n_out, k = f->sparse_k;
    size_t row = a->pend[2];
    a->pend[0] = a->pend[1] = 0;
    if (n == 0) return;
    int kept_pass = f->sp_pass != MOE_PASS_FULL && f->sp_pos;
    const size_t *ends = a->cnt; /* ends[j]: the end of expert j's pairs */
    if (kept_pass && f->sp_sorted) {
        for (size_t j = 0; j < K; j++) a->cnt[j + 1] += a->cnt[j];
        ends = a->cnt + 1;
    } else {
        sort_pairs(K, n, 1, a->pleaf, a->idx, a->cnt);
        int32_t *pos = kept_pass ? f->sp_pos + row * k : NULL;
        for (size_t s = 0; s < n; s++) { /* weights and rows in expert order */
            size_t e = a->idx[s];
            a->ws[s] = a->pw[e];
            a->idx[s] = a->prow[e];
            if (pos) pos[e] = (int32_t)s;
        }
    }
    moe_sparse_runs_isa(moe_isa_best(), K, q, ends, a->idx, a->ws, u, st + f->off_eg);
}

double *moe_sparse_rows(const moe_fit *f, size_t tid, size_t row, size_t nb, double *st) {
    sp_area a = area(f, tid);
    if (a.pend[1] + nb > SB * MOE_BLOCK_ROWS) flush(f, &a, a.u, st);
    if (a.pend[1] == 0) a.pend[2] = row; /* a new group's first row */
    return a.u + a.pend[1] * (f->m->ed + f->m->n_out);
}

void moe_sparse_gram(const moe_fit *f, size_t tid, const double *wt, size_t nb,
                     const size_t *kept, const double *hk, double *st) {
    sp_area a = area(f, tid);
    stage(f, &a, a.pend[1] * (f->m->ed + f->m->n_out), wt, nb, kept, hk, st);
    a.pend[1] += nb;
}

/* Whether a flat gate's posterior part (the cycle's last kept pass,
 * MOE_GATE_POST), sum_i w_i h_il z_i over the kept pairs (i, l), is row 0
 * of expert l's Gram: when the gate's inputs are the experts' design
 * (z_0 = 1), which the pass sums anyway. */
static int gate_post_in_grams(const moe_fit *f) {
    return f->sp_gate_part == MOE_GATE_POST &&
           moe_block_zg(f->m, &f->blocks[0]) == f->blocks[0].ze;
}

void moe_sparse_slab_end(const moe_fit *f, size_t tid, double *st) {
    sp_area a = area(f, tid);
    flush(f, &a, a.u, st);
    if (!gate_post_in_grams(f)) return;
    /* The slab's posterior part from its Grams (not a pass over the pairs
     * of its own: the last kept pass cost 1.3 kept passes at D = 10). */
    const moe_model *m = f->m;
    size_t K = m->n_leaves, gd = m->gd, q = m->ed + m->n_out;
    double *grad = st + f->off_ggrad[0];
    for (size_t l = 1; l < K; l++) {
        const double *r0 = m->task == MOE_TASK_REGRESSION ? st + f->off_eg + l * q * q
                                                          : st + f->off_egram + l * gd * gd;
        for (size_t j = 0; j < gd; j++) grad[(l - 1) * gd + j] += r0[j];
    }
}

/* Multinomial experts' statistics from the kept pairs, each expert on its
 * own rows (gathered): gradient, Gram and (sampled blocks) Hessian of its
 * h-weighted log-likelihood, as accumulate_block does for dense EM.
 * pk: the kept pairs' class probabilities (nb k x C). */
static void sparse_softmax(const moe_fit *f, const moe_rows *v, size_t i0, const double *ze,
                           size_t nb, const size_t *kept, const double *hk, const double *pk,
                           int with_hess, double *gat, size_t *idx, size_t *cnt, double *st) {
    const moe_model *m = f->m;
    size_t K = m->n_leaves, C = m->n_cls, ed = m->ed, k = f->sparse_k, n = (C - 1) * ed;
    const double *wt = v->weights ? v->weights + i0 : NULL;
    double *Z = gat, *w = Z + MOE_BLOCK_ROWS * ed, *t = w + MOE_BLOCK_ROWS;
    double *p = t + MOE_BLOCK_ROWS * C, *acc = p + MOE_BLOCK_ROWS * C;
    sort_pairs(K, nb, k, kept, idx, cnt);
    size_t s0 = 0;
    for (size_t j = 0; j < K; j++) {
        size_t nj = cnt[j] - s0;
        double sw = 0.0;
        for (size_t r = 0; r < nj; r++) {
            size_t e = idx[s0 + r], i = e / k;
            w[r] = (wt ? wt[i] : 1.0) * hk[e];
            sw += w[r];
            memcpy(Z + r * ed, ze + i * ed, ed * sizeof(double));
            memcpy(p + r * C, pk + e * C, C * sizeof(double));
            for (size_t c = 0; c < C; c++) t[r * C + c] = 0.0;
            t[r * C + (size_t)v->labels[i0 + i]] = 1.0;
        }
        s0 = cnt[j];
        st[f->off_esw + j] += sw;
        if (sw == 0.0) continue;
        double *h = f->e_newton && with_hess ? st + f->off_ehess + j * (n * n + 1) : NULL;
        moe_softmax_accumulate(nj, C, ed, Z, w, t, C, p, C, st + f->off_egrad + j * n,
                               st + f->off_egram + j * ed * ed, h, acc);
        if (h)
            for (size_t r = 0; r < nj; r++) h[n * n] += w[r];
    }
}

/* The block's inputs cols[0 .. ne-1] standardised (intercept first) into
 * the rows of dst, stride ds, as the gates' pass does, without the gates;
 * ie: room for ne reciprocal scales. */
static void standardise(const moe_model *m, const size_t *ec, size_t ne, double *ie, size_t nb,
                        const double *x, size_t ld, double *dst, size_t ds) {
    for (size_t j = 0; j < ne; j++) ie[j] = 1.0 / m->x_scale[ec[j]];
    moe_standardise_rows(m, nb, x, ld, ec, ne, ie, dst, ds);
}

/* c . z over n: four partial sums (a mod 4), added pairwise -- shorter
 * dependency chains than one running sum, the same bits everywhere. */
static inline double dot(const double *c, const double *z, size_t n) {
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    size_t a = 0;
    for (; a + 4 <= n; a += 4) {
        s0 += c[a] * z[a];
        s1 += c[a + 1] * z[a + 1];
        s2 += c[a + 2] * z[a + 2];
        s3 += c[a + 3] * z[a + 3];
    }
    for (; a < n; a++) s0 += c[a] * z[a];
    return (s0 + s1) + (s2 + s3);
}

/* dot's sums with its four partial sums as the lanes of one vector (the
 * last n mod 4 products beside zeros, which change no sum but a zero's
 * sign): the same operations in the same order. */
#define dot_base dot
#if MOE_ISA_X86
__attribute__((target("avx2"))) static inline double dot_avx2(const double *c, const double *z,
                                                             size_t n) {
    static const int64_t mk[8] = {-1, -1, -1, -1, 0, 0, 0, 0};
    __m256d acc = _mm256_setzero_pd();
    size_t a = 0;
    for (; a + 4 <= n; a += 4)
        acc = _mm256_add_pd(acc, _mm256_mul_pd(_mm256_loadu_pd(c + a), _mm256_loadu_pd(z + a)));
    if (a < n) {
        __m256i m = _mm256_loadu_si256((const __m256i *)(mk + 4 - (n - a)));
        acc = _mm256_add_pd(acc, _mm256_mul_pd(_mm256_maskload_pd(c + a, m),
                                               _mm256_maskload_pd(z + a, m)));
    }
    __m128d lo = _mm256_castpd256_pd128(acc), hi = _mm256_extractf128_pd(acc, 1);
    lo = _mm_add_sd(lo, _mm_unpackhi_pd(lo, lo));
    hi = _mm_add_sd(hi, _mm_unpackhi_pd(hi, hi));
    return _mm_cvtsd_f64(_mm_add_sd(lo, hi));
}
#define dot_avx512 dot_avx2
#endif

/* The one-target kept pass's log joints (moe_sparse_block): for each row
 * i, t_i = u[i q + ed] and its kept leaves j = kept[i k + r],
 * l[i k + r] = lpr[i k + r] - (dt_j + s^2) / 2 with s = (t_i - c_j . z_i)
 * il_j, and the row's largest in mx[i]; compiled per instruction set. */
MOE_ISA_INLINE void dens_one(size_t nb, size_t k, size_t ed, size_t q, const double *u,
                             const size_t *kept, const double *lpr, const double *coef,
                             const double *il, const double *dt, double *lj, double *mxr,
                             double (*dotf)(const double *, const double *, size_t)) {
    for (size_t i = 0; i < nb; i++) {
        const double *z = u + i * q;
        double t = z[ed], mx = -INFINITY, *l = lj + i * k;
        for (size_t r = 0; r < k; r++) {
            size_t j = kept[i * k + r];
            double s = (t - dotf(coef + j * ed, z, ed)) * il[j];
            l[r] = lpr[i * k + r] + -0.5 * (dt[j] + s * s);
            if (l[r] > mx) mx = l[r];
        }
        mxr[i] = mx;
    }
}
#define DENS_ONE_VERSION(name, attr)                                                            \
    attr static void dens_one_##name(size_t nb, size_t k, size_t ed, size_t q, const double *u, \
                                     const size_t *kept, const double *lpr,                     \
                                     const double *coef, const double *il, const double *dt,    \
                                     double *lj, double *mxr) {                                 \
        dens_one(nb, k, ed, q, u, kept, lpr, coef, il, dt, lj, mxr, dot_##name);                \
    }
MOE_ISA_VERSIONS(DENS_ONE_VERSION)

/* The posteriors of k = 2 kept leaves, 8 rows at a time with AVX-512 (the
 * pairs' log joints lj[2 i + r] interleaved, as the rows keep them),
 * around the block's exp and log (vmath.c): the operations of
 * moe_sparse_block's loops in the same order on the same values, for the
 * rows whose largest log joint mx[i] is finite (the others' numbers are
 * overwritten there). nb is a multiple of 8. */
#if MOE_ISA_X86
#define AVX512F_FN __attribute__((target("avx512f"))) static
/* hk[2 i + r] = lj[2 i + r] - mx[i] (0 where mx[i] is not finite). */
AVX512F_FN void post2_shift(size_t nb, const double *lj, const double *mx, double *hk) {
    const __m512i lo = _mm512_set_epi64(3, 3, 2, 2, 1, 1, 0, 0);
    const __m512i hi = _mm512_set_epi64(7, 7, 6, 6, 5, 5, 4, 4);
    const __m512d zero = _mm512_setzero_pd();
    for (size_t i = 0; i < nb; i += 8) {
        __m512d m = _mm512_loadu_pd(mx + i);
        __m512d m0 = _mm512_permutexvar_pd(lo, m), m1 = _mm512_permutexvar_pd(hi, m);
        /* (finite: m - m is 0) */
        __mmask8 f0 = _mm512_cmp_pd_mask(_mm512_sub_pd(m0, m0), zero, _CMP_EQ_OQ);
        __mmask8 f1 = _mm512_cmp_pd_mask(_mm512_sub_pd(m1, m1), zero, _CMP_EQ_OQ);
        _mm512_storeu_pd(hk + 2 * i, _mm512_maskz_sub_pd(f0, _mm512_loadu_pd(lj + 2 * i), m0));
        _mm512_storeu_pd(hk + 2 * i + 8,
                         _mm512_maskz_sub_pd(f1, _mm512_loadu_pd(lj + 2 * i + 8), m1));
    }
}
/* The rows' sums (0 + h0) + h1. */
AVX512F_FN void post2_sum(size_t nb, const double *hk, double *sum) {
    const __m512i ev = _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i od = _mm512_set_epi64(15, 13, 11, 9, 7, 5, 3, 1);
    for (size_t i = 0; i < nb; i += 8) {
        __m512d a = _mm512_loadu_pd(hk + 2 * i), b = _mm512_loadu_pd(hk + 2 * i + 8);
        __m512d h0 = _mm512_permutex2var_pd(a, ev, b), h1 = _mm512_permutex2var_pd(a, od, b);
        _mm512_storeu_pd(sum + i, _mm512_add_pd(_mm512_add_pd(_mm512_setzero_pd(), h0), h1));
    }
}
/* The posteriors hk /= sum, F_i = mx + ll into mx and the entropy
 * -sum h (l - F_i) over h > 0 into sum. */
AVX512F_FN void post2_norm(size_t nb, const double *lj, double *mx, double *hk, double *sum,
                           const double *ll) {
    const __m512i ev = _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i od = _mm512_set_epi64(15, 13, 11, 9, 7, 5, 3, 1);
    const __m512i lo = _mm512_set_epi64(11, 3, 10, 2, 9, 1, 8, 0);
    const __m512i hi = _mm512_set_epi64(15, 7, 14, 6, 13, 5, 12, 4);
    const __m512d zero = _mm512_setzero_pd();
    for (size_t i = 0; i < nb; i += 8) {
        __m512d a = _mm512_loadu_pd(hk + 2 * i), b = _mm512_loadu_pd(hk + 2 * i + 8);
        __m512d la = _mm512_loadu_pd(lj + 2 * i), lb = _mm512_loadu_pd(lj + 2 * i + 8);
        __m512d inv = _mm512_div_pd(_mm512_set1_pd(1.0), _mm512_loadu_pd(sum + i));
        __m512d fi = _mm512_add_pd(_mm512_loadu_pd(mx + i), _mm512_loadu_pd(ll + i));
        __m512d h0 = _mm512_mul_pd(_mm512_permutex2var_pd(a, ev, b), inv);
        __m512d h1 = _mm512_mul_pd(_mm512_permutex2var_pd(a, od, b), inv);
        __m512d l0 = _mm512_permutex2var_pd(la, ev, lb), l1 = _mm512_permutex2var_pd(la, od, lb);
        __m512d e = _mm512_mask_sub_pd(zero, _mm512_cmp_pd_mask(h0, zero, _CMP_GT_OQ), zero,
                                       _mm512_mul_pd(h0, _mm512_sub_pd(l0, fi)));
        e = _mm512_mask_sub_pd(e, _mm512_cmp_pd_mask(h1, zero, _CMP_GT_OQ), e,
                               _mm512_mul_pd(h1, _mm512_sub_pd(l1, fi)));
        _mm512_storeu_pd(hk + 2 * i, _mm512_permutex2var_pd(h0, lo, h1));
        _mm512_storeu_pd(hk + 2 * i + 8, _mm512_permutex2var_pd(h0, hi, h1));
        _mm512_storeu_pd(mx + i, fi);
        _mm512_storeu_pd(sum + i, e);
    }
}
#endif

/* A flat gate's deferred step (em.c): the posterior part of its gradient,
 * grad[(l - 1) gd + j] += sum_i w_i h_il z_ij over the kept pairs (i, l),
 * l > 0 (child 0's row is fixed), z the gate's inputs (stride ldz). */
static void gate_post_part(size_t gd, size_t nb, size_t k, const size_t *kept, const double *hk,
                           const double *wt, const double *z, size_t ldz, double *grad) {
    for (size_t i = 0; i < nb; i++) {
        const double *zi = z + i * ldz;
        for (size_t r = 0; r < k; r++) {
            size_t l = kept[i * k + r];
            double a = (wt ? wt[i] : 1.0) * hk[i * k + r];
            if (l == 0 || a == 0.0) continue;
            double *g = grad + (l - 1) * gd;
            for (size_t j = 0; j < gd; j++) g[j] += a * zi[j];
        }
    }
}

void moe_sparse_block(const moe_fit *f, moe_block *b, const moe_rows *v, size_t i0, size_t nb,
                      size_t row, int with_hess, double *st) {
    const moe_model *m = f->m;
    size_t P = m->n_out, C = m->n_cls, ed = m->ed, k = f->sparse_k;
    size_t NN = f->nd.n_nodes, G = m->n_gates, q = ed + P;
    size_t tid = (size_t)(b - f->blocks);
    sp_area a = area(f, tid);
    /* Gaussian experts: the block's rows [z, t] after the pending blocks'
     * (flushed first when full); their Grams wait for the flush. */
    double *u = moe_sparse_rows(f, tid, row, nb, st);
    size_t *kept = a.kept;
    double *hk = a.hk, *lj = a.lj, *pk = a.pk, *gat = a.gat;
    const int32_t *ks = f->sp_keep + row * k;
    double *lpr = f->sp_lprior + row * k;
    const double *x = v->x + i0 * v->ld_x;
    const double *wt = v->weights ? v->weights + i0 : NULL;

    for (size_t e = 0; e < nb * k; e++) kept[e] = (size_t)ks[e];
    if (f->sp_pass == MOE_PASS_REFRESH) {
        /* The gates moved: every gate's softmax again (and ze), then the
         * kept leaves' new log priors. */
        moe_block_gates(m, &f->nd, b, nb, x, v->ld_x);
        for (size_t i = 0, e = 0; i < nb; i++)
            for (size_t r = 0; r < k; r++, e++) lpr[e] = b->lp[i * NN + G + kept[e]];
    } else {
        /* (Gaussian experts: straight into the rows [z, t] of u) */
        if (m->task == MOE_TASK_REGRESSION)
            standardise(m, m->ecols, m->n_ecols, b->inv, nb, x, v->ld_x, u, q);
        else
            standardise(m, m->ecols, m->n_ecols, b->inv, nb, x, v->ld_x, b->ze, ed);
    }

    /* The kept experts' log joints (log prior + log density), in lj. */
    double iy[64];
    for (size_t p = 0; p < P && p < 64; p++) iy[p] = 1.0 / m->y_scale[p];
    double *mxr = a.mx; /* the rows' largest log joint, then F */
    int in_u = m->task == MOE_TASK_REGRESSION && f->sp_pass != MOE_PASS_REFRESH;
    /* One target (the common case) has a loop of its own: the general loop
     * below without its inner loops, with each expert's 1 / sd and
     * LOG_2PI + log det once a block (in ld, free in this pass), not a
     * division a pair; the same operations on the same values. */
    int one = m->task == MOE_TASK_REGRESSION && P == 1;
    double *il = b->ld, *dt = b->ld + m->n_leaves;
    for (size_t j = 0; j < m->n_leaves && one; j++) {
        il[j] = 1.0 / m->chol[j];
        dt[j] = LOG_2PI + m->logdet[j];
    }
    for (size_t i = 0; i < nb && one; i++) {
        double *ui = u + i * q;
        if (!in_u) memcpy(ui, b->ze + i * ed, ed * sizeof(double));
        ui[ed] = (v->y[(i0 + i) * v->ld_y] - m->y_mean[0]) * iy[0];
    }
    if (one)
        MOE_ISA_CALL(moe_isa_best(), dens_one, nb, k, ed, q, u, kept, lpr, m->coef, il, dt, lj,
                     mxr);
    for (size_t i = 0; i < nb && !one; i++) {
        double *ui = u + i * q;
        const double *ze = in_u ? ui : b->ze + i * ed;
        if (!in_u) memcpy(ui, ze, ed * sizeof(double));
        for (size_t p = 0; p < P; p++) {
            double yp = v->y[(i0 + i) * v->ld_y + p] - m->y_mean[p];
            ui[ed + p] = p < 64 ? yp * iy[p] : yp / m->y_scale[p];
        }
        double mx = -INFINITY, *l = lj + i * k;
        for (size_t r = 0; r < k; r++) {
            size_t j = kept[i * k + r];
            double ld;
            if (m->task == MOE_TASK_REGRESSION) {
                /* u = L^{-1} (t - mu) by forward substitution */
                const double *L = m->chol + j * P * P;
                double qf = 0.0, z[64];
                double *zz = P <= 64 ? z : gat; /* gat is free until the statistics */
                for (size_t p = 0; p < P; p++) {
                    double s = ui[ed + p] - dot(m->coef + (j * P + p) * ed, ze, ed);
                    for (size_t a = 0; a < p; a++) s -= L[p * P + a] * zz[a];
                    zz[p] = s * (1.0 / L[p * P + p]);
                    qf += zz[p] * zz[p];
                }
                ld = -0.5 * ((double)P * LOG_2PI + m->logdet[j] + qf);
            } else {
                double *pc = pk + (i * k + r) * C;
                for (size_t c = 0; c < C; c++) pc[c] = dot(m->coef + (j * C + c) * ed, ze, ed);
                moe_log_softmax(pc, C);
                ld = pc[(size_t)v->labels[i0 + i]];
            }
            l[r] = lpr[i * k + r] + ld;
            if (l[r] > mx) mx = l[r];
        }
        mxr[i] = mx;
    }
    /* Posteriors over the kept leaves: exp and log over the block at once
     * (vmath.c); F_i = max + log sum, and the entropy -sum h log h needs no
     * log (log h = lj - F_i). With k = 2 and AVX-512 the loops below run
     * 8 rows at a time (post2_*: the same numbers; kept iterations 5% faster
     * at D = 10), but for the rows without a finite log joint and the sums. */
    double *sum = b->ent;
    int two = 0;
#if MOE_ISA_X86
    two = k == 2 && nb % 8 == 0 && moe_isa_best() == MOE_ISA_AVX512;
    if (two) post2_shift(nb, lj, mxr, hk);
#endif
    for (size_t i = 0; i < nb && !two; i++) /* (own loop: the maxes' loads do not stall) */
        for (size_t r = 0; r < k; r++)
            hk[i * k + r] = isfinite(mxr[i]) ? lj[i * k + r] - mxr[i] : 0.0;
    if (m->task == MOE_TASK_CLASSIFICATION) moe_vexp(pk, pk, nb * k * C);
#if MOE_ISA_X86
    if (two) { /* F_i into mxr, the entropy into sum */
        moe_vexp(hk, hk, nb * k);
        post2_sum(nb, hk, sum);
        moe_vlog(b->ll, sum, nb);
        post2_norm(nb, lj, mxr, hk, sum, b->ll);
    }
#endif
    if (!two) exp_rows(nb, k, hk, sum, b->ll);
    double obj = 0.0, ent = 0.0, wsum = 0.0;
    for (size_t i = 0; i < nb; i++) {
        double *h = hk + i * k, *l = lj + i * k, fi = mxr[i], e = 0.0;
        if (two && isfinite(fi)) {
            e = sum[i];
        } else if (isfinite(fi)) {
            double inv = 1.0 / sum[i];
            fi += b->ll[i];
            for (size_t r = 0; r < k; r++) {
                h[r] *= inv;
                if (h[r] > 0.0) e -= h[r] * (l[r] - fi);
            }
        } else {
            /* No kept leaf gives the target any density: the posteriors fall
             * back to the kept leaves' priors; the row's F is -inf. */
            double pm = -INFINITY, s = 0.0;
            for (size_t r = 0; r < k; r++)
                if (lpr[i * k + r] > pm) pm = lpr[i * k + r];
            for (size_t r = 0; r < k; r++)
                s += (h[r] = isfinite(pm) ? exp(lpr[i * k + r] - pm) : 1.0);
            for (size_t r = 0; r < k; r++) h[r] /= s;
        }
        double wi = wt ? wt[i] : 1.0;
        wsum += wi;
        if (wi == 0.0) continue;
        obj += wi * fi;
        ent += wi * e;
    }
    st[0] += obj;
    st[1] += ent;
    st[4] += wsum;

    if (f->sp_gate_part == MOE_GATE_POST && !gate_post_in_grams(f)) {
        /* The gate's own inputs, standardised here (else moe_sparse_slab_end
         * takes the part from the experts' Grams). */
        standardise(m, m->gcols, m->n_gcols, b->inv + m->n_ecols, nb, x, v->ld_x, b->zg, m->gd);
        gate_post_part(m->gd, nb, k, kept, hk, wt, b->zg, m->gd, st + f->off_ggrad[0]);
    }
    if (m->task == MOE_TASK_REGRESSION) {
        if (f->sp_sorted)
            stage_sorted(f, &a, a.pend[1] * q, row, wt, nb, kept, hk, st);
        else
            stage(f, &a, a.pend[1] * q, wt, nb, kept, hk, st);
        a.pend[1] += nb;
    } else {
        sparse_softmax(f, v, i0, b->ze, nb, kept, hk, pk, with_hess, gat, a.idx, a.cnt, st);
    }
}
