/*
 * progress.c -- training progress and library diagnostics on stderr.
 *
 * On a terminal the EM progress is one live line redrawn in place (at most
 * 20 times a second); otherwise (a pipe, a log file) it is one plain line
 * per iteration, so logs stay greppable. -q prints nothing.
 *
 * SIGINT/SIGTERM during training set a flag that the next progress
 * callback turns into a cancellation: the library stops cleanly, nothing is
 * written, and the program exits 2. A second signal kills the process at
 * once (SA_RESETHAND).
 */
#include "cli.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t g_interrupted;
static cli_progress *g_active; /* the progress whose live line may be open */

static void on_signal(int sig) {
    (void)sig;
    g_interrupted = 1;
}

int cli_interrupted(void) { return g_interrupted != 0; }

static void set_handlers(int install) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    if (install) {
        sa.sa_handler = on_signal;
        sa.sa_flags = SA_RESETHAND;
    } else {
        sa.sa_handler = SIG_DFL;
    }
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

void cli_progress_init(cli_progress *p, int quiet) {
    memset(p, 0, sizeof *p);
    p->quiet = quiet;
    p->tty = isatty(STDERR_FILENO);
    p->t0 = cli_now();
    p->last_draw = -1.0;
    g_active = p;
    set_handlers(1);
}

static void end_line(cli_progress *p) {
    if (p && p->line_open) {
        fputc('\n', stderr);
        p->line_open = 0;
    }
}

static void fmt_change(double delta, char *buf, size_t size) {
    if (delta != delta || delta - delta != 0.0)
        snprintf(buf, size, "-");
    else
        snprintf(buf, size, "%.3e", delta);
}

static void draw(cli_progress *p, const moe_iter_info *info, double t) {
    char label[80] = "", change[32];
    if (p->label) snprintf(label, sizeof label, "tree %s, ", p->label);
    const char *phase = info->short_run ? " (short run)" : "";
    fmt_change(info->delta, change, sizeof change);
    if (p->tty) {
        fprintf(stderr, "\r\033[K%srestart %d/%d%s  iter %d  loglik %.8g  change %s  %.2fs",
                label, info->restart + 1, info->n_restarts, phase, info->iteration,
                info->loglik, change, t);
        fflush(stderr);
        p->line_open = 1;
        p->last_draw = t;
        p->last_pending = 0;
    } else {
        fprintf(stderr, "%srestart %d/%d%s iteration %d loglik %.10g change %s time %.3fs\n",
                label, info->restart + 1, info->n_restarts, phase, info->iteration, info->loglik,
                change, t);
        p->n_lines++;
    }
}

int cli_progress_iter(const moe_iter_info *info, void *user_data) {
    cli_progress *p = user_data;
    if (g_interrupted) return 1;
    if (!p || p->quiet) return 0;
    double t = cli_now() - p->t0;
    if (p->tty && p->last_draw >= 0 && t - p->last_draw < 0.05) {
        p->last = *info; /* drawn later, or at the end */
        p->last_pending = 1;
        return 0;
    }
    draw(p, info, t);
    return 0;
}

void cli_progress_done(cli_progress *p) {
    if (p && p->tty && !p->quiet && p->last_pending) draw(p, &p->last, cli_now() - p->t0);
    end_line(p);
    if (g_active == p) g_active = NULL;
    set_handlers(0);
}

static void log_fn(moe_log_level level, const char *message, void *user_data) {
    (void)user_data;
    if (level < MOE_LOG_LEVEL_WARN) return;
    end_line(g_active);
    fprintf(stderr, "moe: %s: %s\n", level == MOE_LOG_LEVEL_WARN ? "warning" : "error", message);
}

void cli_log_install(int quiet) { moe_log_set(quiet ? NULL : log_fn, NULL); }
