# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""The module's own accounts of itself: its status page (IMX_STATUS_CONF in
a config, imx_status to read it) and the line each child's flusher logs at
exit (flusher_exits)."""

import json
import re

from .env import http_request

IMX_STATUS_PATH = "imx-status"
# The module's status handler, itself not recorded.
IMX_STATUS_CONF = """
<Location /%s>
    SetHandler influx-metrics-status
    InfluxMetrics Off
</Location>
""" % IMX_STATUS_PATH


def imx_status(h):
    """The status page's JSON (needs IMX_STATUS_CONF in the config)."""
    status, body, _ = http_request(h.url + IMX_STATUS_PATH + "?json")
    if status != 200:
        raise RuntimeError("status page: HTTP %d %r" % (status, body[:200]))
    return json.loads(body)


_EXIT_LINE = re.compile(r"\[pid (\d+)[^\]]*\] IMX0100: flusher exit: (.*)$")


def flusher_exits(h):
    """One dict per "flusher exit" line of the error log: "pid" and every
    counter of the line (recorded, sent, rejected, dropped_exit, ...)."""
    out = []
    for line in h.error_log_text().splitlines():
        m = _EXIT_LINE.search(line)
        if m:
            d = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
            d["pid"] = int(m.group(1))
            out.append(d)
    return out
