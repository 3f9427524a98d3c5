#!/usr/bin/python3
"""Runs every benchmark and writes the results (what `make bench` does).

    /usr/bin/python3 bench/run.py [--quick] [--only micro,overhead,callgrind,wsgi]
                                  [--rounds N] [--no-plot] [--no-copy]
    /usr/bin/python3 bench/run.py --report-only     # rewrite from the last run's JSON

Each benchmark runs as its own process (bench/micro, bench/overhead.py,
bench/callgrind.py, bench/wsgi.py) and leaves JSON in bench/out/; this script
then writes bench/out/results.md (Markdown tables, targets met or missed),
bench/out/ratios.png (gnuplot bar chart of the throughput ratios), prints the
Markdown, and copies both to bench/RESULTS.md and bench/ratios.png (the
copies docs/benchmarks.md shows). A benchmark that fails is reported as
failed; the others still run.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import BENCH_DIR, OUT_DIR, REPO_ROOT, log  # noqa: E402

PY = "/usr/bin/python3"
GNUPLOT = "/usr/bin/gnuplot"
STEPS = ["micro", "overhead", "callgrind", "wsgi"]
# Per-step limits (seconds); together well under the 10 minutes promised.
TIMEOUTS = {"micro": 120, "overhead": 330, "callgrind": 200, "wsgi": 200}


def run_step(name, quick, rounds=None):
    if name == "micro":
        exe = os.path.join(BENCH_DIR, "micro")
        if not os.path.exists(exe):
            subprocess.run(["make", "-C", REPO_ROOT, "bench/micro"], check=True, timeout=120)
        cmd = [exe, "--json", os.path.join(OUT_DIR, "micro.json")]
    else:
        cmd = [PY, os.path.join(BENCH_DIR, name + ".py")]
    if quick:
        cmd.append("--quick")
    if rounds and name in ("overhead", "wsgi"):
        cmd += ["--rounds", str(rounds)]
    t0 = time.monotonic()
    log("run: %s" % " ".join(os.path.relpath(c, REPO_ROOT) if c.startswith(REPO_ROOT) else c
                              for c in cmd))
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=None, timeout=TIMEOUTS[name] * max(1.0, (rounds or 5) / 5.0),
                       cwd=REPO_ROOT)
    out = p.stdout.decode(errors="replace")
    if p.returncode != 0:
        raise RuntimeError("%s exited with %d:\n%s" % (name, p.returncode, out[-3000:]))
    return out, time.monotonic() - t0


# --------------------------------------------------------------------------
# Targets

def _verdict(ok):
    return "**met**" if ok else "**missed**"


def _noisy_verdict(series, goal):
    """For throughput ratios: met when every median reaches the goal; missed
    when some configuration stays below it in every round; otherwise the
    goal lies within the noise of this run."""
    if all(common.median(rs) >= goal for rs in series):
        return "**met**"
    if any(common.spread(rs)[1] < goal for rs in series):
        return "**missed**"
    return "**within noise** (median below, some rounds above)"


def targets(res):
    rows = []
    ov, cg, ws, mi = (res.get(k) for k in ("overhead", "callgrind", "wsgi", "micro"))
    if ov:
        cf = ov["configs"]

        def rmed(n, c):
            return common.median(cf[n]["by_conns"][str(c)]["ratio"]) if n in cf else None

        def rng(n, c):
            return common.spread(cf[n]["by_conns"][str(c)]["ratio"])
        conns = ov["conns"]

        def cpu(n, c):
            v = common.median(cf[n]["by_conns"][str(c)].get("cpu_ratio", []))
            return " (CPU/req %.3f)" % v if v else ""
        for n, title, goal in (("raw-null", "static file, raw mode, null backend >= 0.98 of "
                                "no module", 0.98),
                               ("summary", "static file, summary mode >= 0.99", 0.99)):
            if n not in cf:
                continue
            vals = [rmed(n, c) for c in conns]
            rows.append([title, " / ".join("c=%d: %.3f%s" % (c, v, cpu(n, c))
                                           for c, v in zip(conns, vals)),
                         _noisy_verdict([cf[n]["by_conns"][str(c)]["ratio"] for c in conns],
                                        goal)])
        if "summary" not in cf:
            rows.append(["static file, summary mode >= 0.99", "not in this build", "n/a"])
        if "blackhole" in cf and "raw-null" in cf:
            parts, ok = [], True
            for c in conns:
                b, n = rng("blackhole", c), rng("raw-null", c)
                overlap = b[0] <= n[1] and n[0] <= b[1]
                ok = ok and overlap
                parts.append("c=%d: %.3f vs %.3f" % (c, rmed("blackhole", c), rmed("raw-null", c)))
            rows.append(["blackholed backend within noise of a healthy one "
                         "(per-round ratio ranges overlap)", " / ".join(parts), _verdict(ok)])
        if "raw-influx" in cf:
            st = cf["raw-influx"].get("stored")
            rows.append(["(reported) InfluxDB 1.x on the same 2 cores",
                         " / ".join("c=%d: %.3f" % (c, rmed("raw-influx", c)) for c in conns)
                         + ("; stored %s of %s served (wrk)" % (common.fmt_num(st),
                            common.fmt_num(cf["raw-influx"]["served_wrk"])) if st is not None else ""),
                         "-"])
    if cg:
        m, a = cg["configs"]["module"]["added"], cg["configs"]["accesslog"]["added"]
        rows.append(["instructions added per request < combined access log's",
                     "%s vs %s" % (common.fmt_num(m), common.fmt_num(a)), _verdict(m < a)])
    if ws:
        d = ws["configs"]["module"]
        v = common.median(d["ratio"])
        same = d.get("stored") == d.get("served")
        cr = common.median(d.get("cpu_ratio", []))
        rows.append(["mod_wsgi hello world with the module >= 0.99 of no metrics, "
                     "stored == served",
                     "%.3f (%.3f-%.3f)%s, stored %s of %s" % (
                         v, common.spread(d["ratio"])[0], common.spread(d["ratio"])[1],
                         " (CPU/req %.3f)" % cr if cr else "",
                         common.fmt_num(d.get("stored")), common.fmt_num(d.get("served"))),
                     _noisy_verdict([d["ratio"]], 0.99) if same else "**missed** (stored != served)"])
    if mi:
        p8 = {p["load"]: p for p in mi["push"] if p["threads"] == 8}
        sat, paced, ref = p8.get("saturated"), p8.get("paced"), p8.get("atomic-ref")
        rows.append(["buffer push <= 100 ns median at 8 threads",
                     "paced (accepted): %.0f ns; saturated (%.0f%% dropped): %.0f ns; "
                     "one contended atomic increment here: %.0f ns"
                     % (paced["median_ns"], 100.0 * sat["dropped"] / max(1, sat["attempts"]),
                        sat["median_ns"], ref["median_ns"] if ref else float("nan")),
                     _verdict(paced["median_ns"] <= 100 and sat["median_ns"] <= 100)])
        e = mi["encode"]["points_per_s"]
        rows.append(["encoder >= 3 million points/s on one core",
                     "%s points/s" % common.fmt_num(e), _verdict(e >= 3e6)])
    return rows


# --------------------------------------------------------------------------
# Markdown

def micro_md(mi):
    lines = ["### Engine micro-benchmarks (bench/micro)", ""]
    rows = []
    for p in mi["push"]:
        rows.append([p["load"], p["threads"], common.fmt_num(p["pushes_per_s"]),
                     common.fmt_num(p["accepted_per_s"]),
                     "%.1f%%" % (100.0 * p["dropped"] / max(1, p["attempts"])),
                     "%.1f" % p["median_ns"], "%.1f" % p["p99_ns"]])
    lines.append(common.md_table(["load", "threads", "pushes/s", "accepted/s", "dropped",
                                  "median ns/push", "p99 ns/push"], rows))
    lines += ["",
              "Buffer of %d, batch %d, flusher running with a no-op sender, pushers pinned "
              "round-robin to the CPUs. *saturated*: "
              "tight loop, far faster than the flusher drains, so most pushes find the "
              "buffer full (counted drops, the cheap path); *paced*: ~1 us of work between "
              "pushes, each push timed alone (timer cost of %.0f ns subtracted), all accepted "
              "unless the flusher is starved of CPU; *atomic-ref*: the paced load doing one "
              "shared atomic increment instead of a push: the floor of any design with one "
              "shared buffer on this machine." % (mi["capacity"], mi["batch"], mi["timer_ns"]),
              ""]
    e = mi["encode"]
    rows = [["encode (imx_encode_line)", common.fmt_num(e["points_per_s"]),
             "%.1f" % e["bytes_per_point"]],
            ["encode + gzip level 1", common.fmt_num(e["gz_points_per_s"]),
             "%.1f" % e["gz_bytes_per_point"]]]
    for d in mi["drain"]:
        rows.append(["engine drain (ring -> body%s -> sender)" % (" -> gzip" if d["gzip"] else ""),
                     common.fmt_num(d["points_per_s"]), "%.1f" % d["bytes_per_point"]])
    lines.append(common.md_table(["one core", "points/s", "bytes/point"], rows))
    return "\n".join(lines) + "\n"


def git_rev():
    try:
        rev = subprocess.run(["git", "-C", REPO_ROOT, "rev-parse", "--short", "HEAD"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             timeout=10).stdout.decode().strip()
        dirty = subprocess.run(["git", "-C", REPO_ROOT, "status", "--porcelain",
                                "--untracked-files=no"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, timeout=10).stdout.strip()
        return rev + ("+changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


def results_md(res, failures, meta):
    import overhead
    import callgrind
    import wsgi
    info = common.machine_info()
    lines = ["# Benchmark results", "",
             "Measured %s on %s (%d cores), Apache %s, commit %s%s; whole run %.0f s; "
             "load average %.1f at the start, %.1f at the end. "
             "Every figure is a ratio or count measured side by side in this one run "
             "(interleaved rounds, medians, min-max); absolute req/s depend on the "
             "machine and what else it did. Instruction counts (callgrind) do not depend "
             "on other load; throughput ratios do, by as much as their min-max shows." % (
                 meta["when"], info["cpu"], info["cpus"], info["apache"], meta["commit"],
                 " (quick mode)" if meta["quick"] else "", meta["elapsed_s"],
                 meta["load_start"], meta["load_end"]), "",
             "Reproduce: `make bench` (see bench/README.md).", "",
             "![throughput ratios](ratios.png)", "",
             "## Targets", "",
             common.md_table(["target", "measured", ""], targets(res)), ""]
    for name, title in (("overhead", None), ("callgrind", None), ("wsgi", None),
                        ("micro", None)):
        if name in failures:
            lines += ["### %s: FAILED" % name, "", "```", failures[name][-2000:], "```", ""]
            continue
        if name not in res:
            continue
        lines.append({"overhead": overhead.report, "callgrind": callgrind.report,
                      "wsgi": wsgi.report, "micro": micro_md}[name](res[name]))
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Plot

def plot(res, path):
    if not os.path.exists(GNUPLOT):
        log("gnuplot not installed (apt-get install gnuplot-nox): no chart")
        return False
    os.makedirs(OUT_DIR, exist_ok=True)
    ov, ws = res.get("overhead"), res.get("wsgi")
    if not ov and not ws:
        return False
    script = ["set terminal pngcairo noenhanced size 1100,520 font 'DejaVu Sans,10'",
              "set output '%s'" % path,
              "set style data histograms",
              "set style histogram errorbars gap 1.5 lw 1",
              "set style fill solid 0.75 border -1",
              "set grid ytics",
              "set key top right",
              "set ylabel 'throughput / throughput without metrics'",
              "set xtics rotate by -20 left"]
    nplots = bool(ov) + bool(ws)
    script.append("set multiplot layout 1,%d title 'mod_influx_metrics: throughput "
                  "ratios (median, min-max over interleaved rounds)'" % nplots)
    if ov:
        f = os.path.join(OUT_DIR, "ratios_static.dat")
        conns = ov["conns"]
        ylo, yhi = 0.95, 1.05
        with open(f, "w") as fh:
            for n in ["raw-null", "summary", "raw-influx", "blackhole", "accesslog"]:
                if n not in ov["configs"]:
                    continue
                row = ['"%s"' % n]
                for c in conns:
                    rs = ov["configs"][n]["by_conns"][str(c)]["ratio"]
                    lo, hi = common.spread(rs)
                    ylo, yhi = min(ylo, lo), max(yhi, hi)
                    row += ["%.4f" % common.median(rs), "%.4f" % lo, "%.4f" % hi]
                fh.write(" ".join(row) + "\n")
        script += ["set title 'static file (event MPM, wrk)'",
                   "set yrange [%.2f:%.2f]" % (max(0.0, ylo - 0.05), yhi + 0.05),
                   "set arrow 1 from graph 0, first 1 to graph 1, first 1 nohead dt 2 lc rgb '#444444'",
                   "set arrow 2 from graph 0, first 0.98 to graph 1, first 0.98 nohead dt 3 lc rgb '#cc0000'",
                   "plot " + ", ".join(
                       "'%s' using %d:%d:%d%s title 'c=%d'" % (
                           f, 2 + 3 * i, 3 + 3 * i, 4 + 3 * i, ":xtic(1)" if i == 0 else "", c)
                       for i, c in enumerate(conns))]
    if ws:
        f = os.path.join(OUT_DIR, "ratios_wsgi.dat")
        labels = {"perreq": "POST per request", "batched": "in-app batching",
                  "module": "mod_influx_metrics"}
        with open(f, "w") as fh:
            for n in ["perreq", "batched", "module"]:
                rs = ws["configs"][n]["ratio"]
                lo, hi = common.spread(rs)
                fh.write('"%s" %.4f %.4f %.4f\n' % (labels[n], common.median(rs), lo, hi))
        script += ["unset arrow",
                   "set title 'mod_wsgi hello world (wrk -c %d)'" % ws["conns"],
                   "set yrange [0:%.2f]" % max(1.15, max(common.spread(ws["configs"][n]["ratio"])[1]
                                                          for n in ["perreq", "batched", "module"]) + 0.05),
                   "set arrow 1 from graph 0, first 1 to graph 1, first 1 nohead dt 2 lc rgb '#444444'",
                   "set arrow 2 from graph 0, first 0.99 to graph 1, first 0.99 nohead dt 3 lc rgb '#cc0000'",
                   "plot '%s' using 2:3:4:xtic(1) title 'vs no metrics' lc rgb '#2a7ab0'" % f]
    script.append("unset multiplot")
    p = subprocess.run([GNUPLOT], input="\n".join(script).encode(), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)
    if p.returncode != 0:
        log("gnuplot failed: %s" % p.stdout.decode(errors="replace")[-1000:])
        return False
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs (a smoke test)")
    ap.add_argument("--only", default="", help="comma-separated: " + ",".join(STEPS))
    ap.add_argument("--rounds", type=int, default=None,
                    help="rounds of overhead and wsgi (default 5; time grows with it)")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--no-copy", action="store_true",
                    help="do not update bench/RESULTS.md and bench/ratios.png")
    ap.add_argument("--report-only", action="store_true",
                    help="run nothing: rewrite the Markdown and the chart from the last "
                         "run's bench/out/results.json")
    a = ap.parse_args()
    if a.report_only:
        with open(os.path.join(OUT_DIR, "results.json")) as f:
            last = json.load(f)
        meta = {"when": "?", "commit": "?", "quick": False, "load_start": float("nan"),
                "load_end": float("nan")}
        meta.update(last)
        return write_outputs(last["results"], last["failures"], meta, a.no_plot,
                             a.no_copy or set(last["results"]) != set(STEPS))
    steps = [s for s in a.only.split(",") if s] or STEPS
    for s in steps:
        if s not in STEPS:
            ap.error("unknown step %r" % s)
    os.makedirs(OUT_DIR, exist_ok=True)
    t0 = time.monotonic()
    load_start = os.getloadavg()[0]
    commit = git_rev()          # the tree the run measures, before it starts
    res, failures = {}, {}
    for s in steps:
        try:
            _, secs = run_step(s, a.quick, a.rounds)
            res[s] = common.load_json(s)
            log("%s done in %.0f s" % (s, secs))
        except Exception as e:  # noqa: BLE001 - report it, run the rest
            failures[s] = str(e)
            log("%s FAILED: %s" % (s, str(e)[-500:]))
    elapsed = time.monotonic() - t0
    meta = {"elapsed_s": elapsed, "quick": a.quick, "load_start": load_start,
            "load_end": os.getloadavg()[0], "commit": commit,
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    with open(os.path.join(OUT_DIR, "results.json"), "w") as f:
        json.dump(dict(meta, results=res, failures=failures), f, indent=1)
    rc = write_outputs(res, failures, meta, a.no_plot, a.no_copy or set(steps) != set(STEPS))
    log("all done in %.0f s" % elapsed)
    return rc


def write_outputs(res, failures, meta, no_plot, no_copy):
    png = os.path.join(OUT_DIR, "ratios.png")
    if not no_plot:
        plot(res, png)
    md = results_md(res, failures, meta)
    with open(os.path.join(OUT_DIR, "results.md"), "w") as f:
        f.write(md)
    print(md)
    if not no_copy and not failures:
        shutil.copy(os.path.join(OUT_DIR, "results.md"), os.path.join(BENCH_DIR, "RESULTS.md"))
        if os.path.exists(png):
            shutil.copy(png, os.path.join(BENCH_DIR, "ratios.png"))
        log("copied to bench/RESULTS.md and bench/ratios.png")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
