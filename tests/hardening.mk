# tests/hardening.mk - fuzzing, sanitizer and valgrind builds (included by the Makefile).
#   make fuzz            build the libFuzzer harnesses tests/fuzz/fuzz_*.c with clang into build-fuzz/
#   make fuzz-smoke      run each harness FUZZ_TIME seconds (default 20) from its seed corpus
#                        tests/fuzz/corpus/<name>/, then replay tests/fuzz/regressions/<name>/
#   make test-sanitize   build upcycle and the unit tests with -fsanitize=address,undefined into
#                        build-san/ and run tests/run_all.sh on them (PyTorch parity tests and the
#                        reference self-test skipped, and the Hugging Face tokenizer parity on its
#                        varied and long-run texts only: the rest runs in `make test`)
#   make test-valgrind   tests/valgrind.sh: a 3-step training run under valgrind --leak-check=full
#                        (build-vg/upcycle: -O1, no -march=native, which valgrind may not decode)
# Each variant has its own build directory, objects and dependency files; none touches build/.

HARDENING_LIB_SRC  := $(filter %.c,$(LIB_SRC))
HARDENING_CLI_SRC  := $(filter %.c,$(CLI_SRC))
HARDENING_TEST_SRC := $(filter %.c,$(TEST_SRC))
# the main build's flags without its optimization level and -march (each variant sets its own)
HARDENING_CFLAGS   := $(filter-out -O% -march=% -g,$(CFLAGS))

# $(call hardening_variant,DIR,COMPILER,FLAGS,LDLIBS): DIR/libupcycle.a, DIR/upcycle, DIR/test_runner
define hardening_variant
$(1)/%.o: %.c
	@mkdir -p $$(dir $$@)
	$(2) $(3) -MMD -MP -c $$< -o $$@
$(1)/libupcycle.a: $(HARDENING_LIB_SRC:%.c=$(1)/%.o)
	rm -f $$@
	ar rcs $$@ $$^
$(1)/upcycle: $(HARDENING_CLI_SRC:%.c=$(1)/%.o) $(1)/libupcycle.a
	$(2) $(3) -o $$@ $(HARDENING_CLI_SRC:%.c=$(1)/%.o) $(1)/libupcycle.a $(4)
$(1)/test_runner: $(HARDENING_TEST_SRC:%.c=$(1)/%.o) $(1)/libupcycle.a
	$(2) $(3) -Itests -o $$@ $(HARDENING_TEST_SRC:%.c=$(1)/%.o) $(1)/libupcycle.a $(4)
-include $(patsubst %.c,$(1)/%.d,$(HARDENING_LIB_SRC) $(HARDENING_CLI_SRC) $(HARDENING_TEST_SRC))
endef

# ---- sanitizers: ASan + UBSan (any undefined behaviour aborts), gcc and libgomp like the main build
SAN_CC     ?= $(CC)
SAN_CFLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all $(HARDENING_CFLAGS)
# with MPI when the main build has it, so that the data and expert parallel paths run sanitized too
$(eval $(call hardening_variant,build-san,$(SAN_CC),$(SAN_CFLAGS) $(MPI_DEFS),$(LDLIBS) $(MPI_LDLIBS)))
SAN_ENV := ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1 \
           UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
           UPCYCLE_TEST_RUNNER=build-san/test_runner UPCYCLE_BIN=build-san/upcycle \
           UPCYCLE_TEST_SKIP=parity_torch UPCYCLE_SKIP_SUITES=torch-reference-selftest UPCYCLE_HF_TEXTS="varied runs"

# ---- valgrind: a plain -O1 build without -march=native
VG_CFLAGS := -O1 -g $(HARDENING_CFLAGS)
$(eval $(call hardening_variant,build-vg,$(CC),$(VG_CFLAGS),$(LDLIBS)))

# ---- libFuzzer: clang; OpenMP pragmas off (-fopenmp=libgomp only links the runtime OpenBLAS uses)
FUZZ_CC      ?= clang
FUZZ_NAMES   := $(sort $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c)))
FUZZ_BINS    := $(FUZZ_NAMES:%=build-fuzz/fuzz_%)
FUZZ_TIME    ?= 20
FUZZ_CFLAGS  := -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all \
                -fopenmp=libgomp $(filter-out -fopenmp,$(HARDENING_CFLAGS)) -Wno-unknown-warning-option
FUZZ_LDLIBS  := $(filter-out -fopenmp,$(LDLIBS)) -fopenmp=libgomp
$(eval $(call hardening_variant,build-fuzz,$(FUZZ_CC),$(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link,$(FUZZ_LDLIBS)))
build-fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_common.h build-fuzz/libupcycle.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -Itests/fuzz -o $@ $< build-fuzz/libupcycle.a $(FUZZ_LDLIBS)

.PHONY: hardening-deps fuzz fuzz-smoke test-sanitize test-valgrind
hardening-deps:
	@scripts/deps.sh hardening

fuzz: hardening-deps
	@$(MAKE) --no-print-directory $(FUZZ_BINS)

fuzz-smoke: fuzz
	@tests/fuzz/smoke.sh $(FUZZ_TIME) $(FUZZ_NAMES)

test-sanitize: test-deps
	@$(MAKE) --no-print-directory build-san/upcycle build-san/test_runner
	@$(SAN_ENV) tests/run_all.sh

test-valgrind: hardening-deps
	@$(MAKE) --no-print-directory build-vg/upcycle
	@UPCYCLE_BIN=build-vg/upcycle tests/valgrind.sh

clean: hardening-clean
.PHONY: hardening-clean
hardening-clean:
	rm -rf build-san build-vg build-fuzz
