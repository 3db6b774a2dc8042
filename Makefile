# modsquad build. `make` builds ./modsquad; `make test` builds and runs every test.
# Variables: CUDA=0 (skip the CUDA backend), MPI=0 (build without MPI), SIMT=0 (skip tests/simt), BUILD=dir (object
#            directory, default build), SETUP=0 (do not run scripts/setup.sh), SANITIZE=1 (ASan +
#            UBSan), V=1 (verbose), FUZZ=0 (`make test` skips fuzzing), FUZZ_SECONDS=n (per
#            harness, default 30).

# A sanitized build keeps its objects and its program apart (build/san, build/san/modsquad), so
# it never mixes with the normal one.
ifeq ($(SANITIZE),1)
BUILD ?= build/san
endif
BUILD ?= build
CUDA ?= 1
SETUP ?= 1
# `make` alone builds the program: the stamp rules below would otherwise be the first target.
.DEFAULT_GOAL := all

# ---- system packages: installed by the project's own script, never by hand -------------------
ifneq ($(SETUP),0)
ifeq ($(filter clean help,$(MAKECMDGOALS)),)
SETUP_RC := $(shell bash scripts/setup.sh >&2; echo $$?)
ifneq ($(SETUP_RC),0)
$(error scripts/setup.sh failed (exit $(SETUP_RC)); see its message above)
endif
endif
endif

CC ?= gcc
ifeq ($(CC),cc)
CC := gcc
endif

PKGS := openblas yaml-0.1 libpng matio
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

OPT ?= -O3 -march=native
CFLAGS := -std=gnu11 $(OPT) -g -fopenmp -Wall -Wextra -Werror -MMD -MP $(PKG_CFLAGS)
LDLIBS := $(PKG_LIBS) -ljpeg -lz -lm -lpthread
LDFLAGS := -fopenmp

ifeq ($(SANITIZE),1)
CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

# ---- what this machine has (printed once, as llm.c does) --------------------------------------
define found
$(if $(1),✓ $(2),✗ $(2)$(if $(3), ($(3)),))
endef

HAVE_BLAS := $(shell pkg-config --exists openblas && echo yes)
HAVE_OMP := $(shell echo 'int main(void){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null 2>/dev/null && echo yes)
NVCC := $(shell command -v nvcc 2>/dev/null || (test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc))
CUDA_HOME ?= $(if $(NVCC),$(patsubst %/bin/nvcc,%,$(NVCC)),/usr/local/cuda)
HAVE_CUBLAS := $(wildcard $(CUDA_HOME)/include/cublas_v2.h)
HAVE_CUDNN := $(or $(wildcard $(CUDA_HOME)/include/cudnn.h),$(wildcard /usr/include/cudnn.h))
HAVE_NCCL := $(or $(wildcard $(CUDA_HOME)/include/nccl.h),$(wildcard /usr/include/nccl.h))
HAVE_MPI := $(shell command -v mpicc 2>/dev/null)
CUDA_SRCS := $(wildcard kernels/cuda/*.cu)

ifeq ($(filter clean help,$(MAKECMDGOALS)),)
$(info ---------------------------------------------)
$(info $(call found,$(HAVE_BLAS),OpenBLAS (cblas_sgemm),install libopenblas-openmp-dev))
$(info $(call found,$(HAVE_OMP),OpenMP))
$(info $(call found,$(NVCC),nvcc,CUDA toolkit not found))
$(info $(call found,$(HAVE_CUBLAS),cuBLAS))
$(info $(call found,$(HAVE_CUDNN),cuDNN))
$(info $(call found,$(HAVE_NCCL),NCCL))
$(info $(call found,$(HAVE_MPI),MPI (mpicc)))
ifeq ($(MPI),0)
$(info → data parallel: MPI off (MPI=0))
else ifeq ($(HAVE_MPI),)
$(info → data parallel: MPI off (no mpicc; install openmpi-bin libopenmpi-dev))
else
$(info → data parallel: MPI on)
endif
ifeq ($(CUDA),0)
$(info → CUDA backend: off (CUDA=0))
else ifeq ($(NVCC),)
$(info → CUDA backend: off (no nvcc))
else ifeq ($(CUDA_SRCS),)
$(info → CUDA backend: no kernels/cuda sources in this tree yet; CPU backend only)
else
$(info → CUDA backend: on)
endif
$(info ---------------------------------------------)
endif

ifeq ($(V),1)
Q :=
else
Q := @
endif

# ---- sources ----------------------------------------------------------------------------------
LIB_SRCS := $(wildcard kernels/*.c kernels/cpu/*.c model/*.c data/*.c)
CLI_SRCS := $(wildcard cli/*.c)
TEST_SRCS := $(filter-out tests/simt/%,$(wildcard tests/*/test_*.c))
TEST_UTIL := tests/testutil.c

LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/%.o)
CLI_OBJS := $(CLI_SRCS:%.c=$(BUILD)/%.o)
TEST_OBJS := $(TEST_SRCS:%.c=$(BUILD)/%.o)
TEST_UTIL_OBJ := $(TEST_UTIL:%.c=$(BUILD)/%.o)
# The program's own parts (cli/, without main) are linked into the tests too, so a test can call
# what a command does (e.g. the prediction writer) instead of only running the binary.
CLI_PART_OBJS := $(filter-out $(BUILD)/cli/main.o,$(CLI_OBJS))
LIB := $(BUILD)/libmodsquad.a
TEST_BIN := $(BUILD)/tests/run_tests
TEST_BINS := $(patsubst tests/%.c,$(BUILD)/tests/bin/%,$(TEST_SRCS))
BIN := $(if $(filter 1,$(SANITIZE)),$(BUILD)/modsquad,modsquad)

# ---- CUDA backend (kernels/cuda) ---------------------------------------------------------------
# With nvcc and CUDA != 0, kernels/cuda/*.cu are compiled for sm_80 and sm_90 (plus sm_90 PTX,
# which newer GPUs JIT-compile) with every warning an error and archived into libmodsquad.a next
# to the CPU backend; kernels/backend_select.c is then built with MS_HAVE_CUDA. ptxas -v writes
# each kernel's registers, shared memory and spills to $(BUILD)/kernels/cuda/NAME.ptxas, and
# scripts/check_ptxas.sh fails the build on any register spill.
CUDA_ON := $(if $(and $(filter-out 0,$(CUDA)),$(NVCC),$(CUDA_SRCS)),1)
CUDA_OBJS := $(if $(CUDA_ON),$(CUDA_SRCS:%.cu=$(BUILD)/%.o))
NVCC_ARCH := -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=[sm_90,compute_90]
NVCCFLAGS := -std=c++17 -O3 -lineinfo $(NVCC_ARCH) -Werror all-warnings \
    -Xcompiler -Wall,-Wextra,-Werror -Xptxas -v -DMS_HAVE_CUDA
# The CUDA runtime is linked statically and cuBLAS is loaded when a CUDA backend is created
# (kernels/cuda/blas.cu), so programs start fast and run without the CUDA libraries on CPU-only
# machines.
CUDA_LDLIBS :=
ifneq ($(CUDA_ON),)
CUDA_LDLIBS := -L$(CUDA_HOME)/lib64 -lcudart_static -ldl -lrt -lstdc++
endif
LDLIBS += $(CUDA_LDLIBS)

# backend_select.o changes with CUDA on or off: a stamp named after the state rebuilds it when
# the state changes (CUDA=0 after a CUDA build, or nvcc installed since).
CUDA_STAMP := $(BUILD)/.cuda-$(if $(CUDA_ON),on,off)
$(CUDA_STAMP):
	@mkdir -p $(BUILD) && rm -f $(BUILD)/.cuda-* && touch $@
$(BUILD)/kernels/backend_select.o: $(CUDA_STAMP)
$(BUILD)/kernels/backend_select.o: CFLAGS += $(if $(CUDA_ON),-DMS_HAVE_CUDA)

$(BUILD)/%.o: %.cu
	@mkdir -p $(dir $@)
	@echo "NVCC $<"
	$(Q)$(NVCC) $(NVCCFLAGS) -MMD -MP -MF $(@:.o=.d) -c $< -o $@ 2> $(@:.o=.ptxas); rc=$$?; \
	    grep -v -e '^ptxas info' -e 'bytes stack frame' $(@:.o=.ptxas) >&2; \
	    test $$rc -eq 0 && bash scripts/check_ptxas.sh $(@:.o=.ptxas) $< || { rm -f $@; exit 1; }

# ---- collectives between ranks (kernels/comm) --------------------------------------------------
# comm.c, comm_env.c and comm_none.c always. comm_mpi.c when mpicc is found (MPI=0 leaves it
# out), with mpicc's include and link flags for every program: MPI is initialised only in a run
# started as several ranks, so linking it costs a single-process run nothing but the load.
# Without MPI everything still builds and a run started as several ranks says what is missing.
# comm_nccl.cu with the CUDA backend when nccl.h is found; libnccl is loaded with dlopen when a
# run asks for NCCL (as cuBLAS is), so neither a CPU-only machine nor a test process needs it.
MPI ?= 1
MPI_ON := $(if $(and $(filter-out 0,$(MPI)),$(HAVE_MPI)),1)
NCCL_ON := $(if $(and $(CUDA_ON),$(HAVE_NCCL)),1)
COMM_SRCS := kernels/comm/comm.c kernels/comm/comm_env.c kernels/comm/comm_none.c \
    $(if $(MPI_ON),kernels/comm/comm_mpi.c)
COMM_OBJS := $(COMM_SRCS:%.c=$(BUILD)/%.o) $(if $(NCCL_ON),$(BUILD)/kernels/comm/comm_nccl.o)
MPI_CFLAGS := $(if $(MPI_ON),$(shell mpicc --showme:compile))
LDLIBS += $(if $(MPI_ON),$(shell mpicc --showme:link))
COMM_STAMP := $(BUILD)/.comm-mpi$(MPI_ON)-nccl$(NCCL_ON)-cuda$(CUDA_ON)
$(COMM_STAMP):
	@mkdir -p $(BUILD) && rm -f $(BUILD)/.comm-* && touch $@
$(COMM_SRCS:%.c=$(BUILD)/%.o): $(COMM_STAMP)
$(COMM_SRCS:%.c=$(BUILD)/%.o): CFLAGS += $(MPI_CFLAGS) $(if $(MPI_ON),-DMS_HAVE_MPI) \
    $(if $(NCCL_ON),-DMS_HAVE_NCCL) $(if $(CUDA_ON),-DMS_HAVE_CUDA)
# tests/cli/test_mpi.c skips its mpirun tests in a build without MPI.
$(BUILD)/tests/cli/test_mpi.o: $(COMM_STAMP)
$(BUILD)/tests/cli/test_mpi.o: CFLAGS += $(if $(MPI_ON),-DMS_HAVE_MPI)

# ---- tests/simt: the CUDA sources executed on the CPU ------------------------------------------
# The same kernels/cuda/*.cu compiled by the host C++ compiler against the emulator's shim
# (tests/simt/simt.h) with AddressSanitizer, linked with the stand-ins of the CUDA runtime,
# cuBLAS, cuDNN and NCCL (tests/simt/*.cc) and the tests/simt/test_*.c tests into
# $(BUILD)/tests/run_simt: a second Criterion binary that
# `make test` runs after the main one. It needs neither nvcc nor a GPU, so it also runs with
# CUDA=0 (SIMT=0 skips it). It cannot share the main test binary: the stand-ins define the CUDA
# runtime's own symbols (cudaMalloc, ...), which the real backend in libmodsquad.a calls.
# kernels/comm/comm_nccl.cu and comm.c (with NCCL) are built the same way, whether or not this
# machine has nccl.h, so the NCCL collectives run against the stand-in with ranks as threads.
# $(BUILD)/tests/simt_faults runs deliberately broken kernels for the emulator's own tests.
SIMT ?= 1
SIMT_ON := $(if $(and $(filter-out 0,$(SIMT)),$(CUDA_SRCS)),1)
SIMT_DIR := $(BUILD)/simt
SIMT_CXXFLAGS := -std=gnu++17 -O1 -g -fno-omit-frame-pointer -fsanitize=address -DMS_SIMT \
    -Itests/simt -Wall -Wextra -Werror -Wno-unknown-pragmas -MMD -MP $(PKG_CFLAGS)
SIMT_RT_OBJS := $(patsubst %.cc,$(SIMT_DIR)/%.o,$(wildcard tests/simt/*.cc))
SIMT_CUDA_OBJS := $(CUDA_SRCS:%.cu=$(SIMT_DIR)/%.o) $(SIMT_DIR)/tests/simt/selftest.o \
    $(SIMT_DIR)/kernels/backend_select.o $(SIMT_DIR)/kernels/comm/comm_nccl.o \
    $(SIMT_DIR)/kernels/comm/comm.o
SIMT_TEST_OBJS := $(patsubst %.c,$(BUILD)/%.o,$(wildcard tests/simt/test_*.c) \
    tests/simt/harness.c)
SIMT_BIN := $(BUILD)/tests/run_simt
SIMT_FAULTS := $(BUILD)/tests/simt_faults
SIMT_BINS := $(if $(SIMT_ON),$(SIMT_BIN) $(SIMT_FAULTS))
SIMT_LDLIBS := $(filter-out $(CUDA_LDLIBS),$(LDLIBS)) -lstdc++
SIMT_LINK := $(CXX) $(LDFLAGS) -fsanitize=address

$(SIMT_DIR)/%.o: %.cu
	@mkdir -p $(dir $@)
	@echo "CXX  $< (simt)"
	$(Q)$(CXX) -x c++ $(SIMT_CXXFLAGS) -c $< -o $@

$(SIMT_DIR)/%.o: %.cc
	@mkdir -p $(dir $@)
	@echo "CXX  $< (simt)"
	$(Q)$(CXX) $(SIMT_CXXFLAGS) -c $< -o $@

$(SIMT_DIR)/kernels/backend_select.o: kernels/backend_select.c
	@mkdir -p $(dir $@)
	@echo "CC   $< (simt)"
	$(Q)$(CC) $(CFLAGS) -DMS_HAVE_CUDA -c $< -o $@

$(SIMT_DIR)/kernels/comm/comm.o: kernels/comm/comm.c $(COMM_STAMP)
	@mkdir -p $(dir $@)
	@echo "CC   $< (simt)"
	$(Q)$(CC) $(CFLAGS) $(MPI_CFLAGS) $(if $(MPI_ON),-DMS_HAVE_MPI) -DMS_HAVE_CUDA -DMS_HAVE_NCCL \
	    -c $< -o $@

$(SIMT_BIN): $(SIMT_TEST_OBJS) $(TEST_UTIL_OBJ) $(SIMT_CUDA_OBJS) $(SIMT_RT_OBJS) $(LIB)
	@echo "LINK $@"
	$(Q)$(SIMT_LINK) -o $@ $(SIMT_TEST_OBJS) $(TEST_UTIL_OBJ) $(SIMT_CUDA_OBJS) $(SIMT_RT_OBJS) \
	    $(LIB) -lcriterion $(SIMT_LDLIBS)

$(SIMT_FAULTS): $(SIMT_DIR)/tests/simt/faults.o $(SIMT_CUDA_OBJS) $(SIMT_RT_OBJS) $(LIB)
	@echo "LINK $@"
	$(Q)$(SIMT_LINK) -o $@ $^ $(SIMT_LDLIBS)

.PHONY: all test tests clean help demo
all: $(BIN)

$(BIN): $(CLI_OBJS) $(LIB)
	@echo "LINK $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $(CLI_OBJS) $(LIB) $(LDLIBS)

$(LIB): $(LIB_OBJS) $(CUDA_OBJS) $(COMM_OBJS)
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "CC   $<"
	$(Q)$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/tests/%.o: CFLAGS += $(shell pkg-config --cflags criterion)

# The CPU kernels never read errno; with it, a sqrtf call (which may set it) stays a scalar call
# and the loop around it is not vectorised: AdamW 2.6 -> 0.4 ns per parameter on one thread.
# sqrt stays correctly rounded; GCC may now fuse a multiply-add the call used to split (AdamW's
# p*decay - update: 1 ulp), the same in vector and scalar code, so for any thread count.
$(BUILD)/kernels/cpu/%.o: CFLAGS += -fno-math-errno

# One binary with every test (what `make test` runs) ...
$(TEST_BIN): $(TEST_OBJS) $(TEST_UTIL_OBJ) $(CLI_PART_OBJS) $(LIB)
	@mkdir -p $(dir $@)
	@echo "LINK $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $(TEST_OBJS) $(TEST_UTIL_OBJ) $(CLI_PART_OBJS) $(LIB) -lcriterion \
	    $(LDLIBS)

# ... and one per test file, for working on one part: make build/tests/bin/ops/test_moe
$(BUILD)/tests/bin/%: $(BUILD)/tests/%.o $(TEST_UTIL_OBJ) $(CLI_PART_OBJS) $(LIB)
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(LDFLAGS) -o $@ $< $(TEST_UTIL_OBJ) $(CLI_PART_OBJS) $(LIB) -lcriterion $(LDLIBS)

tests: $(BIN) $(TEST_BIN) $(SIMT_BINS)

# ---- fuzzing: libFuzzer harnesses (tests/fuzz/fuzz_*.c), clang with ASan + UBSan -------------
# `make fuzz` builds every harness into $(BUILD)/fuzz/ and runs each for FUZZ_SECONDS on a
# scratch copy of its seed corpus tests/fuzz/corpus/NAME (never modified); a crash, leak,
# timeout (10 s on one input) or OOM (2 GB) fails it and leaves the input beside the log
# (tests/fuzz/run.sh prints the command that reproduces it). `make fuzz-png` runs one harness.
# `make test` runs `fuzz` first when clang's libFuzzer runtime is installed (FUZZ=0 skips it).
FUZZ ?= 1
FUZZ_SECONDS ?= 30
FUZZ_CC ?= clang
FUZZ_DIR := $(BUILD)/fuzz
FUZZ_NAMES := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS := $(FUZZ_NAMES:%=$(FUZZ_DIR)/fuzz_%)
FUZZ_RUNS := $(FUZZ_NAMES:%=fuzz-%)
# The parsers under test and what they link against, instrumented for coverage; an archive, so
# each harness pulls in only the members it needs.
FUZZ_LIB_SRCS := $(wildcard model/*.c data/*.c) kernels/util.c
FUZZ_LIB_OBJS := $(FUZZ_LIB_SRCS:%.c=$(FUZZ_DIR)/obj/%.o)
FUZZ_LIB := $(FUZZ_DIR)/libmodsquad_fuzz.a
FUZZ_CFLAGS := -std=gnu11 -O1 -g -fno-omit-frame-pointer -Wall -Wextra -MMD -MP $(PKG_CFLAGS) \
    -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_LDLIBS := $(PKG_LIBS) -ljpeg -lz -lm -lpthread

ifneq ($(filter test fuzz%,$(MAKECMDGOALS)),)
HAVE_LIBFUZZER := $(shell printf 'int LLVMFuzzerTestOneInput(const char *d, long n) { return d && n; }' \
    | $(FUZZ_CC) -fsanitize=fuzzer,address,undefined -x c - -o /dev/null 2>/dev/null && echo yes)
endif
ifneq ($(and $(HAVE_LIBFUZZER),$(filter-out 0,$(FUZZ))),)
TEST_FUZZ := fuzz
else ifeq ($(FUZZ),0)
TEST_FUZZ_SKIPPED := fuzz: skipped (FUZZ=0)
else
TEST_FUZZ_SKIPPED := fuzz: skipped: $(FUZZ_CC) cannot link -fsanitize=fuzzer (clang and \
    libclang-rt-14-dev, from scripts/setup.sh)
endif

.PHONY: fuzz fuzz-build fuzz-seeds $(FUZZ_RUNS)
fuzz: $(FUZZ_RUNS)
fuzz-build: $(FUZZ_BINS)

# Rewrites the generated seeds of tests/fuzz/corpus (tests/fuzz/make_seeds.c), for committing.
fuzz-seeds: $(FUZZ_LIB)
	@mkdir -p $(FUZZ_NAMES:%=tests/fuzz/corpus/%)
	$(Q)$(FUZZ_CC) $(filter-out -MMD -MP,$(FUZZ_CFLAGS)) -o $(FUZZ_DIR)/make_seeds \
	    tests/fuzz/make_seeds.c $(FUZZ_LIB) $(FUZZ_LDLIBS)
	$(Q)$(FUZZ_DIR)/make_seeds tests/fuzz/corpus configs

$(FUZZ_RUNS): fuzz-%: $(FUZZ_DIR)/fuzz_%
	$(Q)bash tests/fuzz/run.sh $< tests/fuzz/corpus/$* $(FUZZ_DIR)/run-$* $(FUZZ_SECONDS)

$(FUZZ_DIR)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "CC   $< (fuzz)"
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_LIB): $(FUZZ_LIB_OBJS)
	$(Q)rm -f $@ && ar rcs $@ $^

$(FUZZ_DIR)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_LIB)
	@echo "LINK $@"
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -MF $@.d -MT $@ -fsanitize=fuzzer -o $@ $< $(FUZZ_LIB) $(FUZZ_LDLIBS)

# Under SANITIZE=1 every sanitizer report goes to a file and fails `make test`: a leak is found
# when a test process exits, after Criterion has already counted the test as passed, so a
# printed report alone would not fail the run. Test scaffolding that by design keeps its buffers
# until its process exits is named in tests/lsan.supp; every other allocation must be freed.
ifeq ($(SANITIZE),1)
SAN_LOG := $(abspath $(BUILD))/sanitizer-report
TEST_PRE := rm -f $(SAN_LOG).*;
TEST_ENV := ASAN_OPTIONS=log_path=$(SAN_LOG):detect_leaks=1 \
    UBSAN_OPTIONS=log_path=$(SAN_LOG):print_stacktrace=1 \
    LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0
TEST_POST := ; rc=$$?; if ls $(SAN_LOG).* >/dev/null 2>&1; then cat $(SAN_LOG).*; \
    echo "make test: sanitizer reports above ($(SAN_LOG).*)"; exit 1; fi; exit $$rc
endif

# Criterion runs every test in its own process; OMP threads stay at 2 so parallel tests do not
# oversubscribe the machine. The bounded fuzzing (above) runs first, so Criterion's synthesis
# stays the last line.
test: tests $(TEST_FUZZ)
	$(if $(TEST_FUZZ),,@echo "$(TEST_FUZZ_SKIPPED)")
	$(Q)$(TEST_PRE) OMP_NUM_THREADS=2 OMP_WAIT_POLICY=passive MODSQUAD_BIN=$(abspath $(BIN)) $(TEST_ENV) \
	    $(TEST_BIN) --jobs 2 $(TEST_POST)
	$(if $(SIMT_ON),$(Q)$(TEST_PRE) OMP_NUM_THREADS=2 OMP_WAIT_POLICY=passive $(TEST_ENV) $(SIMT_BIN) --jobs 2 \
	    $(TEST_POST),@echo "simt: skipped (SIMT=0)")

# README command 1: synthetic data, the initial model, training, evaluation, the final table.
demo: $(BIN)
	$(Q)MODSQUAD_BIN=$(abspath $(BIN)) bash scripts/demo.sh

clean:
	rm -rf $(BUILD) modsquad

help:
	@sed -n '1,5p' Makefile

-include $(LIB_OBJS:.o=.d) $(COMM_OBJS:.o=.d) $(CLI_OBJS:.o=.d) $(TEST_OBJS:.o=.d) $(TEST_UTIL_OBJ:.o=.d)
-include $(FUZZ_LIB_OBJS:.o=.d) $(FUZZ_BINS:%=%.d)
-include $(CUDA_OBJS:.o=.d) $(SIMT_CUDA_OBJS:.o=.d) $(SIMT_RT_OBJS:.o=.d) $(SIMT_TEST_OBJS:.o=.d)
-include $(SIMT_DIR)/tests/simt/faults.d
