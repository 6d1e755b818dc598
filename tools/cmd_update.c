/*
 * cmd_update.c -- `moe update [options] MODEL DATA -o OUT`: continue a
 * trained model on new rows by online EM (moe_train_online with the model
 * as the start), e.g. when the data drift. The model keeps its shape, its
 * columns and its standardisation; DATA is encoded with the model's
 * encoder (CSV) or read as a .moed file with the model's columns.
 */
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static const cli_command update_cmd = {
    "update", "[options] MODEL DATA -o OUT",
    "Continue a trained model on new rows by online EM and save the result.",
    "The rows are taken in minibatches of --batch rows, --passes times. After each\n"
    "minibatch the Gaussian experts' sufficient statistics move towards the\n"
    "minibatch's by the step eta_t = (t + T0)^(-POWER), t = 1, 2, ... (the first\n"
    "minibatch uses eta = 1: it replaces the model's statistics), and the\n"
    "gates and classifiers take eta_t times the minibatch's Newton step (stepwise EM,\n"
    "Sato & Ishii 2000; Cappe & Moulines 2009). Prints the log-likelihood per row of\n"
    "DATA before and after. OUT may be MODEL itself: it is replaced atomically.\n"};

typedef struct update_opts {
    const char *out, *sep;
    int batch, passes, threads, na, unseen, quiet;
    double t0, power;
} update_opts;

/* Mean log-likelihood per row of the data under a model. */
static double mean_ll(const moe_model *m, const moe_dataset *d, double *buf, moe_error *err) {
    if (moe_model_log_density(m, d, buf, err) != MOE_STATUS_OK) return NAN;
    double s = 0.0;
    for (size_t i = 0; i < d->n_rows; i++) s += buf[i];
    return d->n_rows ? s / (double)d->n_rows : NAN;
}

int cli_cmd_update(int argc, char **argv) {
    moe_online_params od = moe_online_params_default();
    update_opts o = {NULL, "auto", (int)od.batch_rows, od.passes, 0, 0, 0, 0, od.step_t0,
                     od.step_power};
    cli_opt opts[] = {
        {'o', "output", CLI_OPT_STRING, &o.out, "FILE", 0, 0, NULL, "Output",
         "where to write the updated model (required)", "none", 0},
        {'q', "quiet", CLI_OPT_FLAG, &o.quiet, NULL, 0, 0, NULL, NULL, "print nothing but errors",
         NULL, 0},
        {'b', "batch", CLI_OPT_INT, &o.batch, "N", 1, 1e9, NULL, "Online EM",
         "rows per minibatch", NULL, 0},
        {'p', "passes", CLI_OPT_INT, &o.passes, "P", 1, 100000, NULL, NULL,
         "passes over DATA", NULL, 0},
        {0, "step-t0", CLI_OPT_DOUBLE, &o.t0, "T0", 0, 1e12, NULL, NULL,
         "step size offset: eta_t = (t + T0)^-POWER", NULL, 0},
        {0, "step-power", CLI_OPT_DOUBLE, &o.power, "POWER", 0.5 + 1e-12, 1, NULL, NULL,
         "step size decay, in (0.5, 1]", NULL, 0},
        {'j', "threads", CLI_OPT_INT, &o.threads, "N", 0, 4096, NULL, NULL,
         "threads (0 = all cores); the result does not depend on it", NULL, 0},
        CLI_MODEL_INPUT_OPTIONS(o.sep, o.na, o.unseen,
                                "rows with missing values: error, or leave out"),
        {'h', "help", CLI_OPT_FLAG, NULL, NULL, 0, 0, NULL, NULL, "this help", NULL, 0},
    };
    const size_t n_opts = sizeof opts / sizeof opts[0];
    char *pos[2];
    size_t n_pos;
    int r = cli_parse(&update_cmd, opts, n_opts, argc, argv, pos, 2, &n_pos);
    if (r != 0) return r > 0 ? CLI_EXIT_OK : CLI_EXIT_USAGE;

    int rc = CLI_EXIT_USAGE;
    cli_model m;
    memset(&m, 0, sizeof m);
    cli_data data;
    memset(&data, 0, sizeof data);
    moe_model *u = NULL;
    double *ld = NULL;
    void *bytes = NULL;
    size_t n_bytes = 0;
    moe_error err;
    moe_status st;
    cli_progress prog;

    cli_log_install(o.quiet);
    if (n_pos < 2) {
        cli_error("update", "give a model and a data file (see 'moe update --help')");
        goto done;
    }
    if (!o.out) {
        cli_error("update", "give the output model with -o FILE (it may be the input model)");
        goto done;
    }
    char sep;
    if (cli_parse_sep(o.sep, &sep) != 0) {
        cli_error("update", "--sep: '%.20s' is not a delimiter", o.sep);
        goto done;
    }
    rc = cli_load_data("update", pos[0], pos[1], sep, o.na ? MOE_MISSING_DROP : MOE_MISSING_ERROR,
                       o.unseen, MOE_TARGET_USE_REQUIRED, &m, &data);
    if (rc != CLI_EXIT_OK) goto done;
    rc = CLI_EXIT_RUNTIME;
    if (data.n_dropped && !o.quiet)
        cli_note("update", "%s: dropped %zu of %zu rows with missing values", data.name,
                 data.n_dropped, data.n_read);
    moe_dataset ds = data.ds;
    ld = malloc((ds.n_rows + 1) * sizeof *ld);
    if (!ld) {
        cli_error("update", "out of memory");
        goto done;
    }
    double before = mean_ll(m.model, &ds, ld, &err);

    moe_train_params p = moe_train_params_default();
    p.task = moe_model_task(m.model);
    p.n_threads = o.threads;
    moe_online_params op = od;
    op.batch_rows = (size_t)o.batch;
    op.passes = o.passes;
    op.step_t0 = o.t0;
    op.step_power = o.power;
    cli_progress_init(&prog, 1);
    p.on_iter = cli_progress_iter;
    p.user_data = &prog;
    moe_source src = moe_source_from_dataset(&ds);
    st = moe_train_online(&src, &p, &op, m.model, &u, &err);
    cli_progress_done(&prog);
    if (st != MOE_STATUS_OK) {
        cli_error("update", "%s: %s", data.name, err.message);
        rc = cli_exit_code(st);
        goto done;
    }
    double after = mean_ll(u, &ds, ld, &err);
    if ((st = moe_model_save_buffer(u, &bytes, &n_bytes, &err)) != MOE_STATUS_OK ||
        (st = cli_write_atomic(o.out, bytes, n_bytes, &err)) != MOE_STATUS_OK) {
        cli_error("update", "%s: %s", o.out, err.message);
        rc = cli_exit_code(st);
        goto done;
    }
    if (!o.quiet) {
        moe_fit_report rep = moe_model_report(u);
        fprintf(stderr,
                "moe update: %zu rows in %d minibatches of up to %d (%d pass%s)\n"
                "  log-likelihood per row of %s: before %.6g, after %.6g\n"
                "  model written to %s\n",
                ds.n_rows, rep.iterations, o.batch, o.passes, o.passes == 1 ? "" : "es",
                data.name, before, after, o.out);
    }
    rc = CLI_EXIT_OK;
done:
    free(bytes);
    free(ld);
    moe_model_free(u);
    cli_data_free(&data);
    cli_model_free(&m);
    return rc;
}
