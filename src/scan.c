/*
 * scan.c -- the data pass before EM: every value the model reads is
 * checked, the case weights and rows are counted, absent classes and
 * constant columns reported, and the inputs and targets standardised.
 *
 * The rows come from the fit's source in chunks, in row order, so a file
 * larger than memory is scanned in bounded memory and an in-memory data set
 * gives exactly the same sums. Over several processes the sums go through
 * the reducer (one call per pass). Two passes: weighted sums for the means,
 * then weighted squared deviations from them (accurate where the one-pass
 * formula cancels).
 */
#include "moe_impl.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* Pass 1 sums: [0] sum of weights, [1] rows of positive weight, then per
 * input column
 * the weighted sum, per output the weighted sum, per class the weight. */
enum { S_W, S_USED, S_HEAD };

moe_status moe_fit_check_rows(const moe_fit *f, const moe_rows *v, size_t r0, size_t n,
                              moe_error *err) {
    const moe_model *m = f->m;
    size_t base = f->src->first_row + r0;
    int no_x = !v->x && m->n_cols > 0;
    if (n > 0 && (no_x || (m->task == MOE_TASK_REGRESSION ? !v->y : !v->labels)))
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT,
                       "rows %zu..%zu: the source gave no %s", base + 1, base + n,
                       no_x ? "inputs" : m->task == MOE_TASK_REGRESSION ? "targets" : "labels");
    for (size_t i = 0; i < n; i++) {
        const double *x = v->x + i * v->ld_x;
        for (size_t j = 0; j < m->n_ecols + m->n_gcols; j++) {
            size_t c = j < m->n_ecols ? m->ecols[j] : m->gcols[j - m->n_ecols];
            if (!isfinite(x[c]))
                return moe_err_at(err, MOE_STATUS_DATA, NULL, base + i + 1, c + 1,
                                  "row %zu, column %zu: input is %g (not finite)", base + i + 1,
                                  c + 1, x[c]);
        }
        if (m->task == MOE_TASK_REGRESSION) {
            for (size_t p = 0; p < m->n_out; p++)
                if (!isfinite(v->y[i * v->ld_y + p]))
                    return moe_err_at(err, MOE_STATUS_DATA, NULL, base + i + 1, 0,
                                      "row %zu: target %zu is %g (not finite)", base + i + 1, p + 1,
                                      v->y[i * v->ld_y + p]);
        } else if (v->labels[i] < 0 || (size_t)v->labels[i] >= m->n_cls) {
            return moe_err_at(err, MOE_STATUS_DATA, NULL, base + i + 1, 0,
                              "row %zu: class label %d outside 0..%zu", base + i + 1,
                              (int)v->labels[i], m->n_cls - 1);
        }
        double w = v->weights ? v->weights[i] : 1.0;
        if (!(w >= 0.0) || !isfinite(w))
            return moe_err_at(err, MOE_STATUS_DATA, NULL, base + i + 1, 0,
                              "row %zu: case weight %g (must be finite and >= 0)", base + i + 1, w);
    }
    return MOE_STATUS_OK;
}

/* One pass over the rows, slab by slab (threads take whole slabs): pass 1
 * (mu == NULL) checks every row and adds weights, counts and weighted sums
 * into its slab's na sums; pass 2 the weighted squared deviations from mu
 * (inputs, then outputs). The slabs are gathered over the processes and
 * added in slab order into out[na], so the result depends neither on the
 * thread count nor on how whole slabs are spread over processes. */
static moe_status scan(moe_fit *f, const double *mu, size_t na, double *out, moe_error *err) {
    const moe_model *m = f->m;
    const moe_source *src = f->src;
    size_t D = m->n_cols, P = m->n_out, S = f->n_slabs, lo = f->lay_off;
    /* Each slab: na sums, then a flag set when its rows failed. */
    size_t ns = na + 1;
    double *slabs = calloc(S * ns, sizeof(double));
    if (!slabs) return MOE_STATUS_NO_MEMORY;
    f->io_failed = 0;
#pragma omp parallel for schedule(dynamic, 1) num_threads(f->n_threads)
    for (size_t s = 0; s < S; s++) {
        int tid = omp_get_thread_num();
        moe_row_buffers *buf = &f->bufs[tid];
        double *acc = slabs + s * ns;
        size_t q0, q1;
        moe_fit_slab_rows(f, s, &q0, &q1);
        for (size_t c0 = q0; c0 < q1; c0 += buf->max_rows) {
            size_t n = q1 - c0 < buf->max_rows ? q1 - c0 : buf->max_rows;
            size_t r0 = c0 - lo + f->row_base;
            moe_rows v;
            moe_error e;
            memset(&e, 0, sizeof e);
            moe_status st = src->read(src->ctx, r0, n, buf, &v, &e);
            if (st == MOE_STATUS_OK && !mu) st = moe_fit_check_rows(f, &v, r0, n, &e);
            if (st != MOE_STATUS_OK) {
#pragma omp critical(moe_scan_error)
                if (!f->io_failed || s < (size_t)f->io_failed - 1) {
                    f->io_failed = (int)s + 1;
                    f->io_err = e;
                }
                acc[na] = 1.0;
                break;
            }
            double *sx = acc + (mu ? 0 : S_HEAD), *sy = sx + D, *sc = sy + P;
            for (size_t i = 0; i < n; i++) {
                double w = v.weights ? v.weights[i] : 1.0;
                const double *x = v.x + i * v.ld_x;
                if (!mu) {
                    acc[S_W] += w;
                    acc[S_USED] += w > 0.0;
                    for (size_t c = 0; c < D; c++) sx[c] += w * x[c];
                    for (size_t p = 0; p < P; p++) sy[p] += w * v.y[i * v.ld_y + p];
                    if (m->task == MOE_TASK_CLASSIFICATION) sc[v.labels[i]] += w;
                } else {
                    for (size_t c = 0; c < D; c++) {
                        double d = x[c] - mu[c];
                        sx[c] += w * d * d;
                    }
                    for (size_t p = 0; p < P; p++) {
                        double d = v.y[i * v.ld_y + p] - mu[D + p];
                        sy[p] += w * d * d;
                    }
                }
            }
        }
    }
    /* A process whose rows fail still joins the sum (so that no process
     * waits for it forever); its flag tells the others. */
    moe_status st = moe_fit_reduce(f, slabs, S * ns, err);
    if (st == MOE_STATUS_OK) {
        double bad = 0.0;
        memset(out, 0, na * sizeof(double));
        for (size_t s = 0; s < S; s++) {
            for (size_t j = 0; j < na; j++) out[j] += slabs[s * ns + j];
            bad += slabs[s * ns + na];
        }
        if (f->io_failed) {
            if (err) *err = f->io_err;
            st = f->io_err.status != MOE_STATUS_OK ? f->io_err.status : MOE_STATUS_DATA;
        } else if (bad != 0.0) {
            st = moe_err(err, MOE_STATUS_DATA, "another process could not use its rows");
        }
    }
    free(slabs);
    return st;
}

moe_status moe_fit_prepare(moe_fit *f, moe_error *err) {
    moe_model *m = f->m;
    size_t D = m->n_cols, P = m->n_out, C = m->n_cls;
    size_t n1 = S_HEAD + D + P + C, n2 = D + P;
    double *acc = calloc(n1 + n2 + D + P + 1, sizeof(double));
    if (!acc) return MOE_STATUS_NO_MEMORY;
    double *sq = acc + n1, *mu = sq + n2;
    /* The rows of every process first: they fix the slabs. */
    double rows = (double)f->src->n_rows;
    moe_status st = moe_fit_reduce(f, &rows, 1, err);
    if (st != MOE_STATUS_OK) goto done;
    f->n_total = rows;
    size_t off = rows > (double)f->src->n_rows ? f->src->first_row : 0;
    if ((double)(off + f->src->n_rows) > rows) {
        st = moe_err(err, MOE_STATUS_INVALID_ARGUMENT,
                     "this process's rows %zu..%zu lie outside the %.0f rows of all processes",
                     off + 1, off + f->src->n_rows, rows);
        goto done;
    }
    moe_fit_layout(f, (size_t)rows, off);
    st = scan(f, NULL, n1, acc, err);
    if (st != MOE_STATUS_OK) goto done;
    f->sum_w = acc[S_W];
    f->n_used = acc[S_USED];
    if (!(f->sum_w > 0.0)) {
        st = moe_err(err, MOE_STATUS_DATA, f->n_total > 0 ? "all case weights are zero"
                                                          : "no rows to train on");
        goto done;
    }
    for (size_t j = 0; j < D + P; j++) mu[j] = acc[S_HEAD + j] / f->sum_w;
    st = scan(f, mu, n2, sq, err);
    if (st != MOE_STATUS_OK) goto done;
    /* Only the columns the model reads are standardised; a constant one
     * keeps scale 1 (its standardised value is 0) and is reported. */
    unsigned char *used = calloc(D + 1, 1);
    if (!used) {
        st = MOE_STATUS_NO_MEMORY;
        goto done;
    }
    for (size_t j = 0; j < m->n_ecols; j++) used[m->ecols[j]] = 1;
    for (size_t j = 0; j < m->n_gcols; j++) used[m->gcols[j]] = 1;
    for (size_t j = 0; j < D + P; j++) {
        double sd = sqrt(sq[j] / f->sum_w);
        int ok = sd > 1e-12 * (fabs(mu[j]) + 1e-300) && sd > 0.0 && isfinite(sd);
        if (j < D) {
            m->x_mean[j] = used[j] ? mu[j] : 0.0;
            m->x_scale[j] = used[j] && ok ? sd : 1.0;
            if (used[j] && !ok) {
                moe_log(MOE_LOG_LEVEL_WARN,
                        "input column %zu is constant (%g): it carries no information", j + 1,
                        mu[j]);
                moe_fit_event(f, MOE_EVENT_KIND_CONSTANT_COLUMN, -1, (int)j, mu[j]);
            }
        } else {
            m->y_mean[j - D] = mu[j];
            m->y_scale[j - D] = ok ? sd : 1.0;
        }
    }
    free(used);
    for (size_t c = 0; c < C; c++)
        if (acc[S_HEAD + D + P + c] == 0.0) {
            moe_log(MOE_LOG_LEVEL_WARN,
                    "class %zu has no rows: its probability will be driven towards 0", c);
            moe_fit_event(f, MOE_EVENT_KIND_ABSENT_CLASS, -1, (int)c, 0.0);
        }
done:
    free(acc);
    return st;
}
