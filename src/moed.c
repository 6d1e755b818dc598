/*
 * moed.c -- .moed binary data files: an encoded data set (x, y, labels,
 * weights) plus the encoder that made it, laid out for reading without
 * parsing. docs/format.md ("The .moed data file") is the normative layout.
 *
 * Writing streams: rows arrive in batches whose total is known only at the
 * end, so x goes straight into the temporary file at its final offset while
 * y, labels and weights go to unlinked side files; commit copies those
 * after x, writes the header (with a CRC-32C over it and the encoder text,
 * and one CRC per section) at offset 0 and renames the file into place.
 *
 * Reading: moe_moed_open maps the file and points a moe_dataset into the
 * mapping (zero copy on little-endian hosts); moe_moed_source_open streams
 * rows with pread() into the buffers a trainer lends. Every field of the
 * header is checked, and every size is computed with overflow checks and
 * compared with the file's actual size before anything is mapped or read.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "csv_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

_Static_assert(sizeof(double) == 8, "IEEE 754 binary64 doubles");

/* ---- format constants (docs/format.md) ------------------------------------ */

#define MOED_MAGIC "MOEDATA\0"
#define MOED_MAGIC_LEN 8
#define MOED_VERSION 1u
#define MOED_HEADER 128
#define MOED_ALIGN 64
#define MOED_FLAG_WEIGHTS 1u

#define LIM_COLS 10000000u          /* as the model file */
#define LIM_OUT 4096u
#define LIM_CLS 1000000u
#define LIM_ENCODER ((uint64_t)1 << 30)

enum { SEC_X, SEC_Y, SEC_LABELS, SEC_WEIGHTS, N_SEC };
static const char *const sec_name[N_SEC] = {"x", "y", "labels", "weights"};

/* header field offsets */
enum {
    H_VERSION = 8, H_FLAGS = 12, H_ROWS = 16, H_COLS = 24, H_OUT = 32, H_CLS = 40,
    H_DROPPED = 48, H_ENC = 56, H_OFF = 64, H_SIZE = 96, H_CRC = 104, H_RESERVED = 120,
    H_HCRC = 124
};

static void st32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void st64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t ld32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t ld64(const unsigned char *p) {
    return (uint64_t)ld32(p) | (uint64_t)ld32(p + 4) << 32;
}

static int host_le(void) {
    const uint32_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

static uint64_t align_up(uint64_t v) { return (v + MOED_ALIGN - 1) / MOED_ALIGN * MOED_ALIGN; }

/* a * b + c without overflow, else 0 */
static int mul_add(uint64_t a, uint64_t b, uint64_t c, uint64_t *out) {
    if (a && b > (UINT64_MAX - c) / a) return 0;
    *out = a * b + c;
    return 1;
}

/* Bytes per row of each section. */
static void row_bytes(uint64_t F, uint64_t P, uint64_t C, int has_w, uint64_t rb[N_SEC]) {
    rb[SEC_X] = 8 * F;
    rb[SEC_Y] = 8 * P;
    rb[SEC_LABELS] = C ? 4 : 0;
    rb[SEC_WEIGHTS] = has_w ? 8 : 0;
}

/* Offsets of the sections (0 when absent) and the file size, from the
 * shape. 0 on overflow. */
static int layout(uint64_t n, const uint64_t rb[N_SEC], uint64_t enc_size, uint64_t off[N_SEC],
                  uint64_t *file_size) {
    uint64_t pos, len;
    int s;
    if (enc_size > LIM_ENCODER) return 0;
    pos = align_up(MOED_HEADER + enc_size);
    *file_size = pos;
    for (s = 0; s < N_SEC; s++) {
        off[s] = 0;
        if (s != SEC_X && rb[s] == 0) continue;
        pos = align_up(pos);
        if (!mul_add(n, rb[s], pos, &len) || len > (uint64_t)INT64_MAX) return 0;
        off[s] = pos;
        pos = len;
        *file_size = pos;
    }
    return 1;
}

static void errno_text(int e, char *buf, size_t cap) {
    snprintf(buf, cap, "%s", strerror(e));
}

static moe_status io_error(moe_error *err, const char *path, const char *what) {
    char why[128];
    errno_text(errno, why, sizeof why);
    return moe_err_at(err, MOE_STATUS_IO, path, 0, 0, "%s: %s: %s", path, what, why);
}

static int write_all(int fd, const void *data, size_t n) {
    const char *p = data;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int pwrite_all(int fd, const void *data, size_t n, uint64_t off) {
    const char *p = data;
    while (n) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

/* Read exactly n bytes at off. Returns 0, -1 on an error (errno), 1 when
 * the file ends first. */
static int pread_all(int fd, void *data, size_t n, uint64_t off) {
    char *p = data;
    while (n) {
        ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) return 1;
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

/* ======================================================================
 * Writing
 * ====================================================================== */

#define STAGE_BYTES ((size_t)1 << 16)

struct moe_moed_writer {
    char *path, *tmp;
    int fd;              /* the temporary file: header, encoder, x */
    int side[N_SEC];     /* y, labels, weights (unlinked), or -1 */
    uint64_t rb[N_SEC];  /* bytes per row of each section */
    uint64_t n_cols, n_out, n_cls;
    int has_w;
    char *enc_text;
    uint64_t enc_size;
    uint64_t x_off;
    uint64_t n_rows, n_dropped;
    uint32_t crc[N_SEC];
    unsigned char *stage;
    int done;            /* committed or failed: only free remains */
};

void moe_moed_writer_free(moe_moed_writer *w) {
    int s;
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    for (s = 0; s < N_SEC; s++)
        if (w->side[s] >= 0) close(w->side[s]);
    if (w->tmp) unlink(w->tmp);
    free(w->tmp);
    free(w->path);
    free(w->enc_text);
    free(w->stage);
    free(w);
}

/* A new temporary file next to w->path; *name receives its name. */
static int make_temp(const moe_moed_writer *w, char **name) {
    size_t len = strlen(w->path);
    char *t = malloc(len + sizeof ".tmpXXXXXX");
    int fd;
    *name = NULL;
    if (!t) return -1;
    memcpy(t, w->path, len);
    memcpy(t + len, ".tmpXXXXXX", sizeof ".tmpXXXXXX");
    fd = mkstemp(t);
    if (fd < 0) {
        free(t);
        return -1;
    }
    *name = t;
    return fd;
}

/* Does the encoder describe rows of this shape? */
static int encoder_matches(const moe_encoder *enc, uint64_t F, uint64_t P, uint64_t C, int has_w) {
    if (moe_encoder_n_features(enc) != F) return 0;
    if ((moe_encoder_weights_name(enc) != NULL) != (has_w != 0)) return 0;
    if (moe_encoder_task(enc) == MOE_TASK_CLASSIFICATION)
        return P == 0 && C == moe_encoder_n_classes(enc);
    return C == 0 && P == moe_encoder_n_targets(enc);
}

moe_status moe_moed_writer_open(const char *path, size_t n_cols, size_t n_outputs,
                                size_t n_classes, int has_weights, const moe_encoder *enc,
                                moe_moed_writer **out, moe_error *err) {
    moe_moed_writer *w = NULL;
    moe_status st = MOE_STATUS_OK;
    int s;
    if (!out) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_moed_writer_open: out is NULL");
    *out = NULL;
    if (!path || !*path) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "no file name");
    if (n_cols > LIM_COLS || n_outputs > LIM_OUT || n_classes > LIM_CLS || n_classes == 1 ||
        (n_outputs && n_classes))
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT,
                       "%s: bad shape (%zu columns, %zu outputs, %zu classes)", path, n_cols,
                       n_outputs, n_classes);
    if (enc && !encoder_matches(enc, n_cols, n_outputs, n_classes, has_weights))
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT,
                       "%s: the encoder does not match the data's columns, targets or weights",
                       path);
    w = calloc(1, sizeof *w);
    if (!w) return moe_err(err, MOE_STATUS_NO_MEMORY, "%s: out of memory", path);
    w->fd = -1;
    for (s = 0; s < N_SEC; s++) w->side[s] = -1;
    w->n_cols = n_cols;
    w->n_out = n_outputs;
    w->n_cls = n_classes;
    w->has_w = has_weights ? 1 : 0;
    row_bytes(n_cols, n_outputs, n_classes, w->has_w, w->rb);
    if (!(w->path = malloc(strlen(path) + 1)) || !(w->stage = malloc(STAGE_BYTES))) {
        st = moe_err(err, MOE_STATUS_NO_MEMORY, "%s: out of memory", path);
        goto done;
    }
    strcpy(w->path, path);
    if (enc && (st = moe_encoder_to_string(enc, &w->enc_text, err)) != MOE_STATUS_OK) goto done;
    w->enc_size = w->enc_text ? strlen(w->enc_text) : 0;
    if (w->enc_size > LIM_ENCODER) {
        st = moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "%s: encoder text over 1 GiB", path);
        goto done;
    }
    w->x_off = align_up(MOED_HEADER + w->enc_size);
    if ((w->fd = make_temp(w, &w->tmp)) < 0) {
        st = io_error(err, path, "cannot create a temporary file in its directory");
        goto done;
    }
    for (s = SEC_Y; s < N_SEC; s++) {
        char *name = NULL;
        if (!w->rb[s]) continue;
        w->side[s] = make_temp(w, &name);
        if (w->side[s] < 0) {
            st = io_error(err, path, "cannot create a temporary file in its directory");
            goto done;
        }
        unlink(name);
        free(name);
    }
    if (w->enc_size && pwrite_all(w->fd, w->enc_text, w->enc_size, MOED_HEADER) != 0) {
        st = io_error(err, path, "cannot write");
        goto done;
    }
    if (lseek(w->fd, (off_t)w->x_off, SEEK_SET) < 0) {
        st = io_error(err, path, "cannot seek");
        goto done;
    }
done:
    if (st != MOE_STATUS_OK) {
        moe_moed_writer_free(w);
        w = NULL;
    }
    *out = w;
    return st;
}

/* Append n values (doubles, or int32 labels) of one section in
 * little-endian order through the staging buffer. */
static moe_status put_section(moe_moed_writer *w, int s, const void *src, size_t ld, size_t width,
                              size_t n_rows, moe_error *err) {
    int fd = s == SEC_X ? w->fd : w->side[s];
    size_t per = s == SEC_LABELS ? 4 : 8, used = 0, i, j;
    for (i = 0; i < n_rows; i++) {
        for (j = 0; j < width; j++) {
            if (used + per > STAGE_BYTES) {
                w->crc[s] = moe_crc32c(w->crc[s], w->stage, used);
                if (write_all(fd, w->stage, used) != 0) return io_error(err, w->path, "cannot write");
                used = 0;
            }
            if (s == SEC_LABELS) {
                st32(w->stage + used, (uint32_t)((const int32_t *)src)[i]);
            } else {
                uint64_t u;
                memcpy(&u, (const double *)src + i * ld + j, 8);
                st64(w->stage + used, u);
            }
            used += per;
        }
    }
    w->crc[s] = moe_crc32c(w->crc[s], w->stage, used);
    if (used && write_all(fd, w->stage, used) != 0) return io_error(err, w->path, "cannot write");
    return MOE_STATUS_OK;
}

moe_status moe_moed_writer_append(moe_moed_writer *w, const moe_dataset *d, moe_error *err) {
    moe_status st;
    size_t i;
    if (!w || !d) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_moed_writer_append: NULL");
    if (w->done) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "%s: writer already finished", w->path);
    if (d->n_rows == 0) return MOE_STATUS_OK;
    if (d->n_cols != w->n_cols || d->n_outputs != w->n_out || (w->n_cls && d->n_classes != w->n_cls) ||
        (!w->n_cls && d->labels) || (w->n_cls && !d->labels) || (w->n_out && !d->y) ||
        (d->n_cols && (!d->x || d->ld_x < d->n_cols)) || (w->n_out && d->ld_y < w->n_out) ||
        (w->has_w != (d->weights != NULL)))
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT,
                       "%s: the rows do not have the file's shape (%llu columns, %llu outputs, "
                       "%llu classes, %s)",
                       w->path, (unsigned long long)w->n_cols, (unsigned long long)w->n_out,
                       (unsigned long long)w->n_cls, w->has_w ? "weights" : "no weights");
    for (i = 0; i < d->n_rows; i++) {
        if (w->n_cls && (d->labels[i] < 0 || (uint64_t)d->labels[i] >= w->n_cls))
            return moe_err(err, MOE_STATUS_DATA, "%s: row %llu: label %ld out of range",
                           w->path, (unsigned long long)(w->n_rows + i + 1), (long)d->labels[i]);
        if (w->has_w && !(isfinite(d->weights[i]) && d->weights[i] >= 0))
            return moe_err(err, MOE_STATUS_DATA, "%s: row %llu: weight %g is not finite and >= 0",
                           w->path, (unsigned long long)(w->n_rows + i + 1), d->weights[i]);
    }
    st = put_section(w, SEC_X, d->x, d->ld_x, w->n_cols, d->n_rows, err);
    if (!st && w->n_out) st = put_section(w, SEC_Y, d->y, d->ld_y, w->n_out, d->n_rows, err);
    if (!st && w->n_cls) st = put_section(w, SEC_LABELS, d->labels, 1, 1, d->n_rows, err);
    if (!st && w->has_w) st = put_section(w, SEC_WEIGHTS, d->weights, 1, 1, d->n_rows, err);
    if (st) {
        w->done = 1;
        return st;
    }
    w->n_rows += d->n_rows;
    return MOE_STATUS_OK;
}

/* Rows per batch when converting CSV. */
#define CONVERT_BATCH_ROWS 16384

moe_status moe_moed_writer_append_csv(moe_moed_writer *w, moe_csv_reader *reader,
                                      const moe_encoder *enc,
                                      const moe_encoder_apply_params *ap, size_t *n_dropped,
                                      moe_error *err) {
    moe_encoder_apply_params def = moe_encoder_apply_params_default();
    const moe_table *batch = NULL;
    moe_status st;
    size_t dropped = 0;
    if (n_dropped) *n_dropped = 0;
    if (!w || !reader || !enc)
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_moed_writer_append_csv: NULL");
    if (!ap) {
        def.target = MOE_TARGET_USE_REQUIRED;
        ap = &def;
    }
    while ((st = moe_csv_reader_next(reader, CONVERT_BATCH_ROWS, &batch, err)) == MOE_STATUS_OK &&
           batch) {
        moe_encoded *e = NULL;
        moe_dataset d;
        if ((st = moe_encoder_apply_batch(enc, batch, ap, &e, err)) != MOE_STATUS_OK) break;
        dropped += e->n_dropped;
        d = moe_encoded_dataset(e);
        st = moe_moed_writer_append(w, &d, err);
        moe_encoded_free(e);
        if (st != MOE_STATUS_OK) break;
    }
    if (st == MOE_STATUS_OK && w->n_rows == 0)
        st = moe_err_at(err, MOE_STATUS_DATA, moe_csv_reader_name(reader), 0, 0,
                        "%s: no rows left after dropping %zu rows with missing values",
                        moe_csv_reader_name(reader), dropped);
    w->n_dropped += dropped;
    if (n_dropped) *n_dropped = dropped;
    return st;
}

/* Copy side file s (rewound) into the main file at off. */
static moe_status copy_side(moe_moed_writer *w, int s, uint64_t off, moe_error *err) {
    uint64_t left = w->n_rows * w->rb[s], at = 0;
    while (left) {
        size_t n = left < STAGE_BYTES ? (size_t)left : STAGE_BYTES;
        int r = pread_all(w->side[s], w->stage, n, at);
        if (r != 0) {
            if (r > 0) errno = EIO;
            return io_error(err, w->path, "cannot read back a temporary file");
        }
        if (pwrite_all(w->fd, w->stage, n, off + at) != 0) return io_error(err, w->path, "cannot write");
        at += n;
        left -= n;
    }
    return MOE_STATUS_OK;
}

moe_status moe_moed_writer_commit(moe_moed_writer *w, moe_error *err) {
    unsigned char h[MOED_HEADER];
    uint64_t off[N_SEC], size;
    moe_status st = MOE_STATUS_OK;
    uint32_t hcrc;
    int s;
    struct stat sb;
    mode_t mode;
    if (!w) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_moed_writer_commit: NULL");
    if (w->done) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "%s: writer already finished", w->path);
    w->done = 1;
    if (w->n_rows == 0)
        return moe_err(err, MOE_STATUS_DATA, "%s: no rows to write", w->path);
    if (!layout(w->n_rows, w->rb, w->enc_size, off, &size))
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "%s: data too large", w->path);
    for (s = SEC_Y; s < N_SEC; s++)
        if (off[s] && (st = copy_side(w, s, off[s], err)) != MOE_STATUS_OK) return st;
    if (ftruncate(w->fd, (off_t)size) != 0) return io_error(err, w->path, "cannot write");
    memset(h, 0, sizeof h);
    memcpy(h, MOED_MAGIC, MOED_MAGIC_LEN);
    st32(h + H_VERSION, MOED_VERSION);
    st32(h + H_FLAGS, w->has_w ? MOED_FLAG_WEIGHTS : 0);
    st64(h + H_ROWS, w->n_rows);
    st64(h + H_COLS, w->n_cols);
    st64(h + H_OUT, w->n_out);
    st64(h + H_CLS, w->n_cls);
    st64(h + H_DROPPED, w->n_dropped);
    st64(h + H_ENC, w->enc_size);
    for (s = 0; s < N_SEC; s++) {
        st64(h + H_OFF + 8 * s, off[s]);
        st32(h + H_CRC + 4 * s, off[s] ? w->crc[s] : 0);
    }
    st64(h + H_SIZE, size);
    hcrc = moe_crc32c(0, h, H_HCRC);
    hcrc = moe_crc32c(hcrc, w->enc_text ? w->enc_text : "", w->enc_size);
    st32(h + H_HCRC, hcrc);
    if (pwrite_all(w->fd, h, sizeof h, 0) != 0) return io_error(err, w->path, "cannot write");
    mode = (mode_t)(0666 & ~moe_file_umask());
    if (stat(w->path, &sb) == 0 && S_ISREG(sb.st_mode)) mode = sb.st_mode & 07777;
    (void)fchmod(w->fd, mode);
    if (fsync(w->fd) != 0) return io_error(err, w->path, "cannot flush to disk");
    if (close(w->fd) != 0) {
        w->fd = -1;
        return io_error(err, w->path, "cannot close");
    }
    w->fd = -1;
    if (rename(w->tmp, w->path) != 0) return io_error(err, w->path, "cannot rename the temporary file over it");
    free(w->tmp);
    w->tmp = NULL;
    moe_file_sync_dir(w->path);
    return MOE_STATUS_OK;
}

moe_status moe_moed_save(const char *path, const moe_dataset *data, const moe_encoder *enc,
                         moe_error *err) {
    moe_moed_writer *w = NULL;
    moe_status st;
    if (!data) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_moed_save: no data");
    st = moe_moed_writer_open(path, data->n_cols, data->n_outputs,
                              data->labels ? data->n_classes : 0, data->weights != NULL, enc, &w,
                              err);
    if (!st) st = moe_moed_writer_append(w, data, err);
    if (!st) st = moe_moed_writer_commit(w, err);
    moe_moed_writer_free(w);
    return st;
}

/* ======================================================================
 * Reading
 * ====================================================================== */

typedef struct moed_header {
    uint64_t n_rows, n_cols, n_out, n_cls, n_dropped, enc_size, size;
    int has_w;
    uint64_t off[N_SEC], rb[N_SEC];
    uint32_t crc[N_SEC];
} moed_header;

struct moe_moed {
    char *name;
    int fd;
    moed_header h;
    moe_encoder *enc;
    void *map;           /* the mapping (size h.size), or NULL */
    unsigned char *copy; /* big-endian hosts: the data converted, or NULL */
    const unsigned char *base;
    moe_dataset ds;
};

static moe_status bad(moe_error *err, const char *name, const char *fmt, const char *what) {
    return moe_err_at(err, MOE_STATUS_FORMAT, name, 0, 0, fmt, name, what);
}

/* Read and check the header and the encoder text of the open file fd. */
static moe_status read_header(int fd, const char *name, moed_header *h, moe_encoder **enc,
                              moe_error *err) {
    unsigned char b[MOED_HEADER];
    struct stat sb;
    uint64_t actual, off[N_SEC], size;
    uint32_t version, flags, crc;
    char *text = NULL;
    moe_status st = MOE_STATUS_OK;
    int r, s;

    *enc = NULL;
    memset(h, 0, sizeof *h);
    if (fstat(fd, &sb) != 0) return io_error(err, name, "cannot read");
    if (!S_ISREG(sb.st_mode))
        return moe_err_at(err, MOE_STATUS_IO, name, 0, 0, "%s: not a regular file", name);
    actual = (uint64_t)sb.st_size;
    r = pread_all(fd, b, actual < MOED_HEADER ? (size_t)actual : MOED_HEADER, 0);
    if (r < 0) return io_error(err, name, "cannot read");
    if (memcmp(b, MOED_MAGIC, actual < MOED_MAGIC_LEN ? (size_t)actual : MOED_MAGIC_LEN) != 0)
        return bad(err, name, "%s: not a .moed data file (bad magic)%s", "");
    if (actual < MOED_HEADER)
        return moe_err_at(err, MOE_STATUS_FORMAT, name, 0, 0,
                          "%s: truncated: %llu bytes, shorter than the %d-byte header", name,
                          (unsigned long long)actual, MOED_HEADER);
    version = ld32(b + H_VERSION);
    if (version == 0) return bad(err, name, "%s: invalid version 0%s", "");
    if (version > MOED_VERSION)
        return moe_err_at(err, MOE_STATUS_VERSION, name, 0, 0,
                          "%s: .moed version %lu is newer than this library reads (%u); convert "
                          "the CSV again or upgrade moe",
                          name, (unsigned long)version, MOED_VERSION);
    h->enc_size = ld64(b + H_ENC);
    h->size = ld64(b + H_SIZE);
    if (h->enc_size > LIM_ENCODER || MOED_HEADER + h->enc_size > actual) {
        if (h->size > actual && h->enc_size <= LIM_ENCODER)
            return moe_err_at(err, MOE_STATUS_FORMAT, name, 0, 0,
                              "%s: truncated: %llu bytes, the header says %llu", name,
                              (unsigned long long)actual, (unsigned long long)h->size);
        return bad(err, name, "%s: header checksum mismatch (the file is corrupted)%s", "");
    }
    text = malloc(h->enc_size + 1);
    if (!text) return moe_err(err, MOE_STATUS_NO_MEMORY, "%s: out of memory", name);
    r = pread_all(fd, text, h->enc_size, MOED_HEADER);
    if (r != 0) {
        if (r > 0) errno = EIO;
        st = io_error(err, name, "cannot read");
        goto done;
    }
    text[h->enc_size] = '\0';
    crc = moe_crc32c(moe_crc32c(0, b, H_HCRC), text, h->enc_size);
    if (crc != ld32(b + H_HCRC)) {
        st = bad(err, name, "%s: header checksum mismatch (the file is corrupted)%s", "");
        goto done;
    }
    flags = ld32(b + H_FLAGS);
    h->n_rows = ld64(b + H_ROWS);
    h->n_cols = ld64(b + H_COLS);
    h->n_out = ld64(b + H_OUT);
    h->n_cls = ld64(b + H_CLS);
    h->n_dropped = ld64(b + H_DROPPED);
    h->has_w = (flags & MOED_FLAG_WEIGHTS) != 0;
    for (s = 0; s < N_SEC; s++) {
        h->off[s] = ld64(b + H_OFF + 8 * s);
        h->crc[s] = ld32(b + H_CRC + 4 * s);
    }
    if ((flags & ~MOED_FLAG_WEIGHTS) || ld32(b + H_RESERVED) != 0) {
        st = bad(err, name, "%s: unknown flags or reserved bits set%s", "");
        goto done;
    }
    if (h->n_rows == 0 || h->n_cols > LIM_COLS || h->n_out > LIM_OUT || h->n_cls > LIM_CLS ||
        h->n_cls == 1 || (h->n_out && h->n_cls)) {
        st = bad(err, name, "%s: bad shape in the header (rows, columns, outputs or classes)%s", "");
        goto done;
    }
    row_bytes(h->n_cols, h->n_out, h->n_cls, h->has_w, h->rb);
    if (!layout(h->n_rows, h->rb, h->enc_size, off, &size) ||
        (uint64_t)(size_t)size != size) {
        st = bad(err, name, "%s: data too large for this machine%s", "");
        goto done;
    }
    for (s = 0; s < N_SEC; s++)
        if (h->off[s] != off[s] || (!off[s] && h->crc[s])) {
            st = moe_err_at(err, MOE_STATUS_FORMAT, name, 0, 0,
                            "%s: section '%s' at byte %llu, expected %llu", name, sec_name[s],
                            (unsigned long long)h->off[s], (unsigned long long)off[s]);
            goto done;
        }
    if (h->size != size) {
        st = moe_err_at(err, MOE_STATUS_FORMAT, name, 0, 0,
                        "%s: the header gives %llu bytes, its shape %llu", name,
                        (unsigned long long)h->size, (unsigned long long)size);
        goto done;
    }
    if (actual < size) {
        st = moe_err_at(err, MOE_STATUS_FORMAT, name, 0, 0,
                        "%s: truncated: %llu bytes, the header says %llu", name,
                        (unsigned long long)actual, (unsigned long long)size);
        goto done;
    }
    if (actual > size) {
        st = moe_err_at(err, MOE_STATUS_FORMAT, name, 0, 0,
                        "%s: %llu bytes after the end of the data", name,
                        (unsigned long long)(actual - size));
        goto done;
    }
    if (h->enc_size) {
        moe_error e2;
        if (strlen(text) != h->enc_size) {
            st = bad(err, name, "%s: NUL byte in the encoder text%s", "");
            goto done;
        }
        if ((st = moe_encoder_from_string(text, enc, &e2)) != MOE_STATUS_OK) {
            st = moe_err_at(err, st == MOE_STATUS_NO_MEMORY ? st : MOE_STATUS_FORMAT, name, 0, 0,
                            "%s: %s", name, e2.message);
            goto done;
        }
        if (!encoder_matches(*enc, h->n_cols, h->n_out, h->n_cls, h->has_w)) {
            st = bad(err, name, "%s: the encoder does not match the data's shape%s", "");
            goto done;
        }
    }
done:
    free(text);
    if (st != MOE_STATUS_OK) {
        moe_encoder_free(*enc);
        *enc = NULL;
    }
    return st;
}

/* Labels in 0..C-1 and finite weights >= 0, rows [0, n) of a block whose
 * first row is row `first` of the file. */
static moe_status check_rows(const char *name, uint64_t C, const int32_t *labels,
                             const double *weights, size_t n, uint64_t first, moe_error *err) {
    size_t i;
    for (i = 0; labels && i < n; i++)
        if (labels[i] < 0 || (uint64_t)labels[i] >= C)
            return moe_err_at(err, MOE_STATUS_FORMAT, name, 0, 0,
                              "%s: row %llu: label %ld is not a class 0..%llu", name,
                              (unsigned long long)(first + i + 1), (long)labels[i],
                              (unsigned long long)(C - 1));
    for (i = 0; weights && i < n; i++)
        if (!(isfinite(weights[i]) && weights[i] >= 0))
            return moe_err_at(err, MOE_STATUS_FORMAT, name, 0, 0,
                              "%s: row %llu: weight %g is not finite and >= 0", name,
                              (unsigned long long)(first + i + 1), weights[i]);
    return MOE_STATUS_OK;
}

/* Little-endian section bytes to host values, in place (big-endian hosts). */
static void swap_section(unsigned char *p, size_t count, size_t per) {
    size_t i;
    for (i = 0; i < count; i++, p += per) {
        if (per == 8) {
            uint64_t v = ld64(p);
            memcpy(p, &v, 8);
        } else {
            uint32_t v = ld32(p);
            memcpy(p, &v, 4);
        }
    }
}

void moe_moed_close(moe_moed *m) {
    if (!m) return;
    if (m->map) munmap(m->map, (size_t)m->h.size);
    if (m->fd >= 0) close(m->fd);
    free(m->copy);
    moe_encoder_free(m->enc);
    free(m->name);
    free(m);
}

static moe_status moed_open(const char *path, int map, moe_moed **out, moe_error *err) {
    moe_moed *m = NULL;
    moe_status st = MOE_STATUS_OK;
    moed_header *h;
    if (!out) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_moed_open: out is NULL");
    *out = NULL;
    if (!path || !*path) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "no file name");
    m = calloc(1, sizeof *m);
    if (!m || !(m->name = malloc(strlen(path) + 1))) {
        free(m);
        return moe_err(err, MOE_STATUS_NO_MEMORY, "%s: out of memory", path);
    }
    strcpy(m->name, path);
    m->fd = open(path, O_RDONLY);
    if (m->fd < 0) {
        st = io_error(err, path, "cannot open");
        goto done;
    }
    if ((st = read_header(m->fd, path, &m->h, &m->enc, err)) != MOE_STATUS_OK) goto done;
    h = &m->h;
    m->ds.n_rows = (size_t)h->n_rows;
    m->ds.n_cols = (size_t)h->n_cols;
    m->ds.ld_x = (size_t)h->n_cols;
    m->ds.n_outputs = (size_t)h->n_out;
    m->ds.ld_y = (size_t)h->n_out;
    m->ds.n_classes = (size_t)h->n_cls;
    if (!map) goto done;
    if (host_le()) {
        m->map = mmap(NULL, (size_t)h->size, PROT_READ, MAP_PRIVATE, m->fd, 0);
        if (m->map == MAP_FAILED) {
            m->map = NULL;
            st = io_error(err, path, "cannot map the file into memory");
            goto done;
        }
        m->base = m->map;
    } else {
        int s, r;
        if (!(m->copy = malloc((size_t)h->size))) {
            st = moe_err(err, MOE_STATUS_NO_MEMORY, "%s: out of memory", path);
            goto done;
        }
        if ((r = pread_all(m->fd, m->copy, (size_t)h->size, 0)) != 0) {
            if (r > 0) errno = EIO;
            st = io_error(err, path, "cannot read");
            goto done;
        }
        for (s = 0; s < N_SEC; s++)
            if (h->off[s])
                swap_section(m->copy + h->off[s], (size_t)(h->n_rows * h->rb[s] / (s == SEC_LABELS ? 4 : 8)),
                             s == SEC_LABELS ? 4 : 8);
        m->base = m->copy;
    }
    m->ds.x = (const double *)(const void *)(m->base + h->off[SEC_X]);
    if (h->off[SEC_Y]) m->ds.y = (const double *)(const void *)(m->base + h->off[SEC_Y]);
    if (h->off[SEC_LABELS])
        m->ds.labels = (const int32_t *)(const void *)(m->base + h->off[SEC_LABELS]);
    if (h->off[SEC_WEIGHTS])
        m->ds.weights = (const double *)(const void *)(m->base + h->off[SEC_WEIGHTS]);
    st = check_rows(path, h->n_cls, m->ds.labels, m->ds.weights, m->ds.n_rows, 0, err);
done:
    if (st != MOE_STATUS_OK) {
        moe_moed_close(m);
        m = NULL;
    }
    *out = m;
    return st;
}

moe_status moe_moed_open(const char *path, moe_moed **out, moe_error *err) {
    return moed_open(path, 1, out, err);
}

moe_status moe_moed_open_header(const char *path, moe_moed **out, moe_error *err) {
    return moed_open(path, 0, out, err);
}

moe_dataset moe_moed_dataset(const moe_moed *m) {
    moe_dataset d;
    if (m) return m->ds;
    memset(&d, 0, sizeof d);
    return d;
}

const moe_encoder *moe_moed_encoder(const moe_moed *m) { return m ? m->enc : NULL; }
size_t moe_moed_n_dropped(const moe_moed *m) { return m ? (size_t)m->h.n_dropped : 0; }
const char *moe_moed_name(const moe_moed *m) { return m ? m->name : NULL; }

moe_status moe_moed_verify(const moe_moed *m, moe_error *err) {
    unsigned char *buf;
    int s;
    moe_status st = MOE_STATUS_OK;
    if (!m) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_moed_verify: NULL");
    if (!(buf = malloc(STAGE_BYTES))) return moe_err(err, MOE_STATUS_NO_MEMORY, "%s: out of memory", m->name);
    for (s = 0; s < N_SEC && st == MOE_STATUS_OK; s++) {
        uint64_t left = m->h.n_rows * m->h.rb[s], at = m->h.off[s];
        uint32_t crc = 0;
        if (!m->h.off[s]) continue;
        while (left) {
            size_t n = left < STAGE_BYTES ? (size_t)left : STAGE_BYTES;
            int r = pread_all(m->fd, buf, n, at);
            if (r != 0) {
                if (r > 0) errno = EIO;
                st = io_error(err, m->name, "cannot read");
                break;
            }
            crc = moe_crc32c(crc, buf, n);
            at += n;
            left -= n;
        }
        if (st == MOE_STATUS_OK && crc != m->h.crc[s])
            st = moe_err_at(err, MOE_STATUS_FORMAT, m->name, 0, 0,
                            "%s: checksum mismatch in section '%s' (the file is corrupted)",
                            m->name, sec_name[s]);
    }
    free(buf);
    return st;
}

int moe_moed_is_moed(const char *path) {
    unsigned char b[MOED_MAGIC_LEN];
    int fd, r;
    if (!path) return 0;
    fd = open(path, O_RDONLY);
    if (fd < 0) return 0;
    r = pread_all(fd, b, sizeof b, 0);
    close(fd);
    return r == 0 && memcmp(b, MOED_MAGIC, MOED_MAGIC_LEN) == 0;
}

/* ---- the row source ---------------------------------------------------------- */

typedef struct moed_src {
    char *name;
    int fd;
    moed_header h;
    uint64_t begin;      /* first row of the shard in the file */
} moed_src;

/* Bytes of a source's chunk the trainer is asked to prefer. */
#define SOURCE_CHUNK_BYTES ((uint64_t)4 << 20)

/* Read rows [row0, row0 + n) of section s into dst. */
static moe_status read_section(const moed_src *c, int s, uint64_t row0, size_t n, void *dst,
                               moe_error *err) {
    uint64_t bytes = c->h.rb[s] * n;
    int r;
    if (!bytes) return MOE_STATUS_OK;
    r = pread_all(c->fd, dst, (size_t)bytes, c->h.off[s] + (c->begin + row0) * c->h.rb[s]);
    if (r < 0) return io_error(err, c->name, "read error");
    if (r > 0)
        return moe_err_at(err, MOE_STATUS_FORMAT, c->name, 0, 0,
                          "%s: truncated while reading (the file shrank after it was opened)",
                          c->name);
    if (!host_le()) swap_section(dst, (size_t)(bytes / (s == SEC_LABELS ? 4 : 8)), s == SEC_LABELS ? 4 : 8);
    return MOE_STATUS_OK;
}

static moe_status source_read(void *ctx, size_t row0, size_t n, const moe_row_buffers *buf,
                              moe_rows *view, moe_error *err) {
    const moed_src *c = ctx;
    moe_status st;
    uint64_t total = c->h.n_rows;
    memset(view, 0, sizeof *view);
    if (!buf || n > buf->max_rows || row0 > total || n > total - row0)
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "%s: read of rows %zu..%zu out of range",
                       c->name, row0, row0 + n);
    if ((st = read_section(c, SEC_X, row0, n, buf->x, err)) != MOE_STATUS_OK) return st;
    if (c->h.n_out && (st = read_section(c, SEC_Y, row0, n, buf->y, err)) != MOE_STATUS_OK) return st;
    if (c->h.n_cls && (st = read_section(c, SEC_LABELS, row0, n, buf->labels, err)) != MOE_STATUS_OK)
        return st;
    if (c->h.has_w && (st = read_section(c, SEC_WEIGHTS, row0, n, buf->weights, err)) != MOE_STATUS_OK)
        return st;
    if ((st = check_rows(c->name, c->h.n_cls, c->h.n_cls ? buf->labels : NULL,
                         c->h.has_w ? buf->weights : NULL, n, c->begin + row0, err)) != MOE_STATUS_OK)
        return st;
    view->x = buf->x;
    view->ld_x = (size_t)c->h.n_cols;
    view->y = c->h.n_out ? buf->y : NULL;
    view->ld_y = (size_t)c->h.n_out;
    view->labels = c->h.n_cls ? buf->labels : NULL;
    view->weights = c->h.has_w ? buf->weights : NULL;
    return MOE_STATUS_OK;
}

void moe_moed_source_close(moe_source *source) {
    moed_src *c;
    if (!source) return;
    c = source->ctx;
    if (c && source->read == source_read) {
        if (c->fd >= 0) close(c->fd);
        free(c->name);
        free(c);
    }
    memset(source, 0, sizeof *source);
}

moe_status moe_moed_source_open(const char *path, size_t row_begin, size_t row_end,
                                moe_source *out, moe_error *err) {
    moed_src *c = NULL;
    moe_encoder *enc = NULL;
    moe_status st = MOE_STATUS_OK;
    uint64_t per, chunk;
    if (!out) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_moed_source_open: out is NULL");
    memset(out, 0, sizeof *out);
    if (!path || !*path) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "no file name");
    c = calloc(1, sizeof *c);
    if (!c || !(c->name = malloc(strlen(path) + 1))) {
        free(c);
        return moe_err(err, MOE_STATUS_NO_MEMORY, "%s: out of memory", path);
    }
    strcpy(c->name, path);
    c->fd = open(path, O_RDONLY);
    if (c->fd < 0) {
        st = io_error(err, path, "cannot open");
        goto done;
    }
    if ((st = read_header(c->fd, path, &c->h, &enc, err)) != MOE_STATUS_OK) goto done;
    if (row_end == MOE_MOED_ALL_ROWS) row_end = (size_t)c->h.n_rows;
    if (row_begin > row_end || row_end > c->h.n_rows) {
        st = moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "%s: rows [%zu, %zu) outside the file's %llu rows",
                     path, row_begin, row_end, (unsigned long long)c->h.n_rows);
        goto done;
    }
    c->begin = row_begin;
    c->h.n_rows = row_end - row_begin;
    out->n_rows = row_end - row_begin;
    out->n_cols = (size_t)c->h.n_cols;
    out->n_outputs = (size_t)c->h.n_out;
    out->n_classes = (size_t)c->h.n_cls;
    out->has_weights = c->h.has_w;
    out->first_row = row_begin;
    per = c->h.rb[SEC_X] + c->h.rb[SEC_Y] + c->h.rb[SEC_LABELS] + c->h.rb[SEC_WEIGHTS];
    chunk = per ? SOURCE_CHUNK_BYTES / per : SOURCE_CHUNK_BYTES;
    chunk = chunk < MOE_BLOCK_ROWS ? MOE_BLOCK_ROWS : chunk / MOE_BLOCK_ROWS * MOE_BLOCK_ROWS;
    out->chunk_rows = (size_t)chunk;
    out->read = source_read;
    out->ctx = c;
done:
    moe_encoder_free(enc);
    if (st != MOE_STATUS_OK) {
        if (c) {
            if (c->fd >= 0) close(c->fd);
            free(c->name);
            free(c);
        }
        memset(out, 0, sizeof *out);
    }
    return st;
}
