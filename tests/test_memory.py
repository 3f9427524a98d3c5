# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""Memory stays bounded through a long outage: the ring is allocated once and
the retry buffer evicts its oldest batches instead of growing."""

import json

import pytest

import harness
from harness import Imx, ab, wait_until

RETRY_BUFFER = 2 << 20


def rss_of(pid):
    with open("/proc/%d/statm" % pid) as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.allowed_errors(r"IMX0100: will retry", r"IMX0100: retry buffer full")
def test_child_rss_bounded_during_outage(module_built, httpd_factory):
    dead = "http://127.0.0.1:%d/write?db=x" % harness.free_port()   # nothing listens
    h = httpd_factory(mpm="event", mpm_conf=harness.fixed_threaded(1, 25),
        extra=str(Imx(dead, buffer_size=4096, extra=(
            "InfluxMetricsRetryBuffer %d\nInfluxMetricsRetryMaxTime 0\n" % RETRY_BUFFER)))
        + "<Location /imx-status>\n SetHandler influx-metrics-status\n"
          " InfluxMetrics Off\n</Location>\n")
    (child,) = h.child_pids()
    ab(h.url + "small.txt", 2000, 10)
    base = rss_of(child)
    rss = []
    for _ in range(3):
        # ~30,000 points of ~110 bytes each round: more than the retry buffer holds.
        assert ab(h.url + "small.txt", 30000, 10).complete == 30000
        wait_until(lambda: json.loads(harness.http_request(
            h.url + "imx-status?json")[1])["dropped_retry"] > 0, 60)
        rss.append(rss_of(child))
    st = json.loads(harness.http_request(h.url + "imx-status?json")[1])
    assert h.child_pids() == [child]          # the same child all along
    assert st["retry_bytes"] <= RETRY_BUFFER and st["dropped_retry"] > 0, st
    # Growth over the warmed-up child: the retry buffer, batch buffers and
    # allocator slack, and no more with every further round of load.
    assert max(rss) - base < RETRY_BUFFER + (6 << 20), (base, rss)
    assert rss[2] - rss[1] < 2 << 20, rss
    h.stop()
