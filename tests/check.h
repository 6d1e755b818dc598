/*
 * check.h -- the tiny test harness every tests/test_*.c program uses.
 *
 * A test program is a list of test functions run by RUN(fn). Inside a test,
 * CHECK(cond, fmt, ...) records a failure (with file:line and a message) and
 * lets the test go on; REQUIRE returns from the test at once. Each test
 * prints "PASS name" or "FAIL name"; tests/run.sh adds them up into the
 * final "N passed, N failed" line. main() returns check_finish().
 */
#ifndef MOE_CHECK_H
#define MOE_CHECK_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_failed_now;
static int check_n_pass, check_n_fail;

#define CHECK(cond, ...)                                                         \
    do {                                                                         \
        if (!(cond)) {                                                           \
            check_failed_now = 1;                                                \
            fprintf(stderr, "  %s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                        \
            fputc('\n', stderr);                                                 \
        }                                                                        \
    } while (0)

/* The condition is evaluated once (it may allocate). */
#define REQUIRE(cond, ...)                                                       \
    do {                                                                         \
        int require_ok_ = (cond) ? 1 : 0;                                        \
        CHECK(require_ok_, __VA_ARGS__);                                         \
        if (!require_ok_) return;                                                \
    } while (0)

/* |a - b| <= tol * max(1, |b|) */
#define CHECK_NEAR(a, b, tol)                                                    \
    CHECK(fabs((double)(a) - (double)(b)) <= (tol) * fmax(1.0, fabs((double)(b))), \
          "%.17g vs %.17g (tol %g)", (double)(a), (double)(b), (double)(tol))

#define RUN(fn)                                                                  \
    do {                                                                         \
        check_failed_now = 0;                                                    \
        fn();                                                                    \
        printf("%s %s\n", check_failed_now ? "FAIL" : "PASS", #fn);              \
        fflush(stdout);                                                          \
        if (check_failed_now) check_n_fail++; else check_n_pass++;               \
    } while (0)

static inline int check_finish(void) { return check_n_fail ? 1 : 0; }

/* Directory of test fixtures: $MOE_TEST_DATA or tests/data. */
static inline const char *check_data_dir(void) {
    const char *d = getenv("MOE_TEST_DATA");
    return d && *d ? d : "tests/data";
}


/* A numeric CSV fixture: header names and an n_rows x n_cols row-major
 * matrix. Tests only: the library's CSV reader is tested on its own. */
typedef struct check_csv {
    size_t n_rows, n_cols;
    char names[64][64];
    double *v;
} check_csv;

static inline int check_csv_read(const char *path, check_csv *out) {
    FILE *fp = fopen(path, "r");
    if (!fp) return -1;
    char line[4096];
    memset(out, 0, sizeof *out);
    if (!fgets(line, sizeof line, fp)) { fclose(fp); return -1; }
    for (char *tok = strtok(line, ",\r\n"); tok && out->n_cols < 64; tok = strtok(NULL, ",\r\n")) {
        if (*tok == '"') tok++;
        size_t l = strlen(tok);
        if (l && tok[l - 1] == '"') tok[l - 1] = 0;
        snprintf(out->names[out->n_cols++], 64, "%s", tok);
    }
    size_t cap = 1024;
    out->v = malloc(cap * out->n_cols * sizeof(double));
    while (out->v && fgets(line, sizeof line, fp)) {
        if (out->n_rows == cap) {
            cap *= 2;
            double *nv = realloc(out->v, cap * out->n_cols * sizeof(double));
            if (!nv) { free(out->v); out->v = NULL; break; }
            out->v = nv;
        }
        char *s = line;
        for (size_t j = 0; j < out->n_cols; j++) {
            out->v[out->n_rows * out->n_cols + j] = strtod(s, &s);
            if (*s == ',') s++;
        }
        out->n_rows++;
    }
    fclose(fp);
    return out->v ? 0 : -1;
}

static inline int check_csv_col(const check_csv *c, const char *name) {
    for (size_t j = 0; j < c->n_cols; j++)
        if (strcmp(c->names[j], name) == 0) return (int)j;
    return -1;
}

/* Test data: splitmix64 draws with Box-Muller normals, independent of the
 * library's own generator, so a test's data never change with it. */
typedef struct check_gen {
    uint64_t s;
} check_gen;

static inline uint64_t check_gen_next(check_gen *g) {
    uint64_t z = (g->s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static inline double check_gen_unif(check_gen *g) {
    return (double)(check_gen_next(g) >> 11) * 0x1.0p-53;
}
static inline double check_gen_norm(check_gen *g) {
    double u = 1.0 - check_gen_unif(g), v = check_gen_unif(g);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* EM's trace never decreases by more than rel * |l|. */
static inline int check_monotone(const double *tr, size_t n, double rel) {
    for (size_t i = 1; i < n; i++)
        if (tr[i] < tr[i - 1] - rel * fabs(tr[i - 1])) return (int)i;
    return 0;
}

#endif
