# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""httpd's life cycle around the module: hard and graceful restarts under
load with every MPM, a child killed with SIGKILL, and configuration changes
between generations. Ground truth is httpd's access log; stored is what a
real InfluxDB holds."""

import http.client
import os
import re
import signal
import threading
import time

import pytest

import harness
from harness import (H2C_CONF, IMX_STATUS_CONF, Imx, LoadLoop, ab, flusher_exits, h2load,
                     imx_status, wait_until)
from test_summary import mod_delay  # noqa: F401 - the fixture (tests/mod_delay.c, built once)

DROPS = ("dropped_full", "dropped_retry", "dropped_exit", "rejected")


def served_paths(h, *paths):
    """Access-log lines per path (probes and the status page left out)."""
    out = dict.fromkeys(paths, 0)
    for e in h.access_log_entries():
        if e.path in out:
            out[e.path] += 1
    return out


# --------------------------------------------------------------------------
# Restarts and graceful restarts under load

# Lines that mean a child crashed or had to be killed; any of them fails the
# test (the fixture's log check also catches them, this names them first).
CRASH_OR_KILL = re.compile(r"exit signal|AH00052|AH00060|AH00045|AH00046|AH00047")
STORM = 15              # restarts, and as many graceful restarts, interleaved
MAX_RESTART_S = 5.0


@pytest.mark.allowed_errors(r"AH00161: server reached MaxRequestWorkers")
@pytest.mark.parametrize("mpm", ["event", "worker", "prefork"])
def test_restarts_and_graceful_restarts_under_load(module_built, influx, influx_db,
                                                   httpd_factory, mpm):
    """15 restarts (SIGHUP: children get SIGTERM) and 15 graceful restarts
    (SIGUSR1), alternating, while a load generator runs: event with h2c
    (h2load), worker and prefork with HTTP/1.1 (ab, one connection per
    request). No child crashes or needs SIGKILL, each restart serves again
    within 5 s, and at the end every request served is stored."""
    h2 = mpm == "event"
    h = httpd_factory(mpm=mpm, modules=["http2"] if h2 else (),
                      extra=(H2C_CONF if h2 else "")
                      + str(Imx(influx.write_url(influx_db), batch_size=1000)))
    url = h.url + "small.txt"
    if h2:
        # -N: a connection the restart left hanging ends after 5 s.
        def chunk():
            return h2load(url, 2000, c=4, m=8, timeout=60, extra_args=("-N", "5s"))
    else:
        def chunk():
            return ab(url, 1000, 16, keepalive=False, timeout=60)
    timings = []
    with LoadLoop(chunk, max_s=150) as load:
        wait_until(lambda: h.access_log_count() >= 500, 30, message="no load")
        for i in range(2 * STORM):
            kind = "restart" if i % 2 == 0 else "graceful"
            t0 = time.monotonic()
            getattr(h, kind)(timeout=30)
            timings.append((kind, round(time.monotonic() - t0, 2)))
            # The new generation serves the load for a moment.
            before = h.access_log_count()
            wait_until(lambda: h.access_log_count() >= before + 200, 30,
                       message="no load after %s %d" % (kind, i))
    assert load.results, load.errors
    h.stop()

    problems = []
    # Children httpd crashed itself, which Httpd.stock_crashes proves (by
    # IMX0019, and by the cores), are httpd's business, not the module's.
    stock = [re.compile(r) for r in h.stock_crash_patterns()]
    if stock:
        print("lines about children httpd crashed itself (known races):",
              [r.pattern for r in stock])
    bad = [ln for ln in h.error_log_text().splitlines() if CRASH_OR_KILL.search(ln)
           and not any(r.search(ln) for r in stock)]
    if bad:
        problems.append("crashes or forced kills:\n  " + "\n  ".join(bad[:20]))
    slow = [t for t in timings if t[1] > MAX_RESTART_S]
    if slow:
        problems.append("slower than %.0f s: %s (all: %s)" % (MAX_RESTART_S, slow, timings))
    served = h.access_log_count()
    stored = influx.count(influx_db, "apache_request")
    exits = flusher_exits(h)
    tot = {k: sum(e.get(k, 0) for e in exits) for k in ("recorded", "sent") + DROPS}
    print("%s: served %d, stored %d, %d exit lines %s, restart times %s"
          % (mpm, served, stored, len(exits), tot, timings))
    if stored != served or any(tot[k] for k in DROPS):
        problems.append("served %d, stored %d (%+d); exit lines of %d children: %s"
                        % (served, stored, stored - served, len(exits), tot))
    assert not problems, "\n".join(problems)
    # The children of all 31 generations exited through the module's exit.
    assert len(exits) >= 2 * STORM, len(exits)


# --------------------------------------------------------------------------
# SIGKILL: lost_in_crash

KILL_MPM = harness.mpm_profile(
    threaded={"StartServers": 2, "ServerLimit": 4, "ThreadsPerChild": 25,
              "MaxRequestWorkers": 100, "MinSpareThreads": 25, "MaxSpareThreads": 100,
              "MaxConnectionsPerChild": 0},
    # MaxSpareServers = MaxRequestWorkers: no idle child is stopped meanwhile.
    # MinSpareServers 2: httpd replaces the killed child at once, and the new
    # child (same generation) takes over what the dead one left in its ring.
    prefork={"StartServers": 2, "MinSpareServers": 2, "MaxSpareServers": 8,
             "ServerLimit": 8, "MaxRequestWorkers": 8, "MaxConnectionsPerChild": 0})


def wait_quiet(h, quiet=0.3, timeout=10.0):
    """Until the access log stops growing: no request in flight."""
    deadline = time.monotonic() + timeout
    n = h.access_log_count(include_probes=True)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        m = h.access_log_count(include_probes=True)
        if m == n:
            return
        n = m
    raise TimeoutError("access log still growing after %.0f s" % timeout)


def _published(h):
    """{pid: recorded} of the live children, as last published."""
    return {c["pid"]: c["recorded"] for c in imx_status(h)["children"]}


@pytest.mark.parametrize("mpm", ["event", "worker", "prefork"])
def test_sigkill_lost_in_crash_is_exact(module_built, influx, influx_db, httpd_factory, mpm):
    """A child killed 2 s into a 5 s flush interval holds the points it
    recorded since its last flush, in its ring. The ring is in shared memory:
    the child httpd starts in its place takes it over and sends it, so
    stored == served, and the counters' identity holds to the point. (No
    request is in flight at the kill, so the access log and the module agree
    on what that child served.)"""
    h = httpd_factory(mpm=mpm, mpm_conf=KILL_MPM[mpm], extra=str(Imx(
        influx.write_url(influx_db), flush_interval="5s",
        # No batch fills within an interval: the flusher sends, and
        # publishes, only at the end of each.
        batch_size=100000, buffer_size=262144)) + IMX_STATUS_CONF)
    url = h.url + "small.txt"

    def chunk():
        return ab(url, 300, 2, keepalive=False, timeout=60)

    load = LoadLoop(chunk, max_s=60).start()
    try:
        # The moment a child publishes: its recorded count changes.
        seen = {}

        def publication():
            for pid, rec in _published(h).items():
                if pid in seen and rec != seen[pid] and rec > 0:
                    return pid
                seen[pid] = rec
            return None
        victim = wait_until(publication, 15, 0.02, "no child published its counters")
        t_pub = time.monotonic()
        time.sleep(2.0)
    finally:
        load.stop()
    wait_quiet(h)
    assert time.monotonic() - t_pub < 4.0, "too slow to kill within the flush interval"
    assert victim in h.child_pids(), (victim, h.child_pids())
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in h.child_pids(), 10)
    served_by_then = served_paths(h, "/small.txt")["/small.txt"]
    # httpd replaces the child (prefork: at its next maintenance, about a
    # second); the new one takes over the dead one's ring.
    wait_until(lambda: "IMX0017" in h.error_log_text(), 15, 0.1,
               "no child took over the dead one's ring")

    # The run goes on; then a graceful restart makes new children, the first
    # of which folds the dead child's slot into the totals.
    with LoadLoop(chunk, max_s=30):
        time.sleep(2.0)
    old = set(h.child_pids())
    h.graceful()

    def settled():
        s = imx_status(h)
        if s["buffered"] == 0 and not old & {c["pid"] for c in s["children"]}:
            return s
        return None
    st = wait_until(settled, 30, 0.2, "old generation still there or points still buffered")
    h.stop()

    served = served_paths(h, "/small.txt")["/small.txt"]
    stored = influx.count(influx_db, "apache_request")
    lost = st["lost_in_crash"]
    # Other drops: the totals as of st, plus whatever the children live at st
    # dropped or had rejected after it (their exit lines against their slots).
    at_st = {c["pid"]: c for c in st["children"]}
    other = st["dropped"] - lost + st["rejected"]
    for e in flusher_exits(h):
        if e["pid"] in at_st:
            other += sum(e.get(k, 0) - at_st[e["pid"]].get(k, 0) for k in DROPS)
    counters = {k: st[k] for k in ("recorded", "sent", "lost_in_crash", "dropped",
                                   "rejected", "maybe_stored")}
    assert served_by_then > 0 and served > served_by_then
    assert stored + lost + other == served, (
        "served %d, stored %d, lost_in_crash %d, other drops %d: %d points the killed "
        "child held are in no counter; status: %s"
        % (served, stored, lost, other, served - stored - lost - other, counters))
    # The ring lives in shared memory: a new child of the same generation
    # took over what the killed one had recorded and not sent, and sent it.
    # Nothing was in flight at the kill (wait_quiet), so nothing is lost.
    assert "IMX0017" in h.error_log_text(), "no child took over the dead one's ring"
    assert lost == 0 and stored == served, counters


@pytest.mark.parametrize("mpm", ["prefork", "worker", "event"])
def test_sigkill_of_old_generation_child_is_sent_by_new_one(module_built, mod_delay, influx,
                                                          influx_db, httpd_factory, mpm):
    """The last child of a generation, still busy after a graceful restart,
    is killed with SIGKILL. What it recorded before and had not sent (a 30 s
    flush interval: all of it) is taken over by a child of the new
    generation and stored under the names it was recorded with, although
    the new configuration puts a virtual host, a route and a request tag
    ahead of the old ones (so any per-generation position would name
    something else): per (vhost, route, tenant), stored == served."""
    h = httpd_factory(mpm=mpm, mpm_conf=KILL_MPM[mpm], start=False)
    path = os.path.join(h.htdocs, "api", "a.txt")
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    os.chmod(os.path.dirname(path), 0o755)
    with open(path, "w") as f:
        f.write("api\n")
    os.chmod(path, 0o644)

    def conf(flush, first):
        imx = str(Imx(influx.write_url(influx_db), flush_interval=flush, batch_size=100000,
                      buffer_size=262144))
        imx += "LoadModule delay_module %s\n" % mod_delay + IMX_STATUS_CONF
        old = """
<VirtualHost {host}:{port}>
    ServerName old.example
    InfluxMetricsTag site old
    InfluxMetricsTagFrom header X-Tenant tenant
    <Location /api>
        InfluxMetricsRoute api
    </Location>
    <Location /delay>
        SetHandler imx-delay
    </Location>
</VirtualHost>
""".format(host=harness.HOST, port=h.port)
        new = """
<Location /new>
    InfluxMetricsRoute aaa-new
    InfluxMetricsTagFrom header X-Other other
</Location>
<VirtualHost {host}:{port}>
    ServerName aaa.example
    InfluxMetricsTag site aaa
</VirtualHost>
""".format(host=harness.HOST, port=h.port)
        return new + imx + old if first else imx + old + new

    h.extra = conf("30s", False)
    h.start()
    where = {"/small.txt": ("old.example", "", "ta"), "/api/a.txt": ("old.example", "api", "tb")}
    for p_, (host, _, tenant) in where.items():
        res = ab(h.url + p_.lstrip("/"), 400, 2, keepalive=False, timeout=60,
                 extra_args=("-H", "Host: " + host, "-H", "X-Tenant: " + tenant))
        assert res.complete == 400
    wait_quiet(h)
    # One child stays busy after the restart: the last of its generation.
    slow, statuses = _slow_gets(h, "old.example", "/delay?us=20000000", 1)
    time.sleep(0.5)
    old_pids = set(h.child_pids())
    h.extra = conf("500ms", True)
    h.write_config()
    h.graceful()
    wait_until(lambda: len(old_pids & set(h.child_pids())) == 1, 20, 0.1,
               "the old generation should be down to its busy child")
    victim = (old_pids & set(h.child_pids())).pop()
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in h.child_pids(), 10)
    taken = re.compile(r"\[pid (\d+)[^\]]*\].*IMX0017: took over (\d+) points")
    m = wait_until(lambda: taken.search(h.error_log_text()), 20, 0.1,
                   "no child took over the killed one's ring")
    assert int(m.group(1)) not in old_pids, "taken over by a child of the old generation"
    assert int(m.group(2)) > 0
    wait_until(lambda: imx_status(h)["buffered"] == 0, 20, 0.2, "points still buffered")
    h.stop()
    for t in slow:
        t.join(5)
    assert statuses == [None], "the killed child's request got an answer: %s" % statuses
    served = {}
    for p_, n in served_paths(h, *where).items():
        served[where[p_]] = n
    res = influx.query('SELECT count("duration_us") FROM "apache_request" '
                       'GROUP BY "vhost", "route", "tenant", "site"', db=influx_db)
    stored = {}
    for s_ in res["results"][0].get("series") or []:
        t = s_["tags"]
        assert t.get("site") == "old", t
        key = (t.get("vhost", ""), t.get("route", ""), t.get("tenant", ""))
        stored[key] = stored.get(key, 0) + int(s_["values"][0][1])
    assert stored == served, (stored, served)


@pytest.mark.allowed_errors(r"IMX0100: will retry", r"IMX0100: backend")
def test_sigkill_during_outage_counts_lost_exactly(module_built, httpd_factory):
    """Points a child has taken from its ring into its retry buffer (the
    backend answers 503) live in its own memory: a SIGKILL loses them. The
    status page must count exactly those as lost_in_crash, the rest being
    delivered once the backend is back: stored + lost_in_crash == served."""
    from faultserver import FaultServer
    with FaultServer(mode=503) as fs:
        h = httpd_factory(mpm="event", mpm_conf=KILL_MPM["event"], extra=str(Imx(
            fs.write_url(), flush_interval="200ms")) + IMX_STATUS_CONF)
        res = ab(h.url + "small.txt", 3000, 8, keepalive=True)
        assert res.complete == 3000
        wait_quiet(h)
        # Every child has tried (and failed) at least once: its points are
        # in its retry buffer, out of the ring.
        wait_until(lambda: all(c["retries"] > 0 and c["retry_bytes"] > 0
                               for c in imx_status(h)["children"]
                               if c["recorded"]), 15)
        st = imx_status(h)
        victim = max(st["children"], key=lambda c: c["recorded"])
        os.kill(victim["pid"], signal.SIGKILL)
        wait_until(lambda: victim["pid"] not in h.child_pids(), 10)
        fs.set_mode("ok")

        def settled():
            s_ = imx_status(h)
            return s_ if s_["buffered"] == 0 and s_["lost_in_crash"] else None
        st = wait_until(settled, 40, 0.2, "points still buffered or nothing counted lost")
        h.stop()
        served = served_paths(h, "/small.txt")["/small.txt"]
        stored = len({ln for ln in fs.lines if ln.startswith("apache_request")})
        assert st["lost_in_crash"] == victim["recorded"] - victim["sent"], (st, victim)
        assert stored + st["lost_in_crash"] == served, (stored, st, served)


# --------------------------------------------------------------------------
# Configuration changes between generations

def _count_since(influx, db, measurement, field, t_ns):
    return influx.count(db, measurement, field=field, where="time > %d" % t_ns)


def test_graceful_changing_flush_interval_keeps_summaries(module_built, influx, influx_db,
                                                          httpd_factory):
    """InfluxMetricsMode both; a graceful restart changes
    InfluxMetricsFlushInterval from 200ms to 1s. apache_summary and
    apache_process points keep coming, one per second."""
    imx = Imx(influx.write_url(influx_db), flush_interval="200ms",
              extra="InfluxMetricsMode both\n")
    h = httpd_factory(mpm="event", extra=str(imx))
    url = h.url + "small.txt"

    def chunk():
        res = ab(url, 100, 2, keepalive=False, timeout=30)
        time.sleep(0.1)
        return res

    with LoadLoop(chunk, max_s=60):
        t_start = time.time_ns()
        wait_until(lambda: _count_since(influx, influx_db, "apache_summary", "count",
                                        t_start) >= 3
                   and _count_since(influx, influx_db, "apache_process", "busy_workers",
                                    t_start) >= 3, 15, 0.2, "no summaries at 200ms")
        gen1 = set(h.child_pids())
        imx.flush_interval = "1s"
        h.extra = str(imx)
        h.write_config()
        h.graceful()
        # Once the old children are gone (they write their last summary on
        # the way out), only the new generation writes.
        wait_until(lambda: not gen1 & set(h.child_pids()), 15, 0.1, "old children stay")
        t1 = time.time_ns()
        try:
            wait_until(lambda: _count_since(influx, influx_db, "apache_summary", "count",
                                            t1) >= 3
                       and _count_since(influx, influx_db, "apache_process",
                                        "busy_workers", t1) >= 3, 10, 0.25)
        except TimeoutError:
            pass
        summary = _count_since(influx, influx_db, "apache_summary", "count", t1)
        process = _count_since(influx, influx_db, "apache_process", "busy_workers", t1)
    h.stop()
    assert summary >= 3 and process >= 3, (
        "after the interval changed from 200ms to 1s: %d apache_summary and %d "
        "apache_process points in 10 s" % (summary, process))


def _slow_gets(h, host, path, n, timeout=30):
    """n threads, each one GET of path with that Host header; returns the
    threads (started) and the list their statuses go to (None for a request
    whose connection was closed without an answer: its child was killed)."""
    statuses = []

    def one():
        c = http.client.HTTPConnection(harness.HOST, h.port, timeout=timeout)
        try:
            c.request("GET", path, headers={"Host": host})
            r = c.getresponse()
            r.read()
            statuses.append(r.status)
        except (http.client.RemoteDisconnected, ConnectionError):
            statuses.append(None)
        finally:
            c.close()
    threads = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    return threads, statuses


def test_graceful_adding_vhost_and_route_keeps_summary_labels(module_built, mod_delay,
                                                              influx, influx_db,
                                                              httpd_factory):
    """A graceful restart adds virtual hosts (one before, one after the old
    one) and a route (InfluxMetricsRoute in a <Location> ahead of the old
    one) while the old virtual host keeps serving, some of it in requests
    that started before the restart and end after it, in the old children.
    Every apache_summary count stays under its own vhost and route: the
    summed counts per (vhost, route) equal the requests served there."""
    h = httpd_factory(mpm="event", start=False)
    for rel, text in (("api/a.txt", "api\n"), ("new/b.txt", "new\n")):
        path = os.path.join(h.htdocs, rel)
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        os.chmod(os.path.dirname(path), 0o755)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o644)
    # Each virtual host has a directive of the module (a tag): one without
    # any shares the main server's settings, vhost name included (see
    # test_delivery.py), which is not what this test is about.
    vhost = """
<VirtualHost {host}:{port}>
    ServerName {name}
    InfluxMetricsTag site {name}
</VirtualHost>
"""
    old = """
<VirtualHost {host}:{port}>
    ServerName old.example
    InfluxMetricsTag site old.example
    <Location /api>
        InfluxMetricsRoute api
    </Location>
    <Location /delay>
        SetHandler imx-delay
        InfluxMetricsRoute api
    </Location>
</VirtualHost>
""".format(host=harness.HOST, port=h.port)
    imx = str(Imx(influx.write_url(influx_db), extra="InfluxMetricsMode both\n"))
    imx += "LoadModule delay_module %s\n" % mod_delay
    h.extra = imx + old
    h.start()
    # Where each path is requested, and the (vhost, route) it belongs to.
    where = {"/small.txt": ("old.example", ""), "/api/a.txt": ("old.example", "api"),
             "/delay": ("old.example", "api"),
             "/new/b.txt": ("aaa.example", "aaa-new"), "/index.html": ("zzz.example", "")}

    def get(path, n, c=2):
        return ab(h.url + path.lstrip("/"), n, c, keepalive=False, timeout=60,
                  extra_args=("-H", "Host: " + where[path][0]))

    def old_traffic():
        return get("/small.txt", 200), get("/api/a.txt", 100)

    with LoadLoop(old_traffic, max_s=60):
        wait_until(lambda: h.access_log_count() >= 1000, 30)
        h.extra = ("<Location /new>\n    InfluxMetricsRoute aaa-new\n</Location>\n" + imx
                   + vhost.format(host=harness.HOST, port=h.port, name="aaa.example")
                   + old
                   + vhost.format(host=harness.HOST, port=h.port, name="zzz.example"))
        h.write_config()
        # 1.5 s requests in the old children, ending well after the new
        # generation has written its first summaries (200ms interval).
        slow, statuses = _slow_gets(h, "old.example", "/delay?us=1500000", 16)
        time.sleep(0.2)
        h.graceful()
        get("/new/b.txt", 500)
        get("/index.html", 500)
        for t in slow:
            t.join(30)
        time.sleep(0.5)
    assert statuses == [200] * 16, statuses
    h.stop()
    served = {}
    for path, n in served_paths(h, *where).items():
        served[where[path]] = served.get(where[path], 0) + n
    assert all(served.values()), served

    def sums(q):
        res = influx.query(q, db=influx_db)
        out = {}
        for s in res["results"][0].get("series") or []:
            key = (s["tags"].get("vhost", ""), s["tags"].get("route", ""))
            out[key] = out.get(key, 0) + int(s["values"][0][1])
        return out
    raw = sums('SELECT count("duration_us") FROM "apache_request" GROUP BY "vhost", "route"')
    summary = sums('SELECT sum("count") FROM "apache_summary" GROUP BY "vhost", "route"')

    def show(d):
        return ", ".join("%s/%s=%d" % (k[0], k[1] or "-", v) for k, v in sorted(d.items()))
    assert raw == served, "raw points per vhost/route: %s; served: %s" % (show(raw), show(served))
    assert summary == served, ("apache_summary counts per vhost/route: %s; served: %s"
                               % (show(summary), show(served)))
