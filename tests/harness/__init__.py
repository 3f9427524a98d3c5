# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""Integration-test harness for mod_influx_metrics.

Runs private, throw-away instances of the programs the tests need, all bound to
127.0.0.1 on ports picked at run time, all with their files in fresh temporary
directories:

* Influx          - influxd 1.x (Debian's /usr/bin/influxd)
* VictoriaMetrics - /usr/bin/victoria-metrics, which also accepts line protocol
                    and is the ground truth for exact sample counts
* Vmagent         - /usr/bin/vmagent: takes line protocol on /write, queues
                    it (in memory, then on disk) and forwards it to a
                    VictoriaMetrics with the remote-write protocol
* Prometheus      - /usr/bin/prometheus, scraping an Httpd's metrics page
* Httpd           - /usr/sbin/apache2 with a generated config, optionally
                    loading the module under test (MODULE_SO), and with
                    HTTP/2 over cleartext (h2c) when asked (H2C_CONF)

plus load generators (ab, h2load, LoadLoop), a directive builder for the
module (Imx), the module's status page and exit lines (imx_status,
flusher_exits) and small helpers (free_port, wait_until, http_request).

One module per concept:

    env.py       paths, programs, HOST, IS_ROOT, RUN_USER, the IMX_* knobs,
                 free_port, wait_until, http_request, temp dirs and files
    procs.py     processes by PID (descendants, kill, stop) and the safety
                 net that stops at exit what a run left behind
    backends.py  Influx, VictoriaMetrics, Vmagent, Prometheus
    conf.py      the MPM profiles (MPM_PROFILES), the server root and htdocs,
                 the httpd.conf text, Imx, H2C_CONF
    log.py       the access log's format, the error-log check, httpd's own
                 crashes and the cores of crashed children
    httpd.py     Httpd: start, restarts, stops, children, logs
    load.py      ab, AbBackground, h2load, LoadLoop
    status.py    the module's status page and flusher exit lines

`import harness` gives all of them under one name, as the tests use it.

Everything here uses the standard library only (system python3). Every wait is
bounded by a timeout, and every process is stopped by its PID (SIGTERM, then
SIGKILL after a timeout). Set IMX_KEEP_TMP=1 to keep the temporary directories
of passing tests as well (failing httpd instances always keep theirs).
"""

from .backends import Influx, Prometheus, VictoriaMetrics, Vmagent, quote_ident
from .conf import (DEFAULT_MPM_CONF, H2C_CONF, HTDOCS, MPM_PROFILES, MPMS, PROBE_PATH,
                   Imx, apache_builtin_modules, fixed_prefork, fixed_threaded,
                   httpd_conf, make_server_root, mpm_block, mpm_profile)
from .env import (AB, APACHE2, APACHE_MODULES_DIR, CORES, H2LOAD, HOST, INFLUXD, IS_ROOT,
                  KEEP_TMP, MODULE_NAME, MODULE_SO, PROMETHEUS, PROMTOOL, REPO_ROOT, RUN_USER,
                  TESTS_DIR,
                  VICTORIA_METRICS, VMAGENT, _read, _tail, free_port, http_request,
                  make_tmpdir, wait_until)
from .httpd import STOP_SETTLE_S, Httpd
from .load import (AbBackground, AbResult, H2loadResult, LoadLoop, ab, h2load, parse_ab,
                   parse_h2load)
from .log import (ACCESS_LOG_FORMAT, BAD_LEVELS, BAD_PATTERNS, EVENT_SHUTDOWN_RACES,
                  GLIBC_HEAP_ABORT, STOCK_CORE_RACES, STOCK_HTTPD_CRASHES, AccessEntry,
                  core_races, parse_access_log, stock_crash_patterns, stock_crashes,
                  unexpected_lines)
from .procs import _alive
from .status import IMX_STATUS_CONF, IMX_STATUS_PATH, flusher_exits, imx_status
