# fedopt — plain GNU Makefile.
#
#   make                      build build/libfedopt.a, build/fedopt-server, build/fedopt-client
#   make demo                 a real federation over TLS (deploy/demo.sh, a few minutes)
#   make test                 build and run every test program, then print a summary
#   make check-vectors        replay the ServerOpt test vectors (FEDOPT_VECTORS=DIR to choose)
#   make bench                build and run the benchmarks (prints figures)
#   make fuzz                 build the libFuzzer targets (tests/fuzz/fuzz_*.c) with clang and run
#                             each for FUZZ_SECONDS (default 30) on its corpus tests/fuzz/corpus/NAME
#   make test-long            the tests plus the slow accuracy runs
#   make soak                 the reliability soak (tests/soak/soak.sh, tens of minutes): kill -9 +
#                             --resume loop, faults and chaos under ASan/UBSan (built in
#                             $(BUILD)-asan), 1,000 clients, every fuzz target SOAK_FUZZ_SECONDS
#   make client               the client alone (make BLAS=none client: without OpenBLAS)
#   make install              binaries, systemd units, example configs (PREFIX, DESTDIR)
#   make image                the OCI image with podman (deploy/Containerfile; IMAGE, IMAGE_BASE)
#   make test-image           build the image, then run a federation from it (minutes)
#   make cross-deps ARCH=A    install what a cross build of the client needs (A: arm64, armhf,
#                             riscv64: its libraries are built from Debian's sources)
#   make ARCH=A client        cross-build the client into build-A/ (or CROSS=aarch64-linux-gnu,
#                             CROSS=arm-linux-gnueabihf, CROSS=riscv64-linux-gnu); docs/devices.md
#   make test-cross ARCH=A    the engine's and client's unit tests under qemu-user, then the
#                             mixed-architecture federation (slow; not part of make test;
#                             heavy cases run smaller under the emulator, with an
#                             "emulated:" line; FEDOPT_TEST_TIMEOUT, FEDOPT_TEST_TIME_FACTOR)
#   make DNNL=0               the engine without oneDNN (the default on x86-64 is DNNL=1)
#   make LIBDEFLATE=0         CRC-32 from zlib instead of libdeflate (the default natively is 1)
#   make SANITIZE=address,undefined test
#   make CC=clang CFLAGS='-O1 -g'
#
# Any Debian package that is missing is installed first by deploy/install-deps.sh.

# Cross builds (the client only; docs/devices.md): ARCH names a Debian
# architecture, CROSS a GNU triplet; either implies the other.
ARCH ?=
CROSS ?=
RISCV64_PREFIX ?= /opt/fedopt-riscv64
CROSS_arm64 := aarch64-linux-gnu
CROSS_armhf := arm-linux-gnueabihf
CROSS_riscv64 := riscv64-linux-gnu
ifneq ($(ARCH),)
ifeq ($(CROSS),)
CROSS := $(CROSS_$(ARCH))
endif
ifeq ($(CROSS),)
$(error ARCH must be arm64, armhf or riscv64 (or give CROSS=triplet))
endif
endif
ifneq ($(CROSS),)
ARCH := $(firstword $(foreach a,arm64 armhf riscv64,$(if $(filter $(CROSS),$(CROSS_$(a))),$(a))))
ifeq ($(ARCH),)
$(error CROSS must be aarch64-linux-gnu, arm-linux-gnueabihf or riscv64-linux-gnu)
endif
ifeq ($(origin CC),default)
CC := $(CROSS)-gcc
endif
ifeq ($(origin AR),default)
AR := $(CROSS)-ar
endif
STRIP := $(CROSS)-strip
ifeq ($(ARCH),riscv64)
# Debian 12 has no riscv64 packages: deploy/cross-riscv64-libs.sh (run by
# `make cross-deps ARCH=riscv64`) builds the client's libraries from Debian's
# source packages, static, into RISCV64_PREFIX; there is no OpenBLAS.
PKG_CONFIG ?= PKG_CONFIG_LIBDIR=$(RISCV64_PREFIX)/lib/pkgconfig pkg-config --static
BLAS ?= none
ifneq ($(BLAS),none)
$(error a riscv64 build has no OpenBLAS: use BLAS=none (docs/devices.md))
endif
endif
PKG_CONFIG ?= PKG_CONFIG_LIBDIR=/usr/lib/$(CROSS)/pkgconfig:/usr/share/pkgconfig pkg-config
BUILD ?= build-$(ARCH)
QEMU_arm64 := aarch64
QEMU_armhf := arm
# riscv64 has no multiarch libc: its loader and libc are the cross
# toolchain's (libc6-riscv64-cross), one glibc build, so -L is right there.
QEMU_riscv64 := riscv64 -L /usr/$(CROSS)
# qemu-user runs the cross-built programs with the target's loader and
# libraries from the multiarch packages (/lib/ld-linux-*.so, /usr/lib/$(CROSS)).
# Not -L /usr/$(CROSS): that loader is the cross toolchain's glibc build,
# which does not match the multiarch libc.so.6 it then loads, and the first
# pthread_create never returned (docs/devices.md).
QEMU ?= qemu-$(QEMU_$(ARCH))
endif

CC ?= cc
STRIP ?= strip
PKG_CONFIG ?= pkg-config
CFLAGS ?= -O2 -g
# The numeric kernels (ServerOpt, the parameter buffer, the training engine)
# are built with these on top of CFLAGS: their loops only vectorize at -O3.
HOT_CFLAGS ?= -O3
LDFLAGS ?=
SANITIZE ?=
BLAS ?= openblas
# oneDNN (Debian's libdnnl, amd64 only) as the backend of conv2d and of the dense and LSTM
# layers' products: on by default on x86-64 with OpenBLAS (not in a cross build); DNNL=0 leaves
# conv2d on its own im2col/Winograd path and every product on OpenBLAS.
ifeq ($(shell uname -m)-$(BLAS)-$(CROSS),x86_64-openblas-)
DNNL ?= 1
else
DNNL ?= 0
endif
# libdeflate's CRC-32 (Debian's libdeflate, the same checksum as zlib's, several times faster
# with the CPU's carry-less multiply) for fl_crc32: every received tensor is checksummed
# (bench_tls). On by default in a native build; a cross build (LIBDEFLATE=0) keeps zlib's.
ifeq ($(CROSS),)
LIBDEFLATE ?= 1
else
LIBDEFLATE ?= 0
endif
BUILD ?= build
# Which packages deploy/install-deps.sh makes sure of: all (build and test) or
# build (just `make all`, as the image's build stage does).
FEDOPT_DEPS ?= all
PREFIX ?= /usr/local
DESTDIR ?=

# `make` alone builds everything (the config rule below must not become the default).
.DEFAULT_GOAL := all

# Flags every build needs; the user's CFLAGS come on top.
FL_CFLAGS := -std=c11 -D_DEFAULT_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter \
             -fno-strict-aliasing -MMD -MP -I. -I$(BUILD)
# 32-bit ARM: 64-bit file offsets. Without them readdir() fails with
# EOVERFLOW when the file system hands out 64-bit directory cookies (ext4
# under qemu-user on a 64-bit host: the idx and LEAF loaders found no files).
ifeq ($(ARCH),armhf)
FL_CFLAGS += -D_FILE_OFFSET_BITS=64
endif
ifneq ($(SANITIZE),)
FL_CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=$(SANITIZE)
endif

# A cross build makes only the client; it uses the same libraries (the
# device client reads an INI file and may serve metrics).
PKGS := libuv libprotobuf-c sqlite3 zlib inih libmicrohttpd
ifeq ($(BLAS),openblas)
PKGS += openblas
FL_CFLAGS += -DFL_HAVE_OPENBLAS=1
else ifeq ($(BLAS),none)
FL_CFLAGS += -DFL_HAVE_OPENBLAS=0
else
$(error BLAS must be openblas or none)
endif
ifeq ($(LIBDEFLATE),1)
FL_CFLAGS += -DFL_HAVE_LIBDEFLATE=1
else ifeq ($(LIBDEFLATE),0)
FL_CFLAGS += -DFL_HAVE_LIBDEFLATE=0
else
$(error LIBDEFLATE must be 1 or 0)
endif

# Every invocation (but clean/help) first makes sure the Debian packages are
# there: deploy/install-deps.sh is a fast no-op when nothing is missing, and
# installs what is (apt-get, sudo when not root) otherwise. Package flags are
# then computed once and cached in $(BUILD)/config-$(BLAS).mk.
# A cross build only checks its own packages (installing them adds a foreign
# architecture to dpkg, which only `make cross-deps ARCH=...` does) and never
# installs native ones it does not use.
NODEPS_GOALS := clean distclean help cross-deps
ifneq ($(filter-out $(NODEPS_GOALS),$(or $(MAKECMDGOALS),all)),)
ifeq ($(CROSS),)
DEPS_STATUS := $(shell FEDOPT_DEPS=$(FEDOPT_DEPS) sh deploy/install-deps.sh >&2 && echo ok)
ifneq ($(DEPS_STATUS),ok)
$(error deploy/install-deps.sh could not install the packages fedopt needs (see above))
endif
else
DEPS_STATUS := $(shell FEDOPT_RISCV64_PREFIX=$(RISCV64_PREFIX) sh deploy/install-deps.sh --check --arch $(ARCH) >&2 && echo ok)
ifneq ($(DEPS_STATUS),ok)
$(error the $(ARCH) cross build lacks packages: run `make cross-deps ARCH=$(ARCH)` (as root or with sudo; docs/devices.md))
endif
endif
-include $(BUILD)/config-$(BLAS).mk
ifeq ($(DNNL),1)
# libgomp for omp_set_num_threads: oneDNN's Debian build runs on OpenMP.
PKG_LIBS += -ldnnl -lgomp
endif
ifeq ($(LIBDEFLATE),1)
PKG_LIBS += -ldeflate
endif
endif
ifeq ($(DNNL),1)
FL_CFLAGS += -DFL_HAVE_DNNL=1
else ifeq ($(DNNL),0)
FL_CFLAGS += -DFL_HAVE_DNNL=0
else
$(error DNNL must be 1 or 0)
endif

$(BUILD)/config-$(BLAS).mk: deploy/install-deps.sh Makefile
	@mkdir -p $(BUILD)
	@{ echo "PKG_CFLAGS := $$($(PKG_CONFIG) --cflags $(PKGS))"; \
	   echo "PKG_LIBS := $$($(PKG_CONFIG) --libs $(PKGS)) -lmbedtls -lmbedx509 -lmbedcrypto -lpthread -lm"; \
	   echo "CMOCKA_CFLAGS := $$($(PKG_CONFIG) --cflags cmocka)"; \
	   echo "CMOCKA_LIBS := $$($(PKG_CONFIG) --libs cmocka)"; } > $@

ALL_CFLAGS = $(FL_CFLAGS) $(PKG_CFLAGS) $(CFLAGS)
HOT_OBJS = $(BUILD)/server/serveropt.o $(BUILD)/common/base/params.o $(BUILD)/common/nn/%.o
$(HOT_OBJS): ALL_CFLAGS += $(HOT_CFLAGS)
# ServerOpt's adaptive steps take a square root per element; with errno set
# by sqrt (C's default) GCC keeps a scalar call path and does not vectorize
# the loop. Its arguments are never negative, so no errno is lost.
$(BUILD)/server/serveropt.o: ALL_CFLAGS += -fno-math-errno
# Loops with a float compare (ReLU's x > 0 ? dy : 0, max pooling, the
# LSTM's clamped exp) only vectorize when the compiler may if-convert FP
# compares, which -ftrapping-math forbids because a compare could raise an
# FP exception. fedopt never enables FP traps, and without this ReLU's
# backward ran as a mispredicted branch per element (bench_train measures
# the steps that run it).
$(BUILD)/common/nn/%.o: ALL_CFLAGS += -fno-trapping-math

# Objects depend on the flags they were built with: changing CC, CFLAGS,
# SANITIZE or BLAS rebuilds everything.
FLAGS_STAMP := $(BUILD)/.flags
FLAGS_NOW = $(CC) $(ALL_CFLAGS) $(HOT_CFLAGS) $(LDFLAGS)
$(FLAGS_STAMP): FORCE
	@mkdir -p $(BUILD)
	@echo '$(FLAGS_NOW)' | cmp -s - $@ || echo '$(FLAGS_NOW)' > $@

# Generated protobuf-c code.
PROTOS := $(wildcard proto/*.proto)
PROTO_C := $(PROTOS:%.proto=$(BUILD)/%.pb-c.c)
PROTO_H := $(PROTOS:%.proto=$(BUILD)/%.pb-c.h)
$(BUILD)/proto/%.pb-c.c $(BUILD)/proto/%.pb-c.h: proto/%.proto | $(BUILD)/config-$(BLAS).mk
	@mkdir -p $(dir $@)
	protoc-c --c_out=$(BUILD) $<

# Generated code is compiled with the project's flags like any other object.
$(BUILD)/proto/%.pb-c.o: $(BUILD)/proto/%.pb-c.c $(FLAGS_STAMP) | $(BUILD)/config-$(BLAS).mk
	$(CC) $(ALL_CFLAGS) -c $< -o $@

LIB_SRCS := $(wildcard common/*/*.c)
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/%.o) $(PROTO_C:%.c=%.o)
SERVER_OBJS := $(patsubst %.c,$(BUILD)/%.o,$(wildcard server/*.c))
# Server modules without the entry point and the subcommands, for the tests.
SERVER_LIB_OBJS := $(filter-out $(BUILD)/server/main.o $(BUILD)/server/cmd_%.o,$(SERVER_OBJS))
SERVER_LIB := $(BUILD)/libfedopt-server.a
CLIENT_OBJS := $(patsubst %.c,$(BUILD)/%.o,$(wildcard client/*.c))
# Client modules without the entry point and the subcommands (the session,
# the fleet), for the tests and benchmarks.
CLIENT_LIB_OBJS := $(filter-out $(BUILD)/client/main.o $(BUILD)/client/cmd_%.o,$(CLIENT_OBJS))
CLIENT_LIB := $(BUILD)/libfedopt-client.a
TEST_SUPPORT_OBJS := $(patsubst %.c,$(BUILD)/%.o,$(wildcard tests/support/*.c))
TEST_SRCS := $(wildcard tests/unit/test_*.c)
TEST_BINS := $(TEST_SRCS:tests/unit/%.c=$(BUILD)/tests/%)
TOOL_SRCS := $(wildcard tests/tools/*.c)
TOOL_BINS := $(TOOL_SRCS:tests/tools/%.c=$(BUILD)/tools/%)
BENCH_SRCS := $(wildcard tests/bench/bench_*.c)
BENCH_BINS := $(BENCH_SRCS:tests/bench/%.c=$(BUILD)/bench/%)

LIB := $(BUILD)/libfedopt.a
SERVER := $(BUILD)/fedopt-server
CLIENT := $(BUILD)/fedopt-client

.PHONY: image test-image demo soak fuzz fuzz-build all server client test test-long check-vectors bench clean distclean help install FORCE
.PHONY: cross-deps test-cross
ifeq ($(CROSS),)
all: $(LIB) $(SERVER) $(CLIENT)
server: $(SERVER)
# Test programs link the server's modules too.
TEST_LIBS := $(SERVER_LIB) $(CLIENT_LIB) $(LIB)
else
# A device gets the client only.
all: $(CLIENT)
server:
	@echo "the server is not built for devices (ARCH=$(ARCH)): build it natively" >&2; exit 1
TEST_LIBS := $(CLIENT_LIB) $(LIB)
endif
client: $(CLIENT)

$(BUILD)/%.o: %.c $(FLAGS_STAMP) | $(BUILD)/config-$(BLAS).mk $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/tests/%.o: tests/unit/%.c $(FLAGS_STAMP) | $(BUILD)/config-$(BLAS).mk $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(CMOCKA_CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJS)
	@rm -f $@
	$(AR) rcs $@ $^

$(SERVER_LIB): $(SERVER_LIB_OBJS)
	@rm -f $@
	$(AR) rcs $@ $^

$(CLIENT_LIB): $(CLIENT_LIB_OBJS)
	@rm -f $@
	$(AR) rcs $@ $^

$(SERVER): $(SERVER_OBJS) $(LIB)
	$(CC) $(ALL_CFLAGS) -o $@ $(SERVER_OBJS) $(LIB) $(PKG_LIBS) $(LDFLAGS)

$(CLIENT): $(CLIENT_OBJS) $(LIB)
	$(CC) $(ALL_CFLAGS) -o $@ $(CLIENT_OBJS) $(LIB) $(PKG_LIBS) $(LDFLAGS)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(TEST_SUPPORT_OBJS) $(TEST_LIBS)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(TEST_SUPPORT_OBJS) $(TEST_LIBS) $(PKG_LIBS) $(CMOCKA_LIBS) $(LDFLAGS)

$(BUILD)/bench/%: $(BUILD)/tests/bench/%.o $(TEST_SUPPORT_OBJS) $(SERVER_LIB) $(CLIENT_LIB) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(TEST_SUPPORT_OBJS) $(SERVER_LIB) $(CLIENT_LIB) $(LIB) $(PKG_LIBS) $(LDFLAGS)

# Helper programs of the integration tests (e.g. a minimal protocol client).
$(BUILD)/tools/%: $(BUILD)/tests/tools/%.o $(SERVER_LIB) $(CLIENT_LIB) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(SERVER_LIB) $(CLIENT_LIB) $(LIB) $(PKG_LIBS) $(LDFLAGS)

# Keep test object files: they are ordinary intermediates otherwise.
.SECONDARY:

# The README's first command: a real federation over TLS on this machine.
demo: all
	@sh deploy/demo.sh $(BUILD)

test: all $(TEST_BINS) $(TOOL_BINS)
	@sh tests/run-tests.sh $(BUILD)

# Slow accuracy runs (full-epoch trainings) live behind this target.
test-long: all $(TEST_BINS) $(TOOL_BINS)
	@FEDOPT_TEST_LONG=1 sh tests/run-tests.sh $(BUILD)

# The container image (deploy/build-image.sh says how the base is made).
IMAGE ?= localhost/fedopt:latest
IMAGE_BASE ?=
image:
	@FEDOPT_DEPS=image sh deploy/install-deps.sh
	IMAGE=$(IMAGE) IMAGE_BASE=$(IMAGE_BASE) BUILD=$(BUILD) sh deploy/build-image.sh

# The image test also runs (quickly skipping) in `make test` when no image exists.
test-image: image all
	FEDOPT_IMAGE=$(IMAGE) sh tests/integration/test_image.sh $(BUILD)

check-vectors: $(BUILD)/tests/test_serveropt_vectors
	$(BUILD)/tests/test_serveropt_vectors

# Cross builds: the packages (deploy/install-deps.sh --arch), then the
# engine's and client's unit tests under qemu-user (the server's need the
# server, which devices do not get), then the tests/cross scripts (the mixed
# federation: a native server and fleet with emulated clients, so the native
# build is made first, in build/).
cross-deps:
	@test -n "$(ARCH)" || { echo "usage: make cross-deps ARCH=arm64|armhf|riscv64" >&2; exit 1; }
	FEDOPT_RISCV64_PREFIX=$(RISCV64_PREFIX) sh deploy/install-deps.sh --arch $(ARCH)

# Every unit test but those that include a server module (test_server_*,
# test_serveropt*, the experiment grid's): a device build has no server.
SERVER_TEST_SRCS := $(shell grep -l '^\#include "server/' $(TEST_SRCS))
CROSS_TESTS := $(filter-out $(SERVER_TEST_SRCS:tests/unit/%.c=$(BUILD)/tests/%),$(TEST_BINS))
NATIVE_BUILD ?= build
# The mixed federation also takes the other architectures' clients already built.
CROSS_OTHERS = $(foreach a,$(filter-out $(ARCH),arm64 armhf riscv64),$(if $(wildcard build-$(a)/fedopt-client),$(a):build-$(a)/fedopt-client))
ifneq ($(CROSS),)
test-cross: $(CLIENT) $(CROSS_TESTS)
	$(MAKE) CROSS= ARCH= BUILD=$(NATIVE_BUILD) all $(NATIVE_BUILD)/tools/fl_delta_diff
	@FEDOPT_TEST_WRAPPER="$(QEMU)" FEDOPT_TEST_TIMEOUT=$${FEDOPT_TEST_TIMEOUT:-3600} \
	    FEDOPT_CROSS_CLIENTS="$(ARCH):$(BUILD)/fedopt-client $(CROSS_OTHERS)" \
	    sh tests/run-tests.sh $(BUILD) tests/cross $(NATIVE_BUILD)
else
test-cross:
	@echo "usage: make test-cross ARCH=arm64|armhf|riscv64" >&2; exit 1
endif

# PyTorch on this machine is the speed reference of the engine's goals; it is
# measured only where Debian's python3-torch is installed (not a dependency).
TORCH_PYTHON ?= /usr/bin/python3
bench: all $(BENCH_BINS) $(TOOL_BINS)
	@for b in $(BENCH_BINS); do echo "== $$b"; $$b || exit 1; done
	@echo "== tests/bench/torch_reference.py"; \
	if $(TORCH_PYTHON) -c 'import torch' 2>/dev/null; then \
	  for t in 1 2; do OMP_NUM_THREADS=$$t $(TORCH_PYTHON) tests/bench/torch_reference.py $$t || exit 1; done; \
	  echo "== tests/bench/torch_pairs.sh"; sh tests/bench/torch_pairs.sh $(BUILD) $(TORCH_PYTHON) || exit 1; \
	else echo "no python3-torch here: PyTorch reference skipped"; fi

# libFuzzer targets: every tests/fuzz/fuzz_NAME.c, linked against the library
# compiled again with clang and -fsanitize=fuzzer-no-link,address,undefined in
# $(FUZZ_BUILD), so the normal build is never disturbed. Each runs for
# FUZZ_SECONDS on a scratch copy of tests/fuzz/corpus/NAME (new inputs go to
# $(FUZZ_BUILD)/corpus/NAME; crashes to $(FUZZ_BUILD)/crash-NAME-*).
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 30
FUZZ_BUILD := $(BUILD)/fuzz
FUZZ_SAN := -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all
FUZZ_CFLAGS = -std=c11 -D_DEFAULT_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter \
              -fno-strict-aliasing -I. -I$(BUILD) $(PKG_CFLAGS) -g -O1 -fno-omit-frame-pointer \
              $(FUZZ_SAN)
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS := $(FUZZ_SRCS:tests/fuzz/%.c=$(FUZZ_BUILD)/%)
FUZZ_LIB := $(FUZZ_BUILD)/libfedopt-fuzz.a
FUZZ_LIB_OBJS := $(LIB_SRCS:%.c=$(FUZZ_BUILD)/%.o) $(PROTO_C:$(BUILD)/%.c=$(FUZZ_BUILD)/%.o)

$(FUZZ_BUILD)/proto/%.pb-c.o: $(BUILD)/proto/%.pb-c.c | $(BUILD)/config-$(BLAS).mk
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c $< -o $@

$(FUZZ_BUILD)/common/%.o: common/%.c | $(BUILD)/config-$(BLAS).mk $(PROTO_H)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -MMD -MP -c $< -o $@

$(FUZZ_LIB): $(FUZZ_LIB_OBJS)
	@rm -f $@
	$(AR) rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_LIB) | $(BUILD)/config-$(BLAS).mk
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_LIB) $(PKG_LIBS)

fuzz-build: $(FUZZ_BINS)

fuzz: $(FUZZ_BINS)
	@for b in $(FUZZ_BINS); do \
	    name=$$(basename $$b | sed 's/^fuzz_//'); \
	    mkdir -p $(FUZZ_BUILD)/corpus/$$name; rm -f $(FUZZ_BUILD)/crash-$$name-*; \
	    echo "== fuzz $$name for $(FUZZ_SECONDS)s"; \
	    $$b -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	        -artifact_prefix=$(FUZZ_BUILD)/crash-$$name- \
	        $(FUZZ_BUILD)/corpus/$$name tests/fuzz/corpus/$$name 2>&1 \
	        | grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss|==[0-9]+==ERROR|SUMMARY|INFO: seed corpus)' ; \
	    ls $(FUZZ_BUILD)/crash-$$name-* >/dev/null 2>&1 && { echo "fuzz $$name: CRASH (see $(FUZZ_BUILD)/crash-$$name-*)"; exit 1; }; \
	    echo "fuzz $$name: no crash"; \
	done

# The soak (docs/reliability.md): long, so never part of `make test`. The
# sanitizer build goes to its own directory so the normal one is kept.
SOAK_ASAN_BUILD ?= $(BUILD)-asan
soak: all $(TOOL_BINS)
	$(MAKE) --no-print-directory SANITIZE=address,undefined BUILD=$(SOAK_ASAN_BUILD) \
	    $(SOAK_ASAN_BUILD)/fedopt-server $(SOAK_ASAN_BUILD)/fedopt-client \
	    $(TOOL_BINS:$(BUILD)/%=$(SOAK_ASAN_BUILD)/%)
	@sh tests/soak/soak.sh $(BUILD) $(SOAK_ASAN_BUILD)

# The unit's paths follow PREFIX; the example configuration is installed as
# server.ini only when none exists (an installed one is never overwritten).
# The service runs as user fedopt: the sysusers.d file declares it, and
# deploy/install-owner.sh creates it on the live system and gives it the
# config (group, mode 0640) and the state directory.
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(if $(filter /usr/local,$(PREFIX)),/etc,$(PREFIX)/etc))
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
# The unit's StateDirectory= (systemd would create it too; this serves a start without systemd).
STATEDIR := /var/lib/fedopt-server
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/fedopt \
		$(DESTDIR)$(PREFIX)/share/doc/fedopt $(DESTDIR)$(SYSUSERSDIR)
	install -d -m 700 $(DESTDIR)$(STATEDIR)
	install -m 755 $(SERVER) $(CLIENT) $(DESTDIR)$(PREFIX)/bin/
	sed -e 's#@BINDIR@#$(PREFIX)/bin#g' -e 's#@SYSCONFDIR@#$(SYSCONFDIR)#g' -e 's#@PREFIX@#$(PREFIX)#g' deploy/fedopt-server.service \
		> $(DESTDIR)$(UNITDIR)/fedopt-server.service
	chmod 644 $(DESTDIR)$(UNITDIR)/fedopt-server.service
	sed -e 's#@BINDIR@#$(PREFIX)/bin#g' -e 's#@SYSCONFDIR@#$(SYSCONFDIR)#g' -e 's#@PREFIX@#$(PREFIX)#g' deploy/fedopt-client.service \
		> $(DESTDIR)$(UNITDIR)/fedopt-client.service
	chmod 644 $(DESTDIR)$(UNITDIR)/fedopt-client.service
	install -m 644 deploy/fedopt-client.ini $(DESTDIR)$(PREFIX)/share/doc/fedopt/fedopt-client.ini.example
	test -e $(DESTDIR)$(SYSCONFDIR)/fedopt/client.ini || \
		install -m 640 deploy/fedopt-client.ini $(DESTDIR)$(SYSCONFDIR)/fedopt/client.ini
	install -m 644 deploy/fedopt.sysusers.conf $(DESTDIR)$(SYSUSERSDIR)/fedopt.conf
	install -m 644 deploy/fedopt-server.ini $(DESTDIR)$(PREFIX)/share/doc/fedopt/fedopt-server.ini.example
	test -e $(DESTDIR)$(SYSCONFDIR)/fedopt/server.ini || \
		install -m 640 deploy/fedopt-server.ini $(DESTDIR)$(SYSCONFDIR)/fedopt/server.ini
	install -d $(DESTDIR)$(PREFIX)/share/doc/fedopt/docs
	install -m 644 README.md ARCHITECTURE.md $(DESTDIR)$(PREFIX)/share/doc/fedopt/
	install -m 644 docs/*.md $(DESTDIR)$(PREFIX)/share/doc/fedopt/docs/
	sh deploy/install-owner.sh "$(DESTDIR)" $(SYSUSERSDIR)/fedopt.conf $(SYSCONFDIR)/fedopt/server.ini $(STATEDIR)

clean:
	rm -rf $(BUILD)

distclean: clean

help:
	@sed -n '2,/^$$/p' Makefile | sed 's/^# \{0,1\}//'

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
