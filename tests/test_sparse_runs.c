/*
 * test_sparse_runs.c -- sparse EM's Gram kernel (moe_sparse_runs_isa in
 * sparse_em.c) against a plain loop summing the same products in the same
 * order: for each expert's run of pairs, entry (a, c), a <= c, of its Gram
 * gets sum_s u_sa (w_s u_sc) from 0 in pair order (fused multiply-adds
 * where the version fuses), then added to the start. The same bits from
 * every instruction-set version this machine runs, for widths below,
 * at and around the tiles (8 columns, 4 or 8 rows), empty and one-pair
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
    static const size_t qs[] = {1, 2, 3, 7, 8, 9, 11, 12, 13, 16, 17, 23, 34, 52};
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
                    size_t len = j + 1 == K ? np - s : (size_t)(moe_rng_next(&r) % (2 * np / K + 1));
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

int main(void) {
    RUN(test_runs_versions);
    return check_finish();
}
