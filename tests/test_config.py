# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""Every directive checks its argument when the configuration is read: a bad
value fails `apache2 -t` with a message naming the directive and the value,
and good values pass."""

import os
import shutil

import pytest

import harness

URL = "http://127.0.0.1:9/write?db=x"

# (directive lines, words the error message must contain)
BAD = [
    ("InfluxMetricsURL ftp://127.0.0.1/write", ["InfluxMetricsURL", "ftp://127.0.0.1/write"]),
    ("InfluxMetricsURL http:///write?db=x", ["InfluxMetricsURL", "no host"]),
    ("InfluxMetricsURL 127.0.0.1:8086/write", ["InfluxMetricsURL", "http://"]),
    ('InfluxMetricsURL "http://127.0.0.1:8086/write?db=x&precision=ms"',
     ["InfluxMetricsURL", "precision=ns"]),
    ("InfluxMetricsURL http://u:hunter2@127.0.0.1:8086/write#frag",
     ["InfluxMetricsURL", "fragment"]),
    ("InfluxMetricsFlushInterval 5m", ["InfluxMetricsFlushInterval", "5m"]),
    ("InfluxMetricsFlushInterval fast", ["InfluxMetricsFlushInterval", "fast"]),
    ("InfluxMetricsFlushInterval 0ms", ["InfluxMetricsFlushInterval", "0ms"]),
    ("InfluxMetricsFlushInterval 2h", ["InfluxMetricsFlushInterval", "2h"]),
    ("InfluxMetricsBatchSize 0", ["InfluxMetricsBatchSize", "'0'"]),
    ("InfluxMetricsBatchSize 10k", ["InfluxMetricsBatchSize", "10k"]),
    ("InfluxMetricsBatchSize -5", ["InfluxMetricsBatchSize", "-5"]),
    ("InfluxMetricsBufferSize 8", ["InfluxMetricsBufferSize", "'8'"]),
    ("InfluxMetricsBufferSize 99999999999", ["InfluxMetricsBufferSize", "99999999999"]),
    ("InfluxMetricsTimeout -1s", ["InfluxMetricsTimeout", "-1s"]),
    ("InfluxMetricsTimeout 1ms", ["InfluxMetricsTimeout", "1ms"]),
    ("InfluxMetricsGzip maybe", ["InfluxMetricsGzip"]),
    ("InfluxMetrics sometimes", ["InfluxMetrics"]),
    ("InfluxMetricsTag host web1", ["InfluxMetricsTag", "host"]),
    ("InfluxMetricsTag status x", ["InfluxMetricsTag", "status"]),
    # httpd itself drops an empty quoted argument: "takes two arguments".
    ('InfluxMetricsTag env ""', ["InfluxMetricsTag", "two arguments"]),
    ("InfluxMetricsTag env a\nInfluxMetricsTag env b", ["InfluxMetricsTag", "env", "twice"]),
    ("InfluxMetricsTag onlykey", ["InfluxMetricsTag"]),
    ("InfluxMetricsMeasurement _internal", ["InfluxMetricsMeasurement", "_internal"]),
    ('InfluxMetricsMeasurement "#requests"', ["InfluxMetricsMeasurement", "#requests"]),
    ('InfluxMetricsMeasurement "a\\\\b"', ["InfluxMetricsMeasurement", "backslash"]),
    ("InfluxMetricsTag k " + "v" * 1100, ["InfluxMetricsTag", "too long"]),
    ("InfluxMetricsToken file:/nonexistent/imx.token",
     ["InfluxMetricsToken", "/nonexistent/imx.token"]),
    ("InfluxMetricsToken env:IMX_TEST_NO_SUCH_VARIABLE",
     ["InfluxMetricsToken", "IMX_TEST_NO_SUCH_VARIABLE"]),
    ('InfluxMetricsRoute ""', ["InfluxMetricsRoute"]),
    ("<VirtualHost 127.0.0.1:1>\nInfluxMetricsURL %s\n</VirtualHost>" % URL,
     ["InfluxMetricsURL", "VirtualHost"]),
    ("<VirtualHost 127.0.0.1:1>\nInfluxMetricsBatchSize 10\n</VirtualHost>",
     ["InfluxMetricsBatchSize", "VirtualHost"]),
    ("<Location /x>\nInfluxMetricsTag a b\n</Location>", ["InfluxMetricsTag"]),
    ("InfluxMetricsTag status_class x", ["InfluxMetricsTag", "status_class"]),
    ("InfluxMetricsMode fast", ["InfluxMetricsMode", "fast"]),
    ("InfluxMetricsSummarySeries 0", ["InfluxMetricsSummarySeries", "'0'"]),
    ("InfluxMetricsSample 0", ["InfluxMetricsSample", "'0'"]),
    ("InfluxMetricsSample 1.5", ["InfluxMetricsSample", "1.5"]),
    ("InfluxMetricsSample some", ["InfluxMetricsSample", "some"]),
    ("InfluxMetricsKeepSlow slow", ["InfluxMetricsKeepSlow", "slow"]),
    ("InfluxMetricsKeepErrors maybe", ["InfluxMetricsKeepErrors"]),
    ("InfluxMetricsRetryBuffer 10X", ["InfluxMetricsRetryBuffer", "10X"]),
    ("InfluxMetricsRetryBuffer 100G", ["InfluxMetricsRetryBuffer", "100G"]),
    ("InfluxMetricsRetryMaxTime forever", ["InfluxMetricsRetryMaxTime", "forever"]),
    ("InfluxMetricsTLSVerify sometimes", ["InfluxMetricsTLSVerify"]),
    ("InfluxMetricsTLSCACertificateFile /nonexistent/ca.pem",
     ["InfluxMetricsTLSCACertificateFile", "/nonexistent/ca.pem"]),
    ("InfluxMetricsTagFrom cookie session", ["InfluxMetricsTagFrom", "cookie"]),
    ("InfluxMetricsTagFrom header", ["InfluxMetricsTagFrom", "NAME"]),
    ("InfluxMetricsTagFrom header X-A status", ["InfluxMetricsTagFrom", "status"]),
    ("InfluxMetricsTagFrom note a b c", ["InfluxMetricsTagFrom", "NAME"]),
    ("InfluxMetricsMaxTagValues 0", ["InfluxMetricsMaxTagValues", "'0'"]),
    ("InfluxMetricsTagFrom header X-A a\nInfluxMetricsTagFrom note b",
     ["InfluxMetricsTagFrom", "only one per context"]),
    ("InfluxMetricsTag team web\nInfluxMetricsTagFrom header X-Team team",
     ["InfluxMetricsTagFrom", "team", "static"]),
    ("<Location /a>\nInfluxMetricsTagFrom header X-Team team\n</Location>\n"
     "InfluxMetricsTag team web", ["InfluxMetricsTag", "team", "InfluxMetricsTagFrom"]),
    ("<VirtualHost 127.0.0.1:1>\nInfluxMetricsMode both\n</VirtualHost>",
     ["InfluxMetricsMode", "VirtualHost"]),
    ("InfluxMetricsFields ttfb latency", ["InfluxMetricsFields", "latency"]),
    ("<Location /x>\nInfluxMetricsFields ttfb\n</Location>", ["InfluxMetricsFields"]),
    ("InfluxMetricsRequestIDHeader X:Id", ["InfluxMetricsRequestIDHeader", "X:Id"]),
    ("InfluxMetricsSLO fast", ["InfluxMetricsSLO", "fast"]),
    ("InfluxMetricsSLO 0ms", ["InfluxMetricsSLO", "0ms"]),
    ("InfluxMetricsTag upstream x", ["InfluxMetricsTag", "upstream"]),
    ('InfluxMetricsURL "http://127.0.0.1:8181/api/v3/write_lp?db=x&precision=ns"',
     ["InfluxMetricsURL", "precision=nanosecond"]),
]

GOOD = [
    "InfluxMetricsFlushInterval 250ms\nInfluxMetricsTimeout 2\nInfluxMetricsBatchSize 1",
    "InfluxMetricsBufferSize 16\nInfluxMetricsGzip On",
    'InfluxMetricsTag datacenter "eu west"\nInfluxMetricsMeasurement "http requests"',
    "InfluxMetricsToken literal-token",
    "<Location /x>\nInfluxMetricsRoute checkout\nInfluxMetrics Off\n</Location>",
    "<VirtualHost 127.0.0.1:1>\nInfluxMetricsTag team web\nInfluxMetrics Off\n</VirtualHost>",
    "InfluxMetricsMode both\nInfluxMetricsSummarySeries 128\nInfluxMetricsRetryBuffer 16M\n"
    "InfluxMetricsRetryMaxTime 0\nInfluxMetricsTLSVerify Off",
    "InfluxMetricsURL http://127.0.0.1:1/write?db=a http://127.0.0.1:2/write?db=a",
    "<Location /a>\nInfluxMetricsSample 0.25\nInfluxMetricsKeepSlow 500ms\n"
    "InfluxMetricsKeepErrors On\nInfluxMetricsTagFrom note app-route route_name\n</Location>",
    "InfluxMetricsMaxTagValues 50\nInfluxMetricsTagFrom header X-Tenant",
    "InfluxMetricsFields ttfb bytes_received request_id\nInfluxMetricsFields protocol tls "
    "upstream\nInfluxMetricsRequestIDHeader X-Request-ID\nInfluxMetricsSLO 300ms\n"
    "<VirtualHost 127.0.0.1:1>\nInfluxMetricsFields none\n</VirtualHost>\n"
    "<Location /a>\nInfluxMetricsSLO 2s\n</Location>\n<Location /b>\nInfluxMetricsSLO none\n"
    "</Location>",
    "InfluxMetricsURL http://127.0.0.1:8181/api/v3/write_lp?db=x&precision=nanosecond",
]


def configtest(lines, url=URL):
    h = harness.Httpd(mpm="event",
                      extra=("InfluxMetricsURL %s\n" % url if url else "") + lines)
    try:
        h.write_config()
        return h.configtest()
    finally:
        h.cleanup()


@pytest.mark.parametrize("lines,words", BAD, ids=[b[0].split("\n")[0][:50] for b in BAD])
def test_bad_value_fails_configtest(module_built, lines, words):
    rc, out = configtest(lines)
    assert rc != 0, out
    for w in words:
        assert w in out, (w, out)
    # Secrets given in a bad URL are not echoed back.
    assert "hunter2" not in out


@pytest.mark.parametrize("lines", GOOD, ids=[g.split("\n")[0][:50] for g in GOOD])
def test_good_values_pass(module_built, lines):
    rc, out = configtest(lines)
    assert rc == 0, out
    assert "Syntax OK" in out


def test_token_sources(module_built, monkeypatch):
    d = harness.make_tmpdir("imx-tok")
    try:
        path = os.path.join(d, "tok")
        with open(path, "w") as f:
            f.write("  file-token-value \n")
        assert configtest("InfluxMetricsToken file:%s" % path)[0] == 0
        with open(path, "w") as f:
            f.write("\n")
        rc, out = configtest("InfluxMetricsToken file:%s" % path)
        assert rc != 0 and "empty" in out
        with open(path, "w") as f:
            f.write("two\nlines\n")
        rc, out = configtest("InfluxMetricsToken file:%s" % path)
        assert rc != 0 and "control character" in out and "lines" not in out
        monkeypatch.setenv("IMX_TEST_TOKEN", "from-env")
        assert configtest("InfluxMetricsToken env:IMX_TEST_TOKEN")[0] == 0
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_module_without_url_is_inert(module_built, httpd_factory):
    """Loaded but not pointed anywhere: serves normally, records nothing,
    logs nothing."""
    h = httpd_factory(mpm="event")
    assert harness.http_request(h.url + "small.txt")[0] == 200
    h.stop()
    assert "IMX" not in h.error_log_text()


# A notice or warning when the batch size is cut down to the buffer size; any
# level is accepted, even error.
@pytest.mark.allowed_errors(r"InfluxMetricsBatchSize")
def test_batch_size_above_buffer_size_is_refused_or_clamped(module_built, influx, influx_db,
                                                            httpd_factory):
    """A batch can never fill from a ring that holds fewer records, so an
    InfluxMetricsBatchSize above InfluxMetricsBufferSize is either an error
    (configtest fails naming InfluxMetricsBatchSize) or is clamped to the
    buffer size with a line in the error log naming InfluxMetricsBatchSize.
    Silently accepting it is neither."""
    h = httpd_factory(start=False, mpm="event", extra=str(harness.Imx(
        influx.write_url(influx_db), batch_size=5000, buffer_size=1024)))
    rc, out = h.configtest()
    if rc != 0:
        assert "InfluxMetricsBatchSize" in out, out
        return
    h.start()
    res = harness.ab(h.url + "small.txt", 500, 4)
    assert res.complete == 500
    h.stop()
    log = h.error_log_text()
    assert "InfluxMetricsBatchSize" in log, (
        "InfluxMetricsBatchSize 5000 with InfluxMetricsBufferSize 1024 passed "
        "configtest and started without a word about it:\n%s" % log)
    # Clamped, it still works.
    assert influx.count(influx_db, "apache_request") == h.access_log_count() == 500


def test_tag_key_twice_after_the_merge_is_refused(module_built, influx, influx_db,
                                                  httpd_factory):
    """A static tag of the main server and an InfluxMetricsTagFrom of a
    virtual host with the same key are each valid where they stand, but the
    merged host would write the key twice, which InfluxDB refuses ("duplicate
    tags"): configtest fails, naming the key and the host, wherever the two
    lines are. With distinct keys, 10,000 requests over two hosts are all
    stored."""
    h = httpd_factory(start=False, mpm="event")
    url = influx.write_url(influx_db)

    def vhost(name, body):
        return ("<VirtualHost %s:%d>\n    ServerName %s\n%s</VirtualHost>\n"
                % (harness.HOST, h.port, name, body))
    bad = [
        # the tag first, the vhost's TagFrom after it
        str(harness.Imx(url, tags={"team": "platform"}))
        + vhost("a.example", "    InfluxMetricsTagFrom header X-Team team\n"),
        # the vhost first, the main server's tag after it
        vhost("a.example", "    InfluxMetricsTagFrom header X-Team team\n")
        + str(harness.Imx(url, tags={"team": "platform"})),
        # a TagFrom of the main server against a vhost's static tag
        str(harness.Imx(url, extra="<Location />\nInfluxMetricsTagFrom header X-Team team\n"
                                   "</Location>\n"))
        + vhost("a.example", "    InfluxMetricsTag team platform\n"),
    ]
    for i, extra in enumerate(bad):
        h.extra = extra
        h.write_config()
        rc, out = h.configtest()
        # Where the directive itself can tell, it says so on its line;
        # only the check after the merge sees the first case.
        assert rc != 0 and "'team'" in out, out
        assert i > 0 or ("IMX0023" in out and "a.example" in out), out

    h.extra = (str(harness.Imx(url, tags={"team": "platform"}))
               + vhost("a.example", "    InfluxMetricsTagFrom header X-Team squad\n")
               + vhost("b.example", ""))
    h.write_config()
    assert h.configtest()[0] == 0
    h.start()
    for name in ("a.example", "b.example"):
        res = harness.ab(h.url + "small.txt", 5000, 8, extra_args=(
            "-H", "Host: %s" % name, "-H", "X-Team: blue"))
        assert res.complete == 5000
    h.stop()
    assert influx.count(influx_db, "apache_request") == h.access_log_count() == 10000
