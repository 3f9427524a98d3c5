# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""Load generators: ab (ab, parse_ab, AbBackground for a run in the
background), h2load (h2c with prior knowledge) and LoadLoop, which repeats
any bounded run in a thread while a test restarts or stops servers."""

import re
import subprocess
import tempfile
import threading
import time
from collections import namedtuple

from .env import AB, H2LOAD
from .procs import _RUNNING, _stop_popen

# --------------------------------------------------------------------------
# ab

AbResult = namedtuple("AbResult", "complete failed non2xx returncode output")


def _ab_cmd(url, n, c, keepalive, extra_args):
    cmd = [AB, "-q", "-r", "-n", str(n), "-c", str(c)]
    if keepalive:
        cmd.append("-k")
    return cmd + list(extra_args) + [url]


def parse_ab(output, returncode=0):
    def field(name):
        m = re.search(r"^%s:\s+(\d+)" % re.escape(name), output, re.M)
        return int(m.group(1)) if m else 0
    if returncode != 0 and "Complete requests:" not in output:
        raise RuntimeError("ab failed (%d):\n%s" % (returncode, output))
    # "Non-2xx responses" is only printed when there were any.
    return AbResult(field("Complete requests"), field("Failed requests"),
                    field("Non-2xx responses"), returncode, output)


def ab(url, n, c, keepalive=True, timeout=120.0, extra_args=()):
    """Runs ab to completion; returns AbResult(complete, failed, non2xx, ...)."""
    p = subprocess.run(_ab_cmd(url, n, c, keepalive, extra_args),
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=timeout)
    return parse_ab(p.stdout.decode(errors="replace"), p.returncode)


class AbBackground:
    """ab running in the background, e.g. across a graceful restart.

    Use keepalive=False there: at a graceful restart the worker and prefork
    MPMs close idle keep-alive connections, which ab counts as a few failed
    requests (event hands them over without loss).

        run = AbBackground(h.url, 5000, 8)
        h.graceful()
        res = run.wait()
    """

    def __init__(self, url, n, c, keepalive=True, extra_args=()):
        self._out = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(_ab_cmd(url, n, c, keepalive, extra_args),
                                     stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=subprocess.STDOUT)
        _RUNNING.add(self)

    def running(self):
        return self.proc.poll() is None

    def wait(self, timeout=120.0):
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        finally:
            _RUNNING.discard(self)
        self._out.seek(0)
        output = self._out.read().decode(errors="replace")
        self._out.close()
        return parse_ab(output, self.proc.returncode)

    def stop(self):
        _stop_popen(self.proc, 5)
        _RUNNING.discard(self)


# --------------------------------------------------------------------------
# h2load

H2loadResult = namedtuple(
    "H2loadResult",
    "total started done succeeded failed errored timeout s2xx s3xx s4xx s5xx "
    "returncode output")


def _h2load_cmd(url, n, c, m, extra_args):
    return [H2LOAD, "-n", str(n), "-c", str(c), "-m", str(m)] + list(extra_args) + [url]


def parse_h2load(output, returncode=0):
    """The summary of h2load: its "requests:" and "status codes:" lines."""
    req = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                    r"(\d+) failed, (\d+) errored, (\d+) timeout", output, re.M)
    codes = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx",
                      output, re.M)
    if not req or not codes:
        raise RuntimeError("h2load failed (%d), no summary:\n%s" % (returncode, output))
    return H2loadResult(*[int(x) for x in req.groups() + codes.groups()],
                        returncode=returncode, output=output)


def h2load(url, n, c=1, m=1, timeout=120.0, extra_args=()):
    """Runs h2load to completion (n requests over c connections, m streams
    at a time per connection; h2c with prior knowledge for http:// URLs).
    Returns H2loadResult(total, ..., succeeded, failed, ..., s2xx, ...)."""
    p = subprocess.run(_h2load_cmd(url, n, c, m, extra_args),
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=timeout)
    return parse_h2load(p.stdout.decode(errors="replace"), p.returncode)


# --------------------------------------------------------------------------
# Repeated runs

class LoadLoop:
    """Runs run_once() (one bounded load-generator run, e.g. a lambda around
    ab() or h2load()) again and again in a thread until stop() or __exit__,
    at most max_runs times and for at most max_s seconds; results holds
    what each run returned, errors what any run raised.

        with LoadLoop(lambda: ab(url, 1000, 8, keepalive=False, timeout=60)) as load:
            h.restart()
        total = sum(r.complete for r in load.results)
    """

    def __init__(self, run_once, max_s=120.0, max_runs=1000):
        self.run_once = run_once
        self.max_s = max_s
        self.max_runs = max_runs
        self.results = []
        self.errors = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        end = time.monotonic() + self.max_s
        for _ in range(self.max_runs):
            if self._stop.is_set() or time.monotonic() >= end:
                return
            try:
                self.results.append(self.run_once())
            except Exception as e:  # noqa: BLE001 - reported through errors
                self.errors.append(e)
                self._stop.wait(0.2)

    def start(self):
        self._thread.start()
        return self

    def stop(self, timeout=None):
        """Lets the current run finish (bounded by its own timeout)."""
        self._stop.set()
        self._thread.join(timeout if timeout is not None else self.max_s + 60)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
