/*
 * model.c -- load a model file together with the encoder that turns CSV
 * columns into the model's inputs.
 *
 * `moe train` stores the encoder as text in the metadata key "moe.encoder"
 * so that predict/eval find the same columns, one-hot levels and class
 * names. A model made through the library without that key still works:
 * an encoder is synthesised that names its inputs x1..xN, its target y (or
 * y1..yP) and its classes 0..C-1 (docs/cli.md).
 */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cli_model_free(cli_model *m) {
    if (!m) return;
    moe_model_free(m->model);
    moe_encoder_free(m->encoder);
    memset(m, 0, sizeof *m);
}

static moe_status fail(moe_error *err, moe_status st, const char *path, const char *what) {
    memset(err, 0, sizeof *err);
    err->status = st;
    snprintf(err->file, sizeof err->file, "%s", path);
    size_t n = (size_t)snprintf(err->message, sizeof err->message, "%.255s: ", path);
    if (n < sizeof err->message)
        snprintf(err->message + n, sizeof err->message - n, "%.500s", what);
    return st;
}

static moe_status synthesise(const moe_model *model, moe_encoder **out, moe_error *err) {
    cli_buf b = {0};
    moe_task task = moe_model_task(model);
    size_t d = moe_model_n_cols(model), p = moe_model_n_outputs(model);
    size_t c = moe_model_n_classes(model);
    cli_buf_add(&b, "moe-encoder 1\n");
    cli_buf_printf(&b, "task %s\n", task == MOE_TASK_CLASSIFICATION ? "classification"
                                                                     : "regression");
    cli_buf_add(&b, "drop-first-level 1\n");
    if (task == MOE_TASK_CLASSIFICATION || p == 1) {
        cli_buf_add(&b, "targets 1\ntarget y\n");
    } else {
        cli_buf_printf(&b, "targets %zu\n", p);
        for (size_t k = 0; k < p; k++) cli_buf_printf(&b, "target y%zu\n", k + 1);
    }
    cli_buf_printf(&b, "inputs %zu\n", d);
    for (size_t j = 0; j < d; j++) cli_buf_printf(&b, "input x%zu numeric\n", j + 1);
    if (task == MOE_TASK_CLASSIFICATION) {
        cli_buf_printf(&b, "classes %zu\n", c);
        for (size_t k = 0; k < c; k++) cli_buf_printf(&b, "class %zu\n", k);
    } else {
        cli_buf_add(&b, "classes 0\n");
    }
    cli_buf_add(&b, "end\n");
    if (b.failed) {
        cli_buf_free(&b);
        return fail(err, MOE_STATUS_NO_MEMORY, "encoder", "out of memory");
    }
    moe_status st = moe_encoder_from_string(b.data, out, err);
    cli_buf_free(&b);
    return st;
}

moe_status cli_model_load(const char *path, cli_model *out, moe_error *err) {
    memset(out, 0, sizeof *out);
    out->path = path;
    moe_status st;
    if (strcmp(path, "-") == 0) {
        void *data;
        size_t size;
        if ((st = cli_read_file(path, &data, &size, err)) != MOE_STATUS_OK) return st;
        st = moe_model_load_buffer(data, size, "<stdin>", &out->model, err);
        free(data);
        out->path = "<stdin>";
    } else {
        st = moe_model_load(path, &out->model, err);
    }
    if (st != MOE_STATUS_OK) return st;

    const char *text = moe_model_meta_get(out->model, CLI_META_ENCODER);
    if (text) {
        moe_error e2;
        st = moe_encoder_from_string(text, &out->encoder, &e2);
        if (st != MOE_STATUS_OK) {
            char what[900];
            snprintf(what, sizeof what, "metadata '%s': %s", CLI_META_ENCODER, e2.message);
            st = fail(err, st == MOE_STATUS_NO_MEMORY ? st : MOE_STATUS_FORMAT, out->path, what);
            goto failed;
        }
    } else {
        if ((st = synthesise(out->model, &out->encoder, err)) != MOE_STATUS_OK) goto failed;
        out->synthesised = 1;
    }

    /* The encoder must produce exactly what the model reads. */
    moe_task task = moe_model_task(out->model);
    int ok = moe_encoder_task(out->encoder) == task &&
             moe_encoder_n_features(out->encoder) == moe_model_n_cols(out->model);
    if (ok && task == MOE_TASK_REGRESSION)
        ok = moe_encoder_n_targets(out->encoder) == moe_model_n_outputs(out->model);
    if (ok && task == MOE_TASK_CLASSIFICATION)
        ok = moe_encoder_n_classes(out->encoder) == moe_model_n_classes(out->model);
    if (!ok) {
        st = fail(err, MOE_STATUS_FORMAT, out->path,
                  "metadata 'moe.encoder' does not match the model (columns, targets or classes)");
        goto failed;
    }
    return MOE_STATUS_OK;

failed:
    cli_model_free(out);
    return st;
}

const char *cli_feature_name(const cli_model *m, size_t j) {
    const char *s = moe_encoder_feature_name(m->encoder, j);
    return s ? s : "?";
}

int cli_load_and_encode(const char *cmd, const char *model_path, const char *data_path, char sep,
                        moe_missing missing, int unseen_zero, moe_target_use target,
                        cli_model *model, moe_table **table, moe_encoded **encoded) {
    moe_error err;
    moe_status st;
    *table = NULL;
    *encoded = NULL;
    memset(model, 0, sizeof *model);
    if (strcmp(model_path, "-") == 0 && strcmp(data_path, "-") == 0) {
        cli_error(cmd, "the model and the data cannot both come from stdin");
        return CLI_EXIT_USAGE;
    }
    if ((st = cli_model_load(model_path, model, &err)) != MOE_STATUS_OK) goto failed;
    if ((st = cli_read_table(data_path, sep, table, &err)) != MOE_STATUS_OK) goto failed;
    moe_encoder_apply_params ap = moe_encoder_apply_params_default();
    ap.missing = missing;
    ap.unseen_zero = unseen_zero;
    ap.target = target;
    if ((st = moe_encoder_apply(model->encoder, *table, &ap, encoded, &err)) != MOE_STATUS_OK)
        goto failed;
    return CLI_EXIT_OK;
failed:
    cli_error(cmd, "%s", err.message);
    moe_table_free(*table);
    *table = NULL;
    cli_model_free(model);
    return cli_exit_code(st);
}
