#!/bin/sh
# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
#
# The demo, on a fresh Debian 12 machine (as root, or as a user with sudo):
# installs the packages (scripts/install-deps.sh), builds the module (make),
# then runs scripts/demo.py: a private InfluxDB 1.x and a private Apache
# (event MPM) with the module on 127.0.0.1, real traffic from ab, a graceful
# stop, and a report of requests served vs. points sent vs. points stored,
# with p50/p95/p99 computed by InfluxDB from the raw points, drawn over time
# into demo-run/demo.png (gnuplot).
#
#   ./scripts/demo.sh [--requests N] [--concurrency C] [--keep] [--png FILE]
#
# Exit status 0 when every check passed. Everything started is stopped by PID.
set -eu
cd "$(dirname "$0")/.."
for a in "$@"; do
    case "$a" in
        -h|--help)
            if [ -x /usr/bin/python3 ]; then
                exec /usr/bin/python3 scripts/demo.py --help
            fi
            sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
            exit 0 ;;
    esac
done
./scripts/install-deps.sh
make
# The system Python (Debian's python3 package): the demo needs the standard
# library only, and a python3 found first on PATH may be another one.
exec /usr/bin/python3 scripts/demo.py "$@"
