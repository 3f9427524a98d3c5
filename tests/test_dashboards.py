# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""Grafana provisioning and the InfluxDB dashboards under conf/grafana (the
Prometheus one has tests/test_prometheus_dashboard.py).

The static tests check the provisioning files and the dashboard JSON models
(titles, datasource uid, targets, variables). The integration test runs every
query of every dashboard - panel targets and template-variable queries, with
Grafana's macros and variables substituted the way Grafana's InfluxQL
datasource does - against a real InfluxDB holding data the module wrote
(InfluxMetricsMode both, routes, sampling, two virtual hosts, 404s and 503s,
every InfluxMetricsFields name, an InfluxMetricsSLO),
and requires each to return data.
"""

import glob
import json
import math
import os
import re
import time

import harness
from harness import Imx

GRAFANA_DIR = os.path.join(harness.REPO_ROOT, "conf", "grafana")
DASHBOARD_DIR = os.path.join(GRAFANA_DIR, "dashboards")
DATASOURCE_YAML = os.path.join(GRAFANA_DIR, "provisioning", "datasources", "influxdb.yaml")
PROVIDER_YAML = os.path.join(GRAFANA_DIR, "provisioning", "dashboards",
                             "mod_influx_metrics.yaml")

# Dashboard file -> (title, the measurement its queries read).
EXPECTED = {
    "requests.json": ("Requests", "apache_request"),
    "summary.json": ("Summary", "apache_summary"),
    "capacity.json": ("Capacity", "apache_process"),
    "health.json": ("Module health", "apache_influx_metrics"),
}
# Dashboards of another datasource, in the same directory and provider, tested
# elsewhere: file -> test module.
OTHER_DASHBOARDS = {"prometheus.json": "test_prometheus_dashboard.py"}
PANEL_TYPES = {"timeseries", "heatmap", "table", "stat", "bargauge", "gauge",
               "barchart", "piechart", "histogram", "state-timeline"}

# What the test substitutes for Grafana's interval macros.
INTERVAL_S = 10


# --------------------------------------------------------------------------
# The YAML subset of the provisioning files (stdlib only: no PyYAML)

def _yaml_lines(text):
    out = []
    for raw in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if line.strip():
            if "\t" in line[:len(line) - len(line.lstrip())]:
                raise ValueError("tab in indentation: %r" % raw)
            out.append([len(line) - len(line.lstrip()), line.strip()])
    return out


def _yaml_scalar(s):
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'":
        return s[1:-1]
    if s in ("true", "false"):
        return s == "true"
    if s in ("null", "~"):
        return None
    if re.fullmatch(r"-?[0-9]+", s):
        return int(s)
    if s[:1] in "[{&*!|>%@`":
        raise ValueError("YAML feature outside the supported subset: %r" % s)
    return s


def _yaml_block(lines, i, indent):
    if lines[i][1].startswith("- ") or lines[i][1] == "-":
        items = []
        while i < len(lines) and lines[i][0] == indent and lines[i][1][:1] == "-":
            rest = lines[i][1][1:].strip()
            if not rest or ":" not in rest:
                items.append(_yaml_scalar(rest) if rest else None)
                i += 1
                continue
            # "- key: value" opens a mapping indented past the dash.
            lines[i] = [indent + 2, rest]
            value, i = _yaml_block(lines, i, indent + 2)
            items.append(value)
        return items, i
    mapping = {}
    while i < len(lines) and lines[i][0] == indent and lines[i][1][:1] != "-":
        key, sep, rest = lines[i][1].partition(":")
        if not sep or (rest and not rest.startswith(" ")):
            raise ValueError("not a 'key: value' line: %r" % lines[i][1])
        key, rest = key.strip(), rest.strip()
        if key in mapping:
            raise ValueError("duplicate key %r" % key)
        i += 1
        if rest:
            mapping[key] = _yaml_scalar(rest)
        elif i < len(lines) and (lines[i][0] > indent or
                                 (lines[i][0] == indent and lines[i][1][:1] == "-")):
            mapping[key], i = _yaml_block(lines, i, lines[i][0])
        else:
            mapping[key] = None
    return mapping, i


def load_yaml(path):
    with open(path) as f:
        lines = _yaml_lines(f.read())
    value, i = _yaml_block(lines, 0, lines[0][0])
    if i != len(lines):
        raise ValueError("%s: cannot parse from line %r" % (path, lines[i][1]))
    return value


# --------------------------------------------------------------------------
# Dashboards

def dashboard_files():
    return sorted(glob.glob(os.path.join(DASHBOARD_DIR, "*.json")))


def load_dashboards(names=None):
    """{file name: model} of the dashboards (of those in names, if given)."""
    out = {}
    for path in dashboard_files():
        if names is None or os.path.basename(path) in names:
            with open(path, encoding="utf-8") as f:
                out[os.path.basename(path)] = json.load(f)
    return out


def all_panels(dash):
    """Every panel, including those nested in (collapsed) rows."""
    out = []
    todo = list(dash.get("panels", []))
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo[0:0] = p.get("panels", [])
    return out


def var_query(var):
    """A query variable's InfluxQL (Grafana 10 may store it as an object)."""
    q = var["query"]
    return q["query"] if isinstance(q, dict) else q


def datasource_uid():
    ds = load_yaml(DATASOURCE_YAML)["datasources"]
    return ds[0]["uid"]


# --------------------------------------------------------------------------
# Grafana's variable interpolation

# templateSrv's variable syntax: $var, [[var]] / [[var:fmt]], ${var} / ${var:fmt}.
VAR_RE = re.compile(r"\$(\w+)"
                    r"|\[\[(\w+?)(?::(\w+))?\]\]"
                    r"|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}")
ALL = "$__all"


def escape_regex(value):
    """@grafana/data escapeRegex, used by the InfluxDB datasource for the
    values of multi-value / include-All variables."""
    return re.sub(r"([\\^$*+?.()|\[\]{}/])", r"\\\1", value)


def format_value(var, selection, fmt):
    """The text Grafana's InfluxDB datasource puts in place of a variable."""
    if selection == ALL:
        if var.get("allValue"):
            return var["allValue"]
        selection = var["_options"]
    if fmt == "raw":
        return ",".join(selection)
    if fmt not in (None, "regex"):
        raise ValueError("variable format %r is not handled by this test" % fmt)
    if not var.get("multi") and not var.get("includeAll"):
        # A plain single-value variable is inserted as it is (numbers too).
        return selection[0]
    escaped = [escape_regex(v) for v in selection]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def interpolate(text, variables, selections, builtins, format_value=format_value):
    """Replaces macros and variables; raises KeyError for an unknown one (Grafana
    would leave it in the query, which InfluxDB then rejects or misreads).
    format_value: how a selection is written (InfluxQL's, unless given)."""
    def repl(m):
        name = m.group(1) or m.group(2) or m.group(4)
        fmt = m.group(3) or m.group(6)
        if name in builtins:
            return builtins[name]
        if name in selections:
            return format_value(variables[name], selections[name], fmt)
        raise KeyError("unknown variable or macro $%s in %r" % (name, text))
    return VAR_RE.sub(repl, text)


def builtins_for(time_filter, now_ms):
    return {
        "timeFilter": time_filter,
        "__interval": "%ds" % INTERVAL_S,
        "interval": "%ds" % INTERVAL_S,
        "__interval_ms": str(INTERVAL_S * 1000),
        "__from": str(now_ms - 3600 * 1000),
        "__to": str(now_ms),
    }


# Two renderings of $timeFilter for the range now-1h..now: the browser-side
# datasource's (relative) and the server-side one's (absolute, in ms), which
# Grafana 10 uses for InfluxQL.
def frontend_time_filter(now_ms):
    return "time >= now() - 1h"


def backend_time_filter(now_ms):
    return "time >= %dms and time <= %dms" % (now_ms - 3600 * 1000, now_ms)


# --------------------------------------------------------------------------
# Static checks

def test_provisioning_files():
    ds_conf = load_yaml(DATASOURCE_YAML)
    assert ds_conf["apiVersion"] == 1
    assert len(ds_conf["datasources"]) == 1
    ds = ds_conf["datasources"][0]
    assert ds["type"] == "influxdb" and ds["access"] == "proxy"
    assert ds["uid"] and ds["name"]
    assert ds["url"] == "http://127.0.0.1:8086"
    assert ds["editable"] is True
    assert ds["jsonData"]["version"] == "InfluxQL"
    assert ds["jsonData"]["dbName"] == "apache"
    assert ds.get("database", ds["jsonData"]["dbName"]) == ds["jsonData"]["dbName"]
    # The minimum interval matches what the queries are tested with.
    assert ds["jsonData"]["timeInterval"] == "%ds" % INTERVAL_S

    prov_conf = load_yaml(PROVIDER_YAML)
    assert prov_conf["apiVersion"] == 1
    assert len(prov_conf["providers"]) == 1
    prov = prov_conf["providers"][0]
    assert prov["type"] == "file" and prov["name"] and prov["folder"]
    path = prov["options"]["path"]
    assert os.path.isabs(path)
    # The file documents where conf/grafana/dashboards is installed; that must be
    # options.path, and the source must be the directory holding the JSON files.
    with open(PROVIDER_YAML) as f:
        mapping = re.findall(r"^#\s+(\S+)\s+->\s+(\S+)\s*$", f.read(), re.M)
    assert len(mapping) == 1, mapping
    src, dst = mapping[0]
    assert dst.rstrip("/") == path.rstrip("/")
    assert os.path.realpath(os.path.join(harness.REPO_ROOT, src)) == \
        os.path.realpath(DASHBOARD_DIR)
    assert not prov["options"].get("foldersFromFilesStructure")
    assert dashboard_files(), "no dashboards in %s" % DASHBOARD_DIR
    # Nothing but dashboards in that directory (Grafana would try to load it).
    extra = [n for n in os.listdir(DASHBOARD_DIR) if not n.endswith(".json")]
    assert not extra, extra


def test_dashboard_models():
    uid = datasource_uid()
    everything = load_dashboards()
    assert set(everything) == set(EXPECTED) | set(OTHER_DASHBOARDS), sorted(everything)
    # Dashboard uids are unique across all of them (one provider loads them all).
    all_uids = [d.get("uid") for d in everything.values()]
    assert None not in all_uids and len(set(all_uids)) == len(all_uids), all_uids
    dashboards = load_dashboards(EXPECTED)
    uids = set()
    for name, dash in dashboards.items():
        title, measurement = EXPECTED[name]
        where = name
        assert dash["title"] == title, where
        assert dash.get("uid") and dash["uid"] not in uids, where
        uids.add(dash["uid"])
        # Provisioned dashboards carry no database id; schemaVersion 36 is Grafana 9.0.
        assert dash.get("id") is None, where
        assert dash["schemaVersion"] >= 36, where
        assert dash["time"] == {"from": "now-1h", "to": "now"}, where

        names = []
        for var in dash["templating"]["list"]:
            where = "%s variable %s" % (name, var.get("name"))
            assert var["type"] == "query", where
            assert var["datasource"] == {"type": "influxdb", "uid": uid}, where
            assert var_query(var).startswith("SHOW TAG VALUES"), where
            assert var_query(var) == var.get("definition", var_query(var)), where
            assert var.get("includeAll") and var.get("allValue") == ".*", where
            # Only variables defined before can be used (Grafana resolves them in order).
            for m in VAR_RE.finditer(var_query(var)):
                used = m.group(1) or m.group(2) or m.group(4)
                assert used in names or used == "timeFilter", (where, used)
            names.append(var["name"])
        assert "host" in names, name
        if measurement in ("apache_request", "apache_summary"):
            assert {"vhost", "route"} <= set(names), name

        panels = all_panels(dash)
        assert panels, name
        ids = [p.get("id") for p in panels]
        assert len(set(ids)) == len(ids) and None not in ids, (name, ids)
        for p in panels:
            where = "%s panel %r" % (name, p.get("title"))
            assert isinstance(p.get("title"), str) and p["title"].strip(), where
            assert p["type"] in PANEL_TYPES, where
            assert p.get("datasource") == {"type": "influxdb", "uid": uid}, where
            g = p["gridPos"]
            assert g["w"] > 0 and g["h"] > 0 and g["x"] + g["w"] <= 24, where
            targets = p.get("targets") or []
            assert targets, where
            refs = [t.get("refId") for t in targets]
            assert len(set(refs)) == len(refs) and None not in refs, where
            for t in targets:
                assert t.get("datasource", p["datasource"]) == p["datasource"], where
                assert t.get("rawQuery") is True, where
                assert t.get("resultFormat") in ("time_series", "table"), where
                q = t["query"]
                assert q.startswith("SELECT "), where
                # The database comes from the datasource, never from the query.
                assert not re.search(r'"[^"]*"\s*\.\s*"', q) and "autogen" not in q, where
                assert '"%s"' % measurement in q, where
                others = set(m for _, m in EXPECTED.values()) - {measurement}
                assert not any('"%s"' % m in q for m in others), where
                assert "$timeFilter" in q, where
                if "GROUP BY time(" in q:
                    assert "GROUP BY time($__interval)" in q, where
                for m in VAR_RE.finditer(q):
                    used = m.group(1) or m.group(2) or m.group(4)
                    assert used in names or used in builtins_for("", 0), (where, used)


# --------------------------------------------------------------------------
# Every query against data written by the module

SITE = """
<Location "/sub">
    InfluxMetricsRoute pages
</Location>
<Location "/big.bin">
    InfluxMetricsRoute download
    InfluxMetricsSample 0.5
</Location>
Redirect 503 /sub/boom
<VirtualHost *:{port}>
    ServerName localhost
</VirtualHost>
<VirtualHost *:{port}>
    ServerName {vhost2}
    InfluxMetricsTag site "second site"
</VirtualHost>
"""
VHOST2 = "www.example.test"
# Every optional field (mod_unique_id gives every request an id) and an
# objective, for the panels that read them.
FIELDS = ("InfluxMetricsFields ttfb bytes_received request_id protocol tls upstream\n"
          "InfluxMetricsSLO 100ms\n")
# (path, extra ab arguments, requests per vhost and round)
LOAD = [
    ("index.html", [], 25),
    ("index.html", ["-i"], 10),          # HEAD
    ("small.txt", [], 25),
    ("sub/page.html", [], 25),
    ("sub/missing.html", [], 10),        # 404 in route pages
    ("nope", [], 10),                    # 404 outside any route
    ("sub/boom", [], 5),                 # 503 (Redirect 503), route pages
    ("big.bin", [], 10),                 # route download, sampled at 0.5
]


def generate_traffic(h, at_least=3000):
    """Rounds of ab runs (all paths, both vhosts, in parallel) for at least
    2 s on each side of a 10 s boundary, so that every series has points in
    two GROUP BY time(10s) intervals, which the derivative and difference
    queries need; and until at_least requests were served. Returns the
    number of requests per path."""
    served = {}
    t0 = time.time()
    boundary = (int(t0 + 2) // INTERVAL_S + 1) * INTERVAL_S
    end = boundary + 2.5
    deadline = time.monotonic() + 90
    while time.time() < end or sum(served.values()) < at_least:
        assert time.monotonic() < deadline, "traffic generation took too long: %r" % served
        runs = []
        try:
            for path, args, n in LOAD:
                for vhost in (None, VHOST2):
                    extra = list(args) + (["-H", "Host: " + vhost] if vhost else [])
                    runs.append((path, n, harness.AbBackground(h.url + path, n, 2,
                                                               extra_args=extra)))
            for path, n, run in runs:
                res = run.wait(timeout=60)
                assert res.complete == n and res.failed == 0, res.output
                served[path] = served.get(path, 0) + n
        finally:
            for _, _, run in runs:
                if run.running():
                    run.stop()
        time.sleep(0.05)
    return served


def run_query(influx, db, q):
    """(series, error): Grafana asks for epoch=ms."""
    try:
        res = influx.query(q, db=db, epoch="ms", timeout=30)
    except RuntimeError as e:
        return None, str(e)
    result = res["results"][0]
    return result.get("series") or [], None


def check_series(series, alias=None, rename=None):
    """Problems with a query's series: none, no value, a column without any
    value (a misspelt field), a $tag_x alias without that tag, or columns the
    panel's rename regex does not match."""
    if not series:
        return ["no series"]
    problems = []
    seen = {}
    for s in series:
        for row in s.get("values") or []:
            for col, v in zip(s["columns"], row):
                if col != "time":
                    seen[col] = seen.get(col, False) or v is not None
        for tag in re.findall(r"\$tag_(\w+)|\[\[tag_(\w+)\]\]", alias or ""):
            tag = tag[0] or tag[1]
            if tag not in (s.get("tags") or {}):
                problems.append("alias uses $tag_%s, series has tags %r" % (tag, s.get("tags")))
        if rename:
            bad = [c for c in s["columns"] if c != "time" and not re.search(rename, c)]
            if bad:
                problems.append("columns not matched by the rename regex: %r" % bad[:5])
    if not seen:
        problems.append("series without rows")
    empty = sorted(c for c, ok in seen.items() if not ok)
    if empty:
        problems.append("columns without any value: %r" % empty)
    return problems


def resolve_variables(influx, db, dash, mode, builtins, failures, where):
    """Runs the dashboard's variable queries in order, each with the
    selections made so far, and selects All, the first or the last value."""
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    selections = {}
    for var in dash["templating"]["list"]:
        q = interpolate(var_query(var), variables, selections, builtins)
        series, err = run_query(influx, db, q)
        values = [] if err else [row[1] for s in series for row in s["values"]]
        if var.get("sort") in (1, 5):
            values.sort(key=(str.lower if var["sort"] == 5 else None))
        elif var.get("sort") in (2, 6):
            values.sort(key=(str.lower if var["sort"] == 6 else None), reverse=True)
        if err or not values:
            failures.append("%s [%s] variable %s: %s\n    %s"
                            % (where, mode, var["name"], err or "no values", q))
        var["_options"] = values
        if mode == "all" or not values:
            selections[var["name"]] = ALL
        else:
            selections[var["name"]] = [values[0] if mode == "first" else values[-1]]
    return variables, selections


def panel_rename_regex(panel):
    for t in panel.get("transformations", []):
        if t["id"] == "renameByRegex":
            return t["options"]["regex"]
    return None


def test_dashboard_queries_return_data(module_built, influx, influx_db, httpd_factory):
    port = harness.free_port()
    h = httpd_factory(
        mpm="event", port=port, modules=["alias", "unique_id"],
        extra=str(Imx(influx.write_url(influx_db), flush_interval="200ms",
                      extra="InfluxMetricsMode both\n" + FIELDS))
        + SITE.format(port=port, vhost2=VHOST2))
    served = generate_traffic(h)
    total = sum(served.values())
    for measurement, field in (("apache_request", "duration_us"),
                               ("apache_summary", "count"),
                               ("apache_process", "busy_workers"),
                               ("apache_influx_metrics", "sent")):
        harness.wait_until(lambda: influx.count(influx_db, measurement, field) > 0,
                           15, 0.2, "no %s points" % measurement)
    # Children flush what they hold as they exit.
    h.graceful_stop()
    assert h.access_log_count() == total
    assert influx.count(influx_db, "apache_request", field="sample_rate") > 0

    dashboards = load_dashboards(EXPECTED)
    assert set(dashboards) == set(EXPECTED)
    failures = []
    ran = 0
    totals = {}
    now_ms = int(time.time() * 1000)
    for mode, time_filter in (("all", frontend_time_filter(now_ms)),
                              ("first", backend_time_filter(now_ms)),
                              ("last", frontend_time_filter(now_ms))):
        builtins = builtins_for(time_filter, now_ms)
        for name, dash in sorted(dashboards.items()):
            variables, selections = resolve_variables(influx, influx_db, dash, mode,
                                                      builtins, failures, name)
            ran += len(variables)
            for panel in all_panels(dash):
                for t in panel["targets"]:
                    where = "%s [%s] %r %s" % (name, mode, panel["title"], t["refId"])
                    try:
                        q = interpolate(t["query"], variables, selections, builtins)
                    except KeyError as e:
                        failures.append("%s: %s" % (where, e))
                        continue
                    series, err = run_query(influx, influx_db, q)
                    ran += 1
                    problems = [err] if err else check_series(
                        series, t.get("alias"), panel_rename_regex(panel))
                    if problems:
                        failures.append("%s: %s\n    %s" % (where, "; ".join(problems), q))
                    elif mode == "all":
                        totals[(name, panel["title"], t["refId"])] = series
    assert not failures, "%d of %d queries failed:\n%s" % (
        len(failures), ran, "\n".join(failures))

    # The rate panels add up to the requests served: summaries count every
    # request; the raw estimate scales the sampled route by 1/sample_rate.
    def summed(key, col):
        return sum((row[s["columns"].index(col)] or 0) * INTERVAL_S
                   for s in totals[key] for row in s["values"])
    assert round(summed(("summary.json", "Request rate", "A"), "requests/s")) == total
    assert round(summed(("requests.json", "Request rate", "B"), "points stored/s")) == \
        influx.count(influx_db, "apache_request")
    estimate = summed(("requests.json", "Request rate", "A"), "requests/s (estimated)")
    # n requests kept with probability 0.5 and counted twice: the estimate of
    # that part is 2 Binomial(n, 0.5), standard deviation sqrt(n).
    assert abs(estimate - total) < 6 * math.sqrt(served["big.bin"]), (estimate, total)
