# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""End to end: a real httpd with the module, a real InfluxDB 1.x and a real
VictoriaMetrics. Every request served is stored exactly once.

Ground truth is httpd's own access log (one line per request, written by
mod_log_config in the same log_transaction phase the module records in); the
readiness probes of the harness are excluded from both, by <Location>.
"""

import os
import re
import time

import pytest

import harness
from harness import Imx, ab, AbBackground, wait_until

EXIT_RE = re.compile(
    r"IMX0100: flusher exit: recorded=(\d+) sent=(\d+) rejected=(\d+) "
    r"dropped_full=(\d+) dropped_exit=(\d+) retries=(\d+)")


def exit_totals(h):
    """Sums of the counters each child logs when its flusher exits."""
    keys = ("recorded", "sent", "rejected", "dropped_full", "dropped_exit", "retries")
    tot = dict.fromkeys(keys, 0)
    n = 0
    for m in EXIT_RE.finditer(h.error_log_text()):
        n += 1
        for k, v in zip(keys, m.groups()):
            tot[k] += int(v)
    tot["children"] = n
    return tot


# Small enough that children recycle several times under 20,000 requests.
MPM_CONF = harness.mpm_profile(
    threaded={"StartServers": 2, "ServerLimit": 16, "ThreadsPerChild": 10,
              "MaxRequestWorkers": 60, "MinSpareThreads": 10, "MaxSpareThreads": 60,
              "MaxConnectionsPerChild": 1500},
    prefork={"StartServers": 5, "MinSpareServers": 5, "MaxSpareServers": 30,
             "ServerLimit": 64, "MaxRequestWorkers": 64,
             "MaxConnectionsPerChild": 400})

REQUESTS = 20000
CONCURRENCY = 20


# During a graceful restart old and new children coexist; prefork may then
# say it reached MaxRequestWorkers, which is about capacity, not the module.
@pytest.mark.allowed_errors(r"AH00161: server reached MaxRequestWorkers")
@pytest.mark.parametrize("mpm", ["event", "worker", "prefork"])
def test_exact_delivery_with_graceful_restart_and_recycling(
        module_built, influx, influx_db, httpd_factory, mpm):
    h = httpd_factory(mpm=mpm, mpm_conf=MPM_CONF[mpm],
                      extra=str(Imx(influx.write_url(influx_db), batch_size=1000)))
    gen1 = set(h.child_pids())
    # No keep-alive: every request is a connection, so MaxConnectionsPerChild
    # recycles children while the load runs.
    run = AbBackground(h.url + "small.txt", REQUESTS, CONCURRENCY, keepalive=False)
    wait_until(lambda: h.access_log_count() >= REQUESTS // 2, 120)
    h.graceful()
    assert set(h.child_pids()) - gen1, "graceful restart made no new children"
    run.wait(timeout=300)
    h.stop()

    served = h.access_log_count()
    stored = influx.count(influx_db, "apache_request")
    tot = exit_totals(h)
    # ab may count a connection cut by the restart as failed; what counts is
    # what httpd served, and that it all arrived, once.
    assert served >= REQUESTS - 10
    assert stored == served, (stored, served, tot)
    assert tot["sent"] == served and tot["recorded"] == served, tot
    assert tot["dropped_full"] == tot["dropped_exit"] == tot["rejected"] == 0, tot
    # Children did recycle (and each flushed on its way out).
    assert tot["children"] > len(gen1) + 2, tot


def test_exact_count_victoriametrics_v2_with_token(module_built, vm, httpd_factory):
    # In the server's own directory, which goes with it.
    h = httpd_factory(start=False, mpm="event")
    token_file = os.path.join(h.dir, "influx.token")
    with open(token_file, "w") as f:
        f.write("vm-secret-token-123\n")
    h.extra = str(Imx(vm.write_url(v2=True, db="exact"), token="file:" + token_file,
                      measurement="vm_exact", gzip=True))
    h.start()
    res = ab(h.url + "small.txt", REQUESTS, CONCURRENCY, keepalive=True)
    assert res.complete == REQUESTS and res.failed == 0
    h.stop()
    served = h.access_log_count()
    assert served == REQUESTS
    assert vm.count_samples("vm_exact_duration_us") == served
    assert vm.count_samples("vm_exact_bytes_sent") == served
    assert exit_totals(h)["sent"] == served
    assert "vm-secret-token-123" not in h.error_log_text()


@pytest.mark.allowed_errors(r"AH00135: Invalid method")
def test_point_contents(module_built, influx, influx_db, httpd_factory):
    h = httpd_factory(mpm="worker", extra=str(Imx(influx.write_url(influx_db))) + """
<Location /sub>
    InfluxMetricsRoute "sub pages"
</Location>
<Location /sub/quiet>
    InfluxMetrics Off
</Location>
""")
    t0 = time.time_ns()
    assert harness.http_request(h.url + "big.bin")[0] == 200
    assert harness.http_request(h.url + "nope")[0] == 404
    assert harness.http_request(h.url + "small.txt", method="HEAD")[0] == 200
    assert harness.http_request(h.url + "sub/page.html", data=b"x=1")[0] in (200, 405)
    assert harness.http_request(h.url + "sub/quiet/x")[0] == 404
    assert harness.http_request(h.url + "small.txt", method="BREW")[0] in (200, 400, 405, 501)
    t1 = time.time_ns()
    h.stop()
    rows = influx.select('SELECT * FROM "apache_request"', influx_db)
    by = {(r["method"], r.get("route")): r for r in rows}
    assert len(rows) == 5, rows       # /sub/quiet is not recorded
    # bytes_sent is %B, status is %>s: compare with httpd's own log.
    logged = {(e.method if e.method in ("GET", "HEAD", "POST") else "OTHER", e.status):
              e.bytes for e in h.access_log_entries()}
    for r in rows:
        assert r["bytes_sent"] == logged[(r["method"], int(r["status"]))], r
    gets = [r for r in rows if r["method"] == "GET"]
    assert sorted(r["status"] for r in gets) == ["200", "404"]
    big = [r for r in gets if r["status"] == "200"][0]
    assert big["bytes_sent"] == 65536
    assert [r for r in gets if r["status"] == "404"][0]["bytes_sent"] > 0
    head = by[("HEAD", None)]
    assert head["bytes_sent"] == 0 and head["status"] == "200"
    post = by[("POST", "sub pages")]
    assert post["vhost"] == "localhost"
    assert by[("OTHER", None)]
    for r in rows:
        assert t0 - 10**9 <= r["time"] <= t1, r
        assert 0 < r["duration_us"] < 10**7, r
        assert r["host"] and r["vhost"] == "localhost"


def test_tags_round_trip(module_built, influx, influx_db, httpd_factory):
    """Static tags with spaces, commas, quotes and equals signs, and a vhost
    name, read back from InfluxDB exactly as configured."""
    dc = 'eu west, "rack 7" = a'
    team = 'web, front=end "x"'
    h = httpd_factory(mpm="event", start=False)
    h.extra = str(Imx(
        influx.write_url(influx_db), measurement="req uests,x",
        tags=[("datacenter", dc), ("tier name", "a=b,c d")])) + """
<VirtualHost {host}:{port}>
    ServerName shop.example
    InfluxMetricsTag team "{team}"
    InfluxMetricsTag datacenter override
</VirtualHost>
<VirtualHost {host}:{port}>
    ServerName localhost
</VirtualHost>
""".format(host=harness.HOST, port=h.port, team=team.replace('"', '\\"'))
    h.start()
    assert harness.http_request(h.url + "small.txt", headers={"Host": "shop.example"})[0] == 200
    assert harness.http_request(h.url + "small.txt", headers={"Host": "localhost"})[0] == 200
    h.stop()
    rows = influx.select('SELECT * FROM "req uests,x"', influx_db)
    assert len(rows) == 2, rows
    shop = [r for r in rows if r["vhost"] == "shop.example"]
    main = [r for r in rows if r["vhost"] == "localhost"]
    assert len(shop) == 1 and len(main) == 1, rows
    assert shop[0]["team"] == team
    assert shop[0]["datacenter"] == "override"
    assert shop[0]["tier name"] == "a=b,c d"
    assert main[0]["datacenter"] == dc
    assert main[0]["tier name"] == "a=b,c d"
    assert main[0].get("team") is None


def test_vhosts_without_module_directives_keep_their_names(module_built, influx, influx_db,
                                                          httpd_factory):
    """Virtual hosts with no directive of the module at all (the usual case:
    the module is configured once, globally): each request point carries the
    ServerName of the virtual host that served it, and so does each summary
    (mode both)."""
    names = ("one.example", "two.example", "three.example")
    h = httpd_factory(mpm="event", start=False)
    h.extra = str(Imx(influx.write_url(influx_db), extra="InfluxMetricsMode both\n")) + "".join(
        "<VirtualHost %s:%d>\n    ServerName %s\n</VirtualHost>\n" % (harness.HOST, h.port, n)
        for n in names)
    h.start()
    want = {}
    for i, name in enumerate(names):
        want[name] = i + 1
        for _ in range(i + 1):
            assert harness.http_request(h.url + "small.txt", headers={"Host": name})[0] == 200
    h.stop()

    def per_vhost(q):
        res = influx.query(q, db=influx_db)
        return {s["tags"]["vhost"]: int(s["values"][0][1])
                for s in res["results"][0].get("series") or []}
    assert per_vhost('SELECT count("duration_us") FROM "apache_request" GROUP BY "vhost"') == want
    assert per_vhost('SELECT sum("count") FROM "apache_summary" GROUP BY "vhost"') == want


def test_basic_auth_in_url(module_built, httpd_factory):
    """user:password in the URL authenticates against InfluxDB 1.x, and the
    password never reaches the error log."""
    with harness.Influx(auth=True, user="writer", password="pa55-w0rd") as ix:
        ix.create_db("authdb")
        url = ix.write_url("authdb").replace("http://", "http://writer:pa55-w0rd@")
        h = httpd_factory(mpm="event", extra=str(Imx(url)))
        res = ab(h.url + "small.txt", 500, 5)
        assert res.complete == 500
        h.stop()
        assert ix.count("authdb", "apache_request") == h.access_log_count() == 500
        assert "pa55-w0rd" not in h.error_log_text()


@pytest.mark.allowed_errors(r"IMX0100: will retry a batch", r"IMX0100: backend rejected")
def test_wrong_password_is_logged_without_secret(module_built, httpd_factory):
    with harness.Influx(auth=True, user="writer", password="right") as ix:
        ix.create_db("authdb")
        url = ix.write_url("authdb").replace("http://", "http://writer:wrong-s3cret@")
        h = httpd_factory(mpm="event", extra=str(Imx(url)))
        assert harness.http_request(h.url + "small.txt")[0] == 200
        wait_until(lambda: "HTTP 401" in h.error_log_text(), 15)
        h.stop()
        log = h.error_log_text()
        assert "wrong-s3cret" not in log and "writer:" not in log
        tot = exit_totals(h)
        assert tot["recorded"] == 1 and tot["sent"] == 0 and tot["dropped_exit"] == 1
