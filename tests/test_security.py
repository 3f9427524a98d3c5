"""Secrets stay out of messages, the POSTs go only where the configuration
says, and clients cannot fill the InfluxMetricsTagFrom tables for good.

* Credentials in InfluxMetricsURL (and InfluxMetricsProxy) never appear in a
  configtest error, in the error log or in the status page's last_error,
  whatever characters the password holds; the token never appears in an
  error, only the file or variable it came from.
* httpd's http_proxy, https_proxy and ALL_PROXY are ignored; only
  InfluxMetricsProxy sends the POSTs through a proxy.
* InfluxMetricsTagValues limits a tag to listed values (others are written
  as "other"), and the values admitted under the InfluxMetricsMaxTagValues
  cap are forgotten at each restart, once no child of the generations that
  used the table is left.
"""

import http.client
import http.server
import json
import os
import socket
import threading

import pytest

import harness
from harness import Imx, ab, wait_until

STATUS = """
<Location /imx-status>
    SetHandler influx-metrics-status
    InfluxMetrics Off
</Location>
"""


def configtest(lines):
    h = harness.Httpd(mpm="event", extra=lines)
    try:
        h.write_config()
        return h.configtest()
    finally:
        h.cleanup()


def status_json(h):
    status, body, _ = harness.http_request(h.url + "imx-status?json")
    assert status == 200
    return json.loads(body)


def closed_port():
    """A port on 127.0.0.1 nothing listens on (free a moment ago)."""
    return harness.free_port()


# --------------------------------------------------------------------------
# Credentials in URLs

# Every error path of InfluxMetricsURL, each with a password (hunter2, with
# '/' in some) that must not be echoed, and what the message must still say.
URL_ERRORS = [
    ("InfluxMetricsURL ftp://writer:hunter2@127.0.0.1/write",
     ["must start with http://", "ftp://127.0.0.1/write"]),
    ("InfluxMetricsURL writer:hunter2@127.0.0.1:8086/write",
     ["must start with http://", "127.0.0.1:8086/write"]),
    ("InfluxMetricsURL ftp://writer:hun/ter2@127.0.0.1/write", ["must start with http://"]),
    ("InfluxMetricsURL http://writer:hunter2@", ["no host"]),
    ("InfluxMetricsURL http://writer:hunter2@/write", ["no host"]),
    ('InfluxMetricsURL "http://writer:hun/ter2@127.0.0.1/write?db=x y"', ["white space"]),
    ("InfluxMetricsURL http://writer:hun/ter2@127.0.0.1/write#x", ["fragment"]),
    ("InfluxMetricsURL http://writer:hun?ter2@127.0.0.1/write#x", ["fragment"]),
    ("InfluxMetricsURL http://writer:hun/ter2@127.0.0.1/write?db=x&precision=ms",
     ["precision=ns"]),
]


@pytest.mark.parametrize("lines,words", URL_ERRORS, ids=[u[0][17:60] for u in URL_ERRORS])
def test_url_errors_never_show_credentials(module_built, lines, words):
    rc, out = configtest(lines)
    assert rc != 0, out
    assert "InfluxMetricsURL" in out
    for w in words:
        assert w in out, (w, out)
    for secret in ("hunter2", "hun/ter2", "hun?ter2", "ter2", "writer"):
        assert secret not in out, (secret, out)


@pytest.mark.allowed_errors(r"IMX0100: will retry", r"IMX0100: flusher exit")
def test_password_with_slash_never_logged(module_built, httpd_factory):
    """libcurl ends the host at the first '/', so this URL cannot be used;
    the POSTs fail, and neither the log nor last_error shows any part of the
    password (the old redaction stopped looking for '@' at the first '/')."""
    url = "http://wr1ter:pa/ss-w0rd@127.0.0.1:%d/write?db=x" % closed_port()
    h = httpd_factory(mpm="event", extra=str(Imx(url, timeout="1s")) + STATUS)
    assert ab(h.url + "small.txt", 20, 2).complete == 20
    j = wait_until(lambda: (lambda j: j if j["last_error"] else None)(status_json(h)), 15)
    h.stop()
    texts = [h.error_log_text(), j["last_error"]] + [c["last_error"] or "" for c in j["children"]]
    assert "127.0.0.1" in j["last_error"], j["last_error"]
    for text in texts:
        for secret in ("pa/ss", "ss-w0rd", "wr1ter"):
            assert secret not in text, (secret, text)
    assert "IMX0009" in texts[0]          # the configuration warned about the '@'
