/*
 * topk.c -- sparse top-k gating at prediction (Shazeer et al. 2017, eq. 3-5
 * without the noise): every gate a row reaches keeps its k children of
 * largest logit, and the softmax is renormalised over them; children not
 * kept have probability 0 and their subtrees are never evaluated. The
 * experts of the active leaves are then evaluated by grouping the block's
 * rows by expert (a counting sort) and applying each expert to its rows as
 * one matrix product, so a row costs the gate plus k experts, not K.
 *
 * Ties go to the lower index. A gate with at most k children computes
 * exactly what the dense softmax of forward.c computes, with the same
 * operations in the same order, so with k >= every branching factor the
 * predictions are the dense ones bit for bit (tests/test_grad.c).
 */
#include "moe_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

size_t moe_topk_select(const double *v, size_t n, size_t k, size_t *idx) {
    if (k >= n) {
        for (size_t c = 0; c < n; c++) idx[c] = c;
        return n;
    }
    if (k == 0) return 0;
    /* idx[0..cnt) sorted by value descending, index ascending on ties; a
     * later child displaces a kept one only when strictly larger. */
    size_t cnt = 0;
    for (size_t c = 0; c < n; c++) {
        if (cnt == k && !(v[c] > v[idx[k - 1]])) continue;
        size_t j = cnt < k ? cnt++ : k - 1;
        while (j > 0 && v[c] > v[idx[j - 1]]) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = c;
    }
    /* back to increasing index order */
    for (size_t a = 1; a < k; a++) {
        size_t x = idx[a], j = a;
        while (j > 0 && idx[j - 1] > x) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = x;
    }
    return k;
}

void moe_block_gates_topk(const moe_model *m, const moe_nodes *nd, moe_block *b, size_t nb) {
    size_t GR = nd->gate_rows, NN = nd->n_nodes, G = m->n_gates, K = m->n_leaves;
    size_t ma = moe_model_max_active(m);
    size_t *idx = b->iw; /* free until the experts' counting sort */
    double *ex = b->scr;  /* free during the gates (>= the largest branching) */
    for (size_t i = 0; i < nb; i++) {
        double *gl = b->gl + i * GR, *gp = b->gp + i * GR, *lp = b->lp + i * NN;
        lp[0] = 0.0;
        for (size_t g = 0; g < G; g++) {
            double *v = gl + nd->grow[g], *pr = gp + nd->grow[g];
            double *lc = lp + nd->child0[g];
            size_t nc = m->gate_nch[g];
            if (lp[g] == -INFINITY) {
                for (size_t c = 0; c < nc; c++) {
                    v[c] = -INFINITY;
                    pr[c] = 0.0;
                    lc[c] = -INFINITY;
                }
                continue;
            }
            size_t ns = moe_topk_select(v, nc, m->top_k, idx);
            /* the dense softmax of forward.c over the kept children, with
             * the same operations in the same order (moe_vexp / moe_vlog
             * give the same bits on any array length) */
            double mx = v[idx[0]], s = 0.0, ls;
            for (size_t j = 1; j < ns; j++)
                if (v[idx[j]] > mx) mx = v[idx[j]];
            for (size_t j = 0; j < ns; j++) ex[j] = v[idx[j]] - mx;
            moe_vexp(ex, ex, ns);
            for (size_t j = 0; j < ns; j++) s += ex[j];
            double inv = 1.0 / s;
            moe_vlog(&ls, &s, 1);
            for (size_t c = 0, j = 0; c < nc; c++) {
                if (j < ns && idx[j] == c) {
                    pr[c] = ex[j] * inv;
                    v[c] -= mx + ls;
                    lc[c] = lp[g] + v[c];
                    j++;
                } else {
                    v[c] = -INFINITY;
                    pr[c] = 0.0;
                    lc[c] = -INFINITY;
                }
            }
        }
        size_t n = 0, *act = b->act + i * ma;
        const double *ll = lp + G;
        for (size_t k = 0; k < K; k++)
            if (ll[k] != -INFINITY) act[n++] = k;
        b->n_act[i] = n;
    }
}

void moe_block_experts_sparse(const moe_model *m, moe_block *b, size_t nb) {
    /* No gate drops a child: every row needs every expert, and the dense
     * products are the cheaper (and bit-identical) way. */
    if (moe_model_max_active(m) == m->n_leaves) {
        moe_block_experts(m, b, nb);
        return;
    }
    size_t K = m->n_leaves, R = m->coef_rows, ed = m->ed, eh = m->eh;
    size_t ma = moe_model_max_active(m);
    size_t *start = b->iw, *rows = b->iw + K + 1;
    size_t na = m->enet.n_acts > m->gnet.n_acts ? m->enet.n_acts : m->gnet.n_acts;
    double *acts = b->nn, *X = b->nn + MOE_BLOCK_ROWS * na, *out = X + MOE_BLOCK_ROWS * ed;

    /* counting sort of (row, expert) pairs by expert, rows increasing */
    memset(start, 0, (K + 1) * sizeof *start);
    for (size_t i = 0; i < nb; i++)
        for (size_t j = 0; j < b->n_act[i]; j++) start[b->act[i * ma + j] + 1]++;
    for (size_t k = 0; k < K; k++) start[k + 1] += start[k];
    for (size_t i = 0; i < nb; i++)
        for (size_t j = 0; j < b->n_act[i]; j++) rows[start[b->act[i * ma + j]]++] = i;
    for (size_t k = K; k > 0; k--) start[k] = start[k - 1];
    start[0] = 0;

    for (size_t k = 0; k < K; k++) {
        size_t n = start[k + 1] - start[k];
        if (n == 0) continue;
        const size_t *rk = rows + start[k];
        for (size_t j = 0; j < n; j++) memcpy(X + j * ed, b->ze + rk[j] * ed, ed * sizeof(double));
        const double *feat = moe_net_forward(&m->enet, m->e_w + k * m->enet.n_w, n, X, acts);
        moe_head_forward(n, R, eh, feat, m->coef + k * R * eh, out, R);
        for (size_t j = 0; j < n; j++) {
            double *e = b->eo + (rk[j] * K + k) * R;
            memcpy(e, out + j * R, R * sizeof(double));
            if (m->task == MOE_TASK_CLASSIFICATION) moe_log_softmax(e, R);
        }
        if (m->log_var) { /* the variances, through the same buffer (R = P) */
            moe_head_forward(n, R, eh, feat, m->lv_coef + k * R * eh, out, R);
            for (size_t j = 0; j < n; j++)
                moe_lv_variance(m, k, 1, out + j * R, R, b->ev + (rk[j] * K + k) * R, R);
        }
    }
}
