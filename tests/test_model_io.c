/*
 * test_model_io.c -- the model file (src/model_io.c, docs/format.md).
 *
 * Models are built by hand with moe_model_alloc and filled with distinctive
 * values, so every field is checked bit for bit after a round trip. Then the
 * file is attacked: every truncation length, every single flipped bit, a
 * foreign file, a newer version, crafted contents with a valid checksum,
 * and the atomic save (missing directory, replacing a file, no temporary
 * files left behind); version 3 (log-variance experts) beside version 2.
 * Crashing inputs the fuzzer found live in
 * tests/data/model_regressions/ and are loaded here.
 */
#include "check.h"
#include "moe_impl.h"

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmp_dir[64];

/* ---- helpers ---------------------------------------------------------------- */

/* CRC-32C written independently of the library, bit by bit from the spec. */
static uint32_t ref_crc32c(const unsigned char *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int b = 0; b < 8; b++) c = (c & 1u) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
    }
    return ~c;
}

static uint64_t rd64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void wr64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void wr32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void wrf64(unsigned char *p, double d) {
    uint64_t u;
    memcpy(&u, &d, 8);
    wr64(p, u);
}

/* Rewrite the checksum after editing a buffer. */
static void fix_crc(unsigned char *p, size_t n) { wr32(p + n - 4, ref_crc32c(p, n - 4)); }

/* Offset of array `name`'s first element and its count, by scanning for its
 * length-prefixed name (docs/format.md section 5); 0 if absent. */
static size_t find_array(const unsigned char *p, size_t n, const char *name, uint64_t *count) {
    size_t len = strlen(name);
    for (size_t i = 40; i + 8 + len + 12 <= n; i++) {
        if (rd64(p + i) != len || memcmp(p + i + 8, name, len) != 0) continue;
        size_t at = i + 8 + len + 4;
        *count = rd64(p + at);
        at += 8;
        return (at + 31) / 32 * 32;
    }
    return 0;
}

static size_t find_bytes(const unsigned char *p, size_t n, const void *s, size_t len) {
    for (size_t i = 0; i + len <= n; i++)
        if (memcmp(p + i, s, len) == 0) return i;
    return (size_t)-1;
}

static int write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

static unsigned char *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, len = 0;
    unsigned char *b = malloc(cap);
    while (b) {
        len += fread(b + len, 1, cap - len, f);
        if (len < cap) break;
        unsigned char *nb = realloc(b, cap *= 2);
        if (!nb) free(b);
        b = nb;
    }
    fclose(f);
    *n = len;
    return b;
}

/* Number of entries in a directory other than . and .. */
static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static void clear_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char path[512];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
}

/* ---- models built by hand ------------------------------------------------------ */

static double distinct(size_t i, double base) { return base + 0.001 * (double)i - 1e-7 * (double)(i * i); }

static void fill_common(moe_model *m, double base) {
    for (size_t j = 0; j < m->n_cols; j++) {
        m->x_mean[j] = distinct(j, base - 3.5);
        m->x_scale[j] = 0.25 + fabs(distinct(j, base));
    }
    size_t grows = moe_tree_layout(&m->tree, m->gd, NULL, NULL);
    for (size_t i = 0; i < grows * m->gd; i++) m->gate_coef[i] = distinct(i, -base);
    for (size_t g = 0; g < m->n_gates; g++) /* first child's row is zero */
        for (size_t j = 0; j < m->gd; j++) m->gate_coef[m->gate_off[g] + j] = 0.0;
    for (size_t i = 0; i < m->n_leaves * m->coef_rows * m->ed; i++)
        m->coef[i] = distinct(i, base * 1.5);

    moe_fit_report *r = &m->report;
    r->loglik = -1234.5678901234;
    r->df = 41;
    r->aic = 2551.1357802468;
    r->bic = 2699.0000000001;
    r->icl = 2702.25;
    r->entropy = 1.5e-3;
    r->n_rows = 133;
    r->sum_weights = 132.75;
    r->iterations = 57;
    r->converged = 1;
    r->n_restarts = 4;
    r->best_restart = 2;
    r->n_events = 3;
    m->events = malloc(3 * sizeof *m->events);
    m->events[0] = (moe_event){MOE_EVENT_KIND_LOST_SUPPORT, 12, 3, -1, 2.5};
    m->events[1] = (moe_event){MOE_EVENT_KIND_RIDGE_RAISED, 13, -1, 2, 1e-8};
    m->events[2] = (moe_event){MOE_EVENT_KIND_NOT_MONOTONE, 57, -1, -1, -1e-12};
    m->n_trace = 5;
    m->trace = malloc(5 * sizeof *m->trace);
    for (size_t i = 0; i < 5; i++) m->trace[i] = -2000.0 + 150.0 * (double)i + 0.125;
    moe_model_meta_set(m, "features", "x0,x1,x2,x3,x4");
    moe_model_meta_set(m, "train.args", "--tree 2x3 --variance full \"quoted\" \xc3\xa9");
    moe_model_meta_set(m, "empty", "");
}

/* 2x3 tree, P = 2 regression, full covariance. */
static moe_model *make_regression(void) {
    moe_model t;
    memset(&t, 0, sizeof t);
    t.task = MOE_TASK_REGRESSION;
    t.variance = MOE_VARIANCE_FULL;
    t.tree.n_levels = 2;
    t.tree.branching[0] = 2;
    t.tree.branching[1] = 3;
    t.n_cols = 5;
    t.n_ecols = 3;
    t.n_gcols = 2;
    t.n_out = 2;
    const size_t ecols[] = {0, 2, 4}, gcols[] = {3, 1};
    moe_model *m = moe_model_alloc(&t, ecols, gcols);
    if (!m) return NULL;
    fill_common(m, 0.7);
    m->y_mean[0] = 12.375;
    m->y_mean[1] = -0.3;
    m->y_scale[0] = 3.25;
    m->y_scale[1] = 0.1;
    for (size_t k = 0; k < m->n_leaves; k++) {
        double *c = m->cov + k * 4;
        c[0] = 1.0 + 0.1 * (double)k;
        c[3] = 0.5 + 0.01 * (double)k;
        c[1] = c[2] = 0.3 - 0.05 * (double)k;
    }
    if (moe_model_refresh_chol(m) != 0) {
        moe_model_free(m);
        return NULL;
    }
    return m;
}

/* Flat mixture of 4 multinomial experts over 3 classes, constant gate. */
static moe_model *make_classification(void) {
    moe_model t;
    memset(&t, 0, sizeof t);
    t.task = MOE_TASK_CLASSIFICATION;
    t.variance = MOE_VARIANCE_DIAG;
    t.tree.n_levels = 1;
    t.tree.branching[0] = 4;
    t.n_cols = 3;
    t.n_ecols = 3;
    t.n_gcols = 0;
    t.n_cls = 3;
    const size_t ecols[] = {2, 1, 0};
    moe_model *m = moe_model_alloc(&t, ecols, NULL);
    if (!m) return NULL;
    fill_common(m, -0.4);
    for (size_t k = 0; k < m->n_leaves; k++) /* class 0's row zero */
        for (size_t j = 0; j < m->ed; j++) m->coef[k * m->coef_rows * m->ed + j] = 0.0;
    return m;
}

/* One expert (tree "1"), P = 3 isotropic regression, no metadata/events. */
static moe_model *make_single(void) {
    moe_model t;
    memset(&t, 0, sizeof t);
    t.task = MOE_TASK_REGRESSION;
    t.variance = MOE_VARIANCE_ISO;
    t.tree.n_levels = 1;
    t.tree.branching[0] = 1;
    t.n_cols = 2;
    t.n_ecols = 1;
    t.n_gcols = 0;
    t.n_out = 3;
    const size_t ecols[] = {1};
    moe_model *m = moe_model_alloc(&t, ecols, NULL);
    if (!m) return NULL;
    for (size_t i = 0; i < 3 * 2; i++) m->coef[i] = (double)i - 2.5;
    for (size_t p = 0; p < 3; p++) m->cov[p * 3 + p] = 0.0625;
    m->x_mean[1] = -0.0; /* negative zero survives */
    if (moe_model_refresh_chol(m) != 0) {
        moe_model_free(m);
        return NULL;
    }
    return m;
}

/* Two MLP experts (3 tanh units) with log-variance heads, P = 2 diagonal,
 * a linear gate: a version-3 file. cov holds the variance floors. */
static moe_model *make_log_var(void) {
    moe_model t;
    memset(&t, 0, sizeof t);
    t.task = MOE_TASK_REGRESSION;
    t.variance = MOE_VARIANCE_DIAG;
    t.tree.n_levels = 1;
    t.tree.branching[0] = 2;
    t.n_cols = 3;
    t.n_ecols = 2;
    t.n_gcols = 1;
    t.n_out = 2;
    t.enet.n_hidden = 1;
    t.enet.hidden[0] = 3;
    t.log_var = 1;
    const size_t ecols[] = {0, 2}, gcols[] = {1};
    moe_model *m = moe_model_alloc(&t, ecols, gcols);
    if (!m) return NULL;
    fill_common(m, 0.3);
    m->events[0].expert = 1; /* of 2 experts */
    for (size_t i = 0; i < m->n_leaves * m->coef_rows * m->eh; i++) m->coef[i] = distinct(i, 0.9);
    for (size_t i = 0; i < m->n_leaves * m->enet.n_w; i++) m->e_w[i] = distinct(i, -0.2);
    for (size_t i = 0; i < m->n_leaves * m->n_out * m->eh; i++) m->lv_coef[i] = distinct(i, -1.1);
    for (size_t p = 0; p < 2; p++) m->y_scale[p] = 2.0 + (double)p;
    for (size_t k = 0; k < 2; k++)
        for (size_t p = 0; p < 2; p++) m->cov[(k * 2 + p) * 2 + p] = 1e-6 * (double)(1 + k + p);
    if (moe_model_refresh_chol(m) != 0) {
        moe_model_free(m);
        return NULL;
    }
    return m;
}

static int same_f64(const double *a, const double *b, size_t n) {
    return n == 0 || memcmp(a, b, n * sizeof(double)) == 0;
}

static int same_size(const size_t *a, const size_t *b, size_t n) {
    return n == 0 || memcmp(a, b, n * sizeof(size_t)) == 0;
}

static int same_bits(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

/* Every field of the two models, bit for bit. */
static void check_same_model(const moe_model *a, const moe_model *b) {
    CHECK(a->task == b->task, "task");
    CHECK(a->variance == b->variance, "variance");
    CHECK(a->tree.n_levels == b->tree.n_levels, "tree levels");
    for (size_t l = 0; l < a->tree.n_levels && l < MOE_MAX_DEPTH; l++)
        CHECK(a->tree.branching[l] == b->tree.branching[l], "tree level %zu", l);
    CHECK(a->n_cols == b->n_cols, "n_cols");
    CHECK(a->n_ecols == b->n_ecols && same_size(a->ecols, b->ecols, a->n_ecols), "ecols");
    CHECK(a->n_gcols == b->n_gcols && same_size(a->gcols, b->gcols, a->n_gcols), "gcols");
    CHECK(a->ed == b->ed && a->gd == b->gd, "ed/gd");
    CHECK(a->n_out == b->n_out && a->n_cls == b->n_cls, "n_out/n_cls");
    CHECK(a->n_leaves == b->n_leaves && a->n_gates == b->n_gates, "leaves/gates");
    CHECK(a->coef_rows == b->coef_rows, "coef_rows");
    if (a->n_cols != b->n_cols || a->n_out != b->n_out || a->n_leaves != b->n_leaves ||
        a->n_gates != b->n_gates || a->ed != b->ed || a->gd != b->gd ||
        a->coef_rows != b->coef_rows)
        return;
    size_t K = a->n_leaves, P = a->n_out;
    size_t grows = moe_tree_layout(&a->tree, a->gd, NULL, NULL);
    CHECK(same_f64(a->x_mean, b->x_mean, a->n_cols), "x_mean");
    CHECK(same_f64(a->x_scale, b->x_scale, a->n_cols), "x_scale");
    CHECK(same_f64(a->y_mean, b->y_mean, P), "y_mean");
    CHECK(same_f64(a->y_scale, b->y_scale, P), "y_scale");
    CHECK(same_size(a->gate_nch, b->gate_nch, a->n_gates), "gate_nch");
    CHECK(same_size(a->gate_off, b->gate_off, a->n_gates), "gate_off");
    CHECK(same_f64(a->gate_coef, b->gate_coef, grows * a->gd), "gate_coef");
    CHECK(same_f64(a->coef, b->coef, K * a->coef_rows * a->ed), "coef");
    CHECK(same_f64(a->cov, b->cov, K * P * P), "cov");
    CHECK(same_f64(a->chol, b->chol, K * P * P), "chol");
    CHECK(same_f64(a->logdet, b->logdet, P ? K : 0), "logdet");
    CHECK(a->log_var == b->log_var &&
              (!a->log_var || (a->eh == b->eh && same_f64(a->lv_coef, b->lv_coef, K * P * a->eh))),
          "log-variance heads");
    const moe_fit_report *r = &a->report, *s = &b->report;
    CHECK(same_bits(r->loglik, s->loglik) && same_bits(r->aic, s->aic) &&
              same_bits(r->bic, s->bic) && same_bits(r->icl, s->icl) &&
              same_bits(r->entropy, s->entropy) && same_bits(r->sum_weights, s->sum_weights),
          "report doubles");
    CHECK(r->df == s->df && r->n_rows == s->n_rows && r->iterations == s->iterations &&
              r->converged == s->converged && r->n_restarts == s->n_restarts &&
              r->best_restart == s->best_restart && r->n_events == s->n_events,
          "report counts");
    for (size_t i = 0; i < r->n_events && r->n_events == s->n_events; i++) {
        const moe_event *e = &a->events[i], *f = &b->events[i];
        CHECK(e->kind == f->kind && e->iteration == f->iteration && e->expert == f->expert &&
                  e->column == f->column && same_bits(e->value, f->value),
              "event %zu", i);
    }
    CHECK(a->n_trace == b->n_trace && same_f64(a->trace, b->trace, a->n_trace), "trace");
    CHECK(a->n_meta == b->n_meta, "n_meta %zu vs %zu", a->n_meta, b->n_meta);
    for (size_t i = 0; i < a->n_meta && a->n_meta == b->n_meta; i++)
        CHECK(!strcmp(a->meta[i].key, b->meta[i].key) && !strcmp(a->meta[i].value, b->meta[i].value),
              "meta %zu", i);
}

static void path_in_tmp(char *buf, size_t cap, const char *name) {
    snprintf(buf, cap, "%s/%s", tmp_dir, name);
}

static void roundtrip(moe_model *(*make)(void), const char *fname) {
    moe_model *m = make(), *l = NULL;
    moe_error err;
    char path[256];
    REQUIRE(m, "model");
    path_in_tmp(path, sizeof path, fname);
    moe_status st = moe_model_save(m, path, &err);
    CHECK(st == MOE_STATUS_OK, "save: %s", err.message);
    st = moe_model_load(path, &l, &err);
    CHECK(st == MOE_STATUS_OK && l, "load: %s", err.message);
    if (l) check_same_model(m, l);

    /* the buffer holds the file's bytes, and loads the same */
    void *buf = NULL;
    size_t n = 0, fn = 0;
    unsigned char *fb = read_file(path, &fn);
    st = moe_model_save_buffer(m, &buf, &n, &err);
    CHECK(st == MOE_STATUS_OK, "save_buffer: %s", err.message);
    CHECK(fb && n == fn && memcmp(buf, fb, n) == 0, "buffer differs from file");
    moe_model *l2 = NULL;
    st = moe_model_load_buffer(buf, n, "buf", &l2, &err);
    CHECK(st == MOE_STATUS_OK && l2, "load_buffer: %s", err.message);
    if (l2) check_same_model(m, l2);

    /* saving a loaded model gives the same bytes again */
    void *buf2 = NULL;
    size_t n2 = 0;
    if (l) {
        st = moe_model_save_buffer(l, &buf2, &n2, &err);
        CHECK(st == MOE_STATUS_OK && n2 == n && memcmp(buf, buf2, n) == 0, "resave differs");
    }
    free(buf);
    free(buf2);
    free(fb);
    moe_model_free(l2);
    moe_model_free(l);
    moe_model_free(m);
    unlink(path);
}

/* ---- tests -------------------------------------------------------------------- */

static void test_crc_reference(void) {
    CHECK(ref_crc32c((const unsigned char *)"123456789", 9) == 0xe3069283u, "CRC-32C check value");
}

static void test_roundtrip_regression(void) { roundtrip(make_regression, "reg.moe"); }
static void test_roundtrip_classification(void) { roundtrip(make_classification, "cls.moe"); }
static void test_roundtrip_single_expert(void) { roundtrip(make_single, "one.moe"); }
static void test_roundtrip_log_var(void) { roundtrip(make_log_var, "lv.moe"); }

/* Log-variance experts are written as version 3 (others stay version 2):
 * one more key and one more array, aligned like the rest. */
static void test_layout_log_var(void) {
    moe_model *m = make_log_var();
    void *vb = NULL;
    size_t n = 0;
    int ok = m && moe_model_save_buffer(m, &vb, &n, NULL) == MOE_STATUS_OK;
    REQUIRE(ok, "save");
    unsigned char *b = vb;
    CHECK(rd32(b + 8) == 3, "version %u", (unsigned)rd32(b + 8));
    CHECK(rd64(b + 24) == 1 + 18 + 5 + 1 + 3, "n_kv %llu", (unsigned long long)rd64(b + 24));
    CHECK(rd64(b + 32) == 19, "n_arrays %llu", (unsigned long long)rd64(b + 32));
    uint64_t cnt = 0;
    size_t at = find_array(b, n, "expert_log_var_coef", &cnt);
    CHECK(at && at % 32 == 0 && cnt == 2 * 2 * 4, "expert_log_var_coef at %zu count %llu", at,
          (unsigned long long)cnt);
    double v;
    memcpy(&v, &(uint64_t){rd64(b + at + 8)}, 8);
    CHECK(at && v == m->lv_coef[1], "expert_log_var_coef[1] little-endian");
    free(vb);
    moe_model_free(m);
}

/* The bytes follow docs/format.md: header fields, alignment, checksum. */
static void test_layout(void) {
    moe_model *m = make_regression();
    void *vb = NULL;
    size_t n = 0;
    int ok1 = m && moe_model_save_buffer(m, &vb, &n, NULL) == MOE_STATUS_OK;
    REQUIRE(ok1, "save");
    unsigned char *b = vb;
    CHECK(n >= 44 && memcmp(b, "MOEMODEL", 8) == 0, "magic");
    CHECK(rd32(b + 8) == 2, "version %u", (unsigned)rd32(b + 8));
    CHECK(rd32(b + 12) == 0, "reserved");
    CHECK(rd64(b + 16) == n, "file size field");
    CHECK(rd64(b + 24) == 1 + 18 + 5 + 3, "n_kv %llu", (unsigned long long)rd64(b + 24));
    CHECK(rd64(b + 32) == 18, "n_arrays %llu", (unsigned long long)rd64(b + 32));
    CHECK(rd32(b + n - 4) == ref_crc32c(b, n - 4), "checksum");
    uint64_t cnt = 0;
    size_t at = find_array(b, n, "cov", &cnt);
    CHECK(at && at % 32 == 0 && cnt == 6 * 4, "cov array at %zu count %llu", at,
          (unsigned long long)cnt);
    double v;
    memcpy(&v, &(uint64_t){rd64(b + at)}, 8);
    CHECK(at && v == m->cov[0], "cov[0] little-endian");
    at = find_array(b, n, "ecols", &cnt);
    CHECK(at && cnt == 3 && rd64(b + at + 8) == 2, "ecols");
    CHECK(find_bytes(b, n, "meta.features", 13) != (size_t)-1, "user metadata key");
    free(vb);
    moe_model_free(m);
}

/* Every prefix of a valid file is rejected, with "truncated at byte N". */
static void test_truncation(void) {
    moe_model *m = make_regression();
    void *vb = NULL;
    size_t n = 0;
    int ok2 = m && moe_model_save_buffer(m, &vb, &n, NULL) == MOE_STATUS_OK;
    REQUIRE(ok2, "save");
    int bad_msg = 0, cov_msg = 0;
    for (size_t len = 0; len < n; len++) {
        /* a fresh copy of exactly len bytes, so ASan sees any over-read */
        unsigned char *cut = malloc(len ? len : 1);
        memcpy(cut, vb, len);
        moe_model *l = NULL;
        moe_error err;
        moe_status st = moe_model_load_buffer(cut, len, "model.moe", &l, &err);
        CHECK(st == MOE_STATUS_FORMAT && !l, "prefix %zu accepted (status %d)", len, (int)st);
        char want[64];
        snprintf(want, sizeof want, "model.moe: truncated at byte %zu (", len);
        if (len > 0 && !strstr(err.message, want)) {
            if (bad_msg++ < 3) CHECK(0, "prefix %zu: message '%s'", len, err.message);
        }
        if (strstr(err.message, "(reading expert 4 covariance)")) cov_msg = 1;
        moe_model_free(l);
        free(cut);
    }
    CHECK(bad_msg == 0, "%d prefixes without a truncation message", bad_msg);
    CHECK(cov_msg, "no message names an expert's covariance");

    /* through a file: the message names the path */
    char path[256];
    path_in_tmp(path, sizeof path, "cut.moe");
    int ok3 = write_file(path, vb, n / 2) == 0;
    REQUIRE(ok3, "write");
    moe_model *l = NULL;
    moe_error err;
    CHECK(moe_model_load(path, &l, &err) == MOE_STATUS_FORMAT && !l, "cut file accepted");
    CHECK(strstr(err.message, path) && strstr(err.message, "truncated at byte"), "message: %s",
          err.message);
    CHECK(!strcmp(err.file, path), "err.file '%s'", err.file);
    unlink(path);
    free(vb);
    moe_model_free(m);
}

/* Flipping any single bit is caught. */
static void test_bit_flips(void) {
    moe_model *m = make_classification();
    void *vb = NULL;
    size_t n = 0;
    int ok4 = m && moe_model_save_buffer(m, &vb, &n, NULL) == MOE_STATUS_OK;
    REQUIRE(ok4, "save");
    unsigned char *b = vb;
    size_t accepted = 0, not_checksum = 0;
    for (size_t i = 0; i < n; i++) {
        for (int bit = 0; bit < 8; bit++) {
            b[i] ^= (unsigned char)(1u << bit);
            moe_model *l = NULL;
            moe_error err;
            moe_status st = moe_model_load_buffer(b, n, "flip", &l, &err);
            if (st == MOE_STATUS_OK || l) accepted++;
            /* past the magic, version and size fields it is the checksum */
            if ((i < 8 || i >= 24) && !strstr(err.message, "checksum mismatch")) {
                if (i >= 8 && not_checksum++ < 3) CHECK(0, "byte %zu bit %d: %s", i, bit, err.message);
            }
            moe_model_free(l);
            b[i] ^= (unsigned char)(1u << bit);
        }
    }
    CHECK(accepted == 0, "%zu flipped files accepted", accepted);
    CHECK(not_checksum == 0, "%zu flips not reported as checksum mismatch", not_checksum);
    moe_model *l = NULL;
    CHECK(moe_model_load_buffer(b, n, "ok", &l, NULL) == MOE_STATUS_OK, "restored file loads");
    moe_model_free(l);
    free(vb);
    moe_model_free(m);
}

static void test_foreign_files(void) {
    const char *csv = "x,y\n1.5,2\n3,4\n";
    moe_model *l = NULL;
    moe_error err;
    moe_status st = moe_model_load_buffer(csv, strlen(csv), "data.csv", &l, &err);
    CHECK(st == MOE_STATUS_FORMAT && !l, "csv accepted");
    CHECK(strstr(err.message, "data.csv") && strstr(err.message, "bad magic"), "message: %s",
          err.message);

    char path[256];
    snprintf(path, sizeof path, "%s/mcycle.csv", check_data_dir());
    st = moe_model_load(path, &l, &err);
    CHECK(st == MOE_STATUS_FORMAT && !l, "mcycle.csv: status %d", (int)st);
    CHECK(strstr(err.message, "not a moe model file (bad magic)"), "message: %s", err.message);

    st = moe_model_load_buffer("", 0, "empty", &l, &err);
    CHECK(st == MOE_STATUS_FORMAT && !l && strstr(err.message, "empty"), "empty: %s",
          err.message);
    st = moe_model_load_buffer("MOEMODEX", 8, "x", &l, &err);
    CHECK(st == MOE_STATUS_FORMAT && strstr(err.message, "bad magic"), "near magic: %s",
          err.message);

    path_in_tmp(path, sizeof path, "does-not-exist.moe");
    st = moe_model_load(path, &l, &err);
    CHECK(st == MOE_STATUS_IO && !l && strstr(err.message, path) &&
              strstr(err.message, strerror(ENOENT)),
          "missing file: %s", err.message);
}

static void test_newer_version(void) {
    moe_model *m = make_single();
    void *vb = NULL;
    size_t n = 0;
    int ok5 = m && moe_model_save_buffer(m, &vb, &n, NULL) == MOE_STATUS_OK;
    REQUIRE(ok5, "save");
    unsigned char *b = vb;
    wr32(b + 8, 4);
    fix_crc(b, n);
    moe_model *l = NULL;
    moe_error err;
    moe_status st = moe_model_load_buffer(b, n, "future.moe", &l, &err);
    CHECK(st == MOE_STATUS_VERSION && !l, "status %d", (int)st);
    CHECK(strstr(err.message, "future.moe") && strstr(err.message, "version 4") &&
              strstr(err.message, "newer"),
          "message: %s", err.message);
    /* a newer version may change everything after the version field */
    wr32(b + 8, 1000);
    memset(b + 12, 0xab, n - 12);
    st = moe_model_load_buffer(b, n, "future.moe", &l, &err);
    CHECK(st == MOE_STATUS_VERSION && !l, "status %d", (int)st);
    wr32(b + 8, 0);
    st = moe_model_load_buffer(b, n, "zero.moe", &l, &err);
    CHECK(st == MOE_STATUS_FORMAT && !l, "version 0: status %d", (int)st);
    free(vb);
    moe_model_free(m);
}

/* Files with a valid checksum but bad contents. */
static void edit_and_expect(const moe_model *m, const char *array, size_t index, double value,
                            int as_u64, const char *expect) {
    void *vb = NULL;
    size_t n = 0;
    int ok6 = moe_model_save_buffer(m, &vb, &n, NULL) == MOE_STATUS_OK;
    REQUIRE(ok6, "save");
    unsigned char *b = vb;
    uint64_t cnt = 0;
    size_t at = find_array(b, n, array, &cnt);
    if (!at || index >= cnt) {
        CHECK(0, "array %s[%zu] not found", array, index);
        free(vb);
        return;
    }
    if (as_u64)
        wr64(b + at + 8 * index, (uint64_t)value);
    else
        wrf64(b + at + 8 * index, value);
    fix_crc(b, n);
    moe_model *l = NULL;
    moe_error err;
    moe_status st = moe_model_load_buffer(b, n, "edited.moe", &l, &err);
    CHECK(st == MOE_STATUS_FORMAT && !l, "%s[%zu] = %g accepted", array, index, value);
    CHECK(strstr(err.message, expect) && strstr(err.message, "byte "), "%s: message '%s'", array,
          err.message);
    moe_model_free(l);
    free(vb);
}

static void test_invalid_contents(void) {
    moe_model *m = make_regression();
    REQUIRE(m, "model");
    edit_and_expect(m, "ecols", 1, 5, 1, "ecols[1] = 5 is not a column");
    edit_and_expect(m, "gcols", 0, 1e6, 1, "gcols[0]");
    edit_and_expect(m, "x_scale", 2, 0.0, 0, "x_scale[2]");
    edit_and_expect(m, "x_scale", 0, -1.0, 0, "x_scale[0]");
    edit_and_expect(m, "y_scale", 1, INFINITY, 0, "y_scale[1]");
    edit_and_expect(m, "x_mean", 4, NAN, 0, "x_mean[4]");
    edit_and_expect(m, "coef", 7, NAN, 0, "coef[7]");
    edit_and_expect(m, "gate_coef", 3, -INFINITY, 0, "gate_coef[3]");
    edit_and_expect(m, "gate_nch", 1, 2, 1, "gate_nch[1]");
    edit_and_expect(m, "cov", 4 * 2 + 1, 50.0, 0, "expert 2 covariance is not symmetric");
    edit_and_expect(m, "cov", 4 * 3 + 0, -1.0, 0, "expert 3 covariance is not positive definite");
    edit_and_expect(m, "event_kind", 1, 99, 1, "event 1 has unknown kind");
    edit_and_expect(m, "event_expert", 0, 6, 1, "event 0: expert 6");

    /* diagonal and isotropic covariances must look like it */
    moe_model *s = make_single();
    REQUIRE(s, "single");
    edit_and_expect(s, "cov", 1, 0.01, 0, "isotropic");
    edit_and_expect(s, "cov", 4, 0.5, 0, "equal diagonal");
    moe_model_free(s);

    /* a required key renamed away */
    void *vb = NULL;
    size_t n = 0;
    int ok7 = moe_model_save_buffer(m, &vb, &n, NULL) == MOE_STATUS_OK;
    REQUIRE(ok7, "save");
    unsigned char *b = vb;
    size_t at = find_bytes(b, n, "moe.n_cols", 10);
    REQUIRE(at != (size_t)-1, "key");
    b[at + 9] = 'X';
    fix_crc(b, n);
    moe_model *l = NULL;
    moe_error err;
    CHECK(moe_model_load_buffer(b, n, "k.moe", &l, &err) == MOE_STATUS_FORMAT && !l, "accepted");
    CHECK(strstr(err.message, "required key 'moe.n_cols' is missing"), "message: %s", err.message);
    b[at + 9] = 's';

    /* a wrong type for a known key */
    at = find_bytes(b, n, "moe.task", 8);
    REQUIRE(at != (size_t)-1, "key");
    wr32(b + at + 8, 3); /* f64 instead of u64 */
    fix_crc(b, n);
    CHECK(moe_model_load_buffer(b, n, "k.moe", &l, &err) == MOE_STATUS_FORMAT && !l, "accepted");
    CHECK(strstr(err.message, "has type f64, expected u64"), "message: %s", err.message);
    wr32(b + at + 8, 1);
    wr64(b + at + 12, 7); /* task 7 */
    fix_crc(b, n);
    CHECK(moe_model_load_buffer(b, n, "k.moe", &l, &err) == MOE_STATUS_FORMAT && !l, "accepted");
    CHECK(strstr(err.message, "moe.task = 7"), "message: %s", err.message);
    wr64(b + at + 12, 0);

    free(vb);

    /* a duplicate user metadata key: rename "meta.dup2" to "meta.dup1" */
    moe_model *s2 = make_single();
    REQUIRE(s2, "single");
    moe_model_meta_set(s2, "dup1", "x");
    moe_model_meta_set(s2, "dup2", "y");
    vb = NULL;
    int ok8 = moe_model_save_buffer(s2, &vb, &n, NULL) == MOE_STATUS_OK;
    REQUIRE(ok8, "save");
    b = vb;
    at = find_bytes(b, n, "meta.dup2", 9);
    REQUIRE(at != (size_t)-1, "key");
    b[at + 8] = '1';
    fix_crc(b, n);
    CHECK(moe_model_load_buffer(b, n, "k.moe", &l, &err) == MOE_STATUS_FORMAT && !l, "accepted");
    CHECK(strstr(err.message, "duplicate metadata key 'dup1'"), "message: %s", err.message);
    moe_model_free(s2);
    free(vb);
    moe_model_free(m);

    /* log-variance heads: finite, present exactly when the key says so,
     * only with diagonal variances */
    moe_model *lv = make_log_var();
    REQUIRE(lv, "log-variance model");
    edit_and_expect(lv, "expert_log_var_coef", 5, NAN, 0, "expert_log_var_coef[5]");
    vb = NULL;
    int ok9 = moe_model_save_buffer(lv, &vb, &n, NULL) == MOE_STATUS_OK;
    REQUIRE(ok9, "save");
    b = vb;
    at = find_bytes(b, n, "moe.expert_log_var", 18);
    REQUIRE(at != (size_t)-1, "key");
    wr64(b + at + 22, 2);
    fix_crc(b, n);
    CHECK(moe_model_load_buffer(b, n, "k.moe", &l, &err) == MOE_STATUS_FORMAT && !l, "accepted");
    CHECK(strstr(err.message, "moe.expert_log_var = 2 (0 or 1)"), "message: %s", err.message);
    wr64(b + at + 22, 0);
    fix_crc(b, n);
    CHECK(moe_model_load_buffer(b, n, "k.moe", &l, &err) == MOE_STATUS_FORMAT && !l, "accepted");
    CHECK(strstr(err.message, "expert_log_var_coef' has 16 elements, expected 0"), "message: %s",
          err.message);
    wr64(b + at + 22, 1);
    at = find_bytes(b, n, "moe.variance", 12);
    REQUIRE(at != (size_t)-1, "key");
    wr64(b + at + 16, MOE_VARIANCE_FULL);
    fix_crc(b, n);
    CHECK(moe_model_load_buffer(b, n, "k.moe", &l, &err) == MOE_STATUS_FORMAT && !l, "accepted");
    CHECK(strstr(err.message, "needs a regression with diagonal variances"), "message: %s",
          err.message);
    free(vb);
    moe_model_free(lv);
}

/* Keys and arrays this version does not know are skipped. */
static void test_unknown_entries_ignored(void) {
    moe_model *m = make_regression();
    void *vb = NULL;
    size_t n = 0;
    int ok9 = m && moe_model_save_buffer(m, &vb, &n, NULL) == MOE_STATUS_OK;
    REQUIRE(ok9, "save");
    /* insert a 32-byte entry after the header: u64 12, "future.thing", u32 1, u64 */
    unsigned char *b = malloc(n + 32);
    REQUIRE(b, "alloc");
    memcpy(b, vb, 40);
    wr64(b + 40, 12);
    memcpy(b + 48, "future.thing", 12);
    wr32(b + 60, 1);
    wr64(b + 64, 42);
    memcpy(b + 72, (unsigned char *)vb + 40, n - 40);
    wr64(b + 16, n + 32);
    wr64(b + 24, rd64(b + 24) + 1);
    fix_crc(b, n + 32);
    moe_model *l = NULL;
    moe_error err;
    moe_status st = moe_model_load_buffer(b, n + 32, "new.moe", &l, &err);
    CHECK(st == MOE_STATUS_OK && l, "unknown key: %s", err.message);
    if (l) check_same_model(m, l);
    moe_model_free(l);
    l = NULL;

    /* an unknown array (name "extra", 2 elements) appended before the checksum:
     * 8 + 5 + 4 + 8 = 25 header bytes, 7 bytes of padding, 16 bytes of data */
    size_t body = n - 4; /* a multiple of 8 */
    size_t pad = (32 - (body + 25) % 32) % 32;
    size_t add = 25 + pad + 16;
    unsigned char *c = calloc(1, n + add);
    REQUIRE(c, "alloc");
    memcpy(c, vb, body);
    wr64(c + body, 5);
    memcpy(c + body + 8, "extra", 5);
    wr32(c + body + 13, 3);
    wr64(c + body + 17, 2);
    wrf64(c + body + 25 + pad, 1.0);
    wrf64(c + body + 25 + pad + 8, 2.0);
    wr64(c + 16, n + add);
    wr64(c + 32, rd64(c + 32) + 1);
    fix_crc(c, n + add);
    st = moe_model_load_buffer(c, n + add, "new.moe", &l, &err);
    CHECK(st == MOE_STATUS_OK && l, "unknown array: %s", err.message);
    if (l) check_same_model(m, l);
    moe_model_free(l);
    /* non-zero padding is not */
    if (pad > 0) {
        c[body + 25] = 1;
        fix_crc(c, n + add);
        l = NULL;
        st = moe_model_load_buffer(c, n + add, "new.moe", &l, &err);
        CHECK(st == MOE_STATUS_FORMAT && !l && strstr(err.message, "padding"), "padding: %s",
              err.message);
    }
    /* nor trailing bytes after the declared size */
    l = NULL;
    unsigned char *d = calloc(1, n + 8);
    REQUIRE(d, "alloc");
    memcpy(d, vb, n);
    st = moe_model_load_buffer(d, n + 8, "long.moe", &l, &err);
    CHECK(st == MOE_STATUS_FORMAT && !l, "trailing bytes accepted");
    free(d);
    free(c);
    free(b);
    free(vb);
    moe_model_free(m);
}

/* A model that could not be loaded back is not saved. */
static void test_save_invalid_model(void) {
    moe_model *m = make_regression();
    REQUIRE(m, "model");
    m->x_scale[1] = NAN;
    char path[256];
    path_in_tmp(path, sizeof path, "invalid.moe");
    moe_error err;
    void *vb = (void *)1;
    size_t n = 1;
    CHECK(moe_model_save_buffer(m, &vb, &n, &err) == MOE_STATUS_INVALID_ARGUMENT && !vb && !n,
          "invalid model serialised");
    CHECK(strstr(err.message, "x_scale[1]"), "message: %s", err.message);
    CHECK(moe_model_save(m, path, &err) == MOE_STATUS_INVALID_ARGUMENT, "invalid model saved");
    CHECK(count_entries(tmp_dir) == 0, "files left in %s", tmp_dir);
    CHECK(moe_model_save(NULL, path, &err) == MOE_STATUS_INVALID_ARGUMENT, "NULL model");
    CHECK(moe_model_save(m, NULL, &err) == MOE_STATUS_INVALID_ARGUMENT, "NULL path");
    moe_model *l = (moe_model *)1;
    CHECK(moe_model_load_buffer(NULL, 5, "x", &l, &err) == MOE_STATUS_INVALID_ARGUMENT && !l,
          "NULL data");
    moe_model_free(m);
}

static void test_save_missing_dir(void) {
    moe_model *m = make_single();
    REQUIRE(m, "model");
    char path[256];
    path_in_tmp(path, sizeof path, "no/such/dir/m.moe");
    moe_error err;
    moe_status st = moe_model_save(m, path, &err);
    CHECK(st == MOE_STATUS_IO, "status %d", (int)st);
    CHECK(strstr(err.message, path) && strstr(err.message, strerror(ENOENT)), "message: %s",
          err.message);
    CHECK(count_entries(tmp_dir) == 0, "something was left in %s", tmp_dir);

    /* an unwritable directory (root ignores permissions: skip then) */
    if (geteuid() != 0) {
        char ro[128];
        path_in_tmp(ro, sizeof ro, "ro");
        int ok10 = mkdir(ro, 0500) == 0;
        REQUIRE(ok10, "mkdir");
        snprintf(path, sizeof path, "%s/m.moe", ro);
        st = moe_model_save(m, path, &err);
        CHECK(st == MOE_STATUS_IO && strstr(err.message, strerror(EACCES)), "read-only: %s",
              err.message);
        CHECK(count_entries(ro) == 0, "something was left in %s", ro);
        rmdir(ro);
    }
    moe_model_free(m);
}

static void test_save_replaces(void) {
    moe_model *a = make_regression(), *b = make_classification();
    REQUIRE(a && b, "models");
    char path[256];
    path_in_tmp(path, sizeof path, "model.moe");
    int ok11 = write_file(path, "old contents\n", 13) == 0;
    REQUIRE(ok11, "write");
    chmod(path, 0640);
    moe_error err;
    CHECK(moe_model_save(a, path, &err) == MOE_STATUS_OK, "save: %s", err.message);
    CHECK(moe_model_save(b, path, &err) == MOE_STATUS_OK, "save again: %s", err.message);
    CHECK(count_entries(tmp_dir) == 1, "%d entries in %s", count_entries(tmp_dir), tmp_dir);
    struct stat sb;
    CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0640, "mode %o not kept",
          (unsigned)(sb.st_mode & 0777));
    moe_model *l = NULL;
    CHECK(moe_model_load(path, &l, &err) == MOE_STATUS_OK && l, "load: %s", err.message);
    if (l) check_same_model(b, l);
    moe_model_free(l);

    /* a directory in the way: the save fails and leaves no temporary file */
    char dpath[256];
    path_in_tmp(dpath, sizeof dpath, "adir");
    int ok12 = mkdir(dpath, 0700) == 0;
    REQUIRE(ok12, "mkdir");
    CHECK(moe_model_save(a, dpath, &err) == MOE_STATUS_IO && strstr(err.message, dpath),
          "saving over a directory: %s", err.message);
    CHECK(count_entries(tmp_dir) == 2, "%d entries in %s", count_entries(tmp_dir), tmp_dir);
    rmdir(dpath);
    unlink(path);
    moe_model_free(a);
    moe_model_free(b);
}

/* Inputs that once crashed the loader (found by fuzz/fuzz_model.c) must
 * load or fail cleanly; a saved copy of whatever loads must load again. */
static void test_regressions(void) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/model_regressions", check_data_dir());
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    int n_files = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        moe_model *l = NULL;
        moe_error err;
        moe_status st = moe_model_load(path, &l, &err);
        CHECK(st != MOE_STATUS_OK || l, "%s: OK without a model", path);
        if (l) {
            void *vb = NULL;
            size_t n = 0;
            moe_model *l2 = NULL;
            CHECK(moe_model_save_buffer(l, &vb, &n, &err) == MOE_STATUS_OK, "%s: resave: %s",
                  path, err.message);
            CHECK(!vb || moe_model_load_buffer(vb, n, path, &l2, &err) == MOE_STATUS_OK,
                  "%s: reload: %s", path, err.message);
            free(vb);
            moe_model_free(l2);
        }
        moe_model_free(l);
        n_files++;
    }
    closedir(d);
    CHECK(n_files >= 0, "files");
}

int main(void) {
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/moe_test_model_io_XXXXXX");
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_crc_reference);
    RUN(test_roundtrip_regression);
    RUN(test_roundtrip_classification);
    RUN(test_roundtrip_single_expert);
    RUN(test_roundtrip_log_var);
    RUN(test_layout);
    RUN(test_layout_log_var);
    RUN(test_truncation);
    RUN(test_bit_flips);
    RUN(test_foreign_files);
    RUN(test_newer_version);
    RUN(test_invalid_contents);
    RUN(test_unknown_entries_ignored);
    RUN(test_save_invalid_model);
    RUN(test_save_missing_dir);
    RUN(test_save_replaces);
    RUN(test_regressions);
    clear_dir(tmp_dir);
    rmdir(tmp_dir);
    return check_finish();
}
