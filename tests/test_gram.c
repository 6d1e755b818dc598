/*
 * test_gram.c -- the experts' Gram kernel (gram.c) against a plain triple
 * loop summing the same products in the same order: the same bits from
 * every instruction-set version this machine runs, for lane counts that
 * fill or leave lanes idle, widths around the tile sizes, short blocks,
 * unit and case weights; lower triangles untouched, and the weight sums
 * equal to the intercept entries; the same sums from the design and the
 * target apart (moe_gram_accumulate_zt). The same for the softmax statistics
 * (gradient and Gram), which must also agree with moe_softmax_accumulate's.
 */
#include "check.h"
#include "moe_impl.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#define NB MOE_BLOCK_ROWS

/* The definition: G_k[a][b] += sum_i ((w_i h_ik) u_ia) u_ib, summed from 0
 * in row order by fused multiply-adds (fused = 0: product and sum rounded
 * separately, the baseline version on a processor without FMA). */
static void gram_ref(int fused, size_t nb, size_t K, size_t q, const double *u, const double *h,
                     size_t ldh, const double *w, double *G, double *sw) {
    for (size_t k = 0; k < K; k++)
        for (size_t a = 0; a < q; a++)
            for (size_t b = a; b < q; b++) {
                double s = 0.0;
                for (size_t i = 0; i < nb; i++) {
                    double hw = w ? w[i] * h[i * ldh + k] : h[i * ldh + k];
                    double x = hw * u[i * q + a];
                    s = fused ? fma(x, u[i * q + b], s) : s + x * u[i * q + b];
                }
                G[k * q * q + a * q + b] += s;
                if (a == 0 && b == 0 && sw) sw[k] += s;
            }
}

static void test_gram_versions(void) {
    static const size_t Ks[] = {1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 32};
    static const size_t qs[] = {1, 2, 3, 5, 6, 7, 12, 13, 14, 25, 26, 52};
    static const size_t nbs[] = {NB, NB - 1, 1, 3};
    const size_t Kmax = 32, qmax = 52, ldh = Kmax + 3, gmax = Kmax * qmax * qmax;
    double *u = malloc(NB * qmax * sizeof *u), *h = malloc(NB * ldh * sizeof *h);
    double *w = malloc(NB * sizeof *w), *scr = malloc(moe_gram_scratch_size(NB) * sizeof *scr);
    double *z = malloc(NB * qmax * sizeof *z), *t = malloc(NB * sizeof *t);
    /* the start, the two references (plain, fused) and a version's result */
    double *G0 = malloc(gmax * sizeof *G0), *Gr[2], *Gc = malloc(gmax * sizeof *Gc);
    double sw0[32], swr[2][32], swc[32];
    Gr[0] = malloc(gmax * sizeof *G0);
    Gr[1] = malloc(gmax * sizeof *G0);
    moe_rng r;
    moe_rng_seed(&r, 20261130);
    size_t cases = 0, versions = 0, zt_runs = 0;
    for (size_t ik = 0; ik < sizeof Ks / sizeof Ks[0]; ik++)
        for (size_t iq = 0; iq < sizeof qs / sizeof qs[0]; iq++)
            for (size_t in = 0; in < sizeof nbs / sizeof nbs[0]; in++)
                for (int weighted = 0; weighted < 2; weighted++) {
                    size_t K = Ks[ik], q = qs[iq], nb = nbs[in], gn = K * q * q;
                    for (size_t i = 0; i < nb; i++) {
                        u[i * q] = 1.0; /* the intercept */
                        for (size_t j = 1; j < q; j++) u[i * q + j] = moe_rng_normal(&r);
                        for (size_t k = 0; k < ldh; k++) h[i * ldh + k] = moe_rng_uniform(&r);
                        w[i] = 3.0 * moe_rng_uniform(&r);
                    }
                    for (size_t j = 0; j < gn; j++) G0[j] = moe_rng_normal(&r);
                    for (size_t k = 0; k < K; k++) sw0[k] = moe_rng_uniform(&r);
                    const double *wp = weighted ? w : NULL;
                    for (int fused = 0; fused < 2; fused++) {
                        memcpy(Gr[fused], G0, gn * sizeof *G0);
                        memcpy(swr[fused], sw0, sizeof sw0);
                        gram_ref(fused, nb, K, q, u, h, ldh, wp, Gr[fused], swr[fused]);
                    }
                    for (int isa = MOE_ISA_BASE; isa <= MOE_ISA_AVX512 + 1; isa++) {
                        memcpy(Gc, G0, gn * sizeof *Gc);
                        memcpy(swc, sw0, sizeof swc);
                        int f = moe_gram_fused(isa > MOE_ISA_AVX512 ? moe_isa_best() : isa);
                        if (isa > MOE_ISA_AVX512) /* the dispatching entry point */
                            moe_gram_accumulate(nb, K, q, u, h, ldh, wp, Gc, swc, scr);
                        else if (moe_gram_accumulate_isa(isa, nb, K, q, u, h, ldh, wp, Gc, swc,
                                                         scr) != 0)
                            continue;
                        versions++;
                        CHECK(memcmp(Gc, Gr[f], gn * sizeof *Gc) == 0,
                              "isa %d K %zu q %zu nb %zu weighted %d: G differs from the triple loop",
                              isa, K, q, nb, weighted);
                        CHECK(memcmp(swc, swr[f], K * sizeof *swc) == 0,
                              "isa %d K %zu q %zu nb %zu: weight sums differ", isa, K, q, nb);
                        /* u as the design z (q - 1 columns) and one target t */
                        size_t ed = q - 1;
                        for (size_t i = 0; i < nb; i++) {
                            memcpy(z + i * ed, u + i * q, ed * sizeof *z);
                            t[i] = u[i * q + ed];
                        }
                        memcpy(Gc, G0, gn * sizeof *Gc);
                        memcpy(swc, sw0, sizeof swc);
                        int zr = isa > MOE_ISA_AVX512
                                     ? moe_gram_accumulate_zt(nb, K, ed, z, t, h, ldh, wp, Gc, swc,
                                                              scr)
                                     : moe_gram_accumulate_zt_isa(isa, nb, K, ed, z, t, h, ldh, wp,
                                                                  Gc, swc, scr);
                        if (zr != 0) {
                            CHECK(q > 12, "isa %d q %zu: z and t refused", isa, q);
                            continue;
                        }
                        zt_runs++;
                        CHECK(memcmp(Gc, Gr[f], gn * sizeof *Gc) == 0 &&
                                  memcmp(swc, swr[f], K * sizeof *swc) == 0,
                              "isa %d K %zu q %zu nb %zu weighted %d: G from z and t differs",
                              isa, K, q, nb, weighted);
                    }
                    /* The intercept entry is the weight sum (as estep.c uses it). */
                    if (in == 0) {
                        memset(Gc, 0, gn * sizeof *Gc);
                        moe_gram_accumulate(nb, K, q, u, h, ldh, wp, Gc, NULL, scr);
                        for (size_t k = 0; k < K; k++) {
                            double s = 0.0;
                            for (size_t i = 0; i < nb; i++)
                                s += wp ? wp[i] * h[i * ldh + k] : h[i * ldh + k];
                            CHECK(Gc[k * q * q] == s, "K %zu: intercept entry %.17g, weight sum %.17g",
                                  k, Gc[k * q * q], s);
                        }
                    }
                    cases++;
                }
    printf("  %zu cases, %zu version runs, %zu from z and t\n", cases, versions, zt_runs);
    free(u);
    free(z);
    free(t);
    free(h);
    free(w);
    free(scr);
    free(G0);
    free(Gr[0]);
    free(Gr[1]);
    free(Gc);
}

/* The definition of moe_gram_softmax's sums (fused as gram_ref). */
static void softmax_ref(int fused, size_t nb, size_t C, size_t d, const double *z, const double *w,
                        const double *t, size_t ld_t, const double *p, size_t ld_p, double *grad,
                        double *gram) {
    for (size_t c = 1; c < C; c++)
        for (size_t j = 0; j < d; j++) {
            double s = 0.0;
            for (size_t i = 0; i < nb; i++) {
                double r = w[i] * (t[i * ld_t + c] - p[i * ld_p + c]);
                s = fused ? fma(r, z[i * d + j], s) : s + r * z[i * d + j];
            }
            grad[(c - 1) * d + j] += s;
        }
    for (size_t a = 0; a < d; a++)
        for (size_t b = a; b < d; b++) {
            double s = 0.0;
            for (size_t i = 0; i < nb; i++) {
                double sa = sqrt(w[i]) * z[i * d + a], sb = sqrt(w[i]) * z[i * d + b];
                s = fused ? fma(sa, sb, s) : s + sa * sb;
            }
            gram[a * d + b] += s;
        }
}

static void test_gram_softmax(void) {
    static const size_t Cs[] = {2, 3, 8, 9, 17, 32}, ds[] = {1, 2, 3, 8, 11, 12, 51};
    static const size_t nbs[] = {NB, NB - 1, 1, 3};
    const size_t Cmax = 32, dmax = 51, ldt = Cmax + 1, ldp = Cmax + 5;
    double *z = malloc(NB * dmax * sizeof *z), *w = malloc(NB * sizeof *w);
    double *t = malloc(NB * ldt * sizeof *t), *p = malloc(NB * ldp * sizeof *p);
    double *scr = malloc((moe_gram_softmax_scratch_size(NB, dmax) + NB * Cmax * dmax) * sizeof *scr);
    size_t ng = Cmax * dmax, nm = dmax * dmax;
    double *g0 = malloc(ng * sizeof *g0), *m0 = malloc(nm * sizeof *m0);
    double *gr[2], *mr[2], *gc = malloc(ng * sizeof *gc), *mc = malloc(nm * sizeof *mc);
    for (int f = 0; f < 2; f++) {
        gr[f] = malloc(ng * sizeof *g0);
        mr[f] = malloc(nm * sizeof *m0);
    }
    moe_rng r;
    moe_rng_seed(&r, 77);
    size_t runs = 0;
    for (size_t ic = 0; ic < sizeof Cs / sizeof Cs[0]; ic++)
        for (size_t id = 0; id < sizeof ds / sizeof ds[0]; id++)
            for (size_t in = 0; in < sizeof nbs / sizeof nbs[0]; in++) {
                size_t C = Cs[ic], d = ds[id], nb = nbs[in], gn = (C - 1) * d;
                for (size_t i = 0; i < nb; i++) {
                    z[i * d] = 1.0;
                    for (size_t j = 1; j < d; j++) z[i * d + j] = moe_rng_normal(&r);
                    for (size_t c = 0; c < C; c++) {
                        t[i * ldt + c] = moe_rng_uniform(&r);
                        p[i * ldp + c] = moe_rng_uniform(&r);
                    }
                    w[i] = i % 7 == 3 ? 0.0 : 2.0 * moe_rng_uniform(&r);
                }
                for (size_t j = 0; j < gn; j++) g0[j] = moe_rng_normal(&r);
                for (size_t j = 0; j < d * d; j++) m0[j] = moe_rng_normal(&r);
                for (int f = 0; f < 2; f++) {
                    memcpy(gr[f], g0, gn * sizeof *g0);
                    memcpy(mr[f], m0, d * d * sizeof *m0);
                    softmax_ref(f, nb, C, d, z, w, t, ldt, p, ldp, gr[f], mr[f]);
                }
                for (int isa = MOE_ISA_BASE; isa <= MOE_ISA_AVX512; isa++) {
                    memcpy(gc, g0, gn * sizeof *gc);
                    memcpy(mc, m0, d * d * sizeof *mc);
                    if (moe_gram_softmax_isa(isa, nb, C, d, z, w, t, ldt, p, ldp, gc, mc, scr) != 0)
                        continue;
                    int f = moe_gram_fused(isa);
                    runs++;
                    CHECK(memcmp(gc, gr[f], gn * sizeof *gc) == 0,
                          "isa %d C %zu d %zu nb %zu: gradient differs from the loops", isa, C, d, nb);
                    int same = 1;
                    for (size_t a = 0; a < d; a++)
                        for (size_t b = 0; b < d; b++)
                            same &= memcmp(mc + a * d + b, b >= a ? mr[f] + a * d + b : m0 + a * d + b,
                                           sizeof *mc) == 0;
                    CHECK(same, "isa %d C %zu d %zu nb %zu: Gram differs from the loop (or its lower "
                          "triangle changed)", isa, C, d, nb);
                }
                /* The quantities of moe_softmax_accumulate (its bits are its BLAS's). */
                memcpy(gc, g0, gn * sizeof *gc);
                memcpy(mc, m0, d * d * sizeof *mc);
                moe_softmax_accumulate(nb, C, d, z, w, t, ldt, p, ldp, gc, mc, NULL, scr);
                double err = 0.0;
                for (size_t j = 0; j < gn; j++)
                    err = fmax(err, fabs(gc[j] - gr[1][j]) / (1.0 + fabs(gr[1][j])));
                for (size_t a = 0; a < d; a++)
                    for (size_t b = a; b < d; b++)
                        err = fmax(err, fabs(mc[a * d + b] - mr[1][a * d + b]) /
                                            (1.0 + fabs(mr[1][a * d + b])));
                CHECK(err < 1e-12, "C %zu d %zu nb %zu: %g from moe_softmax_accumulate", C, d, nb,
                      err);
            }
    printf("  %zu version runs\n", runs);
    free(z);
    free(w);
    free(t);
    free(p);
    free(scr);
    free(g0);
    free(m0);
    free(gc);
    free(mc);
    for (int f = 0; f < 2; f++) {
        free(gr[f]);
        free(mr[f]);
    }
}

int main(void) {
    RUN(test_gram_versions);
    RUN(test_gram_softmax);
    return check_finish();
}
