/*
 * forward.c -- the part of every pass that runs row block by row block:
 * standardise the inputs, evaluate the gates down the tree and the experts
 * at the leaves, and (given targets) the posteriors back up the tree.
 * Shared by EM (estep.c) and prediction (predict.c), so both compute
 * exactly the same numbers.
 *
 * Everything is in log space: each gate's log-softmax, a leaf's log prior as
 * the sum along its path, and the row's log-likelihood as a log-sum-exp over
 * the leaves (Jordan & Jacobs 1994, eq. 11 and the posteriors of eq. 18-20).
 */
#include "moe_impl.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define LOG_2PI 1.8378770664093454836

moe_status moe_nodes_init(moe_nodes *nd, const moe_model *m) {
    size_t G = m->n_gates;
    nd->n_nodes = G + m->n_leaves;
    nd->gate_rows = 0;
    nd->child0 = calloc(G + 1, sizeof(size_t));
    nd->grow = calloc(G + 1, sizeof(size_t));
    if (!nd->child0 || !nd->grow) {
        moe_nodes_free(nd);
        return MOE_STATUS_NO_MEMORY;
    }
    /* Breadth-first: the children of the gates, in gate order, are the
     * nodes 1, 2, ... in order. */
    size_t next = 1;
    for (size_t g = 0; g < G; g++) {
        nd->child0[g] = next;
        nd->grow[g] = nd->gate_rows; /* gate_off / gate row width */
        next += m->gate_nch[g];
        nd->gate_rows += m->gate_nch[g];
    }
    return MOE_STATUS_OK;
}

void moe_nodes_free(moe_nodes *nd) {
    free(nd->child0);
    free(nd->grow);
    nd->child0 = nd->grow = NULL;
}

static size_t max_children(const moe_model *m) {
    size_t b = 1;
    for (size_t g = 0; g < m->n_gates; g++)
        if (m->gate_nch[g] > b) b = m->gate_nch[g];
    return b;
}

size_t moe_block_scratch_size(const moe_model *m) {
    size_t nb = MOE_BLOCK_ROWS;
    size_t cmax = m->n_cls > max_children(m) ? m->n_cls : max_children(m);
    size_t dmax = m->ed > m->gd ? m->ed : m->gd;
    size_t acc = cmax + dmax > cmax * dmax ? cmax + dmax : cmax * dmax;
    size_t q = m->ed + m->n_out, group = MOE_EXPERT_GROUP(q);
    if (group > m->n_leaves) group = m->n_leaves;
    return nb * (2 * cmax + 1) + nb * acc + nb * q * (1 + group) + 16;
}

moe_status moe_block_alloc(moe_block *b, const moe_model *m, const moe_nodes *nd) {
    size_t nb = MOE_BLOCK_ROWS, K = m->n_leaves;
    size_t R = m->task == MOE_TASK_REGRESSION ? m->n_out : m->n_cls;
    memset(b, 0, sizeof *b);
    b->ze = malloc(nb * m->ed * sizeof(double));
    b->zg = malloc(nb * m->gd * sizeof(double));
    b->gl = malloc((nb * nd->gate_rows + 1) * sizeof(double));
    b->gp = malloc((nb * nd->gate_rows + 1) * sizeof(double));
    b->lp = malloc(nb * nd->n_nodes * sizeof(double));
    b->eo = malloc(nb * K * R * sizeof(double));
    b->ld = malloc(nb * K * sizeof(double));
    b->post = malloc(nb * nd->n_nodes * sizeof(double));
    b->tgt = malloc((nb * m->n_out + 1) * sizeof(double));
    b->ll = malloc(nb * sizeof(double));
    b->ent = malloc(nb * sizeof(double));
    b->scr = malloc(moe_block_scratch_size(m) * sizeof(double));
    b->inv = malloc((m->n_ecols + m->n_gcols + 1) * sizeof(double));
    b->invl = malloc((K * m->n_out + m->n_out + 1) * sizeof(double));
    if (!b->ze || !b->zg || !b->gl || !b->gp || !b->lp || !b->eo || !b->ld || !b->post || !b->tgt ||
        !b->ll || !b->ent || !b->scr || !b->inv || !b->invl) {
        moe_block_free(b);
        return MOE_STATUS_NO_MEMORY;
    }
    if (moe_block_alloc_nn(b, m) != MOE_STATUS_OK) {
        moe_block_free(b);
        return MOE_STATUS_NO_MEMORY;
    }
    return MOE_STATUS_OK;
}

void moe_block_free(moe_block *b) {
    free(b->ze);
    free(b->zg);
    free(b->gl);
    free(b->gp);
    free(b->lp);
    free(b->eo);
    free(b->ld);
    free(b->post);
    free(b->tgt);
    free(b->ll);
    free(b->ent);
    free(b->scr);
    free(b->inv);
    free(b->invl);
    moe_block_free_nn(b);
    memset(b, 0, sizeof *b);
}

/* out (nb x n) = z (nb x k) W' (W n x k): the gate logits or the expert
 * outputs of a block. For the usual small n and k (a few dozen), OpenBLAS's
 * small-matrix path runs far below the machine's rate, so a vectorised
 * kernel (vmath.c) does it, with W' in the scratch (free until the
 * statistics); larger maps go to BLAS. */
static void linear_map(const moe_model *m, moe_block *b, size_t nb, size_t n, size_t k,
                       const double *z, const double *W, double *out) {
    if (n <= 64 && k <= 64 && n * k <= moe_block_scratch_size(m))
        moe_gemm_nt(nb, n, k, z, k, W, k, out, n, b->scr);
    else
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nb, (int)n, (int)k, 1.0, z,
                    (int)k, W, (int)k, 0.0, out, (int)n);
}

void moe_block_gates(const moe_model *m, const moe_nodes *nd, moe_block *b, size_t nb,
                     const double *x, size_t ld) {
    size_t ed = m->ed, gd = m->gd, NN = nd->n_nodes;
    /* Multiply by reciprocals: a division per element costs as much as the
     * rest of the standardisation. */
    double *ie = b->inv, *ig = b->inv + m->n_ecols;
    for (size_t j = 0; j < m->n_ecols; j++) ie[j] = 1.0 / m->x_scale[m->ecols[j]];
    for (size_t j = 0; j < m->n_gcols; j++) ig[j] = 1.0 / m->x_scale[m->gcols[j]];
    for (size_t i = 0; i < nb; i++) {
        const double *xi = x + i * ld;
        double *ze = b->ze + i * ed, *zg = b->zg + i * gd;
        ze[0] = 1.0;
        for (size_t j = 0; j < m->n_ecols; j++) {
            size_t c = m->ecols[j];
            ze[1 + j] = (xi[c] - m->x_mean[c]) * ie[j];
        }
        zg[0] = 1.0;
        for (size_t j = 0; j < m->n_gcols; j++) {
            size_t c = m->gcols[j];
            zg[1 + j] = (xi[c] - m->x_mean[c]) * ig[j];
        }
    }
    size_t GR = nd->gate_rows;
    if (m->gnet.n_hidden > 0)
        moe_block_gate_logits_mlp(m, nd, b, nb);
    else if (GR > 0)
        linear_map(m, b, nb, GR, gd, b->zg, m->gate_coef, b->gl);
    if (m->top_k > 0) { /* sparse gates (topk.c) */
        moe_block_gates_topk(m, nd, b, nb);
        return;
    }
    /* Softmax and log-softmax of every gate with one exp per child, in
     * phases over the whole block so that exp and log run vectorised
     * (vmath.c): logits minus their gate's max, one exp of the block, the
     * sums (and the probabilities), one log of the block's sums, then the
     * log-softmaxes and log priors. post is free until moe_block_posterior;
     * it holds the maxes (mx) and the sums (sm), nb * G each (2 G < n_nodes). */
    size_t G = m->n_gates;
    double *mx = b->post, *sm = b->post + nb * G;
    for (size_t i = 0; i < nb; i++) {
        const double *gl = b->gl + i * GR;
        double *gp = b->gp + i * GR;
        for (size_t g = 0; g < G; g++) {
            const double *v = gl + nd->grow[g];
            double *pr = gp + nd->grow[g], mg = v[0];
            size_t nc = m->gate_nch[g];
            for (size_t c = 1; c < nc; c++)
                if (v[c] > mg) mg = v[c];
            for (size_t c = 0; c < nc; c++) pr[c] = v[c] - mg;
            mx[i * G + g] = mg;
        }
    }
    moe_vexp(b->gp, b->gp, nb * GR);
    for (size_t i = 0; i < nb; i++) {
        double *gp = b->gp + i * GR;
        for (size_t g = 0; g < G; g++) {
            double *pr = gp + nd->grow[g], s = 0.0;
            size_t nc = m->gate_nch[g];
            for (size_t c = 0; c < nc; c++) s += pr[c];
            double inv = 1.0 / s;
            for (size_t c = 0; c < nc; c++) pr[c] *= inv;
            sm[i * G + g] = s;
        }
    }
    moe_vlog(sm, sm, nb * G);
    for (size_t i = 0; i < nb; i++) {
        double *gl = b->gl + i * GR, *lp = b->lp + i * NN;
        lp[0] = 0.0;
        for (size_t g = 0; g < G; g++) {
            double *v = gl + nd->grow[g], sh = mx[i * G + g] + sm[i * G + g];
            size_t nc = m->gate_nch[g];
            for (size_t c = 0; c < nc; c++) {
                v[c] -= sh;
                lp[nd->child0[g] + c] = lp[g] + v[c];
            }
        }
    }
}

void moe_block_experts(const moe_model *m, moe_block *b, size_t nb) {
    if (m->enet.n_hidden > 0) { /* MLP experts (nn.c) */
        moe_block_experts_mlp(m, b, nb);
        return;
    }
    size_t K = m->n_leaves, R = m->coef_rows, ed = m->ed;
    linear_map(m, b, nb, K * R, ed, b->ze, m->coef, b->eo);
    if (m->task == MOE_TASK_CLASSIFICATION)
        for (size_t i = 0; i < nb; i++)
            for (size_t k = 0; k < K; k++) moe_log_softmax(b->eo + (i * K + k) * R, R);
}

void moe_block_posterior(const moe_model *m, const moe_nodes *nd, moe_block *b, size_t nb,
                         const double *y, size_t ld_y, const int32_t *labels) {
    size_t K = m->n_leaves, P = m->n_out, C = m->n_cls, NN = nd->n_nodes, G = m->n_gates;
    double *il = b->invl, *iy = b->invl + K * P;
    for (size_t k = 0; k < K; k++)
        for (size_t p = 0; p < P; p++) il[k * P + p] = 1.0 / m->chol[(k * P + p) * P + p];
    for (size_t p = 0; p < P; p++) iy[p] = 1.0 / m->y_scale[p];
    for (size_t i = 0; i < nb; i++) {
        double *ldi = b->ld + i * K;
        if (m->task == MOE_TASK_REGRESSION) {
            double *t = b->tgt + i * P;
            for (size_t p = 0; p < P; p++) t[p] = (y[i * ld_y + p] - m->y_mean[p]) * iy[p];
            if (P == 1) {
                /* One output: the loop below without its inner loops, so
                 * that it vectorises over the experts (same operations). */
                const double *mu = b->eo + i * K;
                for (size_t k = 0; k < K; k++) {
                    double u = (t[0] - mu[k]) * il[k];
                    ldi[k] = -0.5 * (LOG_2PI + m->logdet[k] + (0.0 + u * u));
                }
            }
            for (size_t k = 0; k < K && P != 1; k++) {
                const double *mu = b->eo + (i * K + k) * P;
                const double *L = m->chol + k * P * P;
                /* u = L^{-1} (t - mu) by forward substitution; P is small. */
                double q = 0.0, u[64];
                double *uu = P <= 64 ? u : b->scr; /* scr is free during this call */
                for (size_t p = 0; p < P; p++) {
                    double s = t[p] - mu[p];
                    for (size_t r = 0; r < p; r++) s -= L[p * P + r] * uu[r];
                    uu[p] = s * il[k * P + p];
                    q += uu[p] * uu[p];
                }
                ldi[k] = -0.5 * ((double)P * LOG_2PI + m->logdet[k] + q);
            }
        } else {
            int32_t c = labels[i];
            for (size_t k = 0; k < K; k++) ldi[k] = b->eo[(i * K + k) * C + (size_t)c];
        }
        /* Log joint of each leaf, then its max over the leaves (kept in ll
         * until the row is finished); ex = lj - max, exponentiated below. */
        double *lp = b->lp + i * NN, *lj = b->post + i * NN + G; /* leaves' slots, reused */
        double *ex = b->ld + i * K; /* the densities are no longer needed */
        for (size_t k = 0; k < K; k++) lj[k] = lp[G + k] + ldi[k];
        double mx = -INFINITY;
        for (size_t k = 0; k < K; k++)
            if (lj[k] > mx) mx = lj[k];
        b->ll[i] = mx;
        if (isfinite(mx))
            for (size_t k = 0; k < K; k++) ex[k] = lj[k] - mx;
        else
            for (size_t k = 0; k < K; k++) ex[k] = 0.0;
    }
    /* h_k = exp(lj_k - mx) / s with one exp per leaf, exp and log over the
     * whole block at once (vmath.c); then log h_k = lj_k - l, so the
     * entropy -sum h log h needs no log. ent holds s, then log s. */
    moe_vexp(b->ld, b->ld, nb * K);
    for (size_t i = 0; i < nb; i++) {
        double *ex = b->ld + i * K, s = 0.0;
        for (size_t k = 0; k < K; k++) s += ex[k];
        double inv = 1.0 / s;
        for (size_t k = 0; k < K; k++) ex[k] *= inv;
        b->ent[i] = s;
    }
    moe_vlog(b->ent, b->ent, nb);
    for (size_t i = 0; i < nb; i++) {
        double *lp = b->lp + i * NN, *post = b->post + i * NN;
        double *lj = post + G, *ex = b->ld + i * K;
        double mx = b->ll[i];
        if (isfinite(mx)) {
            double l = mx + b->ent[i], e = 0.0;
            for (size_t k = 0; k < K; k++) {
                double lk = lj[k] - l;
                lj[k] = ex[k];
                if (lj[k] > 0.0) e -= lj[k] * lk;
            }
            b->ll[i] = l;
            b->ent[i] = e;
        } else {
            b->ll[i] = mx;
            b->ent[i] = 0.0;
            /* Every leaf gives the target zero density (far outside every
             * expert): fall back to the prior so the posteriors stay a
             * distribution. The row's log-likelihood stays -inf. */
            for (size_t k = 0; k < K; k++) lj[k] = exp(lp[G + k]);
        }
        for (size_t g = G; g-- > 0;) {
            double s = 0.0;
            for (size_t c = 0; c < m->gate_nch[g]; c++) s += post[nd->child0[g] + c];
            post[g] = s;
        }
    }
}
