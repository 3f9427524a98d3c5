# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""`make install` puts the module and Debian-style load/conf files in place
(checked under a DESTDIR, so the test machine's Apache is left alone)."""

import os
import shutil
import subprocess

import harness


def test_make_install_destdir(module_built):
    dest = harness.make_tmpdir("imx-install")
    try:
        subprocess.run(["make", "-s", "install", "DESTDIR=" + dest], cwd=harness.REPO_ROOT,
                       check=True, timeout=120, stdout=subprocess.DEVNULL)
        libexec = subprocess.run(["apxs", "-q", "LIBEXECDIR"], check=True,
                                 stdout=subprocess.PIPE, timeout=30).stdout.decode().strip()
        so = dest + libexec + "/mod_influx_metrics.so"
        load = dest + "/etc/apache2/mods-available/influx_metrics.load"
        conf = dest + "/etc/apache2/mods-available/influx_metrics.conf"
        for f in (so, load, conf):
            assert os.path.isfile(f), f
        # The .load file names the installed module under its real path.
        assert open(load).read().split() == [
            "LoadModule", "influx_metrics_module", libexec + "/mod_influx_metrics.so"]
    finally:
        shutil.rmtree(dest, ignore_errors=True)
