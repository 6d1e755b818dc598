/*
 * fuzz_csv.c -- libFuzzer target for the data layer.
 *
 * Each input is read as CSV (moe_table_read_csv_buffer). When it parses, an
 * encoder is fitted on it and applied back, serialised, re-read and applied
 * again: the two encodings and the two texts must be identical. The input
 * is also read as encoder text, which must either fail cleanly or survive a
 * round trip unchanged. Any violated invariant traps.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -fopenmp=libgomp \
 *     -Iinclude -Isrc -I/usr/include/x86_64-linux-gnu/openblas-openmp \
 *     fuzz/fuzz_csv.c $(find src -name '*.c') \
 *     -L/usr/lib/x86_64-linux-gnu/openblas-openmp \
 *     -lopenblas -lm -o fuzz_csv
 *   ./fuzz_csv -max_total_time=180 corpus/ tests/data/csv
 * Crashes found are kept in tests/data/csv_regressions/ and replayed by
 * tests/test_csv.c.
 */
#include "moe.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ENSURE(cond)                \
    do {                            \
        if (!(cond)) __builtin_trap(); \
    } while (0)

static void check_error(const moe_error *err) {
    ENSURE(err->message[0] != '\0');
    ENSURE(strchr(err->message, '\n') == NULL);
    ENSURE(strlen(err->message) < sizeof err->message);
}

static int same_encoding(const moe_encoded *a, const moe_encoded *b) {
    size_t n = a->n_rows;
    if (a->n_rows != b->n_rows || a->n_cols != b->n_cols || a->n_outputs != b->n_outputs ||
        a->n_classes != b->n_classes || a->n_dropped != b->n_dropped ||
        a->has_target != b->has_target)
        return 0;
    if (n * a->n_cols && memcmp(a->x, b->x, n * a->n_cols * sizeof(double))) return 0;
    if (a->y && memcmp(a->y, b->y, n * a->n_outputs * sizeof(double))) return 0;
    if (a->labels && memcmp(a->labels, b->labels, n * sizeof(int32_t))) return 0;
    if (a->weights && memcmp(a->weights, b->weights, n * sizeof(double))) return 0;
    return memcmp(a->row, b->row, n * sizeof(size_t)) == 0 &&
           memcmp(a->line, b->line, n * sizeof(size_t)) == 0;
}

static void check_encoding(const moe_encoder *enc, const moe_table *t, const moe_encoded *e) {
    size_t i, j;
    ENSURE(e->n_rows >= 1 && e->n_rows + e->n_dropped == moe_table_n_rows(t));
    ENSURE(e->n_cols == moe_encoder_n_features(enc));
    for (i = 0; i < e->n_rows; i++) {
        ENSURE(e->row[i] < moe_table_n_rows(t));
        ENSURE(e->line[i] == moe_table_row_line(t, e->row[i]));
        for (j = 0; j < e->n_cols; j++) ENSURE(e->x[i * e->n_cols + j] - e->x[i * e->n_cols + j] == 0);
        if (e->labels) ENSURE(e->labels[i] >= 0 && (size_t)e->labels[i] < e->n_classes);
        if (e->weights) ENSURE(e->weights[i] >= 0);
    }
}

static void fuzz_encoder_text(const char *text) {
    moe_encoder *enc = NULL, *back = NULL;
    moe_error err;
    char *s1 = NULL, *s2 = NULL;
    if (moe_encoder_from_string(text, &enc, &err) != MOE_STATUS_OK) {
        ENSURE(enc == NULL);
        check_error(&err);
        return;
    }
    ENSURE(moe_encoder_to_string(enc, &s1, &err) == MOE_STATUS_OK);
    ENSURE(moe_encoder_from_string(s1, &back, &err) == MOE_STATUS_OK);
    ENSURE(moe_encoder_to_string(back, &s2, &err) == MOE_STATUS_OK);
    ENSURE(strcmp(s1, s2) == 0);
    free(s1);
    free(s2);
    moe_encoder_free(back);
    moe_encoder_free(enc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    moe_table *t = NULL;
    moe_encoder *enc = NULL, *back = NULL;
    moe_encoded *e1 = NULL, *e2 = NULL;
    moe_error err;
    char *text;
    size_t i, j;

    if (moe_table_read_csv_buffer(data, size, "fuzz.csv", NULL, &t, &err) == MOE_STATUS_OK) {
        moe_encoder_params p = moe_encoder_params_default();
        moe_encoder_apply_params ap = moe_encoder_apply_params_default();
        unsigned h = size ? data[size - 1] : 0;
        for (i = 0; i < moe_table_n_rows(t); i++)
            for (j = 0; j < moe_table_n_cols(t); j++) ENSURE(moe_table_cell(t, i, j) != NULL);
        p.missing = (h & 1) ? MOE_MISSING_DROP : MOE_MISSING_ERROR;
        p.task = (moe_encode_task)((h >> 1) % 3);
        p.drop_first_level = (h >> 3) & 1;
        ap.missing = p.missing;
        ap.unseen_zero = (h >> 4) & 1;
        if (moe_encoder_fit(t, &p, &enc, &err) == MOE_STATUS_OK) {
            char *s1 = NULL, *s2 = NULL;
            ENSURE(moe_encoder_to_string(enc, &s1, &err) == MOE_STATUS_OK);
            ENSURE(moe_encoder_from_string(s1, &back, &err) == MOE_STATUS_OK);
            ENSURE(moe_encoder_to_string(back, &s2, &err) == MOE_STATUS_OK);
            ENSURE(strcmp(s1, s2) == 0);
            /* a fitted encoder accepts its own training table */
            ENSURE(moe_encoder_apply(enc, t, &ap, &e1, &err) == MOE_STATUS_OK);
            ENSURE(moe_encoder_apply(back, t, &ap, &e2, &err) == MOE_STATUS_OK);
            check_encoding(enc, t, e1);
            ENSURE(e1->has_target);
            ENSURE(same_encoding(e1, e2));
            free(s1);
            free(s2);
        } else {
            ENSURE(enc == NULL);
            check_error(&err);
        }
    } else {
        ENSURE(t == NULL);
        check_error(&err);
    }
    moe_encoded_free(e1);
    moe_encoded_free(e2);
    moe_encoder_free(back);
    moe_encoder_free(enc);
    moe_table_free(t);

    text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    fuzz_encoder_text(text);
    free(text);
    return 0;
}
