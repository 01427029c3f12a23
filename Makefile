# upcycle - Mixture-of-Experts trainer and expert-upcycling tool.
#   make            build ./upcycle (prints which features it found)
#   make demo       install missing Debian packages, build, tokenize the bundled corpus, train, sample
#   make test       install missing packages, build, run the whole test suite
#   make PORTABLE=1 build without -march=native (attention kernels for SSE2, AVX2 and AVX-512, the widest run)
#   make CUDA=0     build without the CUDA backend (default: built when nvcc is on PATH)
#   make test-cuda  build, run the GPU tests (GPU vs CPU parity, bf16) and compute-sanitizer
CC      ?= cc
MULTIARCH := $(shell $(CC) -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
OPT     := -O3 $(if $(PORTABLE),,-march=native)
CFLAGS  ?= $(OPT) -g
CFLAGS  += -std=c11 -fopenmp -fno-trapping-math -fno-math-errno -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -Wno-format-truncation -D_GNU_SOURCE -Isrc
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
# a library found by its header: $(call header_lib,NAME,HEADER,LDFLAG,VAR,PACKAGE) links LDFLAG
# when /usr/include/HEADER exists and sets VAR_STATUS; else adds PACKAGE to MISSING
define header_lib
ifneq ($$(wildcard /usr/include/$(2)),)
  LDLIBS += $(3)
  $(4)_STATUS := $(1) ✓
else
  $(4)_STATUS := $(1) ✗ (run: scripts/deps.sh)
  MISSING += $(5)
endif
endef
$(eval $(call header_lib,cJSON,cjson/cJSON.h,-lcjson,CJSON,cjson))
# Hugging Face tokenizers: PCRE2 (the pre-tokenizers' regexes) and utf8proc (normalizers)
$(eval $(call header_lib,PCRE2,pcre2.h,-lpcre2-8,PCRE2,pcre2))
$(eval $(call header_lib,utf8proc,utf8proc.h,-lutf8proc,UTF8PROC,utf8proc))

# CUDA: nvcc on PATH (or NVCC=...) unless CUDA=0. Only the main build (build/, ./upcycle,
# build/test_runner) gets the backend: CUDA_DEFS and CUDA_LDLIBS stay out of CFLAGS and LDLIBS,
# which other builds (tests/hardening.mk) reuse.
NVCC ?= $(shell which nvcc 2>/dev/null)
CU_SRC :=
CUDA_DEFS :=
CUDA_LDLIBS :=
CUDA_ON :=
CUDA_PLUGIN :=
ifeq ($(CUDA),0)
  CUDA_STATUS := CUDA ✗ (CUDA=0)
else ifeq ($(NVCC),)
  CUDA_STATUS := CUDA ✗ (no nvcc on PATH)
else
  # nvcc may be a wrapper script (e.g. /usr/local/bin/nvcc): ask nvcc itself where it lives
  CUDA_HOME    := $(shell $(NVCC) -dryrun -x cu -c /dev/null -o /dev/null 2>&1 | sed -n 's/^\#\$$ TOP=//p' | head -n 1)
  CUDA_HOME    := $(abspath $(if $(CUDA_HOME),$(CUDA_HOME),$(dir $(realpath $(NVCC)))..))
  CUDA_LIBDIR  := $(firstword $(wildcard $(CUDA_HOME)/targets/$(shell uname -m)-linux/lib/libcublas.so $(CUDA_HOME)/lib64/libcublas.so $(CUDA_HOME)/lib/libcublas.so))
  CUDA_LIBDIR  := $(patsubst %/,%,$(dir $(CUDA_LIBDIR)))
  ifeq ($(CUDA_LIBDIR),)
    CUDA_STATUS := CUDA ✗ (nvcc found, but no libcublas under $(CUDA_HOME))
  else
    CUDA_ON := 1
  endif
endif
ifeq ($(CUDA_ON),1)
  NVCC_VERSION := $(shell $(NVCC) --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\).*/\1/p')
  # sm_90a (H100/H200) and sm_80 (A100) code, plus compute_80 PTX that newer GPUs compile at load
  CUDA_GENCODE ?= -gencode arch=compute_90a,code=sm_90a -gencode arch=compute_80,code=[sm_80,compute_80]
  NVCCFLAGS    ?= -O3 -std=c++17 $(CUDA_GENCODE) -Xcompiler -fopenmp
  NVCCFLAGS    += -DUPCYCLE_CUDA -Isrc -Xcompiler -fPIC
  CU_SRC       := $(sort $(wildcard src/cuda/*.cu))
  CUDA_DEFS    := -DUPCYCLE_CUDA
  # The backend is a plugin (build/libupcycle_cuda.so) that the binaries dlopen only when a GPU
  # is asked for: cuBLAS costs ~0.4 s and ~200 MB of resident memory at load, on every command.
  # The plugin resolves our own symbols (up_error, ...) against the executable (-rdynamic).
  CUDA_PLUGIN  := build/libupcycle_cuda.so
  CUDA_LDLIBS  := -rdynamic -ldl
  CUDA_STATUS  := CUDA ✓ (nvcc $(NVCC_VERSION), sm_90a + sm_80)
endif

# MPI (OpenMPI: openmpi-bin, libopenmpi-dev) for data-parallel training across processes and
# nodes, when mpicc is on PATH unless MPI=0. Like CUDA, only the main build gets it.
MPICC ?= $(shell which mpicc 2>/dev/null)
MPI_DEFS :=
MPI_LDLIBS :=
ifeq ($(MPI),0)
  MPI_STATUS := MPI ✗ (MPI=0)
else ifeq ($(MPICC),)
  MPI_STATUS := MPI ✗ (no mpicc; install openmpi-bin libopenmpi-dev)
else
  MPI_DEFS   := -DUPCYCLE_MPI $(shell $(MPICC) --showme:compile 2>/dev/null)
  MPI_LDLIBS := $(shell $(MPICC) --showme:link 2>/dev/null)
  MPI_STATUS := MPI ✓ ($(shell $(MPICC) --showme:version 2>/dev/null | sed -n 's/.*Open MPI \([0-9.]*\).*/OpenMPI \1/p'))
endif

LIB_SRC  := $(sort $(wildcard src/*.c src/*/*.c))
LIB_SRC  := $(filter-out src/cli/%,$(LIB_SRC))
CLI_SRC  := $(sort $(wildcard src/cli/*.c))
TEST_SRC := $(sort $(wildcard tests/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=build/%.o)
# x86-64 compiles the attention kernels at more widths than the build's own (src/cpu/attention.c
# runs the widest the CPU has). The portable build adds AVX2 + FMA and AVX-512; a native build
# adds the narrower ones (SSE2, and AVX2 under AVX-512), so that the unit tests check every width
# on any machine. ATTENTION_DEFS tells attention.c which objects exist.
ifneq ($(filter x86_64%,$(MULTIARCH)),)
ifneq ($(PORTABLE),)
  ATTENTION_WIDTHS := avx2 avx512
else
  ATTENTION_WIDTHS := sse2 $(if $(shell $(CC) -march=native -dM -E - </dev/null 2>/dev/null | grep __AVX512F__),avx2,)
endif
endif
ATTENTION_FLAGS_sse2   := -mno-avx
ATTENTION_FLAGS_avx2   := $(if $(PORTABLE),-mavx2 -mfma,-mno-avx512f)
ATTENTION_FLAGS_avx512 := -mavx512f -mfma
ATTENTION_DEFS := $(foreach w,$(ATTENTION_WIDTHS),-DATTENTION_HAS_$(w))
LIB_OBJ += $(ATTENTION_WIDTHS:%=build/src/cpu/attention-%.o)
CU_OBJ   := $(CU_SRC:%.cu=build/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=build/%.o)
TEST_OBJ := $(TEST_SRC:%.c=build/%.o)
DEPS     := $(LIB_OBJ:.o=.d) $(CU_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TEST_OBJ:.o=.d)

# sources that test UPCYCLE_CUDA rebuild when the CUDA setting changes (build/cuda-setting)
CUDA_SETTING := $(if $(CU_SRC),cuda,cpu)$(if $(MPI_DEFS),-mpi,)
$(shell mkdir -p build && [ "$$(cat build/cuda-setting 2>/dev/null)" = "$(CUDA_SETTING)" ] || echo "$(CUDA_SETTING)" >build/cuda-setting)
CUDA_USERS := $(shell grep -lE 'UPCYCLE_(CUDA|MPI)' $(LIB_SRC) $(CLI_SRC) $(TEST_SRC) 2>/dev/null)

.PHONY: all features deps test-deps demo test test-cuda clean
all: features upcycle $(CUDA_PLUGIN)

$(CUDA_USERS:%.c=build/%.o): build/cuda-setting

# every object rebuilds when the compiler flags change (build/cflags holds the last ones)
$(shell [ "$$(cat build/cflags 2>/dev/null)" = "$(CC) $(CFLAGS)" ] || echo "$(CC) $(CFLAGS)" >build/cflags)
$(LIB_OBJ) $(CLI_OBJ) $(TEST_OBJ): build/cflags

features:
	@echo "upcycle build: $(BLAS_STATUS), $(CJSON_STATUS), $(PCRE2_STATUS), $(UTF8PROC_STATUS), OpenMP ✓, $(MPI_STATUS), $(CUDA_STATUS)"
ifneq ($(MISSING),)
	@echo "missing: $(MISSING); install with: scripts/deps.sh  (or: make demo / make test, which install them)"
	@false
endif

build/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CUDA_DEFS) $(MPI_DEFS) -MMD -MP -c $< -o $@

build/src/cpu/attention.o: CFLAGS += $(ATTENTION_DEFS)
$(ATTENTION_WIDTHS:%=build/src/cpu/attention-%.o): build/src/cpu/attention-%.o: src/cpu/attention.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(ATTENTION_FLAGS_$*) -DATTENTION_VARIANT=$* -MMD -MP -c $< -o $@

build/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -MMD -MP -c $< -o $@

build/libupcycle.a: $(LIB_OBJ)
	rm -f $@
	ar rcs $@ $^

build/libupcycle_cuda.so: $(CU_OBJ)
	$(CC) -shared -o $@ $^ -L$(CUDA_LIBDIR) -Wl,-rpath,$(CUDA_LIBDIR) -lcublas -lcublasLt -lcudart -lstdc++ -lm -fopenmp

upcycle: $(CLI_OBJ) build/libupcycle.a
	$(CC) $(CFLAGS) -o $@ $(CLI_OBJ) build/libupcycle.a $(LDLIBS) $(CUDA_LDLIBS) $(MPI_LDLIBS)

build/test_runner: $(TEST_OBJ) build/libupcycle.a
	$(CC) $(CFLAGS) -Itests -o $@ $(TEST_OBJ) build/libupcycle.a $(LDLIBS) $(CUDA_LDLIBS) $(MPI_LDLIBS)

deps:
	@scripts/deps.sh build

# the Debian packages, then the pinned PyPI environment of the transformers suites (scripts/pyenv.sh;
# without PyPI those suites print skipped with the reason)
test-deps:
	@scripts/deps.sh test
	@scripts/pyenv.sh ensure || echo "pyenv: the suites that need PyPI's transformers will print skipped"

demo: deps
	@$(MAKE) --no-print-directory all
	@scripts/demo.sh

test: test-deps
	@$(MAKE) --no-print-directory all build/test_runner
	@tests/run_all.sh

# on a GPU machine: GPU vs CPU parity, bf16 vs fp32, compute-sanitizer memcheck (tests/run_cuda.sh)
test-cuda: test-deps
	@$(MAKE) --no-print-directory all build/test_runner
	@tests/run_cuda.sh

clean:
	rm -rf build upcycle

-include $(DEPS)

# make fuzz, fuzz-smoke, test-sanitize, test-valgrind (see the file)
include tests/hardening.mk
