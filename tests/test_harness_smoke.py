# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""Smoke tests of the harness itself, without mod_influx_metrics (except the
last test, which skips until the module is built).

They also pin down how the backends behave, since the module's tests rely on
it (see VictoriaMetrics' docstring in harness/backends.py for the summary).
"""

import base64
import os
import time

import pytest

import harness
from harness import Imx, ab, AbBackground, wait_until

NS = 1_000_000_000


def recent_ns():
    """A whole-second timestamp an hour ago: inside any range, and its ms and
    sub-ms parts are zero, so offsets below are easy to read."""
    return (time.time_ns() // NS - 3600) * NS


# --------------------------------------------------------------------------
# InfluxDB

def test_influx_write_and_count(influx, influx_db):
    t = recent_ns()
    body = "".join("http,vhost=a,status=200 duration_us=%di %d\n" % (10 + i, t + i)
                   for i in range(3))
    assert influx.write(influx_db, body) == (204, "")
    assert influx.count(influx_db, "http") == 3
    assert influx.count(influx_db, "http", where="duration_us > 10") == 2
    assert influx.count(influx_db, "no_such_measurement") == 0
    rows = influx.select('SELECT * FROM "http"', influx_db)
    assert [r["time"] for r in rows] == [t, t + 1, t + 2]
    # Unlike VictoriaMetrics, InfluxDB keeps one point per series and ns
    # timestamp: a second write with the same ones replaces the first.
    assert influx.write(influx_db, "http,vhost=a,status=200 duration_us=99i %d\n" % t)[0] == 204
    assert influx.count(influx_db, "http") == 3
    # Bad lines are refused with 400 (VictoriaMetrics answers 204).
    status, text = influx.write(influx_db, "http duration_us=1i 1 2\n")
    assert status == 400 and "invalid" in text


def test_influx_gzip_write(influx, influx_db):
    status, _ = influx.write(influx_db, "g v=1i %d\n" % recent_ns(), gzipped=True)
    assert status == 204
    assert influx.count(influx_db, "g", field="v") == 1


def test_influx_auth():
    with harness.Influx(auth=True, user="admin", password="s3cret") as ix:
        ix.create_db("a")                       # authenticated as admin
        line = "m f=1i %d\n" % recent_ns()
        assert ix.write("a", line)[0] == 204
        assert ix.write("a", line, credentials=False)[0] == 401
        basic = base64.b64encode(b"admin:s3cret").decode()
        assert ix.write("a", line, credentials=False,
                        headers={"Authorization": "Basic " + basic})[0] == 204
        # influxd 1.6 knows no "Token" scheme (it came with 1.8's v2
        # compatibility API, as did /api/v2/write).
        assert ix.write("a", line, credentials=False,
                        headers={"Authorization": "Token admin:s3cret"})[0] == 401
        assert harness.http_request(ix.url + "/api/v2/write?bucket=a", data=line)[0] == 404


# --------------------------------------------------------------------------
# VictoriaMetrics

def test_vm_write_and_count(vm):
    t = recent_ns()
    body = "".join("smoke,vhost=a duration_us=%di,bytes_sent=5i %d\n" % (i, t + i * 1_000_000)
                   for i in range(3))
    assert vm.write(body, v2=True, precision="ns") == (204, "")  # Token x header
    vm.force_flush()
    # One line with two fields -> two metrics, measurement_field.
    assert vm.count_samples("smoke_duration_us") == 3
    assert vm.count_samples("smoke_bytes_sent") == 3
    assert vm.count_samples('{__name__=~"smoke_.*"}') == 6
    [series] = vm.export("smoke_duration_us")
    assert series["metric"] == {"__name__": "smoke_duration_us", "vhost": "a"}
    assert series["timestamps"] == [t // 1_000_000 + i for i in range(3)]


def test_vm_timestamp_semantics(vm):
    """What VictoriaMetrics 1.79 does with equal and sub-ms timestamps.

    Found (and asserted here):
    * no deduplication: two samples of one series with identical timestamps
      are both kept, within one request and across requests, also after a
      forced merge;
    * timestamps are cut to ms, so ns timestamps differing only below 1 ms
      survive as distinct samples that share one ms timestamp.
    So count_samples() counts every line written, whatever its timestamp,
    and is exact where InfluxDB (one point per series+ns) may collapse points.
    """
    t = recent_ns()
    ms = t // 1_000_000
    invalid_before = vm.invalid_rows()

    # Identical ns timestamp, same series, one request.
    vm.write("dup1,h=a v=1i %d\ndup1,h=a v=2i %d\n" % (t, t))
    # Identical ns timestamp, same series, separate requests.
    vm.write("dup2,h=a v=1i %d\n" % t)
    vm.write("dup2,h=a v=2i %d\n" % t)
    # ns timestamps within one millisecond, one request and separate requests.
    vm.write("sub1,h=a v=1i %d\nsub1,h=a v=2i %d\nsub1,h=a v=3i %d\n" % (t, t + 1, t + 999_999))
    for i in range(3):
        vm.write("sub2,h=a v=%di %d\n" % (i, t + i * 300))

    expected = {"dup1_v": [1, 2], "dup2_v": [1, 2], "sub1_v": [1, 2, 3], "sub2_v": [0, 1, 2]}
    for name, values in expected.items():
        [series] = vm.export(name)
        # Samples with equal timestamps: their order is not a promise.
        assert sorted(series["values"]) == values, (name, series)
        assert series["timestamps"] == [ms] * len(values), (name, series)

    # Merging parts is where dedup would happen if it were enabled: it is not.
    vm.force_merge()
    assert vm.count_samples('{__name__=~"dup1_v|dup2_v|sub1_v|sub2_v"}') == 10

    # /write?db=X adds a db label: another series under the same metric name.
    status, _ = vm.write("dup1,h=a v=3i %d\n" % t, v2=False)
    assert status == 204
    assert len(vm.export("dup1_v")) == 2
    assert vm.count_samples("dup1_v") == 3

    # A bad line is skipped silently: 204, visible only in VM's own metrics.
    assert vm.write("bad v=1i 1 2\n")[0] == 204
    # (The counter may trail the response by a moment.)
    wait_until(lambda: vm.invalid_rows() == invalid_before + 1, 5)


# --------------------------------------------------------------------------
# httpd (without the module)

def test_httpd_serves_and_logs(httpd_factory):
    h = httpd_factory(mpm="event", load_module=False)
    status, body, _ = harness.http_request(h.url)
    assert (status, body) == (200, b"hello\n")
    res = ab(h.url, 200, 8)
    assert (res.complete, res.failed, res.non2xx) == (200, 0, 0)
    # +1: the GET above.
    assert h.wait_access_log_count(201) == 201
    assert h.probe_count() >= 1
    children = h.children()
    assert children
    h.stop()
    assert not h.running()
    assert not [p for p in children if harness._alive(*p)]
    assert h.check_error_log() == []


def test_httpd_ab_count(httpd_factory):
    """Exactly the ab requests in the access log (probes left out)."""
    h = httpd_factory(mpm="event", load_module=False)
    res = ab(h.url, 200, 4, keepalive=False)
    assert (res.complete, res.failed, res.non2xx) == (200, 0, 0)
    assert h.wait_access_log_count(200) == 200
    h.stop()
    assert h.check_error_log() == []


@pytest.mark.parametrize("mpm", ["event", "worker", "prefork"])
def test_httpd_graceful_under_load(httpd_factory, mpm):
    mpm_conf = None
    if mpm != "prefork":
        mpm_conf = {"StartServers": 2, "ThreadsPerChild": 10,
                    "MaxRequestWorkers": 40, "MinSpareThreads": 10,
                    "MaxSpareThreads": 40}
    h = httpd_factory(mpm=mpm, load_module=False, mpm_conf=mpm_conf)
    old = set(h.child_pids())
    run = AbBackground(h.url + "small.txt", 3000, 4, keepalive=False)
    wait_until(lambda: h.access_log_count() >= 300, 20)
    h.graceful()
    # The new generation answers before all its children show in /proc.
    wait_until(lambda: set(h.child_pids()) - old, 10, message="no new generation of children")
    res = run.wait(timeout=120)
    assert res.complete == 3000 and res.failed == 0 and res.non2xx == 0, res.output
    assert h.wait_access_log_count(3000) == 3000


def test_httpd_graceful_stop(httpd_factory):
    h = httpd_factory(mpm="worker", load_module=False)
    children = h.children()
    h.graceful_stop(timeout=20)
    assert not h.running()
    assert not [p for p in children if harness._alive(*p)]
    assert h.problems == []


def test_httpd_no_probe_start(httpd_factory):
    h = httpd_factory(mpm="prefork", load_module=False, start=False)
    h.start(http_probe=False)
    assert ab(h.url, 10, 2).complete == 10
    assert h.wait_access_log_count(10, include_probes=True) == 10
    assert h.probe_count() == 0


@pytest.mark.allowed_errors(r"NoSuchDirective")
def test_httpd_bad_config(httpd_factory):
    h = httpd_factory(load_module=False, start=False, extra="NoSuchDirective on\n")
    rc, out = h.configtest()
    assert rc != 0 and "NoSuchDirective" in out
    with pytest.raises(RuntimeError, match="NoSuchDirective"):
        h.start(timeout=10)
    assert not h.running()


def test_httpd_extra_modules_and_vhost(httpd_factory):
    extra = """
<Location "/server-status">
    SetHandler server-status
    Require ip 127.0.0.1
</Location>
"""
    h = httpd_factory(load_module=False, modules=["status", "authz_host"], extra=extra)
    status, body, _ = harness.http_request(h.url + "server-status?auto")
    assert status == 200 and b"BusyWorkers" in body


def test_check_error_log_classification(httpd_factory):
    """check_error_log flags errors, crashes and raw output; not notices.
    (A server that loads the module: without it, httpd's own crashes are
    tolerated, see STOCK_HTTPD_CRASHES.)"""
    h = httpd_factory(start=False)
    ts = "[Wed Nov 25 11:49:37.860015 2026]"
    lines = [
        ts + " [mpm_event:notice] [pid 1:tid 1] AH00489: resuming normal operations",
        ts + " [influx_metrics:info] [pid 7:tid 7] IMX0019: child starting",
        ts + " [influx_metrics:info] [pid 1:tid 2] sent 10 points",
        ts + " [influx_metrics:warn] [pid 1:tid 2] backend said 500, will retry",
        ts + " [influx_metrics:error] [pid 1:tid 2] cannot connect",
        ts + " [core:notice] [pid 1:tid 1] AH00052: child pid 7 exit signal"
             " Segmentation fault (11)",
        ts + " [mpm_event:warn] [pid 1:tid 1] AH00045: child process 7 still did"
             " not exit, sending a SIGTERM",
        "==7==ERROR: AddressSanitizer: heap-use-after-free on address 0x6020",
    ]
    with open(h.error_log_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    bad = h.check_error_log()
    assert bad == lines[4:]
    assert h.check_error_log(allowed=[r"cannot connect", r"AH0004\d", r"Sanitizer"]) == [lines[5]]

    # A child that crashed before logging IMX0019 crashed before the module
    # ran in it: httpd's (with glibc's abort message, when it was the only
    # crash); one that had logged it is the module's business.
    early = [
        ts + " [influx_metrics:info] [pid 8:tid 8] IMX0019: child starting",
        "corrupted double-linked list",
        ts + " [core:warn] [pid 1:tid 1] AH00045: child process 9 still did not exit,"
             " sending a SIGTERM",
        ts + " [core:notice] [pid 1:tid 1] AH00051: child pid 9 exit signal Aborted (6),"
             " possible coredump in /tmp",
    ]
    with open(h.error_log_path, "w") as f:
        f.write("\n".join(early) + "\n")
    assert h.stock_crashes() == [9]
    assert h.check_error_log() == []
    with open(h.error_log_path, "a") as f:
        f.write(ts + " [core:notice] [pid 1:tid 1] AH00052: child pid 8 exit signal"
                " Aborted (6)\n")
    assert h.check_error_log() == [early[1], ts + " [core:notice] [pid 1:tid 1] AH00052:"
                                   " child pid 8 exit signal Aborted (6)"]
    os.remove(h.error_log_path)


# --------------------------------------------------------------------------
# Directive builder

def test_imx_text():
    text = str(Imx("http://127.0.0.1:1/write?db=x&precision=ns", token="t k",
                   measurement="http", tags={"env": "test", "dc": 'a"b'},
                   batch_size=100, buffer_size=1000, timeout="2s", gzip=True,
                   enabled=True, route="api"))
    assert text == (
        "InfluxMetrics On\n"
        "InfluxMetricsURL http://127.0.0.1:1/write?db=x&precision=ns\n"
        'InfluxMetricsToken "t k"\n'
        "InfluxMetricsMeasurement http\n"
        "InfluxMetricsTag env test\n"
        'InfluxMetricsTag dc "a\\"b"\n'
        "InfluxMetricsFlushInterval 200ms\n"
        "InfluxMetricsBatchSize 100\n"
        "InfluxMetricsBufferSize 1000\n"
        "InfluxMetricsTimeout 2s\n"
        "InfluxMetricsGzip On\n"
        "InfluxMetricsRoute api\n")
    assert str(Imx(enabled=False, flush_interval=None)) == "InfluxMetrics Off\n"


# --------------------------------------------------------------------------
# With the module (skipped until it is built): only what the harness relies on

def test_harness_counts_with_module(module_built, httpd_factory, vm):
    """Points in VictoriaMetrics == access_log_count(): readiness probes are
    excluded from both (record_probes=False), and VM keeps every sample."""
    invalid_before = vm.invalid_rows()     # vm is shared within this file
    h = httpd_factory(mpm="event",
                      extra=str(Imx(vm.write_url(v2=True), token="x",
                                    measurement="harness_smoke")))
    res = ab(h.url, 300, 8)
    assert (res.complete, res.failed, res.non2xx) == (300, 0, 0)
    assert h.wait_access_log_count(300) == 300
    wait_until(lambda: vm.count_samples("harness_smoke_duration_us") >= 300, 15)
    h.stop()    # the final flush happens at child exit
    assert h.probe_count() >= 1
    assert vm.count_samples("harness_smoke_duration_us") == 300
    assert vm.invalid_rows() == invalid_before
