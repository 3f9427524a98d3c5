#!/bin/sh
# Installs, from Debian's packages, everything the build, the tests and the demo need.
# Idempotent; safe to run again. Needs root (or sudo).
set -eu
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
PKGS="build-essential apache2 apache2-dev apache2-utils libcurl4-openssl-dev zlib1g-dev \
      influxdb victoria-metrics wrk curl python3 python3-pytest libapache2-mod-wsgi-py3 \
      clang libclang-rt-14-dev"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # The packaged services must not start on their default ports: tests run private instances.
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    $SUDO apt-get install -y -qq --no-install-recommends $missing
    $SUDO rm -f /usr/sbin/policy-rc.d
fi
