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
#define KMEANS_SAMPLE 20000

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

/* k-means on the rows idx[0..n-1] of feat (dim columns) into K clusters:
 * lab[i] in 0..K-1 for row idx[i]. w: row weights or NULL. cen holds K*dim,
 * cnt K and dist n doubles. */
static void kmeans(const double *feat, size_t dim, const double *w, const size_t *idx, size_t n,
                   size_t K, moe_rng *rng, int32_t *lab, double *cen, double *cnt, double *dist) {
    double tot = 0.0;
    for (size_t i = 0; i < n; i++) tot += w ? w[idx[i]] : 1.0;
    /* k-means++: the first centre with probability proportional to w, each
     * next one proportional to w D^2. */
    for (size_t k = 0; k < K; k++) {
        size_t pick = 0;
        double u = moe_rng_uniform(rng), acc = 0.0, s = tot;
        if (k > 0) {
            s = 0.0;
            for (size_t i = 0; i < n; i++) s += (w ? w[idx[i]] : 1.0) * dist[i];
        }
        if (!(s > 0.0)) {
            /* Fewer distinct points than clusters: any row will do. */
            pick = (size_t)(u * (double)n);
            if (pick >= n) pick = n - 1;
        } else {
            for (size_t i = 0; i < n; i++) {
                acc += (w ? w[idx[i]] : 1.0) * (k == 0 ? 1.0 : dist[i]) / s;
                pick = i;
                if (acc > u) break;
            }
        }
        memcpy(cen + k * dim, feat + idx[pick] * dim, dim * sizeof(double));
        const double *c = cen + k * dim;
        for (size_t i = 0; i < n; i++) {
            const double *f = feat + idx[i] * dim;
            double e = 0.0;
            for (size_t j = 0; j < dim; j++) e += (f[j] - c[j]) * (f[j] - c[j]);
            if (k == 0 || e < dist[i]) dist[i] = e;
        }
    }
    for (int it = 0; it <= LLOYD_ITERS; it++) {
        int changed = 0;
        for (size_t i = 0; i < n; i++) {
            const double *f = feat + idx[i] * dim;
            double best = INFINITY;
            int32_t bk = 0;
            for (size_t k = 0; k < K; k++) {
                double e = 0.0;
                for (size_t j = 0; j < dim; j++) {
                    double t = f[j] - cen[k * dim + j];
                    e += t * t;
                }
                if (e < best) {
                    best = e;
                    bk = (int32_t)k;
                }
            }
            if (it == 0 || lab[i] != bk) changed = 1;
            lab[i] = bk;
        }
        if (!changed || it == LLOYD_ITERS) break;
        memset(cen, 0, K * dim * sizeof(double));
        memset(cnt, 0, K * sizeof(double));
        for (size_t i = 0; i < n; i++) {
            double wi = w ? w[idx[i]] : 1.0;
            cnt[lab[i]] += wi;
            for (size_t j = 0; j < dim; j++) cen[(size_t)lab[i] * dim + j] += wi * feat[idx[i] * dim + j];
        }
        for (size_t k = 0; k < K; k++) {
            if (cnt[k] > 0.0) {
                for (size_t j = 0; j < dim; j++) cen[k * dim + j] /= cnt[k];
            } else {
                /* An empty cluster takes a random row. */
                size_t pick = (size_t)(moe_rng_uniform(rng) * (double)n);
                if (pick >= n) pick = n - 1;
                memcpy(cen + k * dim, feat + idx[pick] * dim, dim * sizeof(double));
            }
        }
    }
}

/* For a tree, the clusters follow its shape: k-means into b_0 clusters,
 * then each cluster into b_1, and so on, so that leaves under one gate
 * start from neighbouring clusters. The clustering runs on a sample of at
 * most about KMEANS_SAMPLE rows (Bernoulli sampling with the seed); every
 * row then descends the tree of centres to its leaf. Memory: O(sample + K). */
moe_status moe_kmeans_labels(const moe_fit *f, uint64_t seed, int32_t *labels) {
    const moe_model *m = f->m;
    const moe_dataset *d = f->data;
    size_t N = f->n_rows, K = m->n_leaves, L = m->tree.n_levels;
    size_t dim = m->n_ecols + (m->task == MOE_TASK_REGRESSION ? m->n_out : m->n_cls);
    size_t bmax = 1, n_nodes = 0, width = 1;
    size_t level_off[MOE_MAX_DEPTH + 1];
    for (size_t l = 0; l < L; l++) {
        if (m->tree.branching[l] > bmax) bmax = m->tree.branching[l];
        width *= m->tree.branching[l];
        level_off[l] = n_nodes;
        n_nodes += width;
    }
    moe_rng rng;
    moe_rng_seed(&rng, seed);
    size_t n_pos = 0;
    for (size_t i = 0; i < N; i++) n_pos += !d->weights || d->weights[i] > 0.0;
    double keep = n_pos > KMEANS_SAMPLE ? (double)KMEANS_SAMPLE / (double)n_pos : 1.0;
    size_t S = 0, cap = (size_t)((double)n_pos * keep * 1.2) + 64;
    if (cap > n_pos) cap = n_pos;
    moe_status st = MOE_STATUS_NO_MEMORY;
    size_t *rows = malloc((cap + 1) * sizeof(size_t));
    double *feat = NULL, *cen = NULL, *cnt = NULL, *dist = NULL, *node_cen = NULL, *w = NULL;
    size_t *idx = NULL, *sorted = NULL, *start = NULL, *nstart = NULL;
    int32_t *lab = NULL;
    if (!rows) goto done;
    for (size_t i = 0; i < N && S < cap; i++)
        if ((!d->weights || d->weights[i] > 0.0) && (keep >= 1.0 || moe_rng_uniform(&rng) < keep))
            rows[S++] = i;
    if (S == 0) { /* cannot happen: training needs rows of positive weight */
        memset(labels, 0, N * sizeof *labels);
        st = MOE_STATUS_OK;
        goto done;
    }
    feat = malloc(S * dim * sizeof(double));
    cen = malloc(bmax * (dim + 1) * sizeof(double));
    cnt = malloc(bmax * sizeof(double));
    dist = malloc(S * sizeof(double));
    node_cen = malloc((n_nodes + 1) * (dim + 1) * sizeof(double));
    w = malloc(S * sizeof(double));
    idx = malloc(S * sizeof(size_t));
    sorted = malloc(S * sizeof(size_t));
    lab = malloc(S * sizeof(int32_t));
    start = malloc((K + 1) * sizeof(size_t));
    nstart = malloc((K + 1) * sizeof(size_t));
    if (!feat || !cen || !cnt || !dist || !node_cen || !w || !idx || !sorted || !lab || !start ||
        !nstart)
        goto done;
    for (size_t s = 0; s < S; s++) {
        row_features(f, rows[s], feat + s * dim);
        w[s] = d->weights ? d->weights[rows[s]] : 1.0;
        idx[s] = s;
    }
    /* idx holds the sample grouped by its node at the current level;
     * group q spans idx[start[q] .. start[q+1]). */
    width = 1;
    start[0] = 0;
    start[1] = S;
    for (size_t l = 0; l < L; l++) {
        size_t b = m->tree.branching[l];
        size_t o = 0;
        for (size_t q = 0; q < width; q++) {
            size_t s0 = start[q], n = start[q + 1] - s0;
            double *nc = node_cen + (level_off[l] + q * b) * dim;
            if (n > 0) {
                kmeans(feat, dim, w, idx + s0, n, b, &rng, lab + s0, cen, cnt, dist);
                memcpy(nc, cen, b * dim * sizeof(double));
            } else {
                /* An empty group: its children sit on the parent's centre. */
                const double *pc = l ? node_cen + (level_off[l - 1] + q) * dim : NULL;
                for (size_t c = 0; c < b; c++)
                    for (size_t j = 0; j < dim; j++) nc[c * dim + j] = pc ? pc[j] : 0.0;
            }
            for (size_t c = 0; c < b; c++) {
                nstart[q * b + c] = o;
                for (size_t i = 0; i < n; i++)
                    if ((size_t)lab[s0 + i] == c) sorted[o++] = idx[s0 + i];
            }
        }
        width *= b;
        nstart[width] = S;
        memcpy(idx, sorted, S * sizeof(size_t));
        memcpy(start, nstart, (width + 1) * sizeof(size_t));
    }
    /* Every row descends to its leaf: the nearest child centre at each
     * level (cen is free now and holds dim doubles). */
    for (size_t i = 0; i < N; i++) {
        row_features(f, i, cen);
        size_t q = 0;
        for (size_t l = 0; l < L; l++) {
            size_t b = m->tree.branching[l], best = 0;
            double bd = INFINITY;
            for (size_t c = 0; c < b; c++) {
                const double *nc = node_cen + (level_off[l] + q * b + c) * dim;
                double e = 0.0;
                for (size_t j = 0; j < dim; j++) e += (cen[j] - nc[j]) * (cen[j] - nc[j]);
                if (e < bd) {
                    bd = e;
                    best = c;
                }
            }
            q = q * b + best;
        }
        labels[i] = (int32_t)q;
    }
    st = MOE_STATUS_OK;
done:
    free(rows);
    free(feat);
    free(cen);
    free(cnt);
    free(dist);
    free(node_cen);
    free(w);
    free(idx);
    free(sorted);
    free(lab);
    free(start);
    free(nstart);
    return st;
}
