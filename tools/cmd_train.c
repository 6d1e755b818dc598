/*
 * cmd_train.c -- `moe train [options] DATA.csv [-o MODEL]`.
 *
 * Read the CSV, fit an encoder (which columns are inputs, one-hot levels,
 * class names), encode, train (or select a tree shape by an information
 * criterion), store the encoder and the settings in the model's metadata,
 * and save the model atomically. Nothing is written unless everything
 * before succeeded.
 */
#include "cli.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const task_names[] = {"auto", "regression", "classification", NULL};
static const char *const variance_names[] = {"iso", "diag", "full", NULL};
static const char *const init_names[] = {"random", "kmeans", NULL};
static const char *const criterion_names[] = {"bic", "aic", "icl", NULL};
static const char *const na_names[] = {"error", "drop", NULL};
static const char *const trainer_names[] = {"em", "gradient", NULL};
static const char *const activation_names[] = {"tanh", "relu", NULL};
static const char *const balance_names[] = {"switch", "cv2", NULL};
static const char *const objective_names[] = {"competitive", "cooperative", NULL};

/* "linear" or "mlp:32,16" into a network description. Returns 0, or -1
 * after printing the error. */
static int parse_net(const char *opt, const char *text, int activation, moe_mlp *out) {
    memset(out, 0, sizeof *out);
    out->activation = (moe_activation)activation;
    if (strcmp(text, "linear") == 0) return 0;
    if (strncmp(text, "mlp:", 4) != 0 || !text[4]) {
        cli_error("train", "--%s: '%.40s' is not 'linear' or 'mlp:SIZES' (e.g. mlp:32,32)", opt,
                  text);
        return -1;
    }
    const char *q = text + 4;
    while (*q) {
        char *end;
        long h = strtol(q, &end, 10);
        if (end == q || h < 1 || h > 65536 || (*end && *end != ',')) {
            cli_error("train", "--%s: '%.40s': hidden sizes are integers 1..65536 separated by "
                               "commas",
                      opt, text);
            return -1;
        }
        if (out->n_hidden == MOE_MAX_HIDDEN) {
            cli_error("train", "--%s: at most %d hidden layers", opt, MOE_MAX_HIDDEN);
            return -1;
        }
        out->hidden[out->n_hidden++] = (size_t)h;
        q = *end ? end + 1 : end;
        if (*end && !*q) {
            cli_error("train", "--%s: '%.40s' ends with a comma", opt, text);
            return -1;
        }
    }
    return 0;
}

#define MAX_SHAPES 64

typedef struct train_opts {
    const char *target, *features, *expert_features, *gate_features, *drop, *weights;
    const char *categorical, *sep, *tree, *select, *out;
    int task, na, experts, variance, init, restarts, max_iter, threads, criterion;
    int short_iter, quiet;
    uint64_t seed;
    double tol, var_floor, ridge, min_support;
    /* gradient training */
    int trainer, activation, top_k, balance_kind, objective, epochs, batch, patience, no_noise;
    int log_var;
    double balance, z_loss, lr, valid, clip, weight_decay;
    const char *expert, *gate, *init_model;
    /* sparse and online EM */
    int sparse_em, sparse_full, online, online_batch, online_passes;
} train_opts;

static const cli_command train_cmd = {
    "train", "[options] DATA.csv [-o MODEL]",
    "Fit a mixture of experts (a flat mixture or a tree of gates) to a CSV file and save the\n"
    "model (default: DATA's base name + .moe, in the current directory). DATA '-' is stdin;\n"
    "MODEL '-' is stdout.",
    "Column lists are comma-separated names of the file's columns. --expert-features and\n"
    "--gate-features also take one-hot column names (\"color=red\"), 'all' (every input) or\n"
    "'none' (intercept only: for the gate, constant mixing weights).\n"
    "--task auto: classification when there is one target and it holds text, or only\n"
    "integers with 2 to 20 distinct values; else regression. Several targets\n"
    "(--target y1,y2) make a multi-output regression.\n"
    "--tol 0 runs exactly --max-iter EM iterations. Models do not depend on --threads\n"
    "(nor on OMP_NUM_THREADS or OPENBLAS_NUM_THREADS).\n"
    "--sparse-em K: each row's posteriors keep only their K largest, so the experts'\n"
    "statistics cost K, not the number of experts, per row; EM then increases a lower\n"
    "bound of the log-likelihood (the trace), and the report gives the log-likelihood.\n"
    "Only one iteration in --sparse-full is a full E-step (every expert and gate, new\n"
    "kept sets); the others look at each row's K kept experts alone (a one-gate tree's\n"
    "gate steps once a cycle, after the last of them). They are cheaper but take\n"
    "another path, which can end in another local optimum, better or worse: use\n"
    "--restarts, or --sparse-full 1 (every iteration full: closest to dense EM).\n"
    "--online: stepwise EM over minibatches of --online-batch rows, --online-passes\n"
    "times; the first minibatch is fitted by batch EM (--restarts), each next one moves\n"
    "the model by the step (t + 2)^-0.6 (see 'moe update', which continues a model).\n"
    "DATA may be a .moed file ('moe convert'): it is then streamed, never held in memory.\n"
    "Over several machines: mpirun -np R moe-mpi train ... (same options; README).\n"
    "Progress goes to stderr: a live line on a terminal, one line per iteration otherwise.\n"};

static void join_json(cli_buf *b, const char *const *names, size_t n) {
    cli_buf_addc(b, '[');
    for (size_t i = 0; i < n; i++) {
        if (i) cli_buf_addc(b, ',');
        cli_buf_json_str(b, names[i]);
    }
    cli_buf_addc(b, ']');
}

/* Resolve an --expert-features / --gate-features list against the encoder:
 * *n = MOE_ALL_COLS for 'all', 0 for 'none'. Returns 0 or -1 (printed). */
static int resolve_cols(const char *opt, const char *text, const moe_encoder *enc, size_t *cols,
                        size_t *n) {
    if (!text || strcmp(text, "all") == 0) {
        *n = MOE_ALL_COLS;
        return 0;
    }
    if (strcmp(text, "none") == 0) {
        *n = 0;
        return 0;
    }
    char **names;
    size_t n_names;
    char why[200];
    if (cli_list_split(text, &names, &n_names, why, sizeof why) != 0) {
        cli_error("train", "--%s: %s", opt, why);
        return -1;
    }
    moe_error err;
    size_t cap = moe_encoder_n_features(enc);
    moe_status st = moe_encoder_find_features(enc, (const char *const *)names, n_names, cols,
                                              cap, n, &err);
    cli_list_free(names, n_names);
    if (st != MOE_STATUS_OK) {
        cli_error("train", "--%s: %s", opt, err.message);
        return -1;
    }
    return 0;
}

/* Print a training error; it names the data file when the library's
 * message does not already. */
static void train_error(const char *name, const moe_error *err) {
    if (strncmp(err->message, name, strlen(name)) == 0)
        cli_error("train", "%s", err->message);
    else
        cli_error("train", "%s: %s", name, err->message);
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* DATA's base name without its extension, plus ".moe". */
static char *default_model_path(const char *data) {
    const char *b = base_name(data);
    const char *dot = strrchr(b, '.');
    size_t n = dot && dot != b ? (size_t)(dot - b) : strlen(b);
    char *p = malloc(n + 5);
    if (!p) return NULL;
    memcpy(p, b, n);
    memcpy(p + n, ".moe", 5);
    return p;
}

static int meta(moe_model *m, const char *key, const char *value) {
    return moe_model_meta_set(m, key, value) == MOE_STATUS_OK ? 0 : -1;
}

static int meta_setting(moe_model *m, const char *name, const char *value) {
    char key[128];
    snprintf(key, sizeof key, "%s%s", CLI_META_TRAIN_PREFIX, name);
    return meta(m, key, value);
}

static int meta_num(moe_model *m, const char *name, double v) {
    char buf[64];
    moe_format_double(v, buf, sizeof buf);
    return meta_setting(m, name, buf);
}

/* The routing summary of the trained model on its training rows, and its
 * problems as warnings (stderr). A failure here is only a note: the model
 * is already saved. */
static void log_routing(const moe_model *model, const moe_encoded *data) {
    moe_routing r;
    moe_error err;
    size_t ld = data->n_cols ? data->n_cols : 1;
    if (moe_model_routing(model, data->n_rows, data->x, ld, data->weights, &r, &err) !=
        MOE_STATUS_OK) {
        cli_note("train", "routing diagnostics: %s", err.message);
        return;
    }
    cli_buf b = {0};
    cli_routing_summary(&b, &r, "moe train: ");
    cli_routing_flags(&b, &r, model, "moe train: warning: ");
    if (!b.failed && b.len) fputs(b.data, stderr);
    cli_buf_free(&b);
    moe_routing_free(&r);
}

/* Open a .moed training file: its header and encoder (a copy into *enc)
 * and a row source over all its rows. The data options belong to `moe
 * convert` then. Returns 0, or -1 after printing the error. */
static int train_moed_open(const char *path, const cli_opt *opts, size_t n_opts, moe_moed **moed,
                           moe_encoder **enc, moe_source *src) {
    static const char *const data_opts[] = {"target", "task", "features", "drop",
                                            "weights", "categorical", "sep", "na"};
    moe_error err;
    moe_status st;
    char *text = NULL;
    for (size_t i = 0; i < sizeof data_opts / sizeof data_opts[0]; i++) {
        const cli_opt *o = cli_opt_find(opts, n_opts, data_opts[i]);
        if (o && o->set) {
            cli_error("train", "--%s: %s is already encoded (give --%s to 'moe convert')",
                      data_opts[i], path, data_opts[i]);
            return -1;
        }
    }
    if ((st = moe_moed_open_header(path, moed, &err)) != MOE_STATUS_OK) {
        cli_error("train", "%s", err.message);
        return -1;
    }
    /* Under moe-mpi, this process's share of the rows only. */
    size_t b0 = 0, b1 = MOE_MOED_ALL_ROWS;
    if (cli_group && cli_group->size > 1)
        moe_shard_rows(moe_moed_dataset(*moed).n_rows, cli_group->size, cli_group->rank, &b0, &b1);
    if ((st = moe_moed_source_open(path, b0, b1, src, &err)) != MOE_STATUS_OK) {
        cli_error("train", "%s", err.message);
        return -1;
    }
    if (!moe_moed_encoder(*moed)) {
        cli_error("train", "%s: no column names (not written by 'moe convert')", path);
        return -1;
    }
    if ((st = moe_encoder_to_string(moe_moed_encoder(*moed), &text, &err)) != MOE_STATUS_OK ||
        (st = moe_encoder_from_string(text, enc, &err)) != MOE_STATUS_OK) {
        free(text);
        cli_error("train", "%s", err.message);
        return -1;
    }
    free(text);
    return 0;
}

int cli_cmd_train(int argc, char **argv) {
    moe_train_params lib = moe_train_params_default();
    train_opts o;
    memset(&o, 0, sizeof o);
    o.sep = "auto";
    o.task = 0;
    o.na = 0;
    o.experts = lib.tree.n_levels == 1 ? (int)lib.tree.branching[0] : 2;
    o.variance = (int)lib.variance;
    o.init = (int)lib.init;
    o.restarts = 5; /* the CLI's default: a few starts cost little and avoid bad optima */
    o.seed = lib.seed;
    o.max_iter = lib.max_iter;
    o.tol = lib.tol;
    o.threads = lib.n_threads;
    o.criterion = (int)MOE_CRITERION_BIC;
    o.short_iter = lib.short_iter;
    o.var_floor = lib.var_floor;
    o.ridge = lib.ridge;
    o.min_support = lib.min_support;
    moe_online_params olib = moe_online_params_default();
    o.sparse_em = lib.sparse_k;
    o.sparse_full = lib.sparse_full;
    o.online_batch = (int)olib.batch_rows;
    o.online_passes = olib.passes;
    moe_grad_params glib = moe_grad_params_default();
    o.trainer = 0;
    o.expert = "linear";
    o.gate = "linear";
    o.activation = (int)glib.expert.activation;
    o.top_k = (int)glib.top_k;
    o.balance = glib.balance;
    o.balance_kind = (int)glib.balance_kind;
    o.z_loss = glib.z_loss;
    o.objective = (int)glib.objective;
    o.epochs = glib.epochs;
    o.batch = (int)glib.batch;
    o.lr = glib.lr;
    o.valid = glib.valid;
    o.patience = glib.patience;
    o.clip = glib.clip;
    o.weight_decay = glib.weight_decay;

    cli_opt opts[] = {
        {'y', "target", CLI_OPT_STRING, &o.target, "NAMES", 0, 0, NULL, "Data",
         "target column(s); several: multi-output regression", "last column", 0},
        {'T', "task", CLI_OPT_CHOICE, &o.task, NULL, 0, 0, task_names, NULL,
         "regression or classification (auto: see below)", NULL, 0},
        {'x', "features", CLI_OPT_STRING, &o.features, "NAMES", 0, 0, NULL, NULL,
         "input columns", "all other columns", 0},
        {'D', "drop", CLI_OPT_STRING, &o.drop, "NAMES", 0, 0, NULL, NULL,
         "columns to ignore (ids, leaks)", "none", 0},
        {'w', "weights", CLI_OPT_STRING, &o.weights, "NAME", 0, 0, NULL, NULL,
         "column of case weights (finite, >= 0)", "none", 0},
        {'C', "categorical", CLI_OPT_STRING, &o.categorical, "NAMES", 0, 0, NULL, NULL,
         "inputs to one-hot encode even if numeric", "text columns", 0},
        {'F', "sep", CLI_OPT_STRING, &o.sep, "CHAR", 0, 0, NULL, NULL,
         "field delimiter: auto, ',', ';', tab", NULL, 0},
        {'N', "na", CLI_OPT_CHOICE, &o.na, NULL, 0, 0, na_names, NULL,
         "rows with missing values (empty, NA): error or drop", NULL, 0},
        {'k', "experts", CLI_OPT_INT, &o.experts, "K", 1, 65536, NULL, "Model",
         "experts of a flat mixture (1: no gate)", NULL, 0},
        {'t', "tree", CLI_OPT_STRING, &o.tree, "SHAPE", 0, 0, NULL, NULL,
         "hierarchical: branching per level, e.g. 4x4", "flat", 0},
        {'v', "variance", CLI_OPT_CHOICE, &o.variance, NULL, 0, 0, variance_names, NULL,
         "expert covariance over the outputs", NULL, 0},
        {'E', "expert-features", CLI_OPT_STRING, &o.expert_features, "NAMES", 0, 0, NULL, NULL,
         "inputs the experts see (all, none, or a list)", "all", 0},
        {'G', "gate-features", CLI_OPT_STRING, &o.gate_features, "NAMES", 0, 0, NULL, NULL,
         "inputs the gates see (all, none, or a list)", "all", 0},
        {'i', "init", CLI_OPT_CHOICE, &o.init, NULL, 0, 0, init_names, "Fitting",
         "starting point of the first restart", NULL, 0},
        {'r', "restarts", CLI_OPT_INT, &o.restarts, "R", 1, 100000, NULL, NULL,
         "EM starts; the best log-likelihood wins", NULL, 0},
        {'s', "seed", CLI_OPT_UINT64, &o.seed, "S", 0, 0, NULL, NULL,
         "random seed: the same seed gives the same model", NULL, 0},
        {'n', "max-iter", CLI_OPT_INT, &o.max_iter, "N", 1, 100000000, NULL, NULL,
         "EM iterations per run at most", NULL, 0},
        {'e', "tol", CLI_OPT_DOUBLE, &o.tol, "TOL", 0, 1, NULL, NULL,
         "stop at a relative change <= TOL (0: run max-iter)", NULL, 0},
        {'I', "short-iter", CLI_OPT_INT, &o.short_iter, "N", 0, 100000000, NULL, NULL,
         "if > 0: short runs first, only the best continued", NULL, 0},
        {'j', "threads", CLI_OPT_INT, &o.threads, "N", 0, 4096, NULL, NULL,
         "threads (0 = all cores)", NULL, 0},
        {'S', "select", CLI_OPT_STRING, &o.select, "SHAPES", 0, 0, NULL, NULL,
         "fit each shape (2,3,4,2x2...), keep the best", "off", 0},
        {'c', "criterion", CLI_OPT_CHOICE, &o.criterion, NULL, 0, 0, criterion_names, NULL,
         "model selection criterion (smaller is better)", NULL, 0},
        {'f', "var-floor", CLI_OPT_DOUBLE, &o.var_floor, "F", 0, 1, NULL, NULL,
         "variance floor, relative to the data's", NULL, 0},
        {'R', "ridge", CLI_OPT_DOUBLE, &o.ridge, "R", 0, 1, NULL, NULL,
         "relative ridge added to every linear system", NULL, 0},
        {'m', "min-support", CLI_OPT_DOUBLE, &o.min_support, "W", -1, 1e15, NULL, NULL,
         "freeze experts with less weight (-1: inputs+2)", NULL, 0},
        {'H', "sparse-em", CLI_OPT_INT, &o.sparse_em, "K", 0, 65536, NULL, NULL,
         "sparse EM: each row keeps its K largest posteriors (0: dense)", NULL, 0},
        {'d', "sparse-full", CLI_OPT_INT, &o.sparse_full, "R", 1, 1000000, NULL, NULL,
         "sparse EM: a full E-step every R iterations (1: always)", NULL, 0},
        {'U', "online", CLI_OPT_FLAG, &o.online, NULL, 0, 0, NULL, NULL,
         "online EM: minibatches of the rows, seen once (see below)", NULL, 0},
        {'Q', "online-batch", CLI_OPT_INT, &o.online_batch, "N", 1, 1e9, NULL, NULL,
         "rows per minibatch of --online", NULL, 0},
        {'Y', "online-passes", CLI_OPT_INT, &o.online_passes, "P", 1, 100000, NULL, NULL,
         "passes over the rows of --online", NULL, 0},
        {'a', "trainer", CLI_OPT_CHOICE, &o.trainer, NULL, 0, 0, trainer_names, "Gradient training",
         "EM, or minibatch gradient (MLP nodes, top-k gates)", NULL, 0},
        {'X', "expert", CLI_OPT_STRING, &o.expert, "linear|mlp:H,..", 0, 0, NULL, NULL,
         "experts' network: linear, or hidden layer sizes", NULL, 0},
        {'g', "gate", CLI_OPT_STRING, &o.gate, "linear|mlp:H,..", 0, 0, NULL, NULL,
         "gates' network: linear, or hidden layer sizes", NULL, 0},
        {'A', "activation", CLI_OPT_CHOICE, &o.activation, NULL, 0, 0, activation_names, NULL,
         "hidden units of MLP experts and gates", NULL, 0},
        {'K', "top-k", CLI_OPT_INT, &o.top_k, "K", 0, 4096, NULL, NULL,
         "each gate keeps its K best children (0: dense)", NULL, 0},
        {'O', "no-noise", CLI_OPT_FLAG, &o.no_noise, NULL, 0, 0, NULL, NULL,
         "top-k selection without training noise", NULL, 0},
        {'B', "balance", CLI_OPT_DOUBLE, &o.balance, "COEF", 0, 1e6, NULL, NULL,
         "load-balancing loss coefficient", NULL, 0},
        {'b', "balance-kind", CLI_OPT_CHOICE, &o.balance_kind, NULL, 0, 0, balance_names, NULL,
         "switch: n sum f P; cv2: CV^2 of importance and load", NULL, 0},
        {'z', "z-loss", CLI_OPT_DOUBLE, &o.z_loss, "COEF", 0, 1e6, NULL, NULL,
         "router z-loss coefficient", NULL, 0},
        {'J', "objective", CLI_OPT_CHOICE, &o.objective, NULL, 0, 0, objective_names, NULL,
         "mixture likelihood, or squared error of the blend", NULL, 0},
        {'Z', "log-var", CLI_OPT_FLAG, &o.log_var, NULL, 0, 0, NULL, NULL,
         "MLP experts also output their variances (log scale)", NULL, 0},
        {'p', "epochs", CLI_OPT_INT, &o.epochs, "N", 1, 10000000, NULL, NULL,
         "passes over the training rows at most", NULL, 0},
        {'u', "batch", CLI_OPT_INT, &o.batch, "N", 1, 1000000, NULL, NULL,
         "rows per gradient step", NULL, 0},
        {'l', "lr", CLI_OPT_DOUBLE, &o.lr, "RATE", 1e-12, 10, NULL, NULL,
         "peak learning rate (warm-up, then cosine decay)", NULL, 0},
        {'V', "valid", CLI_OPT_DOUBLE, &o.valid, "FRACTION", 0, 0.9, NULL, NULL,
         "rows held out for early stopping (0: none)", NULL, 0},
        {'P', "patience", CLI_OPT_INT, &o.patience, "N", 0, 10000000, NULL, NULL,
         "stop after N epochs without improvement (0: never)", NULL, 0},
        {'L', "clip", CLI_OPT_DOUBLE, &o.clip, "NORM", 0, 1e12, NULL, NULL,
         "clip the gradient's norm (0: never)", NULL, 0},
        {'W', "weight-decay", CLI_OPT_DOUBLE, &o.weight_decay, "W", 0, 0.999, NULL, NULL,
         "decoupled weight decay of hidden layers", NULL, 0},
        {'M', "init-model", CLI_OPT_STRING, &o.init_model, "MODEL", 0, 0, NULL, NULL,
         "start from this model (e.g. fitted by EM)", "none", 0},
        {'o', "out", CLI_OPT_STRING, &o.out, "MODEL", 0, 0, NULL, "Output",
         "model file ('-' = stdout)", "DATA.moe", 0},
        {'q', "quiet", CLI_OPT_FLAG, &o.quiet, NULL, 0, 0, NULL, NULL,
         "no progress, notes or summary on stderr", NULL, 0},
        {'h', "help", CLI_OPT_FLAG, NULL, NULL, 0, 0, NULL, NULL, "this help", NULL, 0},
    };
    const size_t n_opts = sizeof opts / sizeof opts[0];
    char *pos[2];
    size_t n_pos;
    int r = cli_parse(&train_cmd, opts, n_opts, argc, argv, pos, 2, &n_pos);
    if (r != 0) return r > 0 ? CLI_EXIT_OK : CLI_EXIT_USAGE;

    int rc = CLI_EXIT_USAGE;
    moe_error err;
    moe_status st;
    moe_table *table = NULL;
    moe_encoder *enc = NULL;
    moe_encoded *data = NULL;
    moe_model *model = NULL, *init_model = NULL;
    moe_grad_params gp = moe_grad_params_default();
    moe_moed *moed = NULL;   /* DATA is a .moed file: its header and encoder */
    moe_source src;          /* and its rows, streamed */
    memset(&src, 0, sizeof src);
    moe_dataset ds;
    memset(&ds, 0, sizeof ds);
    const char *data_name = NULL;
    size_t n_dropped = 0, n_ecols = 0, n_gcols = 0;
    char **targets = NULL, **features = NULL, **drops = NULL, **cats = NULL;
    size_t n_targets = 0, n_features = 0, n_drops = 0, n_cats = 0;
    size_t *ecols = NULL, *gcols = NULL;
    char **used = NULL;
    size_t n_used = 0;
    char *model_path = NULL;
    void *bytes = NULL;
    size_t n_bytes = 0;
    moe_tree_shape shapes[MAX_SHAPES];
    size_t n_shapes = 0;
    double scores[MAX_SHAPES];
    char why[200];
    cli_buf b = {0};
    cli_progress prog;
    int prog_on = 0;

    /* Under moe-mpi only process 0 prints and writes. */
    int follower = cli_group && cli_group->rank != 0;
    if (follower) o.quiet = 1;
    cli_log_install(o.quiet);
    if (n_pos < 1) {
        cli_error("train", "no data file given (see 'moe train --help')");
        goto done;
    }
    const char *data_path = pos[0];
    if (n_pos == 2 && o.out) {
        cli_error("train", "the model file is given twice ('%.60s' and -o '%.60s')", pos[1],
                  o.out);
        goto done;
    }
    if (n_pos == 2) o.out = pos[1];
    if (!o.out) {
        if (strcmp(data_path, "-") == 0) {
            cli_error("train", "reading stdin: give the model file with -o MODEL");
            goto done;
        }
        if (!(model_path = default_model_path(data_path))) goto oom;
        o.out = model_path;
    }
    if (cli_same_file(o.out, data_path)) {
        cli_error("train", "%s: the model would overwrite the data file", o.out);
        goto done;
    }
    if (strcmp(o.out, "-") == 0 && isatty(STDOUT_FILENO)) {
        cli_error("train", "-o -: not writing a binary model to a terminal");
        goto done;
    }
    char sep;
    if (cli_parse_sep(o.sep, &sep) != 0) {
        cli_error("train", "--sep: '%.20s' is not a delimiter (auto, ',', ';', tab, or one "
                           "character)", o.sep);
        goto done;
    }

    /* The tree shape(s). */
    const cli_opt *o_tree = cli_opt_find(opts, n_opts, "tree");
    const cli_opt *o_experts = cli_opt_find(opts, n_opts, "experts");
    const cli_opt *o_select = cli_opt_find(opts, n_opts, "select");
    const cli_opt *o_criterion = cli_opt_find(opts, n_opts, "criterion");
    if (o_tree->set && o_experts->set) {
        cli_error("train", "give either --experts or --tree, not both");
        goto done;
    }
    if (o_select->set && (o_tree->set || o_experts->set)) {
        cli_error("train", "--select chooses the shape: drop --experts/--tree");
        goto done;
    }
    if (o_criterion->set && !o_select->set) {
        cli_error("train", "--criterion needs --select");
        goto done;
    }
    /* Gradient training: its options, and none of EM's. */
    {
        static const char *const grad_only[] = {"expert", "gate", "activation", "top-k",
                                                "no-noise", "balance", "balance-kind", "z-loss",
                                                "objective", "epochs", "batch", "lr", "valid",
                                                "patience", "clip", "weight-decay", "init-model",
                                                "log-var"};
        static const char *const em_only[] = {"init", "max-iter", "tol", "short-iter", "ridge",
                                              "min-support", "select", "criterion", "sparse-em",
                                              "sparse-full",
                                              "online", "online-batch", "online-passes"};
        for (size_t i = 0; i < sizeof grad_only / sizeof grad_only[0]; i++)
            if (!o.trainer && cli_opt_find(opts, n_opts, grad_only[i])->set) {
                cli_error("train", "--%s needs --trainer gradient", grad_only[i]);
                goto done;
            }
        if (!o.online && (cli_opt_find(opts, n_opts, "online-batch")->set ||
                          cli_opt_find(opts, n_opts, "online-passes")->set)) {
            cli_error("train", "--online-batch and --online-passes need --online");
            goto done;
        }
        if (!o.sparse_em && cli_opt_find(opts, n_opts, "sparse-full")->set) {
            cli_error("train", "--sparse-full needs --sparse-em");
            goto done;
        }
        if (o.online && cli_group && cli_group->size > 1) {
            cli_error("train", "--online runs in one process (not under moe-mpi)");
            goto done;
        }
        for (size_t i = 0; i < sizeof em_only / sizeof em_only[0]; i++)
            if (o.trainer && cli_opt_find(opts, n_opts, em_only[i])->set) {
                cli_error("train", "--%s is an EM option (not with --trainer gradient)",
                          em_only[i]);
                goto done;
            }
        if (o.trainer) {
            if (parse_net("expert", o.expert, o.activation, &gp.expert) != 0 ||
                parse_net("gate", o.gate, o.activation, &gp.gate) != 0)
                goto done;
            gp.top_k = (size_t)o.top_k;
            gp.noisy = !o.no_noise;
            gp.balance = o.balance;
            gp.balance_kind = (moe_balance)o.balance_kind;
            gp.z_loss = o.z_loss;
            gp.objective = (moe_objective)o.objective;
            gp.epochs = o.epochs;
            gp.batch = (size_t)o.batch;
            gp.lr = o.lr;
            gp.valid = o.valid;
            gp.patience = o.patience;
            gp.clip = o.clip;
            gp.weight_decay = o.weight_decay;
            gp.log_var = o.log_var;
            if (o.init_model) {
                if ((st = moe_model_load(o.init_model, &init_model, &err)) != MOE_STATUS_OK) {
                    cli_error("train", "--init-model: %s", err.message);
                    rc = cli_exit_code(st);
                    goto done;
                }
                gp.init = init_model;
            }
        }
    }
    if (o.select) {
        if (moe_tree_shape_parse_list(o.select, shapes, MAX_SHAPES, &n_shapes, &err) !=
            MOE_STATUS_OK) {
            cli_error("train", "--select: %s", err.message);
            goto done;
        }
        if (n_shapes == 0) {
            cli_error("train", "--select: no shapes given");
            goto done;
        }
    } else if (o.tree) {
        if (moe_tree_shape_parse(o.tree, &shapes[0], &err) != MOE_STATUS_OK) {
            cli_error("train", "--tree: %s", err.message);
            goto done;
        }
        n_shapes = 1;
    } else {
        shapes[0].n_levels = 1;
        shapes[0].branching[0] = (size_t)o.experts;
        n_shapes = 1;
    }

    /* Column lists. */
    if (o.target && cli_list_split(o.target, &targets, &n_targets, why, sizeof why) != 0) {
        cli_error("train", "--target: %s", why);
        goto done;
    }
    if (o.features && cli_list_split(o.features, &features, &n_features, why, sizeof why) != 0) {
        cli_error("train", "--features: %s", why);
        goto done;
    }
    if (o.drop && cli_list_split(o.drop, &drops, &n_drops, why, sizeof why) != 0) {
        cli_error("train", "--drop: %s", why);
        goto done;
    }
    if (o.categorical && cli_list_split(o.categorical, &cats, &n_cats, why, sizeof why) != 0) {
        cli_error("train", "--categorical: %s", why);
        goto done;
    }
    if (o.weights && !o.weights[0]) {
        cli_error("train", "--weights: empty column name");
        goto done;
    }

    /* A .moed file: already encoded; train from it as a stream. */
    if (cli_is_moed(data_path)) {
        if (train_moed_open(data_path, opts, n_opts, &moed, &enc, &src) != 0) goto done;
        data_name = data_path;
        n_dropped = moe_moed_n_dropped(moed);
        ds = moe_moed_dataset(moed);
        goto have_encoder;
    }

    /* Read and encode. */
    if ((st = cli_read_table(data_path, sep, &table, &err)) != MOE_STATUS_OK) {
        cli_error("train", "%s", err.message);
        rc = cli_exit_code(st);
        goto done;
    }
    moe_encoder_params ep = moe_encoder_params_default();
    ep.targets = (const char *const *)targets;
    ep.n_targets = n_targets;
    ep.inputs = (const char *const *)features;
    ep.n_inputs = n_features;
    ep.drop = (const char *const *)drops;
    ep.n_drop = n_drops;
    ep.categorical = (const char *const *)cats;
    ep.n_categorical = n_cats;
    ep.weights = o.weights;
    ep.task = (moe_encode_task)o.task;
    ep.missing = o.na ? MOE_MISSING_DROP : MOE_MISSING_ERROR;
    if ((st = moe_encoder_fit(table, &ep, &enc, &err)) != MOE_STATUS_OK) {
        cli_error("train", "%s", err.message);
        rc = cli_exit_code(st);
        goto done;
    }
    if (moe_encoder_task(enc) == MOE_TASK_CLASSIFICATION &&
        cli_check_labels("train", table, enc) != 0)
        goto done;
have_encoder:;
    size_t nf = moe_encoder_n_features(enc);
    ecols = malloc((nf + 1) * sizeof *ecols);
    gcols = malloc((nf + 1) * sizeof *gcols);
    if (!ecols || !gcols) goto oom;
    if (resolve_cols("expert-features", o.expert_features, enc, ecols, &n_ecols) != 0 ||
        resolve_cols("gate-features", o.gate_features, enc, gcols, &n_gcols) != 0)
        goto done;
    if (moed) goto have_data; /* already encoded, with every input it has */

    /* Without --features, inputs neither the experts nor the gates use are
     * left out, so predict files need not have them. */
    if (!o.features && n_ecols != MOE_ALL_COLS && n_gcols != MOE_ALL_COLS) {
        size_t ni = moe_encoder_n_inputs(enc);
        char *keep = calloc(ni + 1, 1);
        used = calloc(ni + 1, sizeof *used);
        if (!keep || !used) {
            free(keep);
            goto oom;
        }
        for (size_t j = 0; j < n_ecols; j++) keep[moe_encoder_feature_input(enc, ecols[j])] = 1;
        for (size_t j = 0; j < n_gcols; j++) keep[moe_encoder_feature_input(enc, gcols[j])] = 1;
        for (size_t i = 0; i < ni; i++)
            if (keep[i]) used[n_used++] = (char *)moe_encoder_input_name(enc, i);
        free(keep);
        if (n_used < ni) {
            moe_encoder *enc2 = NULL;
            char **all_drop = NULL;
            size_t n_all_drop = 0;
            if (n_used == 0) {
                /* No inputs at all: drop every column but the target(s) and weights. */
                size_t nc = moe_table_n_cols(table);
                all_drop = calloc(nc + 1, sizeof *all_drop);
                if (!all_drop) goto oom;
                for (size_t c = 0; c < nc; c++) {
                    const char *name = moe_table_col_name(table, c);
                    int skip = o.weights && strcmp(name, o.weights) == 0;
                    for (size_t t = 0; t < moe_encoder_n_targets(enc); t++)
                        if (strcmp(name, moe_encoder_target_name(enc, t)) == 0) skip = 1;
                    if (!skip) all_drop[n_all_drop++] = (char *)name;
                }
                ep.drop = (const char *const *)all_drop;
                ep.n_drop = n_all_drop;
            } else {
                ep.inputs = (const char *const *)used;
                ep.n_inputs = n_used;
            }
            /* Keep the target and task the first fit found. */
            const char *tnames[64];
            size_t nt = moe_encoder_n_targets(enc);
            if (nt <= 64 && !targets) {
                for (size_t t = 0; t < nt; t++) tnames[t] = moe_encoder_target_name(enc, t);
                ep.targets = tnames;
                ep.n_targets = nt;
            }
            ep.task = moe_encoder_task(enc) == MOE_TASK_CLASSIFICATION
                          ? MOE_ENCODE_TASK_CLASSIFICATION
                          : MOE_ENCODE_TASK_REGRESSION;
            st = moe_encoder_fit(table, &ep, &enc2, &err);
            free(all_drop);
            if (st != MOE_STATUS_OK) {
                cli_error("train", "%s", err.message);
                rc = cli_exit_code(st);
                goto done;
            }
            /* Column names point into the old encoder: re-resolve with the
             * new one before freeing it. */
            size_t e2 = 0, g2 = 0;
            size_t *ec2 = malloc((moe_encoder_n_features(enc2) + 1) * sizeof *ec2);
            size_t *gc2 = malloc((moe_encoder_n_features(enc2) + 1) * sizeof *gc2);
            if (!ec2 || !gc2) {
                free(ec2);
                free(gc2);
                moe_encoder_free(enc2);
                goto oom;
            }
            int bad = resolve_cols("expert-features", o.expert_features, enc2, ec2, &e2) != 0 ||
                      resolve_cols("gate-features", o.gate_features, enc2, gc2, &g2) != 0;
            free(ecols);
            free(gcols);
            ecols = ec2;
            gcols = gc2;
            n_ecols = e2;
            n_gcols = g2;
            free(used);
            used = NULL;
            moe_encoder_free(enc);
            enc = enc2;
            if (bad) goto done;
        }
    }

    moe_encoder_apply_params ap = moe_encoder_apply_params_default();
    ap.missing = ep.missing;
    ap.target = MOE_TARGET_USE_REQUIRED;
    if ((st = moe_encoder_apply(enc, table, &ap, &data, &err)) != MOE_STATUS_OK) {
        cli_error("train", "%s", err.message);
        rc = cli_exit_code(st);
        goto done;
    }
    if (data->n_dropped && !o.quiet)
        cli_note("train", "%s: dropped %zu of %zu rows with missing values",
                 moe_table_name(table), data->n_dropped, moe_table_n_rows(table));
    ds = moe_encoded_dataset(data);
    data_name = moe_table_name(table);
    n_dropped = data->n_dropped;

have_data:;
    /* Parameters. */
    moe_train_params p = lib;
    p.task = moe_encoder_task(enc);
    p.tree = shapes[0];
    p.variance = (moe_variance)o.variance;
    p.n_expert_cols = n_ecols;
    p.expert_cols = n_ecols == MOE_ALL_COLS ? NULL : ecols;
    p.n_gate_cols = n_gcols;
    p.gate_cols = n_gcols == MOE_ALL_COLS ? NULL : gcols;
    p.init = (moe_init)o.init;
    p.n_restarts = o.restarts;
    p.seed = o.seed;
    p.max_iter = o.max_iter;
    p.tol = o.tol;
    p.short_iter = o.short_iter;
    p.n_threads = o.threads;
    p.var_floor = o.var_floor;
    p.ridge = o.ridge;
    p.min_support = o.min_support;
    p.sparse_k = o.sparse_em;
    p.sparse_full = o.sparse_full;
    moe_online_params op = olib;
    op.batch_rows = (size_t)o.online_batch;
    op.passes = o.online_passes;
    /* Under moe-mpi: this process trains on its share of the rows (whole
     * slabs, moe_shard_rows), the statistics summed through the group. */
    size_t first_row = 0;
    if (cli_group && cli_group->size > 1) {
        p.reducer = cli_group;
        if (!moed) {
            size_t b1;
            moe_shard_rows(ds.n_rows, cli_group->size, cli_group->rank, &first_row, &b1);
            ds.n_rows = b1 - first_row;
            ds.x += first_row * ds.ld_x;
            if (ds.y) ds.y += first_row * ds.ld_y;
            if (ds.labels) ds.labels += first_row;
            if (ds.weights) ds.weights += first_row;
        }
    }
    /* The rows EM reads: the .moed stream, or the encoded CSV rows (this
     * process's share of them under moe-mpi). */
    moe_source rows = moed ? src : moe_source_from_dataset(&ds);
    if (!moed) rows.first_row = first_row;
    for (size_t s = 0; s < n_shapes; s++) {
        p.tree = shapes[s];
        if (o.trainer && moed) {
            cli_error("train", "--trainer gradient reads CSV files, not .moed");
            goto done;
        }
        st = o.trainer ? moe_grad_params_check(&gp, &p, &ds, &err)
                       : moe_train_params_check(&p, moed ? NULL : &ds, &err);
        if (st != MOE_STATUS_OK) {
            train_error(data_name, &err);
            rc = cli_exit_code(st);
            goto done;
        }
    }
    p.on_iter = cli_progress_iter;
    cli_progress_init(&prog, o.quiet);
    prog_on = 1;
    p.user_data = &prog;

    /* Train every shape; keep the best by the criterion. */
    size_t best = 0;
    moe_status last = MOE_STATUS_OK;
    moe_error last_err;
    memset(&last_err, 0, sizeof last_err);
    for (size_t s = 0; s < n_shapes; s++) {
        char shape_text[64];
        moe_tree_shape_format(&shapes[s], shape_text, sizeof shape_text);
        prog.label = o.select ? shape_text : NULL;
        p.tree = shapes[s];
        moe_model *m = NULL;
        scores[s] = 0.0 / 0.0;
        st = o.trainer  ? moe_train_gradient(&ds, &p, &gp, &m, &err)
             : o.online ? moe_train_online(&rows, &p, &op, NULL, &m, &err)
                        : moe_train_source(&rows, &p, &m, &err);
        if (st != MOE_STATUS_OK) {
            if (st == MOE_STATUS_CANCELLED || cli_interrupted()) {
                cli_progress_done(&prog);
                prog_on = 0;
                cli_error("train", "interrupted: no model written");
                rc = CLI_EXIT_RUNTIME;
                goto done;
            }
            if (st == MOE_STATUS_NO_MEMORY || !o.select) {
                cli_progress_done(&prog);
                prog_on = 0;
                train_error(data_name, &err);
                rc = cli_exit_code(st);
                goto done;
            }
            cli_progress_done(&prog);
            if (!o.quiet) cli_note("train", "tree %s failed: %s", shape_text, err.message);
            last = st;
            last_err = err;
            continue;
        }
        moe_fit_report rep = moe_model_report(m);
        scores[s] = o.criterion == MOE_CRITERION_AIC   ? rep.aic
                    : o.criterion == MOE_CRITERION_ICL ? rep.icl
                                                       : rep.bic;
        if (o.select) {
            cli_progress_done(&prog);
            if (!o.quiet)
                cli_note("train", "tree %s: %s %.10g (loglik %.10g, df %zu)", shape_text,
                         criterion_names[o.criterion], scores[s], rep.loglik, rep.df);
        }
        if (!model || scores[s] < scores[best]) {
            moe_model_free(model);
            model = m;
            best = s;
        } else {
            moe_model_free(m);
        }
    }
    cli_progress_done(&prog);
    prog_on = 0;
    if (!model) {
        cli_error("train", "%s: every shape failed; last: %s", data_name,
                  last_err.message);
        rc = cli_exit_code(last);
        goto done;
    }

    /* Metadata: the encoder, names, and the settings that made the model. */
    char *enc_text = NULL;
    if ((st = moe_encoder_to_string(enc, &enc_text, &err)) != MOE_STATUS_OK) {
        cli_error("train", "%s", err.message);
        rc = cli_exit_code(st);
        goto done;
    }
    int bad = meta(model, CLI_META_ENCODER, enc_text);
    free(enc_text);
    if (bad) goto oom;
    {
        char creator[64];
        snprintf(creator, sizeof creator, "moe %s", MOE_VERSION_STRING);
        if (meta(model, CLI_META_CREATOR, creator)) goto oom;
    }
    size_t nfe = moe_encoder_n_features(enc);
    const char **names = malloc((nfe + 64) * sizeof *names);
    if (!names) goto oom;
    for (size_t j = 0; j < nfe; j++) names[j] = moe_encoder_feature_name(enc, j);
    b.len = 0;
    join_json(&b, names, nfe);
    bad = b.failed || meta(model, CLI_META_FEATURES, b.data);
    size_t nt = moe_encoder_n_targets(enc), nsel;
    if (!bad) {
        const char **tn = malloc((nt + 1) * sizeof *tn);
        if (!tn) bad = 1;
        for (size_t t = 0; tn && t < nt; t++) tn[t] = moe_encoder_target_name(enc, t);
        b.len = 0;
        if (tn) join_json(&b, tn, nt);
        free(tn);
        bad = bad || b.failed || meta(model, CLI_META_TARGETS, b.data);
    }
    if (!bad && moe_encoder_n_classes(enc)) {
        size_t nc = moe_encoder_n_classes(enc);
        const char **cn = malloc((nc + 1) * sizeof *cn);
        if (!cn) bad = 1;
        for (size_t c = 0; cn && c < nc; c++) cn[c] = moe_encoder_class_name(enc, c);
        b.len = 0;
        if (cn) join_json(&b, cn, nc);
        free(cn);
        bad = bad || b.failed || meta(model, CLI_META_CLASSES, b.data);
    }
    if (!bad) {
        nsel = moe_model_expert_cols(model, ecols, nfe + 1);
        for (size_t j = 0; j < nsel && j <= nfe; j++) names[j] = moe_encoder_feature_name(enc, ecols[j]);
        b.len = 0;
        join_json(&b, names, nsel <= nfe ? nsel : nfe);
        bad = b.failed || meta(model, CLI_META_EXPERT_FEATURES, b.data);
    }
    if (!bad) {
        nsel = moe_model_gate_cols(model, gcols, nfe + 1);
        for (size_t j = 0; j < nsel && j <= nfe; j++) names[j] = moe_encoder_feature_name(enc, gcols[j]);
        b.len = 0;
        join_json(&b, names, nsel <= nfe ? nsel : nfe);
        bad = b.failed || meta(model, CLI_META_GATE_FEATURES, b.data);
    }
    free(names);
    if (bad) goto oom;
    {
        char shape_text[64], buf[64];
        moe_tree_shape shape = moe_model_tree(model);
        moe_tree_shape_format(&shape, shape_text, sizeof shape_text);
        bad = meta_setting(model, "data", strcmp(data_path, "-") == 0 ? "<stdin>"
                                                                      : base_name(data_path)) ||
              meta_setting(model, "task", moe_encoder_task(enc) == MOE_TASK_CLASSIFICATION
                                              ? "classification"
                                              : "regression") ||
              meta_setting(model, "tree", shape_text) ||
              (moe_encoder_task(enc) == MOE_TASK_REGRESSION &&
               meta_setting(model, "variance", variance_names[o.variance])) ||
              (o.trainer ? meta_setting(model, "trainer", "gradient") ||
                               meta_setting(model, "expert", o.expert) ||
                               meta_setting(model, "gate", o.gate) ||
                               meta_setting(model, "activation", activation_names[o.activation]) ||
                               meta_setting(model, "objective", objective_names[o.objective]) ||
                               meta_num(model, "top_k", o.top_k) ||
                               meta_num(model, "balance", o.balance) ||
                               meta_setting(model, "balance_kind", balance_names[o.balance_kind]) ||
                               meta_num(model, "z_loss", o.z_loss) ||
                               meta_num(model, "epochs", o.epochs) ||
                               meta_num(model, "batch", o.batch) || meta_num(model, "lr", o.lr) ||
                               meta_num(model, "valid", o.valid) ||
                               (o.log_var && meta_num(model, "log_var", 1))
                         : meta_setting(model, "init", init_names[o.init]));
        snprintf(buf, sizeof buf, "%d", o.restarts);
        bad = bad || meta_setting(model, "restarts", buf);
        snprintf(buf, sizeof buf, "%" PRIu64, o.seed);
        bad = bad || meta_setting(model, "seed", buf);
        snprintf(buf, sizeof buf, "%d", o.max_iter);
        bad = bad || meta_setting(model, "max_iter", buf) || meta_num(model, "tol", o.tol);
        snprintf(buf, sizeof buf, "%d", o.short_iter);
        bad = bad || meta_setting(model, "short_iter", buf) ||
              meta_num(model, "var_floor", o.var_floor) || meta_num(model, "ridge", o.ridge) ||
              meta_num(model, "min_support", o.min_support) ||
              meta_setting(model, "na", na_names[o.na]);
        snprintf(buf, sizeof buf, "%zu", n_dropped);
        bad = bad || meta_setting(model, "rows_dropped", buf);
        if (moe_encoder_weights_name(enc))
            bad = bad || meta_setting(model, "weights", moe_encoder_weights_name(enc));
        if (o.select) {
            b.len = 0;
            for (size_t s = 0; s < n_shapes; s++) {
                moe_tree_shape_format(&shapes[s], shape_text, sizeof shape_text);
                cli_buf_printf(&b, "%s%s=", s ? "," : "", shape_text);
                cli_buf_num(&b, scores[s]);
            }
            bad = bad || b.failed || meta_setting(model, "select", o.select) ||
                  meta_setting(model, "criterion", criterion_names[o.criterion]) ||
                  meta_setting(model, "select_scores", b.data);
        }
        if (bad) goto oom;
    }

    /* Save atomically. */
    if (follower) {
        rc = CLI_EXIT_OK;
        goto done;
    }
    if ((st = moe_model_save_buffer(model, &bytes, &n_bytes, &err)) != MOE_STATUS_OK) {
        cli_error("train", "%s", err.message);
        rc = cli_exit_code(st);
        goto done;
    }
    if ((st = cli_write_atomic(o.out, bytes, n_bytes, &err)) != MOE_STATUS_OK) {
        cli_error("train", "%s", err.message);
        rc = cli_exit_code(st);
        goto done;
    }
    if (!o.quiet) {
        moe_fit_report rep = moe_model_report(model);
        moe_tree_shape shape = moe_model_tree(model);
        char shape_text[64];
        moe_tree_shape_format(&shape, shape_text, sizeof shape_text);
        fprintf(stderr,
                "moe train: %s, tree %s (%zu experts), %zu rows: loglik %.10g, df %zu, "
                "AIC %.10g, BIC %.10g, ICL %.10g, %d iterations%s\n",
                moe_model_task(model) == MOE_TASK_CLASSIFICATION ? "classification"
                                                                 : "regression",
                shape_text, moe_model_n_experts(model), rep.n_rows, rep.loglik, rep.df, rep.aic,
                rep.bic, rep.icl, rep.iterations, rep.converged ? ", converged" : ", not converged");
        if (data) log_routing(model, data);
        if (strcmp(o.out, "-") != 0) fprintf(stderr, "moe train: model saved to %s\n", o.out);
    }
    rc = CLI_EXIT_OK;
    goto done;

oom:
    cli_error("train", "out of memory");
    rc = CLI_EXIT_RUNTIME;
done:
    if (prog_on) cli_progress_done(&prog);
    free(bytes);
    cli_buf_free(&b);
    moe_model_free(model);
    moe_model_free(init_model);
    moe_encoded_free(data);
    moe_encoder_free(enc);
    moe_table_free(table);
    moe_moed_source_close(&src);
    moe_moed_close(moed);
    free(ecols);
    free(gcols);
    free(used);
    free(model_path);
    cli_list_free(targets, n_targets);
    cli_list_free(features, n_features);
    cli_list_free(drops, n_drops);
    cli_list_free(cats, n_cats);
    return rc;
}
