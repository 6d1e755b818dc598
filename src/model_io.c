/*
 * model_io.c -- the model file: moe_model_save / _save_buffer / _load /
 * _load_buffer.
 *
 * The layout is specified normatively in docs/format.md: a header (magic,
 * version, file size, counts), typed key/value entries (GGUF-like) holding
 * the scalars and the string metadata, then named arrays aligned to 32
 * bytes, then a CRC-32C of everything before it. Every multi-byte value is
 * little-endian and is written and read byte by byte with explicit shifts,
 * so the file does not depend on the host's byte order or struct layout.
 *
 * Reading never trusts the input: every read is bounds-checked, every count
 * is bounded before anything is allocated (and array sizes are checked
 * against the bytes actually present), and the whole model is validated
 * before it is built. The parser works on views into the caller's buffer;
 * only the final model is allocated. The same parser also checks every
 * buffer moe_model_save_buffer produces, so the library never writes a file
 * it would refuse to read.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* mkstemp, fsync, fdopen, fchmod */
#endif

#include "moe_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

/* Doubles travel as their IEEE 754 binary64 bit pattern. */
_Static_assert(sizeof(double) == 8 && sizeof(uint64_t) == 8, "IEEE 754 binary64 doubles");

/* ---- format constants (docs/format.md) ------------------------------------ */

#define FMT_MAGIC "MOEMODEL"
#define FMT_MAGIC_LEN 8
#define FMT_VERSION 3u /* 2: MLP nodes and top-k gating; 3: log-variance experts */
#define FMT_VERSION_PLAIN 2u /* what models without log-variance experts are written as */
#define FMT_HEADER_SIZE 40
#define FMT_TRAILER_SIZE 4
#define FMT_ALIGN 32

/* value / element types */
enum { T_U64 = 1, T_I64 = 2, T_F64 = 3, T_STR = 4, T_ARR = 5 };

/* limits, all checked before allocating */
#define LIM_KEY 1024u              /* key and array name bytes */
#define LIM_STR (16u << 20)        /* string bytes (as moe_model_meta_set) */
#define LIM_KV (1u << 20)          /* key/value entries */
#define LIM_KV_ARR (1u << 24)      /* elements of a key/value array */
#define LIM_ARRAYS 4096u           /* arrays */
#define LIM_COLS 10000000u         /* n_cols, n_ecols, n_gcols */
#define LIM_LEAVES 65536u          /* experts */
#define LIM_OUT 4096u              /* regression outputs */
#define LIM_CLS 1000000u           /* classes */
#define LIM_HIDDEN 65536u          /* units of a hidden layer */
#define LIM_META_KEY 255u          /* user metadata key bytes (moe.h) */
#define META_PREFIX "meta."
#define META_PREFIX_LEN 5
#define SYM_TOL 1e-12              /* relative: symmetry of a full covariance */

/* the scalar keys a version-1 file must hold */
enum {
    K_TASK, K_VARIANCE, K_TREE, K_N_COLS, K_N_OUT, K_N_CLS,
    K_LOGLIK, K_DF, K_AIC, K_BIC, K_ICL, K_ENTROPY, K_N_ROWS, K_SUM_W,
    K_ITER, K_CONV, K_N_RESTARTS, K_BEST,
    /* version 2 */
    K_E_HIDDEN, K_E_ACT, K_G_HIDDEN, K_G_ACT, K_TOP_K,
    /* version 3 */
    K_LOG_VAR, K_COUNT
};
static const struct {
    const char *key;
    uint32_t type;
} kv_known[K_COUNT] = {
    {"moe.task", T_U64},
    {"moe.variance", T_U64},
    {"moe.tree", T_ARR},
    {"moe.n_cols", T_U64},
    {"moe.n_outputs", T_U64},
    {"moe.n_classes", T_U64},
    {"moe.report.loglik", T_F64},
    {"moe.report.df", T_U64},
    {"moe.report.aic", T_F64},
    {"moe.report.bic", T_F64},
    {"moe.report.icl", T_F64},
    {"moe.report.entropy", T_F64},
    {"moe.report.n_rows", T_U64},
    {"moe.report.sum_weights", T_F64},
    {"moe.report.iterations", T_I64},
    {"moe.report.converged", T_I64},
    {"moe.report.n_restarts", T_I64},
    {"moe.report.best_restart", T_I64},
    {"moe.expert_hidden", T_ARR},
    {"moe.expert_activation", T_U64},
    {"moe.gate_hidden", T_ARR},
    {"moe.gate_activation", T_U64},
    {"moe.top_k", T_U64},
    {"moe.expert_log_var", T_U64},
};

/* The version that introduced key k: files of older versions do not have it
 * (readers skip it there as unknown). */
static uint32_t kv_version(int k) { return k >= K_LOG_VAR ? 3u : k >= K_E_HIDDEN ? 2u : 1u; }

/* the arrays a version-1 file must hold */
enum {
    A_ECOLS, A_GCOLS, A_X_MEAN, A_X_SCALE, A_Y_MEAN, A_Y_SCALE, A_GATE_NCH, A_GATE_COEF,
    A_COEF, A_COV, A_TRACE, A_EV_KIND, A_EV_ITER, A_EV_EXPERT, A_EV_COLUMN, A_EV_VALUE,
    A_E_W, A_G_W, /* version 2 */
    A_LV,         /* version 3 */
    A_COUNT
};
static const struct {
    const char *name;
    uint32_t type;
} arr_known[A_COUNT] = {
    {"ecols", T_U64},          {"gcols", T_U64},           {"x_mean", T_F64},
    {"x_scale", T_F64},        {"y_mean", T_F64},          {"y_scale", T_F64},
    {"gate_nch", T_U64},       {"gate_coef", T_F64},       {"coef", T_F64},
    {"cov", T_F64},            {"trace", T_F64},           {"event_kind", T_U64},
    {"event_iteration", T_I64}, {"event_expert", T_I64},   {"event_column", T_I64},
    {"event_value", T_F64},
    {"expert_hidden_w", T_F64}, {"gate_hidden_w", T_F64},
    {"expert_log_var_coef", T_F64},
};

static uint32_t arr_version(int a) { return a >= A_LV ? 3u : a >= A_E_W ? 2u : 1u; }

static const char *type_name(uint32_t t) {
    switch (t) {
    case T_U64: return "u64";
    case T_I64: return "i64";
    case T_F64: return "f64";
    case T_STR: return "string";
    case T_ARR: return "array";
    }
    return "unknown";
}

/* ---- little-endian loads ------------------------------------------------------ */

static uint32_t ld_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t ld_u64(const unsigned char *p) {
    return (uint64_t)ld_u32(p) | (uint64_t)ld_u32(p + 4) << 32;
}

static int64_t ld_i64(const unsigned char *p) {
    uint64_t u = ld_u64(p);
    int64_t v;
    memcpy(&v, &u, sizeof v); /* two's complement, as int64_t is */
    return v;
}

static double ld_f64(const unsigned char *p) {
    uint64_t u = ld_u64(p);
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

static int mul_ok(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return 0;
    *out = a * b;
    return 1;
}

/* ======================================================================
 * Writing
 * ====================================================================== */

typedef struct wbuf {
    unsigned char *p;
    size_t n, cap;
    int oom;          /* an allocation failed: everything after is dropped */
    uint64_t n_kv;    /* key/value entries written */
    uint64_t n_arr;   /* arrays written */
} wbuf;

static void w_bytes(wbuf *w, const void *src, size_t k) {
    if (w->oom || k == 0) return;
    if (w->cap - w->n < k) {
        size_t cap = w->cap ? w->cap : 4096;
        while (cap - w->n < k) {
            if (cap > SIZE_MAX / 2) {
                w->oom = 1;
                return;
            }
            cap *= 2;
        }
        unsigned char *np = realloc(w->p, cap);
        if (!np) {
            w->oom = 1;
            return;
        }
        w->p = np;
        w->cap = cap;
    }
    memcpy(w->p + w->n, src, k);
    w->n += k;
}

static void st_u32(unsigned char *b, uint32_t v) {
    for (int i = 0; i < 4; i++) b[i] = (unsigned char)(v >> (8 * i));
}

static void st_u64(unsigned char *b, uint64_t v) {
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
}

static void w_u32(wbuf *w, uint32_t v) {
    unsigned char b[4];
    st_u32(b, v);
    w_bytes(w, b, 4);
}

static void w_u64(wbuf *w, uint64_t v) {
    unsigned char b[8];
    st_u64(b, v);
    w_bytes(w, b, 8);
}

static void w_i64(wbuf *w, int64_t v) {
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    w_u64(w, u);
}

static void w_f64(wbuf *w, double d) {
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    w_u64(w, u);
}

static void w_str(wbuf *w, const char *s, size_t len) {
    w_u64(w, len);
    w_bytes(w, s, len);
}

static void kv_begin(wbuf *w, const char *key, uint32_t type) {
    w_str(w, key, strlen(key));
    w_u32(w, type);
    w->n_kv++;
}

static void kv_u64(wbuf *w, const char *key, uint64_t v) {
    kv_begin(w, key, T_U64);
    w_u64(w, v);
}

static void kv_i64(wbuf *w, const char *key, int64_t v) {
    kv_begin(w, key, T_I64);
    w_i64(w, v);
}

static void kv_f64(wbuf *w, const char *key, double v) {
    kv_begin(w, key, T_F64);
    w_f64(w, v);
}

/* An array's header (name, type, count) and the zero padding that aligns its
 * first element to FMT_ALIGN bytes from the start of the file. */
static void arr_begin(wbuf *w, const char *name, uint32_t type, size_t count) {
    static const unsigned char zeros[FMT_ALIGN];
    w_str(w, name, strlen(name));
    w_u32(w, type);
    w_u64(w, count);
    w_bytes(w, zeros, (FMT_ALIGN - w->n % FMT_ALIGN) % FMT_ALIGN);
    w->n_arr++;
}

static void arr_f64(wbuf *w, const char *name, const double *v, size_t n) {
    arr_begin(w, name, T_F64, n);
    for (size_t i = 0; i < n; i++) w_f64(w, v[i]);
}

static void arr_size(wbuf *w, const char *name, const size_t *v, size_t n) {
    arr_begin(w, name, T_U64, n);
    for (size_t i = 0; i < n; i++) w_u64(w, v[i]);
}

static moe_status parse_buffer(const unsigned char *p, size_t size, const char *name,
                               moe_model **out, moe_error *err);

moe_status moe_model_save_buffer(const moe_model *m, void **out, size_t *size, moe_error *err) {
    wbuf w = {0};
    moe_status st = MOE_STATUS_OK;
    if (out) *out = NULL;
    if (size) *size = 0;
    if (!m || !out || !size)
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_model_save_buffer: NULL argument");
    if (m->tree.n_levels == 0 || m->tree.n_levels > MOE_MAX_DEPTH)
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT,
                       "cannot save model: tree has %zu levels", m->tree.n_levels);

    size_t K = m->n_leaves, P = m->n_out, eh = m->eh, gh = m->gh;
    size_t grows = moe_tree_layout(&m->tree, gh, NULL, NULL);
    size_t n_gate_coef = grows * gh, n_coef = K * m->coef_rows * eh;
    size_t n_cov = m->task == MOE_TASK_REGRESSION ? K * P * P : 0;
    size_t n_ev = m->report.n_events;

    /* header; file size and counts are patched in at the end */
    w_bytes(&w, FMT_MAGIC, FMT_MAGIC_LEN);
    w_u32(&w, m->log_var ? FMT_VERSION : FMT_VERSION_PLAIN); /* the oldest that holds it */
    w_u32(&w, 0);
    w_u64(&w, 0);
    w_u64(&w, 0);
    w_u64(&w, 0);

    kv_begin(&w, "moe.writer", T_STR);
    w_str(&w, "libmoe " MOE_VERSION_STRING, strlen("libmoe " MOE_VERSION_STRING));
    kv_u64(&w, "moe.task", (uint64_t)m->task);
    kv_u64(&w, "moe.variance", (uint64_t)m->variance);
    kv_begin(&w, "moe.tree", T_ARR);
    w_u32(&w, T_U64);
    w_u64(&w, m->tree.n_levels);
    for (size_t l = 0; l < m->tree.n_levels; l++) w_u64(&w, m->tree.branching[l]);
    kv_u64(&w, "moe.n_cols", m->n_cols);
    kv_u64(&w, "moe.n_outputs", m->n_out);
    kv_u64(&w, "moe.n_classes", m->n_cls);
    const moe_fit_report *r = &m->report;
    kv_f64(&w, "moe.report.loglik", r->loglik);
    kv_u64(&w, "moe.report.df", r->df);
    kv_f64(&w, "moe.report.aic", r->aic);
    kv_f64(&w, "moe.report.bic", r->bic);
    kv_f64(&w, "moe.report.icl", r->icl);
    kv_f64(&w, "moe.report.entropy", r->entropy);
    kv_u64(&w, "moe.report.n_rows", r->n_rows);
    kv_f64(&w, "moe.report.sum_weights", r->sum_weights);
    kv_i64(&w, "moe.report.iterations", r->iterations);
    kv_i64(&w, "moe.report.converged", r->converged);
    kv_i64(&w, "moe.report.n_restarts", r->n_restarts);
    kv_i64(&w, "moe.report.best_restart", r->best_restart);
    const moe_net *nets[2] = {&m->enet, &m->gnet};
    static const char *const hid_keys[2] = {"moe.expert_hidden", "moe.gate_hidden"};
    static const char *const act_keys[2] = {"moe.expert_activation", "moe.gate_activation"};
    for (int q = 0; q < 2; q++) {
        kv_begin(&w, hid_keys[q], T_ARR);
        w_u32(&w, T_U64);
        w_u64(&w, nets[q]->n_hidden);
        for (size_t l = 0; l < nets[q]->n_hidden; l++) w_u64(&w, nets[q]->hidden[l]);
        kv_u64(&w, act_keys[q], (uint64_t)nets[q]->act);
    }
    kv_u64(&w, "moe.top_k", m->top_k);
    if (m->log_var) kv_u64(&w, "moe.expert_log_var", 1);
    for (size_t i = 0; i < m->n_meta; i++) {
        size_t kl = strlen(m->meta[i].key), vl = strlen(m->meta[i].value);
        w_u64(&w, META_PREFIX_LEN + kl);
        w_bytes(&w, META_PREFIX, META_PREFIX_LEN);
        w_bytes(&w, m->meta[i].key, kl);
        w_u32(&w, T_STR);
        w_str(&w, m->meta[i].value, vl);
        w.n_kv++;
    }

    arr_size(&w, "ecols", m->ecols, m->n_ecols);
    arr_size(&w, "gcols", m->gcols, m->n_gcols);
    arr_f64(&w, "x_mean", m->x_mean, m->n_cols);
    arr_f64(&w, "x_scale", m->x_scale, m->n_cols);
    arr_f64(&w, "y_mean", m->y_mean, P);
    arr_f64(&w, "y_scale", m->y_scale, P);
    arr_size(&w, "gate_nch", m->gate_nch, m->n_gates);
    arr_f64(&w, "gate_coef", m->gate_coef, n_gate_coef);
    arr_f64(&w, "coef", m->coef, n_coef);
    arr_f64(&w, "expert_hidden_w", m->e_w, K * m->enet.n_w);
    arr_f64(&w, "gate_hidden_w", m->g_w, m->n_gates * m->gnet.n_w);
    if (m->log_var) arr_f64(&w, "expert_log_var_coef", m->lv_coef, K * P * eh);
    arr_f64(&w, "cov", m->cov, n_cov);
    arr_f64(&w, "trace", m->trace, m->n_trace);
    arr_begin(&w, "event_kind", T_U64, n_ev);
    for (size_t i = 0; i < n_ev; i++) w_u64(&w, (uint64_t)m->events[i].kind);
    arr_begin(&w, "event_iteration", T_I64, n_ev);
    for (size_t i = 0; i < n_ev; i++) w_i64(&w, m->events[i].iteration);
    arr_begin(&w, "event_expert", T_I64, n_ev);
    for (size_t i = 0; i < n_ev; i++) w_i64(&w, m->events[i].expert);
    arr_begin(&w, "event_column", T_I64, n_ev);
    for (size_t i = 0; i < n_ev; i++) w_i64(&w, m->events[i].column);
    arr_begin(&w, "event_value", T_F64, n_ev);
    for (size_t i = 0; i < n_ev; i++) w_f64(&w, m->events[i].value);

    if (w.oom) {
        st = moe_err(err, MOE_STATUS_NO_MEMORY, "cannot save model: out of memory");
        goto done;
    }
    st_u64(w.p + 16, (uint64_t)w.n + FMT_TRAILER_SIZE);
    st_u64(w.p + 24, w.n_kv);
    st_u64(w.p + 32, w.n_arr);
    w_u32(&w, moe_crc32c(0, w.p, w.n));
    if (w.oom) {
        st = moe_err(err, MOE_STATUS_NO_MEMORY, "cannot save model: out of memory");
        goto done;
    }

    /* Never write what moe_model_load would refuse: check the bytes with
     * the reader itself (this also rejects NaN parameters, bad indices, a
     * covariance that is not positive definite, ...). */
    moe_error why;
    moe_status chk = parse_buffer(w.p, w.n, "model", NULL, &why);
    if (chk != MOE_STATUS_OK) {
        st = moe_err(err, chk == MOE_STATUS_NO_MEMORY ? chk : MOE_STATUS_INVALID_ARGUMENT,
                     "cannot save %s model: %s",
                     chk == MOE_STATUS_NO_MEMORY ? "the" : "an invalid", why.message);
        goto done;
    }
    *out = w.p;
    *size = w.n;
    w.p = NULL;
done:
    free(w.p);
    return st;
}

/* ---- atomic file writing -------------------------------------------------- */

/* strerror without its static buffer (either strerror_r flavour). */
static void errno_text(int e, char *buf, size_t cap) {
#if defined(_GNU_SOURCE)
    const char *s = strerror_r(e, buf, cap);
    if (s != buf) snprintf(buf, cap, "%s", s);
#else
    if (strerror_r(e, buf, cap) != 0) snprintf(buf, cap, "error %d", e);
#endif
}

static moe_status io_err(moe_error *err, const char *path, const char *what, int errnum) {
    char buf[256];
    errno_text(errnum, buf, sizeof buf);
    return moe_err_at(err, MOE_STATUS_IO, path, 0, 0, "cannot save model to '%s': %s: %s", path,
                      what, buf);
}

moe_status moe_model_save(const moe_model *m, const char *path, moe_error *err) {
    void *buf = NULL;
    size_t n = 0;
    char *tmp = NULL;
    int fd = -1, have_tmp = 0;
    FILE *f = NULL;
    moe_status st;

    if (!m || !path || !*path)
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_model_save: NULL model or path");
    st = moe_model_save_buffer(m, &buf, &n, err);
    if (st != MOE_STATUS_OK) goto done;

    size_t plen = strlen(path);
    tmp = malloc(plen + sizeof ".tmpXXXXXX");
    if (!tmp) {
        st = moe_err(err, MOE_STATUS_NO_MEMORY, "cannot save model to '%s': out of memory", path);
        goto done;
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmpXXXXXX", sizeof ".tmpXXXXXX");
    fd = mkstemp(tmp);
    if (fd < 0) {
        st = io_err(err, path, "cannot create a temporary file in its directory", errno);
        goto done;
    }
    have_tmp = 1;

    /* mkstemp makes the file 0600: give it the mode of the file it
     * replaces, or what a plain fopen would have given it. */
    struct stat sb;
    mode_t mode = (mode_t)(0666 & ~moe_file_umask());
    if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) mode = sb.st_mode & 07777;
    (void)fchmod(fd, mode);

    f = fdopen(fd, "wb");
    if (!f) {
        st = io_err(err, path, "cannot open the temporary file", errno);
        goto done;
    }
    fd = -1; /* now owned by f */
    if (fwrite(buf, 1, n, f) != n || fflush(f) != 0) {
        st = io_err(err, path, "cannot write", errno);
        goto done;
    }
    if (fsync(fileno(f)) != 0) {
        st = io_err(err, path, "cannot flush to disk", errno);
        goto done;
    }
    int rc = fclose(f);
    f = NULL;
    if (rc != 0) {
        st = io_err(err, path, "cannot close the temporary file", errno);
        goto done;
    }
    if (rename(tmp, path) != 0) {
        st = io_err(err, path, "cannot rename the temporary file over it", errno);
        goto done;
    }
    have_tmp = 0;
    moe_file_sync_dir(path);
    st = MOE_STATUS_OK;
done:
    if (f) fclose(f);
    if (fd >= 0) close(fd);
    if (have_tmp) unlink(tmp);
    free(tmp);
    free(buf);
    return st;
}

/* ======================================================================
 * Reading
 * ====================================================================== */

typedef struct rd {
    const unsigned char *p;
    size_t size;      /* bytes present */
    size_t end;       /* end of the region being parsed (before the checksum) */
    size_t pos;
    int truncated;    /* the header announces more bytes than are present */
    uint64_t file_size;
    const char *name;
    moe_error *err;
} rd;

typedef struct view { /* an array inside the buffer */
    int seen;
    uint32_t type;
    size_t count;
    size_t hdr;       /* offset of its name */
    size_t off;       /* offset of its first element */
} view;

typedef struct meta_view {
    const unsigned char *key; /* without the "meta." prefix */
    size_t key_len;
    const unsigned char *val;
    size_t val_len;
    size_t at;        /* offset of the entry */
} meta_view;

typedef struct parsed {
    int seen[K_COUNT];
    uint64_t raw[K_COUNT]; /* scalar values, as their 64 bits */
    size_t at[K_COUNT];    /* offsets of the values */
    moe_tree_shape tree;
    size_t kv_end;
    /* shape, once checked */
    size_t K, G, P, C, n_cols, n_ecols, n_gcols, ed, gd, coef_rows, grows;
    uint32_t version;
    moe_mlp arch[2];       /* version 2: the experts' and the gates' networks */
    int log_var;           /* version 3: log-variance experts */
    moe_net net[2];
    view arr[A_COUNT];
    meta_view *meta;
    size_t n_meta, cap_meta;
} parsed;

static moe_status fail(const rd *r, moe_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static moe_status fail(const rd *r, moe_status st, const char *fmt, ...) {
    char msg[640];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return moe_err_at(r->err, st, r->name, 0, 0, "%s: %s", r->name, msg);
}

static moe_status short_read(const rd *r, const char *what) {
    if (r->truncated)
        return fail(r, MOE_STATUS_FORMAT, "truncated at byte %zu (reading %s)", r->size, what);
    return fail(r, MOE_STATUS_FORMAT, "byte %zu: %s runs past the end of the data at byte %zu",
                r->pos, what, r->end);
}

static moe_status need(const rd *r, size_t k, const char *what) {
    return r->end - r->pos < k ? short_read(r, what) : MOE_STATUS_OK;
}

static moe_status get_u32(rd *r, uint32_t *v, const char *what) {
    moe_status st = need(r, 4, what);
    if (st != MOE_STATUS_OK) return st;
    *v = ld_u32(r->p + r->pos);
    r->pos += 4;
    return MOE_STATUS_OK;
}

static moe_status get_u64(rd *r, uint64_t *v, const char *what) {
    moe_status st = need(r, 8, what);
    if (st != MOE_STATUS_OK) return st;
    *v = ld_u64(r->p + r->pos);
    r->pos += 8;
    return MOE_STATUS_OK;
}

static moe_status skip(rd *r, uint64_t k, const char *what) {
    if (k > r->end - r->pos) return short_read(r, what);
    r->pos += (size_t)k;
    return MOE_STATUS_OK;
}

/* A key or name for messages: printable ASCII, at most 60 bytes. */
static void printable(char *out, size_t cap, const unsigned char *s, size_t len) {
    size_t j = 0;
    for (size_t i = 0; i < len && j + 4 < cap; i++) {
        if (i == 60) {
            memcpy(out + j, "...", 3);
            j += 3;
            break;
        }
        out[j++] = s[i] >= 0x20 && s[i] < 0x7f ? (char)s[i] : '?';
    }
    out[j] = '\0';
}

/* A string: u64 length (at most `limit`) then its bytes, none of them NUL. */
static moe_status get_str(rd *r, uint64_t limit, const unsigned char **s, size_t *len,
                          const char *what) {
    uint64_t n;
    size_t at = r->pos;
    moe_status st = get_u64(r, &n, what);
    if (st != MOE_STATUS_OK) return st;
    if (n > limit)
        return fail(r, MOE_STATUS_FORMAT, "byte %zu: %s: length %" PRIu64 " exceeds the limit %" PRIu64,
                    at, what, n, limit);
    st = need(r, (size_t)n, what);
    if (st != MOE_STATUS_OK) return st;
    *s = r->p + r->pos;
    *len = (size_t)n;
    if (memchr(*s, '\0', *len))
        return fail(r, MOE_STATUS_FORMAT, "byte %zu: %s contains a NUL byte", r->pos, what);
    r->pos += (size_t)n;
    return MOE_STATUS_OK;
}

/* Skip a value of a key we do not know (written by a newer library). */
static moe_status skip_value(rd *r, uint32_t type, int nested, const char *what) {
    size_t at = r->pos;
    moe_status st;
    switch (type) {
    case T_U64:
    case T_I64:
    case T_F64: return skip(r, 8, what);
    case T_STR: {
        uint64_t n;
        st = get_u64(r, &n, what);
        if (st != MOE_STATUS_OK) return st;
        if (n > LIM_STR)
            return fail(r, MOE_STATUS_FORMAT,
                        "byte %zu: %s: string of %" PRIu64 " bytes (limit %u)", at, what, n,
                        LIM_STR);
        return skip(r, n, what);
    }
    case T_ARR: {
        uint32_t et;
        uint64_t cnt;
        if (nested)
            return fail(r, MOE_STATUS_FORMAT, "byte %zu: %s: arrays of arrays are not allowed",
                        at, what);
        if ((st = get_u32(r, &et, what)) != MOE_STATUS_OK) return st;
        if ((st = get_u64(r, &cnt, what)) != MOE_STATUS_OK) return st;
        if (et < T_U64 || et > T_STR)
            return fail(r, MOE_STATUS_FORMAT, "byte %zu: %s: bad array element type %" PRIu32,
                        at, what, et);
        if (cnt > LIM_KV_ARR)
            return fail(r, MOE_STATUS_FORMAT,
                        "byte %zu: %s: array of %" PRIu64 " elements (limit %u)", at, what, cnt,
                        LIM_KV_ARR);
        for (uint64_t i = 0; i < cnt; i++)
            if ((st = skip_value(r, et, 1, what)) != MOE_STATUS_OK) return st;
        return MOE_STATUS_OK;
    }
    }
    return fail(r, MOE_STATUS_FORMAT, "byte %zu: %s: unknown value type %" PRIu32, at - 4, what,
                type);
}

static moe_status add_meta(rd *r, parsed *ps, const meta_view *mv) {
    if (ps->n_meta == ps->cap_meta) {
        size_t cap = ps->cap_meta ? 2 * ps->cap_meta : 16;
        meta_view *nm = realloc(ps->meta, cap * sizeof *nm);
        if (!nm) return fail(r, MOE_STATUS_NO_MEMORY, "out of memory reading metadata");
        ps->meta = nm;
        ps->cap_meta = cap;
    }
    ps->meta[ps->n_meta++] = *mv;
    return MOE_STATUS_OK;
}

/* moe.expert_hidden / moe.gate_hidden: an array of 0 to MOE_MAX_HIDDEN u64,
 * the units of each hidden layer (1..LIM_HIDDEN). */
static moe_status get_hidden(rd *r, parsed *ps, int q, const char *what) {
    uint32_t et;
    uint64_t n;
    moe_status st;
    size_t at = r->pos;
    if ((st = get_u32(r, &et, what)) != MOE_STATUS_OK) return st;
    if ((st = get_u64(r, &n, what)) != MOE_STATUS_OK) return st;
    if (et != T_U64 || n > MOE_MAX_HIDDEN)
        return fail(r, MOE_STATUS_FORMAT,
                    "byte %zu: %s must be an array of 0 to %d u64 (found %" PRIu64 " of type %s)",
                    at, what, MOE_MAX_HIDDEN, n, type_name(et));
    ps->arch[q].n_hidden = (size_t)n;
    for (size_t l = 0; l < (size_t)n; l++) {
        uint64_t h;
        if ((st = get_u64(r, &h, what)) != MOE_STATUS_OK) return st;
        if (h == 0 || h > LIM_HIDDEN)
            return fail(r, MOE_STATUS_FORMAT,
                        "byte %zu: %s: hidden layer %zu has %" PRIu64 " units (1..%u)", r->pos - 8,
                        what, l + 1, h, LIM_HIDDEN);
        ps->arch[q].hidden[l] = (size_t)h;
    }
    return MOE_STATUS_OK;
}

/* One key/value entry. */
static moe_status parse_kv(rd *r, parsed *ps, uint64_t i) {
    char what[160], kd[80];
    const unsigned char *key;
    size_t key_len, at = r->pos;
    uint32_t type;
    moe_status st;

    snprintf(what, sizeof what, "key of metadata entry %" PRIu64, i);
    if ((st = get_str(r, LIM_KEY, &key, &key_len, what)) != MOE_STATUS_OK) return st;
    if (key_len == 0) return fail(r, MOE_STATUS_FORMAT, "byte %zu: %s is empty", at, what);
    printable(kd, sizeof kd, key, key_len);
    snprintf(what, sizeof what, "metadata entry %" PRIu64 " ('%s')", i, kd);
    size_t type_at = r->pos;
    if ((st = get_u32(r, &type, what)) != MOE_STATUS_OK) return st;

    /* user metadata: "meta.<key>" = string */
    if (key_len >= META_PREFIX_LEN && memcmp(key, META_PREFIX, META_PREFIX_LEN) == 0) {
        meta_view mv;
        mv.key = key + META_PREFIX_LEN;
        mv.key_len = key_len - META_PREFIX_LEN;
        mv.at = at;
        if (mv.key_len == 0 || mv.key_len > LIM_META_KEY)
            return fail(r, MOE_STATUS_FORMAT,
                        "byte %zu: %s: user metadata keys have 1 to %u bytes", at, what,
                        LIM_META_KEY);
        if (type != T_STR)
            return fail(r, MOE_STATUS_FORMAT, "byte %zu: %s has type %s, expected string",
                        type_at, what, type_name(type));
        if ((st = get_str(r, LIM_STR, &mv.val, &mv.val_len, what)) != MOE_STATUS_OK) return st;
        return add_meta(r, ps, &mv);
    }

    int k;
    for (k = 0; k < K_COUNT; k++)
        if (strlen(kv_known[k].key) == key_len && memcmp(kv_known[k].key, key, key_len) == 0)
            break;
    if (k == K_COUNT || ps->version < kv_version(k))
        return skip_value(r, type, 0, what); /* not ours: ignore */

    if (ps->seen[k])
        return fail(r, MOE_STATUS_FORMAT, "byte %zu: duplicate key '%s'", at, kv_known[k].key);
    if (type != kv_known[k].type)
        return fail(r, MOE_STATUS_FORMAT, "byte %zu: %s has type %s, expected %s", type_at,
                    what, type_name(type), type_name(kv_known[k].type));
    ps->seen[k] = 1;
    ps->at[k] = r->pos;
    if (k == K_E_HIDDEN || k == K_G_HIDDEN) return get_hidden(r, ps, k == K_G_HIDDEN, what);
    if (k != K_TREE) return get_u64(r, &ps->raw[k], what);

    /* moe.tree: array of u64, one branching factor per level */
    uint32_t et;
    uint64_t n;
    if ((st = get_u32(r, &et, what)) != MOE_STATUS_OK) return st;
    if ((st = get_u64(r, &n, what)) != MOE_STATUS_OK) return st;
    if (et != T_U64 || n == 0 || n > MOE_MAX_DEPTH)
        return fail(r, MOE_STATUS_FORMAT,
                    "byte %zu: moe.tree must be an array of 1 to %d u64 (found %" PRIu64
                    " of type %s)",
                    ps->at[k], MOE_MAX_DEPTH, n, type_name(et));
    ps->tree.n_levels = (size_t)n;
    for (size_t l = 0; l < ps->tree.n_levels; l++) {
        uint64_t b;
        if ((st = get_u64(r, &b, what)) != MOE_STATUS_OK) return st;
        if (b == 0 || b > MOE_MAX_BRANCHING || (b == 1 && n > 1))
            return fail(r, MOE_STATUS_FORMAT,
                        "byte %zu: moe.tree: branching factor %" PRIu64
                        " at level %zu is out of range (2..%d, or the single tree 1)",
                        r->pos - 8, b, l + 1, MOE_MAX_BRANCHING);
        ps->tree.branching[l] = (size_t)b;
    }
    return MOE_STATUS_OK;
}

static int fits_int(int64_t v) { return v >= INT_MIN && v <= INT_MAX; }

/* The scalars are all there and make a shape this library can hold. */
static moe_status check_shape(rd *r, parsed *ps) {
    for (int k = 0; k < K_COUNT; k++)
        if (!ps->seen[k] && ps->version >= kv_version(k))
            return fail(r, MOE_STATUS_FORMAT, "byte %zu: required key '%s' is missing",
                        ps->kv_end, kv_known[k].key);
    uint64_t task = ps->raw[K_TASK], var = ps->raw[K_VARIANCE];
    uint64_t n_cols = ps->raw[K_N_COLS], n_out = ps->raw[K_N_OUT], n_cls = ps->raw[K_N_CLS];
    if (task > MOE_TASK_CLASSIFICATION)
        return fail(r, MOE_STATUS_FORMAT,
                    "byte %zu: moe.task = %" PRIu64 " (0 regression, 1 classification)",
                    ps->at[K_TASK], task);
    if (var > MOE_VARIANCE_FULL)
        return fail(r, MOE_STATUS_FORMAT, "byte %zu: moe.variance = %" PRIu64 " (0 iso, 1 diag, 2 full)",
                    ps->at[K_VARIANCE], var);
    size_t K = 1;
    for (size_t l = 0; l < ps->tree.n_levels; l++) {
        K *= ps->tree.branching[l];
        if (K > LIM_LEAVES)
            return fail(r, MOE_STATUS_FORMAT, "byte %zu: moe.tree: more than %u experts",
                        ps->at[K_TREE], LIM_LEAVES);
    }
    if (n_cols > LIM_COLS)
        return fail(r, MOE_STATUS_FORMAT, "byte %zu: moe.n_cols = %" PRIu64 " (limit %u)",
                    ps->at[K_N_COLS], n_cols, LIM_COLS);
    if (task == MOE_TASK_REGRESSION) {
        if (n_out == 0 || n_out > LIM_OUT)
            return fail(r, MOE_STATUS_FORMAT,
                        "byte %zu: moe.n_outputs = %" PRIu64 " (a regression has 1..%u)",
                        ps->at[K_N_OUT], n_out, LIM_OUT);
        if (n_cls != 0)
            return fail(r, MOE_STATUS_FORMAT,
                        "byte %zu: moe.n_classes = %" PRIu64 " in a regression model",
                        ps->at[K_N_CLS], n_cls);
    } else {
        if (n_cls == 0 || n_cls > LIM_CLS)
            return fail(r, MOE_STATUS_FORMAT,
                        "byte %zu: moe.n_classes = %" PRIu64 " (a classifier has 1..%u)",
                        ps->at[K_N_CLS], n_cls, LIM_CLS);
        if (n_out != 0)
            return fail(r, MOE_STATUS_FORMAT,
                        "byte %zu: moe.n_outputs = %" PRIu64 " in a classification model",
                        ps->at[K_N_OUT], n_out);
    }
    static const int ints[] = {K_ITER, K_CONV, K_N_RESTARTS, K_BEST};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        int64_t v;
        memcpy(&v, &ps->raw[ints[i]], sizeof v);
        if (!fits_int(v) || (ints[i] == K_CONV && v != 0 && v != 1))
            return fail(r, MOE_STATUS_FORMAT, "byte %zu: %s = %" PRId64 " is out of range",
                        ps->at[ints[i]], kv_known[ints[i]].key, v);
    }
#if SIZE_MAX < UINT64_MAX
    if (ps->raw[K_DF] > SIZE_MAX || ps->raw[K_N_ROWS] > SIZE_MAX)
        return fail(r, MOE_STATUS_FORMAT, "byte %zu: report counts too large for this platform",
                    ps->at[K_DF]);
#endif
    if (ps->version >= 2) {
        for (int q = 0; q < 2; q++) {
            int k = q ? K_G_ACT : K_E_ACT;
            if (ps->raw[k] > MOE_ACTIVATION_RELU)
                return fail(r, MOE_STATUS_FORMAT, "byte %zu: %s = %" PRIu64 " (0 tanh, 1 relu)",
                            ps->at[k], kv_known[k].key, ps->raw[k]);
            ps->arch[q].activation = (moe_activation)ps->raw[k];
        }
        if (ps->raw[K_TOP_K] > MOE_MAX_BRANCHING)
            return fail(r, MOE_STATUS_FORMAT, "byte %zu: moe.top_k = %" PRIu64 " (limit %d)",
                        ps->at[K_TOP_K], ps->raw[K_TOP_K], MOE_MAX_BRANCHING);
    }
    if (ps->version >= 3) {
        uint64_t lv = ps->raw[K_LOG_VAR];
        if (lv > 1)
            return fail(r, MOE_STATUS_FORMAT, "byte %zu: moe.expert_log_var = %" PRIu64 " (0 or 1)",
                        ps->at[K_LOG_VAR], lv);
        if (lv && (task != MOE_TASK_REGRESSION || (var != MOE_VARIANCE_DIAG && n_out > 1)))
            return fail(r, MOE_STATUS_FORMAT,
                        "byte %zu: moe.expert_log_var = 1 needs a regression with diagonal "
                        "variances (moe.variance 1, or one output)",
                        ps->at[K_LOG_VAR]);
        ps->log_var = (int)lv;
    }
    ps->K = K;
    ps->G = moe_tree_shape_n_gates(&ps->tree);
    ps->n_cols = (size_t)n_cols;
    ps->P = (size_t)n_out;
    ps->C = (size_t)n_cls;
    ps->coef_rows = task == MOE_TASK_REGRESSION ? ps->P : ps->C;
    return MOE_STATUS_OK;
}

/* Gate holding gate-coefficient row `row` (breadth-first layout, tree.c). */
static size_t gate_of_row(const moe_tree_shape *t, size_t row) {
    size_t g = 0, width = 1;
    for (size_t l = 0; l < t->n_levels; l++) {
        size_t level_rows = width * t->branching[l];
        if (row < level_rows) return g + row / t->branching[l];
        row -= level_rows;
        g += width;
        width *= t->branching[l];
    }
    return g;
}

/* What element `idx` of array `a` is, for messages. */
static void elem_what(const parsed *ps, int a, const char *name, size_t idx, char *buf,
                      size_t cap) {
    size_t per;
    if (a == A_COV && ps->P > 0) {
        snprintf(buf, cap, "expert %zu covariance", idx / (ps->P * ps->P));
    } else if (a == A_COEF && ps->arr[A_ECOLS].seen && ps->coef_rows > 0 &&
               mul_ok(ps->coef_rows, 1 + ps->arr[A_ECOLS].count, &per)) {
        snprintf(buf, cap, "expert %zu coefficients", idx / per);
    } else if (a == A_GATE_COEF && ps->arr[A_GCOLS].seen) {
        snprintf(buf, cap, "gate %zu coefficients",
                 gate_of_row(&ps->tree, idx / (1 + ps->arr[A_GCOLS].count)));
    } else if (a >= A_EV_KIND && a <= A_EV_VALUE) {
        snprintf(buf, cap, "event %zu (array '%s')", idx, name);
    } else {
        snprintf(buf, cap, "array '%s' element %zu", name, idx);
    }
}

/* One named array: name, type, count, zero padding, the elements. */
static moe_status parse_array(rd *r, parsed *ps, uint64_t i) {
    char what[160], nd[80];
    const unsigned char *name;
    size_t name_len, hdr = r->pos;
    uint32_t type;
    uint64_t count;
    moe_status st;

    snprintf(what, sizeof what, "name of array %" PRIu64, i);
    if ((st = get_str(r, LIM_KEY, &name, &name_len, what)) != MOE_STATUS_OK) return st;
    if (name_len == 0) return fail(r, MOE_STATUS_FORMAT, "byte %zu: %s is empty", hdr, what);
    printable(nd, sizeof nd, name, name_len);
    snprintf(what, sizeof what, "array '%s' header", nd);
    size_t type_at = r->pos;
    if ((st = get_u32(r, &type, what)) != MOE_STATUS_OK) return st;
    if ((st = get_u64(r, &count, what)) != MOE_STATUS_OK) return st;
    if (type < T_U64 || type > T_F64)
        return fail(r, MOE_STATUS_FORMAT, "byte %zu: array '%s' has element type %" PRIu32
                    " (%s), expected u64, i64 or f64", type_at, nd, type, type_name(type));
    size_t pad = (FMT_ALIGN - r->pos % FMT_ALIGN) % FMT_ALIGN;
    snprintf(what, sizeof what, "array '%s' padding", nd);
    if ((st = need(r, pad, what)) != MOE_STATUS_OK) return st;
    for (size_t j = 0; j < pad; j++)
        if (r->p[r->pos + j] != 0)
            return fail(r, MOE_STATUS_FORMAT, "byte %zu: array '%s': padding byte is not zero",
                        r->pos + j, nd);
    r->pos += pad;

    int a;
    for (a = 0; a < A_COUNT; a++)
        if (strlen(arr_known[a].name) == name_len &&
            memcmp(arr_known[a].name, name, name_len) == 0)
            break;
    if (a < A_COUNT && ps->version < arr_version(a)) a = A_COUNT; /* not in this version */
    size_t avail = (r->end - r->pos) / 8;
    if (count > avail) {
        elem_what(ps, a, nd, avail, what, sizeof what);
        r->pos += avail * 8;
        if (r->truncated) return short_read(r, what);
        return fail(r, MOE_STATUS_FORMAT,
                    "byte %zu: array '%s' has %" PRIu64 " elements, more than the file holds",
                    hdr, nd, count);
    }
    if (a < A_COUNT) {
        if (ps->arr[a].seen)
            return fail(r, MOE_STATUS_FORMAT, "byte %zu: duplicate array '%s'", hdr, nd);
        if (type != arr_known[a].type)
            return fail(r, MOE_STATUS_FORMAT, "byte %zu: array '%s' has type %s, expected %s",
                        type_at, nd, type_name(type), type_name(arr_known[a].type));
        ps->arr[a].seen = 1;
        ps->arr[a].type = type;
        ps->arr[a].count = (size_t)count;
        ps->arr[a].hdr = hdr;
        ps->arr[a].off = r->pos;
    }
    r->pos += (size_t)count * 8;
    return MOE_STATUS_OK;
}

static const unsigned char *elem(const rd *r, const view *v, size_t i) {
    return r->p + v->off + 8 * i;
}

static size_t elem_at(const view *v, size_t i) { return v->off + 8 * i; }

static moe_status check_count(rd *r, const parsed *ps, int a, size_t want, const char *why) {
    const view *v = &ps->arr[a];
    if (!v->seen)
        return fail(r, MOE_STATUS_FORMAT, "byte %zu: required array '%s' is missing", r->end,
                    arr_known[a].name);
    if (v->count != want)
        return fail(r, MOE_STATUS_FORMAT,
                    "byte %zu: array '%s' has %zu elements, expected %zu (%s)", v->hdr,
                    arr_known[a].name, v->count, want, why);
    return MOE_STATUS_OK;
}

static moe_status check_finite(rd *r, const parsed *ps, int a, int positive) {
    const view *v = &ps->arr[a];
    for (size_t i = 0; i < v->count; i++) {
        double d = ld_f64(elem(r, v, i));
        if (!isfinite(d) || (positive && !(d > 0.0)))
            return fail(r, MOE_STATUS_FORMAT, "byte %zu: %s[%zu] = %g, expected a finite%s value",
                        elem_at(v, i), arr_known[a].name, i, d, positive ? " positive" : "");
    }
    return MOE_STATUS_OK;
}

static moe_status check_cols(rd *r, const parsed *ps, int a) {
    const view *v = &ps->arr[a];
    for (size_t i = 0; i < v->count; i++) {
        uint64_t c = ld_u64(elem(r, v, i));
        if (c >= ps->n_cols)
            return fail(r, MOE_STATUS_FORMAT,
                        "byte %zu: %s[%zu] = %" PRIu64 " is not a column (n_cols = %zu)",
                        elem_at(v, i), arr_known[a].name, i, c, ps->n_cols);
    }
    return MOE_STATUS_OK;
}

/* Covariance k: finite, of the structure its variance kind implies, and
 * positive definite (Cholesky in `work`, P*P doubles). */
static moe_status check_cov(rd *r, const parsed *ps, size_t k, double *work) {
    const view *v = &ps->arr[A_COV];
    size_t P = ps->P, base = k * P * P;
    uint64_t var = ps->raw[K_VARIANCE];
    for (size_t i = 0; i < P * P; i++) work[i] = ld_f64(elem(r, v, base + i));
    for (size_t i = 0; i < P; i++) {
        for (size_t j = 0; j < P; j++) {
            double c = work[i * P + j], t = work[j * P + i];
            size_t at = elem_at(v, base + i * P + j);
            if (!isfinite(c))
                return fail(r, MOE_STATUS_FORMAT,
                            "byte %zu: expert %zu covariance (%zu,%zu) = %g is not finite", at,
                            k, i, j, c);
            if (i != j && var != MOE_VARIANCE_FULL && c != 0.0)
                return fail(r, MOE_STATUS_FORMAT,
                            "byte %zu: expert %zu covariance (%zu,%zu) = %g: an %s covariance "
                            "is diagonal",
                            at, k, i, j, c, var == MOE_VARIANCE_ISO ? "isotropic" : "diagonal");
            if (fabs(c - t) > SYM_TOL * (fabs(c) + fabs(t)))
                return fail(r, MOE_STATUS_FORMAT,
                            "byte %zu: expert %zu covariance is not symmetric at (%zu,%zu)", at, k,
                            i, j);
        }
        if (var == MOE_VARIANCE_ISO &&
            fabs(work[i * P + i] - work[0]) > SYM_TOL * (fabs(work[i * P + i]) + fabs(work[0])))
            return fail(r, MOE_STATUS_FORMAT,
                        "byte %zu: expert %zu covariance: an isotropic covariance has equal "
                        "diagonal entries",
                        elem_at(v, base + i * P + i), k);
    }
    /* in-place lower Cholesky */
    for (size_t j = 0; j < P; j++) {
        double d = work[j * P + j];
        for (size_t q = 0; q < j; q++) d -= work[j * P + q] * work[j * P + q];
        if (!(d > 0.0) || !isfinite(d))
            return fail(r, MOE_STATUS_FORMAT,
                        "byte %zu: expert %zu covariance is not positive definite",
                        elem_at(v, base), k);
        d = sqrt(d);
        work[j * P + j] = d;
        for (size_t i = j + 1; i < P; i++) {
            double s = work[i * P + j];
            for (size_t q = 0; q < j; q++) s -= work[i * P + q] * work[j * P + q];
            work[i * P + j] = s / d;
        }
    }
    return MOE_STATUS_OK;
}

/* Every array has the size the shape implies and sensible contents. */
static moe_status check_arrays(rd *r, parsed *ps) {
    moe_status st;
    double *work = NULL;

    if ((st = check_count(r, ps, A_ECOLS, ps->arr[A_ECOLS].count, "")) != MOE_STATUS_OK) return st;
    if ((st = check_count(r, ps, A_GCOLS, ps->arr[A_GCOLS].count, "")) != MOE_STATUS_OK) return st;
    ps->n_ecols = ps->arr[A_ECOLS].count;
    ps->n_gcols = ps->arr[A_GCOLS].count;
    if (ps->n_ecols > LIM_COLS || ps->n_gcols > LIM_COLS)
        return fail(r, MOE_STATUS_FORMAT, "byte %zu: more than %u expert or gate columns",
                    ps->arr[ps->n_ecols > LIM_COLS ? A_ECOLS : A_GCOLS].hdr, LIM_COLS);
    ps->ed = 1 + ps->n_ecols;
    ps->gd = 1 + ps->n_gcols;
    moe_net_init(&ps->net[0], ps->ed, &ps->arch[0]);
    moe_net_init(&ps->net[1], ps->gd, &ps->arch[1]);
    size_t eh = ps->net[0].head_in, gh = ps->net[1].head_in;
    ps->grows = moe_tree_layout(&ps->tree, gh, NULL, NULL);

    size_t n_gate = 0, n_coef = 0, n_cov = 0, n_ew = 0, n_gw = 0;
    if (!mul_ok(ps->grows, gh, &n_gate) || !mul_ok(ps->K, ps->coef_rows, &n_coef) ||
        !mul_ok(n_coef, eh, &n_coef) || !mul_ok(ps->K, ps->P, &n_cov) ||
        !mul_ok(n_cov, ps->P, &n_cov) || !mul_ok(ps->K, ps->net[0].n_w, &n_ew) ||
        !mul_ok(ps->G, ps->net[1].n_w, &n_gw))
        return fail(r, MOE_STATUS_FORMAT, "byte %zu: array sizes overflow", ps->kv_end);
    size_t n_ev = ps->arr[A_EV_KIND].count;
    const struct {
        int a;
        size_t want;
        const char *why;
    } cnt[] = {
        {A_X_MEAN, ps->n_cols, "n_cols"},
        {A_X_SCALE, ps->n_cols, "n_cols"},
        {A_Y_MEAN, ps->P, "n_outputs"},
        {A_Y_SCALE, ps->P, "n_outputs"},
        {A_GATE_NCH, ps->G, "one per gate"},
        {A_GATE_COEF, n_gate, "gate rows x gate head width"},
        {A_COEF, n_coef, "experts x rows x expert head width"},
        {A_COV, n_cov, "experts x outputs x outputs"},
        {A_TRACE, ps->arr[A_TRACE].count, ""},
        {A_EV_KIND, n_ev, ""},
        {A_EV_ITER, n_ev, "one per event"},
        {A_EV_EXPERT, n_ev, "one per event"},
        {A_EV_COLUMN, n_ev, "one per event"},
        {A_EV_VALUE, n_ev, "one per event"},
    };
    for (size_t i = 0; i < sizeof cnt / sizeof cnt[0]; i++)
        if ((st = check_count(r, ps, cnt[i].a, cnt[i].want, cnt[i].why)) != MOE_STATUS_OK)
            return st;

    if ((st = check_cols(r, ps, A_ECOLS)) != MOE_STATUS_OK) return st;
    if ((st = check_cols(r, ps, A_GCOLS)) != MOE_STATUS_OK) return st;
    if ((st = check_finite(r, ps, A_X_MEAN, 0)) != MOE_STATUS_OK) return st;
    if ((st = check_finite(r, ps, A_X_SCALE, 1)) != MOE_STATUS_OK) return st;
    if ((st = check_finite(r, ps, A_Y_MEAN, 0)) != MOE_STATUS_OK) return st;
    if ((st = check_finite(r, ps, A_Y_SCALE, 1)) != MOE_STATUS_OK) return st;
    if ((st = check_finite(r, ps, A_GATE_COEF, 0)) != MOE_STATUS_OK) return st;
    if ((st = check_finite(r, ps, A_COEF, 0)) != MOE_STATUS_OK) return st;
    /* version 2: hidden weights (a version-1 file has none, so linear nodes) */
    if (ps->version >= 2 || ps->arr[A_E_W].seen)
        if ((st = check_count(r, ps, A_E_W, n_ew, "experts x hidden weights")) != MOE_STATUS_OK ||
            (st = check_finite(r, ps, A_E_W, 0)) != MOE_STATUS_OK)
            return st;
    if (ps->version >= 2 || ps->arr[A_G_W].seen)
        if ((st = check_count(r, ps, A_G_W, n_gw, "gates x hidden weights")) != MOE_STATUS_OK ||
            (st = check_finite(r, ps, A_G_W, 0)) != MOE_STATUS_OK)
            return st;
    /* version 3: the log-variance heads, exactly when moe.expert_log_var is 1
     * (absent or empty otherwise) */
    if (ps->log_var || ps->arr[A_LV].seen) {
        size_t n_lv = 0;
        if (ps->log_var && (!mul_ok(ps->K, ps->P, &n_lv) || !mul_ok(n_lv, eh, &n_lv)))
            return fail(r, MOE_STATUS_FORMAT, "byte %zu: array sizes overflow", ps->kv_end);
        if ((st = check_count(r, ps, A_LV, n_lv,
                              ps->log_var ? "experts x outputs x expert head width"
                                          : "moe.expert_log_var is 0")) != MOE_STATUS_OK ||
            (st = check_finite(r, ps, A_LV, 0)) != MOE_STATUS_OK)
            return st;
    }

    /* gate_nch must be the breadth-first layout of the tree */
    {
        const view *v = &ps->arr[A_GATE_NCH];
        size_t g = 0, width = 1;
        for (size_t l = 0; l < ps->tree.n_levels && g < ps->G; l++) {
            for (size_t q = 0; q < width; q++, g++) {
                uint64_t c = ld_u64(elem(r, v, g));
                if (c != ps->tree.branching[l])
                    return fail(r, MOE_STATUS_FORMAT,
                                "byte %zu: gate_nch[%zu] = %" PRIu64
                                ", but gate %zu has %zu children in the tree",
                                elem_at(v, g), g, c, g, ps->tree.branching[l]);
            }
            width *= ps->tree.branching[l];
        }
    }

    /* events */
    for (size_t i = 0; i < ps->arr[A_EV_KIND].count; i++) {
        uint64_t kind = ld_u64(elem(r, &ps->arr[A_EV_KIND], i));
        int64_t it = ld_i64(elem(r, &ps->arr[A_EV_ITER], i));
        int64_t ex = ld_i64(elem(r, &ps->arr[A_EV_EXPERT], i));
        int64_t co = ld_i64(elem(r, &ps->arr[A_EV_COLUMN], i));
        if (kind > MOE_EVENT_KIND_NOT_MONOTONE)
            return fail(r, MOE_STATUS_FORMAT, "byte %zu: event %zu has unknown kind %" PRIu64,
                        elem_at(&ps->arr[A_EV_KIND], i), i, kind);
        if (it < 0 || it > INT_MAX)
            return fail(r, MOE_STATUS_FORMAT, "byte %zu: event %zu: iteration %" PRId64
                        " is out of range", elem_at(&ps->arr[A_EV_ITER], i), i, it);
        if (ex < -1 || ex >= (int64_t)ps->K)
            return fail(r, MOE_STATUS_FORMAT, "byte %zu: event %zu: expert %" PRId64
                        " is not -1 or a leaf", elem_at(&ps->arr[A_EV_EXPERT], i), i, ex);
        if (co < -1 || co > INT_MAX)
            return fail(r, MOE_STATUS_FORMAT, "byte %zu: event %zu: column %" PRId64
                        " is out of range", elem_at(&ps->arr[A_EV_COLUMN], i), i, co);
    }

    /* covariances last: the most expensive check */
    if (ps->P > 0) {
        work = malloc(ps->P * ps->P * sizeof *work);
        if (!work) return fail(r, MOE_STATUS_NO_MEMORY, "out of memory checking covariances");
        for (size_t k = 0; k < ps->K; k++)
            if ((st = check_cov(r, ps, k, work)) != MOE_STATUS_OK) break;
        free(work);
    }
    return st;
}

static int meta_cmp(const void *a, const void *b) {
    const meta_view *x = a, *y = b;
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp(x->key, y->key, n);
    if (c != 0) return c;
    return x->key_len < y->key_len ? -1 : x->key_len > y->key_len;
}

/* No user metadata key twice (sorting a copy of the views). */
static moe_status check_meta(rd *r, const parsed *ps) {
    if (ps->n_meta < 2) return MOE_STATUS_OK;
    meta_view *s = malloc(ps->n_meta * sizeof *s);
    if (!s) return fail(r, MOE_STATUS_NO_MEMORY, "out of memory checking metadata");
    memcpy(s, ps->meta, ps->n_meta * sizeof *s);
    qsort(s, ps->n_meta, sizeof *s, meta_cmp);
    moe_status st = MOE_STATUS_OK;
    for (size_t i = 1; i < ps->n_meta; i++) {
        if (meta_cmp(&s[i - 1], &s[i]) == 0) {
            char kd[80];
            printable(kd, sizeof kd, s[i].key, s[i].key_len);
            size_t at = s[i].at > s[i - 1].at ? s[i].at : s[i - 1].at;
            st = fail(r, MOE_STATUS_FORMAT, "byte %zu: duplicate metadata key '%s'", at, kd);
            break;
        }
    }
    free(s);
    return st;
}

static char *dup_bytes(const unsigned char *s, size_t n) {
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static void load_f64(const rd *r, const view *v, double *dst) {
    for (size_t i = 0; i < v->count; i++) dst[i] = ld_f64(elem(r, v, i));
}

/* Build the model from a checked parse. */
static moe_status build(rd *r, const parsed *ps, moe_model **out) {
    moe_model tmpl;
    moe_model *m = NULL;
    size_t *ecols = NULL, *gcols = NULL;
    moe_status st = MOE_STATUS_OK;
    int built = 0;

    memset(&tmpl, 0, sizeof tmpl);
    tmpl.task = (moe_task)ps->raw[K_TASK];
    tmpl.variance = (moe_variance)ps->raw[K_VARIANCE];
    tmpl.tree = ps->tree;
    tmpl.n_cols = ps->n_cols;
    tmpl.n_ecols = ps->n_ecols;
    tmpl.n_gcols = ps->n_gcols;
    tmpl.n_out = ps->P;
    tmpl.n_cls = ps->C;
    tmpl.enet = ps->net[0];
    tmpl.gnet = ps->net[1];
    tmpl.top_k = ps->version >= 2 ? (size_t)ps->raw[K_TOP_K] : 0;
    tmpl.log_var = ps->log_var;
    ecols = malloc((ps->n_ecols + 1) * sizeof *ecols);
    gcols = malloc((ps->n_gcols + 1) * sizeof *gcols);
    if (!ecols || !gcols) goto done;
    for (size_t i = 0; i < ps->n_ecols; i++)
        ecols[i] = (size_t)ld_u64(elem(r, &ps->arr[A_ECOLS], i));
    for (size_t i = 0; i < ps->n_gcols; i++)
        gcols[i] = (size_t)ld_u64(elem(r, &ps->arr[A_GCOLS], i));
    m = moe_model_alloc(&tmpl, ecols, gcols);
    if (!m) goto done;
    if (m->n_leaves != ps->K || m->n_gates != ps->G || m->ed != ps->ed || m->gd != ps->gd ||
        m->enet.n_w != ps->net[0].n_w || m->gnet.n_w != ps->net[1].n_w ||
        m->coef_rows != ps->coef_rows || m->log_var != ps->log_var) {
        st = fail(r, MOE_STATUS_FORMAT, "internal error: model shape disagrees with the file");
        goto done;
    }
    load_f64(r, &ps->arr[A_X_MEAN], m->x_mean);
    load_f64(r, &ps->arr[A_X_SCALE], m->x_scale);
    load_f64(r, &ps->arr[A_Y_MEAN], m->y_mean);
    load_f64(r, &ps->arr[A_Y_SCALE], m->y_scale);
    load_f64(r, &ps->arr[A_GATE_COEF], m->gate_coef);
    load_f64(r, &ps->arr[A_COEF], m->coef);
    if (ps->arr[A_E_W].seen) load_f64(r, &ps->arr[A_E_W], m->e_w);
    if (ps->arr[A_G_W].seen) load_f64(r, &ps->arr[A_G_W], m->g_w);
    if (m->log_var) load_f64(r, &ps->arr[A_LV], m->lv_coef);
    load_f64(r, &ps->arr[A_COV], m->cov);
    if (moe_model_refresh_chol(m) != 0) {
        st = fail(r, MOE_STATUS_FORMAT, "a covariance is not positive definite");
        goto done;
    }

    moe_fit_report *rep = &m->report;
    int64_t iv;
    memcpy(&rep->loglik, &ps->raw[K_LOGLIK], sizeof(double));
    memcpy(&rep->aic, &ps->raw[K_AIC], sizeof(double));
    memcpy(&rep->bic, &ps->raw[K_BIC], sizeof(double));
    memcpy(&rep->icl, &ps->raw[K_ICL], sizeof(double));
    memcpy(&rep->entropy, &ps->raw[K_ENTROPY], sizeof(double));
    memcpy(&rep->sum_weights, &ps->raw[K_SUM_W], sizeof(double));
    rep->df = (size_t)ps->raw[K_DF];
    rep->n_rows = (size_t)ps->raw[K_N_ROWS];
    memcpy(&iv, &ps->raw[K_ITER], sizeof iv);
    rep->iterations = (int)iv;
    memcpy(&iv, &ps->raw[K_CONV], sizeof iv);
    rep->converged = (int)iv;
    memcpy(&iv, &ps->raw[K_N_RESTARTS], sizeof iv);
    rep->n_restarts = (int)iv;
    memcpy(&iv, &ps->raw[K_BEST], sizeof iv);
    rep->best_restart = (int)iv;

    size_t n_ev = ps->arr[A_EV_KIND].count, n_tr = ps->arr[A_TRACE].count;
    free(m->events);
    m->events = malloc((n_ev ? n_ev : 1) * sizeof *m->events);
    if (!m->events) goto done;
    for (size_t i = 0; i < n_ev; i++) {
        moe_event *e = &m->events[i];
        e->kind = (moe_event_kind)ld_u64(elem(r, &ps->arr[A_EV_KIND], i));
        e->iteration = (int)ld_i64(elem(r, &ps->arr[A_EV_ITER], i));
        e->expert = (int)ld_i64(elem(r, &ps->arr[A_EV_EXPERT], i));
        e->column = (int)ld_i64(elem(r, &ps->arr[A_EV_COLUMN], i));
        e->value = ld_f64(elem(r, &ps->arr[A_EV_VALUE], i));
    }
    rep->n_events = n_ev;
    free(m->trace);
    m->trace = malloc((n_tr ? n_tr : 1) * sizeof *m->trace);
    if (!m->trace) goto done;
    load_f64(r, &ps->arr[A_TRACE], m->trace);
    m->n_trace = n_tr;

    /* metadata straight into the model's table (freed by moe_model_free) */
    if (ps->n_meta > 0) {
        m->meta = calloc(ps->n_meta, sizeof *m->meta);
        if (!m->meta) goto done;
        for (size_t i = 0; i < ps->n_meta; i++) {
            char *k = dup_bytes(ps->meta[i].key, ps->meta[i].key_len);
            char *v = dup_bytes(ps->meta[i].val, ps->meta[i].val_len);
            if (!k || !v) {
                free(k);
                free(v);
                goto done;
            }
            m->meta[i].key = k;
            m->meta[i].value = v;
            m->n_meta = i + 1;
        }
    }
    *out = m;
    m = NULL;
    built = 1;
done:
    if (!built && st == MOE_STATUS_OK) /* every other way here is an allocation failure */
        st = fail(r, MOE_STATUS_NO_MEMORY, "out of memory building the model");
    moe_model_free(m);
    free(ecols);
    free(gcols);
    return st;
}

/* Parse and check `p[0..size-1]`; with out != NULL also build the model. */
static moe_status parse_buffer(const unsigned char *p, size_t size, const char *name,
                               moe_model **out, moe_error *err) {
    rd r;
    parsed ps;
    moe_status st;
    uint32_t version, reserved;
    uint64_t n_kv, n_arrays;

    memset(&r, 0, sizeof r);
    memset(&ps, 0, sizeof ps);
    r.p = p;
    r.size = size;
    r.end = size;
    r.truncated = 1; /* until the header says otherwise */
    r.name = name;
    r.err = err;

    if (size == 0) {
        st = fail(&r, MOE_STATUS_FORMAT, "empty file: not a moe model file");
        goto done;
    }
    if (memcmp(p, FMT_MAGIC, size < FMT_MAGIC_LEN ? size : FMT_MAGIC_LEN) != 0) {
        st = fail(&r, MOE_STATUS_FORMAT, "not a moe model file (bad magic)");
        goto done;
    }
    if ((st = skip(&r, FMT_MAGIC_LEN, "magic")) != MOE_STATUS_OK) goto done;
    if ((st = get_u32(&r, &version, "format version")) != MOE_STATUS_OK) goto done;
    if (version == 0) {
        st = fail(&r, MOE_STATUS_FORMAT, "byte 8: invalid format version 0");
        goto done;
    }
    if (version > FMT_VERSION) {
        st = fail(&r, MOE_STATUS_VERSION,
                  "format version %" PRIu32 " is newer than this library reads (version %u, "
                  "libmoe %s); upgrade libmoe to load it",
                  version, FMT_VERSION, MOE_VERSION_STRING);
        goto done;
    }
    if ((st = get_u32(&r, &reserved, "file header")) != MOE_STATUS_OK ||
        (st = get_u64(&r, &r.file_size, "file header")) != MOE_STATUS_OK ||
        (st = get_u64(&r, &n_kv, "file header")) != MOE_STATUS_OK ||
        (st = get_u64(&r, &n_arrays, "file header")) != MOE_STATUS_OK)
        goto done;
    if (reserved != 0) {
        st = fail(&r, MOE_STATUS_FORMAT, "byte 12: reserved header field is %" PRIu32
                  ", expected 0", reserved);
        goto done;
    }
    if (r.file_size < FMT_HEADER_SIZE + FMT_TRAILER_SIZE) {
        st = fail(&r, MOE_STATUS_FORMAT, "byte 16: file size %" PRIu64 " is too small",
                  r.file_size);
        goto done;
    }
    if (r.file_size == size) {
        uint32_t stored = ld_u32(p + size - FMT_TRAILER_SIZE);
        uint32_t computed = moe_crc32c(0, p, size - FMT_TRAILER_SIZE);
        if (stored != computed) {
            st = fail(&r, MOE_STATUS_FORMAT,
                      "checksum mismatch (stored 0x%08" PRIx32 ", computed 0x%08" PRIx32
                      "): the file is corrupted",
                      stored, computed);
            goto done;
        }
        r.truncated = 0;
        r.end = size - FMT_TRAILER_SIZE;
    } else if (r.file_size < size) {
        st = fail(&r, MOE_STATUS_FORMAT,
                  "the header says the file has %" PRIu64 " bytes but it has %zu "
                  "(trailing data or a corrupted header)",
                  r.file_size, size);
        goto done;
    }
    /* else truncated: parse what is there to say where it was cut */

    if (n_kv > LIM_KV) {
        st = fail(&r, MOE_STATUS_FORMAT, "byte 24: %" PRIu64 " key/value entries (limit %u)",
                  n_kv, LIM_KV);
        goto done;
    }
    if (n_arrays > LIM_ARRAYS) {
        st = fail(&r, MOE_STATUS_FORMAT, "byte 32: %" PRIu64 " arrays (limit %u)", n_arrays,
                  LIM_ARRAYS);
        goto done;
    }
    ps.version = version;
    for (uint64_t i = 0; i < n_kv; i++)
        if ((st = parse_kv(&r, &ps, i)) != MOE_STATUS_OK) goto done;
    ps.kv_end = r.pos;
    if ((st = check_shape(&r, &ps)) != MOE_STATUS_OK) goto done;
    for (uint64_t i = 0; i < n_arrays; i++)
        if ((st = parse_array(&r, &ps, i)) != MOE_STATUS_OK) goto done;
    if (r.truncated) {
        st = fail(&r, MOE_STATUS_FORMAT,
                  "truncated at byte %zu (reading the checksum; the header says the file has "
                  "%" PRIu64 " bytes)",
                  size, r.file_size);
        goto done;
    }
    if (r.pos != r.end) {
        st = fail(&r, MOE_STATUS_FORMAT, "byte %zu: %zu unexpected bytes after the last array",
                  r.pos, r.end - r.pos);
        goto done;
    }
    if ((st = check_arrays(&r, &ps)) != MOE_STATUS_OK) goto done;
    if ((st = check_meta(&r, &ps)) != MOE_STATUS_OK) goto done;
    if (out) st = build(&r, &ps, out);
done:
    free(ps.meta);
    return st;
}

moe_status moe_model_load_buffer(const void *data, size_t size, const char *name,
                                 moe_model **out, moe_error *err) {
    if (out) *out = NULL;
    if (!out || (!data && size > 0))
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_model_load_buffer: NULL argument");
    static const unsigned char empty[1];
    return parse_buffer(data ? data : empty, size, name ? name : "<buffer>", out, err);
}

moe_status moe_model_load(const char *path, moe_model **out, moe_error *err) {
    FILE *f = NULL;
    unsigned char *buf = NULL;
    size_t n = 0, cap = 0;
    moe_status st;
    char why[256];

    if (out) *out = NULL;
    if (!path || !out)
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "moe_model_load: NULL argument");
    f = fopen(path, "rb");
    if (!f) {
        errno_text(errno, why, sizeof why);
        return moe_err_at(err, MOE_STATUS_IO, path, 0, 0, "cannot open model '%s': %s", path,
                          why);
    }
    /* read to the end (works for pipes too), doubling the buffer */
    for (;;) {
        if (n == cap) {
            size_t nc = cap ? 2 * cap : 1 << 16;
            unsigned char *nb = nc > cap ? realloc(buf, nc) : NULL;
            if (!nb) {
                st = moe_err_at(err, MOE_STATUS_NO_MEMORY, path, 0, 0,
                                "%s: out of memory reading the model", path);
                goto done;
            }
            buf = nb;
            cap = nc;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    if (ferror(f)) {
        errno_text(errno, why, sizeof why);
        st = moe_err_at(err, MOE_STATUS_IO, path, 0, 0, "cannot read model '%s': %s", path, why);
        goto done;
    }
    st = parse_buffer(buf, n, path, out, err);
done:
    fclose(f);
    free(buf);
    return st;
}
