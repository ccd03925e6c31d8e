# Makefile: builds libcav (lib/ + kernels/cpu), the tools (one per bin/*.c), the HDF5 zstd filter plugin and
# the tests into build/, and runs them. The first run installs missing Debian packages (as root; otherwise it
# prints the apt-get line) and writes build/config.mk with what it found, one line per dependency.
#   make              build everything          make check       unit tests (+ASan/UBSan) and tool tests
#   make check-unit, make check-tools (T=... narrows any check to the named tests)
#   make refs         regenerate golden data    make check-long  the long runs
#   make bench        benchmarks                make check-cuda  CUDA parity tests (needs a GPU)
#   make demo         a small real dataset, pretraining and retrieval end to end (minutes, CPU)
#   make install PREFIX=/usr/local              make clean
SHELL := /bin/bash
.DEFAULT_GOAL := all
BUILD ?= build
PREFIX ?= /usr/local
# the Python of the golden data and the Python tests: Debian's, with the packages CHECK_DEBS installs
CAV_PYTHON ?= /usr/bin/python3
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo unknown)

BUILD_DEBS := gcc make pkg-config libavformat-dev libavcodec-dev libavutil-dev libswresample-dev \
  libswscale-dev libhdf5-dev libzstd-dev libopenblas-dev libopenmpi-dev openmpi-bin libjpeg-dev libpng-dev
CHECK_DEBS := hdf5-tools ffmpeg sox python3-numpy python3-torch python3-torchaudio python3-h5py \
  python3-sklearn python3-opencv python3-pil python3-torchvision python3-scipy python3-zstandard bc chromium
# real recordings for golden data (fbank, av-extract) and the sources of the AV-Digits dataset
# (pipelines/av-digits, built by tests/tools/test_av_digits.sh)
CHECK_DEBS += tuxpaint-stamps-default gcompris-qt-data espeak-ng flite asterisk-core-sounds-en-g722 \
  asterisk-core-sounds-es-g722 asterisk-core-sounds-fr-g722 asterisk-core-sounds-it-g722 asterisk-core-sounds-ru-g722
# the benchmarks also time PyTorch under jemalloc (tests/bench/bench_train_step.sh); FFTW is only the
# floor bench_fbank.py compares fbank with (it builds tests/bench/fbank_speed.c itself): no tool links it
BENCH_DEBS := libjemalloc2 libfftw3-dev

# ensure_debs: install what is missing (root), or say exactly what to run (not root).
define ensure_debs
if command -v dpkg >/dev/null 2>&1; then \
  missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
  if [ -n "$$missing" ]; then \
    if [ "$$(id -u)" = 0 ]; then \
      echo "make: installing Debian packages:$$missing"; \
      (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing) \
        >$(BUILD)/apt.log 2>&1 || { tail -20 $(BUILD)/apt.log; echo "make: apt-get failed (log: $(BUILD)/apt.log)"; exit 3; }; \
    else \
      echo "make: missing Debian packages; install them with:"; echo "  sudo apt-get install$$missing"; exit 1; \
    fi; \
  fi; \
else echo "make: no dpkg here; relying on pkg-config to find the libraries"; fi
endef

PKGS := libavformat libavcodec libavutil libswresample libswscale hdf5 libzstd openblas libjpeg libpng

$(BUILD)/config.mk: Makefile
	@mkdir -p $(BUILD)
	@$(call ensure_debs,$(BUILD_DEBS))
	@set -e; { \
	  echo "# written by make; delete to detect again"; \
	  cf=""; lf=""; \
	  for p in $(PKGS); do \
	    if pkg-config --exists $$p; then \
	      echo "make: found $$p $$(pkg-config --modversion $$p)" >&2; \
	      cf="$$cf $$(pkg-config --cflags $$p)"; lf="$$lf $$(pkg-config --libs $$p)"; \
	    else echo "make: $$p not found (pkg-config $$p)" >&2; exit 1; fi; \
	  done; \
	  echo "DEP_CFLAGS := $$(echo $$cf | tr ' ' '\n' | awk '!seen[$$0]++' | tr '\n' ' ')"; echo "DEP_LIBS :=$$lf"; \
	  if pkg-config --exists ompi-c; then \
	    echo "make: found Open MPI $$(pkg-config --modversion ompi-c)" >&2; \
	    echo "MPI_CFLAGS := $$(pkg-config --cflags ompi-c) -DCAV_HAVE_MPI=1"; echo "MPI_LIBS := $$(pkg-config --libs ompi-c)"; \
	  else echo "make: Open MPI not found: training tools run single-process" >&2; fi; \
	  nvcc=$$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true); \
	  if [ -n "$$nvcc" ]; then \
	    home=$$(dirname $$(dirname $$nvcc)); \
	    echo "make: found CUDA $$($$nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p') at $$home" >&2; \
	    echo "NVCC := $$nvcc"; echo "CUDA_HOME := $$home"; \
	    if ls $$home/lib64/libcublasLt.so >/dev/null 2>&1; then echo "make: found cuBLAS/cuBLASLt in $$home/lib64" >&2; echo "HAVE_CUBLAS := 1"; \
	    else echo "make: cuBLAS not found in $$home/lib64" >&2; fi; \
	    nccl=$$(ls $$home/lib64/libnccl.so /usr/lib/x86_64-linux-gnu/libnccl.so 2>/dev/null | head -1); \
	    if [ -n "$$nccl" ]; then echo "make: found NCCL $$nccl" >&2; echo "HAVE_NCCL := 1"; \
	    else echo "make: NCCL not found: multi-GPU training disabled" >&2; fi; \
	  else echo "make: nvcc not found: CPU build only" >&2; fi; \
	} >$@.tmp 2>$(BUILD)/config.txt; st=$$?; cat $(BUILD)/config.txt; [ $$st = 0 ] && mv $@.tmp $@

ifeq ($(filter clean,$(MAKECMDGOALS)),)
-include $(BUILD)/config.mk
endif

CC ?= cc
WERROR := $(if $(filter true,$(CI)),-Werror)
# lib/ is layered: base (CLI, JSON, RNG) < formats (records, streams, shards, checkpoints) < media (decode,
# fbank, patches) < model < train; every layer's headers are on the include path.
LIB_DIRS := lib/base lib/formats lib/media lib/model lib/train
LIB_INC := $(LIB_DIRS:%=-I%)
# Compute backends (kernels/kernels.h's cav_backend), one folder each; kernels/cpu is always built. A GPU
# backend is one more entry here (with its compiler rule and CAV_HAVE_<NAME> define).
# kernels/cuda: where the config step found nvcc and cuBLAS (make NVCC= builds without it)
CUDA_BUILD := $(and $(NVCC),$(HAVE_CUBLAS))
KERNEL_DIRS := kernels/cpu $(if $(CUDA_BUILD),kernels/cuda)
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -Wall -Wextra $(WERROR) -g -fopenmp $(LIB_INC) -Ikernels $(KERNEL_DIRS:%=-I%) -Itests \
  -DCAV_VERSION='"$(VERSION)"' $(DEP_CFLAGS)
OPT ?= -O2 -march=x86-64-v2
CFLAGS_REL := $(CFLAGS_BASE) $(OPT)
CFLAGS_ASAN := $(CFLAGS_BASE) -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
LIBS := $(DEP_LIBS) -fopenmp -lm -lpthread

LIB_SRC := $(filter-out lib/formats/h5zstd_plugin.c,$(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c))) $(foreach d,$(KERNEL_DIRS),$(wildcard $(d)/*.c)) \
  kernels/profile.c
TOOLS := $(patsubst bin/%.c,%,$(wildcard bin/*.c))
UNIT_TESTS := $(patsubst tests/unit/%.c,%,$(wildcard tests/unit/test_*.c))
TOOL_TESTS := $(sort $(wildcard tests/tools/test_*.sh tests/tools/test_*.py))
# T=... narrows check, check-unit and check-tools to the named tests (unit test names or tool test paths):
#   make check-tools T=tests/tools/test_recall.py      make check-unit T=test_kernels
ifneq ($(T),)
UNIT_TESTS := $(filter $(notdir $(basename $(T))),$(UNIT_TESTS))
TOOL_TESTS := $(filter $(T),$(TOOL_TESTS))
endif
LONG_TESTS := $(sort $(wildcard tests/long/test_*.sh tests/long/test_*.py))
REF_GENS := $(wildcard tests/ref/gen_*.py)
# The tools that train link MPI (data parallelism); the others do not need it. lib/train/dist*.c is the
# distributed layer: its MPI transport, and its NCCL transport where NCCL was found and the CUDA backend is
# built (NCCL_BUILD, below).
MPI_TOOLS := cav-pretrain cav-finetune
MPI_SRC := bin/cav-pretrain.c bin/cav-finetune.c lib/train/dist.c
DIST_SRC := lib/train/dist.c lib/train/dist_nccl.c

# The CUDA backend (kernels/cuda, CUDA_BUILD above): nvcc compiles each .cu once, for sm_80 and sm_90,
# warnings as errors; the objects join both libcav.a (the ASan build links the same, uninstrumented,
# objects) and every program links cudart, cuBLAS and cuBLASLt. -fmad=false: no multiply-add contraction,
# so elementwise kernels do the CPU's float operations (the CPU build never contracts either: -std=c11
# implies -ffp-contract=off).
ifneq ($(CUDA_BUILD),)
CUDA_OBJ := $(patsubst %.cu,$(BUILD)/cuda/%.o,$(wildcard kernels/cuda/*.cu))
NVCC_FLAGS := -std=c++17 -O2 -g -fmad=false -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
  -Werror all-warnings -Xcompiler -Wall,-Wextra $(LIB_INC) -Ikernels
CFLAGS_REL += -DCAV_HAVE_CUDA=1
CFLAGS_ASAN += -DCAV_HAVE_CUDA=1
LIBS += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublasLt -lcublas -lcudart -lstdc++
endif
# The NCCL transport (lib/train/dist_nccl.c, C over NCCL's and the CUDA runtime's C APIs): with the CUDA
# backend where the config step found NCCL; the training tools link it.
NCCL_BUILD := $(and $(CUDA_BUILD),$(HAVE_NCCL))
ifneq ($(NCCL_BUILD),)
NCCL_CFLAGS := -DCAV_HAVE_NCCL=1 -I$(CUDA_HOME)/include
MPI_LIBS += -lnccl
endif

# V=1 shows the full commands.
Q := $(if $(V),,@)
.SECONDARY:

REL := $(BUILD)/rel
ASAN := $(BUILD)/asan
PLUGIN := $(BUILD)/plugin/libcav_h5zstd.so

.PHONY: demo all tools tests clean check check-unit check-tools check-long check-cuda refs bench install config fuzz gpu-bundle
all: tools $(if $(wildcard lib/formats/h5zstd_plugin.c),$(PLUGIN))
tools: $(TOOLS:%=$(BUILD)/bin/%)
config: $(BUILD)/config.mk
	@cat $(BUILD)/config.txt

# Objects mirror the source tree under $(REL)/ and $(ASAN)/; headers are tracked with -MMD.
$(REL)/%.o: %.c $(BUILD)/config.mk
	@mkdir -p $(@D)
	@echo "  CC      $@"
	$(Q)$(CC) $(CFLAGS_REL) $(if $(filter $(MPI_SRC),$<),$(MPI_CFLAGS)) $(if $(filter $(DIST_SRC),$<),$(NCCL_CFLAGS)) -MMD -MP -c $< -o $@
# lib/media/rfft.c, torchmath.c and fbank.c reproduce PyTorch's float32 arithmetic operation by
# operation: a*b + c must stay two roundings (-std=c11 already implies this; said explicitly so that no
# dialect change can undo it).
$(REL)/lib/media/rfft.o $(REL)/lib/media/fbank.o $(REL)/lib/media/torchmath.o: CFLAGS_REL += -ffp-contract=off
$(ASAN)/lib/media/rfft.o $(ASAN)/lib/media/fbank.o $(ASAN)/lib/media/torchmath.o: CFLAGS_ASAN += -ffp-contract=off
$(ASAN)/%.o: %.c $(BUILD)/config.mk
	@mkdir -p $(@D)
	@echo "  CC      $@"
	$(Q)$(CC) $(CFLAGS_ASAN) $(if $(filter $(MPI_SRC),$<),$(MPI_CFLAGS)) $(if $(filter $(DIST_SRC),$<),$(NCCL_CFLAGS)) -MMD -MP -c $< -o $@
-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

$(BUILD)/cuda/%.o: %.cu $(wildcard kernels/cuda/*.h) kernels/kernels.h lib/formats/record.h $(BUILD)/config.mk
	@mkdir -p $(@D)
	@echo "  NVCC    $@"
	$(Q)$(NVCC) $(NVCC_FLAGS) -c $< -o $@
$(REL)/libcav.a $(ASAN)/libcav.a: $(CUDA_OBJ)

$(REL)/libcav.a: $(LIB_SRC:%.c=$(REL)/%.o)
	@rm -f $@; ar rcs $@ $^
$(ASAN)/libcav.a: $(LIB_SRC:%.c=$(ASAN)/%.o)
	@rm -f $@; ar rcs $@ $^

$(BUILD)/bin/%: $(REL)/bin/%.o $(REL)/libcav.a
	@mkdir -p $(@D)
	@echo "  LINK    $@"
	$(Q)$(CC) $(CFLAGS_REL) $^ -o $@ $(LIBS) $(if $(filter $*,$(MPI_TOOLS)),$(MPI_LIBS))
$(ASAN)/bin/%: $(ASAN)/bin/%.o $(ASAN)/libcav.a
	@mkdir -p $(@D)
	@echo "  LINK    $@"
	$(Q)$(CC) $(CFLAGS_ASAN) $^ -o $@ $(LIBS) $(if $(filter $*,$(MPI_TOOLS)),$(MPI_LIBS))
$(REL)/tests/%: $(REL)/tests/unit/%.o $(REL)/libcav.a
	@echo "  LINK    $@"
	$(Q)$(CC) $(CFLAGS_REL) $^ -o $@ $(LIBS)
$(ASAN)/tests/%: $(ASAN)/tests/unit/%.o $(ASAN)/libcav.a
	@echo "  LINK    $@"
	$(Q)$(CC) $(CFLAGS_ASAN) $^ -o $@ $(LIBS)

# The HDF5 filter plugin: the same filter code as libcav, plus the plugin entry points.
$(PLUGIN): lib/formats/h5zstd_plugin.c lib/formats/h5zstd.c $(BUILD)/config.mk
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_REL) $(OPT) -fPIC -shared lib/formats/h5zstd_plugin.c lib/formats/h5zstd.c -o $@ $(DEP_LIBS)

# The write-failure injector the reliability test preloads (tests/faultinj/faultinj.c).
FAULTINJ := $(BUILD)/faultinj.so
$(FAULTINJ): tests/faultinj/faultinj.c
	@mkdir -p $(@D)
	$(Q)$(CC) -std=c11 -Wall -Wextra $(WERROR) -O1 -fPIC -shared $< -o $@ -ldl

# The gradient-exchange failure injector test_pretrain preloads into one MPI rank (tests/faultinj/mpifail.c),
# where Open MPI was found.
MPIFAIL := $(if $(MPI_CFLAGS),$(BUILD)/mpifail.so)
$(BUILD)/mpifail.so: tests/faultinj/mpifail.c $(BUILD)/config.mk
	@mkdir -p $(@D)
	$(Q)$(CC) -std=c11 -Wall -Wextra $(WERROR) -O1 -fPIC -shared $(MPI_CFLAGS) $< -o $@ $(filter-out -lnccl,$(MPI_LIBS))

tests: $(UNIT_TESTS:%=$(REL)/tests/%) $(UNIT_TESTS:%=$(ASAN)/tests/%) $(TOOLS:%=$(ASAN)/bin/%) $(FAULTINJ) $(MPIFAIL) all

# Golden data from the independent references (tests/ref/gen_*.py, Debian's python3 packages) goes to
# $(BUILD)/ref/NAME/; a generator reruns when its script, or a module the generators share (the tests/ref files
# not named gen_*), is newer than its stamp.
$(BUILD)/ref/%.stamp: tests/ref/%.py $(filter-out tests/ref/gen_%,$(wildcard tests/ref/*.py)) | $(BUILD)/.check-deps
	@mkdir -p $(BUILD)/ref/$*
	$(CAV_PYTHON) $< $(BUILD)/ref/$*
	@touch $@
refs: $(REF_GENS:tests/ref/%.py=$(BUILD)/ref/%.stamp)

$(BUILD)/.check-deps: $(BUILD)/config.mk
	@$(call ensure_debs,$(CHECK_DEBS))
	@touch $@

# What the tests see: the built tools first on PATH, the filter plugin for h5py/h5dump, the golden data.
TEST_ENV := PATH="$(abspath $(BUILD)/bin):$$PATH" CAV_BIN="$(abspath $(BUILD)/bin)" \
  CAV_ASAN_BIN="$(abspath $(ASAN)/bin)" HDF5_PLUGIN_PATH="$(abspath $(BUILD)/plugin)" \
  CAV_REF="$(abspath $(BUILD)/ref)" CAV_FAULTINJ="$(abspath $(FAULTINJ))" CAV_MPIFAIL="$(abspath $(BUILD)/mpifail.so)" CAV_BUILD="$(abspath $(BUILD))" CAV_SRC="$(CURDIR)" \
  CAV_BENCH_BIN="$(abspath $(BUILD)/bench)" CAV_TEST_LOGS="$(abspath $(BUILD)/test-logs)" ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
  UBSAN_OPTIONS=print_stacktrace=1 OMP_NUM_THREADS=2 OMP_WAIT_POLICY=passive CAV_PYTHON="$(CAV_PYTHON)"

check: tests refs | $(BUILD)/.check-deps
	@rm -rf $(BUILD)/test-logs; mkdir -p $(BUILD)/test-logs; st=0; \
	$(TEST_ENV) tests/run.sh unit $(UNIT_TESTS:%=$(REL)/tests/%) || st=1; \
	$(TEST_ENV) tests/run.sh asan $(UNIT_TESTS:%=$(ASAN)/tests/%) || st=1; \
	$(if $(TOOL_TESTS),$(TEST_ENV) tests/run.sh tools $(TOOL_TESTS) || st=1;) \
	$(TEST_ENV) tests/run.sh --total || st=1; exit $$st

check-unit: tests refs | $(BUILD)/.check-deps
	@rm -rf $(BUILD)/test-logs; mkdir -p $(BUILD)/test-logs; st=0; \
	$(TEST_ENV) tests/run.sh unit $(UNIT_TESTS:%=$(REL)/tests/%) || st=1; \
	$(TEST_ENV) tests/run.sh asan $(UNIT_TESTS:%=$(ASAN)/tests/%) || st=1; \
	$(TEST_ENV) tests/run.sh --total || st=1; exit $$st

check-tools: tests refs | $(BUILD)/.check-deps
	@rm -rf $(BUILD)/test-logs; mkdir -p $(BUILD)/test-logs; st=0; \
	$(TEST_ENV) tests/run.sh tools $(TOOL_TESTS) || st=1; \
	$(TEST_ENV) tests/run.sh --total || st=1; exit $$st

check-long: tests refs | $(BUILD)/.check-deps
	@rm -rf $(BUILD)/test-logs; mkdir -p $(BUILD)/test-logs; \
	$(TEST_ENV) CAV_TEST_TIMEOUT=36000 tests/run.sh long $(LONG_TESTS); $(TEST_ENV) tests/run.sh --total

# make check-cuda: the CUDA backend against the CPU (tests/cuda/check_cuda.sh: test_kernels' backend list, the
# debug states, 50 training steps of tiny and base, resume, compute-sanitizer, bf16, cav-recall --device against
# the CPU): SKIPPED where this build has no CUDA backend or the machine has no GPU; a GPU that nvidia-smi sees
# but the backend cannot open is a failure. DEVICE=cpu runs its scripts CPU against CPU (their own check without
# a GPU; needs the ASan tool);
# STAGES narrows it (tests/cuda/check_cuda.sh; the debug states need their golden data from make refs).
CUDA_REFS := $(if $(filter debug_states,$(or $(STAGES),debug_states)),$(BUILD)/ref/gen_debug_states.stamp) \
  $(if $(filter bf16,$(or $(STAGES),bf16)),$(BUILD)/ref/gen_bf16_states.stamp)
check-cuda: $(REL)/tests/test_kernels all $(CUDA_REFS) $(if $(filter cpu,$(DEVICE)),$(ASAN)/bin/cav-pretrain) | $(BUILD)/.check-deps
	@rm -f $(BUILD)/test-logs/counts
	@$(TEST_ENV) CAV_HAVE_CUDA_BUILD=$(if $(CUDA_OBJ),1,0) tests/cuda/check_cuda.sh $(abspath $(REL)/tests/test_kernels)

# C programs the benchmark scripts time (tests/bench/*.c except fbank_speed.c, which bench_fbank.py builds).
BENCH_PROGS := $(patsubst tests/bench/%.c,$(BUILD)/bench/%,$(filter-out tests/bench/fbank_speed.c,$(wildcard tests/bench/*.c)))
tests: $(BENCH_PROGS) # tests/tools/test_bench_flops.py runs train_step
$(BUILD)/bench/%: tests/bench/%.c $(REL)/libcav.a
	@mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS_REL) $^ -o $@ $(LIBS)
bench: all refs $(BENCH_PROGS) | $(BUILD)/.check-deps
	@$(call ensure_debs,$(BENCH_DEBS))
	@for b in $(sort $(wildcard tests/bench/bench_*.sh tests/bench/bench_*.py)); do \
	  echo "== $$b"; case $$b in *.py) $(TEST_ENV) $(CAV_PYTHON) $$b ;; *) $(TEST_ENV) bash $$b ;; esac; done

# make gpu-bundle: .gpu-bundle/, what a lent GPU machine (no HDF5, Open MPI or network there) needs to run
# tests/bench/gpu_session.sh: the tools built here with their libraries (tests/bench/gpu_bundle.sh).
gpu-bundle: | $(BUILD)/config.mk
	@$(call ensure_debs,patchelf xz-utils)
	tests/bench/gpu_bundle.sh

# The README's demo: a small real dataset built here, pretraining and retrieval through the tools.
demo: all
	PATH="$(abspath $(BUILD)/bin):$$PATH" HDF5_PLUGIN_PATH="$(abspath $(BUILD)/plugin)" \
	  OMP_WAIT_POLICY=passive pipelines/demo.sh $(BUILD)/demo

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man5 \
	  $(DESTDIR)$(PREFIX)/share/man/man7 $(DESTDIR)$(PREFIX)/lib/hdf5/plugin
	install -m 755 $(TOOLS:%=$(BUILD)/bin/%) $(DESTDIR)$(PREFIX)/bin
	install -m 644 $(wildcard man/man1/*.1) $(DESTDIR)$(PREFIX)/share/man/man1
	$(if $(wildcard man/man5/*.5),install -m 644 $(wildcard man/man5/*.5) $(DESTDIR)$(PREFIX)/share/man/man5)
	$(if $(wildcard man/man7/*.7),install -m 644 $(wildcard man/man7/*.7) $(DESTDIR)$(PREFIX)/share/man/man7)
	$(if $(wildcard lib/formats/h5zstd_plugin.c),install -m 755 $(PLUGIN) $(DESTDIR)$(PREFIX)/lib/hdf5/plugin)

clean:
	rm -rf $(BUILD)

# libFuzzer targets (not part of check; install clang with FUZZ_DEBS): one per parser, tests/fuzz/fuzz_*.c,
# built with clang's coverage and ASan+UBSan over the library compiled the same way. `make fuzz` runs each
# for FUZZ_SECONDS (default 60) from its seed corpus tests/fuzz/corpus/NAME/ (media: the golden clips); the
# corpus grows in $(BUILD)/fuzz/corpus/NAME; crashes are left as $(BUILD)/fuzz/crash-NAME-*: fix them and
# add the input to tests/fuzz/regress/NAME/, which `make check` replays (tests/unit/test_fuzz_regress.c).
FUZZ_SECONDS ?= 60
FUZZ_CC ?= clang
FUZZ_DEBS := clang
FUZZ := $(BUILD)/fuzz
FUZZ_TARGETS := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_CFLAGS := -g -O1 -std=c11 -D_GNU_SOURCE -fopenmp -fsanitize=address,undefined -fno-sanitize-recover=undefined \
  $(LIB_INC) -Ikernels -Ikernels/cpu -Itests -DCAV_VERSION='"$(VERSION)"' $(DEP_CFLAGS)
$(FUZZ)/.deps: $(BUILD)/config.mk
	@mkdir -p $(@D)
	@$(call ensure_debs,$(FUZZ_DEBS))
	@touch $@
$(FUZZ)/obj/%.o: %.c $(FUZZ)/.deps
	@mkdir -p $(@D)
	@echo "  CC      $@"
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link $(if $(filter lib/media/rfft.c lib/media/fbank.c lib/media/torchmath.c,$<),-ffp-contract=off) -c $< -o $@
$(FUZZ)/libcav.a: $(LIB_SRC:%.c=$(FUZZ)/obj/%.o)
	@rm -f $@; ar rcs $@ $^
$(FUZZ)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_file.h $(FUZZ)/libcav.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $< $(FUZZ)/libcav.a -o $@ $(LIBS)
fuzz: $(FUZZ_TARGETS:%=$(FUZZ)/fuzz_%) $(PLUGIN) refs
	@mkdir -p $(FUZZ)/seed/avdecode
	@cp $(BUILD)/ref/gen_avextract/video/h264_25_short_4s.mp4 $(BUILD)/ref/gen_avextract/audio/*.ogg \
	  $(BUILD)/ref/gen_avextract/bad/truncated_head.mp4 $(FUZZ)/seed/avdecode/ 2>/dev/null || true
	@set -o pipefail; st=0; for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ)/corpus/$$t; seed=tests/fuzz/corpus/$$t; [ -d $$seed ] || seed=$(FUZZ)/seed/$$t; \
	  echo "== fuzz_$$t ($(FUZZ_SECONDS) s)"; \
	  (cd $(FUZZ) && HDF5_PLUGIN_PATH=$(abspath $(dir $(PLUGIN))) ./fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=20 \
	    -rss_limit_mb=2560 -max_len=262144 -print_final_stats=1 -artifact_prefix=crash-$$t- \
	    corpus/$$t $(abspath .)/$$seed 2>&1 | tail -12) || st=1; \
	done; exit $$st
