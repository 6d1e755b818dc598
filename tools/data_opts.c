/*
 * data_opts.c -- the options that say how a CSV file becomes a data set
 * (target, task, inputs, dropped columns, weights, categorical columns,
 * delimiter, missing values), shared by `moe train` and `moe convert` so
 * both encode a file the same way; the class-label check; and loading a
 * data file that is either a CSV or a .moed for predict and eval.
 */
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const cli_task_names[] = {"auto", "regression", "classification", NULL};
const char *const cli_na_names[] = {"error", "drop", NULL};
const char *const cli_unseen_names[] = {"error", "zero", NULL};

void cli_encode_opts_init(cli_encode_opts *o) {
    memset(o, 0, sizeof *o);
    o->sep = "auto";
}

void cli_encode_opts_free(cli_encode_opts *o) {
    cli_list_free(o->targets_v, o->n_targets);
    cli_list_free(o->features_v, o->n_features);
    cli_list_free(o->drop_v, o->n_drop);
    cli_list_free(o->categorical_v, o->n_categorical);
    o->targets_v = o->features_v = o->drop_v = o->categorical_v = NULL;
    o->n_targets = o->n_features = o->n_drop = o->n_categorical = 0;
}

static int split(const char *cmd, const char *opt, const char *text, char ***v, size_t *n) {
    char why[200];
    if (!text) return 0;
    if (cli_list_split(text, v, n, why, sizeof why) != 0) {
        cli_error(cmd, "--%s: %s", opt, why);
        return -1;
    }
    return 0;
}

int cli_encode_opts_params(const char *cmd, cli_encode_opts *o, moe_encoder_params *ep,
                           char *sep) {
    if (cli_parse_sep(o->sep, sep) != 0) {
        cli_error(cmd, "--sep: '%.20s' is not a delimiter (auto, ',', ';', tab, or one "
                       "character)", o->sep);
        return -1;
    }
    if (split(cmd, "target", o->target, &o->targets_v, &o->n_targets) != 0 ||
        split(cmd, "features", o->features, &o->features_v, &o->n_features) != 0 ||
        split(cmd, "drop", o->drop, &o->drop_v, &o->n_drop) != 0 ||
        split(cmd, "categorical", o->categorical, &o->categorical_v, &o->n_categorical) != 0)
        return -1;
    if (o->weights && !o->weights[0]) {
        cli_error(cmd, "--weights: empty column name");
        return -1;
    }
    *ep = moe_encoder_params_default();
    ep->targets = (const char *const *)o->targets_v;
    ep->n_targets = o->n_targets;
    ep->inputs = (const char *const *)o->features_v;
    ep->n_inputs = o->n_features;
    ep->drop = (const char *const *)o->drop_v;
    ep->n_drop = o->n_drop;
    ep->categorical = (const char *const *)o->categorical_v;
    ep->n_categorical = o->n_categorical;
    ep->weights = o->weights;
    ep->task = (moe_encode_task)o->task;
    ep->missing = o->na ? MOE_MISSING_DROP : MOE_MISSING_ERROR;
    return 0;
}

int cli_check_labels(const char *cmd, const moe_table *table, const moe_encoder *enc) {
    const char *name = moe_encoder_target_name(enc, 0);
    size_t j = name ? moe_table_col_index(table, name) : MOE_TABLE_NO_COL;
    if (j == MOE_TABLE_NO_COL) return 0;
    for (size_t i = 0; i < moe_table_n_rows(table); i++) {
        const char *cell = moe_table_cell(table, i, j);
        double v;
        if (cell && moe_parse_double(cell, &v) && v != floor(v)) {
            cli_error(cmd, "%s:%zu:%zu (column '%s'): '%.40s' cannot be a class label (a "
                           "number with a fraction; use --task regression)",
                      moe_table_name(table), moe_table_row_line(table, i), j + 1, name, cell);
            return -1;
        }
    }
    return 0;
}

int cli_is_moed(const char *path) {
    size_t n = strlen(path);
    if (strcmp(path, "-") == 0) return 0;
    if (n > 5 && strcmp(path + n - 5, ".moed") == 0) return 1;
    return moe_moed_is_moed(path);
}

void cli_data_free(cli_data *d) {
    moe_encoded_free(d->encoded);
    moe_table_free(d->table);
    moe_moed_close(d->moed);
    free(d->x_owned);
    memset(d, 0, sizeof *d);
}

/* Do the model's encoder and the file's encode input column i the same way
 * (name, type, levels)? */
static int same_input(const moe_encoder *a, size_t i, const moe_encoder *b, size_t k) {
    if (strcmp(moe_encoder_input_name(a, i), moe_encoder_input_name(b, k)) != 0) return 0;
    if (moe_encoder_input_is_categorical(a, i) != moe_encoder_input_is_categorical(b, k)) return 0;
    size_t na = moe_encoder_input_n_levels(a, i), fa, ca, fb, cb;
    if (na != moe_encoder_input_n_levels(b, k)) return 0;
    for (size_t l = 0; l < na; l++)
        if (strcmp(moe_encoder_input_level(a, i, l), moe_encoder_input_level(b, k, l)) != 0)
            return 0;
    moe_encoder_input_span(a, i, &fa, &ca);
    moe_encoder_input_span(b, k, &fb, &cb);
    return ca == cb;
}

/* The .moed's rows as the model's inputs: the mapped arrays themselves
 * when the file was encoded exactly as the model expects, else the
 * model's columns gathered from the file's (every model input must be in
 * the file, encoded the same way). */
static moe_status moed_for_model(const char *cmd, const cli_model *model, cli_data *d,
                                 moe_target_use target, moe_error *err) {
    const moe_encoder *me = model->encoder, *fe = moe_moed_encoder(d->moed);
    const char *name = moe_moed_name(d->moed);
    moe_dataset ds = moe_moed_dataset(d->moed);
    (void)cmd;
    memset(err, 0, sizeof *err);
    err->status = MOE_STATUS_DATA;
    snprintf(err->file, sizeof err->file, "%s", name);
    if (!fe) {
        if (ds.n_cols != moe_model_n_cols(model->model)) {
            snprintf(err->message, sizeof err->message,
                     "%.255s: %zu input columns and no column names; the model reads %zu", name,
                     ds.n_cols, moe_model_n_cols(model->model));
            return MOE_STATUS_DATA;
        }
        d->ds = ds;
    } else {
        size_t ni = moe_encoder_n_inputs(me), nf = moe_encoder_n_features(me);
        size_t *src = malloc((nf + 1) * sizeof *src);
        int identical = nf == ds.n_cols;
        if (!src) return err->status = MOE_STATUS_NO_MEMORY;
        for (size_t i = 0; i < ni; i++) {
            size_t k, f0, cnt, g0, gc;
            for (k = 0; k < moe_encoder_n_inputs(fe); k++)
                if (strcmp(moe_encoder_input_name(me, i), moe_encoder_input_name(fe, k)) == 0)
                    break;
            if (k == moe_encoder_n_inputs(fe) || !same_input(me, i, fe, k)) {
                snprintf(err->message, sizeof err->message,
                         "%.255s: %s input column '%.60s'%s", name,
                         k == moe_encoder_n_inputs(fe) ? "missing" : "differently encoded",
                         moe_encoder_input_name(me, i),
                         k == moe_encoder_n_inputs(fe) ? ""
                                                       : " (other levels than the model's; "
                                                         "predict from the CSV instead)");
                free(src);
                return MOE_STATUS_DATA;
            }
            moe_encoder_input_span(me, i, &f0, &cnt);
            moe_encoder_input_span(fe, k, &g0, &gc);
            for (size_t c = 0; c < cnt; c++) {
                src[f0 + c] = g0 + c;
                if (g0 + c != f0 + c) identical = 0;
            }
        }
        if (identical) {
            d->ds = ds;
        } else {
            size_t n = ds.n_rows;
            d->x_owned = malloc((n * nf + 1) * sizeof *d->x_owned);
            if (!d->x_owned) {
                free(src);
                snprintf(err->message, sizeof err->message, "out of memory");
                return err->status = MOE_STATUS_NO_MEMORY;
            }
            for (size_t r = 0; r < n; r++)
                for (size_t j = 0; j < nf; j++)
                    d->x_owned[r * nf + j] = ds.x[r * ds.ld_x + src[j]];
            d->ds = ds;
            d->ds.x = d->x_owned;
            d->ds.n_cols = nf;
            d->ds.ld_x = nf;
        }
        free(src);
        /* the target: the file's must be the model's */
        int same_target = moe_encoder_task(me) == moe_encoder_task(fe) &&
                          moe_encoder_n_targets(me) == moe_encoder_n_targets(fe) &&
                          moe_encoder_n_classes(me) == moe_encoder_n_classes(fe);
        for (size_t t = 0; same_target && t < moe_encoder_n_targets(me); t++)
            same_target = strcmp(moe_encoder_target_name(me, t), moe_encoder_target_name(fe, t)) == 0;
        for (size_t c = 0; same_target && c < moe_encoder_n_classes(me); c++)
            same_target = strcmp(moe_encoder_class_name(me, c), moe_encoder_class_name(fe, c)) == 0;
        if (!same_target) {
            if (target == MOE_TARGET_USE_REQUIRED) {
                snprintf(err->message, sizeof err->message,
                         "%.255s: its target (or classes) is not the model's", name);
                return MOE_STATUS_DATA;
            }
            d->ds.y = NULL;
            d->ds.labels = NULL;
            d->ds.n_outputs = d->ds.n_classes = 0;
        }
    }
    if (target == MOE_TARGET_USE_REQUIRED && !d->ds.y && !d->ds.labels) {
        snprintf(err->message, sizeof err->message, "%.255s: no target", name);
        return MOE_STATUS_DATA;
    }
    if (target == MOE_TARGET_USE_IGNORED) {
        d->ds.y = NULL;
        d->ds.labels = NULL;
    }
    err->status = MOE_STATUS_OK;
    return MOE_STATUS_OK;
}

int cli_load_data(const char *cmd, const char *model_path, const char *data_path, char sep,
                  moe_missing missing, int unseen_zero, moe_target_use target, cli_model *model,
                  cli_data *data) {
    moe_error err;
    moe_status st;
    memset(data, 0, sizeof *data);
    memset(model, 0, sizeof *model);
    if (!cli_is_moed(data_path)) {
        int rc = cli_load_and_encode(cmd, model_path, data_path, sep, missing, unseen_zero,
                                     target, model, &data->table, &data->encoded);
        if (rc != CLI_EXIT_OK) return rc;
        data->ds = moe_encoded_dataset(data->encoded);
        data->name = moe_table_name(data->table);
        data->n_read = moe_table_n_rows(data->table);
        data->n_dropped = data->encoded->n_dropped;
        return CLI_EXIT_OK;
    }
    if ((st = cli_model_load(model_path, model, &err)) != MOE_STATUS_OK) goto failed;
    if ((st = moe_moed_open(data_path, &data->moed, &err)) != MOE_STATUS_OK) goto failed;
    data->name = moe_moed_name(data->moed);
    data->n_read = moe_moed_dataset(data->moed).n_rows;
    if ((st = moed_for_model(cmd, model, data, target, &err)) != MOE_STATUS_OK) goto failed;
    return CLI_EXIT_OK;
failed:
    cli_error(cmd, "%s", err.message);
    cli_data_free(data);
    cli_model_free(model);
    return cli_exit_code(st);
}
