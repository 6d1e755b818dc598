/*
 * csv.c -- reading CSV files into tables of text cells.
 *
 * The grammar is RFC 4180 (Shafranovich 2005, "Common Format and MIME Type
 * for Comma-Separated Values (CSV) Files", section 2) made lenient where
 * real files differ: ';' and tab delimiters (detected from the header),
 * LF, CRLF or CR line ends, a UTF-8 byte-order mark, blanks around
 * unquoted fields, blank lines. The rules are in moe.h, section 7a.
 *
 * The whole input is read into one buffer and unquoted in place: the write
 * position never passes the read position (a field loses its quotes, a
 * doubled quote becomes one, the delimiter becomes the NUL ending a cell),
 * so every cell ends up a C string inside the buffer and the table only
 * needs an offset per cell. One pass, no allocation per cell.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "csv_impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct csv_parser {
    char *buf;          /* n bytes of input, then a NUL sentinel */
    size_t n;
    size_t r, w;        /* read and write positions, w <= r */
    size_t line;        /* 1-based line of position r */
    char delim;
    const char *name;
    char *const *names; /* column names once the header is read, else NULL */
    size_t n_names;
    size_t *fields;     /* write offsets of the current record's fields */
    size_t n_fields, cap_fields;
} csv_parser;

moe_csv_params moe_csv_params_default(void) {
    moe_csv_params p;
    p.delimiter = 0;
    return p;
}

static int blank(const csv_parser *p, char c) {
    return c == ' ' || (c == '\t' && p->delim != '\t');
}

/* "name:line:col (column 'x')" for messages about field `field` (1-based). */
static void where(const csv_parser *p, size_t line, size_t field, char *out, size_t size) {
    if (p->names && field >= 1 && field <= p->n_names) {
        char ex[64];
        moe_excerpt(p->names[field - 1], ex, sizeof ex);
        snprintf(out, size, "%s:%zu:%zu (column '%s')", p->name, line, field, ex);
    } else {
        snprintf(out, size, "%s:%zu:%zu", p->name, line, field);
    }
}

static moe_status nul_error(const csv_parser *p, moe_error *err) {
    return moe_err_at(err, MOE_STATUS_FORMAT, p->name, p->line, 0,
                      "%s:%zu: NUL byte (not a text file?)", p->name, p->line);
}

/* Skip lines holding only blanks. Returns 1 if a record starts at p->r,
 * 0 at the end of the input. */
static int skip_blank_lines(csv_parser *p) {
    for (;;) {
        size_t q = p->r;
        while (blank(p, p->buf[q])) q++;
        if (p->buf[q] == '\n') {
            p->r = q + 1;
            p->line++;
        } else if (p->buf[q] == '\r') {
            p->r = q + 1 + (p->buf[q + 1] == '\n');
            p->line++;
        } else if (p->buf[q] == '\0' && q >= p->n) {
            p->r = q;
            return 0;
        } else {
            return 1;
        }
    }
}

/* The delimiter occurring most often outside quotes in the record at p->r;
 * ',' on a tie or when none occurs. */
static char detect_delimiter(const csv_parser *p) {
    static const char cand[3] = {',', ';', '\t'};
    size_t count[3] = {0, 0, 0}, q;
    int in_quotes = 0, best = 0, k;
    for (q = p->r; q < p->n; q++) {
        char c = p->buf[q];
        if (c == '"') {
            in_quotes = !in_quotes;
        } else if (!in_quotes) {
            if (c == '\n' || c == '\r') break;
            for (k = 0; k < 3; k++)
                if (c == cand[k]) count[k]++;
        }
    }
    for (k = 1; k < 3; k++)
        if (count[k] > count[best]) best = k;
    return cand[best];
}

static int push_field(csv_parser *p, size_t off) {
    if (p->n_fields == p->cap_fields) {
        size_t cap = p->cap_fields ? 2 * p->cap_fields : 16;
        size_t *f = realloc(p->fields, cap * sizeof *f);
        if (!f) return -1;
        p->fields = f;
        p->cap_fields = cap;
    }
    p->fields[p->n_fields++] = off;
    return 0;
}

/* Parse the record starting at p->r (after skip_blank_lines said one
 * starts there) into NUL-terminated fields at p->fields. */
static moe_status parse_record(csv_parser *p, moe_error *err) {
    char *b = p->buf;
    char c;
    p->n_fields = 0;
    for (;;) {
        size_t field;
        while (blank(p, b[p->r])) p->r++;
        if (push_field(p, p->w) != 0)
            return moe_err(err, MOE_STATUS_NO_MEMORY, "%s: out of memory", p->name);
        field = p->n_fields;
        if (b[p->r] == '"') {
            size_t qline = p->line;
            p->r++;
            for (;;) {
                c = b[p->r];
                if (c == '"') {
                    if (b[p->r + 1] != '"') break;
                    p->r++;
                } else if (c == '\0') {
                    char at[512];
                    if (p->r < p->n) return nul_error(p, err);
                    where(p, qline, field, at, sizeof at);
                    return moe_err_at(err, MOE_STATUS_FORMAT, p->name, qline, field,
                                      "%s: unterminated quoted field", at);
                } else if (c == '\n' || (c == '\r' && b[p->r + 1] != '\n')) {
                    p->line++;
                }
                b[p->w++] = c;
                p->r++;
            }
            p->r++; /* the closing quote */
            while (blank(p, b[p->r])) p->r++;
            c = b[p->r];
            if (c == '\0' && p->r < p->n) return nul_error(p, err);
            if (c != p->delim && c != '\n' && c != '\r' && c != '\0') {
                char at[512], ex[8];
                where(p, p->line, field, at, sizeof at);
                ex[0] = c;
                ex[1] = '\0';
                moe_excerpt(ex, ex, sizeof ex);
                return moe_err_at(err, MOE_STATUS_FORMAT, p->name, p->line, field,
                                  "%s: unexpected '%s' after a closing quote", at, ex);
            }
        } else {
            size_t end = p->w;
            for (;;) {
                c = b[p->r];
                if (c == p->delim || c == '\n' || c == '\r' || c == '\0') break;
                b[p->w++] = c;
                p->r++;
                if (!blank(p, c)) end = p->w;
            }
            if (c == '\0' && p->r < p->n) return nul_error(p, err);
            p->w = end;
        }
        c = b[p->r]; /* read before the NUL goes in: w may equal r */
        b[p->w++] = '\0';
        if (c == p->delim && c != '\0') {
            p->r++;
            continue;
        }
        if (c == '\r') {
            p->r += 1 + (b[p->r + 1] == '\n');
            p->line++;
        } else if (c == '\n') {
            p->r++;
            p->line++;
        }
        return MOE_STATUS_OK;
    }
}

/* Empty and duplicate header names. The first duplicate reported is the
 * one whose second occurrence comes first. */
typedef struct name_ix {
    const char *name;
    size_t ix;
} name_ix;

static int name_ix_cmp(const void *pa, const void *pb) {
    const name_ix *a = pa, *b = pb;
    int c = strcmp(a->name, b->name);
    if (c) return c;
    return (a->ix > b->ix) - (a->ix < b->ix);
}

static moe_status check_header(const csv_parser *p, char **names, size_t n, size_t line,
                               moe_error *err) {
    name_ix *v = NULL;
    size_t j, dup_first = 0, dup_second = 0;
    moe_status st = MOE_STATUS_OK;
    for (j = 0; j < n; j++) {
        if (names[j][0] == '\0')
            return moe_err_at(err, MOE_STATUS_FORMAT, p->name, line, j + 1,
                              "%s:%zu:%zu: empty column name", p->name, line, j + 1);
    }
    v = malloc(n * sizeof *v);
    if (!v) return moe_err(err, MOE_STATUS_NO_MEMORY, "%s: out of memory", p->name);
    for (j = 0; j < n; j++) {
        v[j].name = names[j];
        v[j].ix = j;
    }
    qsort(v, n, sizeof *v, name_ix_cmp);
    for (j = 1; j < n; j++) {
        if (strcmp(v[j - 1].name, v[j].name) == 0 && (j < 2 || strcmp(v[j - 2].name, v[j].name))) {
            if (!dup_second || v[j].ix + 1 < dup_second) {
                dup_first = v[j - 1].ix + 1;
                dup_second = v[j].ix + 1;
            }
        }
    }
    if (dup_second) {
        char ex[64];
        moe_excerpt(names[dup_second - 1], ex, sizeof ex);
        st = moe_err_at(err, MOE_STATUS_FORMAT, p->name, line, dup_second,
                        "%s:%zu:%zu: duplicate column name '%s' (also column %zu)", p->name, line,
                        dup_second, ex, dup_first);
    }
    free(v);
    return st;
}

/* Parse buf[0..n-1] (buf[n] must be NUL; the table takes buf over, also on
 * failure). */
static moe_status parse_table(char *buf, size_t n, const char *name,
                              const moe_csv_params *params, moe_table **out, moe_error *err) {
    csv_parser p;
    moe_table *t = NULL;
    moe_status st = MOE_STATUS_OK;
    size_t cap_rows = 0, j, after_header;

    memset(&p, 0, sizeof p);
    p.buf = buf;
    p.n = n;
    p.line = 1;
    p.name = name;
    t = calloc(1, sizeof *t);
    if (!t || !(t->name = malloc(strlen(name) + 1))) {
        free(buf);
        st = moe_err(err, MOE_STATUS_NO_MEMORY, "%s: out of memory", name);
        goto done;
    }
    strcpy(t->name, name);
    t->buf = buf;
    p.name = t->name;

    if (params && params->delimiter) {
        char d = params->delimiter;
        if (d == '"' || d == '\n' || d == '\r' || d == ' ') {
            st = moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "%s: invalid delimiter 0x%02x", name,
                         (unsigned)(unsigned char)d);
            goto done;
        }
        p.delim = d;
    }
    if (n >= 3 && (unsigned char)buf[0] == 0xEF && (unsigned char)buf[1] == 0xBB &&
        (unsigned char)buf[2] == 0xBF)
        p.r = 3;
    if (!p.delim) p.delim = ',';             /* blank() needs one before detection */
    if (!skip_blank_lines(&p)) {
        st = moe_err_at(err, MOE_STATUS_FORMAT, name, 0, 0, "%s: empty file", name);
        goto done;
    }
    if (!(params && params->delimiter)) p.delim = detect_delimiter(&p);
    t->delimiter = p.delim;
    t->header_line = p.line;
    if ((st = parse_record(&p, err)) != MOE_STATUS_OK) goto done;
    t->n_cols = p.n_fields;
    t->col_names = malloc(t->n_cols * sizeof *t->col_names);
    if (!t->col_names) {
        st = moe_err(err, MOE_STATUS_NO_MEMORY, "%s: out of memory", name);
        goto done;
    }
    for (j = 0; j < t->n_cols; j++) t->col_names[j] = buf + p.fields[j];
    if ((st = check_header(&p, t->col_names, t->n_cols, t->header_line, err)) != MOE_STATUS_OK)
        goto done;
    p.names = t->col_names;
    p.n_names = t->n_cols;
    after_header = p.line;

    while (skip_blank_lines(&p)) {
        size_t line = p.line, start = p.w, i = t->n_rows;
        if ((st = parse_record(&p, err)) != MOE_STATUS_OK) goto done;
        if (p.n_fields != t->n_cols) {
            st = moe_err_at(err, MOE_STATUS_FORMAT, name, line, 0, "%s:%zu: %zu field%s, expected %zu",
                            name, line, p.n_fields, p.n_fields == 1 ? "" : "s", t->n_cols);
            goto done;
        }
        if (p.w - start > UINT32_MAX) {
            st = moe_err_at(err, MOE_STATUS_FORMAT, name, line, 0,
                            "%s:%zu: record longer than 4 GiB", name, line);
            goto done;
        }
        if (i == cap_rows) {
            size_t cap = cap_rows ? 2 * cap_rows : 1024;
            size_t *rs, *rl;
            uint32_t *co;
            if (cap > SIZE_MAX / sizeof(size_t) || cap > SIZE_MAX / sizeof(uint32_t) / t->n_cols) {
                st = moe_err(err, MOE_STATUS_NO_MEMORY, "%s: too many rows", name);
                goto done;
            }
            rs = realloc(t->row_start, cap * sizeof *rs);
            if (rs) t->row_start = rs;
            rl = rs ? realloc(t->row_line, cap * sizeof *rl) : NULL;
            if (rl) t->row_line = rl;
            co = rl ? realloc(t->cell_off, cap * t->n_cols * sizeof *co) : NULL;
            if (!co) {
                st = moe_err(err, MOE_STATUS_NO_MEMORY, "%s: out of memory", name);
                goto done;
            }
            t->cell_off = co;
            cap_rows = cap;
        }
        t->row_start[i] = start;
        t->row_line[i] = line;
        for (j = 0; j < t->n_cols; j++)
            t->cell_off[i * t->n_cols + j] = (uint32_t)(p.fields[j] - start);
        t->n_rows++;
    }
    if (t->n_rows == 0) {
        st = moe_err_at(err, MOE_STATUS_DATA, name, after_header, 0,
                        "%s:%zu: no data rows after the header", name, after_header);
        goto done;
    }

done:
    free(p.fields);
    if (st != MOE_STATUS_OK) {
        moe_table_free(t);
        t = NULL;
    }
    *out = t;
    return st;
}

/* Read a stream to its end into a new buffer with a NUL after the data. */
static moe_status slurp(FILE *f, const char *name, char **out, size_t *size, moe_error *err) {
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    moe_status st = MOE_STATUS_OK;
    if (!buf) {
        st = moe_err(err, MOE_STATUS_NO_MEMORY, "%s: out of memory", name);
        goto done;
    }
    for (;;) {
        size_t got;
        if (cap - len < 2) {
            char *nb;
            if (cap > SIZE_MAX / 2) {
                st = moe_err(err, MOE_STATUS_NO_MEMORY, "%s: file too large", name);
                goto done;
            }
            nb = realloc(buf, cap * 2);
            if (!nb) {
                st = moe_err(err, MOE_STATUS_NO_MEMORY, "%s: out of memory", name);
                goto done;
            }
            buf = nb;
            cap *= 2;
        }
        got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0) {
            if (ferror(f)) {
                st = moe_err_at(err, MOE_STATUS_IO, name, 0, 0, "%s: read error: %s", name,
                                strerror(errno));
                goto done;
            }
            break;
        }
    }
    buf[len] = '\0';
done:
    if (st != MOE_STATUS_OK) {
        free(buf);
        buf = NULL;
        len = 0;
    }
    *out = buf;
    *size = len;
    return st;
}

moe_status moe_table_read_csv_file(FILE *stream, const char *name, const moe_csv_params *params,
                                   moe_table **out, moe_error *err) {
    char *buf = NULL;
    size_t n = 0;
    moe_status st;
    if (!out) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_table_read_csv_file: out is NULL");
    *out = NULL;
    if (!name) name = "<stdin>";
    if (!stream) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "%s: no stream", name);
    st = slurp(stream, name, &buf, &n, err);
    if (st != MOE_STATUS_OK) return st;
    return parse_table(buf, n, name, params, out, err);
}

moe_status moe_table_read_csv(const char *path, const moe_csv_params *params, moe_table **out,
                              moe_error *err) {
    FILE *f;
    moe_status st;
    if (!out) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_table_read_csv: out is NULL");
    *out = NULL;
    if (!path || !*path) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "no file name");
    f = fopen(path, "rb");
    if (!f)
        return moe_err_at(err, MOE_STATUS_IO, path, 0, 0, "%s: cannot open: %s", path,
                          strerror(errno));
    st = moe_table_read_csv_file(f, path, params, out, err);
    fclose(f);
    return st;
}

moe_status moe_table_read_csv_buffer(const void *data, size_t size, const char *name,
                                     const moe_csv_params *params, moe_table **out,
                                     moe_error *err) {
    char *buf;
    if (!out) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_table_read_csv_buffer: out is NULL");
    *out = NULL;
    if (!name) name = "<buffer>";
    if (!data && size) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "%s: no data", name);
    if (size == SIZE_MAX) return moe_err(err, MOE_STATUS_NO_MEMORY, "%s: too large", name);
    buf = malloc(size + 1);
    if (!buf) return moe_err(err, MOE_STATUS_NO_MEMORY, "%s: out of memory", name);
    if (size) memcpy(buf, data, size);
    buf[size] = '\0';
    return parse_table(buf, size, name, params, out, err);
}

void moe_table_free(moe_table *t) {
    if (!t) return;
    free(t->name);
    free(t->buf);
    free(t->col_names);
    free(t->row_start);
    free(t->row_line);
    free(t->cell_off);
    free(t);
}

size_t moe_table_n_rows(const moe_table *t) { return t ? t->n_rows : 0; }
size_t moe_table_n_cols(const moe_table *t) { return t ? t->n_cols : 0; }
const char *moe_table_name(const moe_table *t) { return t ? t->name : NULL; }
char moe_table_delimiter(const moe_table *t) { return t ? t->delimiter : 0; }

const char *moe_table_col_name(const moe_table *t, size_t j) {
    return t && j < t->n_cols ? t->col_names[j] : NULL;
}

size_t moe_table_col_index(const moe_table *t, const char *name) {
    size_t j;
    if (!t || !name) return MOE_TABLE_NO_COL;
    for (j = 0; j < t->n_cols; j++)
        if (strcmp(t->col_names[j], name) == 0) return j;
    return MOE_TABLE_NO_COL;
}

const char *moe_table_cell(const moe_table *t, size_t i, size_t j) {
    if (!t || i >= t->n_rows || j >= t->n_cols) return NULL;
    return moe_table_cell_at(t, i, j);
}

size_t moe_table_row_line(const moe_table *t, size_t i) {
    return t && i < t->n_rows ? t->row_line[i] : 0;
}
