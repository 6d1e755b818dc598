/*
 * util.c -- errors, the log callback, small numerics and the random number
 * generator shared by the whole library.
 */
#include "moe_impl.h"

#include <cblas.h>
#include <omp.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

const char *moe_version(void) { return MOE_VERSION_STRING; }

const char *moe_status_str(moe_status status) {
    switch (status) {
    case MOE_STATUS_OK: return "ok";
    case MOE_STATUS_INVALID_ARGUMENT: return "invalid argument";
    case MOE_STATUS_NO_MEMORY: return "out of memory";
    case MOE_STATUS_IO: return "input/output error";
    case MOE_STATUS_FORMAT: return "malformed file";
    case MOE_STATUS_DATA: return "unusable data";
    case MOE_STATUS_NUMERIC: return "numerical failure";
    case MOE_STATUS_VERSION: return "unsupported version";
    case MOE_STATUS_CANCELLED: return "cancelled";
    }
    return "unknown status";
}

static void err_fill(moe_error *err, moe_status status, const char *file, size_t line,
                     size_t column, const char *fmt, va_list ap) {
    if (!err) return;
    err->status = status;
    err->line = line;
    err->column = column;
    err->file[0] = '\0';
    if (file) snprintf(err->file, sizeof err->file, "%s", file);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
}

moe_status moe_err(moe_error *err, moe_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    err_fill(err, status, NULL, 0, 0, fmt, ap);
    va_end(ap);
    return status;
}

moe_status moe_err_at(moe_error *err, moe_status status, const char *file, size_t line,
                      size_t column, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    err_fill(err, status, file, line, column, fmt, ap);
    va_end(ap);
    return status;
}

/* The one mutable global of the library (STYLE.md): the log callback. */
static moe_log_fn log_fn;
static void *log_user;

void moe_log_set(moe_log_fn fn, void *user_data) {
    log_fn = fn;
    log_user = user_data;
}

void moe_log(moe_log_level level, const char *fmt, ...) {
    if (!log_fn) return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    log_fn(level, buf, log_user);
}

double moe_logsumexp(const double *v, size_t n) {
    double mx = -INFINITY;
    for (size_t i = 0; i < n; i++)
        if (v[i] > mx) mx = v[i];
    if (mx == -INFINITY) return -INFINITY;
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += exp(v[i] - mx);
    return mx + log(s);
}

double moe_log_softmax(double *v, size_t n) {
    double l = moe_logsumexp(v, n);
    for (size_t i = 0; i < n; i++) v[i] -= l;
    return l;
}

double moe_norm_cdf(double z) { return 0.5 * erfc(-z / sqrt(2.0)); }

/* splitmix64 expands the seed; xoshiro256** (Blackman & Vigna 2018) draws. */
static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void moe_rng_seed(moe_rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t moe_rng_next(moe_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double moe_rng_uniform(moe_rng *r) { return (double)(moe_rng_next(r) >> 11) * 0x1.0p-53; }

double moe_rng_normal(moe_rng *r) {
    double u1 = 1.0 - moe_rng_uniform(r); /* (0, 1] */
    double u2 = moe_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586476925 * u2);
}

double moe_rng_exp(moe_rng *r) { return -log(1.0 - moe_rng_uniform(r)); }

double moe_solve_spd(const double *a, size_t n, double *b, size_t nrhs, double ridge,
                     double *work) {
    if (n == 0) return 0.0;
    double dmean = 0.0;
    for (size_t i = 0; i < n; i++) dmean += fabs(a[i * n + i]);
    dmean /= (double)n;
    if (!(dmean > 0.0) || !isfinite(dmean)) dmean = 1.0;
    double lambda = ridge * dmean;
    int ni = (int)n, nr = (int)nrhs, info = 1, omp = moe_blas_local_begin();
    double *f = work, *x = work + n * n;
    for (int attempt = 0; attempt < 40 && info != 0; attempt++) {
        if (attempt > 0) lambda = lambda > 0.0 ? lambda * 10.0 : 1e-12 * dmean;
        memcpy(f, a, n * n * sizeof *f);
        for (size_t i = 0; i < n; i++) f[i * n + i] += lambda;
        /* A symmetric row-major matrix is the same array column-major. */
        dpotrf_("L", &ni, f, &ni, &info);
    }
    if (info != 0) {
        moe_blas_local_end(omp);
        return -1.0;
    }
    /* Row-major B (n x nrhs) into column-major x, solve, and back. */
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < nrhs; j++) x[j * n + i] = b[i * nrhs + j];
    dpotrs_("L", &ni, &nr, f, &ni, x, &ni, &info);
    moe_blas_local_end(omp);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < nrhs; j++) b[i * nrhs + j] = x[j * n + i];
    return info == 0 ? lambda : -1.0;
}

int moe_blas_local_begin(void) {
    int n = omp_get_max_threads();
    omp_set_num_threads(1);
    return n;
}

void moe_blas_local_end(int omp) {
    omp_set_num_threads(omp);
}

moe_blas_saved moe_blas_serial_begin(void) {
    moe_blas_saved s = {1, omp_get_max_threads()};
#if defined(OPENBLAS_VERSION)
    s.blas = openblas_get_num_threads();
    openblas_set_num_threads(1);
#endif
    omp_set_num_threads(s.omp);
    return s;
}

void moe_blas_serial_end(moe_blas_saved s) {
#if defined(OPENBLAS_VERSION)
    openblas_set_num_threads(s.blas);
#endif
    omp_set_num_threads(s.omp);
}
