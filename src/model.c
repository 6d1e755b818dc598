/*
 * model.c -- the fitted model object: allocation, copies, metadata, and the
 * getters that report parameters on the user's original scale.
 *
 * The fit works on standardised inputs z_j = (x_j - m_j) / s_j and (for
 * regression) standardised targets t_p = (y_p - a_p) / b_p. A linear map
 * sum_j w_j z_j (w_0 the intercept) is, on the original scale,
 *   intercept  w_0 - sum_j w_j m_j / s_j,   slope of x_j  w_j / s_j,
 * and a regression output adds y = a_p + b_p t_p on top.
 */
#include "moe_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void *dup_mem(const void *src, size_t bytes) {
    if (bytes == 0) return calloc(1, 1);
    void *p = malloc(bytes);
    if (p && src) memcpy(p, src, bytes);
    return p;
}

moe_model *moe_model_alloc(const moe_model *t, const size_t *ecols, const size_t *gcols) {
    moe_model *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->task = t->task;
    m->variance = t->variance;
    m->tree = t->tree;
    m->n_cols = t->n_cols;
    m->n_ecols = t->n_ecols;
    m->n_gcols = t->n_gcols;
    m->n_out = t->task == MOE_TASK_REGRESSION ? t->n_out : 0;
    m->n_cls = t->task == MOE_TASK_CLASSIFICATION ? t->n_cls : 0;
    m->ed = 1 + m->n_ecols;
    m->gd = 1 + m->n_gcols;
    m->n_leaves = moe_tree_shape_n_leaves(&m->tree);
    m->n_gates = moe_tree_shape_n_gates(&m->tree);
    m->coef_rows = m->task == MOE_TASK_REGRESSION ? m->n_out : m->n_cls;
    /* MLP nodes: the template's enet / gnet give the hidden layers */
    moe_mlp ea = {t->enet.n_hidden, {0}, t->enet.act}, ga = {t->gnet.n_hidden, {0}, t->gnet.act};
    for (size_t l = 0; l < MOE_MAX_HIDDEN; l++) {
        ea.hidden[l] = t->enet.hidden[l];
        ga.hidden[l] = t->gnet.hidden[l];
    }
    moe_net_init(&m->enet, m->ed, &ea);
    moe_net_init(&m->gnet, m->gd, &ga);
    m->eh = m->enet.head_in;
    m->gh = m->gnet.head_in;
    m->top_k = t->top_k;
    m->log_var = t->log_var && m->task == MOE_TASK_REGRESSION;
    size_t K = m->n_leaves, P = m->n_out;
    size_t grows = moe_tree_layout(&m->tree, m->gh, NULL, NULL);
    m->ecols = dup_mem(ecols, m->n_ecols * sizeof(size_t));
    m->gcols = dup_mem(gcols, m->n_gcols * sizeof(size_t));
    m->x_mean = calloc(m->n_cols + 1, sizeof(double));
    m->x_scale = calloc(m->n_cols + 1, sizeof(double));
    m->y_mean = calloc(P + 1, sizeof(double));
    m->y_scale = calloc(P + 1, sizeof(double));
    m->gate_nch = calloc(m->n_gates + 1, sizeof(size_t));
    m->gate_off = calloc(m->n_gates + 1, sizeof(size_t));
    m->gate_coef = calloc(grows * m->gh + 1, sizeof(double));
    m->coef = calloc(K * m->coef_rows * m->eh + 1, sizeof(double));
    m->e_w = calloc(K * m->enet.n_w + 1, sizeof(double));
    m->g_w = calloc(m->n_gates * m->gnet.n_w + 1, sizeof(double));
    m->cov = calloc(K * P * P + 1, sizeof(double));
    m->chol = calloc(K * P * P + 1, sizeof(double));
    m->logdet = calloc(K + 1, sizeof(double));
    if (m->log_var && !(m->lv_coef = calloc(K * P * m->eh + 1, sizeof(double)))) {
        moe_model_free(m);
        return NULL;
    }
    if (!m->ecols || !m->gcols || !m->x_mean || !m->x_scale || !m->y_mean || !m->y_scale ||
        !m->gate_nch || !m->gate_off || !m->gate_coef || !m->coef || !m->cov || !m->chol ||
        !m->logdet || !m->e_w || !m->g_w) {
        moe_model_free(m);
        return NULL;
    }
    moe_tree_layout(&m->tree, m->gh, m->gate_nch, m->gate_off);
    for (size_t j = 0; j < m->n_cols; j++) m->x_scale[j] = 1.0;
    for (size_t p = 0; p < P; p++) m->y_scale[p] = 1.0;
    for (size_t k = 0; k < K; k++)
        for (size_t p = 0; p < P; p++) m->cov[(k * P + p) * P + p] = 1.0;
    moe_model_refresh_chol(m);
    m->report.df = moe_model_df(m);
    return m;
}

void moe_model_free(moe_model *m) {
    if (!m) return;
    free(m->ecols);
    free(m->gcols);
    free(m->x_mean);
    free(m->x_scale);
    free(m->y_mean);
    free(m->y_scale);
    free(m->gate_nch);
    free(m->gate_off);
    free(m->gate_coef);
    free(m->coef);
    free(m->cov);
    free(m->chol);
    free(m->logdet);
    free(m->e_w);
    free(m->g_w);
    free(m->lv_coef);
    free(m->events);
    free(m->trace);
    for (size_t i = 0; i < m->n_meta; i++) {
        free(m->meta[i].key);
        free(m->meta[i].value);
    }
    free(m->meta);
    free(m);
}

moe_model *moe_model_clone(const moe_model *src) {
    moe_model *m = moe_model_alloc(src, src->ecols, src->gcols);
    if (!m) return NULL;
    size_t K = m->n_leaves, P = m->n_out;
    size_t grows = moe_tree_layout(&m->tree, m->gh, NULL, NULL);
    memcpy(m->x_mean, src->x_mean, m->n_cols * sizeof(double));
    memcpy(m->x_scale, src->x_scale, m->n_cols * sizeof(double));
    memcpy(m->y_mean, src->y_mean, P * sizeof(double));
    memcpy(m->y_scale, src->y_scale, P * sizeof(double));
    memcpy(m->gate_coef, src->gate_coef, grows * m->gh * sizeof(double));
    memcpy(m->coef, src->coef, K * m->coef_rows * m->eh * sizeof(double));
    memcpy(m->e_w, src->e_w, K * m->enet.n_w * sizeof(double));
    memcpy(m->g_w, src->g_w, m->n_gates * m->gnet.n_w * sizeof(double));
    memcpy(m->cov, src->cov, K * P * P * sizeof(double));
    memcpy(m->chol, src->chol, K * P * P * sizeof(double));
    memcpy(m->logdet, src->logdet, K * sizeof(double));
    if (m->log_var) memcpy(m->lv_coef, src->lv_coef, K * P * m->eh * sizeof(double));
    m->report = src->report;
    m->events = dup_mem(src->events, src->report.n_events * sizeof(moe_event));
    m->trace = dup_mem(src->trace, src->n_trace * sizeof(double));
    m->n_trace = src->n_trace;
    if (!m->events || !m->trace) goto fail;
    for (size_t i = 0; i < src->n_meta; i++)
        if (moe_model_meta_set(m, src->meta[i].key, src->meta[i].value) != MOE_STATUS_OK)
            goto fail;
    return m;
fail:
    moe_model_free(m);
    return NULL;
}

int moe_model_refresh_chol(moe_model *m) {
    size_t P = m->n_out;
    int ok = 0;
    for (size_t k = 0; k < m->n_leaves && P > 0; k++) {
        const double *c = m->cov + k * P * P;
        double *l = m->chol + k * P * P;
        memset(l, 0, P * P * sizeof(double));
        /* Plain Cholesky: P is small (the number of outputs). */
        double logdet = 0.0;
        for (size_t i = 0; i < P; i++) {
            for (size_t j = 0; j <= i; j++) {
                double s = c[i * P + j];
                for (size_t q = 0; q < j; q++) s -= l[i * P + q] * l[j * P + q];
                if (i == j) {
                    if (!(s > 0.0) || !isfinite(s)) {
                        ok = -1;
                        s = 1e-300;
                    }
                    l[i * P + i] = sqrt(s);
                    logdet += log(s);
                } else {
                    l[i * P + j] = s / l[j * P + j];
                }
            }
        }
        m->logdet[k] = logdet;
    }
    return ok;
}

size_t moe_model_df(const moe_model *m) {
    size_t df = 0;
    for (size_t g = 0; g < m->n_gates; g++) df += (m->gate_nch[g] - 1) * m->gh + m->gnet.n_w;
    size_t P = m->n_out, per;
    if (m->task == MOE_TASK_REGRESSION) {
        size_t cov = m->variance == MOE_VARIANCE_ISO    ? 1
                     : m->variance == MOE_VARIANCE_DIAG ? P
                                                        : P * (P + 1) / 2;
        per = P * m->eh + (m->log_var ? P * m->eh : cov); /* log_var: a head, not a floor */
    } else {
        per = (m->n_cls ? m->n_cls - 1 : 0) * m->eh;
    }
    per += m->enet.n_w;
    return df + per * m->n_leaves;
}

/* ---- getters ---------------------------------------------------------------- */

moe_fit_report moe_model_report(const moe_model *m) { return m->report; }

moe_status moe_model_event(const moe_model *m, size_t i, moe_event *out) {
    if (i >= m->report.n_events || !out)
        return MOE_STATUS_INVALID_ARGUMENT;
    *out = m->events[i];
    return MOE_STATUS_OK;
}

const char *moe_event_kind_str(moe_event_kind kind) {
    switch (kind) {
    case MOE_EVENT_KIND_LOST_SUPPORT: return "lost_support";
    case MOE_EVENT_KIND_REGAINED_SUPPORT: return "regained_support";
    case MOE_EVENT_KIND_VARIANCE_FLOOR: return "variance_floor";
    case MOE_EVENT_KIND_RIDGE_RAISED: return "ridge_raised";
    case MOE_EVENT_KIND_CONSTANT_COLUMN: return "constant_column";
    case MOE_EVENT_KIND_ABSENT_CLASS: return "absent_class";
    case MOE_EVENT_KIND_NOT_MONOTONE: return "not_monotone";
    }
    return "unknown";
}

size_t moe_model_trace(const moe_model *m, double *out, size_t capacity) {
    for (size_t i = 0; i < m->n_trace && i < capacity; i++) out[i] = m->trace[i];
    return m->n_trace;
}

moe_task moe_model_task(const moe_model *m) { return m->task; }
moe_variance moe_model_variance(const moe_model *m) { return m->variance; }
moe_tree_shape moe_model_tree(const moe_model *m) { return m->tree; }
size_t moe_model_n_experts(const moe_model *m) { return m->n_leaves; }
size_t moe_model_n_gates(const moe_model *m) { return m->n_gates; }
size_t moe_model_n_cols(const moe_model *m) { return m->n_cols; }
size_t moe_model_n_outputs(const moe_model *m) { return m->n_out; }
size_t moe_model_n_classes(const moe_model *m) { return m->n_cls; }

size_t moe_model_expert_cols(const moe_model *m, size_t *out, size_t capacity) {
    for (size_t j = 0; j < m->n_ecols && j < capacity; j++) out[j] = m->ecols[j];
    return m->n_ecols;
}

size_t moe_model_gate_cols(const moe_model *m, size_t *out, size_t capacity) {
    for (size_t j = 0; j < m->n_gcols && j < capacity; j++) out[j] = m->gcols[j];
    return m->n_gcols;
}

size_t moe_model_gate_n_children(const moe_model *m, size_t gate) {
    return gate < m->n_gates ? m->gate_nch[gate] : 0;
}

/* One standardised linear map w[0..d-1] over columns cols (intercept first)
 * to the original scale, then y = ya + yb * (...). */
static void unstandardise(const moe_model *m, const double *w, const size_t *cols, size_t nc,
                          double ya, double yb, double *out) {
    double icpt = w[0];
    for (size_t j = 0; j < nc; j++) {
        double s = m->x_scale[cols[j]];
        out[1 + j] = yb * w[1 + j] / s;
        icpt -= w[1 + j] * m->x_mean[cols[j]] / s;
    }
    out[0] = ya + yb * icpt;
}

moe_status moe_model_gate_coef(const moe_model *m, size_t gate, double *out) {
    if (gate >= m->n_gates || !out || m->gnet.n_hidden > 0) return MOE_STATUS_INVALID_ARGUMENT;
    const double *v = m->gate_coef + m->gate_off[gate];
    for (size_t c = 0; c < m->gate_nch[gate]; c++)
        unstandardise(m, v + c * m->gd, m->gcols, m->n_gcols, 0.0, 1.0, out + c * m->gd);
    return MOE_STATUS_OK;
}

moe_status moe_model_expert_coef(const moe_model *m, size_t k, double *out) {
    if (k >= m->n_leaves || !out || m->enet.n_hidden > 0) return MOE_STATUS_INVALID_ARGUMENT;
    const double *w = m->coef + k * m->coef_rows * m->ed;
    for (size_t r = 0; r < m->coef_rows; r++) {
        double ya = m->task == MOE_TASK_REGRESSION ? m->y_mean[r] : 0.0;
        double yb = m->task == MOE_TASK_REGRESSION ? m->y_scale[r] : 1.0;
        unstandardise(m, w + r * m->ed, m->ecols, m->n_ecols, ya, yb, out + r * m->ed);
    }
    return MOE_STATUS_OK;
}

moe_status moe_model_expert_cov(const moe_model *m, size_t k, double *out) {
    if (k >= m->n_leaves || !out || m->task != MOE_TASK_REGRESSION || m->log_var)
        return MOE_STATUS_INVALID_ARGUMENT;
    size_t P = m->n_out;
    for (size_t p = 0; p < P; p++)
        for (size_t q = 0; q < P; q++)
            out[p * P + q] = m->cov[(k * P + p) * P + q] * (m->y_scale[p] * m->y_scale[q]);
    return MOE_STATUS_OK;
}

/* ---- architecture (MLP nodes, top-k) ------------------------------------------ */

static moe_mlp net_arch(const moe_net *net) {
    moe_mlp a;
    memset(&a, 0, sizeof a);
    a.n_hidden = net->n_hidden;
    a.activation = net->act;
    for (size_t l = 0; l < net->n_hidden; l++) a.hidden[l] = net->hidden[l];
    return a;
}

moe_mlp moe_model_expert_mlp(const moe_model *m) { return net_arch(&m->enet); }
moe_mlp moe_model_gate_mlp(const moe_model *m) { return net_arch(&m->gnet); }
size_t moe_model_top_k(const moe_model *m) { return m->top_k; }
int moe_model_expert_log_var(const moe_model *m) { return m->log_var; }

moe_status moe_model_with_top_k(const moe_model *m, size_t k, moe_model **out, moe_error *err) {
    if (!out) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "with_top_k: no output pointer");
    *out = NULL;
    if (!m) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "with_top_k: no model");
    if (k > MOE_MAX_BRANCHING)
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "top-k %zu is out of range (0..%d)", k,
                       MOE_MAX_BRANCHING);
    moe_model *c = moe_model_clone(m);
    if (!c) return moe_err(err, MOE_STATUS_NO_MEMORY, "out of memory");
    c->top_k = k;
    *out = c;
    return MOE_STATUS_OK;
}

/* ---- metadata ---------------------------------------------------------------- */

#define META_KEY_MAX 255
#define META_VALUE_MAX (16u << 20)

moe_status moe_model_meta_set(moe_model *m, const char *key, const char *value) {
    if (!m || !key || !value || !*key || strlen(key) > META_KEY_MAX ||
        strlen(value) > META_VALUE_MAX)
        return MOE_STATUS_INVALID_ARGUMENT;
    char *v = dup_mem(value, strlen(value) + 1);
    if (!v) return MOE_STATUS_NO_MEMORY;
    for (size_t i = 0; i < m->n_meta; i++) {
        if (strcmp(m->meta[i].key, key) == 0) {
            free(m->meta[i].value);
            m->meta[i].value = v;
            return MOE_STATUS_OK;
        }
    }
    char *k = dup_mem(key, strlen(key) + 1);
    moe_meta_entry *grown = realloc(m->meta, (m->n_meta + 1) * sizeof *grown);
    if (!k || !grown) {
        free(k);
        free(v);
        if (grown) m->meta = grown;
        return MOE_STATUS_NO_MEMORY;
    }
    m->meta = grown;
    m->meta[m->n_meta].key = k;
    m->meta[m->n_meta].value = v;
    m->n_meta++;
    return MOE_STATUS_OK;
}

const char *moe_model_meta_get(const moe_model *m, const char *key) {
    for (size_t i = 0; m && key && i < m->n_meta; i++)
        if (strcmp(m->meta[i].key, key) == 0) return m->meta[i].value;
    return NULL;
}

size_t moe_model_meta_count(const moe_model *m) { return m ? m->n_meta : 0; }

moe_status moe_model_meta_at(const moe_model *m, size_t i, const char **key,
                             const char **value) {
    if (!m || i >= m->n_meta) return MOE_STATUS_INVALID_ARGUMENT;
    if (key) *key = m->meta[i].key;
    if (value) *value = m->meta[i].value;
    return MOE_STATUS_OK;
}
