#!/usr/bin/python3
# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""A server's memory through a backend outage: InfluxMetricsRetryBuffer
bounds all children together.

Prefork with 64 children, fixed, loaded by `ab -k -c 32` in a loop. The
backend (tests/faultserver.py) first answers 204; once every child has
served more requests than its ring holds, the children's memory is read
(the baseline); then the backend answers 503 for 60 s while the load goes
on (every batch then waits in a retry buffer), and the memory of all
children is sampled every second; then the backend answers 204 again and
the accounting is read once nothing is held any more.

Memory is summed over the children from /proc/PID/smaps_rollup: Rss (what
the bound was first stated in; it counts shared pages once per child), Pss and
Private_Dirty. The check: the peak of the sum during the outage stays under
the baseline sum plus the configured bound.

Not part of the default `make bench` (about 2.5 minutes on its own):

    /usr/bin/python3 bench/outage_memory.py [--quick] [--retry-buffer 32M]
    make bench BENCH_ARGS=--only=outage-memory
"""

import argparse
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import BenchHttpd, Stack, harness, log  # noqa: E402
from memory import default_ring, smaps  # noqa: E402
from faultserver import FaultServer  # noqa: E402  (tests/, on the path via common)

CHILDREN = 64
CONNS = 32
PREFORK = harness.fixed_prefork(CHILDREN)
STATUS_CONF = """
<Location /imx-status>
    SetHandler influx-metrics-status
    InfluxMetrics Off
</Location>
"""


def parse_size(text):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
    return int(text[:-1] if mult > 1 else text) * mult


def totals(h):
    kids = [smaps(p) for p in h.child_pids()]
    return {k: sum(x.get(k, 0) for x in kids) for k in ("Rss", "Pss", "Private_Dirty")}, len(kids)


def status(h):
    return json.loads(harness.http_request(h.url + "imx-status?json")[1])


class Load:
    def __init__(self, url):
        self.url, self.stop_flag, self.served = url, threading.Event(), 0
        self.t = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop_flag.is_set():
            r = harness.ab(self.url, 20000, CONNS, keepalive=True, timeout=300)
            self.served += r.complete

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        self.t.join(timeout=300)


def run(outage_s=60, retry_buffer="32M"):
    bound = parse_size(retry_buffer)
    res = {"children": CHILDREN, "conns": CONNS, "outage_s": outage_s,
           "retry_buffer": retry_buffer, "bound_bytes": bound, "samples": [],
           "machine": common.machine_info()}
    t0 = time.monotonic()
    with Stack() as st:
        fs = st.add(FaultServer())
        fs.start()
        h = st.add(BenchHttpd(name="outage-mem", mpm="prefork", mpm_conf=PREFORK,
                              load_module=True, access_log="%D",
                              extra=str(harness.Imx(
                                  url=fs.write_url(), flush_interval=None,
                                  extra="InfluxMetricsRetryBuffer %s\n"
                                        "InfluxMetricsRetryMaxTime 0\n" % retry_buffer))
                              + STATUS_CONF))
        h.start()
        url = h.url + "small.txt"
        # Every child past its ring: the baseline.
        n = int(CHILDREN * default_ring(1) * 1.5)
        harness.ab(url, n, CHILDREN, keepalive=True, timeout=300)
        time.sleep(2)
        res["baseline_kb"], res["baseline_children"] = totals(h)
        log("outage-memory: baseline %s KB over %d children" % (res["baseline_kb"],
                                                                res["baseline_children"]))
        with Load(url):
            time.sleep(2)
            fs.set_mode(503)
            start = time.monotonic()
            while time.monotonic() - start < outage_s:
                kb, nkids = totals(h)
                st_ = status(h)
                res["samples"].append({"t": round(time.monotonic() - start, 1), "kb": kb,
                                       "children": nkids, "retry_bytes": st_["retry_bytes"],
                                       "dropped_retry": st_["dropped_retry"]})
                time.sleep(1)
            res["during"] = status(h)
            fs.set_mode("ok")
        harness.wait_until(lambda: status(h)["buffered"] == 0, 120)
        res["final"] = status(h)
        res["after_kb"], _ = totals(h)
        h.graceful_stop(timeout=60)
        # The status page's own requests are logged but not recorded.
        with open(h.bench_log_path, "rb") as f:
            served = sum(1 for line in f if b"GET /small.txt " in line)
        res["served"] = served
        res["stored"] = sum(1 for line in fs.lines if line.startswith("apache_request"))
    for key in ("Rss", "Pss", "Private_Dirty"):
        res["peak_" + key] = max(s["kb"][key] for s in res["samples"])
    res["peak_retry_bytes"] = max(s["retry_bytes"] for s in res["samples"])
    res["elapsed_s"] = time.monotonic() - t0
    return res


def report(res):
    bound_kb = res["bound_bytes"] // 1024
    rows = []
    for key in ("Rss", "Pss", "Private_Dirty"):
        base, peak = res["baseline_kb"][key], res["peak_" + key]
        ok = peak <= base + bound_kb
        rows.append([key, common.fmt_num(base), common.fmt_num(peak),
                     common.fmt_num(peak - base), common.fmt_num(bound_kb),
                     "**met**" if ok else "**missed** by %s KB" % common.fmt_num(peak - base
                                                                               - bound_kb)])
    f = res["final"]
    lines = ["### Server memory through a %d s outage (prefork, %d children, ab -k -c %d, "
             "InfluxMetricsRetryBuffer %s)" % (res["outage_s"], res["children"], res["conns"],
                                              res["retry_buffer"]), "",
             common.md_table(["sum over children (KB)", "baseline", "peak in the outage",
                              "growth", "bound", "growth <= bound"], rows), "",
             "Baseline: after every child served more requests than its ring holds, backend "
             "healthy. Peak: the largest of the per-second sums while the backend answered "
             "503 under load. Rss counts the pages children share once per child; "
             "Private_Dirty only each child's own: library and module code first run "
             "during the outage (error paths, retries) shows in Rss once per child, %s KB "
             "per child here, although the children share those pages." % common.fmt_num(
                 max(0, (res["peak_Rss"] - res["baseline_kb"]["Rss"])
                     - (res["peak_Pss"] - res["baseline_kb"]["Pss"])) / max(1, res["children"]),
                 1),
             "",
             "- retry buffers of all children together: at most %s bytes seen (the bound: %s)"
             % (common.fmt_num(res["peak_retry_bytes"]), common.fmt_num(res["bound_bytes"])),
             "- accounting: served %s (access log), recorded %s, stored %s, dropped_retry %s, "
             "dropped_full %s, maybe_stored %s; stored + dropped = %s"
             % (common.fmt_num(res["served"]), common.fmt_num(f["recorded"]),
                common.fmt_num(res["stored"]), common.fmt_num(f["dropped_retry"]),
                common.fmt_num(f["dropped_full"]), common.fmt_num(f["maybe_stored"]),
                common.fmt_num(res["stored"] + f["dropped"]))]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a 15 s outage")
    ap.add_argument("--retry-buffer", default="32M")
    a = ap.parse_args()
    res = run(15 if a.quick else 60, a.retry_buffer)
    common.save_json("outage-memory", res)
    print(report(res))


if __name__ == "__main__":
    main()
