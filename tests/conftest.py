# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""pytest fixtures for the mod_influx_metrics integration tests.

    influx          session: one private influxd for the whole run
    influx_db       function: a freshly created, uniquely named database in it
    vm              module: a private VictoriaMetrics per test module
    httpd_factory   function: makes Httpd objects; stops them all at teardown
                    and fails the test on unexpected error-log lines
    module_built    session: skips when the module has not been built

Error-log lines a test expects can be declared with the marker
    @pytest.mark.allowed_errors(r"regex", ...)
or per server with  httpd.allowed_errors.append(r"regex").

Run with:  /usr/bin/python3 -m pytest tests -x -q
"""

import itertools
import os
import re
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "allowed_errors(*regexes): error-log lines (re.search) that the "
        "httpd_factory teardown check must not count as failures")


@pytest.fixture(scope="session")
def module_built():
    """Skips the test unless MODULE_SO exists (building is the Makefile's job)."""
    if not os.path.exists(harness.MODULE_SO):
        pytest.skip("module not built: %s is missing (run `make` at the repo root)"
                    % os.path.relpath(harness.MODULE_SO, harness.REPO_ROOT))
    return harness.MODULE_SO


@pytest.fixture(scope="session")
def influx():
    server = harness.Influx().start()
    yield server
    server.stop()
    server.cleanup()


_db_counter = itertools.count(1)


@pytest.fixture
def influx_db(influx, request):
    """Name of a new database, unique in the run (derived from the test name)."""
    base = re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)[:40]
    name = "t%d_%s" % (next(_db_counter), base)
    influx.create_db(name)
    return name


@pytest.fixture(scope="module")
def vm():
    server = harness.VictoriaMetrics().start()
    yield server
    server.stop()
    server.cleanup()


@pytest.fixture
def httpd_factory(request):
    """factory(start=True, **Httpd kwargs) -> Httpd.

    At teardown every server made is stopped (children included), then its
    error log is checked; a server with unexpected lines keeps its directory
    for inspection and the test errors out with those lines."""
    servers = []
    marker = request.node.get_closest_marker("allowed_errors")
    allowed = list(marker.args) if marker else []

    def factory(start=True, **kwargs):
        h = harness.Httpd(**kwargs)
        servers.append(h)
        if start:
            h.start()
        return h

    yield factory

    failures = []
    for h in servers:
        try:
            h.stop()
        except Exception as e:  # noqa: BLE001 - stop the others regardless
            h.problems.append("stop() raised %r" % e)
        bad = h.check_error_log(allowed)
        if bad:
            failures.append("%s (kept in %s):\n  %s"
                            % (h.name, h.dir, "\n  ".join(bad)))
        else:
            h.cleanup()
    if failures:
        pytest.fail("unexpected httpd error-log lines:\n" + "\n".join(failures),
                    pytrace=False)
