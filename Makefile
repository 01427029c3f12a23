# upcycle - Mixture-of-Experts trainer and expert-upcycling tool.
#   make            build ./upcycle (prints which features it found)
#   make demo       install missing Debian packages, build, tokenize the bundled corpus, train, sample
#   make test       install missing packages, build, run the whole test suite
#   make PORTABLE=1 build without -march=native
CC      ?= cc
MULTIARCH := $(shell $(CC) -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
OPT     := -O3 $(if $(PORTABLE),,-march=native)
CFLAGS  ?= $(OPT) -g
CFLAGS  += -std=c11 -fopenmp -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -Wno-format-truncation -D_GNU_SOURCE -Isrc
LDLIBS  := -fopenmp -lm

# ---- feature detection ----
OPENBLAS_OMP := /usr/lib/$(MULTIARCH)/openblas-openmp
ifneq ($(wildcard $(OPENBLAS_OMP)/libopenblas.so),)
  CFLAGS += -I/usr/include/$(MULTIARCH)/openblas-openmp
  LDLIBS += -L$(OPENBLAS_OMP) -Wl,-rpath,$(OPENBLAS_OMP) -lopenblas
  BLAS_STATUS := OpenBLAS (OpenMP) ✓
else ifneq ($(wildcard /usr/lib/$(MULTIARCH)/libopenblas.so),)
  LDLIBS += -lopenblas
  BLAS_STATUS := OpenBLAS ✓ (pthreads build; libopenblas-openmp-dev avoids two thread pools)
else
  BLAS_STATUS := OpenBLAS ✗ (run: scripts/deps.sh)
  MISSING += openblas
endif
ifneq ($(wildcard /usr/include/cjson/cJSON.h),)
  LDLIBS += -lcjson
  CJSON_STATUS := cJSON ✓
else
  CJSON_STATUS := cJSON ✗ (run: scripts/deps.sh)
  MISSING += cjson
endif

LIB_SRC  := $(sort $(wildcard src/*.c src/*/*.c))
LIB_SRC  := $(filter-out src/cli/%,$(LIB_SRC))
CLI_SRC  := $(sort $(wildcard src/cli/*.c))
TEST_SRC := $(sort $(wildcard tests/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=build/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=build/%.o)
TEST_OBJ := $(TEST_SRC:%.c=build/%.o)
DEPS     := $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TEST_OBJ:.o=.d)

.PHONY: all features deps test-deps demo test clean
all: features upcycle

features:
	@echo "upcycle build: $(BLAS_STATUS), $(CJSON_STATUS), OpenMP ✓, MPI ✗ (not yet supported), CUDA ✗ (not yet supported)"
ifneq ($(MISSING),)
	@echo "missing: $(MISSING); install with: scripts/deps.sh  (or: make demo / make test, which install them)"
	@false
endif

build/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

build/libupcycle.a: $(LIB_OBJ)
	ar rcs $@ $^

upcycle: $(CLI_OBJ) build/libupcycle.a
	$(CC) $(CFLAGS) -o $@ $(CLI_OBJ) build/libupcycle.a $(LDLIBS)

build/test_runner: $(TEST_OBJ) build/libupcycle.a
	$(CC) $(CFLAGS) -Itests -o $@ $(TEST_OBJ) build/libupcycle.a $(LDLIBS)

deps:
	@scripts/deps.sh build

test-deps:
	@scripts/deps.sh test

demo: deps
	@$(MAKE) --no-print-directory all
	@scripts/demo.sh

test: test-deps
	@$(MAKE) --no-print-directory all build/test_runner
	@tests/run_all.sh

clean:
	rm -rf build upcycle

-include $(DEPS)
