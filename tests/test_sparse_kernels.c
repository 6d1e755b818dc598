/*
 * test_sparse_kernels.c -- sparse EM's kernels (sparse_em.c), each
 * instruction-set version this machine runs.
 *
 * The choice of each row's k largest posteriors (moe_sparse_topk_isa)
 * against a plain selection: largest first, ties to the lower index, NaN
 * never chosen, over lengths around the vector widths, with ties, zeros,
 * NaNs and -inf.
 *
 * The Gram kernel (moe_sparse_runs_isa) against a plain loop summing the same products in the same
 * order: for each expert's run of pairs, entry (a, c), a <= c, of its Gram
 * gets sum_s u_sa (w_s u_sc) from 0 in pair order (fused multiply-adds
 * where the version fuses), then added to the start. The same bits from
 * every instruction-set version this machine runs, for widths below,
 * at and around the tiles (8 columns, 4 or 8 rows), each of 9 to 12
 * (AVX-512's one-pass kernel for them), empty and one-pair
 * runs, rows in any order; the entries above and on the diagonal only
 * (the kernel may write below it).
 */
#include "check.h"
#include "moe_impl.h"

#include <string.h>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#define MAX_PAIRS 600

static void runs_ref(int fused, size_t K, size_t q, const size_t *cnt, const size_t *roff,
                     const double *ws, const double *u, double *eg) {
    for (size_t j = 0, s0 = 0; j < K; s0 = cnt[j], j++)
        for (size_t a = 0; a < q; a++)
            for (size_t c = a; c < q; c++) {
                double acc = 0.0;
                for (size_t s = s0; s < cnt[j]; s++) {
                    double ua = u[roff[s] + a], v = ws[s] * u[roff[s] + c];
                    acc = fused ? fma(ua, v, acc) : acc + ua * v;
                }
                if (cnt[j] > s0) eg[j * q * q + a * q + c] += acc;
            }
}

static void test_runs_versions(void) {
    static const size_t qs[] = {1, 2, 3, 7, 8, 9, 10, 11, 12, 13, 16, 17, 23, 34, 52};
    static const size_t Ks[] = {1, 3, 8, 64};
    static const size_t npairs[] = {0, 1, 2, 37, MAX_PAIRS};
    const size_t qmax = 52, Kmax = 64, nrows = 300;
    double *u = malloc(nrows * qmax * sizeof *u), *ws = malloc(MAX_PAIRS * sizeof *ws);
    size_t *roff = malloc(MAX_PAIRS * sizeof *roff), cnt[64];
    size_t gmax = Kmax * qmax * qmax;
    double *G0 = malloc(gmax * sizeof *G0), *Gr = malloc(gmax * sizeof *Gr);
    double *Gc = malloc(gmax * sizeof *Gc);
    moe_rng r;
    moe_rng_seed(&r, 20261124);
    size_t cases = 0, versions = 0;
    for (size_t iq = 0; iq < sizeof qs / sizeof qs[0]; iq++)
        for (size_t ik = 0; ik < sizeof Ks / sizeof Ks[0]; ik++)
            for (size_t ip = 0; ip < sizeof npairs / sizeof npairs[0]; ip++) {
                size_t q = qs[iq], K = Ks[ik], np = npairs[ip], gn = K * q * q;
                for (size_t i = 0; i < nrows * q; i++) u[i] = moe_rng_normal(&r);
                /* runs of random lengths (some empty), rows at random */
                size_t s = 0;
                for (size_t j = 0; j < K; j++) {
                    size_t len =
                        j + 1 == K ? np - s : (size_t)(moe_rng_next(&r) % (2 * np / K + 1));
                    if (s + len > np) len = np - s;
                    s += len;
                    cnt[j] = s;
                }
                for (size_t t = 0; t < np; t++) {
                    roff[t] = (size_t)(moe_rng_next(&r) % nrows) * q;
                    ws[t] = 2.0 * moe_rng_uniform(&r);
                }
                for (size_t t = 0; t < gn; t++) G0[t] = moe_rng_normal(&r);
                for (int isa = MOE_ISA_BASE; isa <= MOE_ISA_AVX512; isa++) {
                    memcpy(Gc, G0, gn * sizeof *Gc);
                    if (moe_sparse_runs_isa(isa, K, q, cnt, roff, ws, u, Gc) != 0) continue;
                    memcpy(Gr, G0, gn * sizeof *Gr);
                    runs_ref(moe_gram_fused(isa), K, q, cnt, roff, ws, u, Gr);
                    versions++;
                    size_t bad = 0;
                    for (size_t j = 0; j < K; j++)
                        for (size_t a = 0; a < q; a++)
                            for (size_t c = a; c < q; c++) {
                                size_t t = j * q * q + a * q + c;
                                if (memcmp(&Gc[t], &Gr[t], sizeof Gc[t]) != 0) bad++;
                            }
                    CHECK(bad == 0, "isa %d q %zu K %zu pairs %zu: %zu upper entries differ", isa,
                          q, K, np, bad);
                }
                cases++;
            }
    printf("  %zu cases, %zu version runs\n", cases, versions);
    free(u);
    free(ws);
    free(roff);
    free(G0);
    free(Gr);
    free(Gc);
}

/* The definition: k rounds of "the first index of the largest number not
 * chosen yet" (-1 on none). */
static size_t topk_ref(const double *h, size_t K, size_t k, size_t *top) {
    size_t n = 0;
    for (; n < k; n++) {
        size_t bi = K;
        for (size_t j = 0; j < K; j++) {
            int taken = 0;
            for (size_t r = 0; r < n; r++) taken |= top[r] == j;
            if (!taken && h[j] > -INFINITY && h[j] == h[j] && (bi == K || h[j] > h[bi])) bi = j;
        }
        if (bi == K) break;
        top[n] = bi;
    }
    return n;
}

static void test_topk_versions(void) {
    static const size_t Ks[] = {1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 100};
    double h[100], hc[100], vals[100];
    size_t top[100], ref[100];
    moe_rng r;
    moe_rng_seed(&r, 7);
    size_t cases = 0;
    for (size_t ik = 0; ik < sizeof Ks / sizeof Ks[0]; ik++)
        for (int kind = 0; kind < 7; kind++)
            for (size_t k = 1; k <= Ks[ik] && k <= 5; k++) {
                size_t K = Ks[ik];
                for (size_t j = 0; j < K; j++) {
                    double u = moe_rng_uniform(&r);
                    /* posteriors (floor -1): kind 0 distinct, 1 few distinct
                     * values (ties), 2 zeros and NaNs, 3 all NaN but one, 4 -inf
                     * and ties; log joints (floor -inf): 5 negative with ties,
                     * -inf and NaNs, 6 as 4 */
                    h[j] = kind == 0 ? u : kind == 1 ? (double)(moe_rng_next(&r) % 3) / 4.0
                         : kind == 2 ? (u < 0.3 ? NAN : u < 0.6 ? 0.0 : u)
                         : kind == 3 ? (j == K / 2 ? u : NAN)
                         : kind == 5 ? (u < 0.2 ? -INFINITY : u < 0.3 ? NAN
                                        : -1e3 * (double)(moe_rng_next(&r) % 5) - u * (u < 0.6))
                                     : (u < 0.5 ? -INFINITY : 0.5);
                }
                double lo = kind >= 5 ? -INFINITY : -1.0;
                size_t nr = topk_ref(h, K, k, ref);
                for (int isa = MOE_ISA_BASE; isa <= MOE_ISA_AVX512; isa++) {
                    memcpy(hc, h, K * sizeof *h);
                    int n = moe_sparse_topk_isa(isa, hc, K, k, lo, top, vals);
                    if (n < 0) continue;
                    int ok = (size_t)n == nr;
                    for (size_t t = 0; ok && t < nr; t++)
                        ok = top[t] == ref[t] && memcmp(&vals[t], &h[ref[t]], sizeof vals[t]) == 0;
                    CHECK(ok, "isa %d K %zu k %zu kind %d: chose %d leaves, the first %zu, "
                              "against %zu, %zu", isa, K, k, kind, n, n > 0 ? top[0] : K, nr,
                          nr > 0 ? ref[0] : K);
                    cases++;
                }
            }
    printf("  %zu version cases\n", cases);
}

int main(void) {
    RUN(test_topk_versions);
    RUN(test_runs_versions);
    return check_finish();
}
