# ckptd: plain make + pkg-config.  `make`, `make check`, `make demo`,
# `make install PREFIX=... DESTDIR=...`.  SANITIZE=1 builds with ASan+UBSan.

PREFIX  ?= /usr/local
DESTDIR ?=
BINDIR      ?= $(PREFIX)/bin
MANDIR      ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
UNITDIR     ?= $(PREFIX)/lib/systemd/system
DOCDIR      ?= $(PREFIX)/share/doc/ckptd
EXAMPLESDIR ?= $(DOCDIR)/examples
BUILD   ?= build
VERSION := 0.1.0

CC      ?= cc
PKGS    := jansson libxml-2.0 libnbd nettle
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter \
           -Wshadow -Wformat=2 -Wvla -fno-strict-aliasing \
           -DCKPTD_VERSION='"$(VERSION)"' -I. \
           $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
# libxml2 is not linked: metadata/xmldl.c opens it on first use (it brings
# ICU and libstdc++, 2.4 MB resident, that a VM without XML never needs).
# nettle: SHA-256 for the pull's records (libnbd's gnutls loads it anyway).
LDLIBS  += $(shell pkg-config --libs jansson libnbd nettle 2>/dev/null) -lev -ldl -pthread
ifeq ($(SANITIZE),1)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -O1
LDFLAGS += -fsanitize=address,undefined
BUILD   := build-asan
endif

# Every module's .c goes into one static library; the two programs and the
# tests link against it.  agent/main.c is the daemon's main; ckptctl/ is the
# client, a program of its own on the same library.
LIB_SRCS := $(wildcard common/*.c qmp/*.c metadata/*.c bitmap/*.c nbd/*.c agent/*.c)
LIB_SRCS := $(filter-out agent/main.c,$(LIB_SRCS))
CTL_SRCS := $(wildcard ckptctl/*.c)
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
# Objects live under obj/ so that the client folder ckptctl/ and the
# program build/ckptctl do not collide.
CTL_OBJS := $(CTL_SRCS:%.c=$(BUILD)/obj/%.o)
LIB      := $(BUILD)/libckptd.a

UNIT_SRCS := $(wildcard tests/unit/test-*.c)
UNIT_BINS := $(UNIT_SRCS:%.c=$(BUILD)/%)
QEMU_SRCS := $(wildcard tests/qemu/test-*.c)
QEMU_BINS := $(QEMU_SRCS:%.c=$(BUILD)/%)
QEMU_SHELL_TESTS := $(wildcard tests/qemu/test-*.sh)
HARNESS   := $(addprefix $(BUILD)/obj/tests/qemu/,harness.o hq-inject.o hq-model.o)

.PHONY: all deps check check-unit check-qemu check-fuzz check-trixie tests fuzz demo clean install uninstall deb
.SECONDARY:

all: $(BUILD)/ckptd $(BUILD)/ckptctl $(BUILD)/qmp-send $(BUILD)/qmp-inject

# A one-shot QMP client for the demo and the shell tests (not installed).
$(BUILD)/qmp-send: tests/tools/qmp-send.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LDLIBS)

# The failure injector between the agent and QEMU (tests only).
$(BUILD)/qmp-inject: tests/tools/qmp-inject.c common/fdpass.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/obj/%.o: %.c $(wildcard */*.h) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(LIB): $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

# The agent opens libnbd on first use too (agent/nbddl.c): not linked.
$(BUILD)/ckptd: $(BUILD)/obj/agent/main.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(filter-out -lnbd,$(LDLIBS))

$(BUILD)/ckptctl: $(CTL_OBJS) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/unit/%: tests/unit/%.c $(LIB) $(wildcard */*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS) -lcmocka \
	    $(shell pkg-config --libs libxml-2.0 2>/dev/null)

$(BUILD)/tests/qemu/%: tests/qemu/%.c $(HARNESS) $(LIB) $(wildcard */*.h tests/qemu/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(HARNESS) $(LIB) $(LDLIBS)

# The test guest (tests/guest/): Debian's kernel and a busybox initramfs
# with qemu-ga, built once; the test-guest-* programs boot it.  Named in
# check and check-qemu too: .SECONDARY would not remake it for an
# up-to-date test program.
GUEST := $(BUILD)/guest/initramfs.cpio.gz
$(GUEST): tests/guest/build-initramfs.sh tests/guest/init
	tests/guest/build-initramfs.sh $(BUILD)/guest
$(filter $(BUILD)/tests/qemu/test-guest-%,$(QEMU_BINS)): $(GUEST)

# Fuzzing (clang's libFuzzer, with ASan and UBSan): a short run in
# `make check`, a long one in `make fuzz`.
FUZZ_DIR  := build-fuzz
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz-*.c)
FUZZ_BINS := $(FUZZ_SRCS:tests/fuzz/%.c=$(FUZZ_DIR)/%)
FUZZ_CFLAGS := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
           -Wall -Wextra -Werror -Wno-unused-parameter -Wshadow -Wformat=2 \
           -std=c11 -D_GNU_SOURCE -DCKPTD_VERSION='"$(VERSION)"' -I. \
           $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
FUZZ_SECONDS ?= 20

$(FUZZ_DIR)/fuzz-%: tests/fuzz/fuzz-%.c $(LIB_SRCS) $(wildcard */*.h)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -o $@ $< $(LIB_SRCS) $(LDLIBS)

check-fuzz: $(FUZZ_BINS)
	@BUILD_FUZZ=$(FUZZ_DIR) FUZZ_SECONDS=$(FUZZ_SECONDS) tests/fuzz/run.sh

fuzz: deps $(FUZZ_BINS)
	@BUILD_FUZZ=$(FUZZ_DIR) FUZZ_SECONDS=$${FUZZ_SECONDS:-600} tests/fuzz/run.sh

# Installs the Debian packages the build, the tests and the demo need.
deps:
	@scripts/deps.sh

# Every test, one summary line at the end.  The fuzzers (already built
# with ASan) run once, in the plain build's check.
ifeq ($(SANITIZE),1)
CHECK_FUZZ :=
else
CHECK_FUZZ := tests/fuzz/run.sh
endif

check: deps
	$(MAKE) --no-print-directory all $(UNIT_BINS) $(QEMU_BINS) $(GUEST) $(if $(CHECK_FUZZ),$(FUZZ_BINS))
	@BUILD=$(BUILD) BUILD_FUZZ=$(FUZZ_DIR) FUZZ_SECONDS=$(FUZZ_SECONDS) \
	    tests/run-tests.sh $(UNIT_BINS) $(QEMU_BINS) $(QEMU_SHELL_TESTS) $(CHECK_FUZZ)

check-unit: all $(UNIT_BINS)
	@BUILD=$(BUILD) tests/run-tests.sh $(UNIT_BINS)

check-qemu: all $(QEMU_BINS) $(GUEST)
	@BUILD=$(BUILD) tests/run-tests.sh $(QEMU_BINS) $(QEMU_SHELL_TESTS)

# `make check` on Debian 13 and its QEMU 10, from any Debian machine (as
# root): in a trixie root file system that scripts/trixie-root.sh builds with
# mmdebstrap and caches in /var/cache/ckptd-ci, on a copy of this tree.
check-trixie:
	@scripts/trixie-root.sh check

demo: deps
	$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) contrib/demo.sh

# Installation: PREFIX and DESTDIR as usual; each directory can be moved on
# its own (the unit goes to $(PREFIX)/lib/systemd/system: /usr/lib/... for
# PREFIX=/usr, the merged-/usr location Debian's rules use too).  The unit's
# ExecStart names $(BINDIR)/ckptd, so the installed unit runs the installed
# agent.  The examples keep their paths under contrib/.  `make uninstall`
# with the same variables removes exactly these files.
INSTALL_BINS     := ckptd ckptctl
INSTALL_EXAMPLES := launch-vm.sh ckptd.conf systemd/qemu-vm@.service \
                    systemd/ckptd@.service.d/qemu-vm.conf systemd/vm1.env \
                    container/Containerfile container/README.md

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man8 \
	    $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(UNITDIR)
	install -m 0755 $(addprefix $(BUILD)/,$(INSTALL_BINS)) $(DESTDIR)$(BINDIR)/
	install -m 0644 doc/ckptctl.1 $(DESTDIR)$(MANDIR)/man1/ckptctl.1
	install -m 0644 doc/ckptd.8 $(DESTDIR)$(MANDIR)/man8/ckptd.8
	install -m 0644 contrib/bash-completion/ckptctl $(DESTDIR)$(BASHCOMPDIR)/ckptctl
	sed 's|/usr/bin/ckpt|$(BINDIR)/ckpt|g' contrib/systemd/ckptd@.service \
	    >$(DESTDIR)$(UNITDIR)/ckptd@.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/ckptd@.service
	for f in $(INSTALL_EXAMPLES); do \
	    mode=0644; case $$f in *.sh) mode=0755;; esac; \
	    install -D -m $$mode contrib/$$f $(DESTDIR)$(EXAMPLESDIR)/$$f || exit 1; \
	done

uninstall:
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(INSTALL_BINS)) \
	    $(DESTDIR)$(MANDIR)/man1/ckptctl.1 $(DESTDIR)$(MANDIR)/man8/ckptd.8 \
	    $(DESTDIR)$(BASHCOMPDIR)/ckptctl $(DESTDIR)$(UNITDIR)/ckptd@.service \
	    $(addprefix $(DESTDIR)$(EXAMPLESDIR)/,$(INSTALL_EXAMPLES))
	-rmdir $(DESTDIR)$(EXAMPLESDIR)/systemd/ckptd@.service.d $(DESTDIR)$(EXAMPLESDIR)/systemd \
	    $(DESTDIR)$(EXAMPLESDIR)/container $(DESTDIR)$(EXAMPLESDIR) $(DESTDIR)$(DOCDIR) 2>/dev/null

# The Debian package, built from a copy of the tree in $(BUILD)/deb/src so
# that debian/'s by-products stay out of the work tree; the .deb lands in
# $(BUILD)/deb/.  The outer make's variables are not passed down: the
# package is always a plain build.
deb:
	rm -rf $(BUILD)/deb
	mkdir -p $(BUILD)/deb/src
	tar -cf - --exclude=./.git --exclude=./build --exclude='./build-*' \
	    . | tar -C $(BUILD)/deb/src -xf -
	cd $(BUILD)/deb/src && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u BUILD -u SANITIZE \
	    dpkg-buildpackage -us -uc -b
	@ls $(BUILD)/deb/ckptd_*.deb

clean:
	rm -rf build build-asan build-fuzz build-clang

# `make bench`: ckptd against libvirt 9.0 and against the limit (bare QMP,
# nbdcopy) on this machine, in one run; prints one table and writes it to
# BENCHMARKS.md (bench/bench.sh; as root it installs and starts libvirt).
# BENCH_QUICK=1 runs fewer repetitions.  The tools are built here.
BENCH_TOOLS := $(addprefix $(BUILD)/bench/,qmpbench timeit agentstart nbdpull extread)
.PHONY: bench

$(BUILD)/bench/%: bench/%.c $(LIB) $(wildcard */*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Wall -Wextra -Werror $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS)

bench: deps
	$(MAKE) --no-print-directory all $(BENCH_TOOLS)
	@BUILD=$(BUILD) bench/bench.sh

# Every test program and bench tool built, none run (the clang build in CI).
tests: all $(UNIT_BINS) $(QEMU_BINS) $(BENCH_TOOLS)
