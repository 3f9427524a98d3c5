#!/usr/bin/python3
# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""Static-file overhead of mod_influx_metrics, as throughput ratios.

Apache (event MPM, 2 children x 64 threads, fixed) serves a 11-byte file on
loopback to wrk at 5 and 50 connections. Every configuration runs in its own
server, all of them live at once, and the rounds are interleaved: each round
runs every configuration once, in an order rotated by one every round, so
drift (other load, thermal, caches) hits all of them alike. The result per
configuration is the median of the per-round ratios to "no module" (measured
in the same round), with a 95% bootstrap confidence interval over rounds,
plus median req/s and p99 latency.

Configurations:
  none        no module, no access log (the baseline)
  raw-null    module, raw points, posting to bench/nullsink.py (answers 204
              at once: an InfluxDB on another machine, as in production)
  summary     module in summary mode, null backend (only when the built
              module accepts "InfluxMetricsMode summary": see SUMMARY_TEXT)
  raw-influx  module posting to a live InfluxDB 1.x on the same machine (its own
              CPU use shows in the ratio), with stored-vs-served counts
  blackhole   module whose backend accepts and never answers
  accesslog   no module, mod_log_config writing "%h %l %u %t \"%r\" %>s %b %D"
              to a file (for context)

    /usr/bin/python3 bench/overhead.py [--rounds 10] [--secs 1] [--quick] [--only a,b]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import BenchHttpd, Stack, harness, log  # noqa: E402
from nullsink import NullSink  # noqa: E402

PATH = "/small.txt"
DB = "bench"
# The hook for summary mode: used when the module accepts it.
SUMMARY_TEXT = "InfluxMetricsMode summary"


def imx(url, extra=""):
    # The module's own defaults (1 s flush, batch 5000, buffer 65536), as in
    # production; not the harness's 200 ms test interval.
    return str(harness.Imx(url=url, flush_interval=None, extra=extra))


def build_configs(st, want):
    """[(name, BenchHttpd, info)] started, plus the backends in info."""
    cfgs = []
    null = st.add(NullSink()).start() if want & {"raw-null", "summary"} else None
    hole = st.add(NullSink(blackhole=True)).start() if "blackhole" in want else None
    influx = None
    if "raw-influx" in want:
        influx = st.add(harness.Influx(log_level="warn", http_log=False)).start()
        influx.create_db(DB)

    def add(name, **kw):
        h = st.add(BenchHttpd(name="bench-" + name, **kw))
        h.start()
        cfgs.append((name, h))

    if "none" in want:
        add("none")
    if "raw-null" in want:
        add("raw-null", load_module=True, extra=imx(null.write_url()))
    if "summary" in want:
        add("summary", load_module=True, extra=imx(null.write_url(), SUMMARY_TEXT))
    if "raw-influx" in want:
        add("raw-influx", load_module=True, extra=imx(influx.write_url(DB)))
    if "blackhole" in want:
        add("blackhole", load_module=True, extra=imx(hole.write_url()))
    if "accesslog" in want:
        add("accesslog", access_log="%D")
    return cfgs, {"null": null, "hole": hole, "influx": influx}


ALL = ["none", "raw-null", "summary", "raw-influx", "blackhole", "accesslog"]


def run(rounds=10, secs=1, conns=(5, 50), only=None, warmup=1):
    want = set(only or ALL)
    want.add("none")
    notes = []
    if "summary" in want and not common.module_knows(imx("http://127.0.0.1:9/write?db=x",
                                                         SUMMARY_TEXT)):
        want.discard("summary")
        notes.append("summary mode: not in this build (`%s` is rejected by "
                     "apache2 -t); row left out" % SUMMARY_TEXT)
    res = {"rounds": rounds, "secs": secs, "conns": list(conns), "path": PATH,
           "mpm": "event " + " ".join("%s=%s" % kv for kv in common.EVENT_FIXED.items()),
           "machine": common.machine_info(), "notes": notes, "configs": {}}
    t_start = time.monotonic()
    with Stack() as st:
        cfgs, be = build_configs(st, want)
        names = [n for n, _ in cfgs]
        backend = {"raw-null": be["null"], "summary": be["null"],
                   "raw-influx": be["influx"], "blackhole": be["hole"]}
        served = {n: 0 for n in names}
        runs = {n: {c: [] for c in conns} for n in names}
        ratios = {n: {c: [] for c in conns} for n in names}
        log("overhead: configs %s, %d rounds x %ds at c=%s"
            % (names, rounds, secs, list(conns)))
        for n, h in cfgs:          # warm-up (counted as served)
            r = common.wrk(h.url.rstrip("/") + PATH, 5, warmup)
            served[n] += r["requests"]

        def run_one(name, h, c):
            b = backend.get(name)
            r = common.measured_wrk(h.url.rstrip("/") + PATH, c, secs, servers=[h],
                                    backends=[b] if b is not None else [])
            served[name] += r["requests"]
            return r
        for rnd in range(rounds):
            for c in conns:
                rr, ra = common.aba_round(cfgs, "none", lambda n, h: run_one(n, h, c),
                                          rotate=rnd)
                for n in names:
                    runs[n][c] += rr[n]
                    if n in ra:
                        ratios[n][c].append(ra[n])
            log("overhead: round %d/%d done (%.0fs)" % (rnd + 1, rounds,
                                                       time.monotonic() - t_start))
        # Stop the servers first: the flushers send what they hold at exit.
        for n, h in cfgs:
            h.stop()
        for n, h in cfgs:
            cres = {"served_wrk": served[n], "by_conns": {}}
            for c in conns:
                rs = runs[n][c]
                cres["by_conns"][str(c)] = {
                    "rps": [r["rps"] for r in rs],
                    "p99_us": [r["p99_us"] for r in rs],
                    "cpu_us": [r["cpu_us"] for r in rs],
                    "backend_cpu_us": [r["backend_cpu_us"] for r in rs],
                    "errors": sum(r["non2xx"] + r["socket_errors"] for r in rs),
                    "ratio": [x["rps"] for x in ratios[n][c] if x["rps"]],
                    "p99_ratio": [x["p99"] for x in ratios[n][c] if x["p99"]],
                    "cpu_ratio": [x["cpu"] for x in ratios[n][c] if x["cpu"]],
                }
            if h.load_module:
                cres["module"] = common.flusher_totals(h.error_log_text())
                cres["error_log"] = [l for l in h.check_error_log(
                    allowed=[r"IMX0100", r"will retry", r"timed out|Timeout"])][:5]
            # requests wrk may leave uncounted: its connections at each stop
            cres["slop_max"] = 5 + sum(len(runs[n][c]) * c for c in conns)
            res["configs"][n] = cres
        if be["influx"] is not None and "raw-influx" in res["configs"]:
            # The exit flush has run (servers stopped); the write is
            # acknowledged, so it is visible to a query at once.
            res["configs"]["raw-influx"]["stored"] = be["influx"].count(DB, "apache_request")
        if be["null"] is not None:
            res["null_stats"] = be["null"].stats()
        if be["hole"] is not None:
            res["hole_stats"] = be["hole"].stats()
    res["elapsed_s"] = time.monotonic() - t_start
    return res


def report(res):
    conns = res["conns"]
    lines = ["### Static file overhead (event MPM, 2 children x 64 threads, 11-byte file, "
             "wrk -t1 --latency, %d interleaved rounds x %d s)" % (res["rounds"], res["secs"]), ""]
    for c in conns:
        hdr = ["c=%d" % c, "req/s (min-max)", "throughput ratio [95% CI]",
               "p99 latency ratio [95% CI]", "httpd CPU us/req", "CPU/req ratio [95% CI]",
               "backend CPU us/req"]
        rows = []
        for n in ALL:
            if n not in res["configs"]:
                continue
            b = res["configs"][n]["by_conns"][str(c)]
            lo, hi = common.spread(b["rps"])
            bc = common.median(b.get("backend_cpu_us", []))
            rows.append([n, "%s (%s-%s)" % (common.fmt_num(common.median(b["rps"])),
                                            common.fmt_num(lo), common.fmt_num(hi)),
                         "1" if n == "none" else common.fmt_ci(b["ratio"]),
                         "1" if n == "none" else common.fmt_ci(b["p99_ratio"]),
                         common.fmt_num(common.median(b.get("cpu_us", [])), 1),
                         "1" if n == "none" else common.fmt_ci(b.get("cpu_ratio")),
                         "-" if bc is None else common.fmt_num(bc, 1)])
        lines += [common.md_table(hdr, rows), ""]
    lines.append("Runs go none, X, none, Y, none, ... with the order of the others rotated "
                 "every round; each ratio divides a run by the mean of the two no-module runs "
                 "around it; the median over rounds with its 95% confidence interval (bootstrap "
                 "over rounds, fixed seed) in brackets. Throughput ratio: req/s "
                 "(>1 is faster); p99 ratio: wrk's p99 latency (<1 is faster); CPU/req ratio: "
                 "user+system CPU of all httpd processes per request (module, flusher and "
                 "libcurl included), which other load on the machine disturbs far less than "
                 "throughput. Backend CPU: the null sink's or InfluxDB's own CPU per request.")
    acc = []
    for n in ("raw-null", "summary", "raw-influx", "blackhole"):
        cr = res["configs"].get(n)
        if not cr:
            continue
        m = cr.get("module", {})
        s = "- %s: served %s (wrk)" % (n, common.fmt_num(cr["served_wrk"]))
        if m:
            s += ", module recorded %s, sent %s, dropped (buffer full) %s" % (
                common.fmt_num(m.get("recorded")), common.fmt_num(m.get("sent")),
                common.fmt_num(m.get("dropped_full")))
            if m.get("batches") and m.get("sent"):
                s += ", in %s POSTs (%s request points each on average)" % (
                    common.fmt_num(m["batches"]),
                    common.fmt_num(m.get("sent", 0) / m["batches"]))
            elif m.get("batches"):
                s += ", %s POSTs (summary and the module's own points)" % (
                    common.fmt_num(m["batches"]))
            extra = {k: v for k, v in m.items()
                     if k in ("dropped_exit", "dropped_retry", "rejected") and v}
            if extra:
                s += ", " + ", ".join("%s %s" % (k, common.fmt_num(v)) for k, v in extra.items())
        if "stored" in cr:
            s += ("; **stored in InfluxDB %s** (stored - served = %+d: wrk does not count "
                  "the requests still in flight when a run stops, at most %d over this "
                  "config's runs)" % (common.fmt_num(cr["stored"]),
                                      cr["stored"] - cr["served_wrk"], cr["slop_max"]))
        if cr.get("error_log"):
            s += "; error log: %s" % "; ".join(x[:160] for x in cr["error_log"])
        acc.append(s)
    if res.get("null_stats"):
        acc.append("- null backend received %s points in %s POSTs"
                   % (common.fmt_num(res["null_stats"]["points"]),
                      common.fmt_num(res["null_stats"]["requests"])))
    if res.get("hole_stats"):
        acc.append("- blackholed backend: %s POSTs hung" % common.fmt_num(res["hole_stats"]["hung"]))
    if acc:
        lines += ["", "Accounting:", ""] + acc
    for note in res.get("notes", []):
        lines.append("- note: " + note)
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--secs", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="3 rounds x 1 s")
    ap.add_argument("--only", default="", help="comma-separated configs (none is always run)")
    a = ap.parse_args()
    if a.quick:
        a.rounds, a.secs = 3, 1
    res = run(a.rounds, a.secs, only=[x for x in a.only.split(",") if x] or None)
    common.save_json("overhead", res)
    print(report(res))


if __name__ == "__main__":
    main()
