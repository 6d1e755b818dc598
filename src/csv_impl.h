/*
 * csv_impl.h -- private declarations of the data layer, shared by csv.c
 * (reading CSV tables, parsing numbers) and encode.c (the encoder).
 *
 * A table keeps the file's bytes in one buffer, unquoted in place: every
 * cell becomes a NUL-terminated string inside it, so reading allocates a
 * few arrays and never one block per cell.
 */
#ifndef MOE_CSV_IMPL_H
#define MOE_CSV_IMPL_H

#include "moe_impl.h"

#include <locale.h>
#include <stddef.h>
#include <stdint.h>

struct moe_table {
    char *name;         /* for messages */
    char *buf;          /* the cells' texts, NUL-terminated */
    size_t n_rows;
    size_t n_cols;
    char **col_names;   /* [n_cols], pointing into buf */
    size_t *row_start;  /* [n_rows] offset in buf of the row's first cell */
    size_t *row_line;   /* [n_rows] 1-based line where the row starts */
    uint32_t *cell_off; /* [n_rows * n_cols] offset of a cell from its row start */
    size_t header_line;
    char delimiter;
};

static inline const char *moe_table_cell_at(const moe_table *t, size_t i, size_t j) {
    return t->buf + t->row_start[i] + t->cell_off[i * t->n_cols + j];
}

/* The reader's current batch as a table: after opening, a table of 0 rows
 * that carries the header (name, columns, names). Owned by the reader. */
const moe_table *moe_csv_reader_layout(const moe_csv_reader *reader);

/* moe_csv_reader_open with a window of `block` bytes instead of 1 MiB
 * (tests use a few bytes, to cross every window boundary). */
moe_status moe_csv_reader_open_block(const char *path, const moe_csv_params *params,
                                     size_t block, moe_csv_reader **out, moe_error *err);

/* moe_encoder_apply for one batch of a file: a batch whose rows are all
 * dropped is not an error (it gives 0 rows). */
moe_status moe_encoder_apply_batch(const moe_encoder *enc, const moe_table *table,
                                   const moe_encoder_apply_params *params, moe_encoded **out,
                                   moe_error *err);

/* What a cell holds. */
typedef enum moe_cell_kind {
    MOE_CELL_NUMBER = 0,    /* a finite number */
    MOE_CELL_NONFINITE = 1, /* "NaN", "inf", "-Infinity", or an overflowing number */
    MOE_CELL_TEXT = 2,      /* anything else that is not missing */
    MOE_CELL_MISSING = 3    /* empty or "NA" (blanks around ignored) */
} moe_cell_kind;

/* Number parsing state for one operation: the "C" locale object, made on
 * first need (mantissas of more than 19 digits or exponents beyond 10^22
 * go through strtod; the rest are converted exactly by hand). */
typedef struct moe_numctx {
    locale_t c_locale;
    int tried;
} moe_numctx;
#define MOE_NUMCTX_INIT {(locale_t)0, 0}
void moe_numctx_free(moe_numctx *ctx);

/* Classify a cell and, for MOE_CELL_NUMBER and MOE_CELL_NONFINITE, set
 * *value (correctly rounded, as strtod in the "C" locale). ctx may be NULL
 * (slower for long mantissas). Thread-safe. */
moe_cell_kind moe_cell_parse(moe_numctx *ctx, const char *text, double *value);

/* Is the cell missing: empty or "NA", blanks around ignored? (Cheaper than
 * moe_cell_parse.) */
static inline int moe_cell_is_missing(const char *s) {
    while (*s == ' ' || *s == '\t') s++;
    if (s[0] == 'N' && s[1] == 'A') s += 2;
    else if (*s) return 0;
    while (*s == ' ' || *s == '\t') s++;
    return *s == '\0';
}

/* Copy `text` into out (size >= 8) for a message: at most 40 bytes (then
 * "..."), control characters replaced by '?'. */
void moe_excerpt(const char *text, char *out, size_t size);

/* Sort order of levels and class labels: finite numbers (numerically,
 * ties by bytes) before texts (by bytes). A key caches the parse. */
typedef struct moe_level_key {
    const char *text;
    double value;
    int is_number;
    size_t index;   /* free for the caller (e.g. original position) */
} moe_level_key;
void moe_level_key_set(moe_level_key *key, moe_numctx *ctx, const char *text, size_t index);
int moe_level_key_cmp(const void *a, const void *b); /* qsort comparator */

#endif /* MOE_CSV_IMPL_H */
