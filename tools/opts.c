/*
 * opts.c -- the option parser and --help printer, both driven by a table of
 * cli_opt descriptors (cli.h).
 *
 * Each subcommand lists its options once: names, type, bounds, help line,
 * and the variable holding the value. The variables start at their
 * defaults (taken from the library's moe_*_params_default() where there is
 * one), so --help prints the live defaults straight from them, and the
 * range checks use the same bounds the help text shows.
 */
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const cli_opt *cli_opt_find(const cli_opt *opts, size_t n_opts, const char *long_name) {
    for (size_t i = 0; i < n_opts; i++)
        if (opts[i].long_name && strcmp(opts[i].long_name, long_name) == 0) return &opts[i];
    return NULL;
}

static void fmt_bound(double v, char *buf, size_t size) {
    snprintf(buf, size, "%.10g", v);
}

/* The value of an option as --help shows it. */
static void fmt_value(const cli_opt *o, char *buf, size_t size) {
    buf[0] = '\0';
    if (o->default_text) {
        snprintf(buf, size, "%s", o->default_text);
        return;
    }
    switch (o->type) {
    case CLI_OPT_FLAG: break;
    case CLI_OPT_INT: snprintf(buf, size, "%d", *(const int *)o->dest); break;
    case CLI_OPT_UINT64: snprintf(buf, size, "%" PRIu64, *(const uint64_t *)o->dest); break;
    case CLI_OPT_DOUBLE: snprintf(buf, size, "%g", *(const double *)o->dest); break;
    case CLI_OPT_STRING: {
        const char *s = *(const char *const *)o->dest;
        snprintf(buf, size, "%s", s ? s : "");
        break;
    }
    case CLI_OPT_CHOICE: {
        int i = *(const int *)o->dest;
        snprintf(buf, size, "%s", o->choices && i >= 0 ? o->choices[i] : "?");
        break;
    }
    }
}

void cli_print_help(const cli_command *cmd, const cli_opt *opts, size_t n_opts, void *fp) {
    FILE *f = fp;
    fprintf(f, "Usage: moe %s %s\n%s\n", cmd->name, cmd->usage, cmd->summary);
    for (size_t i = 0; i < n_opts; i++) {
        const cli_opt *o = &opts[i];
        if (o->group) fprintf(f, "\n%s:\n", o->group);
        char left[200], val[128], arg[160];
        snprintf(arg, sizeof arg, "%s", o->arg ? o->arg : "ARG");
        if (o->type == CLI_OPT_CHOICE && !o->arg) {
            size_t len = 0;
            arg[0] = '\0';
            for (size_t c = 0; o->choices[c] && len < sizeof arg; c++)
                len += (size_t)snprintf(arg + len, sizeof arg - len, "%s%s", c ? "|" : "",
                                        o->choices[c]);
        }
        int n = snprintf(left, sizeof left, "  %c%c%s--%s%s%s", o->short_name ? '-' : ' ',
                         o->short_name ? o->short_name : ' ', o->short_name ? ", " : "  ",
                         o->long_name, o->type == CLI_OPT_FLAG ? "" : " ",
                         o->type == CLI_OPT_FLAG ? "" : arg);
        fmt_value(o, val, sizeof val);
        if (n < 30)
            fprintf(f, "%-30s %s", left, o->help);
        else
            fprintf(f, "%s\n%-30s %s", left, "", o->help);
        if (o->type != CLI_OPT_FLAG) fprintf(f, " [%s]", val);
        fputc('\n', f);
    }
    if (cmd->details) fprintf(f, "\n%s", cmd->details);
}

static int opt_error(const cli_command *cmd, const char *fmt, const char *a, const char *b) {
    char msg[512];
    snprintf(msg, sizeof msg, fmt, a, b);
    cli_error(cmd->name, "%s (see 'moe %s --help')", msg, cmd->name);
    return -1;
}

/* Store `value` into option o; -1 after printing an error. */
static int set_value(const cli_command *cmd, cli_opt *o, const char *value) {
    char name[80], lo[32], hi[32];
    snprintf(name, sizeof name, "--%s", o->long_name);
    o->set++;
    switch (o->type) {
    case CLI_OPT_FLAG: *(int *)o->dest = 1; return 0;
    case CLI_OPT_STRING: *(const char **)o->dest = value; return 0;
    case CLI_OPT_CHOICE:
        for (int c = 0; o->choices[c]; c++)
            if (strcmp(o->choices[c], value) == 0) {
                *(int *)o->dest = c;
                return 0;
            }
        {
            char list[256];
            size_t len = 0;
            list[0] = '\0';
            for (int c = 0; o->choices[c] && len < sizeof list; c++)
                len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", c ? ", " : "",
                                        o->choices[c]);
            char msg[400];
            snprintf(msg, sizeof msg, "%s: '%.40s' is not one of: %s", name, value, list);
            return opt_error(cmd, "%s%s", msg, "");
        }
    case CLI_OPT_INT: {
        char *end;
        errno = 0;
        long v = strtol(value, &end, 10);
        if (end == value || *end != '\0' || errno == ERANGE) {
            char msg[200];
            snprintf(msg, sizeof msg, "%s: '%.40s' is not an integer", name, value);
            return opt_error(cmd, "%s%s", msg, "");
        }
        if ((double)v < o->min || (double)v > o->max) {
            fmt_bound(o->min, lo, sizeof lo);
            fmt_bound(o->max, hi, sizeof hi);
            char msg[200];
            snprintf(msg, sizeof msg, "%s: %ld is out of range [%s, %s]", name, v, lo, hi);
            return opt_error(cmd, "%s%s", msg, "");
        }
        *(int *)o->dest = (int)v;
        return 0;
    }
    case CLI_OPT_UINT64: {
        char *end;
        errno = 0;
        const char *p = value;
        while (*p == ' ') p++;
        unsigned long long v = strtoull(p, &end, 10);
        if (*p == '-' || *p == '+' || end == p || *end != '\0' || errno == ERANGE) {
            char msg[200];
            snprintf(msg, sizeof msg, "%s: '%.40s' is not an integer in [0, 2^64-1]", name,
                     value);
            return opt_error(cmd, "%s%s", msg, "");
        }
        *(uint64_t *)o->dest = (uint64_t)v;
        return 0;
    }
    case CLI_OPT_DOUBLE: {
        double v;
        if (!moe_parse_double(value, &v)) {
            char msg[200];
            snprintf(msg, sizeof msg, "%s: '%.40s' is not a finite number", name, value);
            return opt_error(cmd, "%s%s", msg, "");
        }
        if (v < o->min || v > o->max) {
            fmt_bound(o->min, lo, sizeof lo);
            fmt_bound(o->max, hi, sizeof hi);
            char msg[200];
            snprintf(msg, sizeof msg, "%s: %.17g is out of range [%s, %s]", name, v, lo, hi);
            return opt_error(cmd, "%s%s", msg, "");
        }
        *(double *)o->dest = v;
        return 0;
    }
    }
    return -1;
}

int cli_parse(const cli_command *cmd, cli_opt *opts, size_t n_opts, int argc, char **argv,
              char **pos, size_t max_pos, size_t *n_pos) {
    *n_pos = 0;
    /* --help first, so the defaults it shows are the untouched ones. */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) break;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            cli_print_help(cmd, opts, n_opts, stdout);
            return 1;
        }
    }
    int only_pos = 0;
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (only_pos || a[0] != '-' || a[1] == '\0') {
            if (*n_pos >= max_pos)
                return opt_error(cmd, "unexpected argument '%.60s'%s", a, "");
            pos[(*n_pos)++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_pos = 1;
            continue;
        }
        if (a[1] == '-') {
            char name[64];
            const char *eq = strchr(a + 2, '=');
            size_t len = eq ? (size_t)(eq - (a + 2)) : strlen(a + 2);
            if (len >= sizeof name) len = sizeof name - 1;
            memcpy(name, a + 2, len);
            name[len] = '\0';
            cli_opt *o = (cli_opt *)cli_opt_find(opts, n_opts, name);
            if (!o) return opt_error(cmd, "unknown option '--%.60s'%s", name, "");
            const char *value = NULL;
            if (o->type == CLI_OPT_FLAG) {
                if (eq) return opt_error(cmd, "option '--%s' takes no argument%s", name, "");
            } else if (eq) {
                value = eq + 1;
            } else {
                if (i + 1 >= argc)
                    return opt_error(cmd, "option '--%s' needs an argument%s", name, "");
                value = argv[++i];
            }
            if (set_value(cmd, o, value) != 0) return -1;
            continue;
        }
        /* one or more short options */
        for (const char *p = a + 1; *p; p++) {
            cli_opt *o = NULL;
            for (size_t k = 0; k < n_opts; k++)
                if (opts[k].short_name == *p) o = &opts[k];
            if (!o) {
                char s[3] = {'-', *p, '\0'};
                return opt_error(cmd, "unknown option '%s'%s", s, "");
            }
            if (o->type == CLI_OPT_FLAG) {
                if (set_value(cmd, o, NULL) != 0) return -1;
                continue;
            }
            const char *value;
            if (p[1]) {
                value = p + 1;
            } else {
                if (i + 1 >= argc) {
                    char s[3] = {'-', *p, '\0'};
                    return opt_error(cmd, "option '%s' needs an argument%s", s, "");
                }
                value = argv[++i];
            }
            if (set_value(cmd, o, value) != 0) return -1;
            break;
        }
    }
    return 0;
}
