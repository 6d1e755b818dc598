/*
 * cmd_predict.c -- `moe predict [options] MODEL DATA.csv [-o OUT.csv]`.
 *
 * Encodes DATA with the model's own encoder (columns found by name, in any
 * order, extra columns ignored), computes the columns --output asks for and
 * writes one CSV row per input row, in input order. The whole output is
 * built in memory first and then written atomically, so a failure leaves
 * no partial file. Numbers are written with %.17g: they read back exactly.
 */
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


enum {
    ITEM_MEAN,
    ITEM_SD,
    ITEM_INTERVAL,
    ITEM_LOGDENSITY,
    ITEM_CLASS,
    ITEM_PROBA,
    ITEM_EXPERT,
    ITEM_GATES,
    ITEM_EXPERTS,
    N_ITEMS
};
static const char *const item_names[N_ITEMS] = {"mean",  "sd",     "interval", "logdensity",
                                                "class", "proba",  "expert",   "gates",
                                                "experts"};

static const cli_command predict_cmd = {
    "predict", "[options] MODEL DATA.csv [-o OUT.csv]",
    "Predict for every row of a CSV file with a model from 'moe train'. Writes a CSV file\n"
    "(default stdout), one row per input row in input order. MODEL or DATA may be '-' (stdin).",
    "--output items and the columns they give (P = 1 output; with several outputs each\n"
    "regression column gets the suffix _TARGET, e.g. mean_y1, m2_y1):\n"
    "  mean            mean: the mixture mean                               (regression)\n"
    "  sd              sd: the mixture standard deviation                   (regression)\n"
    "  interval[=L]    lower, upper: central interval of probability L [0.9] (regression)\n"
    "  logdensity      logdensity: log density (regression) or log probability of the\n"
    "                  row's target (classification); needs the target column\n"
    "  class           class: the most probable class                   (classification)\n"
    "  proba           p_CLASS for every class                          (classification)\n"
    "  expert          expert: the leaf with the largest gate probability (1-based)\n"
    "  gates           g1..gK: each leaf's gate probability (product along its path)\n"
    "  experts         regression: m1..mK, s1..sK, each expert's mean and sd;\n"
    "                  classification: pK_CLASS, expert K's probability of each class\n"
    "An --id column is copied through as the first column.\n"};

typedef struct predict_opts {
    const char *out, *output, *id, *sep;
    int na, unseen;
} predict_opts;

/* Column name for a per-output quantity: "mean" or "mean_y1". */
static void out_name(cli_buf *b, const char *stem, const cli_model *m, size_t p, size_t n_out) {
    if (n_out <= 1) {
        cli_buf_csv(b, stem);
        return;
    }
    cli_buf buf = {0};
    cli_buf_printf(&buf, "%s_%s", stem, moe_encoder_target_name(m->encoder, p));
    cli_buf_csv(b, buf.failed ? stem : buf.data);
    cli_buf_free(&buf);
}

int cli_cmd_predict(int argc, char **argv) {
    predict_opts o = {NULL, NULL, NULL, "auto", 0, 0};
    cli_opt opts[] = {
        {'o', "out", CLI_OPT_STRING, &o.out, "FILE", 0, 0, NULL, "Output",
         "output CSV file ('-' = stdout)", "stdout", 0},
        {'O', "output", CLI_OPT_STRING, &o.output, "ITEMS", 0, 0, NULL, NULL,
         "columns to write, comma-separated (see below)",
         "mean, or class", 0},
        {'i', "id", CLI_OPT_STRING, &o.id, "COL", 0, 0, NULL, NULL,
         "copy this column through (first column)", "none", 0},
        CLI_MODEL_INPUT_OPTIONS(o.sep, o.na, o.unseen,
                                "rows with missing inputs: error, or leave out"),
        {'h', "help", CLI_OPT_FLAG, NULL, NULL, 0, 0, NULL, NULL, "this help", NULL, 0},
    };
    const size_t n_opts = sizeof opts / sizeof opts[0];
    char *pos[3];
    size_t n_pos;
    int r = cli_parse(&predict_cmd, opts, n_opts, argc, argv, pos, 3, &n_pos);
    if (r != 0) return r > 0 ? CLI_EXIT_OK : CLI_EXIT_USAGE;

    int rc = CLI_EXIT_USAGE;
    cli_model m;
    memset(&m, 0, sizeof m);
    cli_data data;
    memset(&data, 0, sizeof data);
    char **items = NULL;
    size_t n_items = 0;
    double *mean = NULL, *var = NULL, *lower = NULL, *upper = NULL, *logd = NULL;
    double *proba = NULL, *gates = NULL, *emean = NULL, *esd = NULL;
    int32_t *expert = NULL;
    int order[N_ITEMS];
    int n_order = 0, want[N_ITEMS] = {0};
    double level = 0.9;
    cli_buf b = {0};
    moe_error err;
    moe_status st;
    char why[200];

    cli_log_install(0);
    if (n_pos < 2) {
        cli_error("predict", "give a model and a data file (see 'moe predict --help')");
        goto done;
    }
    if (n_pos == 3) {
        if (o.out) {
            cli_error("predict", "the output file is given twice");
            goto done;
        }
        o.out = pos[2];
    }
    if (!o.out) o.out = "-";
    if (cli_same_file(o.out, pos[0]) || cli_same_file(o.out, pos[1])) {
        cli_error("predict", "%s: the output would overwrite an input file", o.out);
        goto done;
    }
    char sep;
    if (cli_parse_sep(o.sep, &sep) != 0) {
        cli_error("predict", "--sep: '%.20s' is not a delimiter", o.sep);
        goto done;
    }
    /* --output, checked against the task once the model is loaded. */
    if (o.output && cli_list_split(o.output, &items, &n_items, why, sizeof why) != 0) {
        cli_error("predict", "--output: %s", why);
        goto done;
    }
    for (size_t i = 0; i < n_items; i++) {
        const char *it = items[i];
        int found = -1;
        for (int k = 0; k < N_ITEMS; k++) {
            size_t len = strlen(item_names[k]);
            if (strcmp(it, item_names[k]) == 0 ||
                (k == ITEM_INTERVAL && strncmp(it, "interval=", 9) == 0 && len == 8))
                found = k;
        }
        if (found < 0) {
            cli_error("predict", "--output: unknown item '%.40s' (mean, sd, interval=L, "
                                 "logdensity, class, proba, expert, gates, experts)", it);
            goto done;
        }
        if (want[found]) {
            cli_error("predict", "--output: '%s' given twice", item_names[found]);
            goto done;
        }
        if (found == ITEM_INTERVAL && it[8] == '=') {
            if (!moe_parse_double(it + 9, &level) || !(level > 0 && level < 1)) {
                cli_error("predict", "--output: interval level '%.40s' is not in (0, 1)",
                          it + 9);
                goto done;
            }
        }
        want[found] = 1;
        order[n_order++] = found;
    }

    rc = cli_load_data("predict", pos[0], pos[1], sep,
                             o.na ? MOE_MISSING_DROP : MOE_MISSING_ERROR, o.unseen,
                             want[ITEM_LOGDENSITY] ? MOE_TARGET_USE_REQUIRED
                                                   : MOE_TARGET_USE_IGNORED,
                             &m, &data);
    if (rc != CLI_EXIT_OK) goto done;
    rc = CLI_EXIT_USAGE;
    moe_model *model = m.model;
    int cls = moe_model_task(model) == MOE_TASK_CLASSIFICATION;
    if (n_order == 0) {
        int k = cls ? ITEM_CLASS : ITEM_MEAN;
        want[k] = 1;
        order[n_order++] = k;
    }
    for (int i = 0; i < n_order; i++) {
        int k = order[i];
        if (cls && (k == ITEM_MEAN || k == ITEM_SD || k == ITEM_INTERVAL)) {
            cli_error("predict", "--output %s: for regression models only (this one classifies)",
                      item_names[k]);
            goto done;
        }
        if (!cls && (k == ITEM_CLASS || k == ITEM_PROBA)) {
            cli_error("predict", "--output %s: for classification models only (this one is a "
                                 "regression)", item_names[k]);
            goto done;
        }
    }
    size_t id_col = MOE_TABLE_NO_COL;
    if (o.id && !data.table) {
        cli_error("predict", "%s: --id needs a CSV file (a .moed holds no id columns)", data.name);
        goto done;
    }
    if (o.id && (id_col = moe_table_col_index(data.table, o.id)) == MOE_TABLE_NO_COL) {
        cli_error("predict", "%s: --id: no column named '%.60s'", data.name, o.id);
        goto done;
    }
    if (data.n_dropped)
        cli_note("predict", "%s: dropped %zu of %zu rows with missing values",
                 data.name, data.n_dropped, data.n_read);

    /* Compute. */
    size_t n = data.ds.n_rows, d = data.ds.n_cols, K = moe_model_n_experts(model);
    size_t P = moe_model_n_outputs(model), C = moe_model_n_classes(model);
    size_t ld = d ? d : 1;
    const double *x = data.ds.x;
    size_t nn = n ? n : 1;
    rc = CLI_EXIT_RUNTIME;
    if (want[ITEM_MEAN] || want[ITEM_SD]) {
        mean = malloc(nn * P * sizeof *mean);
        var = want[ITEM_SD] ? malloc(nn * P * sizeof *var) : NULL;
        if (!mean || (want[ITEM_SD] && !var)) goto oom;
        if ((st = moe_model_predict_mean(model, n, x, ld, mean, var, &err))) goto failed;
    }
    if (want[ITEM_INTERVAL]) {
        lower = malloc(nn * P * sizeof *lower);
        upper = malloc(nn * P * sizeof *upper);
        if (!lower || !upper) goto oom;
        if ((st = moe_model_predict_interval(model, n, x, ld, level, lower, upper, &err)))
            goto failed;
    }
    if (want[ITEM_LOGDENSITY]) {
        logd = malloc(nn * sizeof *logd);
        if (!logd) goto oom;
        moe_dataset ds = data.ds;
        if ((st = moe_model_log_density(model, &ds, logd, &err))) goto failed;
    }
    if (want[ITEM_CLASS] || want[ITEM_PROBA]) {
        proba = malloc(nn * C * sizeof *proba);
        if (!proba) goto oom;
        if ((st = moe_model_predict_proba(model, n, x, ld, proba, &err))) goto failed;
    }
    if (want[ITEM_EXPERT]) {
        expert = malloc(nn * sizeof *expert);
        if (!expert) goto oom;
        if ((st = moe_model_predict_expert(model, n, x, ld, expert, &err))) goto failed;
    }
    if (want[ITEM_GATES]) {
        gates = malloc(nn * K * sizeof *gates);
        if (!gates) goto oom;
        if ((st = moe_model_predict_gates(model, n, x, ld, gates, &err))) goto failed;
    }
    if (want[ITEM_EXPERTS]) {
        size_t per = cls ? C : P;
        emean = malloc(nn * K * per * sizeof *emean);
        esd = cls ? NULL : malloc(nn * K * per * sizeof *esd);
        if (!emean || (!cls && !esd)) goto oom;
        if ((st = moe_model_predict_experts(model, n, x, ld, emean, esd, &err))) goto failed;
    }

    /* Header. */
    int first = 1;
#define SEP() (first ? (void)(first = 0) : cli_buf_addc(&b, ','))
    if (o.id) {
        SEP();
        cli_buf_csv(&b, moe_table_col_name(data.table, id_col));
    }
    for (int i = 0; i < n_order; i++) {
        switch (order[i]) {
        case ITEM_MEAN:
            for (size_t p = 0; p < P; p++) SEP(), out_name(&b, "mean", &m, p, P);
            break;
        case ITEM_SD:
            for (size_t p = 0; p < P; p++) SEP(), out_name(&b, "sd", &m, p, P);
            break;
        case ITEM_INTERVAL:
            for (size_t p = 0; p < P; p++) SEP(), out_name(&b, "lower", &m, p, P);
            for (size_t p = 0; p < P; p++) SEP(), out_name(&b, "upper", &m, p, P);
            break;
        case ITEM_LOGDENSITY: SEP(), cli_buf_add(&b, "logdensity"); break;
        case ITEM_CLASS: SEP(), cli_buf_add(&b, "class"); break;
        case ITEM_PROBA:
            for (size_t c = 0; c < C; c++) {
                cli_buf name = {0};
                cli_buf_printf(&name, "p_%s", moe_encoder_class_name(m.encoder, c));
                SEP(), cli_buf_csv(&b, name.failed ? "p_?" : name.data);
                cli_buf_free(&name);
            }
            break;
        case ITEM_EXPERT: SEP(), cli_buf_add(&b, "expert"); break;
        case ITEM_GATES:
            for (size_t k = 0; k < K; k++) SEP(), cli_buf_printf(&b, "g%zu", k + 1);
            break;
        case ITEM_EXPERTS:
            if (cls) {
                for (size_t k = 0; k < K; k++)
                    for (size_t c = 0; c < C; c++) {
                        cli_buf name = {0};
                        cli_buf_printf(&name, "p%zu_%s", k + 1,
                                       moe_encoder_class_name(m.encoder, c));
                        SEP(), cli_buf_csv(&b, name.failed ? "p?" : name.data);
                        cli_buf_free(&name);
                    }
            } else {
                char stem[32];
                for (size_t k = 0; k < K; k++)
                    for (size_t p = 0; p < P; p++) {
                        snprintf(stem, sizeof stem, "m%zu", k + 1);
                        SEP(), out_name(&b, stem, &m, p, P);
                    }
                for (size_t k = 0; k < K; k++)
                    for (size_t p = 0; p < P; p++) {
                        snprintf(stem, sizeof stem, "s%zu", k + 1);
                        SEP(), out_name(&b, stem, &m, p, P);
                    }
            }
            break;
        }
    }
    cli_buf_addc(&b, '\n');

    /* Rows. */
    for (size_t i = 0; i < n; i++) {
        first = 1;
        if (o.id) {
            SEP();
            cli_buf_csv(&b, moe_table_cell(data.table, data.encoded->row[i], id_col));
        }
        for (int it = 0; it < n_order; it++) {
            switch (order[it]) {
            case ITEM_MEAN:
                for (size_t p = 0; p < P; p++) SEP(), cli_buf_num(&b, mean[i * P + p]);
                break;
            case ITEM_SD:
                for (size_t p = 0; p < P; p++) SEP(), cli_buf_num(&b, sqrt(var[i * P + p]));
                break;
            case ITEM_INTERVAL:
                for (size_t p = 0; p < P; p++) SEP(), cli_buf_num(&b, lower[i * P + p]);
                for (size_t p = 0; p < P; p++) SEP(), cli_buf_num(&b, upper[i * P + p]);
                break;
            case ITEM_LOGDENSITY: SEP(), cli_buf_num(&b, logd[i]); break;
            case ITEM_CLASS: {
                size_t best = 0;
                for (size_t c = 1; c < C; c++)
                    if (proba[i * C + c] > proba[i * C + best]) best = c;
                SEP(), cli_buf_csv(&b, moe_encoder_class_name(m.encoder, best));
                break;
            }
            case ITEM_PROBA:
                for (size_t c = 0; c < C; c++) SEP(), cli_buf_num(&b, proba[i * C + c]);
                break;
            case ITEM_EXPERT: SEP(), cli_buf_printf(&b, "%ld", (long)expert[i] + 1); break;
            case ITEM_GATES:
                for (size_t k = 0; k < K; k++) SEP(), cli_buf_num(&b, gates[i * K + k]);
                break;
            case ITEM_EXPERTS:
                if (cls) {
                    for (size_t k = 0; k < K * C; k++) SEP(), cli_buf_num(&b, emean[i * K * C + k]);
                } else {
                    for (size_t k = 0; k < K * P; k++) SEP(), cli_buf_num(&b, emean[i * K * P + k]);
                    for (size_t k = 0; k < K * P; k++) SEP(), cli_buf_num(&b, esd[i * K * P + k]);
                }
                break;
            }
        }
        cli_buf_addc(&b, '\n');
    }
#undef SEP
    if (b.failed) goto oom;
    if ((st = cli_write_atomic(o.out, b.data, b.len, &err)) != MOE_STATUS_OK) goto failed;
    rc = CLI_EXIT_OK;
    goto done;

oom:
    cli_error("predict", "out of memory");
    rc = CLI_EXIT_RUNTIME;
    goto done;
failed:
    cli_error("predict", "%s", err.message);
    rc = cli_exit_code(st);
done:
    cli_buf_free(&b);
    free(mean);
    free(var);
    free(lower);
    free(upper);
    free(logd);
    free(proba);
    free(gates);
    free(emean);
    free(esd);
    free(expert);
    cli_list_free(items, n_items);
    cli_data_free(&data);
    cli_model_free(&m);
    return rc;
}
