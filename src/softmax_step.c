/*
 * softmax_step.c -- the M-step of a softmax: a gate over its children, or a
 * multinomial expert over the classes. Both maximise a weighted multinomial
 * log-likelihood  f(V) = sum_i w_i sum_c t_ic log softmax_c(V z_i)  with
 * soft targets t (a gate's conditional posteriors; an expert's one-hot
 * class), class 0's row fixed at zero.
 *
 * One step per EM iteration (a generalised EM). First a plain Newton step
 * (damp = 0), or one halved `damp` times: EM (em.c) checks the
 * log-likelihood after the step and retries with more damping if it fell.
 * From damp = MOE_DAMP_GUARANTEED on, the step length is accepted only
 * where Boehning's bound guarantees ascent, so the retries end. With
 * B = 1/2 (I - 11'/C) (x) sum_i w_i z_i z_i' >= -Hessian (Boehning 1992,
 * Ann. Inst. Stat. Math. 44:197), Taylor's theorem gives
 *     f(V + D) >= f(V) + <g, D> - 1/2 D'BD,
 * so any D with <g, D> - 1/2 D'BD > 0 increases f, and EM's log-likelihood
 * never decreases. The Newton step is halved (at most 12 times) until the
 * bound says so; failing that, the bound's own maximiser D = B^{-1} g is
 * taken. B^{-1} = 2 (I + 11') (x) A^{-1} (since (I - J/C)(I + J) = I for the
 * (C-1) x (C-1) all-ones J), so the bound step costs one d x d solve.
 *
 * Cost per step, with F = C - 1 and n = F d parameters, the Hessian summed
 * over the S sampled rows (MOE_HESSIAN_SAMPLE_BLOCKS) and the gradient and
 * bound over all N rows:
 *   - n <= MOE_NEWTON_MAX_PARAMS, full Newton: O(S n^2) to accumulate,
 *     n^2 statistics per slab, O(n^3) to solve;
 *   - larger (a gate with many children), block-diagonal Newton: only the
 *     F diagonal d x d blocks H_cc = sum w p_c (1 - p_c) z z' are kept:
 *     O(S F d^2) to accumulate (gram.c's kernel, eight children at a time), F d^2 statistics, O(F d^3) to solve. As
 *     H = blockdiag(H_cc) - sum w (p p') (x) z z', the blocks bound the
 *     Hessian from above, so their step is a shortened Newton step: it
 *     ignores the classes' coupling (small when no class dominates) and
 *     converges much faster than the bound's, whose curvature 1/2 is
 *     C/2 times a typical p_c (1 - p_c) when C is large;
 *   - the bound step alone (multinomial experts above the limit, or when
 *     the Newton systems fail): O(N d^2) to accumulate, O(d^3 + C d^2) to
 *     solve.
 * Either Newton step goes through the same damping and the same
 * bound-guaranteed acceptance, so EM's ascent guarantee is unchanged.
 */
#include "moe_impl.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

static void softmax_accumulate(size_t nb, size_t C, size_t d, const double *z, const double *w,
                               const double *t, size_t ld_t, const double *p, size_t ld_p,
                               double *grad, double *gram, double *hess, double *scratch) {
    size_t F = C - 1;
    double *r = scratch;          /* nb x F residuals w (t - p) */
    double *zs = scratch + nb * F; /* nb x d scaled rows */
    for (size_t i = 0; i < nb; i++)
        for (size_t c = 1; c < C; c++)
            r[i * F + c - 1] = w[i] * (t[i * ld_t + c] - p[i * ld_p + c]);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)F, (int)d, (int)nb, 1.0, r, (int)F,
                z, (int)d, 1.0, grad, (int)d);
    for (size_t i = 0; i < nb && gram; i++) {
        double s = sqrt(w[i]);
        for (size_t j = 0; j < d; j++) zs[i * d + j] = s * z[i * d + j];
    }
    if (gram)
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)d, (int)nb, 1.0, zs, (int)d, 1.0,
                    gram, (int)d);
    if (!hess) return;
    if (F * d > MOE_NEWTON_MAX_PARAMS) {
        /* Diagonal blocks only: block a += sum_i w_i p_ia (1 - p_ia) z_i z_i',
         * eight classes at a time as the lanes of gram.c's kernel (weights
         * p (1 - p) in nb x 8, its scratch after them: 16 nb <= F d). */
        double *pq = scratch;
        for (size_t a0 = 1; a0 < C; a0 += 8) {
            size_t nl = C - a0 < 8 ? C - a0 : 8;
            for (size_t i = 0; i < nb; i++)
                for (size_t l = 0; l < nl; l++) {
                    double pa = p[i * ld_p + a0 + l];
                    pq[i * 8 + l] = pa * (1.0 - pa);
                }
            moe_gram_accumulate(nb, nl, d, z, pq, 8, w, hess + (a0 - 1) * d * d, NULL,
                                pq + nb * 8);
        }
        return;
    }
    /* Negative Hessian H = sum_i w_i (diag(p_i) - p_i p_i') (x) z_i z_i' over
     * the free classes, as one rank-nb update and F small ones:
     *   H = blockdiag_a(sum w p_a z z') - Q'Q,  row i of Q = sqrt(w_i) (p_i1 z_i', ..., p_iF z_i').
     * Q reuses the residual buffer's space plus zs (scratch holds nb*(F*d)). */
    size_t n = F * d;
    double *q = scratch; /* nb x n: overwrites r and zs, both done with */
    for (size_t i = 0; i < nb; i++) {
        double s = sqrt(w[i]);
        for (size_t a = 1; a < C; a++) {
            double f = s * p[i * ld_p + a];
            for (size_t j = 0; j < d; j++) q[i * n + (a - 1) * d + j] = f * z[i * d + j];
        }
    }
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)n, (int)nb, -1.0, q, (int)n, 1.0, hess,
                (int)n);
    for (size_t a = 1; a < C; a++) {
        for (size_t i = 0; i < nb; i++) {
            double f = sqrt(w[i] * p[i * ld_p + a]);
            for (size_t j = 0; j < d; j++) q[i * d + j] = f * z[i * d + j];
        }
        double *blk = hess + (a - 1) * d * n + (a - 1) * d;
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)d, (int)nb, 1.0, q, (int)d, 1.0,
                    blk, (int)n);
    }
}

/* (OpenBLAS on one thread: moe_blas_local_begin) */
void moe_softmax_accumulate(size_t nb, size_t C, size_t d, const double *z, const double *w,
                            const double *t, size_t ld_t, const double *p, size_t ld_p,
                            double *grad, double *gram, double *hess, double *scratch) {
    int omp = moe_blas_local_begin();
    softmax_accumulate(nb, C, d, z, w, t, ld_t, p, ld_p, grad, gram, hess, scratch);
    moe_blas_local_end(omp);
}

size_t moe_softmax_hess_size(size_t C, size_t d) {
    size_t n = (C - 1) * d;
    return n > MOE_NEWTON_MAX_PARAMS ? (C - 1) * d * d : n * n;
}

size_t moe_softmax_work_size(size_t C, size_t d) {
    size_t n = (C - 1) * d, hn = n > MOE_NEWTON_MAX_PARAMS ? d : n;
    size_t newton = hn * hn + n + hn * (hn + 1); /* symmetrised H (or a block), step, solver */
    size_t bound = d * d + d * (C - 1) + d * d + d * (C - 1);
    return newton + bound + 3 * n + 16;
}

/* D'BD = 1/2 [sum_c D_c'A D_c - (1/C) (sum_c D_c)' A (sum_c D_c)], D (C-1) x d. */
static double bound_quad(const double *D, size_t C, size_t d, const double *A, double *tmp) {
    size_t F = C - 1;
    double q = 0.0;
    memset(tmp, 0, d * sizeof *tmp);
    for (size_t c = 0; c < F; c++) {
        const double *dc = D + c * d;
        for (size_t j = 0; j < d; j++) tmp[j] += dc[j];
        for (size_t j = 0; j < d; j++) {
            double s = 0.0;
            for (size_t l = 0; l < d; l++) s += A[j * d + l] * dc[l];
            q += dc[j] * s;
        }
    }
    double qs = 0.0;
    for (size_t j = 0; j < d; j++) {
        double s = 0.0;
        for (size_t l = 0; l < d; l++) s += A[j * d + l] * tmp[l];
        qs += tmp[j] * s;
    }
    return 0.5 * (q - qs / (double)C);
}

static double dot(const double *a, const double *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

double moe_softmax_step(double *v, size_t C, size_t d, const double *grad, const double *gram,
                        const double *hess, double ridge, int damp, double *work) {
    size_t F = C - 1, n = F * d;
    if (n == 0) return 0.0;
    double gnorm = dot(grad, grad, n);
    if (!(gnorm > 0.0)) return 0.0;
    double *A = work;                 /* d x d, symmetrised gram */
    double *dB = A + d * d;           /* bound step, F x d */
    double *sw = dB + n;              /* solver work: d*(d+F) */
    double *dN = sw + d * (d + F);    /* Newton step */
    size_t hn = n > MOE_NEWTON_MAX_PARAMS ? d : n; /* system size: full, or one block */
    double *H = dN + n;               /* hn x hn */
    double *hw = H + hn * hn;         /* solver work: hn*(hn+1) */
    double *tmp = hw + hn * (hn + 1); /* d */
    for (size_t i = 0; i < d; i++)
        for (size_t j = 0; j < d; j++) A[i * d + j] = i <= j ? gram[i * d + j] : gram[j * d + i];

    /* The bound step: X = A^{-1} G' (d x F, in dN's space, free until the
     * Newton step), then D_c = 2 (X_c + sum_c' X_c'). */
    double *X = dN;
    for (size_t c = 0; c < F; c++)
        for (size_t j = 0; j < d; j++) X[j * F + c] = grad[c * d + j];
    if (moe_solve_spd(A, d, X, F, ridge, sw) < 0.0) return -1.0;
    for (size_t j = 0; j < d; j++) {
        double s = 0.0;
        for (size_t c = 0; c < F; c++) s += X[j * F + c];
        for (size_t c = 0; c < F; c++) dB[c * d + j] = 2.0 * (X[j * F + c] + s);
    }
    double gain_bound = dot(grad, dB, n) - 0.5 * bound_quad(dB, C, d, A, tmp);
    const double *step = dB;
    double alpha = 1.0;
    double gain = gain_bound;

    if (hess) {
        /* Newton direction dN = H^{-1} g, the full system or block by block
         * (hn = d: block c of hess is class c + 1's d x d diagonal block). */
        int solved = 1;
        memcpy(dN, grad, n * sizeof(double));
        for (size_t b0 = 0; b0 < n && solved; b0 += hn) {
            const double *hb = hn == n ? hess : hess + b0 * d;
            for (size_t i = 0; i < hn; i++)
                for (size_t j = 0; j < hn; j++)
                    H[i * hn + j] = i <= j ? hb[i * hn + j] : hb[j * hn + i];
            solved = moe_solve_spd(H, hn, dN + b0, 1, ridge, hw) >= 0.0;
        }
        if (solved) {
            double gd = dot(grad, dN, n), q = bound_quad(dN, C, d, A, tmp);
            if (damp < MOE_DAMP_GUARANTEED && gd > 0.0) {
                /* Plain (damped) Newton: the caller checks the log-likelihood
                 * and retries with more damping if it fell. */
                alpha = ldexp(1.0, -damp);
                step = dN;
                gain = alpha * gd - 0.5 * alpha * alpha * q;
                if (!(gain > 0.0)) gain = 0.0;
                for (size_t c = 0; c < F; c++)
                    for (size_t j = 0; j < d; j++) v[(c + 1) * d + j] += alpha * step[c * d + j];
                return gain;
            }
            for (int h = 0; h <= 12 && gd > 0.0; h++, alpha *= 0.5) {
                double gn = alpha * gd - 0.5 * alpha * alpha * q;
                if (gn > 0.0 && gn >= 0.25 * gain_bound) {
                    /* Newton's guaranteed gain is within a small factor of the
                     * bound step's; its true gain is usually far larger. */
                    step = dN;
                    gain = gn;
                    break;
                }
            }
        }
    }
    if (!(gain > 0.0) || !isfinite(gain)) return 0.0;
    double a = step == dN ? alpha : 1.0;
    for (size_t c = 0; c < F; c++)
        for (size_t j = 0; j < d; j++) v[(c + 1) * d + j] += a * step[c * d + j];
    return gain;
}
