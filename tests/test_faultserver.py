# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""Self-tests of tests/faultserver.py (no httpd, no InfluxDB; a few seconds)."""

import gzip
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from faultserver import FaultServer

BODY = "m,host=a v=1i 1\nm,host=b v=2i 2\nm,host=c v=3i 3\n"


@pytest.fixture
def fs():
    server = FaultServer().start()
    yield server
    server.stop()


def post(fs, body=BODY, path="/write?db=imx", headers=None, timeout=5.0, conn=None):
    """One POST; returns (status, headers, body). conn: reuse a connection."""
    c = conn or http.client.HTTPConnection("127.0.0.1", fs.port, timeout=timeout)
    data = body.encode() if isinstance(body, str) else body
    c.request("POST", path, body=data, headers=headers or {})
    r = c.getresponse()
    out = (r.status, r.headers, r.read())
    if conn is None:
        c.close()
    return out


def test_ok_stores_lines_and_records_headers(fs):
    status, _, body = post(fs, headers={"Authorization": "Token s3cret",
                                        "Content-Type": "text/plain; charset=utf-8"})
    assert status == 204 and body == b""
    assert fs.count == 3 and fs.lines == BODY.splitlines()
    req = fs.requests[0]
    assert req.header("authorization") == "Token s3cret"
    assert req.method == "POST" and req.query == {"db": "imx"} and req.answer == 204
    assert fs.stats()["authorization"] == ["Token s3cret"]
    assert fs.write_url(db="x") == "%s/write?db=x" % fs.url
    assert fs.write_url(db="b", v2=True) == "%s/api/v2/write?org=o&bucket=b" % fs.url


def test_gzip_body_is_gunzipped(fs):
    status, _, _ = post(fs, body=gzip.compress(BODY.encode()),
                        headers={"Content-Encoding": "gzip"})
    assert status == 204 and fs.count == 3
    assert fs.requests[0].gzipped and fs.requests[0].body == BODY.encode()
    # A body that does not inflate is refused like InfluxDB does, not stored.
    status, _, body = post(fs, body=b"not gzip", headers={"Content-Encoding": "gzip"})
    assert status == 400 and "gzip" in json.loads(body)["error"] and fs.count == 3


def test_keep_alive_and_chunked(fs):
    c = http.client.HTTPConnection("127.0.0.1", fs.port, timeout=5)
    for _ in range(5):
        assert post(fs, conn=c)[0] == 204
    c.request("POST", "/write?db=imx", body=iter([b"m v=1i 1\n", b"m v=2i 2\n"]),
              encode_chunked=True)
    r = c.getresponse()
    r.read()
    c.close()
    assert r.status == 204
    assert fs.connections == 1 and fs.count == 17


@pytest.mark.parametrize("code,text", [
    (401, "authorization failed"),
    (403, "not authorized"),
    (404, 'database not found: "imx"'),
    (413, "Request Entity Too Large"),
    (500, "timeout"),
    (418, "injected 418"),
])
def test_status_modes(fs, code, text):
    fs.set_mode(code)
    status, headers, body = post(fs)
    assert status == code and text in json.loads(body)["error"]
    assert headers["X-Influxdb-Error"] == json.loads(body)["error"]
    assert fs.count == 0 and len(fs.received) == 3 and fs.answers[code] == 1


def test_partial_write(fs):
    fs.set_mode(400)
    status, _, body = post(fs)
    err = json.loads(body)["error"]
    assert status == 400 and err.startswith("partial write: field type conflict") \
        and err.endswith("dropped=3")
    assert fs.count == 0
    fs.set_mode(400, dropped=1)
    status, _, body = post(fs)
    assert status == 400 and json.loads(body)["error"].endswith("dropped=1")
    assert fs.lines == BODY.splitlines()[:2]
    fs.set_mode(400, body='{"error":"unable to parse \'x\': missing fields"}')
    status, _, body = post(fs)
    assert status == 400 and b"unable to parse" in body and fs.count == 2


def test_v3_partial_write(fs):
    """InfluxDB 3's write_lp answers, as documented: every refused line
    listed with its number; accept_partial=false stores nothing."""
    path = "/api/v3/write_lp?db=imx&precision=nanosecond"
    assert fs.write_url(db="d", v3=True) == "%s/api/v3/write_lp?db=d" % fs.url
    fs.set_mode(400, dropped=2)
    status, _, body = post(fs, path=path)
    doc = json.loads(body)
    assert status == 400 and doc["error"] == "partial write of line protocol occurred"
    assert [d["line_number"] for d in doc["data"]] == [2, 3]
    assert [d["original_line"] for d in doc["data"]] == BODY.splitlines()[1:]
    assert fs.lines == BODY.splitlines()[:1]
    status, _, body = post(fs, path=path + "&accept_partial=false")
    doc = json.loads(body)
    assert status == 400 and doc["error"] == "parsing failed for write_lp endpoint"
    assert doc["data"]["line_number"] == 2 and fs.count == 1
    fs.set_mode(400)
    status, _, body = post(fs, path=path)
    assert len(json.loads(body)["data"]) == 3 and fs.count == 1


@pytest.mark.parametrize("code", [429, 503])
def test_retry_after(fs, code):
    fs.set_mode(code, retry_after=7)
    status, headers, _ = post(fs)
    assert status == code and headers["Retry-After"] == "7" and fs.count == 0
    fs.set_mode(code)
    status, headers, _ = post(fs)
    assert status == code and headers["Retry-After"] is None


def test_fail_next_then_back_to_mode(fs):
    fs.fail_next(2, 503, retry_after=1).fail_next(1, 500)
    got = [post(fs)[0] for _ in range(4)]
    assert got == [503, 503, 500, 204] and fs.pending == 0
    assert fs.count == 3 and fs.answers == {503: 2, 500: 1, 204: 1}
    fs.set_mode(500)
    fs.script([204, (429, {"retry_after": 2}), (2, "ok", {})])
    assert [post(fs)[0] for _ in range(5)] == [204, 429, 204, 204, 500]


def test_max_body_answers_413_and_stores_the_rest(fs):
    fs.set_max_body(len(BODY) - 1).fail_next(1, 503)
    status, _, body = post(fs)
    # Over the limit: 413 before any queued answer, nothing stored.
    assert status == 413 and "too large" in json.loads(body)["error"].lower()
    assert fs.count == 0 and fs.pending == 1 and fs.stats()["max_body"] == len(BODY) - 1
    small = "m,host=a v=1i 1\n"
    assert post(fs, body=small)[0] == 503          # the queued answer, then the mode
    assert post(fs, body=small)[0] == 204 and fs.lines == [small.strip()]
    # The limit is on the body as received: gzipped, the same lines fit.
    fs.set_max_body(200)
    big = BODY * 10
    assert post(fs, body=big)[0] == 413
    assert post(fs, body=gzip.compress(big.encode()),
                headers={"Content-Encoding": "gzip"})[0] == 204
    fs.set_max_body(None)
    assert post(fs)[0] == 204 and fs.count == 1 + 30 + 3
    assert fs.answers == {413: 2, 503: 1, 204: 3}


def test_slow(fs):
    fs.set_mode("slow", delay=0.5)
    t0 = time.monotonic()
    status, _, _ = post(fs)
    assert status == 204 and time.monotonic() - t0 >= 0.45 and fs.count == 3
    fs.set_mode("slow", delay=0.2, status=503)
    assert post(fs)[0] == 503 and fs.count == 3


def test_blackhole_holds_until_released(fs):
    fs.set_mode("blackhole")
    t0 = time.monotonic()
    with pytest.raises(socket.timeout):
        post(fs, timeout=0.5)
    assert 0.4 <= time.monotonic() - t0 < 3
    fs.wait_requests(1)
    assert fs.requests[0].answer == "blackhole" and fs.count == 0
    # The connection stays open and unanswered until released.
    c = http.client.HTTPConnection("127.0.0.1", fs.port, timeout=5)
    c.request("POST", "/write?db=imx", body=BODY)
    fs.wait_requests(2)
    assert fs.open_connections >= 1
    fs.release()
    with pytest.raises(http.client.RemoteDisconnected):
        c.getresponse()
    c.close()
    fs.set_mode("ok")
    assert post(fs)[0] == 204


def test_stop_while_holding_is_bounded():
    fs = FaultServer(mode="blackhole").start()
    c = http.client.HTTPConnection("127.0.0.1", fs.port, timeout=10)
    c.request("POST", "/write?db=imx", body=BODY)
    fs.wait_requests(1)
    t0 = time.monotonic()
    fs.stop(timeout=5)
    assert time.monotonic() - t0 < 2 and fs.open_connections == 0
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        c.getresponse()
    c.close()
    # Idle keep-alive connections do not hold up stop() either.
    fs = FaultServer().start()
    c = http.client.HTTPConnection("127.0.0.1", fs.port, timeout=10)
    assert post(fs, conn=c)[0] == 204
    t0 = time.monotonic()
    fs.stop(timeout=5)
    assert time.monotonic() - t0 < 2 and fs.open_connections == 0
    c.close()


def test_reset(fs):
    fs.set_mode("reset")
    with pytest.raises(ConnectionResetError):
        post(fs)
    fs.set_mode("reset", rst=False)
    with pytest.raises(http.client.RemoteDisconnected):
        post(fs)
    assert [r.answer for r in fs.requests] == ["reset", "close"] and fs.count == 0
    fs.fail_next(1, "reset").set_mode("ok")
    with pytest.raises(ConnectionResetError):
        post(fs)
    assert post(fs)[0] == 204


def test_close_after_answer(fs):
    fs.set_mode(503, close=True)
    c = http.client.HTTPConnection("127.0.0.1", fs.port, timeout=5)
    status, headers, _ = post(fs, conn=c)
    assert status == 503 and headers["Connection"] == "close"
    c.close()


def test_restart_on_same_port(fs):
    port = fs.port
    assert post(fs)[0] == 204
    fs.stop()
    with pytest.raises(ConnectionRefusedError):
        post(fs, timeout=2)
    fs.start()
    assert fs.port == port and post(fs)[0] == 204 and fs.count == 6


@pytest.mark.skipif(not shutil.which("curl"), reason="needs curl")
def test_curl_keep_alive_and_expect_100(fs):
    """libcurl (what the module uses): one connection for several POSTs, and
    a body large enough for Expect: 100-continue."""
    big = "".join("m,host=h%d v=%di %d\n" % (i, i, i) for i in range(60000))
    with tempfile.NamedTemporaryFile("w", suffix=".lp", delete=False) as f:
        f.write(big)
    try:
        url = fs.write_url()
        args = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}\\n",
                "--max-time", "20", "-H", "Authorization: Token t0k",
                "--data-binary", "@" + f.name, url]
        args += ["--next"] + args[1:]
        out = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert out.stdout.split() == ["204", "204"], out.stderr
    finally:
        os.unlink(f.name)
    assert fs.count == 120000 and fs.connections == 1
    assert len(big) > 1024 * 1024 and fs.requests[0].header("Expect") == "100-continue"


def test_standalone_process_and_control_api():
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.Popen([sys.executable, os.path.join(here, "faultserver.py"),
                             "--mode", "503", "--retry-after", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("faultserver listening on http://127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])

        def call(method, path, body=None):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request(method, path, body=body)
            r = c.getresponse()
            out = (r.status, r.headers, r.read())
            c.close()
            return out

        status, headers, _ = call("POST", "/write?db=imx", BODY)
        assert status == 503 and headers["Retry-After"] == "2"
        assert call("POST", "/__fault/mode?mode=ok")[0] == 200
        assert call("POST", "/__fault/fail_next?n=1&mode=429&retry_after=5")[0] == 200
        assert call("POST", "/write?db=imx", BODY)[0] == 429
        assert call("POST", "/write?db=imx", BODY)[0] == 204
        stats = json.loads(call("GET", "/__fault/stats")[2])
        assert stats["requests"] == 3 and stats["count"] == 3
        assert stats["answers"] == {"503": 1, "429": 1, "204": 1}
        assert call("GET", "/__fault/lines")[2].decode() == BODY
        assert call("POST", "/__fault/mode?mode=nonsense")[0] == 400
        assert call("POST", "/__fault/max_body?bytes=10")[0] == 200
        assert call("POST", "/write?db=imx", BODY)[0] == 413
        assert call("POST", "/__fault/max_body?bytes=")[0] == 200
        assert call("POST", "/write?db=imx", BODY)[0] == 204
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate(timeout=5)
    assert proc.returncode == 0
    assert json.loads(out.strip().splitlines()[-1])["requests"] == 5


def test_concurrent_clients(fs):
    """8 keep-alive clients, each retrying a 503 (the first 10 answers)."""
    import threading
    errors = []

    def client(k):
        try:
            c = http.client.HTTPConnection("127.0.0.1", fs.port, timeout=10)
            for i in range(25):
                for _ in range(20):
                    if post(fs, body="m,c=%d v=%di %d\n" % (k, i, i), conn=c)[0] == 204:
                        break
                else:
                    raise AssertionError("no 204 after 20 tries")
            c.close()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    fs.fail_next(10, 503)
    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and not any(t.is_alive() for t in threads)
    assert fs.answers == {503: 10, 204: 200} and fs.count == 200
    assert len(set(fs.lines)) == 200 and fs.connections == 8
