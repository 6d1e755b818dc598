/*
 * mstep.c -- the M-step from the accumulated statistics alone.
 *
 * Gaussian expert k (weighted least squares, exact): with the Gram G of
 * [z, t] weighted by w h_k split as A = sum whzz', B = sum whzt',
 * Y = sum whtt', the coefficients solve (A + lambda I) W' = B (Cholesky,
 * lambda the documented ridge) and the residual covariance is
 *   S = (Y - W B - B'W' + W A W') / sum wh.
 * The covariance is S itself (full), its diagonal (diag) or tr(S)/P (iso),
 * each eigenvalue floored at var_floor (the constrained maximiser).
 *
 * Multinomial experts and gates: one Newton step, damped as EM asks
 * (softmax_step.c).
 *
 * An expert whose posterior weight is below min_support is frozen (its
 * parameters kept); the event is recorded. Not updating a block of
 * parameters keeps EM monotone.
 */
#include "moe_impl.h"

#include <math.h>
#include <string.h>

/* Floor the covariance S (P x P, symmetric) per the variance kind. Returns
 * 1 if the floor was applied. work holds 3 P^2 + 64 (P + 1) doubles. */
static int covariance_update(moe_variance kind, size_t P, const double *S, double floor_,
                             double *cov, double *work) {
    int hit = 0;
    memset(cov, 0, P * P * sizeof(double));
    if (kind == MOE_VARIANCE_ISO || P == 1) {
        double v = 0.0;
        for (size_t p = 0; p < P; p++) v += S[p * P + p];
        v /= (double)P;
        if (!(v >= floor_)) {
            v = floor_;
            hit = 1;
        }
        for (size_t p = 0; p < P; p++) cov[p * P + p] = v;
    } else if (kind == MOE_VARIANCE_DIAG) {
        for (size_t p = 0; p < P; p++) {
            double v = S[p * P + p];
            if (!(v >= floor_)) {
                v = floor_;
                hit = 1;
            }
            cov[p * P + p] = v;
        }
    } else {
        /* Full: clip the eigenvalues of S at the floor. */
        double *a = work, *ev = work + P * P, *wk = ev + P;
        memcpy(a, S, P * P * sizeof(double));
        int n = (int)P, lwork = (int)(64 * (P + 1)), info = 0;
        dsyev_("V", "L", &n, a, &n, ev, wk, &lwork, &info);
        if (info != 0) {
            /* Fall back to the diagonal: still a valid covariance. */
            return covariance_update(MOE_VARIANCE_DIAG, P, S, floor_, cov, work);
        }
        for (size_t e = 0; e < P; e++) {
            double l = ev[e];
            if (!(l >= floor_)) {
                l = floor_;
                hit = 1;
            }
            /* column-major eigenvectors: vector e is a[e*P .. e*P+P-1] */
            const double *u = a + e * P;
            for (size_t p = 0; p < P; p++)
                for (size_t q = 0; q < P; q++) cov[p * P + q] += l * u[p] * u[q];
        }
        for (size_t p = 0; p < P; p++)
            for (size_t q = 0; q < p; q++) cov[p * P + q] = cov[q * P + p] =
                                               0.5 * (cov[p * P + q] + cov[q * P + p]);
    }
    return hit;
}

static void gaussian_expert(moe_fit *f, size_t k) {
    moe_model *m = f->m;
    size_t P = m->n_out, ed = m->ed, q = ed + P;
    const double *Gu = f->stats + f->off_eg + k * q * q;
    double sw = f->stats[f->off_esw + k];
    double *G = f->work;            /* q x q symmetric */
    double *Wt = G + q * q;          /* ed x P */
    double *A = Wt + ed * P;         /* ed x ed */
    double *sv = A + ed * ed;        /* solver work ed*(ed+P) */
    double *S = sv + ed * (ed + P);  /* P x P */
    double *cw = S + P * P;
    for (size_t i = 0; i < q; i++)
        for (size_t j = 0; j < q; j++) G[i * q + j] = i <= j ? Gu[i * q + j] : Gu[j * q + i];
    for (size_t i = 0; i < ed; i++) {
        for (size_t j = 0; j < ed; j++) A[i * ed + j] = G[i * q + j];
        for (size_t p = 0; p < P; p++) Wt[i * P + p] = G[i * q + ed + p];
    }
    double lambda = moe_solve_spd(A, ed, Wt, P, f->ridge, sv);
    if (lambda < 0.0) return; /* keep the previous parameters */
    double dmean = 0.0;
    for (size_t i = 0; i < ed; i++) dmean += A[i * ed + i];
    dmean /= (double)ed;
    if (lambda > 1.5 * f->ridge * dmean && dmean > 0.0)
        moe_fit_event(f, MOE_EVENT_KIND_RIDGE_RAISED, (int)k, -1, lambda / dmean);
    /* S = Y - W B - B'W' + W A W' over the standardised targets. */
    for (size_t p = 0; p < P; p++) {
        for (size_t r = 0; r < P; r++) {
            double s = G[(ed + p) * q + ed + r];
            for (size_t i = 0; i < ed; i++) {
                s -= Wt[i * P + p] * G[i * q + ed + r] + G[i * q + ed + p] * Wt[i * P + r];
                double aw = 0.0;
                for (size_t j = 0; j < ed; j++) aw += A[i * ed + j] * Wt[j * P + r];
                s += Wt[i * P + p] * aw;
            }
            S[p * P + r] = s / sw;
        }
    }
    for (size_t p = 0; p < P; p++)
        for (size_t r = 0; r < p; r++) S[p * P + r] = S[r * P + p] = 0.5 * (S[p * P + r] + S[r * P + p]);
    double *coef = m->coef + k * P * ed;
    for (size_t p = 0; p < P; p++)
        for (size_t i = 0; i < ed; i++) coef[p * ed + i] = Wt[i * P + p];
    int hit = covariance_update(m->variance, P, S, f->var_floor, m->cov + k * P * P, cw);
    if (hit && !f->floored[k]) {
        moe_log(MOE_LOG_LEVEL_WARN, "expert %zu: variance reached the floor at iteration %d", k,
                f->iter);
        moe_fit_event(f, MOE_EVENT_KIND_VARIANCE_FLOOR, (int)k, -1, f->var_floor);
    }
    f->floored[k] = (unsigned char)hit;
}

/* Scale a sampled Hessian (its last slot: the sampled weight) to the full
 * weight, which is the Gram's intercept entry sum w. NULL if it saw none. */
static const double *full_hessian(double *hess, size_t size, const double *gram) {
    double sampled = hess[size];
    if (!(sampled > 0.0)) return NULL;
    double s = gram[0] / sampled;
    if (s != 1.0)
        for (size_t j = 0; j < size; j++) hess[j] *= s;
    hess[size] = gram[0];
    return hess;
}

void moe_fit_mstep(moe_fit *f, int damp) {
    moe_model *m = f->m;
    size_t K = m->n_leaves, C = m->n_cls, ed = m->ed, gd = m->gd;
    for (size_t k = 0; k < K; k++) {
        double sw = f->stats[f->off_esw + k];
        if (sw < f->min_support) {
            if (!f->frozen[k]) {
                f->frozen[k] = 1;
                moe_log(MOE_LOG_LEVEL_WARN,
                        "expert %zu lost its support at iteration %d (posterior weight %g < %g): "
                        "its parameters are kept frozen",
                        k, f->iter, sw, f->min_support);
                moe_fit_event(f, MOE_EVENT_KIND_LOST_SUPPORT, (int)k, -1, sw);
            }
            continue;
        }
        if (f->frozen[k]) {
            f->frozen[k] = 0;
            moe_log(MOE_LOG_LEVEL_INFO, "expert %zu regained support at iteration %d", k, f->iter);
            moe_fit_event(f, MOE_EVENT_KIND_REGAINED_SUPPORT, (int)k, -1, sw);
        }
        if (m->task == MOE_TASK_REGRESSION) {
            gaussian_expert(f, k);
        } else {
            size_t n = (C - 1) * ed;
            const double *gram = f->stats + f->off_egram + k * ed * ed;
            const double *h = f->e_newton
                                  ? full_hessian(f->stats + f->off_ehess + k * (n * n + 1), n * n, gram)
                                  : NULL;
            moe_softmax_step(m->coef + k * C * ed, C, ed, f->stats + f->off_egrad + k * n, gram,
                             h, f->ridge, damp, f->work);
        }
    }
    for (size_t g = 0; g < m->n_gates; g++) {
        const double *gram = f->stats + f->off_ggram[g];
        const double *h = f->off_ghess[g] == SIZE_MAX
                              ? NULL
                              : full_hessian(f->stats + f->off_ghess[g], moe_softmax_hess_size(m->gate_nch[g], gd), gram);
        moe_softmax_step(m->gate_coef + m->gate_off[g], m->gate_nch[g], gd,
                         f->stats + f->off_ggrad[g], gram, h, f->ridge, damp, f->work);
    }
    moe_model_refresh_chol(m);
}
