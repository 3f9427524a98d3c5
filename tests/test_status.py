# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""The module's counters: shared across children, shown by its own handler
(HTML, ?json, ?auto) and on mod_status's page, and written to InfluxDB as
measurement apache_influx_metrics."""

import json

import pytest

import harness
from harness import Imx, ab, wait_until

STATUS_CONF = """
<Location /imx-status>
    SetHandler influx-metrics-status
    InfluxMetrics Off
</Location>
<Location /server-status>
    SetHandler server-status
    InfluxMetrics Off
</Location>
"""


def status_json(h):
    status, body, _ = harness.http_request(h.url + "imx-status?json")
    assert status == 200
    return json.loads(body)


def test_status_pages_count_every_child(module_built, influx, influx_db, httpd_factory):
    h = httpd_factory(mpm="worker", modules=("status",),
                      mpm_conf={"StartServers": 3, "ThreadsPerChild": 5,
                                "MaxRequestWorkers": 30, "MinSpareThreads": 5,
                                "MaxSpareThreads": 30, "MaxConnectionsPerChild": 300},
                      extra=str(Imx(influx.write_url(influx_db))) + STATUS_CONF)
    res = ab(h.url + "small.txt", 2000, 10, keepalive=False)
    assert res.complete == 2000
    served = h.wait_access_log_count(2000)
    # Counters reach shared memory once per flush interval.
    j = wait_until(lambda: (lambda j: j if j["sent"] == served else None)(status_json(h)), 15)
    for key in ("recorded", "sent", "dropped", "rejected", "retries", "buffered",
                "last_error", "children"):
        assert key in j, key
    assert j["recorded"] == served and j["dropped"] == 0 and j["rejected"] == 0
    assert j["buffered"] == 0 and j["last_error"] is None
    assert j["children"] and all(c["pid"] > 0 for c in j["children"])
    # Children recycled (MaxConnectionsPerChild 300): totals kept what the
    # exited ones had sent; the live ones alone sent less.
    assert sum(c["sent"] for c in j["children"]) < served

    status, body, _ = harness.http_request(h.url + "imx-status?auto")
    assert status == 200 and ("Sent: %d\n" % served) in body.decode()
    status, body, _ = harness.http_request(h.url + "imx-status")
    assert status == 200 and b"<h1>mod_influx_metrics</h1>" in body
    status, body, _ = harness.http_request(h.url + "server-status?auto")
    assert status == 200 and ("InfluxMetricsSent: %d\n" % served) in body.decode()
    status, body, _ = harness.http_request(h.url + "server-status")
    assert status == 200 and b"mod_influx_metrics" in body

    # The counters as points: one series per child slot, latest values.
    wait_until(lambda: influx.count(influx_db, "apache_influx_metrics", field="sent") > 0, 15)
    h.graceful()
    after = status_json(h)
    assert after["sent"] == served, after     # a restart keeps the totals
    h.stop()
    assert influx.count(influx_db, "apache_request") == served


def test_status_handler_without_url(module_built, httpd_factory):
    """Loaded without a URL, the page answers but has nothing to show."""
    h = httpd_factory(mpm="event", extra=STATUS_CONF.replace("    InfluxMetrics Off\n", ""),
                      modules=("status",))
    status, _, _ = harness.http_request(h.url + "imx-status?json")
    assert status == 503


@pytest.mark.allowed_errors(r"IMX0100: backend rejected")
def test_json_status_is_valid_utf8_whatever_the_backend_says(module_built, httpd_factory):
    """A backend's answer ends up in last_error; bytes that are not UTF-8
    must not make ?json invalid (each invalid byte becomes U+FFFD)."""
    from faultserver import FaultServer
    with FaultServer(mode=400, body=b"\xff\xfe bad \xc3 \xed\xa0\x80 end") as fs:
        h = httpd_factory(extra=str(Imx(fs.write_url())) + STATUS_CONF)
        harness.http_request(h.url + "small.txt")
        wait_until(lambda: fs.requests, 10)

        def error_seen():
            status, body, _ = harness.http_request(h.url + "imx-status?json")
            text = body.decode("utf-8")         # strict: raises on invalid UTF-8
            j = json.loads(text)
            return j if j["last_error"] else None
        j = wait_until(error_seen, 10)
        assert "\ufffd" in j["last_error"] and "end" in j["last_error"], j["last_error"]
        assert all("\ufffd" in c["last_error"] for c in j["children"] if c["last_error"])
        h.stop()    # while the backend still answers: a later tick must not log a refused connect
