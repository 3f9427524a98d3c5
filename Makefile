# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
#
# mod_influx_metrics: build with apxs, test with the C unit tests and pytest.
APXS     ?= apxs
APR_CFG  ?= apr-1-config
PYTHON   ?= /usr/bin/python3
CC       ?= cc

# The httpd glue (mod_influx_metrics*.c) and the engine (imx_*.c: no httpd
# headers); docs/development.md has the map of what each file holds.
GLUE     = $(sort $(wildcard mod_influx_metrics*.c))
ENGINE   = $(sort $(wildcard imx_*.c))
SRCS     = $(GLUE) $(ENGINE)
HDRS     = $(wildcard *.h)
# What the line-protocol encoder needs alone (digits test, fuzzer).
LP_SRCS  = imx_lineproto.c imx_names.c imx_hist.c
MODULE   = .libs/mod_influx_metrics.so
WARN     = -Wall -Wextra
APR_INC  = $(shell $(APR_CFG) --includes --cppflags)
APR_LIB  = $(shell $(APR_CFG) --link-ld --libs)
UNIT_CFLAGS = -std=gnu11 -g -O1 $(WARN) -Werror $(APR_INC) -I.
UNIT_LIBS   = $(APR_LIB) -lcurl -lz -lpthread

# Where `make install` puts the Debian-style load/conf files.
APACHE_MODS_AVAILABLE ?= /etc/apache2/mods-available

# More compiler flags for the module, passed to apxs one by one (debian/rules
# passes dpkg-buildflags' CPPFLAGS and CFLAGS here).
MODULE_CFLAGS ?=

.PHONY: all install deb unit test test-unit test-integration clean lint prom-cost

all: $(MODULE)

# Hidden symbols: the module exports its module structure and nothing else
# (and imx_hist_encode, on purpose: see imx_hist.h), so calls between its
# files are direct, not through the PLT.
$(MODULE): $(SRCS) $(HDRS)
	$(APXS) -c -Wc,-std=gnu11 -Wc,-Wall -Wc,-Wextra -Wc,-Werror -Wc,-O2 -Wc,-fvisibility=hidden \
	    $(foreach f,$(MODULE_CFLAGS),-Wc,$(f)) \
	    -o mod_influx_metrics.so $(SRCS) -lcurl -lz

LIBEXECDIR := $(shell $(APXS) -q LIBEXECDIR)

install: $(MODULE)
	install -d $(DESTDIR)$(LIBEXECDIR)
	$(APXS) -i -S LIBEXECDIR=$(DESTDIR)$(LIBEXECDIR) -n influx_metrics $(MODULE)
	install -d $(DESTDIR)$(APACHE_MODS_AVAILABLE)
	install -m 644 conf/influx_metrics.load conf/influx_metrics.conf $(DESTDIR)$(APACHE_MODS_AVAILABLE)/

# The Debian package libapache2-mod-influx-metrics (debian/): built by
# dpkg-buildpackage in a copy of the tree under dist/.build, so this tree's
# build is left alone; the .deb files end up in dist/. Runs lintian when it is
# installed and fails on its errors (LINTIAN=0 skips it).
# DEB_BUILD_OPTIONS=nocheck skips the unit tests in the package build.
deb:
	./scripts/build-deb.sh

# Unit tests (tests/unit/): a program per unit of the engine, test_<unit>.c,
# each with its own main, linked with the whole engine and the helpers
# (UNIT_HELPERS) and built with ASan+UBSan; the concurrent tests, test_stress.c,
# also with TSan. The engine and the helpers are compiled once per sanitizer,
# into tests/unit/obj/.
UNIT_TESTS      = names lineproto http ts hist ring retry delivery engine spool_file spool \
                  spill stress prom
UNIT_TSAN_TESTS = stress prom
UNIT_HELPERS    = check fixture lp_parse
UNIT_HDRS       = $(wildcard tests/unit/*.h) tests/test_names.h
UNIT_OBJ        = tests/unit/obj
ASAN            = -fsanitize=address,undefined -fno-sanitize-recover=all
TSAN            = -fsanitize=thread
UNIT_ASAN_BINS  = $(UNIT_TESTS:%=tests/unit/test_%.asan)
UNIT_TSAN_BINS  = $(UNIT_TSAN_TESTS:%=tests/unit/test_%.tsan)
# $(call unit_objs,asan|tsan): what every test program of that build links.
unit_objs       = $(ENGINE:%.c=$(UNIT_OBJ)/$(1)-engine/%.o) \
                  $(UNIT_HELPERS:%=$(UNIT_OBJ)/$(1)/%.o)

$(ENGINE:%.c=$(UNIT_OBJ)/asan-engine/%.o): $(UNIT_OBJ)/asan-engine/%.o: %.c $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(UNIT_CFLAGS) $(ASAN) -c -o $@ $<

$(ENGINE:%.c=$(UNIT_OBJ)/tsan-engine/%.o): $(UNIT_OBJ)/tsan-engine/%.o: %.c $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(UNIT_CFLAGS) $(TSAN) -c -o $@ $<

$(patsubst %,$(UNIT_OBJ)/asan/%.o,$(UNIT_HELPERS) $(UNIT_TESTS:%=test_%)): \
        $(UNIT_OBJ)/asan/%.o: tests/unit/%.c $(UNIT_HDRS) $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(UNIT_CFLAGS) $(ASAN) -c -o $@ $<

$(patsubst %,$(UNIT_OBJ)/tsan/%.o,$(UNIT_HELPERS) $(UNIT_TSAN_TESTS:%=test_%)): \
        $(UNIT_OBJ)/tsan/%.o: tests/unit/%.c $(UNIT_HDRS) $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(UNIT_CFLAGS) $(TSAN) -c -o $@ $<

$(UNIT_ASAN_BINS): tests/unit/test_%.asan: $(UNIT_OBJ)/asan/test_%.o $(call unit_objs,asan)
	$(CC) $(UNIT_CFLAGS) $(ASAN) -o $@ $^ $(UNIT_LIBS)

$(UNIT_TSAN_BINS): tests/unit/test_%.tsan: $(UNIT_OBJ)/tsan/test_%.o $(call unit_objs,tsan)
	$(CC) $(UNIT_CFLAGS) $(TSAN) -o $@ $^ $(UNIT_LIBS)

tests/unit/test_shm.asan: tests/unit/test_shm.c tests/unit/check.c tests/unit/check.h \
                          imx_shmlock.c imx_shmlock.h
	$(CC) $(UNIT_CFLAGS) $(ASAN) -o $@ tests/unit/test_shm.c tests/unit/check.c imx_shmlock.c \
	    -lpthread

# The engine's stop, from a real signal handler, with every call that is not
# async-signal-safe wrapped to fail the test when the handler makes it.
SIGSAFE_WRAP = $(foreach f,malloc calloc realloc free pthread_mutex_lock pthread_cond_signal \
                 pthread_join apr_thread_mutex_lock apr_thread_cond_signal apr_thread_join \
                 apr_time_now,-Wl,--wrap=$(f))
tests/unit/test_sigsafe.bin: tests/unit/test_sigsafe.c $(ENGINE) $(HDRS)
	$(CC) $(UNIT_CFLAGS) -o $@ tests/unit/test_sigsafe.c $(ENGINE) $(SIGSAFE_WRAP) $(UNIT_LIBS)

# The encoder's number formatting for every value it can meet: -O2, no
# sanitizer, so it takes seconds, not minutes.
tests/unit/test_digits.bin: tests/unit/test_digits.c $(LP_SRCS) $(HDRS)
	$(CC) -std=gnu11 -O2 $(WARN) -Werror $(APR_INC) -I. -o $@ tests/unit/test_digits.c \
	    $(LP_SRCS) $(UNIT_LIBS)

# The Prometheus exposition (imx_prom*.c): `make test-unit` also checks a
# small scrape in each format: 0.0.4 with promtool (Debian: prometheus) and
# the Python client's parser (python3-prometheus-client), OpenMetrics with
# the latter's strict parser (promtool has no check for it). install-deps.sh
# installs both; the package build (debian/rules runs test-unit) may not
# have them, so each check says SKIPPED without its tool.
PROMTOOL ?= promtool

tests/unit/test_prom.bin: tests/unit/test_prom.c tests/unit/check.c $(UNIT_HDRS) $(ENGINE) $(HDRS)
	$(CC) -std=gnu11 -g -O2 $(WARN) -Werror $(APR_INC) -I. -o $@ tests/unit/test_prom.c \
	    tests/unit/check.c $(ENGINE) $(UNIT_LIBS)

# Instructions per imx_prom_record call: callgrind counts inside it over
# 1.1 and 0.1 million calls; the difference / 10^6.
prom-cost: tests/unit/test_prom.bin
	@for what in plain ex exall overflow; do \
	    for n in 100000 1100000; do \
	        valgrind --tool=callgrind --toggle-collect=imx_prom_record \
	            --callgrind-out-file=/dev/null ./tests/unit/test_prom.bin cost $$what $$n 2>&1 \
	            | sed -n 's/.*Collected : //p'; \
	    done | { read a; read b; echo "$$what: $$(( (b - a) / 1000000 )) instructions"; }; \
	done

UNIT_RUN = $(UNIT_ASAN_BINS) tests/unit/test_shm.asan tests/unit/test_sigsafe.bin \
           tests/unit/test_digits.bin

unit: $(UNIT_RUN) $(UNIT_TSAN_BINS)

# Every program runs, a failing one included; the status says if any failed.
test-unit: unit
	@fail=0; \
	for t in $(UNIT_RUN); do echo "./$$t"; ./$$t || fail=1; done; \
	for t in $(UNIT_TSAN_BINS); do \
	    echo "TSAN_OPTIONS=halt_on_error=1 ./$$t stress"; \
	    TSAN_OPTIONS=halt_on_error=1 ./$$t stress || fail=1; \
	done; \
	./tests/unit/test_prom.asan sample > tests/unit/prom-sample.txt || fail=1; \
	./tests/unit/test_prom.asan sample om > tests/unit/prom-sample.om || fail=1; \
	if command -v $(PROMTOOL) >/dev/null; then \
	    echo "$(PROMTOOL) check metrics < tests/unit/prom-sample.txt"; \
	    $(PROMTOOL) check metrics < tests/unit/prom-sample.txt || fail=1; \
	else echo "SKIPPED: no $(PROMTOOL) (Debian: prometheus), the 0.0.4 sample is not linted"; fi; \
	if $(PYTHON) -c 'import prometheus_client' 2>/dev/null; then \
	    $(PYTHON) tests/unit/check_exposition.py < tests/unit/prom-sample.txt && \
	    $(PYTHON) tests/unit/check_exposition.py --om < tests/unit/prom-sample.om || fail=1; \
	else echo "SKIPPED: no python3-prometheus-client, the samples are not parsed"; fi; \
	exit $$fail

test-integration: $(MODULE)
	$(PYTHON) -m pytest -q -p no:cacheprovider tests

test: test-unit test-fuzz test-integration

# cppcheck and clang-tidy (clang-analyzer checks). APR ends variadic string
# lists with NULL by design, hence varFuncNullUB off.
lint:
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability \
	    --suppress=missingIncludeSystem --suppress=varFuncNullUB \
	    --suppress=preprocessorErrorDirective --inline-suppr \
	    $(APR_INC) -I$(shell $(APXS) -q INCLUDEDIR) -I. $(SRCS)
	clang-tidy --quiet --checks='-*,clang-analyzer-*,-clang-analyzer-security.insecureAPI.DeprecatedOrUnsafeBufferHandling,-clang-analyzer-optin.performance.Padding' \
	    --warnings-as-errors='clang-analyzer-*' $(SRCS) -- -std=gnu11 $(APR_INC) \
	    -I$(shell $(APXS) -q INCLUDEDIR) -I.

clean:
	rm -rf .libs *.la *.lo *.o *.slo tests/unit/*.asan tests/unit/*.tsan tests/unit/*.bin \
	    $(UNIT_OBJ) tests/unit/prom-sample.*

# ---------------------------------------------------------------------------
# Benchmarks (bench/, see bench/README.md). `make bench` runs everything in a
# few minutes and writes bench/out/results.md, bench/out/ratios.png and
# bench/RESULTS.md. BENCH_ARGS passes options to bench/run.py (--quick, --only).
BENCH_CFLAGS = -std=gnu11 -O2 -g $(WARN) $(shell $(APR_CFG) --cflags --cppflags --includes) -I.
BENCH_ARGS ?=

.PHONY: bench bench-micro bench-clean

bench/micro: bench/micro.c $(ENGINE) $(HDRS)
	$(CC) $(BENCH_CFLAGS) -o $@ bench/micro.c $(ENGINE) $(UNIT_LIBS)

bench-micro: bench/micro
	./bench/micro

bench: $(MODULE) bench/micro
	$(PYTHON) bench/run.py $(BENCH_ARGS)

bench-clean:
	rm -rf bench/micro bench/out

# ---------------------------------------------------------------------------
# Fuzzing the line-protocol encoder (tests/fuzz/); needs clang with
# libFuzzer (Debian: clang, libclang-rt-14-dev).
#   make fuzz        builds tests/fuzz/fuzz_encoder, fuzzes for FUZZ_TIME seconds
#                    (default 20) over a temporary copy of tests/fuzz/corpus
#   make test-fuzz   for CI: checks the corpus against make_corpus.py, replays
#                    every seed once, then fuzzes for 20 s
# Crashing inputs land in tests/fuzz/artifacts/; replay one with
#   ./tests/fuzz/fuzz_encoder tests/fuzz/artifacts/crash-...
FUZZ_CC     ?= clang
FUZZ_TIME   ?= 20
FUZZ_FLAGS  ?= -max_len=70000 -timeout=10 -rss_limit_mb=2048 -dict=tests/fuzz/encoder.dict
FUZZ_CFLAGS = -std=gnu11 -g -O1 $(WARN) -Werror -fsanitize=fuzzer,address,undefined \
              -fno-sanitize-recover=all $(APR_INC) -I. -Itests

.PHONY: fuzz test-fuzz fuzz-clean

tests/fuzz/fuzz_encoder: tests/fuzz/fuzz_encoder.c tests/lp_read.h tests/test_names.h $(LP_SRCS) $(HDRS)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ tests/fuzz/fuzz_encoder.c $(LP_SRCS) $(APR_LIB)

fuzz: tests/fuzz/fuzz_encoder
	@mkdir -p tests/fuzz/artifacts
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	    cp tests/fuzz/corpus/* "$$tmp"/ && \
	    ./tests/fuzz/fuzz_encoder $(FUZZ_FLAGS) -max_total_time=$(FUZZ_TIME) \
	        -artifact_prefix=tests/fuzz/artifacts/ -print_final_stats=1 "$$tmp"

test-fuzz: tests/fuzz/fuzz_encoder
	$(PYTHON) tests/fuzz/make_corpus.py --check
	@mkdir -p tests/fuzz/artifacts
	./tests/fuzz/fuzz_encoder -artifact_prefix=tests/fuzz/artifacts/ tests/fuzz/corpus/*
	$(MAKE) --no-print-directory fuzz FUZZ_TIME=20

fuzz-clean:
	rm -rf tests/fuzz/fuzz_encoder tests/fuzz/artifacts
