# mod_influx_metrics: build with apxs, test with the C unit tests and pytest.
APXS     ?= apxs
APR_CFG  ?= apr-1-config
PYTHON   ?= /usr/bin/python3
CC       ?= cc

# The httpd glue (mod_influx_metrics*.c) and the engine (ENGINE: no httpd headers).
GLUE     = mod_influx_metrics.c mod_influx_metrics_status.c mod_influx_metrics_summary.c \
           mod_influx_metrics_tags.c mod_influx_metrics_fields.c
ENGINE   = batch.c lineproto.c http_send.c histogram.c shmlock.c spool.c imx_prom.c imx_prom_text.c
SRCS     = $(GLUE) $(ENGINE)
HDRS     = mod_influx_metrics_status.h mod_influx_metrics_summary.h mod_influx_metrics_tags.h \
           mod_influx_metrics_fields.h \
           batch.h histogram.h shmlock.h spool.h imx_prom.h
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

$(MODULE): $(SRCS) $(HDRS)
	$(APXS) -c -Wc,-std=gnu11 -Wc,-Wall -Wc,-Wextra -Wc,-Werror -Wc,-O2 \
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

# Unit tests: the engine without httpd, under ASan+UBSan, and the buffer and
# flusher under TSan.
tests/unit/test_engine.asan: tests/unit/test_engine.c tests/unit/check.h $(ENGINE) $(HDRS)
	$(CC) $(UNIT_CFLAGS) -fsanitize=address,undefined -fno-sanitize-recover=all \
	    -o $@ tests/unit/test_engine.c $(ENGINE) $(UNIT_LIBS)

tests/unit/test_engine.tsan: tests/unit/test_engine.c tests/unit/check.h $(ENGINE) $(HDRS)
	$(CC) $(UNIT_CFLAGS) -fsanitize=thread -o $@ tests/unit/test_engine.c $(ENGINE) $(UNIT_LIBS)

tests/unit/test_shm.asan: tests/unit/test_shm.c tests/unit/check.h shmlock.c shmlock.h
	$(CC) $(UNIT_CFLAGS) -fsanitize=address,undefined -fno-sanitize-recover=all \
	    -o $@ tests/unit/test_shm.c shmlock.c -lpthread

# The engine's stop, from a real signal handler, with every call that is not
# async-signal-safe wrapped to fail the test when the handler makes it.
SIGSAFE_WRAP = $(foreach f,malloc calloc realloc free pthread_mutex_lock pthread_cond_signal \
                 pthread_join apr_thread_mutex_lock apr_thread_cond_signal apr_thread_join \
                 apr_time_now,-Wl,--wrap=$(f))
tests/unit/test_sigsafe.bin: tests/unit/test_sigsafe.c $(ENGINE) $(HDRS)
	$(CC) $(UNIT_CFLAGS) -o $@ tests/unit/test_sigsafe.c $(ENGINE) $(SIGSAFE_WRAP) $(UNIT_LIBS)

# The encoder's number formatting for every value it can meet: -O2, no
# sanitizer, so it takes seconds, not minutes.
tests/unit/test_digits.bin: tests/unit/test_digits.c lineproto.c histogram.c $(HDRS)
	$(CC) -std=gnu11 -O2 $(WARN) -Werror $(APR_INC) -I. -o $@ tests/unit/test_digits.c \
	    lineproto.c histogram.c $(UNIT_LIBS)

# The Prometheus engine: ASan+UBSan, its concurrent part under TSan, and
# -O2 without sanitizers for `make prom-cost`. test-unit also checks a small
# scrape in each format: 0.0.4 with promtool (Debian: prometheus) and the
# Python client's parser (python3-prometheus-client), OpenMetrics with the
# latter's strict OpenMetrics parser (promtool has no check for it).
# install-deps.sh installs both; the package build (debian/rules runs
# test-unit) may not have them, so each check says SKIPPED without its tool.
PROMTOOL ?= promtool
PROM_SRCS = imx_prom.c imx_prom_text.c lineproto.c histogram.c
PROM_DEPS = tests/unit/test_prom.c tests/unit/check.h $(PROM_SRCS) imx_prom.h batch.h histogram.h

tests/unit/test_prom.asan: $(PROM_DEPS)
	$(CC) $(UNIT_CFLAGS) -fsanitize=address,undefined -fno-sanitize-recover=all \
	    -o $@ tests/unit/test_prom.c $(PROM_SRCS) $(UNIT_LIBS)

tests/unit/test_prom.tsan: $(PROM_DEPS)
	$(CC) $(UNIT_CFLAGS) -fsanitize=thread -o $@ tests/unit/test_prom.c $(PROM_SRCS) $(UNIT_LIBS)

tests/unit/test_prom.bin: $(PROM_DEPS)
	$(CC) -std=gnu11 -g -O2 $(WARN) -Werror $(APR_INC) -I. -o $@ tests/unit/test_prom.c \
	    $(PROM_SRCS) $(UNIT_LIBS)

# Instructions per imx_prom_record call (the table in imx_prom.c): callgrind
# counts inside it over 1.1 and 0.1 million calls; the difference / 10^6.
prom-cost: tests/unit/test_prom.bin
	@for what in plain ex exall overflow; do \
	    for n in 100000 1100000; do \
	        valgrind --tool=callgrind --toggle-collect=imx_prom_record \
	            --callgrind-out-file=/dev/null ./tests/unit/test_prom.bin cost $$what $$n 2>&1 \
	            | sed -n 's/.*Collected : //p'; \
	    done | { read a; read b; echo "$$what: $$(( (b - a) / 1000000 )) instructions"; }; \
	done

unit: tests/unit/test_engine.asan tests/unit/test_engine.tsan tests/unit/test_shm.asan \
      tests/unit/test_sigsafe.bin tests/unit/test_digits.bin \
      tests/unit/test_prom.asan tests/unit/test_prom.tsan

test-unit: unit
	./tests/unit/test_engine.asan
	./tests/unit/test_shm.asan
	./tests/unit/test_sigsafe.bin
	./tests/unit/test_digits.bin
	TSAN_OPTIONS=halt_on_error=1 ./tests/unit/test_engine.tsan stress
	./tests/unit/test_prom.asan
	TSAN_OPTIONS=halt_on_error=1 ./tests/unit/test_prom.tsan stress
	./tests/unit/test_prom.asan sample > tests/unit/prom-sample.txt
	./tests/unit/test_prom.asan sample om > tests/unit/prom-sample.om
	@if command -v $(PROMTOOL) >/dev/null; then \
	    echo "$(PROMTOOL) check metrics < tests/unit/prom-sample.txt"; \
	    $(PROMTOOL) check metrics < tests/unit/prom-sample.txt; \
	else echo "SKIPPED: no $(PROMTOOL) (Debian: prometheus), the 0.0.4 sample is not linted"; fi
	@if $(PYTHON) -c 'import prometheus_client' 2>/dev/null; then \
	    $(PYTHON) tests/unit/check_exposition.py < tests/unit/prom-sample.txt && \
	    $(PYTHON) tests/unit/check_exposition.py --om < tests/unit/prom-sample.om; \
	else echo "SKIPPED: no python3-prometheus-client, the samples are not parsed"; fi

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
	    tests/unit/prom-sample.*

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
# Fuzzing the line-protocol encoder (tests/fuzz/, issue 3); needs clang with
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

tests/fuzz/fuzz_encoder: tests/fuzz/fuzz_encoder.c tests/lp_read.h tests/test_names.h lineproto.c histogram.c $(HDRS)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ tests/fuzz/fuzz_encoder.c lineproto.c histogram.c $(APR_LIB)

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
