# llmux build. `make` builds everything, `make run` starts the demo, `make test` runs every test,
# `make asan` runs the whole suite under ASan+UBSan, `make fuzz` fuzzes the parsers briefly,
# `make deb` builds the Debian package, `make soak` runs the fault soak (SOAK_SECONDS, SAN=1).
CC      ?= cc
BUILD   ?= build
PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
DESTDIR ?=
SAN     ?=
FUZZ_SECONDS ?= 30
SOAK_SECONDS ?= 300
PYTHON  ?= python3
VERSION := $(shell cat VERSION)

PKGS       := libcurl jansson yaml-0.1 libsystemd hiredis libcrypto
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
WARN    = -Wall -Wextra -Werror -Wformat=2 -Wstrict-prototypes -Wno-unused-parameter
CFLAGS ?= -O2 -g
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -DLLMUX_VERSION='"$(VERSION)"' -I. $(WARN) $(CFLAGS) \
             $(PKG_CFLAGS) -MMD -MP
ALL_LDFLAGS = $(LDFLAGS)
ifeq ($(SAN),1)
ALL_CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
ALL_LDFLAGS += -fsanitize=address,undefined
endif
LIBS = $(PKG_LIBS) -lev -lpthread -lm -lz

COMMON_SRC = $(wildcard common/*.c)
CONF_SRC   = $(wildcard conf/*.c)
UP_SRC     = $(wildcard upstream/*.c)
DAEMON_SRC = $(filter-out daemon/main.c,$(wildcard daemon/*.c))
CLIENT_SRC = $(wildcard client/*.c)
MOCK_SRC   = $(wildcard tests/mock/*.c)
UNIT_SRC   = $(wildcard tests/unit/test_*.c)

obj = $(patsubst %.c,$(BUILD)/%.o,$(1))
LIB_OBJS   = $(call obj,$(COMMON_SRC) $(CONF_SRC) $(UP_SRC) $(DAEMON_SRC))
UNIT_BINS  = $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))

LLMUXD = $(BUILD)/llmuxd
LLMUX  = $(BUILD)/llmux
MOCK   = $(BUILD)/mock_upstream
UNIT   = $(BUILD)/llmux.service

.PHONY: all deps test-deps run test unit integration asan fuzz bench soak deb clean install FORCE
.SECONDARY:
all: $(LLMUXD) $(LLMUX) $(MOCK) $(UNIT_BINS) $(UNIT)

# The systemd unit with this PREFIX's paths (BINDIR). Checked on every run, since PREFIX may
# differ from the last one; rewritten only when the text changes.
$(UNIT): systemd/llmux.service.in FORCE
	@mkdir -p $(dir $@)
	@sed 's|@BINDIR@|$(BINDIR)|g' systemd/llmux.service.in > $@.tmp
	@if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv $@.tmp $@; echo "unit $@ (BINDIR=$(BINDIR))"; fi

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

# The files that print the version rebuild when VERSION changes.
$(call obj,daemon/main.c daemon/metrics.c client/cli.c client/http.c): VERSION

$(BUILD)/libllmux.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(LLMUXD): $(call obj,daemon/main.c) $(BUILD)/libllmux.a
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(LLMUX): $(call obj,$(CLIENT_SRC) $(COMMON_SRC))
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(MOCK): $(call obj,$(MOCK_SRC) $(COMMON_SRC))
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(BUILD)/libllmux.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS) -lcmocka

deps:
	@sh scripts/deps.sh

test-deps:
	@sh scripts/deps.sh --test

run: deps
	@$(MAKE) --no-print-directory all
	@sh scripts/run-demo.sh $(BUILD)

unit: $(UNIT_BINS)
	@sh scripts/run-unit.sh $(UNIT_BINS)

integration: $(LLMUXD) $(LLMUX) $(MOCK) $(UNIT)
	$(PYTHON) tests/integration/run.py --build $(BUILD)

test: test-deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory unit integration

asan: test-deps
	@$(MAKE) --no-print-directory BUILD=build-asan SAN=1 CFLAGS="-O1 -g" all unit integration

FUZZ_CC = clang -std=c11 -D_GNU_SOURCE -I. -g -O1 -fsanitize=fuzzer,address,undefined
fuzz: deps
	@mkdir -p $(BUILD)/fuzz
	$(FUZZ_CC) tests/fuzz/fuzz_http_parser.c daemon/http_parser.c \
	    -o $(BUILD)/fuzz/fuzz_http_parser
	$(FUZZ_CC) tests/fuzz/fuzz_sse.c common/sse.c common/buf.c -o $(BUILD)/fuzz/fuzz_sse
	$(FUZZ_CC) $(PKG_CFLAGS) tests/fuzz/fuzz_conf.c $(CONF_SRC) $(COMMON_SRC) \
	    -o $(BUILD)/fuzz/fuzz_conf $(PKG_LIBS)
	$(FUZZ_CC) $(PKG_CFLAGS) tests/fuzz/fuzz_messages.c $(wildcard upstream/provider*.c) \
	    common/buf.c common/json_scan.c common/json_valid.c common/json_write.c \
	    -o $(BUILD)/fuzz/fuzz_messages $(PKG_LIBS)
	$(FUZZ_CC) $(PKG_CFLAGS) tests/fuzz/fuzz_json.c common/json_valid.c common/json_scan.c \
	    -o $(BUILD)/fuzz/fuzz_json $(PKG_LIBS)
	$(BUILD)/fuzz/fuzz_http_parser -max_total_time=$(FUZZ_SECONDS) -max_len=4096 \
	    tests/fuzz/corpus
	$(BUILD)/fuzz/fuzz_sse -max_total_time=$$(( $(FUZZ_SECONDS) / 2 + 1 )) -max_len=2048 \
	    tests/fuzz/corpus-sse
	$(BUILD)/fuzz/fuzz_conf -max_total_time=$$(( $(FUZZ_SECONDS) / 2 + 1 )) -max_len=4096 \
	    tests/fuzz/corpus-conf
	$(BUILD)/fuzz/fuzz_messages -max_total_time=$$(( $(FUZZ_SECONDS) / 2 + 1 )) -max_len=4096 \
	    tests/fuzz/corpus-messages
	$(BUILD)/fuzz/fuzz_json -max_total_time=$$(( $(FUZZ_SECONDS) / 2 + 1 )) -max_len=4096 \
	    tests/fuzz/corpus-json

bench: test-deps
	@$(MAKE) --no-print-directory all
	sh bench/run.sh $(BUILD)

# The fault soak (tests/soak/soak.py): SOAK_SECONDS of faults, drops and reloads; SAN=1 runs it
# on the sanitizer build and fails on any ASan/UBSan report.
SOAK_BUILD = $(if $(filter 1,$(SAN)),build-asan,$(BUILD))
soak: deps
	@$(MAKE) --no-print-directory BUILD=$(SOAK_BUILD) \
	    $(if $(filter 1,$(SAN)),SAN=1 CFLAGS="-O1 -g") all
	$(PYTHON) tests/soak/soak.py --build $(SOAK_BUILD) --seconds $(SOAK_SECONDS) \
	    $(if $(filter 1,$(SAN)),--san)

# The Debian package: a separate build with Debian's hardening flags and PREFIX=/usr, then
# scripts/build-deb.sh (dpkg-deb, control files in packaging/deb/).
DEB_BUILD ?= build-deb
DEB_FLAGS = BUILD=$(DEB_BUILD) PREFIX=/usr SAN= \
    CFLAGS="$$(dpkg-buildflags --get CFLAGS) $$(dpkg-buildflags --get CPPFLAGS)" \
    LDFLAGS="$$(dpkg-buildflags --get LDFLAGS)"
deb: test-deps
	@$(MAKE) --no-print-directory $(DEB_FLAGS) $(DEB_BUILD)/llmuxd $(DEB_BUILD)/llmux \
	    $(DEB_BUILD)/llmux.service
	sh scripts/build-deb.sh $(DEB_BUILD) $(DEB_BUILD)

install: $(LLMUXD) $(LLMUX) $(UNIT)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(PREFIX)/share/man/man1 \
	    $(DESTDIR)$(PREFIX)/share/man/man8 $(DESTDIR)$(PREFIX)/lib/systemd/system \
	    $(DESTDIR)/etc/llmux
	install -m 755 $(LLMUXD) $(LLMUX) $(DESTDIR)$(BINDIR)/
	install -m 644 client/llmux.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	install -m 644 daemon/llmuxd.8 $(DESTDIR)$(PREFIX)/share/man/man8/
	install -m 644 $(UNIT) systemd/llmux.socket $(DESTDIR)$(PREFIX)/lib/systemd/system/
	install -m 644 conf/llmux.example.yaml $(DESTDIR)/etc/llmux/llmux.yaml.example
	install -m 600 systemd/llmux.env.example $(DESTDIR)/etc/llmux/llmux.env.example

clean:
	rm -rf build build-asan build-deb

-include $(shell find $(BUILD) -name '*.d' -type f 2>/dev/null)
