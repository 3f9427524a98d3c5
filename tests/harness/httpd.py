# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""Apache httpd under test: the Httpd server, started in the foreground from
a generated config (see conf.py), with its children tracked by PID, its
restarts and stops, and its logs read and judged (see log.py)."""

import os
import shutil
import signal
import socket
import subprocess
import time

from .conf import MPMS, PROBE_PATH, httpd_conf, make_server_root
from .env import (APACHE2, CORES, HOST, KEEP_TMP, MODULE_SO, _read, _tail, _wait_ready,
                  _write, free_port, http_request, make_tmpdir, wait_until)
from .log import (EVENT_SHUTDOWN_RACES, STOCK_HTTPD_CRASHES, _core_limit,
                  parse_access_log, stock_crash_patterns, stock_crashes,
                  unexpected_lines)
from .procs import _RUNNING, _descendants, _kill, _wait_gone

# Pause before stopping a threaded MPM (see Httpd.stop).
STOP_SETTLE_S = 0.15


class Httpd:
    """A private Apache httpd built from a generated config.

    mpm: "event", "worker" or "prefork".
    mpm_conf: dict or config text of MPM tuning directives (replaces the
        default block for that MPM).
    load_module: load MODULE_SO (LoadModule influx_metrics_module ...).
    modules: extra stock modules by short name ("status", "headers", ...).
    extra: config text appended at the end (directives, VirtualHosts, the
        module's directives - see Imx).
    log_level: LogLevel arguments; default "warn influx_metrics:info", or
        "warn" without the module.
    The access log ("%h %>s %B %D %m %U") is the ground truth of requests
    served; mind the readiness probes (PROBE_PATH, see _ready()).
    record_probes: unless True, the config ends with
        <Location PROBE_PATH> InfluxMetrics Off </Location> when the module is
        loaded, so the points it records match access_log_count() (probes
        left out). It comes after `extra` so that a <Location /> there does not
        override it.
    env: the environment of apache2 (configtest and start), e.g. to set
        http_proxy; None: the test process's own.
    cores: crashed children dump core into <dir>/cores, where
        check_error_log reads them with gdb to tell httpd's known races from
        other crashes (STOCK_CORE_RACES). Default: when the module is loaded
        (a server without it tolerates crashes anyway), or for every server
        with IMX_TEST_CORES=1.
    """

    def __init__(self, mpm="event", load_module=True, module_so=MODULE_SO,
                 extra="", mpm_conf=None, log_level=None,
                 modules=(), port=None, name="httpd", record_probes=False, env=None,
                 cores=None):
        if mpm not in MPMS:
            raise ValueError("unknown MPM %r" % mpm)
        self.mpm = mpm
        self.load_module = load_module
        self.module_so = module_so
        self.extra = extra
        self.mpm_conf = mpm_conf
        # A per-module level for a module that is not loaded is a config error.
        if log_level is None:
            log_level = "warn influx_metrics:info" if load_module else "warn"
        self.log_level = log_level
        self.modules = list(modules)
        self.record_probes = record_probes
        self.env = env
        self.cores = CORES or (load_module if cores is None else cores)
        self.name = name
        self.port = port or free_port()
        # Regexes of error-log lines a test expects (see check_error_log).
        self.allowed_errors = []
        # Harness-side trouble (forced kills) reported with the log check.
        self.problems = []
        self.proc = None
        self.http_probe = True
        self._children = []
        self._stderr = None
        self.dir = make_tmpdir(name)
        self.conf_path = os.path.join(self.dir, "httpd.conf")
        make_server_root(self.dir, self.cores)
        self.write_config()

    # -- files -------------------------------------------------------------

    @property
    def url(self):
        return "http://%s:%d/" % (HOST, self.port)

    @property
    def htdocs(self):
        return os.path.join(self.dir, "htdocs")

    @property
    def error_log_path(self):
        return os.path.join(self.dir, "error.log")

    @property
    def access_log_path(self):
        return os.path.join(self.dir, "access.log")

    @property
    def stderr_path(self):
        return os.path.join(self.dir, "stderr.log")

    def config_text(self):
        return httpd_conf(self.dir, self.port, self.mpm, mpm_conf=self.mpm_conf,
                          load_module=self.load_module, module_so=self.module_so,
                          modules=self.modules, log_level=self.log_level,
                          cores=self.cores, record_probes=self.record_probes,
                          extra=self.extra)

    def write_config(self):
        """(Re)writes the config file; call after changing attributes, e.g.
        before graceful() to test a reconfiguration."""
        _write(self.conf_path, self.config_text())

    def _cmd(self, *args):
        return [APACHE2, "-d", self.dir, "-f", self.conf_path] + list(args)

    # -- control -----------------------------------------------------------

    def configtest(self, timeout=20.0):
        """apache2 -t on the config: (returncode, combined output)."""
        p = subprocess.run(self._cmd("-t"), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout, cwd=self.dir, env=self.env)
        return p.returncode, p.stdout.decode(errors="replace")

    def start(self, timeout=20.0, http_probe=True):
        """Starts the parent in the foreground (so its PID is ours) and waits
        until it serves: see _ready() for what http_probe changes."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("already running")
        self.write_config()
        # Output before ErrorLog is open (config errors) lands here.
        self._stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(
            self._cmd("-DFOREGROUND"), stdin=subprocess.DEVNULL,
            stdout=self._stderr, stderr=subprocess.STDOUT, cwd=self.dir,
            start_new_session=True, env=self.env,
            preexec_fn=_core_limit if self.cores else None)
        _RUNNING.add(self)

        self.http_probe = http_probe
        try:
            _wait_ready(self._ready, timeout, "apache2 on port %d" % self.port)
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self):
        """One readiness check; raises if the parent has exited.

        With http_probe, a GET PROBE_PATH must get an answer (a 404). It is
        logged like any other request; access_log_count() leaves such lines
        out unless asked, probe_count() counts them. The module does not record
        it unless record_probes=True (see the class docstring). Without http_probe, no request is
        made: the parent must have logged "resuming normal operations", have a
        child, and accept a TCP connection (closed without a request, which
        httpd neither logs nor hands to request hooks)."""
        if self.proc.poll() is not None:
            raise RuntimeError(
                "apache2 exited with %s\n--- stderr:\n%s\n--- error.log:\n%s"
                % (self.proc.returncode, _tail(_read(self.stderr_path)),
                   _tail(_read(self.error_log_path))))
        try:
            if self.http_probe:
                http_request(self.url.rstrip("/") + PROBE_PATH, timeout=2)
                return True
            if self._generations() < 1 or not self.children():
                return False
            with socket.create_connection((HOST, self.port), timeout=2):
                return True
        except OSError:
            return False

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def children(self):
        """[(pid, starttime)] of the parent's live descendants."""
        if not self.running():
            return []
        return _descendants(self.proc.pid)

    def child_pids(self):
        return [p for p, _ in self.children()]

    def _remember_children(self):
        known = set(self._children)
        self._children += [c for c in self.children() if c not in known]

    def _generations(self):
        # AH00489 "... configured -- resuming normal operations" is logged at
        # notice level, which httpd logs whatever the LogLevel, once per
        # (re)start.
        return self.error_log_text().count("resuming normal operations")

    def _signal_and_wait_generation(self, sig, timeout):
        before = self._generations()
        self._remember_children()
        os.kill(self.proc.pid, sig)
        wait_until(lambda: self._generations() > before or not self.running(),
                   timeout, 0.05, "httpd did not restart")
        if not self.running():
            raise RuntimeError("apache2 exited during restart:\n%s"
                               % _tail(self.error_log_text()))
        _wait_ready(self._ready, timeout, "apache2 after restart")

    def graceful(self, wait=True, timeout=20.0):
        """Graceful restart (SIGUSR1): old children finish their requests.
        With wait, returns once the new generation answers."""
        if wait:
            self._signal_and_wait_generation(signal.SIGUSR1, timeout)
        else:
            self._remember_children()
            os.kill(self.proc.pid, signal.SIGUSR1)

    def restart(self, timeout=20.0):
        """Hard restart (SIGHUP): children are killed, config re-read."""
        self._signal_and_wait_generation(signal.SIGHUP, timeout)

    def graceful_stop(self, timeout=30.0):
        """Graceful stop (SIGWINCH): waits for the parent and all children to
        exit; falls back to stop() (recorded as a problem) after timeout."""
        if not self.running():
            return self.stop()
        self._remember_children()
        os.kill(self.proc.pid, signal.SIGWINCH)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.problems.append("graceful-stop did not finish in %.0fs" % timeout)
        return self.stop(timeout=timeout)

    def stop(self, timeout=30.0):
        """SIGTERM to the parent, then waits until it and every child (known
        before the signal or seen since) are gone. SIGKILL after timeout; that
        is recorded as a problem (a child that does not exit is a bug).
        Returns the parent's exit status."""
        if self.proc is not None:
            if self.proc.poll() is None:
                if self.mpm != "prefork":
                    # httpd 2.4's threaded MPMs can crash a child whose main
                    # thread closes worker sockets (ungraceful stop) while a
                    # worker frees a connection the client just closed (a
                    # core showed event's main thread in apr_os_sock_get,
                    # workers destroying their allocators; seen without this
                    # module too). Tests close their last connection and stop
                    # at once; a moment lets the workers finish first.
                    time.sleep(STOP_SETTLE_S)
                self._remember_children()
                self.proc.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + timeout
                while self.proc.poll() is None and time.monotonic() < deadline:
                    self._remember_children()  # e.g. spawned during a restart
                    time.sleep(0.05)
                if self.proc.poll() is None:
                    self.problems.append("parent %d ignored SIGTERM for %.0fs, killed"
                                         % (self.proc.pid, timeout))
                    self._remember_children()
                    self.proc.kill()
                    self.proc.wait(timeout=10)
            # httpd logs nothing once its pools are gone: the exit status is
            # the only trace of a crash at the very end (a SIGKILL above is
            # already a problem of its own).
            rc = self.proc.returncode
            if rc is not None and rc < 0 and rc != -signal.SIGKILL:
                msg = "parent %d died of signal %d" % (self.proc.pid, -rc)
                if msg not in self.problems:    # stop() may run twice
                    self.problems.append(msg)
            left = _wait_gone(self._children, timeout)
            if left:
                self.problems.append("children %s outlived the parent, killed"
                                     % [p for p, _ in left])
                for p in left:
                    _kill(p[0], p[1], signal.SIGKILL)
                _wait_gone(left, 10)
        if self._stderr:
            self._stderr.close()
            self._stderr = None
        _RUNNING.discard(self)
        return self.proc.returncode if self.proc else None

    # -- logs --------------------------------------------------------------

    def error_log_text(self):
        return _read(self.error_log_path) + _read(self.stderr_path)

    def access_log_entries(self):
        return parse_access_log(_read(self.access_log_path))

    def access_log_count(self, include_probes=False):
        """Requests logged so far, without the harness's readiness probes
        unless include_probes (with record_probes=True, that total is what
        the module saw).

        The log line is written after the response went out, so a client may
        finish first: use wait_access_log_count."""
        lines = _read(self.access_log_path).splitlines()
        if include_probes:
            return len(lines)
        return sum(1 for line in lines if not line.endswith(" " + PROBE_PATH))

    def probe_count(self):
        """Readiness-probe requests in the access log (see _ready)."""
        return (self.access_log_count(include_probes=True)
                - self.access_log_count())

    def wait_access_log_count(self, n, timeout=10.0, include_probes=False):
        """Waits until access_log_count() >= n; returns the count."""
        try:
            wait_until(lambda: self.access_log_count(include_probes) >= n,
                       timeout, 0.05)
        except TimeoutError:
            raise TimeoutError("access.log has %d of %d lines after %.0fs"
                               % (self.access_log_count(include_probes), n,
                                  timeout)) from None
        return self.access_log_count(include_probes)

    def check_error_log(self, allowed=()):
        """Unexpected lines of error.log (and of the early stderr): any line at
        level error/crit/alert/emerg, anything matching BAD_PATTERNS, and
        unformatted lines (raw stderr output: sanitizers, abort messages...),
        unless it matches one of `allowed` or self.allowed_errors (regexes,
        re.search). Harness problems (forced kills) are appended as
        "[harness] ..." lines. Empty means clean."""
        allowed = list(allowed) + list(self.allowed_errors) + EVENT_SHUTDOWN_RACES
        if not self.load_module:
            # Without this module, a child's crash is httpd's own business:
            # Debian's 2.4 event MPM was seen to segfault a child stopped
            # right after it started. Harness self-tests are not about that.
            allowed += STOCK_HTTPD_CRASHES
        text = self.error_log_text()
        allowed += self.stock_crash_patterns(text)
        return (unexpected_lines(text, allowed)
                + ["[harness] " + p for p in self.problems])

    def stock_crashes(self, text=None):
        """PIDs of children that httpd itself crashed (see
        log.stock_crashes), from its error log or `text`; empty for a server
        without the module."""
        if not self.load_module:
            return []
        text = self.error_log_text() if text is None else text
        return stock_crashes(text, self._core_paths() if self.cores else ())

    def stock_crash_patterns(self, text=None):
        """log.stock_crash_patterns of its error log (or `text`) and of
        stock_crashes()."""
        text = self.error_log_text() if text is None else text
        return stock_crash_patterns(text, self.stock_crashes(text))

    def _core_paths(self):
        # CoreDumpDirectory, and ServerRoot for a child that crashed after
        # its pools were gone (see conf.make_server_root).
        return (os.path.join(self.dir, "cores", "core"), os.path.join(self.dir, "core"))

    def cleanup(self):
        if not KEEP_TMP:
            shutil.rmtree(self.dir, ignore_errors=True)
