# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""Line protocol cannot be injected: hostile values through the real encoder
into a real InfluxDB 1.x, read back.

Every seed of the fuzz corpus (tests/fuzz/corpus, see make_corpus.py) and a
few hundred random hostile values (fixed seed) are used as a tag value, a
route, a static tag key and the measurement name. Each line is built by the
module's own escaper and encoder (imx_lineproto.c, through the small filter
tests/fuzz/lpencode.c, compiled with cc for the session), written to a
private influxd, and read back. For every role:

  * the number of points stored equals the number of lines written, and each
    point carries exactly the tags and fields of its line (no value splits a
    token, a tag set or a line);
  * every name and value read back equals its canonical form, computed from
    the rules in imx_lineproto.c's header comment (canon() below, the same as
    lp_canon in tests/lp_read.h), which is the input itself for inputs
    without backslashes, control bytes and invalid UTF-8.

What influxd 1.6 does differently from the rules imx_lineproto.c states, pinned
here so that a change shows up:

  * Measurement names are unescaped twice (backslash + one of , " = space),
    so a backslash run before one of those reads back shorter than under the
    documented rules, and some such names (a backslash run before ',' or ' ',
    typically), though listed by SHOW MEASUREMENTS and SHOW TAG VALUES,
    cannot be SELECTed at all.
  * A series key (measurement + tags, escaped) longer than 65535 bytes is
    refused: "max key length exceeded" (so a 64 KiB tag value is never
    stored; other lines of the same body are).
  * A line whose measurement starts with '#' is a comment: influxd answers
    204 and stores nothing. The module therefore refuses such a measurement
    name (and any backslash in one) when it reads its configuration.
"""

import os
import random
import shutil
import subprocess
import tempfile

import pytest

import harness

FUZZ_DIR = os.path.join(harness.TESTS_DIR, "fuzz")
CORPUS_DIR = os.path.join(FUZZ_DIR, "corpus")
SEP = b"\x00||\x00"             # separates the values of one seed
MAX_KEY = 65535                 # influxd 1.x: longest series key
BASE_TS = 1_700_000_000_000_000_000
MEAS = "inj"

# Tag keys the module writes itself or refuses in InfluxMetricsTag, and the
# one these tests add.
TAKEN_KEYS = {"host", "vhost", "method", "status", "route", "time", "_measurement",
              "_field", "duration_us", "bytes_sent", "id"}

HOSTILE = [b"\\", b"\\", b"\\", b",", b"=", b" ", b'"', b"'", b"\n", b"\r", b"\t",
           b"\x00", b"\x01", b"\x1b", b"\x7f", b"#", b"_", b"a", b"b", b"Z", b"0",
           b"\xc3\xa9", b"\xff", b"\xc3", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80",
           b"\xf4\x90\x80\x80", b"\xf0\x9f\x98\x80", b"\xe2\x80\xa8", b"\xef\xbb\xbf",
           b"<", b"&", b"{", b"}", b"/", b"?", b"%", b"*", b"."]


# --------------------------------------------------------------------------
# The rules of imx_lineproto.c, in Python

def _utf8_len(b, i):
    """Length of the valid UTF-8 sequence at b[i], 0 if there is none."""
    c = b[i]
    if c < 0x80:
        return 1
    n = 2 if 0xC0 <= c <= 0xDF else 3 if 0xE0 <= c <= 0xEF else 4 if 0xF0 <= c <= 0xF7 else 0
    if not n or i + n > len(b):
        return 0
    try:
        b[i:i + n].decode("utf-8")      # strict: no overlongs, surrogates, > U+10FFFF
    except UnicodeDecodeError:
        return 0
    return n


def _ctl(c):
    return c < 0x20 or c == 0x7F


def _special(c, kind):
    return c in b", " or (c == ord("=") and kind == "T")


def is_plain(b):
    """No backslash, no control byte, valid UTF-8: reads back unchanged."""
    if b"\\" in b or any(_ctl(c) for c in b):
        return False
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


_LETTER = {10: b"n", 13: b"r", 9: b"t"}


def spec_escape(b, kind):
    """What imx_escape must write for b (kind "M": measurement, "T": tag)."""
    out = bytearray()
    i = 0
    while i < len(b):
        r = 0
        while i < len(b) and b[i] == 0x5C:
            r += 1
            i += 1
        if i == len(b):
            out += b"?" * r
            break
        c = b[i]
        if _special(c, kind):
            out += b"\\" * (r + (r & 1)) + b"\\" + bytes([c])
            i += 1
            continue
        out += b"\\" * r
        n = 0 if _ctl(c) else _utf8_len(b, i)
        if c in _LETTER:
            out += b"\\" + _LETTER[c]
            i += 1
        elif n:
            out += b[i:i + n]
            i += n
        else:
            out += b"?"
            i += 1
    return bytes(out)


def canon(b, kind, reader="1x"):
    """How the escaped form of b reads back: reader "1x" (the rules of
    imx_lineproto.c), "2x" (2.x family, VictoriaMetrics) or "16" (influxd 1.6:
    as 1x, but measurement names are unescaped twice). The same as lp_canon
    in tests/lp_read.h."""
    meas16 = reader == "16" and kind == "M"
    out = bytearray()
    i = 0
    while i < len(b):
        r = 0
        while i < len(b) and b[i] == 0x5C:
            r += 1
            i += 1
        if i == len(b):
            out += b"?" * r
            break
        c = b[i]
        if _special(c, kind):
            if reader == "2x":
                k = (r + 1) // 2
            elif meas16:
                k = r + (r & 1) - 1 if r else 0
            else:
                k = r + (r & 1)
            out += b"\\" * k + bytes([c])
            i += 1
        elif c in _LETTER:
            out += b"\\" * ((r + 2) // 2 if reader == "2x" else r + 1) + _LETTER[c]
            i += 1
        elif meas16 and c in b'="':
            out += b"\\" * max(r - 2, 0) + bytes([c])
            i += 1
        else:
            out += b"\\" * ((r + 1) // 2 if reader == "2x" else r)
            n = 0 if _ctl(c) else _utf8_len(b, i)
            if n:
                out += b[i:i + n]
                i += n
            else:
                out += b"?"
                i += 1
    return bytes(out)


def go_unescape(b):
    """Go's escape.Unescape (influxd): backslash + , " = space -> that byte."""
    out = bytearray()
    i = 0
    while i < len(b):
        if b[i] == 0x5C and i + 1 < len(b) and b[i + 1] in b',"= ':
            out.append(b[i + 1])
            i += 2
        else:
            out.append(b[i])
            i += 1
    return bytes(out)


def key_length(line):
    """Length of the series key of an encoded line (all before the fields)."""
    return line.rindex(b" duration_us=")


# --------------------------------------------------------------------------
# Values

def corpus_values():
    """(name, value) for every value of every seed file."""
    out = []
    for name in sorted(os.listdir(CORPUS_DIR)):
        with open(os.path.join(CORPUS_DIR, name), "rb") as f:
            data = f.read()
        parts = data.split(SEP)
        for k, part in enumerate(parts):
            out.append(("%s[%d]" % (name, k) if len(parts) > 1 else name, part))
    return out


# The same without backslashes, control bytes and invalid UTF-8: these must
# read back exactly as written.
PLAIN_HOSTILE = [c for c in HOSTILE if is_plain(c)]


def random_values(seed, count=300, maxlen=40, alphabet=HOSTILE, prefix="random"):
    rnd = random.Random(seed)
    return [("%s%d" % (prefix, k), b"".join(rnd.choice(alphabet)
                                           for _ in range(rnd.randint(1, maxlen))))
            for k in range(count)]


def all_values(role):
    vals = corpus_values() + random_values("injection-" + role)
    vals += random_values("plain-" + role, 100, alphabet=PLAIN_HOSTILE, prefix="plain")
    # Long, but under the key limit once escaped: must round-trip whole.
    vals += [("long_plain", b"p" * 60000), ("long_commas", b"," * 29000),
             ("long_utf8", "é".encode() * 29000)]
    return vals


# --------------------------------------------------------------------------
# The real encoder

def _hex(b):
    return "x" + b.hex()


class Encoder:
    """Runs tests/fuzz/lpencode (imx_lineproto.c) over a batch of requests."""

    def __init__(self, exe):
        self.exe = exe

    def run(self, requests):
        proc = subprocess.run([self.exe], input="\n".join(requests) + "\n",
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        answers = proc.stdout.splitlines()
        assert len(answers) == len(requests), proc.stderr
        out = []
        for a in answers:
            assert a.startswith("x"), "lpencode: %s" % a
            out.append(bytes.fromhex(a[1:]))
        return out

    def escape(self, values, kind):
        return self.run(["E %s %s" % (kind, _hex(v)) for v in values])

    def canon(self, values, kind, reader):
        return self.run(["C %s %s %s" % (kind, reader, _hex(v)) for v in values])

    def lines(self, points):
        """points: dicts with ts, dur, bytes, status, meas, host, vhost,
        method, route (or None), tags [(key, value)] (bytes or str)."""
        def b(v):
            return v.encode() if isinstance(v, str) else v
        reqs = []
        for p in points:
            f = ["L", str(p["ts"]), str(p["dur"]), str(p["bytes"]), str(p["status"]),
                 _hex(b(p["meas"])), _hex(b(p["host"])), _hex(b(p["vhost"])),
                 _hex(b(p["method"])), _hex(b(p["route"])) if p["route"] is not None else "-"]
            for k, v in p["tags"]:
                f += [_hex(b(k)), _hex(b(v))]
            reqs.append(" ".join(f))
        return self.run(reqs)


@pytest.fixture(scope="session")
def lpencode():
    cc = shutil.which("cc")
    apr = shutil.which("apr-1-config")
    if not cc or not apr:
        pytest.skip("needs cc and apr-1-config")
    d = tempfile.mkdtemp(prefix="imx-lpencode-")
    try:
        cflags = subprocess.check_output([apr, "--includes", "--cppflags"], text=True).split()
        libs = subprocess.check_output([apr, "--link-ld", "--libs"], text=True).split()
        exe = os.path.join(d, "lpencode")
        proc = subprocess.run(
            [cc, "-std=gnu11", "-O1", "-Wall", "-Wextra", *cflags,
             "-I", harness.REPO_ROOT, "-I", harness.TESTS_DIR, "-o", exe,
             os.path.join(FUZZ_DIR, "lpencode.c"),
             *(os.path.join(harness.REPO_ROOT, f)
               for f in ("imx_lineproto.c", "imx_names.c", "imx_hist.c")), *libs],
            capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, "building lpencode failed:\n" + proc.stderr
        yield Encoder(exe)
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------
# Without InfluxDB: the escaper follows the rules, both canonical forms agree

def test_escaper_follows_the_rules(lpencode):
    vals = [v for _, v in corpus_values() + random_values("rules", 2000)]
    for kind in ("M", "T"):
        got = lpencode.escape(vals, kind)
        bad = [(v, g, spec_escape(v, kind)) for v, g in zip(vals, got)
               if g != spec_escape(v, kind)]
        assert not bad, "imx_escape differs from the rules (%d), first: %r" % (len(bad), bad[0])
        for reader in ("1x", "2x", "16"):
            c = lpencode.canon(vals, kind, reader)
            bad = [v for v, cv in zip(vals, c) if cv != canon(v, kind, reader)]
            assert not bad, "lp_canon and canon() differ (%s %s): %r" % (kind, reader, bad[:3])
    for v in vals:
        if is_plain(v):
            for kind in ("M", "T"):
                for reader in ("1x", "2x", "16"):
                    assert canon(v, kind, reader) == v


# --------------------------------------------------------------------------
# Through a real influxd

def _write_and_split_long(influx, db, lines):
    """Writes the lines whose series key fits in one POST (must be 204), and
    each longer one alone (must be refused as too long). Returns the indexes
    of the lines that must be stored."""
    short = [i for i, ln in enumerate(lines) if key_length(ln) <= MAX_KEY]
    long_ = [i for i, ln in enumerate(lines) if key_length(ln) > MAX_KEY]
    status, text = influx.write(db, b"".join(lines[i] for i in short), timeout=60)
    assert status == 204, "write of %d lines: %d %s" % (len(short), status, text[:2000])
    for i in long_:
        status, text = influx.write(db, lines[i], timeout=60)
        assert status == 400 and "max key length exceeded" in text, (status, text[:300])
    return short


def _point(i, **kw):
    p = dict(ts=BASE_TS + i, dur=i, bytes=-i, status=200, meas=MEAS, host="h",
             vhost="v", method="GET", route=None, tags=[("id", str(i))])
    p.update(kw)
    return p


def _values_for(role):
    """The values a role can take: what the module's configuration accepts
    (non-empty; no reserved tag key; a measurement not starting with '_'),
    without '#'-measurements (see the xfail test below)."""
    out = []
    for name, v in all_values(role):
        if not v:
            continue
        if role == "tag_key" and canon(v, "T").decode() in TAKEN_KEYS:
            continue
        if role == "measurement" and v[:1] in (b"_", b"#"):
            continue
        out.append((name, v))
    return out


def _describe(name, v):
    return "%s %r" % (name, v[:60])


@pytest.mark.parametrize("role", ["tag_value", "route", "tag_key"])
def test_tag_round_trip(role, lpencode, influx, influx_db):
    vals = _values_for(role)
    points = []
    for i, (_, v) in enumerate(vals):
        if role == "tag_value":
            points.append(_point(i, vhost=v, tags=[("id", str(i)), ("val", v)]))
        elif role == "route":
            points.append(_point(i, route=v))
        else:
            points.append(_point(i, tags=[("id", str(i)), (v, "x")]))
    lines = lpencode.lines(points)
    for ln in lines:
        assert ln.endswith(b"\n") and ln.count(b"\n") == 1, ln[:200]
    stored = _write_and_split_long(influx, influx_db, lines)
    assert len(stored) >= len(vals) - 10

    res = influx.query('SELECT * FROM %s GROUP BY *' % harness.quote_ident(MEAS),
                       db=influx_db, epoch="ns", timeout=60)
    series = res["results"][0].get("series") or []
    rows = {}
    for s in series:
        tags = {k: t for k, t in (s.get("tags") or {}).items() if t != ""}
        for vrow in s["values"]:
            row = dict(zip(s["columns"], vrow))
            i = row["duration_us"]
            assert i not in rows, "two points for line %d: %r" % (i, _describe(*vals[i]))
            rows[i] = (tags, row)
    assert len(rows) == len(stored) and sorted(rows) == stored, \
        "%d points stored for %d lines" % (len(rows), len(stored))

    exact = 0
    for i in stored:
        name, v = vals[i]
        tags, row = rows[i]
        want = canon(v, "T").decode()
        assert row["time"] == BASE_TS + i and row["bytes_sent"] == -i, _describe(name, v)
        fixed = {"host": "h", "vhost": "v", "method": "GET", "status": "200", "id": str(i)}
        if role == "tag_value":
            fixed.update(vhost=want, val=want)
        elif role == "route":
            fixed["route"] = want
        else:
            fixed[want] = "x"
        assert tags == fixed, "%s: read back %r, want %r" % (_describe(name, v), tags, fixed)
        if is_plain(v):
            assert want == v.decode()
            exact += 1
    assert exact > 100, "too few plain values checked exactly: %d" % exact


def test_measurement_round_trip(lpencode, influx, influx_db):
    vals = _values_for("measurement")
    points = [_point(i, meas=v) for i, (_, v) in enumerate(vals)]
    lines = lpencode.lines(points)
    escaped = lpencode.escape([v for _, v in vals], "M")
    stored = _write_and_split_long(influx, influx_db, lines)
    assert len(stored) >= len(vals) - 10

    # One series per line: nothing split, nothing merged.
    res = influx.query("SHOW SERIES", db=influx_db, timeout=60)
    nseries = sum(len(s["values"]) for s in res["results"][0].get("series") or [])
    assert nseries == len(stored)

    # Measurement name of every id, as influxd lists it.
    res = influx.query('SHOW TAG VALUES FROM /.*/ WITH KEY = "id"', db=influx_db, timeout=60)
    names = {}
    for s in res["results"][0].get("series") or []:
        for _, ident in s["values"]:
            assert int(ident) not in names, "id %s twice" % ident
            names[int(ident)] = s["name"]
    assert sorted(names) == stored
    exact = 0
    for i in stored:
        name, v = vals[i]
        want = canon(v, "M", "16").decode()
        assert names[i] == want, "%s: read back %r, want %r" % (_describe(name, v), names[i], want)
        if is_plain(v):
            assert want == v.decode()
            exact += 1
    assert exact > 100, "too few plain values checked exactly: %d" % exact

    # The points themselves: every name that unescapes the same once and
    # twice can be SELECTed, and holds exactly its one point. Of the others,
    # influxd 1.6 cannot SELECT some (typically a backslash run before ','
    # or ' '; see the module docstring); those that it can must be right.
    consistent = {i for i in stored
                  if go_unescape(escaped[i]) == go_unescape(go_unescape(escaped[i]))}
    res = influx.query("SELECT * FROM /.*/", db=influx_db, epoch="ns", timeout=60)
    got = {}
    for s in res["results"][0].get("series") or []:
        for vrow in s["values"]:
            row = dict(zip(s["columns"], vrow))
            i = row["duration_us"]
            assert i not in got
            got[i] = (s["name"], row)
    assert consistent <= set(got) <= set(stored), \
        "not SELECTable: %r" % [_describe(*vals[i]) for i in sorted(consistent - set(got))][:5]
    for i, (mname, row) in got.items():
        assert mname == names[i] and row["id"] == str(i) and row["time"] == BASE_TS + i
        assert row["bytes_sent"] == -i and row["host"] == "h" and row["vhost"] == "v"
    assert len(consistent) > len(stored) // 2


def test_measurement_starting_with_hash_is_a_comment(lpencode, influx, influx_db):
    """Why the module refuses a measurement starting with '#' at configtest
    (test_config.py): InfluxDB takes such a line for a comment, answers 204
    and stores nothing, so its points would be counted as sent and lost."""
    lines = lpencode.lines([_point(1, meas="#requests")])
    status, text = influx.write(influx_db, lines[0])
    assert status == 204, text
    res = influx.query("SHOW SERIES", db=influx_db)
    assert not res["results"][0].get("series")


def test_injection_attempts_stay_one_point(lpencode, influx, influx_db):
    """Values that would add a tag, a field, a timestamp or a whole line if
    written unescaped: each stays one point with its own tags."""
    attempts = [b"x f=1i 1\ninjected,host=evil duration_us=666i 1",
                b"v,injected=1", b"v duration_us=666i", b"v 1 2", b"v\\",
                b"v\\\\", b"v\\ ", b"v\\,injected=1", b"v\\\\,injected=1",
                b"v\r\ninjected duration_us=1i", b'v" duration_us=1i']
    points = []
    for i, v in enumerate(attempts):
        points.append(_point(i, vhost=v, route=v, tags=[("id", str(i)), (v, v)]))
    lines = lpencode.lines(points)
    assert influx.write(influx_db, b"".join(lines)) == (204, "")
    assert influx.count(influx_db, MEAS) == len(attempts)
    res = influx.query('SHOW MEASUREMENTS', db=influx_db)
    assert [v[0] for v in res["results"][0]["series"][0]["values"]] == [MEAS]
    res = influx.query('SHOW FIELD KEYS', db=influx_db)
    assert sorted(v[0] for v in res["results"][0]["series"][0]["values"]) == \
        ["bytes_sent", "duration_us"]
    rows = influx.select('SELECT * FROM %s GROUP BY *' % harness.quote_ident(MEAS), influx_db)
    assert len(rows) == len(attempts)
    for row in rows:
        v = attempts[row["duration_us"]]
        want = canon(v, "T").decode()
        assert row["vhost"] == want and row["route"] == want and row[want] == want
        assert "injected" not in row and "evil" not in str(row.get("host"))
