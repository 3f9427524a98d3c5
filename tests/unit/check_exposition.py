#!/usr/bin/python3
# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""Checks an exposition read on stdin with the parsers of the Prometheus
Python client (Debian: python3-prometheus-client): OpenMetrics 1.0.0 with
--om (a strict parser: it rejects a missing "# EOF", an le that is not a
canonical number, buckets out of order or not cumulative, a _count that is
not the +Inf bucket, exemplars out of place), else the 0.0.4 text format
(promtool check metrics checks that one too).

On top of the parsers, for both: every histogram has its buckets in
ascending le order ending in +Inf, cumulative, _count equal to the +Inf
bucket; every counter sample ends in _total; no two samples share a name
and label set. With --om, exemplars must sit on bucket samples, within
their bucket.

    test_prom sample [om] | check_exposition.py [--om]
"""
import math
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text


def fail(msg):
    print("check_exposition: " + msg, file=sys.stderr)
    sys.exit(1)


def check_histogram(fam, om):
    groups = {}
    for s in fam.samples:
        labels = {k: v for k, v in s.labels.items() if k != "le"}
        groups.setdefault(tuple(sorted(labels.items())), []).append(s)
    for key, samples in groups.items():
        buckets = [s for s in samples if s.name.endswith("_bucket")]
        counts = [s for s in samples if s.name.endswith("_count")]
        if not buckets or len(counts) != 1:
            fail(f"{fam.name}{dict(key)}: {len(buckets)} buckets, {len(counts)} counts")
        les = [float(s.labels["le"]) for s in buckets]
        if les != sorted(les) or len(set(les)) != len(les) or les[-1] != math.inf:
            fail(f"{fam.name}{dict(key)}: le out of order {les}")
        values = [s.value for s in buckets]
        if values != sorted(values):
            fail(f"{fam.name}{dict(key)}: buckets not cumulative {values}")
        if counts[0].value != values[-1]:
            fail(f"{fam.name}{dict(key)}: _count {counts[0].value} != +Inf {values[-1]}")
        prev = -math.inf
        for s, le in zip(buckets, les):
            ex = getattr(s, "exemplar", None)
            if ex is not None:
                if not om:
                    fail("exemplar in 0.0.4")
                if not prev < ex.value <= le and not (prev == -math.inf and ex.value <= le):
                    fail(f"exemplar {ex.value} outside ({prev}, {le}]")
            prev = le
        for s in samples:
            if not s.name.endswith("_bucket") and getattr(s, "exemplar", None) is not None:
                fail(f"exemplar on {s.name}")


def main():
    om = "--om" in sys.argv[1:]
    text = sys.stdin.read()
    try:
        families = list((parse_om if om else parse_text)(text))
    except Exception as e:  # the parsers raise ValueError and others
        fail(f"parser: {e!r}")
    seen = set()
    nsamples = 0
    for fam in families:
        for s in fam.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            if key in seen:
                fail(f"duplicate sample {key}")
            seen.add(key)
            nsamples += 1
            if fam.type == "counter" and not s.name.endswith(("_total", "_created")):
                fail(f"counter sample {s.name}")
        if fam.type == "histogram":
            check_histogram(fam, om)
    if not families or not nsamples:
        fail("nothing parsed")
    print(f"check_exposition: {'OpenMetrics' if om else '0.0.4'}: {len(families)} families, "
          f"{nsamples} samples: ok")


if __name__ == "__main__":
    main()
