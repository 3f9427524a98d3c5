# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""https: the server's certificate is verified by default; a private CA is
trusted with InfluxMetricsTLSCACertificateFile; InfluxMetricsTLSVerify Off
skips the check only when asked."""

import http.server
import os
import shutil
import ssl
import subprocess
import threading

import pytest

import harness
from harness import Imx, ab, wait_until


class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(n)
        self.server.lines += body.count(b"apache_request,")
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


@pytest.fixture(scope="module")
def tls_sink():
    d = harness.make_tmpdir("imx-tls")
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, timeout=60, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.chmod(cert, 0o644)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    srv.lines = 0
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv, cert
    srv.shutdown()
    srv.server_close()
    shutil.rmtree(d, ignore_errors=True)


def url_of(srv):
    return "https://127.0.0.1:%d/write?db=x" % srv.server_address[1]


@pytest.mark.allowed_errors(r"IMX0100: will retry", r"IMX0100: flusher exit")
def test_self_signed_refused_by_default(module_built, tls_sink, httpd_factory):
    srv, _ = tls_sink
    before = srv.lines
    h = httpd_factory(mpm="event", extra=str(Imx(url_of(srv))))
    assert ab(h.url + "small.txt", 50, 2).complete == 50
    wait_until(lambda: "will retry" in h.error_log_text(), 15)
    h.stop()
    log = h.error_log_text()
    assert "SSL" in log or "certificate" in log, log
    assert srv.lines == before


def test_private_ca_file(module_built, tls_sink, httpd_factory):
    srv, cert = tls_sink
    before = srv.lines
    h = httpd_factory(mpm="event", extra=str(Imx(
        url_of(srv), extra="InfluxMetricsTLSCACertificateFile %s\n" % cert)))
    assert ab(h.url + "small.txt", 300, 4).complete == 300
    h.stop()
    assert srv.lines - before == h.access_log_count() == 300


def test_verify_off_when_asked(module_built, tls_sink, httpd_factory):
    srv, _ = tls_sink
    before = srv.lines
    h = httpd_factory(mpm="event", extra=str(Imx(
        url_of(srv), extra="InfluxMetricsTLSVerify Off\n")))
    assert ab(h.url + "small.txt", 100, 4).complete == 100
    h.stop()
    assert srv.lines - before == 100
