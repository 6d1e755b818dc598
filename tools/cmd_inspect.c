/*
 * cmd_inspect.c -- `moe inspect [--json] [--data FILE.csv] MODEL`: everything
 * in a model file, and with --data how its gates route FILE's rows.
 *
 * The tree, every gate and expert parameter on the user's original scale,
 * the variances, feature/target/class names, the encoder's inputs and
 * levels, the training settings (metadata "moe.train.*"), the fit report
 * and its events, and all metadata. Numbers are %.17g in the C locale so
 * they read back exactly. docs/cli.md documents every JSON key.
 *
 * Numbering: experts (leaves) 1..K, as in predict's g1..gK and m1..mK;
 * gates 0..G-1 breadth-first, gate 0 the root (the library's order).
 */
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const cli_command inspect_cmd = {
    "inspect", "[--json] [--data FILE.csv] MODEL",
    "Print everything in a model file: tree, gate and expert parameters on the original\n"
    "scale, variances, names, encodings, training settings and the fit report. MODEL '-'\n"
    "is stdin. Experts are numbered 1..K; gates 0.. breadth-first (0 = root).",
    "--data adds routing diagnostics on FILE's rows (the target is not needed; a weights\n"
    "column is used when present): rows per expert under hard top-1 routing, importance\n"
    "(sum of gate probabilities), gate entropy, balance (max/mean load), and problems:\n"
    "a collapsed gate (one expert takes >= 90% of rows), dead experts (no rows and under\n"
    "1% of an even share of the gate's mass), idle experts (no rows).\n"};

static const char *variance_name(moe_variance v) {
    return v == MOE_VARIANCE_ISO ? "iso" : v == MOE_VARIANCE_FULL ? "full" : "diag";
}

/* Child c of gate g: sets *is_leaf and returns the child's index (gate
 * index, or 0-based leaf index). */
static size_t gate_child(const moe_tree_shape *s, size_t g, size_t c, int *is_leaf, size_t *level) {
    size_t start = 0, width = 1;
    for (size_t l = 0; l < s->n_levels; l++) {
        if (g < start + width) {
            size_t q = g - start, idx = q * s->branching[l] + c;
            *level = l;
            *is_leaf = l + 1 == s->n_levels;
            return *is_leaf ? idx : start + width + idx;
        }
        start += width;
        width *= s->branching[l];
    }
    *is_leaf = 1;
    *level = 0;
    return 0;
}

/* Path of leaf k: the child index taken at every level (0-based). */
static void leaf_path(const moe_tree_shape *s, size_t k, size_t *path) {
    for (size_t l = s->n_levels; l-- > 0;) {
        path[l] = k % s->branching[l];
        k /= s->branching[l];
    }
}

typedef struct names {
    const char **v;
    size_t n;
} names;

static void json_names(cli_buf *b, const names *nm) {
    cli_buf_addc(b, '[');
    for (size_t i = 0; i < nm->n; i++) {
        if (i) cli_buf_add(b, ", ");
        cli_buf_json_str(b, nm->v[i]);
    }
    cli_buf_addc(b, ']');
}

static void json_nums(cli_buf *b, const double *v, size_t n) {
    cli_buf_addc(b, '[');
    for (size_t i = 0; i < n; i++) {
        if (i) cli_buf_add(b, ", ");
        cli_buf_json_num(b, v[i]);
    }
    cli_buf_addc(b, ']');
}

static void text_names(cli_buf *b, const names *nm) {
    if (nm->n == 0) cli_buf_add(b, "(none)");
    for (size_t i = 0; i < nm->n; i++) {
        if (i) cli_buf_addc(b, ' ');
        cli_buf_add(b, nm->v[i]);
    }
}

static void text_nums(cli_buf *b, const double *v, size_t n) {
    for (size_t i = 0; i < n; i++) {
        cli_buf_addc(b, ' ');
        cli_buf_num(b, v[i]);
    }
}

/* A metadata value on one line: newlines and tabs escaped. */
static void text_escaped(cli_buf *b, const char *s) {
    for (; *s; s++) {
        if (*s == '\n') cli_buf_add(b, "\\n");
        else if (*s == '\t') cli_buf_add(b, "\\t");
        else if (*s == '\r') cli_buf_add(b, "\\r");
        else if (*s == '\\') cli_buf_add(b, "\\\\");
        else if ((unsigned char)*s < 0x20) cli_buf_printf(b, "\\x%02x", (unsigned char)*s);
        else cli_buf_addc(b, *s);
    }
}

#define KEY(b, k) cli_buf_add(b, ",\n  \"" k "\": ")

/* "linear" or "mlp:32,16 tanh". */
static void net_text(moe_mlp a, char *buf, size_t cap) {
    if (a.n_hidden == 0) {
        snprintf(buf, cap, "linear");
        return;
    }
    size_t n = (size_t)snprintf(buf, cap, "mlp:");
    for (size_t l = 0; l < a.n_hidden && n < cap; l++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%zu", l ? "," : "", a.hidden[l]);
    if (n < cap) snprintf(buf + n, cap - n, " %s", a.activation == MOE_ACTIVATION_RELU ? "relu" : "tanh");
}

static int linear_dense(const moe_model *m) {
    return moe_model_expert_mlp(m).n_hidden == 0 && moe_model_gate_mlp(m).n_hidden == 0 &&
           moe_model_top_k(m) == 0;
}

int cli_cmd_inspect(int argc, char **argv) {
    int json = 0;
    const char *data_path = NULL, *sep_text = "auto";
    cli_opt opts[] = {
        {'J', "json", CLI_OPT_FLAG, &json, NULL, 0, 0, NULL, "Output", "write JSON", NULL, 0},
        {'d', "data", CLI_OPT_STRING, &data_path, "FILE", 0, 0, NULL, "Routing",
         "routing diagnostics on FILE's rows ('-' = stdin)", "off", 0},
        {'F', "sep", CLI_OPT_STRING, &sep_text, "CHAR", 0, 0, NULL, NULL,
         "field delimiter of FILE: auto, ',', ';', tab", NULL, 0},
        {'h', "help", CLI_OPT_FLAG, NULL, NULL, 0, 0, NULL, NULL, "this help", NULL, 0},
    };
    const size_t n_opts = sizeof opts / sizeof opts[0];
    char *pos[1];
    size_t n_pos;
    int r = cli_parse(&inspect_cmd, opts, n_opts, argc, argv, pos, 1, &n_pos);
    if (r != 0) return r > 0 ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    cli_log_install(0);
    if (n_pos < 1) {
        cli_error("inspect", "give a model file (see 'moe inspect --help')");
        return CLI_EXIT_USAGE;
    }

    int rc = CLI_EXIT_RUNTIME;
    cli_model m;
    moe_error err;
    moe_status st;
    moe_table *table = NULL;
    moe_encoded *rows = NULL;
    moe_routing routing;
    memset(&routing, 0, sizeof routing);
    if (data_path) {
        char sep;
        if (cli_parse_sep(sep_text, &sep) != 0) {
            cli_error("inspect", "--sep: '%.20s' is not a delimiter", sep_text);
            return CLI_EXIT_USAGE;
        }
        int lr = cli_load_and_encode("inspect", pos[0], data_path, sep, MOE_MISSING_ERROR, 0,
                                     MOE_TARGET_USE_IGNORED, &m, &table, &rows);
        if (lr != CLI_EXIT_OK) return lr;
        size_t ld = rows->n_cols ? rows->n_cols : 1;
        st = moe_model_routing(m.model, rows->n_rows, rows->x, ld, rows->weights, &routing, &err);
        if (st != MOE_STATUS_OK) {
            cli_error("inspect", "%s: %s", moe_table_name(table), err.message);
            moe_encoded_free(rows);
            moe_table_free(table);
            cli_model_free(&m);
            return cli_exit_code(st);
        }
    } else if ((st = cli_model_load(pos[0], &m, &err)) != MOE_STATUS_OK) {
        cli_error("inspect", "%s", err.message);
        return cli_exit_code(st);
    }
    const moe_model *model = m.model;
    const moe_encoder *enc = m.encoder;
    cli_buf b = {0};
    moe_task task = moe_model_task(model);
    int cls = task == MOE_TASK_CLASSIFICATION;
    moe_tree_shape shape = moe_model_tree(model);
    char shape_text[96];
    moe_tree_shape_format(&shape, shape_text, sizeof shape_text);
    size_t K = moe_model_n_experts(model), G = moe_model_n_gates(model);
    size_t P = moe_model_n_outputs(model), C = moe_model_n_classes(model);
    size_t d = moe_model_n_cols(model);
    size_t ne = moe_model_expert_cols(model, NULL, 0), ng = moe_model_gate_cols(model, NULL, 0);
    size_t *ecols = malloc((ne + 1) * sizeof *ecols), *gcols = malloc((ng + 1) * sizeof *gcols);
    const char **fnames = malloc((d + 1) * sizeof *fnames);
    const char **enames = malloc((ne + 2) * sizeof *enames);
    const char **gnames = malloc((ng + 2) * sizeof *gnames);
    const char **tnames = malloc((P + C + 1) * sizeof *tnames);
    size_t nrow = cls ? C : P, maxch = 1;
    for (size_t g = 0; g < G; g++)
        if (moe_model_gate_n_children(model, g) > maxch) maxch = moe_model_gate_n_children(model, g);
    double *coef = malloc((nrow * (ne + 1) + maxch * (ng + 1) + P * P + 1) * sizeof *coef);
    size_t n_trace = moe_model_trace(model, NULL, 0);
    double *trace = malloc((n_trace + 1) * sizeof *trace);
    size_t *path = malloc((shape.n_levels + 1) * sizeof *path);
    if (!ecols || !gcols || !fnames || !enames || !gnames || !tnames || !coef || !trace || !path)
        goto oom;
    moe_model_expert_cols(model, ecols, ne);
    moe_model_gate_cols(model, gcols, ng);
    moe_model_trace(model, trace, n_trace);
    for (size_t j = 0; j < d; j++) fnames[j] = cli_feature_name(&m, j);
    enames[0] = gnames[0] = "(intercept)";
    for (size_t j = 0; j < ne; j++) enames[j + 1] = ecols[j] < d ? fnames[ecols[j]] : "?";
    for (size_t j = 0; j < ng; j++) gnames[j + 1] = gcols[j] < d ? fnames[gcols[j]] : "?";
    names features = {fnames, d}, eterms = {enames, ne + 1}, gterms = {gnames, ng + 1};
    names efeat = {enames + 1, ne}, gfeat = {gnames + 1, ng};
    size_t nt = moe_encoder_n_targets(enc);
    for (size_t t = 0; t < nt && t < P + C; t++) tnames[t] = moe_encoder_target_name(enc, t);
    names targets = {tnames, nt < P + C ? nt : P + C};
    const char **cnames = tnames; /* reused below for classes */
    moe_fit_report rep = moe_model_report(model);
    const char *creator = moe_model_meta_get(model, CLI_META_CREATOR);
    const char *weights = moe_encoder_weights_name(enc);
    size_t n_meta = moe_model_meta_count(model);
    size_t prefix_len = strlen(CLI_META_TRAIN_PREFIX);

    if (json) {
        cli_buf_add(&b, "{\n  \"model\": ");
        cli_buf_json_str(&b, m.path);
        KEY(&b, "creator");
        if (creator) cli_buf_json_str(&b, creator);
        else cli_buf_add(&b, "null");
        KEY(&b, "task");
        cli_buf_json_str(&b, cls ? "classification" : "regression");
        KEY(&b, "tree");
        cli_buf_json_str(&b, shape_text);
        cli_buf_printf(&b, ",\n  \"n_experts\": %zu,\n  \"n_gates\": %zu", K, G);
        if (!linear_dense(model)) { /* only models trained with MLP nodes or top-k */
            char ea[160], ga[160];
            net_text(moe_model_expert_mlp(model), ea, sizeof ea);
            net_text(moe_model_gate_mlp(model), ga, sizeof ga);
            KEY(&b, "expert_net");
            cli_buf_json_str(&b, ea);
            KEY(&b, "gate_net");
            cli_buf_json_str(&b, ga);
            cli_buf_printf(&b, ",\n  \"top_k\": %zu", moe_model_top_k(model));
            cli_buf_printf(&b, ",\n  \"log_var\": %s",
                           moe_model_expert_log_var(model) ? "true" : "false");
        }
        KEY(&b, "variance");
        if (cls) cli_buf_add(&b, "null");
        else cli_buf_json_str(&b, variance_name(moe_model_variance(model)));
        cli_buf_printf(&b, ",\n  \"n_outputs\": %zu,\n  \"n_classes\": %zu,\n  \"n_features\": %zu",
                       P, C, d);
        KEY(&b, "targets");
        json_names(&b, &targets);
        KEY(&b, "classes");
        cli_buf_addc(&b, '[');
        for (size_t c = 0; c < C; c++) {
            if (c) cli_buf_add(&b, ", ");
            cli_buf_json_str(&b, moe_encoder_class_name(enc, c));
        }
        cli_buf_addc(&b, ']');
        KEY(&b, "weights");
        if (weights) cli_buf_json_str(&b, weights);
        else cli_buf_add(&b, "null");
        KEY(&b, "inputs");
        cli_buf_addc(&b, '[');
        for (size_t i = 0; i < moe_encoder_n_inputs(enc); i++) {
            int cat = moe_encoder_input_is_categorical(enc, i);
            cli_buf_add(&b, i ? ",\n    {\"name\": " : "\n    {\"name\": ");
            cli_buf_json_str(&b, moe_encoder_input_name(enc, i));
            cli_buf_printf(&b, ", \"type\": \"%s\"", cat ? "categorical" : "numeric");
            if (cat) {
                cli_buf_add(&b, ", \"levels\": [");
                for (size_t l = 0; l < moe_encoder_input_n_levels(enc, i); l++) {
                    if (l) cli_buf_add(&b, ", ");
                    cli_buf_json_str(&b, moe_encoder_input_level(enc, i, l));
                }
                cli_buf_addc(&b, ']');
            }
            size_t first = 0, count = 0;
            moe_encoder_input_span(enc, i, &first, &count);
            names cols = {fnames + (first < d ? first : 0), first + count <= d ? count : 0};
            cli_buf_add(&b, ", \"features\": ");
            json_names(&b, &cols);
            cli_buf_addc(&b, '}');
        }
        cli_buf_add(&b, moe_encoder_n_inputs(enc) ? "\n  ]" : "]");
        KEY(&b, "features");
        json_names(&b, &features);
        KEY(&b, "expert_features");
        json_names(&b, &efeat);
        KEY(&b, "gate_features");
        json_names(&b, &gfeat);
        KEY(&b, "loglik");
        cli_buf_json_num(&b, rep.loglik);
        cli_buf_printf(&b, ",\n  \"df\": %zu", rep.df);
        KEY(&b, "aic");
        cli_buf_json_num(&b, rep.aic);
        KEY(&b, "bic");
        cli_buf_json_num(&b, rep.bic);
        KEY(&b, "icl");
        cli_buf_json_num(&b, rep.icl);
        KEY(&b, "entropy");
        cli_buf_json_num(&b, rep.entropy);
        cli_buf_printf(&b, ",\n  \"n_rows\": %zu", rep.n_rows);
        KEY(&b, "sum_weights");
        cli_buf_json_num(&b, rep.sum_weights);
        cli_buf_printf(&b, ",\n  \"iterations\": %d,\n  \"converged\": %s", rep.iterations,
                       rep.converged ? "true" : "false");
        cli_buf_printf(&b, ",\n  \"n_restarts\": %d,\n  \"best_restart\": %d", rep.n_restarts,
                       rep.best_restart + 1);
        cli_buf_printf(&b, ",\n  \"n_events\": %zu", rep.n_events);
        KEY(&b, "events");
        cli_buf_addc(&b, '[');
        for (size_t i = 0; i < rep.n_events; i++) {
            moe_event ev;
            if (moe_model_event(model, i, &ev) != MOE_STATUS_OK) continue;
            cli_buf_add(&b, i ? ",\n    {\"kind\": " : "\n    {\"kind\": ");
            cli_buf_json_str(&b, moe_event_kind_str(ev.kind));
            cli_buf_printf(&b, ", \"iteration\": %d, \"expert\": ", ev.iteration);
            if (ev.expert >= 0) cli_buf_printf(&b, "%d", ev.expert + 1);
            else cli_buf_add(&b, "null");
            cli_buf_add(&b, ", \"column\": ");
            if (ev.column >= 0) cli_buf_printf(&b, "%d", ev.column);
            else cli_buf_add(&b, "null");
            cli_buf_add(&b, ", \"value\": ");
            cli_buf_json_num(&b, ev.value);
            cli_buf_addc(&b, '}');
        }
        cli_buf_add(&b, rep.n_events ? "\n  ]" : "]");
        KEY(&b, "trace");
        json_nums(&b, trace, n_trace);
        if (data_path) {
            KEY(&b, "routing");
            cli_routing_json(&b, &routing, model, moe_table_name(table));
        }
        KEY(&b, "settings");
        cli_buf_addc(&b, '{');
        int any = 0;
        for (size_t i = 0; i < n_meta; i++) {
            const char *k, *v;
            if (moe_model_meta_at(model, i, &k, &v) != MOE_STATUS_OK) continue;
            if (strncmp(k, CLI_META_TRAIN_PREFIX, prefix_len) != 0) continue;
            cli_buf_add(&b, any ? ",\n    " : "\n    ");
            cli_buf_json_str(&b, k + prefix_len);
            cli_buf_add(&b, ": ");
            cli_buf_json_str(&b, v);
            any = 1;
        }
        cli_buf_add(&b, any ? "\n  }" : "}");
        KEY(&b, "gate_terms");
        json_names(&b, &gterms);
        KEY(&b, "gates");
        cli_buf_addc(&b, '[');
        for (size_t g = 0; g < G; g++) {
            size_t nch = moe_model_gate_n_children(model, g), level = 0;
            cli_buf_printf(&b, "%s{\"gate\": %zu", g ? ",\n    " : "\n    ", g);
            int leaf = 0;
            gate_child(&shape, g, 0, &leaf, &level);
            cli_buf_printf(&b, ", \"level\": %zu, \"children\": [", level);
            for (size_t c = 0; c < nch; c++) {
                size_t idx = gate_child(&shape, g, c, &leaf, &level);
                cli_buf_printf(&b, "%s{\"%s\": %zu}", c ? ", " : "", leaf ? "expert" : "gate",
                               leaf ? idx + 1 : idx);
            }
            cli_buf_add(&b, "], \"coef\": [");
            if (moe_model_gate_coef(model, g, coef) == MOE_STATUS_OK)
                for (size_t c = 0; c < nch; c++) {
                    if (c) cli_buf_add(&b, ", ");
                    json_nums(&b, coef + c * (ng + 1), ng + 1);
                }
            cli_buf_add(&b, "]}");
        }
        cli_buf_add(&b, G ? "\n  ]" : "]");
        KEY(&b, "expert_terms");
        json_names(&b, &eterms);
        KEY(&b, "experts");
        cli_buf_addc(&b, '[');
        for (size_t k = 0; k < K; k++) {
            cli_buf_printf(&b, "%s{\"expert\": %zu, \"path\": [", k ? ",\n    " : "\n    ", k + 1);
            leaf_path(&shape, k, path);
            for (size_t l = 0; G && l < shape.n_levels; l++)
                cli_buf_printf(&b, "%s%zu", l ? ", " : "", path[l] + 1);
            cli_buf_add(&b, "], \"coef\": [");
            if (moe_model_expert_coef(model, k, coef) == MOE_STATUS_OK)
                for (size_t q = 0; q < nrow; q++) {
                    if (q) cli_buf_add(&b, ", ");
                    json_nums(&b, coef + q * (ne + 1), ne + 1);
                }
            cli_buf_addc(&b, ']');
            if (!cls && moe_model_expert_cov(model, k, coef) == MOE_STATUS_OK) {
                cli_buf_add(&b, ", \"cov\": [");
                for (size_t p = 0; p < P; p++) {
                    if (p) cli_buf_add(&b, ", ");
                    json_nums(&b, coef + p * P, P);
                }
                cli_buf_add(&b, "], \"sd\": [");
                for (size_t p = 0; p < P; p++) {
                    if (p) cli_buf_add(&b, ", ");
                    cli_buf_json_num(&b, sqrt(coef[p * P + p]));
                }
                cli_buf_addc(&b, ']');
            }
            cli_buf_addc(&b, '}');
        }
        cli_buf_add(&b, K ? "\n  ]" : "]");
        KEY(&b, "metadata");
        cli_buf_addc(&b, '{');
        for (size_t i = 0; i < n_meta; i++) {
            const char *k, *v;
            if (moe_model_meta_at(model, i, &k, &v) != MOE_STATUS_OK) continue;
            cli_buf_add(&b, i ? ",\n    " : "\n    ");
            cli_buf_json_str(&b, k);
            cli_buf_add(&b, ": ");
            cli_buf_json_str(&b, v);
        }
        cli_buf_add(&b, n_meta ? "\n  }\n}\n" : "}\n}\n");
    } else {
        cli_buf_printf(&b, "model            %s\n", m.path);
        cli_buf_printf(&b, "creator          %s\n", creator ? creator : "(unknown)");
        cli_buf_printf(&b, "task             %s\n", cls ? "classification" : "regression");
        cli_buf_printf(&b, "tree             %s (%zu experts, %zu gates)\n", shape_text, K, G);
        if (!linear_dense(model)) {
            char ea[160], ga[160];
            net_text(moe_model_expert_mlp(model), ea, sizeof ea);
            net_text(moe_model_gate_mlp(model), ga, sizeof ga);
            cli_buf_printf(&b, "expert network   %s\ngate network     %s\ntop-k            %zu%s\n",
                           ea, ga, moe_model_top_k(model),
                           moe_model_top_k(model) ? "" : " (dense)");
        }
        if (!cls)
            cli_buf_printf(&b, "variance         %s%s\n", variance_name(moe_model_variance(model)),
                           moe_model_expert_log_var(model)
                               ? ", input-dependent (the experts output log-variances)"
                               : "");
        cli_buf_add(&b, "targets          ");
        text_names(&b, &targets);
        cli_buf_addc(&b, '\n');
        if (cls) {
            cli_buf_printf(&b, "classes          %zu:", C);
            for (size_t c = 0; c < C; c++) {
                cli_buf_addc(&b, ' ');
                cli_buf_add(&b, moe_encoder_class_name(enc, c));
            }
            cli_buf_addc(&b, '\n');
        }
        cli_buf_printf(&b, "weights          %s\n", weights ? weights : "(none)");
        cli_buf_printf(&b, "inputs           %zu\n", moe_encoder_n_inputs(enc));
        for (size_t i = 0; i < moe_encoder_n_inputs(enc); i++) {
            cli_buf_printf(&b, "  %s", moe_encoder_input_name(enc, i));
            if (moe_encoder_input_is_categorical(enc, i)) {
                cli_buf_add(&b, " (categorical; levels");
                for (size_t l = 0; l < moe_encoder_input_n_levels(enc, i); l++) {
                    cli_buf_addc(&b, ' ');
                    cli_buf_add(&b, moe_encoder_input_level(enc, i, l));
                }
                cli_buf_add(&b, ")\n");
            } else {
                cli_buf_add(&b, " (numeric)\n");
            }
        }
        cli_buf_printf(&b, "features         %zu: ", d);
        text_names(&b, &features);
        cli_buf_add(&b, "\nexpert features  ");
        text_names(&b, &efeat);
        cli_buf_add(&b, "\ngate features    ");
        text_names(&b, &gfeat);
        cli_buf_add(&b, "\n\nfit\n");
        cli_buf_add(&b, "  loglik         ");
        cli_buf_num(&b, rep.loglik);
        cli_buf_printf(&b, "\n  df             %zu\n  aic            ", rep.df);
        cli_buf_num(&b, rep.aic);
        cli_buf_add(&b, "\n  bic            ");
        cli_buf_num(&b, rep.bic);
        cli_buf_add(&b, "\n  icl            ");
        cli_buf_num(&b, rep.icl);
        cli_buf_add(&b, "\n  entropy        ");
        cli_buf_num(&b, rep.entropy);
        cli_buf_printf(&b, "\n  rows           %zu\n  sum_weights    ", rep.n_rows);
        cli_buf_num(&b, rep.sum_weights);
        cli_buf_printf(&b, "\n  iterations     %d\n  converged      %s\n", rep.iterations,
                       rep.converged ? "yes" : "no");
        cli_buf_printf(&b, "  restarts       %d (best: %d)\n  events         %zu\n",
                       rep.n_restarts, rep.best_restart + 1, rep.n_events);
        for (size_t i = 0; i < rep.n_events; i++) {
            moe_event ev;
            if (moe_model_event(model, i, &ev) != MOE_STATUS_OK) continue;
            cli_buf_printf(&b, "    %s at iteration %d", moe_event_kind_str(ev.kind),
                           ev.iteration);
            if (ev.expert >= 0) cli_buf_printf(&b, ", expert %d", ev.expert + 1);
            if (ev.column >= 0) cli_buf_printf(&b, ", column %d", ev.column);
            cli_buf_add(&b, ", value ");
            cli_buf_num(&b, ev.value);
            cli_buf_addc(&b, '\n');
        }
        if (data_path) {
            cli_buf_addc(&b, '\n');
            cli_routing_table(&b, &routing, model, moe_table_name(table));
        }
        cli_buf_add(&b, "\nsettings\n");
        for (size_t i = 0; i < n_meta; i++) {
            const char *k, *v;
            if (moe_model_meta_at(model, i, &k, &v) != MOE_STATUS_OK) continue;
            if (strncmp(k, CLI_META_TRAIN_PREFIX, prefix_len) != 0) continue;
            cli_buf_printf(&b, "  %-14s ", k + prefix_len);
            text_escaped(&b, v);
            cli_buf_addc(&b, '\n');
        }
        for (size_t g = 0; g < G; g++) {
            size_t nch = moe_model_gate_n_children(model, g), level = 0;
            int leaf = 0;
            cli_buf_printf(&b, "\ngate %zu%s: children", g, g == 0 ? " (root)" : "");
            for (size_t c = 0; c < nch; c++) {
                size_t idx = gate_child(&shape, g, c, &leaf, &level);
                cli_buf_printf(&b, "%s %s %zu", c ? "," : "", leaf ? "expert" : "gate",
                               leaf ? idx + 1 : idx);
            }
            cli_buf_add(&b, "\n  terms:");
            for (size_t j = 0; j < ng + 1; j++) cli_buf_printf(&b, " %s", gnames[j]);
            cli_buf_addc(&b, '\n');
            if (moe_model_gate_coef(model, g, coef) != MOE_STATUS_OK) continue;
            for (size_t c = 0; c < nch; c++) {
                size_t idx = gate_child(&shape, g, c, &leaf, &level);
                cli_buf_printf(&b, "  %s %zu:", leaf ? "expert" : "gate", leaf ? idx + 1 : idx);
                text_nums(&b, coef + c * (ng + 1), ng + 1);
                cli_buf_addc(&b, '\n');
            }
        }
        for (size_t k = 0; k < K; k++) {
            cli_buf_printf(&b, "\nexpert %zu", k + 1);
            if (G) {
                leaf_path(&shape, k, path);
                cli_buf_add(&b, " (path");
                for (size_t l = 0; l < shape.n_levels; l++)
                    cli_buf_printf(&b, "%s%zu", l ? "." : " ", path[l] + 1);
                cli_buf_addc(&b, ')');
            }
            cli_buf_add(&b, "\n  terms:");
            for (size_t j = 0; j < ne + 1; j++) cli_buf_printf(&b, " %s", enames[j]);
            cli_buf_addc(&b, '\n');
            if (moe_model_expert_coef(model, k, coef) == MOE_STATUS_OK)
                for (size_t q = 0; q < nrow; q++) {
                    const char *rn = cls ? moe_encoder_class_name(enc, q)
                                         : (q < targets.n ? targets.v[q] : "?");
                    cli_buf_printf(&b, "  %s %s:", cls ? "class" : "mean", rn);
                    text_nums(&b, coef + q * (ne + 1), ne + 1);
                    cli_buf_addc(&b, '\n');
                }
            if (!cls && moe_model_expert_cov(model, k, coef) == MOE_STATUS_OK) {
                cli_buf_add(&b, "  sd:");
                for (size_t p = 0; p < P; p++) {
                    cli_buf_addc(&b, ' ');
                    cli_buf_num(&b, sqrt(coef[p * P + p]));
                }
                cli_buf_addc(&b, '\n');
                for (size_t p = 0; p < P; p++) {
                    cli_buf_printf(&b, "  cov %s:", p < targets.n ? targets.v[p] : "?");
                    text_nums(&b, coef + p * P, P);
                    cli_buf_addc(&b, '\n');
                }
            }
        }
        cli_buf_add(&b, "\nmetadata\n");
        for (size_t i = 0; i < n_meta; i++) {
            const char *k, *v;
            if (moe_model_meta_at(model, i, &k, &v) != MOE_STATUS_OK) continue;
            cli_buf_printf(&b, "  %s: ", k);
            if (strcmp(k, CLI_META_ENCODER) == 0)
                cli_buf_printf(&b, "(%zu bytes; shown above as inputs, targets, classes)",
                               strlen(v));
            else
                text_escaped(&b, v);
            cli_buf_addc(&b, '\n');
        }
    }
    (void)cnames;
    if (b.failed) goto oom;
    if ((st = cli_write_atomic("-", b.data, b.len, &err)) != MOE_STATUS_OK) {
        cli_error("inspect", "%s", err.message);
        rc = cli_exit_code(st);
        goto done;
    }
    rc = CLI_EXIT_OK;
    goto done;
oom:
    cli_error("inspect", "out of memory");
    rc = CLI_EXIT_RUNTIME;
done:
    cli_buf_free(&b);
    free(ecols);
    free(gcols);
    free(fnames);
    free(enames);
    free(gnames);
    free(tnames);
    free(coef);
    free(trace);
    free(path);
    moe_routing_free(&routing);
    moe_encoded_free(rows);
    moe_table_free(table);
    cli_model_free(&m);
    return rc;
}
