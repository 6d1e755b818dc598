/*
 * routing_text.c -- routing diagnostics (moe_model_routing) as text and
 * JSON for `moe train`'s log and `moe inspect --data`, and the plain-words
 * flags both print: "collapsed gate: expert 3 takes 97% of rows",
 * "dead experts: 2, 5". Experts are numbered 1..K, gates 0.. breadth-first,
 * as everywhere in the program.
 */
#include "cli.h"

#include <math.h>
#include <stdio.h>

/* Child c of gate g: expert number (1-based) when *is_expert, else gate. */
static size_t child_id(const moe_routing *r, size_t g, size_t c, int *is_expert) {
    size_t node = r->gate_first[g] + c + 1;
    *is_expert = node >= r->n_gates;
    return *is_expert ? node - r->n_gates + 1 : node;
}

static double pct(double part, double whole) { return whole > 0.0 ? 100.0 * part / whole : 0.0; }

/* A list of expert numbers whose flag matches: "2, 5". */
static void expert_list(cli_buf *b, const moe_routing *r, int dead) {
    int first = 1;
    for (size_t k = 0; k < r->n_experts; k++) {
        int hit = dead ? r->dead[k] : (r->load[k] == 0.0 && !r->dead[k]);
        if (!hit) continue;
        cli_buf_printf(b, "%s%zu", first ? "" : ", ", k + 1);
        first = 0;
    }
}

size_t cli_routing_flags(cli_buf *b, const moe_routing *r, const moe_model *m,
                         const char *prefix) {
    size_t n = 0;
    int no_inputs = moe_model_gate_cols(m, NULL, 0) == 0;
    if (r->collapsed && no_inputs) {
        cli_buf_printf(b, "%sthe gate has no inputs: every row goes to expert %zu (%.0f%% of the "
                          "gate's mass); read importance, not rows\n",
                       prefix, r->top_expert + 1, pct(r->importance[r->top_expert],
                                                      r->sum_weights));
        n++;
    } else if (r->collapsed) {
        cli_buf_printf(b, "%scollapsed gate: expert %zu takes %.0f%% of rows\n", prefix,
                       r->top_expert + 1, floor(100.0 * r->top_share));
        n++;
    }
    if (r->n_dead) {
        cli_buf_printf(b, "%sdead experts: ", prefix);
        expert_list(b, r, 1);
        cli_buf_addc(b, '\n');
        n++;
    }
    if (r->n_idle > r->n_dead && !no_inputs) {
        cli_buf_printf(b, "%sidle experts (no rows, some gate mass): ", prefix);
        expert_list(b, r, 0);
        cli_buf_addc(b, '\n');
        n++;
    }
    /* Inner gates of a hierarchy (the root's collapse is the line above). */
    for (size_t g = 1; g < r->n_gates && !no_inputs; g++) {
        size_t nch = moe_model_gate_n_children(m, g), top = 0;
        const double *cl = r->child_load + r->gate_first[g];
        double tot = 0.0;
        for (size_t c = 0; c < nch; c++) {
            tot += cl[c];
            if (cl[c] > cl[top]) top = c;
        }
        if (!(tot > 0.0) || cl[top] < MOE_ROUTING_COLLAPSE_SHARE * tot) continue;
        int is_expert;
        size_t id = child_id(r, g, top, &is_expert);
        cli_buf_printf(b, "%scollapsed gate %zu: %s %zu takes %.0f%% of its %.0f%% of rows\n",
                       prefix, g, is_expert ? "expert" : "gate", id,
                       floor(100.0 * cl[top] / tot), pct(tot, r->sum_weights));
        n++;
    }
    return n;
}

void cli_routing_summary(cli_buf *b, const moe_routing *r, const char *prefix) {
    cli_buf_printf(b, "%srouting on %zu rows: gate entropy %.4g nats (%.3g of log %zu), balance "
                      "%.3g (max/mean load; 1 = even)\n",
                   prefix, r->n_rows, r->entropy, r->entropy_norm, r->n_experts, r->balance);
    if (r->n_experts <= 16) {
        cli_buf_printf(b, "%s  rows per expert:", prefix);
        for (size_t k = 0; k < r->n_experts; k++)
            cli_buf_printf(b, "%s %zu: %zu (%.0f%%)", k ? "," : "", k + 1, r->rows[k],
                           pct(r->load[k], r->sum_weights));
        cli_buf_addc(b, '\n');
    } else {
        size_t lo = 0;
        for (size_t k = 1; k < r->n_experts; k++)
            if (r->load[k] < r->load[lo]) lo = k;
        cli_buf_printf(b, "%s  rows per expert: most %zu (expert %zu), fewest %zu (expert %zu)\n",
                       prefix, r->rows[r->top_expert], r->top_expert + 1, r->rows[lo], lo + 1);
    }
}

void cli_routing_table(cli_buf *b, const moe_routing *r, const moe_model *m,
                       const char *data_name) {
    cli_buf_printf(b, "routing          %s, %zu rows", data_name, r->n_rows);
    if (r->sum_weights != (double)r->n_rows) {
        cli_buf_add(b, ", sum of weights ");
        cli_buf_num(b, r->sum_weights);
    }
    cli_buf_add(b, "\n  entropy        ");
    cli_buf_num(b, r->entropy);
    cli_buf_add(b, "\n  entropy_norm   ");
    cli_buf_num(b, r->entropy_norm);
    cli_buf_add(b, "\n  balance        ");
    cli_buf_num(b, r->balance);
    cli_buf_add(b, "\n  load_cv2       ");
    cli_buf_num(b, r->load_cv2);
    cli_buf_add(b, "\n  importance_cv2 ");
    cli_buf_num(b, r->importance_cv2);
    cli_buf_add(b, "\n  expert      rows   load%  importance%\n");
    for (size_t k = 0; k < r->n_experts; k++)
        cli_buf_printf(b, "  %6zu %9zu %7.2f %12.2f%s\n", k + 1, r->rows[k],
                       pct(r->load[k], r->sum_weights), pct(r->importance[k], r->sum_weights),
                       r->dead[k] ? "  dead" : r->load[k] == 0.0 ? "  idle" : "");
    for (size_t g = 0; r->n_gates > 1 && g < r->n_gates; g++) {
        size_t nch = moe_model_gate_n_children(m, g);
        cli_buf_printf(b, "  gate %zu: reach %.2f%%, entropy ", g,
                       pct(r->gate_reach[g], r->sum_weights));
        cli_buf_num(b, r->gate_entropy[g]);
        cli_buf_add(b, ", entropy_norm ");
        cli_buf_num(b, r->gate_entropy_norm[g]);
        cli_buf_add(b, ", balance ");
        cli_buf_num(b, r->gate_balance[g]);
        cli_buf_add(b, "\n    children");
        for (size_t c = 0; c < nch; c++) {
            int is_expert;
            size_t id = child_id(r, g, c, &is_expert);
            cli_buf_printf(b, "%s %s %zu (load %.2f%%, importance %.2f%%)", c ? "," : "",
                           is_expert ? "expert" : "gate", id,
                           pct(r->child_load[r->gate_first[g] + c], r->sum_weights),
                           pct(r->child_importance[r->gate_first[g] + c], r->sum_weights));
        }
        cli_buf_addc(b, '\n');
    }
    cli_buf flags = {0};
    if (cli_routing_flags(&flags, r, m, "  ") == 0) cli_buf_add(b, "  no problems found\n");
    else if (!flags.failed) cli_buf_add(b, flags.data);
    else b->failed = 1;
    cli_buf_free(&flags);
}

void cli_routing_json(cli_buf *b, const moe_routing *r, const moe_model *m,
                      const char *data_name) {
    cli_buf_add(b, "{\n    \"data\": ");
    cli_buf_json_str(b, data_name);
    cli_buf_printf(b, ",\n    \"n_rows\": %zu,\n    \"sum_weights\": ", r->n_rows);
    cli_buf_json_num(b, r->sum_weights);
    cli_buf_add(b, ",\n    \"entropy\": ");
    cli_buf_json_num(b, r->entropy);
    cli_buf_add(b, ",\n    \"entropy_norm\": ");
    cli_buf_json_num(b, r->entropy_norm);
    cli_buf_add(b, ",\n    \"balance\": ");
    cli_buf_json_num(b, r->balance);
    cli_buf_add(b, ",\n    \"load_cv2\": ");
    cli_buf_json_num(b, r->load_cv2);
    cli_buf_add(b, ",\n    \"importance_cv2\": ");
    cli_buf_json_num(b, r->importance_cv2);
    cli_buf_printf(b, ",\n    \"top_expert\": %zu,\n    \"top_share\": ", r->top_expert + 1);
    cli_buf_json_num(b, r->top_share);
    cli_buf_printf(b, ",\n    \"collapsed\": %s,\n    \"dead\": [",
                   r->collapsed ? "true" : "false");
    expert_list(b, r, 1);
    cli_buf_add(b, "],\n    \"idle\": [");
    expert_list(b, r, 0);
    cli_buf_add(b, "],\n    \"experts\": [");
    for (size_t k = 0; k < r->n_experts; k++) {
        cli_buf_printf(b, "%s{\"expert\": %zu, \"rows\": %zu, \"load\": ",
                       k ? ",\n      " : "\n      ", k + 1, r->rows[k]);
        cli_buf_json_num(b, r->load[k]);
        cli_buf_add(b, ", \"importance\": ");
        cli_buf_json_num(b, r->importance[k]);
        cli_buf_printf(b, ", \"dead\": %s}", r->dead[k] ? "true" : "false");
    }
    cli_buf_add(b, r->n_experts ? "\n    ],\n    \"gates\": [" : "],\n    \"gates\": [");
    for (size_t g = 0; g < r->n_gates; g++) {
        size_t nch = moe_model_gate_n_children(m, g);
        cli_buf_printf(b, "%s{\"gate\": %zu, \"reach\": ", g ? ",\n      " : "\n      ", g);
        cli_buf_json_num(b, r->gate_reach[g]);
        cli_buf_add(b, ", \"entropy\": ");
        cli_buf_json_num(b, r->gate_entropy[g]);
        cli_buf_add(b, ", \"entropy_norm\": ");
        cli_buf_json_num(b, r->gate_entropy_norm[g]);
        cli_buf_add(b, ", \"balance\": ");
        cli_buf_json_num(b, r->gate_balance[g]);
        cli_buf_add(b, ", \"children\": [");
        for (size_t c = 0; c < nch; c++) {
            int is_expert;
            size_t id = child_id(r, g, c, &is_expert);
            cli_buf_printf(b, "%s{\"%s\": %zu, \"load\": ", c ? ", " : "",
                           is_expert ? "expert" : "gate", id);
            cli_buf_json_num(b, r->child_load[r->gate_first[g] + c]);
            cli_buf_add(b, ", \"importance\": ");
            cli_buf_json_num(b, r->child_importance[r->gate_first[g] + c]);
            cli_buf_addc(b, '}');
        }
        cli_buf_add(b, "]}");
    }
    cli_buf_add(b, r->n_gates ? "\n    ],\n    \"flags\": [" : "],\n    \"flags\": [");
    cli_buf flags = {0};
    cli_routing_flags(&flags, r, m, "");
    if (flags.failed) b->failed = 1;
    /* one JSON string per flag line */
    size_t start = 0, nf = 0;
    for (size_t i = 0; !flags.failed && i < flags.len; i++) {
        if (flags.data[i] != '\n') continue;
        flags.data[i] = 0;
        cli_buf_add(b, nf++ ? ", " : "");
        cli_buf_json_str(b, flags.data + start);
        start = i + 1;
    }
    cli_buf_free(&flags);
    cli_buf_add(b, "]\n  }");
}
