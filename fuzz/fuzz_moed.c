/*
 * fuzz_moed.c -- libFuzzer target for the .moed reader (src/moed.c).
 *
 * Built and run by `make fuzz` like the other targets. Every input is
 * written to a scratch file and opened twice: as it is (magic, version,
 * size and header-checksum checks), and with its header checksum repaired
 * (moe_crc32c over bytes 0..123 and the encoder text the header claims),
 * so that mutations reach the field checks and the encoder parser.
 * Whatever opens must give a view whose arrays can be read end to end,
 * verify (any status), and stream through a row source in uneven chunks.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "moe_impl.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void exercise(const char *path) {
    moe_moed *m = NULL;
    moe_error err;
    if (moe_moed_open(path, &m, &err) == MOE_STATUS_OK) {
        moe_dataset d = moe_moed_dataset(m);
        volatile double sink = 0;
        size_t i, j;
        for (i = 0; i < d.n_rows; i++) {
            for (j = 0; j < d.n_cols; j++) sink += d.x[i * d.ld_x + j];
            for (j = 0; j < d.n_outputs; j++) sink += d.y[i * d.ld_y + j];
            if (d.labels) sink += d.labels[i];
            if (d.weights) sink += d.weights[i];
        }
        (void)sink;
        (void)moe_moed_verify(m, &err);
        moe_moed_close(m);
        {
            moe_source s;
            if (moe_moed_source_open(path, 0, MOE_MOED_ALL_ROWS, &s, &err) == MOE_STATUS_OK) {
                size_t cap = 7, r0;
                double *x = malloc((cap * s.n_cols + 1) * sizeof *x);
                double *y = malloc((cap * s.n_outputs + 1) * sizeof *y);
                int32_t *l = malloc(cap * sizeof *l);
                double *w = malloc(cap * sizeof *w);
                moe_row_buffers b = {x, y, l, w, cap};
                moe_rows v;
                for (r0 = 0; x && y && l && w && r0 < s.n_rows; r0 += cap) {
                    size_t n = s.n_rows - r0 < cap ? s.n_rows - r0 : cap;
                    if (s.read(s.ctx, r0, n, &b, &v, &err) != MOE_STATUS_OK) break;
                }
                free(x);
                free(y);
                free(l);
                free(w);
                moe_moed_source_close(&s);
            }
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    FILE *f;
    uint8_t *fix;
    snprintf(path, sizeof path, "/tmp/fuzz-moed-%ld.moed", (long)getpid());
    if (!(f = fopen(path, "wb"))) return 0;
    if (size) fwrite(data, 1, size, f);
    fclose(f);
    exercise(path);
    if (size >= 128 && (fix = malloc(size)) != NULL) {
        uint64_t enc = 0;
        uint32_t c;
        for (int k = 0; k < 8; k++) enc |= (uint64_t)data[56 + k] << (8 * k);
        memcpy(fix, data, size);
        if (enc <= size - 128) {
            c = moe_crc32c(moe_crc32c(0, fix, 124), fix + 128, (size_t)enc);
            for (int k = 0; k < 4; k++) fix[124 + k] = (uint8_t)(c >> (8 * k));
            if ((f = fopen(path, "wb"))) {
                fwrite(fix, 1, size, f);
                fclose(f);
                exercise(path);
            }
        }
        free(fix);
    }
    remove(path);
    return 0;
}
