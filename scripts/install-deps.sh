#!/bin/sh
# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
#
# Installs, from Debian's packages, everything the build, the Debian package
# (make deb), the tests (gdb reads the cores of crashed children) and the demo
# need.
# Idempotent: installs only what is missing. Needs root (or sudo).
set -eu
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
PKGS="build-essential apache2 apache2-dev apache2-utils libcurl4-openssl-dev zlib1g-dev \
      debhelper dpkg-dev lintian \
      influxdb victoria-metrics wrk nghttp2-client curl python3 python3-pytest libapache2-mod-wsgi-py3 libapache2-mod-php \
      clang libclang-rt-14-dev valgrind gdb gnuplot-nox openssl \
      prometheus python3-prometheus-client"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -n "$missing" ] || exit 0
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# The packaged apache2, influxdb and victoria-metrics services must not start on
# their default ports: the tests and the demo run private instances on loopback.
# A policy-rc.d that exits 101 tells invoke-rc.d not to start them; one that was
# already there is left as it was.
own_policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    own_policy=1
fi
trap '[ -z "$own_policy" ] || $SUDO rm -f /usr/sbin/policy-rc.d' EXIT
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
