# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""Shared pieces of the benchmarks (stdlib only, system /usr/bin/python3).

Reuses the package tests/harness/ for the servers (Httpd, Influx, ...) and adds:

* BenchHttpd: Httpd whose access log is off by default (the harness writes
  one in every config; a benchmark baseline must not pay for it), or a real
  one on request ("%D" or "combined").
* module_copy(): a private copy of the built module, so that a rebuild
  during a run (someone running `make`) cannot change a loaded .so.
* wrk(): runs wrk and parses req/s, request count and latency percentiles.
* aba_round(): A/B/A/C/A... runs, each ratio against the baseline runs
  around it, with the order rotated every round; measured_wrk() adds the
  CPU per request of the server and its backend (from /proc).
* stats helpers (median, spread, a bootstrap confidence interval of the
  median over rounds and the verdict it allows) and Markdown tables.
* flusher_totals(): sums the module's own "flusher exit:" accounting lines
  from an error log.

Nothing here asserts timings: benchmarks report ratios measured side by side.
"""

import atexit
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
OUT_DIR = os.path.join(BENCH_DIR, "out")
sys.path.insert(0, os.path.join(REPO_ROOT, "tests"))

import harness  # noqa: E402

WRK = "/usr/bin/wrk"
HOST = harness.HOST

# A fixed set of event-MPM children for every benchmark server: two children
# of 64 threads (more than wrk's 50 connections), none started or stopped
# during a run (the spare-thread limits never trigger).
EVENT_FIXED = harness.fixed_threaded(2, 64)

ACCESS_FORMATS = {
    # an access log with the time taken
    "%D": '"%h %l %u %t \\"%r\\" %>s %b %D"',
    # Apache's combined format (what most servers write)
    "combined": '"%h %l %u %t \\"%r\\" %>s %b \\"%{Referer}i\\" \\"%{User-Agent}i\\""',
}


def log(msg):
    sys.stderr.write("[bench %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


# --------------------------------------------------------------------------
# The module under test

_MODULE_COPY = None


def module_source():
    return os.environ.get("IMX_BENCH_MODULE", harness.MODULE_SO)


def module_copy():
    """Path of a private copy of the built module (made once per process)."""
    global _MODULE_COPY
    if _MODULE_COPY is None:
        src = module_source()
        if not os.path.exists(src):
            raise SystemExit("module not built: %s is missing (run `make`)"
                             % os.path.relpath(src, REPO_ROOT))
        d = harness.make_tmpdir("bench-so")
        atexit.register(shutil.rmtree, d, True)
        _MODULE_COPY = os.path.join(d, "mod_influx_metrics.so")
        shutil.copy2(src, _MODULE_COPY)
        os.chmod(_MODULE_COPY, 0o755)
    return _MODULE_COPY


def module_knows(directive_text):
    """True if the built module accepts these directives (apache2 -t): the
    hook for features that land later (e.g. InfluxMetricsMode summary)."""
    h = BenchHttpd(load_module=True, extra=directive_text, name="probe")
    try:
        rc, _ = h.configtest()
        return rc == 0
    finally:
        h.cleanup()


# --------------------------------------------------------------------------
# httpd without (or with a chosen) access log

class BenchHttpd(harness.Httpd):
    """harness.Httpd for benchmarks.

    access_log: None (no access log at all), "%D" or "combined" (a real
    CustomLog to a file in the server's directory). The harness's own
    access log line is removed from the generated config in every case."""

    def __init__(self, access_log=None, load_module=False, mpm="event",
                 mpm_conf=None, **kw):
        self.access_log = access_log
        if load_module:
            kw.setdefault("module_so", module_copy())
        if mpm_conf is None and mpm == "event":
            mpm_conf = EVENT_FIXED
        # No readiness probes are sent (see start), so the harness's
        # <Location PROBE_PATH> InfluxMetrics Off block is not needed: it
        # would add a location walk to every request with the module only.
        kw.setdefault("record_probes", True)
        super().__init__(load_module=load_module, mpm=mpm, mpm_conf=mpm_conf, **kw)

    def start(self, timeout=30.0, http_probe=False):
        """Ready without an HTTP request: every request a benchmark counts
        is one it made."""
        return super().start(timeout=timeout, http_probe=http_probe)

    @property
    def bench_log_path(self):
        return os.path.join(self.dir, "bench_access.log")

    def config_text(self):
        text = super().config_text()
        text, n = re.subn(r'^\s*CustomLog\s+.*$\n?', "", text, flags=re.M)
        if n < 1:
            raise RuntimeError("harness config has no CustomLog line to remove")
        if self.access_log:
            text += '\nCustomLog "%s" %s\n' % (self.bench_log_path,
                                              ACCESS_FORMATS[self.access_log])
        return text

    def served_logged(self):
        """Lines in the bench access log (when there is one)."""
        try:
            with open(self.bench_log_path, "rb") as f:
                return sum(1 for _ in f)
        except FileNotFoundError:
            return 0


def flusher_totals(error_log_text):
    """Sums the engine's exit accounting ("flusher exit: recorded=N sent=N
    ...") over all children in an error log: {key: total}, {} if none."""
    tot = {}
    for m in re.finditer(r"flusher exit:((?: \w+=\d+)+)", error_log_text):
        for k, v in re.findall(r"(\w+)=(\d+)", m.group(1)):
            tot[k] = tot.get(k, 0) + int(v)
    return tot


# --------------------------------------------------------------------------
# wrk

def _dur_us(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text.strip())
    if not m:
        return None
    v = float(m.group(1))
    return v * {"us": 1, "ms": 1e3, "s": 1e6, "m": 60e6}[m.group(2)]


def parse_wrk(out):
    r = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    r["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    r["requests"] = int(m.group(1)) if m else 0
    for pct in ("50", "75", "90", "99"):
        m = re.search(r"^\s+%s%%\s+(\S+)" % pct, out, re.M)
        r["p" + pct + "_us"] = _dur_us(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    return r


def wrk(url, conns, secs, threads=1, timeout_s=None):
    cmd = [WRK, "-t%d" % threads, "-c%d" % conns, "-d%ds" % secs, "--latency",
           "--timeout", "%ds" % (timeout_s or max(2, secs)), url]
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=secs + 60)
    out = p.stdout.decode(errors="replace")
    if p.returncode != 0 or "Requests/sec" not in out:
        raise RuntimeError("wrk failed (%d):\n%s" % (p.returncode, out))
    return parse_wrk(out)


# --------------------------------------------------------------------------
# CPU time of processes

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids):
    """utime + stime (all threads, live ones and those that ended) summed
    over pids, in seconds; processes that are gone count 0."""
    tot = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                rest = f.read().rsplit(")", 1)[1].split()
            tot += int(rest[11]) + int(rest[12])
        except (OSError, IndexError, ValueError):
            pass
    return tot / _TICK


def server_pids(obj):
    """PIDs whose CPU counts for a server object (Httpd: parent and
    children; anything with .proc: that process)."""
    if hasattr(obj, "child_pids"):
        return [obj.pid] + obj.child_pids()
    proc = getattr(obj, "proc", None)
    return [proc.pid] if proc is not None else []


def measured_wrk(url, conns, secs, servers=(), backends=()):
    """wrk plus the CPU the server (and, separately, its backend) used per
    request during the run, in microseconds."""
    sp = [p for s in servers for p in server_pids(s)]
    bp = [p for b in backends for p in server_pids(b)]
    c0, b0 = cpu_seconds(sp), cpu_seconds(bp)
    r = wrk(url, conns, secs)
    c1, b1 = cpu_seconds(sp), cpu_seconds(bp)
    n = max(1, r["requests"])
    r["cpu_us"] = (c1 - c0) * 1e6 / n if sp else None
    r["backend_cpu_us"] = (b1 - b0) * 1e6 / n if bp else None
    return r


# --------------------------------------------------------------------------
# Interleaving and statistics

def aba_round(configs, base, run_one, rotate=0):
    """One round of A/B/A/C/A/... runs: the baseline `base` before and after
    every other configuration, the others in an order rotated by `rotate`.
    configs: [(name, obj)]; run_one(name, obj) -> result dict with "rps",
    "p99_us", "cpu_us". Returns ({name: [results]}, {name: {"rps": ratio,
    "p99": ratio, "cpu": ratio}}) where each ratio divides by the mean of
    the two baseline runs around it."""
    by = dict(configs)
    others = rotated([n for n, _ in configs if n != base], rotate)
    runs = {n: [] for n in by}
    ratios = {}
    prev = run_one(base, by[base])
    runs[base].append(prev)
    for n in others:
        r = run_one(n, by[n])
        after = run_one(base, by[base])
        runs[n].append(r)
        runs[base].append(after)
        rr = {}
        for key, out in (("rps", "rps"), ("p99_us", "p99"), ("cpu_us", "cpu")):
            b = [x[key] for x in (prev, after) if x.get(key)]
            rr[out] = r[key] / (sum(b) / len(b)) if b and r.get(key) is not None else None
        ratios[n] = rr
        prev = after
    return runs, ratios


def rotated(seq, k):
    k %= len(seq)
    return list(seq[k:]) + list(seq[:k])


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def spread(xs):
    xs = [x for x in xs if x is not None]
    return (min(xs), max(xs)) if xs else (None, None)


def fmt_ratio(rs):
    if not rs:
        return "n/a"
    lo, hi = spread(rs)
    return "%.3f (%.3f-%.3f)" % (median(rs), lo, hi)


# Bootstrap of the median over rounds: the rounds are the independent
# samples (each ratio is a run against the baseline runs around it), so they
# are what is resampled. Fixed seed: the same data gives the same interval.
BOOT_N = 4000
BOOT_SEED = 20261129


def median_ci(xs, level=0.95, n=BOOT_N, seed=BOOT_SEED):
    """(median, low, high): the median of xs and a percentile-bootstrap
    confidence interval for it (resampling xs with replacement, n times).
    (None, None, None) without data; with one value the interval is that
    value (nothing to say about the noise)."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None, None
    rng = random.Random(seed)
    k = len(xs)
    meds = sorted(statistics.median(rng.choices(xs, k=k)) for _ in range(n))
    a = (1.0 - level) / 2.0
    lo = meds[int(a * (n - 1))]
    hi = meds[int(round((1.0 - a) * (n - 1)))]
    return statistics.median(xs), lo, hi


def fmt_ci(xs, digits=3):
    """"median [low, high]" with the 95% bootstrap interval, "n/a" without data."""
    m, lo, hi = median_ci(xs)
    if m is None:
        return "n/a"
    return "{m:.{d}f} [{lo:.{d}f}, {hi:.{d}f}]".format(m=m, lo=lo, hi=hi, d=digits)


def verdict_at_least(series, goal):
    """For ratios where higher is better (throughput), over one or more
    series (e.g. one per connection count): "met" only when every series'
    interval lies at or above the goal; "missed" when some series' interval
    lies wholly below it; otherwise the run cannot tell the median from the
    goal."""
    cis = [median_ci(xs) for xs in series]
    if any(c[0] is None for c in cis):
        return "n/a"
    if all(lo >= goal for _, lo, _ in cis):
        return "**met**"
    if any(hi < goal for _, _, hi in cis):
        return "**missed**"
    return "**not distinguishable from %s**" % ("%g" % goal)


def fmt_num(x, digits=0):
    if x is None:
        return "n/a"
    return "{:,.{d}f}".format(x, d=digits)


def md_table(header, rows):
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


def save_json(name, data):
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, name + ".json")
    with open(path, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    return path


def load_json(name):
    try:
        with open(os.path.join(OUT_DIR, name + ".json")) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def machine_info():
    info = {"cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.*)", f.read())
            info["cpu"] = m.group(1).strip() if m else "?"
    except OSError:
        info["cpu"] = "?"
    try:
        out = subprocess.run(["/usr/sbin/apache2", "-v"], stdout=subprocess.PIPE,
                             timeout=10).stdout.decode()
        m = re.search(r"Apache/([\d.]+)", out)
        info["apache"] = m.group(1) if m else "?"
    except (OSError, subprocess.SubprocessError):
        info["apache"] = "?"
    info["load_before"] = os.getloadavg()[0]
    return info


class Stack:
    """Stops (and cleans up) everything registered, in reverse order, even on
    errors: with Stack() as st: h = st.add(BenchHttpd(...)).start()"""

    def __init__(self):
        self.items = []

    def add(self, obj):
        self.items.append(obj)
        return obj

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for obj in reversed(self.items):
            try:
                obj.stop()
            except Exception as e:  # noqa: BLE001
                log("stop %r: %s" % (obj, e))
            if hasattr(obj, "cleanup"):
                try:
                    obj.cleanup()
                except Exception:  # noqa: BLE001
                    pass


def problem_lines(res, names):
    """Report lines for the wrk errors and error-log lines of each config."""
    lines = []
    for name in names:
        c = res["configs"][name]
        if c.get("errors"):
            lines.append("- %s: %d wrk errors (non-2xx or socket)" % (name, c["errors"]))
        if c.get("error_log"):
            lines.append("- %s error log: %s" % (name, "; ".join(x[:160] for x in c["error_log"])))
    return lines


def module_line(tot):
    """The report line of the module's own accounting (its flusher exit
    totals), or None when it sent nothing."""
    if not tot.get("batches"):
        return None
    return ("- module: recorded %s, sent %s in %s POSTs (%s points each on average), dropped %s"
            % (fmt_num(tot.get("recorded")), fmt_num(tot.get("sent")), fmt_num(tot["batches"]),
               fmt_num(tot.get("sent", 0) / tot["batches"]),
               fmt_num(tot.get("dropped_full", 0) + tot.get("dropped_exit", 0)
                       + tot.get("dropped_retry", 0))))


def rounds_main(doc, name, run, report, secs):
    """The command line of a benchmark in interleaved rounds: --rounds,
    --secs, --quick (3 rounds x 1 s); saves the JSON and prints the report."""
    import argparse
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--secs", type=int, default=secs)
    ap.add_argument("--quick", action="store_true", help="3 rounds x 1 s")
    a = ap.parse_args()
    if a.quick:
        a.rounds, a.secs = 3, 1
    res = run(a.rounds, a.secs)
    save_json(name, res)
    print(report(res))
