# ckptd: plain make + pkg-config.  `make`, `make check`, `make demo`,
# `make install PREFIX=... DESTDIR=...`.  SANITIZE=1 builds with ASan+UBSan.

PREFIX  ?= /usr/local
DESTDIR ?=
BUILD   ?= build
VERSION := 0.1.0

CC      ?= cc
PKGS    := jansson libxml-2.0 libnbd
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter \
           -Wshadow -Wformat=2 -fno-strict-aliasing \
           -DCKPTD_VERSION='"$(VERSION)"' -I. \
           $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS  += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lev
ifeq ($(SANITIZE),1)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -O1
LDFLAGS += -fsanitize=address,undefined
BUILD   := build-asan
endif

# Every module's .c goes into one static library; the two programs and the
# tests link against it.  agent/main.c and agent/ckptctl*.c hold the mains.
LIB_SRCS := $(wildcard common/*.c qmp/*.c metadata/*.c bitmap/*.c nbd/*.c agent/*.c)
LIB_SRCS := $(filter-out agent/main.c agent/ckptctl%.c,$(LIB_SRCS))
CTL_SRCS := $(wildcard agent/ckptctl*.c)
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/%.o)
CTL_OBJS := $(CTL_SRCS:%.c=$(BUILD)/%.o)
LIB      := $(BUILD)/libckptd.a

UNIT_SRCS := $(wildcard tests/unit/test-*.c)
UNIT_BINS := $(UNIT_SRCS:%.c=$(BUILD)/%)
QEMU_SRCS := $(wildcard tests/qemu/test-*.c)
QEMU_BINS := $(QEMU_SRCS:%.c=$(BUILD)/%)
HARNESS   := $(BUILD)/tests/qemu/harness.o

.PHONY: all deps check check-unit check-qemu demo clean install uninstall
.SECONDARY:

all: $(BUILD)/ckptd $(BUILD)/ckptctl

$(BUILD)/%.o: %.c $(wildcard */*.h) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(LIB): $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/ckptd: $(BUILD)/agent/main.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/ckptctl: $(CTL_OBJS) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/unit/%: tests/unit/%.c $(LIB) $(wildcard */*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS) -lcmocka

$(BUILD)/tests/qemu/%: tests/qemu/%.c $(HARNESS) $(LIB) $(wildcard */*.h tests/qemu/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(HARNESS) $(LIB) $(LDLIBS)

# Installs the Debian packages the build, the tests and the demo need.
deps:
	@scripts/deps.sh

check: deps
	$(MAKE) --no-print-directory all $(UNIT_BINS) $(QEMU_BINS)
	@BUILD=$(BUILD) tests/run-tests.sh $(UNIT_BINS) $(QEMU_BINS)

check-unit: all $(UNIT_BINS)
	@BUILD=$(BUILD) tests/run-tests.sh $(UNIT_BINS)

check-qemu: all $(QEMU_BINS)
	@BUILD=$(BUILD) tests/run-tests.sh $(QEMU_BINS)

demo: deps
	$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) contrib/demo.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BUILD)/ckptd $(BUILD)/ckptctl $(DESTDIR)$(PREFIX)/bin/

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/ckptd $(DESTDIR)$(PREFIX)/bin/ckptctl

clean:
	rm -rf build build-asan
