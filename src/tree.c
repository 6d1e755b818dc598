/*
 * tree.c -- the shape of the gate tree: parsing "4x4", counting leaves and
 * gates, and the breadth-first layout of the gates' coefficients.
 *
 * Layout: level l (0 = root) has n_l = b_0 * ... * b_{l-1} nodes. Internal
 * nodes are numbered breadth-first: gate index = (n_0 + ... + n_{l-1}) + q
 * for node q of level l; its children are nodes q*b_l + c of level l+1; the
 * nodes of the last level are the leaves (experts) 0..K-1.
 */
#include "moe_impl.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LEAVES 65536

size_t moe_tree_shape_n_leaves(const moe_tree_shape *s) {
    size_t k = 1;
    for (size_t l = 0; l < s->n_levels; l++) k *= s->branching[l];
    return k;
}

size_t moe_tree_shape_n_gates(const moe_tree_shape *s) {
    if (s->n_levels == 1 && s->branching[0] == 1) return 0;
    size_t g = 0, width = 1;
    for (size_t l = 0; l < s->n_levels; l++) {
        g += width;
        width *= s->branching[l];
    }
    return g;
}

size_t moe_tree_layout(const moe_tree_shape *s, size_t gd, size_t *nch, size_t *off) {
    size_t g = 0, width = 1, rows = 0;
    if (moe_tree_shape_n_gates(s) == 0) return 0;
    for (size_t l = 0; l < s->n_levels; l++) {
        for (size_t q = 0; q < width; q++, g++) {
            if (nch) nch[g] = s->branching[l];
            if (off) off[g] = rows * gd;
            rows += s->branching[l];
        }
        width *= s->branching[l];
    }
    return rows;
}

static moe_status shape_check(const moe_tree_shape *s, const char *text, moe_error *err) {
    if (s->n_levels == 0)
        return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "tree '%s': empty", text);
    size_t k = 1;
    for (size_t l = 0; l < s->n_levels; l++) {
        size_t b = s->branching[l];
        if (b == 0 || (b == 1 && s->n_levels > 1) || b > MOE_MAX_BRANCHING)
            return moe_err(err, MOE_STATUS_INVALID_ARGUMENT,
                           "tree '%s': branching factor %zu at level %zu is out of range "
                           "(2..%d, or the single tree '1')",
                           text, b, l + 1, MOE_MAX_BRANCHING);
        k *= b;
        if (k > MAX_LEAVES)
            return moe_err(err, MOE_STATUS_INVALID_ARGUMENT,
                           "tree '%s': more than %d experts", text, MAX_LEAVES);
    }
    return MOE_STATUS_OK;
}

moe_status moe_tree_shape_parse(const char *text, moe_tree_shape *out, moe_error *err) {
    moe_tree_shape s;
    memset(&s, 0, sizeof s);
    if (!text || !out) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "tree: no text");
    const char *p = text;
    for (;;) {
        while (*p == ' ') p++;
        if (!isdigit((unsigned char)*p))
            return moe_err(err, MOE_STATUS_INVALID_ARGUMENT,
                           "tree '%s': expected a number at position %zu (write e.g. 8 or 4x4)",
                           text, (size_t)(p - text) + 1);
        if (s.n_levels == MOE_MAX_DEPTH)
            return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "tree '%s': more than %d levels",
                           text, MOE_MAX_DEPTH);
        size_t v = 0;
        while (isdigit((unsigned char)*p)) {
            v = v * 10 + (size_t)(*p - '0');
            if (v > MOE_MAX_BRANCHING) v = MOE_MAX_BRANCHING + 1;
            p++;
        }
        s.branching[s.n_levels++] = v;
        while (*p == ' ') p++;
        if (*p == 'x' || *p == 'X' || *p == '*') {
            p++;
            continue;
        }
        if (*p != '\0')
            return moe_err(err, MOE_STATUS_INVALID_ARGUMENT,
                           "tree '%s': unexpected '%c' at position %zu", text, *p,
                           (size_t)(p - text) + 1);
        break;
    }
    moe_status st = shape_check(&s, text, err);
    if (st == MOE_STATUS_OK) *out = s;
    return st;
}

moe_status moe_tree_shape_parse_list(const char *text, moe_tree_shape *out, size_t capacity,
                                     size_t *n_out, moe_error *err) {
    if (!text || !n_out) return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "tree list: no text");
    size_t n = 0;
    const char *p = text;
    char item[128];
    for (;;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len >= sizeof item)
            return moe_err(err, MOE_STATUS_INVALID_ARGUMENT, "tree list '%s': item too long", text);
        memcpy(item, p, len);
        item[len] = '\0';
        if (n == capacity)
            return moe_err(err, MOE_STATUS_INVALID_ARGUMENT,
                           "tree list '%s': more than %zu shapes", text, capacity);
        moe_status st = moe_tree_shape_parse(item, &out[n], err);
        if (st != MOE_STATUS_OK) return st;
        n++;
        if (!e) break;
        p = e + 1;
    }
    *n_out = n;
    return MOE_STATUS_OK;
}

int moe_tree_shape_format(const moe_tree_shape *s, char *buf, size_t size) {
    char tmp[MOE_MAX_DEPTH * 24 + 1];
    size_t len = 0;
    tmp[0] = '\0';
    for (size_t l = 0; l < s->n_levels && l < MOE_MAX_DEPTH; l++)
        len += (size_t)snprintf(tmp + len, sizeof tmp - len, l ? "x%zu" : "%zu", s->branching[l]);
    if (buf && size) snprintf(buf, size, "%s", tmp);
    return (int)len;
}
