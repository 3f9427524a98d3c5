# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""The Prometheus page (SetHandler influx-metrics-prometheus), scraped by a
real Prometheus (Debian's, 1 s interval) on a loopback port.

Ground truth is httpd's access log: every request in it is counted once in
apache_request_duration_seconds, except the scrapes of the page itself
(the page does not count itself) and the harness's readiness probes (left
out with InfluxMetrics Off, as every test server here has).

    * exact: the sum of _count over all series, as Prometheus's HTTP API
      gives it, equals the requests served, across child recycling and a
      graceful restart, on all three MPMs, and under HTTP/2;
    * the same label values as the raw points (compared series by series
      with a real InfluxDB fed by the same server);
    * histogram_quantile(0.99) lies in the bucket of the true p99;
    * promtool check metrics accepts the 0.0.4 page; Prometheus's own
      OpenMetrics parser and the Python client's strict one accept the
      OpenMetrics page, exemplars included;
    * scrapes during a graceful restart, a SIGKILL of a child and a stop
      never crash or wedge httpd, and no counter ever goes down;
    * a full restart starts from zero, a graceful one does not.
"""

import math
import os
import re
import signal
import subprocess
import threading
import time

import pytest

import harness
from harness import MPMS, Imx, Prometheus, ab, h2load, http_request, wait_until
from test_summary import delay_conf, drive, mod_delay  # noqa: F401 - a fixture

PAGE = "/metrics"
PROM_CONF = """
<Location "%s">
    SetHandler influx-metrics-prometheus
</Location>
""" % PAGE
OM_ACCEPT = "application/openmetrics-text; version=1.0.0"
COUNT = "apache_request_duration_seconds_count"

# Children that each serve 100 connections, then exit: ab without
# keep-alive makes one connection per request, so a few thousand requests
# go through dozens of children.
RECYCLING = harness.mpm_profile(
    threaded={"StartServers": 2, "ServerLimit": 8, "ThreadsPerChild": 8,
              "MinSpareThreads": 8, "MaxSpareThreads": 32, "MaxRequestWorkers": 32,
              "MaxConnectionsPerChild": 100},
    prefork={"StartServers": 4, "MinSpareServers": 2, "MaxSpareServers": 8,
             "ServerLimit": 16, "MaxRequestWorkers": 16, "MaxConnectionsPerChild": 100})


def served(h):
    """Requests in the access log that the page counts: all but probes and
    scrapes."""
    return sum(1 for e in h.access_log_entries()
               if e.path not in (PAGE, harness.PROBE_PATH))


def settle(h, timeout=20.0):
    """Waits until the access log stops growing (the last lines are written
    after the responses went out); returns served(h)."""
    last = [-1, time.monotonic()]

    def still():
        n = served(h)
        if n != last[0]:
            last[0], last[1] = n, time.monotonic()
        return time.monotonic() - last[1] > 0.5
    wait_until(still, timeout, 0.1)
    return served(h)


def scrape(h, om=False, timeout=10.0):
    headers = {"Accept": OM_ACCEPT} if om else {}
    status, body, hdrs = http_request(h.url.rstrip("/") + PAGE, headers=headers,
                                      timeout=timeout)
    assert status == 200, (status, body[:300])
    return body.decode(), hdrs


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)(?: # .*)?$')


def samples(text):
    """{(name, labels text): value} of a page (either format)."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, "unparsable line %r" % line
        out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def page_count(h):
    return sum(v for (n, _), v in samples(scrape(h)[0]).items() if n == COUNT)


def wait_prometheus_count(prom, expected, timeout=30.0):
    """Waits until Prometheus's latest scrape sums to expected; fails if it
    never does (a count above it fails at once: a request counted twice)."""
    seen = []

    def ok():
        v = prom.value("sum(%s)" % COUNT)
        seen.append(v)
        assert v is None or v <= expected, \
            "Prometheus counts %s requests, %d were served" % (v, expected)
        return v == expected
    try:
        wait_until(ok, timeout, 0.25)
    except TimeoutError:
        raise AssertionError("Prometheus counts %s requests (last values %s), %d were served"
                             % (seen[-1] if seen else None, seen[-5:], expected)) from None


@pytest.mark.allowed_errors(r"AH00161: server reached MaxRequestWorkers")
@pytest.mark.parametrize("mpm", MPMS)
def test_count_exact_across_recycling_and_graceful(module_built, httpd_factory, mpm):
    """No InfluxMetricsURL: the page alone. Dozens of children come and go
    (MaxConnectionsPerChild), a graceful restart comes in the middle of the
    load, and Prometheus still counts every request once."""
    h = httpd_factory(mpm=mpm, mpm_conf=RECYCLING[mpm], extra=PROM_CONF)
    with Prometheus(["%s:%d" % (harness.HOST, h.port)], PAGE) as prom:
        ab(h.url + "small.txt", 1500, 8, keepalive=False)
        bg = harness.AbBackground(h.url + "index.html", 1500, 4, keepalive=False)
        time.sleep(0.3)
        h.graceful()
        bg.wait(timeout=120)
        ab(h.url + "missing.txt", 300, 4, keepalive=False)   # 404s
        expected = settle(h)
        assert expected >= 3300 - 10, expected
        wait_prometheus_count(prom, expected)
        # Prometheus parsed every scrape (OpenMetrics, its first choice).
        assert all(hl == "up" for hl, _ in prom.target_health()), prom.target_health()
        by_status = {r["status"]: v for r, v in
                     prom.query("sum by (status) (%s)" % COUNT)}
        assert by_status.get("404") == 300, by_status


@pytest.mark.parametrize("mpm", ["event"])
def test_h2_count_exact(module_built, httpd_factory, mpm):
    """HTTP/2: mod_http2 runs requests on its own worker threads, several
    streams of one connection at once; each stream is one request."""
    h = httpd_factory(mpm=mpm, modules=["http2"], extra=harness.H2C_CONF + PROM_CONF)
    with Prometheus(["%s:%d" % (harness.HOST, h.port)], PAGE) as prom:
        r = h2load(h.url + "small.txt", 6000, c=4, m=8)
        assert r.succeeded == 6000, r
        expected = settle(h)
        assert expected == 6000
        wait_prometheus_count(prom, expected)
        got = {(m["method"], m["status"]): v
               for m, v in prom.query("sum by (method, status) (%s)" % COUNT)}
        assert got == {("GET", "200"): 6000.0}, got


def test_labels_match_raw_points(module_built, httpd_factory, influx, influx_db):
    """Raw points and the page from one server: the same series (vhost,
    route, method, status and the static tags) with the same counts. A route
    name with quotes, a backslash, a comma and an equals sign comes through
    both as the same text."""
    odd_route = 'we"ird\\route,x=y'
    extra = str(Imx(influx.write_url(influx_db), tags={"dc": "eu-1"})) + PROM_CONF + """
<Location "%s">
    # As for the status page: no raw points of the scrapes.
    InfluxMetrics Off
</Location>
<Location "/sub">
    InfluxMetricsRoute "%s"
</Location>
<Location "/index.html">
    InfluxMetricsRoute home
</Location>
""" % (PAGE, odd_route.replace("\\", "\\\\").replace('"', '\\"'))
    h = httpd_factory(mpm="worker", extra=extra)
    ab(h.url + "small.txt", 400, 4)
    ab(h.url + "index.html", 200, 4)
    ab(h.url + "sub/page.html", 100, 2)
    ab(h.url + "nothing-here", 50, 2)
    ab(h.url + "small.txt", 30, 1, extra_args=["-i"])          # HEAD
    expected = settle(h)
    page = scrape(h)[0]
    h.stop()
    want = {}
    for row in influx.select("SELECT count(duration_us) FROM apache_request "
                             "GROUP BY vhost, route, method, status, dc", influx_db):
        key = tuple(row.get(k, "") for k in ("vhost", "route", "method", "status", "dc"))
        want[key] = row["count"]
    assert sum(want.values()) == expected
    from prometheus_client.parser import text_string_to_metric_families
    got = {}
    for fam in text_string_to_metric_families(page):
        if fam.name != "apache_request_duration_seconds":
            continue
        for smp in fam.samples:
            if smp.name == COUNT:
                key = tuple(smp.labels.get(k, "") for k in
                            ("vhost", "route", "method", "status", "dc"))
                got[key] = got.get(key, 0) + smp.value
    assert got == want
    assert ("localhost", odd_route, "GET", "200", "eu-1") in got
    assert ("localhost", "", "HEAD", "200", "eu-1") in got


def test_quantile_in_the_true_bucket(module_built, mod_delay, httpd_factory):  # noqa: F811
    """985 fast requests and 15 of about 300 ms: the true p99 (the 990th of
    1000) is a slow one, in (0.25, 0.5]; histogram_quantile must say so."""
    h = httpd_factory(mpm="event", extra=PROM_CONF + delay_conf(mod_delay))
    with Prometheus(["%s:%d" % (harness.HOST, h.port)], PAGE) as prom:
        paths = ["/small.txt"] * 985 + ["/delay?us=300000"] * 15
        statuses = drive(h.url, paths, threads=15)
        assert statuses.count(200) == 1000
        expected = settle(h)
        assert expected == 1000
        wait_prometheus_count(prom, expected)
        durations = sorted(e.duration_us / 1e6 for e in h.access_log_entries()
                           if e.path not in (PAGE, harness.PROBE_PATH))
        true_p99 = durations[math.ceil(0.99 * len(durations)) - 1]
        bounds = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

        def bucket(x):
            return next((i for i, b in enumerate(bounds) if x <= b), len(bounds))
        est = prom.value("histogram_quantile(0.99, sum by (le) "
                         "(apache_request_duration_seconds_bucket))")
        assert bucket(true_p99) == bucket(est) == bounds.index(0.5), (true_p99, est)
        # And the fast bulk: the median lies in the bucket of the true one.
        true_p50 = durations[math.ceil(0.5 * len(durations)) - 1]
        est50 = prom.value("histogram_quantile(0.5, sum by (le) "
                           "(apache_request_duration_seconds_bucket))")
        assert bucket(true_p50) == bucket(est50), (true_p50, est50)


def test_formats_accepted(module_built, httpd_factory, influx, influx_db):
    """promtool lints the 0.0.4 page; the Python client's strict parser
    reads the OpenMetrics page (exemplars included) and the 0.0.4 one; every
    family the page promises is there."""
    h = httpd_factory(mpm="event", modules=["unique_id"], extra=str(Imx(
        influx.write_url(influx_db), extra="InfluxMetricsFields request_id\n")) + PROM_CONF)
    ab(h.url + "small.txt", 300, 4)
    settle(h)
    text, hdrs = scrape(h)
    assert hdrs["Content-Type"].startswith("text/plain; version=0.0.4"), hdrs["Content-Type"]
    r = subprocess.run([harness.PROMTOOL, "check", "metrics"], input=text.encode(),
                       capture_output=True, timeout=60)
    assert r.returncode == 0, (r.stdout + r.stderr).decode()
    om, hdrs = scrape(h, om=True)
    assert hdrs["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    assert om.endswith("# EOF\n") or om.endswith("# EOF")
    ids = re.findall(r'# \{request_id="([^"]+)"\} [0-9.e+-]+ [0-9.]+$', om, re.M)
    assert ids, "no exemplar in the OpenMetrics page"
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
    from prometheus_client.parser import text_string_to_metric_families
    fams = {f.name: f for f in om_parse(om)}
    names = {f.name for f in text_string_to_metric_families(text)}
    for name in ("apache_request_duration_seconds", "apache_response_bytes",
                 "apache_busy_workers", "apache_idle_workers", "apache_max_workers",
                 "apache_influx_metrics_recorded", "apache_influx_metrics_sent",
                 "apache_influx_metrics_dropped_full"):
        assert name in fams, (name, sorted(fams))
    for name in ("apache_request_duration_seconds", "apache_response_bytes",
                 "apache_busy_workers", "apache_influx_metrics_recorded"):
        assert name in names, (name, sorted(names))
    assert fams["apache_request_duration_seconds"].type == "histogram"
    assert fams["apache_influx_metrics_recorded"].type == "counter"
    ex = [s.exemplar for s in fams["apache_request_duration_seconds"].samples if s.exemplar]
    assert ex and all(e.labels["request_id"] for e in ex)
    # An unknown Accept gets the text format; a POST gets 405 with Allow.
    status, body, hdrs = http_request(h.url.rstrip("/") + PAGE,
                                      headers={"Accept": "application/x-weird"})
    assert status == 200 and hdrs["Content-Type"].startswith("text/plain; version=0.0.4")
    status, body, hdrs = http_request(h.url.rstrip("/") + PAGE, data=b"x", method="POST")
    assert status == 405 and "GET" in hdrs.get("Allow", ""), (status, dict(hdrs))


def test_prometheus_reads_openmetrics_and_exemplars(module_built, httpd_factory):
    """Prometheus asks for OpenMetrics first: the scrapes it parsed and the
    exemplars it stored carry the request ids of raw points' field."""
    h = httpd_factory(mpm="event", modules=["unique_id"],
                      extra="InfluxMetricsFields request_id\n" + PROM_CONF)
    with Prometheus(["%s:%d" % (harness.HOST, h.port)], PAGE) as prom:
        t0 = time.time()
        ab(h.url + "small.txt", 500, 4)
        expected = settle(h)
        wait_prometheus_count(prom, expected)
        assert all(hl == "up" for hl, _ in prom.target_health()), prom.target_health()
        def stored():
            return prom.exemplars("apache_request_duration_seconds_bucket", t0 - 5,
                                  time.time() + 5)
        wait_until(lambda: any(s["exemplars"] for s in stored()), 10, 0.5)
        ids = [e["labels"]["request_id"] for s in stored() for e in s["exemplars"]]
        assert ids and all(re.match(r"^[A-Za-z0-9@_-]{16,}$", i) for i in ids), ids[:5]


@pytest.mark.parametrize("mpm", ["event", "prefork"])
def test_counters_never_go_down(module_built, httpd_factory, mpm):
    """Scrapes every 50 ms from three threads, and Prometheus every second,
    through a graceful restart, a SIGKILL of a child and a stop, all under
    load: httpd neither crashes nor wedges, and no sample of a counter or a
    bucket is ever lower than one seen before."""
    h = httpd_factory(mpm=mpm, mpm_conf=RECYCLING[mpm], extra=PROM_CONF)
    h.allowed_errors.append(r"AH00161: server reached MaxRequestWorkers")
    h.allowed_errors.append(r"exit signal Killed")      # the SIGKILL below
    done, drops, errors = [], [], []     # done: (end, {sample: value}) of scrapes
    stop = threading.Event()
    lock = threading.Lock()

    def watch():
        while not stop.is_set():
            t_start = time.monotonic()
            try:
                text = scrape(h, om=len(errors) % 2 == 1, timeout=5)[0]
            except (OSError, AssertionError) as e:
                errors.append(e)
                stop.wait(0.05)
                continue
            vals = {k: v for k, v in samples(text).items()
                    if k[0].endswith(("_total", "_bucket", "_count", "_sum"))}
            with lock:
                # Scrapes that ended before this one started: it must see at
                # least what each of them saw (concurrent ones may differ).
                for t_end, old in done:
                    if t_end < t_start:
                        for k, v in old.items():
                            if vals.get(k, 0) < v:
                                drops.append((k, v, vals.get(k)))
                done.append((time.monotonic(), vals))
            stop.wait(0.05)
    with Prometheus(["%s:%d" % (harness.HOST, h.port)], PAGE) as prom:
        watchers = [threading.Thread(target=watch, daemon=True) for _ in range(3)]
        for w in watchers:
            w.start()
        with harness.LoadLoop(lambda: ab(h.url + "small.txt", 500, 4, keepalive=False,
                                         timeout=60), max_s=60) as load:
            time.sleep(1.5)
            h.graceful()
            time.sleep(1.5)
            # Children exit every 100 connections: wait for one alive.
            wait_until(lambda: h.child_pids(), 10, 0.02)
            victim = h.child_pids()[0]
            os.kill(victim, signal.SIGKILL)
            time.sleep(1.5)
            h.graceful()
            time.sleep(1.5)
        assert load.results, load.errors
        time.sleep(2.5)         # Prometheus scrapes after the load, too
        resets = prom.value("sum(resets(apache_request_duration_seconds_bucket[10m]))"
                            " + sum(resets(apache_response_bytes_total[10m]))")
        assert resets == 0, resets
        before = page_count(h)
        t0 = time.monotonic()
        h.stop()
        assert time.monotonic() - t0 < 20, "the stop took %.1fs" % (time.monotonic() - t0)
    stop.set()
    for w in watchers:
        w.join(timeout=10)
        assert not w.is_alive(), "a scrape hung"
    assert not drops, drops[:10]
    assert before > 0 and len(done) > 50, (before, len(done))


@pytest.mark.parametrize("mpm", ["prefork", "event"])
def test_full_restart_starts_from_zero(module_built, httpd_factory, mpm):
    """Graceful: the counts go on. Full restart (SIGHUP): all children are
    gone before the configuration is read again, and the counts start from
    zero, as mod_status's do."""
    h = httpd_factory(mpm=mpm, extra=PROM_CONF)
    ab(h.url + "small.txt", 200, 2)
    settle(h)
    assert page_count(h) == 200
    h.graceful()
    ab(h.url + "small.txt", 100, 2)
    settle(h)
    assert page_count(h) == 300
    h.restart()
    assert page_count(h) == 0
    ab(h.url + "small.txt", 50, 2)
    settle(h)
    assert page_count(h) == 50


def test_bad_buckets_fail_configtest(module_built, httpd_factory):
    h = httpd_factory(start=False, extra=PROM_CONF
                      + "InfluxMetricsPrometheusBuckets 0.1 0.05 1\n")
    rc, out = h.configtest()
    assert rc != 0 and "InfluxMetricsPrometheusBuckets" in out, out


# One prefork child, so that one table fills: prefork says so when the
# harness's probe or a scrape waits for it behind ab's connection.
@pytest.mark.allowed_errors(r"AH00161: server reached MaxRequestWorkers")
def test_custom_buckets_and_series_cap(module_built, httpd_factory):
    """Buckets as configured (canonical le values); a child whose table is
    full counts the rest in the overflow series, so the total stays exact."""
    h = httpd_factory(mpm="prefork", mpm_conf=harness.fixed_prefork(1), extra=PROM_CONF
                      + "InfluxMetricsPrometheusBuckets .005, 0.050 1\n"
                      + "InfluxMetricsPrometheusSeries 2\n")
    ab(h.url + "small.txt", 200, 1)                         # GET 200
    ab(h.url + "nope-1", 40, 1)                             # GET 404
    ab(h.url + "small.txt", 20, 1, extra_args=["-i"])       # HEAD 200: no room
    expected = settle(h)
    s = samples(scrape(h)[0])
    les = sorted({re.search(r'le="([^"]+)"', k[1]).group(1) for k in s
                  if k[0] == "apache_request_duration_seconds_bucket"})
    assert les == sorted(["0.005", "0.05", "1.0", "+Inf"]), les
    counts = {k[1]: v for k, v in s.items() if k[0] == COUNT}
    assert sum(counts.values()) == expected
    assert counts == {'{vhost="localhost",method="GET",status="200"}': 200,
                      '{vhost="localhost",method="GET",status="404"}': 40,
                      '{vhost="other",route="other",method="OTHER",status="other"}': 20}, counts
