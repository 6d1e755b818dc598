/*
 * test_stream.c -- out-of-core training (issue 6, acceptance 2): a .moed
 * file of 3,000,000 rows x 10 inputs (264 MB of doubles) trains from a
 * streaming source in a process whose peak resident memory stays far below
 * the file's size (under 100 MB), and gives the same model as in-memory
 * training on the same rows (the file memory-mapped), to the last bit.
 *
 * Each phase runs in its own child process, so that its peak resident
 * memory (getrusage) is its own. Data (seed 606): x ~ N(0, I_10); gate
 * logits (0, 2 x1 - x2, -1.5 x3 + x4) over three linear experts.
 * Sanitizer builds (MOE_TEST_SMALL=1) use 300,000 rows and skip the memory
 * bound (the sanitizers' shadow memory is not the program's).
 */
#include "check.h"
#include "moe.h"

#include <stdint.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define D 10
#define CHUNK 50000


static int small(void) {
    const char *s = getenv("MOE_TEST_SMALL");
    return s && *s == '1';
}

static int generate(const char *path, size_t N) {
    static double x[CHUNK * D], y[CHUNK];
    check_gen s = {606};
    moe_moed_writer *w = NULL;
    moe_error err;
    if (moe_moed_writer_open(path, D, 1, 0, 0, NULL, &w, &err) != MOE_STATUS_OK) return 1;
    for (size_t r0 = 0; r0 < N; r0 += CHUNK) {
        size_t n = N - r0 < CHUNK ? N - r0 : CHUNK;
        for (size_t i = 0; i < n; i++) {
            double *xi = x + i * D;
            for (int c = 0; c < D; c++) xi[c] = check_gen_norm(&s);
            double l[3] = {0.0, 2.0 * xi[0] - xi[1], -1.5 * xi[2] + xi[3]}, p[3], t = 0.0;
            for (int k = 0; k < 3; k++) t += (p[k] = exp(l[k]));
            double u = check_gen_unif(&s) * t;
            int k = u < p[0] ? 0 : u < p[0] + p[1] ? 1 : 2;
            y[i] = (k == 0 ? 1.0 + xi[4] : k == 1 ? -2.0 + 0.5 * xi[5] - xi[6] : 3.0 * xi[7]) +
                   (0.2 + 0.2 * k) * check_gen_norm(&s);
        }
        moe_dataset d;
        memset(&d, 0, sizeof d);
        d.n_rows = n;
        d.n_cols = D;
        d.x = x;
        d.ld_x = D;
        d.n_outputs = 1;
        d.y = y;
        d.ld_y = 1;
        if (moe_moed_writer_append(w, &d, &err) != MOE_STATUS_OK) return 1;
    }
    int rc = moe_moed_writer_commit(w, &err) == MOE_STATUS_OK ? 0 : 1;
    moe_moed_writer_free(w);
    return rc;
}

static moe_train_params params(void) {
    moe_train_params p = moe_train_params_default();
    p.tree.n_levels = 1;
    p.tree.branching[0] = 3;
    p.n_restarts = 2; /* random, then k-means */
    p.max_iter = 12;
    p.tol = 0.0;
    p.seed = 9;
    return p;
}

/* Train from `path` (streaming or mapped) and write loglik, iterations,
 * the first coefficients and the peak RSS (MB) to `out`. */
static int train_child(const char *path, int streaming, const char *out) {
    moe_train_params p = params();
    moe_model *m = NULL;
    moe_error err;
    moe_status st;
    moe_moed *h = NULL;
    moe_source src;
    memset(&src, 0, sizeof src);
    if (streaming) {
        st = moe_moed_source_open(path, 0, MOE_MOED_ALL_ROWS, &src, &err);
        if (st == MOE_STATUS_OK) st = moe_train_source(&src, &p, &m, &err);
    } else {
        st = moe_moed_open(path, &h, &err);
        moe_dataset d = moe_moed_dataset(h);
        if (st == MOE_STATUS_OK) st = moe_train(&d, &p, &m, &err);
    }
    if (st != MOE_STATUS_OK) {
        fprintf(stderr, "  train: %s\n", err.message);
        return 1;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double coef[D + 1];
    moe_model_expert_coef(m, 0, coef);
    FILE *f = fopen(out, "w");
    if (!f) return 1;
    fprintf(f, "%a %d %a %a %.1f\n", moe_model_report(m).loglik, moe_model_report(m).iterations,
            coef[0], coef[1], (double)ru.ru_maxrss / 1024.0);
    fclose(f);
    moe_model_free(m);
    moe_moed_source_close(&src);
    moe_moed_close(h);
    return 0;
}

static int in_child(int (*fn)(void *), void *arg) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) _exit(fn(arg));
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) < 0) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

typedef struct job {
    const char *path, *out;
    size_t n;
    int streaming;
} job;
static int gen_job(void *a) { return generate(((job *)a)->path, ((job *)a)->n); }
static int train_job(void *a) {
    job *j = a;
    return train_child(j->path, j->streaming, j->out);
}

typedef struct result {
    double ll, c0, c1, rss_mb;
    int iters;
} result;

static int read_result(const char *path, result *r) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int n = fscanf(f, "%la %d %la %la %lf", &r->ll, &r->iters, &r->c0, &r->c1, &r->rss_mb);
    fclose(f);
    return n == 5 ? 0 : -1;
}

static void test_out_of_core_matches_in_memory(void) {
    char dir[] = "/tmp/moe-stream-XXXXXX";
    REQUIRE(mkdtemp(dir) != NULL, "mkdtemp");
    char path[256], out1[256], out2[256];
    snprintf(path, sizeof path, "%s/data.moed", dir);
    snprintf(out1, sizeof out1, "%s/stream.txt", dir);
    snprintf(out2, sizeof out2, "%s/memory.txt", dir);
    size_t N = small() ? 300000 : 3000000;
    job g = {path, NULL, N, 0};
    REQUIRE(in_child(gen_job, &g) == 0, "generating %s", path);
    job s = {path, out1, N, 1}, mm = {path, out2, N, 0};
    int rs = in_child(train_job, &s), rm = in_child(train_job, &mm);
    result a, b;
    CHECK(rs == 0 && rm == 0, "training failed (%d, %d)", rs, rm);
    if (rs == 0 && rm == 0 && read_result(out1, &a) == 0 && read_result(out2, &b) == 0) {
        double file_mb = (double)N * (D + 1) * 8.0 / 1e6;
        printf("  %zu rows x %d inputs (%.0f MB): streamed peak RSS %.1f MB, mapped %.1f MB; "
               "loglik %.10g vs %.10g\n",
               N, D, file_mb, a.rss_mb, b.rss_mb, a.ll, b.ll);
        CHECK(a.ll == b.ll && a.iters == b.iters && a.c0 == b.c0 && a.c1 == b.c1,
              "streamed %.17g vs in memory %.17g", a.ll, b.ll);
        CHECK(fabs(a.ll - b.ll) <= 1e-10 * fabs(b.ll), "beyond 1e-10");
        if (!small()) {
            CHECK(a.rss_mb < 100.0, "streaming peak RSS %.1f MB", a.rss_mb);
            CHECK(a.rss_mb < 0.5 * file_mb, "streaming peak RSS %.1f MB for %.0f MB of data",
                  a.rss_mb, file_mb);
        }
    }
    unlink(path);
    unlink(out1);
    unlink(out2);
    rmdir(dir);
}

int main(void) {
    RUN(test_out_of_core_matches_in_memory);
    return check_finish();
}
