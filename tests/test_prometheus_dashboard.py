# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""The Prometheus dashboard (conf/grafana/dashboards/prometheus.json) and its
datasource (conf/grafana/provisioning/datasources/prometheus.yaml).

The static tests check the provisioning file and the dashboard model: its
datasource is the provisioned Prometheus one, panel ids are unique, every
query reads only metrics the page exposes, filtered by the variables, with
rate windows of $__rate_interval (or $__range for the totals).

The integration test runs a real httpd with the module (InfluxMetricsURL to
a real influxd, so the delivery counters are on the page; two virtual hosts;
routes; 404s, 503s and 300 ms requests), scraped every second by a real
Prometheus. Every panel query and every variable query, with Grafana's
macros and variables substituted as Grafana's Prometheus datasource does
(All, then the first and the last value of each variable, regex-escaped),
goes through /api/v1/query (and /api/v1/query_range for the graphs): each
must succeed and return finite numbers. Then the numbers themselves, with
$__rate_interval set to the time between two scrapes, one before the load
and one after Prometheus counted all of it, evaluated at the second (so
that rate() extrapolates by nothing but 1 ms):

    * request rate by vhost, responses by status and bytes sent, times that
      interval, are exactly the requests of the ab runs per vhost, the
      statuses of the access log and its %B bytes;
    * the error ratio is exactly the share of 503s of each vhost, and 0
      (not empty) for a route without any 5xx;
    * p50, p95 and p99 of the 300 ms route lie in its bucket (0.25, 0.5],
      every other quantile in (0, 10];
    * max workers is MaxRequestWorkers, utilisation is busy / max, and the
      module recorded every request and dropped none.
"""

import collections
import json
import math
import os
import re
import time

import harness
from harness import Imx, Prometheus
from test_dashboards import interpolate as influx_interpolate
from test_dashboards import (DASHBOARD_DIR, GRAFANA_DIR, PANEL_TYPES, PROVIDER_YAML, VAR_RE,
                             all_panels, load_yaml, var_query)
from test_prometheus import PAGE, PROM_CONF, settle, wait_prometheus_count
from test_summary import mod_delay  # noqa: F401 - a fixture

DATASOURCES_DIR = os.path.join(GRAFANA_DIR, "provisioning", "datasources")
PROM_YAML = os.path.join(DATASOURCES_DIR, "prometheus.yaml")
DASHBOARD = os.path.join(DASHBOARD_DIR, "prometheus.json")
TITLE = "Prometheus"
D = "apache_request_duration_seconds"

# What the page exposes (mod_influx_metrics_prom_page.c, imx_prom_text.c).
DELIVERY_COUNTERS = ("recorded", "sent", "rejected", "dropped_full", "dropped_retry",
                     "dropped_exit", "retries", "batches", "bytes", "lost_in_crash",
                     "maybe_stored", "to_spool", "unspooled", "dropped_spool")
DELIVERY_GAUGES = ("buffered", "retry_bytes", "spooled", "spool_bytes", "spool_bad_files")
REQUEST_METRICS = {D + "_bucket", D + "_sum", D + "_count", "apache_response_bytes_total"}
EXPOSED = (REQUEST_METRICS
           | {"apache_busy_workers", "apache_idle_workers", "apache_max_workers"}
           | {"apache_influx_metrics_%s_total" % k for k in DELIVERY_COUNTERS}
           | {"apache_influx_metrics_%s" % k for k in DELIVERY_GAUGES})
DROPS = ("rejected", "dropped_full", "dropped_retry", "dropped_exit", "dropped_spool",
         "lost_in_crash")

# What the test substitutes for Grafana's macros (besides $__rate_interval,
# which the number checks set themselves). A 1 h range; 1m is what Grafana
# makes of $__rate_interval there with a 15 s scrape interval (4 x 15 s).
RANGE_S = 3600
BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "5s",
    "__interval_ms": "5000",
    "__range": "%ds" % RANGE_S,
    "__range_s": str(RANGE_S),
    "__range_ms": str(RANGE_S * 1000),
}
ALL = "$__all"


def load_dashboard():
    with open(DASHBOARD, encoding="utf-8") as f:
        return json.load(f)


def datasource():
    ds = load_yaml(PROM_YAML)["datasources"][0]
    return {"type": "prometheus", "uid": ds["uid"]}


def targets(dash):
    """[(panel, target)] of every panel, nested ones included."""
    return [(p, t) for p in all_panels(dash) for t in p.get("targets") or []]


def strip_strings(expr):
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def metric_names(expr):
    """The metric names an expression reads: identifiers starting with apache_
    outside string literals."""
    return set(re.findall(r"\bapache_\w+", strip_strings(expr)))


def selectors(expr):
    """[(metric name or None, {label: (op, value)})] of every {...} selector."""
    out = []
    for m in re.finditer(r"(\b[a-zA-Z_:][\w:]*)?\{([^}]*)\}", expr):
        labels = {}
        for lm in re.finditer(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"', m.group(2)):
            labels[lm.group(1)] = (lm.group(2), lm.group(3))
        out.append((m.group(1), labels))
    return out


def used_variables(text):
    return [m.group(1) or m.group(2) or m.group(4) for m in VAR_RE.finditer(text)]


# --------------------------------------------------------------------------
# Grafana's Prometheus interpolation

def prom_regex_escape(value):
    """prometheusSpecialRegexEscape (Grafana's Prometheus datasource, classic
    behaviour): the value goes inside a double-quoted PromQL string used as
    a regex, so a backslash becomes four and a metacharacter gets two."""
    value = value.replace("\\", "\\\\\\\\")
    return re.sub(r"([$^*{}\[\]+?.()|])", r"\\\\\1", value)


def format_value(var, selection, fmt):
    """interpolateQueryExpr: a custom All value as it is; the values of a
    multi-value or include-All variable regex-escaped, several as (a|b)."""
    if selection == ALL:
        if var.get("allValue"):
            return var["allValue"]
        selection = var["_options"]
    if fmt is not None:
        raise ValueError("variable format %r is not handled by this test" % fmt)
    if not var.get("multi") and not var.get("includeAll"):
        return selection[0].replace("\\", "\\\\").replace("'", "\\\\'")
    escaped = [prom_regex_escape(v) for v in selection]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def interpolate(text, variables, selections, builtins):
    """test_dashboards' interpolation, with Prometheus's way of writing values."""
    return influx_interpolate(text, variables, selections, builtins, format_value)


def label_values(prom, query, now):
    """What Grafana's label_values(selector, label) gives: the label's values
    on the series matching the selector in the time range."""
    m = re.fullmatch(r"label_values\((.*),\s*(\w+)\s*\)", query.strip())
    assert m, query
    return prom.api("label/%s/values" % m.group(2), **{
        "match[]": m.group(1), "start": "%.3f" % (now - RANGE_S), "end": "%.3f" % now})


def resolve_variables(prom, dash, mode, now, failures):
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    selections = {}
    for var in dash["templating"]["list"]:
        q = interpolate(var_query(var), variables, selections, BUILTINS)
        try:
            values = sorted(label_values(prom, q, now))
        except (RuntimeError, AssertionError) as e:
            failures.append("[%s] variable %s: %s\n    %s" % (mode, var["name"], e, q))
            values = []
        if not values:
            failures.append("[%s] variable %s: no values\n    %s" % (mode, var["name"], q))
        var["_options"] = values
        if mode == "all" or not values:
            selections[var["name"]] = ALL
        else:
            selections[var["name"]] = [values[0] if mode == "first" else values[-1]]
    return variables, selections


# --------------------------------------------------------------------------
# Static checks

def test_prometheus_datasource_file():
    conf = load_yaml(PROM_YAML)
    assert conf["apiVersion"] == 1
    assert len(conf["datasources"]) == 1
    ds = conf["datasources"][0]
    assert ds["type"] == "prometheus" and ds["access"] == "proxy"
    assert ds["uid"] and ds["name"]
    assert ds["url"] == "http://127.0.0.1:9090"
    assert ds["editable"] is True and ds["isDefault"] is False
    assert ds["jsonData"]["httpMethod"] == "POST"
    # Prometheus's default scrape interval; the queries are tested with the
    # $__rate_interval Grafana makes of it (four of it).
    assert ds["jsonData"]["timeInterval"] == "15s" and BUILTINS["__rate_interval"] == "1m"
    # Grafana provisions every file of the directory: the datasources of all
    # of them need their own names and uids.
    files = sorted(os.listdir(DATASOURCES_DIR))
    assert "prometheus.yaml" in files and all(n.endswith(".yaml") for n in files), files
    every = [d for n in files for d in load_yaml(os.path.join(DATASOURCES_DIR, n))["datasources"]]
    for key in ("uid", "name"):
        values = [d[key] for d in every]
        assert len(set(values)) == len(values), (key, values)
    # The one dashboard provider loads the dashboard: it is in the directory
    # the provider's comment maps to options.path (test_dashboards checks that
    # mapping).
    with open(PROVIDER_YAML) as f:
        src = re.findall(r"^#\s+(\S+)\s+->\s+(\S+)\s*$", f.read(), re.M)[0][0]
    assert os.path.realpath(os.path.dirname(DASHBOARD)) == \
        os.path.realpath(os.path.join(harness.REPO_ROOT, src))
    assert len(load_yaml(PROVIDER_YAML)["providers"]) == 1


def test_prometheus_dashboard_model():
    ds = datasource()
    dash = load_dashboard()
    assert dash["title"] == TITLE
    assert dash.get("uid")
    assert dash.get("id") is None
    assert dash["schemaVersion"] >= 36
    assert dash["time"] == {"from": "now-1h", "to": "now"}
    assert "prometheus" in dash["tags"] and "mod_influx_metrics" in dash["tags"]

    names = []
    for var in dash["templating"]["list"]:
        where = "variable %s" % var.get("name")
        assert var["type"] == "query", where
        assert var["datasource"] == ds, where
        q = var_query(var)
        assert q.startswith("label_values(") and q == var.get("definition", q), where
        assert var.get("multi") and var.get("includeAll") and var.get("allValue") == ".*", where
        for used in used_variables(q):
            assert used in names, (where, used)
        assert metric_names(q) <= EXPOSED, (where, metric_names(q) - EXPOSED)
        names.append(var["name"])
    assert names == ["instance", "vhost", "route"], names

    panels = all_panels(dash)
    ids = [p.get("id") for p in panels]
    assert panels and len(set(ids)) == len(ids) and None not in ids, ids
    titles = [p.get("title") for p in panels]
    assert len(set(titles)) == len(titles), titles
    for p in panels:
        where = "panel %r" % p.get("title")
        assert isinstance(p.get("title"), str) and p["title"].strip(), where
        assert p["type"] in PANEL_TYPES, where
        assert p.get("datasource") == ds, where
        assert p.get("description"), where
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] + g["w"] <= 24, where
        ts = p.get("targets") or []
        assert ts, where
        refs = [t.get("refId") for t in ts]
        assert len(set(refs)) == len(refs) and None not in refs, where
        for t in ts:
            where = "panel %r %s" % (p["title"], t["refId"])
            assert t.get("datasource", p["datasource"]) == ds, where
            assert "query" not in t and "rawQuery" not in t, where
            expr = t["expr"]
            fmt = t.get("format", "time_series")
            assert fmt == {"heatmap": "heatmap", "table": "table"}.get(p["type"],
                                                                      fmt), where
            assert fmt in ("time_series", "table", "heatmap"), where
            # Tables and stats show one value per series: instant queries.
            assert t.get("instant") is (p["type"] in ("table", "stat")), where
            assert t.get("range") is (p["type"] not in ("table", "stat")), where
            for used in used_variables(expr):
                assert used in names or used in BUILTINS, (where, used)
            read = metric_names(expr)
            assert read and read <= EXPOSED, (where, read - EXPOSED)
            # Every range: $__rate_interval (never a fixed window or
            # $__interval, too short for rate() at a fine resolution), or
            # $__range for the totals of the time range.
            windows = re.findall(r"\[([^\]]*)\]", strip_strings(expr))
            if re.search(r"\b(rate|increase|irate)\(", expr):
                assert windows, where
            allowed = {"$__range"} if p["type"] in ("table", "stat") else {"$__rate_interval"}
            assert set(windows) <= allowed, (where, windows)
            # Every selector filters by the instance, those of request
            # metrics by vhost and route too (All is .*, which matches a
            # missing route).
            for metric, labels in selectors(expr):
                assert labels.get("instance") == ("=~", "$instance"), (where, metric)
                if metric in REQUEST_METRICS:
                    assert labels.get("vhost") == ("=~", "$vhost"), (where, metric)
                    assert labels.get("route") == ("=~", "$route"), (where, metric)
            assert len(selectors(expr)) == len(re.findall(r"\bapache_\w+", strip_strings(
                expr))), (where, "a metric without a selector")
            # No metric names by regex: rate() and increase() drop the names,
            # and Prometheus 2 refuses a result with a labelset twice.
            assert "__name__" not in expr, where

    # The panels the dashboard is for, with the queries they must make.
    by_title = {p["title"]: p for p in panels}

    def exprs(title):
        return [t["expr"] for t in by_title[title]["targets"]]
    assert "sum by (vhost) (rate(%s_count{" % D in exprs("Request rate")[0]
    assert 'status=~"5.."' in exprs("Error ratio (5xx)")[0]
    for q in ("0.5", "0.95", "0.99"):
        name = "p%d" % round(float(q) * 100)
        e = exprs("%s latency by vhost and route" % name)[0]
        assert e.startswith("histogram_quantile(%s, sum by (le, vhost, route) (rate(%s_bucket{"
                            % (q, D)), e
    assert "apache_response_bytes_total" in exprs("Bytes sent")[0]
    assert [metric_names(e) for e in exprs("Workers")] == [
        {"apache_busy_workers"}, {"apache_idle_workers"}, {"apache_max_workers"}]
    assert metric_names(exprs("Utilisation")[0]) == {"apache_busy_workers",
                                                      "apache_max_workers"}
    assert set().union(*map(metric_names, exprs("Points dropped, by reason"))) == \
        {"apache_influx_metrics_%s_total" % k for k in DROPS}
    assert metric_names(exprs("Points lost in the time range")[0]) == \
        {"apache_influx_metrics_%s_total" % k for k in DROPS}


# --------------------------------------------------------------------------
# Every query against a real Prometheus scraping the module

VHOST2 = "www.example.test"
MAX_WORKERS = 32
SITE = """
<Location "%s">
    # No raw points of the scrapes (the page never counts itself).
    InfluxMetrics Off
</Location>
<Location "/sub">
    InfluxMetricsRoute pages
</Location>
LoadModule delay_module {so}
<Location "/slow">
    SetHandler imx-delay
    InfluxMetricsRoute slow
</Location>
<Location "/fail">
    SetHandler imx-delay
    InfluxMetricsRoute fail
</Location>
<VirtualHost *:{port}>
    ServerName localhost
</VirtualHost>
<VirtualHost *:{port}>
    ServerName {vhost2}
</VirtualHost>
""" % PAGE
# (path, extra ab arguments, requests per vhost, concurrency)
LOAD = [
    ("index.html", [], 150, 4),
    ("index.html", ["-i"], 30, 2),           # HEAD
    ("small.txt", [], 150, 4),
    ("big.bin", [], 20, 2),
    ("sub/page.html", [], 100, 4),           # route pages
    ("sub/missing.html", [], 20, 2),         # 404 in route pages
    ("nope", [], 40, 2),                     # 404 without a route
    ("fail?status=503", [], 30, 2),          # 503, route fail
    ("slow?us=300000", [], 16, 4),           # 300 ms, route slow
]
SLOW_ROUTE = "slow"
ERRORS_PER_VHOST = 30


def run_load(h, scale):
    """Every LOAD line for both vhosts at once (n * scale requests, at least
    1); returns the requests per vhost."""
    runs = []
    per_vhost = collections.Counter()
    try:
        for path, args, n, c in LOAD:
            n = max(1, int(n * scale))
            for vhost in ("localhost", VHOST2):
                extra = list(args) + (["-H", "Host: " + vhost] if vhost != "localhost" else [])
                runs.append((vhost, n, harness.AbBackground(h.url + path, n, min(c, n),
                                                            extra_args=extra)))
        for vhost, n, run in runs:
            res = run.wait(timeout=60)
            assert res.complete == n and res.failed == 0, res.output
            per_vhost[vhost] += n
    finally:
        for _, _, run in runs:
            if run.running():
                run.stop()
    return per_vhost


def logged(h):
    return [e for e in h.access_log_entries() if e.path not in (PAGE, harness.PROBE_PATH)]


def last_scrape(prom):
    """Timestamp (ms) of Prometheus's latest scrape of the page."""
    return round(prom.value("max(timestamp(apache_max_workers))") * 1000)


def finite(values):
    return [v for v in values if not math.isnan(v) and not math.isinf(v)]


def test_dashboard_queries_against_prometheus(module_built, mod_delay, httpd_factory,  # noqa: F811
                                              influx, influx_db):
    port = harness.free_port()
    h = httpd_factory(
        mpm="event", port=port, mpm_conf=harness.fixed_threaded(2, MAX_WORKERS // 2),
        extra=str(Imx(influx.write_url(influx_db))) + PROM_CONF
        + SITE.format(so=mod_delay, port=port, vhost2=VHOST2))
    dash = load_dashboard()
    panels = {p["title"]: p for p in all_panels(dash)}
    with Prometheus(["%s:%d" % (harness.HOST, h.port)], PAGE, interval="1s") as prom:
        # Every series the load makes, made first: one request of each kind,
        # so that the window of the number checks starts with all of them.
        warm = run_load(h, 0)
        n_warm = settle(h)
        assert n_warm == sum(warm.values()) == 2 * len(LOAD)
        wait_prometheus_count(prom, n_warm)
        before = collections.Counter((e.status for e in logged(h)))
        bytes_before = sum(e.bytes for e in logged(h))
        t_a = last_scrape(prom)

        per_vhost = run_load(h, 1)
        total = settle(h)
        assert total == n_warm + sum(per_vhost.values())
        wait_prometheus_count(prom, total)
        t_b = last_scrape(prom)
        entries = logged(h)
        statuses = collections.Counter(e.status for e in entries) - before
        main_bytes = sum(e.bytes for e in entries) - bytes_before
        assert statuses[503] == 2 * ERRORS_PER_VHOST and statuses[404] > 0, statuses

        # 1. Every query, in every mode of the variables, succeeds with data.
        failures = []
        ran = 0
        now = time.time()
        for mode in ("all", "first", "last"):
            variables, selections = resolve_variables(prom, dash, mode, now, failures)
            ran += len(variables)
            for panel, t in targets(dash):
                where = "[%s] %r %s" % (mode, panel["title"], t["refId"])
                try:
                    q = interpolate(t["expr"], variables, selections, BUILTINS)
                except KeyError as e:
                    failures.append("%s: %s" % (where, e))
                    continue
                ran += 1
                try:
                    res = prom.query(q, at=now)
                    if t.get("range"):
                        rng = prom.api("query_range", query=q, start="%.3f" % (now - 30),
                                       end="%.3f" % now, step="1")["result"]
                except RuntimeError as e:
                    failures.append("%s: %s\n    %s" % (where, e, q))
                    continue
                values = [v for _, v in res]
                problem = None
                if not values:
                    problem = "no result"
                elif finite(values) != values:
                    problem = "not a number: %r" % res
                elif t.get("range") and not finite(float(v) for s in rng
                                                   for _, v in s["values"]):
                    problem = "no number in the range query"
                if problem:
                    failures.append("%s: %s\n    %s" % (where, problem, q))
        assert not failures, "%d of %d queries failed:\n%s" % (
            len(failures), ran, "\n".join(failures))

        # Every metric the dashboard reads is one Prometheus has.
        stored = set(prom.api("label/__name__/values"))
        read = set().union(*(metric_names(t["expr"]) for _, t in targets(dash)))
        assert read <= stored, sorted(read - stored)

        # 2. The numbers, over exactly the load: the window from the scrape
        # t_a to the scrape t_b (plus 1 ms, so that t_a is inside it also
        # where the range's start is excluded), evaluated at t_b.
        variables, selections = resolve_variables(prom, dash, "all", now, failures)
        assert not failures, failures
        window = dict(BUILTINS, __rate_interval="%dms" % (t_b - t_a + 1))
        span = (t_b - t_a) / 1000.0

        def panel(title, ref="A", builtins=window, at=t_b / 1000.0):
            t = next(t for t in panels[title]["targets"] if t["refId"] == ref)
            return prom.query(interpolate(t["expr"], variables, selections, builtins), at=at)

        got = {m["vhost"]: v * span for m, v in panel("Request rate")}
        assert set(got) == set(per_vhost), got
        for vhost, n in per_vhost.items():
            assert abs(got[vhost] - n) < 1e-6 * n, (vhost, got[vhost], n)
        got = {m["status"]: v * span for m, v in panel("Responses by status")}
        assert {s: round(v) for s, v in got.items() if round(v)} == \
            {str(s): n for s, n in statuses.items()}, (got, statuses)
        assert all(abs(v - round(v)) < 1e-6 for v in got.values()), got
        got = sum(v for _, v in panel("Bytes sent")) * span
        assert main_bytes > 0 and abs(got - main_bytes) < 1e-6 * main_bytes, (got, main_bytes)
        got = {m["vhost"]: v for m, v in panel("Error ratio (5xx)")}
        assert set(got) == set(per_vhost), got
        for vhost, n in per_vhost.items():
            assert abs(got[vhost] - ERRORS_PER_VHOST / n) < 1e-9, (vhost, got[vhost])

        # A route without 5xx has a ratio of 0, not no line.
        pages = dict(selections, route=["pages"])
        t = panels["Error ratio (5xx)"]["targets"][0]
        res = prom.query(interpolate(t["expr"], variables, pages, window), at=t_b / 1000.0)
        assert sorted(res, key=lambda r: r[0]["vhost"]) == \
            [({"vhost": "localhost"}, 0.0), ({"vhost": VHOST2}, 0.0)], res

        # Quantiles: the 300 ms route in its bucket, all of them plausible.
        for name in ("p50", "p95", "p99"):
            res = panel("%s latency by vhost and route" % name)
            by = {(m["vhost"], m.get("route", "")): v for m, v in res}
            assert {r for _, r in by} == {"", "pages", "fail", SLOW_ROUTE}, by
            for (vhost, route), v in by.items():
                assert 0 < v <= 10, (name, vhost, route, v)
                if route == SLOW_ROUTE:
                    assert 0.25 < v <= 0.5, (name, vhost, v)
            overall = panel("Latency: mean, p50, p95, p99",
                            ref={"p50": "B", "p95": "C", "p99": "D"}[name])
            assert len(overall) == 1 and 0 < overall[0][1] <= 10, overall

        # Capacity, from one scrape.
        busy = panel("Workers", "A")
        idle = panel("Workers", "B")
        mx = panel("Workers", "C")
        util = panel("Utilisation")
        assert [v for _, v in mx] == [MAX_WORKERS], mx
        assert len(busy) == len(idle) == len(util) == 1, (busy, idle, util)
        assert 1 <= busy[0][1] and busy[0][1] + idle[0][1] <= MAX_WORKERS, (busy, idle)
        assert util[0][1] == busy[0][1] / MAX_WORKERS, (util, busy)

        # The module's counters: every request of the load recorded, none lost.
        for ref in "ABCDEF":
            assert [v for _, v in panel("Points dropped, by reason", ref)] == [0.0], ref
        lost = panel("Points lost in the time range", at=t_b / 1000.0)
        assert [v for _, v in lost] == [0.0], lost
        recorded = panel("Points recorded and sent", "A")
        assert abs(recorded[0][1] * span - sum(per_vhost.values())) < 1e-6, \
            (recorded, per_vhost)
        assert panel("Points recorded and sent", "B")[0][1] > 0
