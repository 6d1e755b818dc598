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

#define REQUIRE(cond, ...)                                                       \
    do {                                                                         \
        CHECK(cond, __VA_ARGS__);                                                \
        if (!(cond)) return;                                                     \
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

#endif
