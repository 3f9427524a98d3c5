# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""What the generated configs say: the MPM profiles, the DocumentRoot's
files and the rest of a server's root, the httpd.conf text of an Httpd, the
directives of the module under test (Imx) and the h2c snippet."""

import os
import re
import subprocess

from .env import (APACHE2, APACHE_MODULES_DIR, HOST, IS_ROOT, MODULE_NAME, MODULE_SO, RUN_USER,
                  _write)
from .log import ACCESS_LOG_FORMAT

# --------------------------------------------------------------------------
# MPM profiles

MPMS = ("event", "worker", "prefork")


def mpm_profile(threaded, prefork):
    """{mpm: directives} for every MPM of MPMS from one thread layout for
    event and worker (their directives are the same) and one for prefork."""
    return {"event": dict(threaded), "worker": dict(threaded), "prefork": dict(prefork)}


def fixed_prefork(n):
    """prefork with n children started at once: none started or stopped
    later as spare, none recycled."""
    return {"StartServers": n, "MinSpareServers": n, "MaxSpareServers": n,
            "ServerLimit": n, "MaxRequestWorkers": n, "MaxConnectionsPerChild": 0}


def fixed_threaded(children, threads):
    """event or worker with `children` children of `threads` threads (at most
    ThreadLimit, 64 unless set) started at once: none started or stopped
    later as spare, none recycled."""
    return {"ServerLimit": children, "StartServers": children, "ThreadsPerChild": threads,
            "MinSpareThreads": 1, "MaxSpareThreads": children * threads,
            "MaxRequestWorkers": children * threads, "MaxConnectionsPerChild": 0}


# The MPM layouts that the harness and more than one test use, by profile,
# then by MPM. A layout that only one test needs stays in that test, built
# with the helpers above where they fit.
MPM_PROFILES = {
    # What Httpd uses unless given mpm_conf: the values of Debian's
    # mods-available/mpm_*.conf.
    "default": mpm_profile(
        threaded={"StartServers": 2, "MinSpareThreads": 25, "MaxSpareThreads": 75,
                  "ThreadsPerChild": 25, "MaxRequestWorkers": 150,
                  "MaxConnectionsPerChild": 0},
        prefork={"StartServers": 5, "MinSpareServers": 5, "MaxSpareServers": 10,
                 "MaxRequestWorkers": 150, "MaxConnectionsPerChild": 0}),
    # Every child there from the start and none stopped while a test runs:
    # prefork's parent wakes an idle child it stops with a request of its
    # own ("OPTIONS *", httpd's internal dummy connection), which is logged
    # and recorded like any other. test_outage counts on the eight prefork
    # children.
    "fixed": mpm_profile(threaded=fixed_threaded(2, 25), prefork=fixed_prefork(8)),
}
# The default profile under the name the tests and scripts have known.
DEFAULT_MPM_CONF = MPM_PROFILES["default"]


def mpm_block(mpm, mpm_conf=None):
    """The directives inside <IfModule mpm_<mpm>_module>: mpm_conf (a dict or
    config text), else the default profile's for that MPM."""
    conf = mpm_conf
    if conf is None:
        conf = MPM_PROFILES["default"][mpm]
    if isinstance(conf, dict):
        return "\n".join("%s %s" % kv for kv in conf.items())
    return conf


# --------------------------------------------------------------------------
# A server's root: DocumentRoot and the files httpd.conf refers to

# Static content served from the DocumentRoot.
HTDOCS = {
    "index.html": "hello\n",
    "small.txt": "small file\n",
    "empty.txt": "",
    "big.bin": "x" * 65536,
    "sub/page.html": "<p>sub page</p>\n",
}


def make_server_root(d, cores):
    """Fills the new ServerRoot d: htdocs (HTDOCS), run/ and lock/, mime.types
    and, with cores, a cores/ directory every child may write to."""
    for rel, content in HTDOCS.items():
        path = os.path.join(d, "htdocs", rel)
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        os.chmod(os.path.dirname(path), 0o755)
        _write(path, content)
    for sub in ("run", "lock"):
        os.makedirs(os.path.join(d, sub), mode=0o755, exist_ok=True)
    if cores:
        cores = os.path.join(d, "cores")
        os.makedirs(cores, mode=0o777, exist_ok=True)
        os.chmod(cores, 0o777)
        # A child that crashes after its pools are gone (httpd then no
        # longer moves to CoreDumpDirectory) dumps into ServerRoot.
        os.chmod(d, 0o777)
    # Own mime.types: mod_mime's default (conf/mime.types) is relative to
    # ServerRoot, which is this directory.
    _write(os.path.join(d, "mime.types"),
           "text/html html htm\ntext/plain txt\napplication/octet-stream bin\n")


# --------------------------------------------------------------------------
# httpd.conf

_BUILTIN = None


def apache_builtin_modules():
    """Short names of modules compiled into apache2 (`apache2 -l`): Debian
    builds log_config and unixd in, and LoadModule of those is an error."""
    global _BUILTIN
    if _BUILTIN is None:
        out = subprocess.run([APACHE2, "-l"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, timeout=20).stdout.decode()
        _BUILTIN = set(re.findall(r"^\s*mod_(\w+)\.c$", out, re.M))
    return _BUILTIN


# Path of the readiness probe (a 404: no such file).
PROBE_PATH = "/__harness_probe"


def httpd_conf(d, port, mpm, mpm_conf=None, load_module=True, module_so=MODULE_SO,
               modules=(), log_level="warn", cores=False, record_probes=False, extra=""):
    """The httpd.conf of a server whose ServerRoot is d (see Httpd, whose
    attributes these arguments are)."""
    mods = ["mpm_" + mpm, "authz_core", "mime", "dir", "log_config",
            "unixd"]
    for m in modules:
        if m not in mods:
            mods.append(m)
    builtin = apache_builtin_modules()
    load = "\n".join("LoadModule %s_module %s/mod_%s.so"
                     % (m, APACHE_MODULES_DIR, m)
                     for m in mods if m not in builtin)
    if load_module:
        load += "\nLoadModule %s %s" % (MODULE_NAME, module_so)
    # Children must not run as root; as a normal user they run as that user.
    user = "User %s\nGroup %s\n" % (RUN_USER, RUN_USER) if IS_ROOT else ""
    probe = ""
    if load_module and not record_probes:
        probe = ('# The harness\'s readiness probes are not request data.\n'
                 '<Location "%s">\n    InfluxMetrics Off\n</Location>\n'
                 % PROBE_PATH)
    return """\
# Generated by tests/harness/conf.py
ServerRoot "{d}"
DefaultRuntimeDir "{d}/run"
PidFile "{d}/run/httpd.pid"
# File-based mutexes (if any mechanism needs one) live here, not in /var.
Mutex file:{d}/lock default
Listen {host}:{port}
ServerName localhost
{load}
{user}
ErrorLog "{d}/error.log"
LogLevel {log_level}
LogFormat "{fmt}" imx
CustomLog "{d}/access.log" imx

TypesConfig "{d}/mime.types"
DocumentRoot "{d}/htdocs"
DirectoryIndex index.html
<Directory />
    AllowOverride None
    Require all denied
</Directory>
<Directory "{d}/htdocs">
    AllowOverride None
    Require all granted
</Directory>

Timeout 30
KeepAlive On
KeepAliveTimeout 5
MaxKeepAliveRequests 0

<IfModule mpm_{mpm}_module>
{mpm_conf}
</IfModule>

{cores}
{extra}
{probe}""".format(d=d, host=HOST, port=port, load=load, user=user,
           cores=('CoreDumpDirectory "%s/cores"' % d) if cores else "",
           log_level=log_level, fmt=ACCESS_LOG_FORMAT, mpm=mpm,
           mpm_conf=mpm_block(mpm, mpm_conf), extra=extra, probe=probe)


# Config for HTTP/2 over cleartext. Load mod_http2 with modules=["http2"]:
#     Httpd(mpm="event", modules=["http2"], extra=H2C_CONF + ...)
# h2load speaks h2c with prior knowledge to an http:// URL, which httpd
# accepts once h2c is among the Protocols.
H2C_CONF = "Protocols h2c http/1.1\n"


# --------------------------------------------------------------------------
# The module's directives

class Imx:
    """Builds the mod_influx_metrics directives for a config context.

    Only what is given is emitted, so the module's defaults stay testable;
    flush_interval defaults to 200ms to keep tests fast.

        str(Imx(influx.write_url(db), measurement="http", tags={"env": "t"}))
    """

    def __init__(self, url=None, token=None, measurement=None, tags=None,
                 flush_interval="200ms", batch_size=None, buffer_size=None,
                 timeout=None, gzip=None, enabled=None, route=None, extra=""):
        self.url = url
        self.token = token
        self.measurement = measurement
        self.tags = tags or {}
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.buffer_size = buffer_size
        self.timeout = timeout
        self.gzip = gzip
        self.enabled = enabled
        self.route = route
        self.extra = extra

    @staticmethod
    def _arg(v):
        """Quotes an argument for the httpd config parser when needed."""
        s = str(v)
        if s == "" or re.search(r'[\s"\\]', s):
            return '"%s"' % s.replace("\\", "\\\\").replace('"', '\\"')
        return s

    @staticmethod
    def _onoff(v):
        if isinstance(v, str):
            return v
        return "On" if v else "Off"

    def text(self):
        a = self._arg
        lines = []
        if self.enabled is not None:
            lines.append("InfluxMetrics %s" % self._onoff(self.enabled))
        if self.url is not None:
            lines.append("InfluxMetricsURL %s" % a(self.url))
        if self.token is not None:
            lines.append("InfluxMetricsToken %s" % a(self.token))
        if self.measurement is not None:
            lines.append("InfluxMetricsMeasurement %s" % a(self.measurement))
        tags = self.tags.items() if isinstance(self.tags, dict) else self.tags
        for k, v in tags:
            lines.append("InfluxMetricsTag %s %s" % (a(k), a(v)))
        if self.flush_interval is not None:
            lines.append("InfluxMetricsFlushInterval %s" % a(self.flush_interval))
        if self.batch_size is not None:
            lines.append("InfluxMetricsBatchSize %s" % a(self.batch_size))
        if self.buffer_size is not None:
            lines.append("InfluxMetricsBufferSize %s" % a(self.buffer_size))
        if self.timeout is not None:
            lines.append("InfluxMetricsTimeout %s" % a(self.timeout))
        if self.gzip is not None:
            lines.append("InfluxMetricsGzip %s" % self._onoff(self.gzip))
        if self.route is not None:
            lines.append("InfluxMetricsRoute %s" % a(self.route))
        if self.extra:
            lines.append(self.extra.rstrip("\n"))
        return "\n".join(lines) + "\n"

    __str__ = text
