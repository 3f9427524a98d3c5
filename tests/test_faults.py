# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""The module against a backend that misbehaves on demand (tests/faultserver.py):
every answer class is handled as documented, and every request served ends
up stored or counted, exactly."""

import json
import re
import time

import pytest

import faultserver
import harness
from faultserver import FaultServer
from harness import Imx, ab, wait_until

N = 300
STATUS = """
<Location /imx-status>
    SetHandler influx-metrics-status
    InfluxMetrics Off
</Location>
"""
ALLOWED = (r"IMX0100: will retry", r"IMX0100: backend rejected",
           r"IMX0100: backend stored part of")


@pytest.fixture
def fs():
    with FaultServer() as server:
        yield server


def start(httpd_factory, url, extra=""):
    return httpd_factory(mpm="event", extra=str(Imx(url, timeout="1s", extra=extra)) + STATUS)


def exit_sums(h):
    keys = ("recorded", "sent", "rejected", "dropped_full", "dropped_exit", "retries")
    tot = dict.fromkeys(keys, 0)
    for line in h.error_log_text().splitlines():
        if "flusher exit:" in line:
            for k in keys:
                tot[k] += int(re.search(r"\b%s=(\d+)" % k, line).group(1))
    return tot


def status(h):
    return json.loads(harness.http_request(h.url + "imx-status?json")[1])


def request_lines(lines):
    return [l for l in lines if l.startswith("apache_request,")]


def load(h, n=N):
    res = ab(h.url + "small.txt", n, 4)
    assert res.complete == n
    return n


def settle(h, n):
    """Until all n requests are recorded and nothing is left to send."""
    wait_until(lambda: (lambda st: st["recorded"] == n and st["buffered"] == 0)(status(h)), 60)
    return status(h)


@pytest.mark.allowed_errors(*ALLOWED)
@pytest.mark.parametrize("fault", [
    (503, {"retry_after": 1}), (429, {"retry_after": 1}), (500, {}), (408, {}),
    ("reset", {}), ("slow", {"delay": 3}), ("blackhole", {}),
])
def test_transient_faults_lose_nothing(module_built, httpd_factory, fs, fault):
    mode, opts = fault
    fs.fail_next(2, mode, **opts)
    h = start(httpd_factory, fs.write_url())
    if mode == "blackhole":
        fs.wait_for(lambda _: fs.answers.get("blackhole", 0) >= 1, 15)
    n = load(h)
    if mode == "blackhole":
        wait_until(lambda: status(h)["retries"] >= 1, 15)     # the POST timed out
        fs.release()
    st = settle(h, n)
    h.stop()
    stored = request_lines(fs.lines)
    # A timed-out POST may have been stored by a slow server and is sent
    # again: InfluxDB would overwrite the identical points; count them once.
    assert len(set(stored)) == n, (len(stored), len(set(stored)), st)
    assert st["sent"] == n and st["dropped"] == 0 and st["retries"] >= 1, st
    if "retry_after" in opts:
        # Retry-After: 1 was honoured: each refused body came back at least
        # ~1 s later (children retry on their own, so match by body).
        posts = [r for r in fs.requests if r.method == "POST"]
        refused = [r for r in posts if r.answer == mode]
        assert refused
        for r in refused:
            again = [q for q in posts if q.body == r.body and q.t0 > r.t0]
            assert again and again[0].t0 - r.t1 >= 0.9, (r, again[:1])


def partial_writes(httpd_factory, fs, url, dropped, n=100, code=400):
    """n requests while the backend stores all but the last `dropped` lines
    of each batch, then all: the counts add up exactly. Returns (h, st)."""
    h = start(httpd_factory, url, extra="InfluxMetricsBatchSize 1000\n")
    fs.set_mode(code, dropped=dropped)
    load(h, n)
    wait_until(lambda: status(h)["rejected"] >= dropped, 15)
    fs.set_mode("ok")
    st = settle(h, n)
    h.stop()
    stored = request_lines(fs.lines)
    assert st["rejected"] >= dropped and st["sent"] + st["rejected"] == n, st
    assert len(stored) == st["sent"], (len(stored), st)
    return h, st


@pytest.mark.allowed_errors(*ALLOWED)
def test_partial_write_counts_rejected(module_built, httpd_factory, fs):
    h, st = partial_writes(httpd_factory, fs, fs.write_url(), 3)
    assert "partial write" in st["last_error"] or "partial write" in h.error_log_text()


@pytest.mark.allowed_errors(*ALLOWED)
def test_v2_partial_write_422_counts_refused(module_built, httpd_factory, fs):
    """InfluxDB 2.x answers a partial write with 422 (after storing the
    rest): only the N points it names are rejected, the rest are sent."""
    h, st = partial_writes(httpd_factory, fs, fs.write_url(v2=True), 1, code=422)
    assert any(r.answer == 422 for r in fs.requests), fs.answers
    assert st["rejected"] >= 1 and st["sent"] >= 1, st


@pytest.mark.allowed_errors(*ALLOWED)
def test_unparsable_lines_count_as_refused(module_built, httpd_factory, fs, influx, influx_db):
    """InfluxDB 1.x says dropped=0 for lines it could not parse and names
    each of them instead: they are rejected, not sent. The stand-in's text
    is checked against a real influxd's answer first."""
    bad = b"m,a=1,a=2 v=1i 1\nm,a=1 v=1i 2\nm,b=1,b=2 v=2i 3\n"
    code, body, _ = harness.http_request(influx.write_url(influx_db), data=bad)
    lines = bad.decode().splitlines()
    want = "partial write: %s dropped=0" % "\n".join(
        faultserver.UNPARSABLE % ln for ln in (lines[0], lines[2]))
    assert code == 400 and json.loads(body)["error"] == want, (code, body)
    assert influx.count(influx_db, "m", field="v") == 1

    h = start(httpd_factory, fs.write_url(), extra="InfluxMetricsBatchSize 1000\n")
    fs.set_mode(400, unparsable=3)
    load(h, 100)
    wait_until(lambda: status(h)["rejected"] >= 3, 15)
    fs.set_mode("ok")
    st = settle(h, 100)
    h.stop()
    stored = request_lines(fs.lines)
    assert st["rejected"] >= 3 and st["sent"] + st["rejected"] == 100, st
    assert len(stored) == st["sent"], (len(stored), st)


@pytest.mark.allowed_errors(*ALLOWED)
def test_v3_partial_write_counts_refused_lines(module_built, httpd_factory, fs):
    """InfluxDB 3's write_lp: precision=nanosecond is added, and a partial
    write counts exactly the lines its answer lists as rejected, also when
    the list is far longer than the answer text kept for the log."""
    partial_writes(httpd_factory, fs, fs.write_url(v3=True), 40)
    posts = [r for r in fs.requests if r.method == "POST"]
    assert posts and all(r.query.get("precision") == "nanosecond" for r in posts)
    assert any(r.answer == 400 and len(r.lines) >= 40 for r in posts)


@pytest.mark.allowed_errors(*ALLOWED)
def test_v3_whole_batch_refused(module_built, httpd_factory, fs):
    """With accept_partial=false InfluxDB 3 stores nothing of a batch with a
    bad line and says "parsing failed": every point of it is rejected."""
    h = start(httpd_factory, fs.write_url(v3=True) + "&accept_partial=false",
              extra="InfluxMetricsBatchSize 1000\n")
    fs.set_mode(400, dropped=1)
    n = load(h, 50)
    st = settle(h, n)
    h.stop()
    assert st["rejected"] == n and st["sent"] == 0, st
    assert not request_lines(fs.lines)
    assert "parsing failed" in st["last_error"] or "parsing failed" in h.error_log_text()


@pytest.mark.allowed_errors(*ALLOWED)
def test_413_splits_batches(module_built, httpd_factory, fs):
    fs.fail_next(1, 413, min_lines=50)     # a request batch, not a 1-line point
    h = start(httpd_factory, fs.write_url(), extra="InfluxMetricsFlushInterval 2s\n")
    n = load(h, 200)
    st = settle(h, n)
    h.stop()
    stored = request_lines(fs.lines)
    assert len(stored) == len(set(stored)) == n and st["rejected"] == 0, st
    assert "sending the batch in halves" in h.error_log_text()


def test_413_split_without_retry_buffer_loses_nothing(module_built, httpd_factory, fs):
    """A backend that takes at most 16 KiB per POST (about 130 points) and
    InfluxMetricsRetryBuffer 0: the halves of a refused batch are sent at
    once, halved again as needed, and every point is stored. The retry
    buffer is for batches that failed, not for the halves of a split."""
    limit = 16384
    fs.set_max_body(limit)
    h = start(httpd_factory, fs.write_url(), extra=(
        "InfluxMetricsRetryBuffer 0\nInfluxMetricsBatchSize 1000\n"
        "InfluxMetricsFlushInterval 1s\n"))
    n = load(h, 2000)
    st = settle(h, n)
    h.stop()
    stored = request_lines(fs.lines)
    assert fs.answers.get(413, 0) >= 1, fs.stats()
    assert all(len(r.raw) <= limit for r in fs.requests if r.stored), "a body over the limit stored"
    counters = {k: st[k] for k in ("recorded", "sent", "rejected", "dropped_retry",
                                   "dropped_exit", "dropped")}
    assert st["dropped"] == 0 and st["rejected"] == 0 and st["sent"] == n, counters
    assert len(stored) == len(set(stored)) == n, (len(stored), len(set(stored)), counters)
    assert "sending the batch in halves" in h.error_log_text()


@pytest.mark.allowed_errors(*ALLOWED, r"IMX0100: flusher exit")
@pytest.mark.parametrize("code", [401, 403, 404])
def test_auth_and_missing_db_retry_slowly_and_never_log_secrets(module_built, httpd_factory,
                                                                fs, code):
    fs.set_mode(code)
    url = fs.write_url().replace("http://", "http://writer:pa55w0rd@")
    h = start(httpd_factory, url, extra="InfluxMetricsToken s3cr3t-t0ken\n")
    n = load(h, 50)
    wait_until(lambda: (lambda st: st["retries"] >= 1 and st["recorded"] == n)(status(h)), 15)
    st1 = status(h)
    assert st1["sent"] == 0 and st1["buffered"] == n and st1["dropped"] == 0, st1
    assert ("HTTP %d" % code) in st1["last_error"]
    # Slowly: no second attempt within the next two seconds.
    posts = len([r for r in fs.requests if r.method == "POST"])
    time.sleep(2)
    assert len([r for r in fs.requests if r.method == "POST"]) <= posts + 1
    assert fs.requests[0].header("Authorization") == "Token s3cr3t-t0ken"
    h.stop()
    log = h.error_log_text()
    for secret in ("s3cr3t-t0ken", "pa55w0rd", "writer:"):
        assert secret not in log
    tot = exit_sums(h)
    assert tot["recorded"] == n and tot["sent"] == 0 and tot["dropped_exit"] == n, tot


@pytest.mark.allowed_errors(*ALLOWED)
def test_failover_to_second_url(module_built, httpd_factory, fs):
    with FaultServer(mode=503) as primary:
        h = httpd_factory(mpm="event", extra=str(Imx(None, timeout="1s", extra=(
            "InfluxMetricsURL %s %s\n" % (primary.write_url(), fs.write_url())))) + STATUS)
        n = load(h)
        st = settle(h, n)
        h.stop()
        assert len(request_lines(fs.lines)) == n and st["sent"] == n, st
        assert primary.count == 0 and len(primary.requests) >= 1


def test_gzip_and_keepalive(module_built, httpd_factory, fs):
    h = start(httpd_factory, fs.write_url(), extra="InfluxMetricsGzip On\n")
    n = load(h, 500)
    wait_until(lambda: len(request_lines(fs.lines)) >= n, 15)
    load(h, 500)
    wait_until(lambda: len(request_lines(fs.lines)) >= 2 * n, 15)
    h.stop()
    posts = [r for r in fs.requests if r.method == "POST"]
    assert all(r.gzipped for r in posts)
    # One connection per child flusher, reused across POSTs.
    assert fs.connections < len(posts), (fs.connections, len(posts))
