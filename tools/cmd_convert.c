/*
 * cmd_convert.c -- `moe convert [options] DATA.csv [OUT.moed]`.
 *
 * Encode a CSV file once, the way `moe train` would (same data options),
 * and write the matrices to a .moed file that train, predict and eval read
 * without parsing. The file is streamed: one or two passes fit the encoder
 * (types, then levels and classes), one more encodes and writes, each
 * holding one batch of rows, so memory stays bounded whatever the file's
 * size. The output appears atomically at the end.
 */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const cli_command convert_cmd = {
    "convert", "[options] DATA.csv [OUT.moed]",
    "Encode a CSV file as 'moe train' would (same data options) and write the result as a\n"
    ".moed binary data file (default: DATA's base name + .moed, in the current directory).\n"
    "train, predict and eval read .moed files memory-mapped, without parsing; training\n"
    "from one streams it, so it may be larger than memory.",
    "The CSV is read two or three times in batches (memory stays bounded whatever its\n"
    "size), so DATA must be a file, not '-'. --task auto: as in 'moe train'.\n"};

/* DATA's base name without its extension, plus ".moed". */
static char *default_out(const char *data) {
    const char *s = strrchr(data, '/'), *b = s ? s + 1 : data;
    const char *dot = strrchr(b, '.');
    size_t n = dot && dot != b ? (size_t)(dot - b) : strlen(b);
    char *p = malloc(n + 6);
    if (!p) return NULL;
    memcpy(p, b, n);
    memcpy(p + n, ".moed", 6);
    return p;
}

/* A class name that is a number with a fraction: find the first such cell
 * for the message (one more pass, only on this error). */
static int check_classes(moe_csv_reader *rd, const moe_encoder *enc) {
    int fractional = 0;
    for (size_t c = 0; c < moe_encoder_n_classes(enc); c++) {
        double v;
        const char *name = moe_encoder_class_name(enc, c);
        if (moe_parse_double(name, &v) && v != (double)(long long)v) fractional = 1;
    }
    if (!fractional) return 0;
    moe_error err;
    const moe_table *batch = NULL;
    if (moe_csv_reader_rewind(rd, &err) != MOE_STATUS_OK) {
        cli_error("convert", "%s", err.message);
        return -1;
    }
    while (moe_csv_reader_next(rd, 65536, &batch, &err) == MOE_STATUS_OK && batch)
        if (cli_check_labels("convert", batch, enc) != 0) return -1;
    cli_error("convert", "%s: a class label has a fraction (use --task regression)",
              moe_csv_reader_name(rd));
    return -1;
}

int cli_cmd_convert(int argc, char **argv) {
    cli_encode_opts eo;
    const char *out = NULL;
    int quiet = 0;
    cli_encode_opts_init(&eo);
    cli_opt opts[] = {
        CLI_ENCODE_OPTIONS(eo),
        {'o', "out", CLI_OPT_STRING, &out, "FILE", 0, 0, NULL, "Output",
         ".moed file to write", "DATA.moed", 0},
        {'q', "quiet", CLI_OPT_FLAG, &quiet, NULL, 0, 0, NULL, NULL,
         "no notes or summary on stderr", NULL, 0},
        {'h', "help", CLI_OPT_FLAG, NULL, NULL, 0, 0, NULL, NULL, "this help", NULL, 0},
    };
    const size_t n_opts = sizeof opts / sizeof opts[0];
    char *pos[2];
    size_t n_pos;
    int r = cli_parse(&convert_cmd, opts, n_opts, argc, argv, pos, 2, &n_pos);
    if (r != 0) return r > 0 ? CLI_EXIT_OK : CLI_EXIT_USAGE;

    int rc = CLI_EXIT_USAGE;
    moe_error err;
    moe_status st;
    moe_csv_reader *rd = NULL;
    moe_encoder *enc = NULL;
    moe_moed_writer *w = NULL;
    char *out_path = NULL;
    moe_encoder_params ep;
    char sep;

    cli_log_install(quiet);
    if (n_pos < 1) {
        cli_error("convert", "no data file given (see 'moe convert --help')");
        goto done;
    }
    const char *data_path = pos[0];
    if (n_pos == 2 && out) {
        cli_error("convert", "the output file is given twice ('%.60s' and -o '%.60s')", pos[1],
                  out);
        goto done;
    }
    if (n_pos == 2) out = pos[1];
    if (strcmp(data_path, "-") == 0) {
        cli_error("convert", "reads its input more than once: give a file, not '-'");
        goto done;
    }
    if (!out) {
        if (!(out = out_path = default_out(data_path))) goto oom;
    }
    if (strcmp(out, "-") == 0) {
        cli_error("convert", "-o -: a .moed file must be a file (it is written with seeks)");
        goto done;
    }
    if (cli_same_file(out, data_path)) {
        cli_error("convert", "%s: the output would overwrite the data file", out);
        goto done;
    }
    if (cli_is_moed(data_path) && moe_moed_is_moed(data_path)) {
        cli_error("convert", "%s is already a .moed file", data_path);
        goto done;
    }
    if (cli_encode_opts_params("convert", &eo, &ep, &sep) != 0) goto done;

    moe_csv_params cp = moe_csv_params_default();
    cp.delimiter = sep;
    if ((st = moe_csv_reader_open(data_path, &cp, &rd, &err)) != MOE_STATUS_OK ||
        (st = moe_encoder_fit_csv(rd, &ep, &enc, &err)) != MOE_STATUS_OK) {
        cli_error("convert", "%s", err.message);
        rc = cli_exit_code(st);
        goto done;
    }
    if (moe_encoder_task(enc) == MOE_TASK_CLASSIFICATION && check_classes(rd, enc) != 0)
        goto done;

    int cls = moe_encoder_task(enc) == MOE_TASK_CLASSIFICATION;
    size_t F = moe_encoder_n_features(enc);
    size_t P = cls ? 0 : moe_encoder_n_targets(enc), C = cls ? moe_encoder_n_classes(enc) : 0;
    int has_w = moe_encoder_weights_name(enc) != NULL;
    moe_encoder_apply_params ap = moe_encoder_apply_params_default();
    ap.missing = ep.missing;
    ap.target = MOE_TARGET_USE_REQUIRED;
    size_t dropped = 0;
    if ((st = moe_moed_writer_open(out, F, P, C, has_w, enc, &w, &err)) != MOE_STATUS_OK ||
        (st = moe_csv_reader_rewind(rd, &err)) != MOE_STATUS_OK ||
        (st = moe_moed_writer_append_csv(w, rd, enc, &ap, &dropped, &err)) != MOE_STATUS_OK ||
        (st = moe_moed_writer_commit(w, &err)) != MOE_STATUS_OK) {
        cli_error("convert", "%s", err.message);
        rc = cli_exit_code(st);
        goto done;
    }
    if (!quiet) {
        size_t n = moe_csv_reader_n_rows_read(rd);
        struct stat sb;
        if (dropped)
            cli_note("convert", "%s: dropped %zu of %zu rows with missing values", data_path,
                     dropped, n);
        fprintf(stderr, "moe convert: %zu rows x %zu input columns, %s, written to %s (%lld bytes)\n",
                n - dropped, F,
                cls ? "classification" : "regression", out,
                stat(out, &sb) == 0 ? (long long)sb.st_size : -1LL);
    }
    rc = CLI_EXIT_OK;
    goto done;
oom:
    cli_error("convert", "out of memory");
    rc = CLI_EXIT_RUNTIME;
done:
    moe_moed_writer_free(w);
    moe_encoder_free(enc);
    moe_csv_reader_free(rd);
    free(out_path);
    cli_encode_opts_free(&eo);
    return rc;
}
