/*
 * cmd_eval.c -- `moe eval [options] MODEL DATA.csv`: score a model on a
 * file that holds the targets.
 *
 * Regression: RMSE, MAE, mean negative log-likelihood and the coverage of
 * the central prediction interval (--level), overall and per output.
 * Classification: accuracy, log-loss (= mean negative log-likelihood) and
 * the confusion matrix. Text by default, JSON with --json. Metrics are
 * unweighted means over the rows.
 */
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static const cli_command eval_cmd = {
    "eval", "[options] MODEL DATA.csv",
    "Score a model on a CSV file that holds the target column(s). Results go to stdout.",
    "Regression: rmse, mae, nll (mean negative log-likelihood), coverage (share of targets\n"
    "inside the central --level prediction interval); with several outputs the overall\n"
    "values pool all outputs and 'outputs' lists each. Classification: accuracy,\n"
    "log_loss (= nll) and the confusion matrix (rows: true class, columns: predicted).\n"};

typedef struct eval_opts {
    const char *sep;
    int json, na, unseen;
    double level;
} eval_opts;

static void line_num(cli_buf *b, const char *name, double v) {
    cli_buf_printf(b, "%-12s ", name);
    cli_buf_num(b, v);
    cli_buf_addc(b, '\n');
}

int cli_cmd_eval(int argc, char **argv) {
    eval_opts o = {"auto", 0, 0, 0, 0.9};
    cli_opt opts[] = {
        {'l', "level", CLI_OPT_DOUBLE, &o.level, "L", 1e-9, 1 - 1e-9, NULL, "Scoring",
         "interval probability for coverage", NULL, 0},
        {'J', "json", CLI_OPT_FLAG, &o.json, NULL, 0, 0, NULL, NULL, "write JSON", NULL, 0},
        CLI_MODEL_INPUT_OPTIONS(o.sep, o.na, o.unseen,
                                "rows with missing values: error, or leave out"),
        {'h', "help", CLI_OPT_FLAG, NULL, NULL, 0, 0, NULL, NULL, "this help", NULL, 0},
    };
    const size_t n_opts = sizeof opts / sizeof opts[0];
    char *pos[2];
    size_t n_pos;
    int r = cli_parse(&eval_cmd, opts, n_opts, argc, argv, pos, 2, &n_pos);
    if (r != 0) return r > 0 ? CLI_EXIT_OK : CLI_EXIT_USAGE;

    int rc = CLI_EXIT_USAGE;
    cli_model m;
    memset(&m, 0, sizeof m);
    cli_data data;
    memset(&data, 0, sizeof data);
    double *mean = NULL, *lower = NULL, *upper = NULL, *logd = NULL, *proba = NULL;
    double *sse = NULL, *sae = NULL, *cov = NULL;
    size_t *confusion = NULL;
    cli_buf b = {0};
    moe_error err;
    moe_status st;

    cli_log_install(0);
    if (n_pos < 2) {
        cli_error("eval", "give a model and a data file (see 'moe eval --help')");
        goto done;
    }
    char sep;
    if (cli_parse_sep(o.sep, &sep) != 0) {
        cli_error("eval", "--sep: '%.20s' is not a delimiter", o.sep);
        goto done;
    }
    rc = cli_load_data("eval", pos[0], pos[1], sep,
                             o.na ? MOE_MISSING_DROP : MOE_MISSING_ERROR, o.unseen,
                             MOE_TARGET_USE_REQUIRED, &m, &data);
    if (rc != CLI_EXIT_OK) goto done;
    if (data.n_dropped)
        cli_note("eval", "%s: dropped %zu of %zu rows with missing values", data.name,
                 data.n_dropped, data.n_read);
    rc = CLI_EXIT_RUNTIME;
    moe_model *model = m.model;
    int cls = moe_model_task(model) == MOE_TASK_CLASSIFICATION;
    moe_dataset ds = data.ds;
    size_t n = ds.n_rows, d = ds.n_cols, ld = d ? d : 1, nn = n ? n : 1;
    size_t P = moe_model_n_outputs(model), C = moe_model_n_classes(model);
    logd = malloc(nn * sizeof *logd);
    if (!logd) goto oom;
    if ((st = moe_model_log_density(model, &ds, logd, &err))) goto failed;
    double nll = 0.0;
    for (size_t i = 0; i < n; i++) nll -= logd[i];
    nll /= (double)n;

    if (!cls) {
        mean = malloc(nn * P * sizeof *mean);
        lower = malloc(nn * P * sizeof *lower);
        upper = malloc(nn * P * sizeof *upper);
        sse = calloc(P, sizeof *sse);
        sae = calloc(P, sizeof *sae);
        cov = calloc(P, sizeof *cov);
        if (!mean || !lower || !upper || !sse || !sae || !cov) goto oom;
        if ((st = moe_model_predict_mean(model, n, ds.x, ld, mean, NULL, &err))) goto failed;
        if ((st = moe_model_predict_interval(model, n, ds.x, ld, o.level, lower, upper,
                                             &err)))
            goto failed;
        double tse = 0, tae = 0, tcov = 0;
        for (size_t i = 0; i < n; i++)
            for (size_t p = 0; p < P; p++) {
                double y = ds.y[i * ds.ld_y + p], e = y - mean[i * P + p];
                sse[p] += e * e;
                sae[p] += fabs(e);
                cov[p] += y >= lower[i * P + p] && y <= upper[i * P + p];
            }
        for (size_t p = 0; p < P; p++) tse += sse[p], tae += sae[p], tcov += cov[p];
        double rmse = sqrt(tse / (double)(n * P)), mae = tae / (double)(n * P);
        double coverage = tcov / (double)(n * P);
        if (o.json) {
            cli_buf_add(&b, "{\n  \"task\": \"regression\",\n");
            cli_buf_printf(&b, "  \"n_rows\": %zu,\n  \"rmse\": ", n);
            cli_buf_json_num(&b, rmse);
            cli_buf_add(&b, ",\n  \"mae\": ");
            cli_buf_json_num(&b, mae);
            cli_buf_add(&b, ",\n  \"nll\": ");
            cli_buf_json_num(&b, nll);
            cli_buf_add(&b, ",\n  \"level\": ");
            cli_buf_json_num(&b, o.level);
            cli_buf_add(&b, ",\n  \"coverage\": ");
            cli_buf_json_num(&b, coverage);
            cli_buf_add(&b, ",\n  \"outputs\": [");
            for (size_t p = 0; p < P; p++) {
                cli_buf_add(&b, p ? ",\n    {\"name\": " : "\n    {\"name\": ");
                cli_buf_json_str(&b, moe_encoder_target_name(m.encoder, p));
                cli_buf_add(&b, ", \"rmse\": ");
                cli_buf_json_num(&b, sqrt(sse[p] / (double)n));
                cli_buf_add(&b, ", \"mae\": ");
                cli_buf_json_num(&b, sae[p] / (double)n);
                cli_buf_add(&b, ", \"coverage\": ");
                cli_buf_json_num(&b, cov[p] / (double)n);
                cli_buf_addc(&b, '}');
            }
            cli_buf_add(&b, "\n  ]\n}\n");
        } else {
            cli_buf_printf(&b, "%-12s regression\n%-12s %zu\n", "task", "rows", n);
            line_num(&b, "rmse", rmse);
            line_num(&b, "mae", mae);
            line_num(&b, "nll", nll);
            line_num(&b, "level", o.level);
            line_num(&b, "coverage", coverage);
            if (P > 1)
                for (size_t p = 0; p < P; p++) {
                    const char *t = moe_encoder_target_name(m.encoder, p);
                    cli_buf_printf(&b, "output %s: rmse ", t);
                    cli_buf_num(&b, sqrt(sse[p] / (double)n));
                    cli_buf_add(&b, ", mae ");
                    cli_buf_num(&b, sae[p] / (double)n);
                    cli_buf_add(&b, ", coverage ");
                    cli_buf_num(&b, cov[p] / (double)n);
                    cli_buf_addc(&b, '\n');
                }
        }
    } else {
        proba = malloc(nn * C * sizeof *proba);
        confusion = calloc(C * C, sizeof *confusion);
        if (!proba || !confusion) goto oom;
        if ((st = moe_model_predict_proba(model, n, ds.x, ld, proba, &err))) goto failed;
        size_t right = 0;
        for (size_t i = 0; i < n; i++) {
            size_t best = 0;
            for (size_t c = 1; c < C; c++)
                if (proba[i * C + c] > proba[i * C + best]) best = c;
            size_t t = (size_t)ds.labels[i];
            right += best == t;
            confusion[t * C + best]++;
        }
        double acc = (double)right / (double)n;
        if (o.json) {
            cli_buf_add(&b, "{\n  \"task\": \"classification\",\n");
            cli_buf_printf(&b, "  \"n_rows\": %zu,\n  \"accuracy\": ", n);
            cli_buf_json_num(&b, acc);
            cli_buf_add(&b, ",\n  \"log_loss\": ");
            cli_buf_json_num(&b, nll);
            cli_buf_add(&b, ",\n  \"nll\": ");
            cli_buf_json_num(&b, nll);
            cli_buf_add(&b, ",\n  \"classes\": [");
            for (size_t c = 0; c < C; c++) {
                if (c) cli_buf_add(&b, ", ");
                cli_buf_json_str(&b, moe_encoder_class_name(m.encoder, c));
            }
            cli_buf_add(&b, "],\n  \"confusion\": [");
            for (size_t t = 0; t < C; t++) {
                cli_buf_add(&b, t ? ",\n    [" : "\n    [");
                for (size_t c = 0; c < C; c++)
                    cli_buf_printf(&b, "%s%zu", c ? ", " : "", confusion[t * C + c]);
                cli_buf_addc(&b, ']');
            }
            cli_buf_add(&b, "\n  ]\n}\n");
        } else {
            cli_buf_printf(&b, "%-12s classification\n%-12s %zu\n", "task", "rows", n);
            line_num(&b, "accuracy", acc);
            line_num(&b, "log_loss", nll);
            cli_buf_add(&b, "confusion matrix (rows: true class, columns: predicted):\n");
            size_t w = 5;
            for (size_t c = 0; c < C; c++) {
                size_t len = strlen(moe_encoder_class_name(m.encoder, c));
                if (len > w) w = len;
            }
            if (w > 24) w = 24;
            cli_buf_printf(&b, "%-*s", (int)w, "");
            for (size_t c = 0; c < C; c++)
                cli_buf_printf(&b, " %*.*s", (int)w, (int)w, moe_encoder_class_name(m.encoder, c));
            cli_buf_addc(&b, '\n');
            for (size_t t = 0; t < C; t++) {
                cli_buf_printf(&b, "%-*.*s", (int)w, (int)w, moe_encoder_class_name(m.encoder, t));
                for (size_t c = 0; c < C; c++) cli_buf_printf(&b, " %*zu", (int)w, confusion[t * C + c]);
                cli_buf_addc(&b, '\n');
            }
        }
    }
    if (b.failed) goto oom;
    if ((st = cli_write_atomic("-", b.data, b.len, &err)) != MOE_STATUS_OK) goto failed;
    rc = CLI_EXIT_OK;
    goto done;

oom:
    cli_error("eval", "out of memory");
    rc = CLI_EXIT_RUNTIME;
    goto done;
failed:
    cli_error("eval", "%s", err.message);
    rc = cli_exit_code(st);
done:
    cli_buf_free(&b);
    free(mean);
    free(lower);
    free(upper);
    free(logd);
    free(proba);
    free(sse);
    free(sae);
    free(cov);
    free(confusion);
    cli_data_free(&data);
    cli_model_free(&m);
    return rc;
}
