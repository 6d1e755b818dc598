/*
 * util.c -- small services for the `moe` program: error lines, growable
 * text buffers with exact number formatting, list splitting, reading
 * inputs ("-" = stdin) and writing outputs atomically.
 *
 * Outputs never appear half-written: cli_write_atomic writes a temporary
 * file next to the destination, fsyncs it and renames it over the
 * destination (rename is atomic within a directory on POSIX file systems),
 * so an interrupted or failed run leaves the old file -- or none -- in place.
 */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- errors ----------------------------------------------------------------- */

const moe_reducer *cli_group = NULL;

int cli_exit_code(moe_status status) {
    switch (status) {
    case MOE_STATUS_OK: return CLI_EXIT_OK;
    case MOE_STATUS_INVALID_ARGUMENT:
    case MOE_STATUS_IO:
    case MOE_STATUS_FORMAT:
    case MOE_STATUS_DATA:
    case MOE_STATUS_VERSION: return CLI_EXIT_USAGE;
    default: return CLI_EXIT_RUNTIME;
    }
}

static void vreport(const char *cmd, const char *kind, const char *fmt, va_list ap) {
    char msg[1200];
    vsnprintf(msg, sizeof msg, fmt, ap);
    /* Always one line: a message may quote text from a file. */
    for (char *p = msg; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    fprintf(stderr, "moe%s%s: %s%s\n", cmd ? " " : "", cmd ? cmd : "", kind, msg);
}

void cli_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vreport(cmd, "", fmt, ap);
    va_end(ap);
}

void cli_note(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vreport(cmd, "note: ", fmt, ap);
    va_end(ap);
}

static moe_status set_err(moe_error *err, moe_status st, const char *file, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

static moe_status set_err(moe_error *err, moe_status st, const char *file, const char *fmt, ...) {
    if (!err) return st;
    memset(err, 0, sizeof *err);
    err->status = st;
    snprintf(err->file, sizeof err->file, "%s", file ? file : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return st;
}

int cli_same_file(const char *a, const char *b) {
    struct stat sa, sb;
    if (strcmp(a, "-") == 0 || strcmp(b, "-") == 0) return 0;
    if (stat(a, &sa) != 0 || stat(b, &sb) != 0) return 0;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- buffers ------------------------------------------------------------------ */

void cli_buf_free(cli_buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

static int buf_reserve(cli_buf *b, size_t extra) {
    if (b->failed) return -1;
    if (b->len + extra + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) {
        if (cap > ((size_t)-1) / 2) {
            b->failed = 1;
            return -1;
        }
        cap *= 2;
    }
    char *d = realloc(b->data, cap);
    if (!d) {
        b->failed = 1;
        return -1;
    }
    b->data = d;
    b->cap = cap;
    return 0;
}

void cli_buf_addn(cli_buf *b, const char *s, size_t n) {
    if (buf_reserve(b, n) != 0) return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void cli_buf_add(cli_buf *b, const char *s) { cli_buf_addn(b, s, strlen(s)); }

void cli_buf_addc(cli_buf *b, char c) { cli_buf_addn(b, &c, 1); }

void cli_buf_printf(cli_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || buf_reserve(b, (size_t)n) != 0) return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void cli_buf_num(cli_buf *b, double v) {
    char tmp[64];
    moe_format_double(v, tmp, sizeof tmp);
    cli_buf_add(b, tmp);
}

void cli_buf_json_num(cli_buf *b, double v) {
    if (v != v || v - v != 0.0)
        cli_buf_add(b, "null");
    else
        cli_buf_num(b, v);
}

/* Length of the valid UTF-8 sequence at s, or 0. */
static size_t utf8_len(const unsigned char *s) {
    unsigned c = s[0];
    size_t n;
    unsigned min;
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) n = 2, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef) n = 3, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4) n = 4, min = 0x10000;
    else return 0;
    unsigned v = c & (0x7f >> n);
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        v = (v << 6) | (s[i] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) return 0;
    return n;
}

void cli_buf_json_str(cli_buf *b, const char *s) {
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    cli_buf_addc(b, '"');
    while (*p) {
        unsigned c = *p;
        if (c == '"' || c == '\\') {
            cli_buf_addc(b, '\\');
            cli_buf_addc(b, (char)c);
            p++;
        } else if (c == '\n') {
            cli_buf_add(b, "\\n"), p++;
        } else if (c == '\t') {
            cli_buf_add(b, "\\t"), p++;
        } else if (c == '\r') {
            cli_buf_add(b, "\\r"), p++;
        } else if (c < 0x20 || c == 0x7f) {
            cli_buf_printf(b, "\\u%04x", c), p++;
        } else {
            size_t n = utf8_len(p);
            if (n == 0) {
                cli_buf_printf(b, "\\u%04x", c); /* a stray byte: as Latin-1 */
                p++;
            } else {
                cli_buf_addn(b, (const char *)p, n);
                p += n;
            }
        }
    }
    cli_buf_addc(b, '"');
}

void cli_buf_csv(cli_buf *b, const char *s) {
    char small[256];
    size_t need = moe_csv_quote(s, ',', small, sizeof small);
    if (need < sizeof small) {
        cli_buf_addn(b, small, need);
        return;
    }
    char *big = malloc(need + 1);
    if (!big) {
        b->failed = 1;
        return;
    }
    moe_csv_quote(s, ',', big, need + 1);
    cli_buf_addn(b, big, need);
    free(big);
}

/* ---- lists and separators ----------------------------------------------------- */

void cli_list_free(char **items, size_t n) {
    if (!items) return;
    for (size_t i = 0; i < n; i++) free(items[i]);
    free(items);
}

int cli_list_split(const char *text, char ***items, size_t *n, char *why, size_t why_size) {
    *items = NULL;
    *n = 0;
    size_t cap = 1;
    for (const char *p = text; *p; p++) cap += *p == ',';
    char **v = calloc(cap, sizeof *v);
    if (!v) {
        snprintf(why, why_size, "out of memory");
        return -1;
    }
    size_t k = 0;
    const char *p = text;
    for (;;) {
        const char *e = strchr(p, ',');
        if (!e) e = p + strlen(p);
        const char *a = p, *z = e;
        while (a < z && (*a == ' ' || *a == '\t')) a++;
        while (z > a && (z[-1] == ' ' || z[-1] == '\t')) z--;
        if (a == z) {
            snprintf(why, why_size, "empty item in list '%.60s'", text);
            cli_list_free(v, k);
            return -1;
        }
        v[k] = malloc((size_t)(z - a) + 1);
        if (!v[k]) {
            snprintf(why, why_size, "out of memory");
            cli_list_free(v, k);
            return -1;
        }
        memcpy(v[k], a, (size_t)(z - a));
        v[k][z - a] = '\0';
        k++;
        if (!*e) break;
        p = e + 1;
    }
    *items = v;
    *n = k;
    return 0;
}

int cli_parse_sep(const char *text, char *out) {
    if (strcmp(text, "auto") == 0) *out = 0;
    else if (strcmp(text, "tab") == 0 || strcmp(text, "\\t") == 0 || strcmp(text, "\t") == 0)
        *out = '\t';
    else if (strcmp(text, "comma") == 0) *out = ',';
    else if (strcmp(text, "semicolon") == 0) *out = ';';
    else if (strlen(text) == 1 && text[0] != '"' && text[0] != '\r' && text[0] != '\n' &&
             text[0] != ' ')
        *out = text[0];
    else
        return -1;
    return 0;
}

/* ---- reading ------------------------------------------------------------------ */

moe_status cli_read_table(const char *path, char sep, moe_table **out, moe_error *err) {
    moe_csv_params cp = moe_csv_params_default();
    cp.delimiter = sep;
    if (strcmp(path, "-") == 0) return moe_table_read_csv_file(stdin, "<stdin>", &cp, out, err);
    return moe_table_read_csv(path, &cp, out, err);
}

moe_status cli_read_file(const char *path, void **data, size_t *size, moe_error *err) {
    *data = NULL;
    *size = 0;
    int is_stdin = strcmp(path, "-") == 0;
    const char *name = is_stdin ? "<stdin>" : path;
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f) return set_err(err, MOE_STATUS_IO, name, "%s: cannot open: %s", name, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    moe_status st = MOE_STATUS_OK;
    if (!buf) {
        st = set_err(err, MOE_STATUS_NO_MEMORY, name, "%s: out of memory", name);
        goto done;
    }
    for (;;) {
        if (len == cap) {
            char *nb = cap < ((size_t)-1) / 2 ? realloc(buf, cap * 2) : NULL;
            if (!nb) {
                st = set_err(err, MOE_STATUS_NO_MEMORY, name, "%s: out of memory", name);
                goto done;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) {
            if (ferror(f))
                st = set_err(err, MOE_STATUS_IO, name, "%s: read error: %s", name,
                             strerror(errno));
            break;
        }
    }
done:
    if (!is_stdin) fclose(f);
    if (st != MOE_STATUS_OK) {
        free(buf);
        return st;
    }
    *data = buf;
    *size = len;
    return MOE_STATUS_OK;
}

/* ---- atomic writing ----------------------------------------------------------- */

static int write_all(int fd, const void *data, size_t size) {
    const char *p = data;
    while (size > 0) {
        ssize_t w = write(fd, p, size);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        size -= (size_t)w;
    }
    return 0;
}

static void test_hook_sleep(void) {
    const char *s = getenv("MOE_TEST_SLOW_SAVE");
    double secs;
    if (!s || !moe_parse_double(s, &secs) || secs <= 0) return;
    if (secs > 3600) secs = 3600;
    struct timespec ts = {(time_t)secs, (long)((secs - (double)(time_t)secs) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

moe_status cli_write_atomic(const char *path, const void *data, size_t size, moe_error *err) {
    if (strcmp(path, "-") == 0) {
        if ((size && fwrite(data, 1, size, stdout) != size) || fflush(stdout) != 0)
            return set_err(err, MOE_STATUS_IO, "<stdout>", "<stdout>: write error: %s",
                           strerror(errno));
        return MOE_STATUS_OK;
    }
    size_t plen = strlen(path);
    if (plen == 0) return set_err(err, MOE_STATUS_IO, "", "empty output file name");
    if (path[plen - 1] == '/')
        return set_err(err, MOE_STATUS_IO, path, "%s: cannot write: Is a directory", path);
    const char *slash = strrchr(path, '/');
    size_t dlen = slash ? (size_t)(slash - path) + 1 : 0; /* directory part, with '/' */
    const char *base = slash ? slash + 1 : path;
    char *tmp = malloc(plen + 32);
    if (!tmp) return set_err(err, MOE_STATUS_NO_MEMORY, path, "%s: out of memory", path);
    memcpy(tmp, path, dlen);
    snprintf(tmp + dlen, plen + 32 - dlen, ".%.*s.tmp-XXXXXX", (int)(plen - dlen > 200 ? 200 : plen - dlen), base);
    moe_status st = MOE_STATUS_OK;
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        st = set_err(err, MOE_STATUS_IO, path, "%s: cannot write: Is a directory", path);
        free(tmp);
        return st;
    }
    int fd = mkstemp(tmp);
    if (fd < 0) {
        st = set_err(err, MOE_STATUS_IO, path, "%s: cannot write: %s", path, strerror(errno));
        free(tmp);
        return st;
    }
    /* mkstemp creates 0600; give the file the usual 0666 & ~umask. */
    mode_t mask = umask(0);
    umask(mask);
    if (fchmod(fd, 0666 & ~mask) != 0 || write_all(fd, data, size) != 0 || fsync(fd) != 0) {
        st = set_err(err, MOE_STATUS_IO, path, "%s: cannot write: %s", path, strerror(errno));
        close(fd);
        unlink(tmp);
        free(tmp);
        return st;
    }
    if (close(fd) != 0) {
        st = set_err(err, MOE_STATUS_IO, path, "%s: cannot write: %s", path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return st;
    }
    test_hook_sleep();
    if (rename(tmp, path) != 0) {
        st = set_err(err, MOE_STATUS_IO, path, "%s: cannot write: %s", path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return st;
    }
    free(tmp);
    /* Make the rename itself durable. */
    char *dir = malloc(dlen + 2);
    if (dir) {
        if (dlen) memcpy(dir, path, dlen), dir[dlen] = '\0';
        else strcpy(dir, ".");
        int dfd = open(dir, O_RDONLY);
        if (dfd >= 0) {
            (void)fsync(dfd);
            close(dfd);
        }
        free(dir);
    }
    return MOE_STATUS_OK;
}
