# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""A fault-injecting stand-in for an InfluxDB write endpoint (standard library only).

A threaded HTTP/1.1 server with keep-alive on 127.0.0.1 whose answers a test
changes at run time. It records every request (headers, body gunzipped, the
line-protocol lines in it) and keeps the lines of the requests it answers
with success as "stored".

In-process (the usual way; the server runs in threads of the test):

    from faultserver import FaultServer

    with FaultServer() as fs:                 # starts on a free port, mode "ok"
        url = fs.write_url(db="imx")          # http://127.0.0.1:<port>/write?db=imx
        fs.set_mode(503, retry_after=2)       # every request: 503 + Retry-After: 2
        fs.fail_next(3, "reset")              # the next 3: connection reset, then
                                              # the mode set before
        fs.wait_lines(1000, timeout=30)       # until 1000 lines are stored
        assert fs.count == 1000
        assert fs.requests[-1].header("Authorization") == "Token s3cret"

Modes (set_mode(mode, **options), and the same arguments for fail_next):

    "ok"          204 (status=200 for another 2xx); stores the lines
    "slow"        waits delay seconds (default 5), then answers like "ok"
                  (status=... to answer something else after the wait)
    "blackhole"   reads the request and never answers; the connection is
                  closed, unanswered, by release() or stop()
    "reset"       reads the request, then resets the connection (RST, via
                  SO_LINGER 0); rst=False closes it normally instead (FIN)
    400           InfluxDB's partial write: {"error":"partial write: field type
                  conflict: ... dropped=N"}; dropped=k refuses the last k lines
                  of the request and stores the others (default: all refused);
                  unparsable=k instead refuses the last k lines as InfluxDB
                  1.x does lines it cannot parse: {"error":"partial write:
                  unable to parse '<line>': duplicate tags\n... dropped=0"};
                  body="..." for a 400 with another text (nothing stored).
                  On InfluxDB 3's /api/v3/write_lp, its documented answers
                  instead: {"error":"partial write of line protocol occurred",
                  "data":[{"original_line":..,"line_number":n,
                  "error_message":..},..]}, one entry per refused line (line
                  numbers from 1); with accept_partial=false in the query,
                  {"error":"parsing failed for write_lp endpoint","data":{..}}
                  naming the first refused line, and nothing is stored
    422           InfluxDB 2.x's partial write: {"code":"unprocessable entity",
                  "message":"failure writing points to database: partial
                  write: points beyond retention policy dropped=N"}, with
                  dropped=k as for 400
    401, 403      authorization failed / not authorized to write
    404           {"error":"database not found: \\"<db>\\""} (db from the query)
    413           request entity too large
    429, 503      with Retry-After: N when retry_after=N is given
    500           internal error
    any other     status=<code> with {"error":"injected <code>"}
    options for every status mode: body= (str or bytes), headers= (dict),
    retry_after=, close=True (close the connection after answering)

A size limit, like a real server's maximum body size, on top of the modes:

    fs.set_max_body(16384)    # every request whose body (as received, so
                              # compressed if gzipped) is over 16384 bytes
                              # gets 413 and nothing is stored; smaller ones
                              # are answered as above. None: no limit.

Records (all thread-safe snapshots):

    fs.requests       [Request]: method, path, query (dict), headers (list of
                      (name, value)), header(name), body (gunzipped bytes),
                      raw (bytes as received), gzipped, lines (list of str),
                      answer (status int, or "reset", "close", "blackhole"),
                      stored (lines kept), conn (connection number), t0, t1
    fs.lines          every stored line, in arrival order
    fs.count          len(fs.lines)
    fs.received       every line received, whatever the answer
    fs.connections    connections accepted so far (keep-alive reuse: fewer
                      connections than requests)
    fs.answers        collections.Counter of answers
    fs.wait_requests(n, timeout), fs.wait_lines(n, timeout),
    fs.wait_for(predicate, timeout), fs.clear(), fs.release()

Standalone, for a server in another process:

    /usr/bin/python3 tests/faultserver.py [--port P] [--mode 503 --retry-after 2]

prints "faultserver listening on http://127.0.0.1:P" and serves until SIGTERM
or SIGINT. It is then driven over HTTP on the same port:

    POST /__fault/mode?mode=429&retry_after=3     set_mode
    POST /__fault/fail_next?n=3&mode=reset        fail_next
    POST /__fault/max_body?bytes=16384            set_max_body (bytes= empty: none)
    POST /__fault/clear                           clear
    POST /__fault/release                         release
    GET  /__fault/stats                           JSON: requests, count,
                                                  received, connections, answers,
                                                  authorization (headers seen)
    GET  /__fault/lines                           the stored lines (text)

Only 127.0.0.1 is served. Every wait is bounded; stop() closes every
connection, held ones included, and joins the threads with a timeout.
"""

import argparse
import collections
import gzip
import http.server
import json
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
import urllib.parse
import zlib

HOST = "127.0.0.1"
CONTROL_PREFIX = "/__fault/"

# Bodies like InfluxDB 1.x's (it sends the same text in X-Influxdb-Error).
PARTIAL_WRITE = ('partial write: field type conflict: input field "duration_us" on '
                 'measurement "apache_request" is type float, already exists as type '
                 'integer dropped=%d')
# InfluxDB 1.x, for each line it cannot parse (tests/test_faults.py checks
# the text against a real influxd); they are not counted in dropped=.
UNPARSABLE = "unable to parse '%s': duplicate tags"
# InfluxDB 2.x's partial write (HTTP 422).
PARTIAL_WRITE_V2 = ("failure writing points to database: partial write: points beyond "
                    "retention policy dropped=%d")
# InfluxDB 3's own write endpoint, and the text of a refused line there.
V3_PATH = "/api/v3/write_lp"
V3_LINE_ERROR = ("invalid column type for column 'duration_us', expected "
                 "iox::column_type::field::integer, got iox::column_type::field::float")
CANNED = {
    400: None,          # partial write, built per request
    401: "authorization failed",
    403: '"imx" user is not authorized to write to database "%(db)s"',
    404: 'database not found: "%(db)s"',
    413: "Request Entity Too Large",
    429: "too many requests",
    500: "timeout",
    503: "service unavailable",
}

_NAMED = {"ok", "slow", "blackhole", "reset"}


class Behavior:
    """How to answer one request (see the module docstring)."""

    __slots__ = ("kind", "status", "delay", "body", "headers", "retry_after",
                 "dropped", "unparsable", "close", "rst", "min_lines")

    def __init__(self, mode="ok", status=None, delay=None, body=None, headers=None,
                 retry_after=None, dropped=None, unparsable=None, close=False, rst=True,
                 min_lines=0):
        if isinstance(mode, str) and mode.isdigit():
            mode = int(mode)
        if isinstance(mode, int):
            if not 200 <= mode <= 599:
                raise ValueError("bad status %r" % mode)
            kind, status = ("ok" if 200 <= mode < 300 else "status"), mode
        elif mode in _NAMED:
            kind = mode
        else:
            raise ValueError("unknown mode %r (ok, slow, blackhole, reset or a status)"
                             % (mode,))
        if kind in ("ok", "slow") and status is None:
            status = 204
        if kind == "slow" and delay is None:
            delay = 5.0
        self.kind = kind
        self.status = status
        self.delay = float(delay) if delay is not None else None
        self.body = body
        self.headers = dict(headers or {})
        self.retry_after = retry_after
        self.dropped = dropped
        self.unparsable = unparsable
        self.close = bool(close)
        self.rst = bool(rst)
        # A one-shot answer with min_lines waits for a request of at least
        # that many lines; smaller ones get the current mode meanwhile.
        self.min_lines = int(min_lines)

    def __repr__(self):
        return "Behavior(%s)" % ", ".join("%s=%r" % (k, getattr(self, k))
                                          for k in self.__slots__
                                          if getattr(self, k) not in (None, {}, False))


class Request:
    """One request as received, and how it was answered."""

    __slots__ = ("method", "path", "query", "headers", "body", "raw", "gzipped",
                 "lines", "answer", "stored", "conn", "t0", "t1", "error")

    def __init__(self, **kw):
        for k in self.__slots__:
            setattr(self, k, kw.get(k))

    def header(self, name, default=None):
        """The first header of that name (case-insensitive), or default."""
        name = name.lower()
        for k, v in self.headers or ():
            if k.lower() == name:
                return v
        return default

    def __repr__(self):
        return "<Request %s %s %d lines -> %s>" % (self.method, self.path,
                                                 len(self.lines or ()), self.answer)


def split_lines(body):
    """Line-protocol lines of a body (str, without empty lines)."""
    text = body.decode("utf-8", errors="replace")
    return [ln for ln in text.split("\n") if ln.strip()]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"          # keep-alive
    server_version = "faultserver/1"
    sys_version = ""

    # -- plumbing ---------------------------------------------------------

    def setup(self):
        super().setup()
        self.fs = self.server.fs
        self.conn_no = self.fs._connection_opened(self.connection)

    def finish(self):
        try:
            super().finish()
        except (OSError, ValueError):
            pass
        self.fs._connection_closed(self.connection)

    def log_message(self, fmt, *args):     # quiet; requests are recorded instead
        pass

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except (ConnectionError, socket.timeout, OSError):
            self.close_connection = True

    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _send(self, status, body=b"", headers=None, close=False):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        if status != 204 and status >= 200:
            self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if body and status != 204 and self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def _reset(self, rst):
        """Closes the connection without an answer: RST (SO_LINGER 0) or FIN."""
        self.close_connection = True
        try:
            if rst:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        for f in (self.rfile, self.wfile):
            try:
                f.close()
            except OSError:
                pass
        try:
            self.connection.close()
        except OSError:
            pass

    # -- requests ---------------------------------------------------------

    def do_GET(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def do_PUT(self):
        self._dispatch()

    def do_HEAD(self):
        self._dispatch()

    def _dispatch(self):
        t0 = time.time()
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        try:
            raw = self._read_body() if self.command != "HEAD" else b""
        except (OSError, ValueError):
            self.close_connection = True
            return
        if url.path.startswith(CONTROL_PREFIX):
            self._control(url.path[len(CONTROL_PREFIX):], query)
            return
        if url.path == "/ping":
            self._send(204, headers={"X-Influxdb-Version": "1.8.10-fault"})
            return

        req = Request(method=self.command, path=self.path, query=query,
                      headers=list(self.headers.items()), raw=raw, gzipped=False,
                      body=raw, lines=[], stored=0, conn=self.conn_no, t0=t0)
        enc = (self.headers.get("Content-Encoding") or "").lower()
        if enc == "gzip":
            req.gzipped = True
            try:
                req.body = gzip.decompress(raw)
            except (OSError, EOFError, zlib.error) as e:
                req.error = "gzip: %s" % e
                req.body = b""
        req.lines = split_lines(req.body)
        b = self.fs._next_behavior(len(req.lines), len(raw))
        db = query.get("db") or query.get("bucket") or ""

        if req.error:
            self._answer(req, Behavior(400, body=json.dumps({"error": req.error})), db)
        elif b.kind == "blackhole":
            self.fs._record(req, "blackhole", 0)
            self.fs._hold(self)
            self._reset(rst=False)
        elif b.kind == "reset":
            self.fs._record(req, "reset" if b.rst else "close", 0)
            self._reset(rst=b.rst)
        else:
            if b.kind == "slow" and self.fs._stop.wait(b.delay):
                self.fs._record(req, "close", 0)    # stopped while waiting
                self._reset(rst=False)
                return
            self._answer(req, b, db)

    def _answer(self, req, b, db):
        status = b.status
        headers = {"Content-Type": "application/json",
                   "X-Influxdb-Version": "1.8.10-fault",
                   "Request-Id": "fault-%d" % id(req)}
        stored = 0
        body = b.body
        if 200 <= status < 300:
            stored = len(req.lines)
            headers.pop("Content-Type")
        elif body is None:
            if status == 400 and urllib.parse.urlsplit(req.path).path == V3_PATH:
                stored, body = _v3_partial(req, b)
                text = None
            elif status == 400 and b.unparsable is not None:
                k = min(b.unparsable, len(req.lines))
                stored = len(req.lines) - k
                text = "partial write: %s dropped=0" % "\n".join(
                    UNPARSABLE % ln for ln in req.lines[stored:])
            elif status == 400:
                dropped = len(req.lines) if b.dropped is None else min(b.dropped, len(req.lines))
                stored = len(req.lines) - dropped
                text = PARTIAL_WRITE % dropped
            elif status == 422:
                dropped = len(req.lines) if b.dropped is None else min(b.dropped, len(req.lines))
                stored = len(req.lines) - dropped
                body = json.dumps({"code": "unprocessable entity",
                                   "message": PARTIAL_WRITE_V2 % dropped})
                text = None
            else:
                text = (CANNED.get(status) or "injected %d" % status) % {"db": db}
            if text is not None:
                body = json.dumps({"error": text})
                headers["X-Influxdb-Error"] = text
        if b.retry_after is not None:
            headers["Retry-After"] = str(b.retry_after)
        headers.update(b.headers)
        # Recorded before answering: a client that sees the answer sees the record.
        self.fs._record(req, status, stored)
        try:
            self._send(status, body or b"", headers, close=b.close)
        except OSError:
            self.close_connection = True

    def _control(self, what, q):
        fs = self.fs
        try:
            if what == "mode":
                fs.set_mode(q.pop("mode", "ok"), **_control_options(q))
            elif what == "fail_next":
                fs.fail_next(int(q.pop("n", "1")), q.pop("mode", "500"), **_control_options(q))
            elif what == "max_body":
                fs.set_max_body(int(q["bytes"]) if q.get("bytes") else None)
            elif what == "clear":
                fs.clear()
            elif what == "release":
                fs.release()
            elif what == "lines":
                self._send(200, "".join(ln + "\n" for ln in fs.lines),
                           {"Content-Type": "text/plain; charset=utf-8"})
                return
            elif what != "stats":
                self._send(404, json.dumps({"error": "no control %r" % what}))
                return
        except (ValueError, TypeError) as e:
            self._send(400, json.dumps({"error": str(e)}), {"Content-Type": "application/json"})
            return
        self._send(200, json.dumps(fs.stats()), {"Content-Type": "application/json"})


def _v3_partial(req, b):
    """InfluxDB 3's answer to a write_lp whose last `dropped` lines are
    refused: (lines stored, JSON body)."""
    n = len(req.lines)
    dropped = n if b.dropped is None else min(b.dropped, n)
    refused = [{"original_line": req.lines[i], "line_number": i + 1,
                "error_message": V3_LINE_ERROR} for i in range(n - dropped, n)]
    if str(req.query.get("accept_partial", "true")).lower() == "false":
        return 0, json.dumps({"error": "parsing failed for write_lp endpoint",
                              "data": refused[0] if refused else None})
    return n - dropped, json.dumps({"error": "partial write of line protocol occurred",
                                    "data": refused})


def _control_options(q):
    out = {}
    for k, v in q.items():
        if k in ("delay",):
            out[k] = float(v)
        elif k in ("dropped", "unparsable"):
            out[k] = int(v)
        elif k in ("close", "rst"):
            out[k] = v.lower() not in ("0", "false", "no", "off", "")
        elif k in ("retry_after", "status", "body"):
            out[k] = int(v) if k == "status" else v
        else:
            raise ValueError("unknown option %r" % k)
    return out


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        pass        # a client that went away is not the test's failure


class FaultServer:
    """See the module docstring."""

    def __init__(self, port=0, mode="ok", **options):
        self.port = port
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._default = Behavior(mode, **options)
        self._queue = collections.deque()
        self._max_body = None
        self._too_large = Behavior(413)
        self._server = None
        self._thread = None
        self._held = []                 # blackholed handlers
        self._conns = {}                # socket -> connection number
        self._nconns = 0
        self.clear()

    # -- life cycle -------------------------------------------------------

    def start(self):
        self._stop.clear()
        with self._lock:
            self._held = []
        self._server = _Server((HOST, self.port), _Handler)
        self._server.fs = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name="faultserver-%d" % self.port, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout=10.0):
        """Stops accepting, closes every connection (held ones included)
        and waits (bounded) for the handler threads."""
        if not self._server:
            return
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                conns = list(self._conns)
            for s in conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            if not conns or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self):
        return "http://%s:%d" % (HOST, self.port)

    def write_url(self, db="imx", v2=False, org="o", precision=None, v3=False):
        """The 1.x /write URL (v2: /api/v2/write?org=&bucket=; v3:
        /api/v3/write_lp?db=)."""
        if v3:
            q = {"db": db}
            path = V3_PATH
        elif v2:
            q = {"org": org, "bucket": db}
            path = "/api/v2/write"
        else:
            q = {"db": db}
            path = "/write"
        if precision:
            q["precision"] = precision
        return "%s%s?%s" % (self.url, path, urllib.parse.urlencode(q))

    # -- behaviour --------------------------------------------------------

    def set_mode(self, mode="ok", **options):
        """How every request is answered from now on (queued fail_next
        answers still come first)."""
        b = Behavior(mode, **options)
        with self._lock:
            self._default = b
        return self

    def fail_next(self, n, mode=500, **options):
        """The next n requests are answered so, then the current mode again."""
        b = Behavior(mode, **options)
        with self._lock:
            self._queue.extend([b] * int(n))
        return self

    def script(self, steps):
        """Queues one-shot answers: steps is a list of mode or (mode, options)
        or (n, mode, options)."""
        for st in steps:
            if not isinstance(st, tuple):
                self.fail_next(1, st)
            elif len(st) == 2:
                self.fail_next(1, st[0], **st[1])
            else:
                self.fail_next(st[0], st[1], **st[2])
        return self

    @property
    def mode(self):
        with self._lock:
            return self._default

    @property
    def pending(self):
        """One-shot answers not used yet."""
        with self._lock:
            return len(self._queue)

    def set_max_body(self, nbytes):
        """Bodies over nbytes (as received) get 413 from now on, before any
        queued or default answer; None removes the limit."""
        with self._lock:
            self._max_body = None if nbytes is None else int(nbytes)
        return self

    def _next_behavior(self, nlines=0, nbytes=0):
        with self._lock:
            if self._max_body is not None and nbytes > self._max_body:
                return self._too_large
            if self._queue and nlines >= self._queue[0].min_lines:
                return self._queue.popleft()
            return self._default

    def release(self):
        """Closes every blackholed connection (unanswered)."""
        with self._lock:
            held, self._held = self._held, []
        for h in held:
            h._release.set()

    def _hold(self, handler):
        handler._release = threading.Event()
        with self._lock:
            self._held.append(handler)
        while not self._stop.is_set() and not handler._release.is_set():
            handler._release.wait(0.1)

    # -- records ----------------------------------------------------------

    def clear(self):
        """Forgets the requests and lines recorded so far."""
        with self._lock:
            self._requests = []
            self._lines = []
            self._received = 0
            self._answers = collections.Counter()

    def _record(self, req, answer, stored):
        req.answer = answer
        req.t1 = time.time()
        req.stored = stored
        with self._lock:
            self._requests.append(req)
            self._lines.extend(req.lines[:stored])
            self._received += len(req.lines)
            self._answers[answer] += 1

    def _connection_opened(self, sock):
        with self._lock:
            self._nconns += 1
            self._conns[sock] = self._nconns
            return self._nconns

    def _connection_closed(self, sock):
        with self._lock:
            self._conns.pop(sock, None)

    @property
    def requests(self):
        with self._lock:
            return list(self._requests)

    @property
    def lines(self):
        with self._lock:
            return list(self._lines)

    @property
    def count(self):
        with self._lock:
            return len(self._lines)

    @property
    def received(self):
        with self._lock:
            return [ln for r in self._requests for ln in r.lines]

    @property
    def connections(self):
        with self._lock:
            return self._nconns

    @property
    def open_connections(self):
        with self._lock:
            return len(self._conns)

    @property
    def answers(self):
        with self._lock:
            return collections.Counter(self._answers)

    def stats(self):
        with self._lock:
            return {
                "requests": len(self._requests),
                "count": len(self._lines),
                "received": self._received,
                "connections": self._nconns,
                "open_connections": len(self._conns),
                "answers": {str(k): v for k, v in self._answers.items()},
                "authorization": [r.header("Authorization") for r in self._requests
                                  if r.header("Authorization") is not None],
                "mode": repr(self._default),
                "max_body": self._max_body,
                "pending": len(self._queue),
            }

    def wait_for(self, predicate, timeout=10.0, interval=0.02, message=None):
        """Calls predicate(self) until it is true; TimeoutError after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            v = predicate(self)
            if v:
                return v
            if time.monotonic() >= deadline:
                raise TimeoutError("%s (after %.1fs: %r)"
                                   % (message or "faultserver condition not met",
                                      timeout, self.stats()))
            time.sleep(interval)

    def wait_requests(self, n, timeout=10.0):
        return self.wait_for(lambda fs: len(fs.requests) >= n, timeout,
                             message="fewer than %d requests" % n)

    def wait_lines(self, n, timeout=10.0):
        return self.wait_for(lambda fs: fs.count >= n, timeout,
                             message="fewer than %d stored lines" % n)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=0, help="default: a free port")
    ap.add_argument("--mode", default="ok", help="ok, slow, blackhole, reset or a status")
    ap.add_argument("--delay", type=float, help="slow: seconds before answering")
    ap.add_argument("--retry-after", help="Retry-After value to send")
    ap.add_argument("--dropped", type=int, help="400: lines refused per request")
    args = ap.parse_args(argv)
    opts = {k: v for k, v in (("delay", args.delay), ("retry_after", args.retry_after),
                              ("dropped", args.dropped)) if v is not None}
    fs = FaultServer(args.port, args.mode, **opts).start()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *a: done.set())
    print("faultserver listening on %s" % fs.url, flush=True)
    while not done.wait(0.5):
        pass
    fs.stop()
    print(json.dumps(fs.stats()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
