# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""Where things are and how the tests reach them: paths of the repository and
of the programs under test, the address every server binds, the user httpd's
children run as, the IMX_* environment knobs, and small helpers (free_port,
wait_until, http_request, temp dirs, file reading)."""

import os
import socket
import tempfile
import time
import urllib.error
import urllib.request

# --------------------------------------------------------------------------
# Paths and constants

# This file is tests/harness/env.py: tests/ is two levels up.
TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_ROOT = os.path.dirname(TESTS_DIR)

# Where `apxs -c` (driven by the Makefile) leaves the built module.
MODULE_SO = os.path.join(REPO_ROOT, ".libs", "mod_influx_metrics.so")
MODULE_NAME = "influx_metrics_module"

APACHE2 = "/usr/sbin/apache2"
APACHE_MODULES_DIR = "/usr/lib/apache2/modules"
INFLUXD = "/usr/bin/influxd"
VICTORIA_METRICS = "/usr/bin/victoria-metrics"
VMAGENT = "/usr/bin/vmagent"             # shipped by Debian's victoria-metrics
PROMETHEUS = "/usr/bin/prometheus"       # Debian: prometheus
PROMTOOL = "/usr/bin/promtool"           # shipped with it
AB = "/usr/bin/ab"
H2LOAD = "/usr/bin/h2load"       # Debian's nghttp2-client

HOST = "127.0.0.1"
IS_ROOT = os.geteuid() == 0
# httpd refuses to run its children as root; the Debian account is used then.
RUN_USER = "www-data"
# IMX_TEST_CORES=1: the children of every httpd, not only of those that load
# the module, dump core into <its dir>/cores (for gdb) when they crash.
CORES = os.environ.get("IMX_TEST_CORES") == "1"

KEEP_TMP = os.environ.get("IMX_KEEP_TMP", "") not in ("", "0")


# --------------------------------------------------------------------------
# Small helpers

def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it).

    There is an unavoidable window between closing this socket and the server
    binding the port; in practice ephemeral ports are not reused that fast."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_until(fn, timeout=10.0, interval=0.05, message=None):
    """Calls fn() until it returns something truthy and returns that value.

    Raises TimeoutError (with `message`, if given, and the last value/exception)
    when `timeout` seconds pass first. Exceptions from fn count as "not yet"."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = fn()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - "not ready yet" is any failure
            last = e
        if time.monotonic() >= deadline:
            raise TimeoutError("%s (timeout %.1fs, last: %r)"
                               % (message or "condition not met", timeout, last))
        time.sleep(interval)


def _wait_ready(fn, timeout, what):
    """wait_until, but errors raised by fn (a process that died) end the wait
    at once instead of being retried."""
    deadline = time.monotonic() + timeout
    while True:
        if fn():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError("%s not ready after %.0fs" % (what, timeout))
        time.sleep(0.1)


def http_request(url, data=None, headers=None, method=None, timeout=10.0):
    """One HTTP request via urllib. Returns (status, body_bytes, headers).

    HTTP error statuses are returned, not raised; connection errors raise."""
    if isinstance(data, str):
        data = data.encode()
    req = urllib.request.Request(url, data=data, headers=headers or {},
                                 method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as e:
        body = e.read()
        e.close()
        return e.code, body, e.headers


def make_tmpdir(prefix):
    """A new directory under the system temp dir, mode 755.

    Not pytest's tmp_path: its parents are 0700, and httpd's children (www-data
    when we run as root) must be able to reach the DocumentRoot."""
    d = tempfile.mkdtemp(prefix="imx-%s-" % prefix)
    os.chmod(d, 0o755)
    return d


def _write(path, text, mode=0o644):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def _read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _tail(text, n=60):
    return "\n".join(text.splitlines()[-n:])
