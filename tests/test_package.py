# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""The Debian package libapache2-mod-influx-metrics, on the test machine.

`make deb` builds it (in a copy of the tree, so the module the other tests use
is left alone), lintian finds no error in it, and it goes through the life of
a Debian Apache module package: `apt-get install` enables the module (through
apache2-maintscript-helper, as dh_apache2 writes it) and creates the spool
directory, `apache2ctl configtest` passes with the packaged configuration,
`apt-get remove` disables the module and keeps the configuration files, an
install after it enables the module again unless the admin disabled it,
`apt-get purge` removes them and the spool directory, and nothing of the
package is left.

This installs a package into the machine's dpkg database and touches
/etc/apache2, so it runs only as root, and only when the package is not
already installed and no hand-made install (`make install`) is in the way. It
never starts the system's apache2: a policy-rc.d that refuses service starts
is put in place while it runs (if there is none). At the end the package is
purged, whatever happened.
"""

import os
import pwd
import shutil
import stat
import subprocess

import pytest

import harness

PKG = "libapache2-mod-influx-metrics"
SO = "/usr/lib/apache2/modules/mod_influx_metrics.so"
MODS_AVAILABLE = "/etc/apache2/mods-available"
MODS_ENABLED = "/etc/apache2/mods-enabled"
LOAD = MODS_AVAILABLE + "/influx_metrics.load"
CONF = MODS_AVAILABLE + "/influx_metrics.conf"
ENABLED_LOAD = MODS_ENABLED + "/influx_metrics.load"
ENABLED_CONF = MODS_ENABLED + "/influx_metrics.conf"
SPOOL = "/var/cache/apache2/influx_metrics"
POLICY_RC_D = "/usr/sbin/policy-rc.d"
# apache2-maintscript-helper's memory of who enabled or disabled a module.
MODULE_STATE_DIR = "/var/lib/apache2/module"

TOOLS = ["dpkg-buildpackage", "dh", "dh_apache2", "lintian", "apt-get", "dpkg-query",
         "a2enmod", "a2query", "apache2ctl"]
APT_ENV = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
# Waits for another dpkg/apt run instead of failing at once.
APT = ["apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=120"]


def run(cmd, timeout=120, check=True, env=None):
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=timeout, env=env)
    out = p.stdout.decode(errors="replace")
    if check and p.returncode != 0:
        raise AssertionError("%s exited with %d:\n%s" % (" ".join(cmd), p.returncode, out))
    return p.returncode, out


def pkg_status():
    """dpkg's status of the package ("install ok installed", "deinstall ok
    config-files", ...), or None when dpkg does not know it."""
    p = subprocess.run(["dpkg-query", "-W", "-f=${Status}", PKG], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, timeout=60)
    return p.stdout.decode().strip() if p.returncode == 0 and p.stdout.strip() else None


def installed_or_configured():
    st = pkg_status()
    return st is not None and not st.endswith("not-installed")


def module_state_files():
    if not os.path.isdir(MODULE_STATE_DIR):
        return []
    return [os.path.join(MODULE_STATE_DIR, d, "influx_metrics")
            for d in os.listdir(MODULE_STATE_DIR)
            if os.path.lexists(os.path.join(MODULE_STATE_DIR, d, "influx_metrics"))]


def _skip_reason():
    if not harness.IS_ROOT:
        return "needs root: installs and purges a package on the system"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return ("missing %s (scripts/install-deps.sh installs debhelper, dpkg-dev, "
                "lintian, apache2 and apache2-dev)" % ", ".join(missing))
    if installed_or_configured():
        return ("%s is installed on the system (%s); the test would purge it"
                % (PKG, pkg_status()))
    in_the_way = [p for p in (SO, LOAD, CONF, ENABLED_LOAD, SPOOL) if os.path.lexists(p)]
    if in_the_way:
        return ("files of the package are already there (a `make install`?), "
                "the test would remove them: %s" % ", ".join(in_the_way))
    if module_state_files():
        return ("apache2-maintscript-helper remembers an influx_metrics module (%s)"
                % ", ".join(module_state_files()))
    return None


class NoServiceStarts:
    """A policy-rc.d that refuses every service start while installing, so
    the maintainer scripts' `invoke-rc.d apache2 restart` does nothing.
    Put in place only if there is none; removed again only if ours."""

    def __enter__(self):
        self.ours = False
        if not os.path.lexists(POLICY_RC_D):
            with open(POLICY_RC_D, "w") as f:
                f.write("#!/bin/sh\n# mod_influx_metrics tests/test_package.py\nexit 101\n")
            os.chmod(POLICY_RC_D, 0o755)
            self.ours = True
        return self

    def __exit__(self, *exc):
        if self.ours:
            os.unlink(POLICY_RC_D)


def read(path):
    with open(path) as f:
        return f.read()


def test_package_build_lint_install_remove_purge():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    version = read(os.path.join(harness.REPO_ROOT, "VERSION")).strip()
    arch = run(["dpkg-architecture", "-qDEB_HOST_ARCH"])[1].strip()
    deb = os.path.join(harness.REPO_ROOT, "dist", "%s_%s_%s.deb" % (PKG, version, arch))

    # The machine's own configuration must pass before the package is added.
    rc, out = run(["apache2ctl", "configtest"], check=False)
    if rc != 0:
        pytest.skip("the machine's Apache configuration fails configtest without the "
                    "package:\n" + out)

    # Build. `make test` ran the unit tests already: not again in the package build.
    if os.path.exists(deb):
        os.unlink(deb)
    run(["make", "-s", "deb"], timeout=600,
        env=dict(os.environ, DEB_BUILD_OPTIONS="nocheck", LINTIAN="0"))
    assert os.path.isfile(deb), deb

    # What is in it: the module, its .load and .conf as conffiles, and the
    # dependencies of a Debian Apache module.
    files = [line.split()[-1][1:].rstrip("/") or "/"
             for line in run(["dpkg-deb", "-c", deb])[1].splitlines()]
    for f in (SO, LOAD, CONF, "/usr/share/doc/%s/copyright" % PKG):
        assert f in files, (f, files)
    depends = run(["dpkg-deb", "-f", deb, "Depends"])[1]
    for dep in ("apache2-api-", "apache2-bin", "libcurl4", "zlib1g", "libc6"):
        assert dep in depends, (dep, depends)
    conffiles = run(["dpkg-deb", "-I", deb, "conffiles"])[1].split()
    assert sorted(conffiles) == sorted([CONF, LOAD])
    assert read(os.path.join(harness.REPO_ROOT, "conf", "influx_metrics.load")).split()[-1] == SO

    rc, lint = run(["lintian", deb], check=False)
    errors = [line for line in lint.splitlines() if line.startswith("E:")]
    assert not errors, lint
    assert rc == 0, lint

    # Paths of the package that exist without it (directories such as
    # /etc/apache2): everything else must be gone after the purge.
    there_before = {f for f in files if os.path.lexists(f)}

    try:
        with NoServiceStarts():
            _install_remove_purge(deb, files)
    finally:
        if installed_or_configured():
            with NoServiceStarts():
                run(APT + ["purge", PKG], env=APT_ENV, check=False)
        if os.path.lexists(ENABLED_LOAD) or os.path.lexists(ENABLED_CONF):
            run(["a2dismod", "-q", "-f", "-p", "influx_metrics"], check=False)

    assert pkg_status() in (None, "unknown ok not-installed"), pkg_status()
    left = [f for f in files if f not in there_before and os.path.lexists(f)]
    assert not left, "left after purge: %s" % left


def _install_remove_purge(deb, files):
    # Install: the module is enabled (a fresh install, per Debian's module
    # packages), the spool directory is www-data's, mode 0700.
    run(APT + ["install", deb], env=APT_ENV, timeout=300)
    assert pkg_status() == "install ok installed"
    for f in (SO, LOAD, CONF):
        assert os.path.isfile(f), f
    assert os.path.islink(ENABLED_LOAD), "postinst did not enable the module"
    assert os.readlink(ENABLED_LOAD) == "../mods-available/influx_metrics.load"
    assert os.path.islink(ENABLED_CONF)
    st = os.stat(SPOOL)
    assert stat.S_ISDIR(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o700, oct(st.st_mode)
    assert pwd.getpwuid(st.st_uid).pw_name == "www-data"
    # What the README tells an admin to run: harmless when already enabled.
    run(["a2enmod", "influx_metrics"])
    run(["a2query", "-m", "influx_metrics"])

    # The packaged configuration (every directive commented out) is valid with
    # the module loaded; so is one that sets a URL, as an admin would.
    out = run(["apache2ctl", "configtest"])[1]
    assert "Syntax OK" in out, out
    assert "influx_metrics_module" in run(["apache2ctl", "-M"])[1]
    conf = read(CONF)
    url_line = "    # InfluxMetricsURL http://127.0.0.1:8086/write?db=apache\n"
    assert url_line in conf
    edited = conf.replace(url_line, url_line.replace("# ", "", 1), 1)
    with open(CONF, "w") as f:
        f.write(edited)
    out = run(["apache2ctl", "configtest"])[1]
    assert "Syntax OK" in out, out

    # Remove: disabled, the module gone, the configuration (as edited) and
    # the spool directory kept.
    run(APT + ["remove", PKG], env=APT_ENV, timeout=300)
    assert pkg_status() == "deinstall ok config-files", pkg_status()
    assert not os.path.lexists(ENABLED_LOAD)
    assert not os.path.lexists(ENABLED_CONF)
    assert not os.path.exists(SO)
    assert os.path.isfile(LOAD)
    assert read(CONF) == edited
    assert os.path.isdir(SPOOL)
    run(["apache2ctl", "configtest"])

    # Installed again: enabled again (the package disabled it, not the admin),
    # the edited configuration kept. An admin's a2dismod survives a remove
    # and an install.
    run(APT + ["install", deb], env=APT_ENV, timeout=300)
    assert os.path.islink(ENABLED_LOAD)
    assert read(CONF) == edited
    run(["a2dismod", "-q", "influx_metrics"])
    run(APT + ["remove", PKG], env=APT_ENV, timeout=300)
    run(APT + ["install", deb], env=APT_ENV, timeout=300)
    assert pkg_status() == "install ok installed"
    assert not os.path.lexists(ENABLED_LOAD), "an install enabled what the admin disabled"
    rc, out = run(["a2query", "-m", "influx_metrics"], check=False)
    assert rc == 32 and "disabled by site administrator" in out, (rc, out)

    # Purge: configuration, spool directory and the helper's memory gone.
    run(APT + ["purge", PKG], env=APT_ENV, timeout=300)
    for f in (LOAD, CONF, SPOOL, ENABLED_LOAD, ENABLED_CONF):
        assert not os.path.lexists(f), f
    assert not module_state_files(), module_state_files()
    assert not [f for f in os.listdir(MODS_AVAILABLE) if f.startswith("influx_metrics")]
    run(["apache2ctl", "configtest"])
