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

/* Feature vector of view row i into v (length f->km_dim). */
static void row_features(const moe_fit *f, const moe_rows *rv, size_t i, double *v) {
    const moe_model *m = f->m;
    const double *x = rv->x + i * rv->ld_x;
    size_t o = 0;
    for (size_t j = 0; j < m->n_ecols; j++) {
        size_t c = m->ecols[j];
        v[o++] = (x[c] - m->x_mean[c]) / m->x_scale[c];
    }
    if (m->task == MOE_TASK_REGRESSION) {
        for (size_t p = 0; p < m->n_out; p++)
            v[o++] = (rv->y[i * rv->ld_y + p] - m->y_mean[p]) / m->y_scale[p];
    } else {
        for (size_t c = 0; c < m->n_cls; c++) v[o++] = rv->labels[i] == (int32_t)c ? 1.0 : 0.0;
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

/* A uniform number in [0, 1) that depends only on the seed and the row's
 * global index (so every process draws the same sample of its rows). */
static double row_uniform(uint64_t seed, size_t row) {
    uint64_t z = seed ^ (0x9e3779b97f4a7c15ULL * ((uint64_t)row + 1));
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53;
}

/* The sample k-means clusters: every row of positive weight with
 * probability KMEANS_SAMPLE / (rows of positive weight), drawn by row from
 * a fixed seed, the features in global row order. Over several processes
 * each places its rows at its offset in a zeroed array that one sum
 * gathers on every process. Memory: O(sample). */
static moe_status draw_sample(moe_fit *f, moe_error *err) {
    const moe_model *m = f->m;
    const moe_source *src = f->src;
    size_t dim = f->km_dim, N = src->n_rows;
    double keep = f->n_used > KMEANS_SAMPLE ? KMEANS_SAMPLE / f->n_used : 1.0;
    const uint64_t seed = 0x6b6d65616e73ULL; /* "kmeans" */
    size_t cap = 1024, n = 0;
    double *feat = malloc(cap * dim * sizeof(double)), *w = malloc(cap * sizeof(double));
    double *cnt = NULL, *all = NULL;
    moe_status st = MOE_STATUS_NO_MEMORY;
    if (!feat || !w) goto done;
    moe_row_buffers *buf = &f->bufs[0];
    for (size_t r0 = 0; r0 < N; r0 += buf->max_rows) {
        size_t nr = N - r0 < buf->max_rows ? N - r0 : buf->max_rows;
        moe_rows v;
        st = src->read(src->ctx, r0, nr, buf, &v, err);
        if (st != MOE_STATUS_OK) goto done;
        st = MOE_STATUS_NO_MEMORY;
        for (size_t i = 0; i < nr; i++) {
            double wi = v.weights ? v.weights[i] : 1.0;
            if (!(wi > 0.0) || (keep < 1.0 && row_uniform(seed, src->first_row + r0 + i) >= keep))
                continue;
            if (n == cap) {
                cap *= 2;
                double *nf = realloc(feat, cap * dim * sizeof(double));
                if (nf) feat = nf;
                double *nw = realloc(w, cap * sizeof(double));
                if (nw) w = nw;
                if (!nf || !nw) goto done;
            }
            row_features(f, &v, i, feat + n * dim);
            w[n++] = wi;
        }
    }
    if (f->reducer && f->reducer->size > 1) {
        int R = f->reducer->size, me = f->reducer->rank;
        cnt = calloc((size_t)R, sizeof(double));
        if (!cnt) goto done;
        cnt[me] = (double)n;
        st = moe_fit_reduce(f, cnt, (size_t)R, err);
        if (st != MOE_STATUS_OK) goto done;
        size_t tot = 0, off = 0;
        for (int r = 0; r < R; r++) {
            if (r < me) off += (size_t)cnt[r];
            tot += (size_t)cnt[r];
        }
        st = MOE_STATUS_NO_MEMORY;
        all = calloc(tot * (dim + 1) + 1, sizeof(double));
        if (!all) goto done;
        memcpy(all + off * dim, feat, n * dim * sizeof(double));
        memcpy(all + tot * dim + off, w, n * sizeof(double));
        st = moe_fit_reduce(f, all, tot * (dim + 1), err);
        if (st != MOE_STATUS_OK) goto done;
        st = MOE_STATUS_NO_MEMORY;
        double *nf = realloc(feat, (tot * dim + 1) * sizeof(double));
        if (!nf) goto done;
        feat = nf;
        double *nw = realloc(w, (tot + 1) * sizeof(double));
        if (!nw) goto done;
        w = nw;
        memcpy(feat, all, tot * dim * sizeof(double));
        memcpy(w, all + tot * dim, tot * sizeof(double));
        n = tot;
    }
    f->km_feat = feat;
    f->km_w = w;
    f->km_n = n;
    feat = NULL;
    w = NULL;
    st = n > 0 ? MOE_STATUS_OK : moe_err(err, MOE_STATUS_DATA, "k-means: no rows of positive weight");
done:
    free(feat);
    free(w);
    free(cnt);
    free(all);
    (void)m;
    return st;
}

size_t moe_kmeans_leaf(const moe_fit *f, const double *z, const double *t, int32_t label) {
    const moe_model *m = f->m;
    size_t ne = m->n_ecols, dim = f->km_dim, q = 0;
    for (size_t l = 0; l < m->tree.n_levels; l++) {
        size_t b = m->tree.branching[l], best = 0;
        double bd = INFINITY;
        for (size_t c = 0; c < b; c++) {
            const double *nc = f->km_cen + (f->km_level_off[l] + q * b + c) * dim;
            double e = 0.0;
            for (size_t j = 0; j < ne; j++) e += (z[j] - nc[j]) * (z[j] - nc[j]);
            for (size_t j = ne; j < dim; j++) {
                double v = t ? t[j - ne] : (label == (int32_t)(j - ne) ? 1.0 : 0.0);
                e += (v - nc[j]) * (v - nc[j]);
            }
            if (e < bd) {
                bd = e;
                best = c;
            }
        }
        q = q * b + best;
    }
    return q;
}

/* For a tree, the clusters follow its shape: k-means into b_0 clusters,
 * then each cluster into b_1, and so on, so that leaves under one gate
 * start from neighbouring clusters. The clustering runs on the fit's
 * sample (draw_sample); the initialisation pass then sends every row down
 * the tree of centres to its leaf (moe_kmeans_leaf). */
moe_status moe_kmeans_fit(moe_fit *f, uint64_t seed, moe_error *err) {
    const moe_model *m = f->m;
    size_t K = m->n_leaves, L = m->tree.n_levels;
    size_t dim = m->n_ecols + (m->task == MOE_TASK_REGRESSION ? m->n_out : m->n_cls);
    size_t bmax = 1, n_nodes = 0, width = 1;
    for (size_t l = 0; l < L; l++) {
        if (m->tree.branching[l] > bmax) bmax = m->tree.branching[l];
        width *= m->tree.branching[l];
        f->km_level_off[l] = n_nodes;
        n_nodes += width;
    }
    f->km_dim = dim;
    moe_status st;
    if (f->km_n == 0 && (st = draw_sample(f, err)) != MOE_STATUS_OK) return st;
    if (!f->km_cen && !(f->km_cen = malloc((n_nodes + 1) * (dim + 1) * sizeof(double))))
        return MOE_STATUS_NO_MEMORY;
    moe_rng rng;
    moe_rng_seed(&rng, seed);
    size_t S = f->km_n;
    const double *feat = f->km_feat, *w = f->km_w;
    double *node_cen = f->km_cen;
    st = MOE_STATUS_NO_MEMORY;
    double *cen = NULL, *cnt = NULL, *dist = NULL;
    size_t *idx = NULL, *sorted = NULL, *start = NULL, *nstart = NULL;
    int32_t *lab = NULL;
    cen = malloc(bmax * (dim + 1) * sizeof(double));
    cnt = malloc(bmax * sizeof(double));
    dist = malloc(S * sizeof(double));
    idx = malloc(S * sizeof(size_t));
    sorted = malloc(S * sizeof(size_t));
    lab = malloc(S * sizeof(int32_t));
    start = malloc((K + 1) * sizeof(size_t));
    nstart = malloc((K + 1) * sizeof(size_t));
    if (!cen || !cnt || !dist || !idx || !sorted || !lab || !start || !nstart) goto done;
    for (size_t s = 0; s < S; s++) idx[s] = s;
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
            double *nc = node_cen + (f->km_level_off[l] + q * b) * dim;
            if (n > 0) {
                kmeans(feat, dim, w, idx + s0, n, b, &rng, lab + s0, cen, cnt, dist);
                memcpy(nc, cen, b * dim * sizeof(double));
            } else {
                /* An empty group: its children sit on the parent's centre. */
                const double *pc = l ? node_cen + (f->km_level_off[l - 1] + q) * dim : NULL;
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
    st = MOE_STATUS_OK;
done:
    free(cen);
    free(cnt);
    free(dist);
    free(idx);
    free(sorted);
    free(lab);
    free(start);
    free(nstart);
    return st;
}
