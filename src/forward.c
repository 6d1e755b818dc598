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
#elif defined(__GNUC__)
/* (so that the loops over vmath_impl.h's exp and log vectorise: vmath.c) */
#pragma GCC optimize("no-trapping-math")
#endif

#include "vmath_impl.h"

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
    else {
        int omp = moe_blas_local_begin();
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nb, (int)n, (int)k, 1.0, z,
                    (int)k, W, (int)k, 0.0, out, (int)n);
        moe_blas_local_end(omp);
    }
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

/* (macros, or always inlined functions taking pointers: a function taking
 * or returning a vector would change the baseline ABI) */
#define V8_SPLAT(c) ((v8d){(c), (c), (c), (c), (c), (c), (c), (c)})
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

/* y[c] = exp(y[c]) for c < n, each y[c] at most 0 or NaN (a value minus
 * its set's max), as version isa computes it (vmath_impl.h, the bits of
 * moe_vexp_isa's), and y[c] = log(y[c]), vectorised. (In place: GCC 12
 * leaves the loop scalar when it writes another local array than it
 * reads.) */
MOE_ISA_INLINE void exp_n(double *y, size_t n, int isa) {
    moe_exp_n(isa, y, y, n, 1);
}

MOE_ISA_INLINE void log_n(double *y, size_t n, int isa) {
    moe_log_n(isa, y, y, n);
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

/* Ask for rows i0 .. i0 + n - 1 of x (leading dimension ld) into L2, one
 * request per cache line: the next block's rows while this one is worked
 * on. */
MOE_ISA_INLINE void prefetch_rows_l2(const double *x, size_t ld, size_t i0, size_t n) {
    uintptr_t lo = (uintptr_t)(x + i0 * ld) & ~(uintptr_t)63, hi = (uintptr_t)(x + (i0 + n) * ld);
    for (uintptr_t p = lo; p < hi; p += 64) __builtin_prefetch((const void *)p, 0, 2);
}

/* z (nb rows of 1 + n, leading dimension ldz): the intercept, then
 * (x_c - mean_c) inv_j for the n columns c = cols[j] of the rows x
 * (leading dimension ld), prefetching the rows ahead when pf. Consecutive
 * columns (the usual case) are read as one contiguous run. */
MOE_ISA_INLINE void standardise(const moe_model *m, size_t nb, const double *x, size_t ld,
                                const size_t *cols, size_t n, const double *inv, double *z,
                                size_t ldz, int pf) {
    size_t run = 1;
    for (size_t j = 1; j < n && run; j++) run = cols[j] == cols[0] + j;
    const double *mu = n > 0 ? m->x_mean + cols[0] : NULL;
    for (size_t i = 0; i < nb; i++) {
        const double *xi = x + i * ld;
        double *zi = z + i * ldz;
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

int moe_gates_share_columns(const moe_model *m) {
    return m->n_gcols == m->n_ecols &&
           (m->n_gcols == 0 || memcmp(m->gcols, m->ecols, m->n_gcols * sizeof(size_t)) == 0);
}

const double *moe_block_zg(const moe_model *m, const moe_block *b) {
    return m->gnet.n_hidden == 0 && moe_gates_share_columns(m) ? b->ze : b->zg;
}

/* moe_block_gates, compiled once per instruction set (isa: which, for the
 * exps it takes; vmath.c says why). */
MOE_ISA_INLINE void block_gates(const moe_model *m, const moe_nodes *nd, moe_block *b, size_t nb,
                                const double *x, size_t ld, int softmax, int isa) {
    size_t gd = m->gd, NN = nd->n_nodes;
    /* Multiply by reciprocals: a division per element costs as much as the
     * rest of the standardisation. */
    double *ie = b->inv, *ig = b->inv + m->n_ecols;
    for (size_t j = 0; j < m->n_ecols; j++) ie[j] = 1.0 / m->x_scale[m->ecols[j]];
    for (size_t j = 0; j < m->n_gcols; j++) ig[j] = 1.0 / m->x_scale[m->gcols[j]];
    /* Prefetching rows 64 ahead, but for the fused E-step rows (softmax
     * 0), which ask for the next block's rows into L2 (block_em_flat):
     * there the hardware streams them on to L1 and the requests are
     * redundant (about 1% of the pass). */
    standardise(m, nb, x, ld, m->ecols, m->n_ecols, ie, b->ze, m->ed, softmax);
    /* Gates on the experts' columns (the default) get the same numbers:
     * linear ones read them in ze (moe_block_zg), MLP ones from a copy. */
    const double *zg = moe_block_zg(m, b);
    if (zg == b->zg && moe_gates_share_columns(m))
        memcpy(b->zg, b->ze, nb * gd * sizeof(double));
    else if (zg == b->zg)
        standardise(m, nb, x, ld, m->gcols, m->n_gcols, ig, b->zg, m->gd, 0);
    size_t GR = nd->gate_rows;
    if (m->gnet.n_hidden > 0)
        moe_block_gate_logits_mlp(m, nd, b, nb);
    else if (GR > 0)
        linear_map(m, b, nb, GR, gd, zg, m->gate_coef, b->gl);
    if (!softmax) return; /* (the E-step's flat gate: block_em_flat) */
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
    exp_n(b->gp, nb * GR, isa);
    /* The sums in order, as topk.c's (a top-k gate keeping every child
     * gives these bits). */
    for (size_t g = 0; g < G; g++)
        for (size_t i = 0, nc = m->gate_nch[g], o = nd->grow[g]; i < nb; i++, o += GR) {
            double *pr = b->gp + o, s = 0.0;
            for (size_t c = 0; c < nc; c++) s += pr[c];
            run_mul(pr, pr, nc, 1.0 / s);
            sm[i * G + g] = s;
        }
    log_n(sm, nb * G, isa);
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

#define STANDARDISE_VERSION(SFX, ATTR)                                                          \
    ATTR static void standardise_##SFX(const moe_model *m, size_t nb, const double *x,          \
                                       size_t ld, const size_t *cols, size_t n,                 \
                                       const double *inv, double *z, size_t ldz) {              \
        standardise(m, nb, x, ld, cols, n, inv, z, ldz, 1);                                     \
    }
MOE_ISA_VERSIONS(STANDARDISE_VERSION)

void moe_standardise_rows(const moe_model *m, size_t nb, const double *x, size_t ld,
                          const size_t *cols, size_t n, const double *inv, double *z,
                          size_t ldz) {
    MOE_ISA_CALL(moe_isa_best(), standardise, m, nb, x, ld, cols, n, inv, z, ldz);
}

#define BLOCK_GATES_VERSION(SFX, ATTR)                                                          \
    ATTR static void block_gates_##SFX(const moe_model *m, const moe_nodes *nd, moe_block *b,   \
                                       size_t nb, const double *x, size_t ld, int softmax) {    \
        block_gates(m, nd, b, nb, x, ld, softmax, MOE_ISA_ID(SFX));                             \
    }
MOE_ISA_VERSIONS(BLOCK_GATES_VERSION)

void moe_block_gates(const moe_model *m, const moe_nodes *nd, moe_block *b, size_t nb,
                     const double *x, size_t ld) {
    MOE_ISA_CALL(moe_isa_best(), block_gates, m, nd, b, nb, x, ld, 1);
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

/* moe_block_posterior, compiled once per instruction set (isa as
 * block_gates). */
MOE_ISA_INLINE void block_posterior(const moe_model *m, const moe_nodes *nd, moe_block *b,
                                    size_t nb, const double *y, size_t ld_y,
                                    const int32_t *labels, int joint_only, int isa) {
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
    if (joint_only) return; /* (moe_block_forward_joint) */
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
    exp_n(b->ld, nb * K, isa);
    for (size_t i = 0; i < nb; i++) {
        double *ex = b->ld + i * K, s = run_sum(ex, K);
        run_mul(ex, ex, K, 1.0 / s);
        b->ent[i] = s;
    }
    log_n(b->ent, nb, isa);
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
                                           size_t ld_y, const int32_t *labels, int jo) {        \
        block_posterior(m, nd, b, nb, y, ld_y, labels, jo, MOE_ISA_ID(SFX));                    \
    }
MOE_ISA_VERSIONS(BLOCK_POSTERIOR_VERSION)

void moe_block_posterior(const moe_model *m, const moe_nodes *nd, moe_block *b, size_t nb,
                         const double *y, size_t ld_y, const int32_t *labels) {
    MOE_ISA_CALL(moe_isa_best(), block_posterior, m, nd, b, nb, y, ld_y, labels, 0);
}

/* ---- the E-step's rows with one flat gate of 8 ---------------------------
 * moe_block_gates' softmax and moe_block_posterior in one pass, 8 rows at a
 * time with the rows as the vector lanes, for the common E-step: one gate
 * over 8 leaves, one Gaussian target with fixed variances, linear gate and
 * experts. The row layout has the leaves as lanes, so each row's max, sum
 * and normalisation is a chain of dependent shuffles and adds, and each
 * phase a pass through the block's arrays around block-wide exps; here the
 * 8 rows' logits and means are transposed in registers (8 x 8), the maxes
 * and sums run down the leaves as 7 vertical operations on 8 rows at once,
 * the exps and logs take 8 rows' values per vector, and only the results
 * are transposed back and stored. The same operations on the same values
 * in the same order as the two functions', lane for lane (their maxes and
 * sums in their trees, the gate's sum in order), so the same bits in every
 * array they leave (ld and scr aside: scratch); tests/test_vmath.c checks
 * it on every instruction set. */
static int em_flat(const moe_model *m, const double *y) {
    return m->task == MOE_TASK_REGRESSION && y && m->n_out == 1 && !m->log_var &&
           m->enet.n_hidden == 0 && m->gnet.n_hidden == 0 && m->top_k == 0 &&
           m->n_gates == 1 && m->n_leaves == 8 && m->gate_nch[0] == 8;
}

/* lanes i0..i7 of a and b (i < 8: a's lane i, else b's lane i - 8) */
#if defined(__clang__) || __GNUC__ >= 12
#define V8_SHUF2(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define V8_SHUF2(a, b, ...) __builtin_shuffle(a, b, (v8l){__VA_ARGS__})
#endif

/* o[c] lane l = r[l] lane c (o and r distinct) */
MOE_ISA_INLINE void transpose8(v8d *o, const v8d *r) {
    v8d t[8], u[8];
    for (int l = 0; l < 8; l += 2) {
        t[l] = V8_SHUF2(r[l], r[l + 1], 0, 8, 2, 10, 4, 12, 6, 14);
        t[l + 1] = V8_SHUF2(r[l], r[l + 1], 1, 9, 3, 11, 5, 13, 7, 15);
    }
    for (int l = 0; l < 8; l += 4)
        for (int h = 0; h < 2; h++) {
            u[l + h] = V8_SHUF2(t[l + h], t[l + h + 2], 0, 1, 8, 9, 4, 5, 12, 13);
            u[l + h + 2] = V8_SHUF2(t[l + h], t[l + h + 2], 2, 3, 10, 11, 6, 7, 14, 15);
        }
    for (int c = 0; c < 4; c++) {
        o[c] = V8_SHUF2(u[c], u[c + 4], 0, 1, 2, 3, 8, 9, 10, 11);
        o[c + 4] = V8_SHUF2(u[c], u[c + 4], 4, 5, 6, 7, 12, 13, 14, 15);
    }
}

/* run_max's and run_sum's trees over the 8 leaves, down the columns c */
MOE_ISA_INLINE void cols_max(v8d *mx, const v8d *c) {
    v8d m[4], lo = V8_SPLAT(-INFINITY);
    for (int l = 0; l < 4; l++) {
        m[l] = c[l];
        V8_MAX(m[l], c[l + 4]);
    }
    for (int l = 0; l < 2; l++) V8_MAX(m[l], m[l + 2]);
    V8_MAX(m[0], m[1]);
    V8_MAX(lo, m[0]); /* (mx = m[0] > -inf ? m[0] : -inf) */
    *mx = lo;
}

MOE_ISA_INLINE void cols_sum(v8d *s, const v8d *c) {
    v8d a[4];
    for (int l = 0; l < 4; l++) a[l] = c[l] + c[l + 4];
    for (int l = 0; l < 2; l++) a[l] += a[l + 2];
    *s = a[0] + a[1];
}

/* Rows r0 .. r0 + n - 1 (n <= 8 EM_FLAT_GROUPS) of the block, as groups of
 * 8 rows taken phase by phase (each phase's groups are independent: their
 * chains overlap; the exps and logs of all of them run as one loop). */
#ifndef EM_FLAT_GROUPS
#define EM_FLAT_GROUPS 4
#endif
MOE_ISA_INLINE void em_flat_rows(const moe_model *m, moe_block *b, size_t r0, size_t n,
                                 const double *x, size_t ld, const double *y, size_t ld_y,
                                 const double *il, const double *dt, double iy, int isa) {
    enum { K = 8, NN = 9, NG = EM_FLAT_GROUPS };
    size_t ng = (n + 7) / 8, ri[NG][8], nr[NG];
    /* the rows, the last repeated past n (computed, not stored) */
    for (size_t g = 0; g < ng; g++) {
        nr[g] = n - 8 * g < 8 ? n - 8 * g : 8;
        for (size_t l = 0; l < 8; l++) ri[g][l] = r0 + 8 * g + (l < nr[g] ? l : nr[g] - 1);
    }
    v8d C[NG][8], LP[NG][8], J[NG][8], gm[NG], mx[NG], R[8];
    v8l fin[NG];
    double a[NG * 64], ls[NG * 8];
    /* the gate: max, exps, the sum in order, probabilities, log sum */
    for (size_t g = 0; g < ng; g++) {
        prefetch_rows_l2(x, ld, r0 + 8 * g + MOE_BLOCK_ROWS, nr[g]);
        for (int l = 0; l < 8; l++) V8_LOAD(R[l], b->gl + ri[g][l] * K);
        transpose8(C[g], R);
        cols_max(&gm[g], C[g]);
        for (int k = 0; k < 8; k++) {
            v8d v = C[g][k] - gm[g];
            V8_STORE(a + 64 * g + 8 * k, v);
        }
    }
    exp_n(a, 64 * ng, isa);
    for (size_t g = 0; g < ng; g++) {
        v8d s = V8_SPLAT(0.0), e[8];
        for (int k = 0; k < 8; k++) {
            V8_LOAD(e[k], a + 64 * g + 8 * k);
            s = s + e[k];
        }
        v8d inv = 1.0 / s;
        for (int k = 0; k < 8; k++) e[k] = e[k] * inv;
        transpose8(R, e);
        for (size_t l = 0; l < nr[g]; l++) V8_STORE(b->gp + (r0 + 8 * g + l) * K, R[l]);
        V8_STORE(ls + 8 * g, s);
        prefetch_rows_l2(y, ld_y, r0 + 8 * g + MOE_BLOCK_ROWS, nr[g]);
    }
    log_n(ls, 8 * ng, isa);
    /* log-softmax and log priors; the log joints, their max */
    for (size_t g = 0; g < ng; g++) {
        v8d sh, t;
        V8_LOAD(sh, ls + 8 * g);
        sh = gm[g] + sh;
        for (int k = 0; k < 8; k++) {
            C[g][k] -= sh;
            LP[g][k] = 0.0 + C[g][k];
        }
        transpose8(R, C[g]); /* (lp's rows from gl's: 0.0 + v either way) */
        for (size_t l = 0; l < nr[g]; l++) {
            double *lp = b->lp + (r0 + 8 * g + l) * NN;
            V8_STORE(b->gl + (r0 + 8 * g + l) * K, R[l]);
            R[l] = 0.0 + R[l];
            lp[0] = 0.0;
            V8_STORE(lp + 1, R[l]);
        }
        const size_t *q = ri[g];
        t = (v8d){y[q[0] * ld_y], y[q[1] * ld_y], y[q[2] * ld_y], y[q[3] * ld_y],
                  y[q[4] * ld_y], y[q[5] * ld_y], y[q[6] * ld_y], y[q[7] * ld_y]};
        t = (t - m->y_mean[0]) * iy;
        if (nr[g] == 8)
            V8_STORE(b->tgt + r0 + 8 * g, t);
        else
            for (size_t l = 0; l < nr[g]; l++) b->tgt[r0 + 8 * g + l] = t[l];
        for (int l = 0; l < 8; l++) V8_LOAD(R[l], b->eo + q[l] * K);
        transpose8(C[g], R);
        for (int k = 0; k < 8; k++) {
            v8d u = (t - C[g][k]) * il[k];
            J[g][k] = LP[g][k] + -0.5 * (dt[k] + u * u);
        }
        cols_max(&mx[g], J[g]);
        fin[g] = (v8l)(mx[g] - mx[g] == 0.0); /* finite */
        for (int k = 0; k < 8; k++) {
            v8d v = (v8d)((v8l)(J[g][k] - mx[g]) & fin[g]);
            V8_STORE(a + 64 * g + 8 * k, v);
        }
    }
    /* the posteriors' exps, sums and logs */
    exp_n(a, 64 * ng, isa);
    for (size_t g = 0; g < ng; g++) {
        v8d s;
        for (int k = 0; k < 8; k++) V8_LOAD(C[g][k], a + 64 * g + 8 * k);
        cols_sum(&s, C[g]);
        v8d inv = 1.0 / s;
        for (int k = 0; k < 8; k++) C[g][k] = C[g][k] * inv;
        V8_STORE(ls + 8 * g, s);
    }
    log_n(ls, 8 * ng, isa);
    /* log-likelihoods, entropies (h log h summed as run_sum sums, 0 log 0
     * = 0), posteriors */
    for (size_t g = 0; g < ng; g++) {
        v8d l, e[8], ent;
        V8_LOAD(l, ls + 8 * g);
        l = mx[g] + l;
        for (int k = 0; k < 8; k++) {
            v8d h = C[g][k], q = h * (J[g][k] - l);
            e[k] = V8_SPLAT(0.0) + (v8d)((v8l)q & (v8l)(h > 0.0));
        }
        cols_sum(&ent, e);
        ent = (v8d)((v8l)-ent & fin[g]);
        l = (v8d)(((v8l)l & fin[g]) | ((v8l)mx[g] & ~fin[g]));
        transpose8(R, C[g]);
        size_t i0 = r0 + 8 * g;
        if (nr[g] == 8) {
            V8_STORE(b->ll + i0, l);
            V8_STORE(b->ent + i0, ent);
        }
        for (size_t r = 0; r < nr[g]; r++) {
            size_t i = i0 + r;
            double *post = b->post + i * NN;
            post[0] = 1.0;
            if (nr[g] < 8) {
                b->ll[i] = l[r];
                b->ent[i] = ent[r];
            }
            if (fin[g][r])
                V8_STORE(post + 1, R[r]);
            else /* zero densities: the prior, as block_posterior */
                for (size_t k = 0; k < K; k++) post[1 + k] = exp(b->lp[i * NN + 1 + k]);
        }
    }
}

MOE_ISA_INLINE void block_em_flat(const moe_model *m, moe_block *b, size_t nb, const double *x,
                                  size_t ld, const double *y, size_t ld_y, int isa) {
    double il[8], dt[8], iy = 1.0 / m->y_scale[0];
    for (size_t k = 0; k < 8; k++) {
        il[k] = 1.0 / m->chol[k];
        dt[k] = LOG_2PI + m->logdet[k];
    }
    for (size_t r0 = 0; r0 < nb; r0 += 8 * EM_FLAT_GROUPS) {
        size_t n = nb - r0 < 8 * EM_FLAT_GROUPS ? nb - r0 : 8 * EM_FLAT_GROUPS;
        em_flat_rows(m, b, r0, n, x, ld, y, ld_y, il, dt, iy, isa);
    }
}

#define BLOCK_EM_FLAT_VERSION(SFX, ATTR)                                                        \
    ATTR static void block_em_flat_##SFX(const moe_model *m, moe_block *b, size_t nb,           \
                                         const double *x, size_t ld, const double *y,           \
                                         size_t ld_y) {                                         \
        block_em_flat(m, b, nb, x, ld, y, ld_y, MOE_ISA_ID(SFX));                               \
    }
MOE_ISA_VERSIONS(BLOCK_EM_FLAT_VERSION)

/* moe_block_gates, _experts and _posterior in turn (jo: the posterior's
 * first part only, the log joints). */
static void forward_parts(int isa, const moe_model *m, const moe_nodes *nd, moe_block *b,
                          size_t nb, const double *x, size_t ld, const double *y, size_t ld_y,
                          const int32_t *labels, int jo) {
    MOE_ISA_CALL(isa, block_gates, m, nd, b, nb, x, ld, 1);
    moe_block_experts(m, b, nb);
    MOE_ISA_CALL(isa, block_posterior, m, nd, b, nb, y, ld_y, labels, jo);
}

void moe_block_forward_isa(int isa, const moe_model *m, const moe_nodes *nd, moe_block *b,
                           size_t nb, const double *x, size_t ld, const double *y, size_t ld_y,
                           const int32_t *labels, int fused) {
    if (!fused || !em_flat(m, y)) {
        forward_parts(isa, m, nd, b, nb, x, ld, y, ld_y, labels, 0);
        return;
    }
    MOE_ISA_CALL(isa, block_gates, m, nd, b, nb, x, ld, 0);
    moe_block_experts(m, b, nb);
    MOE_ISA_CALL(isa, block_em_flat, m, b, nb, x, ld, y, ld_y);
}

void moe_block_forward(const moe_model *m, const moe_nodes *nd, moe_block *b, size_t nb,
                       const double *x, size_t ld, const double *y, size_t ld_y,
                       const int32_t *labels) {
    moe_block_forward_isa(moe_isa_best(), m, nd, b, nb, x, ld, y, ld_y, labels, 1);
}

void moe_block_forward_joint(const moe_model *m, const moe_nodes *nd, moe_block *b, size_t nb,
                             const double *x, size_t ld, const double *y, size_t ld_y,
                             const int32_t *labels) {
    forward_parts(moe_isa_best(), m, nd, b, nb, x, ld, y, ld_y, labels, 1);
}
