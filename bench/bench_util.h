/*
 * bench_util.h -- what the benchmark programs share: a monotonic clock and
 * the data generator (splitmix64 draws, Box-Muller normals; each program
 * documents its seed). Header-only, so each bench stays one file to build.
 */
#ifndef MOE_BENCH_UTIL_H
#define MOE_BENCH_UTIL_H

#include "moe.h"

#include <math.h>
#include <stdint.h>
#include <time.h>

static inline double bench_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static inline uint64_t bench_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static inline double bench_unif(uint64_t *s) { return (double)(bench_next(s) >> 11) * 0x1.0p-53; }
static inline double bench_norm(uint64_t *s) {
    double u = 1.0 - bench_unif(s), v = bench_unif(s);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* Seconds per EM iteration after initialisation: a moe_iter_fn whose
 * user_data is a bench_timer; the first call (iteration 0) marks the end
 * of initialisation, so (t_last - t_first) / n is the time per iteration. */
typedef struct bench_timer {
    double t_first, t_last;
    int n;
} bench_timer;

static inline int bench_timer_iter(const moe_iter_info *info, void *user) {
    bench_timer *t = user;
    double x = bench_now();
    if (info->iteration == 0) t->t_first = x;
    t->t_last = x;
    t->n = info->iteration;
    return 0;
}

#endif
