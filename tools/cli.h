/*
 * cli.h -- private declarations shared by the files of the `moe` program.
 *
 * The program uses only the public header (moe.h). This header gathers:
 *   - exit codes and error reporting (one line on stderr, "moe CMD: ...");
 *   - the option-descriptor table every subcommand is driven by (opts.c):
 *     one descriptor per option gives its short and long names, type,
 *     bounds, help text and the variable it sets, so parsing, range checks
 *     and `--help` with live defaults cannot drift apart;
 *   - a growable text buffer, JSON/CSV number formatting and atomic output
 *     files (util.c);
 *   - model + encoder loading shared by predict, eval and inspect (model.c);
 *   - training progress on stderr (progress.c).
 */
#ifndef MOE_CLI_H
#define MOE_CLI_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "moe.h"

/* ---- exit codes ----------------------------------------------------------- */

#define CLI_EXIT_OK 0
#define CLI_EXIT_USAGE 1   /* bad usage or bad input (files, options, data) */
#define CLI_EXIT_RUNTIME 2 /* runtime failure: out of memory, numerical, interrupted */

/* The process group of `moe-mpi train` (tools/mpi/moe_mpi.c): NULL in the
 * one-process `moe`. When set, `train` reads only this process's share of
 * the rows, trains with this reducer, and only process 0 prints or writes. */
extern const moe_reducer *cli_group;

/* Exit code for a library status: input problems are 1, the rest 2. */
int cli_exit_code(moe_status status);

/* Print "moe CMD: message" on stderr (one line). cmd may be NULL. */
void cli_error(const char *cmd, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Print "moe CMD: note: message" on stderr. */
void cli_note(const char *cmd, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* ---- option descriptors (opts.c) ------------------------------------------ */

typedef enum cli_opt_type {
    CLI_OPT_FLAG = 0,   /* int, set to 1 */
    CLI_OPT_INT = 1,    /* int within [min, max] */
    CLI_OPT_UINT64 = 2, /* uint64_t, decimal */
    CLI_OPT_DOUBLE = 3, /* finite double within [min, max] */
    CLI_OPT_STRING = 4, /* const char *, pointing into argv */
    CLI_OPT_CHOICE = 5  /* int: index into the NULL-terminated `choices` */
} cli_opt_type;

typedef struct cli_opt {
    char short_name;             /* 0 = long form only */
    const char *long_name;       /* without the leading "--" */
    cli_opt_type type;
    void *dest;                  /* the variable the option sets (see the types) */
    const char *arg;             /* argument name in --help ("K", "FILE") */
    double min, max;             /* bounds of INT and DOUBLE options (inclusive) */
    const char *const *choices;  /* CHOICE: NULL-terminated names */
    const char *group;           /* --help heading starting at this option, or NULL */
    const char *help;            /* one line */
    const char *default_text;    /* shown instead of the live value when not NULL */
    int set;                     /* written by the parser: times given */
} cli_opt;

typedef struct cli_command {
    const char *name;     /* "train" */
    const char *usage;    /* "[options] DATA.csv [-o MODEL]" */
    const char *summary;  /* one line */
    const char *details;  /* paragraph printed after the options, or NULL */
} cli_command;

/* Parse argv[1..argc-1] (argv[0] is the command name) against opts[0..n-1].
 * Options and positional arguments may be mixed; "--" ends the options; "-"
 * alone is a positional argument. Long options take "--name=value" or
 * "--name value"; short ones "-kVALUE" or "-k VALUE"; flags group ("-qh").
 * Positional arguments are stored in pos[0..*n_pos-1] (at most max_pos).
 * Returns 0 on success, -1 after printing a usage error, 1 after printing
 * --help (the caller exits 0). */
int cli_parse(const cli_command *cmd, cli_opt *opts, size_t n_opts, int argc, char **argv,
              char **pos, size_t max_pos, size_t *n_pos);

/* Print the --help text of a command to `f` (live defaults: the current
 * values of the variables the options point to). */
void cli_print_help(const cli_command *cmd, const cli_opt *opts, size_t n_opts, void *f);

/* Find an option by long name (for "was it given?" checks). */
const cli_opt *cli_opt_find(const cli_opt *opts, size_t n_opts, const char *long_name);

/* ---- text buffers and formatting (util.c) --------------------------------- */

typedef struct cli_buf {
    char *data;
    size_t len, cap;
    int failed; /* an allocation failed: data is incomplete */
} cli_buf;

void cli_buf_free(cli_buf *b);
void cli_buf_add(cli_buf *b, const char *s);
void cli_buf_addn(cli_buf *b, const char *s, size_t n);
void cli_buf_addc(cli_buf *b, char c);
void cli_buf_printf(cli_buf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* A double as %.17g in the C locale ("nan", "inf", "-inf" for non-finite). */
void cli_buf_num(cli_buf *b, double v);
/* A double as a JSON number, or null when not finite. */
void cli_buf_json_num(cli_buf *b, double v);
/* A JSON string literal (quotes, escapes; invalid UTF-8 bytes as \u00XX). */
void cli_buf_json_str(cli_buf *b, const char *s);
/* A CSV field for a comma-delimited file (quoted when needed). */
void cli_buf_csv(cli_buf *b, const char *s);

/* Split a comma-separated list into a new array of new strings (blanks
 * around items removed). Empty items are an error. Returns 0, or -1 with a
 * reason in why[]. Free with cli_list_free. */
int cli_list_split(const char *text, char ***items, size_t *n, char *why, size_t why_size);
void cli_list_free(char **items, size_t n);

/* Parse a --sep argument ("auto", ",", ";", "tab", "\t", "\\t", any one
 * byte): 0 = detect. Returns 0, or -1 when unusable. */
int cli_parse_sep(const char *text, char *out);

/* Read a CSV table from `path` ("-" = stdin, named "<stdin>"). */
moe_status cli_read_table(const char *path, char sep, moe_table **out, moe_error *err);

/* Read a whole file ("-" = stdin) into a new buffer. */
moe_status cli_read_file(const char *path, void **data, size_t *size, moe_error *err);

/* Write `size` bytes to `path` atomically: into a temporary file in the
 * same directory, flushed to disk, then renamed over `path`; on failure
 * the temporary file is removed and `path` untouched. "-" writes to stdout.
 * Test hook: when the environment variable MOE_TEST_SLOW_SAVE holds a
 * number of seconds, sleep that long between the flush and the rename (so
 * a test can kill the process during a save). */
moe_status cli_write_atomic(const char *path, const void *data, size_t size, moe_error *err);

/* 1 when `a` and `b` name the same existing file (same device and inode),
 * so an output never overwrites an input. "-" is never the same. */
int cli_same_file(const char *a, const char *b);

/* Seconds on a monotonic clock. */
double cli_now(void);

/* ---- models with their encoders (model.c) --------------------------------- */

typedef struct cli_model {
    moe_model *model;
    moe_encoder *encoder;   /* from the "moe.encoder" metadata, or synthesised */
    int synthesised;        /* 1 when the model had no encoder metadata */
    const char *path;
} cli_model;

/* Load a model file ("-" = stdin) and its encoder; checks they agree. */
moe_status cli_model_load(const char *path, cli_model *out, moe_error *err);
void cli_model_free(cli_model *m);

/* Load the model at model_path and encode the table at data_path for it
 * (either may be "-", not both). `target` says whether the target columns
 * are needed. Prints the error and returns its exit code, or 0. */
int cli_load_and_encode(const char *cmd, const char *model_path, const char *data_path, char sep,
                        moe_missing missing, int unseen_zero, moe_target_use target,
                        cli_model *model, moe_table **table, moe_encoded **encoded);

/* Name of the model's encoded input column j (never NULL). */
const char *cli_feature_name(const cli_model *m, size_t j);

/* Metadata keys written by `moe train` (docs/cli.md lists them). */
#define CLI_META_ENCODER "moe.encoder"
#define CLI_META_CREATOR "moe.creator"
#define CLI_META_FEATURES "moe.feature_names"
#define CLI_META_TARGETS "moe.target_names"
#define CLI_META_CLASSES "moe.class_names"
#define CLI_META_EXPERT_FEATURES "moe.expert_features"
#define CLI_META_GATE_FEATURES "moe.gate_features"
#define CLI_META_TRAIN_PREFIX "moe.train."

/* ---- data files and encoding options (data_opts.c) ------------------------ */

/* How a CSV file becomes a data set: the options `moe train` and `moe
 * convert` share (CLI_ENCODE_OPTIONS puts them in an option table). */
typedef struct cli_encode_opts {
    const char *target, *features, *drop, *weights, *categorical, *sep;
    int task, na;
    /* the lists split by cli_encode_opts_params */
    char **targets_v, **features_v, **drop_v, **categorical_v;
    size_t n_targets, n_features, n_drop, n_categorical;
} cli_encode_opts;

extern const char *const cli_task_names[];
extern const char *const cli_na_names[];
extern const char *const cli_unseen_names[];

/* The "Input" group of the commands that read data for a model (predict,
 * eval, update): --sep, --na (its help line na_help) and --unseen. */
#define CLI_MODEL_INPUT_OPTIONS(sep, na, unseen, na_help)                                       \
    {'F', "sep", CLI_OPT_STRING, &(sep), "CHAR", 0, 0, NULL, "Input",                           \
     "field delimiter of DATA: auto, ',', ';', tab", NULL, 0},                                  \
    {'N', "na", CLI_OPT_CHOICE, &(na), NULL, 0, 0, cli_na_names, NULL, na_help, NULL, 0},      \
    {'u', "unseen", CLI_OPT_CHOICE, &(unseen), NULL, 0, 0, cli_unseen_names, NULL,             \
     "unseen category: error, or all zeros", NULL, 0}

/* The "Data" group of option descriptors for a cli_encode_opts `o`. */
#define CLI_ENCODE_OPTIONS(o)                                                                   \
    {'y', "target", CLI_OPT_STRING, &(o).target, "NAMES", 0, 0, NULL, "Data",                  \
     "target column(s); several: multi-output regression", "last column", 0},                  \
    {'T', "task", CLI_OPT_CHOICE, &(o).task, NULL, 0, 0, cli_task_names, NULL,                 \
     "regression or classification (auto: see below)", NULL, 0},                               \
    {'x', "features", CLI_OPT_STRING, &(o).features, "NAMES", 0, 0, NULL, NULL,                \
     "input columns", "all other columns", 0},                                                 \
    {'D', "drop", CLI_OPT_STRING, &(o).drop, "NAMES", 0, 0, NULL, NULL,                        \
     "columns to ignore (ids, leaks)", "none", 0},                                             \
    {'w', "weights", CLI_OPT_STRING, &(o).weights, "NAME", 0, 0, NULL, NULL,                   \
     "column of case weights (finite, >= 0)", "none", 0},                                      \
    {'C', "categorical", CLI_OPT_STRING, &(o).categorical, "NAMES", 0, 0, NULL, NULL,          \
     "inputs to one-hot encode even if numeric", "text columns", 0},                           \
    {'F', "sep", CLI_OPT_STRING, &(o).sep, "CHAR", 0, 0, NULL, NULL,                           \
     "field delimiter: auto, ',', ';', tab", NULL, 0},                                         \
    {'N', "na", CLI_OPT_CHOICE, &(o).na, NULL, 0, 0, cli_na_names, NULL,                       \
     "rows with missing values (empty, NA): error or drop", NULL, 0}

/* Number of descriptors CLI_ENCODE_OPTIONS gives. */
#define CLI_N_ENCODE_OPTIONS 8

void cli_encode_opts_init(cli_encode_opts *o);  /* defaults: sep "auto", the rest empty */
void cli_encode_opts_free(cli_encode_opts *o);  /* the split lists */

/* Split the lists and fill *ep (pointing into o) and *sep. Returns 0, or
 * -1 after printing the error as `moe CMD: ...`. */
int cli_encode_opts_params(const char *cmd, cli_encode_opts *o, moe_encoder_params *ep,
                           char *sep);

/* A class label must be a text or an integer: a number with a fraction
 * ("2.4") means the target is a measurement, and classifying it would make
 * every distinct value a class. Returns 0, or -1 after printing the first
 * such cell of `table` (file:line:column). */
int cli_check_labels(const char *cmd, const moe_table *table, const moe_encoder *enc);

/* Is `path` a .moed file: its extension, or its first bytes? */
int cli_is_moed(const char *path);

/* Rows to predict from or score: a CSV file encoded by the model's encoder,
 * or a .moed file (memory-mapped; its columns must be encoded as the
 * model's). */
typedef struct cli_data {
    moe_dataset ds;          /* the rows, either way (x has the model's columns) */
    const char *name;        /* for messages */
    size_t n_read;           /* rows in the file */
    size_t n_dropped;        /* rows left out for missing values */
    moe_table *table;        /* CSV: the table (for --id), else NULL */
    moe_encoded *encoded;    /* CSV: the encoding (encoded->row maps rows back) */
    moe_moed *moed;          /* .moed: the mapped file */
    double *x_owned;         /* .moed whose columns had to be gathered */
} cli_data;

/* Load the model and the data (CSV through cli_load_and_encode, or .moed).
 * Prints the error and returns its exit code, or 0. */
int cli_load_data(const char *cmd, const char *model_path, const char *data_path, char sep,
                  moe_missing missing, int unseen_zero, moe_target_use target, cli_model *model,
                  cli_data *data);
void cli_data_free(cli_data *data);

/* ---- progress (progress.c) ------------------------------------------------ */

typedef struct cli_progress {
    int quiet;
    int tty;            /* stderr is a terminal: one live line */
    double t0;          /* start of training */
    double last_draw;   /* last live-line update */
    const char *label;  /* e.g. the tree shape while selecting, or NULL */
    int line_open;      /* a live line is on screen without its newline */
    moe_iter_info last; /* the latest iteration (drawn at the end on a terminal) */
    int last_pending;   /* `last` not drawn yet */
    int n_lines;        /* plain lines written */
} cli_progress;

/* Set up progress for training (stderr; quiet = print nothing). Installs
 * SIGINT/SIGTERM handlers that make the next callback cancel training. */
void cli_progress_init(cli_progress *p, int quiet);

/* A moe_iter_fn: user_data is a cli_progress. */
int cli_progress_iter(const moe_iter_info *info, void *user_data);

/* End the live line (if any). */
void cli_progress_done(cli_progress *p);

/* 1 once SIGINT or SIGTERM arrived during training. */
int cli_interrupted(void);

/* Library log messages (warnings and errors) to stderr unless quiet. */
void cli_log_install(int quiet);

/* ---- routing diagnostics (routing_text.c) --------------------------------- */

/* Problems found in a routing summary, one line each, every line starting
 * with `prefix`: a collapsed gate, dead and idle experts, collapsed inner
 * gates. Returns the number of lines (0: nothing to report). */
size_t cli_routing_flags(cli_buf *b, const moe_routing *r, const moe_model *m,
                         const char *prefix);
/* Two lines for a log: entropy and balance, rows per expert. */
void cli_routing_summary(cli_buf *b, const moe_routing *r, const char *prefix);
/* inspect's text section and JSON object ("routing": {...}). */
void cli_routing_table(cli_buf *b, const moe_routing *r, const moe_model *m,
                       const char *data_name);
void cli_routing_json(cli_buf *b, const moe_routing *r, const moe_model *m,
                      const char *data_name);

/* ---- subcommands ---------------------------------------------------------- */

int cli_cmd_train(int argc, char **argv);
int cli_cmd_predict(int argc, char **argv);
int cli_cmd_eval(int argc, char **argv);
int cli_cmd_inspect(int argc, char **argv);
int cli_cmd_convert(int argc, char **argv);
int cli_cmd_update(int argc, char **argv);

#endif /* MOE_CLI_H */
