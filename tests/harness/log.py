# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""What a server leaves behind, and how the harness judges it: the access
log's format and entries, the error-log lines that fail a test
(BAD_PATTERNS, BAD_LEVELS) and those that do not (httpd's own races), which
crashed children httpd crashed itself (stock_crashes), and the cores those
children dump (_core_limit to let them, core_races to read them with gdb)."""

import os
import re
import resource
import shutil
import subprocess
from collections import namedtuple

from .env import APACHE2

# --------------------------------------------------------------------------
# The access log

ACCESS_LOG_FORMAT = "%h %>s %B %D %m %U"
AccessEntry = namedtuple("AccessEntry", "host status bytes duration_us method path")


def parse_access_log(text):
    """[AccessEntry] of the lines of an access log in ACCESS_LOG_FORMAT."""
    out = []
    for line in text.splitlines():
        f = line.split(" ", 5)
        if len(f) == 6:
            out.append(AccessEntry(f[0], int(f[1]),
                                   0 if f[2] == "-" else int(f[2]),
                                   int(f[3]), f[4], f[5]))
    return out


# --------------------------------------------------------------------------
# The error log

# Error-log lines that are bad whatever their level: crashes and forced kills.
# AH00045/AH00046/AH00047: a child did not exit on SIGTERM in time (e.g. a
# flusher thread that blocks shutdown) and had to be killed.
BAD_PATTERNS = [
    r"exit signal",                    # AH00052: child pid N exit signal Segmentation fault
    r"AH00060",                        # seg fault or similar nasty error detected
    r"AH0004[567]",                    # child did not exit, SIGTERM/SIGKILL sent
    r"AddressSanitizer|LeakSanitizer|ThreadSanitizer|UndefinedBehaviorSanitizer",
    r"runtime error:",                 # UBSan
    r"double free|free\(\): invalid|malloc\(\)|stack smashing|Aborted",
]
BAD_LEVELS = ("error", "crit", "alert", "emerg")
# httpd's event MPM, stopping a child (restart, stop) under keep-alive load,
# can log that it could not add a finished connection to its pollset, which
# is being torn down (EBADF). The request was served and logged; seen with
# and without this module, under CPU contention. Not a failure of the module.
EVENT_SHUTDOWN_RACES = [r"\(9\)Bad file descriptor: AH0309[23]: process_"]

# Lines tolerated from an httpd that does not load this module (see
# Httpd.check_error_log).
STOCK_HTTPD_CRASHES = [r"AH00052: child pid \d+ exit signal Segmentation fault"]
# A child's death by a signal (AH00051 when it may have dumped core), and
# the module's line from the start of a child (see Httpd.stock_crashes).
_CRASHED = re.compile(r"AH0005[12]: child pid (\d+) exit signal")
_STARTED = re.compile(r"\[pid (\d+):tid \d+\] IMX0019: ")

# httpd's own races, told by the crashing thread's frames in a core (gdb's
# "bt"); see docs/development.md.
STOCK_CORE_RACES = {
    # event, stopping a child ungracefully under load: the main thread reads
    # a worker's socket while the worker frees its connection.
    # (The faulting frame is #0, or follows httpd's handler, which re-raises
    # the signal to the process: any thread may then be "thread 1".)
    "event close_worker_sockets": r"(?:^#0|<signal handler called>\n#\d+) +0x[0-9a-f]+ in "
                                  r"apr_os_sock_get \(\) from \S*libapr[^\n]*\n"
                                  r"#\d+ +0x[0-9a-f]+ in .* from \S*mod_mpm_event\.so",
}
GLIBC_HEAP_ABORT = (r"^(corrupted |malloc\(\)|free\(\)|double free|malloc_consolidate"
                    r"|munmap_chunk|realloc\(\)|unaligned |invalid )")
# "[Tue Nov 25 11:44:19.123456 2026] [module:level] [pid ...] ..."
_LOG_LINE = re.compile(r"^\[[^\]]*\] \[(?:[^:\]]*:)?(\w+)\]")


def unexpected_lines(text, allowed):
    """The lines of error-log text that fail a test (see
    Httpd.check_error_log) unless one of the regexes `allowed` matches."""
    allow = [re.compile(r) for r in allowed]
    bad = [re.compile(r) for r in BAD_PATTERNS]
    out = []
    for line in text.splitlines():
        if not line.strip() or any(r.search(line) for r in allow):
            continue
        m = _LOG_LINE.match(line)
        level = m.group(1).lower() if m else None
        if (level in BAD_LEVELS or any(r.search(line) for r in bad)
                or (m is None and not line.startswith("AH"))):
            out.append(line)
    return out


def stock_crashes(text, cores=()):
    """PIDs of children that httpd itself crashed, by what can prove it
    (see docs/development.md), from the error-log text of a server that
    loads the module and the paths of its possible core files:
    - died of a signal without having logged IMX0019, which the module
      logs before any module's child_init runs: crashed before this
      module ran any code in it (prefork's stop handler frees pools
      inside the signal handler; a restart that reaches a child still
      being set up can corrupt its heap);
    - with cores, a core of that child whose crashing thread matches one
      of STOCK_CORE_RACES."""
    started = set(int(p) for p in _STARTED.findall(text))
    crashed = [int(p) for p in _CRASHED.findall(text)]
    out = [p for p in crashed if p not in started]
    if cores and len(out) < len(crashed):
        races = core_races(cores)
        out += [p for p in crashed if p in started and p in races]
    return out


def stock_crash_patterns(text, stock):
    """Regexes of the error-log lines about the children of
    stock_crashes(): their death, httpd's escalation while one took long
    to die (dumping core), and glibc's abort message, which names no
    process, only when every crash was such a child."""
    out = [r"AH000(5[12]: child pid|4[5-7]: child process) %d (exit signal|still did not)"
           % pid for pid in stock]
    if stock and len(stock) == len(_CRASHED.findall(text)):
        out.append(GLIBC_HEAP_ABORT)
    return out


# --------------------------------------------------------------------------
# Cores of crashed children

def _core_limit():
    resource.setrlimit(resource.RLIMIT_CORE,
                       (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    # Without the shared anonymous mappings (the module's rings and tables,
    # hundreds of MB of address space): a core is then written in a moment,
    # not in the seconds after which httpd escalates to SIGTERM.
    try:
        with open("/proc/self/coredump_filter", "w") as f:
            f.write("0x31")
    except OSError:
        pass


def core_races(paths):
    """{pid: race name} of the cores among paths whose faulting thread shows
    one of STOCK_CORE_RACES (gdb's backtraces)."""
    out = {}
    gdb = shutil.which("gdb")
    if not gdb:
        return out
    for path in paths:
        if not os.path.exists(path):
            continue
        try:
            bt = subprocess.run([gdb, "-batch", "-ex", "info inferiors",
                                 "-ex", "thread apply all bt 12", APACHE2, path],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, timeout=120).stdout.decode(
                                    errors="replace")
        except (OSError, subprocess.TimeoutExpired):
            continue
        pid = re.search(r"^\*? *1 +process (\d+)", bt, re.M)
        if not pid:
            continue
        frames = "\n".join(ln for ln in bt.splitlines() if ln.startswith("#"))
        for name, sig in STOCK_CORE_RACES.items():
            if re.search(sig, frames, re.M):
                out[int(pid.group(1))] = name
    return out
