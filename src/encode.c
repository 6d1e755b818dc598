/*
 * encode.c -- the encoder: from a table of text cells to the matrices of a
 * moe_dataset, and its text form saved with the model.
 *
 * Fitting reads the training table twice. The first pass classifies every
 * used cell (number, non-finite, text, missing) and counts per column, which
 * settles the column types and the task; the second collects the distinct
 * levels of the categorical columns (and the class labels) in hash sets.
 * Applying reads a table once. Errors always name the first offending cell
 * in file order (row, then column). The rules are in moe.h, section 7b.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "csv_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NONE ((size_t)-1)

/* ---- string hash sets ----------------------------------------------------
 * Open addressing over an array of keys the set does not own; slot holds
 * key index + 1 (0 = empty). FNV-1a hashing. */

typedef struct strset {
    const char **keys;
    size_t n, cap_keys;
    size_t *slot;
    size_t mask;
} strset;

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void strset_free(strset *s) {
    free(s->keys);
    free(s->slot);
    memset(s, 0, sizeof *s);
}

static int strset_rehash(strset *s, size_t n_slots) {
    size_t *slot = calloc(n_slots, sizeof *slot), i;
    if (!slot) return -1;
    free(s->slot);
    s->slot = slot;
    s->mask = n_slots - 1;
    for (i = 0; i < s->n; i++) {
        size_t h = (size_t)hash_str(s->keys[i]) & s->mask;
        while (s->slot[h]) h = (h + 1) & s->mask;
        s->slot[h] = i + 1;
    }
    return 0;
}

static size_t strset_find(const strset *s, const char *key) {
    size_t h;
    if (!s->slot) return NONE;
    h = (size_t)hash_str(key) & s->mask;
    while (s->slot[h]) {
        size_t i = s->slot[h] - 1;
        if (strcmp(s->keys[i], key) == 0) return i;
        h = (h + 1) & s->mask;
    }
    return NONE;
}

/* Index of key, added if new. *added tells which. -1 when out of memory. */
static int strset_add(strset *s, const char *key, size_t *index, int *added) {
    size_t i = strset_find(s, key), h;
    *added = 0;
    if (i != NONE) {
        *index = i;
        return 0;
    }
    if (s->n == s->cap_keys) {
        size_t cap = s->cap_keys ? 2 * s->cap_keys : 8;
        const char **k = realloc(s->keys, cap * sizeof *k);
        if (!k) return -1;
        s->keys = k;
        s->cap_keys = cap;
    }
    if (!s->slot || 2 * (s->n + 1) > s->mask + 1) {
        size_t n_slots = s->slot ? 2 * (s->mask + 1) : 16;
        while (n_slots < 2 * (s->n + 1)) n_slots *= 2;
        if (strset_rehash(s, n_slots) != 0) return -1;
    }
    s->keys[s->n] = key;
    h = (size_t)hash_str(key) & s->mask;
    while (s->slot[h]) h = (h + 1) & s->mask;
    s->slot[h] = s->n + 1;
    *index = s->n++;
    *added = 1;
    return 0;
}

/* ---- the encoder ------------------------------------------------------- */

typedef struct enc_input {
    char *name;
    int categorical;
    size_t n_levels;
    char **levels;   /* sorted by moe_level_key_cmp */
    strset map;      /* level text -> index (keys are `levels`) */
    size_t first;    /* first encoded column */
    size_t count;    /* encoded columns */
} enc_input;

struct moe_encoder {
    moe_task task;
    int drop_first;
    size_t n_targets;
    char **targets;
    char *weights;
    size_t n_inputs;
    enc_input *inputs;
    size_t n_classes;
    char **classes;
    strset class_map;
    size_t n_features;
    char **feature_names;
    size_t *feature_input;
};

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static void free_strs(char **v, size_t n) {
    size_t i;
    if (!v) return;
    for (i = 0; i < n; i++) free(v[i]);
    free(v);
}

void moe_encoder_free(moe_encoder *enc) {
    size_t i;
    if (!enc) return;
    free_strs(enc->targets, enc->n_targets);
    free(enc->weights);
    for (i = 0; enc->inputs && i < enc->n_inputs; i++) {
        free(enc->inputs[i].name);
        free_strs(enc->inputs[i].levels, enc->inputs[i].n_levels);
        strset_free(&enc->inputs[i].map);
    }
    free(enc->inputs);
    free_strs(enc->classes, enc->n_classes);
    strset_free(&enc->class_map);
    free_strs(enc->feature_names, enc->n_features);
    free(enc->feature_input);
    free(enc);
}

/* Build a lookup set over v[0..n-1] (all distinct). */
static int build_map(strset *m, char **v, size_t n) {
    size_t i, ix;
    int added;
    for (i = 0; i < n; i++)
        if (strset_add(m, v[i], &ix, &added) != 0) return -1;
    return 0;
}

/* Spans, feature names and lookup maps from inputs, levels and classes. */
static int encoder_finish(moe_encoder *enc) {
    size_t i, l, j = 0, total = 0;
    for (i = 0; i < enc->n_inputs; i++) {
        enc_input *in = &enc->inputs[i];
        in->first = total;
        in->count = !in->categorical ? 1
                    : (enc->drop_first && in->n_levels ? in->n_levels - 1 : in->n_levels);
        total += in->count;
        if (in->categorical && build_map(&in->map, in->levels, in->n_levels) != 0) return -1;
    }
    if (build_map(&enc->class_map, enc->classes, enc->n_classes) != 0) return -1;
    enc->feature_names = calloc(total ? total : 1, sizeof *enc->feature_names);
    enc->feature_input = calloc(total ? total : 1, sizeof *enc->feature_input);
    if (!enc->feature_names || !enc->feature_input) return -1;
    enc->n_features = total;
    for (i = 0; i < enc->n_inputs; i++) {
        const enc_input *in = &enc->inputs[i];
        if (!in->categorical) {
            enc->feature_input[j] = i;
            if (!(enc->feature_names[j++] = dup_str(in->name))) return -1;
            continue;
        }
        for (l = in->n_levels - in->count; l < in->n_levels; l++) {
            size_t a = strlen(in->name), b = strlen(in->levels[l]);
            char *s = malloc(a + b + 2);
            if (!s) return -1;
            memcpy(s, in->name, a);
            s[a] = '=';
            memcpy(s + a + 1, in->levels[l], b + 1);
            enc->feature_input[j] = i;
            enc->feature_names[j++] = s;
        }
    }
    return 0;
}

/* ---- parameters ---------------------------------------------------------- */

moe_encoder_params moe_encoder_params_default(void) {
    moe_encoder_params p;
    memset(&p, 0, sizeof p);
    p.task = MOE_ENCODE_TASK_AUTO;
    p.drop_first_level = 1;
    p.missing = MOE_MISSING_ERROR;
    return p;
}

moe_encoder_apply_params moe_encoder_apply_params_default(void) {
    moe_encoder_apply_params p;
    memset(&p, 0, sizeof p);
    p.missing = MOE_MISSING_ERROR;
    p.target = MOE_TARGET_USE_OPTIONAL;
    p.unseen_zero = 0;
    return p;
}

/* ---- messages -------------------------------------------------------------- */

/* "file:line:col (column 'name'): " + what, for the cell on `line` in
 * column j (0-based) of t; `ex` is its text already cut by moe_excerpt, or
 * NULL. */
static moe_status cell_error_at(moe_error *err, moe_status st, const moe_table *t, size_t line,
                                size_t j, const char *what, const char *ex) {
    char name[64];
    moe_excerpt(t->col_names[j], name, sizeof name);
    if (ex)
        return moe_err_at(err, st, t->name, line, j + 1, "%s:%zu:%zu (column '%s'): '%s' %s",
                          t->name, line, j + 1, name, ex, what);
    return moe_err_at(err, st, t->name, line, j + 1, "%s:%zu:%zu (column '%s'): %s", t->name,
                      line, j + 1, name, what);
}

/* The same for the cell at row i, column j of t, holding `text` (or NULL). */
static moe_status cell_error(moe_error *err, moe_status st, const moe_table *t, size_t i,
                             size_t j, const char *what, const char *text) {
    char ex[64];
    if (text) moe_excerpt(text, ex, sizeof ex);
    return cell_error_at(err, st, t, t->row_line[i], j, what, text ? ex : NULL);
}

static moe_status no_memory(moe_error *err, const moe_table *t) {
    return moe_err(err, MOE_STATUS_NO_MEMORY, "%s: out of memory", t ? t->name : "encoder");
}

/* ---- fitting ----------------------------------------------------------------- */

enum { ROLE_NONE = 0, ROLE_INPUT, ROLE_TARGET, ROLE_WEIGHTS, ROLE_DROP };

static const char *role_name(int role) {
    switch (role) {
    case ROLE_INPUT: return "an input";
    case ROLE_TARGET: return "a target";
    case ROLE_WEIGHTS: return "the weights";
    case ROLE_DROP: return "dropped";
    }
    return "unused";
}

/* Give the named columns `role`; each must exist and have no role yet. */
static moe_status assign(const moe_table *t, unsigned char *role, const char *const *names,
                         size_t n, int r, const char *what, size_t *cols, moe_error *err) {
    size_t k;
    if (n && !names)
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "%s: %zu %s given as NULL", t->name, n,
                       what);
    for (k = 0; k < n; k++) {
        char ex[64];
        size_t j = names[k] ? moe_table_col_index(t, names[k]) : NONE;
        moe_excerpt(names[k] ? names[k] : "(null)", ex, sizeof ex);
        if (j == NONE)
            return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "%s: no column named '%s' (%s)",
                           t->name, ex, what);
        if (role[j] == r)
            return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "%s: column '%s' named twice (%s)",
                           t->name, ex, what);
        if (role[j] != ROLE_NONE)
            return moe_err(err, MOE_STATUS_INVALID_ARGUMENT,
                           "%s: column '%s' cannot be both %s and %s", t->name, ex,
                           role_name(role[j]), role_name(r));
        role[j] = (unsigned char)r;
        if (cols) cols[k] = j;
    }
    return MOE_STATUS_OK;
}

typedef struct first_cell { /* the first cell of some kind in file order */
    size_t row;     /* data row (counted over every batch), or NONE */
    size_t line;
    char ex[64];    /* its text, moe_excerpt'ed */
} first_cell;

typedef struct col_stats {
    size_t n_nonmissing;
    size_t n_number;        /* finite or not */
    first_cell text, nonfinite, negative;
    int all_integer;
    size_t n_distinct;      /* distinct finite values, counted up to MAX + 1 */
    double distinct[MOE_ENCODE_AUTO_MAX_CLASSES + 1];
} col_stats;

/* A candidate error: the first in file order wins. */
typedef struct first_err {
    size_t row, col, line;
    const char *what;
    const char *ex;         /* the cell's text, or NULL */
} first_err;

static void note_first(first_cell *c, size_t row, size_t line, const char *text) {
    if (c->row != NONE) return;
    c->row = row;
    c->line = line;
    moe_excerpt(text, c->ex, sizeof c->ex);
}

static void note_err(first_err *e, size_t row, size_t line, size_t col, const char *what,
                     const char *ex) {
    if (row == NONE) return;
    if (e->row == NONE || row < e->row || (row == e->row && col < e->col)) {
        e->row = row;
        e->col = col;
        e->line = line;
        e->what = what;
        e->ex = ex;
    }
}

static void note_cell(first_err *e, const first_cell *c, size_t col, const char *what) {
    note_err(e, c->row, c->line, col, what, c->ex);
}

/* Sorted copies of the distinct texts in s. */
static int sorted_levels(const strset *s, moe_numctx *ctx, char ***out) {
    moe_level_key *keys = malloc((s->n ? s->n : 1) * sizeof *keys);
    char **v = calloc(s->n ? s->n : 1, sizeof *v);
    size_t i;
    int rc = -1;
    if (!keys || !v) goto done;
    for (i = 0; i < s->n; i++) moe_level_key_set(&keys[i], ctx, s->keys[i], i);
    qsort(keys, s->n, sizeof *keys, moe_level_key_cmp);
    for (i = 0; i < s->n; i++)
        if (!(v[i] = dup_str(keys[i].text))) goto done;
    rc = 0;
done:
    free(keys);
    if (rc != 0) {
        free_strs(v, s->n);
        v = NULL;
    }
    *out = v;
    return rc;
}

/* Texts the level sets point to: copies, since a batch's cells do not
 * outlive the batch. Blocks of at least 64 KiB, never moved. */
typedef struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    char data[];
} arena_block;

static const char *arena_dup(arena_block **head, const char *s) {
    size_t n = strlen(s) + 1;
    arena_block *b = *head;
    char *d;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        b = malloc(sizeof *b + cap);
        if (!b) return NULL;
        b->next = *head;
        b->used = 0;
        b->cap = cap;
        *head = b;
    }
    d = b->data + b->used;
    memcpy(d, s, n);
    b->used += n;
    return d;
}

static void arena_free(arena_block *b) {
    while (b) {
        arena_block *next = b->next;
        free(b);
        b = next;
    }
}

/* Fitting state, fed one table (or one batch of a file) at a time:
 * fit_init, fit_count over every row, fit_decide, fit_levels over every row
 * (only when fit_needs_levels), fit_build. */
typedef struct enc_fit {
    const moe_table *hdr;     /* the columns (and name) of every table fed */
    moe_encoder_params p;
    moe_numctx ctx;
    unsigned char *role, *forced;
    size_t *incols, *tcols, *used, *dummy;
    size_t n_in, n_tg, n_used, wcol;
    col_stats *stats;         /* per column */
    strset *sets;             /* per column: categorical inputs and class labels */
    arena_block *texts;
    first_err fe;
    size_t n_rows, n_kept;
    int classify;
} enc_fit;

static void fit_free(enc_fit *f) {
    size_t j;
    if (f->sets)
        for (j = 0; j < f->hdr->n_cols; j++) strset_free(&f->sets[j]);
    free(f->sets);
    arena_free(f->texts);
    free(f->stats);
    free(f->dummy);
    free(f->used);
    free(f->tcols);
    free(f->incols);
    free(f->forced);
    free(f->role);
    moe_numctx_free(&f->ctx);
}

/* Roles and types named in the parameters, checked against the header. */
static moe_status fit_init(enc_fit *f, const moe_table *t, const moe_encoder_params *p,
                           moe_error *err) {
    moe_status st;
    size_t j, k;
    memset(f, 0, sizeof *f);
    f->hdr = t;
    f->p = *p;
    f->wcol = NONE;
    f->fe.row = f->fe.col = NONE;
    f->ctx = (moe_numctx)MOE_NUMCTX_INIT;
    if (p->task != MOE_ENCODE_TASK_AUTO && p->task != MOE_ENCODE_TASK_REGRESSION &&
        p->task != MOE_ENCODE_TASK_CLASSIFICATION)
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_encoder_fit: invalid task %d",
                       (int)p->task);
    if (p->missing != MOE_MISSING_ERROR && p->missing != MOE_MISSING_DROP)
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_encoder_fit: invalid missing policy");

    f->role = calloc(t->n_cols, 1);
    f->forced = calloc(t->n_cols, 1);
    f->incols = malloc(t->n_cols * sizeof *f->incols);
    f->tcols = malloc(t->n_cols * sizeof *f->tcols);
    f->used = malloc(t->n_cols * sizeof *f->used);
    f->dummy = malloc(t->n_cols * sizeof *f->dummy);
    f->stats = calloc(t->n_cols, sizeof *f->stats);
    f->sets = calloc(t->n_cols, sizeof *f->sets);
    if (!f->role || !f->forced || !f->incols || !f->tcols || !f->used || !f->dummy || !f->stats ||
        !f->sets)
        return no_memory(err, t);

    if (p->n_targets) {
        if (p->n_targets > t->n_cols)
            return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "%s: %zu targets but %zu columns",
                           t->name, p->n_targets, t->n_cols);
        if ((st = assign(t, f->role, p->targets, p->n_targets, ROLE_TARGET, "target", f->tcols,
                         err)))
            return st;
        f->n_tg = p->n_targets;
    } else {
        f->tcols[0] = t->n_cols - 1;
        f->role[f->tcols[0]] = ROLE_TARGET;
        f->n_tg = 1;
    }
    if (p->weights &&
        (st = assign(t, f->role, &p->weights, 1, ROLE_WEIGHTS, "weights", &f->wcol, err)))
        return st;
    if (p->n_drop > t->n_cols)
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "%s: %zu columns to drop but %zu columns",
                       t->name, p->n_drop, t->n_cols);
    if ((st = assign(t, f->role, p->drop, p->n_drop, ROLE_DROP, "drop", f->dummy, err))) return st;
    if (p->n_inputs) {
        if (p->n_inputs > t->n_cols)
            return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "%s: %zu inputs but %zu columns",
                           t->name, p->n_inputs, t->n_cols);
        if ((st = assign(t, f->role, p->inputs, p->n_inputs, ROLE_INPUT, "inputs", f->incols,
                         err)))
            return st;
        f->n_in = p->n_inputs;
    } else {
        for (j = 0; j < t->n_cols; j++) {
            if (f->role[j] != ROLE_NONE) continue;
            f->role[j] = ROLE_INPUT;
            f->incols[f->n_in++] = j;
        }
    }
    if (p->n_categorical && !p->categorical)
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "%s: categorical names given as NULL",
                       t->name);
    for (k = 0; k < p->n_categorical; k++) {
        size_t c = p->categorical[k] ? moe_table_col_index(t, p->categorical[k]) : NONE;
        if (c == NONE || f->role[c] != ROLE_INPUT) {
            char ex[64];
            moe_excerpt(p->categorical[k] ? p->categorical[k] : "(null)", ex, sizeof ex);
            return moe_err(err, MOE_STATUS_INVALID_ARGUMENT,
                           "%s: categorical column '%s' is not %s", t->name, ex,
                           c == NONE ? "in the file" : "an input");
        }
        f->forced[c] = 1;
    }
    if (p->task == MOE_ENCODE_TASK_CLASSIFICATION && f->n_tg != 1)
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT,
                       "%s: classification takes one target column, not %zu", t->name, f->n_tg);
    for (j = 0; j < t->n_cols; j++) {
        col_stats *s = &f->stats[j];
        if (f->role[j] == ROLE_INPUT || f->role[j] == ROLE_TARGET || f->role[j] == ROLE_WEIGHTS)
            f->used[f->n_used++] = j;
        s->text.row = s->nonfinite.row = s->negative.row = NONE;
        s->all_integer = 1;
    }
    return MOE_STATUS_OK;
}

/* The first used column of row i holding a missing cell, or NONE. */
static size_t missing_col(const enc_fit *f, const moe_table *t, size_t i) {
    size_t k;
    for (k = 0; k < f->n_used; k++)
        if (moe_cell_is_missing(moe_table_cell_at(t, i, f->used[k]))) return f->used[k];
    return NONE;
}

/* Pass 1 over the rows of t: missing rows, cell kinds, counts. */
static void fit_count(enc_fit *f, const moe_table *t) {
    size_t i, k;
    for (i = 0; i < t->n_rows; i++) {
        size_t row = f->n_rows + i, miss = missing_col(f, t, i);
        if (miss != NONE) {
            /* MOE_MISSING_ERROR fails below, naming this cell unless a bad
             * cell comes earlier; the pass goes on so the column types do not
             * depend on where the gap is */
            if (f->p.missing == MOE_MISSING_ERROR)
                note_err(&f->fe, row, t->row_line[i], miss, "missing value", NULL);
            continue;
        }
        f->n_kept++;
        for (k = 0; k < f->n_used; k++) {
            size_t c = f->used[k];
            col_stats *s = &f->stats[c];
            const char *cell;
            double v = 0;
            moe_cell_kind kind;
            if (f->forced[c]) continue;
            cell = moe_table_cell_at(t, i, c);
            kind = moe_cell_parse(&f->ctx, cell, &v);
            s->n_nonmissing++;
            if (kind == MOE_CELL_TEXT) {
                note_first(&s->text, row, t->row_line[i], cell);
                continue;
            }
            s->n_number++;
            if (kind == MOE_CELL_NONFINITE) {
                note_first(&s->nonfinite, row, t->row_line[i], cell);
                continue;
            }
            if (v < 0) note_first(&s->negative, row, t->row_line[i], cell);
            if (f->role[c] == ROLE_TARGET && s->all_integer) {
                size_t d;
                if (v != floor(v) || fabs(v) > 9007199254740992.0) {
                    s->all_integer = 0;
                } else if (s->n_distinct <= MOE_ENCODE_AUTO_MAX_CLASSES) {
                    for (d = 0; d < s->n_distinct && s->distinct[d] != v; d++) continue;
                    if (d == s->n_distinct) s->distinct[s->n_distinct++] = v;
                }
            }
        }
    }
    f->n_rows += t->n_rows;
}

/* Column types, the task, and the first bad cell. */
static moe_status fit_decide(enc_fit *f, moe_error *err) {
    const moe_table *t = f->hdr;
    const moe_encoder_params *p = &f->p;
    size_t k;
    if (f->n_kept == 0 && f->fe.row == NONE)
        return moe_err_at(err, MOE_STATUS_DATA, t->name, 0, 0,
                          "%s: no rows left after dropping %zu rows with missing values", t->name,
                          f->n_rows);
    for (k = 0; k < f->n_in; k++) {
        size_t c = f->incols[k];
        col_stats *s = &f->stats[c];
        if (f->forced[c] || 2 * s->n_number <= s->n_nonmissing) {
            f->forced[c] = 1; /* categorical from now on */
            continue;
        }
        note_cell(&f->fe, &s->text, c, "is not a number");
        note_cell(&f->fe, &s->nonfinite, c, "is not a finite number");
    }
    if (p->task == MOE_ENCODE_TASK_CLASSIFICATION) {
        f->classify = 1;
    } else if (p->task == MOE_ENCODE_TASK_AUTO && f->n_tg == 1) {
        const col_stats *s = &f->stats[f->tcols[0]];
        if (2 * s->n_number <= s->n_nonmissing)
            f->classify = 1;
        else if (s->text.row == NONE && s->nonfinite.row == NONE && s->all_integer &&
                 s->n_distinct >= 2 && s->n_distinct <= MOE_ENCODE_AUTO_MAX_CLASSES)
            f->classify = 1;
    }
    if (!f->classify) {
        for (k = 0; k < f->n_tg; k++) {
            const col_stats *s = &f->stats[f->tcols[k]];
            note_cell(&f->fe, &s->text, f->tcols[k], "is not a number");
            note_cell(&f->fe, &s->nonfinite, f->tcols[k], "is not a finite number");
        }
    }
    if (f->wcol != NONE) {
        const col_stats *s = &f->stats[f->wcol];
        note_cell(&f->fe, &s->text, f->wcol, "is not a number");
        note_cell(&f->fe, &s->nonfinite, f->wcol, "is not a finite number");
        note_cell(&f->fe, &s->negative, f->wcol, "is a negative weight");
    }
    if (f->fe.row != NONE)
        return cell_error_at(err, MOE_STATUS_DATA, t, f->fe.line, f->fe.col, f->fe.what,
                             f->fe.ex);
    return MOE_STATUS_OK;
}

/* Does the encoder need level sets (a categorical input, or classes)? */
static int fit_needs_levels(const enc_fit *f) {
    size_t k;
    if (f->classify) return 1;
    for (k = 0; k < f->n_in; k++)
        if (f->forced[f->incols[k]]) return 1;
    return 0;
}

/* Pass 2 over the rows of t: levels and classes. */
static moe_status fit_levels(enc_fit *f, const moe_table *t, moe_error *err) {
    size_t i, k;
    for (i = 0; i < t->n_rows; i++) {
        if (missing_col(f, t, i) != NONE) continue;
        for (k = 0; k < f->n_in + (size_t)f->classify; k++) {
            size_t c = k < f->n_in ? f->incols[k] : f->tcols[0], ix;
            const char *cell, *copy;
            int added;
            if (k < f->n_in && !f->forced[c]) continue;
            cell = moe_table_cell_at(t, i, c);
            if (strset_find(&f->sets[c], cell) != NONE) continue;
            if (!(copy = arena_dup(&f->texts, cell)) ||
                strset_add(&f->sets[c], copy, &ix, &added) != 0)
                return no_memory(err, t);
        }
    }
    return MOE_STATUS_OK;
}

static moe_status fit_build(enc_fit *f, moe_encoder **out, moe_error *err) {
    const moe_table *t = f->hdr;
    moe_encoder *enc = calloc(1, sizeof *enc);
    moe_status st = MOE_STATUS_OK;
    size_t k;
    *out = NULL;
    if (!enc) return no_memory(err, t);
    enc->task = f->classify ? MOE_TASK_CLASSIFICATION : MOE_TASK_REGRESSION;
    enc->drop_first = f->p.drop_first_level ? 1 : 0;
    enc->targets = calloc(f->n_tg, sizeof *enc->targets);
    enc->inputs = calloc(f->n_in ? f->n_in : 1, sizeof *enc->inputs);
    if (!enc->targets || !enc->inputs) goto nomem;
    enc->n_targets = f->n_tg;
    for (k = 0; k < f->n_tg; k++)
        if (!(enc->targets[k] = dup_str(t->col_names[f->tcols[k]]))) goto nomem;
    if (f->wcol != NONE && !(enc->weights = dup_str(t->col_names[f->wcol]))) goto nomem;
    enc->n_inputs = f->n_in;
    for (k = 0; k < f->n_in; k++) {
        enc_input *in = &enc->inputs[k];
        size_t c = f->incols[k];
        if (!(in->name = dup_str(t->col_names[c]))) goto nomem;
        in->categorical = f->forced[c];
        if (in->categorical) {
            if (sorted_levels(&f->sets[c], &f->ctx, &in->levels) != 0) goto nomem;
            in->n_levels = f->sets[c].n;
        }
    }
    if (f->classify) {
        const strset *s = &f->sets[f->tcols[0]];
        if (s->n < 2) {
            char ex[64], name[64];
            moe_excerpt(s->n ? s->keys[0] : "", ex, sizeof ex);
            moe_excerpt(t->col_names[f->tcols[0]], name, sizeof name);
            st = moe_err(err, MOE_STATUS_DATA,
                         "%s: classification needs 2 or more classes; column '%s' holds only '%s'",
                         t->name, name, ex);
            goto done;
        }
        if (sorted_levels(s, &f->ctx, &enc->classes) != 0) goto nomem;
        enc->n_classes = s->n;
    }
    if (encoder_finish(enc) != 0) goto nomem;
    goto done;
nomem:
    st = no_memory(err, t);
done:
    if (st != MOE_STATUS_OK) {
        moe_encoder_free(enc);
        enc = NULL;
    }
    *out = enc;
    return st;
}

moe_status moe_encoder_fit(const moe_table *t, const moe_encoder_params *params,
                           moe_encoder **out, moe_error *err) {
    moe_encoder_params def = moe_encoder_params_default();
    enc_fit f;
    moe_status st;
    if (!out) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_encoder_fit: out is NULL");
    *out = NULL;
    if (!t) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_encoder_fit: no table");
    st = fit_init(&f, t, params ? params : &def, err);
    if (st == MOE_STATUS_OK) {
        fit_count(&f, t);
        st = fit_decide(&f, err);
    }
    if (st == MOE_STATUS_OK && fit_needs_levels(&f)) st = fit_levels(&f, t, err);
    if (st == MOE_STATUS_OK) st = fit_build(&f, out, err);
    fit_free(&f);
    return st;
}

/* Rows per batch when an encoder reads a file. */
#define FIT_BATCH_ROWS 65536

moe_status moe_encoder_fit_csv(moe_csv_reader *reader, const moe_encoder_params *params,
                               moe_encoder **out, moe_error *err) {
    moe_encoder_params def = moe_encoder_params_default();
    const moe_table *batch = NULL;
    enc_fit f;
    moe_status st;
    if (!out) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_encoder_fit_csv: out is NULL");
    *out = NULL;
    if (!reader) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_encoder_fit_csv: no reader");
    if ((st = moe_csv_reader_rewind(reader, err)) != MOE_STATUS_OK) return st;
    st = fit_init(&f, moe_csv_reader_layout(reader), params ? params : &def, err);
    while (st == MOE_STATUS_OK &&
           (st = moe_csv_reader_next(reader, FIT_BATCH_ROWS, &batch, err)) == MOE_STATUS_OK &&
           batch)
        fit_count(&f, batch);
    if (st == MOE_STATUS_OK) st = fit_decide(&f, err);
    if (st == MOE_STATUS_OK && fit_needs_levels(&f)) {
        st = moe_csv_reader_rewind(reader, err);
        while (st == MOE_STATUS_OK &&
               (st = moe_csv_reader_next(reader, FIT_BATCH_ROWS, &batch, err)) == MOE_STATUS_OK &&
               batch)
            st = fit_levels(&f, batch, err);
    }
    if (st == MOE_STATUS_OK) st = fit_build(&f, out, err);
    fit_free(&f);
    return st;
}

/* ---- applying ------------------------------------------------------------- */

enum { SLOT_NUMERIC, SLOT_CATEGORICAL, SLOT_TARGET_REG, SLOT_TARGET_CLS, SLOT_WEIGHTS };

typedef struct slot {
    size_t col;   /* column of the table */
    int kind;
    size_t index; /* input or target index */
} slot;

static int slot_cmp(const void *pa, const void *pb) {
    const slot *a = pa, *b = pb;
    return (a->col > b->col) - (a->col < b->col);
}

void moe_encoded_free(moe_encoded *e) {
    if (!e) return;
    free(e->x);
    free(e->y);
    free(e->labels);
    free(e->weights);
    free(e->line);
    free(e->row);
    free(e);
}

moe_dataset moe_encoded_dataset(const moe_encoded *e) {
    moe_dataset d;
    memset(&d, 0, sizeof d);
    if (!e) return d;
    d.n_rows = e->n_rows;
    d.n_cols = e->n_cols;
    d.x = e->x;
    d.ld_x = e->n_cols;
    d.n_outputs = e->n_outputs;
    d.y = e->y;
    d.ld_y = e->n_outputs;
    d.n_classes = e->labels ? e->n_classes : 0;
    d.labels = e->labels;
    d.weights = e->weights;
    return d;
}

static moe_status encoder_apply(const moe_encoder *enc, const moe_table *t,
                                const moe_encoder_apply_params *params, int allow_empty,
                                moe_encoded **out, moe_error *err) {
    moe_encoder_apply_params def = moe_encoder_apply_params_default();
    const moe_encoder_apply_params *p = params ? params : &def;
    moe_status st = MOE_STATUS_OK;
    moe_encoded *e = NULL;
    moe_numctx ctx = MOE_NUMCTX_INIT;
    strset cols = {0};
    slot *slots = NULL;
    size_t n_slots = 0, i, k, n_found = 0, nr, F, P = 0, wcol = NONE;
    int use_target = 0;

    if (!out) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_encoder_apply: out is NULL");
    *out = NULL;
    if (!enc || !t) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_encoder_apply: no %s",
                                   enc ? "table" : "encoder");
    if (p->missing != MOE_MISSING_ERROR && p->missing != MOE_MISSING_DROP)
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_encoder_apply: invalid missing policy");
    if (p->target != MOE_TARGET_USE_OPTIONAL && p->target != MOE_TARGET_USE_REQUIRED &&
        p->target != MOE_TARGET_USE_IGNORED)
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_encoder_apply: invalid target use");

    nr = t->n_rows;
    F = enc->n_features;
    slots = malloc((enc->n_inputs + enc->n_targets + 1) * sizeof *slots);
    if (!slots || build_map(&cols, t->col_names, t->n_cols) != 0) {
        st = no_memory(err, t);
        goto done;
    }
    for (k = 0; k < enc->n_inputs; k++) {
        size_t c = strset_find(&cols, enc->inputs[k].name);
        if (c == NONE) {
            char ex[64];
            moe_excerpt(enc->inputs[k].name, ex, sizeof ex);
            st = moe_err_at(err, MOE_STATUS_DATA, t->name, 0, 0, "%s: missing input column '%s'",
                            t->name, ex);
            goto done;
        }
        slots[n_slots].col = c;
        slots[n_slots].kind = enc->inputs[k].categorical ? SLOT_CATEGORICAL : SLOT_NUMERIC;
        slots[n_slots++].index = k;
    }
    if (p->target != MOE_TARGET_USE_IGNORED) {
        size_t absent = NONE;
        for (k = 0; k < enc->n_targets; k++) {
            if (strset_find(&cols, enc->targets[k]) != NONE) n_found++;
            else if (absent == NONE) absent = k;
        }
        if (absent != NONE && (n_found || p->target == MOE_TARGET_USE_REQUIRED)) {
            char ex[64];
            moe_excerpt(enc->targets[absent], ex, sizeof ex);
            st = moe_err_at(err, MOE_STATUS_DATA, t->name, 0, 0, "%s: missing target column '%s'",
                            t->name, ex);
            goto done;
        }
        use_target = absent == NONE;
    }
    if (use_target) {
        for (k = 0; k < enc->n_targets; k++) {
            slots[n_slots].col = strset_find(&cols, enc->targets[k]);
            slots[n_slots].kind =
                enc->task == MOE_TASK_CLASSIFICATION ? SLOT_TARGET_CLS : SLOT_TARGET_REG;
            slots[n_slots++].index = k;
        }
        if (enc->task == MOE_TASK_REGRESSION) P = enc->n_targets;
    }
    if (enc->weights) wcol = strset_find(&cols, enc->weights);
    if (wcol != NONE) {
        slots[n_slots].col = wcol;
        slots[n_slots].kind = SLOT_WEIGHTS;
        slots[n_slots++].index = 0;
    }
    qsort(slots, n_slots, sizeof *slots, slot_cmp);

    e = calloc(1, sizeof *e);
    if (!e || (F && nr > SIZE_MAX / sizeof(double) / F)) {
        st = no_memory(err, t);
        goto done;
    }
    if (P && nr > SIZE_MAX / sizeof(double) / P) {
        st = no_memory(err, t);
        goto done;
    }
    e->x = calloc(F && nr ? nr * F : 1, sizeof *e->x);
    e->line = malloc(nr * sizeof *e->line);
    e->row = malloc(nr * sizeof *e->row);
    if (P) e->y = malloc(nr * P * sizeof *e->y);
    if (use_target && !P) e->labels = malloc(nr * sizeof *e->labels);
    if (wcol != NONE) e->weights = malloc(nr * sizeof *e->weights);
    if (!e->x || !e->line || !e->row || (P && !e->y) || (use_target && !P && !e->labels) ||
        (wcol != NONE && !e->weights)) {
        st = no_memory(err, t);
        goto done;
    }

    for (i = 0; i < nr; i++) {
        size_t r = e->n_rows, miss = NONE;
        double *xr = e->x + r * F;
        for (k = 0; k < n_slots && miss == NONE; k++)
            if (moe_cell_is_missing(moe_table_cell_at(t, i, slots[k].col))) miss = slots[k].col;
        if (miss != NONE) {
            if (p->missing == MOE_MISSING_ERROR) {
                st = cell_error(err, MOE_STATUS_DATA, t, i, miss, "missing value", NULL);
                goto done;
            }
            e->n_dropped++;
            continue;
        }
        for (k = 0; k < n_slots; k++) {
            const slot *s = &slots[k];
            const char *cell = moe_table_cell_at(t, i, s->col);
            double v = 0;
            if (s->kind == SLOT_CATEGORICAL) {
                const enc_input *in = &enc->inputs[s->index];
                size_t l = strset_find(&in->map, cell);
                if (l == NONE) {
                    if (p->unseen_zero) continue;
                    st = cell_error(err, MOE_STATUS_DATA, t, i, s->col, "is an unseen category",
                                    cell);
                    goto done;
                }
                l -= in->n_levels - in->count; /* wraps for the dropped level */
                if (l < in->count) xr[in->first + l] = 1.0;
                continue;
            }
            if (s->kind == SLOT_TARGET_CLS) {
                size_t c = strset_find(&enc->class_map, cell);
                if (c == NONE) {
                    st = cell_error(err, MOE_STATUS_DATA, t, i, s->col, "is an unseen class",
                                    cell);
                    goto done;
                }
                e->labels[r] = (int32_t)c;
                continue;
            }
            switch (moe_cell_parse(&ctx, cell, &v)) {
            case MOE_CELL_NUMBER: break;
            case MOE_CELL_NONFINITE:
                st = cell_error(err, MOE_STATUS_DATA, t, i, s->col, "is not a finite number", cell);
                goto done;
            default:
                st = cell_error(err, MOE_STATUS_DATA, t, i, s->col, "is not a number", cell);
                goto done;
            }
            if (s->kind == SLOT_NUMERIC) {
                xr[enc->inputs[s->index].first] = v;
            } else if (s->kind == SLOT_TARGET_REG) {
                e->y[r * P + s->index] = v;
            } else {
                if (v < 0) {
                    st = cell_error(err, MOE_STATUS_DATA, t, i, s->col, "is a negative weight",
                                    cell);
                    goto done;
                }
                e->weights[r] = v;
            }
        }
        e->line[r] = t->row_line[i];
        e->row[r] = i;
        e->n_rows++;
    }
    if (e->n_rows == 0 && !allow_empty) {
        st = moe_err_at(err, MOE_STATUS_DATA, t->name, 0, 0,
                        "%s: no rows left after dropping %zu rows with missing values", t->name,
                        e->n_dropped);
        goto done;
    }
    e->n_cols = F;
    e->n_outputs = P;
    e->n_classes = e->labels ? enc->n_classes : 0;
    e->has_target = use_target;

done:
    strset_free(&cols);
    free(slots);
    moe_numctx_free(&ctx);
    if (st != MOE_STATUS_OK) {
        moe_encoded_free(e);
        e = NULL;
    }
    *out = e;
    return st;
}

moe_status moe_encoder_apply(const moe_encoder *enc, const moe_table *t,
                             const moe_encoder_apply_params *params, moe_encoded **out,
                             moe_error *err) {
    return encoder_apply(enc, t, params, 0, out, err);
}

moe_status moe_encoder_apply_batch(const moe_encoder *enc, const moe_table *t,
                                   const moe_encoder_apply_params *params, moe_encoded **out,
                                   moe_error *err) {
    return encoder_apply(enc, t, params, 1, out, err);
}

/* ---- accessors -------------------------------------------------------------- */

moe_task moe_encoder_task(const moe_encoder *enc) {
    return enc ? enc->task : MOE_TASK_REGRESSION;
}
size_t moe_encoder_n_features(const moe_encoder *enc) { return enc ? enc->n_features : 0; }
const char *moe_encoder_feature_name(const moe_encoder *enc, size_t j) {
    return enc && j < enc->n_features ? enc->feature_names[j] : NULL;
}
size_t moe_encoder_feature_input(const moe_encoder *enc, size_t j) {
    return enc && j < enc->n_features ? enc->feature_input[j] : MOE_TABLE_NO_COL;
}
size_t moe_encoder_n_inputs(const moe_encoder *enc) { return enc ? enc->n_inputs : 0; }
const char *moe_encoder_input_name(const moe_encoder *enc, size_t i) {
    return enc && i < enc->n_inputs ? enc->inputs[i].name : NULL;
}
int moe_encoder_input_is_categorical(const moe_encoder *enc, size_t i) {
    return enc && i < enc->n_inputs ? enc->inputs[i].categorical : 0;
}
moe_status moe_encoder_input_span(const moe_encoder *enc, size_t i, size_t *first,
                                  size_t *count) {
    if (!enc || i >= enc->n_inputs) return MOE_STATUS_INVALID_ARGUMENT;
    if (first) *first = enc->inputs[i].first;
    if (count) *count = enc->inputs[i].count;
    return MOE_STATUS_OK;
}
size_t moe_encoder_input_n_levels(const moe_encoder *enc, size_t i) {
    return enc && i < enc->n_inputs ? enc->inputs[i].n_levels : 0;
}
const char *moe_encoder_input_level(const moe_encoder *enc, size_t i, size_t level) {
    if (!enc || i >= enc->n_inputs || level >= enc->inputs[i].n_levels) return NULL;
    return enc->inputs[i].levels[level];
}
size_t moe_encoder_n_targets(const moe_encoder *enc) { return enc ? enc->n_targets : 0; }
const char *moe_encoder_target_name(const moe_encoder *enc, size_t p) {
    return enc && p < enc->n_targets ? enc->targets[p] : NULL;
}
size_t moe_encoder_n_classes(const moe_encoder *enc) { return enc ? enc->n_classes : 0; }
const char *moe_encoder_class_name(const moe_encoder *enc, size_t c) {
    return enc && c < enc->n_classes ? enc->classes[c] : NULL;
}
const char *moe_encoder_weights_name(const moe_encoder *enc) {
    return enc ? enc->weights : NULL;
}

moe_status moe_encoder_find_features(const moe_encoder *enc, const char *const *names,
                                     size_t n_names, size_t *out, size_t capacity,
                                     size_t *n_out, moe_error *err) {
    size_t k, j, n = 0;
    unsigned char *taken = NULL;
    moe_status st = MOE_STATUS_OK;
    if (n_out) *n_out = 0;
    if (!enc || (n_names && !names) || !n_out || (capacity && !out))
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_encoder_find_features: bad arguments");
    taken = calloc(enc->n_features ? enc->n_features : 1, 1);
    if (!taken) return moe_err(err, MOE_STATUS_NO_MEMORY, "out of memory");
    for (k = 0; k < n_names; k++) {
        size_t first = NONE, count = 0;
        const char *name = names[k] ? names[k] : "";
        for (j = 0; j < enc->n_inputs && first == NONE; j++)
            if (strcmp(enc->inputs[j].name, name) == 0) {
                first = enc->inputs[j].first;
                count = enc->inputs[j].count;
            }
        for (j = 0; j < enc->n_features && first == NONE; j++)
            if (strcmp(enc->feature_names[j], name) == 0) {
                first = j;
                count = 1;
            }
        if (first == NONE) {
            char ex[64];
            moe_excerpt(name, ex, sizeof ex);
            st = moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "no input column named '%s'", ex);
            goto done;
        }
        for (j = first; j < first + count; j++) {
            if (taken[j]) continue;
            if (n == capacity) {
                st = moe_err(err, MOE_STATUS_INVALID_ARGUMENT,
                             "moe_encoder_find_features: more than %zu columns", capacity);
                goto done;
            }
            taken[j] = 1;
            out[n++] = j;
        }
    }
    *n_out = n;
done:
    free(taken);
    return st;
}

/* ---- text form -------------------------------------------------------------- */

typedef struct strbuf {
    char *s;
    size_t n, cap;
    int failed;
} strbuf;

static void sb_put(strbuf *b, const char *s, size_t len) {
    if (b->failed) return;
    if (b->cap - b->n <= len) {
        size_t cap = b->cap ? b->cap : 256;
        char *ns;
        while (cap - b->n <= len) {
            if (cap > SIZE_MAX / 2) {
                b->failed = 1;
                return;
            }
            cap *= 2;
        }
        ns = realloc(b->s, cap);
        if (!ns) {
            b->failed = 1;
            return;
        }
        b->s = ns;
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, len);
    b->n += len;
    b->s[b->n] = '\0';
}

static void sb_str(strbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_size(strbuf *b, size_t v) {
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%zu", v);
    sb_str(b, tmp);
}

/* A name as one token: bytes <= 0x20, 0x7f and '%' as %XX. */
static void sb_token(strbuf *b, const char *s) {
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= 0x20 || c == 0x7f || c == '%') {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            sb_put(b, e, 3);
        } else {
            sb_put(b, (const char *)s, 1);
        }
    }
}

static void sb_line(strbuf *b, const char *key, const char *token, const char *rest) {
    sb_str(b, key);
    if (token) {
        sb_str(b, " ");
        sb_token(b, token);
    }
    if (rest) {
        sb_str(b, " ");
        sb_str(b, rest);
    }
    sb_str(b, "\n");
}

moe_status moe_encoder_to_string(const moe_encoder *enc, char **out, moe_error *err) {
    strbuf b = {NULL, 0, 0, 0};
    size_t i, l;
    if (!out) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_encoder_to_string: out is NULL");
    *out = NULL;
    if (!enc) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_encoder_to_string: no encoder");
    sb_str(&b, "moe-encoder 1\n");
    sb_line(&b, "task", NULL,
            enc->task == MOE_TASK_CLASSIFICATION ? "classification" : "regression");
    sb_line(&b, "drop-first-level", NULL, enc->drop_first ? "1" : "0");
    sb_str(&b, "targets ");
    sb_size(&b, enc->n_targets);
    sb_str(&b, "\n");
    for (i = 0; i < enc->n_targets; i++) sb_line(&b, "target", enc->targets[i], NULL);
    if (enc->weights) sb_line(&b, "weights", enc->weights, NULL);
    sb_str(&b, "inputs ");
    sb_size(&b, enc->n_inputs);
    sb_str(&b, "\n");
    for (i = 0; i < enc->n_inputs; i++) {
        const enc_input *in = &enc->inputs[i];
        if (!in->categorical) {
            sb_line(&b, "input", in->name, "numeric");
            continue;
        }
        sb_str(&b, "input ");
        sb_token(&b, in->name);
        sb_str(&b, " categorical ");
        sb_size(&b, in->n_levels);
        sb_str(&b, "\n");
        for (l = 0; l < in->n_levels; l++) sb_line(&b, "level", in->levels[l], NULL);
    }
    sb_str(&b, "classes ");
    sb_size(&b, enc->n_classes);
    sb_str(&b, "\n");
    for (i = 0; i < enc->n_classes; i++) sb_line(&b, "class", enc->classes[i], NULL);
    sb_str(&b, "end\n");
    if (b.failed) {
        free(b.s);
        return moe_err(err, MOE_STATUS_NO_MEMORY, "moe_encoder_to_string: out of memory");
    }
    *out = b.s;
    return MOE_STATUS_OK;
}

/* Reading: the text is copied, split into lines and tokens in place. */
typedef struct reader {
    char *s;        /* the copy */
    char *pos;      /* start of the next line */
    size_t line;    /* number of the line last read */
    size_t lines_left;
    char *tok[4];
    size_t n_tok;
} reader;

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Undo sb_token in place. 0, or -1 on a bad escape or a raw byte that
 * should have been escaped. */
static int unescape(char *s) {
    char *w = s;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '%') {
            int h = hexval(s[1]), l = h < 0 ? -1 : hexval(s[2]);
            if (h < 0 || l < 0 || (h == 0 && l == 0)) return -1;
            *w++ = (char)(h * 16 + l);
            s += 2;
        } else if (c <= 0x20 || c == 0x7f) {
            return -1;
        } else {
            *w++ = (char)c;
        }
    }
    *w = '\0';
    return 0;
}

/* Next line split into up to 4 space-separated tokens (more: n_tok = 5).
 * Returns 0, or -1 at the end of the text or on a malformed line. */
static int next_line(reader *r) {
    char *p = r->pos, *end;
    if (*p == '\0') return -1;
    end = strchr(p, '\n');
    if (!end) return -1; /* every line ends with LF */
    *end = '\0';
    r->pos = end + 1;
    r->line++;
    if (r->lines_left) r->lines_left--;
    r->n_tok = 0;
    for (;;) {
        char *sp = strchr(p, ' ');
        if (r->n_tok == 4) {
            r->n_tok = 5;
            return 0;
        }
        if (sp) *sp = '\0';
        if (*p == '\0') return -1; /* empty token: double space, leading/trailing space */
        r->tok[r->n_tok++] = p;
        if (!sp) return 0;
        p = sp + 1;
    }
}

/* A count token: decimal, no sign, at most max. */
static int parse_count(const char *s, size_t max, size_t *out) {
    size_t v = 0;
    if (!*s) return -1;
    for (; *s; s++) {
        size_t d = (size_t)(*s - '0');
        if (*s < '0' || *s > '9' || v > max / 10) return -1;
        v *= 10;
        if (d > max - v) return -1;
        v += d;
    }
    *out = v;
    return 0;
}

/* Expect a line "key TOKEN" (n_args tokens after the key). */
static int expect(reader *r, const char *key, size_t n_args) {
    if (next_line(r) != 0) return -1;
    if (r->n_tok != n_args + 1 || strcmp(r->tok[0], key) != 0) return -1;
    return 0;
}

static moe_status bad_text(moe_error *err, const reader *r, const char *what) {
    return moe_err(err, MOE_STATUS_FORMAT, "encoder text line %zu: %s", r->line, what);
}

/* Read `n` lines "key TEXT" into a new array of strings, strictly
 * increasing in level order. */
static moe_status read_list(reader *r, const char *key, size_t n, char ***out, moe_numctx *ctx,
                            moe_error *err) {
    char **v = calloc(n ? n : 1, sizeof *v);
    moe_level_key prev, cur;
    size_t i;
    moe_status st = MOE_STATUS_OK;
    if (!v) return moe_err(err, MOE_STATUS_NO_MEMORY, "out of memory");
    for (i = 0; i < n; i++) {
        if (expect(r, key, 1) != 0 || unescape(r->tok[1]) != 0) {
            char what[64];
            snprintf(what, sizeof what, "expected '%s TEXT'", key);
            st = bad_text(err, r, what);
            goto done;
        }
        if (!(v[i] = dup_str(r->tok[1]))) {
            st = moe_err(err, MOE_STATUS_NO_MEMORY, "out of memory");
            goto done;
        }
        moe_level_key_set(&cur, ctx, v[i], i);
        if (i && moe_level_key_cmp(&prev, &cur) >= 0) {
            st = bad_text(err, r, "not in sorted order or repeated");
            goto done;
        }
        prev = cur;
    }
done:
    if (st != MOE_STATUS_OK) {
        free_strs(v, n);
        v = NULL;
    }
    *out = v;
    return st;
}

moe_status moe_encoder_from_string(const char *text, moe_encoder **out, moe_error *err) {
    reader r;
    moe_encoder *enc = NULL;
    moe_numctx ctx = MOE_NUMCTX_INIT;
    moe_status st = MOE_STATUS_OK;
    strset names = {0};
    size_t i, n, version = 0, len;
    const char *q;

    memset(&r, 0, sizeof r);
    if (!out) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_encoder_from_string: out is NULL");
    *out = NULL;
    if (!text) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_encoder_from_string: no text");
    len = strlen(text);
    r.s = malloc(len + 1);
    enc = calloc(1, sizeof *enc);
    if (!r.s || !enc) {
        st = moe_err(err, MOE_STATUS_NO_MEMORY, "out of memory");
        goto done;
    }
    memcpy(r.s, text, len + 1);
    r.pos = r.s;
    for (q = text; (q = strchr(q, '\n')) != NULL; q++) r.lines_left++;

#define FAIL(what)                          \
    do {                                    \
        st = bad_text(err, &r, (what));     \
        goto done;                          \
    } while (0)

    if (expect(&r, "moe-encoder", 1) != 0) FAIL("not an encoder (expected 'moe-encoder 1')");
    if (parse_count(r.tok[1], 1000000, &version) != 0 || version < 1) FAIL("bad version");
    if (version > 1) {
        st = moe_err(err, MOE_STATUS_VERSION,
                     "encoder text version %zu is newer than this library reads (1)", version);
        goto done;
    }
    if (expect(&r, "task", 1) != 0) FAIL("expected 'task regression|classification'");
    if (strcmp(r.tok[1], "regression") == 0) enc->task = MOE_TASK_REGRESSION;
    else if (strcmp(r.tok[1], "classification") == 0) enc->task = MOE_TASK_CLASSIFICATION;
    else FAIL("unknown task");
    if (expect(&r, "drop-first-level", 1) != 0 ||
        (strcmp(r.tok[1], "0") != 0 && strcmp(r.tok[1], "1") != 0))
        FAIL("expected 'drop-first-level 0|1'");
    enc->drop_first = r.tok[1][0] == '1';

    if (expect(&r, "targets", 1) != 0 || parse_count(r.tok[1], r.lines_left, &n) != 0 || n == 0)
        FAIL("expected 'targets N' (N >= 1, one line each)");
    if (enc->task == MOE_TASK_CLASSIFICATION && n != 1) FAIL("classification takes one target");
    enc->targets = calloc(n, sizeof *enc->targets);
    if (!enc->targets) {
        st = moe_err(err, MOE_STATUS_NO_MEMORY, "out of memory");
        goto done;
    }
    enc->n_targets = n;
    for (i = 0; i < n; i++) {
        if (expect(&r, "target", 1) != 0 || unescape(r.tok[1]) != 0) FAIL("expected 'target NAME'");
        if (!(enc->targets[i] = dup_str(r.tok[1]))) {
            st = moe_err(err, MOE_STATUS_NO_MEMORY, "out of memory");
            goto done;
        }
    }
    if (next_line(&r) != 0) FAIL("expected 'weights NAME' or 'inputs N'");
    if (strcmp(r.tok[0], "weights") == 0) {
        if (r.n_tok != 2 || unescape(r.tok[1]) != 0) FAIL("expected 'weights NAME'");
        if (!(enc->weights = dup_str(r.tok[1]))) {
            st = moe_err(err, MOE_STATUS_NO_MEMORY, "out of memory");
            goto done;
        }
        if (next_line(&r) != 0) FAIL("expected 'inputs N'");
    }
    if (r.n_tok != 2 || strcmp(r.tok[0], "inputs") != 0 ||
        parse_count(r.tok[1], r.lines_left, &n) != 0)
        FAIL("expected 'inputs N' (one line each)");
    enc->inputs = calloc(n ? n : 1, sizeof *enc->inputs);
    if (!enc->inputs) {
        st = moe_err(err, MOE_STATUS_NO_MEMORY, "out of memory");
        goto done;
    }
    enc->n_inputs = n;
    for (i = 0; i < n; i++) {
        enc_input *in = &enc->inputs[i];
        size_t n_levels = 0;
        if (next_line(&r) != 0 || strcmp(r.tok[0], "input") != 0 || r.n_tok < 3 ||
            unescape(r.tok[1]) != 0)
            FAIL("expected 'input NAME numeric|categorical'");
        if (!(in->name = dup_str(r.tok[1]))) {
            st = moe_err(err, MOE_STATUS_NO_MEMORY, "out of memory");
            goto done;
        }
        if (r.n_tok == 3 && strcmp(r.tok[2], "numeric") == 0) continue;
        if (r.n_tok != 4 || strcmp(r.tok[2], "categorical") != 0 ||
            parse_count(r.tok[3], r.lines_left, &n_levels) != 0 || n_levels == 0)
            FAIL("expected 'input NAME numeric' or 'input NAME categorical L' (L >= 1)");
        in->categorical = 1;
        if ((st = read_list(&r, "level", n_levels, &in->levels, &ctx, err)) != MOE_STATUS_OK)
            goto done;
        in->n_levels = n_levels;
    }
    if (expect(&r, "classes", 1) != 0 || parse_count(r.tok[1], r.lines_left, &n) != 0)
        FAIL("expected 'classes N'");
    if (enc->task == MOE_TASK_CLASSIFICATION ? n < 2 : n != 0)
        FAIL("wrong number of classes for the task");
    if ((st = read_list(&r, "class", n, &enc->classes, &ctx, err)) != MOE_STATUS_OK) goto done;
    enc->n_classes = n;
    if (expect(&r, "end", 0) != 0) FAIL("expected 'end'");
    if (*r.pos != '\0') FAIL("text after 'end'");

    /* names: all distinct */
    {
        size_t ix;
        int added = 1;
        for (i = 0; i < enc->n_targets && added; i++)
            if (strset_add(&names, enc->targets[i], &ix, &added) != 0) goto nomem;
        if (added && enc->weights && strset_add(&names, enc->weights, &ix, &added) != 0)
            goto nomem;
        for (i = 0; i < enc->n_inputs && added; i++)
            if (strset_add(&names, enc->inputs[i].name, &ix, &added) != 0) goto nomem;
        if (!added) {
            st = moe_err(err, MOE_STATUS_FORMAT, "encoder text: a column name is repeated");
            goto done;
        }
    }
    if (encoder_finish(enc) != 0) goto nomem;
#undef FAIL
    goto done;
nomem:
    st = moe_err(err, MOE_STATUS_NO_MEMORY, "out of memory");
done:
    strset_free(&names);
    moe_numctx_free(&ctx);
    free(r.s);
    if (st != MOE_STATUS_OK) {
        moe_encoder_free(enc);
        enc = NULL;
    }
    *out = enc;
    return st;
}
