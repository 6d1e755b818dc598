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
    const char *in;     /* n bytes of input, then a NUL sentinel */
    char *out;          /* where the unquoted cells go: `in` itself (a whole
                           file, unquoted in place) or a batch's buffer */
    size_t n;
    size_t r, w;        /* read and write positions; w <= r when in place */
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
        while (blank(p, p->in[q])) q++;
        if (p->in[q] == '\n') {
            p->r = q + 1;
            p->line++;
        } else if (p->in[q] == '\r') {
            p->r = q + 1 + (p->in[q + 1] == '\n');
            p->line++;
        } else if (p->in[q] == '\0' && q >= p->n) {
            p->r = q;
            return 0;
        } else {
            return 1;
        }
    }
}

/* The delimiter occurring most often outside quotes in the record at p->r;
 * ',' on a tie or when none occurs. *complete is set to 0 when the input
 * ended before the record did. */
static char detect_delimiter(const csv_parser *p, int *complete) {
    static const char cand[3] = {',', ';', '\t'};
    size_t count[3] = {0, 0, 0}, q;
    int in_quotes = 0, best = 0, k;
    *complete = 0;
    for (q = p->r; q < p->n; q++) {
        char c = p->in[q];
        if (c == '"') {
            in_quotes = !in_quotes;
        } else if (!in_quotes) {
            if (c == '\n' || c == '\r') {
                *complete = 1;
                break;
            }
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
    const char *b = p->in;
    char *o = p->out;
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
                o[p->w++] = c;
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
                o[p->w++] = c;
                p->r++;
                if (!blank(p, c)) end = p->w;
            }
            if (c == '\0' && p->r < p->n) return nul_error(p, err);
            p->w = end;
        }
        c = b[p->r]; /* read before the NUL goes in: w may equal r */
        o[p->w++] = '\0';
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

/* The delimiter to use: params' (checked), or 0 to detect. */
static moe_status given_delimiter(const moe_csv_params *params, const char *name, char *out,
                                  moe_error *err) {
    char d = params ? params->delimiter : 0;
    *out = d;
    if (d == '"' || d == '\n' || d == '\r' || d == ' ')
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "%s: invalid delimiter 0x%02x", name,
                       (unsigned)(unsigned char)d);
    return MOE_STATUS_OK;
}

/* Length of a UTF-8 byte-order mark at the start of in[0..n-1] (0 or 3). */
static size_t bom_len(const char *in, size_t n) {
    return n >= 3 && (unsigned char)in[0] == 0xEF && (unsigned char)in[1] == 0xBB &&
                   (unsigned char)in[2] == 0xBF
               ? 3
               : 0;
}

/* The header just parsed by p (fields at p->fields in out): column names
 * into t (pointing into `out`), checked. */
static moe_status take_header(csv_parser *p, moe_table *t, char *out, moe_error *err) {
    size_t j;
    moe_status st;
    t->n_cols = p->n_fields;
    t->col_names = malloc(t->n_cols * sizeof *t->col_names);
    if (!t->col_names) return moe_err(err, MOE_STATUS_NO_MEMORY, "%s: out of memory", p->name);
    for (j = 0; j < t->n_cols; j++) t->col_names[j] = out + p->fields[j];
    if ((st = check_header(p, t->col_names, t->n_cols, t->header_line, err)) != MOE_STATUS_OK)
        return st;
    p->names = t->col_names;
    p->n_names = t->n_cols;
    return MOE_STATUS_OK;
}

/* Append the record p just parsed (starting on `line`, its cells from
 * write offset `start`) as row t->n_rows, growing the row arrays from
 * *cap_rows when needed. */
static moe_status add_row(moe_table *t, const csv_parser *p, size_t line, size_t start,
                          size_t *cap_rows, moe_error *err) {
    size_t i = t->n_rows, j;
    const char *name = p->name;
    if (p->n_fields != t->n_cols)
        return moe_err_at(err, MOE_STATUS_FORMAT, name, line, 0, "%s:%zu: %zu field%s, expected %zu",
                          name, line, p->n_fields, p->n_fields == 1 ? "" : "s", t->n_cols);
    if (p->w - start > UINT32_MAX)
        return moe_err_at(err, MOE_STATUS_FORMAT, name, line, 0, "%s:%zu: record longer than 4 GiB",
                          name, line);
    if (i == *cap_rows) {
        size_t cap = *cap_rows ? 2 * *cap_rows : 1024;
        size_t *rs, *rl;
        uint32_t *co;
        if (cap > SIZE_MAX / sizeof(size_t) || cap > SIZE_MAX / sizeof(uint32_t) / t->n_cols)
            return moe_err(err, MOE_STATUS_NO_MEMORY, "%s: too many rows", name);
        rs = realloc(t->row_start, cap * sizeof *rs);
        if (rs) t->row_start = rs;
        rl = rs ? realloc(t->row_line, cap * sizeof *rl) : NULL;
        if (rl) t->row_line = rl;
        co = rl ? realloc(t->cell_off, cap * t->n_cols * sizeof *co) : NULL;
        if (!co) return moe_err(err, MOE_STATUS_NO_MEMORY, "%s: out of memory", name);
        t->cell_off = co;
        *cap_rows = cap;
    }
    t->row_start[i] = start;
    t->row_line[i] = line;
    for (j = 0; j < t->n_cols; j++) t->cell_off[i * t->n_cols + j] = (uint32_t)(p->fields[j] - start);
    t->n_rows++;
    return MOE_STATUS_OK;
}

static moe_status no_rows_error(const char *name, size_t after_header, moe_error *err) {
    return moe_err_at(err, MOE_STATUS_DATA, name, after_header, 0,
                      "%s:%zu: no data rows after the header", name, after_header);
}

/* Parse buf[0..n-1] (buf[n] must be NUL; the table takes buf over, also on
 * failure). */
static moe_status parse_table(char *buf, size_t n, const char *name,
                              const moe_csv_params *params, moe_table **out, moe_error *err) {
    csv_parser p;
    moe_table *t = NULL;
    moe_status st = MOE_STATUS_OK;
    size_t cap_rows = 0, after_header;
    char given;

    memset(&p, 0, sizeof p);
    p.in = buf;
    p.out = buf;
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

    if ((st = given_delimiter(params, name, &given, err)) != MOE_STATUS_OK) goto done;
    p.r = bom_len(buf, n);
    p.delim = given ? given : ','; /* blank() needs one before detection */
    if (!skip_blank_lines(&p)) {
        st = moe_err_at(err, MOE_STATUS_FORMAT, name, 0, 0, "%s: empty file", name);
        goto done;
    }
    if (!given) {
        int complete;
        p.delim = detect_delimiter(&p, &complete);
    }
    t->delimiter = p.delim;
    t->header_line = p.line;
    if ((st = parse_record(&p, err)) != MOE_STATUS_OK) goto done;
    if ((st = take_header(&p, t, buf, err)) != MOE_STATUS_OK) goto done;
    after_header = p.line;

    while (skip_blank_lines(&p)) {
        size_t line = p.line, start = p.w;
        if ((st = parse_record(&p, err)) != MOE_STATUS_OK) goto done;
        if ((st = add_row(t, &p, line, start, &cap_rows, err)) != MOE_STATUS_OK) goto done;
    }
    if (t->n_rows == 0) {
        st = no_rows_error(name, after_header, err);
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

/* ---- reading in batches ------------------------------------------------------
 *
 * The reader keeps a window of the file's bytes (raw) and parses records
 * out of it into the current batch's buffer with the same parser as above.
 * A record is only accepted when the parser stopped at least one byte
 * before the end of the window (it looks one byte ahead, for CRLF and
 * doubled quotes); otherwise -- or when it ran into the window's end --
 * the record is parsed again from its start after more of the file has
 * been read. The window grows only for a record longer than itself, so
 * memory stays bounded by the batch and the longest record. */

#define READER_BLOCK ((size_t)1 << 20) /* bytes per read */
#define BATCH_BYTES ((size_t)8 << 20)  /* a batch stops growing past this much text */

struct moe_csv_reader {
    FILE *f;
    int eof;            /* the file has no more bytes */
    int done;           /* every data row has been returned */
    int failed;         /* an error left the reader unusable until rewound */
    char *raw;          /* raw[0..p.n): unparsed bytes from file offset raw_off; NUL at p.n */
    size_t cap;         /* bytes allocated at raw */
    size_t block;       /* bytes to read at a time (READER_BLOCK; tests use less) */
    uint64_t raw_off;
    csv_parser p;       /* in = raw */
    char *hdr;          /* the header's cells */
    size_t hdr_cap;
    moe_table *batch;   /* the current batch; col_names point into hdr */
    size_t cap_rows;    /* rows the batch's arrays hold */
    size_t out_cap;     /* bytes at batch->buf */
    uint64_t data_off;  /* file offset and line just after the header */
    size_t data_line;
    size_t n_rows;      /* data rows returned since the start */
};

/* Drop the bytes before p.r, then read more of the file after the rest. */
static moe_status refill(moe_csv_reader *rd, moe_error *err) {
    csv_parser *p = &rd->p;
    size_t keep = p->n - p->r, got;
    memmove(rd->raw, rd->raw + p->r, keep);
    rd->raw_off += p->r;
    p->r = 0;
    p->n = keep;
    if (rd->cap - 1 - keep < (rd->block + 1) / 2) {
        size_t cap = 2 * rd->cap;
        char *nr;
        if (cap < rd->cap)
            return moe_err(err, MOE_STATUS_NO_MEMORY, "%s: record too long", p->name);
        nr = realloc(rd->raw, cap);
        if (!nr) return moe_err(err, MOE_STATUS_NO_MEMORY, "%s: out of memory", p->name);
        rd->raw = nr;
        rd->cap = cap;
    }
    got = fread(rd->raw + keep, 1, rd->cap - 1 - keep, rd->f);
    if (got == 0) {
        if (ferror(rd->f))
            return moe_err_at(err, MOE_STATUS_IO, p->name, 0, 0, "%s: read error: %s", p->name,
                              strerror(errno));
        rd->eof = 1;
    }
    p->n = keep + got;
    rd->raw[p->n] = '\0';
    p->in = rd->raw;
    return MOE_STATUS_OK;
}

/* Make *buf hold at least `need` bytes. */
static int reserve(char **buf, size_t *cap, size_t need) {
    size_t c = *cap ? *cap : 4096;
    char *nb;
    if (need <= *cap) return 0;
    while (c < need) {
        if (c > SIZE_MAX / 2) return -1;
        c *= 2;
    }
    nb = realloc(*buf, c);
    if (!nb) return -1;
    *buf = nb;
    *cap = c;
    return 0;
}

/* Parse the next record into *out at p.w (grown as needed); its first line
 * and write offset go to *line and *start. *have = 0 at the end of input. */
static moe_status next_record(moe_csv_reader *rd, char **out, size_t *out_cap, size_t *line,
                              size_t *start, int *have, moe_error *err) {
    csv_parser *p = &rd->p;
    for (;;) {
        size_t r0 = p->r, line0 = p->line, w0 = p->w;
        moe_status st = MOE_STATUS_OK;
        /* unquoting never makes a record longer: room for all unread bytes */
        if (reserve(out, out_cap, w0 + (p->n - r0) + 2) != 0)
            return moe_err(err, MOE_STATUS_NO_MEMORY, "%s: out of memory", p->name);
        p->out = *out;
        *have = skip_blank_lines(p);
        if (*have) {
            *line = p->line;
            *start = p->w;
            st = parse_record(p, err);
        }
        if (rd->eof || p->r + 1 < p->n) return st;
        p->r = r0;
        p->line = line0;
        p->w = w0;
        if ((st = refill(rd, err)) != MOE_STATUS_OK) return st;
    }
}

void moe_csv_reader_free(moe_csv_reader *rd) {
    if (!rd) return;
    if (rd->f) fclose(rd->f);
    free(rd->raw);
    free(rd->hdr);
    free(rd->p.fields);
    moe_table_free(rd->batch);
    free(rd);
}

moe_status moe_csv_reader_open(const char *path, const moe_csv_params *params,
                               moe_csv_reader **out, moe_error *err) {
    return moe_csv_reader_open_block(path, params, READER_BLOCK, out, err);
}

moe_status moe_csv_reader_open_block(const char *path, const moe_csv_params *params,
                                     size_t block, moe_csv_reader **out, moe_error *err) {
    moe_csv_reader *rd = NULL;
    moe_table *t;
    csv_parser *p;
    moe_status st = MOE_STATUS_OK;
    size_t line = 0, start = 0;
    int have;
    char given;

    if (!out) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_csv_reader_open: out is NULL");
    *out = NULL;
    if (!path || !*path) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "no file name");
    if ((st = given_delimiter(params, path, &given, err)) != MOE_STATUS_OK) return st;
    rd = calloc(1, sizeof *rd);
    t = rd ? calloc(1, sizeof *t) : NULL;
    if (rd) rd->batch = t;
    if (block == 0 || block > SIZE_MAX / 4) block = READER_BLOCK;
    if (!t || !(t->name = malloc(strlen(path) + 1)) || !(rd->raw = malloc(block + 1))) {
        st = moe_err(err, MOE_STATUS_NO_MEMORY, "%s: out of memory", path);
        goto done;
    }
    strcpy(t->name, path);
    rd->cap = block + 1;
    rd->block = block;
    p = &rd->p;
    p->in = rd->raw;
    p->line = 1;
    p->name = t->name;
    rd->raw[0] = '\0';
    rd->f = fopen(path, "rb");
    if (!rd->f) {
        st = moe_err_at(err, MOE_STATUS_IO, path, 0, 0, "%s: cannot open: %s", path,
                        strerror(errno));
        goto done;
    }
    while (!rd->eof && p->n < 3)
        if ((st = refill(rd, err)) != MOE_STATUS_OK) goto done;
    p->r = bom_len(rd->raw, p->n);
    p->delim = given ? given : ','; /* blank() needs one before detection */
    for (;;) {
        size_t r0 = p->r, line0 = p->line;
        int complete = 1;
        have = skip_blank_lines(p);
        if (have && !given) p->delim = detect_delimiter(p, &complete);
        if (rd->eof || (have && complete && p->r + 1 < p->n)) break;
        p->r = r0;
        p->line = line0;
        if ((st = refill(rd, err)) != MOE_STATUS_OK) goto done;
    }
    if (!have) {
        st = moe_err_at(err, MOE_STATUS_FORMAT, path, 0, 0, "%s: empty file", path);
        goto done;
    }
    t->delimiter = p->delim;
    if ((st = next_record(rd, &rd->hdr, &rd->hdr_cap, &line, &start, &have, err)) != MOE_STATUS_OK)
        goto done;
    t->header_line = line;
    if ((st = take_header(p, t, rd->hdr, err)) != MOE_STATUS_OK) goto done;
    rd->data_off = rd->raw_off + p->r;
    rd->data_line = p->line;

done:
    if (st != MOE_STATUS_OK) {
        moe_csv_reader_free(rd);
        rd = NULL;
    }
    *out = rd;
    return st;
}

moe_status moe_csv_reader_next(moe_csv_reader *rd, size_t max_rows, const moe_table **batch,
                               moe_error *err) {
    moe_table *t;
    csv_parser *p;
    moe_status st = MOE_STATUS_OK;
    if (!batch) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_csv_reader_next: batch is NULL");
    *batch = NULL;
    if (!rd || max_rows == 0)
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_csv_reader_next: %s",
                       rd ? "max_rows is 0" : "no reader");
    t = rd->batch;
    p = &rd->p;
    if (rd->failed)
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "%s: reading failed earlier (rewind first)",
                       t->name);
    if (rd->done) return MOE_STATUS_OK;
    t->n_rows = 0;
    p->w = 0;
    while (t->n_rows < max_rows && p->w < BATCH_BYTES) {
        size_t line = 0, start = 0;
        int have;
        st = next_record(rd, &t->buf, &rd->out_cap, &line, &start, &have, err);
        if (st == MOE_STATUS_OK && !have) {
            rd->done = 1;
            break;
        }
        if (st == MOE_STATUS_OK) st = add_row(t, p, line, start, &rd->cap_rows, err);
        if (st != MOE_STATUS_OK) {
            rd->failed = 1;
            t->n_rows = 0;
            return st;
        }
    }
    if (t->n_rows == 0) {
        if (rd->n_rows == 0) {
            rd->failed = 1;
            return no_rows_error(t->name, rd->data_line, err);
        }
        return MOE_STATUS_OK;
    }
    rd->n_rows += t->n_rows;
    *batch = t;
    return MOE_STATUS_OK;
}

moe_status moe_csv_reader_rewind(moe_csv_reader *rd, moe_error *err) {
    if (!rd) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_csv_reader_rewind: no reader");
    if (rd->data_off > (uint64_t)INT64_MAX || fseeko(rd->f, (off_t)rd->data_off, SEEK_SET) != 0)
        return moe_err_at(err, MOE_STATUS_IO, rd->batch->name, 0, 0, "%s: cannot rewind: %s",
                          rd->batch->name, strerror(errno));
    clearerr(rd->f);
    rd->eof = rd->done = rd->failed = 0;
    rd->raw_off = rd->data_off;
    rd->p.r = rd->p.n = rd->p.w = 0;
    rd->raw[0] = '\0';
    rd->p.line = rd->data_line;
    rd->n_rows = 0;
    rd->batch->n_rows = 0;
    return MOE_STATUS_OK;
}

size_t moe_csv_reader_n_cols(const moe_csv_reader *rd) { return rd ? rd->batch->n_cols : 0; }

const char *moe_csv_reader_col_name(const moe_csv_reader *rd, size_t j) {
    return rd && j < rd->batch->n_cols ? rd->batch->col_names[j] : NULL;
}

const char *moe_csv_reader_name(const moe_csv_reader *rd) { return rd ? rd->batch->name : NULL; }

size_t moe_csv_reader_n_rows_read(const moe_csv_reader *rd) { return rd ? rd->n_rows : 0; }

const moe_table *moe_csv_reader_layout(const moe_csv_reader *rd) {
    return rd ? rd->batch : NULL;
}
