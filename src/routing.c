/*
 * routing.c -- routing diagnostics: how the gates spread rows over the
 * experts (load, importance, entropy, balance, dead experts), for the leaves
 * and for every gate of a hierarchy. Definitions in moe.h.
 *
 * Gate probabilities come from moe_model_predict_gates, one block of rows
 * at a time (that call spreads a block over the threads); the sums here run
 * over the rows in order, so the result does not depend on the thread
 * count. Workspaces are sized once: one block of gate probabilities and one
 * vector of node masses.
 *
 * Node masses: a node's mass at row i is the sum of the gate probabilities
 * of the leaves below it, i.e. the probability of reaching it; a child's
 * conditional probability is its mass over its parent's. Nodes are numbered
 * breadth-first, gates 0..G-1 then leaves G..G+K-1, so the children of the
 * gates, taken in gate order, are nodes 1, 2, ..., G+K-1: gate g's child c
 * is node gate_first[g] + c + 1.
 */
#include "moe_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Gate-probability entries per block (rows x K): about 2 MB. */
#define ROUTING_BLOCK_ENTRIES ((size_t)1 << 18)
#define ROUTING_BLOCK_MAX_ROWS ((size_t)4096)

void moe_routing_free(moe_routing *r) {
    if (!r) return;
    free(r->load);
    free(r->rows);
    free(r->importance);
    free(r->dead);
    free(r->gate_first);
    free(r->child_load);
    free(r->child_importance);
    free(r->gate_reach);
    free(r->gate_entropy);
    free(r->gate_entropy_norm);
    free(r->gate_balance);
    memset(r, 0, sizeof *r);
}

/* -sum q log q over the entries of p[0..n) divided by `total` (0 * log 0 = 0). */
static double entropy_of(const double *p, size_t n, double total) {
    double h = 0.0;
    for (size_t c = 0; c < n; c++) {
        double q = p[c] / total;
        if (q > 0.0) h -= q * log(q);
    }
    return h;
}

/* Squared coefficient of variation of v[0..n) whose sum is `total`. */
static double cv2_of(const double *v, size_t n, double total) {
    if (n < 2 || !(total > 0.0)) return 0.0;
    double mean = total / (double)n, s = 0.0;
    for (size_t k = 0; k < n; k++) s += (v[k] - mean) * (v[k] - mean);
    return s / (double)n / (mean * mean);
}

/* mass[0..G) from the leaf masses mass[G..G+K): children before parents. */
static void node_masses(double *mass, size_t G, const size_t *nch, const size_t *first) {
    for (size_t g = G; g-- > 0;) {
        double s = 0.0;
        for (size_t c = 0; c < nch[g]; c++) s += mass[first[g] + c + 1];
        mass[g] = s;
    }
}

moe_status moe_model_routing(const moe_model *m, size_t n, const double *x, size_t ld,
                             const double *weights, moe_routing *out, moe_error *err) {
    if (!out) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "routing: null output");
    memset(out, 0, sizeof *out);
    if (!m) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "routing: null model");
    if (n == 0) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "routing: no rows");
    if (!x) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "routing: no input matrix");
    if (ld < moe_model_n_cols(m))
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "routing: ld_x %zu < %zu model columns",
                       ld, moe_model_n_cols(m));
    double W = 0.0;
    if (weights) {
        for (size_t i = 0; i < n; i++) {
            if (!isfinite(weights[i]) || weights[i] < 0.0)
                return moe_err_at(err, MOE_STATUS_DATA, NULL, i + 1, 0,
                                  "row %zu: weight %g (weights must be finite and >= 0)", i + 1,
                                  weights[i]);
            W += weights[i];
        }
        if (!(W > 0.0))
            return moe_err(err, MOE_STATUS_DATA, "routing: every row has weight 0");
    } else {
        W = (double)n;
    }

    const size_t K = moe_model_n_experts(m), G = moe_model_n_gates(m), NN = G + K;
    size_t B = ROUTING_BLOCK_ENTRIES / K;
    if (B < 1) B = 1;
    if (B > ROUTING_BLOCK_MAX_ROWS) B = ROUTING_BLOCK_MAX_ROWS;
    if (B > n) B = n;
    moe_status st = MOE_STATUS_OK;
    double *gp = malloc(B * K * sizeof *gp);
    double *mass = malloc(NN * sizeof *mass);
    size_t *nch = malloc((G + 1) * sizeof *nch);
    double *ent_acc = calloc(G + 1, sizeof *ent_acc);
    moe_routing r;
    memset(&r, 0, sizeof r);
    r.n_experts = K;
    r.n_gates = G;
    r.n_rows = n;
    r.sum_weights = W;
    r.n_children = NN - 1;
    r.load = calloc(K, sizeof *r.load);
    r.rows = calloc(K, sizeof *r.rows);
    r.importance = calloc(K, sizeof *r.importance);
    r.dead = calloc(K, sizeof *r.dead);
    int ok = gp && mass && nch && ent_acc && r.load && r.rows && r.importance && r.dead;
    if (ok && G > 0) {
        r.gate_first = malloc(G * sizeof *r.gate_first);
        r.child_load = calloc(NN - 1, sizeof *r.child_load);
        r.child_importance = calloc(NN - 1, sizeof *r.child_importance);
        r.gate_reach = calloc(G, sizeof *r.gate_reach);
        r.gate_entropy = calloc(G, sizeof *r.gate_entropy);
        r.gate_entropy_norm = calloc(G, sizeof *r.gate_entropy_norm);
        r.gate_balance = calloc(G, sizeof *r.gate_balance);
        ok = r.gate_first && r.child_load && r.child_importance && r.gate_reach &&
             r.gate_entropy && r.gate_entropy_norm && r.gate_balance;
    }
    if (!ok) {
        st = moe_err(err, MOE_STATUS_NO_MEMORY, "routing: out of memory");
        goto done;
    }
    size_t nc = 0;
    for (size_t g = 0; g < G; g++) {
        nch[g] = moe_model_gate_n_children(m, g);
        r.gate_first[g] = nc;
        nc += nch[g];
    }
    if (nc != NN - 1) {
        st = moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "routing: inconsistent tree");
        goto done;
    }

    double ent_sum = 0.0;
    for (size_t r0 = 0; r0 < n; r0 += B) {
        size_t nb = n - r0 < B ? n - r0 : B;
        moe_error e;
        st = moe_model_predict_gates(m, nb, x + r0 * ld, ld, gp, &e);
        if (st == MOE_STATUS_DATA && e.line > 0) {
            /* The message counts rows from the block's start: count from x's. */
            size_t row = r0 + e.line, col = e.column;
            st = moe_err_at(err, st, NULL, row, col, "row %zu, column %zu: input is %g (not finite)",
                            row, col, col > 0 ? x[(row - 1) * ld + col - 1] : 0.0);
            goto done;
        }
        if (st != MOE_STATUS_OK) {
            if (err) *err = e;
            goto done;
        }
        for (size_t i = 0; i < nb; i++) {
            double w = weights ? weights[r0 + i] : 1.0;
            if (w == 0.0) continue;
            const double *g = gp + i * K;
            size_t best = 0;
            for (size_t k = 1; k < K; k++)
                if (g[k] > g[best]) best = k;
            r.load[best] += w;
            r.rows[best]++;
            double h = 0.0;
            for (size_t k = 0; k < K; k++) {
                r.importance[k] += w * g[k];
                if (g[k] > 0.0) h -= g[k] * log(g[k]);
            }
            ent_sum += w * h;
            if (G == 0) continue;
            memcpy(mass + G, g, K * sizeof *mass);
            node_masses(mass, G, nch, r.gate_first);
            for (size_t q = 0; q < G; q++) {
                if (!(mass[q] > 0.0)) continue;
                double hq = entropy_of(mass + r.gate_first[q] + 1, nch[q], mass[q]);
                ent_acc[q] += w * mass[q] * hq;
            }
        }
    }

    r.entropy = ent_sum / W;
    r.entropy_norm = K > 1 ? r.entropy / log((double)K) : 0.0;
    for (size_t k = 1; k < K; k++)
        if (r.load[k] > r.load[r.top_expert]) r.top_expert = k;
    r.top_share = r.load[r.top_expert] / W;
    r.balance = r.top_share * (double)K;
    r.load_cv2 = cv2_of(r.load, K, W);
    r.importance_cv2 = cv2_of(r.importance, K, W);
    r.collapsed = K >= 2 && r.top_share >= MOE_ROUTING_COLLAPSE_SHARE;
    for (size_t k = 0; k < K; k++) {
        if (r.load[k] > 0.0) continue;
        r.n_idle++;
        if (r.importance[k] < MOE_ROUTING_DEAD_SHARE * W / (double)K) {
            r.dead[k] = 1;
            r.n_dead++;
        }
    }

    if (G > 0) {
        /* Child sums of load and importance: node masses over the leaf sums. */
        memcpy(mass + G, r.load, K * sizeof *mass);
        node_masses(mass, G, nch, r.gate_first);
        memcpy(r.child_load, mass + 1, (NN - 1) * sizeof *mass);
        memcpy(mass + G, r.importance, K * sizeof *mass);
        node_masses(mass, G, nch, r.gate_first);
        memcpy(r.child_importance, mass + 1, (NN - 1) * sizeof *mass);
        for (size_t q = 0; q < G; q++) {
            r.gate_reach[q] = q == 0 ? W : mass[q];
            r.gate_entropy[q] = r.gate_reach[q] > 0.0 ? ent_acc[q] / r.gate_reach[q] : 0.0;
            r.gate_entropy_norm[q] = r.gate_entropy[q] / log((double)nch[q]);
            const double *cl = r.child_load + r.gate_first[q];
            double tot = 0.0, mx = 0.0;
            for (size_t c = 0; c < nch[q]; c++) {
                tot += cl[c];
                if (cl[c] > mx) mx = cl[c];
            }
            r.gate_balance[q] = tot > 0.0 ? mx / (tot / (double)nch[q]) : 0.0;
        }
    }
    *out = r;
    memset(&r, 0, sizeof r);

done:
    moe_routing_free(&r);
    free(gp);
    free(mass);
    free(nch);
    free(ent_acc);
    return st;
}
