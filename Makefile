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

OPT ?= -O2
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

.PHONY: all lib check sanitize clean install deps bench

all: lib $(if $(TOOL_SRC),$(BUILD)/moe) $(TEST_BIN)

lib: $(BUILD)/libmoe.a $(BUILD)/libmoe.so

$(BUILD)/obj/%.o: src/%.c include/moe.h src/moe_impl.h
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

$(BUILD)/tests/%: tests/%.c tests/check.h $(BUILD)/libmoe.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests -o $@ $< $(BUILD)/libmoe.a $(LDLIBS_ALL)

check: all
	BUILD=$(BUILD) sh tests/run.sh

sanitize:
	$(MAKE) BUILD=build-san OPT=-O1 SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" check

deps:
	sh tools/setup.sh

clean:
	rm -rf $(BUILD) build-san
