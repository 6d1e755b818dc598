/*
 * online.c -- online (stepwise) EM over minibatches, and continuing a
 * saved model on new rows. The schedule and the update are documented at
 * moe_online_params in moe.h.
 *
 * Each minibatch costs one pass over its rows (the same pass as batch EM,
 * over a window of the source, checking every value as it reads it) and
 * one M-step; memory is the fit's workspaces and one extra copy of the
 * statistics.
 */
#include "moe_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

moe_online_params moe_online_params_default(void) {
    moe_online_params o;
    memset(&o, 0, sizeof o);
    o.batch_rows = 10000;
    o.passes = 1;
    o.step_t0 = 2.0;
    o.step_power = 0.6;
    return o;
}

#define INVALID(...) moe_err(err, MOE_STATUS_INVALID_ARGUMENT, __VA_ARGS__)

/* Rows [off, off + n) of another source. */
typedef struct window {
    const moe_source *base;
    size_t off;
} window;

static moe_status window_read(void *ctx, size_t row0, size_t n, const moe_row_buffers *buf,
                              moe_rows *view, moe_error *err) {
    const window *w = ctx;
    return w->base->read(w->base->ctx, w->off + row0, n, buf, view, err);
}

static moe_status check_start(const moe_model *s, const moe_source *src,
                              const moe_train_params *p, moe_error *err) {
    if (s->task != p->task)
        return INVALID("the model is a %s model but the data are for %s",
                       s->task == MOE_TASK_REGRESSION ? "regression" : "classification",
                       p->task == MOE_TASK_REGRESSION ? "regression" : "classification");
    if (s->n_cols != src->n_cols)
        return INVALID("the model reads %zu input columns but the data have %zu", s->n_cols,
                       src->n_cols);
    if (s->task == MOE_TASK_REGRESSION && s->n_out != src->n_outputs)
        return INVALID("the model predicts %zu outputs but the data have %zu", s->n_out,
                       src->n_outputs);
    if (s->task == MOE_TASK_CLASSIFICATION && s->n_cls != src->n_classes)
        return INVALID("the model knows %zu classes but the data have %zu", s->n_cls,
                       src->n_classes);
    /* EM's statistics are those of linear nodes and dense gates. */
    if (s->enet.n_hidden > 0 || s->gnet.n_hidden > 0 || s->top_k > 0 || s->log_var)
        return INVALID("online EM continues linear models with dense gates; this one has MLP "
                       "nodes, top-k gates or input-dependent variances (continue it with the "
                       "gradient trainer and an initial model instead)");
    return MOE_STATUS_OK;
}

/* Is statistic j a Gaussian expert's sufficient statistic (esw or a Gram)? */
static int is_sufficient(const moe_fit *f, size_t j) {
    const moe_model *m = f->m;
    if (j >= f->off_esw && j < f->off_esw + m->n_leaves) return 1;
    if (m->task != MOE_TASK_REGRESSION) return 0;
    size_t q = m->ed + m->n_out;
    return j >= f->off_eg && j < f->off_eg + m->n_leaves * q * q;
}

static moe_status train_online_run(const moe_source *src, const moe_train_params *p,
                            const moe_online_params *op, const moe_model *start,
                            moe_model **out, moe_error *err) {
    if (!out) return INVALID("no output pointer");
    *out = NULL;
    if (!src || !op) return INVALID("no data or no online parameters");
    moe_status st = moe_train_params_check(p, NULL, err);
    if (st != MOE_STATUS_OK) return st;
    if (p->reducer && p->reducer->size > 1) return INVALID("online EM runs in one process");
    if (op->batch_rows < 1) return INVALID("online: batch_rows must be >= 1");
    if (op->passes < 1 || op->passes > 100000)
        return INVALID("online: passes %d is out of range (1..100000)", op->passes);
    if (!(op->step_t0 >= 0.0) || !isfinite(op->step_t0))
        return INVALID("online: step_t0 %g must be >= 0", op->step_t0);
    if (!(op->step_power > 0.5 && op->step_power <= 1.0))
        return INVALID("online: step_power %g must be in (0.5, 1]", op->step_power);
    if (!src->read) return INVALID("data: the row source has no read function");
    if (start && (st = check_start(start, src, p, err)) != MOE_STATUS_OK) return st;

    size_t N = src->n_rows, B = op->batch_rows < N ? op->batch_rows : N, first = 0;
    if (N == 0) return moe_err(err, MOE_STATUS_DATA, "no rows to train on");
    moe_model *m = NULL;
    moe_fit *f = NULL;
    double *sbar = NULL, *old = NULL, *trace = NULL;
    if (start) {
        m = moe_model_clone(start);
        if (!m) return MOE_STATUS_NO_MEMORY;
    } else {
        /* A new model: standardised on, and fitted to, the first minibatch. */
        window w = {src, 0};
        moe_source ws = *src;
        ws.n_rows = B;
        ws.read = window_read;
        ws.ctx = &w;
        st = moe_train_source(&ws, p, &m, err);
        if (st != MOE_STATUS_OK) return st;
        first = B;
    }
    moe_train_params q = *p;
    q.reducer = NULL;
    q.sparse_full = 1; /* every minibatch's pass is a full one: no rows' state */
    st = moe_fit_create(&f, m, src, &q);
    if (st != MOE_STATUS_OK) goto done;
    f->check_in_pass = 1; /* each minibatch is read once: checked as it is read */
    size_t S = f->stat_size, K = m->n_leaves;
    size_t n_gate = moe_tree_layout(&m->tree, m->gd, NULL, NULL) * m->gd;
    size_t n_coef = m->task == MOE_TASK_CLASSIFICATION ? K * m->coef_rows * m->ed : 0;
    size_t n_batches = (N - first + B - 1) / B + (size_t)(op->passes - 1) * ((N + B - 1) / B);
    sbar = calloc(S, sizeof(double));
    old = malloc((n_gate + n_coef + 1) * sizeof(double));
    trace = malloc((n_batches + 1) * sizeof(double));
    if (!sbar || !old || !trace) {
        st = MOE_STATUS_NO_MEMORY;
        goto done;
    }
    double shift_per_w = 0.0; /* log-likelihood on the original scale */
    for (size_t o = 0; o < m->n_out; o++) shift_per_w -= log(m->y_scale[o]);

    size_t t = 0, n_trace = 0;
    double wbar = 0.0; /* mean minibatch weight */
    double ll_pass = 0.0, sw_pass = 0.0;
    size_t rows_pass = 0;
    for (int pass = 0; pass < op->passes; pass++) {
        ll_pass = sw_pass = 0.0;
        rows_pass = pass == 0 ? first : 0;
        for (size_t r0 = pass == 0 ? first : 0; r0 < N; r0 += B) {
            size_t n = N - r0 < B ? N - r0 : B;
            moe_fit_window(f, r0, n);
            st = moe_fit_pass(f, err);
            if (st != MOE_STATUS_OK) goto done;
            double sw = f->stats[4];
            if (!(sw > 0.0)) continue;
            double ll = f->stats[0] + sw * shift_per_w;
            ll_pass += ll;
            sw_pass += sw;
            rows_pass += n;
            trace[n_trace++] = ll / sw;
            t++;
            /* A minibatch lighter than the usual (the last one of a pass)
             * moves the model in proportion to its weight. */
            wbar = t == 1 ? sw : wbar + (sw - wbar) / (double)t;
            /* The statistics start from the first minibatch's (eta 1); the
             * gates' steps follow the schedule from the start. */
            double eta_g = pow((double)t + op->step_t0, -op->step_power);
            if (sw < wbar) eta_g *= sw / wbar;
            double eta = t == 1 ? 1.0 : eta_g;
            /* Sufficient statistics move towards the minibatch's (per unit
             * weight); the M-step sees them at a usual minibatch's weight. */
            for (size_t j = 0; j < S; j++) {
                if (!is_sufficient(f, j)) continue;
                sbar[j] = (1.0 - eta) * sbar[j] + eta * f->stats[j] / sw;
                f->stats[j] = sbar[j] * wbar;
            }
            memcpy(old, m->gate_coef, n_gate * sizeof(double));
            if (n_coef) memcpy(old + n_gate, m->coef, n_coef * sizeof(double));
            f->iter = (int)t;
            moe_fit_mstep(f, 0);
            /* Newton steps of the minibatch, scaled by eta. */
            for (size_t j = 0; j < n_gate; j++)
                m->gate_coef[j] = old[j] + eta_g * (m->gate_coef[j] - old[j]);
            for (size_t j = 0; j < n_coef; j++)
                m->coef[j] = old[n_gate + j] + eta_g * (m->coef[j] - old[n_gate + j]);
            if (p->on_iter) {
                moe_iter_info info = {pass, op->passes, (int)t, ll / sw, NAN, 0};
                if (p->on_iter(&info, p->user_data)) {
                    st = MOE_STATUS_CANCELLED;
                    goto done;
                }
            }
        }
    }

    /* The report: prequential log-likelihood of the last pass. */
    {
        moe_fit_report *rep = &m->report;
        size_t df = moe_model_df(m);
        double ll = ll_pass;
        if (!(sw_pass > 0.0)) ll = start ? NAN : m->report.loglik; /* the first batch only */
        size_t nr = rows_pass, nres = (size_t)rep->n_restarts;
        memset(rep, 0, sizeof *rep);
        rep->loglik = ll;
        rep->df = df;
        rep->aic = -2.0 * ll + 2.0 * (double)df;
        rep->bic = -2.0 * ll + (double)df * log(fmax(sw_pass, 1.0));
        rep->icl = rep->bic;
        rep->n_rows = nr;
        rep->sum_weights = sw_pass;
        rep->iterations = (int)t;
        rep->converged = 0;
        rep->n_restarts = (int)nres;
        free(m->events);
        m->events = NULL;
        if (f->n_events) {
            m->events = malloc(f->n_events * sizeof *m->events);
            if (!m->events) {
                st = MOE_STATUS_NO_MEMORY;
                goto done;
            }
            memcpy(m->events, f->events, f->n_events * sizeof *m->events);
        }
        rep->n_events = f->n_events;
        free(m->trace);
        m->trace = trace;
        m->n_trace = n_trace;
        trace = NULL;
    }
    moe_fit_free(f);
    f = NULL;
    *out = m;
    m = NULL;
    st = MOE_STATUS_OK;
done:
    moe_fit_free(f);
    moe_model_free(m);
    free(sbar);
    free(old);
    free(trace);
    return st;
}

moe_status moe_train_online(const moe_source *src, const moe_train_params *p,
                            const moe_online_params *op, const moe_model *start,
                            moe_model **out, moe_error *err) {
    moe_blas_saved bs = moe_blas_serial_begin();
    moe_status st = train_online_run(src, p, op, start, out, err);
    moe_blas_serial_end(bs);
    return st;
}
