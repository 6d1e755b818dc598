/*
 * em.c -- training: parameters, data checks, standardisation, the EM loop,
 * restarts (with flexmix-style short runs) and model selection.
 *
 * EM (Dempster, Laird & Rubin 1977) for the HME (Jordan & Jacobs 1994):
 * each iteration is one pass over the data (moe_fit_pass: E-step and
 * statistics) and one M-step from the statistics (moe_fit_mstep). The
 * log-likelihood of the parameters the pass saw is known at the end of the
 * pass, so the returned model is always the one whose log-likelihood is
 * reported. A decrease beyond rounding (which the M-step rules out in exact
 * arithmetic) restores the previous parameters, is recorded as an event and
 * stops the run.
 */
#include "moe_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

moe_train_params moe_train_params_default(void) {
    moe_train_params p;
    memset(&p, 0, sizeof p);
    p.task = MOE_TASK_REGRESSION;
    p.tree.n_levels = 1;
    p.tree.branching[0] = 2;
    p.variance = MOE_VARIANCE_DIAG;
    p.n_expert_cols = MOE_ALL_COLS;
    p.n_gate_cols = MOE_ALL_COLS;
    p.init = MOE_INIT_RANDOM;
    p.n_restarts = 1;
    p.seed = 1;
    p.max_iter = 500;
    p.tol = 1e-8;
    p.short_iter = 0;
    p.n_threads = 0;
    p.var_floor = 1e-6;
    p.ridge = 1e-10;
    p.min_support = -1.0;
    p.support_policy = MOE_SUPPORT_POLICY_KEEP;
    p.sparse_full = 10;
    return p;
}

#define INVALID(...) moe_err(err, MOE_STATUS_INVALID_ARGUMENT, __VA_ARGS__)

static moe_status check_cols(const char *what, size_t n, const size_t *cols, size_t n_cols,
                             moe_error *err) {
    if (n == MOE_ALL_COLS) return MOE_STATUS_OK;
    if (n > 0 && !cols) return INVALID("%s: %zu columns but no column list", what, n);
    for (size_t j = 0; j < n; j++) {
        if (n_cols != (size_t)-1 && cols[j] >= n_cols)
            return INVALID("%s: column index %zu out of range (the data has %zu columns)", what,
                           cols[j], n_cols);
        for (size_t l = 0; l < j; l++)
            if (cols[l] == cols[j]) return INVALID("%s: column %zu listed twice", what, cols[j]);
    }
    return MOE_STATUS_OK;
}

static moe_status check_source(const moe_train_params *p, const moe_source *s, moe_error *err);

moe_status moe_train_params_check(const moe_train_params *p, const moe_dataset *d,
                                  moe_error *err) {
    if (!p) return INVALID("no parameters");
    if (p->task != MOE_TASK_REGRESSION && p->task != MOE_TASK_CLASSIFICATION)
        return INVALID("task: unknown value %d", (int)p->task);
    if (p->variance < MOE_VARIANCE_ISO || p->variance > MOE_VARIANCE_FULL)
        return INVALID("variance: unknown value %d", (int)p->variance);
    if (p->init != MOE_INIT_RANDOM && p->init != MOE_INIT_KMEANS)
        return INVALID("init: unknown value %d", (int)p->init);
    char buf[128];
    moe_tree_shape_format(&p->tree, buf, sizeof buf);
    moe_error tmp;
    moe_tree_shape copy = p->tree;
    if (p->tree.n_levels == 0 || p->tree.n_levels > MOE_MAX_DEPTH ||
        moe_tree_shape_parse(buf, &copy, &tmp) != MOE_STATUS_OK)
        return INVALID("tree: invalid shape '%s'", buf);
    if (p->n_restarts < 1 || p->n_restarts > 100000)
        return INVALID("restarts: %d is out of range (1..100000)", p->n_restarts);
    if (p->max_iter < 0 || p->max_iter > 100000000)
        return INVALID("max_iter: %d is out of range (0..1e8)", p->max_iter);
    if (!(p->tol >= 0.0) || !isfinite(p->tol)) return INVALID("tol: %g must be >= 0", p->tol);
    if (p->short_iter < 0) return INVALID("short_iter: %d must be >= 0", p->short_iter);
    if (p->n_threads < 0 || p->n_threads > 4096)
        return INVALID("threads: %d is out of range (0..4096)", p->n_threads);
    if (!(p->var_floor > 0.0) || !(p->var_floor < 1.0))
        return INVALID("var_floor: %g must be in (0, 1)", p->var_floor);
    if (!(p->ridge >= 0.0) || !(p->ridge < 1.0))
        return INVALID("ridge: %g must be in [0, 1)", p->ridge);
    if (!(p->min_support == -1.0 || (p->min_support >= 0.0 && isfinite(p->min_support))))
        return INVALID("min_support: %g must be >= 0 (or -1 for the default)", p->min_support);
    if (p->sparse_k < 0) return INVALID("sparse_k: %d must be >= 0", p->sparse_k);
    if (p->sparse_full < 1 || p->sparse_full > 1000000)
        return INVALID("sparse_full: %d is out of range (1..1e6)", p->sparse_full);
    if (p->support_policy != MOE_SUPPORT_POLICY_KEEP)
        return INVALID("support_policy: unknown value %d", (int)p->support_policy);
    if (p->reducer && (!p->reducer->sum || p->reducer->size < 1 || p->reducer->rank < 0 ||
                       p->reducer->rank >= p->reducer->size))
        return INVALID("reducer: needs a sum function and 0 <= rank < size");
    if (!d) {
        moe_status st = check_cols("expert columns", p->n_expert_cols, p->expert_cols, (size_t)-1, err);
        if (st != MOE_STATUS_OK) return st;
        return check_cols("gate columns", p->n_gate_cols, p->gate_cols, (size_t)-1, err);
    }
    if (!d->x && d->n_cols > 0) return INVALID("data: no input matrix");
    if (d->ld_x < d->n_cols) return INVALID("data: ld_x %zu < n_cols %zu", d->ld_x, d->n_cols);
    if (p->task == MOE_TASK_REGRESSION) {
        if (d->n_outputs >= 1 && !d->y) return INVALID("regression needs targets (y)");
        if (d->ld_y < d->n_outputs) return INVALID("data: ld_y %zu < n_outputs %zu", d->ld_y, d->n_outputs);
    } else if (!d->labels) {
        return INVALID("classification needs labels");
    }
    moe_source s = moe_source_from_dataset(d);
    return check_source(p, &s, err);
}

/* The parameters against the shape of the rows. */
static moe_status check_source(const moe_train_params *p, const moe_source *s, moe_error *err) {
    size_t nc = s->n_cols;
    moe_status st = check_cols("expert columns", p->n_expert_cols, p->expert_cols, nc, err);
    if (st == MOE_STATUS_OK) st = check_cols("gate columns", p->n_gate_cols, p->gate_cols, nc, err);
    if (st != MOE_STATUS_OK) return st;
    if (!s->read) return INVALID("data: the row source has no read function");
    if (p->task == MOE_TASK_REGRESSION) {
        if (s->n_outputs < 1) return INVALID("regression needs targets (y, n_outputs >= 1)");
        if (s->n_outputs > 1024) return INVALID("data: %zu outputs (at most 1024)", s->n_outputs);
    } else {
        if (s->n_classes < 2)
            return INVALID("classification needs labels and n_classes >= 2 (got %zu)", s->n_classes);
        if (s->n_classes > 100000) return INVALID("data: %zu classes (at most 100000)", s->n_classes);
    }
    return MOE_STATUS_OK;
}

/* ---- one EM run -------------------------------------------------------------- */

typedef struct run_state {
    moe_model *m;          /* parameters */
    double *trace;         /* log-likelihood per iteration, original scale */
    size_t n_trace, cap_trace;
    moe_event *events;
    size_t n_events;
    unsigned char *frozen, *floored;
    int iter;
    int converged;
    int stopped;           /* not monotone: stop */
    double loglik;         /* standardised scale */
    double true_llo;       /* log-likelihood, original scale (sparse EM's trace
                              holds its bound F instead) */
    int true_stale;        /* sparse EM: the last accepted pass saw only the kept
                              experts, so true_llo is of older parameters */
    double entropy;
} run_state;

static void run_state_free(run_state *r) {
    moe_model_free(r->m);
    free(r->trace);
    free(r->events);
    free(r->frozen);
    free(r->floored);
    memset(r, 0, sizeof *r);
}

static int trace_push(run_state *r, double v) {
    if (r->n_trace == r->cap_trace) {
        size_t cap = r->cap_trace ? 2 * r->cap_trace : 64;
        double *t = realloc(r->trace, cap * sizeof *t);
        if (!t) return -1;
        r->trace = t;
        r->cap_trace = cap;
    }
    r->trace[r->n_trace++] = v;
    return 0;
}

/* Copy the fit's current parameters and bookkeeping into a run state
 * (its trace and counters stay as they are). */
static moe_status snapshot(const moe_fit *f, run_state *r) {
    size_t K = f->m->n_leaves;
    moe_model *c = moe_model_clone(f->m);
    unsigned char *fr = malloc(K), *fl = malloc(K);
    moe_event *ev = malloc((f->n_events + 1) * sizeof *ev);
    if (!c || !fr || !fl || !ev) {
        moe_model_free(c);
        free(fr);
        free(fl);
        free(ev);
        return MOE_STATUS_NO_MEMORY;
    }
    memcpy(fr, f->frozen, K);
    memcpy(fl, f->floored, K);
    if (f->n_events) memcpy(ev, f->events, f->n_events * sizeof *ev);
    moe_model_free(r->m);
    free(r->frozen);
    free(r->floored);
    free(r->events);
    r->m = c;
    r->frozen = fr;
    r->floored = fl;
    r->events = ev;
    r->n_events = f->n_events;
    return MOE_STATUS_OK;
}

/* Load a run state back into the fit (to continue it). Sparse EM's kept
 * sets, priors and saved gate statistics are of other parameters (a later
 * step, or another restart's), so its next pass is full. */
static moe_status restore(moe_fit *f, const run_state *r) {
    f->sp_have_keep = f->sp_have_prior = 0;
    moe_model *m = f->m;
    size_t K = m->n_leaves, P = m->n_out;
    size_t grows = moe_tree_layout(&m->tree, m->gd, NULL, NULL);
    memcpy(m->gate_coef, r->m->gate_coef, grows * m->gd * sizeof(double));
    memcpy(m->coef, r->m->coef, K * m->coef_rows * m->ed * sizeof(double));
    memcpy(m->cov, r->m->cov, K * P * P * sizeof(double));
    moe_model_refresh_chol(m);
    memcpy(f->frozen, r->frozen, K);
    memcpy(f->floored, r->floored, K);
    if (r->n_events > f->cap_events) {
        moe_event *e = realloc(f->events, r->n_events * sizeof *e);
        if (!e) return MOE_STATUS_NO_MEMORY;
        f->events = e;
        f->cap_events = r->n_events;
    }
    if (r->n_events) memcpy(f->events, r->events, r->n_events * sizeof *f->events);
    f->n_events = r->n_events;
    f->iter = r->iter;
    return MOE_STATUS_OK;
}

/* One pass of EM. Sparse EM (sparse_em.c) chooses its kind: full every
 * sp_full iterations and whenever the rows' kept leaves are unknown; after
 * a full pass (whose M-step moves the gates) a refresh; kept otherwise.
 * Its full passes compute the kept leaves' posteriors alone (sp_lean), but
 * with want_ll, which gives stats[3] the log-likelihood. */
static moe_status em_pass(moe_fit *f, int want_ll, moe_error *err) {
    if (!f->sp_keep || !f->sp_have_keep || f->iter % f->sp_full == 0)
        f->sp_pass = MOE_PASS_FULL;
    else
        f->sp_pass = f->sp_have_prior ? MOE_PASS_KEPT : MOE_PASS_REFRESH;
    f->sp_lean = f->sparse_k && f->sp_pass == MOE_PASS_FULL && !f->init_mode && !want_ll;
    /* A flat tree's gate steps after the cycle's last kept pass (not after
     * the initialisation's pass, whose M-step sets every parameter). */
    int defer = f->sp_defer && !f->init_mode;
    f->sp_gate_part = !defer                          ? MOE_GATE_WHOLE
                      : f->sp_pass == MOE_PASS_FULL    ? MOE_GATE_PRIOR
                      : (f->iter + 1) % f->sp_full == 0 ? MOE_GATE_POST
                                                        : MOE_GATE_NONE;
    if (f->sp_pass == MOE_PASS_FULL) f->sp_sorted = 0; /* new kept leaves, sorted anew */
    moe_status st = moe_fit_pass(f, err);
    if (st != MOE_STATUS_OK) {
        f->sp_have_keep = f->sp_have_prior = f->sp_sorted = 0;
        return st;
    }
    if (f->sp_pass != MOE_PASS_FULL) f->sp_sorted = f->sp_pos != NULL; /* recorded */
    if (f->sp_pass == MOE_PASS_FULL) {
        f->sp_have_keep = f->sp_keep != NULL;
        f->sp_have_prior = defer; /* the gate stays until the cycle's end */
    } else if (f->sp_pass == MOE_PASS_REFRESH) {
        f->sp_have_prior = 1;
    }
    /* The gate's slots: kept aside after a full pass (so its M-step moves
     * the experts alone), completed after the last kept pass. */
    size_t g0 = f->sp_defer ? f->off_ggrad[0] : 0, len = f->stat_size - g0;
    size_t ng = f->sp_defer ? f->off_ggram[0] - g0 : 0; /* the gradient's */
    if (f->sp_gate_part == MOE_GATE_PRIOR) {
        memcpy(f->sp_gsave, f->stats + g0, len * sizeof(double));
        memset(f->stats + g0, 0, len * sizeof(double));
    } else if (f->sp_gate_part == MOE_GATE_POST) {
        for (size_t j = 0; j < ng; j++) f->stats[g0 + j] += f->sp_gsave[j];
        memcpy(f->stats + g0 + ng, f->sp_gsave + ng, (len - ng) * sizeof(double));
    }
    return MOE_STATUS_OK;
}

/* Sparse EM: when the run's last accepted pass looked at the kept experts
 * only, a full pass over the same parameters (no M-step) gives their true
 * log-likelihood for the report. */
static moe_status true_loglik(moe_fit *f, run_state *r, double ll_shift, moe_error *err) {
    if (!r->true_stale) return MOE_STATUS_OK;
    f->sp_have_keep = 0;
    moe_status st = em_pass(f, 1, err);
    if (st != MOE_STATUS_OK) return st;
    r->true_llo = f->stats[3] + ll_shift;
    r->entropy = f->stats[1];
    r->true_stale = 0;
    return MOE_STATUS_OK;
}

/* Reset parameters and run the initialisation pass + M-step. */
static moe_status initialise(moe_fit *f, moe_init how, uint64_t seed, moe_error *err) {
    moe_model *m = f->m;
    size_t K = m->n_leaves, P = m->n_out;
    size_t grows = moe_tree_layout(&m->tree, m->gd, NULL, NULL);
    memset(m->gate_coef, 0, grows * m->gd * sizeof(double));
    memset(m->coef, 0, K * m->coef_rows * m->ed * sizeof(double));
    memset(m->cov, 0, K * P * P * sizeof(double));
    for (size_t k = 0; k < K; k++)
        for (size_t p = 0; p < P; p++) m->cov[(k * P + p) * P + p] = 1.0;
    moe_model_refresh_chol(m);
    memset(f->frozen, 0, K);
    memset(f->floored, 0, K);
    f->iter = 0;
    f->sp_have_keep = f->sp_have_prior = 0;
    if (how == MOE_INIT_KMEANS) {
        moe_status st = moe_kmeans_fit(f, seed, err);
        if (st != MOE_STATUS_OK) return st;
        f->init_mode = 2;
    } else {
        /* Random hyperplanes for every gate: standard normal coefficients
         * scaled so that a logit has sd about 2 on standardised inputs. */
        moe_rng rng;
        moe_rng_seed(&rng, seed ^ 0x5851f42d4c957f2dULL);
        double sc = 2.0 / sqrt((double)m->gd);
        for (size_t g = 0; g < m->n_gates; g++)
            for (size_t j = m->gd; j < m->gate_nch[g] * m->gd; j++)
                m->gate_coef[m->gate_off[g] + j] = sc * moe_rng_normal(&rng);
        f->init_mode = 1;
        f->init_seed = seed;
    }
    moe_status st = em_pass(f, 0, err);
    f->init_mode = 0;
    if (st == MOE_STATUS_OK) moe_fit_mstep(f, 0);
    return st;
}

/* Run EM from the fit's current parameters until convergence, the
 * iteration cap `until` (total iterations of the run), a decrease or a
 * cancellation. r->trace continues.
 *
 * The softmax M-steps start as plain Newton steps. When the next pass finds
 * the log-likelihood lower, the previous parameters and statistics come
 * back and the step is retried with half the length, down to a step that
 * Boehning's bound guarantees (moe_softmax_step); so the log-likelihood
 * never decreases while most iterations cost one pass. The damping level
 * carries over, relaxed by one halving per accepted softmax step: per
 * accepted iteration, but in sparse EM of a flat tree with Gaussian
 * experts, whose gate steps once a cycle and whose other M-steps have no
 * softmax to damp (relaxed at every iteration, the level would be back to
 * a full Newton step at every gate step, and each halving its step needs
 * again would cost a full pass). There, too, a gate step that needed a
 * retry leaves the level as it is: relaxed after each, a level that holds
 * would fail every other step (N = 1e5, D = 10, K = 64, k = 2, 500
 * iterations: 25 retries, 17 so). */
static moe_status run_em(moe_fit *f, run_state *r, int until, double tol, double ll_shift,
                         const moe_train_params *p, int restart, int short_run, int resume,
                         moe_error *err) {
    int damp = 0, soft = 1, retried = 0; /* soft: the last M-step moved a softmax */
    for (;;) {
        moe_status pst = em_pass(f, 0, err);
        if (pst != MOE_STATUS_OK) return pst;
        double ll = f->stats[0];
        double llo = ll + ll_shift;
        if (resume) {
            /* Continuing a run: these parameters are already the last
             * entry of the trace; just take the next step. */
            resume = 0;
            goto step;
        }
        if (r->n_trace > 0) {
            double prev = r->trace[r->n_trace - 1];
            if (!(llo >= prev - 1e-12 * fabs(prev))) {
                moe_status st = restore(f, r);
                if (st != MOE_STATUS_OK) return st;
                memcpy(f->stats, f->stats_prev, f->stat_size * sizeof(double));
                if (damp < MOE_DAMP_GUARANTEED) {
                    retried = 1;
                    damp++;
                    moe_fit_mstep(f, damp);
                    f->iter++;
                    continue;
                }
                /* Even the guaranteed step lost: rounding at the optimum. */
                moe_log(MOE_LOG_LEVEL_WARN,
                        "log-likelihood decreased at iteration %d (%.17g -> %.17g): keeping the "
                        "previous parameters and stopping",
                        f->iter, prev, llo);
                moe_fit_event(f, MOE_EVENT_KIND_NOT_MONOTONE, -1, -1, llo - prev);
                r->stopped = 1;
                r->entropy = f->stats[1];
                st = true_loglik(f, r, ll_shift, err);
                return st != MOE_STATUS_OK ? st : snapshot(f, r);
            }
        }
        /* Accepted. The next step starts one halving shorter than this one
         * needed, so a hard stretch does not pay for its retries again at
         * every iteration. */
        if (damp > 0 && soft && !(retried && f->sp_defer)) damp--;
        if (soft) retried = 0;
        if (trace_push(r, llo) != 0) return MOE_STATUS_NO_MEMORY;
        r->loglik = ll;
        r->true_stale = f->sp_pass != MOE_PASS_FULL || f->sp_lean;
        if (!r->true_stale) r->true_llo = f->stats[3] + ll_shift;
        r->entropy = f->stats[1];
        r->iter = f->iter;
        double delta = r->n_trace > 1 ? llo - r->trace[r->n_trace - 2] : NAN;
        if (p->on_iter) {
            moe_iter_info info = {restart, p->n_restarts, f->iter, llo, delta, short_run};
            if (p->on_iter(&info, p->user_data)) return MOE_STATUS_CANCELLED;
        }
        /* Sparse EM converges only at a full pass (the gates and the kept
         * sets are still for the taking in between). */
        if (tol > 0.0 && r->n_trace > 1 && f->sp_pass == MOE_PASS_FULL &&
            fabs(delta) <= tol * fabs(llo)) {
            r->converged = 1;
            break;
        }
        if (f->iter >= until) break;
    step:;
        /* Keep the parameters and statistics behind this log-likelihood in
         * case the next step lowers it. */
        moe_status st = snapshot(f, r);
        if (st != MOE_STATUS_OK) return st;
        memcpy(f->stats_prev, f->stats, f->stat_size * sizeof(double));
        soft = f->m->task == MOE_TASK_CLASSIFICATION || !f->sp_defer ||
               f->sp_gate_part == MOE_GATE_POST || f->sp_gate_part == MOE_GATE_WHOLE;
        moe_fit_mstep(f, damp);
        f->iter++;
    }
    moe_status st = true_loglik(f, r, ll_shift, err);
    return st != MOE_STATUS_OK ? st : snapshot(f, r);
}

/* ---- training ------------------------------------------------------------------ */

static moe_status make_template(const moe_source *d, const moe_train_params *p, moe_model **out) {
    moe_model t;
    memset(&t, 0, sizeof t);
    t.task = p->task;
    t.variance = p->variance;
    t.tree = p->tree;
    t.n_cols = d->n_cols;
    t.n_out = p->task == MOE_TASK_REGRESSION ? d->n_outputs : 0;
    t.n_cls = p->task == MOE_TASK_CLASSIFICATION ? d->n_classes : 0;
    size_t *all = malloc((d->n_cols + 1) * sizeof(size_t));
    if (!all) return MOE_STATUS_NO_MEMORY;
    for (size_t j = 0; j < d->n_cols; j++) all[j] = j;
    const size_t *ec = p->n_expert_cols == MOE_ALL_COLS ? all : p->expert_cols;
    const size_t *gc = p->n_gate_cols == MOE_ALL_COLS ? all : p->gate_cols;
    t.n_ecols = p->n_expert_cols == MOE_ALL_COLS ? d->n_cols : p->n_expert_cols;
    t.n_gcols = p->n_gate_cols == MOE_ALL_COLS ? d->n_cols : p->n_gate_cols;
    *out = moe_model_alloc(&t, ec, gc);
    free(all);
    return *out ? MOE_STATUS_OK : MOE_STATUS_NO_MEMORY;
}

static uint64_t restart_seed(uint64_t seed, int r) {
    uint64_t z = seed + 0x9e3779b97f4a7c15ULL * (uint64_t)(r + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

moe_status moe_train(const moe_dataset *data, const moe_train_params *p, moe_model **out,
                     moe_error *err) {
    if (!out) return INVALID("no output pointer");
    *out = NULL;
    if (!data) return INVALID("no data");
    moe_status st = moe_train_params_check(p, data, err);
    if (st != MOE_STATUS_OK) return st;
    moe_source src = moe_source_from_dataset(data);
    return moe_train_source(&src, p, out, err);
}

static moe_status train_source_run(const moe_source *src, const moe_train_params *p,
                                   moe_model **out, moe_error *err) {
    if (!out) return INVALID("no output pointer");
    *out = NULL;
    if (!src) return INVALID("no data");
    moe_status st = moe_train_params_check(p, NULL, err);
    if (st == MOE_STATUS_OK) st = check_source(p, src, err);
    if (st != MOE_STATUS_OK) return st;
    moe_model *m = NULL;
    moe_fit *f = NULL;
    run_state best, cur;
    memset(&best, 0, sizeof best);
    memset(&cur, 0, sizeof cur);

    st = make_template(src, p, &m);
    if (st != MOE_STATUS_OK) goto fail;
    st = moe_fit_create(&f, m, src, p);
    if (st != MOE_STATUS_OK) goto fail;
    st = moe_fit_prepare(f, err);
    if (st != MOE_STATUS_OK) goto fail;
    double sw = f->sum_w;
    size_t used = (size_t)f->n_used;
    size_t df = moe_model_df(m);
    if (used <= df) {
        st = moe_err(err, MOE_STATUS_DATA,
                     "%zu rows (of positive weight) but the model has %zu free parameters: "
                     "use fewer experts or inputs, or more data",
                     used, df);
        goto fail;
    }
    /* The data's events (constant columns, absent classes) open the event
     * list of every run: each run starts from them and only appends. */
    size_t n_pre = f->n_events;

    double shift = 0.0;
    for (size_t q = 0; q < m->n_out; q++) shift -= sw * log(m->y_scale[q]);

    int best_r = -1;
    int first_until = p->short_iter > 0 && p->short_iter < p->max_iter ? p->short_iter : p->max_iter;
    for (int r = 0; r < p->n_restarts; r++) {
        moe_init how = (r % 2 == 0) ? p->init : (p->init == MOE_INIT_KMEANS ? MOE_INIT_RANDOM : MOE_INIT_KMEANS);
        f->n_events = n_pre;
        run_state_free(&cur);
        st = initialise(f, how, restart_seed(p->seed, r), err);
        if (st == MOE_STATUS_OK)
            st = run_em(f, &cur, first_until, p->tol, shift, p, r, first_until < p->max_iter, 0, err);
        if (st != MOE_STATUS_OK) goto fail;
        double l = cur.trace[cur.n_trace - 1];
        if (best_r < 0 || l > best.trace[best.n_trace - 1]) {
            run_state tmp = best;
            best = cur;
            cur = tmp;
            best_r = r;
        }
    }
    if (first_until < p->max_iter && !best.converged && !best.stopped) {
        /* Continue the best short run to convergence. */
        st = restore(f, &best);
        if (st == MOE_STATUS_OK)
            st = run_em(f, &best, p->max_iter, p->tol, shift, p, best_r, 0, 1, err);
        if (st != MOE_STATUS_OK) goto fail;
    }

    /* The winner becomes the model. */
    moe_model *res = best.m;
    best.m = NULL;
    moe_fit_report *rep = &res->report;
    memset(rep, 0, sizeof *rep);
    rep->loglik = best.true_llo;
    rep->df = df;
    rep->entropy = best.entropy;
    rep->aic = -2.0 * rep->loglik + 2.0 * (double)df;
    rep->bic = -2.0 * rep->loglik + (double)df * log(sw);
    rep->icl = rep->bic + 2.0 * rep->entropy;
    rep->n_rows = used;
    rep->sum_weights = sw;
    rep->iterations = best.iter;
    rep->converged = best.converged;
    rep->n_restarts = p->n_restarts;
    rep->best_restart = best_r;
    rep->n_events = best.n_events;
    free(res->events);
    res->events = best.events;
    best.events = NULL;
    free(res->trace);
    res->trace = best.trace;
    res->n_trace = best.n_trace;
    best.trace = NULL;
    *out = res;
    st = MOE_STATUS_OK;
fail:
    run_state_free(&best);
    run_state_free(&cur);
    moe_fit_free(f);
    moe_model_free(m);
    return st;
}

moe_status moe_train_source(const moe_source *src, const moe_train_params *p, moe_model **out,
                            moe_error *err) {
    moe_blas_saved bs = moe_blas_serial_begin();
    moe_status st = train_source_run(src, p, out, err);
    moe_blas_serial_end(bs);
    return st;
}

moe_status moe_select(const moe_dataset *data, const moe_train_params *params,
                      const moe_tree_shape *shapes, size_t n_shapes, moe_criterion criterion,
                      moe_model **out, double *scores, moe_error *err) {
    if (!out || !params || !shapes || n_shapes == 0) return INVALID("select: nothing to fit");
    if (criterion < MOE_CRITERION_BIC || criterion > MOE_CRITERION_ICL)
        return INVALID("select: unknown criterion %d", (int)criterion);
    *out = NULL;
    moe_model *best = NULL;
    double best_score = INFINITY;
    moe_status last = MOE_STATUS_OK;
    for (size_t s = 0; s < n_shapes; s++) {
        moe_train_params p = *params;
        p.tree = shapes[s];
        moe_model *m = NULL;
        moe_status st = moe_train(data, &p, &m, err);
        if (scores) scores[s] = NAN;
        if (st != MOE_STATUS_OK) {
            if (st == MOE_STATUS_NO_MEMORY || st == MOE_STATUS_CANCELLED) {
                moe_model_free(best);
                return st;
            }
            char buf[64];
            moe_tree_shape_format(&shapes[s], buf, sizeof buf);
            moe_log(MOE_LOG_LEVEL_WARN, "select: shape %s failed: %s", buf,
                    err ? err->message : moe_status_str(st));
            last = st;
            continue;
        }
        double v = criterion == MOE_CRITERION_BIC   ? m->report.bic
                   : criterion == MOE_CRITERION_AIC ? m->report.aic
                                                    : m->report.icl;
        if (scores) scores[s] = v;
        if (v < best_score) {
            moe_model_free(best);
            best = m;
            best_score = v;
        } else {
            moe_model_free(m);
        }
    }
    if (!best) return last != MOE_STATUS_OK ? last : MOE_STATUS_DATA;
    *out = best;
    return MOE_STATUS_OK;
}
