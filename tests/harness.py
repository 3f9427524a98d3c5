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
* Httpd           - /usr/sbin/apache2 with a generated config, optionally
                    loading the module under test (MODULE_SO), and with
                    HTTP/2 over cleartext (h2c) when asked (H2C_CONF)

plus load generators (ab, h2load, LoadLoop), a directive builder for the
module (Imx), the module's status page and exit lines (imx_status,
flusher_exits) and small helpers (free_port, wait_until, http_request).

Everything here uses the standard library only (system python3). Every wait is
bounded by a timeout, and every process is stopped by its PID (SIGTERM, then
SIGKILL after a timeout). Set IMX_KEEP_TMP=1 to keep the temporary directories
of passing tests as well (failing httpd instances always keep theirs).
"""

import atexit
import gzip
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import namedtuple

# --------------------------------------------------------------------------
# Paths and constants

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)

# Where `apxs -c` (driven by the Makefile) leaves the built module.
MODULE_SO = os.path.join(REPO_ROOT, ".libs", "mod_influx_metrics.so")
MODULE_NAME = "influx_metrics_module"

APACHE2 = "/usr/sbin/apache2"
APACHE_MODULES_DIR = "/usr/lib/apache2/modules"
INFLUXD = "/usr/bin/influxd"
VICTORIA_METRICS = "/usr/bin/victoria-metrics"
VMAGENT = "/usr/bin/vmagent"             # shipped by Debian's victoria-metrics
AB = "/usr/bin/ab"
H2LOAD = "/usr/bin/h2load"       # Debian's nghttp2-client

HOST = "127.0.0.1"
IS_ROOT = os.geteuid() == 0
# httpd refuses to run its children as root; the Debian account is used then.
RUN_USER = "www-data"
# IMX_TEST_CORES=1: the children of every httpd, not only of those that load
# the module, dump core into <its dir>/cores (for gdb) when they crash.
CORES = os.environ.get("IMX_TEST_CORES") == "1"


def _core_limit():
    resource.setrlimit(resource.RLIMIT_CORE,
                       (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    # Without the shared anonymous mappings (the module's rings and tables,
    # hundreds of MB of address space): a core is then written in a moment,
    # not in the seconds after which httpd escalates to SIGTERM.
    try:
        with open("/proc/self/coredump_filter", "w") as f:
            f.write("0x31")
    except OSError:
        pass

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


# --------------------------------------------------------------------------
# Process bookkeeping (by PID only)

def _proc_stat(pid):
    """(state, ppid, starttime) from /proc/<pid>/stat, or None if gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses.
    rest = data[data.rindex(")") + 2:].split()
    return rest[0], int(rest[1]), int(rest[19])


def _descendants(root_pid):
    """[(pid, starttime)] of all live descendants of root_pid (scan of /proc).

    The start time identifies the process, so a recycled PID is never taken
    for one of ours later on."""
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = _proc_stat(int(name))
        if st and st[0] != "Z":
            children.setdefault(st[1], []).append((int(name), st[2]))
    out, todo = [], [root_pid]
    while todo:
        for pid, start in children.get(todo.pop(), []):
            out.append((pid, start))
            todo.append(pid)
    return out


def _alive(pid, starttime):
    """True while that exact process exists and is not a zombie. Orphans get
    reparented to PID 1, which in a container may never reap them: a zombie
    counts as gone."""
    st = _proc_stat(pid)
    return st is not None and st[2] == starttime and st[0] != "Z"


def _kill(pid, starttime, sig):
    if _alive(pid, starttime):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _wait_gone(procs, timeout):
    """Waits until none of [(pid, starttime)] is alive; returns the survivors."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in procs if _alive(*p)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def _stop_popen(proc, timeout):
    """SIGTERM, wait up to timeout, then SIGKILL. Returns True if SIGKILL was
    needed."""
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
        return False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        return True


# Safety net: if the test run dies without its teardowns, stop what we started.
_RUNNING = set()


@atexit.register
def _stop_leftovers():
    for server in list(_RUNNING):
        try:
            server.stop()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


# --------------------------------------------------------------------------
# InfluxDB 1.x

class _Backend:
    """What the private backends (influxd, VictoriaMetrics) share: a process
    started by start(), its log, stop by PID, and a temp dir to remove."""

    @property
    def url(self):
        return "http://%s:%d" % (HOST, self.port)

    def _spawn(self, args, name, path, want, timeout):
        """Starts args (output to the log) and waits until GET path answers
        `want`; stops it again if it exits or never gets ready."""
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, cwd=self.dir, start_new_session=True)
        _RUNNING.add(self)

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with %s:\n%s"
                                   % (name, self.proc.returncode, _tail(_read(self.log_path))))
            try:
                return http_request(self.url + path, timeout=2)[0] == want
            except OSError:
                return False
        try:
            _wait_ready(ready, timeout, name + " " + path)
        except BaseException:
            self.stop()
            raise

    def log_text(self):
        return _read(self.log_path)

    def stop(self, timeout=15.0):
        if self.proc is not None:
            _stop_popen(self.proc, timeout)
        if self._log:
            self._log.close()
            self._log = None
        _RUNNING.discard(self)

    def cleanup(self):
        if self.dir and not KEEP_TMP:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        self.cleanup()


class Influx(_Backend):
    """A private influxd 1.x on 127.0.0.1:<port>.

    With auth=True, authentication is enabled and an admin user is created
    right after start-up (InfluxDB allows creating the first admin without
    credentials); all later requests of this object authenticate as that user.
    Note: influxd 1.6 knows Basic auth and u/p parameters; the
    "Authorization: Token user:password" scheme arrived only in 1.8.
    """

    def __init__(self, auth=False, user="admin", password="adminpass",
                 log_level="info", http_log=True):
        self.auth = auth
        self.user = user
        self.password = password
        self.log_level = log_level
        self.http_log = http_log
        self.dir = None
        self.port = None
        self.rpc_port = None
        self.proc = None
        self._log = None

    @property
    def log_path(self):
        return os.path.join(self.dir, "influxd.log")

    def write_url(self, db, precision="ns"):
        """The 1.x /write endpoint for db (what the module would post to)."""
        q = {"db": db}
        if precision:
            q["precision"] = precision
        return "%s/write?%s" % (self.url, urllib.parse.urlencode(q))

    def _config(self):
        d = self.dir
        return """\
# Generated by tests/harness.py
reporting-disabled = true
# RPC (backup/restore) service, loopback only.
bind-address = "{host}:{rpc_port}"

[meta]
  dir = "{d}/meta"

[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  # Tests query right after writing; do not delay WAL fsyncs.
  wal-fsync-delay = "0s"
  query-log-enabled = false

[retention]
  enabled = false

[shard-precreation]
  enabled = false

[monitor]
  # No _internal database: it would add writes and background work.
  store-enabled = false

[http]
  enabled = true
  bind-address = "{host}:{port}"
  auth-enabled = {auth}
  log-enabled = {http_log}
  pprof-enabled = false

[logging]
  format = "logfmt"
  level = "{level}"

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false
""".format(host=HOST, rpc_port=self.rpc_port, port=self.port, d=d,
           auth="true" if self.auth else "false",
           http_log="true" if self.http_log else "false",
           level=self.log_level)

    def start(self, timeout=30.0):
        self.dir = make_tmpdir("influx")
        self.port = free_port()
        self.rpc_port = free_port()
        while self.rpc_port == self.port:
            self.rpc_port = free_port()
        _write(os.path.join(self.dir, "influxdb.conf"), self._config())
        return self._launch(timeout)

    def start_again(self, timeout=30.0):
        """After stop(): the same data, ports and users (an outage ends)."""
        return self._launch(timeout, create_user=False)

    def _launch(self, timeout, create_user=True):
        conf = os.path.join(self.dir, "influxdb.conf")
        # influxd 1.x has no log-file setting: it logs to stderr.
        self._spawn([INFLUXD, "run", "-config", conf], "influxd", "/ping", 204, timeout)
        if self.auth and create_user:
            # Allowed without credentials only while no user exists.
            self.query("CREATE USER \"%s\" WITH PASSWORD '%s' WITH ALL PRIVILEGES"
                       % (self.user, self.password.replace("'", "\\'")),
                       credentials=False)
        return self

    def _auth_params(self, credentials=True):
        if self.auth and credentials:
            return {"u": self.user, "p": self.password}
        return {}

    def query(self, q, db=None, epoch=None, credentials=True, timeout=10.0):
        """POSTs an InfluxQL statement to /query; returns the parsed JSON.

        Raises RuntimeError on an HTTP error or a statement error."""
        form = {"q": q}
        if db:
            form["db"] = db
        if epoch:
            form["epoch"] = epoch
        # influxd reads u/p from the URL only, never from a form body.
        auth = urllib.parse.urlencode(self._auth_params(credentials))
        status, body, _ = http_request(
            self.url + "/query" + ("?" + auth if auth else ""),
            data=urllib.parse.urlencode(form),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            timeout=timeout)
        text = body.decode(errors="replace")
        if status != 200:
            raise RuntimeError("influx query %r: HTTP %d %s" % (q, status, text))
        res = json.loads(text)
        for r in res.get("results", []):
            if "error" in r:
                raise RuntimeError("influx query %r: %s" % (q, r["error"]))
        return res

    def create_db(self, name):
        self.query("CREATE DATABASE %s" % quote_ident(name))

    def drop_db(self, name):
        self.query("DROP DATABASE %s" % quote_ident(name))

    def write(self, db, body, precision="ns", headers=None, gzipped=False,
              credentials=True, timeout=10.0):
        """Raw line-protocol write to /write. Returns (status, text)."""
        q = {"db": db}
        if precision:
            q["precision"] = precision
        q.update(self._auth_params(credentials))
        data = body.encode() if isinstance(body, str) else body
        hdrs = dict(headers or {})
        if gzipped:
            data = gzip.compress(data)
            hdrs["Content-Encoding"] = "gzip"
        status, resp, _ = http_request(
            "%s/write?%s" % (self.url, urllib.parse.urlencode(q)),
            data=data, headers=hdrs, timeout=timeout)
        return status, resp.decode(errors="replace")

    def select(self, q, db):
        """Rows of the first series of a SELECT as dicts, times in ns."""
        res = self.query(q, db=db, epoch="ns")
        series = res["results"][0].get("series") or []
        out = []
        for s in series:
            for v in s["values"]:
                row = dict(zip(s["columns"], v))
                row.update(s.get("tags") or {})
                out.append(row)
        return out

    def count(self, db, measurement, field="duration_us", where=""):
        """count(field) over the whole measurement; 0 if no series exists."""
        q = "SELECT count(%s) FROM %s" % (quote_ident(field), quote_ident(measurement))
        if where:
            q += " WHERE " + where
        res = self.query(q, db=db)
        series = res["results"][0].get("series")
        if not series:
            return 0
        return int(series[0]["values"][0][1])



def quote_ident(name):
    """InfluxQL double-quoted identifier."""
    return '"%s"' % name.replace("\\", "\\\\").replace('"', '\\"')


# --------------------------------------------------------------------------
# VictoriaMetrics

class VictoriaMetrics(_Backend):
    """A private single-node VictoriaMetrics on 127.0.0.1:<port>.

    It accepts line protocol on /write and /api/v2/write (ignoring auth
    headers and db/org/bucket) and maps `meas,tags f1=1i,f2=2i ts` to the
    series meas_f1{tags} and meas_f2{tags}, one sample each.

    Findings with 1.79.5 (Debian), asserted by test_vm_timestamp_semantics in
    tests/test_harness_smoke.py:
    * Line-protocol timestamps are truncated to milliseconds
      (-influxTrimTimestamp, default 1ms; VM stores ms, it cannot be finer).
    * VM does NOT deduplicate: samples of one series with the same (ms)
      timestamp are all stored and exported, whether they come in one request
      or several, and they survive /internal/force_merge. (Dedup happens only
      with -dedup.minScrapeInterval, which we do not set.) So ns timestamps
      that differ only below 1 ms give distinct samples with equal ms
      timestamps, all counted. InfluxDB, by contrast, keeps one point per
      series+ns timestamp (last write wins).
    * /write?db=X adds the label db="X" (-influxDBLabel); /api/v2/write
      ?bucket=X does not. A metric-name selector matches both kinds of series.
    * Invalid lines are skipped with HTTP 204 (not 400 as influxd answers);
      they show up only as vm_rows_invalid_total{type="influx"} (see
      invalid_rows()) and in the log.
    * /api/v1/export's default end is "now" (whole seconds), which hides the
      newest samples; export() therefore asks up to a day ahead.
    """

    def __init__(self, extra_args=()):
        self.extra_args = list(extra_args)
        self.dir = None
        self.port = None
        self.proc = None
        self._log = None

    @property
    def log_path(self):
        return os.path.join(self.dir, "victoria-metrics.log")

    def write_url(self, v2=False, db="imx"):
        """A line-protocol endpoint for the module. /write?db= adds a db
        label to every series; org/bucket of /api/v2/write are ignored."""
        if v2:
            return "%s/api/v2/write?org=o&bucket=%s&precision=ns" % (self.url, db)
        return "%s/write?db=%s&precision=ns" % (self.url, db)

    def start(self, timeout=30.0):
        self.dir = make_tmpdir("vm")
        self.port = free_port()
        args = [
            VICTORIA_METRICS,
            "-storageDataPath=" + os.path.join(self.dir, "data"),
            "-httpListenAddr=%s:%d" % (HOST, self.port),
            # Test points may carry any timestamp; keep them all.
            "-retentionPeriod=100y",
            # Make just-written data visible to queries at once: no response
            # cache and no "recent data is incomplete" offset. (/api/v1/export
            # reads raw storage anyway; these matter for /api/v1/query*.)
            "-search.disableCache",
            "-search.latencyOffset=0s",
            # Do not wait for in-flight requests on SIGTERM.
            "-http.shutdownDelay=0s",
            "-loggerLevel=INFO",
        ] + self.extra_args
        self._args = args
        self._spawn(args, "victoria-metrics", "/health", 200, timeout)
        return self

    def start_again(self, timeout=30.0):
        """After stop(): the same data directory and port (an outage ends)."""
        self._spawn(self._args, "victoria-metrics", "/health", 200, timeout)
        return self

    @property
    def remote_write_url(self):
        """The Prometheus remote-write endpoint (what vmagent forwards to)."""
        return self.url + "/api/v1/write"

    def write(self, body, v2=True, precision="ns", headers=None, gzipped=False,
              timeout=10.0):
        """Raw line-protocol write. Returns (status, text)."""
        path = "/api/v2/write?org=o&bucket=b" if v2 else "/write?db=imx"
        if precision:
            path += "&precision=" + precision
        data = body.encode() if isinstance(body, str) else body
        hdrs = {"Authorization": "Token x"}
        hdrs.update(headers or {})
        if gzipped:
            data = gzip.compress(data)
            hdrs["Content-Encoding"] = "gzip"
        status, resp, _ = http_request(self.url + path, data=data, headers=hdrs,
                                       timeout=timeout)
        return status, resp.decode(errors="replace")

    def force_flush(self):
        """Makes everything ingested so far searchable (flushes the in-memory
        buffers that otherwise become visible within ~1-2 s)."""
        status, body, _ = http_request(self.url + "/internal/force_flush", timeout=30)
        if status != 200:
            raise RuntimeError("force_flush: HTTP %d %s" % (status, body[:200]))

    def export(self, match, start=None, end=None, flush=True):
        """Series matching the selector, as dicts {"metric", "values",
        "timestamps"} (one per JSON line of /api/v1/export)."""
        if flush:
            self.force_flush()
        # The default range ends at the current whole second, leaving out
        # samples just written; VM accepts timestamps up to 2 days ahead.
        if end is None:
            end = int(time.time()) + 86400
        q = [("match[]", match), ("start", str(start if start is not None else 0)),
             ("end", str(end))]
        status, body, _ = http_request(
            "%s/api/v1/export?%s" % (self.url, urllib.parse.urlencode(q)), timeout=30)
        if status != 200:
            raise RuntimeError("export %r: HTTP %d %s" % (match, status, body[:500]))
        return [json.loads(line) for line in body.decode().splitlines() if line.strip()]

    def count_samples(self, metric_match, flush=True):
        """Total samples over all series matching the selector (e.g.
        'http_duration_us' or '{__name__="http_duration_us",status="200"}').
        This is the ground truth for exact counts: unlike InfluxDB it keeps
        points that share series and timestamp."""
        return sum(len(s["values"]) for s in self.export(metric_match, flush=flush))

    def metrics(self):
        """VM's own /metrics as {"name{labels}": value}."""
        status, body, _ = http_request(self.url + "/metrics", timeout=10)
        out = {}
        for line in body.decode(errors="replace").splitlines():
            if line and not line.startswith("#"):
                key, _, val = line.rpartition(" ")
                try:
                    out[key] = float(val)
                except ValueError:
                    pass
        return out

    def invalid_rows(self):
        """Line-protocol lines VM could not parse and skipped (it still
        answers 204 for them)."""
        return int(self.metrics().get('vm_rows_invalid_total{type="influx"}', 0))

    def inserted_rows(self):
        """Line-protocol lines VM accepted (one per line, not per field)."""
        return int(self.metrics().get('vm_rows_inserted_total{type="influx"}', 0))

    def force_merge(self, partition_prefix=None):
        """Merges the parts of a partition (default: this month's), which is
        when deduplication would happen if it were enabled."""
        prefix = partition_prefix or time.strftime("%Y_%m", time.gmtime())
        status, body, _ = http_request(
            "%s/internal/force_merge?partition_prefix=%s" % (self.url, prefix),
            timeout=60)
        if status != 200:
            raise RuntimeError("force_merge: HTTP %d %s" % (status, body[:200]))

    def delete_series(self, match):
        status, body, _ = http_request(
            "%s/api/v1/admin/tsdb/delete_series?%s"
            % (self.url, urllib.parse.urlencode([("match[]", match)])), timeout=30)
        if status not in (200, 204):
            raise RuntimeError("delete_series: HTTP %d %s" % (status, body[:200]))



class Vmagent(_Backend):
    """A private vmagent on 127.0.0.1:<port> that forwards to remote_write_url
    (a VictoriaMetrics' /api/v1/write, see VictoriaMetrics.remote_write_url).

    It takes line protocol on /write (and /api/v2/write) like
    VictoriaMetrics does, with the same naming (measurement_field, db label),
    answers 204 once the data is in its queue, and sends it on with the
    remote-write protocol. Its queue spills to -remoteWrite.tmpDataPath (in
    this object's directory) while the remote storage is down or slow, and
    is kept there across a stop: start_again() sends it on.

    Findings with 1.79.5 (Debian): a failed remote write is retried with a
    backoff that doubles from 2 s up to 1 min (2, 4, 8, ... s), so after a
    10 s outage its queue arrived about 6 s after the storage was back
    (tests/test_fleet.py). What a stopped vmagent has not sent stays in
    tmpDataPath and goes out after start_again().

    port may be given (or taken before start() from .port), so that a module
    can be configured with the URL of a vmagent that is not started yet.
    flush_interval is -remoteWrite.flushInterval (vmagent's default is 1s).
    """

    def __init__(self, remote_write_url, flush_interval="1s", extra_args=(),
                 port=None):
        self.remote_write_url = remote_write_url
        self.flush_interval = flush_interval
        self.extra_args = list(extra_args)
        self.dir = make_tmpdir("vmagent")
        self.port = port or free_port()
        self.proc = None
        self._log = None

    @property
    def log_path(self):
        return os.path.join(self.dir, "vmagent.log")

    @property
    def queue_dir(self):
        return os.path.join(self.dir, "queue")

    def write_url(self, db="imx"):
        """The InfluxDB 1.x-style line-protocol endpoint for the module
        (?db= becomes a db label, as with VictoriaMetrics)."""
        return "%s/write?db=%s&precision=ns" % (self.url, db)

    def _args(self):
        return [
            VMAGENT,
            "-httpListenAddr=%s:%d" % (HOST, self.port),
            "-remoteWrite.url=" + self.remote_write_url,
            "-remoteWrite.tmpDataPath=" + self.queue_dir,
            "-remoteWrite.flushInterval=" + self.flush_interval,
            "-http.shutdownDelay=0s",
            "-loggerLevel=INFO",
        ] + self.extra_args

    def start(self, timeout=30.0):
        self._spawn(self._args(), "vmagent", "/health", 200, timeout)
        return self

    # After stop(): the same port and the same on-disk queue.
    start_again = start

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def metrics(self):
        """vmagent's own /metrics as {"name{labels}": value}."""
        return VictoriaMetrics.metrics(self)

    def metric_sum(self, name):
        """Sum of a metric over all its label sets (0 if absent)."""
        return sum(v for k, v in self.metrics().items()
                   if k == name or k.startswith(name + "{"))

    def samples_received(self):
        """Samples it accepted as line protocol: one per field of each line
        (unlike VictoriaMetrics' vm_rows_inserted_total, one per line)."""
        return int(self.metric_sum('vmagent_rows_inserted_total{type="influx"}'))

    def pending_bytes(self):
        """Bytes queued for the remote storage and not yet sent."""
        return int(self.metric_sum("vmagent_remotewrite_pending_data_bytes"))


# --------------------------------------------------------------------------
# The module's directives

class Imx:
    """Builds the mod_influx_metrics directives for a config context.

    Only what is given is emitted, so the module's defaults stay testable;
    flush_interval defaults to 200ms to keep tests fast.

        str(Imx(influx.write_url(db), measurement="http", tags={"env": "t"}))
    """

    def __init__(self, url=None, token=None, measurement=None, tags=None,
                 flush_interval="200ms", batch_size=None, buffer_size=None,
                 timeout=None, gzip=None, enabled=None, route=None, extra=""):
        self.url = url
        self.token = token
        self.measurement = measurement
        self.tags = tags or {}
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.buffer_size = buffer_size
        self.timeout = timeout
        self.gzip = gzip
        self.enabled = enabled
        self.route = route
        self.extra = extra

    @staticmethod
    def _arg(v):
        """Quotes an argument for the httpd config parser when needed."""
        s = str(v)
        if s == "" or re.search(r'[\s"\\]', s):
            return '"%s"' % s.replace("\\", "\\\\").replace('"', '\\"')
        return s

    @staticmethod
    def _onoff(v):
        if isinstance(v, str):
            return v
        return "On" if v else "Off"

    def text(self):
        a = self._arg
        lines = []
        if self.enabled is not None:
            lines.append("InfluxMetrics %s" % self._onoff(self.enabled))
        if self.url is not None:
            lines.append("InfluxMetricsURL %s" % a(self.url))
        if self.token is not None:
            lines.append("InfluxMetricsToken %s" % a(self.token))
        if self.measurement is not None:
            lines.append("InfluxMetricsMeasurement %s" % a(self.measurement))
        tags = self.tags.items() if isinstance(self.tags, dict) else self.tags
        for k, v in tags:
            lines.append("InfluxMetricsTag %s %s" % (a(k), a(v)))
        if self.flush_interval is not None:
            lines.append("InfluxMetricsFlushInterval %s" % a(self.flush_interval))
        if self.batch_size is not None:
            lines.append("InfluxMetricsBatchSize %s" % a(self.batch_size))
        if self.buffer_size is not None:
            lines.append("InfluxMetricsBufferSize %s" % a(self.buffer_size))
        if self.timeout is not None:
            lines.append("InfluxMetricsTimeout %s" % a(self.timeout))
        if self.gzip is not None:
            lines.append("InfluxMetricsGzip %s" % self._onoff(self.gzip))
        if self.route is not None:
            lines.append("InfluxMetricsRoute %s" % a(self.route))
        if self.extra:
            lines.append(self.extra.rstrip("\n"))
        return "\n".join(lines) + "\n"

    __str__ = text


# --------------------------------------------------------------------------
# Apache httpd

# Error-log lines that are bad whatever their level: crashes and forced kills.
# AH00045/AH00046/AH00047: a child did not exit on SIGTERM in time (e.g. a
# flusher thread that blocks shutdown) and had to be killed.
BAD_PATTERNS = [
    r"exit signal",                    # AH00052: child pid N exit signal Segmentation fault
    r"AH00060",                        # seg fault or similar nasty error detected
    r"AH0004[567]",                    # child did not exit, SIGTERM/SIGKILL sent
    r"AddressSanitizer|LeakSanitizer|ThreadSanitizer|UndefinedBehaviorSanitizer",
    r"runtime error:",                 # UBSan
    r"double free|free\(\): invalid|malloc\(\)|stack smashing|Aborted",
]
BAD_LEVELS = ("error", "crit", "alert", "emerg")
# Pause before stopping a threaded MPM (see Httpd.stop).
STOP_SETTLE_S = 0.15
# httpd's event MPM, stopping a child (restart, stop) under keep-alive load,
# can log that it could not add a finished connection to its pollset, which
# is being torn down (EBADF). The request was served and logged; seen with
# and without this module, under CPU contention. Not a failure of the module.
EVENT_SHUTDOWN_RACES = [r"\(9\)Bad file descriptor: AH0309[23]: process_"]

# Lines tolerated from an httpd that does not load this module (see
# Httpd.check_error_log).
STOCK_HTTPD_CRASHES = [r"AH00052: child pid \d+ exit signal Segmentation fault"]
# A child's death by a signal (AH00051 when it may have dumped core), and
# the module's line from the start of a child (see Httpd.stock_crashes).
_CRASHED = re.compile(r"AH0005[12]: child pid (\d+) exit signal")
_STARTED = re.compile(r"\[pid (\d+):tid \d+\] IMX0019: ")

# httpd's own races, told by the crashing thread's frames in a core (gdb's
# "bt"); see docs/operations.md.
STOCK_CORE_RACES = {
    # event, stopping a child ungracefully under load: the main thread reads
    # a worker's socket while the worker frees its connection.
    # (The faulting frame is #0, or follows httpd's handler, which re-raises
    # the signal to the process: any thread may then be "thread 1".)
    "event close_worker_sockets": r"(?:^#0|<signal handler called>\n#\d+) +0x[0-9a-f]+ in "
                                  r"apr_os_sock_get \(\) from \S*libapr[^\n]*\n"
                                  r"#\d+ +0x[0-9a-f]+ in .* from \S*mod_mpm_event\.so",
}
GLIBC_HEAP_ABORT = (r"^(corrupted |malloc\(\)|free\(\)|double free|malloc_consolidate"
                    r"|munmap_chunk|realloc\(\)|unaligned |invalid )")
# "[Tue Nov 25 11:44:19.123456 2026] [module:level] [pid ...] ..."
_LOG_LINE = re.compile(r"^\[[^\]]*\] \[(?:[^:\]]*:)?(\w+)\]")

DEFAULT_MPM_CONF = {
    "event": {"StartServers": 2, "MinSpareThreads": 25, "MaxSpareThreads": 75,
              "ThreadsPerChild": 25, "MaxRequestWorkers": 150,
              "MaxConnectionsPerChild": 0},
    "worker": {"StartServers": 2, "MinSpareThreads": 25, "MaxSpareThreads": 75,
               "ThreadsPerChild": 25, "MaxRequestWorkers": 150,
               "MaxConnectionsPerChild": 0},
    "prefork": {"StartServers": 5, "MinSpareServers": 5, "MaxSpareServers": 10,
                "MaxRequestWorkers": 150, "MaxConnectionsPerChild": 0},
}

# Static content served from the DocumentRoot.
HTDOCS = {
    "index.html": "hello\n",
    "small.txt": "small file\n",
    "empty.txt": "",
    "big.bin": "x" * 65536,
    "sub/page.html": "<p>sub page</p>\n",
}

_BUILTIN = None


def apache_builtin_modules():
    """Short names of modules compiled into apache2 (`apache2 -l`): Debian
    builds log_config and unixd in, and LoadModule of those is an error."""
    global _BUILTIN
    if _BUILTIN is None:
        out = subprocess.run([APACHE2, "-l"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, timeout=20).stdout.decode()
        _BUILTIN = set(re.findall(r"^\s*mod_(\w+)\.c$", out, re.M))
    return _BUILTIN


# Path of the readiness probe (a 404: no such file).
PROBE_PATH = "/__harness_probe"
ACCESS_LOG_FORMAT = "%h %>s %B %D %m %U"
AccessEntry = namedtuple("AccessEntry", "host status bytes duration_us method path")


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
        if mpm not in DEFAULT_MPM_CONF:
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
        self._make_tree()
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

    def _make_tree(self):
        for rel, content in HTDOCS.items():
            path = os.path.join(self.htdocs, rel)
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            os.chmod(os.path.dirname(path), 0o755)
            _write(path, content)
        for sub in ("run", "lock"):
            os.makedirs(os.path.join(self.dir, sub), mode=0o755, exist_ok=True)
        if self.cores:
            cores = os.path.join(self.dir, "cores")
            os.makedirs(cores, mode=0o777, exist_ok=True)
            os.chmod(cores, 0o777)
            # A child that crashes after its pools are gone (httpd then no
            # longer moves to CoreDumpDirectory) dumps into ServerRoot.
            os.chmod(self.dir, 0o777)
        # Own mime.types: mod_mime's default (conf/mime.types) is relative to
        # ServerRoot, which is this directory.
        _write(os.path.join(self.dir, "mime.types"),
               "text/html html htm\ntext/plain txt\napplication/octet-stream bin\n")

    def _mpm_text(self):
        conf = self.mpm_conf
        if conf is None:
            conf = DEFAULT_MPM_CONF[self.mpm]
        if isinstance(conf, dict):
            return "\n".join("%s %s" % kv for kv in conf.items())
        return conf

    def config_text(self):
        d = self.dir
        mods = ["mpm_" + self.mpm, "authz_core", "mime", "dir", "log_config",
                "unixd"]
        for m in self.modules:
            if m not in mods:
                mods.append(m)
        builtin = apache_builtin_modules()
        load = "\n".join("LoadModule %s_module %s/mod_%s.so"
                         % (m, APACHE_MODULES_DIR, m)
                         for m in mods if m not in builtin)
        if self.load_module:
            load += "\nLoadModule %s %s" % (MODULE_NAME, self.module_so)
        # Children must not run as root; as a normal user they run as that user.
        user = "User %s\nGroup %s\n" % (RUN_USER, RUN_USER) if IS_ROOT else ""
        probe = ""
        if self.load_module and not self.record_probes:
            probe = ('# The harness\'s readiness probes are not request data.\n'
                     '<Location "%s">\n    InfluxMetrics Off\n</Location>\n'
                     % PROBE_PATH)
        return """\
# Generated by tests/harness.py
ServerRoot "{d}"
DefaultRuntimeDir "{d}/run"
PidFile "{d}/run/httpd.pid"
# File-based mutexes (if any mechanism needs one) live here, not in /var.
Mutex file:{d}/lock default
Listen {host}:{port}
ServerName localhost
{load}
{user}
ErrorLog "{d}/error.log"
LogLevel {log_level}
LogFormat "{fmt}" imx
CustomLog "{d}/access.log" imx

TypesConfig "{d}/mime.types"
DocumentRoot "{d}/htdocs"
DirectoryIndex index.html
<Directory />
    AllowOverride None
    Require all denied
</Directory>
<Directory "{d}/htdocs">
    AllowOverride None
    Require all granted
</Directory>

Timeout 30
KeepAlive On
KeepAliveTimeout 5
MaxKeepAliveRequests 0

<IfModule mpm_{mpm}_module>
{mpm_conf}
</IfModule>

{cores}
{extra}
{probe}""".format(d=d, host=HOST, port=self.port, load=load, user=user,
           cores=('CoreDumpDirectory "%s/cores"' % d) if self.cores else "",
           log_level=self.log_level, fmt=ACCESS_LOG_FORMAT, mpm=self.mpm,
           mpm_conf=self._mpm_text(), extra=self.extra, probe=probe)

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
        out = []
        for line in _read(self.access_log_path).splitlines():
            f = line.split(" ", 5)
            if len(f) == 6:
                out.append(AccessEntry(f[0], int(f[1]),
                                       0 if f[2] == "-" else int(f[2]),
                                       int(f[3]), f[4], f[5]))
        return out

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
        allow = [re.compile(r) for r in allowed]
        bad = [re.compile(r) for r in BAD_PATTERNS]
        out = []
        for line in text.splitlines():
            if not line.strip() or any(r.search(line) for r in allow):
                continue
            m = _LOG_LINE.match(line)
            level = m.group(1).lower() if m else None
            if (level in BAD_LEVELS or any(r.search(line) for r in bad)
                    or (m is None and not line.startswith("AH"))):
                out.append(line)
        out += ["[harness] " + p for p in self.problems]
        return out

    def stock_crashes(self, text=None):
        """PIDs of children that httpd itself crashed, by what can prove it
        (see docs/operations.md); empty for a server without the module:
        - died of a signal without having logged IMX0019, which the module
          logs before any module's child_init runs: crashed before this
          module ran any code in it (prefork's stop handler frees pools
          inside the signal handler; a restart that reaches a child still
          being set up can corrupt its heap);
        - with cores, a core of that child whose crashing thread matches one
          of STOCK_CORE_RACES."""
        if not self.load_module:
            return []
        text = self.error_log_text() if text is None else text
        started = set(int(p) for p in _STARTED.findall(text))
        crashed = [int(p) for p in _CRASHED.findall(text)]
        out = [p for p in crashed if p not in started]
        if self.cores and len(out) < len(crashed):
            races = self._core_races()
            out += [p for p in crashed if p in started and p in races]
        return out

    def stock_crash_patterns(self, text=None):
        """Regexes of the error-log lines about the children of
        stock_crashes(): their death, httpd's escalation while one took long
        to die (dumping core), and glibc's abort message, which names no
        process, only when every crash was such a child."""
        text = self.error_log_text() if text is None else text
        stock = self.stock_crashes(text)
        out = [r"AH000(5[12]: child pid|4[5-7]: child process) %d (exit signal|still did not)"
               % pid for pid in stock]
        if stock and len(stock) == len(_CRASHED.findall(text)):
            out.append(GLIBC_HEAP_ABORT)
        return out

    def _core_races(self):
        """{pid: race name} of the cores in this server's directories whose
        faulting thread shows one of STOCK_CORE_RACES (gdb's backtraces)."""
        out = {}
        gdb = shutil.which("gdb")
        if not gdb:
            return out
        for path in (os.path.join(self.dir, "cores", "core"), os.path.join(self.dir, "core")):
            if not os.path.exists(path):
                continue
            try:
                bt = subprocess.run([gdb, "-batch", "-ex", "info inferiors",
                                     "-ex", "thread apply all bt 12", APACHE2, path],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, timeout=120).stdout.decode(
                                        errors="replace")
            except (OSError, subprocess.TimeoutExpired):
                continue
            pid = re.search(r"^\*? *1 +process (\d+)", bt, re.M)
            if not pid:
                continue
            frames = "\n".join(ln for ln in bt.splitlines() if ln.startswith("#"))
            for name, sig in STOCK_CORE_RACES.items():
                if re.search(sig, frames, re.M):
                    out[int(pid.group(1))] = name
        return out

    def cleanup(self):
        if not KEEP_TMP:
            shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------
# Load generation

AbResult = namedtuple("AbResult", "complete failed non2xx returncode output")


def _ab_cmd(url, n, c, keepalive, extra_args):
    cmd = [AB, "-q", "-r", "-n", str(n), "-c", str(c)]
    if keepalive:
        cmd.append("-k")
    return cmd + list(extra_args) + [url]


def parse_ab(output, returncode=0):
    def field(name):
        m = re.search(r"^%s:\s+(\d+)" % re.escape(name), output, re.M)
        return int(m.group(1)) if m else 0
    if returncode != 0 and "Complete requests:" not in output:
        raise RuntimeError("ab failed (%d):\n%s" % (returncode, output))
    # "Non-2xx responses" is only printed when there were any.
    return AbResult(field("Complete requests"), field("Failed requests"),
                    field("Non-2xx responses"), returncode, output)


def ab(url, n, c, keepalive=True, timeout=120.0, extra_args=()):
    """Runs ab to completion; returns AbResult(complete, failed, non2xx, ...)."""
    p = subprocess.run(_ab_cmd(url, n, c, keepalive, extra_args),
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=timeout)
    return parse_ab(p.stdout.decode(errors="replace"), p.returncode)


class AbBackground:
    """ab running in the background, e.g. across a graceful restart.

    Use keepalive=False there: at a graceful restart the worker and prefork
    MPMs close idle keep-alive connections, which ab counts as a few failed
    requests (event hands them over without loss).

        run = AbBackground(h.url, 5000, 8)
        h.graceful()
        res = run.wait()
    """

    def __init__(self, url, n, c, keepalive=True, extra_args=()):
        self._out = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(_ab_cmd(url, n, c, keepalive, extra_args),
                                     stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=subprocess.STDOUT)
        _RUNNING.add(self)

    def running(self):
        return self.proc.poll() is None

    def wait(self, timeout=120.0):
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        finally:
            _RUNNING.discard(self)
        self._out.seek(0)
        output = self._out.read().decode(errors="replace")
        self._out.close()
        return parse_ab(output, self.proc.returncode)

    def stop(self):
        _stop_popen(self.proc, 5)
        _RUNNING.discard(self)


# --------------------------------------------------------------------------
# HTTP/2 (mod_http2, h2c) and h2load

# Config for HTTP/2 over cleartext. Load mod_http2 with modules=["http2"]:
#     Httpd(mpm="event", modules=["http2"], extra=H2C_CONF + ...)
# h2load speaks h2c with prior knowledge to an http:// URL, which httpd
# accepts once h2c is among the Protocols.
H2C_CONF = "Protocols h2c http/1.1\n"

H2loadResult = namedtuple(
    "H2loadResult",
    "total started done succeeded failed errored timeout s2xx s3xx s4xx s5xx "
    "returncode output")


def _h2load_cmd(url, n, c, m, extra_args):
    return [H2LOAD, "-n", str(n), "-c", str(c), "-m", str(m)] + list(extra_args) + [url]


def parse_h2load(output, returncode=0):
    """The summary of h2load: its "requests:" and "status codes:" lines."""
    req = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                    r"(\d+) failed, (\d+) errored, (\d+) timeout", output, re.M)
    codes = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx",
                      output, re.M)
    if not req or not codes:
        raise RuntimeError("h2load failed (%d), no summary:\n%s" % (returncode, output))
    return H2loadResult(*[int(x) for x in req.groups() + codes.groups()],
                        returncode=returncode, output=output)


def h2load(url, n, c=1, m=1, timeout=120.0, extra_args=()):
    """Runs h2load to completion (n requests over c connections, m streams
    at a time per connection; h2c with prior knowledge for http:// URLs).
    Returns H2loadResult(total, ..., succeeded, failed, ..., s2xx, ...)."""
    p = subprocess.run(_h2load_cmd(url, n, c, m, extra_args),
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=timeout)
    return parse_h2load(p.stdout.decode(errors="replace"), p.returncode)


class LoadLoop:
    """Runs run_once() (one bounded load-generator run, e.g. a lambda around
    ab() or h2load()) again and again in a thread until stop() or __exit__,
    at most max_runs times and for at most max_s seconds; results holds
    what each run returned, errors what any run raised.

        with LoadLoop(lambda: ab(url, 1000, 8, keepalive=False, timeout=60)) as load:
            h.restart()
        total = sum(r.complete for r in load.results)
    """

    def __init__(self, run_once, max_s=120.0, max_runs=1000):
        self.run_once = run_once
        self.max_s = max_s
        self.max_runs = max_runs
        self.results = []
        self.errors = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        end = time.monotonic() + self.max_s
        for _ in range(self.max_runs):
            if self._stop.is_set() or time.monotonic() >= end:
                return
            try:
                self.results.append(self.run_once())
            except Exception as e:  # noqa: BLE001 - reported through errors
                self.errors.append(e)
                self._stop.wait(0.2)

    def start(self):
        self._thread.start()
        return self

    def stop(self, timeout=None):
        """Lets the current run finish (bounded by its own timeout)."""
        self._stop.set()
        self._thread.join(timeout if timeout is not None else self.max_s + 60)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# --------------------------------------------------------------------------
# The module's status page and exit lines

IMX_STATUS_PATH = "imx-status"
# The module's status handler, itself not recorded.
IMX_STATUS_CONF = """
<Location /%s>
    SetHandler influx-metrics-status
    InfluxMetrics Off
</Location>
""" % IMX_STATUS_PATH


def imx_status(h):
    """The status page's JSON (needs IMX_STATUS_CONF in the config)."""
    status, body, _ = http_request(h.url + IMX_STATUS_PATH + "?json")
    if status != 200:
        raise RuntimeError("status page: HTTP %d %r" % (status, body[:200]))
    return json.loads(body)


_EXIT_LINE = re.compile(r"\[pid (\d+)[^\]]*\] IMX0100: flusher exit: (.*)$")


def flusher_exits(h):
    """One dict per "flusher exit" line of the error log: "pid" and every
    counter of the line (recorded, sent, rejected, dropped_exit, ...)."""
    out = []
    for line in h.error_log_text().splitlines():
        m = _EXIT_LINE.search(line)
        if m:
            d = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
            d["pid"] = int(m.group(1))
            out.append(d)
    return out
