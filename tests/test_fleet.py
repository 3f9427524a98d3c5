# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""Beyond one backend: several Apache servers post line protocol to
vmagent, which queues it (in memory, then on disk) and forwards it to
VictoriaMetrics with the remote-write protocol. No relay of our own: vmagent
is Debian's, from the victoria-metrics package.

    httpd a ─┐
             ├─> vmagent /write ──remote write──> VictoriaMetrics
    httpd b ─┘

Ground truth: each httpd's access log, against the samples of
apache_request_duration_us{server="a"|"b"} that VictoriaMetrics holds
(VictoriaMetrics names a line-protocol field measurement_field and keeps
every sample, duplicates included: see harness.VictoriaMetrics). Counts must
be exact: a sample lost or stored twice fails the test.
"""

import time

import pytest

from harness import Imx, LoadLoop, Vmagent, VictoriaMetrics, ab, flusher_exits, wait_until

METRIC = "apache_request_duration_us"
OUTAGE_S = 10.0


def stored(vm, server):
    return vm.count_samples('%s{server="%s"}' % (METRIC, server))


def load(h, n=300, c=3, pause=0.05):
    """A bounded, throttled ab loop against h (about 1,000-3,000 req/s here,
    leaving CPU to the backends on 2 cores)."""
    def once():
        res = ab(h.url + "small.txt", n, c, keepalive=True, timeout=30)
        time.sleep(pause)
        return res
    return LoadLoop(once, max_s=90, max_runs=2000)


def exit_sum(h, key):
    return sum(e.get(key, 0) for e in flusher_exits(h))


def failover_conf(agents, server):
    """InfluxMetricsURL with one URL per vmagent, in order (failover)."""
    return str(Imx(None, tags={"server": server}, extra="InfluxMetricsURL %s\n"
                   % " ".join(a.write_url() for a in agents)))


def wait_stored(vm, want, timeout=60.0):
    """Waits until VictoriaMetrics holds at least want[server] samples for
    every server, then gives it 1.5 s more (a duplicate would land then) and
    returns the final counts."""
    try:
        wait_until(lambda: all(stored(vm, s) >= n for s, n in want.items()),
                   timeout, 0.5)
    except TimeoutError:
        pass            # the assertion below reports the counts
    time.sleep(1.5)
    return {s: stored(vm, s) for s in want}


def test_two_servers_through_vmagent_survive_a_victoriametrics_outage(
        module_built, httpd_factory):
    """Two httpd servers post through one vmagent; VictoriaMetrics is stopped
    for 10 s under load and started again (same data directory, same port).
    vmagent takes every POST meanwhile (Apache sees no failure at all) and
    sends its queue on when VictoriaMetrics is back: the samples per server
    equal the requests each served."""
    with VictoriaMetrics() as vm, Vmagent(vm.remote_write_url) as agent:
        ha = httpd_factory(mpm="event", name="httpd-a",
                           extra=str(Imx(agent.write_url(), tags={"server": "a"})))
        hb = httpd_factory(mpm="prefork", name="httpd-b",
                           extra=str(Imx(agent.write_url(), tags={"server": "b"})))
        with load(ha) as la, load(hb) as lb:
            # The path works end to end before the outage.
            wait_until(lambda: stored(vm, "a") > 0 and stored(vm, "b") > 0, 20, 0.5,
                       "no samples through vmagent before the outage")
            vm.stop()
            t_down = time.monotonic()
            time.sleep(OUTAGE_S)
            # Requests went on, and vmagent kept what it could not forward.
            pending = agent.pending_bytes()
            failed = agent.metric_sum("vmagent_remotewrite_errors_total")
            vm.start_again()
            outage = time.monotonic() - t_down
            time.sleep(2)
        assert not la.errors and not lb.errors, (la.errors, lb.errors)
        assert pending > 0 and failed > 0, (pending, failed)
        assert outage < OUTAGE_S + 10, outage
        ha.stop()
        hb.stop()
        served = {"a": ha.access_log_count(), "b": hb.access_log_count()}
        assert served["a"] > 1000 and served["b"] > 1000, served
        got = wait_stored(vm, served)
        print("served %s, stored %s, outage %.1f s, vmagent held %d bytes"
              % (served, got, outage, pending))
        assert got == served, (got, served, agent.log_text()[-3000:])
        # Nothing for the module to retry: vmagent answered every POST.
        for h, s in ((ha, "a"), (hb, "b")):
            assert exit_sum(h, "sent") == exit_sum(h, "recorded") == served[s]
            assert exit_sum(h, "retries") == 0, flusher_exits(h)
        assert agent.pending_bytes() == 0


@pytest.mark.allowed_errors(r"IMX0100: will retry")
def test_failover_urls_to_two_vmagents(module_built, vm, httpd_factory):
    """The module's failover (several InfluxMetricsURL arguments) across
    vmagents. Server f: its first vmagent is never started. Server g: its
    first vmagent takes its POSTs, then is stopped under load. Both fail over
    to a second vmagent; at the end the samples per server equal the requests
    each served. Each vmagent labels what it forwards (via=...), so the
    stored samples also tell which way they came.

    A vmagent that is stopped keeps in its -remoteWrite.tmpDataPath whatever
    it has not forwarded yet and sends it when it starts again; g's first
    vmagent is started again at the end for that."""
    def agent(via):
        return Vmagent(vm.remote_write_url, extra_args=["-remoteWrite.label=via=" + via])
    never = agent("never")              # its port is free: connection refused
    try:
        with agent("backup") as backup, agent("first_g") as first_g:
            hf = httpd_factory(mpm="event", name="httpd-f",
                               extra=failover_conf([never, backup], "f"))
            hg = httpd_factory(mpm="worker", name="httpd-g",
                               extra=failover_conf([first_g, backup], "g"))
            with load(hf) as lf, load(hg) as lg:
                wait_until(lambda: first_g.samples_received() > 2000, 20, 0.2,
                           "g's first vmagent got nothing")
                first_g.stop()
                before = backup.samples_received()
                wait_until(lambda: backup.samples_received() > before + 4000, 20, 0.2,
                           "no failover to the second vmagent")
            assert not lf.errors and not lg.errors, (lf.errors, lg.errors)
            hf.stop()
            hg.stop()
            first_g.start_again()
            served = {"f": hf.access_log_count(), "g": hg.access_log_count()}
            got = wait_stored(vm, served)
            via = {(s, v): vm.count_samples('%s{server="%s",via="%s"}' % (METRIC, s, v))
                   for s in served for v in ("never", "backup", "first_g")}
            print("served %s, stored %s, by way of %s" % (served, got, via))
            assert got == served, (got, served, via)
            assert via[("f", "backup")] == served["f"], via
            assert via[("g", "first_g")] > 0 and via[("g", "backup")] > 0, via
            # The module counted every point as sent, each to one vmagent.
            for h, s in ((hf, "f"), (hg, "g")):
                assert exit_sum(h, "sent") == served[s], flusher_exits(h)
    finally:
        never.cleanup()
