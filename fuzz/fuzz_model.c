/*
 * fuzz_model.c -- libFuzzer target for the model file reader (src/model_io.c).
 *
 * Build and run (from the repository root):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -fopenmp=libgomp \
 *       -Iinclude -Isrc -I/usr/include/x86_64-linux-gnu/openblas-openmp \
 *       fuzz/fuzz_model.c src/[a-z]*.c -L/usr/lib/x86_64-linux-gnu/openblas-openmp \
 *       -lopenblas -lm -o fuzz_model
 *   ./fuzz_model -max_total_time=180 fuzz/corpus_model
 * A crashing input goes to tests/data/model_regressions/, where
 * tests/test_model_io.c loads it.
 *
 * Every input is loaded twice: as it is (the magic, version, size and
 * checksum checks), and with its size field and checksum repaired, so that
 * mutations get past the checksum into the parser and the validator.
 * Whatever loads must save, load again, and save to the same bytes.
 */
#include "moe_impl.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* CRC-32C, bit by bit (docs/format.md section 6). */
static uint32_t crc32c(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int b = 0; b < 8; b++) c = (c & 1u) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
    }
    return ~c;
}

static void put_le(uint8_t *p, uint64_t v, int n) {
    for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void check_roundtrip(const uint8_t *data, size_t size) {
    moe_model *m = NULL, *m2 = NULL;
    void *b1 = NULL, *b2 = NULL;
    size_t n1 = 0, n2 = 0;
    moe_error err;
    moe_status st = moe_model_load_buffer(data, size, "fuzz", &m, &err);
    if (st != MOE_STATUS_OK) {
        if (m) __builtin_trap();          /* a failure returns no model */
        if (!err.message[0]) __builtin_trap(); /* ... and says why */
        return;
    }
    if (!m) __builtin_trap();
    if (moe_model_save_buffer(m, &b1, &n1, &err) != MOE_STATUS_OK) __builtin_trap();
    if (moe_model_load_buffer(b1, n1, "fuzz-resaved", &m2, &err) != MOE_STATUS_OK)
        __builtin_trap();
    if (moe_model_save_buffer(m2, &b2, &n2, &err) != MOE_STATUS_OK) __builtin_trap();
    if (n1 != n2 || memcmp(b1, b2, n1) != 0) __builtin_trap();
    free(b1);
    free(b2);
    moe_model_free(m);
    moe_model_free(m2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    check_roundtrip(data, size);
    if (size >= 44) {
        uint8_t *fixed = malloc(size);
        if (!fixed) return 0;
        memcpy(fixed, data, size);
        put_le(fixed + 16, size, 8);
        put_le(fixed + size - 4, crc32c(fixed, size - 4), 4);
        check_roundtrip(fixed, size);
        free(fixed);
    }
    return 0;
}
