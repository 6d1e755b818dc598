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

#endif /* MOE_IMPL_H */
