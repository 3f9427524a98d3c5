#!/usr/bin/python3
# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""A null line-protocol backend for the benchmarks (stdlib only).

It stands in for an InfluxDB on another machine: it answers every POST with
204 at once, keeping HTTP/1.1 connections alive, and counts what it got:
requests, body bytes and points (newlines, after gunzipping a body sent with
Content-Encoding: gzip). GET /stats answers those counters as JSON.

With --blackhole it accepts connections and reads POSTs but never answers
them (a backend that hangs); GET /stats still answers, so the bench can read
the counters.

    /usr/bin/python3 bench/nullsink.py [--port N] [--blackhole]

prints "nullsink ready <port>" on stdout once it listens on 127.0.0.1. From
Python, NullSink().start() runs it as a child process (so its work never
shares a GIL with the driver), and .stats() / .stop() talk to it.
"""

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import zlib

HOST = "127.0.0.1"
HERE = os.path.dirname(os.path.abspath(__file__))


class _Counters:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = 0
        self.bytes = 0
        self.points = 0
        self.request_points = 0     # lines of the apache_request measurement
        self.gzipped = 0
        self.bad_gzip = 0
        self.hung = 0

    def snapshot(self):
        with self.lock:
            return {"requests": self.requests, "bytes": self.bytes,
                    "points": self.points, "request_points": self.request_points,
                    "gzipped": self.gzipped,
                    "bad_gzip": self.bad_gzip, "hung": self.hung}


def _read_headers(f):
    """Reads header lines up to the blank line; returns {lower-name: value}
    or None at EOF."""
    hdrs = {}
    n = 0
    while True:
        line = f.readline(65537)
        if not line:
            return None
        if line in (b"\r\n", b"\n"):
            return hdrs
        n += 1
        if n > 200:
            raise ValueError("too many header lines")
        name, _, value = line.decode("latin-1").partition(":")
        hdrs[name.strip().lower()] = value.strip()


def _read_body(f, hdrs):
    te = hdrs.get("transfer-encoding", "").lower()
    if "chunked" in te:
        parts = []
        while True:
            size_line = f.readline(1024)
            if not size_line:
                raise EOFError
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                # trailers up to the blank line
                while f.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            parts.append(f.read(size))
            f.readline(3)
    n = int(hdrs.get("content-length", "0") or "0")
    return f.read(n) if n else b""


class NullSinkServer:
    """Raw-socket HTTP/1.1 server, one thread per connection (the module keeps
    one connection per child, so there are few)."""

    def __init__(self, port=0, blackhole=False):
        self.blackhole = blackhole
        self.c = _Counters()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, port))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()

    def serve_forever(self):
        self.sock.settimeout(0.5)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            threading.Thread(target=self._conn, args=(conn,), daemon=True).start()

    def shutdown(self):
        self._stop.set()
        self.sock.close()

    def _reply(self, conn, status, reason, body=b"", ctype=None):
        head = "HTTP/1.1 %d %s\r\nContent-Length: %d\r\n" % (status, reason, len(body))
        if ctype:
            head += "Content-Type: %s\r\n" % ctype
        conn.sendall(head.encode() + b"\r\n" + body)

    def _conn(self, conn):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        f = conn.makefile("rb", buffering=65536)
        try:
            while not self._stop.is_set():
                line = f.readline(65537)
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    continue
                parts = line.decode("latin-1").split()
                if len(parts) < 2:
                    return
                method, target = parts[0], parts[1]
                hdrs = _read_headers(f)
                if hdrs is None:
                    return
                if hdrs.get("expect", "").lower() == "100-continue":
                    conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = _read_body(f, hdrs)
                if method == "GET" and target.startswith("/stats"):
                    self._reply(conn, 200, "OK",
                                json.dumps(self.c.snapshot()).encode(),
                                "application/json")
                    continue
                if method == "GET" and target.startswith(("/ping", "/health")):
                    self._reply(conn, 204, "No Content")
                    continue
                gz = "gzip" in hdrs.get("content-encoding", "").lower()
                points, bad = 0, 0
                if gz:
                    try:
                        data = zlib.decompress(body, 16 + zlib.MAX_WBITS)
                    except zlib.error:
                        data, bad = b"", 1
                else:
                    data = body
                points = data.count(b"\n")
                if data and not data.endswith(b"\n"):
                    points += 1
                # Request points apart from summaries and the module's own
                # counters, so that "stored == served" can be checked.
                req = data.count(b"\napache_request,") + int(data.startswith(b"apache_request,"))
                with self.c.lock:
                    self.c.requests += 1
                    self.c.bytes += len(body)
                    self.c.points += points
                    self.c.request_points += req
                    self.c.gzipped += int(gz)
                    self.c.bad_gzip += bad
                    if self.blackhole:
                        self.c.hung += 1
                if self.blackhole:
                    # Never answer: hold the connection until the client
                    # gives up (its timeout) or we stop.
                    while not self._stop.is_set():
                        conn.settimeout(0.5)
                        try:
                            if not conn.recv(65536):
                                return
                        except socket.timeout:
                            continue
                    return
                self._reply(conn, 204, "No Content")
        except (OSError, ValueError, EOFError):
            return
        finally:
            try:
                f.close()
                conn.close()
            except OSError:
                pass


class NullSink:
    """Runs nullsink.py as a child process (by PID, stopped by PID)."""

    def __init__(self, blackhole=False):
        self.blackhole = blackhole
        self.proc = None
        self.port = None

    @property
    def url(self):
        return "http://%s:%d" % (HOST, self.port)

    def write_url(self, db="bench"):
        return "%s/write?db=%s" % (self.url, db)

    def start(self):
        args = [sys.executable if sys.executable else "/usr/bin/python3",
                os.path.join(HERE, "nullsink.py")]
        if self.blackhole:
            args.append("--blackhole")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        # The child prints its port at once, or dies (EOF): readline returns.
        line = self.proc.stdout.readline()
        if not line.startswith(b"nullsink ready"):
            self.stop()
            raise RuntimeError("nullsink did not start: %r" % line)
        self.port = int(line.split()[2])
        return self

    def stats(self, timeout=5.0):
        c = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            c.request("GET", "/stats")
            return json.loads(c.getresponse().read())
        finally:
            c.close()

    def stop(self, timeout=5.0):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--blackhole", action="store_true",
                    help="accept and read POSTs, never answer them")
    a = ap.parse_args()
    srv = NullSinkServer(a.port, a.blackhole)
    import signal
    signal.signal(signal.SIGTERM, lambda *_: srv.shutdown())
    print("nullsink ready %d" % srv.port, flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        srv.shutdown()


if __name__ == "__main__":
    main()
