/*
 * nn.c -- MLP nodes: the hidden layers an expert or a gate may put between
 * its standardised inputs and its linear head, forward and backward, and
 * their use in the block forward pass of prediction.
 *
 * A layer is h_l = [1, act(W_l h_{l-1})] with h_0 = the node's design [1, z]
 * (Rumelhart, Hinton & Williams 1986 for the backward pass). Every product
 * is one GEMM over the block's rows. tanh' = 1 - h^2 and relu' = [h > 0]
 * are computed from the stored activations, so no pre-activation is kept.
 *
 * Experts with input-dependent variances (log_var) have a second head on
 * the same features whose P outputs a give the variances cov_kpp +
 * exp(min(a, MOE_LOG_VAR_MAX)) (moe.h, section 4b): the mean-variance
 * network of Nix & Weigend (1994), with a floor.
 */
#include "moe_impl.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void moe_net_init(moe_net *net, size_t n_in, const moe_mlp *arch) {
    memset(net, 0, sizeof *net);
    net->n_in = n_in;
    if (arch && arch->n_hidden > 0 && arch->n_hidden <= MOE_MAX_HIDDEN) {
        net->n_hidden = arch->n_hidden;
        net->act = arch->activation;
        for (size_t l = 0; l < arch->n_hidden; l++) net->hidden[l] = arch->hidden[l];
    }
    size_t prev = n_in;
    for (size_t l = 0; l < net->n_hidden; l++) {
        net->n_w += net->hidden[l] * prev;
        prev = 1 + net->hidden[l];
        net->n_acts += prev;
        if (prev > net->max_width) net->max_width = prev;
    }
    net->head_in = prev;
}

const double *moe_net_forward(const moe_net *net, const double *w, size_t nb, const double *in,
                              double *acts) {
    const double *a = in;
    size_t wa = net->n_in;
    double *o = acts;
    for (size_t l = 0; l < net->n_hidden; l++) {
        size_t H = net->hidden[l], wo = 1 + H;
        if (nb > 0)
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nb, (int)H, (int)wa, 1.0, a,
                        (int)wa, w, (int)wa, 0.0, o + 1, (int)wo);
        for (size_t i = 0; i < nb; i++) {
            double *r = o + i * wo;
            r[0] = 1.0;
            if (net->act == MOE_ACTIVATION_RELU) {
                for (size_t j = 1; j <= H; j++) r[j] = r[j] > 0.0 ? r[j] : 0.0;
            } else {
                for (size_t j = 1; j <= H; j++) r[j] = tanh(r[j]);
            }
        }
        w += H * wa;
        a = o;
        wa = wo;
        o += nb * wo;
    }
    return a;
}

void moe_net_backward(const moe_net *net, const double *w, size_t nb, const double *in,
                      const double *acts, double *d, double *gw, double *scratch) {
    size_t L = net->n_hidden;
    if (L == 0 || nb == 0) return;
    size_t woff[MOE_MAX_HIDDEN], aoff[MOE_MAX_HIDDEN], wsum = 0, asum = 0, prev = net->n_in;
    for (size_t l = 0; l < L; l++) {
        woff[l] = wsum;
        aoff[l] = asum;
        wsum += net->hidden[l] * prev;
        prev = 1 + net->hidden[l];
        asum += nb * prev;
    }
    double *buf[2] = {scratch, scratch + nb * net->max_width};
    int which = 0;
    double *cur = d;
    for (size_t l = L; l-- > 0;) {
        size_t H = net->hidden[l], wo = 1 + H;
        const double *al = acts + aoff[l];
        const double *pin = l ? acts + aoff[l - 1] : in;
        size_t wp = l ? 1 + net->hidden[l - 1] : net->n_in;
        /* dL/d(pre-activation), in place */
        for (size_t i = 0; i < nb; i++) {
            double *c = cur + i * wo;
            const double *h = al + i * wo;
            if (net->act == MOE_ACTIVATION_RELU) {
                for (size_t j = 1; j <= H; j++) c[j] = h[j] > 0.0 ? c[j] : 0.0;
            } else {
                for (size_t j = 1; j <= H; j++) c[j] *= 1.0 - h[j] * h[j];
            }
        }
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)H, (int)wp, (int)nb, 1.0,
                    cur + 1, (int)wo, pin, (int)wp, 1.0, gw + woff[l], (int)wp);
        if (l > 0) {
            double *nd = buf[which];
            which ^= 1;
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nb, (int)wp, (int)H, 1.0,
                        cur + 1, (int)wo, w + woff[l], (int)wp, 0.0, nd, (int)wp);
            cur = nd;
        }
    }
}

void moe_head_forward(size_t nb, size_t R, size_t hw, const double *feat, const double *head,
                      double *out, size_t ld_out) {
    if (nb == 0 || R == 0) return;
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nb, (int)R, (int)hw, 1.0, feat,
                (int)hw, head, (int)hw, 0.0, out, (int)ld_out);
}

void moe_net_random(const moe_net *net, double *w, moe_rng *rng) {
    size_t prev = net->n_in;
    for (size_t l = 0; l < net->n_hidden; l++) {
        size_t H = net->hidden[l];
        /* Glorot & Bengio 2010 (uniform, gain 5/3 for tanh); He et al. 2015
         * for ReLU. The bias column counts as an input. */
        double a = net->act == MOE_ACTIVATION_RELU ? sqrt(6.0 / (double)prev)
                                                   : 5.0 / 3.0 * sqrt(6.0 / (double)(prev + H));
        for (size_t i = 0; i < H * prev; i++) w[i] = a * (2.0 * moe_rng_uniform(rng) - 1.0);
        w += H * prev;
        prev = 1 + H;
    }
}

/* ---- the block forward pass of prediction ------------------------------------ */

size_t moe_model_max_active(const moe_model *m) {
    if (m->top_k == 0) return m->n_leaves;
    size_t n = 1;
    for (size_t l = 0; l < m->tree.n_levels; l++)
        n *= m->top_k < m->tree.branching[l] ? m->top_k : m->tree.branching[l];
    return n;
}

size_t moe_nn_block_size(const moe_model *m) {
    size_t a = m->enet.n_acts > m->gnet.n_acts ? m->enet.n_acts : m->gnet.n_acts;
    size_t n = a;
    if (m->top_k > 0) n += m->ed + m->coef_rows; /* gathered rows and their outputs */
    return n == 0 ? 0 : MOE_BLOCK_ROWS * n;
}

moe_status moe_block_alloc_nn(moe_block *b, const moe_model *m) {
    size_t n = moe_nn_block_size(m), nb = MOE_BLOCK_ROWS;
    if (n > 0 && !(b->nn = malloc(n * sizeof(double)))) return MOE_STATUS_NO_MEMORY;
    if (m->top_k > 0) {
        size_t ma = moe_model_max_active(m);
        b->act = malloc(nb * ma * sizeof(size_t));
        b->n_act = malloc(nb * sizeof(size_t));
        b->iw = malloc((m->n_leaves + 1 + nb * ma) * sizeof(size_t));
        if (!b->act || !b->n_act || !b->iw) return MOE_STATUS_NO_MEMORY;
    }
    if (m->log_var && !(b->ev = malloc(nb * m->n_leaves * m->n_out * sizeof(double))))
        return MOE_STATUS_NO_MEMORY;
    return MOE_STATUS_OK;
}

void moe_block_free_nn(moe_block *b) {
    free(b->nn);
    free(b->act);
    free(b->n_act);
    free(b->iw);
    free(b->ev);
    b->nn = b->ev = NULL;
    b->act = b->n_act = b->iw = NULL;
}

void moe_block_gate_logits_mlp(const moe_model *m, const moe_nodes *nd, moe_block *b, size_t nb) {
    size_t GR = nd->gate_rows, gh = m->gh;
    for (size_t g = 0; g < m->n_gates; g++) {
        const double *feat =
            moe_net_forward(&m->gnet, m->g_w + g * m->gnet.n_w, nb, b->zg, b->nn);
        moe_head_forward(nb, m->gate_nch[g], gh, feat, m->gate_coef + m->gate_off[g],
                         b->gl + nd->grow[g], GR);
    }
}

void moe_block_experts_mlp(const moe_model *m, moe_block *b, size_t nb) {
    size_t K = m->n_leaves, R = m->coef_rows, eh = m->eh;
    for (size_t k = 0; k < K; k++) {
        const double *feat =
            moe_net_forward(&m->enet, m->e_w + k * m->enet.n_w, nb, b->ze, b->nn);
        moe_head_forward(nb, R, eh, feat, m->coef + k * R * eh, b->eo + k * R, K * R);
        if (m->log_var) { /* R = P: the variances beside the means */
            double *a = b->ev + k * R;
            moe_head_forward(nb, R, eh, feat, m->lv_coef + k * R * eh, a, K * R);
            moe_lv_variance(m, k, nb, a, K * R, a, K * R);
        }
    }
    if (m->task == MOE_TASK_CLASSIFICATION)
        for (size_t i = 0; i < nb; i++)
            for (size_t k = 0; k < K; k++) moe_log_softmax(b->eo + (i * K + k) * R, R);
}

/* ---- input-dependent variances ------------------------------------------------- */

void moe_lv_variance(const moe_model *m, size_t k, size_t n, const double *a, size_t lda,
                     double *var, size_t ldv) {
    size_t P = m->n_out;
    for (size_t i = 0; i < n; i++)
        for (size_t p = 0; p < P; p++) {
            double v = a[i * lda + p];
            var[i * ldv + p] =
                m->cov[(k * P + p) * P + p] + exp(v < MOE_LOG_VAR_MAX ? v : MOE_LOG_VAR_MAX);
        }
}
