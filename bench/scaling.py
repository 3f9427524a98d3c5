#!/usr/bin/python3
# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""How many requests per second one child's flusher can record.

Runs `bench/micro --flusher URL` against bench/nullsink.py: one engine with
the module's defaults (ring 65536, batch 5000, 1 s interval) and the real
libcurl sender, fed by one producer thread at 10k, 50k and 100k points/s,
then without pause. The flusher's CPU time is the process's minus the
producer thread's own. Reported per rate: the share of one core the flusher
used (measured), its CPU per point (encode + POST through libcurl + the
kernel's loopback send), and the points/s one whole core would sustain at
that cost; the saturated row shows what the pair flusher + null backend
reached on the 2-core machine the benchmark runs on, where the producer, the flusher and the
(Python) null backend share the cores.

    /usr/bin/python3 bench/scaling.py [--quick]
"""

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import BENCH_DIR, OUT_DIR, REPO_ROOT, Stack, log  # noqa: E402
from nullsink import NullSink  # noqa: E402

MICRO = os.path.join(BENCH_DIR, "micro")


def run(quick=False):
    if not os.path.exists(MICRO):
        subprocess.run(["make", "-C", REPO_ROOT, "bench/micro"], check=True, timeout=120)
    os.makedirs(OUT_DIR, exist_ok=True)
    out = os.path.join(OUT_DIR, "scaling-micro.json")
    t0 = time.monotonic()
    with Stack() as st:
        null = st.add(NullSink()).start()
        cmd = [MICRO, "--flusher", null.write_url(), "--json", out] + (["--quick"] if quick else [])
        log("scaling: %s" % " ".join(os.path.relpath(c, REPO_ROOT) if c.startswith(REPO_ROOT)
                                     else c for c in cmd))
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, timeout=120)
        if p.returncode != 0:
            raise RuntimeError("micro --flusher exited with %d" % p.returncode)
        null_stats = null.stats()
    res = common.load_json("scaling-micro")
    res["null_stats"] = null_stats
    res["machine"] = common.machine_info()
    res["elapsed_s"] = time.monotonic() - t0
    return res


def report(res):
    rows = []
    paced = [r for r in res["scale"] if r["rate"] > 0]
    for r in res["scale"]:
        rows.append(["%s/s" % common.fmt_num(r["rate"]) if r["rate"] else "saturated",
                     common.fmt_num(r["sent"]), common.fmt_num(r["dropped"]),
                     common.fmt_num(r["posts"]),
                     common.fmt_num(r["sent_per_s"]),
                     "%.1f%%" % (100 * r["core_share"]),
                     common.fmt_num(r["ns_per_point"]),
                     common.fmt_num(1e9 / r["ns_per_point"]) if r["ns_per_point"] else "n/a"])
    lines = ["### One flusher to a null backend (bench/micro --flusher, real libcurl sender, "
             "ring %s, batch %s, 1 s interval)" % (common.fmt_num(res["capacity"]),
                                                   common.fmt_num(res["batch"])), "",
             common.md_table(["points/s pushed", "sent", "dropped (ring full)", "POSTs",
                              "sent/s", "flusher's share of one core (measured)",
                              "flusher CPU ns/point", "points/s on one core at that cost"],
                             rows), ""]
    # Measured at each rate: the cost per point falls as the rate rises,
    # because what a POST and a wake-up cost is spread over more points, so
    # the highest rate's cost gives what one core could sustain.
    top = max(paced, key=lambda r: r["rate"]) if paced else None
    if top and top["ns_per_point"]:
        ns = top["ns_per_point"]
        lines.append("Measured, one child's flusher needs, of one core: %s. The cost per point "
                     "falls as the rate rises (what each POST and each wake-up costs is "
                     "spread over more points); at %s/s it is %s ns of flusher CPU per point, "
                     "POSTs included, so one whole core would record about %s requests/s. "
                     "The hook's own cost is not in these figures: it runs in the request's "
                     "thread (see the callgrind table)."
                     % (", ".join("%.1f%% at %s requests/s" % (100 * r["core_share"],
                                                               common.fmt_num(r["rate"]))
                                  for r in paced),
                        common.fmt_num(top["rate"]), common.fmt_num(ns),
                        common.fmt_num(1e9 / ns, 0)))
    sat = [r for r in res["scale"] if r["rate"] == 0]
    if sat:
        lines.append("")
        lines.append("Saturated: the producer pushes without pause; the flusher sent %s "
                     "points/s using %.0f%% of a core, waiting for the null backend (Python, "
                     "on the same 2 cores) to read each %s-point POST: that row measures the "
                     "backend, not the flusher." % (common.fmt_num(sat[0]["sent_per_s"]),
                                                   100 * sat[0]["core_share"],
                                                   common.fmt_num(res["batch"])))
    ns = res.get("null_stats") or {}
    if ns:
        lines.append("")
        lines.append("- null backend: %s request points in %s POSTs"
                     % (common.fmt_num(ns.get("request_points")), common.fmt_num(ns.get("requests"))))
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    res = run(a.quick)
    common.save_json("scaling", res)
    print(report(res))


if __name__ == "__main__":
    main()
