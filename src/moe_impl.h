/*
 * moe_impl.h -- private declarations shared by the library's files.
 *
 * The fitted model lives here. Everything numeric is stored on the
 * *standardised* scale the fit worked in (inputs z = (x - x_mean) / x_scale,
 * regression targets t = (y - y_mean) / y_scale); the public getters undo it.
 */
#ifndef MOE_IMPL_H
#define MOE_IMPL_H

#include "moe.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* ---- the model ---------------------------------------------------------- */

typedef struct moe_meta_entry {
    char *key;
    char *value;
} moe_meta_entry;

/* The network of one node (nn.c): n_hidden hidden layers over the node's
 * standardised design (intercept first, width n_in), then the linear head
 * over [1, h_L] (width head_in; = n_in when linear). Layer l's weights are
 * hidden[l] x (1 + width of layer l-1), row-major, bias first, layers one
 * after the other (n_w doubles per node). A row's activations are stored
 * layer by layer, each with its leading 1 (n_acts doubles per row). */
typedef struct moe_net {
    size_t n_in;
    size_t n_hidden;
    size_t hidden[MOE_MAX_HIDDEN];
    moe_activation act;
    size_t n_w;
    size_t head_in;
    size_t n_acts;
    size_t max_width;      /* max(1 + hidden[l]) (0 when linear) */
} moe_net;

struct moe_model {
    moe_task task;
    moe_variance variance;
    moe_tree_shape tree;

    size_t n_cols;         /* input columns of the data */
    size_t n_ecols;        /* expert input columns (without intercept) */
    size_t *ecols;         /* [n_ecols] indices into the data's columns */
    size_t n_gcols;
    size_t *gcols;
    size_t ed;             /* 1 + n_ecols: expert design width (intercept first) */
    size_t gd;             /* 1 + n_gcols */
    size_t n_out;          /* P (regression) else 0 */
    size_t n_cls;          /* C (classification) else 0 */
    size_t n_leaves;       /* K */
    size_t n_gates;        /* internal nodes, breadth-first */

    /* standardisation, per data column (only the used ones matter) */
    double *x_mean;        /* [n_cols] */
    double *x_scale;       /* [n_cols], > 0 */
    double *y_mean;        /* [n_out] */
    double *y_scale;       /* [n_out], > 0 */

    /* gates: gate g has gate_nch[g] children and coefficients
     * gate_coef[gate_off[g] + c*gd + j], child 0's row zero. */
    size_t *gate_nch;      /* [n_gates] */
    size_t *gate_off;      /* [n_gates] */
    double *gate_coef;     /* [sum nch * gd] */

    /* experts, standardised scale:
     *   regression: coef[k] is P x ed (row p: output p), cov[k] is P x P,
     *   chol[k] its lower Cholesky factor (upper part zero), logdet[k] =
     *   log det cov[k];
     *   classification: coef[k] is C x ed, class 0's row zero. */
    size_t coef_rows;      /* P or C */
    double *coef;          /* [K * coef_rows * ed] */
    double *cov;           /* [K * P * P] (regression) */
    double *chol;          /* [K * P * P] */
    double *logdet;        /* [K] */

    moe_fit_report report;
    moe_event *events;     /* [report.n_events] */
    double *trace;         /* [n_trace] log-likelihood per iteration */
    size_t n_trace;

    moe_meta_entry *meta;
    size_t n_meta;

    /* MLP nodes and top-k gating (gradient training; format version 2).
     * With MLP experts coef[k] is R x eh over [1, h_L] (eh = enet.head_in;
     * eh = ed for linear experts); with MLP gates the gate rows are gh wide
     * and gate_off counts in units of gh. */
    moe_net enet;          /* the experts' network */
    moe_net gnet;          /* the gates' network */
    size_t eh, gh;         /* head widths */
    double *e_w;           /* [K * enet.n_w] hidden weights, expert after expert */
    double *g_w;           /* [G * gnet.n_w] */
    size_t top_k;          /* 0: dense gates; else every gate keeps its top_k children */

    /* Input-dependent variances (gradient training, moe_grad_params.log_var;
     * format version 3). Expert k's variance of output p at a row is
     * cov[k](p,p) + exp(min(a_kp, MOE_LOG_VAR_MAX)), a_k = lv_coef[k] (P x eh)
     * times the row's [1, h_L]: cov then holds only the floor (diagonal),
     * and chol / logdet are not used for densities. */
    int log_var;
    double *lv_coef;       /* [K * P * eh], NULL without log_var */
};

/* Allocate a model with every array sized from the shape fields, which the
 * caller fills first in *tmpl (task, variance, tree, n_cols, n_ecols,
 * n_gcols, n_out, n_cls). Arrays are zeroed, scales set to 1; ecols/gcols
 * are copied from `ecols`/`gcols`. Returns NULL when out of memory. */
moe_model *moe_model_alloc(const moe_model *tmpl, const size_t *ecols, const size_t *gcols);

/* Recompute chol and logdet from cov for every expert. Returns 0 on
 * success, -1 if a covariance is not positive definite. */
int moe_model_refresh_chol(moe_model *m);

/* Number of free parameters of a model shape. */
size_t moe_model_df(const moe_model *m);

/* ---- tree helpers --------------------------------------------------------- */

/* Fill nch[n_gates] and off[n_gates] (coefficient offsets, gd per child)
 * from a shape; returns the total number of gate coefficient rows. */
size_t moe_tree_layout(const moe_tree_shape *s, size_t gd, size_t *nch, size_t *off);

/* ---- errors and logging ------------------------------------------------- */

/* Fill err (if not NULL) with status and a printf-style message; returns
 * status so callers can `return moe_err(err, ...)`. */
moe_status moe_err(moe_error *err, moe_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Like moe_err, and also records file/line/column in err (file may be
 * NULL, line/column 0 when unknown). The message should already name
 * them; this only fills the structured fields. */
moe_status moe_err_at(moe_error *err, moe_status status, const char *file, size_t line,
                      size_t column, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 6, 7)))
#endif
    ;

/* Send a message to the log callback, if any. */
void moe_log(moe_log_level level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* ---- files (fileio.c) ------------------------------------------------------ */

/* CRC-32C (Castagnoli) of n bytes, continuing from `crc` (0 to start):
 * moe_crc32c(moe_crc32c(0, a, n), b, m) is the CRC of a then b. */
uint32_t moe_crc32c(uint32_t crc, const void *data, size_t n);

/* The process umask, read without changing it (022 when unknown). */
#include <sys/types.h>
mode_t moe_file_umask(void);

/* Best effort: fsync the directory holding `path`, so a rename into it is
 * durable. */
void moe_file_sync_dir(const char *path);

/* ---- BLAS threads (util.c) ------------------------------------------------ */

/* Every BLAS call of moe is small and made on moe's own threads (or
 * between passes), so OpenBLAS's threads bring nothing there -- and a
 * threaded OpenBLAS splits some routines differently (dpotrf, dsyrk), so
 * a fit's last bits would follow OPENBLAS_NUM_THREADS / OMP_NUM_THREADS.
 * A training or prediction call sets OpenBLAS to one thread for its
 * duration (moe_blas_serial_begin) and restores it after, together with
 * the caller's OpenMP thread count (OpenBLAS's OpenMP build sets that
 * too). The setting is process-wide: two such calls running at once in
 * two threads of a program may restore it early, but never change a
 * result (each sets one thread again on entry). */
typedef struct moe_blas_saved {
    int blas, omp;
} moe_blas_saved;
moe_blas_saved moe_blas_serial_begin(void);
void moe_blas_serial_end(moe_blas_saved s);

/* OpenBLAS's OpenMP build (0.3.21 here) sizes its calls' threads by
 * omp_get_max_threads() whatever openblas_set_num_threads said (dpotrf
 * resets that count to it), so outside an active parallel region of moe's
 * (the M-step's solves, a pass on one thread) the setting above does not
 * hold: a gate's Newton solve of 77 unknowns (K = 8, D = 10) ran the
 * threaded dpotrf, whose last bits follow OMP_NUM_THREADS, and whose
 * helper threads, on a loaded 2-core machine, made an iteration 3x slower
 * (the main thread spinning at their barrier). The calls that may split
 * run between moe_blas_local_begin, which sets the calling thread's
 * OpenMP count to 1 and returns the old one, and moe_blas_local_end, which
 * puts it back (a per-thread setting: other threads are not affected). */
int moe_blas_local_begin(void);
void moe_blas_local_end(int omp);

/* ---- small numerics ------------------------------------------------------- */

/* log(sum(exp(v[0..n-1]))) without overflow; -inf for n == 0 or all -inf. */
double moe_logsumexp(const double *v, size_t n);

/* In place: v <- log softmax(v). Returns the log-sum-exp. */
double moe_log_softmax(double *v, size_t n);

/* Standard normal CDF and log-density helpers. */
double moe_norm_cdf(double z);

/* splitmix64-seeded xoshiro256** generator: reproducible on every platform. */
typedef struct moe_rng {
    uint64_t s[4];
} moe_rng;
void moe_rng_seed(moe_rng *r, uint64_t seed);
uint64_t moe_rng_next(moe_rng *r);
double moe_rng_uniform(moe_rng *r);     /* in [0, 1) with 53 random bits */
double moe_rng_normal(moe_rng *r);      /* standard normal (Box-Muller, no cache) */
double moe_rng_exp(moe_rng *r);         /* standard exponential */

/* ---- BLAS / LAPACK (Fortran interface, from OpenBLAS) ------------------- */

void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info);
void dpotrs_(const char *uplo, const int *n, const int *nrhs, const double *a, const int *lda,
             double *b, const int *ldb, int *info);
void dsyev_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda,
            double *w, double *work, const int *lwork, int *info);

/* Solve (A + lambda I) X = B for symmetric positive semi-definite A (n x n,
 * row-major, untouched) and B (n x nrhs, overwritten by X). lambda starts at
 * ridge * mean(diag A) (or ridge when the diagonal is zero) and is raised
 * tenfold until the Cholesky factorisation succeeds. work holds n*(n+nrhs)
 * doubles.
 * Returns the lambda used (>= 0), or -1 if no ridge helped. */
double moe_solve_spd(const double *a, size_t n, double *b, size_t nrhs, double ridge,
                     double *work);

/* ---- the forward pass over a block of rows (forward.c) ------------------ */

/* Rows per block in every pass: big enough for BLAS level 3, small enough
 * that a block's workspace stays in cache. */
#define MOE_BLOCK_ROWS 256

/* Workspace of one thread for one block of up to MOE_BLOCK_ROWS rows. All
 * matrices are row-major with the block's rows first. */
typedef struct moe_block {
    double *ze;     /* [nb x ed]  standardised expert design, intercept first */
    double *zg;     /* [nb x gd]  standardised gate design */
    double *gl;     /* [nb x gate_rows] gate logits, then log-softmax per gate */
    double *gp;     /* [nb x gate_rows] gate probabilities (softmax per gate) */
    double *lp;     /* [nb x n_nodes] log prior of every node (gates, then leaves) */
    double *eo;     /* [nb x K*R] expert outputs: means (R = P) or logits (R = C),
                       then log-softmax per expert for classification */
    double *ld;     /* [nb x K]  log-density of the target under each expert (then
                       scratch of moe_block_posterior) */
    double *post;   /* [nb x n_nodes] posterior of every node */
    double *tgt;    /* [nb x P]  standardised targets */
    double *ll;     /* [nb] log-likelihood of each row (standardised scale) */
    double *ent;    /* [nb] entropy of each row's leaf posteriors */
    double *scr;    /* scratch, see moe_block_scratch_size() */
    double *inv;    /* [n_ecols + n_gcols] 1 / scale of each used column */
    double *invl;   /* [K*P + P] 1 / diagonal of each expert's Cholesky factor,
                       then 1 / the target scales */
    /* MLP nodes and top-k gates (nn.c, topk.c); NULL when not needed */
    double *nn;     /* [moe_nn_block_size] activations and scratch of one node */
    size_t *act;    /* [nb x max_active] active leaves of each row (top-k), in
                       increasing order */
    size_t *n_act;  /* [nb] their number */
    size_t *iw;     /* [K + 1 + nb x max_active] counting sort of rows by expert */
    /* input-dependent variances (nn.c, topk.c); NULL without log_var */
    double *ev;     /* [nb x K*P] each row's expert variances, laid out like eo */
} moe_block;

/* Node bookkeeping derived from the tree: node ids are gates 0..G-1
 * (breadth-first) then leaves G..G+K-1. child0[g] is gate g's first child id,
 * grow[g] the row of gate g's first child in the stacked gate coefficients. */
typedef struct moe_nodes {
    size_t n_nodes;
    size_t gate_rows;
    size_t *child0;  /* [G] */
    size_t *grow;    /* [G] */
} moe_nodes;

moe_status moe_nodes_init(moe_nodes *nd, const moe_model *m);
void moe_nodes_free(moe_nodes *nd);

size_t moe_block_scratch_size(const moe_model *m);
/* Allocate a block workspace (NULL-safe free with moe_block_free). */
moe_status moe_block_alloc(moe_block *b, const moe_model *m, const moe_nodes *nd);
void moe_block_free(moe_block *b);

/* Standardise rows [0, nb) of x (leading dimension ld) into ze/zg, and
 * compute the gate log-softmaxes and every node's log prior (lp). */
void moe_block_gates(const moe_model *m, const moe_nodes *nd, moe_block *b, size_t nb,
                     const double *x, size_t ld);
/* z (nb rows of 1 + n, leading dimension ldz): the intercept, then
 * (x_c - mean_c) inv_j for the n columns c = cols[j] of the rows x
 * (leading dimension ld), inv_j = 1 / x_scale[c] -- the numbers
 * moe_block_gates gives ze and zg, vectorised for this machine. */
void moe_standardise_rows(const moe_model *m, size_t nb, const double *x, size_t ld,
                          const size_t *cols, size_t n, const double *inv, double *z,
                          size_t ldz);
/* The block's standardised gate design after moe_block_gates: b->ze for
 * linear gates on the experts' columns (b->zg is then left unwritten),
 * else b->zg. */
const double *moe_block_zg(const moe_model *m, const moe_block *b);
/* Whether the gates read the experts' input columns, in the same order
 * (the default): then their standardised inputs are the same numbers. */
int moe_gates_share_columns(const moe_model *m);

/* Expert outputs for the block: eo (means on the standardised scale, or
 * per-expert log class probabilities). Needs ze from moe_block_gates. */
void moe_block_experts(const moe_model *m, moe_block *b, size_t nb);

/* Log-density of each row's target under each expert (ld), the row's
 * log-likelihood (ll) and the posterior of every node (post). Regression
 * targets come from y (ld_y), standardised into tgt; classification from
 * labels. Needs moe_block_gates and moe_block_experts. */
void moe_block_posterior(const moe_model *m, const moe_nodes *nd, moe_block *b, size_t nb,
                         const double *y, size_t ld_y, const int32_t *labels);

/* The E-step's forward pass over a block: moe_block_gates, _experts and
 * _posterior, with the softmax of a flat gate and the posteriors fused into
 * one pass over groups of rows where they can be (forward.c: one gate of 8
 * leaves, one Gaussian target), the same bits in every array those leave.
 * The _isa form runs the given instruction set, fused or not (tests). */
void moe_block_forward(const moe_model *m, const moe_nodes *nd, moe_block *b, size_t nb,
                       const double *x, size_t ld, const double *y, size_t ld_y,
                       const int32_t *labels);
void moe_block_forward_isa(int isa, const moe_model *m, const moe_nodes *nd, moe_block *b,
                           size_t nb, const double *x, size_t ld, const double *y, size_t ld_y,
                           const int32_t *labels, int fused);
/* moe_block_gates and _experts, then moe_block_posterior's first part only
 * (sparse EM's full pass, which needs no posterior of most leaves): each
 * leaf's log joint, log prior + log-density, in the leaves' posterior
 * slots (post + n_gates), tgt as there (ld: scratch); the gates' slots, ll
 * and ent untouched. */
void moe_block_forward_joint(const moe_model *m, const moe_nodes *nd, moe_block *b, size_t nb,
                             const double *x, size_t ld, const double *y, size_t ld_y,
                             const int32_t *labels);

/* ---- MLP nodes (nn.c) ------------------------------------------------------ */

/* Layout of a node's network over n_in design columns (arch NULL: linear). */
void moe_net_init(moe_net *net, size_t n_in, const moe_mlp *arch);

/* Forward nb rows of `in` (nb x n_in) through the hidden layers with weights
 * w, activations into acts (nb * n_acts doubles). Returns the head's input
 * (nb x head_in): `in` itself for a linear net, else inside acts. */
const double *moe_net_forward(const moe_net *net, const double *w, size_t nb, const double *in,
                              double *acts);

/* Backward: d (nb x head_in) holds dL/d(head input) and is overwritten;
 * adds dL/dw to gw. scratch: nb * 2 * max_width doubles. */
void moe_net_backward(const moe_net *net, const double *w, size_t nb, const double *in,
                      const double *acts, double *d, double *gw, double *scratch);

/* out (nb x R, leading dimension ld_out) = feat (nb x hw) head^T, head R x hw. */
void moe_head_forward(size_t nb, size_t R, size_t hw, const double *feat, const double *head,
                      double *out, size_t ld_out);

/* Random initial hidden weights (Glorot uniform with tanh's gain, He for
 * ReLU) for one node. */
void moe_net_random(const moe_net *net, double *w, moe_rng *rng);

/* Doubles of moe_block.nn for a model (0 when every node is linear and
 * dense). */
size_t moe_nn_block_size(const moe_model *m);
/* Active leaves per row at most (top-k), K when dense. */
size_t moe_model_max_active(const moe_model *m);
/* Allocate / free the MLP and top-k parts of a block (moe_block_alloc and
 * moe_block_free call them). */
moe_status moe_block_alloc_nn(moe_block *b, const moe_model *m);
void moe_block_free_nn(moe_block *b);

/* Gate logits of MLP gates into b->gl (after the standardisation). */
void moe_block_gate_logits_mlp(const moe_model *m, const moe_nodes *nd, moe_block *b, size_t nb);
/* Expert outputs of MLP experts into b->eo (all experts, all rows). */
void moe_block_experts_mlp(const moe_model *m, moe_block *b, size_t nb);

/* ---- input-dependent variances (nn.c) --------------------------------------- */

#include <math.h>

/* var[i * ldv + p] = cov_kpp + exp(min(a[i * lda + p], MOE_LOG_VAR_MAX)) for
 * n rows of expert k's log-variance head outputs a (P each); var may be a. */
void moe_lv_variance(const moe_model *m, size_t k, size_t n, const double *a, size_t lda,
                     double *var, size_t ldv);

/* log N(t; mu, diag(var)) over P outputs (inline: training, prediction and
 * forward.c's posterior pass all use it). */
static inline double moe_gauss_diag_logdens(size_t P, const double *t, const double *mu,
                                            const double *var) {
    double s = (double)P * 1.8378770664093454836; /* log(2 pi) */
    for (size_t p = 0; p < P; p++) {
        double e = t[p] - mu[p];
        s += log(var[p]) + e * e / var[p];
    }
    return -0.5 * s;
}

/* For moe_block_posterior: ld[k] = the log-density of row i's standardised
 * target (b->tgt) under every expert k with the row's variances (b->ev). */
static inline void moe_block_logdens_lv(const moe_model *m, const moe_block *b, size_t i,
                                        double *ld) {
    size_t K = m->n_leaves, P = m->n_out;
    const double *t = b->tgt + i * P;
    for (size_t k = 0; k < K; k++)
        ld[k] = moe_gauss_diag_logdens(P, t, b->eo + (i * K + k) * P, b->ev + (i * K + k) * P);
}

/* ---- top-k gating (topk.c) ------------------------------------------------ */

/* The k largest of v[0..n-1] (ties: lower index first), their indices in
 * increasing index order into idx[0..k'-1], k' = min(k, n). Returns k'. */
size_t moe_topk_select(const double *v, size_t n, size_t k, size_t *idx);

/* Top-k version of the softmax part of moe_block_gates: each reached gate
 * keeps its top_k children, log-softmax renormalised over them (the others
 * -inf), log priors down the tree, active leaves into b->act / b->n_act. */
void moe_block_gates_topk(const moe_model *m, const moe_nodes *nd, moe_block *b, size_t nb);

/* Expert outputs (b->eo) of the active leaves only: rows grouped by expert
 * (counting sort), each expert applied to its rows as one product. Entries
 * of inactive leaves are left untouched. Needs moe_block_gates. */
void moe_block_experts_sparse(const moe_model *m, moe_block *b, size_t nb);

/* ---- gradient training (grad.c); the hooks the gradient tests use ---------- */

typedef struct moe_grad_state moe_grad_state;

/* The trainer's state for model m (its shape fields and arrays set) on data
 * d. Parameters live in m's arrays plus the trainer's noise heads and
 * variance parameters (var = var_floor + exp(s)). */
moe_status moe_grad_state_create(moe_grad_state **out, moe_model *m, const moe_dataset *d,
                                 const moe_grad_params *g, const moe_train_params *p);
void moe_grad_state_free(moe_grad_state *s);
size_t moe_grad_state_n_params(const moe_grad_state *s);
/* Parameter i of the flat vector (gate hidden, gate heads, noise heads,
 * expert hidden, expert heads, variance parameters). */
double *moe_grad_state_param(moe_grad_state *s, size_t i);
/* The training objective of rows[0..n) (n <= batch; noise from noise_seed)
 * and, when grad is not NULL, its gradient (n_params doubles). */
double moe_grad_state_loss(moe_grad_state *s, const size_t *rows, size_t n, uint64_t noise_seed,
                           double *grad);
/* Random initial parameters. */
void moe_grad_state_init_params(moe_grad_state *s, uint64_t seed);

/* ---- EM: statistics and M-step (estep.c, mstep.c, softmax_step.c) ------- */

/* Parameters of the multinomial Newton systems above which the full
 * ((C-1) d)^2 Hessian is not formed: gates then keep its C-1 diagonal
 * d x d blocks (block-diagonal Newton), multinomial experts use the
 * Boehning bound alone (its matrix is a d x d Gram). softmax_step.c gives
 * the costs. */
#define MOE_NEWTON_MAX_PARAMS 160

/* The Newton Hessians are accumulated on a deterministic sample of about
 * this many blocks (every s-th block), then scaled to the full weight: a
 * subsampled Newton step (Roosta-Khorasani & Mahoney 2016). The gradient
 * and the bound's Gram matrix always use every row, and EM's damping
 * retries keep every iteration an ascent, so only speed depends on it. */
#define MOE_HESSIAN_SAMPLE_BLOCKS 32

typedef struct moe_fit moe_fit;

/* One Newton (or Boehning bound) ascent step for a weighted multinomial
 * logistic regression with reference class 0, from accumulated statistics:
 *   v     C x d coefficients (row 0 stays zero), updated in place
 *   grad  (C-1) x d gradient of the weighted log-likelihood
 *   gram  d x d  sum_i w_i z_i z_i^T (upper triangle filled at least)
 *   hess  ((C-1) d)^2 negative Hessian or NULL (bound step only)
 * damp < MOE_DAMP_GUARANTEED: the Newton step times 2^-damp, unchecked
 * (EM checks the log-likelihood and retries with more damping).
 * damp >= MOE_DAMP_GUARANTEED, or hess == NULL: a step accepted only where
 * Boehning's quadratic minoriser (Boehning 1992: -Hessian <= 1/2 (I -
 * 11'/C) (x) sum w z z') guarantees that the objective does not decrease.
 * work: see moe_softmax_work_size.
 * Returns the guaranteed increase (>= 0), or -1 on a numerical failure
 * (v unchanged). */
#define MOE_DAMP_GUARANTEED 6
double moe_softmax_step(double *v, size_t C, size_t d, const double *grad, const double *gram,
                        const double *hess, double ridge, int damp, double *work);
size_t moe_softmax_work_size(size_t C, size_t d);

/* Weighted multinomial statistics of one block (added to grad, gram, hess):
 * rows i < nb with design z (nb x d), weights w (nb), targets t (nb x C,
 * each row summing to 1 where w > 0), probabilities p (nb x C, ld_p). gram
 * and hess may be NULL (not wanted). scratch holds nb * max(C + d, (C - 1) d) doubles. */
void moe_softmax_accumulate(size_t nb, size_t C, size_t d, const double *z, const double *w,
                            const double *t, size_t ld_t, const double *p, size_t ld_p,
                            double *grad, double *gram, double *hess, double *scratch);

/* The state of one EM fit: the data, the current parameters, the layout of
 * the sufficient statistics and the workspaces (em.c creates it). */
struct moe_fit {
    const moe_source *src;     /* the rows (in memory, a file, or a shard) */
    const moe_reducer *reducer;/* NULL: one process */
    moe_model *m;              /* current parameters (standardised scale) */
    moe_nodes nd;
    size_t n_rows;             /* rows of a pass: rows [row_base, row_base + n_rows) */
    size_t row_base;           /* of the source (online EM's minibatch windows) */
    size_t cap_rows;           /* n_rows may shrink below this between passes */
    int n_threads;
    /* Slabs: fixed groups of blocks of the rows of *every* process
     * (lay_total rows, of which this process holds [lay_off, lay_off +
     * n_rows)). Each slab's statistics are summed in row order, the slabs in
     * slab order; over several processes the slabs are gathered first, so
     * the model is bit-for-bit the same for any thread count and, when the
     * shards are whole slabs (moe_shard_rows), any process count. */
    size_t lay_total, lay_off;
    size_t n_blocks, n_slabs, max_slabs;
    size_t chunk_rows;         /* rows per read of the source, a multiple of
                                  MOE_BLOCK_ROWS */
    moe_row_buffers *bufs;     /* [n_threads] rows lent to the source */
    double *buf_mem;
    int32_t *buf_lab;
    moe_error io_err;          /* the first read error of a pass */
    int io_failed;
    int check_in_pass;         /* moe_fit_pass checks every row it reads (online EM:
                                  the rows are read once per minibatch, not scanned
                                  first) */

    /* Data summaries (moe_fit_prepare), over every process's rows. */
    double sum_w;              /* sum of case weights */
    double n_used;             /* rows of positive weight */
    double n_total;            /* rows */

    /* Statistics layout (offsets into one array of stat_size doubles):
     *   [0] the objective EM increases: the weighted log-likelihood
     *   (standardised scale), or sparse EM's bound F; [1] entropy EN of the
     *   posteriors used; [2] failed reads (or checks); [3] the weighted
     *   log-likelihood; [4] the sum of the case weights,
     *   esw[K]  posterior weight of each expert,
     *   regression: eg[K][(ed+P)^2]  Gram of [z, t] weighted by w h_k;
     *   classification: egrad[K][(C-1)ed], egram[K][ed^2], ehess[K][((C-1)ed)^2 + 1];
     *   gate g: ggrad[g], ggram[g], ghess[g] (ghess only when Newton is used).
     * A Hessian's extra last slot holds the weight of the rows it sampled. */
    size_t off_esw, off_eg, off_egrad, off_egram, off_ehess;
    size_t *off_ggrad, *off_ggram, *off_ghess; /* [G]; off_ghess SIZE_MAX = bound only */
    int e_newton;
    size_t hess_stride;        /* Hessians use blocks blk % hess_stride == 0 */
    /* Sparse EM (params.sparse_k < K; sparse_em.c): per thread, scratch of
     * moe_sparse_scratch() doubles and moe_sparse_iscratch() indices (kept
     * leaves, pending pairs, sorting). With sparse_full > 1
     * the rows' state: kept leaves and their log priors [n_rows k], and the
     * kind of the next pass (MOE_PASS_*), which EM chooses. */
    size_t sparse_k;
    double *sp_mem;
    size_t sp_stride;
    size_t *sp_idx;
    size_t sp_istride;
    int sp_full;               /* a full pass every sp_full iterations */
    int sp_pass;
    int sp_have_keep;          /* sp_keep holds the kept leaves of a full pass */
    int sp_have_prior;         /* sp_lprior holds the current gates' priors */
    /* A full pass that computes the kept leaves' posteriors alone, from the
     * log joints (moe_block_forward_joint, moe_sparse_keep): k exps a row, not
     * K; its stats[3] is F, not the log-likelihood (EM asks for a pass with
     * sp_lean 0 for that). */
    int sp_lean;
    /* Tests: sparse EM's full passes take the general path even where
     * sparse_full.c's would do (moe_sparse_full_fits). */
    int sp_general;
    /* Flat trees (one gate, whose posterior is 1 on every row): the gate
     * steps once a cycle, after the last kept pass, from the full pass's
     * statistics of the gate alone (saved in sp_gsave: the gate's slots,
     * [off_ggrad[0], stat_size), with the gradient's prior part) and that
     * pass's posteriors (sp_gate_part: it adds them); see sparse_em.c. */
    int sp_defer;
    int sp_gate_part;          /* this pass sums the gate's MOE_GATE_* part */
    double *sp_gsave;
    int32_t *sp_keep;
    double *sp_lprior;
    /* Kept passes' sort of their pairs by expert (sparse_em.c, flush): each
     * pair's place in its group of blocks' sort [n_rows k], recorded by a
     * cycle's first kept pass (sp_sorted 0), then used (1); a full pass,
     * which changes the kept leaves, clears it. */
    int32_t *sp_pos;
    int sp_sorted;
    size_t stat_size;
    double *slab;              /* [max_slabs x stat_size] */
    double *stats;             /* [stat_size] the sums, in slab order */
    double *stats_prev;        /* [stat_size] statistics of the last accepted parameters */
    moe_block *blocks;         /* [n_threads] */

    /* Initialisation pass: responsibilities replace the E-step's posteriors. */
    int init_mode;             /* 0 none, 1 random (init_seed), 2 k-means centres */
    uint64_t init_seed;
    /* k-means (init.c): a sample of the rows' features, drawn once per fit,
     * and the tree of centres of the current restart. */
    size_t km_dim;             /* standardised expert inputs + target (or one-hot) */
    size_t km_n;               /* rows in the sample (0: not drawn yet) */
    double *km_feat;           /* [km_n x km_dim] */
    double *km_w;              /* [km_n] case weights */
    double *km_cen;            /* centres of every tree node below the root */
    size_t km_level_off[MOE_MAX_DEPTH];

    double ridge, var_floor, min_support;
    unsigned char *frozen;     /* [K] expert frozen for lack of support */
    unsigned char *floored;    /* [K] a variance sits at the floor */
    double *work;              /* M-step workspace */
    size_t work_size;

    moe_event *events;
    size_t n_events, cap_events;
    int iter;                  /* EM iterations done in the current run */
};

/* ---- sparse EM (sparse_em.c) --------------------------------------------- */

/* Kinds of pass of sparse EM (see sparse_em.c); dense EM's is FULL. */
enum { MOE_PASS_FULL = 0, MOE_PASS_REFRESH = 1, MOE_PASS_KEPT = 2 };
/* What a pass sums of a deferred gate step (moe_fit.sp_gate_part): the
 * whole gradient sum w (h - g) z (dense EM, and every gate otherwise); a
 * full pass's prior part -sum w g z (its posteriors' part left out) with
 * the Hessian and Gram; a kept pass's posterior part sum w h z; or none. */
enum { MOE_GATE_WHOLE = 0, MOE_GATE_PRIOR = 1, MOE_GATE_POST = 2, MOE_GATE_NONE = 3 };

/* Doubles and indices of per-thread scratch sparse EM needs for a model
 * and k (fit.c; the indices zeroed). */
size_t moe_sparse_scratch(const moe_model *m, size_t k);
size_t moe_sparse_iscratch(const moe_model *m, size_t k);

/* After a full E-step of nb rows: keep each row's k largest leaf
 * posteriors (ties to the lower index), renormalised, the others 0, the
 * gates' posteriors summed again. lmass[i] receives the log of the kept
 * mass, b->ent[i] the kept posteriors' entropy, kept[i k + r] the kept
 * leaves (largest first), hk[i k + r] their posteriors. With f->sp_keep,
 * also records the kept leaves and their log priors of the rows row ..
 * row + nb - 1 (this process's row numbers). */
void moe_sparse_keep(const moe_fit *f, moe_block *b, size_t nb, size_t row, double *lmass,
                     size_t *kept, double *hk);

/* moe_sparse_keep's steps from the log joints, for a caller that chose
 * each row's largest (sparse_full.c). moe_sparse_keep_choice: a row whose
 * n <= k largest log joints l[0 .. n-1] are chosen in top (largest first,
 * ties to the lower index): with n = 0 (no finite one) the k largest log
 * priors lp[0 .. K-1] instead (lp a copy, which may be overwritten) and
 * *lmass = -inf, else *lmass = 0; the rest of top filled with the first
 * leaves not chosen (l = -inf); h[r] = l[r] - l[0]. Then, once the block's
 * rows are chosen (their kept log joints in b->ld, nb k of them),
 * moe_sparse_keep_tail: the posteriors hk, F_i in b->ll, the entropy in
 * b->ent, and the rows' state (lpk[i k + r]: the kept leaves' log priors,
 * or NULL: b->lp's). */
void moe_sparse_keep_choice(const moe_fit *f, size_t n, double *lp, size_t *top, double *l,
                            double *h, double *lmass);
void moe_sparse_keep_tail(const moe_fit *f, moe_block *b, size_t nb, size_t row,
                          const double *lmass, const size_t *kept, double *hk, const double *lpk);

/* Sparse EM's full pass (lean: a flat gate's deferred step, or every
 * iteration full) for a flat linear gate over linear Gaussian experts with one target on the same
 * inputs, k <= 4, on AVX-512 (sparse_full.c): moe_sparse_full_fits says
 * whether the fit's pass can take it; moe_sparse_full_block then replaces
 * moe_block_forward_joint and moe_sparse_keep for the block's nb rows x
 * (rows of the inputs, leading dimension ld_x) and targets y (ld_y),
 * leaving what accumulate_block reads next (ze, tgt, gp, ll, ent and
 * moe_sparse_keep's outputs) with the same bits when K and the inputs
 * are at most 64 (moe_gemm_nt's maps; BLAS's beyond). */
int moe_sparse_full_fits(const moe_fit *f);
void moe_sparse_full_block(const moe_fit *f, moe_block *b, size_t nb, const double *x,
                           size_t ld_x, const double *y, size_t ld_y, size_t row, double *lmass,
                           size_t *kept, double *hk);

/* Gaussian experts: where thread tid writes the next block's nb rows [z,
 * t] (q doubles each; row: the block's first, this process's numbering),
 * after the pending blocks' (whose Grams it sums into st first when there
 * is no room). Kept passes (moe_sparse_block) stage their pairs there; a
 * full pass's moe_sparse_gram then adds
 * the block's kept pairs, pair (i, r) weighted by wt[i] hk[i k + r] for
 * expert kept[i k + r], to the pending ones: the Gram matrices (upper
 * triangles) of a few blocks' pairs are summed at once, sorted by expert,
 * each expert's run in registers (and the slab's last at
 * moe_sparse_slab_end); the weights now. */
double *moe_sparse_rows(const moe_fit *f, size_t tid, size_t row, size_t nb, double *st);
void moe_sparse_gram(const moe_fit *f, size_t tid, const double *wt, size_t nb,
                     const size_t *kept, const double *hk, double *st);
/* The end of a slab (once, after its last block): a kept or refresh pass
 * gathers the pairs of a few blocks before summing their Grams
 * (moe_sparse_block): the thread's pending ones into st; then, in the
 * cycle's last kept pass, a flat gate's posterior part from the experts'
 * Grams when the gate's inputs are theirs. */
void moe_sparse_slab_end(const moe_fit *f, size_t tid, double *st);

/* moe_sparse_keep's choice on a given instruction set (-1 when this
 * machine lacks it): the k largest of h[0 .. K-1] (k <= K) above lo into
 * top, largest first, ties to the lower index; NaNs and values <= lo
 * never (posteriors: numbers >= 0, NaN or -inf, with lo = -1; log joints:
 * lo = -inf); vals[r] = h[top[r]]. The chosen entries of h may become
 * -inf (the rounds of k > 4 or without AVX-512 set them). Returns how
 * many it chose (fewer than k when the rest are NaN or <= lo). */
int moe_sparse_topk_isa(int isa, double *h, size_t K, size_t k, double lo, size_t *top,
                        double *vals);

/* moe_sparse_gram's kernel (sparse_gram.c) on a given instruction set (-1
 * when this machine lacks it): for each expert j < K, the pairs cnt[j-1]
 * .. cnt[j] - 1 (cnt[-1] = 0), pair s the row at u + roff[s] (q doubles) with
 * weight ws[s], each entry a <= c of G_j = eg + j q q gets
 * sum_s u_sa (ws[s] u_sc), summed from 0 in pair order by fused
 * multiply-adds where moe_gram_fused(isa) says so, then added. Entries
 * below the diagonal may be written too. */
int moe_sparse_runs_isa(int isa, size_t K, size_t q, const size_t *cnt, const size_t *roff,
                        const double *ws, const double *u, double *eg);

/* A refresh or kept pass over rows i0 .. i0 + nb - 1 of v (this process's
 * rows row ..): posteriors over the recorded kept leaves, F, and the
 * experts' statistics into st (Gaussian experts' Grams when a group of
 * blocks is full, or at moe_sparse_slab_end; the gates' stay zero but for
 * a flat gate's posterior part, moe_fit.sp_gate_part). */
void moe_sparse_block(const moe_fit *f, moe_block *b, const moe_rows *v, size_t i0, size_t nb,
                      size_t row, int with_hess, double *st);


/* Create / free the fit state for a model shape and row source. */
moe_status moe_fit_create(moe_fit **out, moe_model *m, const moe_source *src,
                          const moe_train_params *params);
void moe_fit_free(moe_fit *f);

/* Rows of the following passes: [row0, row0 + n) of the source, n <=
 * f->cap_rows (online EM's minibatches; one process). */
void moe_fit_window(moe_fit *f, size_t row0, size_t n);

/* Slab layout over `total` rows of every process, of which this process
 * holds rows [off, off + n_rows); also sets the Hessian sampling stride. */
void moe_fit_layout(moe_fit *f, size_t total, size_t off);

/* Layout rows [*q0, *q1) of slab s that this process holds (empty when
 * *q0 == *q1); layout row q is row q - lay_off + row_base of the source. */
void moe_fit_slab_rows(const moe_fit *f, size_t s, size_t *q0, size_t *q1);

/* One pass over the rows: posteriors under f->m and the sufficient
 * statistics into f->stats, summed over every process. Returns
 * MOE_STATUS_OK, or the error of a failed read (on every process). The
 * log-likelihood (standardised scale) is f->stats[0]. */
moe_status moe_fit_pass(moe_fit *f, moe_error *err);

/* Sum buf[0..n) over the processes (nothing with one process). Returns
 * MOE_STATUS_OK or MOE_STATUS_IO when the reducer fails. */
moe_status moe_fit_reduce(const moe_fit *f, double *buf, size_t n, moe_error *err);

/* The data pass before EM (scan.c): checks every value the model reads
 * (finite inputs and targets, labels in range, weights >= 0), fills
 * sum_w, n_used and n_total, reports absent classes and constant columns,
 * and sets the model's standardisation (weighted means and standard
 * deviations, two passes). */
moe_status moe_fit_prepare(moe_fit *f, moe_error *err);

/* The checks of moe_fit_prepare on rows [0, n) of a view, which are rows
 * r0.. of the source: finite inputs and targets, labels in range, weights
 * finite and >= 0. The first bad value becomes the error (naming its row
 * and column). */
moe_status moe_fit_check_rows(const moe_fit *f, const moe_rows *v, size_t r0, size_t n,
                              moe_error *err);

/* The M-step from f->stats: updates f->m (and records events). damp: the
 * damping level of the softmax steps (see moe_softmax_step). */
void moe_fit_mstep(moe_fit *f, int damp);

/* Record an event of the current run. */
void moe_fit_event(moe_fit *f, moe_event_kind kind, int expert, int column, double value);

/* k-means centres for initialisation (init.c): draws the fit's sample on
 * first use, clusters it with the seed and stores the tree of centres in
 * f->km_cen; the initialisation pass then sends each row to the leaf of its
 * nearest centres (moe_kmeans_leaf). */
moe_status moe_kmeans_fit(moe_fit *f, uint64_t seed, moe_error *err);

/* The leaf (0..K-1) of a row under f->km_cen: its features are the
 * standardised expert inputs z[n_ecols] then the standardised targets
 * t[P] (regression) or the one-hot class `label` (classification). */
size_t moe_kmeans_leaf(const moe_fit *f, const double *z, const double *t, int32_t label);

/* ---- vector math (vmath.c) ------------------------------------------------ */

/* The instruction sets each vectorised kernel (vmath.c, gram.c,
 * forward.c) is compiled for: the baseline, AVX2 with FMA, AVX-512F; every
 * version gives the same bits (no reordered sums, and a fused multiply-add
 * only where every version fuses it). moe_isa_best: the widest this
 * machine runs (BASE off x86-64 or with MOE_NO_TARGET_CLONES);
 * moe_isa_has: whether it runs isa. */
enum { MOE_ISA_BASE = 0, MOE_ISA_AVX2 = 1, MOE_ISA_AVX512 = 2 };
int moe_isa_best(void);
int moe_isa_has(int isa);

/* How a file compiles a function once per instruction set: the body as a
 * MOE_ISA_INLINE function, one wrapper per set (MOE_ISA_VERSIONS) and a
 * call through MOE_ISA_CALL. Contraction must be off where they are used
 * (GCC in ISO C mode; clang: #pragma STDC FP_CONTRACT OFF). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(MOE_NO_TARGET_CLONES)
#define MOE_ISA_X86 1
#else
#define MOE_ISA_X86 0
#endif
#define MOE_ISA_INLINE static inline __attribute__((always_inline))
#if MOE_ISA_X86
#define MOE_ISA_VERSIONS(V)                                                                     \
    V(base, )                                                                                   \
    V(avx2, __attribute__((target("avx2,fma"))))                                                \
    V(avx512, __attribute__((target("avx512f"))))
#define MOE_ISA_CALL(isa, f, ...)                                                               \
    ((isa) == MOE_ISA_AVX512 ? f##_avx512(__VA_ARGS__)                                          \
     : (isa) == MOE_ISA_AVX2 ? f##_avx2(__VA_ARGS__)                                            \
                             : f##_base(__VA_ARGS__))
#else
#define MOE_ISA_VERSIONS(V) V(base, )
#define MOE_ISA_CALL(isa, f, ...) ((void)(isa), f##_base(__VA_ARGS__))
#endif
/* MOE_ISA_ID(SFX): the version's MOE_ISA_ constant, for the kernels whose
 * bodies differ by version (a constant there: the choice is made at
 * compile time). MOE_ISA_FMA_BASE: whether the baseline version takes
 * fused multiply-adds where written (__builtin_fma; contraction stays
 * off) as AVX2 and AVX-512 do: where the compiler says fma is fast
 * (FP_FAST_FMA, e.g. ARMv8), not on x86-64's baseline, where it would be
 * a slow library call on processors without the instruction.
 * moe_isa_fma(isa): whether version isa takes them. */
#define MOE_ISA_ID(SFX) MOE_ISA_ID_##SFX
#define MOE_ISA_ID_base MOE_ISA_BASE
#define MOE_ISA_ID_avx2 MOE_ISA_AVX2
#define MOE_ISA_ID_avx512 MOE_ISA_AVX512
#if defined(FP_FAST_FMA)
#define MOE_ISA_FMA_BASE 1
#else
#define MOE_ISA_FMA_BASE 0
#endif
int moe_isa_fma(int isa);

/* y[i] = exp(x[i]) and y[i] = log(x[i]) for i < n (y may be x), under 1 ulp,
 * for every input including subnormal results, overflow, 0, negatives,
 * +-inf and NaN. Vectorised, with the same bits on every path and thread
 * count; log's on every instruction set, exp's on every one with fused
 * multiply-adds and on every one without (vmath.c says why). */
void moe_vexp(double *y, const double *x, size_t n);
void moe_vlog(double *y, const double *x, size_t n);

/* C (m x n, ldc) = A (m x k, lda) times B' (B n x k, ldb), for small n and
 * k; bt holds k * n doubles. Sums over k in order, vectorised over n. */
void moe_gemm_nt(size_t m, size_t n, size_t k, const double *A, size_t lda, const double *B,
                 size_t ldb, double *C, size_t ldc, double *bt);

/* The same on a given instruction set (tests); -1 when this machine lacks
 * it. */
int moe_vexp_isa(int isa, double *y, const double *x, size_t n);
int moe_vlog_isa(int isa, double *y, const double *x, size_t n);
int moe_gemm_nt_isa(int isa, size_t m, size_t n, size_t k, const double *A, size_t lda,
                    const double *B, size_t ldb, double *C, size_t ldc, double *bt);

/* ---- the Gaussian experts' Gram matrices (gram.c) ------------------------- */

/* For one block of nb rows u (nb x q, row-major), posteriors h (nb x K,
 * leading dimension ldh) and case weights w (NULL: all 1), for every
 * expert k < K and a <= b < q:
 *   G[k q^2 + a q + b] += sum_i ((w_i h_ik) u_ia) u_ib
 * (upper triangles only; the lower ones are left as they are), each sum
 * from 0 in row order by fused multiply-adds and then added to G, so the
 * versions give the same bits (gram.c: but for the baseline one on a
 * processor without FMA). sw (NULL: not wanted) gets sw[k] += the block's part of
 * G_k[0][0], which is sum_i w_i h_ik when u's first column is the
 * intercept 1. scratch: moe_gram_scratch_size(nb) doubles. Cost: K q(q+1)
 * flops per row (gram.c). */
void moe_gram_accumulate(size_t nb, size_t K, size_t q, const double *u, const double *h,
                         size_t ldh, const double *w, double *G, double *sw, double *scratch);
size_t moe_gram_scratch_size(size_t nb);
/* The same sums, bit for bit, with u = [z, t] given as z (nb x ed) and one
 * target t (nb), q = ed + 1, without copying them into u. Returns 0, or -1
 * (nothing done) when the rows are too wide for its kernel (ed + 1 > 24
 * with AVX-512, 12 otherwise). */
int moe_gram_accumulate_zt(size_t nb, size_t K, size_t ed, const double *z, const double *t,
                           const double *h, size_t ldh, const double *w, double *G, double *sw,
                           double *scratch);

/* The gradient and Gram of a weighted multinomial log-likelihood over one
 * block, as moe_softmax_accumulate computes them (without the Hessian) and
 * in its order: for c < C - 1, j < d, a <= b < d,
 *   grad[c d + j] += sum_i r_ic z_ij, r_ic = w_i (t[i ld_t + c + 1] - p[i ld_p + c + 1]),
 *   gram[a d + b] += sum_i (sqrt(w_i) z_ia) (sqrt(w_i) z_ib),
 * each sum from 0 in row order by fused multiply-adds, then added (the
 * order of OpenBLAS's kernels, so the bits are theirs). Cost per row:
 * 2 (C - 1) d + d (d + 1) flops, vectorised over the classes and over the
 * Gram's columns; gram NULL: the gradient only. scratch:
 * moe_gram_softmax_scratch_size(nb, d) doubles. */
void moe_gram_softmax(size_t nb, size_t C, size_t d, const double *z, const double *w,
                      const double *t, size_t ld_t, const double *p, size_t ld_p, double *grad,
                      double *gram, double *scratch);
size_t moe_gram_softmax_scratch_size(size_t nb, size_t d);

/* The same on a given instruction set (tests); -1 when this machine lacks
 * it. moe_gram_fused: whether that version fuses the multiply-adds (all
 * but the baseline one on a processor without a fast fma do). */
int moe_gram_fused(int isa);
int moe_gram_accumulate_isa(int isa, size_t nb, size_t K, size_t q, const double *u,
                            const double *h, size_t ldh, const double *w, double *G, double *sw,
                            double *scratch);
int moe_gram_accumulate_zt_isa(int isa, size_t nb, size_t K, size_t ed, const double *z,
                               const double *t, const double *h, size_t ldh, const double *w,
                               double *G, double *sw, double *scratch);
int moe_gram_softmax_isa(int isa, size_t nb, size_t C, size_t d, const double *z, const double *w,
                         const double *t, size_t ld_t, const double *p, size_t ld_p, double *grad,
                         double *gram, double *scratch);

/* Doubles of the negative Hessian moe_softmax_accumulate fills and
 * moe_softmax_step reads for C classes over d inputs (without the sampled
 * weight slot that follows it in the statistics): ((C-1) d)^2, or the
 * C-1 diagonal d x d blocks, (C-1) d^2, when (C-1) d exceeds
 * MOE_NEWTON_MAX_PARAMS. */
size_t moe_softmax_hess_size(size_t C, size_t d);

#endif /* MOE_IMPL_H */
