/*
 * cell.c -- what a CSV cell holds: a number, a missing value or text.
 *
 * Numbers are read in the "C" locale whatever the process locale is
 * (a German locale must not turn "1.5" into 1). The common case -- at most
 * 19 significant digits, mantissa <= 2^53, decimal exponent within +-22 --
 * is converted exactly by one multiplication or division of two exactly
 * representable doubles (Clinger 1990, "How to read floating point numbers
 * accurately", the fast path); everything else goes to strtod under a
 * "C" locale object made once per operation. Also here: the sort order of
 * category levels, and formatting/quoting helpers for writing CSV back
 * (RFC 4180 section 2).
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "csv_impl.h"

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double pow10_exact[23] = {
    1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

static int is_blank(char c) { return c == ' ' || c == '\t'; }
static int is_digit(char c) { return c >= '0' && c <= '9'; }
static char lower(char c) { return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c; }

/* Case-insensitive: does s start with the lower-case word w? */
static size_t starts_word(const char *s, const char *w) {
    size_t i = 0;
    for (; w[i]; i++)
        if (lower(s[i]) != w[i]) return 0;
    return i;
}

void moe_numctx_free(moe_numctx *ctx) {
    if (ctx && ctx->c_locale != (locale_t)0) freelocale(ctx->c_locale);
    if (ctx) {
        ctx->c_locale = (locale_t)0;
        ctx->tried = 0;
    }
}

/* strtod in the "C" locale over the number at s; *end as strtod. */
static double strtod_c(moe_numctx *ctx, const char *s, char **end) {
    moe_numctx local = MOE_NUMCTX_INIT;
    moe_numctx *c = ctx ? ctx : &local;
    double v;
    if (!c->tried) {
        c->c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
        c->tried = 1;
    }
    if (c->c_locale != (locale_t)0) {
        locale_t old = uselocale(c->c_locale);
        v = strtod(s, end);
        uselocale(old);
    } else {
        v = strtod(s, end); /* no locale object: the process locale (C unless set) */
    }
    if (!ctx) moe_numctx_free(&local);
    return v;
}

moe_cell_kind moe_cell_parse(moe_numctx *ctx, const char *text, double *value) {
    const char *p = text, *num, *numend;
    int neg = 0, any = 0, slow = 0, nd = 0;
    uint64_t m = 0;
    long exp10 = 0;

    while (is_blank(*p)) p++;
    if (*p == '\0') return MOE_CELL_MISSING;
    if (p[0] == 'N' && p[1] == 'A') {
        const char *q = p + 2;
        while (is_blank(*q)) q++;
        if (*q == '\0') return MOE_CELL_MISSING;
    }
    num = p;
    if (*p == '+' || *p == '-') neg = *p++ == '-';
    if (!is_digit(*p) && *p != '.') {
        /* inf, infinity, nan (any case, signed) */
        size_t len = starts_word(p, "infinity");
        int is_nan = 0;
        if (!len) len = starts_word(p, "inf");
        if (!len) {
            len = starts_word(p, "nan");
            is_nan = 1;
        }
        if (!len) return MOE_CELL_TEXT;
        p += len;
        while (is_blank(*p)) p++;
        if (*p != '\0') return MOE_CELL_TEXT;
        if (value) *value = is_nan ? NAN : (neg ? -INFINITY : INFINITY);
        return MOE_CELL_NONFINITE;
    }
    for (; is_digit(*p); p++) {
        any = 1;
        if (m == 0 && *p == '0') continue;
        if (nd < 19) {
            m = m * 10 + (uint64_t)(*p - '0');
            nd++;
        } else {
            slow = 1;
        }
    }
    if (*p == '.') {
        for (p++; is_digit(*p); p++) {
            any = 1;
            if (m == 0 && *p == '0') {
                exp10--;
                continue;
            }
            if (nd < 19) {
                m = m * 10 + (uint64_t)(*p - '0');
                nd++;
                exp10--;
            } else {
                slow = 1;
            }
        }
    }
    if (!any) return MOE_CELL_TEXT;
    if (*p == 'e' || *p == 'E') {
        int eneg = 0;
        long e = 0;
        p++;
        if (*p == '+' || *p == '-') eneg = *p++ == '-';
        if (!is_digit(*p)) return MOE_CELL_TEXT;
        for (; is_digit(*p); p++) {
            if (e < 100000) e = e * 10 + (*p - '0');
        }
        exp10 += eneg ? -e : e;
    }
    numend = p;
    while (is_blank(*p)) p++;
    if (*p != '\0') return MOE_CELL_TEXT;

    if (!slow && m <= ((uint64_t)1 << 53) && exp10 >= -22 && exp10 <= 22) {
        double v = (double)m;
        v = exp10 < 0 ? v / pow10_exact[-exp10] : v * pow10_exact[exp10];
        if (value) *value = neg ? -v : v;
        return MOE_CELL_NUMBER;
    }
    if (m == 0 && !slow) {
        if (value) *value = neg ? -0.0 : 0.0;
        return MOE_CELL_NUMBER;
    }
    {
        /* The text is valid decimal syntax; strtod gives the correctly
         * rounded value. Copy when blanks follow, so it stops at numend. */
        char small[64];
        char *copy = NULL, *end = NULL;
        const char *s = num;
        size_t len = (size_t)(numend - num);
        double v;
        if (*numend != '\0') {
            if (len < sizeof small) {
                copy = small;
            } else {
                copy = malloc(len + 1);
                if (!copy) return MOE_CELL_TEXT; /* out of memory: cannot tell */
            }
            memcpy(copy, num, len);
            copy[len] = '\0';
            s = copy;
        }
        errno = 0;
        v = strtod_c(ctx, s, &end);
        if (end != s + len) v = NAN; /* a locale that would not parse it: refuse */
        if (copy && copy != small) free(copy);
        if (value) *value = v;
        return isfinite(v) ? MOE_CELL_NUMBER : MOE_CELL_NONFINITE;
    }
}

int moe_parse_double(const char *text, double *out) {
    double v = 0;
    if (!text || moe_cell_parse(NULL, text, &v) != MOE_CELL_NUMBER) return 0;
    if (out) *out = v;
    return 1;
}

int moe_format_double(double value, char *buf, size_t size) {
    char tmp[64], clean[64];
    size_t i, j = 0;
    int radix_done = 0;
    if (isnan(value)) {
        strcpy(clean, "nan");
    } else if (isinf(value)) {
        strcpy(clean, value < 0 ? "-inf" : "inf");
    } else {
        snprintf(tmp, sizeof tmp, "%.17g", value);
        /* Whatever is not part of a number is the locale's radix (maybe
         * several bytes): write '.' once in its place. */
        for (i = 0; tmp[i] && j + 1 < sizeof clean; i++) {
            char c = tmp[i];
            if (is_digit(c) || c == '-' || c == '+' || c == 'e') {
                clean[j++] = c;
            } else if (!radix_done) {
                clean[j++] = '.';
                radix_done = 1;
            }
        }
        clean[j] = '\0';
    }
    j = strlen(clean);
    if (buf && size) {
        size_t k = j < size - 1 ? j : size - 1;
        memcpy(buf, clean, k);
        buf[k] = '\0';
    }
    return (int)j;
}

size_t moe_csv_quote(const char *text, char delimiter, char *buf, size_t size) {
    size_t n = 0, i, len = text ? strlen(text) : 0;
    int quote = 0;
    if (!text) text = "";
    if (len && (is_blank(text[0]) || is_blank(text[len - 1]))) quote = 1;
    for (i = 0; i < len && !quote; i++) {
        char c = text[i];
        if (c == delimiter || c == '"' || c == '\r' || c == '\n') quote = 1;
    }
#define PUT(c)                                   \
    do {                                         \
        if (buf && n + 1 < size) buf[n] = (c);   \
        n++;                                     \
    } while (0)
    if (quote) PUT('"');
    for (i = 0; i < len; i++) {
        if (quote && text[i] == '"') PUT('"');
        PUT(text[i]);
    }
    if (quote) PUT('"');
#undef PUT
    if (buf && size) buf[n < size ? n : size - 1] = '\0';
    return n;
}

void moe_excerpt(const char *text, char *out, size_t size) {
    size_t i, n = 0, max = 40;
    if (!out || size < 8) return;
    if (max > size - 4) max = size - 4;
    for (i = 0; text && text[i] && n < max; i++) {
        unsigned char c = (unsigned char)text[i];
        out[n++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (text && text[i]) {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = '\0';
}

void moe_level_key_set(moe_level_key *key, moe_numctx *ctx, const char *text, size_t index) {
    key->text = text;
    key->index = index;
    key->value = 0;
    key->is_number = moe_cell_parse(ctx, text, &key->value) == MOE_CELL_NUMBER;
}

int moe_level_key_cmp(const void *pa, const void *pb) {
    const moe_level_key *a = pa, *b = pb;
    if (a->is_number != b->is_number) return a->is_number ? -1 : 1;
    if (a->is_number) {
        if (a->value < b->value) return -1;
        if (a->value > b->value) return 1;
    }
    {
        int c = strcmp(a->text, b->text);
        return (c > 0) - (c < 0);
    }
}
