#!/usr/bin/python3
# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""Instructions per request, counted by valgrind --tool=callgrind.

Instruction counts do not depend on how busy the machine is, so this is the
stable measure of what the module costs (one exception, below). A
single-process httpd (prefork, -X: one process, one worker; the module's
flusher thread runs in the same process, so its work and libcurl's are
counted too) serves static-file keep-alive requests from `ab -k -c 1` in
these configurations:

  none       no module, no access log
  module     the module at its defaults, raw points, posting to bench/nullsink.py
  summary    the same in InfluxMetricsMode summary
  prom       module, plus the Prometheus endpoint
             (<Location /metrics> SetHandler influx-metrics-prometheus):
             every request is also counted into the shared histogram table
  prom-only  the endpoint alone: module loaded, no InfluxMetricsURL
  location   no module, the same <Location /metrics> block: what httpd itself
             spends on a request for having one more <Location> section (the
             requests never ask for /metrics)
  accesslog  no module, mod_log_config writing the combined format to a file

Each configuration runs twice, with W warm-up requests and then N1 or N2
measured requests; the cost per request is the slope
    (Ir(run with N2) - Ir(run with N1)) / (N2 - N1)
so start-up and shutdown (config parsing, curl_global_init, TLS library
set-up, the exit flush) cancel out. Callgrind counts each thread apart
(--separate-threads): thread 1 is httpd's, the request path; the others are
the flusher's (and any libcurl starts). httpd's thread is counted up to
where its exit reaches the engine's stop (--dump-before), since how long it
then waits for the flusher depends on timing. "Added per request" is a
configuration's slope minus the slope of the one it is compared with (no
module; for prom, also the module without the endpoint). The output files
are read whole (not through callgrind_annotate): every function's exclusive
and inclusive count and what it spends in each function it calls, all as
slopes the same way, so the report can list by function where the added
instructions go. The hooks are the inclusive counts of imx_request_log and
imx_prefork_log_done, the flusher the inclusive count of its thread
function, a point's encoding the inclusive count of imx_body_fill.

What in these counts depends on timing: the flusher posts once a second
(the default interval) and does its per-interval work, so the share of the
POSTs and wake-ups per request follows how many requests httpd served per
second under callgrind, which other load on the machine changes. The
request thread's counts and the encoding per point do not; the report gives
the POSTs and the rate of each run.

    /usr/bin/python3 bench/callgrind.py [--n 10000] [--quick]

With --fields, instead: the module alone, then with each InfluxMetricsFields
name on its own, then all of them, each as a slope the same way; every run
sends the same traceparent header, so the request_id run reads a real id.
The table gives what each field adds per request to the module's cost
(static files: nothing is proxied, so `upstream` is the lookup of a request
mod_proxy did not handle).

    /usr/bin/python3 bench/callgrind.py --fields [--n 6000]
"""

import argparse
import collections
import os
import pwd
import re
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import BenchHttpd, harness, log  # noqa: E402
from nullsink import NullSink  # noqa: E402

VALGRIND = "/usr/bin/valgrind"

PATH = "/small.txt"
MODULE_OBJ = "mod_influx_metrics.so"
# Functions whose inclusive cost is reported (by symbol name).
HOOK = "imx_request_log"
HOOK_DONE = "imx_prefork_log_done"  # the last log hook (prefork: a deferred stop)
FLUSHER = "flusher_main"
SEND = "imx_http_send"          # one POST (libcurl included)
FILL = "imx_body_fill"          # ring -> line protocol, per batch
PROM_RECORD = "imx_prom_record"  # one request into the Prometheus table
STOP = "imx_engine_stop"        # httpd's exit reaching the engine (see one_run)
FUNCS = [HOOK, HOOK_DONE, FLUSHER, SEND, FILL, PROM_RECORD]
# The Prometheus endpoint, as the documentation configures it.
PROM_PAGE = "/metrics"
PROM_CONF = ('<Location "%s">\n    SetHandler influx-metrics-prometheus\n</Location>\n'
             % PROM_PAGE)
# The same section with the module's status page instead: what the endpoint
# is measured against, so that httpd's own work for one more <Location>
# (about as much as the module's whole request path) is on both sides.
STATUS_CONF = PROM_CONF.replace("influx-metrics-prometheus", "influx-metrics-status")
CONFIGS = ["none", "module", "module-location", "summary", "prom", "prom-only", "location",
           "accesslog"]
LABELS = {"none": "no module",
          "module": "module (raw, null backend)",
          "summary": "module (InfluxMetricsMode summary)",
          "module-location": "module (raw) + the same <Location /metrics> block, status page",
          "prom": "module (raw) + Prometheus endpoint",
          "prom-only": "Prometheus endpoint only (no InfluxMetricsURL)",
          "location": "no module, the same <Location /metrics> block",
          "accesslog": "access log (combined format)"}
# Kinds with a backend (a flusher that posts).
FLUSHING = ("module", "module-location", "summary", "prom")
# --fields: each InfluxMetricsFields name, then all of them.
FIELDS = ["ttfb", "bytes_received", "request_id", "protocol", "tls", "upstream"]
TRACEPARENT = "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

# The request path's targets (instructions per request; the module's
# defaults, static keep-alive requests, httpd -X): name -> (goal, title).
TARGETS = {
    "raw": (400, "raw mode at defaults: instructions added per request, all included "
                 "(module minus no module; flusher and libcurl included)"),
    "hooks": (120, "the log hooks alone (%s + %s, inclusive)" % (HOOK, HOOK_DONE)),
    "encode": (150, "each point taken from the ring and encoded (%s, inclusive, per point)"
               % FILL),
    "summary": (300, "summary mode: instructions added per request"),
    "prom": (120, "Prometheus endpoint on: raw mode + endpoint minus raw mode with the same "
                  "<Location> section serving the status page"),
    "prom-only": (120, "Prometheus endpoint only (no InfluxMetricsURL) minus no module with "
                       "the same <Location> section"),
    "field": (60, "each optional field (InfluxMetricsFields NAME) over the module alone"),
    "request_id": (150, "InfluxMetricsFields request_id, from a traceparent header"),
}
# Rows in a listing by function.
TOP = 15


# --------------------------------------------------------------------------
# Reading a callgrind output file

_KIND = {"ob": "ob", "cob": "ob", "fl": "fl", "fi": "fl", "fe": "fl", "cfi": "fl",
         "cfl": "fl", "fn": "fn", "cfn": "fn"}


def parse_out(outfile):
    """Reads a callgrind output file (positions: line, events: Ir).

    Returns {"total": Ir, "funcs": {key: {"excl": Ir, "incl": Ir,
    "file": source file, "calls": {callee key: inclusive Ir of the calls}}}}
    where key is "function [object]" (base names only: no machine paths).
    Inclusive = exclusive + the calls to other functions (a function's calls
    to itself are not counted twice)."""
    names = {"ob": {}, "fl": {}, "fn": {}}
    excl = collections.Counter()
    calls = collections.defaultdict(collections.Counter)
    files = {}
    total = None
    ob = fl = cur = cob = cfn = callee = None
    pending = False

    def resolve(kind, val):
        m = re.match(r"\((\d+)\)(?:\s+(.*))?$", val)
        if not m:
            return val
        if m.group(2) is not None:
            names[kind][m.group(1)] = m.group(2)
            return m.group(2)
        return names[kind][m.group(1)]

    with open(outfile, errors="replace") as f:
        for line in f:
            c = line[:1]
            if c.isdigit() or (c and c in "+-*"):
                if cur is None:
                    continue
                parts = line.split()
                cost = int(parts[1]) if len(parts) > 1 else 0
                if pending:
                    calls[cur][callee] += cost
                    pending = False
                else:
                    excl[cur] += cost
                continue
            m = re.match(r"(totals|summary):\s+(\d+)", line)
            if m:
                total = int(m.group(2))
                continue
            m = re.match(r"(\w+)=(.*)$", line.rstrip("\n"))
            if not m:
                continue
            k, v = m.groups()
            if k in _KIND:
                name = resolve(_KIND[k], v)
                if k == "ob":
                    ob = os.path.basename(name)
                elif k == "fl":
                    fl = os.path.basename(name)
                elif k == "fn":
                    cur = "%s [%s]" % (name, ob)
                    files.setdefault(cur, fl)
                    cob = None
                elif k == "cob":
                    cob = os.path.basename(name)
                elif k == "cfn":
                    cfn = name
            elif k == "calls":
                callee = "%s [%s]" % (cfn, cob or ob)
                cob = None
                pending = True
    if total is None:
        raise RuntimeError("no totals in %s" % outfile)
    funcs = {}
    for key in set(excl) | set(calls):
        out = {k: v for k, v in calls[key].items() if k != key}
        funcs[key] = {"excl": excl[key], "incl": excl[key] + sum(out.values()),
                      "file": files.get(key, "???"), "calls": out}
    return {"total": total, "funcs": funcs}


def merge(profs):
    """One profile of several (the threads' files of one run)."""
    out = {"total": 0, "funcs": {}}
    for p in profs:
        out["total"] += p["total"]
        for k, d in p["funcs"].items():
            o = out["funcs"].setdefault(k, {"excl": 0, "incl": 0, "file": d["file"],
                                            "calls": collections.Counter()})
            o["excl"] += d["excl"]
            o["incl"] += d["incl"]
            o["calls"].update(d["calls"])
    return out


def fname(key):
    """The function's name in a key "function [object]"."""
    return key.rsplit(" [", 1)[0]


def find(prof, name):
    """The key of the function called name in the module, or None."""
    k = "%s [%s]" % (name, MODULE_OBJ)
    return k if k in prof["funcs"] else None


def slopes(pa, pb, dn, keep=0.01):
    """Per-function slopes between two profiles (runs of N1 and N2 requests):
    {key: {"excl", "incl", "file", "calls" (module functions only)}}, the
    functions whose slope is at least `keep` either way."""
    out = {}
    empty = {"excl": 0, "incl": 0, "calls": {}}
    for key in set(pa["funcs"]) | set(pb["funcs"]):
        a, b = pa["funcs"].get(key, empty), pb["funcs"].get(key, empty)
        e = (b["excl"] - a["excl"]) / dn
        i = (b["incl"] - a["incl"]) / dn
        if abs(e) < keep and abs(i) < keep:
            continue
        d = {"excl": e, "incl": i, "file": (b.get("file") or a.get("file") or "???")}
        if key.endswith("[%s]" % MODULE_OBJ):
            cs = {}
            for ck in set(a["calls"]) | set(b["calls"]):
                v = (b["calls"].get(ck, 0) - a["calls"].get(ck, 0)) / dn
                if abs(v) >= keep:
                    cs[ck] = v
            d["calls"] = cs
        out[key] = d
    return out


# --------------------------------------------------------------------------
# One run of httpd -X under callgrind

def _chown_tree(path, uid, gid):
    for root, dirs, files in os.walk(path):
        os.chown(root, uid, gid)
        for f in files:
            os.chown(os.path.join(root, f), uid, gid)


def _wait_port(port, proc, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection((common.HOST, port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.2)
    return False


def make_httpd(kind, null_url, fields=None):
    if kind in FLUSHING:
        extra = "InfluxMetricsFields %s\n" % fields if fields else ""
        if kind == "summary":
            extra += "InfluxMetricsMode summary\n"
        if kind == "prom":
            extra += PROM_CONF
        if kind == "module-location":
            extra += STATUS_CONF
        return BenchHttpd(mpm="prefork", load_module=True, name="cg-" + kind,
                          extra=str(harness.Imx(url=null_url, flush_interval=None,
                                                extra=extra)))
    if kind == "prom-only":
        return BenchHttpd(mpm="prefork", load_module=True, name="cg-" + kind, extra=PROM_CONF)
    if kind == "location":
        return BenchHttpd(mpm="prefork", name="cg-" + kind, extra=PROM_CONF)
    if kind == "accesslog":
        return BenchHttpd(mpm="prefork", access_log="combined", name="cg-" + kind)
    return BenchHttpd(mpm="prefork", name="cg-" + kind)


def one_run(kind, warm, n, null_url, timeout=300, fields=None, ab_args=()):
    """httpd -X under callgrind serving warm + n requests; returns
    {"ir": total, "prof": parse_out(...), "served": ..., "secs": ...}.
    fields: the InfluxMetricsFields line's names (module only)."""
    h = make_httpd(kind, null_url, fields)
    outdir = os.path.join(h.dir, "callgrind")
    os.makedirs(outdir, mode=0o755)
    outfile = os.path.join(outdir, "callgrind.out")
    run_as = {}
    if harness.IS_ROOT:
        # httpd -X as root would switch to www-data before callgrind writes
        # its file; run the whole thing as www-data instead (httpd then
        # skips the switch).
        pw = pwd.getpwnam(harness.RUN_USER)
        _chown_tree(h.dir, pw.pw_uid, pw.pw_gid)
        run_as = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
    # One file per thread: the request path (httpd's one thread, callgrind's
    # thread 1) apart from the flusher's.
    # With the module, httpd's thread is counted up to where its exit
    # reaches the engine's stop (a dump, callgrind.out.1-01): after that it
    # waits for the flusher, and how long depends on where the flusher
    # happened to be. Without an engine, its counts at exit. The other
    # threads' (callgrind.out-02, ...) are those at exit.
    cmd = [VALGRIND, "--tool=callgrind", "--vgdb=no", "--separate-threads=yes",
           "--dump-before=" + STOP, "--callgrind-out-file=" + outfile] + h._cmd("-X")
    vglog = open(os.path.join(h.dir, "valgrind.log"), "wb")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=vglog,
                            stderr=subprocess.STDOUT, cwd=h.dir,
                            start_new_session=True, **run_as)
    try:
        if not _wait_port(h.port, proc, 120):
            raise RuntimeError("httpd -X under callgrind did not start:\n%s\n%s"
                               % (harness._tail(harness._read(vglog.name)),
                                  harness._tail(h.error_log_text())))
        url = h.url.rstrip("/") + PATH
        served = 0
        for count in (warm, n):
            t0 = time.monotonic()
            r = harness.ab(url, count, 1, keepalive=True, timeout=timeout,
                           extra_args=list(ab_args))
            secs = time.monotonic() - t0
            if r.complete != count or r.failed or r.non2xx:
                raise RuntimeError("ab: %d of %d complete, %d failed, %d non-2xx"
                                   % (r.complete, count, r.failed, r.non2xx))
            served += r.complete
        if kind in FLUSHING:
            time.sleep(1.5)         # one flush interval: the flusher posts
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        vglog.close()
    # The dump at the engine's stop holds the thread that reached it
    # (httpd's, thread 1) only; the other threads' counts are those at exit.
    names = os.listdir(outdir)
    final = sorted(f for f in names if re.match(r"callgrind\.out-\d+$", f))
    dumped = "callgrind.out.1-01" in names
    res = {"dumped": dumped}
    files = (["callgrind.out.1-01"] if dumped else final[:1]) + final[1:]
    if not final or not final[0].endswith("-01"):
        raise RuntimeError("callgrind wrote no output for thread 1:\n%s"
                           % harness._tail(harness._read(vglog.name)))
    profs = [parse_out(os.path.join(outdir, f)) for f in files]
    prof = merge(profs)
    res.update({"ir": prof["total"], "prof": prof, "main": profs[0], "threads": len(files),
                "served": served, "secs": secs})
    if kind in FLUSHING or kind == "prom-only":
        res["module"] = common.flusher_totals(h.error_log_text())
    h.cleanup()
    return res


def incl_of(prof, name):
    k = find(prof, name)
    return prof["funcs"][k]["incl"] if k else None


def pair(kind, warm, n_small, n, null, fields=None, ab_args=()):
    """The two runs of a configuration and what follows from them."""
    s0 = null.stats()
    a = one_run(kind, warm, n_small, null.write_url(), fields=fields, ab_args=ab_args)
    s1 = null.stats()
    b = one_run(kind, warm, n, null.write_url(), fields=fields, ab_args=ab_args)
    s2 = null.stats()
    dn = n - n_small
    c = {"ir_small": a["ir"], "ir_large": b["ir"],
         "per_request": (b["ir"] - a["ir"]) / dn,
         # The request path: httpd's thread alone (no flusher, no libcurl).
         "main_per_request": (b["main"]["total"] - a["main"]["total"]) / dn,
         "threads": [a["threads"], b["threads"]],
         "dumped": [a["dumped"], b["dumped"]],
         "posts_small": s1["requests"] - s0["requests"],
         "posts_large": s2["requests"] - s1["requests"],
         "secs_small": a["secs"], "secs_large": b["secs"],
         "funcs_small": {}, "funcs_large": {},
         "by_function": slopes(a["prof"], b["prof"], dn),
         "by_function_main": slopes(a["main"], b["main"], dn)}
    for f in FUNCS:
        ia, ib = incl_of(a["prof"], f), incl_of(b["prof"], f)
        if ia is not None:
            c["funcs_small"][f] = ia
        if ib is not None:
            c["funcs_large"][f] = ib
        if ib is not None:
            c[f] = (ib - (ia or 0)) / dn
    if HOOK in c:
        # Both log hooks are the module's work on the request path.
        c["hooks"] = c[HOOK] + c.get(HOOK_DONE, 0)
    if "module" in b:
        c["module"] = b["module"]
    if kind in FLUSHING and FILL in c:
        # Raw mode: one point per request, so the slope per request of
        # taking points from the ring and encoding them is per point.
        if kind != "summary":
            c["encode_per_point"] = c[FILL]
        if c["posts_large"] and b["prof"]:
            sb = incl_of(b["prof"], SEND)
            if sb:
                c["per_post"] = sb / c["posts_large"]
        pts = b.get("module", {}).get("recorded") or b["served"]
        c["points_per_post"] = pts / max(1, c["posts_large"])
        if SEND in c:
            c["send_share"] = c[SEND]
    # The threads other than httpd's: the flusher (and anything libcurl
    # starts). Of its work, taking points from the ring and encoding them
    # is per point; the rest (POSTs, wake-ups, the per-interval points) is
    # per second of the run, so its share per request follows the rate.
    c["flusher_thread"] = c["per_request"] - c["main_per_request"]
    c["per_second_share"] = c["flusher_thread"] - c.get(FILL, 0)
    c["rate"] = n / b["secs"] if b["secs"] else None
    # What does not depend on the rate: the request path and the encoding.
    c["rate_free"] = c["main_per_request"] + c.get(FILL, 0)
    return c


def run(n=10000, warm=500, n_small=2000, configs=None):
    t0 = time.monotonic()
    res = {"warm": warm, "n_small": n_small, "n": n, "path": PATH, "configs": {}}
    with NullSink() as null:
        for kind in configs or CONFIGS:
            c = pair(kind, warm, n_small, n, null)
            res["configs"][kind] = c
            log("callgrind: %s: %.0f instructions/request (%.0fs)"
                % (kind, c["per_request"], time.monotonic() - t0))
        res["null_stats"] = null.stats()
    none = res["configs"]["none"]
    for kind, c in res["configs"].items():
        c["added"] = c["per_request"] - none["per_request"]
        c["added_main"] = c["main_per_request"] - none["main_per_request"]
        c["added_rate_free"] = c["rate_free"] - none["rate_free"]
    if "prom" in res["configs"] and ("module-location" in res["configs"]
                                     or "module" in res["configs"]):
        p = res["configs"]["prom"]
        m = res["configs"].get("module-location") or res["configs"]["module"]
        p["over_module"] = p["per_request"] - m["per_request"]
        p["over_module_main"] = p["main_per_request"] - m["main_per_request"]
        p["baseline"] = "module-location" if "module-location" in res["configs"] else "module"
    if "prom-only" in res["configs"] and "location" in res["configs"]:
        p, loc = res["configs"]["prom-only"], res["configs"]["location"]
        p["over_location"] = p["per_request"] - loc["per_request"]
        p["over_location_main"] = p["main_per_request"] - loc["main_per_request"]
    res["elapsed_s"] = time.monotonic() - t0
    return res


def run_fields(n=6000, warm=300, n_small=1000):
    """The module's slope alone and with each field; see the docstring."""
    t0 = time.monotonic()
    res = {"warm": warm, "n_small": n_small, "n": n, "path": PATH, "configs": {}}
    ab_args = ["-H", TRACEPARENT]
    with NullSink() as null:
        for label, fields in [("module", None)] + [(f, f) for f in FIELDS] + \
                             [("all", " ".join(FIELDS))]:
            c = pair("module", warm, n_small, n, null, fields=fields, ab_args=ab_args)
            res["configs"][label] = c
            log("callgrind --fields: %s: %.0f instructions/request (%.0fs)"
                % (label, c["per_request"], time.monotonic() - t0))
    base = res["configs"]["module"]
    for c in res["configs"].values():
        c["added"] = c["per_request"] - base["per_request"]
        c["added_main"] = c["main_per_request"] - base["main_per_request"]
        c["added_encode"] = c.get(FILL, 0) - base.get(FILL, 0)
        c["added_rate_free"] = c["rate_free"] - base["rate_free"]
        if "hooks" in c and "hooks" in base:
            c["hook_added"] = c["hooks"] - base["hooks"]
    res["elapsed_s"] = time.monotonic() - t0
    return res


# --------------------------------------------------------------------------
# Targets and listings by function

def verdict(value, goal):
    if value is None:
        return "n/a"
    if value <= goal:
        return "**met**"
    return "**missed** by %s" % common.fmt_num(value - goal)


def _n(x):
    return common.fmt_num(x)


def target_values(cg, cgf=None):
    """[(target name, title, measured, goal, detail)] of the request path's
    targets from a run (and a --fields run). measured is what the verdict
    is on; detail says what else was measured beside it."""
    out = []
    cf = cg["configs"] if cg else {}

    def add(name, value, detail="", title=None):
        goal, t = TARGETS[name]
        out.append((name, title or t, value, goal, detail))
    if "module" in cf:
        m = cf["module"]
        add("raw", m.get("added"),
            "request thread %s, encoding %s, the flusher's POSTs and wake-ups %s: %d POSTs "
            "in %s requests at %s req/s under callgrind"
            % (_n(m["added_main"]), _n(m.get(FILL)), _n(m["per_second_share"]),
               m["posts_large"], _n(cg["n"]), _n(m["rate"])),
            TARGETS["raw"][1] + ", slope over %s requests" % _n(cg["n"] - cg["n_small"]))
        add("hooks", m.get("hooks"))
        add("encode", m.get("encode_per_point"))
    if "summary" in cf:
        s = cf["summary"]
        add("summary", s.get("added"), "request thread %s, the flusher %s: %d POSTs"
            % (_n(s["added_main"]), _n(s["flusher_thread"]), s["posts_large"]))
    if "prom" in cf and "over_module_main" in cf["prom"]:
        p = cf["prom"]
        base = cf.get(p.get("baseline", "module"), cf.get("module", {}))
        add("prom", p["over_module_main"],
            "the request thread, i.e. the request path, over %s; all threads %s; the hooks %s"
            % (LABELS.get(p.get("baseline", "module")), _n(p["over_module"]),
               _n(p["hooks"] - base.get("hooks", 0))))
    if "prom-only" in cf:
        p = cf["prom-only"]
        add("prom-only", p.get("over_location_main", p["added_main"]),
            "the request thread, over %s; all threads %s; the hooks %s; over no module "
            "without the section: %s"
            % (LABELS["location"] if "over_location_main" in p else LABELS["none"],
               _n(p.get("over_location", p["added"])), _n(p.get("hooks")),
               _n(p["added_main"])))
    if cgf:
        for f in FIELDS:
            c = cgf["configs"].get(f)
            if not c:
                continue
            name = "request_id" if f == "request_id" else "field"
            title = ("InfluxMetricsFields request_id (from a traceparent header) over the "
                     "module alone" if f == "request_id"
                     else "InfluxMetricsFields %s over the module alone" % f)
            add(name, c["added_rate_free"],
                "request thread %s + encoding %s; all threads %s, POSTs %d vs %d"
                % (_n(c["added_main"]), _n(c["added_encode"]), _n(c["added"]),
                   c["posts_large"], cgf["configs"]["module"]["posts_large"]), title)
    return out


def _row_name(key, d):
    return "`%s` (%s) [%s]" % (fname(key), d.get("file", "???"), key.rsplit(" [", 1)[1][:-1])


def diff_listing(cfg, base, top=TOP, which="by_function"):
    """Markdown table: where a configuration's instructions per request differ
    from its baseline's, by function (exclusive; the module's functions also
    inclusive), largest first; the rows sum to the difference. which:
    "by_function" (all threads) or "by_function_main" (httpd's thread)."""
    a, b = base[which], cfg[which]
    rows = []
    for key in set(a) | set(b):
        da, db = a.get(key, {}), b.get(key, {})
        e = db.get("excl", 0) - da.get("excl", 0)
        i = db.get("incl", 0) - da.get("incl", 0)
        rows.append((e, i, key, db or da))
    rows.sort(key=lambda r: (-round(r[0], 1), r[2]))
    shown = [r for r in rows if r[0] >= 0.5][:top]
    # The largest savings too (a path the configuration no longer takes).
    shown += [r for r in reversed(rows) if r[0] <= -5][:5]
    rest = [r for r in rows if r not in shown]
    total = sum(r[0] for r in rows)
    md = []
    for e, i, key, d in shown:
        own = key.endswith("[%s]" % MODULE_OBJ)
        md.append([_row_name(key, d), common.fmt_num(e, 1),
                   common.fmt_num(i, 1) if own else "-"])
    md.append(["all other functions (%d; net)" % len(rest),
               common.fmt_num(sum(r[0] for r in rest), 1), "-"])
    md.append(["**total** (= the difference of the slopes)", "**%s**" % common.fmt_num(total, 1),
               "-"])
    return common.md_table(["function (file) [object]", "exclusive Ir per request",
                            "inclusive (module's functions)"], md)


def tree_listing(cfg, names, unit="request", top=TOP, base=None):
    """Markdown table: the inclusive cost of the module's functions `names`
    split into their own instructions and what they spend in each function
    they call (inclusive), per request. With base: cfg's minus base's."""
    bf = cfg["by_function"]
    bb = base["by_function"] if base else {}
    empty = {"excl": 0, "incl": 0, "calls": {}, "file": "???"}
    md = []
    for n in names:
        key = "%s [%s]" % (n, MODULE_OBJ)
        if key not in bf:
            continue
        d, e = bf[key], bb.get(key, empty)
        md.append(["**`%s`** (%s), inclusive" % (n, d["file"]),
                   "**%s**" % common.fmt_num(d["incl"] - e["incl"], 1)])
        md.append(["&nbsp;&nbsp;its own instructions (inlined code included)",
                   common.fmt_num(d["excl"] - e["excl"], 1)])
        dc, ec = d.get("calls", {}), e.get("calls", {})
        calls = [(ck, dc.get(ck, 0) - ec.get(ck, 0)) for ck in set(dc) | set(ec)]
        calls = sorted([x for x in calls if abs(x[1]) >= 0.05],
                       key=lambda kv: (-round(kv[1], 1), kv[0]))
        for ck, v in calls[:top]:
            md.append(["&nbsp;&nbsp;-> `%s` [%s]" % (fname(ck), ck.rsplit(" [", 1)[1][:-1]),
                       common.fmt_num(v, 1)])
        if len(calls) > top:
            md.append(["&nbsp;&nbsp;-> %d other functions" % (len(calls) - top),
                       common.fmt_num(sum(v for _, v in calls[top:]), 1)])
    return common.md_table(["function", "Ir per %s%s" % (unit, " (difference)" if base else ""),
                            ], md)


def module_functions(cfg, top=TOP):
    """Markdown table: the module's own functions in a configuration,
    exclusive and inclusive per request, by exclusive count."""
    rows = [(d["excl"], d["incl"], k, d) for k, d in cfg["by_function"].items()
            if k.endswith("[%s]" % MODULE_OBJ) and d["excl"] >= 0.05]
    rows.sort(key=lambda r: (-round(r[0], 1), r[2]))
    md = [["`%s` (%s)" % (fname(k), d["file"]), common.fmt_num(e, 1), common.fmt_num(i, 1)]
          for e, i, k, d in rows[:top]]
    if len(rows) > top:
        md.append(["%d other functions of the module" % (len(rows) - top),
                   common.fmt_num(sum(r[0] for r in rows[top:]), 1), "-"])
    md.append(["**all of the module's functions**", "**%s**" % common.fmt_num(
        sum(r[0] for r in rows), 1), "-"])
    return common.md_table(["module function (file)", "exclusive Ir per request",
                            "inclusive"], md)


def listings(cg, cgf=None):
    """Markdown: a listing by function for each target the run missed."""
    cf = cg["configs"]
    out = ["### Where the instructions go: listings by function for the missed targets", "",
           "Per request, as slopes between the two runs of each configuration like every "
           "figure above, from callgrind's output files read whole. *Exclusive*: "
           "instructions in the function itself (with what the compiler inlined into it); "
           "*inclusive*: with everything it calls. A difference listing subtracts the "
           "baseline's slope function by function, so its rows sum to the difference; "
           "*all threads* lists the flusher's functions too (libcurl, the allocator, the "
           "system call wrappers count as often as the run posted and woke up), *request "
           "thread* only httpd's. An output filter's inclusive count holds the filters "
           "after it (the response's whole way out), not what the filter adds.", ""]
    missed = {t[0] for t in target_values(cg, cgf) if t[2] is not None and t[2] > t[3]}
    if not missed:
        out += ["Every target was met.", ""]
        return "\n".join(out) + "\n"
    if "raw" in missed:
        m = cf["module"]
        out += ["#### Raw mode at defaults: module minus no module, all threads (%s added)"
                % common.fmt_num(m["added"]), "", diff_listing(m, cf["none"]), "",
                "The request thread alone (%s added):" % common.fmt_num(m["added_main"]), "",
                diff_listing(m, cf["none"], which="by_function_main"), "",
                "The module's own functions in this configuration (all threads):", "",
                module_functions(m), ""]
    if "hooks" in missed:
        out += ["#### The log hooks (%s per request)" % common.fmt_num(cf["module"]["hooks"]),
                "", tree_listing(cf["module"], [HOOK, HOOK_DONE]), ""]
    if "encode" in missed:
        out += ["#### Taking a point from the ring and encoding it (%s per point)"
                % common.fmt_num(cf["module"]["encode_per_point"]), "",
                tree_listing(cf["module"], [FILL, "imx_body_take", "imx_encode_values"],
                             unit="point"), ""]
    if "summary" in missed:
        s = cf["summary"]
        out += ["#### Summary mode: module minus no module, all threads (%s added)"
                % common.fmt_num(s["added"]), "", diff_listing(s, cf["none"]), "",
                "The request thread alone (%s added):" % common.fmt_num(s["added_main"]), "",
                diff_listing(s, cf["none"], which="by_function_main"), "",
                "Its hooks:", "", tree_listing(s, [HOOK, HOOK_DONE, "log_full"]), ""]
    if "prom" in missed:
        p = cf["prom"]
        out += ["#### Prometheus endpoint on: raw mode + endpoint minus raw mode, request "
                "thread (%s more; all threads %s)"
                % (common.fmt_num(p["over_module_main"]), common.fmt_num(p["over_module"])), "",
                diff_listing(p, cf[p.get("baseline", "module")], which="by_function_main"), "",
                "The hooks with the endpoint on, minus without:", "",
                tree_listing(p, [HOOK, PROM_RECORD], base=cf[p.get("baseline", "module")]), ""]
    if "prom-only" in missed:
        p = cf["prom-only"]
        base = "location" if "over_location_main" in p else "none"
        out += ["#### Prometheus endpoint only minus %s, request thread (%s added; "
                "all threads %s)" % (LABELS[base],
                                      common.fmt_num(p.get("over_location_main", p["added_main"])),
                                      common.fmt_num(p.get("over_location", p["added"]))), "",
                diff_listing(p, cf[base], which="by_function_main"), "",
                "Its hooks:", "", tree_listing(p, [HOOK, PROM_RECORD]), ""]
    if ("prom" in missed or "prom-only" in missed) and "location" in cf:
        out += ["#### httpd with the same `<Location>` block and no module, minus no module "
                "(%s)" % common.fmt_num(cf["location"]["added_main"]), "",
                "What the section itself costs a request that does not match it, module or "
                "not (request thread):", "",
                diff_listing(cf["location"], cf["none"], top=10, which="by_function_main"), ""]
    if cgf and ("field" in missed or "request_id" in missed):
        base = cgf["configs"]["module"]
        for f in FIELDS:
            c = cgf["configs"].get(f)
            if not c:
                continue
            goal = TARGETS["request_id" if f == "request_id" else "field"][0]
            if c["added_rate_free"] <= goal:
                continue
            out += ["#### InfluxMetricsFields %s minus the module alone (%s more: request "
                    "thread %s, encoding %s)"
                    % (f, common.fmt_num(c["added_rate_free"]), common.fmt_num(c["added_main"]),
                       common.fmt_num(c["added_encode"])), "",
                    diff_listing(c, base, top=10, which="by_function_main"), ""]
            if abs(c["added_encode"]) >= 1:
                out += ["Encoding, per point, minus the module alone:", "",
                        tree_listing(c, ["imx_body_take", "imx_encode_values"], unit="point",
                                     top=8, base=base), ""]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------
# Reports

def report_fields(res):
    rows = []
    for label in ["module"] + FIELDS + ["all"]:
        c = res["configs"].get(label)
        if c is None:
            continue
        goal = (None if label in ("module", "all")
                else TARGETS["request_id" if label == "request_id" else "field"][0])
        first = label == "module"
        rows.append([label if label in ("module", "all") else "InfluxMetricsFields " + label,
                     common.fmt_num(c["per_request"]),
                     "-" if first else common.fmt_num(c["added"]),
                     common.fmt_num(c["main_per_request"]),
                     "-" if first else common.fmt_num(c["added_main"]),
                     "-" if first or "hook_added" not in c else common.fmt_num(c["hook_added"]),
                     common.fmt_num(c.get(FILL)) if first else common.fmt_num(c["added_encode"]),
                     "-" if first else "**%s**" % common.fmt_num(c["added_rate_free"]),
                     "%d / %d" % (c["posts_small"], c["posts_large"]),
                     "-" if goal is None else "<= %d: %s" % (goal, verdict(c["added_rate_free"],
                                                                          goal))])
    return "\n".join([
        "### Instructions each optional field adds (callgrind, httpd -X, prefork, ab -k -c 1)",
        "", common.md_table(["config", "Ir per request, all threads", "added",
                             "request thread", "added", "of which in the hooks",
                             "encoding per point (module: itself; others: added)",
                             "added: request thread + encoding",
                             "POSTs (runs of %d / %d)" % (res["n_small"], res["n"]),
                             "target"], rows), "",
        "Slopes between runs of %d and %d requests after %d warm-up requests; every "
        "request carries a traceparent header. 'added' is against the module without "
        "InfluxMetricsFields (raw points). The verdict is on the request thread (the hooks, "
        "the filters, httpd's part) plus the encoding of the point in the flusher: the first "
        "does not depend on how fast the run went, the second little (its per-batch and "
        "per-millisecond part does). The all-threads difference also holds the "
        "difference in the runs' POSTs and wake-ups (one POST is about 180,000 instructions, "
        "so one POST more in the longer run adds about %s per request) and moves by that "
        "much between runs of one configuration." % (
            res["n_small"], res["n"], res["warm"],
            common.fmt_num(180000.0 / (res["n"] - res["n_small"]))), ""])


def report(res):
    cf = res["configs"]
    rows = []
    for kind in CONFIGS:
        if kind not in cf:
            continue
        c = cf[kind]
        rows.append([LABELS[kind], common.fmt_num(c["per_request"]),
                     "-" if kind == "none" else common.fmt_num(c["added"]),
                     common.fmt_num(c["main_per_request"]),
                     "-" if kind == "none" else common.fmt_num(c["added_main"]),
                     common.fmt_num(c["hooks"]) if "hooks" in c else "-",
                     common.fmt_num(c["flusher_thread"]) if kind in FLUSHING else "-",
                     "%d / %d" % (c["posts_small"], c["posts_large"])
                     if kind in FLUSHING else "-",
                     common.fmt_num(c.get("rate"))])
    lines = ["### Instructions per request (callgrind, httpd -X, prefork, ab -k -c 1)", "",
             common.md_table(["config", "Ir per request, all threads",
                              "added (vs no module)", "request thread", "added",
                              "the log hooks", "the flusher thread",
                              "POSTs (runs of %d / %d)" % (res["n_small"], res["n"]),
                              "req/s under callgrind"], rows), ""]
    m = cf.get("module")
    n = common.fmt_num
    if m:
        lines.append("Raw mode, module minus no module: %s per request, all included. The request "
                     "thread (httpd's) %s of it, of which the log hooks (%s and %s, inclusive) %s; "
                     "the rest of the request thread's, %s, is httpd calling the module's other "
                     "hooks (handlers and filter inserts that decline, the per-directory merge) "
                     "and what a second thread in the process costs every system call (the "
                     "listings below have it by function). The flusher thread %s: %s taking each "
                     "point from the ring and encoding it, %s the POSTs and wake-ups - %d POSTs "
                     "of about %s points, %s instructions each through libcurl, and the work done "
                     "once a second - which at %s req/s under callgrind is that much per request, "
                     "and less per request the faster the server runs."
                     % (n(m["added"]), n(m["added_main"]), HOOK, HOOK_DONE, n(m.get("hooks")),
                        n(m["added_main"] - m.get("hooks", 0)), n(m["flusher_thread"]),
                        n(m.get(FILL)), n(m["per_second_share"]), m["posts_large"],
                        n(m["points_per_post"]), n(m.get("per_post")), n(m["rate"])))
    if "summary" in cf:
        sm = cf["summary"]
        lines.append("")
        lines.append("Summary mode: %s added, the request thread %s (the hooks %s), the "
                     "flusher %s (%d POSTs in the longer run)."
                     % (n(sm["added"]), n(sm["added_main"]), n(sm.get("hooks")),
                        n(sm["flusher_thread"]), sm["posts_large"]))
    if "prom" in cf and m:
        p = cf["prom"]
        base = cf.get(p.get("baseline", "module"), m)
        lines.append("")
        lines.append("Prometheus endpoint on (`<Location %s> SetHandler "
                     "influx-metrics-prometheus </Location>`), against the same configuration "
                     "whose section serves the module's status page instead (%s): the request "
                     "thread pays %s more per request (all threads %s, the rest being the runs' "
                     "different POSTs); the module's hooks %s more, %s of it in %s. Without that "
                     "baseline, against raw mode with no section at all, it would be %s, nearly "
                     "all of it httpd's own work for one more `<Location>` section: the section "
                     "alone, without the module, costs %s per request that does not match it."
                     % (PROM_PAGE, LABELS.get(p.get("baseline", "module")),
                        n(p["over_module_main"]), n(p["over_module"]),
                        n(p.get("hooks", 0) - base.get("hooks", 0)), n(p.get(PROM_RECORD)),
                        PROM_RECORD, n(p["main_per_request"] - m["main_per_request"]),
                        n(cf["location"]["added_main"]) if "location" in cf else "n/a"))
        if "prom-only" in cf:
            q = cf["prom-only"]
            lines.append("The endpoint alone, without InfluxMetricsURL: %s per request over "
                         "httpd with the same section and no module (the whole module then: "
                         "its hooks %s, the handlers that decline), %s over no module without "
                         "the section."
                         % (n(q.get("over_location_main", q["added_main"])), n(q.get("hooks")),
                            n(q["added_main"])))
    if "accesslog" in cf and m:
        added, acc = m["added"], cf["accesslog"]["added"]
        lines.append("")
        lines.append("For comparison, the combined-format access log adds %s per request "
                     "here; the module in raw mode %s: %s."
                     % (n(acc), n(added), "less" if added < acc else "not less"))
    lines.append("")
    lines.append("Slopes between runs of %d and %d requests after %d warm-up requests, so "
                 "start-up and exit cancel out; callgrind's thread 1 is the request thread, "
                 "the others the flusher (and anything libcurl starts). The module runs with "
                 "its defaults (flush every 1 s or 5000 points), so the POSTs' share per "
                 "request follows the rate httpd reached under callgrind in each run (last "
                 "column), which other load on the machine lowers: the all-threads figures "
                 "move with it, the request thread's and the encoding's do not."
                 % (res["n_small"], res["n"], res["warm"]))
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=None,
                    help="requests of the longer run (default 10000; --fields 6000)")
    ap.add_argument("--quick", action="store_true", help="N=6000 (--fields: 3000)")
    ap.add_argument("--fields", action="store_true",
                    help="what each InfluxMetricsFields name adds")
    ap.add_argument("--only", default="", help="comma-separated configurations of the "
                    "default run (none is always run): " + ",".join(CONFIGS))
    a = ap.parse_args()
    if a.fields:
        n = a.n or (3000 if a.quick else 6000)
        res = run_fields(n=n, n_small=min(1000, n // 6))
        common.save_json("callgrind-fields", res)
        print(report_fields(res))
        return
    n = a.n or (6000 if a.quick else 10000)
    configs = None
    if a.only:
        configs = ["none"] + [c for c in a.only.split(",") if c and c != "none"]
        for c in configs:
            if c not in CONFIGS:
                ap.error("unknown configuration %r" % c)
    res = run(n=n, n_small=min(2000, n // 5), configs=configs)
    common.save_json("callgrind", res)
    print(report(res))
    print(listings(res))


if __name__ == "__main__":
    main()
