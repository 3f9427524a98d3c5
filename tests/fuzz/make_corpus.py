#!/usr/bin/python3
# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""Writes the seed corpus of tests/fuzz/fuzz_encoder.c into tests/fuzz/corpus/.

Each seed is one hostile value (the fuzz target gives it every role:
measurement, tag value, route, tag key) or up to four values separated by
NUL '|' '|' NUL. tests/test_injection.py reads the same files and writes
every value to a real InfluxDB. Deterministic: rerunning it rewrites the same
bytes (the large random seed uses a fixed seed).

    /usr/bin/python3 tests/fuzz/make_corpus.py [--check]

--check: exit 1 if the seed_* files differ from what would be written.
Other files in the directory (inputs of fixed crashes, kept as regression
tests) are left alone.
"""

import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
SEP = b"\x00||\x00"
BIG = 64 * 1024

# Bytes that matter to a line-protocol parser, and a few that matter to
# whatever reads the values later (JSON, terminals, HTML).
HOSTILE = [b"\\", b",", b"=", b" ", b'"', b"'", b"\n", b"\r", b"\t", b"\x00",
           b"\x01", b"\x1b", b"\x7f", b"#", b"a", b"Z", b"0", b"\xc3\xa9",
           b"\xff", b"\xc3", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80",
           b"\xf0\x9f\x98\x80", b"\xe2\x80\xa8", b"\xef\xbb\xbf", b"<", b"&", b"{"]


def seeds():
    s = {}
    # Line and field structure.
    s["newline"] = b"a\nb"
    s["newline_only"] = b"\n"
    s["crlf"] = b"a\r\nb"
    s["cr"] = b"a\rb"
    s["tab"] = b"a\tb"
    s["newline_injection"] = b"x f=1i 1\ninjected,host=evil duration_us=666i 1"
    s["tag_injection"] = b"v,injected=1"
    s["field_injection"] = b"v duration_us=666i"
    s["timestamp_injection"] = b"v 1 2"
    s["comma"] = b","
    s["equals"] = b"="
    s["space"] = b" "
    s["specials_mix"] = b"a,b=c d"
    s["leading_space"] = b" lead"
    s["trailing_space"] = b"trail "
    s["only_specials"] = b", =, =="
    s["hash_start"] = b"#comment"
    s["hash_inside"] = b"a#b"
    # Quotes.
    s["dquote"] = b'say "hi"'
    s["dquote_only"] = b'"'
    s["squote"] = b"it's"
    s["bs_dquote"] = b'a\\"b'
    s["quoted_field"] = b'v f="x,y=z"'
    # Backslash runs of 1 to 4 before each kind of byte, and at the end.
    follow = {"comma": b",", "equals": b"=", "space": b" ", "dquote": b'"',
              "letter": b"x", "newline": b"\n", "bs_n": b"n", "invalid": b"\xff",
              "utf8": b"\xc3\xa9"}
    for r in range(1, 5):
        for name, c in follow.items():
            s["bs%d_%s" % (r, name)] = b"a" + b"\\" * r + c + b"b"
        s["bs%d_end" % r] = b"a" + b"\\" * r
        s["bs%d_only" % r] = b"\\" * r
    s["bs_start_comma"] = b"\\,a"
    # Control bytes.
    s["nul"] = b"\x00"
    s["nul_inside"] = b"a\x00b"
    s["ctl_01"] = b"\x01x"
    s["del"] = b"x\x7f"
    s["ansi_escape"] = b"\x1b[31mred\x1b[0m"
    s["all_controls"] = bytes(range(0, 32)) + b"\x7f"
    # Invalid UTF-8: stray, truncated, overlong, surrogates, too large.
    s["ff"] = b"\xff"
    s["fe_ff"] = b"\xfe\xff"
    s["continuation"] = b"\x80"
    s["truncated_2"] = b"bad\xc3("
    s["truncated_3"] = b"\xe2\x82"
    s["truncated_4_end"] = b"x\xf0\x9f\x98"
    s["overlong_slash_2"] = b"\xc0\xaf"
    s["overlong_c1"] = b"\xc1\xbf"
    s["overlong_3"] = b"\xe0\x80\xaf"
    s["overlong_4"] = b"\xf0\x80\x80\xaf"
    s["overlong_nul"] = b"\xc0\x80"
    s["surrogate_high"] = b"\xed\xa0\x80"
    s["surrogate_low"] = b"\xed\xbf\xbf"
    s["surrogate_pair_cesu"] = b"\xed\xa0\xbd\xed\xb8\x80"
    s["above_10ffff"] = b"\xf4\x90\x80\x80"
    s["five_byte"] = b"\xf8\x88\x80\x80\x80"
    s["latin1"] = "caf\xe9".encode("latin-1")
    # Valid but unusual UTF-8.
    s["utf8_accent"] = "café".encode()
    s["utf8_cjk"] = "日本語".encode()
    s["utf8_emoji"] = "\U0001F600".encode()
    s["utf8_max"] = "\U0010FFFF".encode()
    s["utf8_line_sep"] = "a\u2028b\u2029c".encode()
    s["utf8_bom"] = "\ufeffbom".encode()
    s["utf8_nbsp"] = "a\u00a0b".encode()
    s["utf8_rtl_override"] = "a\u202eb".encode()
    s["utf8_zero_width"] = "a\u200bb\u200dc".encode()
    s["utf8_combining"] = "e\u0301".encode()
    s["utf8_fullwidth_comma"] = "a\uff0cb\uff1dc".encode()
    # Several values at once (measurement, tag value, route, tag key).
    s["multi_basic"] = SEP.join([b"my meas,x", b"eu west,1", b"/api/v1?a=b&c", b"tag key"])
    s["multi_backslashes"] = SEP.join([b"m\\", b"v\\,", b"\\\\ r", b"k\\="])
    s["multi_newlines"] = SEP.join([b"m\n", b"v\r\n", b"r\t", b"k\n"])
    s["multi_invalid"] = SEP.join([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\x80"])
    s["multi_empty"] = SEP.join([b"", b"", b"", b""])
    # 64 KiB values.
    s["big_commas"] = b"," * BIG
    s["big_backslashes"] = b"\\" * BIG
    rnd = random.Random(20240301)
    big = bytearray()
    while len(big) < BIG:
        big += rnd.choice(HOSTILE)
    s["big_mixed"] = bytes(big[:BIG])
    return s


def main():
    check = "--check" in sys.argv[1:]
    want = {"seed_" + k: v for k, v in seeds().items()}
    if check:
        have = {}
        if os.path.isdir(CORPUS):
            for name in os.listdir(CORPUS):
                if not name.startswith("seed_"):
                    continue        # regression inputs added by hand are fine
                with open(os.path.join(CORPUS, name), "rb") as f:
                    have[name] = f.read()
        if have != want:
            print("corpus differs from make_corpus.py: rerun it", file=sys.stderr)
            return 1
        return 0
    os.makedirs(CORPUS, exist_ok=True)
    for name in os.listdir(CORPUS):
        if name.startswith("seed_") and name not in want:
            os.unlink(os.path.join(CORPUS, name))
    for name, data in want.items():
        with open(os.path.join(CORPUS, name), "wb") as f:
            f.write(data)
    print("%d seeds in %s" % (len(want), os.path.relpath(CORPUS)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
