# modsquad build. `make` builds ./modsquad; `make test` builds and runs every test.
# Variables: CUDA=0 (skip the CUDA backend), BUILD=dir (object directory, default build),
#            SETUP=0 (do not run scripts/setup.sh), SANITIZE=1 (ASan + UBSan), V=1 (verbose).

BUILD ?= build
CUDA ?= 1
SETUP ?= 1

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
TEST_SRCS := $(wildcard tests/*/test_*.c)
TEST_UTIL := tests/testutil.c

LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/%.o)
CLI_OBJS := $(CLI_SRCS:%.c=$(BUILD)/%.o)
TEST_OBJS := $(TEST_SRCS:%.c=$(BUILD)/%.o)
TEST_UTIL_OBJ := $(TEST_UTIL:%.c=$(BUILD)/%.o)
LIB := $(BUILD)/libmodsquad.a
TEST_BIN := $(BUILD)/tests/run_tests
TEST_BINS := $(patsubst tests/%.c,$(BUILD)/tests/bin/%,$(TEST_SRCS))

.PHONY: all test tests clean help
all: modsquad

modsquad: $(CLI_OBJS) $(LIB)
	@echo "LINK $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $(CLI_OBJS) $(LIB) $(LDLIBS)

$(LIB): $(LIB_OBJS)
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "CC   $<"
	$(Q)$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/tests/%.o: CFLAGS += $(shell pkg-config --cflags criterion)

# One binary with every test (what `make test` runs) ...
$(TEST_BIN): $(TEST_OBJS) $(TEST_UTIL_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	@echo "LINK $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $(TEST_OBJS) $(TEST_UTIL_OBJ) $(LIB) -lcriterion $(LDLIBS)

# ... and one per test file, for working on one part: make build/tests/bin/ops/test_moe
$(BUILD)/tests/bin/%: $(BUILD)/tests/%.o $(TEST_UTIL_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(LDFLAGS) -o $@ $< $(TEST_UTIL_OBJ) $(LIB) -lcriterion $(LDLIBS)

tests: modsquad $(TEST_BIN)

# Criterion runs every test in its own process; OMP threads stay at 2 so parallel tests do not
# oversubscribe the machine.
test: tests
	$(Q)OMP_NUM_THREADS=2 MODSQUAD_BIN=$(CURDIR)/modsquad $(TEST_BIN) --jobs 2

clean:
	rm -rf $(BUILD) modsquad

help:
	@sed -n '1,3p' Makefile

-include $(LIB_OBJS:.o=.d) $(CLI_OBJS:.o=.d) $(TEST_OBJS:.o=.d) $(TEST_UTIL_OBJ:.o=.d)
