/*
 * predict.c -- prediction from a fitted model, block by block through the
 * same forward pass as training (forward.c). Every row is computed on its
 * own, so results never depend on the batch or the thread count.
 *
 * Mixture mean and variance by the law of total variance:
 *   E[y] = sum_k g_k mu_k,  Var[y_p] = sum_k g_k (s_kp^2 + mu_kp^2) - E[y_p]^2,
 * s_kp expert k's sd of output p: fixed, or the row's own with log-variance
 * experts (moe.h, section 4b).
 * Quantiles invert the mixture CDF F(y) = sum_k g_k Phi((y - mu_k)/s_k) by
 * bracketed Newton-bisection (F is monotone, so it always converges).
 */
#include "moe_impl.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

typedef struct pred_ctx {
    const moe_model *m;
    size_t max_active;   /* top-k models: b.act's row stride */
    moe_nodes nd;
    moe_block b;
    double *qbuf; /* [3K] gate probabilities, means and sds of one row */
} pred_ctx;

static moe_status ctx_init(pred_ctx *c, const moe_model *m) {
    memset(c, 0, sizeof *c);
    c->m = m;
    c->max_active = moe_model_max_active(m);
    if (moe_nodes_init(&c->nd, m) != MOE_STATUS_OK) return MOE_STATUS_NO_MEMORY;
    c->qbuf = malloc(3 * m->n_leaves * sizeof(double));
    if (!c->qbuf || moe_block_alloc(&c->b, m, &c->nd) != MOE_STATUS_OK) {
        free(c->qbuf);
        moe_nodes_free(&c->nd);
        return MOE_STATUS_NO_MEMORY;
    }
    return MOE_STATUS_OK;
}

static void ctx_free(pred_ctx *c) {
    free(c->qbuf);
    moe_block_free(&c->b);
    moe_nodes_free(&c->nd);
}

static moe_status check_rows(const moe_model *m, size_t n, const double *x, size_t ld,
                             moe_error *err) {
    if (n > 0 && !x) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "no input matrix");
    if (ld < m->n_cols)
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "ld_x %zu < %zu model columns", ld,
                       m->n_cols);
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < m->n_ecols + m->n_gcols; j++) {
            size_t c = j < m->n_ecols ? m->ecols[j] : m->gcols[j - m->n_ecols];
            if (!isfinite(x[i * ld + c]))
                return moe_err_at(err, MOE_STATUS_DATA, NULL, i + 1, c + 1,
                                  "row %zu, column %zu: input is %g (not finite)", i + 1, c + 1,
                                  x[i * ld + c]);
        }
    }
    return MOE_STATUS_OK;
}

/* The leaves whose outputs row i of the block needs: every leaf (*act
 * NULL: leaf j is j), or with top-k gates the active ones. */
static size_t row_leaves(const pred_ctx *c, size_t i, const size_t **act) {
    if (c->m->top_k == 0) {
        *act = NULL;
        return c->m->n_leaves;
    }
    *act = c->b.act + i * c->max_active;
    return c->b.n_act[i];
}

/* Expert k's variance of output p at row i of the block (standardised
 * scale): its fixed one, or the row's own with log-variance experts. */
static double expert_var(const pred_ctx *c, size_t i, size_t k, size_t p) {
    const moe_model *m = c->m;
    size_t P = m->n_out;
    return m->log_var ? c->b.ev[(i * m->n_leaves + k) * P + p] : m->cov[(k * P + p) * P + p];
}

/* What for_blocks evaluates besides the gates. */
enum { EXPERTS_NONE = 0, EXPERTS_ALL = 1, EXPERTS_ACTIVE = 2 };

/* Per-row output callback: block rows are [r0, r0 + nb). */
typedef void (*row_fn)(const pred_ctx *c, size_t r0, size_t nb, void *arg);

static moe_status for_blocks(const moe_model *m, size_t n, const double *x, size_t ld,
                             int experts, row_fn fn, void *arg, moe_error *err) {
    moe_status st = check_rows(m, n, x, ld, err);
    if (st != MOE_STATUS_OK) return st;
    size_t nblocks = (n + MOE_BLOCK_ROWS - 1) / MOE_BLOCK_ROWS;
    int nt = omp_get_max_threads();
    if ((size_t)nt > nblocks) nt = nblocks ? (int)nblocks : 1;
    int failed = 0;
    moe_blas_saved bs = moe_blas_serial_begin(); /* the same bits whatever OpenBLAS's threads */
#pragma omp parallel num_threads(nt)
    {
        pred_ctx c;
        int ok = ctx_init(&c, m) == MOE_STATUS_OK;
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (size_t blk = 0; blk < nblocks; blk++) {
            if (!ok) continue;
            size_t r0 = blk * MOE_BLOCK_ROWS;
            size_t nb = n - r0 < MOE_BLOCK_ROWS ? n - r0 : MOE_BLOCK_ROWS;
            moe_block_gates(m, &c.nd, &c.b, nb, x + r0 * ld, ld);
            if (experts == EXPERTS_ACTIVE && m->top_k > 0)
                moe_block_experts_sparse(m, &c.b, nb); /* only the selected experts */
            else if (experts != EXPERTS_NONE)
                moe_block_experts(m, &c.b, nb);
            fn(&c, r0, nb, arg);
        }
        if (ok) ctx_free(&c);
    }
    moe_blas_serial_end(bs);
    return failed ? moe_err(err, MOE_STATUS_NO_MEMORY, "out of memory") : MOE_STATUS_OK;
}

/* ---- gates -------------------------------------------------------------------- */

static void gates_rows(const pred_ctx *c, size_t r0, size_t nb, void *arg) {
    double *out = arg;
    size_t K = c->m->n_leaves, NN = c->nd.n_nodes, G = c->m->n_gates;
    for (size_t i = 0; i < nb; i++)
        for (size_t k = 0; k < K; k++) out[(r0 + i) * K + k] = exp(c->b.lp[i * NN + G + k]);
}

moe_status moe_model_predict_gates(const moe_model *m, size_t n, const double *x, size_t ld,
                                   double *gates, moe_error *err) {
    if (!m || !gates) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "null argument");
    return for_blocks(m, n, x, ld, EXPERTS_NONE, gates_rows, gates, err);
}

static void expert_rows(const pred_ctx *c, size_t r0, size_t nb, void *arg) {
    int32_t *out = arg;
    size_t K = c->m->n_leaves, NN = c->nd.n_nodes, G = c->m->n_gates;
    for (size_t i = 0; i < nb; i++) {
        const double *lp = c->b.lp + i * NN + G;
        size_t best = 0;
        for (size_t k = 1; k < K; k++)
            if (lp[k] > lp[best]) best = k;
        out[r0 + i] = (int32_t)best;
    }
}

moe_status moe_model_predict_expert(const moe_model *m, size_t n, const double *x, size_t ld,
                                    int32_t *out, moe_error *err) {
    if (!m || !out) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "null argument");
    return for_blocks(m, n, x, ld, EXPERTS_NONE, expert_rows, out, err);
}

/* ---- experts ------------------------------------------------------------------ */

typedef struct experts_arg {
    double *mean, *sd;
} experts_arg;

static void experts_rows(const pred_ctx *c, size_t r0, size_t nb, void *arg) {
    const experts_arg *a = arg;
    const moe_model *m = c->m;
    size_t K = m->n_leaves, R = m->coef_rows;
    for (size_t i = 0; i < nb; i++) {
        for (size_t k = 0; k < K; k++) {
            const double *eo = c->b.eo + (i * K + k) * R;
            double *mo = a->mean + ((r0 + i) * K + k) * R;
            for (size_t r = 0; r < R; r++) {
                if (m->task == MOE_TASK_REGRESSION) {
                    mo[r] = m->y_mean[r] + m->y_scale[r] * eo[r];
                    if (a->sd)
                        a->sd[((r0 + i) * K + k) * R + r] =
                            m->y_scale[r] * sqrt(expert_var(c, i, k, r));
                } else {
                    mo[r] = exp(eo[r]);
                }
            }
        }
    }
}

moe_status moe_model_predict_experts(const moe_model *m, size_t n, const double *x, size_t ld,
                                     double *mean, double *sd, moe_error *err) {
    if (!m || !mean) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "null argument");
    if (sd && m->task != MOE_TASK_REGRESSION)
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "sd is for regression models only");
    experts_arg a = {mean, sd};
    return for_blocks(m, n, x, ld, EXPERTS_ALL, experts_rows, &a, err);
}

/* ---- mixture mean and variance --------------------------------------------------- */

typedef struct mean_arg {
    double *mean, *var;
} mean_arg;

static void mean_rows(const pred_ctx *c, size_t r0, size_t nb, void *arg) {
    const mean_arg *a = arg;
    const moe_model *m = c->m;
    size_t K = m->n_leaves, P = m->n_out, NN = c->nd.n_nodes, G = m->n_gates;
    for (size_t i = 0; i < nb; i++) {
        const double *lp = c->b.lp + i * NN + G;
        const size_t *act;
        size_t na = row_leaves(c, i, &act);
        for (size_t p = 0; p < P; p++) {
            double mu = 0.0, m2 = 0.0;
            for (size_t j = 0; j < na; j++) {
                size_t k = act ? act[j] : j;
                double g = exp(lp[k]);
                double e = c->b.eo[(i * K + k) * P + p];
                mu += g * e;
                m2 += g * (expert_var(c, i, k, p) + e * e);
            }
            double v = m2 - mu * mu;
            if (v < 0.0) v = 0.0;
            a->mean[(r0 + i) * P + p] = m->y_mean[p] + m->y_scale[p] * mu;
            if (a->var) a->var[(r0 + i) * P + p] = m->y_scale[p] * m->y_scale[p] * v;
        }
    }
}

moe_status moe_model_predict_mean(const moe_model *m, size_t n, const double *x, size_t ld,
                                  double *mean, double *var, moe_error *err) {
    if (!m || !mean) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "null argument");
    if (m->task != MOE_TASK_REGRESSION)
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "mean: a classification model");
    mean_arg a = {mean, var};
    return for_blocks(m, n, x, ld, EXPERTS_ACTIVE, mean_rows, &a, err);
}

/* ---- quantiles ---------------------------------------------------------------------- */

/* The q-quantile of sum_k g_k N(mu_k, s_k^2) (standardised scale). */
static double mixture_quantile(size_t K, const double *g, const double *mu, const double *s,
                               double q) {
    double lo = INFINITY, hi = -INFINITY;
    for (size_t k = 0; k < K; k++) {
        if (g[k] <= 0.0) continue;
        if (mu[k] - 40.0 * s[k] < lo) lo = mu[k] - 40.0 * s[k];
        if (mu[k] + 40.0 * s[k] > hi) hi = mu[k] + 40.0 * s[k];
    }
    double y = 0.5 * (lo + hi);
    for (int it = 0; it < 200; it++) {
        double F = 0.0, dF = 0.0;
        for (size_t k = 0; k < K; k++) {
            double z = (y - mu[k]) / s[k];
            F += g[k] * moe_norm_cdf(z);
            dF += g[k] * exp(-0.5 * z * z) / (s[k] * 2.5066282746310002);
        }
        if (F < q) lo = y; else hi = y;
        double next = dF > 0.0 ? y - (F - q) / dF : 0.5 * (lo + hi);
        if (!(next > lo && next < hi)) next = 0.5 * (lo + hi);
        if (fabs(next - y) <= 1e-14 * (fabs(y) + 1e-300) || hi - lo <= 1e-13 * (fabs(y) + 1e-300)) {
            y = next;
            break;
        }
        y = next;
    }
    return y;
}

typedef struct quant_arg {
    size_t n_probs;
    const double *probs;  /* [n_probs] */
    size_t p0, np;        /* outputs p0 .. p0+np-1 */
    double **outs;        /* [n_probs] outputs, each n x np */
} quant_arg;

static void quant_rows(const pred_ctx *c, size_t r0, size_t nb, void *arg) {
    const quant_arg *a = arg;
    const moe_model *m = c->m;
    size_t K = m->n_leaves, P = m->n_out, NN = c->nd.n_nodes, G = m->n_gates;
    double *g = c->qbuf, *mu = g + K, *s = g + 2 * K;
    for (size_t i = 0; i < nb; i++) {
        const size_t *act;
        size_t na = row_leaves(c, i, &act);
        for (size_t j = 0; j < na; j++) g[j] = exp(c->b.lp[i * NN + G + (act ? act[j] : j)]);
        for (size_t pp = 0; pp < a->np; pp++) {
            size_t p = a->p0 + pp;
            for (size_t j = 0; j < na; j++) {
                size_t k = act ? act[j] : j;
                mu[j] = c->b.eo[(i * K + k) * P + p];
                s[j] = sqrt(expert_var(c, i, k, p));
            }
            for (size_t j = 0; j < a->n_probs; j++)
                a->outs[j][(r0 + i) * a->np + pp] =
                    m->y_mean[p] + m->y_scale[p] * mixture_quantile(na, g, mu, s, a->probs[j]);
        }
    }
}

moe_status moe_model_predict_quantile(const moe_model *m, size_t n, const double *x, size_t ld,
                                      size_t output, double prob, double *out, moe_error *err) {
    if (!m || !out) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "null argument");
    if (m->task != MOE_TASK_REGRESSION)
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "quantile: a classification model");
    if (output >= m->n_out)
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "quantile: output %zu of %zu", output,
                       m->n_out);
    if (!(prob > 0.0 && prob < 1.0))
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "quantile: probability %g not in (0, 1)",
                       prob);
    double *outs[1] = {out};
    quant_arg a = {1, &prob, output, 1, outs};
    return for_blocks(m, n, x, ld, EXPERTS_ACTIVE, quant_rows, &a, err);
}

moe_status moe_model_predict_interval(const moe_model *m, size_t n, const double *x, size_t ld,
                                      double level, double *lower, double *upper, moe_error *err) {
    if (!m || !lower || !upper) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "null argument");
    if (m->task != MOE_TASK_REGRESSION)
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "interval: a classification model");
    if (!(level > 0.0 && level < 1.0))
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "interval: level %g not in (0, 1)", level);
    double probs[2] = {0.5 * (1.0 - level), 0.5 * (1.0 + level)};
    double *outs[2] = {lower, upper};
    quant_arg a = {2, probs, 0, m->n_out, outs};
    return for_blocks(m, n, x, ld, EXPERTS_ACTIVE, quant_rows, &a, err);
}

/* ---- classification ------------------------------------------------------------------ */

static void proba_rows(const pred_ctx *c, size_t r0, size_t nb, void *arg) {
    double *out = arg;
    const moe_model *m = c->m;
    size_t K = m->n_leaves, C = m->n_cls, NN = c->nd.n_nodes, G = m->n_gates;
    for (size_t i = 0; i < nb; i++) {
        double *o = out + (r0 + i) * C;
        for (size_t cl = 0; cl < C; cl++) o[cl] = 0.0;
        const size_t *act;
        size_t na = row_leaves(c, i, &act);
        for (size_t j = 0; j < na; j++) {
            size_t k = act ? act[j] : j;
            double g = exp(c->b.lp[i * NN + G + k]);
            for (size_t cl = 0; cl < C; cl++) o[cl] += g * exp(c->b.eo[(i * K + k) * C + cl]);
        }
    }
}

moe_status moe_model_predict_proba(const moe_model *m, size_t n, const double *x, size_t ld,
                                   double *proba, moe_error *err) {
    if (!m || !proba) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "null argument");
    if (m->task != MOE_TASK_CLASSIFICATION)
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "proba: a regression model");
    return for_blocks(m, n, x, ld, EXPERTS_ACTIVE, proba_rows, proba, err);
}

/* ---- densities and posteriors given the target --------------------------------------- */

typedef struct target_arg {
    const moe_dataset *d;
    double *logdens;  /* n or NULL */
    double *post;     /* n x K or NULL */
    double shift;     /* log-density correction to the user's scale */
} target_arg;

static void target_rows(const pred_ctx *c, size_t r0, size_t nb, void *arg) {
    const target_arg *a = arg;
    const moe_model *m = c->m;
    const moe_dataset *d = a->d;
    moe_block *b = (moe_block *)&c->b;
    size_t K = m->n_leaves, NN = c->nd.n_nodes, G = m->n_gates;
    moe_block_posterior(m, &c->nd, b, nb, d->y ? d->y + r0 * d->ld_y : NULL, d->ld_y,
                        d->labels ? d->labels + r0 : NULL);
    for (size_t i = 0; i < nb; i++) {
        if (a->logdens) a->logdens[r0 + i] = b->ll[i] + a->shift;
        if (a->post)
            for (size_t k = 0; k < K; k++) a->post[(r0 + i) * K + k] = b->post[i * NN + G + k];
    }
}

static moe_status with_target(const moe_model *m, const moe_dataset *d, double *logdens,
                              double *post, moe_error *err) {
    if (!m || !d) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "null argument");
    double shift = 0.0;
    if (m->task == MOE_TASK_REGRESSION) {
        if (!d->y || d->n_outputs != m->n_out || d->ld_y < m->n_out)
            return moe_err(err, MOE_STATUS_INVALID_ARGUMENT,
                           "the data set needs %zu target column(s)", m->n_out);
        for (size_t i = 0; i < d->n_rows; i++)
            for (size_t p = 0; p < m->n_out; p++)
                if (!isfinite(d->y[i * d->ld_y + p]))
                    return moe_err_at(err, MOE_STATUS_DATA, NULL, i + 1, 0,
                                      "row %zu: target %zu is %g (not finite)", i + 1, p + 1,
                                      d->y[i * d->ld_y + p]);
        for (size_t p = 0; p < m->n_out; p++) shift -= log(m->y_scale[p]);
    } else {
        if (!d->labels) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "the data set needs labels");
        for (size_t i = 0; i < d->n_rows; i++)
            if (d->labels[i] < 0 || (size_t)d->labels[i] >= m->n_cls)
                return moe_err_at(err, MOE_STATUS_DATA, NULL, i + 1, 0,
                                  "row %zu: class label %d outside 0..%zu", i + 1,
                                  (int)d->labels[i], m->n_cls - 1);
    }
    if (d->n_cols != m->n_cols)
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "the data has %zu columns, the model %zu",
                       d->n_cols, m->n_cols);
    target_arg a = {d, logdens, post, shift};
    return for_blocks(m, d->n_rows, d->x, d->ld_x, EXPERTS_ALL, target_rows, &a, err);
}

moe_status moe_model_log_density(const moe_model *m, const moe_dataset *d, double *out,
                                 moe_error *err) {
    if (!out) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "null argument");
    return with_target(m, d, out, NULL, err);
}

moe_status moe_model_posterior(const moe_model *m, const moe_dataset *d, double *out,
                               moe_error *err) {
    if (!out) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "null argument");
    return with_target(m, d, NULL, out, err);
}
