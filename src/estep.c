/*
 * estep.c -- one pass over the data: the E-step and the accumulation of
 * every sufficient statistic the M-step needs (DESIGN.md, "one pass").
 *
 * Per block of rows: gates and experts (forward.c), posteriors, then
 *   - Gaussian expert k: the Gram matrix of [z, t] weighted by w h_k
 *     (gram.c, every expert at once); it holds sum w h z z', sum w h z t'
 *     and sum w h t t' at once;
 *   - multinomial expert k: gradient, Gram and (small problems) Hessian of
 *     its h_k-weighted log-likelihood;
 *   - gate g: the same for its children's conditional posteriors, weighted
 *     by the posterior of g (Jordan & Jacobs 1994, eq. 26-27).
 */
#include "moe_impl.h"

#include <math.h>
#include <string.h>
#include <omp.h>

/* Responsibilities of the initialisation pass replace the posteriors.
 * grow: the global index of the block's first row; v, i0: the block's rows
 * in the view (for class labels). */
static void init_posteriors(const moe_fit *f, moe_block *b, size_t grow, const moe_rows *v,
                            size_t i0, size_t nb) {
    const moe_model *m = f->m;
    size_t K = m->n_leaves, NN = f->nd.n_nodes, G = m->n_gates;
    size_t P = m->n_out;
    for (size_t i = 0; i < nb; i++) {
        double *h = b->post + i * NN + G;
        if (f->init_mode == 1) {
            /* The random gates' leaf probabilities (the model's gates hold
             * random hyperplanes now) times independent Exp(1) draws per row
             * and leaf -- a Dirichlet(1) tilt -- normalised. The draws come
             * from a generator seeded by the row's global index, so neither
             * the thread count nor a split over processes matters. */
            moe_rng rng;
            moe_rng_seed(&rng, f->init_seed ^ (0x9e3779b97f4a7c15ULL * (uint64_t)(grow + i + 1)));
            const double *lp = b->lp + i * NN + G;
            double s = 0.0;
            for (size_t k = 0; k < K; k++) s += (h[k] = exp(lp[k]) * moe_rng_exp(&rng));
            for (size_t k = 0; k < K; k++) h[k] /= s;
        } else {
            /* The leaf of the row's nearest k-means centres, a hard cluster
             * softened so that every expert starts with some support. The
             * features are the block's standardised expert inputs (after the
             * intercept) and target, as in init.c. */
            size_t leaf = moe_kmeans_leaf(f, b->ze + i * m->ed + 1,
                                          m->task == MOE_TASK_REGRESSION ? b->tgt + i * P : NULL,
                                          v->labels ? v->labels[i0 + i] : -1);
            const double eps = 0.1;
            for (size_t k = 0; k < K; k++) h[k] = eps / (double)K;
            h[leaf] += 1.0 - eps;
        }
        double *post = b->post + i * NN;
        for (size_t g = G; g-- > 0;) {
            double s = 0.0;
            for (size_t c = 0; c < m->gate_nch[g]; c++) s += post[f->nd.child0[g] + c];
            post[g] = s;
        }
    }
}

/* Add the block's weight sum to a sampled Hessian's last slot. */
static void hess_weight(double *hess, size_t n, const double *w, size_t nb) {
    double s = 0.0;
    for (size_t i = 0; i < nb; i++) s += w[i];
    hess[n * n] += s;
}

/* Whether the pass takes every gate's Gram sum_i w_i h_ig z_i z_i' as the
 * sum of its leaves' experts' Gram blocks over z (derive_gate_grams): the
 * same sum, as a node's posterior is the sum of its leaves' (h_ig = sum of
 * h_ik over the leaves k under g), when the gates and the experts see the
 * same standardised inputs and the experts' Grams cover every row's
 * posterior mass (a full pass of Gaussian linear experts: dense EM's, or
 * sparse EM's, whose gates' posteriors are the sums of the kept leaves'
 * and whose Grams sum the kept pairs, moe_sparse_slab_end). It saves the
 * gates' Gram work per row: gd(gd+1) flops, a square root and a scaled
 * copy of the row. */
static int gate_grams_derived(const moe_fit *f) {
    const moe_model *m = f->m;
    return m->task == MOE_TASK_REGRESSION && f->sp_pass == MOE_PASS_FULL &&
           m->gnet.n_hidden == 0 && m->enet.n_hidden == 0 && m->top_k == 0 && !m->log_var &&
           m->gd == m->ed && moe_gates_share_columns(m);
}

/* Add the z-block (rows and columns < gd, upper triangle) of the Gram of
 * every leaf under node to gg, leaves in order. */
static void add_leaf_grams(const moe_fit *f, size_t node, const double *st, double *gg) {
    const moe_model *m = f->m;
    size_t G = m->n_gates, d = m->gd, q = m->ed + m->n_out;
    if (node >= G) {
        const double *gk = st + f->off_eg + (node - G) * q * q;
        for (size_t a = 0; a < d; a++)
            for (size_t b = a; b < d; b++) gg[a * d + b] += gk[a * q + b];
        return;
    }
    for (size_t c = 0; c < m->gate_nch[node]; c++)
        add_leaf_grams(f, f->nd.child0[node] + c, st, gg);
}

/* A slab's gate Grams from its experts' (gate_grams_derived): summed over
 * the same rows, in a fixed order, so the thread count does not matter. */
static void derive_gate_grams(const moe_fit *f, double *st) {
    for (size_t g = 0; g < f->m->n_gates; g++) add_leaf_grams(f, g, st, st + f->off_ggram[g]);
}

/* Rows i0 .. i0 + nb - 1 of the view v are the block's rows. fused: sparse
 * EM's full pass for the common model (sparse_full.c), which runs the
 * forward pass with the choice of kept leaves. */
static void accumulate_block(const moe_fit *f, moe_block *b, const moe_rows *v, size_t i0,
                             size_t nb, size_t row, int with_hess, int derived, int fused,
                             double *st) {
    const moe_model *m = f->m;
    size_t K = m->n_leaves, P = m->n_out, C = m->n_cls, ed = m->ed, gd = m->gd;
    size_t NN = f->nd.n_nodes, G = m->n_gates, GR = f->nd.gate_rows;
    size_t cmax = C, dmax = ed > gd ? ed : gd;
    for (size_t g = 0; g < G; g++)
        if (m->gate_nch[g] > cmax) cmax = m->gate_nch[g];
    double *w = b->scr;
    double *t = w + MOE_BLOCK_ROWS;
    double *p = t + MOE_BLOCK_ROWS * cmax;
    double *acc = p + MOE_BLOCK_ROWS * cmax;
    size_t acc_n = cmax + dmax > cmax * dmax ? cmax + dmax : cmax * dmax;
    double *S = acc + MOE_BLOCK_ROWS * acc_n;

    const double *wt = v->weights ? v->weights + i0 : NULL;
    double *sp = f->sparse_k ? f->sp_mem + (size_t)(b - f->blocks) * f->sp_stride : NULL;
    size_t *spi = sp ? f->sp_idx + (size_t)(b - f->blocks) * f->sp_istride : NULL;
    double *sph = sp ? sp + MOE_BLOCK_ROWS : NULL; /* kept posteriors, after lmass */
    if (fused)
        moe_sparse_full_block(f, b, nb, v->x + i0 * v->ld_x, v->ld_x, v->y + i0 * v->ld_y,
                              v->ld_y, row, sp, spi, sph);
    else if (sp)
        moe_sparse_keep(f, b, nb, row, sp, spi, sph); /* sparse_em.c */
    double ll = 0.0, ent = 0.0, obj = 0.0, sw = st[4]; /* sw in a register, not in st */
    for (size_t i = 0; i < nb; i++) {
        double wi = wt ? wt[i] : 1.0;
        sw += wi;
        if (wi == 0.0) continue;
        ll += wi * b->ll[i];
        ent += wi * b->ent[i];
        if (sp) obj += wi * (b->ll[i] + sp[i]);
    }
    st[4] = sw;
    st[0] += sp ? obj : ll;
    st[1] += ent;
    st[3] += ll;

    /* Gaussian experts: the Gram matrices of u = [z, t] weighted by w h_k,
     * the experts as vector lanes (gram.c: K q(q+1) flops per row); their
     * intercept entries are the experts' weight sums. With one target the
     * kernel reads z and t where they are; else from copies of the rows. */
    int direct = m->task == MOE_TASK_REGRESSION && !sp && P == 1 &&
                 moe_gram_accumulate_zt(nb, K, ed, b->ze, b->tgt, b->post + G, NN, wt,
                                        st + f->off_eg, st + f->off_esw, S) == 0;
    if (m->task == MOE_TASK_REGRESSION && !direct) { /* copies of the rows u = [z, t] */
        size_t q = ed + P;
        /* (sparse EM: after the pending blocks', summed a few blocks at once) */
        double *u = sp ? moe_sparse_rows(f, (size_t)(b - f->blocks), row, nb, st) : S;
        for (size_t i = 0; i < nb; i++) { /* the design in 8-double moves, the last overlapping */
            const double *zi = b->ze + i * ed;
            double *ui = u + i * q;
            size_t j = 0;
            for (; j + 8 <= ed; j += 8) memcpy(ui + j, zi + j, 8 * sizeof(double));
            if (ed >= 8 && j < ed)
                memcpy(ui + ed - 8, zi + ed - 8, 8 * sizeof(double));
            else
                for (; j < ed; j++) ui[j] = zi[j];
            for (size_t c = 0; c < P; c++) ui[ed + c] = b->tgt[i * P + c];
        }
        if (sp) {
            moe_sparse_gram(f, (size_t)(b - f->blocks), wt, nb, spi, sph, st);
        } else {
            moe_gram_accumulate(nb, K, q, u, b->post + G, NN, wt, st + f->off_eg,
                                st + f->off_esw, S + MOE_BLOCK_ROWS * q);
        }
    }
    for (size_t k = 0; k < K && m->task == MOE_TASK_CLASSIFICATION; k++) {
        double sw = 0.0;
        for (size_t i = 0; i < nb; i++) {
            w[i] = (wt ? wt[i] : 1.0) * b->post[i * NN + G + k];
            sw += w[i];
        }
        st[f->off_esw + k] += sw;
        if (sw == 0.0) continue;
        {
            size_t n = (C - 1) * ed;
            for (size_t i = 0; i < nb; i++) {
                const double *lq = b->eo + (i * K + k) * C;
                for (size_t c = 0; c < C; c++) {
                    p[i * C + c] = exp(lq[c]);
                    t[i * C + c] = 0.0;
                }
                t[i * C + (size_t)v->labels[i0 + i]] = 1.0;
            }
            double *h = f->e_newton && with_hess ? st + f->off_ehess + k * (n * n + 1) : NULL;
            moe_softmax_accumulate(nb, C, ed, b->ze, w, t, C, p, C, st + f->off_egrad + k * n,
                                   st + f->off_egram + k * ed * ed, h, acc);
            if (h) hess_weight(h, n, w, nb);
        }
    }

    const double *zg = moe_block_zg(m, b);
    /* Gates: children's conditional posteriors, weighted by the node's. The
     * root's posterior is 1 (its children's sum to 1), so its targets are
     * its children's posteriors as they are, weighted by the case weights,
     * with no copy. */
    for (size_t g = 0; g < G; g++) {
        size_t nc = m->gate_nch[g], c0 = f->nd.child0[g], ld_t = nc;
        const double *pg = b->gp + f->nd.grow[g]; /* its probabilities, leading dimension GR */
        const double *tg = t, *wg = w;
        if (g == 0 && f->sp_gate_part == MOE_GATE_PRIOR) {
            /* sparse EM's deferred gate step: the gradient's prior part
             * alone, -sum w g z (targets 0) */
            memset(t, 0, nc * sizeof(double));
            ld_t = 0;
        } else if (g == 0) {
            tg = b->post + c0;
            ld_t = NN;
        }
        if (g == 0) {
            if (wt)
                wg = wt;
            else
                for (size_t i = 0; i < nb; i++) w[i] = 1.0;
        }
        for (size_t i = 0; i < nb && g > 0; i++) {
            const double *restrict post = b->post + i * NN;
            double *restrict ti = t + i * nc, hg = post[g];
            w[i] = (wt ? wt[i] : 1.0) * hg;
            if (hg > 0.0) {
                double ih = 1.0 / hg;
                for (size_t c = 0; c < nc; c++) ti[c] = post[c0 + c] * ih;
            } else {
                memcpy(ti, pg + i * GR, nc * sizeof(double));
            }
        }
        /* The Hessian's sampled blocks go through softmax_step.c; the others
         * need only the gradient and the Gram, which gram.c sums in the same
         * order, vectorised. */
        double *h = f->off_ghess[g] != SIZE_MAX && with_hess ? st + f->off_ghess[g] : NULL;
        double *gram = derived ? NULL : st + f->off_ggram[g];
        if (h)
            moe_softmax_accumulate(nb, nc, gd, zg, wg, tg, ld_t, pg, GR, st + f->off_ggrad[g],
                                   gram, h, acc);
        else
            moe_gram_softmax(nb, nc, gd, zg, wg, tg, ld_t, pg, GR, st + f->off_ggrad[g], gram,
                             S);
        if (h) {
            double sw = 0.0; /* the sampled weight, in the slot after the Hessian */
            for (size_t i = 0; i < nb; i++) sw += wg[i];
            h[moe_softmax_hess_size(nc, gd)] += sw;
        }
    }
}

/* The statistics a pass writes, a prefix of the layout: sparse EM's kept
 * and refresh passes leave the gates' slots (which come last) alone, but
 * for a flat gate's gradient in the cycle's last pass, so they are neither
 * cleared nor summed (K = 64, D = 32: the gate's Hessian blocks alone are
 * half the layout). */
static size_t pass_stats(const moe_fit *f) {
    if (f->sp_pass == MOE_PASS_FULL) return f->stat_size;
    return f->sp_gate_part == MOE_GATE_POST ? f->off_ggram[0] : f->off_ggrad[0];
}

moe_status moe_fit_pass(moe_fit *f, moe_error *err) {
    const moe_source *src = f->src;
    size_t used = pass_stats(f);
    size_t S = f->n_slabs, CR = f->chunk_rows;
    /* This process holds rows [lo, hi) of the layout; layout row q is row
     * q - lo + row_base of the source. Per-row random draws and the
     * Hessian's sampled blocks follow layout rows, so a shard sees the same
     * ones as a single process. */
    size_t lo = f->lay_off;
    size_t rseed0 = src->first_row + f->row_base - lo; /* + q: the row's global index */
    f->io_failed = 0;
    int derived = gate_grams_derived(f), fused = f->sparse_k && moe_sparse_full_fits(f);
#pragma omp parallel for schedule(dynamic, 1) num_threads(f->n_threads)
    for (size_t s = 0; s < S; s++) {
        int tid = omp_get_thread_num();
        moe_block *b = &f->blocks[tid];
        double *st = f->slab + s * f->stat_size;
        memset(st, 0, used * sizeof(double));
        size_t q0, q1;
        moe_fit_slab_rows(f, s, &q0, &q1);
        for (size_t c0 = q0; c0 < q1; c0 += CR) {
            size_t n = q1 - c0 < CR ? q1 - c0 : CR;
            moe_rows v;
            moe_error e;
            memset(&e, 0, sizeof e);
            size_t r0 = c0 - lo + f->row_base;
            moe_status rs = src->read(src->ctx, r0, n, &f->bufs[tid], &v, &e);
            if (rs == MOE_STATUS_OK && f->check_in_pass) rs = moe_fit_check_rows(f, &v, r0, n, &e);
            if (rs != MOE_STATUS_OK) {
                /* Keep the error of the earliest slab that failed. */
#pragma omp critical(moe_fit_pass_error)
                if (!f->io_failed || s < (size_t)f->io_failed - 1) {
                    f->io_failed = (int)s + 1;
                    f->io_err = e;
                }
                st[2] = 1.0;
                break;
            }
            for (size_t i0 = 0; i0 < n; i0 += MOE_BLOCK_ROWS) {
                size_t nb = n - i0 < MOE_BLOCK_ROWS ? n - i0 : MOE_BLOCK_ROWS;
                size_t q = c0 + i0;
                int with_hess = (q / MOE_BLOCK_ROWS) % f->hess_stride == 0;
                if (f->sp_pass != MOE_PASS_FULL) { /* sparse EM's kept leaves only */
                    moe_sparse_block(f, b, &v, i0, nb, q - lo, with_hess, st);
                    continue;
                }
                const double *y = v.y ? v.y + i0 * v.ld_y : NULL;
                const int32_t *lab = v.labels ? v.labels + i0 : NULL;
                /* (sparse EM's full pass: log joints; moe_sparse_keep exponentiates
                 * the kept leaves'; or sparse_full.c's path, in accumulate_block) */
                if (!fused)
                    (f->sp_lean ? moe_block_forward_joint : moe_block_forward)(
                        f->m, &f->nd, b, nb, v.x + i0 * v.ld_x, v.ld_x, y, v.ld_y, lab);
                if (f->init_mode) init_posteriors(f, b, rseed0 + q, &v, i0, nb);
                accumulate_block(f, b, &v, i0, nb, q - lo, with_hess, derived, fused, st);
            }
        }
        if (f->sparse_k) moe_sparse_slab_end(f, (size_t)tid, st); /* a kept pass's last blocks */
        if (derived) derive_gate_grams(f, st);
    }
    /* Over several processes every slab is gathered on every process (each
     * adds its part to zeros), then all add the slabs in the same order. */
    moe_status rs = moe_fit_reduce(f, f->slab, S * f->stat_size, err);
    if (rs != MOE_STATUS_OK) return rs;
    /* Each sum in slab order whoever adds it: the threads take chunks of
     * the statistics (sparse EM at K = 64: a pass's fixed cost; the
     * threads' share of it serial, 3% of a kept-only pass at D = 10). */
    size_t RC = 2048, nch = (used + RC - 1) / RC;
#pragma omp parallel for schedule(static) num_threads(f->n_threads) if (nch > 1)
    for (size_t c = 0; c < nch; c++) {
        size_t j0 = c * RC, j1 = j0 + RC < used ? j0 + RC : used;
        double *out = f->stats;
        memcpy(out + j0, f->slab + j0, (j1 - j0) * sizeof(double));
        for (size_t s = 1; s < S; s++) {
            const double *st = f->slab + s * f->stat_size;
            for (size_t j = j0; j < j1; j++) out[j] += st[j];
        }
    }
    memset(f->stats + used, 0, (f->stat_size - used) * sizeof(double));
    if (f->io_failed) {
        if (err) *err = f->io_err;
        return f->io_err.status != MOE_STATUS_OK ? f->io_err.status : MOE_STATUS_IO;
    }
    if (f->stats[2] != 0.0)
        return moe_err(err, MOE_STATUS_IO, "another process failed to read or check its rows");
    return MOE_STATUS_OK;
}
