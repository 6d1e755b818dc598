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

/* "file:line:col (column 'name'): " + what, for cell (row i, column j). */
static moe_status cell_error(moe_error *err, moe_status st, const moe_table *t, size_t i,
                             size_t j, const char *what, const char *text) {
    char name[64], ex[64];
    moe_excerpt(t->col_names[j], name, sizeof name);
    if (text) {
        moe_excerpt(text, ex, sizeof ex);
        return moe_err_at(err, st, t->name, t->row_line[i], j + 1,
                          "%s:%zu:%zu (column '%s'): '%s' %s", t->name, t->row_line[i], j + 1,
                          name, ex, what);
    }
    return moe_err_at(err, st, t->name, t->row_line[i], j + 1, "%s:%zu:%zu (column '%s'): %s",
                      t->name, t->row_line[i], j + 1, name, what);
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

typedef struct col_stats {
    size_t n_nonmissing;
    size_t n_number;        /* finite or not */
    size_t first_text;      /* row of the first text cell, or NONE */
    size_t first_nonfinite;
    size_t first_negative;
    int all_integer;
    size_t n_distinct;      /* distinct finite values, counted up to MAX + 1 */
    double distinct[MOE_ENCODE_AUTO_MAX_CLASSES + 1];
} col_stats;

/* A candidate error: the first in file order wins. */
typedef struct first_err {
    size_t row, col;
    const char *what;
    int with_text;
} first_err;

static void note_err(first_err *e, size_t row, size_t col, const char *what, int with_text) {
    if (row == NONE) return;
    if (e->row == NONE || row < e->row || (row == e->row && col < e->col)) {
        e->row = row;
        e->col = col;
        e->what = what;
        e->with_text = with_text;
    }
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

moe_status moe_encoder_fit(const moe_table *t, const moe_encoder_params *params,
                           moe_encoder **out, moe_error *err) {
    moe_encoder_params def = moe_encoder_params_default();
    const moe_encoder_params *p = params ? params : &def;
    moe_status st = MOE_STATUS_OK;
    moe_encoder *enc = NULL;
    moe_numctx ctx = MOE_NUMCTX_INIT;
    unsigned char *role = NULL, *keep = NULL, *forced = NULL;
    size_t *incols = NULL, *tcols = NULL, *used = NULL, *dummy = NULL;
    size_t n_in = 0, n_tg = 0, n_used = 0, wcol = NONE, i, j, k, n_kept = 0;
    col_stats *stats = NULL;  /* per table column */
    strset *sets = NULL;      /* per table column, categorical inputs and class labels */
    first_err fe = {NONE, NONE, NULL, 0};
    int classify = 0;

    if (!out) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_encoder_fit: out is NULL");
    *out = NULL;
    if (!t) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_encoder_fit: no table");
    if (p->task != MOE_ENCODE_TASK_AUTO && p->task != MOE_ENCODE_TASK_REGRESSION &&
        p->task != MOE_ENCODE_TASK_CLASSIFICATION)
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_encoder_fit: invalid task %d",
                       (int)p->task);
    if (p->missing != MOE_MISSING_ERROR && p->missing != MOE_MISSING_DROP)
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_encoder_fit: invalid missing policy");

    role = calloc(t->n_cols, 1);
    forced = calloc(t->n_cols, 1);
    incols = malloc(t->n_cols * sizeof *incols);
    tcols = malloc(t->n_cols * sizeof *tcols);
    used = malloc(t->n_cols * sizeof *used);
    dummy = malloc(t->n_cols * sizeof *dummy);
    keep = malloc(t->n_rows);
    stats = calloc(t->n_cols, sizeof *stats);
    sets = calloc(t->n_cols, sizeof *sets);
    if (!role || !forced || !incols || !tcols || !used || !dummy || !keep || !stats || !sets) {
        st = no_memory(err, t);
        goto done;
    }

    /* ---- roles ---- */
    if (p->n_targets) {
        if (p->n_targets > t->n_cols) {
            st = moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "%s: %zu targets but %zu columns",
                         t->name, p->n_targets, t->n_cols);
            goto done;
        }
        if ((st = assign(t, role, p->targets, p->n_targets, ROLE_TARGET, "target", tcols, err)))
            goto done;
        n_tg = p->n_targets;
    } else {
        tcols[0] = t->n_cols - 1;
        role[tcols[0]] = ROLE_TARGET;
        n_tg = 1;
    }
    if (p->weights) {
        if ((st = assign(t, role, &p->weights, 1, ROLE_WEIGHTS, "weights", &wcol, err)))
            goto done;
    }
    if (p->n_drop > t->n_cols) {
        st = moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "%s: %zu columns to drop but %zu columns",
                     t->name, p->n_drop, t->n_cols);
        goto done;
    }
    if ((st = assign(t, role, p->drop, p->n_drop, ROLE_DROP, "drop", dummy, err))) goto done;
    if (p->n_inputs) {
        if (p->n_inputs > t->n_cols) {
            st = moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "%s: %zu inputs but %zu columns",
                         t->name, p->n_inputs, t->n_cols);
            goto done;
        }
        if ((st = assign(t, role, p->inputs, p->n_inputs, ROLE_INPUT, "inputs", incols, err)))
            goto done;
        n_in = p->n_inputs;
    } else {
        for (j = 0; j < t->n_cols; j++) {
            if (role[j] != ROLE_NONE) continue;
            role[j] = ROLE_INPUT;
            incols[n_in++] = j;
        }
    }
    if (p->n_categorical && !p->categorical) {
        st = moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "%s: categorical names given as NULL",
                     t->name);
        goto done;
    }
    for (k = 0; k < p->n_categorical; k++) {
        size_t c = p->categorical[k] ? moe_table_col_index(t, p->categorical[k]) : NONE;
        if (c == NONE || role[c] != ROLE_INPUT) {
            char ex[64];
            moe_excerpt(p->categorical[k] ? p->categorical[k] : "(null)", ex, sizeof ex);
            st = moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "%s: categorical column '%s' is not %s",
                         t->name, ex, c == NONE ? "in the file" : "an input");
            goto done;
        }
        forced[c] = 1;
    }
    if (p->task == MOE_ENCODE_TASK_CLASSIFICATION && n_tg != 1) {
        st = moe_err(err, MOE_STATUS_INVALID_ARGUMENT,
                     "%s: classification takes one target column, not %zu", t->name, n_tg);
        goto done;
    }
    for (j = 0; j < t->n_cols; j++) {
        if (role[j] == ROLE_INPUT || role[j] == ROLE_TARGET || role[j] == ROLE_WEIGHTS)
            used[n_used++] = j;
        stats[j].first_text = stats[j].first_nonfinite = stats[j].first_negative = NONE;
        stats[j].all_integer = 1;
    }

    /* ---- pass 1: missing rows, cell kinds, counts ---- */
    for (i = 0; i < t->n_rows; i++) {
        size_t miss = NONE;
        for (k = 0; k < n_used && miss == NONE; k++)
            if (moe_cell_is_missing(moe_table_cell_at(t, i, used[k]))) miss = used[k];
        keep[i] = miss == NONE;
        if (miss != NONE) {
            /* MOE_MISSING_ERROR fails below, naming this cell unless a bad
             * cell comes earlier; the pass goes on so the column types do not
             * depend on where the gap is */
            if (p->missing == MOE_MISSING_ERROR) note_err(&fe, i, miss, "missing value", 0);
            continue;
        }
        n_kept++;
        for (k = 0; k < n_used; k++) {
            col_stats *s = &stats[used[k]];
            double v = 0;
            moe_cell_kind kind;
            if (forced[used[k]]) continue;
            kind = moe_cell_parse(&ctx, moe_table_cell_at(t, i, used[k]), &v);
            s->n_nonmissing++;
            if (kind == MOE_CELL_TEXT) {
                if (s->first_text == NONE) s->first_text = i;
                continue;
            }
            s->n_number++;
            if (kind == MOE_CELL_NONFINITE) {
                if (s->first_nonfinite == NONE) s->first_nonfinite = i;
                continue;
            }
            if (v < 0 && s->first_negative == NONE) s->first_negative = i;
            if (role[used[k]] == ROLE_TARGET && s->all_integer) {
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
    if (n_kept == 0 && fe.row == NONE) {
        st = moe_err_at(err, MOE_STATUS_DATA, t->name, 0, 0,
                        "%s: no rows left after dropping %zu rows with missing values", t->name,
                        t->n_rows);
        goto done;
    }

    /* ---- types, task, and the first bad cell ---- */
    {
        for (k = 0; k < n_in; k++) {
            col_stats *s = &stats[incols[k]];
            if (forced[incols[k]] || 2 * s->n_number <= s->n_nonmissing) {
                forced[incols[k]] = 1; /* categorical from now on */
                continue;
            }
            note_err(&fe, s->first_text, incols[k], "is not a number", 1);
            note_err(&fe, s->first_nonfinite, incols[k], "is not a finite number", 1);
        }
        if (p->task == MOE_ENCODE_TASK_CLASSIFICATION) {
            classify = 1;
        } else if (p->task == MOE_ENCODE_TASK_AUTO && n_tg == 1) {
            const col_stats *s = &stats[tcols[0]];
            if (2 * s->n_number <= s->n_nonmissing)
                classify = 1;
            else if (s->first_text == NONE && s->first_nonfinite == NONE && s->all_integer &&
                     s->n_distinct >= 2 && s->n_distinct <= MOE_ENCODE_AUTO_MAX_CLASSES)
                classify = 1;
        }
        if (!classify) {
            for (k = 0; k < n_tg; k++) {
                note_err(&fe, stats[tcols[k]].first_text, tcols[k], "is not a number", 1);
                note_err(&fe, stats[tcols[k]].first_nonfinite, tcols[k],
                         "is not a finite number", 1);
            }
        }
        if (wcol != NONE) {
            note_err(&fe, stats[wcol].first_text, wcol, "is not a number", 1);
            note_err(&fe, stats[wcol].first_nonfinite, wcol, "is not a finite number", 1);
            note_err(&fe, stats[wcol].first_negative, wcol, "is a negative weight", 1);
        }
        if (fe.row != NONE) {
            st = cell_error(err, MOE_STATUS_DATA, t, fe.row, fe.col, fe.what,
                            fe.with_text ? moe_table_cell_at(t, fe.row, fe.col) : NULL);
            goto done;
        }
    }

    /* ---- pass 2: levels and classes ---- */
    for (i = 0; i < t->n_rows; i++) {
        if (!keep[i]) continue;
        for (k = 0; k < n_in + (size_t)classify; k++) {
            size_t c = k < n_in ? incols[k] : tcols[0], ix;
            int added;
            if (k < n_in && !forced[c]) continue;
            if (strset_add(&sets[c], moe_table_cell_at(t, i, c), &ix, &added) != 0) {
                st = no_memory(err, t);
                goto done;
            }
        }
    }

    /* ---- the encoder ---- */
    enc = calloc(1, sizeof *enc);
    if (!enc) {
        st = no_memory(err, t);
        goto done;
    }
    enc->task = classify ? MOE_TASK_CLASSIFICATION : MOE_TASK_REGRESSION;
    enc->drop_first = p->drop_first_level ? 1 : 0;
    enc->targets = calloc(n_tg, sizeof *enc->targets);
    enc->inputs = calloc(n_in ? n_in : 1, sizeof *enc->inputs);
    if (!enc->targets || !enc->inputs) {
        st = no_memory(err, t);
        goto done;
    }
    enc->n_targets = n_tg;
    for (k = 0; k < n_tg; k++)
        if (!(enc->targets[k] = dup_str(t->col_names[tcols[k]]))) {
            st = no_memory(err, t);
            goto done;
        }
    if (wcol != NONE && !(enc->weights = dup_str(t->col_names[wcol]))) {
        st = no_memory(err, t);
        goto done;
    }
    enc->n_inputs = n_in;
    for (k = 0; k < n_in; k++) {
        enc_input *in = &enc->inputs[k];
        size_t c = incols[k];
        if (!(in->name = dup_str(t->col_names[c]))) {
            st = no_memory(err, t);
            goto done;
        }
        in->categorical = forced[c];
        if (in->categorical) {
            if (sorted_levels(&sets[c], &ctx, &in->levels) != 0) {
                st = no_memory(err, t);
                goto done;
            }
            in->n_levels = sets[c].n;
        }
    }
    if (classify) {
        const strset *s = &sets[tcols[0]];
        if (s->n < 2) {
            char ex[64], name[64];
            moe_excerpt(s->n ? s->keys[0] : "", ex, sizeof ex);
            moe_excerpt(t->col_names[tcols[0]], name, sizeof name);
            st = moe_err(err, MOE_STATUS_DATA,
                         "%s: classification needs 2 or more classes; column '%s' holds only '%s'",
                         t->name, name, ex);
            goto done;
        }
        if (sorted_levels(s, &ctx, &enc->classes) != 0) {
            st = no_memory(err, t);
            goto done;
        }
        enc->n_classes = s->n;
    }
    if (encoder_finish(enc) != 0) {
        st = no_memory(err, t);
        goto done;
    }

done:
    if (sets)
        for (j = 0; j < t->n_cols; j++) strset_free(&sets[j]);
    free(sets);
    free(stats);
    free(keep);
    free(dummy);
    free(used);
    free(tcols);
    free(incols);
    free(forced);
    free(role);
    moe_numctx_free(&ctx);
    if (st != MOE_STATUS_OK) {
        moe_encoder_free(enc);
        enc = NULL;
    }
    *out = enc;
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

moe_status moe_encoder_apply(const moe_encoder *enc, const moe_table *t,
                             const moe_encoder_apply_params *params, moe_encoded **out,
                             moe_error *err) {
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
    if (e->n_rows == 0) {
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
