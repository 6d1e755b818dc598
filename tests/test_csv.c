/*
 * test_csv.c -- the CSV reader (src/csv.c) and cell parsing (src/cell.c):
 * RFC 4180 quoting, delimiter detection, CRLF/BOM, every syntax error with
 * its exact line and column, numbers in the "C" locale, the shared data
 * sets, and the fuzzer's crash inputs (tests/data/csv_regressions/).
 */
#include "moe.h"
#include "check.h"
#include "csv_impl.h" /* moe_csv_reader_open_block: tiny read windows */

#include <dirent.h>
#include <locale.h>
#include <stdint.h>
#include <unistd.h>

static moe_table *read_str(const char *text, moe_error *err) {
    moe_table *t = NULL;
    memset(err, 0, sizeof *err);
    moe_table_read_csv_buffer(text, strlen(text), "data.csv", NULL, &t, err);
    return t;
}

static void fixture(char *out, size_t size, const char *name) {
    snprintf(out, size, "%s/csv/%s", check_data_dir(), name);
}

#define CHECK_CELL(t, i, j, want)                                                        \
    do {                                                                                 \
        const char *got_ = moe_table_cell((t), (i), (j));                                \
        CHECK(got_ && strcmp(got_, (want)) == 0, "cell (%d,%d) = '%s', want '%s'", (int)(i), \
              (int)(j), got_ ? got_ : "(null)", (want));                                 \
    } while (0)

/* Read `text`, expect failure with this status, message, line and column. */
#define CHECK_FAILS(text, want_status, want_msg, want_line, want_col)                    \
    do {                                                                                 \
        moe_error e_;                                                                    \
        moe_table *t_ = read_str((text), &e_);                                           \
        CHECK(t_ == NULL, "parsed but should fail: %s", (want_msg));                     \
        CHECK(e_.status == (want_status), "status %d, want %d (%s)", (int)e_.status,      \
              (int)(want_status), e_.message);                                           \
        CHECK(strcmp(e_.message, (want_msg)) == 0, "message '%s', want '%s'", e_.message, \
              (want_msg));                                                               \
        CHECK(e_.line == (want_line) && e_.column == (want_col), "at %zu:%zu, want %d:%d",  \
              e_.line, e_.column, (int)(want_line), (int)(want_col));                    \
        CHECK(strcmp(e_.file, "data.csv") == 0, "file '%s'", e_.file);                   \
        moe_table_free(t_);                                                              \
    } while (0)

static void test_quoting(void) {
    moe_status st;
    char path[512];
    moe_error err;
    moe_table *t = NULL;
    fixture(path, sizeof path, "quoted.csv");
    st = moe_table_read_csv(path, NULL, &t, &err);
    REQUIRE(st == MOE_STATUS_OK, "%s", err.message);
    CHECK(moe_table_n_rows(t) == 3 && moe_table_n_cols(t) == 3, "%zu x %zu",
          moe_table_n_rows(t), moe_table_n_cols(t));
    CHECK_CELL(t, 0, 0, "Smith, J.");
    CHECK_CELL(t, 0, 1, "He said \"hi\"");
    CHECK_CELL(t, 1, 0, "multi\nline");
    CHECK_CELL(t, 1, 1, "plain");
    CHECK_CELL(t, 2, 0, "spaced");
    CHECK_CELL(t, 2, 1, "  kept  ");
    CHECK_CELL(t, 2, 2, "3");
    CHECK(moe_table_row_line(t, 0) == 2 && moe_table_row_line(t, 1) == 3 &&
              moe_table_row_line(t, 2) == 5,
          "lines %zu %zu %zu", moe_table_row_line(t, 0), moe_table_row_line(t, 1),
          moe_table_row_line(t, 2));
    CHECK(moe_table_cell(t, 3, 0) == NULL && moe_table_cell(t, 0, 3) == NULL, "out of range");
    CHECK(moe_table_col_index(t, "comment") == 1, "col index");
    CHECK(moe_table_col_index(t, "nope") == MOE_TABLE_NO_COL, "no col");
    moe_table_free(t);

    /* quote characters inside unquoted fields are data; empty quoted fields,
     * a trailing delimiter (empty last field), no final newline */
    t = read_str("a,b,c\n5'10\",\"\",\n\"x\"\"\",y,\"\"\"\"", &err);
    REQUIRE(t, "%s", err.message);
    CHECK_CELL(t, 0, 0, "5'10\"");
    CHECK_CELL(t, 0, 1, "");
    CHECK_CELL(t, 0, 2, "");
    CHECK_CELL(t, 1, 0, "x\"");
    CHECK_CELL(t, 1, 2, "\"");
    moe_table_free(t);

    /* a quoted header name with the delimiter in it */
    t = read_str("\"a,b\",c\n1,2\n", &err);
    REQUIRE(t, "%s", err.message);
    CHECK(strcmp(moe_table_col_name(t, 0), "a,b") == 0, "name '%s'", moe_table_col_name(t, 0));
    CHECK(moe_table_col_name(t, 2) == NULL, "out of range name");
    moe_table_free(t);
}

static void test_delimiters(void) {
    moe_status st;
    moe_error err;
    moe_table *t;
    char path[512];
    moe_csv_params p = moe_csv_params_default();

    t = read_str("a;b;c\n1,5;2;3\n", &err);
    REQUIRE(t, "%s", err.message);
    CHECK(moe_table_delimiter(t) == ';' && moe_table_n_cols(t) == 3, "semicolon");
    CHECK_CELL(t, 0, 0, "1,5");
    moe_table_free(t);

    fixture(path, sizeof path, "tabs.tsv");
    st = moe_table_read_csv(path, NULL, &t, &err);
    REQUIRE(st == MOE_STATUS_OK, "%s", err.message);
    CHECK(moe_table_delimiter(t) == '\t' && moe_table_n_cols(t) == 3, "tab");
    CHECK_CELL(t, 0, 1, "");
    CHECK_CELL(t, 1, 0, "4\t5");
    moe_table_free(t);

    /* one column: no delimiter at all */
    t = read_str("y\n1\n2\n", &err);
    REQUIRE(t, "%s", err.message);
    CHECK(moe_table_delimiter(t) == ',' && moe_table_n_cols(t) == 1 && moe_table_n_rows(t) == 2,
          "single column");
    moe_table_free(t);

    /* a comma inside quotes does not count; a tie goes to ',' */
    t = read_str("\"a,b,c\";d\n1;2\n", &err);
    REQUIRE(t, "%s", err.message);
    CHECK(moe_table_delimiter(t) == ';', "quoted commas ignored");
    moe_table_free(t);
    t = read_str("a,b;c\n1,2;3\n", &err);
    REQUIRE(t, "%s", err.message);
    CHECK(moe_table_delimiter(t) == ',' && moe_table_n_cols(t) == 2, "tie");
    moe_table_free(t);

    /* given explicitly */
    p.delimiter = '|';
    st = moe_table_read_csv_buffer("a|b\n1,2|3\n", 10, "x", &p, &t, &err);
    REQUIRE(st == MOE_STATUS_OK,
            "%s", err.message);
    CHECK(moe_table_n_cols(t) == 2 && moe_table_delimiter(t) == '|', "explicit");
    CHECK_CELL(t, 0, 0, "1,2");
    moe_table_free(t);
    p.delimiter = '"';
    CHECK(moe_table_read_csv_buffer("a\n1\n", 4, "x", &p, &t, &err) ==
              MOE_STATUS_INVALID_ARGUMENT && t == NULL,
          "quote as delimiter");
}

static void test_crlf_bom(void) {
    moe_status st;
    moe_error err;
    moe_table *t = NULL;
    char path[512];
    fixture(path, sizeof path, "bom_crlf_semicolon.csv");
    st = moe_table_read_csv(path, NULL, &t, &err);
    REQUIRE(st == MOE_STATUS_OK, "%s", err.message);
    CHECK(strcmp(moe_table_col_name(t, 0), "a") == 0, "BOM skipped: '%s'",
          moe_table_col_name(t, 0));
    CHECK(strcmp(moe_table_col_name(t, 2), "c;d") == 0, "quoted name");
    CHECK(moe_table_n_rows(t) == 2, "rows %zu", moe_table_n_rows(t));
    CHECK_CELL(t, 0, 2, "x\r\ny");
    CHECK_CELL(t, 1, 2, "5");
    CHECK(moe_table_row_line(t, 1) == 4, "line %zu", moe_table_row_line(t, 1));
    moe_table_free(t);

    /* old Mac CR line ends, blank and blank-only lines skipped, no final newline */
    t = read_str("a,b\r1,2\r\r  \r\n3,4", &err);
    REQUIRE(t, "%s", err.message);
    CHECK(moe_table_n_rows(t) == 2, "rows %zu", moe_table_n_rows(t));
    CHECK_CELL(t, 1, 1, "4");
    CHECK(moe_table_row_line(t, 1) == 5, "line %zu", moe_table_row_line(t, 1));
    moe_table_free(t);

    /* leading blank lines before the header */
    t = read_str("\n\n x , y \n1,2\n", &err);
    REQUIRE(t, "%s", err.message);
    CHECK(strcmp(moe_table_col_name(t, 0), "x") == 0 && strcmp(moe_table_col_name(t, 1), "y") == 0,
          "trimmed names");
    CHECK(moe_table_row_line(t, 0) == 4, "line %zu", moe_table_row_line(t, 0));
    moe_table_free(t);
}

static void test_errors(void) {
    CHECK_FAILS("", MOE_STATUS_FORMAT, "data.csv: empty file", 0, 0);
    CHECK_FAILS("\xef\xbb\xbf\n  \r\n", MOE_STATUS_FORMAT, "data.csv: empty file", 0, 0);
    CHECK_FAILS("a,b\n", MOE_STATUS_DATA, "data.csv:2: no data rows after the header", 2, 0);
    CHECK_FAILS("a,b", MOE_STATUS_DATA, "data.csv:1: no data rows after the header", 1, 0);
    CHECK_FAILS("a,b,c\n1,2,3\n\n4,5\n", MOE_STATUS_FORMAT, "data.csv:4: 2 fields, expected 3", 4,
                0);
    CHECK_FAILS("a,b\n1,2,3\n", MOE_STATUS_FORMAT, "data.csv:2: 3 fields, expected 2", 2, 0);
    CHECK_FAILS("a,b\n1\n", MOE_STATUS_FORMAT, "data.csv:2: 1 field, expected 2", 2, 0);
    CHECK_FAILS("a,b\n1,2\n3,\"open\n\n", MOE_STATUS_FORMAT,
                "data.csv:3:2 (column 'b'): unterminated quoted field", 3, 2);
    CHECK_FAILS("a,\"b\n", MOE_STATUS_FORMAT, "data.csv:1:2: unterminated quoted field", 1, 2);
    CHECK_FAILS("a,b\n1,\"x\"y\n", MOE_STATUS_FORMAT,
                "data.csv:2:2 (column 'b'): unexpected 'y' after a closing quote", 2, 2);
    CHECK_FAILS("a,,c\n1,2,3\n", MOE_STATUS_FORMAT, "data.csv:1:2: empty column name", 1, 2);
    CHECK_FAILS("x,y,x,y\n1,2,3,4\n", MOE_STATUS_FORMAT,
                "data.csv:1:3: duplicate column name 'x' (also column 1)", 1, 3);
    CHECK_FAILS("b,a,c,a,b\n1,2,3,4,5\n", MOE_STATUS_FORMAT,
                "data.csv:1:4: duplicate column name 'a' (also column 2)", 1, 4);
    {
        static const char nul[] = "a,b\n1,2\n3,\0\n";
        moe_error err;
        moe_table *t = NULL;
        CHECK(moe_table_read_csv_buffer(nul, sizeof nul - 1, "data.csv", NULL, &t, &err) ==
                  MOE_STATUS_FORMAT,
              "NUL");
        CHECK(strcmp(err.message, "data.csv:3: NUL byte (not a text file?)") == 0, "%s",
              err.message);
        CHECK(t == NULL, "no table");
    }
    {
        char path[512];
        moe_error err;
        moe_table *t = NULL;
        fixture(path, sizeof path, "ragged.csv");
        CHECK(moe_table_read_csv(path, NULL, &t, &err) == MOE_STATUS_FORMAT && err.line == 3,
              "%s", err.message);
        CHECK(strstr(err.message, "ragged.csv:3: 2 fields, expected 3") != NULL, "%s",
              err.message);
        fixture(path, sizeof path, "unterminated.csv");
        CHECK(moe_table_read_csv(path, NULL, &t, &err) == MOE_STATUS_FORMAT && err.line == 2 &&
                  err.column == 2,
              "%s", err.message);
        fixture(path, sizeof path, "no_such_file.csv");
        CHECK(moe_table_read_csv(path, NULL, &t, &err) == MOE_STATUS_IO && t == NULL, "%s",
              err.message);
        CHECK(strstr(err.message, "cannot open") != NULL, "%s", err.message);
    }
    /* messages stay on one line whatever the names hold */
    {
        moe_error err;
        moe_table *t = read_str("\"a\nb\",\"a\nb\"\n1,2\n", &err);
        CHECK(t == NULL && strchr(err.message, '\n') == NULL, "%s", err.message);
    }
}

static void test_stream(void) {
    moe_status st;
    moe_error err;
    moe_table *t = NULL;
    FILE *f = tmpfile();
    REQUIRE(f, "tmpfile");
    fputs("u,v\n1,2\n3,4\n", f);
    rewind(f);
    st = moe_table_read_csv_file(f, NULL, NULL, &t, &err);
    REQUIRE(st == MOE_STATUS_OK, "%s", err.message);
    CHECK(moe_table_n_rows(t) == 2 && strcmp(moe_table_name(t), "<stdin>") == 0, "stream");
    moe_table_free(t);
    rewind(f);
    st = moe_table_read_csv_file(f, "pipe", NULL, &t, &err);
    REQUIRE(st == MOE_STATUS_OK, "%s",
            err.message);
    CHECK(strcmp(moe_table_name(t), "pipe") == 0, "name");
    moe_table_free(t);
    fclose(f);
    moe_table_free(NULL);
}

static void test_numbers(void) {
    static const struct {
        const char *text;
        int ok;
        double value;
    } cases[] = {
        {"1", 1, 1},        {" -2.5 ", 1, -2.5},  {"+.5", 1, 0.5},     {"1.", 1, 1},
        {"1e3", 1, 1000},   {"1E-3", 1, 1e-3},    {"-0", 1, -0.0},     {"007", 1, 7},
        {"\t12\t", 1, 12},  {"1e400", 0, 0},      {"nan", 0, 0},       {"-Infinity", 0, 0},
        {"inf", 0, 0},      {"0x10", 0, 0},       {"1,5", 0, 0},       {"1e", 0, 0},
        {".", 0, 0},        {"", 0, 0},           {"NA", 0, 0},        {"1 2", 0, 0},
        {"abc", 0, 0},      {"- 1", 0, 0},        {"1e-400", 1, 0},    {"123456789012345678901234", 1, 1.2345678901234568e23},
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double v = -99;
        int ok = moe_parse_double(cases[i].text, &v);
        CHECK(ok == cases[i].ok, "'%s': ok %d", cases[i].text, ok);
        if (ok && cases[i].ok) CHECK(v == cases[i].value, "'%s' -> %.17g", cases[i].text, v);
    }
    /* exact round trip of %.17g and of short decimals, against strtod */
    {
        uint64_t s = 12345;
        int bad = 0;
        for (i = 0; i < 20000; i++) {
            char buf[64];
            double x, y = 0;
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            x = ldexp((double)(s >> 11), -53) * pow(10.0, (double)((int)(s % 41) - 20));
            if (s & 1) x = -x;
            snprintf(buf, sizeof buf, i % 2 ? "%.17g" : "%.6g", x);
            if (!moe_parse_double(buf, &y) || y != strtod(buf, NULL)) bad++;
            moe_format_double(x, buf, sizeof buf);
            if (!moe_parse_double(buf, &y) || y != x) bad++;
        }
        CHECK(bad == 0, "%d mismatches", bad);
    }
    /* formatting and quoting */
    {
        char buf[64];
        CHECK(moe_format_double(0.1, buf, sizeof buf) == 19 &&
                  strcmp(buf, "0.10000000000000001") == 0,
              "%s", buf);
        moe_format_double(-INFINITY, buf, sizeof buf);
        CHECK(strcmp(buf, "-inf") == 0, "%s", buf);
        CHECK(moe_format_double(1.5, buf, 3) == 3 && strcmp(buf, "1.") == 0, "truncated %s", buf);
        CHECK(moe_csv_quote("plain", ',', buf, sizeof buf) == 5 && strcmp(buf, "plain") == 0,
              "%s", buf);
        CHECK(moe_csv_quote("a,\"b\"", ',', buf, sizeof buf) == 9 &&
                  strcmp(buf, "\"a,\"\"b\"\"\"") == 0,
              "%s", buf);
        CHECK(moe_csv_quote("a;b", ',', buf, sizeof buf) == 3, "%s", buf);
        CHECK(moe_csv_quote(" x", ',', buf, sizeof buf) == 4, "%s", buf);
        CHECK(moe_csv_quote("line\nbreak", ';', NULL, 0) == 12, "size only");
    }
}

/* A locale with a decimal comma must not change how numbers read. */
static void test_locale(void) {
    static const char *names[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "fr_FR.utf8",
                                  "de_DE", NULL};
    const char *got = NULL;
    size_t i;
    char buf[64];
    double v = 0;
    for (i = 0; names[i] && !got; i++) got = setlocale(LC_NUMERIC, names[i]);
    if (!got) {
        printf("  (no decimal-comma locale installed: checking the C locale only)\n");
    } else {
        /* the locale is live: plain strtod stops at the '.' */
        CHECK(strtod("1.5", NULL) == 1.0 || strtod("1,5", NULL) != 1.5,
              "locale %s has a decimal point", got);
    }
    CHECK(moe_parse_double("1.25", &v) && v == 1.25, "1.25 -> %g", v);
    CHECK(moe_parse_double("0.12345678901234567890123", &v) && v == 0.12345678901234568,
          "long mantissa -> %.17g", v);
    CHECK(!moe_parse_double("1,25", &v), "decimal comma is text");
    moe_format_double(2.5, buf, sizeof buf);
    CHECK(strcmp(buf, "2.5") == 0, "format '%s'", buf);
    setlocale(LC_NUMERIC, "C");
}

static const char *shared_dir(void) {
    const char *d = getenv("MOE_SHARED_DATA");
    return d && *d ? d : "../shared/data";
}

static void test_shared_data(void) {
    static const struct {
        const char *name;
        size_t rows, cols;
    } sets[] = {
        {"boston_train.csv", 380, 14},  {"boston_test.csv", 126, 14},
        {"mcycle_train.csv", 100, 2},   {"mcycle_test.csv", 33, 2},
        {"npreg_train.csv", 150, 2},    {"npreg_test.csv", 50, 2},
        {"tonedata_train.csv", 112, 2}, {"tonedata_test.csv", 38, 2},
        {"vowel_train.csv", 528, 10},   {"vowel_test.csv", 462, 10},
    };
    size_t i, found = 0;
    for (i = 0; i < sizeof sets / sizeof sets[0]; i++) {
        char path[1024];
        FILE *f;
        moe_error err;
        moe_table *t = NULL;
        snprintf(path, sizeof path, "%s/%s", shared_dir(), sets[i].name);
        if (!(f = fopen(path, "r"))) continue;
        fclose(f);
        found++;
        CHECK(moe_table_read_csv(path, NULL, &t, &err) == MOE_STATUS_OK, "%s", err.message);
        if (!t) continue;
        CHECK(moe_table_n_rows(t) == sets[i].rows && moe_table_n_cols(t) == sets[i].cols,
              "%s: %zu x %zu", sets[i].name, moe_table_n_rows(t), moe_table_n_cols(t));
        CHECK(strcmp(moe_table_col_name(t, sets[i].cols - 1), "y") == 0, "%s: target name",
              sets[i].name);
        moe_table_free(t);
    }
    if (!found) printf("  (skipped: no data sets in %s)\n", shared_dir());
}

/* Every saved crash input: read as CSV (then fit and apply an encoder) and
 * as encoder text. Only "no crash, clean status" is checked. */
static void test_regressions(void) {
    char dir[512];
    DIR *d;
    struct dirent *ent;
    size_t n = 0;
    snprintf(dir, sizeof dir, "%s/csv_regressions", check_data_dir());
    d = opendir(dir);
    if (!d) {
        printf("  (skipped: no %s)\n", dir);
        return;
    }
    while ((ent = readdir(d)) != NULL) {
        char path[1024];
        FILE *f;
        char *buf;
        long size;
        moe_error err;
        moe_table *t = NULL;
        moe_encoder *enc = NULL, *enc2 = NULL;
        moe_encoded *e = NULL;
        if (ent->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", dir, ent->d_name);
        if (!(f = fopen(path, "rb"))) continue;
        fseek(f, 0, SEEK_END);
        size = ftell(f);
        rewind(f);
        buf = malloc((size_t)size + 1);
        if (!buf || fread(buf, 1, (size_t)size, f) != (size_t)size) {
            fclose(f);
            free(buf);
            CHECK(0, "cannot read %s", path);
            continue;
        }
        fclose(f);
        buf[size] = '\0';
        n++;
        if (moe_table_read_csv_buffer(buf, (size_t)size, ent->d_name, NULL, &t, &err) ==
            MOE_STATUS_OK) {
            moe_encoder_params p = moe_encoder_params_default();
            p.missing = MOE_MISSING_DROP;
            if (moe_encoder_fit(t, &p, &enc, &err) == MOE_STATUS_OK) {
                char *text = NULL;
                moe_encoder_apply_params ap = moe_encoder_apply_params_default();
                ap.missing = MOE_MISSING_DROP;
                if (moe_encoder_apply(enc, t, &ap, &e, &err) == MOE_STATUS_OK)
                    CHECK(e->n_rows > 0, "%s: empty encoding", ent->d_name);
                CHECK(moe_encoder_to_string(enc, &text, &err) == MOE_STATUS_OK, "%s", err.message);
                CHECK(text && moe_encoder_from_string(text, &enc2, &err) == MOE_STATUS_OK,
                      "%s: round trip: %s", ent->d_name, err.message);
                free(text);
            }
        } else {
            CHECK(t == NULL && err.message[0] && !strchr(err.message, '\n'), "%s: bad error",
                  ent->d_name);
        }
        moe_encoder_free(enc2);
        enc2 = NULL;
        if (moe_encoder_from_string(buf, &enc2, &err) != MOE_STATUS_OK)
            CHECK(enc2 == NULL && !strchr(err.message, '\n'), "%s: bad error", ent->d_name);
        moe_encoder_free(enc2);
        moe_encoded_free(e);
        moe_encoder_free(enc);
        moe_table_free(t);
        free(buf);
    }
    closedir(d);
    printf("  (%zu regression inputs)\n", n);
}

/* ---- the batch reader against the whole-file reader ---------------------- */

/* Same table (cells and lines) or the same error, for every read window
 * and batch size; and the same encoder (or error) from moe_encoder_fit_csv
 * as from moe_encoder_fit. Returns the number of comparisons. */
static size_t compare_reader(const char *path, const char *label) {
    static const size_t blocks[] = {1, 2, 3, 5, 8, 64, 0};
    static const size_t batches[] = {1, 3, 100000};
    moe_error e1, e2;
    moe_table *t = NULL;
    moe_status s1 = moe_table_read_csv(path, NULL, &t, &e1);
    size_t n = 0, bi, bj;
    for (bi = 0; bi < sizeof blocks / sizeof blocks[0]; bi++)
        for (bj = 0; bj < sizeof batches / sizeof batches[0]; bj++) {
            moe_csv_reader *rd = NULL;
            const moe_table *b = NULL;
            size_t row = 0, pass;
            moe_status s2 = moe_csv_reader_open_block(path, NULL, blocks[bi], &rd, &e2);
            for (pass = 0; pass < 2 && s2 == MOE_STATUS_OK; pass++) { /* twice: rewind */
                row = 0;
                if (pass) s2 = moe_csv_reader_rewind(rd, &e2);
                while (s2 == MOE_STATUS_OK &&
                       (s2 = moe_csv_reader_next(rd, batches[bj], &b, &e2)) == MOE_STATUS_OK && b) {
                    size_t i, j;
                    CHECK(moe_table_n_rows(b) <= batches[bj], "%s: batch too big", label);
                    for (i = 0; i < moe_table_n_rows(b) && t; i++, row++) {
                        CHECK(moe_table_row_line(b, i) == moe_table_row_line(t, row),
                              "%s block %zu batch %zu row %zu: line %zu vs %zu", label, blocks[bi],
                              batches[bj], row, moe_table_row_line(b, i), moe_table_row_line(t, row));
                        for (j = 0; j < moe_table_n_cols(t); j++) {
                            const char *x = moe_table_cell(b, i, j), *y = moe_table_cell(t, row, j);
                            CHECK(x && y && strcmp(x, y) == 0, "%s block %zu: cell %zu,%zu '%s' vs '%s'",
                                  label, blocks[bi], row, j, x ? x : "(null)", y ? y : "(null)");
                        }
                    }
                }
            }
            CHECK(s1 == s2, "%s block %zu batch %zu: status %d vs %d (%s / %s)", label, blocks[bi],
                  batches[bj], (int)s1, (int)s2, s1 ? e1.message : "", s2 ? e2.message : "");
            if (s1 != MOE_STATUS_OK && s1 == s2)
                CHECK(strcmp(e1.message, e2.message) == 0 && e1.line == e2.line &&
                          e1.column == e2.column,
                      "%s block %zu: '%s' vs '%s'", label, blocks[bi], e1.message, e2.message);
            if (s1 == MOE_STATUS_OK && s2 == MOE_STATUS_OK) {
                CHECK(row == moe_table_n_rows(t), "%s: %zu rows vs %zu", label, row,
                      moe_table_n_rows(t));
                CHECK(moe_csv_reader_n_cols(rd) == moe_table_n_cols(t) &&
                          strcmp(moe_csv_reader_col_name(rd, 0), moe_table_col_name(t, 0)) == 0,
                      "%s: header", label);
            }
            if (s1 == MOE_STATUS_OK && s2 == MOE_STATUS_OK && bj == 0) {
                /* encoders: from the table and from the file in batches */
                moe_encoder_params ep = moe_encoder_params_default();
                int drop;
                for (drop = 0; drop < 2; drop++) {
                    moe_encoder *a = NULL, *c = NULL;
                    char *ta = NULL, *tc = NULL;
                    moe_status f1, f2;
                    ep.missing = drop ? MOE_MISSING_DROP : MOE_MISSING_ERROR;
                    f1 = moe_encoder_fit(t, &ep, &a, &e1);
                    f2 = moe_encoder_fit_csv(rd, &ep, &c, &e2);
                    CHECK(f1 == f2, "%s: fit %d vs %d (%s / %s)", label, (int)f1, (int)f2, e1.message, e2.message);
                    if (f1 != MOE_STATUS_OK && f1 == f2)
                        CHECK(strcmp(e1.message, e2.message) == 0 && e1.line == e2.line,
                              "%s: fit '%s' vs '%s'", label, e1.message, e2.message);
                    if (f1 == MOE_STATUS_OK && f2 == MOE_STATUS_OK) {
                        moe_encoder_to_string(a, &ta, &e1);
                        moe_encoder_to_string(c, &tc, &e2);
                        CHECK(ta && tc && strcmp(ta, tc) == 0, "%s: encoders differ", label);
                    }
                    free(ta);
                    free(tc);
                    moe_encoder_free(a);
                    moe_encoder_free(c);
                    n++;
                }
            }
            moe_csv_reader_free(rd);
            n++;
        }
    moe_table_free(t);
    return n;
}

static void test_reader(void) {
    static const char *const texts[] = {
        "", "\xef\xbb\xbf\n  \r\n", "a,b\n", "a,b", "a,b,c\n1,2,3\n\n4,5\n", "a,b\n1,2,3\n",
        "a,b\n1\n", "a,b\n1,2\n3,\"open\n\n", "a,\"b\n", "a,b\n1,\"x\"y\n", "a,,c\n1,2,3\n",
        "x,y,x,y\n1,2,3,4\n", "a,b\r1,2\r\r  \r\n3,4", "\n\n x , y \n1,2\n",
        "a;b;c\n1,5;2;3\n", "\"a,b,c\";d\n1;2\n", "a,b\r\n\"x\r\ny\",\"\"\"q\"\"\"\r\n 3 , 4 \r\n",
        "y\n1\n2\n", "a\tb\n1\t\"2\t3\"\n", "c,y\nred,1\nblue,2\nred,3\ngreen,1\n",
        "c,y\nred,a\nblue,b\nNA,a\ngreen,b\n", "x,y\n1,2\n3,\n5,6\n", "x,w,y\n1,-1,2\n",
        "x,y\n1,abc\n2,inf\n", "a,b\n1,2\n3,\0\n",
    };
    char path[64];
    size_t k, n = 0;
    DIR *d;
    struct dirent *ent;
    snprintf(path, sizeof path, "/tmp/moe-test-reader-XXXXXX");
    {
        int fd = mkstemp(path);
        REQUIRE(fd >= 0, "mkstemp");
        close(fd);
    }
    for (k = 0; k < sizeof texts / sizeof texts[0]; k++) {
        FILE *f = fopen(path, "wb");
        size_t len = strlen(texts[k]);
        char label[32];
        REQUIRE(f, "fopen");
        if (k == sizeof texts / sizeof texts[0] - 1) len = 12; /* the NUL one */
        fwrite(texts[k], 1, len, f);
        fclose(f);
        snprintf(label, sizeof label, "text %zu", k);
        n += compare_reader(path, label);
    }
    remove(path);
    {
        char dir[512];
        const char *sub[2] = {"csv", "csv_regressions"};
        for (k = 0; k < 2; k++) {
            snprintf(dir, sizeof dir, "%s/%s", check_data_dir(), sub[k]);
            if (!(d = opendir(dir))) continue;
            while ((ent = readdir(d)) != NULL) {
                char file[1024];
                if (ent->d_name[0] == '.') continue;
                snprintf(file, sizeof file, "%s/%s", dir, ent->d_name);
                n += compare_reader(file, ent->d_name);
            }
            closedir(d);
        }
    }
    {
        moe_csv_reader *rd = NULL;
        moe_error err;
        CHECK(moe_csv_reader_open("/nonexistent/x.csv", NULL, &rd, &err) == MOE_STATUS_IO &&
                  !rd && strstr(err.message, "cannot open"),
              "%s", err.message);
        moe_csv_reader_free(NULL);
    }
    printf("  (%zu comparisons)\n", n);
}

int main(void) {
    RUN(test_quoting);
    RUN(test_delimiters);
    RUN(test_crlf_bom);
    RUN(test_errors);
    RUN(test_stream);
    RUN(test_numbers);
    RUN(test_locale);
    RUN(test_shared_data);
    RUN(test_regressions);
    RUN(test_reader);
    return check_finish();
}
