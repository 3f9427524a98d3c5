# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""Summary mode against raw mode in the same run, sampling, and the capacity
point. A test-only handler (tests/mod_delay.c) answers after the delay a
request asks for, so the mix of durations is known."""

import http.client
import math
import os
import random
import shutil
import subprocess
import threading

import pytest

import harness
from harness import Imx

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="session")
def mod_delay():
    d = harness.make_tmpdir("imx-delay")
    shutil.copy(os.path.join(HERE, "mod_delay.c"), d)
    subprocess.run(["apxs", "-c", "mod_delay.c"], cwd=d, check=True, timeout=120,
                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    so = os.path.join(d, ".libs", "mod_delay.so")
    os.chmod(d, 0o755)
    for root, dirs, files in os.walk(d):
        for x in dirs + files:
            os.chmod(os.path.join(root, x), 0o755)
    yield so
    shutil.rmtree(d, ignore_errors=True)


def delay_conf(so):
    return """
LoadModule delay_module %s
<Location /delay>
    SetHandler imx-delay
    InfluxMetricsRoute delay
</Location>
""" % so


def drive(url_base, paths, threads=8):
    """GETs every path (keep-alive, `threads` connections); returns statuses."""
    host, port = url_base.split("//")[1].rstrip("/").split(":")
    chunks = [paths[i::threads] for i in range(threads)]
    out = [[] for _ in range(threads)]

    def run(i):
        c = http.client.HTTPConnection(host, int(port), timeout=30)
        for p in chunks[i]:
            c.request("GET", p)
            r = c.getresponse()
            r.read()
            out[i].append(r.status)
        c.close()
    ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=300)
    return [s for o in out for s in o]


def bucket_mid(lo):
    """Midpoint of the histogram bucket whose lower bound is lo (imx_hist.h)."""
    if lo < 128:
        return lo
    e = lo.bit_length() - 1
    return lo + (1 << (e - 6)) // 2


def nearest_rank(sorted_vals, p):
    return sorted_vals[max(1, math.ceil(p / 100.0 * len(sorted_vals))) - 1]


def test_summary_percentiles_match_raw(module_built, mod_delay, influx, influx_db,
                                       httpd_factory):
    rnd = random.Random(7)
    paths = []
    for _ in range(3000):
        x = rnd.random()
        us = (rnd.randint(0, 2000) if x < 0.7 else
              rnd.randint(5000, 20000) if x < 0.95 else rnd.randint(50000, 100000))
        paths.append("/delay?us=%d" % us)
    h = httpd_factory(mpm="event", extra=str(Imx(
        influx.write_url(influx_db), flush_interval="60s",
        extra="InfluxMetricsMode both\n")) + delay_conf(mod_delay))
    statuses = drive(h.url, paths)
    assert statuses.count(200) == len(paths)
    h.stop()

    raw = sorted(r["duration_us"] for r in influx.select(
        "SELECT duration_us FROM apache_request WHERE route = 'delay'", influx_db))
    assert len(raw) == len(paths)
    rows = influx.select("SELECT * FROM apache_summary WHERE route = 'delay'", influx_db)
    assert rows, "no summary points"
    # Counts: exact, whatever the number of intervals and children.
    assert sum(r["count"] for r in rows) == len(paths)
    assert sum(r["duration_us_sum"] for r in rows) == sum(raw)
    assert min(r["duration_us_min"] for r in rows) == raw[0]
    assert max(r["duration_us_max"] for r in rows) == raw[-1]
    # Percentiles over the whole run from the summed bucket fields, as a
    # dashboard would sum several servers.
    buckets = {}
    for r in rows:
        for k, v in r.items():
            if k.startswith("b_") and v:
                buckets[int(k[2:])] = buckets.get(int(k[2:]), 0) + v
    assert sum(buckets.values()) == len(paths)
    for p in (50, 90, 95, 99):
        rank = max(1, math.ceil(p / 100.0 * len(raw)))
        seen = 0
        for lo in sorted(buckets):
            seen += buckets[lo]
            if seen >= rank:
                est = bucket_mid(lo)
                break
        exact = nearest_rank(raw, p)
        assert abs(est - exact) <= 0.01 * exact, (p, est, exact)
    # The percentile fields of a point: with a long interval the whole run is
    # usually one point (unless the run crossed an interval boundary).
    if len(rows) == 1:
        r = rows[0]
        for p in (50, 90, 95, 99):
            exact = nearest_rank(raw, p)
            assert abs(r["p%d_us" % p] - exact) <= 0.01 * exact + 1, (p, r, exact)


def test_process_point(module_built, mod_delay, influx, influx_db, httpd_factory):
    h = httpd_factory(mpm="worker", extra=str(Imx(influx.write_url(influx_db),
                                                  flush_interval="200ms",
                                                  extra="InfluxMetricsMode both\n"))
                      + delay_conf(mod_delay))
    harness.ab(h.url + "small.txt", 500, 4)
    # Two connections, each busy 20 ms per request for about 1.5 s.
    drive(h.url, ["/delay?us=20000"] * 150, threads=2)
    harness.wait_until(lambda: influx.count(influx_db, "apache_process",
                                            field="busy_workers") >= 2, 15)
    h.stop()
    rows = influx.select("SELECT * FROM apache_process", influx_db)
    r = rows[-1]
    assert r["max_workers"] > 0 and r["processes"] >= 2
    assert r["busy_workers"] + r["idle_workers"] <= r["max_workers"] + 64
    assert r["rss_bytes"] > 1 << 20 and r["cpu_user_seconds"] >= 0
    assert 0 <= r["utilization"] <= 1
    # Busy worker-seconds from the summaries: never more than the requests'
    # own durations, and most of them (the last interval goes out at exit,
    # without a process point).
    raw_busy = sum(x["duration_us"] for x in influx.select(
        "SELECT duration_us FROM apache_request", influx_db)) / 1e6
    busy = sum(x.get("busy_seconds") or 0 for x in rows)
    assert 0.5 * raw_busy <= busy <= raw_busy + 0.01, (busy, raw_busy)
    assert max(x.get("utilization_time") or 0 for x in rows) > 0


def test_sampling_keeps_fraction_slow_and_errors(module_built, mod_delay, influx, influx_db,
                                                 httpd_factory):
    fast = ["/delay?us=0"] * 4000
    slow = ["/delay?us=60000"] * 40
    errors = ["/delay?us=0&status=503"] * 60
    paths = fast + slow + errors
    random.Random(3).shuffle(paths)
    h = httpd_factory(mpm="event", extra=str(Imx(influx.write_url(influx_db))) + delay_conf(
        mod_delay) + """
InfluxMetricsSample 0.1
InfluxMetricsKeepSlow 50ms
InfluxMetricsKeepErrors On
""")
    drive(h.url, paths)
    h.stop()
    rows = influx.select("SELECT duration_us, sample_rate, status FROM apache_request "
                         "WHERE route = 'delay'", influx_db)
    kept_errors = [r for r in rows if r["status"] == "503"]
    kept_slow = [r for r in rows if r["status"] == "200" and r["duration_us"] >= 50000]
    kept_fast = [r for r in rows if r["status"] == "200" and r["duration_us"] < 50000]
    assert len(kept_errors) == len(errors)
    assert len(kept_slow) == len(slow)
    assert all(r["sample_rate"] == 1 for r in kept_errors + kept_slow)
    assert all(abs(r["sample_rate"] - 0.1) < 1e-9 for r in kept_fast)
    # Binomial(4000, 0.1): mean 400, sd 19; 5 sd either way.
    n, p = len(fast), 0.1
    sd = math.sqrt(n * p * (1 - p))
    assert abs(len(kept_fast) - n * p) < 5 * sd, len(kept_fast)
    # Scaled back by sample_rate, the count estimates what was served.
    est = sum(1 / r["sample_rate"] for r in rows)
    assert abs(est - len(paths)) < 5 * sd / p


def test_tag_from_header_and_note_with_cap(module_built, mod_delay, influx, influx_db,
                                           httpd_factory):
    """Tags from a request header and from a note an application sets; past
    InfluxMetricsMaxTagValues distinct values (server-wide), new values are
    written as "other". Hostile values cannot inject anything."""
    h = httpd_factory(mpm="prefork", extra=str(Imx(influx.write_url(influx_db))) + """
InfluxMetricsMaxTagValues 5
InfluxMetricsTagFrom header X-Tenant tenant
LoadModule delay_module %s
<Location /delay>
    SetHandler imx-delay
    InfluxMetricsTagFrom note app-route
</Location>
""" % mod_delay)
    host, port = h.url.split("//")[1].rstrip("/").split(":")
    tenants = ['evil, "x"=1 y\tz'] + ["t%d" % i for i in range(12)]
    for i in range(26):
        c = http.client.HTTPConnection(host, int(port), timeout=10)
        c.request("GET", "/small.txt", headers={"X-Tenant": tenants[i % len(tenants)]})
        assert c.getresponse().status == 200
        c.close()
    drive(h.url, ["/delay?note=users", "/delay?note=orders", "/delay"] * 10, threads=3)
    h.stop()
    rows = influx.select("SELECT duration_us, tenant, \"app-route\" FROM apache_request",
                         influx_db)
    assert len(rows) == 26 + 30
    seen = [r["tenant"] for r in rows if r.get("tenant")]
    assert len(seen) == 26
    admitted = set(seen) - {"other"}
    # Five values are admitted: the first five the server logged, which need
    # not be the client's order (a request is logged after its response, by
    # whichever child served it). TAB is written as \t.
    assert len(admitted) == 5, admitted
    assert admitted <= {'evil, "x"=1 y\\tz'} | set(tenants[1:]), admitted
    # Every point of an admitted value carries it; all others say "other".
    assert all(seen.count(t) == 2 for t in admitted)
    assert seen.count("other") == 26 - 10
    routes = [r.get("app-route") for r in rows if r.get("tenant") is None]
    assert sorted(x for x in routes if x) == ["orders"] * 10 + ["users"] * 10
    assert routes.count(None) == 10
