#!/usr/bin/python3
# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""Sizing figures for a fleet, measured on the machine the script runs on.

Three measurements, each repeated so that the spread shows:

ingest   What one backend takes: a fresh InfluxDB 1.x and a fresh
         VictoriaMetrics (single node) get pre-encoded line-protocol batches
         of 5,000 points, shaped like the module's request points (720
         series: 20 hosts x 3 methods x 4 statuses x 3 routes), POSTed to
         /write by --clients concurrent client processes (keep-alive, one
         connection each) for --secs seconds. Counted: what the backend
         stored (InfluxDB: count(duration_us); VictoriaMetrics:
         sum(count_over_time(apache_request_duration_us[1d]))), divided by
         the time from the start to the last answer. Runs alternate between
         the backends (A B B A A B ...), each on a fresh backend after a
         warm-up batch per client (not counted).
small    What one backend answers in POSTs per second when batches are
         small (3 points, as a prefork child at low traffic sends): ab -k
         -c 8 posting the same 3-point body for --small-secs seconds, on a
         fresh backend per run. Only POSTs/s are counted (InfluxDB overwrites
         the same points, VictoriaMetrics keeps each copy).
server   What one Apache produces in raw mode: the requests per second it
         serves (= request points per second), event MPM, module on with its
         defaults, posting to bench/nullsink.py, wrk -c 50 on a static file.
posts    The POST rate of one server with many processes at low traffic:
         prefork with 150 children, a paced client sending --rate requests/s
         (a new connection each, spread over 20 routes), for the
         configurations raw 1 s, raw 10 s (InfluxMetricsFlushInterval),
         summary 1 s, each to bench/nullsink.py (POSTs and points counted),
         and raw 1 s through a local vmagent forwarding to VictoriaMetrics
         (POSTs into and out of vmagent counted).

Everything listens on 127.0.0.1 and shares the machine's cores with the load
generators: the figures are for that machine as it was during the run, with
the spread over runs. Writes bench/out/ingest.json and bench/out/ingest.md
and prints the Markdown.

    /usr/bin/python3 bench/ingest.py [--runs 3] [--secs 15] [--clients 3]
                                     [--only ingest,small,server,posts]
                                     [--quick]
"""

import argparse
import http.client
import json
import multiprocessing
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import BenchHttpd, Stack, harness, log  # noqa: E402
from nullsink import NullSink  # noqa: E402

HOST = harness.HOST
BATCH = 5000
DB = "bench"
MEASUREMENT = "apache_request"

# ---------------------------------------------------------------------------
# Pre-encoded batches
#
# Line j of a batch is HEAD[j] + PREFIX + TAIL[j], where PREFIX is the batch's
# own decimal prefix of the timestamp and TAIL[j] its last 8 digits plus the
# newline. A batch is then PREFIX.join(PARTS): one C-speed join per POST, so
# the clients spend their CPU on sending, and every point of the whole run
# has its own timestamp (InfluxDB would overwrite a point sent twice).
# Batch g covers the 100 ms [g x 0.1 s, ...) after the base time, points
# 10 us apart; a series (720 of them, taken in turn) gets a point every 7.2 ms.

HOSTS = ["web%02d" % i for i in range(20)]
METHODS = ["GET", "POST", "HEAD"]
STATUSES = ["200", "304", "404", "500"]
ROUTES = ["", "api", "static"]
STEP_NS = 10000
WINDOW_NS = 10 ** 8          # the last 8 digits: j * STEP_NS < 10^8


def make_parts():
    series = []
    for h in HOSTS:
        for m in METHODS:
            for s in STATUSES:
                for r in ROUTES:
                    tags = "host=%s,vhost=www.example.com,method=%s,status=%s" % (h, m, s)
                    if r:
                        tags += ",route=" + r
                    series.append(tags)
    heads, tails = [], []
    for j in range(BATCH):
        dur = 80 + (j * 7919) % 20000
        size = 200 + (j * 104729) % 60000
        heads.append(("%s,%s duration_us=%di,bytes_sent=%di "
                      % (MEASUREMENT, series[j % len(series)], dur, size)).encode())
        tails.append(b"%08d\n" % (j * STEP_NS))
    parts = [heads[0]] + [tails[j - 1] + heads[j] for j in range(1, BATCH)] + [tails[-1]]
    return parts, len(series)


def batch_body(parts, base_prefix, g):
    return str(base_prefix + g).encode().join(parts)


# ---------------------------------------------------------------------------
# Ingest clients (processes: no GIL shared with the driver or each other)

def _client(k, nclients, port, path, parts, base_prefix, first_g, ready, go,
            t_end, out):
    conn = http.client.HTTPConnection(HOST, port, timeout=120)
    hdrs = {"Content-Type": "text/plain; charset=utf-8"}
    res = {"k": k, "posts": 0, "ok_points": 0, "bad": {}, "lat": [],
           "warm_ok": 0}

    def post(g):
        body = batch_body(parts, base_prefix, g)
        t0 = time.monotonic()
        conn.request("POST", path, body, hdrs)
        r = conn.getresponse()
        r.read()
        return r.status, time.monotonic() - t0

    try:
        # Warm-up: one batch per client (series created, connections open).
        st, _ = post(first_g + k)
        if st // 100 == 2:
            res["warm_ok"] = BATCH
        ready.set()
        go.wait(60)
        cpu0 = time.process_time()
        g = first_g + nclients + k
        while time.monotonic() < t_end.value:
            st, lat = post(g)
            g += nclients
            res["posts"] += 1
            res["lat"].append(lat)
            if st // 100 == 2:
                res["ok_points"] += BATCH
            else:
                res["bad"][str(st)] = res["bad"].get(str(st), 0) + 1
        res["end"] = time.monotonic()
        res["cpu"] = time.process_time() - cpu0
    except Exception as e:  # noqa: BLE001 - reported to the driver
        res["error"] = repr(e)
        res["end"] = time.monotonic()
        ready.set()
    finally:
        conn.close()
    out.put(res)


class InfluxTarget:
    name = "InfluxDB 1.x"
    key = "influx"

    def start(self):
        self.b = harness.Influx(log_level="warn", http_log=False).start()
        self.b.create_db(DB)
        return self

    def path(self):
        return "/write?" + urllib.parse.urlencode({"db": DB, "precision": "ns"})

    def stored(self):
        res = self.b.query('SELECT count(duration_us) FROM "%s"' % MEASUREMENT,
                           db=DB, timeout=120)
        series = res["results"][0].get("series")
        return int(series[0]["values"][0][1]) if series else 0

    def stop(self):
        self.b.stop()
        self.b.cleanup()


class VMTarget:
    name = "VictoriaMetrics"
    key = "vm"

    def start(self):
        self.b = harness.VictoriaMetrics().start()
        return self

    def path(self):
        return "/write?" + urllib.parse.urlencode({"db": DB, "precision": "ns"})

    def stored(self):
        self.b.force_flush()
        q = urllib.parse.urlencode({
            "query": "sum(count_over_time(%s_duration_us[1d]))" % MEASUREMENT,
            "time": "%d" % int(time.time() + 60)})
        st, body, _ = harness.http_request(self.b.url + "/api/v1/query?" + q, timeout=120)
        if st != 200:
            raise RuntimeError("VM query: HTTP %d %s" % (st, body[:300]))
        r = json.loads(body)["data"]["result"]
        return int(float(r[0]["value"][1])) if r else 0

    def stop(self):
        self.b.stop()
        self.b.cleanup()


def ingest_run(target, parts, nclients, secs, base_prefix, first_g):
    t = target.start()
    try:
        ctx = multiprocessing.get_context("fork")
        ready = [ctx.Event() for _ in range(nclients)]
        go = ctx.Event()
        t_end = ctx.Value("d", 0.0)
        out = ctx.Queue()
        procs = [ctx.Process(target=_client, args=(
            k, nclients, t.b.port, t.path(), parts, base_prefix, first_g,
            ready[k], go, t_end, out)) for k in range(nclients)]
        for p in procs:
            p.start()
        for e in ready:
            e.wait(120)
        warm = t.stored()
        cpu0 = common.cpu_seconds([t.b.proc.pid])
        t0 = time.monotonic()
        t_end.value = t0 + secs
        go.set()
        results = [out.get(timeout=secs + 180) for _ in procs]
        for p in procs:
            p.join(30)
        t_last = max(r["end"] for r in results)
        cpu1 = common.cpu_seconds([t.b.proc.pid])
        errors = [r["error"] for r in results if "error" in r]
        stored = t.stored() - warm
        elapsed = t_last - t0
        sent = sum(r["ok_points"] for r in results)
        lats = sorted(x for r in results for x in r["lat"])
        return {
            "backend": t.key, "elapsed_s": elapsed, "stored": stored,
            "sent_2xx": sent, "posts": sum(r["posts"] for r in results),
            "bad": [r["bad"] for r in results if r["bad"]], "errors": errors,
            "warm_stored": warm,
            "points_per_s": stored / elapsed if elapsed > 0 else 0,
            "backend_cpu_s": cpu1 - cpu0,
            "backend_cpu_us_per_point": (cpu1 - cpu0) * 1e6 / stored if stored else None,
            "client_cpu_s": sum(r.get("cpu", 0) for r in results),
            "post_p50_ms": 1000 * lats[len(lats) // 2] if lats else None,
            "post_p99_ms": 1000 * lats[min(len(lats) - 1, int(len(lats) * 0.99))] if lats else None,
            "load1": os.getloadavg()[0],
        }
    finally:
        t.stop()


def measure_ingest(args, res):
    parts, nseries = make_parts()
    bytes_per_point = len(batch_body(parts, 10 ** 10, 0)) / BATCH
    # Data time: from three hours ago on, whole 100 ms windows (both backends
    # keep anything inside their retention; the VictoriaMetrics count looks
    # at the last day up to now). A run of 3,000 batches (15 million points)
    # spans 5 minutes of data time.
    base_prefix = (time.time_ns() - 3 * 3600 * 10 ** 9) // WINDOW_NS
    order = []
    for r in range(args.runs):
        order += [InfluxTarget, VMTarget] if r % 2 == 0 else [VMTarget, InfluxTarget]
    runs = []
    for i, cls in enumerate(order):
        log("ingest %d/%d: %s, %d clients, %d s" % (i + 1, len(order), cls.name,
                                                    args.clients, args.secs))
        # Every run has a fresh backend, so every run writes the same data
        # time: from the base on, 10 s of data time per 100 batches.
        r = ingest_run(cls(), parts, args.clients, args.secs, base_prefix, 0)
        log("  stored %d in %.1f s: %.0f points/s (2xx %d, backend CPU %.1f s, %s)"
            % (r["stored"], r["elapsed_s"], r["points_per_s"], r["sent_2xx"],
               r["backend_cpu_s"], r["errors"] or "no client errors"))
        runs.append(r)
    res["ingest"] = {"runs": runs, "clients": args.clients, "secs": args.secs,
                     "batch": BATCH, "series": nseries,
                     "bytes_per_point": bytes_per_point}


# ---------------------------------------------------------------------------
# Small POSTs: what a backend answers per second

def small_run(target, secs, conc=8):
    t = target.start()
    d = harness.make_tmpdir("small-body")
    try:
        parts, _ = make_parts()
        lines = batch_body(parts, (time.time_ns() - 3600 * 10 ** 9) // WINDOW_NS, 0)
        body = b"".join(lines.splitlines(keepends=True)[:3])
        path = os.path.join(d, "body.txt")
        with open(path, "wb") as f:
            f.write(body)
        url = t.b.url + t.path()
        cpu0 = common.cpu_seconds([t.b.proc.pid])
        # -n after -t: -t alone would cap the run at 50,000 requests.
        cmd = [harness.AB, "-q", "-k", "-c", str(conc), "-t", str(secs), "-n", "100000000",
               "-p", path, "-T", "text/plain; charset=utf-8", url]
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=secs + 60)
        cpu1 = common.cpu_seconds([t.b.proc.pid])
        out = p.stdout.decode(errors="replace")
        r = harness.parse_ab(out, p.returncode)
        m = re.search(r"Requests per second:\s+([\d.]+)", out)
        m2 = re.search(r"Time taken for tests:\s+([\d.]+)", out)
        taken = float(m2.group(1)) if m2 else secs
        return {"backend": t.key, "posts_per_s": float(m.group(1)) if m else 0.0,
                "complete": r.complete, "failed": r.failed, "non2xx": r.non2xx,
                "backend_cpu_us_per_post": (cpu1 - cpu0) * 1e6 / max(1, r.complete),
                "backend_cores": (cpu1 - cpu0) / taken, "conc": conc,
                "points_per_post": 3, "load1": os.getloadavg()[0]}
    finally:
        t.stop()
        shutil.rmtree(d, ignore_errors=True)


def measure_small(args, res):
    runs = []
    order = []
    for r in range(args.runs):
        order += [InfluxTarget, VMTarget] if r % 2 == 0 else [VMTarget, InfluxTarget]
    for i, cls in enumerate(order):
        log("small %d/%d: %s, ab -k -c 8, 3-point POSTs, %d s"
            % (i + 1, len(order), cls.name, args.small_secs))
        r = small_run(cls(), args.small_secs)
        log("  %.0f POSTs/s (%d complete, %d failed, %d non-2xx), backend %.0f us CPU/POST"
            % (r["posts_per_s"], r["complete"], r["failed"], r["non2xx"],
               r["backend_cpu_us_per_post"]))
        runs.append(r)
    res["small"] = {"runs": runs, "secs": args.small_secs}


# ---------------------------------------------------------------------------
# One Apache in raw mode: requests/s = points/s

def measure_server(args, res):
    runs = []
    with Stack() as st:
        null = st.add(NullSink()).start()
        h = st.add(BenchHttpd(name="bench-raw", load_module=True,
                              extra=str(harness.Imx(url=null.write_url(),
                                                    flush_interval=None))))
        h.start()
        common.wrk(h.url + "small.txt", 50, 2)          # warm-up
        for i in range(args.runs):
            s0 = null.stats()
            r = common.measured_wrk(h.url + "small.txt", 50, args.server_secs,
                                    servers=[h])
            time.sleep(1.5)                               # the last flush
            s1 = null.stats()
            r["points_received"] = s1["points"] - s0["points"]
            r["posts"] = s1["requests"] - s0["requests"]
            log("server run %d: %.0f req/s, %d points in %d POSTs"
                % (i + 1, r["rps"], r["points_received"], r["posts"]))
            runs.append(r)
    res["server"] = {"runs": runs, "secs": args.server_secs, "conns": 50}


# ---------------------------------------------------------------------------
# POSTs per second of a prefork server with 150 children

PREFORK_150 = harness.fixed_prefork(150)
NROUTES = 20


def routes_conf():
    return "".join('<Location "/r%d">\n    InfluxMetricsRoute r%d\n</Location>\n' % (i, i)
                   for i in range(NROUTES))


class Paced:
    """Sends `rate` GET requests per second, each on a new connection
    (HTTP/1.0), cycling over the routes, until stopped (at most max_s)."""

    def __init__(self, port, rate, max_s=120):
        self.port, self.rate, self.max_s = port, rate, max_s
        self.done = self.failed = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        t0 = time.monotonic()
        i = 0
        while not self._stop.is_set() and time.monotonic() - t0 < self.max_s:
            due = t0 + i / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            req = ("GET /r%d/small.txt HTTP/1.0\r\nHost: localhost\r\n\r\n"
                   % (i % NROUTES)).encode()
            i += 1
            try:
                with socket.create_connection((HOST, self.port), timeout=5) as s:
                    s.sendall(req)
                    while s.recv(65536):
                        pass
                self.done += 1
            except OSError:
                self.failed += 1

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(10)


def posts_config(name, flush, mode, via_vmagent, args):
    with Stack() as st:
        if via_vmagent:
            vm = st.add(harness.VictoriaMetrics()).start()
            agent = st.add(harness.Vmagent(vm.remote_write_url)).start()
            url = agent.write_url(DB)
        else:
            sink = st.add(NullSink()).start()
            url = sink.write_url()
        extra = str(harness.Imx(url=url, flush_interval=flush,
                                extra=("InfluxMetricsMode %s\n" % mode) if mode else ""))
        h = st.add(BenchHttpd(name="bench-posts", mpm="prefork", mpm_conf=PREFORK_150,
                              load_module=True, extra=extra + routes_conf()))
        for i in range(NROUTES):
            d = os.path.join(h.htdocs, "r%d" % i)
            os.makedirs(d, mode=0o755, exist_ok=True)
            with open(os.path.join(d, "small.txt"), "w") as f:
                f.write("small file\n")
            os.chmod(os.path.join(d, "small.txt"), 0o644)
        h.start(timeout=60)
        # Every child up before the load starts.
        harness.wait_until(lambda: len(h.children()) >= 150, 60, 0.2)
        interval = float(flush.rstrip("s"))
        window = max(args.posts_secs, 2 * interval)

        def snap():
            if via_vmagent:
                m = agent.metrics()
                return {"posts_in": m.get('vmagent_http_requests_total{path="/influx/write", protocol="influx"}', 0),
                        "samples_in": agent.samples_received(),
                        "posts_out": agent.metric_sum("vmagent_remotewrite_requests_total"),
                        "vmagent_cpu": common.cpu_seconds([agent.proc.pid]),
                        "t": time.monotonic()}
            s = sink.stats()
            return {"posts_in": s["requests"], "points_in": s["points"],
                    "t": time.monotonic()}
        with Paced(h.port, args.rate) as load:
            time.sleep(interval + 2)
            a = snap()
            d0 = load.done
            time.sleep(window)
            b = snap()
            d1 = load.done
        dt = b["t"] - a["t"]
        out = {"config": name, "flush": flush, "mode": mode or "raw",
               "via_vmagent": via_vmagent, "window_s": dt,
               "req_per_s": (d1 - d0) / dt, "failed_requests": load.failed,
               "children": len(h.children())}
        for k in a:
            if k != "t":
                out[k.replace("_in", "_in_per_s").replace("_out", "_out_per_s")] = (b[k] - a[k]) / dt
        return out


POSTS_CONFIGS = [
    ("raw, 1 s", "1s", None, False),
    ("raw, 10 s", "10s", None, False),
    ("summary, 1 s", "1s", "summary", False),
    ("raw, 1 s, local vmagent", "1s", None, True),
    ("summary, 1 s, local vmagent", "1s", "summary", True),
]


def measure_posts(args, res):
    runs = []
    for rnd in range(args.post_runs):
        for name, flush, mode, via in POSTS_CONFIGS:
            log("posts round %d: %s" % (rnd + 1, name))
            r = posts_config(name, flush, mode, via, args)
            log("  %s" % json.dumps({k: (round(v, 1) if isinstance(v, float) else v)
                                     for k, v in r.items()}))
            runs.append(r)
    res["posts"] = {"runs": runs, "rate": args.rate, "children": 150,
                    "routes": NROUTES}


# ---------------------------------------------------------------------------
# Report

def med_range(xs, fmt="{:,.0f}"):
    lo, hi = common.spread(xs)
    if lo is None:
        return "n/a"
    return "%s (%s-%s)" % (fmt.format(common.median(xs)), fmt.format(lo), fmt.format(hi))


def report(res):
    info = res["machine"]
    out = ["# Ingest and fleet figures (bench/ingest.py)", "",
           "Measured %s on %s (%d cores), Apache %s; load average %.1f at the start, "
           "%.1f at the end; whole run %.0f s."
           % (res["when"], info["cpu"], info["cpus"], info["apache"],
              info["load_before"], res["load_after"], res["duration_s"]), ""]
    ing = res.get("ingest")
    if ing:
        out += ["## What one backend stores", "",
                "%d client processes, keep-alive, POST /write of %d-point batches "
                "(%.0f bytes/point, %d series), %d s per run, a fresh backend per run; "
                "stored = counted in the backend after the run. Median (min-max) over %d runs."
                % (ing["clients"], ing["batch"], ing["bytes_per_point"], ing["series"],
                   ing["secs"], len(ing["runs"]) // 2), "",
                "| backend | points/s stored | each run | backend CPU us/point | "
                "backend cores busy | clients' cores | POST p50 / p99 ms | stored == 2xx |",
                "|---|---:|---|---:|---:|---:|---:|---:|"]
        for key, name in (("influx", "InfluxDB 1.x"), ("vm", "VictoriaMetrics")):
            rs = [r for r in ing["runs"] if r["backend"] == key]
            if not rs:
                continue
            out.append("| %s | %s | %s | %s | %s | %s | %s / %s | %s |" % (
                name, med_range([r["points_per_s"] for r in rs]),
                ", ".join("{:,.0f}".format(r["points_per_s"]) for r in rs),
                med_range([r["backend_cpu_us_per_point"] for r in rs], "{:.2f}"),
                med_range([r["backend_cpu_s"] / r["elapsed_s"] for r in rs], "{:.2f}"),
                med_range([r["client_cpu_s"] / r["elapsed_s"] for r in rs], "{:.2f}"),
                "%.0f" % common.median([r["post_p50_ms"] for r in rs]),
                "%.0f" % common.median([r["post_p99_ms"] for r in rs]),
                "yes" if all(r["stored"] == r["sent_2xx"] for r in rs) else
                "no: " + ", ".join("%d/%d" % (r["stored"], r["sent_2xx"]) for r in rs)))
        out.append("")
    sm = res.get("small")
    if sm:
        out += ["## Small POSTs", "",
                "ab -k -c 8 posting one 3-point body again and again, %d s per run, a fresh "
                "backend per run; POSTs answered 2xx per second. Median (min-max) over %d runs."
                % (sm["secs"], len(sm["runs"]) // 2), "",
                "| backend | POSTs/s | each run | backend CPU us/POST | backend cores busy | failed or non-2xx |",
                "|---|---:|---|---:|---:|---:|"]
        for key, name in (("influx", "InfluxDB 1.x"), ("vm", "VictoriaMetrics")):
            rs = [r for r in sm["runs"] if r["backend"] == key]
            if not rs:
                continue
            out.append("| %s | %s | %s | %s | %s | %d |" % (
                name, med_range([r["posts_per_s"] for r in rs]),
                ", ".join("{:,.0f}".format(r["posts_per_s"]) for r in rs),
                med_range([r["backend_cpu_us_per_post"] for r in rs], "{:.0f}"),
                med_range([r["backend_cores"] for r in rs], "{:.2f}"),
                sum(r["failed"] + r["non2xx"] for r in rs)))
        out.append("")
    srv = res.get("server")
    if srv:
        rs = srv["runs"]
        out += ["## What one Apache produces in raw mode", "",
                "Event MPM (2 x 64 threads), module with its defaults posting to the "
                "null backend, wrk -c %d for %d s, static 11-byte file; %d runs."
                % (srv["conns"], srv["secs"], len(rs)), "",
                "| req/s = points/s | httpd CPU us/request | POSTs/s |",
                "|---:|---:|---:|",
                "| %s | %s | %s |" % (med_range([r["rps"] for r in rs]),
                                     med_range([r["cpu_us"] for r in rs], "{:.0f}"),
                                     med_range([r["posts"] / srv["secs"] for r in rs], "{:.1f}")),
                ""]
    po = res.get("posts")
    if po:
        out += ["## POSTs per second: prefork, 150 children, %d req/s" % po["rate"], "",
                "Paced client, a new connection per request, %d routes; counted over "
                "a window of at least 10 s (2 intervals for 10 s). Median (min-max) over "
                "%d rounds." % (po["routes"], len(po["runs"]) // len(POSTS_CONFIGS)), "",
                "| configuration | req/s | POSTs/s from Apache | points/s from Apache "
                "| POSTs/s to the storage | vmagent cores busy |",
                "|---|---:|---:|---:|---:|---:|"]
        for name, _, _, via in POSTS_CONFIGS:
            rs = [r for r in po["runs"] if r["config"] == name]
            if not rs:
                continue
            pts = ("(%s samples/s)" % med_range([r["samples_in_per_s"] for r in rs])
                   if via else med_range([r["points_in_per_s"] for r in rs]))
            out.append("| %s | %s | %s | %s | %s | %s |" % (
                name, med_range([r["req_per_s"] for r in rs]),
                med_range([r["posts_in_per_s"] for r in rs], "{:.1f}"), pts,
                med_range([r["posts_out_per_s"] for r in rs], "{:.1f}") if via
                else "same as from Apache",
                med_range([r["vmagent_cpu"] for r in rs], "{:.3f}") if via
                else "-"))
        out.append("")
    return "\n".join(out)


STEPS = ["ingest", "small", "server", "posts"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="runs per backend and server runs")
    ap.add_argument("--secs", type=int, default=15, help="seconds per ingest run")
    ap.add_argument("--clients", type=int, default=3, help="concurrent ingest clients (2-4)")
    ap.add_argument("--small-secs", type=int, default=10)
    ap.add_argument("--server-secs", type=int, default=5)
    ap.add_argument("--rate", type=int, default=300, help="req/s of the paced client")
    ap.add_argument("--posts-secs", type=int, default=10)
    ap.add_argument("--post-runs", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated: " + ",".join(STEPS))
    ap.add_argument("--quick", action="store_true", help="short runs (a smoke test)")
    args = ap.parse_args()
    if args.quick:
        (args.runs, args.secs, args.small_secs, args.server_secs, args.posts_secs,
         args.post_runs) = 1, 4, 3, 2, 4, 1
    only = set(filter(None, args.only.split(","))) or set(STEPS)
    if only - set(STEPS):
        ap.error("unknown step(s): %s" % ", ".join(sorted(only - set(STEPS))))

    t0 = time.monotonic()
    res = {"machine": common.machine_info(),
           "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if "ingest" in only:
        measure_ingest(args, res)
    if "small" in only:
        measure_small(args, res)
    if "server" in only:
        measure_server(args, res)
    if "posts" in only:
        measure_posts(args, res)
    res["duration_s"] = time.monotonic() - t0
    res["load_after"] = os.getloadavg()[0]
    common.save_json("ingest", res)
    md = report(res)
    os.makedirs(common.OUT_DIR, exist_ok=True)
    with open(os.path.join(common.OUT_DIR, "ingest.md"), "w") as f:
        f.write(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
