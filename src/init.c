/*
 * init.c -- k-means starting partitions (MOE_INIT_KMEANS).
 *
 * k-means++ seeding (Arthur & Vassilvitskii 2007) then Lloyd iterations on
 * the joint vector of the standardised expert inputs and the standardised
 * target (regression) or the one-hot class (classification). Rows of zero
 * weight take no part. Deterministic for a given seed; the distance pass is
 * row-parallel with per-row results only, so the thread count never
 * changes the partition.
 */
#include "moe_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define LLOYD_ITERS 25

/* Feature vector of row i into v (length dim). */
static void row_features(const moe_fit *f, size_t i, double *v) {
    const moe_model *m = f->m;
    const moe_dataset *d = f->data;
    const double *x = d->x + i * d->ld_x;
    size_t o = 0;
    for (size_t j = 0; j < m->n_ecols; j++) {
        size_t c = m->ecols[j];
        v[o++] = (x[c] - m->x_mean[c]) / m->x_scale[c];
    }
    if (m->task == MOE_TASK_REGRESSION) {
        for (size_t p = 0; p < m->n_out; p++)
            v[o++] = (d->y[i * d->ld_y + p] - m->y_mean[p]) / m->y_scale[p];
    } else {
        for (size_t c = 0; c < m->n_cls; c++) v[o++] = d->labels[i] == (int32_t)c ? 1.0 : 0.0;
    }
}

moe_status moe_kmeans_labels(const moe_fit *f, uint64_t seed, int32_t *labels) {
    const moe_model *m = f->m;
    const moe_dataset *d = f->data;
    size_t N = f->n_rows, K = m->n_leaves;
    size_t dim = m->n_ecols + (m->task == MOE_TASK_REGRESSION ? m->n_out : m->n_cls);
    moe_status st = MOE_STATUS_NO_MEMORY;
    double *feat = malloc(N * dim * sizeof(double));
    double *cen = malloc(K * dim * sizeof(double));
    double *cnt = malloc(K * sizeof(double));
    double *dist = malloc(N * sizeof(double));
    if (!feat || !cen || !cnt || !dist) goto done;
    for (size_t i = 0; i < N; i++) row_features(f, i, feat + i * dim);

    moe_rng rng;
    moe_rng_seed(&rng, seed);
    /* k-means++: the first centre uniformly among rows of positive weight,
     * each next one with probability proportional to w D^2. */
    double tot = 0.0;
    for (size_t i = 0; i < N; i++) tot += d->weights ? d->weights[i] : 1.0;
    for (size_t k = 0; k < K; k++) {
        size_t pick = 0;
        double u = moe_rng_uniform(&rng), acc = 0.0;
        if (k == 0) {
            for (size_t i = 0; i < N; i++) {
                acc += (d->weights ? d->weights[i] : 1.0) / tot;
                pick = i;
                if (acc > u) break;
            }
        } else {
            double s = 0.0;
            for (size_t i = 0; i < N; i++) s += (d->weights ? d->weights[i] : 1.0) * dist[i];
            if (!(s > 0.0)) {
                /* Fewer distinct points than clusters: any row will do. */
                pick = (size_t)(u * (double)N);
                if (pick >= N) pick = N - 1;
            } else {
                for (size_t i = 0; i < N; i++) {
                    acc += (d->weights ? d->weights[i] : 1.0) * dist[i] / s;
                    pick = i;
                    if (acc > u) break;
                }
            }
        }
        memcpy(cen + k * dim, feat + pick * dim, dim * sizeof(double));
        const double *c = cen + k * dim;
        for (size_t i = 0; i < N; i++) {
            double e = 0.0;
            for (size_t j = 0; j < dim; j++) e += (feat[i * dim + j] - c[j]) * (feat[i * dim + j] - c[j]);
            if (k == 0 || e < dist[i]) dist[i] = e;
        }
    }
    for (int it = 0; it <= LLOYD_ITERS; it++) {
        int changed = 0;
        for (size_t i = 0; i < N; i++) {
            double best = INFINITY;
            int32_t bk = 0;
            for (size_t k = 0; k < K; k++) {
                double e = 0.0;
                for (size_t j = 0; j < dim; j++) {
                    double t = feat[i * dim + j] - cen[k * dim + j];
                    e += t * t;
                }
                if (e < best) {
                    best = e;
                    bk = (int32_t)k;
                }
            }
            if (it == 0 || labels[i] != bk) changed = 1;
            labels[i] = bk;
        }
        if (!changed || it == LLOYD_ITERS) break;
        memset(cen, 0, K * dim * sizeof(double));
        memset(cnt, 0, K * sizeof(double));
        for (size_t i = 0; i < N; i++) {
            double w = d->weights ? d->weights[i] : 1.0;
            cnt[labels[i]] += w;
            for (size_t j = 0; j < dim; j++) cen[(size_t)labels[i] * dim + j] += w * feat[i * dim + j];
        }
        for (size_t k = 0; k < K; k++) {
            if (cnt[k] > 0.0) {
                for (size_t j = 0; j < dim; j++) cen[k * dim + j] /= cnt[k];
            } else {
                /* An empty cluster takes a random row. */
                size_t pick = (size_t)(moe_rng_uniform(&rng) * (double)N);
                if (pick >= N) pick = N - 1;
                memcpy(cen + k * dim, feat + pick * dim, dim * sizeof(double));
            }
        }
    }
    st = MOE_STATUS_OK;
done:
    free(feat);
    free(cen);
    free(cnt);
    free(dist);
    return st;
}
