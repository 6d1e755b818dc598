/*
 * test_moed.c -- .moed data files (src/moed.c): CSV -> .moed -> dataset
 * equals the CSV's own encoding bit for bit; the row source (pread) equals
 * the memory-mapped view, for every chunk size and shard; truncated,
 * corrupted, foreign and newer-version files fail with the right status
 * and the file's name; training from the source equals training from the
 * mapped view.
 */
#include "moe.h"
#include "check.h"

#include <stdint.h>
#include <unistd.h>

static char dir[64];

static void path_in(char *out, size_t size, const char *name) {
    snprintf(out, size, "%s/%s", dir, name);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static long file_size(const char *path) {
    FILE *f = fopen(path, "rb");
    long n;
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fclose(f);
    return n;
}

/* Bytes of a file (caller frees), *n its size. */
static unsigned char *slurp(const char *path, size_t *n) {
    long size = file_size(path);
    unsigned char *b;
    FILE *f;
    if (size < 0 || !(b = malloc((size_t)size + 1)) || !(f = fopen(path, "rb"))) return NULL;
    *n = fread(b, 1, (size_t)size, f);
    fclose(f);
    return b;
}

static void spit(const char *path, const unsigned char *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(b, 1, n, f);
    fclose(f);
}

/* CSV -> .moed through the streaming path, with encoder params ep. */
static moe_status convert(const char *csv, const char *moed, const moe_encoder_params *ep,
                          moe_error *err) {
    moe_csv_reader *rd = NULL;
    moe_encoder *enc = NULL;
    moe_moed_writer *w = NULL;
    moe_encoder_apply_params ap = moe_encoder_apply_params_default();
    moe_status st;
    ap.missing = ep->missing;
    ap.target = MOE_TARGET_USE_REQUIRED;
    st = moe_csv_reader_open(csv, NULL, &rd, err);
    if (!st) st = moe_encoder_fit_csv(rd, ep, &enc, err);
    if (!st) {
        int cls = moe_encoder_task(enc) == MOE_TASK_CLASSIFICATION;
        st = moe_moed_writer_open(moed, moe_encoder_n_features(enc),
                                  cls ? 0 : moe_encoder_n_targets(enc),
                                  cls ? moe_encoder_n_classes(enc) : 0,
                                  moe_encoder_weights_name(enc) != NULL, enc, &w, err);
    }
    if (!st) st = moe_csv_reader_rewind(rd, err);
    if (!st) st = moe_moed_writer_append_csv(w, rd, enc, &ap, NULL, err);
    if (!st) st = moe_moed_writer_commit(w, err);
    moe_moed_writer_free(w);
    moe_encoder_free(enc);
    moe_csv_reader_free(rd);
    return st;
}

static int same_doubles(const double *a, size_t lda, const double *b, size_t ldb, size_t n,
                        size_t w) {
    size_t i;
    for (i = 0; i < n; i++)
        if (w && memcmp(a + i * lda, b + i * ldb, w * sizeof *a) != 0) return 0;
    return 1;
}

/* The .moed equals the in-memory encoding of the same CSV. */
static void round_trip(const char *csv, const moe_encoder_params *ep, const char *label) {
    char out[256];
    moe_error err;
    moe_table *t = NULL;
    moe_encoder *enc = NULL;
    moe_encoded *e = NULL;
    moe_moed *m = NULL;
    moe_encoder_apply_params ap = moe_encoder_apply_params_default();
    char *ta = NULL, *tb = NULL;
    path_in(out, sizeof out, "rt.moed");
    REQUIRE(convert(csv, out, ep, &err) == MOE_STATUS_OK, "%s: %s", label, err.message);
    REQUIRE(moe_table_read_csv(csv, NULL, &t, &err) == MOE_STATUS_OK, "%s", err.message);
    REQUIRE(moe_encoder_fit(t, ep, &enc, &err) == MOE_STATUS_OK, "%s", err.message);
    ap.missing = ep->missing;
    ap.target = MOE_TARGET_USE_REQUIRED;
    REQUIRE(moe_encoder_apply(enc, t, &ap, &e, &err) == MOE_STATUS_OK, "%s", err.message);
    REQUIRE(moe_moed_open(out, &m, &err) == MOE_STATUS_OK, "%s: %s", label, err.message);
    {
        moe_dataset a = moe_encoded_dataset(e), b = moe_moed_dataset(m);
        CHECK(a.n_rows == b.n_rows && a.n_cols == b.n_cols && a.n_outputs == b.n_outputs &&
                  a.n_classes == b.n_classes,
              "%s: shape %zu x %zu vs %zu x %zu", label, a.n_rows, a.n_cols, b.n_rows, b.n_cols);
        CHECK(same_doubles(a.x, a.ld_x, b.x, b.ld_x, a.n_rows, a.n_cols), "%s: x differs", label);
        CHECK(same_doubles(a.y ? a.y : b.y, a.ld_y, b.y, b.ld_y, a.n_rows, a.n_outputs) &&
                  (!a.y) == (!b.y),
              "%s: y differs", label);
        CHECK((!a.labels) == (!b.labels) &&
                  (!a.labels || memcmp(a.labels, b.labels, a.n_rows * sizeof *a.labels) == 0),
              "%s: labels differ", label);
        CHECK((!a.weights) == (!b.weights) &&
                  (!a.weights || memcmp(a.weights, b.weights, a.n_rows * sizeof *a.weights) == 0),
              "%s: weights differ", label);
        CHECK(moe_moed_n_dropped(m) == e->n_dropped, "%s: dropped %zu vs %zu", label,
              moe_moed_n_dropped(m), e->n_dropped);
    }
    CHECK(moe_moed_encoder(m) && moe_encoder_to_string(moe_moed_encoder(m), &ta, &err) == 0 &&
              moe_encoder_to_string(enc, &tb, &err) == 0 && strcmp(ta, tb) == 0,
          "%s: encoders differ", label);
    CHECK(moe_moed_verify(m, &err) == MOE_STATUS_OK, "%s: %s", label, err.message);
    CHECK(strcmp(moe_moed_name(m), out) == 0, "name");
    free(ta);
    free(tb);
    moe_moed_close(m);
    moe_encoded_free(e);
    moe_encoder_free(enc);
    moe_table_free(t);
}

static void test_round_trip(void) {
    char path[512];
    moe_encoder_params ep = moe_encoder_params_default();
    const char *w = "w";
    const char *targets[2] = {"y1", "y2"};
    snprintf(path, sizeof path, "%s/csv/train_cat.csv", check_data_dir());
    round_trip(path, &ep, "train_cat");
    snprintf(path, sizeof path, "%s/mcycle.csv", check_data_dir());
    round_trip(path, &ep, "mcycle");
    /* multi-output, weights, a categorical input, missing values dropped */
    path_in(path, sizeof path, "multi.csv");
    {
        FILE *f = fopen(path, "wb");
        int i;
        REQUIRE(f, "fopen");
        fputs("a,c,w,y1,y2\n", f);
        for (i = 0; i < 3000; i++)
            fprintf(f, "%.6f,%s,%.3f,%s,%.17g\n", i * 0.001 - 1.2, i % 3 ? "u" : "v x",
                    (i % 7) * 0.5, i % 97 == 5 ? "NA" : "1.5e-3", i * 1e-7 - 0.1);
        fclose(f);
    }
    ep.weights = w;
    ep.targets = targets;
    ep.n_targets = 2;
    ep.missing = MOE_MISSING_DROP;
    round_trip(path, &ep, "multi");
}

static void test_save_and_source(void) {
    enum { N = 1000, F = 3 };
    static double x[N * F], w[N];
    static int32_t lab[N];
    char out[256];
    moe_dataset d;
    moe_error err;
    moe_moed *m = NULL;
    size_t i;
    path_in(out, sizeof out, "cls.moed");
    for (i = 0; i < N; i++) {
        x[i * F] = (double)i / N;
        x[i * F + 1] = sin((double)i);
        x[i * F + 2] = -0.0;
        w[i] = (double)(i % 5);
        lab[i] = (int32_t)(i % 3);
    }
    memset(&d, 0, sizeof d);
    d.n_rows = N;
    d.n_cols = F;
    d.x = x;
    d.ld_x = F;
    d.n_classes = 3;
    d.labels = lab;
    d.weights = w;
    REQUIRE(moe_moed_save(out, &d, NULL, &err) == MOE_STATUS_OK, "%s", err.message);
    REQUIRE(moe_moed_open(out, &m, &err) == MOE_STATUS_OK, "%s", err.message);
    {
        moe_dataset v = moe_moed_dataset(m);
        CHECK(moe_moed_encoder(m) == NULL, "no encoder");
        CHECK(v.n_rows == N && memcmp(v.x, x, sizeof x) == 0 && memcmp(v.labels, lab, sizeof lab) == 0 &&
                  memcmp(v.weights, w, sizeof w) == 0 && !v.y,
              "view");
        CHECK(signbit(v.x[2]), "the sign of zero survives");
        CHECK(((uintptr_t)v.x % 64) == 0 && ((uintptr_t)v.labels % 64) == 0 &&
                  ((uintptr_t)v.weights % 64) == 0,
              "aligned");
    }
    /* sources: every shard and chunk size reads what the view holds */
    {
        static const size_t shards[][2] = {{0, N}, {0, 1}, {1, 2}, {17, 600}, {999, 1000}, {500, 500}};
        static double bx[N * F], bw[N];
        static int32_t bl[N];
        size_t s;
        moe_dataset v = moe_moed_dataset(m);
        for (s = 0; s < sizeof shards / sizeof shards[0]; s++) {
            moe_source src;
            moe_row_buffers buf = {bx, NULL, bl, bw, N};
            size_t chunk, b0 = shards[s][0], b1 = shards[s][1];
            REQUIRE(moe_moed_source_open(out, b0, b1, &src, &err) == MOE_STATUS_OK, "%s", err.message);
            CHECK(src.n_rows == b1 - b0 && src.first_row == b0 && src.n_cols == F &&
                      src.n_classes == 3 && src.has_weights && src.chunk_rows >= 256,
                  "source fields");
            for (chunk = 1; chunk <= N; chunk = chunk * 7 + 1) {
                size_t r0;
                for (r0 = 0; r0 < src.n_rows; r0 += chunk) {
                    size_t n = src.n_rows - r0 < chunk ? src.n_rows - r0 : chunk;
                    moe_rows view;
                    REQUIRE(src.read(src.ctx, r0, n, &buf, &view, &err) == MOE_STATUS_OK, "%s",
                            err.message);
                    CHECK(view.ld_x == F && memcmp(view.x, v.x + (b0 + r0) * F, n * F * 8) == 0 &&
                              memcmp(view.labels, v.labels + b0 + r0, n * 4) == 0 &&
                              memcmp(view.weights, v.weights + b0 + r0, n * 8) == 0 && !view.y,
                          "shard %zu chunk %zu rows %zu..", s, chunk, r0);
                }
            }
            {
                moe_rows view;
                CHECK(src.read(src.ctx, src.n_rows, 1, &buf, &view, &err) ==
                          MOE_STATUS_INVALID_ARGUMENT,
                      "read past the end");
            }
            moe_moed_source_close(&src);
            CHECK(src.ctx == NULL && src.read == NULL, "closed");
            moe_moed_source_close(&src); /* twice: a zeroed source */
        }
        {
            moe_source src;
            CHECK(moe_moed_source_open(out, 10, 5, &src, &err) == MOE_STATUS_INVALID_ARGUMENT &&
                      src.ctx == NULL,
                  "bad range");
            CHECK(moe_moed_source_open(out, 0, N + 1, &src, &err) == MOE_STATUS_INVALID_ARGUMENT,
                  "range past the end");
        }
    }
    /* the writer refuses bad rows */
    {
        moe_moed_writer *wr = NULL;
        lab[5] = 3;
        CHECK(moe_moed_save(out, &d, NULL, &err) == MOE_STATUS_DATA && strstr(err.message, "label"),
              "%s", err.message);
        lab[5] = 2;
        w[7] = -1;
        CHECK(moe_moed_save(out, &d, NULL, &err) == MOE_STATUS_DATA && strstr(err.message, "weight"),
              "%s", err.message);
        w[7] = 2;
        CHECK(moe_moed_writer_open(out, 2, 1, 3, 0, NULL, &wr, &err) == MOE_STATUS_INVALID_ARGUMENT,
              "outputs and classes");
        REQUIRE(moe_moed_writer_open(out, 2, 1, 0, 0, NULL, &wr, &err) == MOE_STATUS_OK, "%s",
                err.message);
        CHECK(moe_moed_writer_append(wr, &d, &err) == MOE_STATUS_INVALID_ARGUMENT, "shape");
        moe_moed_writer_free(wr); /* abandoned: the old file stays */
        moe_moed_close(m);
        m = NULL;
        CHECK(moe_moed_open(out, &m, &err) == MOE_STATUS_OK, "old file intact: %s", err.message);
    }
    moe_moed_close(m);
    moe_moed_close(NULL);
    moe_moed_writer_free(NULL);
}

/* Open `path` expecting failure with `status` and `what` in the message,
 * which must name the file. */
static void expect_fail_src(const char *path, moe_status status, const char *what,
                            const char *label, int source_too) {
    moe_moed *m = NULL;
    moe_source src;
    moe_error err;
    moe_status st = moe_moed_open(path, &m, &err);
    CHECK(st == status && m == NULL, "%s: status %d, want %d (%s)", label, (int)st, (int)status,
          err.message);
    CHECK(strstr(err.message, what) && strstr(err.message, path) == err.message &&
              !strchr(err.message, '\n'),
          "%s: message '%s' (want '%s')", label, err.message, what);
    st = moe_moed_source_open(path, 0, MOE_MOED_ALL_ROWS, &src, &err);
    if (source_too)
        CHECK(st == status && src.ctx == NULL, "%s: source status %d", label, (int)st);
    moe_moed_source_close(&src);
    moe_moed_close(m);
}

static void expect_fail(const char *path, moe_status status, const char *what, const char *label) {
    expect_fail_src(path, status, what, label, 1);
}

static void test_bad_files(void) {
    char good[256], bad[256];
    unsigned char *b;
    size_t n, cut;
    moe_error err;
    moe_moed *m = NULL;
    path_in(good, sizeof good, "cls.moed");
    path_in(bad, sizeof bad, "bad.moed");
    b = slurp(good, &n);
    REQUIRE(b && n > 200, "fixture");
    /* truncated anywhere */
    for (cut = 0; cut < n; cut += cut < 140 ? 1 : 997) {
        spit(bad, b, cut);
        if (cut >= 8 || cut == 0)
            expect_fail(bad, MOE_STATUS_FORMAT, "truncated", "truncated");
    }
    /* foreign */
    write_text(bad, "x,y\n1,2\n");
    expect_fail(bad, MOE_STATUS_FORMAT, "not a .moed data file", "foreign");
    CHECK(!moe_moed_is_moed(bad) && moe_moed_is_moed(good), "is_moed");
    /* newer version; version 0 */
    b[8] = 2;
    spit(bad, b, n);
    expect_fail(bad, MOE_STATUS_VERSION, "newer", "newer");
    b[8] = 0;
    spit(bad, b, n);
    expect_fail(bad, MOE_STATUS_FORMAT, "version 0", "version 0");
    b[8] = 1;
    /* any flipped header bit */
    for (cut = 16; cut < 128; cut += 5) {
        b[cut] ^= 0x10;
        spit(bad, b, n);
        {
            moe_status st = moe_moed_open(bad, &m, &err);
            CHECK(st == MOE_STATUS_FORMAT && strstr(err.message, bad) == err.message,
                  "byte %zu: %d %s", cut, (int)st, err.message);
            moe_moed_close(m);
            m = NULL;
        }
        b[cut] ^= 0x10;
    }
    /* bytes after the end */
    {
        unsigned char *c = malloc(n + 3);
        REQUIRE(c, "malloc");
        memcpy(c, b, n);
        memset(c + n, 0, 3);
        spit(bad, c, n + 3);
        free(c);
        expect_fail(bad, MOE_STATUS_FORMAT, "after the end", "trailing");
    }
    /* a flipped data bit: opens (data is not read), verify finds it */
    b[n - 9] ^= 1; /* inside the weights */
    spit(bad, b, n);
    REQUIRE(moe_moed_open(bad, &m, &err) == MOE_STATUS_OK, "%s", err.message);
    CHECK(moe_moed_verify(m, &err) == MOE_STATUS_FORMAT && strstr(err.message, "weights"), "%s",
          err.message);
    moe_moed_close(m);
    m = NULL;
    b[n - 9] ^= 1;
    /* a label out of range: refused by the view and by the source */
    {
        size_t off = 0, k;
        moe_source src;
        for (k = 0; k < 8; k++) off |= (size_t)b[80 + k] << (8 * k); /* labels offset */
        REQUIRE(off > 0 && off + 40 < n, "labels offset %zu", off);
        b[off + 4 * 9] = 7; /* row 10 */
        spit(bad, b, n);
        expect_fail_src(bad, MOE_STATUS_FORMAT, "row 10: label 7", "label", 0);
        b[off + 4 * 9] = 0;
        b[off + 4 * 600] = 9; /* row 601: only a read that covers it fails */
        spit(bad, b, n);
        REQUIRE(moe_moed_source_open(bad, 0, MOE_MOED_ALL_ROWS, &src, &err) == MOE_STATUS_OK, "%s",
                err.message);
        {
            static double bx[1000 * 3], bw[1000];
            static int32_t bl[1000];
            moe_row_buffers buf = {bx, NULL, bl, bw, 1000};
            moe_rows view;
            CHECK(src.read(src.ctx, 0, 600, &buf, &view, &err) == MOE_STATUS_OK, "%s", err.message);
            CHECK(src.read(src.ctx, 590, 20, &buf, &view, &err) == MOE_STATUS_FORMAT &&
                      strstr(err.message, "row 601: label 9") && strstr(err.message, bad),
                  "%s", err.message);
        }
        moe_moed_source_close(&src);
        b[off + 4 * 600] = 0;
    }
    free(b);
    {
        moe_moed *g = NULL;
        CHECK(moe_moed_open("/nonexistent/x.moed", &g, &err) == MOE_STATUS_IO &&
                  strstr(err.message, "/nonexistent/x.moed"),
              "%s", err.message);
    }
}

/* Training from the streamed source equals training from the mapped view. */
static void test_train(void) {
    char csv[256], out[256];
    moe_error err;
    moe_moed *m = NULL;
    moe_model *a = NULL, *b = NULL;
    moe_source src;
    moe_train_params p = moe_train_params_default();
    moe_encoder_params ep = moe_encoder_params_default();
    snprintf(csv, sizeof csv, "%s/mcycle.csv", check_data_dir());
    path_in(out, sizeof out, "mcycle.moed");
    REQUIRE(convert(csv, out, &ep, &err) == MOE_STATUS_OK, "%s", err.message);
    REQUIRE(moe_moed_open(out, &m, &err) == MOE_STATUS_OK, "%s", err.message);
    REQUIRE(moe_moed_source_open(out, 0, MOE_MOED_ALL_ROWS, &src, &err) == MOE_STATUS_OK, "%s",
            err.message);
    p.tree.n_levels = 1;
    p.tree.branching[0] = 3;
    p.n_restarts = 2;
    p.n_threads = 1;
    {
        moe_dataset d = moe_moed_dataset(m);
        REQUIRE(moe_train(&d, &p, &a, &err) == MOE_STATUS_OK, "%s", err.message);
    }
    REQUIRE(moe_train_source(&src, &p, &b, &err) == MOE_STATUS_OK, "%s", err.message);
    {
        moe_fit_report ra = moe_model_report(a), rb = moe_model_report(b);
        moe_dataset d = moe_moed_dataset(m);
        double *ma = malloc(d.n_rows * sizeof *ma), *mb = malloc(d.n_rows * sizeof *mb);
        REQUIRE(ma && mb, "malloc");
        CHECK(ra.loglik == rb.loglik && ra.iterations == rb.iterations, "loglik %.17g vs %.17g",
              ra.loglik, rb.loglik);
        moe_model_predict_mean(a, d.n_rows, d.x, d.ld_x, ma, NULL, &err);
        moe_model_predict_mean(b, d.n_rows, d.x, d.ld_x, mb, NULL, &err);
        CHECK(memcmp(ma, mb, d.n_rows * sizeof *ma) == 0, "predictions differ");
        free(ma);
        free(mb);
    }
    moe_model_free(a);
    moe_model_free(b);
    moe_moed_source_close(&src);
    moe_moed_close(m);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/moe-test-moed-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_round_trip);
    RUN(test_save_and_source);
    RUN(test_bad_files);
    RUN(test_train);
    {
        static const char *const names[] = {"rt.moed", "multi.csv", "cls.moed", "bad.moed",
                                            "mcycle.moed"};
        size_t i;
        char p[256];
        for (i = 0; i < sizeof names / sizeof names[0]; i++) {
            path_in(p, sizeof p, names[i]);
            remove(p);
        }
        rmdir(dir);
    }
    return check_finish();
}
