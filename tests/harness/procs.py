# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""Process bookkeeping, by PID only: the descendants of a process (a scan of
/proc), whether that exact process still lives, signals and stops with a
timeout, and the safety net that stops at exit whatever a test run left
running."""

import atexit
import os
import signal
import subprocess
import time


def _proc_stat(pid):
    """(state, ppid, starttime) from /proc/<pid>/stat, or None if gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses.
    rest = data[data.rindex(")") + 2:].split()
    return rest[0], int(rest[1]), int(rest[19])


def _descendants(root_pid):
    """[(pid, starttime)] of all live descendants of root_pid (scan of /proc).

    The start time identifies the process, so a recycled PID is never taken
    for one of ours later on."""
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = _proc_stat(int(name))
        if st and st[0] != "Z":
            children.setdefault(st[1], []).append((int(name), st[2]))
    out, todo = [], [root_pid]
    while todo:
        for pid, start in children.get(todo.pop(), []):
            out.append((pid, start))
            todo.append(pid)
    return out


def _alive(pid, starttime):
    """True while that exact process exists and is not a zombie. Orphans get
    reparented to PID 1, which in a container may never reap them: a zombie
    counts as gone."""
    st = _proc_stat(pid)
    return st is not None and st[2] == starttime and st[0] != "Z"


def _kill(pid, starttime, sig):
    if _alive(pid, starttime):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _wait_gone(procs, timeout):
    """Waits until none of [(pid, starttime)] is alive; returns the survivors."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in procs if _alive(*p)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def _stop_popen(proc, timeout):
    """SIGTERM, wait up to timeout, then SIGKILL. Returns True if SIGKILL was
    needed."""
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
        return False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        return True


# Safety net: if the test run dies without its teardowns, stop what we started.
_RUNNING = set()


@atexit.register
def _stop_leftovers():
    for server in list(_RUNNING):
        try:
            server.stop()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
