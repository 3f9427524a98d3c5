#!/usr/bin/python3
# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""Memory per child with and without the module, at the module's defaults.

Apache serves the 11-byte file to `ab -k` until every child has served more
requests than its ring holds (so the ring is touched in full), then the
children's /proc/PID/smaps_rollup is read: Private_Dirty (pages only this
child has written: its heap, its stacks, and the pages of its ring in the
shared segment, which no other process touches) and Pss. Two layouts:

  prefork  8 children (StartServers = MaxRequestWorkers = 8), ab -c 8,
           600,000 requests: with MaxKeepAliveRequests 0 each keep-alive
           connection stays on one child, so each child serves about 75,000
           requests (its ring of 2,048 cells many times over)
  event    2 children x 25 threads, ab -c 16, twice the rings' cells

"added" is the median child with the module minus the median child without.
The module runs with its defaults and a null backend (bench/nullsink.py).

    /usr/bin/python3 bench/memory.py [--quick] [--only prefork,event]
"""

import argparse
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import BenchHttpd, Stack, harness, log  # noqa: E402
from nullsink import NullSink  # noqa: E402

PATH = "/small.txt"
# Targets (KB of Private_Dirty added per child at defaults). Prefork's was
# 512 KB until December 2026; event's 2 MB is the earlier target, kept.
TARGET_KB = {"prefork": 450, "event": 2048}
TARGET_NOTE = {"prefork": "", "event": " (an earlier target)"}

LAYOUTS = {
    "prefork": {"mpm": "prefork", "children": 8, "threads": 1, "conns": 8,
                "mpm_conf": harness.fixed_prefork(8), "requests": 600000},
    "event": {"mpm": "event", "children": 2, "threads": 25, "conns": 16,
              "mpm_conf": harness.fixed_threaded(2, 25)},
}


def default_ring(threads):
    """The module's default ring (mod_influx_metrics.c, sizes()): 512 cells
    per thread, 2048 to 65536, rounded up to a power of two."""
    want = min(65536, max(2048, 512 * threads))
    cap = 2
    while cap < want:
        cap <<= 1
    return cap


def smaps(pid):
    """{field: kB} from /proc/PID/smaps_rollup, {} if the process is gone."""
    out = {}
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3 and parts[2] == "kB":
                    out[parts[0].rstrip(":")] = int(parts[1])
    except OSError:
        pass
    return out


def mappings(pid):
    """The mappings of a process with private dirty pages, from
    /proc/PID/smaps: [{"what", "size_kb", "private_dirty_kb"}], "what" being
    [heap], [stack], a shared segment, an anonymous mapping or a file's
    base name (no paths)."""
    out, cur = [], None
    try:
        with open("/proc/%d/smaps" % pid) as f:
            for line in f:
                m = re.match(r"([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$", line)
                if m:
                    size = (int(m.group(2), 16) - int(m.group(1), 16)) // 1024
                    name, perm = m.group(4).strip(), m.group(3)
                    if name in ("[heap]", "[stack]"):
                        what = name
                    elif perm.endswith("s"):
                        what = "shared segment"
                    elif not name or name.startswith("[anon"):
                        what = "anonymous"
                    else:
                        what = os.path.basename(name.replace(" (deleted)", ""))
                    cur = {"what": what, "size_kb": size, "private_dirty_kb": 0}
                    out.append(cur)
                    continue
                parts = line.split()
                if cur is not None and parts and parts[0] == "Private_Dirty:":
                    cur["private_dirty_kb"] = int(parts[1])
    except OSError:
        return []
    return [x for x in out if x["private_dirty_kb"]]


def children_memory(h):
    return [dict(smaps(pid), pid=pid) for pid in h.child_pids()]


def serve(h, n, conns):
    r = harness.ab(h.url.rstrip("/") + PATH, n, conns, keepalive=True, timeout=600)
    if r.complete != n or r.failed:
        raise RuntimeError("ab: %d of %d complete, %d failed" % (r.complete, n, r.failed))
    return r


def measure(layout, null, factor, quick=False):
    lay = LAYOUTS[layout]
    ring = default_ring(lay["threads"])
    # Enough for every child to pass its ring, with room for an uneven split
    # (and the layout's own count, but in a quick run).
    n = int(lay["children"] * ring * factor)
    if not quick:
        n = max(n, lay.get("requests", 0))
    res = {"children": lay["children"], "threads": lay["threads"], "ring": ring,
           "requests": n, "configs": {}}
    for cfg in ("none", "module"):
        with Stack() as st:
            kw = {}
            if cfg == "module":
                kw = {"load_module": True,
                      "extra": str(harness.Imx(url=null.write_url(), flush_interval=None))}
            h = st.add(BenchHttpd(name="mem-%s-%s" % (layout, cfg), mpm=lay["mpm"],
                                  mpm_conf=lay["mpm_conf"], **kw))
            h.start()
            t0 = time.monotonic()
            serve(h, n, lay["conns"])
            time.sleep(2.5)         # the flushers' last batches go out
            kids = children_memory(h)
            ranked = sorted((k for k in kids if k.get("Private_Dirty") is not None),
                            key=lambda k: k["Private_Dirty"])
            median_child = ranked[len(ranked) // 2]["pid"] if ranked else None
            res["configs"][cfg] = {
                "median_child_mappings": mappings(median_child) if median_child else [],
                "children": kids, "secs": time.monotonic() - t0,
                "private_dirty_kb": [k.get("Private_Dirty") for k in kids],
                "pss_kb": [k.get("Pss") for k in kids],
                "rss_kb": [k.get("Rss") for k in kids]}
            log("memory %s %s: %d requests, Private_Dirty per child %s KB"
                % (layout, cfg, n, res["configs"][cfg]["private_dirty_kb"]))
    for key in ("private_dirty_kb", "pss_kb"):
        a = common.median(res["configs"]["module"][key])
        b = common.median(res["configs"]["none"][key])
        res["added_" + key] = None if a is None or b is None else a - b
    return res


def run(only=None, factor=2.0, quick=False):
    want = only or list(LAYOUTS)
    res = {"machine": common.machine_info(), "layouts": {}}
    t0 = time.monotonic()
    with Stack() as st:
        null = st.add(NullSink()).start()
        for layout in want:
            res["layouts"][layout] = measure(layout, null, factor, quick)
    res["elapsed_s"] = time.monotonic() - t0
    return res


def report(res):
    lines = ["### Memory per child (defaults, null backend, smaps_rollup after every child "
             "served more requests than its ring holds)", ""]
    hdr = ["layout", "ring (cells, KB)", "requests", "Private_Dirty KB, no module (median, "
           "min-max)", "with module", "added", "Pss added", "target", ""]
    rows = []
    for layout in [x for x in LAYOUTS if x in res["layouts"]]:
        r = res["layouts"][layout]

        def cell(cfg):
            xs = r["configs"][cfg]["private_dirty_kb"]
            lo, hi = common.spread(xs)
            return "%s (%s-%s)" % (common.fmt_num(common.median(xs)), common.fmt_num(lo),
                                   common.fmt_num(hi))
        added = r["added_private_dirty_kb"]
        target = TARGET_KB[layout]
        verdict = "n/a" if added is None else ("**met**" if added <= target else
                                               "**missed** by %s KB" % common.fmt_num(added - target))
        rows.append(["%s (%d children x %d threads)" % (layout, r["children"], r["threads"]),
                     "%s, %s" % (common.fmt_num(r["ring"]), common.fmt_num(r["ring"] * 64 / 1024)),
                     common.fmt_num(r["requests"]), cell("none"), cell("module"),
                     common.fmt_num(added), common.fmt_num(r["added_pss_kb"]),
                     "<= %s KB%s" % (common.fmt_num(target), TARGET_NOTE[layout]), verdict])
    lines += [common.md_table(hdr, rows), ""]
    for layout in [x for x in LAYOUTS if x in res["layouts"]]:
        r = res["layouts"][layout]
        added = r["added_private_dirty_kb"]
        if (not r["configs"]["module"].get("median_child_mappings") or added is None
                or added <= TARGET_KB[layout]):
            continue
        lines += ["Target missed: where the %s children's private pages are (a median child "
                  "of each server, /proc/PID/smaps, mappings with private dirty pages; "
                  "anonymous mappings told apart by their size only):" % layout, "",
                  mappings_table(r), ""]
    lines.append("Private_Dirty: pages only that child has written (heap, stacks, its ring's "
                 "pages in the shared segment: the parent maps the segment but never touches a "
                 "child's ring). Pss also shares out the pages children have in common. "
                 "\"added\" is the median child with the module minus the median child without; "
                 "one run each, so a few pages (4 KB each) either way are noise.")
    return "\n".join(lines) + "\n"


def _group(m):
    if m["what"] in ("anonymous", "shared segment"):
        return "%s (%s KB mapped)" % (m["what"], common.fmt_num(m["size_kb"]))
    return m["what"]


def mappings_table(r):
    """Markdown: Private_Dirty by mapping, the module's median child against
    the median child without it (libraries' pages summed per library)."""
    by = {}
    for cfg in ("none", "module"):
        for m in r["configs"][cfg].get("median_child_mappings", []):
            d = by.setdefault(_group(m), {"none": 0, "module": 0})
            d[cfg] += m["private_dirty_kb"]
    rows = sorted(by.items(), key=lambda kv: (-(kv[1]["module"] - kv[1]["none"]), kv[0]))
    md = [[k, common.fmt_num(v["none"]), common.fmt_num(v["module"]),
           common.fmt_num(v["module"] - v["none"])] for k, v in rows]
    md.append(["**total**", "**%s**" % common.fmt_num(sum(v["none"] for v in by.values())),
               "**%s**" % common.fmt_num(sum(v["module"] for v in by.values())),
               "**%s**" % common.fmt_num(sum(v["module"] - v["none"] for v in by.values()))])
    return common.md_table(["mapping", "Private_Dirty KB, no module", "with module",
                            "difference"], md)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="each child serves 1.2 rings (prefork: not 600,000 requests in all)")
    ap.add_argument("--only", default="", help="prefork,event")
    a = ap.parse_args()
    res = run([x for x in a.only.split(",") if x] or None, 1.2 if a.quick else 2.0, a.quick)
    common.save_json("memory", res)
    print(report(res))


if __name__ == "__main__":
    main()
