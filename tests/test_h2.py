# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""Exact counts where request timestamps are hardest to keep unique: HTTP/2
(mod_http2 runs requests on its own worker threads) and thread layouts of
more than 1,000 threads.

InfluxDB keeps one point per series and timestamp, so two requests of one
series that get the same timestamp are stored as one. Every request here is
a GET /small.txt answered 200 by the same virtual host: one series. Ground
truth is httpd's access log; stored is count(duration_us) in a real InfluxDB.
The children's exit lines tell the two ways of losing points apart: sent
below served is a delivery loss, stored below sent is an overwrite (equal
timestamps).
"""

import pytest

from harness import H2C_CONF, MPM_PROFILES, Imx, ab, flusher_exits, h2load, wait_until

H2_REQUESTS = 40000

# Layouts with h2c. "default" is the harness's MPM block (ThreadsPerChild 25,
# 2 children to start with). "small" has 4 children of 8 threads each, all
# started at once: mod_http2's worker threads then outnumber ThreadsPerChild
# in every child, and several children serve at the same time.
H2_LAYOUTS = {
    "default": None,
    "small": {"StartServers": 4, "ServerLimit": 4, "ThreadsPerChild": 8,
              "MaxRequestWorkers": 32, "MinSpareThreads": 8, "MaxSpareThreads": 32,
              "MaxConnectionsPerChild": 0},
}
# prefork: all children from the start and none stopped as idle, since the
# parent wakes an idle child it stops with a request of its own ("OPTIONS *",
# httpd's internal dummy connection), which is logged and recorded like any.
PREFORK_FIXED = MPM_PROFILES["fixed"]["prefork"]


def served_and_sent(h):
    served = h.access_log_count()
    exits = flusher_exits(h)
    return served, {k: sum(e.get(k, 0) for e in exits)
                    for k in ("recorded", "sent", "rejected", "dropped_full",
                              "dropped_retry", "dropped_exit")}


def assert_stored_equals_served(influx, db, h, expected):
    served, tot = served_and_sent(h)
    stored = influx.count(db, "apache_request")
    assert served == expected, (served, expected)
    # Every point reached InfluxDB...
    assert tot["recorded"] == tot["sent"] == served, (served, tot)
    # ... and InfluxDB kept every one of them: no two of one series share a
    # timestamp.
    assert stored == served, (
        "InfluxDB holds %d points for %d requests served and %d points sent: "
        "%d points were overwritten by points of the same series with the same "
        "timestamp" % (stored, served, tot["sent"], tot["sent"] - stored))


@pytest.mark.allowed_errors(r"AH00161: server reached MaxRequestWorkers")
@pytest.mark.parametrize("mpm,layout", [
    ("event", "default"), ("worker", "default"), ("prefork", "default"),
    ("event", "small"),
])
def test_h2c_stored_equals_served(module_built, influx, influx_db, httpd_factory,
                                  mpm, layout):
    """h2load over h2c (prior knowledge): 8 connections, 32 streams each."""
    # A ring for the whole burst: mod_http2's workers log many streams at
    # once even in a prefork child, whose default ring is sized for one
    # thread; what this test is about is timestamps, not capacity.
    h = httpd_factory(mpm=mpm, modules=["http2"],
                      mpm_conf=PREFORK_FIXED if mpm == "prefork" else H2_LAYOUTS[layout],
                      extra=H2C_CONF + str(Imx(influx.write_url(influx_db), batch_size=1000,
                                               buffer_size=65536, flush_interval="200ms")))
    res = h2load(h.url + "small.txt", H2_REQUESTS, c=8, m=32, timeout=180)
    assert "Application protocol: h2c" in res.output, res.output
    assert res.succeeded == res.s2xx == H2_REQUESTS, res.output
    h.wait_access_log_count(H2_REQUESTS)
    h.stop()
    assert_stored_equals_served(influx, influx_db, h, H2_REQUESTS)


# Layouts of more than 1,000 threads: far above the 1,000 distinct values
# the three sub-microsecond digits of a timestamp can hold.
#
# event: 48 x 64 = 3,072 threads possible, 40 x 64 = 2,560 started, under
# ab -c 200 with keep-alive. The event MPM hands each request to the next idle
# worker, so every thread of every child ends up logging requests.
#
# worker: 2 x 1,000 threads. The worker MPM keeps a keep-alive connection on
# one thread, so under ab -c 8 each child logs from the few threads that hold
# its connections, and those are the same few thread numbers in both
# children: thread n of the second child is 1,000 threads after thread n of
# the first.
BIG_LAYOUTS = {
    "event": ({"ServerLimit": 48, "ThreadsPerChild": 64, "StartServers": 40,
               "MaxRequestWorkers": 48 * 64, "MinSpareThreads": 64,
               "MaxSpareThreads": 48 * 64, "MaxConnectionsPerChild": 0}, 200),
    "worker": ({"ThreadLimit": 1000, "ServerLimit": 2, "ThreadsPerChild": 1000,
                "StartServers": 2, "MaxRequestWorkers": 2000, "MinSpareThreads": 1000,
                "MaxSpareThreads": 2000, "MaxConnectionsPerChild": 0}, 8),
}
BIG_REQUESTS = 30000


@pytest.mark.parametrize("mpm", ["event", "worker"])
def test_more_than_1000_threads_stored_equals_served(module_built, influx, influx_db,
                                                     httpd_factory, mpm):
    layout, concurrency = BIG_LAYOUTS[mpm]
    h = httpd_factory(mpm=mpm, mpm_conf=layout,
                      extra=str(Imx(influx.write_url(influx_db), batch_size=1000)))
    # Every child up before the load, so that it spreads over them.
    wait_until(lambda: len(h.children()) >= layout["StartServers"], 60,
               message="not all children started")
    res = ab(h.url + "small.txt", BIG_REQUESTS, concurrency, keepalive=True, timeout=240)
    assert res.complete == BIG_REQUESTS and res.failed == 0, res.output
    h.wait_access_log_count(BIG_REQUESTS)
    h.stop()
    assert_stored_equals_served(influx, influx_db, h, BIG_REQUESTS)
