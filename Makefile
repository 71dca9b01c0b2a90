# Switchboard: build, deps, run, test, sanitize, bench, install.
# `make run` and `make test` install missing Debian packages first.

PREFIX  ?= /usr/local
LOCALSTATEDIR ?= /var
DESTDIR ?=
BUILD   ?= build
PYTHON  ?= /usr/bin/python3
E2E_JOBS ?= 4
PKGS     = lua5.4 lua5.4-cjson libevent libcurl sqlite3 libcrypto
THREADS  = -pthread

# Debian packages the build, the tests and the benchmark need.
DEB_PACKAGES = gcc make pkg-config liblua5.4-dev lua-cjson-dev libevent-dev \
               libcurl4-openssl-dev libsqlite3-dev libssl-dev lua5.4 python3 python3-pytest python3-pytest-xdist \
               tzdata

CC      ?= cc
WARN     = -Wall -Wextra -Werror -Wshadow -Wpointer-arith -Wcast-align -Wstrict-prototypes \
           -Wmissing-prototypes -Wno-unused-parameter
OPT     ?= -O2 -g
SAN     ?=
CFLAGS_ALL  = -std=gnu11 -D_GNU_SOURCE $(OPT) $(WARN) $(SAN) $(THREADS) -MMD -MP -I$(BUILD) -Icore \
              $(shell pkg-config --cflags $(PKGS) 2>/dev/null) $(CFLAGS)
LDLIBS_ALL  = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm $(LDLIBS)
LDFLAGS_ALL = $(SAN) $(THREADS) $(LDFLAGS)

CORE_SRCS = core/util.c core/log.c core/metrics.c core/handler_use.c core/config.c core/store_sqlite.c core/store_sql.c core/store_read.c core/txn.c core/schedule.c \
            core/conv.c core/conv_change.c core/conv_memory.c core/kvstate.c core/counters.c core/timer.c core/outbox.c core/outbox_entry.c core/outbox_response.c core/bus.c core/bus_sub.c core/httpclient.c core/lpattern.c core/lpattern_match.c \
            core/runtime.c core/job.c core/luajson.c core/bind_core.c core/bind_crypto.c core/bind_codec.c core/bind_http.c core/bind_conv.c \
            core/bind_read.c core/bind_outbox.c core/bind_timer.c core/bind_state.c core/bind_route.c \
            core/bind_events.c core/bind_metrics.c \
            core/bindings.c core/loader.c core/server.c core/conn.c core/sse.c core/offline.c
MAIN_SRC  = core/main.c
CORE_OBJS = $(CORE_SRCS:core/%.c=$(BUILD)/%.o)
MAIN_OBJ  = $(BUILD)/main.o
UNIT_SRCS = $(wildcard tests/unit/*.c)
UNIT_OBJS = $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/unit_%.o)

BIN      = switchboard
ifneq ($(BUILD),build)
BIN      = $(BUILD)/switchboard
endif

.PHONY: all deps run test unit lua-test layers e2e sanitize bench install clean

all: $(BIN)

$(BIN): $(CORE_OBJS) $(MAIN_OBJ)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LDLIBS_ALL)

$(BUILD)/%.o: core/%.c | $(BUILD)/prelude_lua.h
	$(CC) $(CFLAGS_ALL) -c -o $@ $<

$(BUILD)/unit_%.o: tests/unit/%.c | $(BUILD)/prelude_lua.h
	$(CC) $(CFLAGS_ALL) -c -o $@ $<

# The engine prelude is Lua source compiled into the binary as a byte array.
$(BUILD)/prelude_lua.h: core/prelude.lua
	@mkdir -p $(BUILD)
	{ echo 'static const char sb_prelude_lua[] = {'; \
	  od -An -v -tx1 $< | sed -e 's/\([0-9a-f][0-9a-f]\)/0x\1,/g'; \
	  echo '0x00 };'; } > $@.tmp && mv $@.tmp $@

$(BUILD)/loader.o: $(BUILD)/prelude_lua.h

# The pattern matcher's differential test is a Lua script, compiled in the same way.
$(BUILD)/lpattern_diff_lua.h: tests/unit/lpattern_diff.lua
	@mkdir -p $(BUILD)
	{ echo 'static const char lpattern_diff_lua[] = {'; \
	  od -An -v -tx1 $< | sed -e 's/\([0-9a-f][0-9a-f]\)/0x\1,/g'; \
	  echo '0x00 };'; } > $@.tmp && mv $@.tmp $@

$(BUILD)/unit_test_lpattern.o: $(BUILD)/lpattern_diff_lua.h

$(BUILD)/bench_bare: tests/bench/bare_server.c
	@mkdir -p $(BUILD)
	$(CC) $(CFLAGS_ALL) -o $@ $< $(LDLIBS_ALL)

$(BUILD)/bench_loadgen: tests/bench/loadgen.c
	@mkdir -p $(BUILD)
	$(CC) $(CFLAGS_ALL) -o $@ $< $(LDLIBS_ALL)

$(BUILD)/unit_tests: $(CORE_OBJS) $(UNIT_OBJS)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LDLIBS_ALL)

# Installs whatever is missing (apt lists are empty on a fresh machine, so
# update first); does nothing when everything is present.
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" -ne 0 ] && SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

run: deps
	$(MAKE) all
	./$(BIN) -c examples/switchboard.conf.lua

unit: $(BUILD)/unit_tests
	$(BUILD)/unit_tests

# The core's layers from its #include lines: no circles, a model without Lua.
layers:
	$(PYTHON) tests/layers/check.py

# Lua specs of the pure script modules (tests/lua), on Debian's lua5.4.
lua-test:
	lua5.4 tests/lua/run.lua

e2e: $(BIN)
	SWITCHBOARD_BIN=$(abspath $(BIN)) $(PYTHON) -m pytest tests/e2e -q -p no:cacheprovider -n $(E2E_JOBS)

test: deps
	$(MAKE) all
	$(MAKE) layers
	$(MAKE) unit
	$(MAKE) lua-test
	$(MAKE) e2e

# AddressSanitizer + UndefinedBehaviorSanitizer build, whole suite on it.
sanitize: deps
	$(MAKE) BUILD=build-san OPT="-O1 -g -fno-omit-frame-pointer" \
	    SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined" all unit e2e

bench: deps
	$(MAKE) all
	$(PYTHON) tests/bench/run.py

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/switchboard \
	    $(DESTDIR)$(PREFIX)/share/switchboard/examples
	install -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/switchboard
	for d in scripts providers rules; do \
	  install -d $(DESTDIR)$(PREFIX)/share/switchboard/$$d; \
	  (cd $$d && find . -name '*.lua' -exec install -D -m 0644 {} $(DESTDIR)$(PREFIX)/share/switchboard/$$d/{} \;); \
	done
	sed -e 's|^local base = .*|local base = "$(PREFIX)/share/switchboard"|' \
	    -e 's|^local data = .*|local data = "$(LOCALSTATEDIR)/lib/switchboard"|' examples/switchboard.conf.lua \
	    > $(DESTDIR)$(PREFIX)/share/switchboard/examples/switchboard.conf.lua

clean:
	rm -rf build build-san switchboard

-include $(wildcard $(BUILD)/*.d)
