/*
 * fit.c -- the state of one EM fit: the layout of the sufficient
 * statistics, the per-thread block workspaces and the event log.
 *
 * Determinism: rows are cut into fixed blocks of MOE_BLOCK_ROWS and the
 * blocks into a fixed number of slabs that depends on the data and the
 * model only -- never on the thread count. Each slab accumulates its own
 * statistics in row order and the slabs are added in slab order, so the
 * fitted model is bit-for-bit the same for any number of threads.
 */
#include "moe_impl.h"

#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Slabs: at most this many, and at most this many bytes of statistics. */
#define MAX_SLABS 16
#define SLAB_BUDGET_BYTES ((size_t)128 << 20)

/* Rows per read of a source: 32 blocks (about 0.7 MB of a 10-column
 * regression per thread). */
#define CHUNK_ROWS (32 * MOE_BLOCK_ROWS)

/* Slabs of a layout of `total` rows: at most MAX_SLABS and the budget. */
static size_t slab_count(size_t total, size_t stat_size) {
    size_t nb = (total + MOE_BLOCK_ROWS - 1) / MOE_BLOCK_ROWS;
    size_t by_budget = SLAB_BUDGET_BYTES / (stat_size * sizeof(double));
    size_t s = nb < MAX_SLABS ? nb : MAX_SLABS;
    if (s > by_budget) s = by_budget;
    return s ? s : 1;
}

void moe_fit_layout(moe_fit *f, size_t total, size_t off) {
    f->lay_total = total;
    f->lay_off = off;
    f->n_blocks = (total + MOE_BLOCK_ROWS - 1) / MOE_BLOCK_ROWS;
    f->n_slabs = slab_count(total, f->stat_size);
    if (f->n_slabs > f->max_slabs) f->n_slabs = f->max_slabs;
    f->hess_stride = (f->n_blocks + MOE_HESSIAN_SAMPLE_BLOCKS - 1) / MOE_HESSIAN_SAMPLE_BLOCKS;
    if (f->hess_stride == 0) f->hess_stride = 1;
}

void moe_fit_slab_rows(const moe_fit *f, size_t s, size_t *q0, size_t *q1) {
    size_t a = s * f->n_blocks / f->n_slabs * MOE_BLOCK_ROWS;
    size_t b = (s + 1) * f->n_blocks / f->n_slabs * MOE_BLOCK_ROWS;
    size_t lo = f->lay_off, hi = f->lay_off + f->n_rows;
    if (b > f->lay_total) b = f->lay_total;
    if (a < lo) a = lo;
    if (b > hi) b = hi;
    *q0 = a;
    *q1 = b > a ? b : a;
}

void moe_fit_window(moe_fit *f, size_t row0, size_t n) {
    f->row_base = row0;
    f->n_rows = n;
    moe_fit_layout(f, n, 0);
}

void moe_shard_rows(size_t n_rows, int size, int rank, size_t *begin, size_t *end) {
    size_t R = size > 0 ? (size_t)size : 1, r = rank >= 0 && (size_t)rank < R ? (size_t)rank : 0;
    size_t nb = (n_rows + MOE_BLOCK_ROWS - 1) / MOE_BLOCK_ROWS;
    size_t S = nb < MAX_SLABS ? nb : MAX_SLABS, b0, b1;
    if (S >= R) { /* whole slabs */
        b0 = r * S / R * nb / S;
        b1 = (r + 1) * S / R * nb / S;
    } else { /* more processes than slabs: whole blocks */
        b0 = r * nb / R;
        b1 = (r + 1) * nb / R;
    }
    *begin = b0 * MOE_BLOCK_ROWS < n_rows ? b0 * MOE_BLOCK_ROWS : n_rows;
    *end = b1 * MOE_BLOCK_ROWS < n_rows ? b1 * MOE_BLOCK_ROWS : n_rows;
}

moe_status moe_fit_reduce(const moe_fit *f, double *buf, size_t n, moe_error *err) {
    if (!f->reducer || f->reducer->size <= 1 || n == 0) return MOE_STATUS_OK;
    if (f->reducer->sum(buf, n, f->reducer->ctx) != 0)
        return moe_err(err, MOE_STATUS_IO, "summing statistics across processes failed");
    return MOE_STATUS_OK;
}

moe_status moe_fit_create(moe_fit **out, moe_model *m, const moe_source *src,
                          const moe_train_params *params) {
    moe_fit *f = calloc(1, sizeof *f);
    *out = NULL;
    if (!f) return MOE_STATUS_NO_MEMORY;
    f->src = src;
    f->reducer = params->reducer;
    f->m = m;
    f->cap_rows = src->n_rows;
    if (moe_nodes_init(&f->nd, m) != MOE_STATUS_OK) goto oom;
    size_t K = m->n_leaves, P = m->n_out, C = m->n_cls, ed = m->ed, gd = m->gd;
    size_t G = m->n_gates;

    /* [0] objective, [1] entropy, [2] failed reads, [3] log-likelihood,
     * [4] weight. */
    size_t off = 5;
    f->off_esw = off;
    off += K;
    if (m->task == MOE_TASK_REGRESSION) {
        f->off_eg = off;
        off += K * (ed + P) * (ed + P);
    } else {
        size_t n = (C - 1) * ed;
        f->e_newton = n <= MOE_NEWTON_MAX_PARAMS;
        f->off_egrad = off;
        off += K * n;
        f->off_egram = off;
        off += K * ed * ed;
        f->off_ehess = off;
        if (f->e_newton) off += K * (n * n + 1);
    }
    f->off_ggrad = calloc(G + 1, sizeof(size_t));
    f->off_ggram = calloc(G + 1, sizeof(size_t));
    f->off_ghess = calloc(G + 1, sizeof(size_t));
    if (!f->off_ggrad || !f->off_ggram || !f->off_ghess) goto oom;
    size_t wmax = 0;
    for (size_t g = 0; g < G; g++) {
        size_t b = m->gate_nch[g], n = (b - 1) * gd;
        f->off_ggrad[g] = off;
        off += n;
        f->off_ggram[g] = off;
        off += gd * gd;
        f->off_ghess[g] = off; /* full or block-diagonal (softmax_step.c) */
        off += moe_softmax_hess_size(b, gd) + 1;
        size_t w = moe_softmax_work_size(b, gd);
        if (w > wmax) wmax = w;
    }
    f->stat_size = off;

    /* Room for the slabs of any layout; moe_fit_prepare sets the layout of
     * the rows of every process. */
    f->max_slabs = slab_count((size_t)MAX_SLABS * MOE_BLOCK_ROWS, f->stat_size);
    f->n_rows = src->n_rows;
    moe_fit_layout(f, src->n_rows, 0);
    size_t max_slabs = f->max_slabs;

    int nt = params->n_threads > 0 ? params->n_threads : omp_get_max_threads();
    if (nt < 1) nt = 1;
    if ((size_t)nt > max_slabs) nt = (int)max_slabs;
    f->n_threads = nt;

    /* Buffers lent to the source, one chunk per thread. */
    f->chunk_rows = CHUNK_ROWS;
    if (src->chunk_rows >= MOE_BLOCK_ROWS && src->chunk_rows < f->chunk_rows)
        f->chunk_rows = src->chunk_rows / MOE_BLOCK_ROWS * MOE_BLOCK_ROWS;
    size_t cr = f->chunk_rows, row_d = src->n_cols + src->n_outputs + 1;
    f->bufs = calloc((size_t)nt, sizeof *f->bufs);
    f->buf_mem = malloc((size_t)nt * cr * row_d * sizeof(double) + 1);
    f->buf_lab = malloc((size_t)nt * cr * sizeof(int32_t) + 1);
    if (!f->bufs || !f->buf_mem || !f->buf_lab) goto oom;
    for (int t = 0; t < nt; t++) {
        double *b = f->buf_mem + (size_t)t * cr * row_d;
        f->bufs[t].x = b;
        f->bufs[t].y = b + cr * src->n_cols;
        f->bufs[t].weights = b + cr * (src->n_cols + src->n_outputs);
        f->bufs[t].labels = f->buf_lab + (size_t)t * cr;
        f->bufs[t].max_rows = cr;
    }

    if (params->sparse_k > 0 && (size_t)params->sparse_k < K) {
        size_t k = (size_t)params->sparse_k;
        f->sparse_k = k;
        f->sp_stride = moe_sparse_scratch(m, k);
        f->sp_istride = moe_sparse_iscratch(m, k);
        f->sp_mem = malloc((size_t)nt * f->sp_stride * sizeof(double));
        f->sp_idx = calloc((size_t)nt * f->sp_istride, sizeof(size_t));
        if (!f->sp_mem || !f->sp_idx) goto oom;
        f->sp_full = params->sparse_full;
        if (f->sp_full > 1) { /* the rows' state between passes */
            f->sp_keep = malloc(src->n_rows * k * sizeof(int32_t) + 1);
            f->sp_lprior = malloc(src->n_rows * k * sizeof(double) + 1);
            f->sp_pos = malloc(src->n_rows * k * sizeof(int32_t) + 1);
            if (!f->sp_keep || !f->sp_lprior || !f->sp_pos) goto oom;
            /* (EM's gates are linear) */
            f->sp_defer = G == 1;
            f->sp_gsave = f->sp_defer ? malloc((f->stat_size - f->off_ggrad[0]) * sizeof(double))
                                      : NULL;
            if (f->sp_defer && !f->sp_gsave) goto oom;
        }
    }

    f->slab = malloc(max_slabs * f->stat_size * sizeof(double));
    f->stats = malloc(f->stat_size * sizeof(double));
    f->stats_prev = malloc(f->stat_size * sizeof(double));
    f->blocks = calloc((size_t)nt, sizeof(moe_block));
    f->frozen = calloc(K, 1);
    f->floored = calloc(K, 1);
    if (!f->slab || !f->stats || !f->stats_prev || !f->blocks || !f->frozen || !f->floored) goto oom;
    for (int t = 0; t < nt; t++)
        if (moe_block_alloc(&f->blocks[t], m, &f->nd) != MOE_STATUS_OK) goto oom;

    /* M-step workspace: the largest of the Gaussian solve ((ed+P)^2 for the
     * Gram, ed(ed+P) for the solver, P^2 and dsyev's work for the floor),
     * the multinomial experts' and the gates' softmax steps. */
    size_t wg = 2 * (ed + P) * (ed + P) + ed * (ed + P) + 4 * P * P + 64 * (P + 1);
    size_t we = C ? moe_softmax_work_size(C, ed) : 0;
    f->work_size = wg;
    if (we > f->work_size) f->work_size = we;
    if (wmax > f->work_size) f->work_size = wmax;
    f->work = malloc(f->work_size * sizeof(double));
    if (!f->work) goto oom;

    f->ridge = params->ridge;
    f->var_floor = params->var_floor;
    f->min_support = params->min_support >= 0.0 ? params->min_support : (double)(m->ed + 1);
    *out = f;
    return MOE_STATUS_OK;
oom:
    moe_fit_free(f);
    return MOE_STATUS_NO_MEMORY;
}

void moe_fit_free(moe_fit *f) {
    if (!f) return;
    moe_nodes_free(&f->nd);
    free(f->off_ggrad);
    free(f->off_ggram);
    free(f->off_ghess);
    free(f->slab);
    free(f->stats);
    free(f->stats_prev);
    if (f->blocks)
        for (int t = 0; t < f->n_threads; t++) moe_block_free(&f->blocks[t]);
    free(f->blocks);
    free(f->frozen);
    free(f->floored);
    free(f->work);
    free(f->events);
    free(f->sp_mem);
    free(f->sp_idx);
    free(f->sp_keep);
    free(f->sp_lprior);
    free(f->sp_pos);
    free(f->sp_gsave);
    free(f->bufs);
    free(f->buf_mem);
    free(f->buf_lab);
    free(f->km_feat);
    free(f->km_w);
    free(f->km_cen);
    free(f);
}

void moe_fit_event(moe_fit *f, moe_event_kind kind, int expert, int column, double value) {
    if (f->n_events == f->cap_events) {
        size_t cap = f->cap_events ? 2 * f->cap_events : 16;
        moe_event *e = realloc(f->events, cap * sizeof *e);
        if (!e) return; /* losing a diagnostic is better than failing the fit */
        f->events = e;
        f->cap_events = cap;
    }
    moe_event *e = &f->events[f->n_events++];
    e->kind = kind;
    e->iteration = f->iter;
    e->expert = expert;
    e->column = column;
    e->value = value;
}
