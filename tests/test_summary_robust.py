# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""Summaries through restarts, crashes and reconfiguration: every
request is counted once, under its own labels, while httpd runs; and the
memory summaries use follows the series in use, not the size of the shared
segment."""

import http.client
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest

import harness
from harness import Imx, ab, wait_until
from test_summary import delay_conf, mod_delay  # noqa: F401 - a fixture

HERE = os.path.dirname(os.path.abspath(__file__))

# One child per generation: what an old child records is easy to place.
ONE_CHILD_EVENT = {"StartServers": 1, "ServerLimit": 4, "ThreadsPerChild": 25,
                   "MaxRequestWorkers": 50, "MinSpareThreads": 1, "MaxSpareThreads": 50,
                   "MaxConnectionsPerChild": 0}


def get(h, path, host="localhost", timeout=30):
    c = http.client.HTTPConnection(harness.HOST, h.port, timeout=timeout)
    try:
        c.request("GET", path, headers={"Host": host})
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def summary_counts(influx, db, by=("vhost", "route")):
    """{(tag values...): sum(count)} over apache_summary."""
    res = influx.query('SELECT sum("count") FROM apache_summary GROUP BY %s'
                       % ", ".join('"%s"' % t for t in by), db=db)
    out = {}
    for s in res["results"][0].get("series") or []:
        tags = s.get("tags") or {}
        out[tuple(tags.get(t, "") for t in by)] = s["values"][0][1]
    return out


def summary_total(influx, db):
    return sum(summary_counts(influx, db, by=("host",)).values())


def summary_conf(influx, db, interval="200ms", **kw):
    return str(Imx(influx.write_url(db), flush_interval=interval,
                   extra="InfluxMetricsMode summary\n", **kw))


def test_interval_change_keeps_summaries(module_built, influx, influx_db, httpd_factory):
    """A graceful restart that changes InfluxMetricsFlushInterval, either way:
    summaries and process points go on, live."""
    h = httpd_factory(mpm="event", extra=summary_conf(influx, influx_db, "200ms"))
    assert ab(h.url + "small.txt", 100, 4).complete == 100
    wait_until(lambda: summary_total(influx, influx_db) == 100, 10)
    total = 100
    for interval in ("1s", "200ms"):
        h.extra = summary_conf(influx, influx_db, interval)
        h.write_config()
        h.graceful()
        since = time.time_ns()
        assert ab(h.url + "small.txt", 100, 4).complete == 100
        total += 100
        wait_until(lambda: summary_total(influx, influx_db) == total, 10,
                   message="summaries after the change to %s" % interval)
        wait_until(lambda: influx.count(influx_db, "apache_process", field="busy_workers",
                                        where="time > %d" % since) >= 2, 10,
                   message="process points after the change to %s" % interval)
    h.stop()
    assert summary_total(influx, influx_db) == total


def vhosts_conf(so, port, vhosts, first_route):
    text = ""
    if first_route:
        # Registered before "delay": every later route index shifts by one.
        text += "<Location /small.txt>\n    InfluxMetricsRoute first\n</Location>\n"
    text += delay_conf(so)
    for name in vhosts:
        text += "<VirtualHost *:%d>\n    ServerName %s\n</VirtualHost>\n" % (port, name)
    return text


def test_labels_survive_vhost_and_route_changes(module_built, mod_delay, influx, influx_db,  # noqa: F811
                                                httpd_factory):
    """A graceful restart removes a vhost, adds one and a route, so the
    positions of vhosts and routes change; requests the old child logs after
    the restart keep their own labels, live, while it still runs."""
    h = httpd_factory(start=False, mpm="event", mpm_conf=ONE_CHILD_EVENT)
    base = summary_conf(influx, influx_db)
    h.extra = base + vhosts_conf(mod_delay, h.port, ["alpha.test", "beta.test"], False)
    h.start()
    for _ in range(20):
        assert get(h, "/delay?us=0", "alpha.test") == 200
    wait_until(lambda: summary_counts(influx, influx_db) == {("alpha.test", "delay"): 20}, 10)

    # Two slow requests keep the old child busy across the restart.
    done = {}

    def slow(name, us):
        done[name] = get(h, "/delay?us=%d" % us, "alpha.test")
    a = threading.Thread(target=slow, args=("a", 2500000))
    b = threading.Thread(target=slow, args=("b", 12000000))
    a.start()
    b.start()
    time.sleep(0.5)
    h.extra = base + vhosts_conf(mod_delay, h.port, ["beta.test", "gamma.test"], True)
    h.write_config()
    h.graceful()
    for _ in range(30):
        assert get(h, "/delay?us=0", "beta.test") == 200
    for _ in range(10):
        assert get(h, "/small.txt", "gamma.test") == 200
    a.join(10)
    assert done.get("a") == 200
    want = {("alpha.test", "delay"): 21, ("beta.test", "delay"): 30, ("gamma.test", "first"): 10}
    try:
        wait_until(lambda: summary_counts(influx, influx_db) == want, 5)
    except TimeoutError:
        pytest.fail("labels while the old child runs: %r" % summary_counts(influx, influx_db))
    assert b.is_alive(), "the old child should still be serving"
    b.join(20)
    assert done.get("b") == 200
    want[("alpha.test", "delay")] = 22
    try:
        wait_until(lambda: summary_counts(influx, influx_db) == want, 10)
    except TimeoutError:
        pytest.fail("labels: %r" % summary_counts(influx, influx_db))
    h.stop()
    assert summary_counts(influx, influx_db) == want


def vm_rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def test_memory_follows_series_in_use(module_built, influx, influx_db, httpd_factory):
    """prefork's defaults (ServerLimit 256: 512 table slots of 64 series):
    after some intervals of summaries, no child has more than a few MB
    resident, whichever was elected."""
    h = httpd_factory(mpm="prefork", extra=summary_conf(influx, influx_db))
    assert ab(h.url + "small.txt", 2000, 8).complete == 2000
    wait_until(lambda: influx.count(influx_db, "apache_process", field="busy_workers") >= 10,
               15)
    rss = {pid: vm_rss(pid) for pid in h.child_pids()}
    assert len(rss) >= 5
    assert max(rss.values()) < 20 << 20, {p: "%.1f MB" % (v / 1e6) for p, v in rss.items()}
    wait_until(lambda: summary_total(influx, influx_db) == 2000, 10)
    h.stop()


def test_long_static_tags(module_built, influx, influx_db, httpd_factory):
    """Static tags of several KB once escaped: summary points arrive whole."""
    tags = [("t%d" % i, ("v%d, with=escapes " % i) * 50) for i in range(5)]
    h = httpd_factory(mpm="event", extra=summary_conf(influx, influx_db, tags=tags))
    assert ab(h.url + "small.txt", 50, 2).complete == 50
    h.stop()
    rows = influx.select("SELECT * FROM apache_summary", influx_db)
    assert sum(r["count"] for r in rows) == 50
    for r in rows:
        assert all(r.get(k) == v for k, v in tags), {k: r.get(k) for k, _ in tags}


@pytest.mark.allowed_errors(r"exit signal")
def test_crashed_child_counts_survive(module_built, influx, influx_db, httpd_factory):
    """A child killed before it wrote its summaries: what it recorded is
    summarised all the same (its table stays, the next child folds it)."""
    h = httpd_factory(mpm="event", mpm_conf=ONE_CHILD_EVENT,
                      extra=summary_conf(influx, influx_db, "30s"))
    (child,) = h.child_pids()
    assert ab(h.url + "small.txt", 300, 4).complete == 300
    h.wait_access_log_count(300)
    os.kill(child, signal.SIGKILL)
    wait_until(lambda: [p for p in h.child_pids() if p != child], 15)
    assert ab(h.url + "small.txt", 100, 4).complete == 100
    h.stop()
    assert summary_total(influx, influx_db) == 400


@pytest.fixture(scope="module")
def die_preload():
    d = harness.make_tmpdir("imx-die")
    so = os.path.join(d, "die_in_encode.so")
    subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", so,
                    os.path.join(HERE, "die_in_encode.c"), "-ldl"], check=True, timeout=60)
    os.chmod(so, 0o755)
    os.chmod(d, 0o777)          # children (www-data) write and unlink here
    yield so, d
    shutil.rmtree(d, ignore_errors=True)


def occupy_pid(pid, tries=300):
    """A root process with exactly this pid (through ns_last_pid), so that
    kill(pid, 0) from httpd's children answers EPERM; None if impossible."""
    path = "/proc/sys/kernel/ns_last_pid"
    if not harness.IS_ROOT or not os.access(path, os.W_OK):
        return None
    for _ in range(tries):
        try:
            with open(path, "w") as f:
                f.write(str(pid - 1))
        except OSError:
            return None
        p = subprocess.Popen(["sleep", "300"])
        if p.pid == pid:
            return p
        p.kill()
        p.wait()
    return None


@pytest.mark.allowed_errors(r"exit signal")
def test_lock_holder_killed(module_built, influx, influx_db, httpd_factory, die_preload):
    """The writer of summaries dies holding the lock, and its pid goes to a
    process the children may not signal: summaries go on, every request
    counted once."""
    so, d = die_preload
    trigger = os.path.join(d, "die")
    h = httpd_factory(start=False, mpm="event", extra=summary_conf(influx, influx_db))
    saved = {k: os.environ.get(k) for k in ("LD_PRELOAD", "IMX_DIE_FILE")}
    os.environ.update(LD_PRELOAD=so, IMX_DIE_FILE=trigger)
    try:
        h.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert ab(h.url + "small.txt", 200, 4).complete == 200
    wait_until(lambda: summary_total(influx, influx_db) == 200, 10)
    # One child goes on (and so is the writer, and dies); the others wait
    # stopped until its pid has gone to another process.
    victim, *others = h.child_pids()
    squatter = None
    for p in others:
        os.kill(p, signal.SIGSTOP)
    try:
        with open(trigger, "w"):
            pass
        os.chmod(trigger, 0o666)
        wait_until(lambda: not os.path.exists(trigger) and os.path.exists(trigger + ".pid"), 10)
        with open(trigger + ".pid") as f:
            assert int(f.read()) == victim
        wait_until(lambda: not os.path.exists("/proc/%d" % victim), 15, message="child reaped")
        squatter = occupy_pid(victim)
    finally:
        for p in others:
            os.kill(p, signal.SIGCONT)
    try:
        assert ab(h.url + "small.txt", 300, 4).complete == 300
        wait_until(lambda: summary_total(influx, influx_db) == 500, 10,
                   message="summaries after the lock holder died (pid %s)"
                   % ("reused" if squatter else "free"))
        assert "IMX0021" in h.error_log_text()
    finally:
        if squatter:
            squatter.kill()
            squatter.wait()
    h.stop()
    assert summary_total(influx, influx_db) == 500
