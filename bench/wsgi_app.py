# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""A hello world, with three ways of recording metrics.

Loaded by mod_wsgi (embedded mode); bench/wsgi.py picks the variant with
WSGICallableObject and passes the InfluxDB write URL with SetEnv:

  plain      hello world, no metrics
  perreq     one POST to InfluxDB per request, made when the response is
             closed (as an app does with the influxdb client
             library). Each worker thread keeps its own keep-alive
             connection, like the client's requests session, so this is the
             kindest version of the idea.
  batched    points appended to a list under a lock, and a background thread
             that posts the list once a second, with a final post
             at shutdown

Standard library only. Points are line protocol with nanosecond timestamps
and pid/thread tags, so no two requests share a series and timestamp (which
InfluxDB would merge into one point).
"""

import atexit
import http.client
import os
import socket
import threading
import time
import urllib.parse

HELLO = b"Hello World!"
HOST = socket.gethostname().replace(" ", "_").replace(",", "_")
PID = os.getpid()

_local = threading.local()
_url = None


def _target(environ):
    """(host, port, path?query) of the write URL given by SetEnv."""
    global _url
    if _url is None:
        u = urllib.parse.urlsplit(environ["IMX_BENCH_INFLUX"])
        _url = (u.hostname, u.port, u.path + ("?" + u.query if u.query else ""))
    return _url


def _line(measurement, start_ns):
    end = time.time_ns()
    return "%s,host=%s,pid=%d,thread=%d application_time=%d %d\n" % (
        measurement, HOST, PID, threading.get_ident(), (end - start_ns) // 1000, end)


def _post(target, body, conn=None):
    """POSTs body; returns the connection to reuse (or None)."""
    host, port, path = target
    for attempt in (1, 2):
        if conn is None:
            conn = http.client.HTTPConnection(host, port, timeout=10)
        try:
            conn.request("POST", path, body=body.encode(),
                         headers={"Content-Type": "text/plain"})
            resp = conn.getresponse()
            resp.read()
            if resp.status >= 300:
                raise RuntimeError("write answered %d" % resp.status)
            return conn
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = None
            if attempt == 2:
                raise
    return conn


def _start(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(HELLO)))])
    return [HELLO]


def plain(environ, start_response):
    return _start(environ, start_response)


class _Closing:
    """The response iterable; close() runs after the response went out."""

    def __init__(self, body, on_close):
        self.body = body
        self.on_close = on_close

    def __iter__(self):
        return iter(self.body)

    def close(self):
        self.on_close()


def perreq(environ, start_response):
    t0 = time.time_ns()
    target = _target(environ)
    body = _start(environ, start_response)

    def report():
        _local.conn = _post(target, _line("wsgi_perreq", t0), getattr(_local, "conn", None))
    return _Closing(body, report)


# -- batched --------------------------------------------------------------------

_lock = threading.Lock()
_points = []
_stop = threading.Event()
_thread = None
INTERVAL = 1.0


def _report(target):
    global _points
    with _lock:
        pending, _points = _points, []
    if pending:
        try:
            _post(target, "".join(pending))
        except Exception:  # noqa: BLE001 - report nothing, go on
            pass


def _collector(target):
    while not _stop.wait(INTERVAL):
        _report(target)
    _report(target)


def _shutdown():
    _stop.set()
    if _thread is not None:
        _thread.join(timeout=3.0)


def batched(environ, start_response):
    global _thread
    t0 = time.time_ns()
    target = _target(environ)
    if _thread is None:
        with _lock:
            if _thread is None:
                _thread = threading.Thread(target=_collector, args=(target,), daemon=True)
                _thread.start()
                # Both, as either may be the one that runs first; the
                # second call finds the thread already gone.
                atexit.register(_shutdown)
                try:
                    import mod_wsgi
                    mod_wsgi.subscribe_shutdown(lambda *a, **k: _shutdown())
                except (ImportError, AttributeError):
                    pass
    body = _start(environ, start_response)

    def record():
        line = _line("wsgi_batched", t0)
        with _lock:
            _points.append(line)
    return _Closing(body, record)
