/*
 * grad.c -- training by minibatch gradient: the mixture objective of any
 * tree with linear or MLP nodes and dense or top-k gates, its exact
 * gradient, Adam, the learning-rate schedule, early stopping, restarts.
 * The objective and the schedule are documented in moe.h (section 4b).
 *
 * Gradients (Jordan & Jacobs 1994, eq. 19-21, in the notation of moe.h):
 * with r_k = dL/d(log prior of leaf k) and R(node) the sum of r over the
 * leaves below a node, the logit H_gc of child c of gate g gets
 *   dL/dH_gc = R(c) - pi_c|g R(g)     (c kept by the gate; 0 otherwise),
 * where r_k = -w h_k (h the posterior) for the competitive objective and
 * r_k = w pi_k o_k . (o - t) for the cooperative one. Experts get
 * -w h_k dlog p_k / d(output) (competitive) or w pi_k (o - t) (cooperative).
 * Noisy top-k: H = v + e softplus(u), so dv = dH and du = dH e sigmoid(u).
 * A Gaussian expert's variance v = floor + exp(s) (s fixed per expert, or
 * a = the log-variance head's output at the row) gets
 *   dL/ds = -w h_k (e^2 / (2 v^2) - 1 / (2 v)) exp(s),  e = t - mu,
 * and 0 where a is capped at MOE_LOG_VAR_MAX.
 *
 * Determinism: a minibatch is cut into blocks of GB_ROWS rows; each block
 * has its own workspace and gradient slab, and the slabs are summed in
 * block order, so the threads change nothing. Noise draws come from a
 * generator seeded by (seed, restart, epoch, row).
 */
#include "moe_impl.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define GB_ROWS 32   /* rows per gradient block */
#define LOG_2PI 1.8378770664093454836
#define COOP_VAR_ITERS 20
#define M_PI_VALUE 3.14159265358979323846

moe_grad_params moe_grad_params_default(void) {
    moe_grad_params g;
    memset(&g, 0, sizeof g);
    g.expert.activation = MOE_ACTIVATION_TANH;
    g.gate.activation = MOE_ACTIVATION_TANH;
    g.top_k = 0;
    g.noisy = 1;
    g.objective = MOE_OBJECTIVE_COMPETITIVE;
    g.balance = 0.0;
    g.balance_kind = MOE_BALANCE_SWITCH;
    g.z_loss = 0.0;
    g.epochs = 300;
    g.batch = 32;
    g.lr = 0.01;
    g.lr_min = 0.01;
    g.warmup = 0.02;
    g.beta1 = 0.9;
    g.beta2 = 0.999;
    g.adam_eps = 1e-8;
    g.weight_decay = 0.0;
    g.clip = 5.0;
    g.valid = 0.2;
    g.patience = 30;
    g.init = NULL;
    return g;
}

#define INVALID(...) moe_err(err, MOE_STATUS_INVALID_ARGUMENT, __VA_ARGS__)

static moe_status check_mlp(const char *what, const moe_mlp *a, moe_error *err) {
    if (a->n_hidden > MOE_MAX_HIDDEN)
        return INVALID("%s: %zu hidden layers (at most %d)", what, a->n_hidden, MOE_MAX_HIDDEN);
    for (size_t l = 0; l < a->n_hidden; l++)
        if (a->hidden[l] < 1 || a->hidden[l] > 65536)
            return INVALID("%s: hidden layer %zu has %zu units (1..65536)", what, l + 1,
                           a->hidden[l]);
    if (a->activation != MOE_ACTIVATION_TANH && a->activation != MOE_ACTIVATION_RELU)
        return INVALID("%s: unknown activation %d", what, (int)a->activation);
    return MOE_STATUS_OK;
}

moe_status moe_grad_params_check(const moe_grad_params *g, const moe_train_params *p,
                                 const moe_dataset *d, moe_error *err) {
    if (!g) return INVALID("no gradient parameters");
    moe_status st = moe_train_params_check(p, d, err);
    if (st != MOE_STATUS_OK) return st;
    if ((st = check_mlp("expert network", &g->expert, err)) != MOE_STATUS_OK) return st;
    if ((st = check_mlp("gate network", &g->gate, err)) != MOE_STATUS_OK) return st;
    if (g->top_k > MOE_MAX_BRANCHING)
        return INVALID("top_k: %zu is out of range (0..%d)", g->top_k, MOE_MAX_BRANCHING);
    if (g->objective != MOE_OBJECTIVE_COMPETITIVE && g->objective != MOE_OBJECTIVE_COOPERATIVE)
        return INVALID("objective: unknown value %d", (int)g->objective);
    if (g->balance_kind != MOE_BALANCE_SWITCH && g->balance_kind != MOE_BALANCE_CV2)
        return INVALID("balance_kind: unknown value %d", (int)g->balance_kind);
    if (!(g->balance >= 0.0) || !isfinite(g->balance))
        return INVALID("balance: %g must be finite and >= 0", g->balance);
    if (!(g->z_loss >= 0.0) || !isfinite(g->z_loss))
        return INVALID("z_loss: %g must be finite and >= 0", g->z_loss);
    if (g->epochs < 1 || g->epochs > 10000000)
        return INVALID("epochs: %d is out of range (1..1e7)", g->epochs);
    if (g->batch < 1 || g->batch > 1000000)
        return INVALID("batch: %zu is out of range (1..1e6)", g->batch);
    if (!(g->lr > 0.0) || !(g->lr <= 10.0)) return INVALID("lr: %g must be in (0, 10]", g->lr);
    if (!(g->lr_min >= 0.0) || !(g->lr_min <= 1.0))
        return INVALID("lr_min: %g must be in [0, 1]", g->lr_min);
    if (!(g->warmup >= 0.0) || !(g->warmup < 1.0))
        return INVALID("warmup: %g must be in [0, 1)", g->warmup);
    if (!(g->beta1 >= 0.0 && g->beta1 < 1.0) || !(g->beta2 >= 0.0 && g->beta2 < 1.0))
        return INVALID("beta1, beta2: %g, %g must be in [0, 1)", g->beta1, g->beta2);
    if (!(g->adam_eps > 0.0) || !isfinite(g->adam_eps))
        return INVALID("adam_eps: %g must be > 0", g->adam_eps);
    if (!(g->weight_decay >= 0.0) || !(g->weight_decay < 1.0))
        return INVALID("weight_decay: %g must be in [0, 1)", g->weight_decay);
    if (!(g->clip >= 0.0) || !isfinite(g->clip)) return INVALID("clip: %g must be >= 0", g->clip);
    if (!(g->valid >= 0.0) || !(g->valid <= 0.9))
        return INVALID("valid: %g must be in [0, 0.9]", g->valid);
    if (g->patience < 0) return INVALID("patience: %d must be >= 0", g->patience);
    if (p->task == MOE_TASK_REGRESSION && p->variance == MOE_VARIANCE_FULL)
        return INVALID("gradient training fits iso or diag variances, not full");
    if (g->log_var != 0 && g->log_var != 1)
        return INVALID("log_var: %d must be 0 or 1", g->log_var);
    if (g->log_var) {
        if (p->task != MOE_TASK_REGRESSION)
            return INVALID("log_var: log-variance outputs are for regression, not classification");
        if (g->expert.n_hidden == 0)
            return INVALID("log_var: log-variance outputs need MLP experts (expert.n_hidden >= 1)");
        if (g->objective != MOE_OBJECTIVE_COMPETITIVE)
            return INVALID("log_var: the cooperative objective does not fit variances; use the "
                           "competitive one");
        if (p->variance == MOE_VARIANCE_ISO && d && d->n_outputs > 1)
            return INVALID("log_var: the log-variance outputs give a diagonal covariance; use "
                           "variance diag with %zu outputs", d->n_outputs);
    }
    if (g->init) {
        const moe_model *im = g->init;
        char a[64], b[64];
        moe_tree_shape_format(&im->tree, a, sizeof a);
        moe_tree_shape_format(&p->tree, b, sizeof b);
        if (im->task != p->task) return INVALID("init model: a different task");
        if (strcmp(a, b) != 0) return INVALID("init model: tree %s, but the parameters say %s", a, b);
        if (d && im->n_cols != d->n_cols)
            return INVALID("init model: %zu input columns, the data has %zu", im->n_cols, d->n_cols);
        if (d && p->task == MOE_TASK_REGRESSION && im->n_out != d->n_outputs)
            return INVALID("init model: %zu outputs, the data has %zu", im->n_out, d->n_outputs);
        if (d && p->task == MOE_TASK_CLASSIFICATION && im->n_cls != d->n_classes)
            return INVALID("init model: %zu classes, the data has %zu", im->n_cls, d->n_classes);
        if (im->variance == MOE_VARIANCE_FULL && p->task == MOE_TASK_REGRESSION && im->n_out > 1)
            return INVALID("init model: full covariances cannot be trained by gradient");
        if (im->log_var && !g->log_var)
            return INVALID("init model: it has log-variance outputs; train with log_var too");
    }
    return MOE_STATUS_OK;
}

/* ---- small numerics ------------------------------------------------------------- */

static double softplus(double x) { return x > 0.0 ? x + log1p(exp(-x)) : log1p(exp(x)); }
static double sigmoid(double x) {
    if (x >= 0.0) return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}
static double norm_pdf(double z) { return 0.3989422804014327 * exp(-0.5 * z * z); }

static uint64_t mix64(uint64_t a, uint64_t b) {
    uint64_t z = a + 0x9e3779b97f4a7c15ULL * (b + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* CV^2 = var / (mean^2 + 1e-10) of v[0..n-1] (Shazeer et al. 2017) and its
 * gradient into d. */
static double cv2(const double *v, size_t n, double *d) {
    double mu = 0.0, var = 0.0;
    for (size_t c = 0; c < n; c++) mu += v[c];
    mu /= (double)n;
    for (size_t c = 0; c < n; c++) var += (v[c] - mu) * (v[c] - mu);
    var /= (double)n;
    double den = mu * mu + 1e-10;
    for (size_t c = 0; c < n; c++)
        d[c] = 2.0 * (v[c] - mu) / ((double)n * den) - var * 2.0 * mu / ((double)n * den * den);
    return var / den;
}

/* ---- the trainer's state ---------------------------------------------------------- */

/* Parameter segments, in the order of the flat gradient: gate hidden
 * layers, gate heads, noise heads, expert hidden layers, expert heads, the
 * fixed variances, the log-variance heads. */
enum { SEG_GW, SEG_GC, SEG_GN, SEG_EW, SEG_EC, SEG_EV, SEG_EL, SEG_COUNT };

/* Per-gate batch sums behind the balance and z terms (a block's share). */
typedef struct aux_stats {
    double *bg;    /* [G]  weight of the rows reaching the gate */
    double *psum;  /* [GR] sum w p (dense softmax of the clean logits) */
    double *fsum;  /* [GR] sum w [selected] / n_selected (top-1 when dense) */
    double *isum;  /* [GR] sum w gate value */
    double *lsum;  /* [GR] sum w P(selected under noise) */
    double *zsum;  /* [G]  sum w logsumexp^2 */
} aux_stats;

typedef struct gblk {
    size_t nb;
    const size_t *rows;
    double *ze, *zg, *t, *w;
    int32_t *lab;
    double *gacts;          /* [G][GB x gnet.n_acts] */
    const double **gfeat;   /* [G] */
    double *cl, *nl, *eps, *H, *pg, *pd, *lse; /* [GB x GR] (lse [GB x G]) */
    unsigned char *sel, *reach;                /* [GB x GR], [GB x G] */
    double *lp;             /* [GB x NN] */
    size_t *act, *n_act;    /* [GB x MA], [GB] */
    size_t *start, *prow, *pidx; /* [K + 1], [GB x MA] row of each pair, pair of (row, j) */
    double *X, *eacts, *eo; /* pairs x ed, pairs x enet.n_acts, pairs x R */
    const double **efeat;   /* [K] */
    double *ld, *h;         /* [GB x MA] log-density and posterior (or prior) of (row, j) */
    double *yhat;           /* [GB x R] blended output (cooperative) */
    double *dout;           /* [pairs x R] */
    double *lva, *ev, *dlv; /* [pairs x P] log_var: head outputs, variances, dL/d(output) */
    double *dcl, *dnl, *rn; /* [GB x GR], [GB x GR], [GB x NN] */
    double *dfeat, *scr;    /* [GB x max head], [GB x 2 max_width] */
    double *grad;           /* [n_params] */
    aux_stats aux;
    double *auxbuf;
    double nll, sq, wsum, ll; /* this block's sums (standardised scale) */
    double *vstat;          /* [2 K P] cooperative variance refit sums */
} gblk;

typedef struct moe_grad_state {
    moe_model *m;
    const moe_dataset *d;
    const moe_grad_params *g;
    const moe_train_params *p;
    moe_nodes nd;
    size_t K, G, GR, NN, MA, R, P;
    int noisy;               /* noise during training (top-k with noise) */
    int need_pd;             /* dense softmax needed (balance or z-loss) */
    double *noise;           /* [grows x gh] noise heads */
    double *svar;            /* [K x P] variance parameters */
    double *segp[SEG_COUNT];
    size_t segn[SEG_COUNT], segoff[SEG_COUNT];
    size_t np;               /* parameters */
    gblk *blk;               /* [n_blk] */
    size_t n_blk;
    int n_threads;
    double aux_loss;         /* of the last batch */
    double *coef_sw, *coef_imp, *coef_load, *coef_z; /* [GR] aux coefficients ([G] for z) */
    double *auxtmp;          /* [5 x MOE_MAX_BRANCHING] */
} moe_grad_state;

static void blk_free(gblk *b) {
    free(b->ze); free(b->zg); free(b->t); free(b->w); free(b->lab);
    free(b->gacts); free(b->gfeat); free(b->cl); free(b->nl); free(b->eps); free(b->H);
    free(b->pg); free(b->pd); free(b->lse); free(b->sel); free(b->reach); free(b->lp);
    free(b->act); free(b->n_act); free(b->start); free(b->prow); free(b->pidx);
    free(b->X); free(b->eacts); free(b->eo); free(b->efeat); free(b->ld); free(b->h);
    free(b->yhat); free(b->dout); free(b->dcl); free(b->dnl); free(b->rn); free(b->dfeat);
    free(b->scr); free(b->grad); free(b->auxbuf); free(b->vstat);
    free(b->lva); free(b->ev); free(b->dlv);
    memset(b, 0, sizeof *b);
}

static int blk_alloc(gblk *b, const moe_grad_state *s) {
    const moe_model *m = s->m;
    size_t B = GB_ROWS, NP = B * s->MA, G = s->G, GR = s->GR;
    size_t hmax = m->eh > m->gh ? m->eh : m->gh;
    size_t wmax = m->enet.max_width > m->gnet.max_width ? m->enet.max_width : m->gnet.max_width;
    size_t NL = m->log_var ? NP * s->P : 0;
    memset(b, 0, sizeof *b);
#define A(p, n) ((p) = calloc((n) + 1, sizeof *(p)))
    int ok = A(b->ze, B * m->ed) && A(b->zg, B * m->gd) && A(b->t, B * s->P) && A(b->w, B) &&
             A(b->lab, B) && A(b->gacts, G * B * m->gnet.n_acts) && A(b->gfeat, G) &&
             A(b->cl, B * GR) && A(b->nl, B * GR) && A(b->eps, B * GR) && A(b->H, B * GR) &&
             A(b->pg, B * GR) && A(b->pd, B * GR) && A(b->lse, B * G) && A(b->sel, B * GR) &&
             A(b->reach, B * G) && A(b->lp, B * s->NN) && A(b->act, NP) && A(b->n_act, B) &&
             A(b->start, s->K + 1) && A(b->prow, NP) && A(b->pidx, NP) && A(b->X, NP * m->ed) &&
             A(b->eacts, NP * m->enet.n_acts) && A(b->eo, NP * s->R) && A(b->efeat, s->K) &&
             A(b->ld, NP) && A(b->h, NP) && A(b->yhat, B * s->R) && A(b->dout, NP * s->R) &&
             A(b->dcl, B * GR) && A(b->dnl, B * GR) && A(b->rn, B * s->NN) &&
             A(b->dfeat, B * hmax) && A(b->scr, B * 2 * wmax) && A(b->grad, s->np) &&
             A(b->auxbuf, 2 * G + 4 * GR) && A(b->vstat, 2 * s->K * s->P) && A(b->lva, NL) &&
             A(b->ev, NL) && A(b->dlv, NL);
#undef A
    if (!ok) return -1;
    b->aux.bg = b->auxbuf;
    b->aux.zsum = b->auxbuf + G;
    b->aux.psum = b->auxbuf + 2 * G;
    b->aux.fsum = b->aux.psum + GR;
    b->aux.isum = b->aux.fsum + GR;
    b->aux.lsum = b->aux.isum + GR;
    return 0;
}

/* cov, chol, logdet from the variance parameters: var = floor + exp(s).
 * With log-variance heads cov holds the floor alone (their variances are
 * floor + exp(a) per row). */
static void sync_variance(moe_grad_state *s) {
    moe_model *m = s->m;
    if (m->task != MOE_TASK_REGRESSION) return;
    size_t P = s->P;
    double floor_ = s->p->var_floor;
    for (size_t k = 0; k < s->K; k++) {
        double *c = m->cov + k * P * P;
        memset(c, 0, P * P * sizeof *c);
        for (size_t q = 0; q < P; q++) {
            double sv = s->svar[k * P + (m->variance == MOE_VARIANCE_ISO ? 0 : q)];
            c[q * P + q] = m->log_var ? floor_ : floor_ + exp(sv);
        }
    }
    moe_model_refresh_chol(m);
}

static void grad_state_del(moe_grad_state *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n_blk; i++) blk_free(&s->blk[i]);
    free(s->blk);
    moe_nodes_free(&s->nd);
    free(s->noise);
    free(s->svar);
    free(s->coef_sw);
    free(s->coef_imp);
    free(s->coef_load);
    free(s->coef_z);
    free(s->auxtmp);
    free(s);
}

static moe_status grad_state_new(moe_grad_state **out, moe_model *m, const moe_dataset *d,
                                const moe_grad_params *g, const moe_train_params *p) {
    moe_grad_state *s = calloc(1, sizeof *s);
    if (!s) return MOE_STATUS_NO_MEMORY;
    s->m = m;
    s->d = d;
    s->g = g;
    s->p = p;
    if (moe_nodes_init(&s->nd, m) != MOE_STATUS_OK) {
        free(s);
        return MOE_STATUS_NO_MEMORY;
    }
    s->K = m->n_leaves;
    s->G = m->n_gates;
    s->GR = s->nd.gate_rows;
    s->NN = s->nd.n_nodes;
    s->MA = moe_model_max_active(m);
    s->R = m->coef_rows;
    s->P = m->n_out;
    s->noisy = m->top_k > 0 && g->noisy;
    s->need_pd = g->balance > 0.0 || g->z_loss > 0.0;
    size_t grows = moe_tree_layout(&m->tree, m->gh, NULL, NULL);
    s->noise = calloc(grows * m->gh + 1, sizeof *s->noise);
    s->svar = calloc(s->K * s->P + 1, sizeof *s->svar);
    s->coef_sw = calloc(s->GR + 1, sizeof(double));
    s->coef_imp = calloc(s->GR + 1, sizeof(double));
    s->coef_load = calloc(s->GR + 1, sizeof(double));
    s->coef_z = calloc(s->G + 1, sizeof(double));
    s->auxtmp = calloc(5 * MOE_MAX_BRANCHING, sizeof(double));
    if (!s->auxtmp || !s->noise || !s->svar || !s->coef_sw || !s->coef_imp || !s->coef_load || !s->coef_z) {
        grad_state_del(s);
        return MOE_STATUS_NO_MEMORY;
    }
    s->segp[SEG_GW] = m->g_w;
    s->segn[SEG_GW] = s->G * m->gnet.n_w;
    s->segp[SEG_GC] = m->gate_coef;
    s->segn[SEG_GC] = grows * m->gh;
    s->segp[SEG_GN] = s->noise;
    s->segn[SEG_GN] = s->noisy ? grows * m->gh : 0;
    s->segp[SEG_EW] = m->e_w;
    s->segn[SEG_EW] = s->K * m->enet.n_w;
    s->segp[SEG_EC] = m->coef;
    s->segn[SEG_EC] = s->K * s->R * m->eh;
    s->segp[SEG_EV] = s->svar;
    s->segn[SEG_EV] = (m->task == MOE_TASK_REGRESSION &&
                       g->objective == MOE_OBJECTIVE_COMPETITIVE && !m->log_var)
                          ? s->K * s->P
                          : 0;
    s->segp[SEG_EL] = m->lv_coef;
    s->segn[SEG_EL] = m->log_var ? s->K * s->P * m->eh : 0;
    for (int q = 0; q < SEG_COUNT; q++) {
        s->segoff[q] = s->np;
        s->np += s->segn[q];
    }
    size_t nb = (g->batch + GB_ROWS - 1) / GB_ROWS;
    s->blk = calloc(nb, sizeof *s->blk);
    if (!s->blk) {
        grad_state_del(s);
        return MOE_STATUS_NO_MEMORY;
    }
    for (size_t i = 0; i < nb; i++) {
        s->n_blk = i + 1;
        if (blk_alloc(&s->blk[i], s) != 0) {
            grad_state_del(s);
            return MOE_STATUS_NO_MEMORY;
        }
    }
    s->n_threads = p->n_threads > 0 ? p->n_threads : omp_get_max_threads();
    *out = s;
    return MOE_STATUS_OK;
}

/* ---- forward over one block ------------------------------------------------------- */

/* train: noisy selection (when the model has noise); nseed: the noise seed of
 * this step. Fills the block's loss sums and, when aux, its balance sums. */
static void blk_forward(moe_grad_state *s, gblk *b, const size_t *rows, size_t nb, int train,
                        uint64_t nseed, int aux) {
    const moe_model *m = s->m;
    const moe_dataset *d = s->d;
    size_t ed = m->ed, gd = m->gd, GR = s->GR, NN = s->NN, G = s->G, K = s->K, MA = s->MA;
    size_t R = s->R, P = s->P;
    int noisy = train && s->noisy;
    b->nb = nb;
    b->rows = rows;
    /* 1. standardised designs and targets */
    for (size_t i = 0; i < nb; i++) {
        size_t r = rows[i];
        const double *x = d->x + r * d->ld_x;
        double *ze = b->ze + i * ed, *zg = b->zg + i * gd;
        ze[0] = zg[0] = 1.0;
        for (size_t j = 0; j < m->n_ecols; j++) {
            size_t c = m->ecols[j];
            ze[1 + j] = (x[c] - m->x_mean[c]) / m->x_scale[c];
        }
        for (size_t j = 0; j < m->n_gcols; j++) {
            size_t c = m->gcols[j];
            zg[1 + j] = (x[c] - m->x_mean[c]) / m->x_scale[c];
        }
        for (size_t q = 0; q < P; q++)
            b->t[i * P + q] = (d->y[r * d->ld_y + q] - m->y_mean[q]) / m->y_scale[q];
        if (m->task == MOE_TASK_CLASSIFICATION) b->lab[i] = d->labels[r];
        b->w[i] = d->weights ? d->weights[r] : 1.0;
    }
    /* 2. gate logits (clean, and noise heads) */
    for (size_t g = 0; g < G; g++) {
        b->gfeat[g] = moe_net_forward(&m->gnet, m->g_w + g * m->gnet.n_w, nb, b->zg,
                                      b->gacts + g * GB_ROWS * m->gnet.n_acts);
        moe_head_forward(nb, m->gate_nch[g], m->gh, b->gfeat[g], m->gate_coef + m->gate_off[g],
                         b->cl + s->nd.grow[g], GR);
        if (noisy)
            moe_head_forward(nb, m->gate_nch[g], m->gh, b->gfeat[g], s->noise + m->gate_off[g],
                             b->nl + s->nd.grow[g], GR);
    }
    /* 3. selection, gate values and log priors down the tree */
    size_t idx[MOE_MAX_BRANCHING];
    for (size_t i = 0; i < nb; i++) {
        double *cl = b->cl + i * GR, *nl = b->nl + i * GR, *H = b->H + i * GR;
        double *eps = b->eps + i * GR, *pg = b->pg + i * GR, *pd = b->pd + i * GR;
        unsigned char *sel = b->sel + i * GR, *reach = b->reach + i * G;
        double *lp = b->lp + i * NN;
        if (noisy) {
            moe_rng rng;
            moe_rng_seed(&rng, mix64(nseed, rows[i]));
            for (size_t c = 0; c < GR; c++) {
                eps[c] = moe_rng_normal(&rng);
                H[c] = cl[c] + eps[c] * softplus(nl[c]);
            }
        } else {
            memcpy(H, cl, GR * sizeof *H);
        }
        lp[0] = 0.0;
        for (size_t g = 0; g < G; g++) {
            size_t o = s->nd.grow[g], nc = m->gate_nch[g], ch = s->nd.child0[g];
            if (s->need_pd) { /* dense softmax of the clean logits */
                double mx = cl[o];
                for (size_t c = 1; c < nc; c++) mx = cl[o + c] > mx ? cl[o + c] : mx;
                double sm = 0.0;
                for (size_t c = 0; c < nc; c++) sm += (pd[o + c] = exp(cl[o + c] - mx));
                for (size_t c = 0; c < nc; c++) pd[o + c] /= sm;
                b->lse[i * G + g] = mx + log(sm);
            }
            reach[g] = lp[g] != -INFINITY;
            if (!reach[g]) {
                for (size_t c = 0; c < nc; c++) {
                    sel[o + c] = 0;
                    pg[o + c] = 0.0;
                    lp[ch + c] = -INFINITY;
                }
                continue;
            }
            size_t ns = m->top_k ? moe_topk_select(H + o, nc, m->top_k, idx)
                                 : moe_topk_select(H + o, nc, nc, idx);
            double mx = H[o + idx[0]], sm = 0.0;
            for (size_t j = 1; j < ns; j++) mx = H[o + idx[j]] > mx ? H[o + idx[j]] : mx;
            for (size_t c = 0; c < nc; c++) {
                sel[o + c] = 0;
                pg[o + c] = 0.0;
                lp[ch + c] = -INFINITY;
            }
            for (size_t j = 0; j < ns; j++) sm += (pg[o + idx[j]] = exp(H[o + idx[j]] - mx));
            double ls = log(sm);
            for (size_t j = 0; j < ns; j++) {
                size_t c = idx[j];
                sel[o + c] = 1;
                pg[o + c] /= sm;
                lp[ch + c] = lp[g] + (H[o + c] - mx - ls);
            }
        }
        size_t n = 0;
        for (size_t k = 0; k < K; k++)
            if (lp[G + k] != -INFINITY) b->act[i * MA + n++] = k;
        b->n_act[i] = n;
    }
    /* 4. (row, expert) pairs grouped by expert */
    size_t *start = b->start;
    memset(start, 0, (K + 1) * sizeof *start);
    for (size_t i = 0; i < nb; i++)
        for (size_t j = 0; j < b->n_act[i]; j++) start[b->act[i * MA + j] + 1]++;
    for (size_t k = 0; k < K; k++) start[k + 1] += start[k];
    for (size_t i = 0; i < nb; i++)
        for (size_t j = 0; j < b->n_act[i]; j++) {
            size_t q = start[b->act[i * MA + j]]++;
            b->prow[q] = i;
            b->pidx[i * MA + j] = q;
        }
    for (size_t k = K; k > 0; k--) start[k] = start[k - 1];
    start[0] = 0;
    /* 5. experts on their rows */
    for (size_t k = 0; k < K; k++) {
        size_t n = start[k + 1] - start[k];
        if (n == 0) continue;
        double *X = b->X + start[k] * ed;
        for (size_t j = 0; j < n; j++)
            memcpy(X + j * ed, b->ze + b->prow[start[k] + j] * ed, ed * sizeof *X);
        b->efeat[k] = moe_net_forward(&m->enet, m->e_w + k * m->enet.n_w, n, X,
                                      b->eacts + start[k] * m->enet.n_acts);
        moe_head_forward(n, R, m->eh, b->efeat[k], m->coef + k * R * m->eh,
                         b->eo + start[k] * R, R);
        if (m->task == MOE_TASK_CLASSIFICATION)
            for (size_t j = 0; j < n; j++) moe_log_softmax(b->eo + (start[k] + j) * R, R);
        if (m->log_var) { /* the log-variance head and the pairs' variances */
            moe_head_forward(n, P, m->eh, b->efeat[k], m->lv_coef + k * P * m->eh,
                             b->lva + start[k] * P, P);
            moe_lv_variance(m, k, n, b->lva + start[k] * P, P, b->ev + start[k] * P, P);
        }
    }
    /* 6. densities, posteriors, losses */
    b->nll = b->sq = b->wsum = b->ll = 0.0;
    for (size_t i = 0; i < nb; i++) {
        double w = b->w[i], *lp = b->lp + i * NN + G;
        size_t na = b->n_act[i];
        double *ldi = b->ld + i * MA, *hi = b->h + i * MA;
        double mx = -INFINITY;
        for (size_t j = 0; j < na; j++) {
            size_t k = b->act[i * MA + j];
            const double *o = b->eo + b->pidx[i * MA + j] * R;
            double l;
            if (m->log_var) {
                l = moe_gauss_diag_logdens(P, b->t + i * P, o, b->ev + b->pidx[i * MA + j] * P);
            } else if (m->task == MOE_TASK_REGRESSION) {
                double qf = 0.0;
                for (size_t q = 0; q < P; q++) {
                    double e = b->t[i * P + q] - o[q];
                    qf += e * e / m->cov[(k * P + q) * P + q];
                }
                l = -0.5 * ((double)P * LOG_2PI + m->logdet[k] + qf);
            } else {
                l = o[b->lab[i]];
            }
            ldi[j] = lp[k] + l;
            mx = ldi[j] > mx ? ldi[j] : mx;
        }
        double sm = 0.0;
        for (size_t j = 0; j < na; j++) sm += exp(ldi[j] - mx);
        double ll = mx + log(sm);
        for (size_t j = 0; j < na; j++) hi[j] = exp(ldi[j] - ll);
        b->ll += w * ll;
        b->nll -= w * ll;
        b->wsum += w;
        if (s->g->objective == MOE_OBJECTIVE_COOPERATIVE) {
            double *yh = b->yhat + i * R, e2 = 0.0;
            memset(yh, 0, R * sizeof *yh);
            for (size_t j = 0; j < na; j++) {
                double pk = exp(lp[b->act[i * MA + j]]);
                const double *o = b->eo + b->pidx[i * MA + j] * R;
                for (size_t q = 0; q < R; q++)
                    yh[q] += pk * (m->task == MOE_TASK_REGRESSION ? o[q] : exp(o[q]));
            }
            for (size_t q = 0; q < R; q++) {
                double tq = m->task == MOE_TASK_REGRESSION ? b->t[i * P + q]
                                                           : (q == (size_t)b->lab[i] ? 1.0 : 0.0);
                e2 += (yh[q] - tq) * (yh[q] - tq);
            }
            b->sq += w * 0.5 * e2;
        }
    }
    if (!aux) return;
    /* 7. this block's share of the balance and z sums */
    memset(b->auxbuf, 0, (2 * G + 4 * GR) * sizeof(double));
    for (size_t i = 0; i < nb; i++) {
        double w = b->w[i];
        const double *H = b->H + i * GR, *cl = b->cl + i * GR, *nl = b->nl + i * GR;
        for (size_t g = 0; g < G; g++) {
            if (!b->reach[i * G + g]) continue;
            size_t o = s->nd.grow[g], nc = m->gate_nch[g], ns = 0, top = 0;
            const unsigned char *sel = b->sel + i * GR + o;
            for (size_t c = 0; c < nc; c++) {
                ns += sel[c];
                if (H[o + c] > H[o + top]) top = c;
            }
            b->aux.bg[g] += w;
            double l = b->lse[i * G + g];
            b->aux.zsum[g] += w * l * l;
            for (size_t c = 0; c < nc; c++) {
                b->aux.psum[o + c] += w * b->pd[i * GR + o + c];
                b->aux.isum[o + c] += w * b->pg[i * GR + o + c];
                if (m->top_k == 0) b->aux.fsum[o + c] += w * (c == top);
                else b->aux.fsum[o + c] += w * sel[c] / (double)ns;
            }
            if (noisy && ns < nc) {
                /* Shazeer et al. 2017, eq. 8-9: P(c kept) under a new draw of
                 * its own noise, against the k-th largest of the others. */
                size_t jin = nc, jout = nc; /* best dropped, weakest kept */
                for (size_t c = 0; c < nc; c++) {
                    if (!sel[c] && (jin == nc || H[o + c] > H[o + jin])) jin = c;
                    if (sel[c] && (jout == nc || H[o + c] <= H[o + jout])) jout = c;
                }
                for (size_t c = 0; c < nc; c++) {
                    double T = H[o + (sel[c] ? jin : jout)];
                    double z = (cl[o + c] - T) / softplus(nl[o + c]);
                    b->aux.lsum[o + c] += w * moe_norm_cdf(z);
                }
            }
        }
    }
}

/* ---- backward over one block ------------------------------------------------------ */

static void blk_backward(moe_grad_state *s, gblk *b, double scale_aux) {
    const moe_model *m = s->m;
    size_t nb = b->nb, GR = s->GR, NN = s->NN, G = s->G, K = s->K, MA = s->MA, R = s->R;
    size_t P = s->P;
    int coop = s->g->objective == MOE_OBJECTIVE_COOPERATIVE, noisy = s->noisy;
    double *grad = b->grad;
    double *gw = grad + s->segoff[SEG_GW], *gc = grad + s->segoff[SEG_GC];
    double *gn = grad + s->segoff[SEG_GN], *ew = grad + s->segoff[SEG_EW];
    double *ec = grad + s->segoff[SEG_EC], *ev = grad + s->segoff[SEG_EV];
    double *el = grad + s->segoff[SEG_EL];
    memset(b->rn, 0, nb * NN * sizeof(double));
    memset(b->dcl, 0, nb * GR * sizeof(double));
    if (noisy) memset(b->dnl, 0, nb * GR * sizeof(double));
    /* experts' outputs, and r = dL/d(log prior) of the active leaves */
    for (size_t i = 0; i < nb; i++) {
        double w = b->w[i];
        const double *lp = b->lp + i * NN + G;
        for (size_t j = 0; j < b->n_act[i]; j++) {
            size_t k = b->act[i * MA + j], q = b->pidx[i * MA + j];
            const double *o = b->eo + q * R;
            double *dq = b->dout + q * R, r = 0.0;
            if (!coop) {
                double h = b->h[i * MA + j];
                r = -w * h;
                if (m->task == MOE_TASK_REGRESSION) {
                    for (size_t p = 0; p < P; p++) {
                        double v = m->log_var ? b->ev[q * P + p] : m->cov[(k * P + p) * P + p];
                        double e = b->t[i * P + p] - o[p];
                        dq[p] = -w * h * e / v;
                        if (m->log_var) {
                            double a = b->lva[q * P + p];
                            b->dlv[q * P + p] = a < MOE_LOG_VAR_MAX
                                                    ? w * h * (0.5 / v - 0.5 * e * e / (v * v)) * exp(a)
                                                    : 0.0;
                        } else if (s->segn[SEG_EV]) {
                            size_t sp = m->variance == MOE_VARIANCE_ISO ? 0 : p;
                            ev[k * P + sp] += w * h * (0.5 / v - 0.5 * e * e / (v * v)) *
                                              (v - s->p->var_floor);
                        }
                    }
                } else {
                    for (size_t c = 0; c < R; c++)
                        dq[c] = -w * h * ((c == (size_t)b->lab[i] ? 1.0 : 0.0) - exp(o[c]));
                }
            } else {
                double pk = exp(lp[k]);
                const double *yh = b->yhat + i * R;
                if (m->task == MOE_TASK_REGRESSION) {
                    for (size_t p = 0; p < P; p++) {
                        double e = yh[p] - b->t[i * P + p];
                        dq[p] = w * pk * e;
                        r += w * pk * o[p] * e;
                    }
                } else {
                    double dot = 0.0;
                    for (size_t c = 0; c < R; c++) {
                        double e = yh[c] - (c == (size_t)b->lab[i] ? 1.0 : 0.0);
                        double pc = exp(o[c]);
                        dq[c] = w * pk * e; /* dL/dp, turned into dL/dlogit below */
                        dot += pc * dq[c];
                        r += w * pk * pc * e;
                    }
                    for (size_t c = 0; c < R; c++) dq[c] = exp(o[c]) * (dq[c] - dot);
                }
            }
            b->rn[i * NN + G + k] = r;
        }
    }
    /* up the tree, then the gates' logits */
    for (size_t i = 0; i < nb; i++) {
        double *rn = b->rn + i * NN, w = b->w[i];
        for (size_t g = G; g-- > 0;) {
            double sm = 0.0;
            for (size_t c = 0; c < m->gate_nch[g]; c++) sm += rn[s->nd.child0[g] + c];
            rn[g] = sm;
        }
        const double *pg = b->pg + i * GR, *pd = b->pd + i * GR, *cl = b->cl + i * GR;
        const double *nl = b->nl + i * GR, *H = b->H + i * GR, *eps = b->eps + i * GR;
        double *dcl = b->dcl + i * GR, *dnl = b->dnl + i * GR;
        for (size_t g = 0; g < G; g++) {
            if (!b->reach[i * G + g]) continue;
            size_t o = s->nd.grow[g], nc = m->gate_nch[g], ch = s->nd.child0[g];
            const unsigned char *sel = b->sel + i * GR + o;
            double dH[MOE_MAX_BRANCHING];
            for (size_t c = 0; c < nc; c++) dH[c] = sel[c] ? rn[ch + c] - pg[o + c] * rn[g] : 0.0;
            if (s->g->balance > 0.0 && s->g->balance_kind == MOE_BALANCE_SWITCH) {
                double fp = 0.0;
                for (size_t c = 0; c < nc; c++) fp += s->coef_sw[o + c] * pd[o + c];
                for (size_t c = 0; c < nc; c++)
                    dcl[o + c] += scale_aux * w * pd[o + c] * (s->coef_sw[o + c] - fp);
            }
            if (s->g->balance > 0.0 && s->g->balance_kind == MOE_BALANCE_CV2) {
                double dp = 0.0;
                for (size_t c = 0; c < nc; c++) dp += s->coef_imp[o + c] * pg[o + c];
                for (size_t c = 0; c < nc; c++)
                    if (sel[c]) dH[c] += scale_aux * w * pg[o + c] * (s->coef_imp[o + c] - dp);
                size_t ns = 0;
                for (size_t c = 0; c < nc; c++) ns += sel[c];
                if (noisy && ns < nc) {
                    size_t jin = nc, jout = nc;
                    for (size_t c = 0; c < nc; c++) {
                        if (!sel[c] && (jin == nc || H[o + c] > H[o + jin])) jin = c;
                        if (sel[c] && (jout == nc || H[o + c] <= H[o + jout])) jout = c;
                    }
                    for (size_t c = 0; c < nc; c++) {
                        size_t js = sel[c] ? jin : jout;
                        double sp = softplus(nl[o + c]);
                        double z = (cl[o + c] - H[o + js]) / sp;
                        double a = scale_aux * w * s->coef_load[o + c] * norm_pdf(z) / sp;
                        dcl[o + c] += a;
                        dnl[o + c] += -a * z * sigmoid(nl[o + c]);
                        dH[js] -= a; /* through the threshold H_js */
                    }
                }
            }
            if (s->g->z_loss > 0.0) {
                double a = scale_aux * w * s->coef_z[g] * 2.0 * b->lse[i * G + g];
                for (size_t c = 0; c < nc; c++) dcl[o + c] += a * pd[o + c];
            }
            for (size_t c = 0; c < nc; c++) {
                dcl[o + c] += dH[c];
                if (noisy) dnl[o + c] += dH[c] * eps[o + c] * sigmoid(nl[o + c]);
            }
        }
    }
    /* gates: heads and hidden layers */
    for (size_t g = 0; g < G; g++) {
        size_t o = s->nd.grow[g], nc = m->gate_nch[g], gh = m->gh;
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)nc, (int)gh, (int)nb, 1.0,
                    b->dcl + o, (int)GR, b->gfeat[g], (int)gh, 1.0, gc + m->gate_off[g], (int)gh);
        if (noisy)
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)nc, (int)gh, (int)nb, 1.0,
                        b->dnl + o, (int)GR, b->gfeat[g], (int)gh, 1.0, gn + m->gate_off[g],
                        (int)gh);
        if (m->gnet.n_hidden > 0) {
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nb, (int)gh, (int)nc, 1.0,
                        b->dcl + o, (int)GR, m->gate_coef + m->gate_off[g], (int)gh, 0.0, b->dfeat,
                        (int)gh);
            if (noisy)
                cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nb, (int)gh, (int)nc,
                            1.0, b->dnl + o, (int)GR, s->noise + m->gate_off[g], (int)gh, 1.0,
                            b->dfeat, (int)gh);
            moe_net_backward(&m->gnet, m->g_w + g * m->gnet.n_w, nb, b->zg,
                             b->gacts + g * GB_ROWS * m->gnet.n_acts, b->dfeat,
                             gw + g * m->gnet.n_w, b->scr);
        }
    }
    /* experts */
    for (size_t k = 0; k < K; k++) {
        size_t n = b->start[k + 1] - b->start[k], eh = m->eh;
        if (n == 0) continue;
        const double *dq = b->dout + b->start[k] * R, *dl = b->dlv + b->start[k] * P;
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)R, (int)eh, (int)n, 1.0, dq,
                    (int)R, b->efeat[k], (int)eh, 1.0, ec + k * R * eh, (int)eh);
        if (m->log_var)
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)P, (int)eh, (int)n, 1.0, dl,
                        (int)P, b->efeat[k], (int)eh, 1.0, el + k * P * eh, (int)eh);
        if (m->enet.n_hidden > 0) {
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)eh, (int)R, 1.0,
                        dq, (int)R, m->coef + k * R * eh, (int)eh, 0.0, b->dfeat, (int)eh);
            if (m->log_var) /* both heads feed back into the hidden layers */
                cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)eh, (int)P,
                            1.0, dl, (int)P, m->lv_coef + k * P * eh, (int)eh, 1.0, b->dfeat,
                            (int)eh);
            moe_net_backward(&m->enet, m->e_w + k * m->enet.n_w, n, b->X + b->start[k] * m->ed,
                             b->eacts + b->start[k] * m->enet.n_acts, b->dfeat,
                             ew + k * m->enet.n_w, b->scr);
        }
    }
}

/* ---- one minibatch ------------------------------------------------------------------ */

static int nblocks(size_t n) { return (int)((n + GB_ROWS - 1) / GB_ROWS); }

/* The balance and z terms from the summed block sums: their value, and the
 * coefficients blk_backward needs. */
static double aux_coefficients(moe_grad_state *s, size_t nblk) {
    const moe_model *m = s->m;
    size_t G = s->G, GR = s->GR;
    double loss = 0.0, alpha = s->g->balance, beta = s->g->z_loss;
    double *P_ = s->auxtmp, *F = P_ + MOE_MAX_BRANCHING, *Im = F + MOE_MAX_BRANCHING;
    double *L = Im + MOE_MAX_BRANCHING, *D = L + MOE_MAX_BRANCHING;
    (void)GR;
    for (size_t g = 0; g < G; g++) {
        size_t o = s->nd.grow[g], nc = m->gate_nch[g];
        double bg = 0.0, zs = 0.0;
        for (size_t c = 0; c < nc; c++) P_[c] = F[c] = Im[c] = L[c] = 0.0;
        for (size_t j = 0; j < nblk; j++) { /* block order */
            const aux_stats *a = &s->blk[j].aux;
            bg += a->bg[g];
            zs += a->zsum[g];
            for (size_t c = 0; c < nc; c++) {
                P_[c] += a->psum[o + c];
                F[c] += a->fsum[o + c];
                Im[c] += a->isum[o + c];
                L[c] += a->lsum[o + c];
            }
        }
        for (size_t c = 0; c < nc; c++) s->coef_sw[o + c] = s->coef_imp[o + c] = s->coef_load[o + c] = 0.0;
        s->coef_z[g] = 0.0;
        if (!(bg > 0.0)) continue;
        if (alpha > 0.0 && s->g->balance_kind == MOE_BALANCE_SWITCH) {
            for (size_t c = 0; c < nc; c++) {
                loss += alpha * (double)nc * (F[c] / bg) * (P_[c] / bg);
                s->coef_sw[o + c] = alpha * (double)nc * (F[c] / bg) / bg;
            }
        }
        if (alpha > 0.0 && s->g->balance_kind == MOE_BALANCE_CV2) {
            loss += alpha * cv2(Im, nc, D);
            for (size_t c = 0; c < nc; c++) s->coef_imp[o + c] = alpha * D[c];
            if (s->noisy && m->top_k < nc) {
                loss += alpha * cv2(L, nc, D);
                for (size_t c = 0; c < nc; c++) s->coef_load[o + c] = alpha * D[c];
            }
        }
        if (beta > 0.0) {
            loss += beta * zs / bg;
            s->coef_z[g] = beta / bg;
        }
    }
    return loss;
}

/* Loss of rows[0..n) (n <= batch) times the batch weight, and its gradient
 * times the batch weight into grad; *wsum receives the batch weight. */
static double batch_grad(moe_grad_state *s, const size_t *rows, size_t n, uint64_t nseed,
                         int train, double *grad, double *wsum) {
    int nblk = nblocks(n), aux = s->g->balance > 0.0 || s->g->z_loss > 0.0;
    int nt = s->n_threads < nblk ? s->n_threads : nblk;
    (void)nt; /* used only by the pragma (clang warns otherwise) */
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int j = 0; j < nblk; j++) {
        size_t r0 = (size_t)j * GB_ROWS, nb = n - r0 < GB_ROWS ? n - r0 : GB_ROWS;
        blk_forward(s, &s->blk[j], rows + r0, nb, train, nseed, aux);
    }
    double W = 0.0, obj = 0.0;
    for (int j = 0; j < nblk; j++) {
        W += s->blk[j].wsum;
        obj += s->g->objective == MOE_OBJECTIVE_COOPERATIVE ? s->blk[j].sq : s->blk[j].nll;
    }
    s->aux_loss = aux ? aux_coefficients(s, (size_t)nblk) : 0.0;
    *wsum = W;
    if (!grad) return obj + W * s->aux_loss;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int j = 0; j < nblk; j++) {
        memset(s->blk[j].grad, 0, s->np * sizeof(double));
        blk_backward(s, &s->blk[j], W);
    }
    memset(grad, 0, s->np * sizeof *grad);
    for (int j = 0; j < nblk; j++)
        for (size_t q = 0; q < s->np; q++) grad[q] += s->blk[j].grad[q];
    return obj + W * s->aux_loss;
}

/* Rows that stay zero (every gate's first child, a classifier's class 0,
 * as in EM's parametrisation): their gradient is dropped before a step. */
static void drop_fixed(const moe_grad_state *s, double *grad) {
    const moe_model *m = s->m;
    for (size_t g = 0; g < s->G; g++)
        memset(grad + s->segoff[SEG_GC] + m->gate_off[g], 0, m->gh * sizeof *grad);
    if (m->task == MOE_TASK_CLASSIFICATION)
        for (size_t k = 0; k < s->K; k++)
            memset(grad + s->segoff[SEG_EC] + k * s->R * m->eh, 0, m->eh * sizeof *grad);
}

/* Sums over rows[0..n) without noise: out[0] objective, [1] weight,
 * [2] log-likelihood (standardised scale). With vacc (2 K P doubles), also
 * each expert's posterior-weighted squared residuals and weights. */
static void evaluate(moe_grad_state *s, const size_t *rows, size_t n, double out[3],
                     double *vacc) {
    size_t K = s->K, P = s->P, MA = s->MA;
    out[0] = out[1] = out[2] = 0.0;
    size_t chunk = s->n_blk * GB_ROWS;
    for (size_t r0 = 0; r0 < n; r0 += chunk) {
        size_t nc = n - r0 < chunk ? n - r0 : chunk;
        int nblk = nblocks(nc);
        int nt = s->n_threads < nblk ? s->n_threads : nblk;
        (void)nt; /* used only by the pragma (clang warns otherwise) */
#pragma omp parallel for schedule(static) num_threads(nt)
        for (int j = 0; j < nblk; j++) {
            size_t a = (size_t)j * GB_ROWS, nb = nc - a < GB_ROWS ? nc - a : GB_ROWS;
            gblk *b = &s->blk[j];
            blk_forward(s, b, rows + r0 + a, nb, 0, 0, 0);
            if (!vacc) continue;
            memset(b->vstat, 0, 2 * K * P * sizeof(double));
            for (size_t i = 0; i < nb; i++)
                for (size_t jj = 0; jj < b->n_act[i]; jj++) {
                    size_t k = b->act[i * MA + jj];
                    const double *o = b->eo + b->pidx[i * MA + jj] * s->R;
                    double wh = b->w[i] * b->h[i * MA + jj];
                    for (size_t q = 0; q < P; q++) {
                        double e = b->t[i * P + q] - o[q];
                        b->vstat[k * P + q] += wh * e * e;
                        b->vstat[K * P + k * P + q] += wh;
                    }
                }
        }
        for (int j = 0; j < nblk; j++) {
            const gblk *b = &s->blk[j];
            out[0] += s->g->objective == MOE_OBJECTIVE_COOPERATIVE ? b->sq : b->nll;
            out[1] += b->wsum;
            out[2] += b->ll;
            for (size_t q = 0; vacc && q < 2 * K * P; q++) vacc[q] += b->vstat[q];
        }
    }
}

/* ---- test hooks (moe_impl.h) ---------------------------------------------------------- */

moe_status moe_grad_state_create(moe_grad_state **out, moe_model *m, const moe_dataset *d,
                                 const moe_grad_params *g, const moe_train_params *p) {
    return grad_state_new(out, m, d, g, p);
}

void moe_grad_state_free(moe_grad_state *s) { grad_state_del(s); }

size_t moe_grad_state_n_params(const moe_grad_state *s) { return s->np; }

double *moe_grad_state_param(moe_grad_state *s, size_t i) {
    for (int q = SEG_COUNT; q-- > 0;)
        if (s->segn[q] && i >= s->segoff[q]) return s->segp[q] + (i - s->segoff[q]);
    return NULL;
}

double moe_grad_state_loss(moe_grad_state *s, const size_t *rows, size_t n, uint64_t noise_seed,
                           double *grad) {
    sync_variance(s);
    double W = 0.0;
    double l = batch_grad(s, rows, n, noise_seed, 1, grad, &W);
    for (size_t q = 0; grad && q < s->np; q++) grad[q] /= W;
    return l / W;
}

/* ---- initial parameters ----------------------------------------------------------------- */

static void random_params(moe_grad_state *s, uint64_t seed) {
    moe_model *m = s->m;
    moe_rng rng;
    moe_rng_seed(&rng, seed);
    for (size_t g = 0; g < s->G; g++) moe_net_random(&m->gnet, m->g_w + g * m->gnet.n_w, &rng);
    /* random gate hyperplanes, logits of sd about 2 (as EM's random start) */
    double sg = 2.0 / sqrt((double)m->gh);
    for (size_t g = 0; g < s->G; g++)
        for (size_t c = 0; c < m->gate_nch[g]; c++)
            for (size_t j = 0; j < m->gh; j++)
                m->gate_coef[m->gate_off[g] + c * m->gh + j] = c ? sg * moe_rng_normal(&rng) : 0.0;
    memset(s->noise, 0, s->segn[SEG_GN] * sizeof(double));
    for (size_t k = 0; k < s->K; k++) moe_net_random(&m->enet, m->e_w + k * m->enet.n_w, &rng);
    double se = (m->task == MOE_TASK_REGRESSION ? 1.0 : 0.3) / sqrt((double)m->eh);
    for (size_t k = 0; k < s->K; k++)
        for (size_t r = 0; r < s->R; r++)
            for (size_t j = 0; j < m->eh; j++)
                m->coef[(k * s->R + r) * m->eh + j] =
                    (m->task == MOE_TASK_CLASSIFICATION && r == 0) ? 0.0 : se * moe_rng_normal(&rng);
    for (size_t q = 0; q < s->K * s->P; q++) s->svar[q] = log(1.0 - s->p->var_floor);
    /* log-variance heads: variance 1 everywhere to start (no draws, so the
     * other parameters are those of a model without them) */
    if (m->log_var) {
        memset(m->lv_coef, 0, s->segn[SEG_EL] * sizeof(double));
        for (size_t q = 0; q < s->K * s->P; q++) m->lv_coef[q * m->eh] = s->svar[q];
    }
    sync_variance(s);
}

void moe_grad_state_init_params(moe_grad_state *s, uint64_t seed) { random_params(s, seed); }

/* The parts of `im` whose shape matches. */
static void copy_init(moe_grad_state *s, const moe_model *im) {
    moe_model *m = s->m;
    if (im->gnet.n_w == m->gnet.n_w && im->gh == m->gh) {
        memcpy(m->g_w, im->g_w, s->G * m->gnet.n_w * sizeof(double));
        memcpy(m->gate_coef, im->gate_coef, s->segn[SEG_GC] * sizeof(double));
    }
    if (im->enet.n_w == m->enet.n_w && im->eh == m->eh) {
        memcpy(m->e_w, im->e_w, s->K * m->enet.n_w * sizeof(double));
        memcpy(m->coef, im->coef, s->K * s->R * m->eh * sizeof(double));
    }
    if (m->task == MOE_TASK_REGRESSION && !im->log_var) {
        size_t P = s->P;
        for (size_t k = 0; k < s->K; k++)
            for (size_t q = 0; q < P; q++) {
                double v = im->cov[(k * P + q) * P + q];
                if (m->variance == MOE_VARIANCE_ISO && q > 0) continue;
                if (m->variance == MOE_VARIANCE_ISO)
                    for (size_t r = 1; r < P; r++) v += im->cov[(k * P + r) * P + r];
                if (m->variance == MOE_VARIANCE_ISO) v /= (double)P;
                double e = v - s->p->var_floor;
                s->svar[k * P + q] = log(e > 1e-12 ? e : 1e-12);
            }
    }
    if (m->log_var) { /* the starting model's heads, or its variances as intercepts */
        if (im->log_var && im->eh == m->eh && im->enet.n_w == m->enet.n_w) {
            memcpy(m->lv_coef, im->lv_coef, s->segn[SEG_EL] * sizeof(double));
        } else {
            memset(m->lv_coef, 0, s->segn[SEG_EL] * sizeof(double));
            for (size_t q = 0; q < s->K * s->P; q++)
                m->lv_coef[q * m->eh] = s->svar[m->variance == MOE_VARIANCE_ISO ? q - q % s->P : q];
        }
    }
    sync_variance(s);
}

/* ---- cooperative: the variances by EM with means and gates fixed ---------------------- */

static moe_status refit_variances(moe_grad_state *s, const size_t *rows, size_t n,
                                  const moe_reducer *red) {
    moe_model *m = s->m;
    size_t K = s->K, P = s->P;
    double *acc = calloc(2 * K * P + 1, sizeof *acc), ev[3];
    if (!acc) return MOE_STATUS_NO_MEMORY;
    for (int it = 0; it < COOP_VAR_ITERS; it++) {
        memset(acc, 0, 2 * K * P * sizeof *acc);
        evaluate(s, rows, n, ev, acc);
        if (red && red->sum(acc, 2 * K * P, red->ctx) != 0) {
            free(acc);
            return MOE_STATUS_IO;
        }
        for (size_t k = 0; k < K; k++) {
            double se = 0.0, sw = 0.0;
            for (size_t q = 0; q < P; q++) {
                se += acc[k * P + q];
                sw += acc[K * P + k * P + q];
                if (m->variance != MOE_VARIANCE_ISO) {
                    double v = sw > 0.0 ? se / sw : 1.0;
                    double e = v - s->p->var_floor;
                    s->svar[k * P + q] = log(e > 1e-12 ? e : 1e-12);
                    se = sw = 0.0;
                }
            }
            if (m->variance == MOE_VARIANCE_ISO) {
                double v = sw > 0.0 ? se / sw : 1.0, e = v - s->p->var_floor;
                for (size_t q = 0; q < P; q++) s->svar[k * P + q] = log(e > 1e-12 ? e : 1e-12);
            }
        }
        sync_variance(s);
    }
    free(acc);
    return MOE_STATUS_OK;
}

/* ---- training ------------------------------------------------------------------------------ */

static moe_status reduce(const moe_reducer *red, double *buf, size_t n, moe_error *err) {
    if (red && red->sum(buf, n, red->ctx) != 0)
        return moe_err(err, MOE_STATUS_IO, "gradient training: the reducer's sum failed");
    return MOE_STATUS_OK;
}

/* Every value read finite, labels in range, weights >= 0. */
static moe_status check_rows(const moe_dataset *d, const moe_model *m, double *sw, size_t *used,
                             moe_error *err) {
    *sw = 0.0;
    *used = 0;
    for (size_t i = 0; i < d->n_rows; i++) {
        const double *x = d->x + i * d->ld_x;
        for (size_t j = 0; j < m->n_ecols + m->n_gcols; j++) {
            size_t c = j < m->n_ecols ? m->ecols[j] : m->gcols[j - m->n_ecols];
            if (!isfinite(x[c]))
                return moe_err_at(err, MOE_STATUS_DATA, NULL, i + 1, c + 1,
                                  "row %zu, column %zu: input is %g (not finite)", i + 1, c + 1,
                                  x[c]);
        }
        for (size_t q = 0; q < m->n_out; q++)
            if (!isfinite(d->y[i * d->ld_y + q]))
                return moe_err_at(err, MOE_STATUS_DATA, NULL, i + 1, 0,
                                  "row %zu: target %zu is %g (not finite)", i + 1, q + 1,
                                  d->y[i * d->ld_y + q]);
        if (m->task == MOE_TASK_CLASSIFICATION &&
            (d->labels[i] < 0 || (size_t)d->labels[i] >= m->n_cls))
            return moe_err_at(err, MOE_STATUS_DATA, NULL, i + 1, 0,
                              "row %zu: class label %d outside 0..%zu", i + 1, (int)d->labels[i],
                              m->n_cls - 1);
        double w = d->weights ? d->weights[i] : 1.0;
        if (!(w >= 0.0) || !isfinite(w))
            return moe_err_at(err, MOE_STATUS_DATA, NULL, i + 1, 0,
                              "row %zu: case weight %g (must be finite and >= 0)", i + 1, w);
        *sw += w;
        *used += w > 0.0;
    }
    return MOE_STATUS_OK;
}

/* Weighted means and standard deviations of the used columns and the
 * targets, summed over every process. */
static moe_status standardise_all(const moe_dataset *d, moe_model *m, const moe_reducer *red,
                                  moe_error *err) {
    size_t nc = m->n_cols, P = m->n_out, n = 2 * (nc + P) + 1;
    double *s = calloc(n, sizeof *s);
    if (!s) return moe_err(err, MOE_STATUS_NO_MEMORY, "out of memory");
    moe_status st = MOE_STATUS_OK;
    for (int pass = 0; pass < 2 && st == MOE_STATUS_OK; pass++) {
        memset(s, 0, n * sizeof *s);
        for (size_t i = 0; i < d->n_rows; i++) {
            double w = d->weights ? d->weights[i] : 1.0;
            const double *x = d->x + i * d->ld_x, *y = d->y ? d->y + i * d->ld_y : NULL;
            for (size_t c = 0; c < nc; c++) {
                double v = pass ? x[c] - m->x_mean[c] : x[c];
                s[c] += w * (pass ? v * v : v);
            }
            for (size_t q = 0; q < P; q++) {
                double v = pass ? y[q] - m->y_mean[q] : y[q];
                s[nc + q] += w * (pass ? v * v : v);
            }
            s[n - 1] += w;
        }
        if ((st = reduce(red, s, n, err)) != MOE_STATUS_OK) break;
        double W = s[n - 1];
        for (size_t c = 0; c < nc; c++) {
            if (!pass) {
                m->x_mean[c] = s[c] / W;
            } else {
                double sd = sqrt(s[c] / W);
                m->x_scale[c] = sd > 1e-12 * (fabs(m->x_mean[c]) + 1e-300) && isfinite(sd) ? sd : 1.0;
            }
        }
        for (size_t q = 0; q < P; q++) {
            if (!pass) {
                m->y_mean[q] = s[nc + q] / W;
            } else {
                double sd = sqrt(s[nc + q] / W);
                m->y_scale[q] = sd > 1e-12 * (fabs(m->y_mean[q]) + 1e-300) && isfinite(sd) ? sd : 1.0;
            }
        }
    }
    free(s);
    return st;
}

static double lr_at(const moe_grad_params *g, size_t t, size_t S) {
    double Tw = floor(g->warmup * (double)S);
    if ((double)t < Tw) return g->lr * ((double)t + 1.0) / Tw;
    double span = (double)S - Tw, x = span > 0.0 ? ((double)t - Tw) / span : 1.0;
    if (x > 1.0) x = 1.0;
    return g->lr * (g->lr_min + (1.0 - g->lr_min) * 0.5 * (1.0 + cos(M_PI_VALUE * x)));
}

/* (An empty segment's pointer may be NULL: the log-variance heads of a
 * model without them.) */
static void params_get(const moe_grad_state *s, double *v) {
    for (int q = 0; q < SEG_COUNT; q++)
        if (s->segn[q]) memcpy(v + s->segoff[q], s->segp[q], s->segn[q] * sizeof *v);
}

static void params_set(moe_grad_state *s, const double *v) {
    for (int q = 0; q < SEG_COUNT; q++)
        if (s->segn[q]) memcpy(s->segp[q], v + s->segoff[q], s->segn[q] * sizeof *v);
    sync_variance(s);
}

static moe_status train_gradient_run(const moe_dataset *data, const moe_train_params *p,
                              const moe_grad_params *g, moe_model **out, moe_error *err) {
    if (!out) return INVALID("no output pointer");
    *out = NULL;
    if (!data) return INVALID("no data");
    moe_status st = moe_grad_params_check(g, p, data, err);
    if (st != MOE_STATUS_OK) return st;
    const moe_reducer *red = p->reducer;
    const moe_model *im = g->init;
    moe_model *m = NULL;
    moe_grad_state *s = NULL;
    size_t *perm = NULL, *all = NULL, *order = NULL;
    double *grad = NULL, *am = NULL, *av = NULL, *best = NULL, *best_run = NULL, *trace = NULL;
    double *best_trace = NULL;
    size_t n_best_trace = 0;

    /* the model's shape */
    moe_model t;
    memset(&t, 0, sizeof t);
    t.task = p->task;
    t.variance = p->variance;
    t.tree = p->tree;
    t.n_cols = data->n_cols;
    t.n_out = data->n_outputs;
    t.n_cls = data->n_classes;
    moe_net_init(&t.enet, 1, &g->expert);
    moe_net_init(&t.gnet, 1, &g->gate);
    t.top_k = g->top_k;
    t.log_var = g->log_var;
    size_t *cols = malloc((data->n_cols + 1) * sizeof *cols);
    if (!cols) return moe_err(err, MOE_STATUS_NO_MEMORY, "out of memory");
    for (size_t j = 0; j < data->n_cols; j++) cols[j] = j;
    const size_t *ec = p->n_expert_cols == MOE_ALL_COLS ? cols : p->expert_cols;
    const size_t *gc = p->n_gate_cols == MOE_ALL_COLS ? cols : p->gate_cols;
    t.n_ecols = p->n_expert_cols == MOE_ALL_COLS ? data->n_cols : p->n_expert_cols;
    t.n_gcols = p->n_gate_cols == MOE_ALL_COLS ? data->n_cols : p->n_gate_cols;
    if (im) { /* columns from the starting model */
        ec = im->ecols;
        gc = im->gcols;
        t.n_ecols = im->n_ecols;
        t.n_gcols = im->n_gcols;
    }
    m = moe_model_alloc(&t, ec, gc);
    free(cols);
    if (!m) return moe_err(err, MOE_STATUS_NO_MEMORY, "out of memory");

    double sw = 0.0;
    size_t used = 0;
    if ((st = check_rows(data, m, &sw, &used, err)) != MOE_STATUS_OK) goto fail;
    double tot[2] = {sw, (double)used};
    if ((st = reduce(red, tot, 2, err)) != MOE_STATUS_OK) goto fail;
    if (!(tot[0] > 0.0)) {
        st = moe_err(err, MOE_STATUS_DATA, "no rows of positive weight to train on");
        goto fail;
    }
    if (im) {
        memcpy(m->x_mean, im->x_mean, m->n_cols * sizeof(double));
        memcpy(m->x_scale, im->x_scale, m->n_cols * sizeof(double));
        memcpy(m->y_mean, im->y_mean, m->n_out * sizeof(double));
        memcpy(m->y_scale, im->y_scale, m->n_out * sizeof(double));
    } else if ((st = standardise_all(data, m, red, err)) != MOE_STATUS_OK) {
        goto fail;
    }
    if ((st = grad_state_new(&s, m, data, g, p)) != MOE_STATUS_OK) {
        st = moe_err(err, st, "out of memory");
        goto fail;
    }

    /* training and validation rows */
    size_t N = data->n_rows;
    perm = malloc((N + 1) * sizeof *perm);
    all = malloc((N + 1) * sizeof *all);
    grad = malloc((s->np + 3) * sizeof *grad);
    am = malloc((s->np + 1) * sizeof *am);
    av = malloc((s->np + 1) * sizeof *av);
    best = malloc((s->np + 1) * sizeof *best);
    best_run = malloc((s->np + 1) * sizeof *best_run);
    trace = malloc(((size_t)g->epochs + 2) * sizeof *trace);
    best_trace = malloc(((size_t)g->epochs + 2) * sizeof *best_trace);
    if (!perm || !all || !grad || !am || !av || !best || !best_run || !trace || !best_trace) {
        st = moe_err(err, MOE_STATUS_NO_MEMORY, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < N; i++) all[i] = perm[i] = i;
    moe_rng rng;
    moe_rng_seed(&rng, mix64(p->seed, 0x5a11d));
    for (size_t i = N; i > 1; i--) {
        size_t j = (size_t)(moe_rng_uniform(&rng) * (double)i), tmp = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = tmp;
    }
    size_t n_valid = (size_t)floor(g->valid * (double)N + 0.5);
    if (n_valid >= N) n_valid = N > 0 ? N - 1 : 0;
    size_t n_train = N - n_valid;
    size_t *vrows = perm, *trows = perm + n_valid;
    double cnt[2] = {(double)n_train, (double)n_valid};
    if ((st = reduce(red, cnt, 2, err)) != MOE_STATUS_OK) goto fail;
    int use_valid = g->valid > 0.0 && cnt[1] > 0.0;
    if (cnt[0] < 1.0) {
        st = moe_err(err, MOE_STATUS_DATA, "no training rows left after the validation split");
        goto fail;
    }
    /* sort each part by row so blocks read memory in order */
    for (int part = 0; part < 2; part++) {
        size_t *v = part ? trows : vrows, n = part ? n_train : n_valid;
        for (size_t a = 1; a < n; a++) {
            size_t x = v[a], b = a;
            while (b > 0 && v[b - 1] > x) {
                v[b] = v[b - 1];
                b--;
            }
            v[b] = x;
        }
    }
    size_t nproc = red ? (size_t)red->size : 1;
    size_t steps = red ? (size_t)ceil(cnt[0] / ((double)g->batch * (double)nproc))
                       : (n_train + g->batch - 1) / g->batch;
    if (steps == 0) steps = 1;
    size_t S = steps * (size_t)g->epochs;
    double yshift = 0.0;
    for (size_t q = 0; q < m->n_out; q++) yshift -= log(m->y_scale[q]);
    order = malloc((n_train + 1) * sizeof *order);
    if (!order) {
        st = moe_err(err, MOE_STATUS_NO_MEMORY, "out of memory");
        goto fail;
    }

    double best_score = INFINITY;
    int best_r = -1, best_epochs = 0, best_stopped = 0;
    for (int r = 0; r < p->n_restarts; r++) {
        uint64_t rseed = mix64(p->seed, (uint64_t)r + 1);
        random_params(s, rseed);
        if (im) copy_init(s, im);
        memset(am, 0, s->np * sizeof *am);
        memset(av, 0, s->np * sizeof *av);
        double run_best = INFINITY, b1t = 1.0, b2t = 1.0;
        int since = 0, epochs_run = 0, stopped = 0;
        size_t n_tr = 0, t_step = 0;
        params_get(s, best_run);
        for (int e = 0; e < g->epochs; e++) {
            memcpy(order, trows, n_train * sizeof *order);
            moe_rng er;
            moe_rng_seed(&er, mix64(rseed, (uint64_t)e + 0x1000));
            for (size_t i = n_train; i > 1; i--) {
                size_t j = (size_t)(moe_rng_uniform(&er) * (double)i), tmp = order[i - 1];
                order[i - 1] = order[j];
                order[j] = tmp;
            }
            for (size_t stp = 0; stp < steps; stp++, t_step++) {
                size_t nb, *rows;
                size_t rowbuf_off = (stp * g->batch) % (n_train ? n_train : 1);
                if (!red) {
                    rows = order + stp * g->batch;
                    nb = n_train - stp * g->batch < g->batch ? n_train - stp * g->batch : g->batch;
                } else {
                    /* cyclic over this process's rows (counts may differ) */
                    rows = order + rowbuf_off;
                    nb = n_train - rowbuf_off < g->batch ? n_train - rowbuf_off : g->batch;
                }
                double W = 0.0;
                uint64_t nseed = mix64(rseed, ((uint64_t)e << 32) ^ (uint64_t)stp);
                double loss = nb ? batch_grad(s, rows, nb, nseed, 1, grad, &W) : 0.0;
                if (!nb) memset(grad, 0, s->np * sizeof *grad);
                grad[s->np] = W;
                grad[s->np + 1] = loss;
                if ((st = reduce(red, grad, s->np + 2, err)) != MOE_STATUS_OK) goto fail;
                W = grad[s->np];
                if (!(W > 0.0)) continue;
                drop_fixed(s, grad);
                double nrm = 0.0;
                for (size_t q = 0; q < s->np; q++) {
                    grad[q] /= W;
                    nrm += grad[q] * grad[q];
                }
                nrm = sqrt(nrm);
                if (!isfinite(nrm)) {
                    st = moe_err(err, MOE_STATUS_NUMERIC,
                                 "gradient training diverged (non-finite gradient at epoch %d); "
                                 "try a smaller learning rate",
                                 e + 1);
                    goto fail;
                }
                double sc = g->clip > 0.0 && nrm > g->clip ? g->clip / nrm : 1.0;
                double lr = lr_at(g, t_step, S);
                b1t *= g->beta1;
                b2t *= g->beta2;
                for (int q = 0; q < SEG_COUNT; q++) {
                    double *v = s->segp[q];
                    int decay = (q == SEG_GW || q == SEG_EW) && g->weight_decay > 0.0;
                    for (size_t i = 0; i < s->segn[q]; i++) {
                        size_t k = s->segoff[q] + i;
                        double gk = grad[k] * sc;
                        am[k] = g->beta1 * am[k] + (1.0 - g->beta1) * gk;
                        av[k] = g->beta2 * av[k] + (1.0 - g->beta2) * gk * gk;
                        double mh = am[k] / (1.0 - b1t), vh = av[k] / (1.0 - b2t);
                        v[i] -= lr * mh / (sqrt(vh) + g->adam_eps);
                        if (decay) v[i] -= lr * g->weight_decay * v[i];
                    }
                }
                sync_variance(s);
            }
            epochs_run = e + 1;
            /* the epoch's scores */
            double ev[6];
            evaluate(s, trows, n_train, ev, NULL);
            if (use_valid) evaluate(s, vrows, n_valid, ev + 3, NULL);
            else ev[3] = ev[4] = ev[5] = 0.0;
            if ((st = reduce(red, ev, 6, err)) != MOE_STATUS_OK) goto fail;
            double ll = ev[2] + yshift * ev[1];
            trace[n_tr++] = ll;
            double score = use_valid ? ev[3] / ev[4] : ev[0] / ev[1];
            if (!isfinite(score)) score = INFINITY;
            if (score < run_best || !use_valid) {
                if (score < run_best) since = 0;
                run_best = score < run_best ? score : run_best;
                params_get(s, best_run);
                if (!use_valid) run_best = score;
            } else {
                since++;
            }
            if (p->on_iter) {
                moe_iter_info info;
                memset(&info, 0, sizeof info);
                info.restart = r;
                info.n_restarts = p->n_restarts;
                info.iteration = e + 1;
                info.loglik = ll;
                info.delta = n_tr > 1 ? ll - trace[n_tr - 2] : 0.0;
                if (p->on_iter(&info, p->user_data) != 0) {
                    st = moe_err(err, MOE_STATUS_CANCELLED, "training cancelled");
                    goto fail;
                }
            }
            if (use_valid && g->patience > 0 && since >= g->patience) {
                stopped = 1;
                break;
            }
        }
        params_set(s, best_run);
        if (g->objective == MOE_OBJECTIVE_COOPERATIVE && m->task == MOE_TASK_REGRESSION) {
            if ((st = refit_variances(s, trows, n_train, red)) != MOE_STATUS_OK) {
                st = moe_err(err, st, "cooperative variances: %s",
                             st == MOE_STATUS_IO ? "the reducer's sum failed" : "out of memory");
                goto fail;
            }
            params_get(s, best_run);
        }
        if (best_r < 0 || run_best < best_score) {
            best_score = run_best;
            best_r = r;
            best_epochs = epochs_run;
            best_stopped = stopped;
            memcpy(best, best_run, s->np * sizeof *best);
            memcpy(best_trace, trace, n_tr * sizeof *trace);
            n_best_trace = n_tr;
        }
    }
    params_set(s, best);

    /* the report: every row given */
    double ev[3];
    evaluate(s, all, N, ev, NULL);
    if ((st = reduce(red, ev, 3, err)) != MOE_STATUS_OK) goto fail;
    moe_fit_report *rep = &m->report;
    memset(rep, 0, sizeof *rep);
    rep->loglik = ev[2] + yshift * ev[1];
    rep->df = moe_model_df(m);
    rep->aic = -2.0 * rep->loglik + 2.0 * (double)rep->df;
    rep->bic = -2.0 * rep->loglik + (double)rep->df * log(tot[0]);
    rep->icl = rep->bic;
    rep->n_rows = (size_t)tot[1];
    rep->sum_weights = tot[0];
    rep->iterations = best_epochs;
    rep->converged = best_stopped;
    rep->n_restarts = p->n_restarts;
    rep->best_restart = best_r;
    free(m->trace);
    m->trace = best_trace;
    m->n_trace = n_best_trace;
    best_trace = NULL;
    *out = m;
    m = NULL;
    st = MOE_STATUS_OK;
    goto done;
fail:
    if (st == MOE_STATUS_OK) st = MOE_STATUS_NO_MEMORY;
done:
    grad_state_del(s);
    moe_model_free(m);
    free(perm);
    free(all);
    free(order);
    free(grad);
    free(am);
    free(av);
    free(best);
    free(best_run);
    free(trace);
    free(best_trace);
    return st;
}

moe_status moe_train_gradient(const moe_dataset *data, const moe_train_params *p,
                              const moe_grad_params *g, moe_model **out, moe_error *err) {
    moe_blas_saved bs = moe_blas_serial_begin();
    moe_status st = train_gradient_run(data, p, g, out, err);
    moe_blas_serial_end(bs);
    return st;
}
