#!/bin/sh
# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
#
# Builds the Debian package libapache2-mod-influx-metrics (`make deb`).
#
# dpkg-buildpackage cleans the tree it builds in (`make clean`) and writes its
# output to the parent directory, so the build runs in a copy of the sources
# under dist/.build: this tree's own build stays as it is, and nothing is
# written outside it. The packages end up in dist/. Then lintian, when
# installed, checks the package; an error (E:) fails the build.
#
# Environment: DEB_BUILD_OPTIONS is passed on (nocheck skips the C unit tests
# in the package build); LINTIAN=0 skips lintian.
set -eu
cd "$(dirname "$0")/.."

PKG=libapache2-mod-influx-metrics
VERSION=$(cat VERSION)
CHANGELOG_VERSION=$(dpkg-parsechangelog -S Version)
if [ "$VERSION" != "$CHANGELOG_VERSION" ]; then
    echo "build-deb: VERSION says $VERSION, debian/changelog says $CHANGELOG_VERSION" >&2
    exit 1
fi
ARCH=$(dpkg-architecture -qDEB_HOST_ARCH)
STAGE=dist/.build
SRC=$STAGE/$PKG-$VERSION

rm -rf "$STAGE"
mkdir -p "$SRC"
# The sources: what git knows (tracked, and new files not ignored), as they
# are in the work tree; without git, everything but dist/ and .git (the
# package build's `make clean` removes build products).
# (A file deleted but not yet committed is still listed: skipped.)
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # shellcheck disable=SC2016
    git ls-files -z --cached --others --exclude-standard |
        xargs -0 sh -c 'for f; do [ -e "$f" ] || [ -L "$f" ] || continue; cp -P --parents "$f" "$0"; done' "$SRC"
else
    tar -cf - --exclude=./dist --exclude=./.git . | tar -xf - -C "$SRC"
fi

(cd "$SRC" && dpkg-buildpackage -b -us -uc)

# Earlier versions would match the README's dist/libapache2-mod-influx-metrics_*.deb.
rm -f dist/"$PKG"_*.deb dist/"$PKG"-dbgsym_*.deb
for f in "$STAGE"/*.deb; do
    cp "$f" dist/
done
DEB=dist/${PKG}_${VERSION}_${ARCH}.deb
[ -f "$DEB" ] || { echo "build-deb: $DEB was not built" >&2; exit 1; }
rm -rf "$STAGE"

if [ "${LINTIAN:-1}" != 0 ] && command -v lintian >/dev/null 2>&1; then
    echo "lintian $DEB:"
    out=$(lintian "$DEB") || true
    [ -z "$out" ] || printf '%s\n' "$out"
    if printf '%s\n' "$out" | grep -q '^E: '; then
        echo "build-deb: lintian reports errors" >&2
        exit 1
    fi
fi
echo "built $DEB"
