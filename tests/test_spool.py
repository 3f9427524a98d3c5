# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""The spool (InfluxMetricsSpoolDir): what a child cannot send before it exits,
or cannot keep in its retry buffer, is written to disk and sent later by any
child, of this generation or a later one. A real InfluxDB goes away and comes
back; httpd is stopped and started, restarted gracefully and recycles its
children meanwhile. Ground truth is httpd's access log; stored is what
InfluxDB holds."""

import os
import pwd
import re
import shutil
import signal
import stat
import struct
import subprocess
import time
import zlib

import pytest

import harness
from harness import (IMX_STATUS_CONF, Imx, LoadLoop, ab, flusher_exits, imx_status,
                     wait_until)

PATH = "/small.txt"
DROPS = ("dropped_full", "dropped_retry", "dropped_exit", "dropped_spool", "rejected")
# While InfluxDB is down, every POST fails and is logged (at most once per
# 10 s per child).
OUTAGE_ERRORS = (r"IMX0100: will retry", r"IMX0100: spooled: will retry")


def spool_conf(url, spool, extra=""):
    return str(Imx(url, extra="InfluxMetricsSpoolDir %s\n%s" % (spool, extra))) \
        + IMX_STATUS_CONF


def served(h):
    return sum(1 for e in h.access_log_entries() if e.path == PATH)


def spool_files(spool, suffix=".spool"):
    try:
        return sorted(n for n in os.listdir(spool) if n.endswith(suffix))
    except FileNotFoundError:
        return []


def back_and_count(h, ix):
    """The backend back: waits until nothing is held or spooled, stops httpd,
    and returns (served, stored, totals of the exit lines, status when
    settled)."""
    ix.start_again()
    st = wait_settled(h)
    h.stop()
    return (served(h), ix.count("spool", "apache_request"), totals(flusher_exits(h)), st)


def bad_bytes(spool):
    """Bytes of the *.bad files: they still count in spool_bytes."""
    return sum(os.path.getsize(os.path.join(spool, f)) for f in spool_files(spool, ".bad"))


def wait_settled(h, timeout=45, spool=None):
    """Until nothing is held in memory or in the spool. A child learns that
    the backend is back at its next retry, up to the 30 s backoff cap after
    its last failure: with the retry buffer shared by all children, a child
    whose failed batches all went to the spool probes only by trying a
    spooled file, at its own backoff."""
    def settled():
        s = imx_status(h)
        # Bad files still count, those put there by hand while httpd runs
        # only from its next start.
        left = bad_bytes(spool) if spool else 0
        return s if s["buffered"] == 0 and s["spooled"] == 0 and s["spool_bytes"] <= left \
            else None
    return wait_until(settled, timeout, 0.2, "points still buffered or spooled")


def load(h, n=400, c=4):
    url = h.url + PATH.lstrip("/")
    return LoadLoop(lambda: ab(url, n, c, keepalive=False, timeout=30), max_s=60)


def totals(exits):
    keys = ("recorded", "sent", "to_spool", "unspooled", "maybe_stored") + DROPS
    return {k: sum(e.get(k, 0) for e in exits) for k in keys}


@pytest.fixture
def private_influx():
    """An InfluxDB of the test's own, to stop and start again."""
    ix = harness.Influx().start()
    ix.create_db("spool")
    yield ix
    ix.stop()
    ix.cleanup()


def make_httpd(httpd_factory, ix, extra="", **kw):
    h = httpd_factory(start=False, **kw)
    spool = os.path.join(h.dir, "spool")
    h.extra = spool_conf(ix.write_url("spool"), spool, extra)
    h.start()
    return h, spool


# --------------------------------------------------------------------------
# (1) A full stop and start during an outage, under load

@pytest.mark.allowed_errors(*OUTAGE_ERRORS)
def test_full_restart_during_outage(module_built, private_influx, httpd_factory):
    """InfluxDB down; httpd stopped (SIGTERM to the parent: every child
    exits at once, with prefork from its SIGTERM handler) and started again
    under load; InfluxDB back. What the stopped children held is in the
    spool across the restart, then sent by the new children: stored ==
    served, nothing dropped.

    prefork, not event: under load, the event MPM's own ungraceful shutdown
    now and then crashes a child in its main thread (in apr_os_sock_get,
    while worker threads free their pools, before this module's cleanup
    runs), and what that child held is lost with it."""
    ix = private_influx
    h, spool = make_httpd(httpd_factory, ix, mpm="prefork")
    with load(h) as run:
        wait_until(lambda: served(h) >= 300, 20, message="no load")
        ix.stop()
        time.sleep(1.5)
        h.stop()
        in_spool = spool_files(spool)
        assert in_spool, "nothing spooled by the stopped children"
        h.start()
        time.sleep(1.5)
    assert run.results
    n, stored, tot, st = back_and_count(h, ix)
    print("served %d stored %d, %d files spooled at the stop, exit lines %s, status %s"
          % (n, stored, len(in_spool), tot, {k: st[k] for k in
                                             ("to_spool", "unspooled", "dropped_spool")}))
    assert stored == n, (stored, n, tot)
    assert tot["to_spool"] > 0 and all(tot[k] == 0 for k in DROPS), tot
    # Across the restart: the second parent counted from the files exactly
    # what the first one's children had spooled, and its children sent it.
    before, _, after = h.error_log_text().partition("IMX0015: the spool %s holds " % spool)
    at_start = int(re.match(r"(\d+) points", after).group(1))
    spooled_by_gen1 = sum(int(x) for x in re.findall(r"flusher exit: .* to_spool=(\d+)",
                                                      before))
    assert at_start == spooled_by_gen1 > 0, (at_start, spooled_by_gen1)
    # (The second generation may spool too: prefork trims idle children.)
    assert at_start + st["to_spool"] == st["unspooled"] and st["dropped"] == 0, st
    assert spool_files(spool) == [] and spool_files(spool, ".bad") == []


# --------------------------------------------------------------------------
# (2) Graceful restarts and recycling during an outage

RECYCLE_MPM = {
    "event": {"StartServers": 2, "ServerLimit": 16, "ThreadsPerChild": 10,
              "MaxRequestWorkers": 40, "MinSpareThreads": 10, "MaxSpareThreads": 40,
              "MaxConnectionsPerChild": 300},
    "prefork": {"StartServers": 3, "MinSpareServers": 2, "MaxSpareServers": 6,
                "ServerLimit": 16, "MaxRequestWorkers": 8,
                "MaxConnectionsPerChild": 150},
}


@pytest.mark.allowed_errors(*OUTAGE_ERRORS, r"AH00161: server reached MaxRequestWorkers")
@pytest.mark.parametrize("mpm", ["event", "prefork"])
def test_graceful_and_recycling_during_outage(module_built, private_influx, httpd_factory,
                                              mpm):
    """Children exit while InfluxDB is down, by recycling
    (MaxConnectionsPerChild) and by two graceful restarts, under load; with
    prefork, each exit runs from the SIGTERM handler. Their points go to the
    spool and arrive once InfluxDB is back: stored == served."""
    ix = private_influx
    h, spool = make_httpd(httpd_factory, ix, mpm=mpm, mpm_conf=RECYCLE_MPM[mpm])
    with load(h, c=3) as run:
        wait_until(lambda: served(h) >= 200, 20, message="no load")
        ix.stop()
        time.sleep(1.0)
        h.graceful()
        time.sleep(1.0)
        h.graceful()
        time.sleep(1.0)
        during = imx_status(h)
    assert run.results
    n, stored, tot, st = back_and_count(h, ix)
    print("%s: served %d stored %d, %d exits %s" % (mpm, n, stored, len(flusher_exits(h)), tot))
    assert during["to_spool"] > 0, during
    assert stored == n, (stored, n, tot)
    assert all(tot[k] == 0 for k in DROPS), tot
    # Within one parent: what went into the spool came out of it.
    assert st["to_spool"] == st["unspooled"] and st["dropped"] == 0, st
    assert spool_files(spool) == []


# --------------------------------------------------------------------------
# (5) Bad files and a read-only spool directory

HDR = struct.Struct("<8sIIIIQqI")


def spool_file(lines, points, extra=0, version=1, created_us=1):
    """A spool file as the module writes it (see imx_spool_file.h)."""
    payload = "".join(l + "\n" for l in lines).encode()
    head = HDR.pack(b"IMXSPOOL", version, 0, points, extra, len(payload), created_us,
                    zlib.crc32(payload))
    return head + struct.pack("<I", zlib.crc32(head)) + payload


def spool_name(us, seq=0):
    return "imx-%016x-%08x-%08x.spool" % (us, 1, seq)


def put(spool, name, data, owner=True, mode=0o600):
    path = os.path.join(spool, name)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    if owner and harness.IS_ROOT:
        pw = pwd.getpwnam(harness.RUN_USER)
        os.chown(path, pw.pw_uid, pw.pw_gid)
    return path


@pytest.mark.allowed_errors(r"IMX0101: spool file .* is ")
def test_bad_spool_files_are_moved_aside(module_built, private_influx, httpd_factory):
    """Truncated, corrupt (checksum), foreign (magic, version) and
    unreadable files, found at startup or while running, are renamed to
    *.bad, logged once each with the reason, and counted; a good file
    written by hand (the format of imx_spool_file.h) is sent with its timestamps;
    no request is lost."""
    ix = private_influx
    h = httpd_factory(start=False)
    spool = os.path.join(h.dir, "spool")
    h.extra = spool_conf(ix.write_url("spool"), spool)
    os.mkdir(spool, 0o700)
    if harness.IS_ROOT:
        # The admin's directory, given to the children's user: httpd takes
        # over only one it creates itself.
        pw = pwd.getpwnam(harness.RUN_USER)
        os.chown(spool, pw.pw_uid, pw.pw_gid)
    t0 = 1700000000000000000
    good = spool_file(["handmade,src=spool v=%di %d" % (i, t0 + i) for i in range(5)], 5)
    corrupt = bytearray(spool_file(["handmade,src=corrupt v=1i %d" % t0] * 3, 3))
    corrupt[-5] ^= 0x20
    # Found by the parent at startup (header, size, owner): name -> (reason,
    # points counted in dropped_spool).
    bad = {
        10: ("truncated", 4),
        11: ("not a spool file", 0),
        12: ("not a spool file", 0),
        13: ("truncated", 0),
    }
    put(spool, spool_name(10), spool_file(["handmade,src=cut v=1i %d" % t0] * 4, 4)[:-20])
    put(spool, spool_name(11), b"GIF89a" + b"\0" * 100)
    put(spool, spool_name(12), spool_file(["handmade v=1i 1"], 1, version=7))
    put(spool, spool_name(13), b"")
    if harness.IS_ROOT:
        # root's file: the children could not read it.
        put(spool, spool_name(14), good, owner=False)
        bad[14] = ("owned by uid 0", 0)
    # ... and by a child when it sends: the checksum.
    put(spool, spool_name(15), bytes(corrupt))
    bad[15] = ("corrupt", 3)
    put(spool, spool_name(16), good)
    h.start()
    res = ab(h.url + PATH.lstrip("/"), 500, 4, keepalive=False)
    assert res.complete == 500
    wait_until(lambda: len(spool_files(spool, ".bad")) == len(bad) and not spool_files(spool),
               20, 0.2, "bad files found at startup not all moved aside")
    # While running: a truncated payload, a directory, and (as root) a file
    # the children may not open. The children look for files the gauges do
    # not know about every few seconds.
    put(spool, spool_name(20), good[:-1])
    bad[20] = ("truncated", 5)
    os.mkdir(os.path.join(spool, spool_name(22)))
    bad[22] = ("cannot be opened: Is a directory", 0)
    if harness.IS_ROOT:
        pw = pwd.getpwnam(harness.RUN_USER)
        os.chown(os.path.join(spool, spool_name(22)), pw.pw_uid, pw.pw_gid)
        put(spool, spool_name(21), good, owner=False, mode=0)
        bad[21] = ("cannot be opened: Permission denied", 0)
    wait_until(lambda: len(spool_files(spool, ".bad")) == len(bad) and not spool_files(spool),
               20, 0.2, "bad files not all moved aside")
    st = wait_settled(h, spool=spool)
    h.stop()
    log = h.error_log_text()
    assert spool_files(spool, ".bad") == sorted(spool_name(i) + ".bad" for i in bad)
    for i, (why, points) in bad.items():
        lines = [ln for ln in log.splitlines() if spool_name(i) in ln]
        assert len(lines) == 1 and why in lines[0] \
            and ("%d points dropped" % points) in lines[0], (i, why, lines)
    assert st["spool_bad_files"] == len(bad), st
    assert st["dropped_spool"] == sum(p for _, p in bad.values()), st
    assert st["unspooled"] == 5, st
    rows = ix.select('SELECT "v" FROM "handmade"', "spool")
    assert sorted(r["time"] for r in rows) == [t0 + i for i in range(5)], rows
    assert ix.count("spool", "apache_request") == served(h) == 500


@pytest.mark.allowed_errors(*OUTAGE_ERRORS, r"IMX0100: could not spool")
def test_read_only_spool_directory(module_built, private_influx, httpd_factory):
    """The spool directory turns read-only (mode 0500) while InfluxDB is
    down and httpd stops: each child logs the error (naming the directory
    and the errno), counts its points in dropped_spool, and exits in time;
    everything else arrives. The next start refuses the directory, saying
    why, until it is made right again; then it works."""
    if not harness.IS_ROOT:
        pytest.skip("needs root: the children must run as another user")
    ix = private_influx
    h, spool = make_httpd(httpd_factory, ix)
    ab(h.url + PATH.lstrip("/"), 300, 4, keepalive=False)
    wait_until(lambda: imx_status(h)["sent"] == 300, 10)
    ix.stop()
    os.chmod(spool, 0o500)
    ab(h.url + PATH.lstrip("/"), 300, 4, keepalive=False)
    h.wait_access_log_count(600)
    t = time.monotonic()
    h.stop()
    stop_s = time.monotonic() - t
    tot = totals(flusher_exits(h))
    log = h.error_log_text()
    assert "could not spool, dropped" in log and "Permission denied" in log and spool in log
    assert tot["dropped_spool"] > 0 and tot["to_spool"] == tot["dropped_spool"], tot
    assert stop_s < 8, stop_s
    # httpd does not chmod a directory it did not just create: the next
    # start is refused, saying why; once the admin makes it 0700, it works.
    rc, out = h.configtest()
    assert rc != 0 and "IMX0014" in out and "mode 0500" in out, out
    os.chmod(spool, 0o700)
    ix.start_again()
    h.start()
    ab(h.url + PATH.lstrip("/"), 300, 4, keepalive=False)
    wait_until(lambda: imx_status(h)["sent"] == 300, 15)
    h.stop()
    n, stored = served(h), ix.count("spool", "apache_request")
    tot = totals(flusher_exits(h))
    dropped = sum(tot[k] for k in DROPS)
    print("served %d stored %d exits %s" % (n, stored, tot))
    assert n <= stored + dropped <= n + tot["maybe_stored"], (n, stored, tot)
    assert dropped == tot["dropped_spool"], tot


# --------------------------------------------------------------------------
# (6) A full spool

@pytest.mark.allowed_errors(*OUTAGE_ERRORS)
def test_full_spool_drops_the_oldest(module_built, private_influx, httpd_factory):
    """InfluxMetricsSpoolSize 128K with a 32K retry buffer: during an
    outage the retry buffers spill to the spool, and the spool deletes its
    oldest files to stay within 128K, counted in dropped_spool. When
    InfluxDB is back: stored + dropped_spool == served, and what is missing
    is the start of the outage."""
    ix = private_influx
    limit = 128 * 1024
    h, spool = make_httpd(httpd_factory, ix, extra="InfluxMetricsSpoolSize 128K\n"
                          "InfluxMetricsRetryBuffer 32K\nInfluxMetricsBatchSize 100\n")
    url = h.url + PATH.lstrip("/")
    ab(url, 300, 4, keepalive=False)
    wait_until(lambda: imx_status(h)["sent"] == 300, 10)
    ix.stop()
    t_down = time.time_ns()
    peak = gauge_peak = 0

    def on_disk():
        total = 0
        for f in os.listdir(spool):
            try:
                if not f.endswith(".bad"):
                    total += os.path.getsize(os.path.join(spool, f))
            except FileNotFoundError:
                pass
        return total
    with LoadLoop(lambda: ab(url, 300, 4, keepalive=False, timeout=30), max_s=30):
        end = time.monotonic() + 7
        while time.monotonic() < end:
            # The gauge includes what a writer reserved before it makes room:
            # above the bound for a moment, by the files being written. The
            # disk never.
            gauge_peak = max(gauge_peak, imx_status(h)["spool_bytes"])
            peak = max(peak, on_disk())
            time.sleep(0.1)
    during = imx_status(h)
    t_up = time.time_ns()
    ix.start_again()
    st = wait_settled(h)
    h.stop()
    n, stored = served(h), ix.count("spool", "apache_request")
    print("served %d stored %d, peak %d bytes (gauge %d), status %s" % (n, stored, peak,
                                                                        gauge_peak, {
        k: st[k] for k in ("to_spool", "unspooled", "dropped_spool", "dropped",
                           "maybe_stored")}))
    assert during["dropped_spool"] > 0 and 0 < peak <= limit, (during, peak)
    assert gauge_peak <= limit + limit // 2, gauge_peak
    assert st["dropped"] == st["dropped_spool"], st
    assert n <= stored + st["dropped_spool"] <= n + st["maybe_stored"], (n, stored, st)
    assert st["to_spool"] == st["unspooled"] + st["dropped_spool"], st
    # The oldest went: the outage's stored points begin well after it began,
    # and reach its end.
    rows = ix.select('SELECT "duration_us" FROM "apache_request" WHERE time > %d'
                     % (t_down + 300000000), "spool")
    times = sorted(r["time"] for r in rows)
    assert times and times[0] > t_down + 1000000000, (times[:3], t_down)
    assert times[-1] > t_up - 1000000000, (times[-3:], t_up)


# --------------------------------------------------------------------------
# The directives

@pytest.mark.allowed_errors(*OUTAGE_ERRORS)
def test_spool_dir_configtest(module_built, httpd_factory):
    """configtest refuses a spool directory that cannot be made right,
    naming the directive and the reason; a bad InfluxMetricsSpoolSize is
    refused; httpd creates a missing one for its children (0700) and its
    missing parents (0755), and refuses an existing one of another owner
    instead of taking it over."""
    h = httpd_factory(start=False)
    url = "http://127.0.0.1:9/write?db=x"
    afile = os.path.join(h.dir, "a-file")
    with open(afile, "w") as f:
        f.write("x")
    h.extra = spool_conf(url, os.path.join(afile, "spool"))
    h.write_config()
    rc, out = h.configtest()
    assert rc != 0 and "InfluxMetricsSpoolDir: cannot use '%s/spool'" % afile in out \
        and "a part of its path is a file" in out, out
    h.extra = spool_conf(url, afile)
    h.write_config()
    rc, out = h.configtest()
    assert rc != 0 and "it exists and is not a directory" in out, out
    h.extra = spool_conf(url, os.path.join(h.dir, "spool"), "InfluxMetricsSpoolSize 10K\n")
    h.write_config()
    rc, out = h.configtest()
    assert rc != 0 and "InfluxMetricsSpoolSize: invalid value '10K'" in out, out
    # Without a URL the module is inert: nothing is checked or created.
    h.extra = "InfluxMetricsSpoolDir %s\n" % os.path.join(afile, "spool")
    h.write_config()
    rc, out = h.configtest()
    assert rc == 0, out

    # A directory of root's, 0755: made the children's, 0700, at start;
    # missing parents are created 0755.
    spool = os.path.join(h.dir, "cache", "imx", "spool")
    os.makedirs(os.path.dirname(spool), 0o755)
    os.mkdir(spool, 0o755)
    os.rmdir(spool)
    os.rmdir(os.path.dirname(spool))
    h.extra = spool_conf(url, spool)
    h.write_config()
    rc, out = h.configtest()
    assert rc == 0, out
    assert not os.path.exists(spool), "configtest must not create the directory"
    h.start()
    st = os.stat(spool)
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.dirname(spool)).st_mode) == 0o755
    if harness.IS_ROOT:
        assert st.st_uid == pwd.getpwnam(harness.RUN_USER).pw_uid
    h.stop()
    if harness.IS_ROOT:
        # One it did not create is never chowned or chmodded: refused,
        # saying why, and left as it was.
        os.chown(spool, 0, 0)
        os.chmod(spool, 0o755)
        rc, out = h.configtest()
        assert rc != 0 and "owned by uid 0, not by uid %d" \
            % pwd.getpwnam(harness.RUN_USER).pw_uid in out, out
        st = os.stat(spool)
        assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o755, st


def test_spool_dir_of_another_user_refused(module_built, httpd_factory):
    """httpd not started as root cannot give itself a directory that belongs
    to someone else: configtest says so."""
    if not harness.IS_ROOT or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run configtest as another user")
    h = httpd_factory(start=False)
    spool = os.path.join(h.dir, "spool")
    os.mkdir(spool, 0o700)          # root's
    h.extra = spool_conf("http://127.0.0.1:9/write?db=x", spool)
    h.write_config()
    pw = pwd.getpwnam(harness.RUN_USER)
    p = subprocess.run(
        ["setpriv", "--reuid=%d" % pw.pw_uid, "--regid=%d" % pw.pw_gid, "--clear-groups"]
        + h._cmd("-t"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        timeout=20, cwd=h.dir)
    out = p.stdout.decode(errors="replace")
    assert p.returncode != 0 and "InfluxMetricsSpoolDir: cannot use '%s'" % spool in out \
        and "owned by uid 0, not by uid %d" % pw.pw_uid in out, out


@pytest.mark.allowed_errors(r"IMX0014: InfluxMetricsSpoolDir", r"AH0001[68]: Configuration")
def test_spool_dir_symlink_is_refused_not_followed(module_built, httpd_factory):
    """The children's user owns the spool directory once httpd made it. If
    it replaces it with a symbolic link to a directory of root's (in a
    sticky, world-writable parent like /tmp), the next start (or the
    graceful restart logrotate does) refuses it, saying so, and root's
    directory keeps its owner and mode: httpd never chowns or chmods through
    a link, nor a directory it did not create. A link in the path that
    another user could have made is refused too."""
    if not harness.IS_ROOT:
        pytest.skip("needs root: the children must run as another user")
    www = pwd.getpwnam(harness.RUN_USER)
    h = httpd_factory(start=False)
    shared = os.path.join(h.dir, "shared")
    os.mkdir(shared)
    os.chmod(shared, 0o1777)
    spool = os.path.join(shared, "spool")
    h.extra = spool_conf("http://127.0.0.1:9/write?db=x", spool)
    h.start()
    st = os.stat(spool)
    assert st.st_uid == www.pw_uid and stat.S_IMODE(st.st_mode) == 0o700, st
    rootdir = os.path.join(h.dir, "rootdir")
    os.mkdir(rootdir, 0o755)
    os.chmod(rootdir, 0o755)

    # What the children's user can do: its own directory out, a link in.
    os.rmdir(spool)
    os.symlink(rootdir, spool)
    os.lchown(spool, www.pw_uid, www.pw_gid)
    os.kill(h.pid, signal.SIGUSR1)  # graceful, as logrotate
    wait_until(lambda: not h.running(), 20)
    h.stop()
    log = h.error_log_text()
    assert "IMX0014" in log and "symbolic link" in log, log[-2000:]
    st = os.stat(rootdir)
    assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o755, st
    rc, out = h.configtest()
    assert rc != 0 and "symbolic link" in out, out
    assert os.stat(rootdir).st_uid == 0

    # A link on the way, in a directory others can write to.
    os.unlink(spool)
    os.mkdir(os.path.join(rootdir, "inner"), 0o755)
    os.symlink(rootdir, os.path.join(shared, "via"))
    h.extra = spool_conf("http://127.0.0.1:9/write?db=x", os.path.join(shared, "via", "inner"))
    h.write_config()
    rc, out = h.configtest()
    assert rc != 0 and "symbolic link that another user" in out, out
    st = os.stat(os.path.join(rootdir, "inner"))
    assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o755, st
