# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
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

import base64
import http.client
import http.server
import json
import os
import shutil
import socket
import threading
import time
import urllib.parse

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


# --------------------------------------------------------------------------
# Proxies

PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
              "all_proxy", "ALL_PROXY")


class Trap:
    """A listening socket on 127.0.0.1 that counts connections and never
    answers: a proxy nobody configured for the module."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((harness.HOST, 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.url = "http://%s:%d" % self.sock.getsockname()
        self.connections = 0
        self._held = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            self._held.append(c)

    def close(self):
        self._stop = True
        self._thread.join(timeout=5)
        for c in self._held:
            c.close()
        self.sock.close()


@pytest.fixture
def trap():
    t = Trap()
    yield t
    t.close()


def proxy_env(url, no_proxy=None):
    """httpd's environment with every proxy variable libcurl reads set to
    url, and no_proxy as given (unset by default)."""
    env = {k: v for k, v in os.environ.items()
           if k not in PROXY_VARS and k.lower() != "no_proxy"}
    env.update(dict.fromkeys(PROXY_VARS, url))
    if no_proxy is not None:
        env["no_proxy"] = env["NO_PROXY"] = no_proxy
    return env


class ForwardingProxy(http.server.BaseHTTPRequestHandler):
    """A plain HTTP forward proxy for POSTs: records each request's target
    and Proxy-Authorization, passes it on, and passes the answer back."""
    protocol_version = "HTTP/1.1"
    HOP = ("proxy-authorization", "proxy-connection", "connection", "host",
           "content-length", "keep-alive")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        target = urllib.parse.urlsplit(self.path)
        self.server.seen.append((self.path, self.headers.get("Proxy-Authorization")))
        c = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
        c.request("POST", target.path + ("?" + target.query if target.query else ""),
                  body=body, headers={k: v for k, v in self.headers.items()
                                      if k.lower() not in self.HOP})
        r = c.getresponse()
        data = r.read()
        c.close()
        self.send_response(r.status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


@pytest.fixture
def forward_proxy():
    srv = http.server.ThreadingHTTPServer((harness.HOST, 0), ForwardingProxy)
    srv.seen = []
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_environment_proxies_are_ignored(module_built, vm, trap, httpd_factory):
    """http_proxy, https_proxy and ALL_PROXY in httpd's environment do not
    take the POSTs (and the token) anywhere: they go straight to the URL."""
    h = httpd_factory(mpm="event", env=proxy_env(trap.url), extra=str(Imx(
        vm.write_url(db="proxyenv"), token="env-proxy-t0ken", timeout="2s")))
    assert ab(h.url + "small.txt", 200, 4).complete == 200
    h.stop()
    assert trap.connections == 0
    assert vm.count_samples('apache_request_duration_us{db="proxyenv"}') \
        == h.access_log_count() == 200


def test_configured_proxy_is_used(module_built, vm, trap, forward_proxy, httpd_factory):
    """InfluxMetricsProxy takes every POST, with its credentials, whatever the
    environment's proxy and no_proxy say; its password is never logged."""
    port = forward_proxy.server_address[1]
    proxy = "http://pxuser:px-s3cret@127.0.0.1:%d" % port
    url = vm.write_url(db="proxyconf")
    h = httpd_factory(mpm="event", env=proxy_env(trap.url, no_proxy="127.0.0.1,localhost"),
                      extra=str(Imx(url, extra="InfluxMetricsProxy %s\n" % proxy)))
    assert ab(h.url + "small.txt", 200, 4).complete == 200
    h.stop()
    assert trap.connections == 0
    assert forward_proxy.seen
    auth = "Basic " + base64.b64encode(b"pxuser:px-s3cret").decode()
    assert all(target.startswith(vm.url + "/write?db=proxyconf") and pa == auth
               for target, pa in forward_proxy.seen), forward_proxy.seen
    assert vm.count_samples('apache_request_duration_us{db="proxyconf"}') \
        == h.access_log_count() == 200
    assert "px-s3cret" not in h.error_log_text()


@pytest.mark.allowed_errors(r"IMX0100: will retry", r"IMX0100: flusher exit")
def test_proxy_errors_hide_its_credentials(module_built, httpd_factory):
    proxy = "http://pxuser:px/s3cret@127.0.0.1:%d" % closed_port()
    h = httpd_factory(mpm="event", extra=str(Imx(
        "http://127.0.0.1:%d/write?db=x" % closed_port(), timeout="1s",
        extra="InfluxMetricsProxy %s\n" % proxy)) + STATUS)
    assert harness.http_request(h.url + "small.txt")[0] == 200
    j = wait_until(lambda: (lambda j: j if j["last_error"] else None)(status_json(h)), 15)
    h.stop()
    assert " via proxy http://" in j["last_error"], j["last_error"]
    for text in (j["last_error"], h.error_log_text()):
        for secret in ("px/s3cret", "s3cret", "pxuser"):
            assert secret not in text, (secret, text)


PROXY_ERRORS = [
    ("InfluxMetricsProxy ftp://pxuser:px-s3cret@127.0.0.1:21", ["socks5://"]),
    ("InfluxMetricsProxy pxuser:px-s3cret@127.0.0.1:3128", ["http://"]),
    ("InfluxMetricsProxy http://pxuser:px-s3cret@", ["no host"]),
    ('InfluxMetricsProxy "http://pxuser:px/s3cret@127.0.0.1:3128 x"', ["white space"]),
    ("<VirtualHost 127.0.0.1:1>\nInfluxMetricsProxy http://127.0.0.1:3128\n</VirtualHost>",
     ["VirtualHost"]),
]


@pytest.mark.parametrize("lines,words", PROXY_ERRORS, ids=[p[0][19:60] for p in PROXY_ERRORS])
def test_proxy_directive_errors(module_built, lines, words):
    rc, out = configtest("InfluxMetricsURL http://127.0.0.1:9/write?db=x\n" + lines)
    assert rc != 0, out
    assert "InfluxMetricsProxy" in out
    for w in words:
        assert w in out, (w, out)
    for secret in ("s3cret", "pxuser"):
        assert secret not in out, (secret, out)


@pytest.mark.parametrize("proxy", ["http://127.0.0.1:3128", "https://u:p@proxy.example:443",
                                   "socks5://127.0.0.1:1080", "SOCKS5H://127.0.0.1:1080"])
def test_proxy_directive_accepts(module_built, proxy):
    rc, out = configtest("InfluxMetricsURL http://127.0.0.1:9/write?db=x\n"
                         "InfluxMetricsProxy %s\n" % proxy)
    assert rc == 0 and "Syntax OK" in out, out


# --------------------------------------------------------------------------
# InfluxMetricsTagFrom: allow-lists and the reset at each restart

def get_all(h, requests):
    """GETs (path, X-Tenant or None) one after the other on one keep-alive
    connection, so the server logs them in this order."""
    host, port = h.url.split("//")[1].rstrip("/").split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        for path, tenant in requests:
            c.request("GET", path, headers={"X-Tenant": tenant} if tenant else {})
            r = c.getresponse()
            r.read()
            assert r.status == 200
    finally:
        c.close()


def tenants(influx, db, where=""):
    rows = influx.select("SELECT duration_us, tenant FROM apache_request " + where, db)
    return sorted(r.get("tenant") or "" for r in rows)


TAG_VALUES = """
InfluxMetricsMaxTagValues 4
InfluxMetricsTagFrom header X-Tenant tenant
InfluxMetricsTagValues tenant alpha beta
InfluxMetricsTagValues tenant "gamma delta"
<Location /sub>
    InfluxMetricsTagValues tenant sub-only
</Location>
"""


def test_tag_values_allow_list(module_built, influx, influx_db, httpd_factory):
    """Values off the list are written as "other" and take no place in the
    table: ten hostile values first, and the four listed ones (as many as
    InfluxMetricsMaxTagValues) are still admitted. Repeated lines and nested
    contexts add to the list."""
    h = httpd_factory(mpm="event", extra=str(Imx(influx.write_url(influx_db))) + TAG_VALUES)
    get_all(h, [("/small.txt", "evil-%d" % i) for i in range(10)]
            + [("/small.txt", t) for t in ("alpha", "beta", "gamma delta", "sub-only", None)]
            + [("/sub/page.html", t) for t in ("sub-only", "alpha", "evil-x")])
    h.stop()
    assert tenants(influx, influx_db) == sorted(
        ["", "alpha", "alpha", "beta", "gamma delta", "sub-only"] + ["other"] * 12)


TAG_VALUES_ERRORS = [
    ("InfluxMetricsTagFrom header X-Tenant\nInfluxMetricsTagValues tenant a b",
     ["InfluxMetricsTagValues", "'tenant'", "InfluxMetricsTagFrom"]),
    ("InfluxMetricsTagValues tenant a", ["InfluxMetricsTagValues", "'tenant'"]),
    ("InfluxMetricsTagFrom header X-Tenant tenant\nInfluxMetricsTagValues tenant",
     ["InfluxMetricsTagValues"]),
]


@pytest.mark.parametrize("lines,words", TAG_VALUES_ERRORS,
                         ids=["other key", "no TagFrom", "no value"])
def test_tag_values_errors(module_built, lines, words):
    rc, out = configtest("InfluxMetricsURL http://127.0.0.1:9/write?db=x\n" + lines)
    assert rc != 0, out
    for w in words:
        assert w in out, (w, out)


def test_tag_values_accepted(module_built):
    rc, out = configtest("InfluxMetricsURL http://127.0.0.1:9/write?db=x\n"
                         "<VirtualHost 127.0.0.1:1>\n"
                         "InfluxMetricsTagValues x-tenant a\n"
                         "<Location /a>\nInfluxMetricsTagFrom header X-Tenant\n"
                         "InfluxMetricsTagValues x-tenant b c\n</Location>\n"
                         "</VirtualHost>")
    assert rc == 0 and "Syntax OK" in out, out


@pytest.mark.parametrize("mpm", ["prefork", "event"])
def test_tag_values_forgotten_at_restart(module_built, influx, influx_db, httpd_factory, mpm):
    """Each generation starts from an empty table, in the other of two banks,
    once no child of the generations that used that bank is left. A child of
    generation 0, held in a request across two graceful restarts, makes the
    second one keep the current table (IMX0008); the values it logs after
    that read back whole, and the hard restart after its exit resets again."""
    h = httpd_factory(mpm=mpm, extra=str(Imx(influx.write_url(influx_db))) + """
InfluxMetricsMaxTagValues 3
InfluxMetricsTagFrom header X-Tenant tenant
""")
    gen0 = h.child_pids()
    held = socket.create_connection((harness.HOST, h.port), timeout=30)
    held.sendall(b"GET /small.txt HTTP/1.1\r\nHost: localhost\r\nX-Tenant: g0-1\r\n")
    time.sleep(0.5)  # a child of generation 0 reads it

    def round_(gen):
        get_all(h, [("/small.txt", "g%d-%d" % (gen, i)) for i in range(5)])

    round_(0)
    h.graceful()
    round_(1)                           # bank 1, empty
    h.graceful()
    wait_until(lambda: "IMX0008" in h.error_log_text(), 10)
    round_(2)                           # bank 1 still: full
    held.sendall(b"\r\n")
    assert held.recv(4096).startswith(b"HTTP/1.1 200")
    held.close()
    # Generation 0 gone, and reaped: its bank is free again.
    wait_until(lambda: not any(os.path.exists("/proc/%d" % p) for p in gen0), 15)
    h.restart()
    round_(3)                           # bank 0, emptied
    # A response reaches the client before the request is logged: stopping
    # at once can end a prefork child between the two (httpd's access log
    # then lacks it as well). Wait until all 21 are logged.
    h.wait_access_log_count(21)
    h.stop()
    log = h.error_log_text()
    assert log.count("IMX0008") == 1, log
    assert tenants(influx, influx_db) == sorted(
        ["g0-0", "g0-1", "g0-1", "g0-2", "g1-0", "g1-1", "g1-2", "g3-0", "g3-1", "g3-2"]
        + ["other"] * 11)


# --------------------------------------------------------------------------
# The token

def test_token_never_in_errors(module_built, monkeypatch):
    """A bad token names its file or variable, never its text: control
    characters (file, variable, literal), a file too large."""
    d = harness.make_tmpdir("imx-tok")
    try:
        ctl, big = os.path.join(d, "ctl.token"), os.path.join(d, "big.token")
        with open(ctl, "w") as f:
            f.write("file-s3cr3t\x01tail\n")
        with open(big, "w") as f:
            f.write("big-s3cr3t" * 2000)
        monkeypatch.setenv("IMX_TEST_BAD_TOKEN", "env-s3cr3t\x1b[31m")
        cases = [("file:" + ctl, [ctl, "control character"]),
                 ("file:" + big, [big, "16 KiB"]),
                 ("env:IMX_TEST_BAD_TOKEN", ["IMX_TEST_BAD_TOKEN", "control character"]),
                 ('"lit-s3cr3t\there"', ["the configuration", "control character"])]
        for arg, words in cases:
            rc, out = configtest("InfluxMetricsURL http://127.0.0.1:9/write?db=x\n"
                                 "InfluxMetricsToken %s\n" % arg)
            assert rc != 0, (arg, out)
            for w in words:
                assert w in out, (w, out)
            assert "s3cr3t" not in out and "tail" not in out, out
    finally:
        shutil.rmtree(d, ignore_errors=True)
