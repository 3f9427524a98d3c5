# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""InfluxMetricsFields, InfluxMetricsSLO and request ids, on a real
httpd against a real InfluxDB: time to first byte through mod_proxy in front
of a backend that sends its headers after 50 ms and its body 200 ms later,
request ids from traceparent, mod_unique_id and a header, the SLO's counts
and the exemplar of the slowest request, hostile ids."""

import http.client
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

import harness
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


# --------------------------------------------------------------------------
# Raw mode

def raw_rows(influx, db, where=""):
    return influx.select("SELECT * FROM apache_request" + (" WHERE " + where if where else ""),
                         db)


def test_raw_ttfb_bytes_upstream(module_built, influx, influx_db, httpd_factory, backend):
    """Through mod_proxy: ttfb_us from the backend's headers, duration_us
    from its body, upstream names the worker (a balancer's member for a
    balancer); '-' for what mod_proxy did not handle."""
    h = httpd_factory(mpm="event", modules=["proxy", "proxy_http", "proxy_balancer",
                                            "slotmem_shm", "lbmethod_byrequests"],
                      extra=str(Imx(influx.write_url(influx_db), extra=(
                          "InfluxMetricsFields ttfb bytes_received upstream\n")))
                      + proxy_conf(backend.port) + """
<Proxy balancer://pool>
    BalancerMember http://127.0.0.1:%d/member
</Proxy>
<Location /bal>
    ProxyPass balancer://pool/
    InfluxMetricsRoute bal
</Location>
""" % backend.port)
    for _ in range(3):
        assert get(h, "/up/x")[0] == 200
    assert get(h, "/bal/y")[0] == 200
    assert get(h, "/small.txt")[0] == 200
    # mod_dir's DirectoryIndex: a subrequest made the main request.
    assert get(h, "/")[0] == 200
    h.stop()
    rows = raw_rows(influx, influx_db)
    assert len(rows) == 6 == h.access_log_count(), rows
    up = [r for r in rows if r.get("route") == "up"]
    assert len(up) == 3
    for r in up:
        assert 45000 <= r["ttfb_us"] <= 150000, r
        assert r["duration_us"] >= 250000, r
        assert r["upstream"] == "http://127.0.0.1:%d/" % backend.port, r
        assert r["bytes_received"] > 0, r
    bal = [r for r in rows if r.get("route") == "bal"]
    assert len(bal) == 1 and bal[0]["upstream"] == "http://127.0.0.1:%d/member" % backend.port
    static = [r for r in rows if not r.get("route")]
    assert len(static) == 2 and all(r["upstream"] == "-" for r in static), static
    assert all(0 < r["ttfb_us"] <= r["duration_us"] for r in static), static


def test_raw_bytes_received(module_built, influx, influx_db, httpd_factory, backend):
    """bytes_received: with mod_logio (built into Debian's httpd), the
    request's bytes on the wire, headers included, as %I."""
    assert "logio" in harness.apache_builtin_modules()
    h = httpd_factory(mpm="event", modules=["proxy", "proxy_http"],
                      extra=str(Imx(influx.write_url(influx_db), extra=(
                          "InfluxMetricsFields bytes_received\n"))) + proxy_conf(backend.port))
    head = ("POST /up/p HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: 12345\r\n\r\n"
            % h.port).encode()
    s = socket.create_connection(("127.0.0.1", h.port), timeout=30)
    s.sendall(head + b"x" * 12345)
    got = b""
    while not got.endswith(SlowBackend.BODY):
        data = s.recv(65536)
        assert data, got
        got += data
    s.close()
    h.stop()
    rows = raw_rows(influx, influx_db)
    assert [r["bytes_received"] for r in rows] == [len(head) + 12345], rows


def test_raw_request_id_sources(module_built, mod_delay, influx,  # noqa: F811
                                influx_db, httpd_factory):
    """request_id round-trips from each source; hostile values are no id and
    never break a line: every request is stored."""
    h = httpd_factory(mpm="event", modules=["unique_id", "headers", "setenvif"], extra=str(Imx(
        influx.write_url(influx_db), extra="InfluxMetricsFields request_id\n"
        "InfluxMetricsRequestIDHeader X-Request-ID\n"))
        + delay_conf(mod_delay) + RID_CONF + rid_routes())
    want = {}
    get(h, "/rid/tp", {"traceparent": TRACEPARENT, "X-Request-ID": "hdr-1"})
    want["rid-tp"] = [TRACE_ID]
    _, hdrs, _ = get(h, "/rid/uid", {"X-Request-ID": "hdr-2"})
    want["rid-uid"] = [hdrs["X-Unique-ID"]]
    _, hdrs, _ = get(h, "/rid/badtp", {"traceparent": BAD_TRACEPARENTS[2]})
    want["rid-badtp"] = [hdrs["X-Unique-ID"]]
    get(h, "/rid/nouid-hdr", {"X-Request-ID": "abc-123_x.y:z@w/+="})
    want["rid-nouid-hdr"] = ["abc-123_x.y:z@w/+="]
    for bad in BAD_TRACEPARENTS:
        get(h, "/rid/nouid-badtp", {"traceparent": bad, "X-Request-ID": "fallback"})
    want["rid-nouid-badtp"] = ["fallback"] * len(BAD_TRACEPARENTS)
    get(h, "/rid/nouid-long", {"X-Request-ID": "a" * 10240})
    get(h, "/rid/nouid-quote", {"X-Request-ID": 'a"b,c=d e\\'})
    get(h, "/rid/nouid-utf8", raw_headers=[("X-Request-ID", b"id-\xff\xfe\xc3")])
    get(h, "/rid/nouid-none")
    # Exactly 64 bytes is kept, 65 is not.
    get(h, "/rid/nouid-hdr", {"X-Request-ID": "b" * 64})
    want["rid-nouid-hdr"].append("b" * 64)
    get(h, "/rid/nouid-long", {"X-Request-ID": "c" * 65})
    for route in ("rid-nouid-long", "rid-nouid-quote", "rid-nouid-utf8", "rid-nouid-none"):
        want[route] = []
    h.stop()
    rows = raw_rows(influx, influx_db)
    assert len(rows) == h.access_log_count() == 15, len(rows)
    for route, ids in want.items():
        got = [r for r in rows if r.get("route") == route]
        assert got, route
        assert sorted(r["request_id"] for r in got if r.get("request_id") is not None) \
            == sorted(ids), (route, got)


def make_cert(d):
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, timeout=60, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for p in (d, cert, key):
        os.chmod(p, 0o755 if p == d else 0o644)
    return cert, key


def curl(*args):
    p = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
                        "--max-time", "20"] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    return p.stdout.decode()


def test_raw_protocol_and_tls(module_built, influx, influx_db, httpd_factory):
    """protocol for HTTP/1.0, HTTP/1.1 and h2c; tls for plain connections,
    TLS 1.2 and 1.3 with mod_ssl on a private certificate, also over h2."""
    d = harness.make_tmpdir("imx-fields-tls")
    try:
        cert, key = make_cert(d)
        sport = harness.free_port()
        h = httpd_factory(mpm="event", modules=["ssl", "socache_shmcb", "http2"],
                          extra=harness.H2C_CONF + str(Imx(
                              influx.write_url(influx_db),
                              extra="InfluxMetricsFields protocol tls\n")) + """
Listen 127.0.0.1:%d
<VirtualHost 127.0.0.1:%d>
    ServerName tls.test
    Protocols h2 http/1.1
    SSLEngine on
    SSLCertificateFile %s
    SSLCertificateKeyFile %s
    # A virtual host's list replaces the server's.
    InfluxMetricsFields tls
</VirtualHost>
""" % (sport, sport, cert, key))
        surl = "https://127.0.0.1:%d/small.txt" % sport
        # (curl names the answer's version: httpd answers HTTP/1.1 to 1.0)
        assert curl("--http1.0", h.url + "small.txt") == "1.1 200"
        assert curl("--http1.1", h.url + "small.txt") == "1.1 200"
        assert curl("--http2-prior-knowledge", h.url + "small.txt") == "2 200"
        assert curl("-k", "--http1.1", "--tlsv1.3", surl) == "1.1 200"
        assert curl("-k", "--http1.1", "--tlsv1.2", "--tls-max", "1.2", surl) == "1.1 200"
        assert curl("-k", "--http2", "--tlsv1.3", surl) == "2 200"
        h.stop()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    rows = raw_rows(influx, influx_db)
    got = sorted((r["vhost"], r.get("protocol") or "", r["tls"]) for r in rows)
    assert got == sorted([
        ("localhost", "HTTP/1.0", "none"), ("localhost", "HTTP/1.1", "none"),
        ("localhost", "HTTP/2.0", "none"), ("tls.test", "", "TLSv1.3"),
        ("tls.test", "", "TLSv1.2"), ("tls.test", "", "TLSv1.3")]), got


def test_upstream_across_graceful_restart(module_built, influx, influx_db, httpd_factory,
                                          backend):
    """The hook into mod_proxy is made again in every generation (mod_proxy
    is loaded afresh), once; a worker added by the restart gets its name."""
    h = httpd_factory(mpm="event", modules=["proxy", "proxy_http"],
                      extra=str(Imx(influx.write_url(influx_db),
                                    extra="InfluxMetricsFields upstream\n"))
                      + proxy_conf(backend.port))
    assert get(h, "/up/a")[0] == 200
    other = SlowBackend()
    try:
        h.extra += """
<Location /up2>
    ProxyPass http://127.0.0.1:%d/second
    InfluxMetricsRoute up2
</Location>
""" % other.port
        h.write_config()
        h.graceful()
        assert get(h, "/up/b")[0] == 200
        assert get(h, "/up2/c")[0] == 200
        h.restart()
        assert get(h, "/up2/d")[0] == 200
        h.stop()
    finally:
        other.stop()
    rows = raw_rows(influx, influx_db)
    got = sorted((r["route"], r["upstream"]) for r in rows)
    first, second = ("http://127.0.0.1:%d/" % backend.port,
                     "http://127.0.0.1:%d/second" % other.port)
    assert got == [("up", first), ("up", first), ("up2", second), ("up2", second)], got
