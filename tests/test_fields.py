"""InfluxMetricsFields, InfluxMetricsSLO and request ids (issue 11), on a real
httpd against a real InfluxDB: time to first byte through mod_proxy in front
of a backend that sends its headers after 50 ms and its body 200 ms later,
request ids from traceparent, mod_unique_id and a header, the SLO's counts
and the exemplar of the slowest request, hostile ids."""

import http.client
import socket
import threading
import time

import pytest

from harness import Imx
from test_summary import delay_conf, mod_delay  # noqa: F401 - a fixture

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = "00-%s-00f067aa0ba902b7-01" % TRACE_ID
BAD_TRACEPARENTS = [
    "00-%s-00f067aa0ba902b7-01" % TRACE_ID.upper(),        # uppercase hex
    "00-%s-00f067aa0ba902b7-01" % ("0" * 32),              # all-zero trace id
    "ff-%s-00f067aa0ba902b7-01" % TRACE_ID,                # version ff
    "00-%s-00f067aa0ba902b7-01-extra" % TRACE_ID,          # version 00 is 55 bytes
    "00-%s-0000000000000000-01" % TRACE_ID,                # all-zero parent id
]


class SlowBackend:
    """An HTTP/1.1 backend on 127.0.0.1 (keep-alive): each answer's headers
    after 50 ms, its body 200 ms later."""

    HEAD_DELAY = 0.05
    BODY_DELAY = 0.2
    BODY = b"slow body\n"

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.threads = []
        self.served = 0
        self.accepter = threading.Thread(target=self._accept, daemon=True)
        self.accepter.start()

    def _accept(self):
        while not self.stopping.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            t = threading.Thread(target=self._serve, args=(c,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, c):
        c.settimeout(10)
        buf = b""
        try:
            while not self.stopping.is_set():
                while b"\r\n\r\n" not in buf:
                    data = c.recv(65536)
                    if not data:
                        return
                    buf += data
                _, buf = buf.split(b"\r\n\r\n", 1)
                time.sleep(self.HEAD_DELAY)
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                          b"Content-Length: %d\r\n\r\n" % len(self.BODY))
                time.sleep(self.BODY_DELAY)
                c.sendall(self.BODY)
                self.served += 1
        except OSError:
            pass
        finally:
            c.close()

    def stop(self):
        self.stopping.set()
        self.sock.close()
        self.accepter.join(timeout=5)
        for t in self.threads:
            t.join(timeout=12)


@pytest.fixture
def backend():
    b = SlowBackend()
    yield b
    b.stop()


def get(h, path, headers=None, raw_headers=()):
    """One GET; returns (status, response headers, body). raw_headers: (name,
    bytes) pairs sent as they are."""
    c = http.client.HTTPConnection("127.0.0.1", h.port, timeout=30)
    try:
        c.putrequest("GET", path)
        for k, v in (headers or {}).items():
            c.putheader(k, v)
        for k, v in raw_headers:
            c.putheader(k, v)
        c.endheaders()
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def summary_rows(influx, db, route):
    return influx.select("SELECT * FROM apache_summary WHERE route = '%s'" % route, db)


def proxy_conf(port):
    return """
<Location /up>
    ProxyPass http://127.0.0.1:%d/
    InfluxMetricsRoute up
</Location>
""" % port


# --------------------------------------------------------------------------
# Summary mode

def test_summary_ttfb_through_proxy(module_built, influx, influx_db, httpd_factory,
                                    backend):
    """ttfb_p*_us counts from the backend's headers (50 ms), the duration
    from its body (250 ms)."""
    h = httpd_factory(mpm="event", modules=["proxy", "proxy_http"], extra=str(Imx(
        influx.write_url(influx_db), flush_interval="60s",
        extra="InfluxMetricsMode summary\nInfluxMetricsFields ttfb\n")) + proxy_conf(backend.port))
    for _ in range(5):
        status, _, body = get(h, "/up/x")
        assert status == 200 and body == SlowBackend.BODY
    h.stop()
    rows = summary_rows(influx, influx_db, "up")
    assert sum(r["count"] for r in rows) == 5 == backend.served, rows
    for r in rows:
        assert r["duration_us_min"] >= 250000, r
        for p in (50, 95, 99):
            assert 45000 <= r["ttfb_p%d_us" % p] <= 150000, r


RID_CONF = """
# Room for the 10 KB X-Request-ID below (the default limit answers 400).
LimitRequestFieldSize 16384
<Location /rid>
    SetHandler imx-delay
    Header always set X-Unique-ID "%{UNIQUE_ID}e"
</Location>
<LocationMatch "^/rid/nouid">
    # In a directory context this runs after mod_unique_id's id is set.
    SetEnvIf Request_URI . !UNIQUE_ID
</LocationMatch>
"""


def rid_routes():
    """One route per case, so each summary series holds one request."""
    return "".join('<Location /rid/%s>\n    InfluxMetricsRoute rid-%s\n</Location>\n'
                   % (n, n) for n in ("tp", "uid", "badtp", "nouid-hdr", "nouid-badtp",
                                      "nouid-long", "nouid-quote", "nouid-utf8",
                                      "nouid-none"))


def test_summary_request_id_sources(module_built, mod_delay, influx,  # noqa: F811
                                    influx_db, httpd_factory):
    """traceparent first, then UNIQUE_ID, then InfluxMetricsRequestIDHeader;
    a malformed traceparent falls through; hostile header values are no id."""
    h = httpd_factory(mpm="event", modules=["unique_id", "headers", "setenvif"], extra=str(Imx(
        influx.write_url(influx_db), flush_interval="60s",
        extra="InfluxMetricsMode summary\nInfluxMetricsFields request_id\n"
              "InfluxMetricsRequestIDHeader X-Request-ID\n"))
        + delay_conf(mod_delay) + RID_CONF + rid_routes())
    want = {}
    st, _, _ = get(h, "/rid/tp", {"traceparent": TRACEPARENT, "X-Request-ID": "hdr-1"})
    assert st == 200
    want["rid-tp"] = TRACE_ID
    st, hdrs, _ = get(h, "/rid/uid", {"X-Request-ID": "hdr-2"})
    assert st == 200 and hdrs["X-Unique-ID"]
    want["rid-uid"] = hdrs["X-Unique-ID"]
    # A malformed traceparent: the next source, UNIQUE_ID.
    st, hdrs, _ = get(h, "/rid/badtp", {"traceparent": BAD_TRACEPARENTS[0]})
    want["rid-badtp"] = hdrs["X-Unique-ID"]
    # Without UNIQUE_ID: the header.
    st, hdrs, _ = get(h, "/rid/nouid-hdr", {"X-Request-ID": "abc-123_x.y:z@w/+="})
    assert hdrs.get("X-Unique-ID", "") in ("", "(null)"), hdrs
    want["rid-nouid-hdr"] = "abc-123_x.y:z@w/+="
    for i, bad in enumerate(BAD_TRACEPARENTS):
        get(h, "/rid/nouid-badtp", {"traceparent": bad, "X-Request-ID": "fallback"})
    want["rid-nouid-badtp"] = "fallback"
    # Hostile values are no id at all.
    get(h, "/rid/nouid-long", {"X-Request-ID": "a" * 10240})
    get(h, "/rid/nouid-quote", {"X-Request-ID": 'a"b,c=d e'})
    get(h, "/rid/nouid-utf8", raw_headers=[("X-Request-ID", b"id-\xff\xfe\xc3")])
    get(h, "/rid/nouid-none")
    h.stop()
    for route in ("rid-nouid-long", "rid-nouid-quote", "rid-nouid-utf8", "rid-nouid-none"):
        want[route] = None
    for route, rid in want.items():
        rows = summary_rows(influx, influx_db, route)
        n = len(BAD_TRACEPARENTS) if route == "rid-nouid-badtp" else 1
        assert sum(r["count"] for r in rows) == n, (route, rows)
        got = [r.get("max_request_id") for r in rows if r.get("max_request_id")]
        assert got == ([rid] if rid else []), (route, got)


def test_summary_slo_and_exemplar(module_built, mod_delay, influx, influx_db,  # noqa: F811
                                  httpd_factory):
    """slo_good: the requests no slower than InfluxMetricsSLO and not 5xx,
    exactly; max_request_id: the id of the slowest request."""
    h = httpd_factory(mpm="event", extra=str(Imx(
        influx.write_url(influx_db), flush_interval="60s",
        extra="InfluxMetricsMode summary\nInfluxMetricsFields request_id\n"
              "InfluxMetricsRequestIDHeader X-Request-ID\n"))
        + delay_conf(mod_delay) + "<Location /delay>\n    InfluxMetricsSLO 100ms\n</Location>\n")
    plan = ([("fast-%d" % i, 2000, 200) for i in range(20)]
            + [("slow-%d" % i, 130000, 200) for i in range(6)]
            + [("err-%d" % i, 1000, 503) for i in range(5)]
            + [("slowest", 300000, 200)]
            + [("slowerr-%d" % i, 150000, 500) for i in range(2)])
    threads = [threading.Thread(target=lambda p=p: get(
        h, "/delay?us=%d&status=%d" % (p[1], p[2]), {"X-Request-ID": p[0]})) for p in plan]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    h.stop()
    rows = summary_rows(influx, influx_db, "delay")
    assert sum(r["count"] for r in rows) == len(plan), rows
    assert sum(r.get("slo_good") or 0 for r in rows) == 20, rows
    assert all(r["slo_threshold_us"] == 100000 for r in rows), rows
    ok = [r for r in rows if r["status_class"] == "2xx"]
    slowest = max(ok, key=lambda r: r["duration_us_max"])
    assert slowest["max_request_id"] == "slowest", slowest
    errs = [r for r in rows if r["status_class"] == "5xx"]
    assert max(errs, key=lambda r: r["duration_us_max"])["max_request_id"].startswith("slowerr-")
