# moe -- build the library (static + shared), the command-line tool and the tests.
#
#   make            library, build/moe, test programs
#   make check      the test suite (ends with "N passed, N failed")
#   make sanitize   the test suite under AddressSanitizer + UBSan (build-san/)
#   make install    PREFIX=/usr/local DESTDIR=
#
# Dependencies: OpenBLAS (OpenMP variant, Debian libopenblas-openmp-dev) for
# BLAS/LAPACK, OpenMP for threads. `make deps` installs them on Debian.

CC ?= cc
BUILD ?= build
PREFIX ?= /usr/local
DESTDIR ?=

BLAS_DIR ?= /usr/lib/x86_64-linux-gnu/openblas-openmp
BLAS_INC ?= /usr/include/x86_64-linux-gnu/openblas-openmp
BLAS_LIBS ?= -L$(BLAS_DIR) -Wl,-rpath,$(BLAS_DIR) -lopenblas

# clang must use GCC's OpenMP runtime, the one OpenBLAS is built against.
ifneq (,$(findstring clang,$(shell $(CC) --version 2>/dev/null | head -1)))
OMP_FLAG ?= -fopenmp=libgomp
else
OMP_FLAG ?= -fopenmp
endif

OPT ?= -O3
SAN ?=
CFLAGS ?= $(OPT) -g
ALL_CFLAGS = -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror -fPIC $(OMP_FLAG) \
	-Iinclude -Isrc -I$(BLAS_INC) $(SAN) $(CFLAGS)
LDLIBS_ALL = $(BLAS_LIBS) $(OMP_FLAG) $(SAN) -lm $(LDLIBS)

SONAME_MAJOR = 0
VERSION = 0.1.0

LIB_SRC := $(wildcard src/*.c)
LIB_OBJ := $(LIB_SRC:src/%.c=$(BUILD)/obj/%.o)
TOOL_SRC := $(wildcard tools/*.c)
TOOL_OBJ := $(TOOL_SRC:tools/%.c=$(BUILD)/obj/tools/%.o)
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)

.PHONY: all lib check sanitize clean install uninstall deps bench bench-sparse bench-sparse-em bench-stream fuzz examples

all: lib $(if $(TOOL_SRC),$(BUILD)/moe $(BUILD)/moe-mpi) $(TEST_BIN)

lib: $(BUILD)/libmoe.a $(BUILD)/libmoe.so

$(BUILD)/obj/%.o: src/%.c include/moe.h $(wildcard src/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/obj/tools/%.o: tools/%.c include/moe.h $(wildcard tools/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itools -c $< -o $@

$(BUILD)/libmoe.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libmoe.so: $(LIB_OBJ)
	$(CC) -shared -Wl,-soname,libmoe.so.$(SONAME_MAJOR) -o $(BUILD)/libmoe.so.$(VERSION) $^ $(LDLIBS_ALL)
	ln -sf libmoe.so.$(VERSION) $(BUILD)/libmoe.so.$(SONAME_MAJOR)
	ln -sf libmoe.so.$(VERSION) $@

$(BUILD)/moe: $(TOOL_OBJ) $(BUILD)/libmoe.a
	$(CC) -o $@ $(TOOL_OBJ) $(BUILD)/libmoe.a $(LDLIBS_ALL)

# build/moe-mpi: `moe train` over Open MPI processes. The compile and link
# flags come from Open MPI's wrapper (Debian libopenmpi-dev); the compiler
# stays $(CC), so clang and the sanitizers build it too.
MPI_CFLAGS ?= $(shell mpicc --showme:compile 2>/dev/null)
MPI_LIBS ?= $(shell mpicc --showme:link 2>/dev/null)
MPI_TOOL_OBJ := $(filter-out $(BUILD)/obj/tools/moe.o,$(TOOL_OBJ)) $(BUILD)/obj/tools/mpi/moe_mpi.o

$(BUILD)/obj/tools/mpi/moe_mpi.o: tools/mpi/moe_mpi.c tools/mpi/mpi_sum.h include/moe.h $(wildcard tools/*.h)
	@mkdir -p $(dir $@)
	@test -n "$(MPI_LIBS)" || { echo "moe-mpi needs Open MPI: sh tools/setup.sh" >&2; exit 1; }
	$(CC) $(ALL_CFLAGS) -Itools $(MPI_CFLAGS) -c $< -o $@

$(BUILD)/moe-mpi: $(MPI_TOOL_OBJ) $(BUILD)/libmoe.a
	$(CC) -o $@ $(MPI_TOOL_OBJ) $(BUILD)/libmoe.a $(MPI_LIBS) $(LDLIBS_ALL)

$(BUILD)/tests/%: tests/%.c tests/check.h $(BUILD)/libmoe.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests -o $@ $< $(BUILD)/libmoe.a $(LDLIBS_ALL)

check: all
	BUILD=$(BUILD) sh tests/run.sh

sanitize:
	MOE_TEST_SMALL=1 $(MAKE) BUILD=build-san OPT=-O1 SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" check

deps:
	sh tools/setup.sh

clean:
	rm -rf $(BUILD) build-san

# ---- install, examples, fuzzing (CLI/packaging) ------------------------------
#
#   make install   PREFIX=/usr/local DESTDIR=   bin/moe, lib/libmoe.{a,so*}, include/moe.h,
#                  lib/pkgconfig/moe.pc, share/man/man1/moe.1
#   make examples  build/examples/* from examples/*.c (against the build tree)
#   make fuzz      every fuzz/fuzz_*.c with clang + libFuzzer, FUZZ_SECONDS each

BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
MANDIR ?= $(PREFIX)/share/man
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
INSTALL ?= install

# libdir and includedir are written relative to ${prefix} when they lie
# under it, so `pkg-config --define-variable=prefix=...` relocates the file.
PC_LIBDIR = $(patsubst $(PREFIX)/%,$${prefix}/%,$(LIBDIR))
PC_INCLUDEDIR = $(patsubst $(PREFIX)/%,$${prefix}/%,$(INCLUDEDIR))

$(BUILD)/moe.pc: moe.pc.in Makefile
	@mkdir -p $(dir $@)
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(PC_LIBDIR)|g' \
	    -e 's|@INCLUDEDIR@|$(PC_INCLUDEDIR)|g' -e 's|@VERSION@|$(VERSION)|g' \
	    -e 's|@LIBS_PRIVATE@|$(BLAS_LIBS) -lgomp -lm|g' moe.pc.in > $@

install: lib $(BUILD)/moe $(BUILD)/moe.pc
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) \
	    $(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(MANDIR)/man1
	$(INSTALL) -m 755 $(BUILD)/moe $(DESTDIR)$(BINDIR)/moe
	$(INSTALL) -m 644 $(BUILD)/libmoe.a $(DESTDIR)$(LIBDIR)/libmoe.a
	$(INSTALL) -m 755 $(BUILD)/libmoe.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libmoe.so.$(VERSION)
	ln -sf libmoe.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libmoe.so.$(SONAME_MAJOR)
	ln -sf libmoe.so.$(SONAME_MAJOR) $(DESTDIR)$(LIBDIR)/libmoe.so
	$(INSTALL) -m 644 include/moe.h $(DESTDIR)$(INCLUDEDIR)/moe.h
	$(INSTALL) -m 644 $(BUILD)/moe.pc $(DESTDIR)$(PKGCONFIGDIR)/moe.pc
	$(INSTALL) -m 644 docs/moe.1 $(DESTDIR)$(MANDIR)/man1/moe.1
	@if [ -z "$(DESTDIR)" ] && command -v ldconfig >/dev/null 2>&1; then ldconfig || true; fi

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/moe $(DESTDIR)$(LIBDIR)/libmoe.a \
	    $(DESTDIR)$(LIBDIR)/libmoe.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libmoe.so.$(SONAME_MAJOR) \
	    $(DESTDIR)$(LIBDIR)/libmoe.so $(DESTDIR)$(INCLUDEDIR)/moe.h \
	    $(DESTDIR)$(PKGCONFIGDIR)/moe.pc $(DESTDIR)$(MANDIR)/man1/moe.1

EXAMPLE_SRC := $(wildcard examples/*.c)
EXAMPLE_BIN := $(EXAMPLE_SRC:examples/%.c=$(BUILD)/examples/%)

examples: $(EXAMPLE_BIN)

$(BUILD)/examples/%: examples/%.c include/moe.h $(BUILD)/libmoe.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libmoe.a $(LDLIBS_ALL)

FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_SRC := $(wildcard fuzz/fuzz_*.c)
FUZZ_BIN := $(FUZZ_SRC:fuzz/%.c=$(BUILD)/fuzz/%)
FUZZ_CFLAGS = -std=c11 -D_POSIX_C_SOURCE=200809L -g -O1 -fsanitize=fuzzer,address,undefined \
	-fno-sanitize-recover=undefined -fopenmp=libgomp -Iinclude -Isrc -I$(BLAS_INC)

$(BUILD)/fuzz/%: fuzz/%.c $(LIB_SRC) include/moe.h src/moe_impl.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(LIB_SRC) $(BLAS_LIBS) -lm

# Each target: first replay its regression inputs (tests/data/NAME_regressions/),
# then fuzz for FUZZ_SECONDS from its seed corpora (fuzz/corpus_NAME/ and
# tests/data/NAME/ when present), writing new inputs to a scratch corpus so
# the checked-in seeds stay untouched. A crash stops make; the crashing input
# is in $(BUILD)/fuzz/crashes/ -- copy it into tests/data/NAME_regressions/.
fuzz: $(FUZZ_BIN)
	@set -e; for t in $(FUZZ_BIN); do \
	    name=$${t##*/}; short=$${name#fuzz_}; \
	    work=$(BUILD)/fuzz/work_$$short; mkdir -p $$work $(BUILD)/fuzz/crashes; \
	    reg=tests/data/$${short}_regressions; \
	    if [ -d $$reg ] && [ -n "$$(ls -A $$reg)" ]; then \
	        echo "== $$name: replaying $$reg"; $$t $$reg/*; fi; \
	    seeds=""; for d in fuzz/corpus_$$short tests/data/$$short; do \
	        if [ -d $$d ]; then seeds="$$seeds $$d"; fi; done; \
	    echo "== $$name: fuzzing $(FUZZ_SECONDS)s ($$seeds )"; \
	    $$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	        -artifact_prefix=$(BUILD)/fuzz/crashes/$$short- $$work $$seeds; \
	done

# ---- benchmarks -------------------------------------------------------------
#   make bench     EM speed against the machine's measured bound (bench/bench.c)

$(BUILD)/bench: bench/bench.c include/moe.h $(BUILD)/libmoe.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libmoe.a $(LDLIBS_ALL)

bench: $(BUILD)/bench
	$(BUILD)/bench

# Sparse EM (k = 2) against dense EM over 64 experts, per iteration, at
# D = 10, 32 and 50 inputs (100,000 rows).
$(BUILD)/bench_sparse_em: bench/bench_sparse_em.c bench/bench_util.h include/moe.h $(BUILD)/libmoe.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libmoe.a $(LDLIBS_ALL)

# EM passes over a 10,000,000 x 20 .moed file streamed from disk, 1 and 2
# Open MPI processes, against reading the file (bench/bench_stream.c). The
# 1.7 GB file is generated once into STREAM_FILE.
STREAM_FILE ?= $(BUILD)/bench-10m-20.moed
MPIRUN ?= mpirun --oversubscribe --bind-to none $(if $(filter 0,$(shell id -u)),--allow-run-as-root)

$(BUILD)/bench_stream: bench/bench_stream.c bench/bench_util.h tools/mpi/mpi_sum.h include/moe.h $(BUILD)/libmoe.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(MPI_CFLAGS) -o $@ $< $(BUILD)/libmoe.a $(MPI_LIBS) $(LDLIBS_ALL)

bench-stream: $(BUILD)/bench_stream
	test -f $(STREAM_FILE) || $(BUILD)/bench_stream --generate $(STREAM_FILE) 10000000 20
	OMP_NUM_THREADS=1 $(MPIRUN) -np 1 $(BUILD)/bench_stream $(STREAM_FILE)
	OMP_NUM_THREADS=2 $(MPIRUN) -np 1 $(BUILD)/bench_stream $(STREAM_FILE)
	OMP_NUM_THREADS=1 $(MPIRUN) -np 2 $(BUILD)/bench_stream $(STREAM_FILE)

bench-sparse-em: $(BUILD)/bench_sparse_em
	for d in 10 32 50; do $(BUILD)/bench_sparse_em 100000 $$d 64 2 || exit 1; done

# bench-sparse: prediction with 256 experts and a top-2 gate against dense
# prediction of the same experts (bench/bench_sparse.c; well under a minute).
$(BUILD)/bench_sparse: bench/bench_sparse.c include/moe.h $(BUILD)/libmoe.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libmoe.a $(LDLIBS_ALL)

bench-sparse: $(BUILD)/bench_sparse
	$(BUILD)/bench_sparse
