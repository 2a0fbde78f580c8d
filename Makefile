# msdpipe build. `make` builds every binary into bin/; `make test` runs the whole suite
# (release build, sanitizer build, bounded fuzz run); `make bench` runs every benchmark.
#
#   CUDA=auto|0|1   build kernels/cuda/*.cu with nvcc when found (auto), never (0), or insist (1)
#   VARIANT=release|san   san = ASan+UBSan with clang, objects in build/san, binaries in build/san/bin
#   CUDA_HOME, CUDNN_HOME, NCCL_HOME, DEPS_PREFIX   where non-standard installs live

VARIANT ?= release
CUDA ?= auto
CUDA_HOME ?= /usr/local/cuda
CUDNN_HOME ?= $(CUDA_HOME)
NCCL_HOME ?= $(CUDA_HOME)
DEPS_PREFIX ?=
ARCH ?= -march=native

BUILD := build/$(VARIANT)
ifeq ($(VARIANT),release)
  BINDIR := bin
  CC := gcc
  OPT := -O3 $(ARCH) -fno-math-errno
  SANFLAGS :=
else ifeq ($(VARIANT),san)
  BINDIR := $(BUILD)/bin
  CC := clang
  OPT := -O1 -g -fno-omit-frame-pointer
  SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined
else
  $(error VARIANT must be release or san, not '$(VARIANT)')
endif

comma := ,
DEPINC := $(if $(DEPS_PREFIX),-I$(DEPS_PREFIX)/usr/include -I$(DEPS_PREFIX)/usr/include/x86_64-linux-gnu,)
DEPLIB := $(if $(DEPS_PREFIX),-L$(DEPS_PREFIX)/usr/lib/x86_64-linux-gnu -Wl$(comma)-rpath$(comma)$(DEPS_PREFIX)/usr/lib/x86_64-linux-gnu,)
BLAS_INC := -I/usr/include/x86_64-linux-gnu/openblas-pthread
# common/ is in rooms (base, net, nn, models, msd, data: docs/ARCHITECTURE.md); headers are
# included by name, so every room is on the include path, and so is the CPU backend's.
ROOMS := $(sort $(dir $(wildcard common/*/*.h)))
INC := $(patsubst %/,-I%,$(ROOMS)) -Ikernels/cpu
CFLAGS := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter -g $(OPT) $(SANFLAGS) \
          $(INC) $(BLAS_INC) $(DEPINC) -MMD -MP -pthread
LDFLAGS := $(SANFLAGS) -pthread $(DEPLIB)
LDLIBS := -lzmq -lmsgpackc -lpng -lz -lopenblas -lutf8proc -ljansson -lm

# ---- CUDA detection -------------------------------------------------------------------
NVCC := $(shell command -v nvcc 2>/dev/null || ( [ -x $(CUDA_HOME)/bin/nvcc ] && echo $(CUDA_HOME)/bin/nvcc ))
ifeq ($(CUDA),1)
  ifeq ($(NVCC),)
    $(error CUDA=1 but nvcc was not found on PATH or in CUDA_HOME=$(CUDA_HOME))
  endif
  USE_CUDA := 1
else ifeq ($(CUDA),auto)
  USE_CUDA := $(if $(NVCC),1,0)
else ifeq ($(CUDA),0)
  USE_CUDA := 0
else
  $(error CUDA must be auto, 0 or 1, not '$(CUDA)')
endif
ifeq ($(VARIANT),san)
  USE_CUDA := 0
endif
CUDA_SRC := $(wildcard kernels/cuda/*.cu)
ifeq ($(USE_CUDA),1)
  CFLAGS += -DMSD_HAVE_CUDA=1 -I$(CUDA_HOME)/include
  NVCCFLAGS := -O3 -std=c++17 $(INC) -I$(CUDA_HOME)/include -I$(CUDNN_HOME)/include -I$(NCCL_HOME)/include \
               -DMSD_HAVE_CUDA=1 -Xcompiler -Wall,-Werror,-fPIC -Werror all-warnings \
               -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90 -MMD -MP
  # The CUDA backend is a shared library, libmsd-cuda.so, that backend.c opens on the first
  # request for a GPU (docs/CUDA.md): the binaries link no CUDA library, start in
  # milliseconds and run on the CPU where CUDA is not installed. Its references into the
  # engine resolve against the binary, which exports its symbols (-rdynamic).
  CUDA_LDLIBS := -L$(CUDA_HOME)/lib64 -L$(CUDNN_HOME)/lib -L$(CUDNN_HOME)/lib64 \
            -Wl,-rpath,$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDNN_HOME)/lib -Wl,-rpath,$(CUDNN_HOME)/lib64 \
            -lcudnn -lcublas -lcudart -lstdc++
  # no -lnccl: nothing uses NCCL yet (a process owns one GPU; tensors cross processes over ZeroMQ)
  LDFLAGS += -rdynamic
  LDLIBS += -ldl
  # .cu.o: kernels/cuda/linear.cu and kernels/cpu/linear.c share a name
  CUDA_OBJ := $(patsubst %.cu,$(BUILD)/%.cu.o,$(CUDA_SRC))
  CUDA_SO := $(BUILD)/lib/libmsd-cuda.so
  CUDA_SO_BIN := $(if $(filter $(BINDIR),$(BUILD)/lib),,$(BINDIR)/libmsd-cuda.so)
else
  CUDA_OBJ :=
  CUDA_SO :=
  CUDA_SO_BIN :=
endif

# ---- sources --------------------------------------------------------------------------
COMMON_SRC := $(wildcard common/*/*.c) $(wildcard kernels/cpu/*.c)
COMMON_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(COMMON_SRC))
# ar keeps one member per file name: two library sources with one base name would drop one
LIB_DUPS := $(strip $(foreach n,$(sort $(notdir $(COMMON_SRC))),$(if $(filter-out 1,$(words $(filter %/$(n),$(COMMON_SRC)))),$(n))))
ifneq ($(LIB_DUPS),)
  $(error library sources share a base name: $(LIB_DUPS))
endif
# The pipeline-file parser belongs to the launcher; tests/test_pipeline links it too.
PIPEFILE_SRC := $(wildcard tools/msdpipe/pipefile*.c)
PIPEFILE_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(PIPEFILE_SRC))
LIB := $(BUILD)/libmsd.a

PROCS := $(notdir $(patsubst %/,%,$(dir $(wildcard procs/*/*.c))))
PROCS := $(sort $(PROCS))
PROC_BINS := $(patsubst %,$(BINDIR)/msd-%,$(PROCS))
TOOLS := $(sort $(notdir $(patsubst %/,%,$(dir $(wildcard tools/*/*.c)))))
TOOL_BINS := $(patsubst %,$(BINDIR)/%,$(TOOLS))

TEST_SRC := $(wildcard tests/test_*.c)
TEST_BINS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
BENCH_SRC := $(wildcard bench/bench_*.c)
BENCH_BINS := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))
FUZZ_SRC := $(wildcard tests/fuzz_*.c)

.PHONY: all deps test test-release test-san fuzz bench demo demo-toy clean test-gpu tests-build
all: $(PROC_BINS) $(TOOL_BINS) $(TEST_BINS) $(BENCH_BINS)

deps:
	@tools/install-deps
	@tools/fetch-minilm

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/kernels/cuda/%.cu.o: kernels/cuda/%.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

# every binary links LIB, so building any of them builds the CUDA library beside it too
$(LIB): $(COMMON_OBJ) | $(CUDA_SO) $(CUDA_SO_BIN)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

ifneq ($(CUDA_SO),)
$(CUDA_SO): $(CUDA_OBJ)
	@mkdir -p $(dir $@)
	g++ -shared -Wl,-soname,libmsd-cuda.so -o $@ $^ $(LDFLAGS) $(CUDA_LDLIBS)
$(CUDA_SO_BIN): $(CUDA_SO)
	@mkdir -p $(dir $@)
	cp $< $@.tmp && mv $@.tmp $@
endif

# One link rule per process (procs/NAME/*.c -> bin/msd-NAME) and per tool (tools/NAME/*.c -> bin/NAME).
define link_rule
$(1): $$(patsubst %.c,$(BUILD)/%.o,$$(wildcard $(2)/*.c)) $(LIB)
	@mkdir -p $$(dir $$@)
	$$(CC) $$(LDFLAGS) -o $$@ $$^ $$(LDLIBS)
endef
$(foreach p,$(PROCS),$(eval $(call link_rule,$(BINDIR)/msd-$(p),procs/$(p))))
$(foreach t,$(TOOLS),$(eval $(call link_rule,$(BINDIR)/$(t),tools/$(t))))

$(BUILD)/tests/test_%: $(BUILD)/tests/test_%.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/test_pipeline: $(BUILD)/tests/test_pipeline.o $(PIPEFILE_OBJ) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BUILD)/tests/test_pipeline.o: CFLAGS += -Itools/msdpipe

$(BUILD)/bench/bench_%: $(BUILD)/bench/bench_%.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
# libsodium: the cipher of CurveZMQ, measured on its own (docs/SCALE.md)
$(BUILD)/bench/bench_sodium: LDLIBS += -lsodium

# libFuzzer targets (clang); built by `make fuzz`, run briefly by the test suite. The library
# sources are compiled once with the sanitizers and fuzzer instrumentation, then each target
# links them.
FUZZ_BINS := $(patsubst tests/%.c,build/fuzz/%,$(FUZZ_SRC))
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all $(INC) -Itools/msdpipe $(BLAS_INC) \
               $(DEPINC) -DMSD_FUZZING=1 -MMD -MP -pthread
FUZZ_OBJ := $(patsubst %.c,build/fuzz/obj/%.o,$(COMMON_SRC) $(PIPEFILE_SRC))
build/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@
build/fuzz/fuzz_%: tests/fuzz_%.c $(FUZZ_OBJ)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $(filter %.c %.o,$^) $(DEPLIB) $(LDLIBS)
# the launcher's stdin line handling is not in the library: its target links it too
build/fuzz/fuzz_lines: build/fuzz/obj/tools/msdpipe/lines.o
fuzz: $(FUZZ_BINS)

tests-build: all

# The README's test command. One line at the end: "N passed, N failed".
test: deps
	@tools/test-all

test-release: all
	@tests/run $(BINDIR) $(BUILD)/tests release

test-san: all
	@tests/run $(BINDIR) $(BUILD)/tests san

test-gpu: all
	@tests/run-gpu $(BINDIR) $(BUILD)/tests

bench: all
	@tools/install-deps --bench
	@tools/bench-all $(BINDIR) $(BUILD)/bench

demo: deps
	@$(MAKE) -s -j$$(nproc) all
	@tools/demo

demo-toy: deps
	@$(MAKE) -s -j$$(nproc) all
	@tools/demo-toy

clean:
	rm -rf build bin

-include $(shell find build -name '*.d' 2>/dev/null)
