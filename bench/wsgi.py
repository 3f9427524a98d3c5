#!/usr/bin/python3
# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""What recording every request costs a mod_wsgi app, three ways and the module.

A Python hello world (bench/wsgi_app.py) runs in mod_wsgi's embedded mode
under the event MPM (2 children x 25 threads), loaded with wrk at 5
connections (a hand measurement used bombardier -c 5), in four configurations,
all live at once and run in interleaved rounds with the order rotated:

  plain    no metrics
  perreq   one POST to InfluxDB per request from the app
  batched  in-app batching, a background thread posting once a second
  module   the plain app, and mod_influx_metrics recording every request

Every configuration writes to its own database of one live InfluxDB 1.x on
the same machine (its CPU use counts against everyone alike) and keeps an access
log as the count of requests served; stored counts are read after the
servers stopped (so the final flushes are in).

    /usr/bin/python3 bench/wsgi.py [--rounds 10] [--secs 1] [--quick]
"""

import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import BenchHttpd, Stack, harness, log  # noqa: E402

APP = os.path.join(common.BENCH_DIR, "wsgi_app.py")
WSGI_SO = os.path.join(harness.APACHE_MODULES_DIR, "mod_wsgi.so")
CONNS = 5
CONFIGS = ["plain", "perreq", "batched", "module"]
MEASUREMENT = {"perreq": "wsgi_perreq", "batched": "wsgi_batched",
               "module": "apache_request"}


def wsgi_conf(h, callable_name, influx_url):
    app = os.path.join(h.dir, "wsgi_app.py")
    shutil.copy(APP, app)
    os.chmod(app, 0o644)
    return """
WSGIScriptAlias / "{app}"
WSGICallableObject {callable}
WSGIApplicationGroup %{{GLOBAL}}
<Directory "{d}">
    <Files "wsgi_app.py">
        Require all granted
    </Files>
</Directory>
SetEnv IMX_BENCH_INFLUX "{url}"
""".format(app=app, callable=callable_name, d=h.dir, url=influx_url)


def run(rounds=10, secs=1, warmup=1):
    if not os.path.exists(WSGI_SO):
        raise SystemExit("mod_wsgi is not installed (%s): apt-get install "
                         "libapache2-mod-wsgi-py3" % WSGI_SO)
    res = {"rounds": rounds, "secs": secs, "conns": CONNS,
           "machine": common.machine_info(), "configs": {}}
    t0 = time.monotonic()
    with Stack() as st:
        influx = st.add(harness.Influx(log_level="warn", http_log=False)).start()
        servers = []
        for name in CONFIGS:
            db = "wsgi_" + name
            influx.create_db(db)
            url = influx.write_url(db)
            h = BenchHttpd(name="wsgi-" + name, modules=["wsgi", "env"], access_log="%D",
                           load_module=(name == "module"))
            extra = wsgi_conf(h, "plain" if name == "module" else name, url)
            if name == "module":
                extra += str(harness.Imx(url=url, flush_interval=None))
            h.extra = extra
            st.add(h).start()
            servers.append((name, h))
        for name, h in servers:       # warm-up: interpreters, imports, connections
            common.wrk(h.url, CONNS, warmup)
        data = {n: [] for n in CONFIGS}
        ratios = {n: [] for n in CONFIGS}
        log("wsgi: %d rounds x %ds at c=%d" % (rounds, secs, CONNS))
        for rnd in range(rounds):
            rr, ra = common.aba_round(
                servers, "plain",
                lambda n, h: common.measured_wrk(h.url, CONNS, secs, servers=[h],
                                                 backends=[influx]),
                rotate=rnd)
            for n in CONFIGS:
                data[n] += rr[n]
                if n in ra:
                    ratios[n].append(ra[n])
            log("wsgi: round %d/%d done (%.0fs)" % (rnd + 1, rounds, time.monotonic() - t0))
        for name, h in servers:
            h.graceful_stop(timeout=30)
        for name, h in servers:
            rps = [r["rps"] for r in data[name]]
            c = {"rps": rps,
                 "ratio": [x["rps"] for x in ratios[name] if x["rps"]],
                 "cpu_ratio": [x["cpu"] for x in ratios[name] if x["cpu"]],
                 "cpu_us": [r["cpu_us"] for r in data[name]],
                 "backend_cpu_us": [r["backend_cpu_us"] for r in data[name]],
                 "p99_us": [r["p99_us"] for r in data[name]],
                 "errors": sum(r["non2xx"] + r["socket_errors"] for r in data[name]),
                 "served": h.served_logged()}
            if name in MEASUREMENT:
                c["stored"] = influx.count("wsgi_" + name, MEASUREMENT[name],
                                           field="application_time"
                                           if name != "module" else "duration_us")
            if h.load_module:
                c["module"] = common.flusher_totals(h.error_log_text())
            c["error_log"] = h.check_error_log(allowed=[r"IMX0100"])[:5]
            res["configs"][name] = c
    res["elapsed_s"] = time.monotonic() - t0
    return res


def report(res):
    labels = {"plain": "(a) no metrics", "perreq": "(b) one POST per request (in app)",
              "batched": "(c) in-app batching, background thread",
              "module": "(d) mod_influx_metrics"}
    rows = []
    for name in CONFIGS:
        c = res["configs"][name]
        lo, hi = common.spread(c["rps"])
        stored = c.get("stored")
        rows.append([labels[name],
                     "%s (%s-%s)" % (common.fmt_num(common.median(c["rps"])),
                                     common.fmt_num(lo), common.fmt_num(hi)),
                     "1" if name == "plain" else common.fmt_ci(c["ratio"]),
                     common.fmt_num(common.median(c.get("cpu_us", [])), 1),
                     "1" if name == "plain" else common.fmt_ci(c.get("cpu_ratio")),
                     common.fmt_num(common.median(c.get("backend_cpu_us", [])), 1),
                     common.fmt_num(c["served"]),
                     "-" if stored is None else common.fmt_num(stored),
                     "-" if stored is None else ("yes" if stored == c["served"]
                                                 else "no (%+d)" % (stored - c["served"]))])
    lines = ["### mod_wsgi hello world (embedded, event MPM, wrk -c %d, %d interleaved "
             "rounds x %ds)" % (res["conns"], res["rounds"], res["secs"]), "",
             common.md_table(["config", "req/s (min-max)", "throughput ratio vs (a) [95% CI]",
                              "httpd CPU us/req", "CPU/req ratio [95% CI]", "InfluxDB CPU us/req",
                              "served", "stored", "stored == served"], rows), "",
             "Runs go (a), X, (a), Y, (a), ... with the order rotated every round; each ratio "
             "divides a run by the mean of the two (a) runs around it; the median over rounds "
             "with its 95% confidence interval (bootstrap over rounds) in brackets. httpd CPU: user+system of all httpd processes (Python "
             "included) per request; InfluxDB CPU: influxd's per request served during that "
             "configuration's runs. Served: lines of the access log (every configuration keeps "
             "one); stored: count in InfluxDB after the servers stopped."]
    mline = common.module_line(res["configs"]["module"].get("module") or {})
    if mline:
        lines.append(mline)
    lines += common.problem_lines(res, CONFIGS)
    return "\n".join(lines) + "\n"


def main():
    common.rounds_main(__doc__, "wsgi", run, report, 1)


if __name__ == "__main__":
    main()
