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

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF /* the same bits on every instruction set */
#endif

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
    /* then the rows [z, t] and the experts' Gram kernel's scratch, or the
     * gates' (gram.c) */
    size_t q = m->ed + m->n_out, eg = nb * q + moe_gram_scratch_size(nb);
    size_t gg = moe_gram_softmax_scratch_size(nb, m->gd);
    return nb * (2 * cmax + 1) + nb * acc + (eg > gg ? eg : gg) + 16;
}

/* n doubles on a 64-byte boundary (a cache line: the vector loads of the
 * block's rows then split fewer lines); free() releases them. */
static double *block_array(size_t n) {
    size_t bytes = (n * sizeof(double) + 63) / 64 * 64;
    return aligned_alloc(64, bytes ? bytes : 64);
}

moe_status moe_block_alloc(moe_block *b, const moe_model *m, const moe_nodes *nd) {
    size_t nb = MOE_BLOCK_ROWS, K = m->n_leaves;
    size_t R = m->task == MOE_TASK_REGRESSION ? m->n_out : m->n_cls;
    memset(b, 0, sizeof *b);
    b->ze = block_array(nb * m->ed);
    b->zg = block_array(nb * m->gd);
    b->gl = block_array(nb * nd->gate_rows + 1);
    b->gp = block_array(nb * nd->gate_rows + 1);
    b->lp = block_array(nb * nd->n_nodes);
    b->eo = block_array(nb * K * R);
    b->ld = block_array(nb * K);
    b->post = block_array(nb * nd->n_nodes);
    b->tgt = block_array(nb * m->n_out + 1);
    b->ll = block_array(nb);
    b->ent = block_array(nb);
    b->scr = block_array(moe_block_scratch_size(m));
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

/* ---- runs of doubles in vectors of 8 lanes -------------------------------
 * The per-row loops over a gate's children or the leaves (runs of a few to
 * a few dozen doubles) as 8-lane vector operations on the run's whole
 * groups of 8 (GCC and clang vector extension), then the same operations
 * one element at a time on the rest: no alias checks, no scalar loop
 * setup per row. Lane-wise operations round as the scalar ones; a sum
 * adds lane l's elements l, l + 8, ... in order, then the lanes in a fixed
 * tree, then the rest in order, on every instruction set. */
typedef double v8d __attribute__((vector_size(64)));
typedef int64_t v8l __attribute__((vector_size(64)));

/* (macros: a function taking or returning a vector would change the
 * baseline ABI) */
#define V8_LOAD(v, p) memcpy(&(v), (p), sizeof(v8d))
#define V8_STORE(p, v) memcpy((p), &(v), sizeof(v8d))
/* m = a > m ? a : m in every lane (a NaN never replaces m) */
#define V8_MAX(m, a)                                                                            \
    do {                                                                                        \
        v8l gt_ = (v8l)((a) > (m));                                                             \
        (m) = (v8d)(((v8l)(a) & gt_) | ((v8l)(m) & ~gt_));                                      \
    } while (0)

/* Lane l + h of v in lane l: within the vector registers where the
 * compiler offers the shuffle, else lane by lane. */
#if defined(__clang__) || __GNUC__ >= 12
#define V8_HALF(v, h)                                                                           \
    ((h) == 4   ? __builtin_shufflevector(v, v, 4, 5, 6, 7, 4, 5, 6, 7)                         \
     : (h) == 2 ? __builtin_shufflevector(v, v, 2, 3, 2, 3, 2, 3, 2, 3)                         \
                : __builtin_shufflevector(v, v, 1, 1, 1, 1, 1, 1, 1, 1))
#else
#define V8_HALF(v, h)                                                                           \
    ((v8d){(v)[(0 % (h)) + (h)], (v)[(1 % (h)) + (h)], (v)[(2 % (h)) + (h)],                    \
           (v)[(3 % (h)) + (h)], (v)[(4 % (h)) + (h)], (v)[(5 % (h)) + (h)],                    \
           (v)[(6 % (h)) + (h)], (v)[(7 % (h)) + (h)]})
#endif

/* The max (-inf when there is none but NaN) and the sum of p[0 .. n). */
MOE_ISA_INLINE double run_max(const double *p, size_t n) {
    double mx = -INFINITY;
    size_t c = 0;
    if (n >= 8) {
        v8d m, v, u;
        V8_LOAD(m, p);
        for (c = 8; c + 8 <= n; c += 8) {
            V8_LOAD(v, p + c);
            V8_MAX(m, v);
        }
        for (size_t h = 4; h > 0; h /= 2) {
            u = V8_HALF(m, h);
            V8_MAX(m, u);
        }
        mx = m[0] > mx ? m[0] : mx;
    }
    for (; c < n; c++) mx = p[c] > mx ? p[c] : mx;
    return mx;
}

MOE_ISA_INLINE double run_sum(const double *p, size_t n) {
    double s = 0.0;
    size_t c = 0;
    if (n >= 8) {
        v8d a, v;
        V8_LOAD(a, p);
        for (c = 8; c + 8 <= n; c += 8) {
            V8_LOAD(v, p + c);
            a += v;
        }
        a += V8_HALF(a, 4);
        a += V8_HALF(a, 2);
        a += V8_HALF(a, 1);
        s = a[0];
    }
    for (; c < n; c++) s += p[c];
    return s;
}

/* y[c] = x[c] - s and y[c] = x[c] * s for c < n (y may be x). */
MOE_ISA_INLINE void run_sub(double *y, const double *x, size_t n, double s) {
    size_t c = 0;
    for (v8d a; c + 8 <= n; c += 8) {
        V8_LOAD(a, x + c);
        a -= s;
        V8_STORE(y + c, a);
    }
    for (; c < n; c++) y[c] = x[c] - s;
}

MOE_ISA_INLINE void run_mul(double *y, const double *x, size_t n, double s) {
    size_t c = 0;
    for (v8d a; c + 8 <= n; c += 8) {
        V8_LOAD(a, x + c);
        a *= s;
        V8_STORE(y + c, a);
    }
    for (; c < n; c++) y[c] = x[c] * s;
}

/* Ask for row i + PREFETCH_ROWS of the rows x (leading dimension ld): a
 * pass streams the rows from memory once, and they arrive in cache a few
 * dozen rows before the standardisation reads them (asked for a whole
 * block ahead, the lines left L1 again while the block was worked on: 1.5%
 * slower on one thread at D = 10). Each cache line is asked for once, with
 * the row where it starts (and the first row's first line), so rows
 * shorter than a line cost less than one prefetch each. Prefetches never
 * fault, so an address past the rows' end is harmless (computed as an
 * integer). */
#define PREFETCH_ROWS 64
MOE_ISA_INLINE void prefetch_next_row(const double *x, size_t ld, size_t i) {
    size_t lb = ld * sizeof(double);
    uintptr_t lo = (uintptr_t)x + (i + PREFETCH_ROWS) * lb, hi = lo + lb;
    uintptr_t p = i == 0 ? lo & ~(uintptr_t)63 : (lo + 63) & ~(uintptr_t)63;
    for (; p < hi; p += 64) __builtin_prefetch((const void *)p);
}

/* z (nb x (1 + n)): the intercept, then (x_c - mean_c) inv_j for the n
 * columns c = cols[j] of the rows x (leading dimension ld), prefetching the
 * next block's rows when pf. Consecutive columns (the usual case) are read
 * as one contiguous run. */
MOE_ISA_INLINE void standardise(const moe_model *m, size_t nb, const double *x, size_t ld,
                                const size_t *cols, size_t n, const double *inv, double *z,
                                int pf) {
    size_t run = 1, d = 1 + n;
    for (size_t j = 1; j < n && run; j++) run = cols[j] == cols[0] + j;
    const double *mu = n > 0 ? m->x_mean + cols[0] : NULL;
    for (size_t i = 0; i < nb; i++) {
        const double *xi = x + i * ld;
        double *zi = z + i * d;
        if (pf) prefetch_next_row(x, ld, i);
        zi[0] = 1.0;
        if (n > 0 && run) {
            const double *xr = xi + cols[0];
            size_t j = 0;
            for (v8d a, c, r; j + 8 <= n; j += 8) {
                V8_LOAD(a, xr + j);
                V8_LOAD(c, mu + j);
                V8_LOAD(r, inv + j);
                a = (a - c) * r;
                V8_STORE(zi + 1 + j, a);
            }
            if (n > 8 && j < n) { /* the last 8, overlapping: the same values again */
                v8d a, c, r;
                j = n - 8;
                V8_LOAD(a, xr + j);
                V8_LOAD(c, mu + j);
                V8_LOAD(r, inv + j);
                a = (a - c) * r;
                V8_STORE(zi + 1 + j, a);
                j = n;
            }
            for (; j < n; j++) zi[1 + j] = (xr[j] - mu[j]) * inv[j];
        } else
            for (size_t j = 0; j < n; j++)
                zi[1 + j] = (xi[cols[j]] - m->x_mean[cols[j]]) * inv[j];
    }
}

static int gates_share_columns(const moe_model *m) {
    return m->n_gcols == m->n_ecols &&
           (m->n_gcols == 0 || memcmp(m->gcols, m->ecols, m->n_gcols * sizeof(size_t)) == 0);
}

const double *moe_block_zg(const moe_model *m, const moe_block *b) {
    return m->gnet.n_hidden == 0 && gates_share_columns(m) ? b->ze : b->zg;
}

/* moe_block_gates, compiled once per instruction set (the same bits on
 * each: vmath.c says why). */
MOE_ISA_INLINE void block_gates(const moe_model *m, const moe_nodes *nd, moe_block *b, size_t nb,
                                const double *x, size_t ld) {
    size_t gd = m->gd, NN = nd->n_nodes;
    /* Multiply by reciprocals: a division per element costs as much as the
     * rest of the standardisation. */
    double *ie = b->inv, *ig = b->inv + m->n_ecols;
    for (size_t j = 0; j < m->n_ecols; j++) ie[j] = 1.0 / m->x_scale[m->ecols[j]];
    for (size_t j = 0; j < m->n_gcols; j++) ig[j] = 1.0 / m->x_scale[m->gcols[j]];
    standardise(m, nb, x, ld, m->ecols, m->n_ecols, ie, b->ze, 1);
    /* Gates on the experts' columns (the default) get the same numbers:
     * linear ones read them in ze (moe_block_zg), MLP ones from a copy. */
    const double *zg = moe_block_zg(m, b);
    if (zg == b->zg && gates_share_columns(m))
        memcpy(b->zg, b->ze, nb * gd * sizeof(double));
    else if (zg == b->zg)
        standardise(m, nb, x, ld, m->gcols, m->n_gcols, ig, b->zg, 0);
    size_t GR = nd->gate_rows;
    if (m->gnet.n_hidden > 0)
        moe_block_gate_logits_mlp(m, nd, b, nb);
    else if (GR > 0)
        linear_map(m, b, nb, GR, gd, zg, m->gate_coef, b->gl);
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
    for (size_t g = 0; g < G; g++) /* gate by gate: its sizes stay in registers */
        for (size_t i = 0, nc = m->gate_nch[g], o = nd->grow[g]; i < nb; i++, o += GR) {
            mx[i * G + g] = run_max(b->gl + o, nc);
            run_sub(b->gp + o, b->gl + o, nc, mx[i * G + g]);
        }
    moe_vexp(b->gp, b->gp, nb * GR);
    /* The sums in order, as topk.c's (a top-k gate keeping every child
     * gives these bits). */
    for (size_t g = 0; g < G; g++)
        for (size_t i = 0, nc = m->gate_nch[g], o = nd->grow[g]; i < nb; i++, o += GR) {
            double *pr = b->gp + o, s = 0.0;
            for (size_t c = 0; c < nc; c++) s += pr[c];
            run_mul(pr, pr, nc, 1.0 / s);
            sm[i * G + g] = s;
        }
    moe_vlog(sm, sm, nb * G);
    for (size_t i = 0; i < nb; i++) b->lp[i * NN] = 0.0;
    for (size_t g = 0; g < G; g++) /* parents first: lp[g] is set before its children's */
        for (size_t i = 0, nc = m->gate_nch[g]; i < nb; i++) {
            double *v = b->gl + i * GR + nd->grow[g], *lp = b->lp + i * NN;
            double *lc = lp + nd->child0[g], sh = mx[i * G + g] + sm[i * G + g], base = lp[g];
            size_t c = 0;
            for (v8d a, l; c + 8 <= nc; c += 8) {
                V8_LOAD(a, v + c);
                a -= sh;
                l = base + a;
                V8_STORE(v + c, a);
                V8_STORE(lc + c, l);
            }
            for (; c < nc; c++) {
                v[c] -= sh;
                lc[c] = base + v[c];
            }
        }
}

#define BLOCK_GATES_VERSION(SFX, ATTR)                                                          \
    ATTR static void block_gates_##SFX(const moe_model *m, const moe_nodes *nd, moe_block *b,   \
                                       size_t nb, const double *x, size_t ld) {                 \
        block_gates(m, nd, b, nb, x, ld);                                                       \
    }
MOE_ISA_VERSIONS(BLOCK_GATES_VERSION)

void moe_block_gates(const moe_model *m, const moe_nodes *nd, moe_block *b, size_t nb,
                     const double *x, size_t ld) {
    MOE_ISA_CALL(moe_isa_best(), block_gates, m, nd, b, nb, x, ld);
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

/* moe_block_posterior, compiled once per instruction set. */
MOE_ISA_INLINE void block_posterior(const moe_model *m, const moe_nodes *nd, moe_block *b,
                                    size_t nb, const double *y, size_t ld_y,
                                    const int32_t *labels) {
    size_t K = m->n_leaves, P = m->n_out, C = m->n_cls, NN = nd->n_nodes, G = m->n_gates;
    double *il = b->invl, *iy = b->invl + K * P;
    for (size_t k = 0; k < K; k++)
        for (size_t p = 0; p < P; p++) il[k * P + p] = 1.0 / m->chol[(k * P + p) * P + p];
    for (size_t p = 0; p < P; p++) iy[p] = 1.0 / m->y_scale[p];
    /* The log joint of each leaf goes to the leaves' posterior slots. One
     * output with fixed variances (the common case) has a loop of its own:
     * the general loop below without its inner loops, the log joint at once,
     * vectorised over the experts (same operations). */
    int one = m->task == MOE_TASK_REGRESSION && P == 1 && !m->log_var;
    /* (LOG_2PI + logdet_k) once per block, in ld (free until the exps
     * below); 0.0 + u^2 is u^2 (a square is never -0), so the sums are the
     * general loop's. */
    double *dt = b->ld;
    for (size_t k = 0; k < K && one; k++) dt[k] = LOG_2PI + m->logdet[k];
    for (size_t i = 0; i < nb && one; i++) {
        const double *mu = b->eo + i * K, *lq = b->lp + i * NN + G;
        double *lj = b->post + i * NN + G, t = (y[i * ld_y] - m->y_mean[0]) * iy[0];
        size_t k = 0;
        b->tgt[i] = t;
        for (v8d u, a, d, l; k + 8 <= K; k += 8) {
            V8_LOAD(u, mu + k);
            V8_LOAD(a, il + k);
            V8_LOAD(d, dt + k);
            V8_LOAD(l, lq + k);
            u = (t - u) * a;
            l = l + -0.5 * (d + u * u);
            V8_STORE(lj + k, l);
        }
        for (; k < K; k++) {
            double u = (t - mu[k]) * il[k];
            lj[k] = lq[k] + -0.5 * (dt[k] + u * u);
        }
    }
    for (size_t i = 0; i < nb && !one; i++) {
        double *ldi = b->ld + i * K;
        double *lp = b->lp + i * NN, *lj = b->post + i * NN + G;
        if (m->task == MOE_TASK_REGRESSION) {
            double *t = b->tgt + i * P;
            for (size_t p = 0; p < P; p++) t[p] = (y[i * ld_y + p] - m->y_mean[p]) * iy[p];
            if (m->log_var) { /* each row's own variances (nn.c) */
                moe_block_logdens_lv(m, b, i, ldi);
            }
            for (size_t k = 0; k < K && P != 1 && !m->log_var; k++) {
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
        for (size_t k = 0; k < K; k++) lj[k] = lp[G + k] + ldi[k];
    }
    /* Their max over the leaves (kept in ll until the row is finished), and
     * ex = lj - max, exponentiated below, in ld (the densities are no longer
     * needed). A loop of its own: read back in the loop that stored them,
     * the log joints would stall the loads. */
    for (size_t i = 0; i < nb; i++) {
        double *ex = b->ld + i * K, *lj = b->post + i * NN + G;
        double mx = b->ll[i] = run_max(lj, K);
        if (isfinite(mx))
            run_sub(ex, lj, K, mx);
        else
            memset(ex, 0, K * sizeof(double));
    }
    /* h_k = exp(lj_k - mx) / s with one exp per leaf, exp and log over the
     * whole block at once (vmath.c); then log h_k = lj_k - l, so the
     * entropy -sum h log h needs no log. ent holds s, then log s. */
    moe_vexp(b->ld, b->ld, nb * K);
    for (size_t i = 0; i < nb; i++) {
        double *ex = b->ld + i * K, s = run_sum(ex, K);
        run_mul(ex, ex, K, 1.0 / s);
        b->ent[i] = s;
    }
    moe_vlog(b->ent, b->ent, nb);
    for (size_t i = 0; i < nb; i++) {
        double *lp = b->lp + i * NN, *post = b->post + i * NN;
        double *lj = post + G, *ex = b->ld + i * K;
        double mx = b->ll[i];
        if (isfinite(mx)) {
            /* h log h summed as run_sum sums, 0 log 0 = 0 */
            double l = mx + b->ent[i], e = 0.0;
            size_t k = 0;
            if (K >= 8) {
                v8d acc = {0}, h, lk;
                for (; k + 8 <= K; k += 8) {
                    V8_LOAD(h, ex + k);
                    V8_LOAD(lk, lj + k);
                    lk = h * (lk - l);
                    acc += (v8d)((v8l)lk & (v8l)(h > 0.0));
                    V8_STORE(lj + k, h);
                }
                acc += V8_HALF(acc, 4);
                acc += V8_HALF(acc, 2);
                acc += V8_HALF(acc, 1);
                e = acc[0];
            }
            for (; k < K; k++) {
                double h = ex[k], t = h * (lj[k] - l);
                lj[k] = h;
                if (h > 0.0) e += t;
            }
            b->ll[i] = l;
            b->ent[i] = -e;
        } else {
            b->ll[i] = mx;
            b->ent[i] = 0.0;
            /* Every leaf gives the target zero density (far outside every
             * expert): fall back to the prior so the posteriors stay a
             * distribution. The row's log-likelihood stays -inf. */
            for (size_t k = 0; k < K; k++) lj[k] = exp(lp[G + k]);
        }
    }
    /* The gates' posteriors, children first (a loop of its own, as above);
     * the root's is 1 (its leaves' posteriors are normalised above), set
     * rather than summed. */
    for (size_t i = 0; i < nb && G > 0; i++) {
        double *post = b->post + i * NN;
        for (size_t g = G; g-- > 1;) post[g] = run_sum(post + nd->child0[g], m->gate_nch[g]);
        post[0] = 1.0;
    }
}

#define BLOCK_POSTERIOR_VERSION(SFX, ATTR)                                                      \
    ATTR static void block_posterior_##SFX(const moe_model *m, const moe_nodes *nd,             \
                                           moe_block *b, size_t nb, const double *y,            \
                                           size_t ld_y, const int32_t *labels) {                \
        block_posterior(m, nd, b, nb, y, ld_y, labels);                                         \
    }
MOE_ISA_VERSIONS(BLOCK_POSTERIOR_VERSION)

void moe_block_posterior(const moe_model *m, const moe_nodes *nd, moe_block *b, size_t nb,
                         const double *y, size_t ld_y, const int32_t *labels) {
    MOE_ISA_CALL(moe_isa_best(), block_posterior, m, nd, b, nb, y, ld_y, labels);
}
