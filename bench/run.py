#!/usr/bin/python3
# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""Runs every benchmark and writes the results (what `make bench` does).

    /usr/bin/python3 bench/run.py [--quick]
                                  [--only micro,overhead,callgrind,callgrind-fields,wsgi,php,
                                          scaling,memory]
                                  [--rounds N] [--no-plot] [--no-copy]
    /usr/bin/python3 bench/run.py --report-only     # rewrite from the last run's JSON

Each benchmark runs as its own process (bench/micro, bench/overhead.py,
bench/callgrind.py, bench/callgrind.py --fields, bench/wsgi.py, bench/php.py,
bench/scaling.py, bench/memory.py) and leaves JSON in bench/out/; this script
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
STEPS = ["micro", "overhead", "callgrind", "callgrind-fields", "wsgi", "php", "scaling",
         "memory"]
# Not in the default run (minutes of its own): --only=outage-memory.
EXTRA_STEPS = ["outage-memory"]
# Per-step limits (seconds), at 10 rounds; `make bench` takes about 15 minutes.
TIMEOUTS = {"micro": 120, "overhead": 420, "callgrind": 600, "callgrind-fields": 600,
            "wsgi": 200, "php": 150, "scaling": 90, "memory": 600, "outage-memory": 400}
ROUNDS_STEPS = ("overhead", "wsgi", "php")


def run_step(name, quick, rounds=None):
    if name == "micro":
        exe = os.path.join(BENCH_DIR, "micro")
        if not os.path.exists(exe):
            subprocess.run(["make", "-C", REPO_ROOT, "bench/micro"], check=True, timeout=120)
        cmd = [exe, "--json", os.path.join(OUT_DIR, "micro.json")]
    elif name == "callgrind-fields":
        cmd = [PY, os.path.join(BENCH_DIR, "callgrind.py"), "--fields"]
    else:
        cmd = [PY, os.path.join(BENCH_DIR, name.replace("-", "_") + ".py")]
    if quick:
        cmd.append("--quick")
    if rounds and name in ROUNDS_STEPS:
        cmd += ["--rounds", str(rounds)]
    t0 = time.monotonic()
    log("run: %s" % " ".join(os.path.relpath(c, REPO_ROOT) if c.startswith(REPO_ROOT) else c
                              for c in cmd))
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=None, timeout=TIMEOUTS[name] * max(1.0, (rounds or 10) / 10.0),
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
    """For throughput ratios: met only when the 95% interval of every
    series' median lies at or above the goal, missed when one lies wholly
    below it, otherwise not distinguishable from it (common.verdict_at_least)."""
    return common.verdict_at_least(series, goal)


def targets(res):
    rows = []
    ov, cg, ws, mi = (res.get(k) for k in ("overhead", "callgrind", "wsgi", "micro"))
    if ov:
        cf = ov["configs"]

        def rmed(n, c):
            return common.median(cf[n]["by_conns"][str(c)]["ratio"]) if n in cf else None

        def rng(n, c):
            return common.median_ci(cf[n]["by_conns"][str(c)]["ratio"])
        conns = ov["conns"]

        def cpu(n, c):
            rs = cf[n]["by_conns"][str(c)].get("cpu_ratio", [])
            return " (CPU/req %s)" % common.fmt_ci(rs) if rs else ""
        for n, title, goal in (("raw-null", "static file, raw mode, null backend >= 0.98 of "
                                "no module", 0.98),
                               ("summary", "static file, summary mode >= 0.99", 0.99)):
            if n not in cf:
                continue
            rows.append([title, " / ".join("c=%d: %s%s" % (
                c, common.fmt_ci(cf[n]["by_conns"][str(c)]["ratio"]), cpu(n, c))
                for c in conns),
                         _noisy_verdict([cf[n]["by_conns"][str(c)]["ratio"] for c in conns],
                                        goal)])
        if "summary" not in cf:
            rows.append(["static file, summary mode >= 0.99", "not in this build", "n/a"])
        if "blackhole" in cf and "raw-null" in cf:
            parts, ok = [], True
            for c in conns:
                _, blo, bhi = rng("blackhole", c)
                _, nlo, nhi = rng("raw-null", c)
                overlap = blo <= nhi and nlo <= bhi
                ok = ok and overlap
                parts.append("c=%d: %s vs %s" % (
                    c, common.fmt_ci(cf["blackhole"]["by_conns"][str(c)]["ratio"]),
                    common.fmt_ci(cf["raw-null"]["by_conns"][str(c)]["ratio"])))
            rows.append(["blackholed backend within noise of a healthy one "
                         "(95% intervals overlap)", " / ".join(parts), _verdict(ok)])
        if "raw-influx" in cf:
            st = cf["raw-influx"].get("stored")
            rows.append(["(reported) InfluxDB 1.x on the same 2 cores",
                         " / ".join("c=%d: %.3f" % (c, rmed("raw-influx", c)) for c in conns)
                         + ("; stored %s of %s served (wrk)" % (common.fmt_num(st),
                            common.fmt_num(cf["raw-influx"]["served_wrk"])) if st is not None else ""),
                         "-"])
    if cg or res.get("callgrind-fields"):
        import callgrind
        if cg and "accesslog" in cg["configs"]:
            m, a = cg["configs"]["module"]["added"], cg["configs"]["accesslog"]["added"]
            rows.append(["instructions added per request < combined access log's (an "
                         "earlier target)", "%s vs %s" % (common.fmt_num(m), common.fmt_num(a)),
                         _verdict(m < a)])
        for _, title, value, goal, detail in callgrind.target_values(
                cg, res.get("callgrind-fields")):
            rows.append(["%s <= %s" % (title, common.fmt_num(goal)),
                         common.fmt_num(value) + (" (%s)" % detail if detail else ""),
                         callgrind.verdict(value, goal)])
    for key, title, goal in (("wsgi", "mod_wsgi hello world with the module >= 0.99 of no "
                                      "metrics, stored == served", 0.99),
                             ("php", "mod_php page, prefork 16 children, with the module "
                                     ">= 0.98 of no module, stored == served", 0.98)):
        w = res.get(key)
        if not w:
            continue
        d = w["configs"]["module"]
        same = d.get("stored") == d.get("served")
        rows.append([title, "%s (CPU/req %s), stored %s of %s" % (
                         common.fmt_ci(d["ratio"]), common.fmt_ci(d.get("cpu_ratio", [])),
                         common.fmt_num(d.get("stored")), common.fmt_num(d.get("served"))),
                     _noisy_verdict([d["ratio"]], goal) if same
                     else "**missed** (stored != served)"])
    me = res.get("memory")
    if me:
        import memory
        for layout in [x for x in memory.LAYOUTS if x in me["layouts"]]:
            lay = me["layouts"][layout]
            added, goal = lay["added_private_dirty_kb"], memory.TARGET_KB[layout]
            rows.append(["private memory added per %s child (%d children x %d threads, "
                         "%s requests) <= %s KB, at defaults%s"
                         % (layout, lay["children"], lay["threads"],
                            common.fmt_num(lay["requests"]), common.fmt_num(goal),
                            memory.TARGET_NOTE.get(layout, "")),
                         "%s KB (Pss %s KB)" % (common.fmt_num(added),
                                                common.fmt_num(lay["added_pss_kb"])),
                         _verdict(added is not None and added <= goal)
                         + ("" if added is None or added <= goal
                            else " by %s KB" % common.fmt_num(added - goal))])
    om = res.get("outage-memory")
    if om:
        bound_kb = om["bound_bytes"] // 1024
        growth = om["peak_Rss"] - om["baseline_kb"]["Rss"]
        rows.append(["prefork, %d children, %d s outage under load: total RSS <= baseline + "
                     "InfluxMetricsRetryBuffer (%s)" % (om["children"], om["outage_s"],
                                                        om["retry_buffer"]),
                     "grew %s KB (Private_Dirty %s KB); retry buffers together at most %s "
                     "bytes of %s" % (common.fmt_num(growth), common.fmt_num(
                         om["peak_Private_Dirty"] - om["baseline_kb"]["Private_Dirty"]),
                         common.fmt_num(om["peak_retry_bytes"]), common.fmt_num(om["bound_bytes"])),
                     _verdict(growth <= bound_kb) + ("" if growth <= bound_kb else
                                                     " by %s KB" % common.fmt_num(growth - bound_kb))
                     + "; Pss %s" % _verdict(om["peak_Pss"] - om["baseline_kb"]["Pss"]
                                             <= bound_kb)])
    sc = res.get("scaling")
    if sc:
        top = max((r for r in sc["scale"] if r["rate"] > 0), key=lambda r: r["rate"])
        rows.append(["(reported) one flusher, null backend: share of one core at 100k "
                     "points/s; points/s on one core",
                     "%.1f%%; %s points/s (%s ns/point)" % (
                         100 * top["core_share"], common.fmt_num(1e9 / top["ns_per_point"]),
                         common.fmt_num(top["ns_per_point"])), "-"])
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
              "shared buffer on the machine measured." % (mi["capacity"], mi["batch"], mi["timer_ns"]),
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
    import php
    import scaling
    import memory
    import outage_memory
    info = common.machine_info()
    lines = ["# Benchmark results", "",
             "Measured %s on %s (%d cores), Apache %s, commit %s%s; whole run %.0f s; "
             "load average %.1f at the start, %.1f at the end. "
             "Every figure is a ratio or count measured side by side in this one run "
             "(interleaved rounds; medians with a 95%% confidence interval, bootstrap over "
             "rounds, fixed seed); absolute req/s depend on the machine and what else it "
             "did. A target is met only when the interval's lower bound clears it, missed "
             "when its upper bound is below it, and otherwise not distinguishable from it. "
             "Instruction counts (callgrind) do not depend on other load but for the "
             "flusher's POSTs (one a second, so their share per request follows the request "
             "rate under callgrind); throughput ratios do, by as much as their intervals "
             "show." % (
                 meta["when"], info["cpu"], info["cpus"], info["apache"], meta["commit"],
                 " (quick mode)" if meta["quick"] else "", meta["elapsed_s"],
                 meta["load_start"], meta["load_end"]), "",
             "Reproduce: `make bench` (see bench/README.md).", "",
             "![throughput ratios](ratios.png)", "",
             "## Targets", "",
             common.md_table(["target", "measured", ""], targets(res)), ""]
    for name in ("overhead", "callgrind", "callgrind-fields", "listings", "wsgi", "php",
                 "scaling", "memory", "micro", "outage-memory"):
        if name in failures:
            lines += ["### %s: FAILED" % name, "", "```", failures[name][-2000:], "```", ""]
            continue
        if name == "listings":
            if "callgrind" in res:
                lines.append(callgrind.listings(res["callgrind"], res.get("callgrind-fields")))
            continue
        if name not in res:
            continue
        lines.append({"overhead": overhead.report, "callgrind": callgrind.report,
                      "callgrind-fields": callgrind.report_fields,
                      "wsgi": wsgi.report, "php": php.report, "scaling": scaling.report,
                      "memory": memory.report, "outage-memory": outage_memory.report,
                      "micro": micro_md}[name](res[name]))
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
                  "ratios (median, 95%% CI over interleaved rounds)'" % nplots)
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
                    m, lo, hi = common.median_ci(rs)
                    ylo, yhi = min(ylo, lo), max(yhi, hi)
                    row += ["%.4f" % m, "%.4f" % lo, "%.4f" % hi]
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
                m, lo, hi = common.median_ci(ws["configs"][n]["ratio"])
                fh.write('"%s" %.4f %.4f %.4f\n' % (labels[n], m, lo, hi))
        script += ["unset arrow",
                   "set title 'mod_wsgi hello world (wrk -c %d)'" % ws["conns"],
                   "set yrange [0:%.2f]" % max(1.15, max(common.median_ci(ws["configs"][n]["ratio"])[2]
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
    ap.add_argument("--only", default="", help="comma-separated: " + ",".join(STEPS + EXTRA_STEPS))
    ap.add_argument("--rounds", type=int, default=None,
                    help="rounds of overhead, wsgi and php (default 10; time grows with it)")
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
        if s not in STEPS + EXTRA_STEPS:
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
