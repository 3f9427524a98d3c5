#!/usr/bin/python3
"""Instructions per request, counted by valgrind --tool=callgrind.

Instruction counts do not depend on how busy the machine is, so this is the
stable measure of what the module costs. A single-process httpd (prefork,
-X: one process, one worker; the module's flusher thread runs in the same
process, so its work and libcurl's are counted too) serves static-file
keep-alive requests from `ab -k -c 1` in three configurations:

  none       no module, no access log
  module     the module, raw points, posting to bench/nullsink.py
  accesslog  no module, mod_log_config writing the combined format to a file

Each configuration runs twice, with W warm-up requests and then N1 or N2
measured requests; the cost per request is the slope
    (Ir(run with N2) - Ir(run with N1)) / (N2 - N1)
so start-up and shutdown (config parsing, curl_global_init, TLS library
set-up, the exit flush) cancel out. "Added per request" is a configuration's
slope minus the slope without the module. The hook alone is the inclusive
count of imx_log_transaction (callgrind_annotate --inclusive=yes), and the
flusher the inclusive count of its thread function, both as slopes too.

    /usr/bin/python3 bench/callgrind.py [--n 2000] [--quick]

With --fields, instead: the module alone, then with each InfluxMetricsFields
name on its own, then all of them, each as a slope the same way; every run
sends the same traceparent header, so the request_id run reads a real id.
The table gives what each field adds per request to the module's cost
(static files: nothing is proxied, so `upstream` is the lookup of a request
mod_proxy did not handle).

    /usr/bin/python3 bench/callgrind.py --fields [--n 3000]
"""

import argparse
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
ANNOTATE = "/usr/bin/callgrind_annotate"
PATH = "/small.txt"
# Functions whose inclusive cost is reported (by symbol name).
HOOK = "imx_request_log"
HOOK_DONE = "imx_prefork_log_done"  # the last log hook (prefork: a deferred stop)
FLUSHER = "flusher_main"
SEND = "imx_http_send"          # one POST (libcurl included)
FILL = "imx_body_fill"          # ring -> line protocol, per batch
FUNCS = [HOOK, HOOK_DONE, FLUSHER, SEND, FILL]
# The reference figures for this machine (combined-format access log).
TARGET_ADDED = 2400
# --fields: each InfluxMetricsFields name, then all of them.
FIELDS = ["ttfb", "bytes_received", "request_id", "protocol", "tls", "upstream"]
TRACEPARENT = "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


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


def inclusive(outfile, names):
    """{name: inclusive Ir} from callgrind_annotate --inclusive=yes."""
    p = subprocess.run([ANNOTATE, "--inclusive=yes", "--threshold=100", outfile],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    text = p.stdout.decode(errors="replace")
    res = {}
    for line in text.splitlines():
        m = re.match(r"\s*(\d[\d,]*)\s+(?:\(\s*[\d.]+%\)\s+)?(\S.*)$", line)
        if not m:
            continue
        ir = int(m.group(1).replace(",", ""))
        where = m.group(2)
        for n in names:
            # "file.c:func [obj]" or "???:func [obj]"
            if re.search(r":%s(?:'\d+)? " % re.escape(n), where + " "):
                res[n] = max(res.get(n, 0), ir)
    return res


def total_ir(outfile):
    with open(outfile, errors="replace") as f:
        for line in f:
            m = re.match(r"(?:summary|totals):\s+(\d+)", line)
            if m:
                return int(m.group(1))
    raise RuntimeError("no totals in %s" % outfile)


def one_run(kind, warm, n, null_url, timeout=300, fields=None, ab_args=()):
    """httpd -X under callgrind serving warm + n requests; returns
    {"ir": total, "funcs": {...}, "served": ...}. fields: the
    InfluxMetricsFields line's names (module only)."""
    if kind in ("module", "summary"):
        extra = "InfluxMetricsFields %s\n" % fields if fields else ""
        if kind == "summary":
            extra += "InfluxMetricsMode summary\n"
        h = BenchHttpd(mpm="prefork", load_module=True, name="cg-" + kind,
                       extra=str(harness.Imx(url=null_url, flush_interval=None, extra=extra)))
    elif kind == "accesslog":
        h = BenchHttpd(mpm="prefork", access_log="combined", name="cg-" + kind)
    else:
        h = BenchHttpd(mpm="prefork", name="cg-" + kind)
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
    cmd = [VALGRIND, "--tool=callgrind", "--vgdb=no",
           "--callgrind-out-file=" + outfile] + h._cmd("-X")
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
        if kind in ("module", "summary"):
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
    if not os.path.exists(outfile):
        raise RuntimeError("callgrind wrote no output:\n%s"
                           % harness._tail(harness._read(vglog.name)))
    res = {"ir": total_ir(outfile), "funcs": inclusive(outfile, FUNCS),
           "served": served, "secs": secs}
    if kind == "module":
        res["module"] = common.flusher_totals(h.error_log_text())
    h.cleanup()
    return res


def run(n=10000, warm=500, n_small=2000):
    t0 = time.monotonic()
    res = {"warm": warm, "n_small": n_small, "n": n, "path": PATH, "configs": {}}
    with NullSink() as null:
        for kind in ("none", "module", "summary", "accesslog"):
            s0 = null.stats()
            a = one_run(kind, warm, n_small, null.write_url())
            s1 = null.stats()
            b = one_run(kind, warm, n, null.write_url())
            s2 = null.stats()
            a["posts"], b["posts"] = s1["requests"] - s0["requests"], s2["requests"] - s1["requests"]
            dn = n - n_small
            c = {"ir_small": a["ir"], "ir_large": b["ir"],
                 "per_request": (b["ir"] - a["ir"]) / dn,
                 "funcs_small": a["funcs"], "funcs_large": b["funcs"],
                 "posts_small": a["posts"], "posts_large": b["posts"],
                 "secs_small": a["secs"], "secs_large": b["secs"]}
            for f in (HOOK, HOOK_DONE, FLUSHER):
                if f in a["funcs"] and f in b["funcs"]:
                    c[f] = (b["funcs"][f] - a["funcs"][f]) / dn
                    c[f + "_avg"] = b["funcs"][f] / b["served"]
            if HOOK in c:
                # Both log hooks are the module's work on the request path.
                c[HOOK] += c.get(HOOK_DONE, 0)
            if "module" in b:
                c["module"] = b["module"]
                # Decomposition from the larger run: the cost of one POST
                # and of encoding one point, then the module's cost per
                # request at a given number of points per POST.
                pts = b["module"].get("recorded") or b["served"]
                if b["funcs"].get(SEND) and b["posts"]:
                    c["per_post"] = b["funcs"][SEND] / b["posts"]
                if b["funcs"].get(FILL):
                    c["encode_per_point"] = b["funcs"][FILL] / pts
                c["points_per_post"] = pts / max(1, b["posts"])
                # The POSTs' share of the cost per request:
                if SEND in a["funcs"] and SEND in b["funcs"] and "per_post" in c:
                    c["send_share"] = (b["funcs"][SEND] - a["funcs"][SEND]) / dn
            res["configs"][kind] = c
            log("callgrind: %s: %.0f instructions/request (%.0fs)"
                % (kind, c["per_request"], time.monotonic() - t0))
        res["null_stats"] = null.stats()
    base = res["configs"]["none"]["per_request"]
    for kind, c in res["configs"].items():
        c["added"] = c["per_request"] - base
    res["elapsed_s"] = time.monotonic() - t0
    return res


def run_fields(n=3000, warm=300, n_small=1000):
    """The module's slope alone and with each field; see the docstring."""
    t0 = time.monotonic()
    res = {"warm": warm, "n_small": n_small, "n": n, "path": PATH, "configs": {}}
    ab_args = ["-H", TRACEPARENT]
    with NullSink() as null:
        for label, fields in [("module", None)] + [(f, f) for f in FIELDS] + \
                             [("all", " ".join(FIELDS))]:
            a = one_run("module", warm, n_small, null.write_url(), fields=fields,
                        ab_args=ab_args)
            b = one_run("module", warm, n, null.write_url(), fields=fields,
                        ab_args=ab_args)
            dn = n - n_small
            c = {"per_request": (b["ir"] - a["ir"]) / dn}
            if HOOK in a["funcs"] and HOOK in b["funcs"]:
                c[HOOK] = (b["funcs"][HOOK] - a["funcs"][HOOK]) / dn
            res["configs"][label] = c
            log("callgrind --fields: %s: %.0f instructions/request (%.0fs)"
                % (label, c["per_request"], time.monotonic() - t0))
    base = res["configs"]["module"]
    for c in res["configs"].values():
        c["added"] = c["per_request"] - base["per_request"]
        if HOOK in c and HOOK in base:
            c["hook_added"] = c[HOOK] - base[HOOK]
    res["elapsed_s"] = time.monotonic() - t0
    return res


def report_fields(res):
    rows = []
    for label, c in res["configs"].items():
        rows.append([label if label in ("module", "all") else "InfluxMetricsFields " + label,
                     common.fmt_num(c["per_request"]),
                     "-" if label == "module" else common.fmt_num(c["added"]),
                     "-" if label == "module" or "hook_added" not in c
                     else common.fmt_num(c["hook_added"])])
    return "\n".join([
        "### Instructions each optional field adds (callgrind, httpd -X, prefork, ab -k -c 1)",
        "", common.md_table(["config", "Ir per request", "added per request",
                             "of which in the hook"], rows), "",
        "Slopes between runs of %d and %d requests after %d warm-up requests; every "
        "request carries a traceparent header. 'added' is against the module without "
        "InfluxMetricsFields (raw points); it includes the filters' and the encoder's "
        "work, 'of which in the hook' only %s." % (res["n_small"], res["n"], res["warm"],
                                                   HOOK), ""])


def report(res):
    cf = res["configs"]
    rows = []
    labels = {"none": "no module", "module": "module (raw, null backend)",
              "summary": "module (InfluxMetricsMode summary)",
              "accesslog": "access log (combined format)"}
    for kind in ("none", "module", "summary", "accesslog"):
        if kind not in cf:
            continue
        c = cf[kind]
        rows.append([labels[kind], common.fmt_num(c["per_request"]),
                     "-" if kind == "none" else common.fmt_num(c["added"])])
    lines = ["### Instructions per request (callgrind, httpd -X, prefork, ab -k -c 1)", "",
             common.md_table(["config", "Ir per request", "added per request"], rows), ""]
    m = cf["module"]
    parts = []
    if HOOK in m:
        parts.append("the hooks (%s and %s, inclusive) %s per request"
                     % (HOOK, HOOK_DONE, common.fmt_num(m[HOOK])))
    if FLUSHER in m:
        parts.append("the flusher thread (encode + libcurl POST, inclusive) %s per request"
                     % common.fmt_num(m[FLUSHER]))
    if HOOK in m and FLUSHER in m:
        parts.append("the rest, %s, is the module's other work per request outside the "
                     "hook (its per-directory config merge, hooks that decline, thread "
                     "wake-ups)" % common.fmt_num(m["added"] - m[HOOK] - m[FLUSHER]))
    if parts:
        lines.append("Of the module's cost: " + "; ".join(parts) + ".")
    added, acc = m["added"], cf["accesslog"]["added"]
    if "encode_per_point" in m and "send_share" in m:
        lines.append("")
        lines.append("Per point, the flusher spends %s instructions taking it from the buffer "
                     "and encoding it; the POSTs (libcurl, the body included) add %s per request "
                     "in this run: %d POSTs of about %s points, %s instructions each."
                     % (common.fmt_num(m["encode_per_point"]), common.fmt_num(m["send_share"]),
                        m["posts_large"], common.fmt_num(m["points_per_post"]),
                        common.fmt_num(m["per_post"])))
    lines.append("")
    lines.append("Target: the module adds less than the combined-format access log "
                 "(issue: about %s): module %s vs access log %s here: **%s**."
                 % (common.fmt_num(TARGET_ADDED), common.fmt_num(added), common.fmt_num(acc),
                    "met" if added < acc else "missed"))
    lines.append("")
    lines.append("Slopes between runs of %d and %d requests after %d warm-up requests, so "
                 "start-up and exit cancel out. The module runs with its defaults (flush every "
                 "1 s or 5000 points): under callgrind httpd served %s req/s, so the %d "
                 "measured requests went out in %d POSTs (about %s points each) - the flusher's "
                 "and libcurl's per-POST cost is spread over that many requests."
                 % (res["n_small"], res["n"], res["warm"],
                    common.fmt_num(res["n"] / m["secs_large"]), res["n"], m["posts_large"],
                    common.fmt_num(res["n"] / max(1, m["posts_large"]))))
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--quick", action="store_true", help="N=5000")
    ap.add_argument("--fields", action="store_true",
                    help="what each InfluxMetricsFields name adds (default N=3000)")
    a = ap.parse_args()
    if a.fields:
        res = run_fields(n=a.n if a.n != 10000 else 3000)
        common.save_json("callgrind_fields", res)
        print(report_fields(res))
        return
    if a.quick:
        a.n = 5000
    res = run(n=a.n)
    common.save_json("callgrind", res)
    print(report(res))


if __name__ == "__main__":
    main()
