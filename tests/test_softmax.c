/*
 * test_softmax.c -- the derivatives behind every gate and multinomial
 * expert (acceptance 5 of the core issue): the accumulated gradient and
 * negative Hessian of the weighted multinomial log-likelihood against
 * central finite differences, Boehning's bound against the Hessian, and the
 * guaranteed step against the objective it promises to raise.
 */
#include "check.h"
#include "moe_impl.h"

#define N 300
#define C 4
#define D 3

static double z[N * D], w[N], t[N * C];

static void make_data(void) {
    moe_rng r;
    moe_rng_seed(&r, 12345);
    for (size_t i = 0; i < N; i++) {
        z[i * D] = 1.0;
        for (size_t j = 1; j < D; j++) z[i * D + j] = moe_rng_normal(&r);
        w[i] = 0.2 + moe_rng_uniform(&r);
        double s = 0.0;
        for (size_t c = 0; c < C; c++) s += (t[i * C + c] = moe_rng_exp(&r));
        for (size_t c = 0; c < C; c++) t[i * C + c] /= s; /* soft targets, like a gate's */
    }
}

/* f(V) = sum_i w_i sum_c t_ic log softmax(V z_i)_c, V is C x D, row 0 zero. */
static double objective(const double *v) {
    double f = 0.0, l[C];
    for (size_t i = 0; i < N; i++) {
        for (size_t c = 0; c < C; c++) {
            l[c] = 0.0;
            for (size_t j = 0; j < D; j++) l[c] += v[c * D + j] * z[i * D + j];
        }
        moe_log_softmax(l, C);
        for (size_t c = 0; c < C; c++) f += w[i] * t[i * C + c] * l[c];
    }
    return f;
}

static void stats_at(const double *v, double *grad, double *gram, double *hess) {
    static double p[N * C], scratch[N * C * D];
    for (size_t i = 0; i < N; i++) {
        double l[C];
        for (size_t c = 0; c < C; c++) {
            l[c] = 0.0;
            for (size_t j = 0; j < D; j++) l[c] += v[c * D + j] * z[i * D + j];
        }
        moe_log_softmax(l, C);
        for (size_t c = 0; c < C; c++) p[i * C + c] = exp(l[c]);
    }
    size_t n = (C - 1) * D;
    memset(grad, 0, n * sizeof(double));
    memset(gram, 0, D * D * sizeof(double));
    memset(hess, 0, n * n * sizeof(double));
    /* Two calls over halves, as blocks would be accumulated. */
    moe_softmax_accumulate(N / 2, C, D, z, w, t, C, p, C, grad, gram, hess, scratch);
    moe_softmax_accumulate(N - N / 2, C, D, z + (N / 2) * D, w + N / 2, t + (N / 2) * C, C,
                           p + (N / 2) * C, C, grad, gram, hess, scratch);
    for (size_t a = 0; a < n; a++)
        for (size_t b = 0; b < a; b++) hess[a * n + b] = hess[b * n + a];
    for (size_t a = 0; a < D; a++)
        for (size_t b = 0; b < a; b++) gram[a * D + b] = gram[b * D + a];
}

static void random_v(double *v, uint64_t seed) {
    moe_rng r;
    moe_rng_seed(&r, seed);
    for (size_t j = 0; j < C * D; j++) v[j] = j < D ? 0.0 : moe_rng_normal(&r);
}

static void test_gradient_fd(void) {
    make_data();
    double v[C * D], grad[(C - 1) * D], gram[D * D], hess[(C - 1) * D * (C - 1) * D];
    random_v(v, 1);
    stats_at(v, grad, gram, hess);
    const double h = 1e-5;
    for (size_t c = 1; c < C; c++) {
        for (size_t j = 0; j < D; j++) {
            double save = v[c * D + j];
            v[c * D + j] = save + h;
            double fp = objective(v);
            v[c * D + j] = save - h;
            double fm = objective(v);
            v[c * D + j] = save;
            double fd = (fp - fm) / (2 * h);
            CHECK(fabs(fd - grad[(c - 1) * D + j]) < 1e-6 * fmax(1.0, fabs(fd)),
                  "d/dv[%zu][%zu]: accumulated %.10g, finite difference %.10g", c, j,
                  grad[(c - 1) * D + j], fd);
        }
    }
}

static void test_hessian_fd(void) {
    make_data();
    size_t n = (C - 1) * D;
    double v[C * D], grad[(C - 1) * D], gram[D * D], hess[(C - 1) * D * (C - 1) * D];
    double gp[(C - 1) * D], gm[(C - 1) * D], g2[D * D], h2[(C - 1) * D * (C - 1) * D];
    random_v(v, 2);
    stats_at(v, grad, gram, hess);
    const double h = 1e-5;
    /* Column b of the negative Hessian = -(grad(v + h e_b) - grad(v - h e_b)) / 2h. */
    for (size_t b = 0; b < n; b++) {
        double *vb = &v[D + b], save = *vb;
        *vb = save + h;
        stats_at(v, gp, g2, h2);
        *vb = save - h;
        stats_at(v, gm, g2, h2);
        *vb = save;
        for (size_t a = 0; a < n; a++) {
            double fd = -(gp[a] - gm[a]) / (2 * h);
            CHECK(fabs(fd - hess[a * n + b]) < 1e-6 * fmax(1.0, fabs(fd)),
                  "H[%zu][%zu]: accumulated %.10g, finite difference %.10g", a, b, hess[a * n + b],
                  fd);
        }
    }
}

/* -H <= B = 1/2 (I - 11'/C) (x) sum w z z' in every direction. */
static void test_boehning_bound(void) {
    make_data();
    size_t n = (C - 1) * D;
    double v[C * D], grad[(C - 1) * D], gram[D * D], hess[(C - 1) * D * (C - 1) * D];
    moe_rng r;
    moe_rng_seed(&r, 3);
    for (int trial = 0; trial < 20; trial++) {
        random_v(v, 100 + (uint64_t)trial);
        for (size_t j = D; j < C * D; j++) v[j] *= 3.0;
        stats_at(v, grad, gram, hess);
        double d[(C - 1) * D], sum[D] = {0};
        for (size_t a = 0; a < n; a++) d[a] = moe_rng_normal(&r);
        double qh = 0.0, qb = 0.0;
        for (size_t a = 0; a < n; a++)
            for (size_t b = 0; b < n; b++) qh += d[a] * hess[a * n + b] * d[b];
        for (size_t c = 0; c < C - 1; c++)
            for (size_t j = 0; j < D; j++) {
                sum[j] += d[c * D + j];
                for (size_t l = 0; l < D; l++) qb += 0.5 * d[c * D + j] * gram[j * D + l] * d[c * D + l];
            }
        for (size_t j = 0; j < D; j++)
            for (size_t l = 0; l < D; l++) qb -= 0.5 / C * sum[j] * gram[j * D + l] * sum[l];
        CHECK(qh <= qb * (1 + 1e-12), "trial %d: d'(-H)d = %g > d'Bd = %g", trial, qh, qb);
    }
}

/* Every damping level eventually raises f, and the guaranteed level always
 * does, by at least the gain it reports. */
static void test_step_ascent(void) {
    make_data();
    size_t n = (C - 1) * D;
    double v[C * D], grad[(C - 1) * D], gram[D * D], hess[(C - 1) * D * (C - 1) * D];
    double *work = malloc(moe_softmax_work_size(C, D) * sizeof(double));
    for (int trial = 0; trial < 10; trial++) {
        random_v(v, 200 + (uint64_t)trial);
        for (size_t j = D; j < C * D; j++) v[j] *= 4.0;
        stats_at(v, grad, gram, hess);
        double f0 = objective(v);
        for (int hs = 0; hs < 2; hs++) {
            double v2[C * D];
            memcpy(v2, v, sizeof v);
            double gain = moe_softmax_step(v2, C, D, grad, gram, hs ? hess : NULL, 1e-10,
                                           MOE_DAMP_GUARANTEED, work);
            double f1 = objective(v2);
            CHECK(gain >= 0.0, "negative gain");
            CHECK(f1 >= f0 + gain - 1e-9 * fabs(f0), "trial %d (%s): f %.12g -> %.12g, promised +%g",
                  trial, hs ? "newton" : "bound", f0, f1, gain);
            for (size_t j = 0; j < D; j++) CHECK(v2[j] == 0.0, "reference row moved");
        }
        /* Plain Newton from a moderate start converges to the maximum. */
        double v3[C * D];
        memcpy(v3, v, sizeof v);
        for (size_t j = D; j < C * D; j++) v3[j] *= 0.1;
        for (int it = 0; it < 30; it++) {
            stats_at(v3, grad, gram, hess);
            moe_softmax_step(v3, C, D, grad, gram, hess, 1e-12, 0, work);
        }
        stats_at(v3, grad, gram, hess);
        double gn = 0.0;
        for (size_t a = 0; a < n; a++) gn += grad[a] * grad[a];
        CHECK(sqrt(gn) < 1e-8, "Newton did not reach a stationary point: |g| = %g", sqrt(gn));
    }
    free(work);
}

int main(void) {
    RUN(test_gradient_fd);
    RUN(test_hessian_fd);
    RUN(test_boehning_bound);
    RUN(test_step_ascent);
    return check_finish();
}
