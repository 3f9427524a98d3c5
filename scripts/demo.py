# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""The demo of mod_influx_metrics, end to end, on the local machine.

Starts a private InfluxDB 1.x and a private Apache httpd (event MPM unless
--mpm says otherwise) with the module loaded, both on 127.0.0.1 ports picked
at run time and with all their files in fresh temporary directories; drives real traffic with ab; stops
Apache gracefully so that every child flushes what it holds; then compares
what was served with what the module sent and what InfluxDB stored, and shows
latency percentiles that InfluxDB computes from the raw points.

Run it through scripts/demo.sh (which installs the packages and builds the
module first), or directly with the system Python once the module is built:

    /usr/bin/python3 scripts/demo.py [--requests N] [--concurrency C]
                                     [--mpm event|worker|prefork] [--keep]
                                     [--png FILE | --no-png]

It also draws the run (request rate, p50/p95/p99 of duration_us over time,
from the points in InfluxDB) with gnuplot into demo-run/demo.png.

Exit status: 0 when every check passed, 1 when a check failed, 2 when the
demo could not run (a server did not start, the module is not built, ...).
Everything it starts is stopped by PID before it exits, also on failure and on
Ctrl-C; the servers come from tests/harness/.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import time

SCRIPTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(SCRIPTS_DIR)
sys.path.insert(0, os.path.join(REPO_ROOT, "tests"))

import harness  # noqa: E402
from harness import AbBackground, Httpd, Imx, Influx  # noqa: E402

DB = "demo"
MEASUREMENT = "apache_request"      # the module's default; not configured below
ROUTE_PREFIX = "/api/"
ROUTE_NAME = "api"

# The traffic mix: (share of requests, ab options, path, what it shows).
# Each line is one ab run; the runs go in parallel, the concurrency split
# between them in proportion to their share.
MIX = [
    (0.40, [], "/small.txt", "static file, 200"),
    (0.20, [], ROUTE_PREFIX + "items.json", "<Location /api>, route=api"),
    (0.20, [], "/no-such-page.html", "missing file, 404"),
    (0.10, ["-i"], "/big.bin", "HEAD of a 64 KiB file"),
    (0.10, [], "/big.bin", "GET of a 64 KiB file"),
]

FLUSHER_EXIT = re.compile(r"IMX0100: flusher exit: (.*)$")
# Always shown; any other counter in the line (e.g. another dropped_*) is
# summed and shown too.
STAT_FIELDS = ("recorded", "sent", "rejected", "dropped_full", "dropped_exit",
               "retries", "batches", "bytes")

GNUPLOT = "/usr/bin/gnuplot"
DEFAULT_PNG = os.path.join(REPO_ROOT, "demo-run", "demo.png")


class Stop(Exception):
    """SIGTERM or SIGHUP: end like Ctrl-C, stopping what was started."""


def _on_signal(signum, frame):
    raise Stop(signal.Signals(signum).name)


def split(total, weights, minimum=0):
    """Splits the integer total in proportion to weights (largest remainder),
    each part at least `minimum` while the total allows."""
    s = sum(weights)
    raw = [total * w / s for w in weights]
    parts = [max(minimum, int(r)) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: raw[i] - int(raw[i]), reverse=True)
    i = 0
    while sum(parts) < total:
        parts[order[i % len(order)]] += 1
        i += 1
    return parts


def route_of(path):
    return ROUTE_NAME if path.startswith(ROUTE_PREFIX) else ""


def flusher_stats(error_log):
    """Sums the counters of all "flusher exit:" lines (each child logs one
    when it exits). Returns ({counter: sum}, number of lines)."""
    total = dict.fromkeys(STAT_FIELDS, 0)
    lines = 0
    for line in error_log.splitlines():
        m = FLUSHER_EXIT.search(line)
        if not m:
            continue
        lines += 1
        for key, val in re.findall(r"(\w+)=(\d+)", m.group(1)):
            total[key] = total.get(key, 0) + int(val)
    return total, lines


def losses(stats):
    """The counters of points that were not stored: rejected and dropped_*."""
    return {k: v for k, v in stats.items()
            if k == "rejected" or k.startswith("dropped_")}


def influx_groups(influx):
    """count, p50, p95, p99 and max of duration_us, computed by InfluxDB from
    the raw points, overall and per (method, status, route)."""
    sel = ("SELECT count(duration_us) AS n, percentile(duration_us, 50) AS p50, "
           "percentile(duration_us, 95) AS p95, percentile(duration_us, 99) AS p99, "
           "max(duration_us) AS max FROM %s" % harness.quote_ident(MEASUREMENT))
    overall = influx.select(sel, DB)
    groups = {}
    res = influx.query(sel + ' GROUP BY "method", "status", "route"', db=DB)
    for s in res["results"][0].get("series") or []:
        tags = s.get("tags") or {}
        row = dict(zip(s["columns"], s["values"][0]))
        groups[(tags.get("method", ""), tags.get("status", ""),
                tags.get("route", ""))] = row
    return (overall[0] if overall else None), groups


def plot_interval(seconds):
    """GROUP BY time() interval: 1s, or finer for a short run, so that the
    picture has at least about 20 intervals."""
    for name, length in (("1s", 1.0), ("500ms", 0.5), ("200ms", 0.2), ("100ms", 0.1)):
        if seconds / length >= 20:
            return name, length
    return "50ms", 0.05


def parse_interval(text):
    """'1s', '500ms', '100ms' ... -> (text, seconds), for GROUP BY time()."""
    m = re.match(r"^(\d+)(ms|s|m)$", text or "")
    if not m or int(m.group(1)) == 0:
        raise ValueError("interval %r: want e.g. 1s, 500ms or 1m" % text)
    return text, int(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[m.group(2)]


def plot_run(influx, png, t_start_ns, t_end_ns, title, interval=None):
    """Request rate and p50/p95/p99 of duration_us over the run, computed by
    InfluxDB from the raw points (count() and percentile() GROUP BY
    time()), drawn by gnuplot into png. t_start_ns/t_end_ns: when the
    traffic started and ended (wall clock). Returns a line to print."""
    if not os.path.exists(GNUPLOT):
        return "no picture: gnuplot is not installed (apt-get install gnuplot-nox)"
    if interval:
        name, length = parse_interval(interval)
    else:
        name, length = plot_interval((t_end_ns - t_start_ns) / 1e9)
    # A second either side: every point of the run, whatever its timestamp.
    q = ("SELECT count(duration_us) AS n, percentile(duration_us, 50) AS p50, "
         "percentile(duration_us, 95) AS p95, percentile(duration_us, 99) AS p99 "
         "FROM %s WHERE time >= %d AND time <= %d GROUP BY time(%s) fill(none)"
         % (harness.quote_ident(MEASUREMENT), t_start_ns - 10 ** 9,
            t_end_ns + 10 ** 9, name))
    res = influx.query(q, db=DB, epoch="ms")
    series = res["results"][0].get("series") or []
    if not series:
        return "no picture: InfluxDB returned no intervals"
    cols = series[0]["columns"]
    rows = [dict(zip(cols, v)) for v in series[0]["values"]]
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    dat = os.path.splitext(png)[0] + ".dat"
    t0_ms = t_start_ns / 1e6
    xs = [(r["time"] - t0_ms) / 1000.0 + length / 2 for r in rows]
    with open(dat, "w") as f:
        f.write("# seconds since the traffic started (middle of the interval), "
                "requests/s, p50 p95 p99 (ms) per %s interval, from: %s\n" % (name, q))
        for x, r in zip(xs, rows):
            f.write("%.3f %.1f %.3f %.3f %.3f\n" % (
                x, r["n"] / length, r["p50"] / 1000.0, r["p95"] / 1000.0,
                r["p99"] / 1000.0))
    xlo = min(0.0, xs[0] - length / 2)
    xhi = max((t_end_ns - t_start_ns) / 1e9, xs[-1] + length / 2)
    script = [
        "set terminal pngcairo noenhanced size 1000,640 font 'DejaVu Sans,10'",
        "set output '%s'" % png.replace("'", "''"),
        "set multiplot layout 2,1 title '%s'" % title.replace("'", "''"),
        "set grid ytics",
        "set key top right",
        "set xrange [%g:%g]" % (xlo, xhi),
        "set lmargin 12",
        "set ylabel 'requests/s'",
        "set yrange [0:*]",
        "set offsets 0, 0, graph 0.2, 0",       # room for the key
        "set style fill solid 0.6 border -1",
        "set boxwidth %g absolute" % (length * 0.9),
        "plot '%s' using 1:2 with boxes lc rgb '#2a7ab0' title 'count(duration_us) / %s'"
        % (dat, name),
        "set ylabel 'duration (ms)'",
        "set xlabel 'seconds since the traffic started'",
        "set logscale y",
        "set yrange [*:*]",
        "set key top center horizontal",
        "set offsets 0, 0, graph 0.15, 0",      # room for the key
        "plot '%s' using 1:5 with linespoints pt 7 ps 0.5 lc rgb '#cc3333' title 'p99', "
        "'' using 1:4 with linespoints pt 7 ps 0.5 lc rgb '#e69f00' title 'p95', "
        "'' using 1:3 with linespoints pt 7 ps 0.5 lc rgb '#009e73' title 'p50'" % dat,
        "unset multiplot",
    ]
    p = subprocess.run([GNUPLOT], input="\n".join(script).encode(),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    if p.returncode != 0:
        return "no picture: gnuplot failed: %s" % p.stdout.decode(errors="replace")[-500:]
    return "picture: %s (%d intervals of %s; data in %s)" % (
        os.path.relpath(png), len(rows), name, os.path.relpath(dat))


def fmt_us(v):
    return "-" if v is None else "%d" % v


def main():
    ap = argparse.ArgumentParser(
        prog="demo.sh",
        description="Run mod_influx_metrics against a private InfluxDB and Apache "
                    "on 127.0.0.1, drive traffic with ab, and compare requests "
                    "served, points sent and points stored.")
    ap.add_argument("--requests", "-n", type=int, default=20000, metavar="N",
                    help="requests in total, spread over %d URLs (default 20000)"
                         % len(MIX))
    ap.add_argument("--concurrency", "-c", type=int, default=20, metavar="C",
                    help="concurrent connections in total, split between the "
                         "URLs, at least 1 each (default 20)")
    ap.add_argument("--mpm", choices=sorted(harness.MPMS), default="event",
                    help="Apache's multi-processing module (default event)")
    ap.add_argument("--png", default=DEFAULT_PNG, metavar="FILE",
                    help="where to draw the run: request rate and p50/p95/p99 "
                         "over time, from InfluxDB (default demo-run/demo.png)")
    ap.add_argument("--png-interval", metavar="DURATION",
                    help="GROUP BY time() of the picture, e.g. 1s or 200ms "
                         "(default 1s, finer when the traffic lasted less than "
                         "20 s)")
    ap.add_argument("--no-png", action="store_true", help="draw nothing")
    ap.add_argument("--keep", action="store_true",
                    help="after the report, start Apache again and keep both "
                         "servers running until Ctrl-C, printing their URLs")
    args = ap.parse_args()
    if args.requests < 1 or args.concurrency < 1:
        ap.error("--requests and --concurrency must be at least 1")
    if args.png_interval:
        try:
            parse_interval(args.png_interval)
        except ValueError as e:
            ap.error(str(e))

    if not os.path.exists(harness.MODULE_SO):
        print("demo: %s is missing: run `make` first (scripts/demo.sh does)"
              % os.path.relpath(harness.MODULE_SO, REPO_ROOT), file=sys.stderr)
        return 2

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)

    t_start = time.monotonic()
    influx = httpd = None
    runs = []
    ok = False
    keep_dirs = False       # after a failure, for inspection
    try:
        influx = Influx(http_log=False)
        influx.start()
        influx.create_db(DB)

        conf = str(Imx(influx.write_url(DB), tags={"env": "demo"},
                       flush_interval=None))
        conf += ('<Location "%s">\n    InfluxMetricsRoute %s\n</Location>\n'
                 % (ROUTE_PREFIX.rstrip("/"), ROUTE_NAME))
        httpd = Httpd(mpm=args.mpm, extra=conf, name="demo-httpd")
        os.makedirs(os.path.join(httpd.htdocs, ROUTE_PREFIX.strip("/")), mode=0o755,
                    exist_ok=True)
        with open(os.path.join(httpd.htdocs, ROUTE_PREFIX.strip("/"), "items.json"),
                  "w") as f:
            f.write('[{"id": 1, "name": "demo"}]\n')
        httpd.start()

        print("mod_influx_metrics demo")
        print("  module    %s" % os.path.relpath(harness.MODULE_SO, REPO_ROOT))
        print("  InfluxDB  %s  (influxd 1.x, database %s, files in %s)"
              % (influx.url, DB, influx.dir))
        print("  Apache    %s  (%s MPM, files in %s)" % (httpd.url, args.mpm, httpd.dir))
        print("  module configuration:")
        for line in conf.splitlines():
            print("      " + line)
        print()

        # ---- traffic ----------------------------------------------------
        weights = [m[0] for m in MIX]
        ns = split(args.requests, weights)
        cs = split(args.concurrency, weights, minimum=1)
        print("Traffic: %d requests, ab -k, total concurrency %d"
              % (args.requests, sum(min(c, n) for c, n in zip(cs, ns) if n)))
        base = httpd.url.rstrip("/")
        t0 = time.monotonic()
        traffic_start_ns = time.time_ns()
        for (share, opts, path, what), n, c in zip(MIX, ns, cs):
            if n == 0:
                continue
            c = min(c, n)
            method = "HEAD" if "-i" in opts else "GET"
            print("  %-4s %-24s %6d requests  c=%-3d %s" % (method, path, n, c, what))
            runs.append((path, AbBackground(base + path, n, c, keepalive=True,
                                            extra_args=opts)))
        completed = failed = 0
        for path, run in runs:
            res = run.wait(timeout=90)
            completed += res.complete
            failed += res.failed
            if res.returncode != 0:
                print("  ab %s exited with %d:\n%s" % (path, res.returncode,
                                                      harness._tail(res.output, 10)))
        runs = []
        elapsed = time.monotonic() - t0
        traffic_end_ns = time.time_ns()
        print("  ab: %d complete, %d failed, in %.1f s (%.0f req/s)"
              % (completed, failed, elapsed, completed / elapsed if elapsed else 0))
        # A request is logged just after its response went out.
        try:
            httpd.wait_access_log_count(completed, timeout=10)
        except TimeoutError as e:
            print("  " + str(e))

        # ---- graceful stop: every child flushes before it exits ------------
        t0 = time.monotonic()
        httpd.graceful_stop(timeout=30)
        print("  Apache stopped gracefully (SIGWINCH) in %.1f s; each child "
              "flushed on exit" % (time.monotonic() - t0))
        print()

        # ---- what was served, sent and stored ---------------------------
        entries = httpd.access_log_entries()
        entries = [e for e in entries if e.path != harness.PROBE_PATH]
        served = len(entries)
        stats, children = flusher_stats(httpd.error_log_text())
        stored = influx.count(DB, MEASUREMENT)
        overall, groups = influx_groups(influx)

        w = 58
        print("Delivery")
        print("  %-*s %8d" % (w, "requests served (access.log lines)", served))
        print("  %-*s %8d" % (w, "points recorded by the module (sum of recorded=)",
                              stats["recorded"]))
        print("  %-*s %8d" % (w, "points sent (sum of sent=, %d flusher exit lines)"
                              % children, stats["sent"]))
        print("  %-*s %8d" % (w, "points stored in InfluxDB (count(duration_us))",
                              stored))
        print("  " + " ".join("%s=%d" % (k, v) for k, v in stats.items()
                              if k not in ("recorded", "sent")))
        print()

        sample = influx.select('SELECT * FROM %s LIMIT 1'
                               % harness.quote_ident(MEASUREMENT), DB)
        if sample:
            print("A stored point (tags and fields as InfluxDB returns them):")
            print("  " + "  ".join("%s=%s" % (k, v) for k, v in sorted(sample[0].items())
                                   if v is not None))
            print()

        served_by = {}
        for e in entries:
            key = (e.method, str(e.status), route_of(e.path))
            served_by[key] = served_by.get(key, 0) + 1
        print("duration_us by InfluxDB from the raw points "
              "(percentile() = nearest rank)")
        print("  %-6s %-6s %-6s %8s %8s %8s %8s %8s %9s"
              % ("method", "status", "route", "served", "stored", "p50", "p95",
                 "p99", "max"))
        rows = [(("all", "", ""), served, overall)]
        for key in sorted(set(served_by) | set(groups)):
            rows.append((key, served_by.get(key, 0), groups.get(key)))
        group_mismatch = []
        for (method, status, route), n_served, row in rows:
            row = row or {}
            n_stored = row.get("n") or 0
            if n_served != n_stored:
                group_mismatch.append((method, status, route or "-"))
            print("  %-6s %-6s %-6s %8d %8d %8s %8s %8s %9s"
                  % (method, status or "", route or ("-" if status else ""),
                     n_served, n_stored, fmt_us(row.get("p50")),
                     fmt_us(row.get("p95")), fmt_us(row.get("p99")),
                     fmt_us(row.get("max"))))
        print()

        # ---- verdict ----------------------------------------------------
        checks = [
            ("stored == served", stored == served,
             "stored %d, served %d" % (stored, served)),
            ("sent == stored", stats["sent"] == stored,
             "sent %d, stored %d (sent > stored: points collided on a timestamp)"
             % (stats["sent"], stored)),
            ("recorded == served", stats["recorded"] == served,
             "recorded %d, served %d" % (stats["recorded"], served)),
            ("no drops or rejects", not any(losses(stats).values()),
             ", ".join("%s %d" % kv for kv in losses(stats).items())),
            ("per-group counts match", not group_mismatch,
             "differ for %s" % group_mismatch),
        ]
        bad_log = httpd.check_error_log()
        checks.append(("error log clean", not bad_log,
                       "%d unexpected lines:\n    %s"
                       % (len(bad_log), "\n    ".join(bad_log[:10]))))
        ok = all(c[1] for c in checks)
        keep_dirs = not ok
        for name, passed, detail in checks:
            print("%s: %s" % (name, "OK" if passed else "FAIL (%s)" % detail))
        if not args.no_png:
            try:
                print(plot_run(
                    influx, args.png, traffic_start_ns, traffic_end_ns,
                    "mod_influx_metrics demo: %d requests served (%s MPM), "
                    "from the %d points in InfluxDB" % (served, args.mpm, stored),
                    args.png_interval))
            except Exception as e:  # noqa: BLE001 - the report above stands
                print("no picture: %s: %s" % (type(e).__name__, e))
        print("demo %s in %.1f s" % ("passed" if ok else "FAILED",
                                     time.monotonic() - t_start))

        if args.keep:
            httpd.start()
            print()
            print("--keep: both servers run until Ctrl-C.")
            print("  Apache    %s   e.g.  curl %ssmall.txt" % (httpd.url, httpd.url))
            print("  InfluxDB  %s   e.g.  curl -G %s/query --data-urlencode db=%s "
                  "--data-urlencode 'q=SELECT count(duration_us) FROM %s'"
                  % (influx.url, influx.url, DB, MEASUREMENT))
            print("  (points arrive within the flush interval, 1 s)")
            while httpd.running():
                time.sleep(1)
        return 0 if ok else 1
    except (KeyboardInterrupt, Stop) as e:
        print("\ndemo: interrupted (%s), stopping" % (e or "Ctrl-C"), file=sys.stderr)
        # With --keep, Ctrl-C is the normal way to end.
        return 0 if args.keep and ok else 130
    except Exception as e:  # noqa: BLE001 - report, then stop everything
        print("demo: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        keep_dirs = True
        return 2
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        for _, run in runs:
            run.stop()
        if httpd is not None:
            httpd.stop()
        if influx is not None:
            influx.stop()
        if keep_dirs:
            kept = [x.dir for x in (httpd, influx) if x is not None and x.dir]
            if kept:
                print("demo: logs and data kept in %s" % ", ".join(kept),
                      file=sys.stderr)
        else:
            for x in (httpd, influx):
                if x is not None:
                    x.cleanup()


if __name__ == "__main__":
    sys.exit(main())
