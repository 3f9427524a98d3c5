/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * fuzz_encoder.c: libFuzzer target over the line-protocol encoder
 * (imx_lineproto.c: imx_escape, imx_pescape, imx_line_max, imx_encode_line).
 *
 *   make fuzz               build, then fuzz for FUZZ_TIME seconds (default 20)
 *   make test-fuzz          the CI run: every seed once, then a short fuzz run
 *   tests/fuzz/fuzz_encoder FILE...   replay inputs (e.g. a crash-* artifact)
 *
 * Input: up to four values separated by the 4 bytes NUL '|' '|' NUL. Value k
 * of n plays role k mod n, so a seed that is one hostile value plays every
 * role: 0 measurement, 1 tag value (host, vhost and a static tag's value),
 * 2 route and the value of the request's tag (InfluxMetricsTagFrom), 3 the
 * key of both the static and the request's tag. An empty value stands for a
 * fixed plain one (the module refuses empty names). The numbers
 * (duration_us, bytes_sent, timestamp, status, sample) and whether the route
 * and the request's tag are set come from a hash of the input, extremes
 * included.
 *
 * Checked for every input (any failure aborts, so libFuzzer keeps the input):
 *  - imx_escape with exactly 2 * len + 1 bytes succeeds; with exactly the
 *    needed size too, and gives the same bytes; with anything smaller it
 *    returns (size_t)-1 (one byte short, a random size, none; the buffers
 *    are malloc'ed to their exact size, so ASan catches any write past
 *    outsz); imx_pescape agrees.
 *  - The escaped value is valid UTF-8 without control bytes, does not end in
 *    a backslash, and every special byte in it follows an odd run of
 *    backslashes (escaped under 1.x and 2.x rules alike).
 *  - The encoded line fits imx_line_max, holds exactly one '\n', at its end,
 *    and each reader of tests/lp_read.h (1.x rules, 2.x family, influxd 1.6)
 *    reads exactly the measurement, the tags in order, the fields with their
 *    values (duration_us and bytes_sent as integers, sample_rate as a float
 *    when the point is sampled) and the timestamp; every name and value read
 *    equals the canonical form of its input for that reader (lp_canon),
 *    which is the input itself when the input is plain (no backslash, no
 *    control byte, valid UTF-8).
 *
 * Known and skipped (see tests/test_injection.py's docstring): a
 * measurement that starts with '#' turns the whole line into a comment,
 * which InfluxDB silently ignores. Set IMX_FUZZ_STRICT=1 in the environment
 * to fail on it instead.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <apr_pools.h>

#include "imx_engine.h"
#include "lp_read.h"
#include "test_names.h"

static apr_pool_t *pool;
static int strict_comment;

#define FAIL(...) do { \
    fprintf(stderr, "fuzz_encoder: %s:%d: ", __FILE__, __LINE__); \
    fprintf(stderr, __VA_ARGS__); \
    fputc('\n', stderr); \
    abort(); \
} while (0)

#define ASSERT(cond, ...) do { if (!(cond)) { \
    fprintf(stderr, "assertion failed: %s\n", #cond); FAIL(__VA_ARGS__); } } while (0)

static const char SEP[4] = { '\0', '|', '|', '\0' };

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *s = getenv("IMX_FUZZ_STRICT");

    (void)argc; (void)argv;
    apr_initialize();
    apr_pool_create(&pool, NULL);
    strict_comment = s && *s && strcmp(s, "0");
    return 0;
}

static LP_NOCOV uint64_t fnv1a(const uint8_t *d, size_t n)
{
    uint64_t h = 1469598103934665603ULL;

    for (size_t i = 0; i < n; i++) {
        h ^= d[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static LP_NOCOV uint64_t mix(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);

    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static LP_NOCOV int64_t pick_i64(uint64_t *x)
{
    static const int64_t edge[] = { 0, 1, -1, INT64_MAX, INT64_MIN, INT64_MIN + 1,
                                    999999999, -1000000000, 1700000000123456789LL };
    uint64_t r = mix(x);

    if ((r & 3) == 0) {
        return edge[(r >> 2) % (sizeof(edge) / sizeof(edge[0]))];
    }
    return (int64_t)mix(x);
}

/* Escapes in under every buffer size that matters; returns the result
 * (malloc'ed, NUL-terminated) after checking its shape. */
static LP_NOCOV char *escape_checked(const unsigned char *in, size_t len, int kind, uint64_t *x)
{
    imx_esc_kind_t k = kind == LP_K_MEAS ? IMX_ESC_MEASUREMENT : IMX_ESC_TAG;
    size_t cap = 2 * len + 1, n, m, run, i;
    char *out = malloc(cap), *t;

    n = imx_escape(out, cap, (const char *)in, len, k);
    ASSERT(n != (size_t)-1 && n < cap, "escape with 2*len+1 = %zu bytes failed (len %zu)",
           cap, len);
    ASSERT(out[n] == '\0' && strlen(out) == n, "not NUL-terminated at %zu", n);
    ASSERT(len == 0 || n >= len, "escaped %zu bytes into %zu", len, n);

    /* Exactly enough room: same result. */
    t = malloc(n + 1);
    m = imx_escape(t, n + 1, (const char *)in, len, k);
    ASSERT(m == n && !memcmp(t, out, n + 1), "tight buffer of %zu gave %zu", n + 1, m);
    free(t);
    /* One byte short, a random shorter size, and none at all: refused. The
     * buffers are exactly outsz long, so ASan reports a write past them. */
    for (int j = 0; j < 3; j++) {
        size_t sz = j == 0 ? n : j == 1 ? (n ? mix(x) % n : 0) : 0;
        if (j == 1 && len > 8192) {
            continue;           /* the same path as j == 0; keep big inputs fast */
        }
        t = malloc(sz ? sz : 1);
        m = imx_escape(t, sz, (const char *)in, len, k);
        ASSERT(m == (size_t)-1, "outsz %zu (need %zu) not refused: %zu", sz, n + 1, m);
        free(t);
    }
    /* imx_pescape: the same, from a pool (it takes a C string). */
    if (!memchr(in, '\0', len)) {
        char *z = malloc(len + 1);
        memcpy(z, in, len);
        z[len] = '\0';
        t = imx_pescape(pool, z, k);
        ASSERT(!strcmp(t, out), "imx_pescape differs from imx_escape");
        free(z);
    }

    /* Shape: nothing a reader could take for the end of the token. */
    ASSERT(lp_utf8_valid((const unsigned char *)out, n), "escaped value is not UTF-8");
    run = 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)out[i];
        ASSERT(!lp_is_ctl(c), "control byte 0x%02x at %zu of the escaped value", c, i);
        if (lp_is_special(c, kind)) {
            ASSERT(run & 1, "'%c' at %zu follows %zu backslashes", c, i, run);
        }
        run = c == '\\' ? run + 1 : 0;
    }
    ASSERT(n == 0 || out[n - 1] != '\\', "escaped value ends in a backslash");
    return out;
}

static LP_NOCOV char *canon(const unsigned char *in, size_t len, int kind, int reader)
{
    char *c = malloc(2 * len + 1);

    lp_canon(c, in, len, kind, reader);
    return c;
}

static LP_NOCOV void show(const char *what, const char *s, size_t n)
{
    fprintf(stderr, "%s (%zu bytes): ", what, n);
    for (size_t i = 0; i < n && i < 400; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7F && c != '\\') fputc(c, stderr);
        else fprintf(stderr, "\\x%02x", c);
    }
    fputs(n > 400 ? "...\n" : "\n", stderr);
}

static LP_NOCOV void expect_str(const lp_str_t *got, const char *want, const char *what,
                       int reader, const char *line, size_t n)
{
    if (!lp_eqz(got, want)) {
        show("line", line, n);
        show("read", got->p, got->n);
        show("want", want, strlen(want));
        FAIL("%s read back differently under %s", what, lp_reader_name[reader]);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const deflt[4] = { "m", "v", "r", "k" };
    const unsigned char *part[4];
    size_t plen[4], np = 0, start = 0, i;
    const unsigned char *in[4];
    size_t inlen[4];
    char *esc[4], *vhost, *route, *tags, *reqtag, *upstream, *prefix, *line;
    uint64_t x = fnv1a(data, size);
    imx_names_t *reg = tn_new(1 << 22);    /* 4 texts of up to 2 x max_len */
    imx_names_src_t ns = { reg, (const char *const[]){ "GET" }, 1, NULL };
    int has_route, has_tag, ids[2];
    imx_point_t pt;
    size_t n, max, plen_prefix;

    /* Split at SEP into at most four values. */
    for (i = 0; np < 3 && i + sizeof(SEP) <= size; i++) {
        if (!memcmp(data + i, SEP, sizeof(SEP))) {
            part[np] = data + start;
            plen[np++] = i - start;
            start = i + sizeof(SEP);
            i = start - 1;
        }
    }
    part[np] = data + start;
    plen[np++] = size - start;
    for (int r = 0; r < 4; r++) {
        in[r] = part[r % np];
        inlen[r] = plen[r % np];
        if (inlen[r] == 0) {
            in[r] = (const unsigned char *)deflt[r];
            inlen[r] = 1;
        }
        esc[r] = NULL;
        for (int q = 1; q < r; q++) {   /* same tag value again: same result */
            if (in[q] == in[r] && inlen[q] == inlen[r]) {
                esc[r] = strdup(esc[q]);
                break;
            }
        }
        if (!esc[r]) {
            esc[r] = escape_checked(in[r], inlen[r], r == 0 ? LP_K_MEAS : LP_K_TAG, &x);
        }
    }

    /* The plain ones read back as they are, under every reader. */
    for (int r = 0; r < 4; r++) {
        if (lp_is_plain(in[r], inlen[r])) {
            for (int rd = 0; rd < LP_NREADERS; rd++) {
                char *c = canon(in[r], inlen[r], r == 0 ? LP_K_MEAS : LP_K_TAG, rd);
                ASSERT(strlen(c) == inlen[r] && !memcmp(c, in[r], inlen[r]),
                       "canonical form of a plain value differs (role %d, reader %s)",
                       r, lp_reader_name[rd]);
                free(c);
            }
        }
    }

    /* A line as the module builds it: prefix "meas,host=V", the series'
     * ",vhost=V", ",route=R" (or "") and static tags ",K=V", the method,
     * status, and the request's tag ",K=R" (InfluxMetricsTagFrom) or none. */
    prefix = malloc(strlen(esc[0]) + strlen(esc[1]) + 8);
    plen_prefix = (size_t)sprintf(prefix, "%s,host=%s", esc[0], esc[1]);
    vhost = malloc(strlen(esc[1]) + 8);
    sprintf(vhost, ",vhost=%s", esc[1]);
    route = malloc(strlen(esc[2]) + 8);
    sprintf(route, ",route=%s", esc[2]);
    tags = malloc(strlen(esc[3]) + strlen(esc[1]) + 4);
    sprintf(tags, ",%s=%s", esc[3], esc[1]);
    reqtag = malloc(strlen(esc[3]) + strlen(esc[2]) + 4);
    sprintf(reqtag, ",%s=%s", esc[3], esc[2]);
    upstream = malloc(strlen(esc[2]) + 12);
    sprintf(upstream, ",upstream=%s", esc[2]);
    memset(&pt, 0, sizeof(pt));
    pt.ts_ns = pick_i64(&x);
    pt.duration_us = pick_i64(&x);
    pt.bytes_sent = pick_i64(&x);
    ids[0] = tn_server(reg, vhost, tags);
    has_route = (mix(&x) & 3) != 0;
    ids[1] = has_route ? tn_id(reg, 1, route) : 0;
    pt.server = (uint16_t)ids[0];
    pt.route = (uint16_t)ids[1];
    has_tag = (mix(&x) & 1) != 0;
    pt.reqtag = has_tag ? tn_tag(reg, reqtag) : 0;
    /* The optional tags and numeric fields (InfluxMetricsFields). */
    pt.fields = (uint8_t)(mix(&x) & (IMX_F_TTFB | IMX_F_BYTES_RECEIVED | IMX_F_PROTOCOL
                                     | IMX_F_TLS | IMX_F_UPSTREAM));
    pt.protocol = (uint8_t)mix(&x);
    pt.tls = (uint8_t)mix(&x);
    pt.upstream = (mix(&x) & 1) ? (uint16_t)tn_id(reg, 2, upstream) : 0;
    pt.ttfb_us = (uint32_t)mix(&x);
    pt.bytes_received = pick_i64(&x);
    pt.status = (__typeof__(pt.status))((mix(&x) & 1) ? mix(&x) : 100 + mix(&x) % 500);
    switch (mix(&x) % 6) {          /* sampling: no field, 1..10000, or more */
    case 0: case 1: case 2: pt.sample = 0; break;
    case 3: pt.sample = (__typeof__(pt.sample))(1 + mix(&x) % 10000); break;
    case 4: pt.sample = 10000; break;
    default: pt.sample = (__typeof__(pt.sample))mix(&x); break;
    }

    /* (A text equal to a reserved one, ",route=other", gets its id.) */
    ASSERT(ids[0] >= 0 && ids[1] >= 0 && (!has_route || pt.route > 0) && (!has_tag || pt.reqtag),
           "registry refused a text");
    max = imx_line_max(plen_prefix, &ns, &pt);
    line = malloc(max);                 /* exactly: ASan guards the bound */
    n = imx_encode_line(line, prefix, plen_prefix, &ns, &pt, NULL);
    ASSERT(n <= max, "line of %zu bytes, bound %zu", n, max);
    ASSERT(n > 0 && line[n - 1] == '\n', "line does not end in a newline");
    if (memchr(line, '\n', n - 1)) {
        show("line", line, n);
        FAIL("newline inside the line");
    }

    if (in[0][0] == '#' && esc[0][0] == '#' && !strict_comment) {
        goto out;               /* known: the line is a comment (see above) */
    }

    {
        char status[16], rate[16];
        lp_point_t p;
        int want_tags = 5 + has_route + (pt.reqtag ? 1 : 0)
                        + !!(pt.fields & IMX_F_PROTOCOL) + !!(pt.fields & IMX_F_TLS)
                        + !!(pt.fields & IMX_F_UPSTREAM);
        int want_fields = 2 + (pt.sample ? 1 : 0) + !!(pt.fields & IMX_F_TTFB)
                          + !!(pt.fields & IMX_F_BYTES_RECEIVED);

        snprintf(status, sizeof(status), "%u", (unsigned)pt.status);
        /* sample_rate: sample / 10000 (at most 1), without trailing zeros. */
        snprintf(rate, sizeof(rate), "%.4f", (pt.sample > 10000 ? 10000 : pt.sample) / 10000.0);
        while (strchr(rate, '.') && (rate[strlen(rate) - 1] == '0' || rate[strlen(rate) - 1] == '.')) {
            rate[strlen(rate) - 1] = '\0';
        }
        p.cap = n + 64;
        p.buf = malloc(p.cap);
        for (int rd = 0; rd < LP_NREADERS; rd++) {
            char *cm = canon(in[0], inlen[0], LP_K_MEAS, rd);
            char *cv = canon(in[1], inlen[1], LP_K_TAG, rd);
            char *cr = in[2] == in[1] && inlen[2] == inlen[1] ? cv
                       : canon(in[2], inlen[2], LP_K_TAG, rd);
            char *ck = in[3] == in[1] && inlen[3] == inlen[1] ? cv
                       : canon(in[3], inlen[3], LP_K_TAG, rd);
            int ok = lp_parse(rd, line, n - 1, &p), t = 0;

            if (ok != 1) {
                show("line", line, n);
                FAIL("reader %s: %s", lp_reader_name[rd],
                     ok < 0 ? "the line is a comment" : "not a valid line");
            }
            if (p.ntags != want_tags) {
                show("line", line, n);
                FAIL("reader %s: %d tags, want %d", lp_reader_name[rd], p.ntags, want_tags);
            }
            expect_str(&p.meas, cm, "measurement", rd, line, n);
            expect_str(&p.key[t], "host", "key host", rd, line, n);
            expect_str(&p.val[t++], cv, "host", rd, line, n);
            expect_str(&p.key[t], "vhost", "key vhost", rd, line, n);
            expect_str(&p.val[t++], cv, "vhost", rd, line, n);
            expect_str(&p.key[t], "method", "key method", rd, line, n);
            expect_str(&p.val[t++], "GET", "method", rd, line, n);
            expect_str(&p.key[t], "status", "key status", rd, line, n);
            expect_str(&p.val[t++], status, "status", rd, line, n);
            if (has_route) {
                expect_str(&p.key[t], "route", "key route", rd, line, n);
                expect_str(&p.val[t++], cr, "route", rd, line, n);
            }
            expect_str(&p.key[t], ck, "static tag key", rd, line, n);
            expect_str(&p.val[t++], cv, "static tag value", rd, line, n);
            if (pt.reqtag) {
                expect_str(&p.key[t], ck, "request tag key", rd, line, n);
                expect_str(&p.val[t++], cr, "request tag value", rd, line, n);
            }
            if (pt.fields & IMX_F_PROTOCOL) {
                expect_str(&p.key[t], "protocol", "key protocol", rd, line, n);
                expect_str(&p.val[t++], imx_protocol_names[pt.protocol < IMX_PROTO_N
                                                           ? pt.protocol : 0],
                           "protocol", rd, line, n);
            }
            if (pt.fields & IMX_F_TLS) {
                expect_str(&p.key[t], "tls", "key tls", rd, line, n);
                expect_str(&p.val[t++], imx_tls_names[pt.tls < IMX_TLS_N ? pt.tls
                                                      : IMX_TLS_OTHER], "tls", rd, line, n);
            }
            if (pt.fields & IMX_F_UPSTREAM) {
                expect_str(&p.key[t], "upstream", "key upstream", rd, line, n);
                expect_str(&p.val[t++], pt.upstream ? cr : "-", "upstream", rd, line, n);
            }
            if (!(p.nfields == want_fields && lp_eqz(&p.fkey[0], "duration_us")
                  && p.fint[0] && p.fval[0] == pt.duration_us
                  && lp_eqz(&p.fkey[1], "bytes_sent") && p.fint[1]
                  && p.fval[1] == pt.bytes_sent && p.ts == pt.ts_ns
                  && (!pt.sample || (lp_eqz(&p.fkey[2], "sample_rate") && !p.fint[2]
                                     && lp_eqz(&p.fraw[2], rate)))
                  && (!(pt.fields & IMX_F_TTFB)
                      || (lp_eqz(&p.fkey[2 + !!pt.sample], "ttfb_us")
                          && p.fval[2 + !!pt.sample] == (long long)pt.ttfb_us))
                  && (!(pt.fields & IMX_F_BYTES_RECEIVED)
                      || (lp_eqz(&p.fkey[want_fields - 1], "bytes_received")
                          && p.fval[want_fields - 1] == pt.bytes_received)))) {
                show("line", line, n);
                FAIL("reader %s: fields or timestamp differ (sample %u, want rate %s)",
                     lp_reader_name[rd], (unsigned)pt.sample, rate);
            }
            if (cr != cv) free(cr);
            if (ck != cv) free(ck);
            free(cm);
            free(cv);
        }
        free(p.buf);
    }

out:
    for (int r = 0; r < 4; r++) {
        free(esc[r]);
    }
    free(prefix);
    free(vhost);
    free(route);
    free(tags);
    free(reqtag);
    free(upstream);
    free(line);
    free(reg);
    apr_pool_clear(pool);
    return 0;
}
