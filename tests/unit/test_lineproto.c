/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * Unit tests of the line-protocol encoder (imx_lineproto.c): the escaping
 * table, injection attempts read back by both families of parsers, decimal
 * formatting, and the flusher's cache of series texts, line for line
 * against imx_encode_line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <apr_pools.h>

#include "imx_engine.h"
#include "imx_lineproto.h"

#include "check.h"
#include "fixture.h"
#include "lp_parse.h"
#include "../test_names.h"

static void test_escape_table(void)
{
    static const struct { const char *in; imx_esc_kind_t k; const char *out; } t[] = {
        { "plain", IMX_ESC_TAG, "plain" },
        { "eu west", IMX_ESC_TAG, "eu\\ west" },
        { "a,b=c", IMX_ESC_TAG, "a\\,b\\=c" },
        { "a=b", IMX_ESC_MEASUREMENT, "a=b" },
        { "my meas,x", IMX_ESC_MEASUREMENT, "my\\ meas\\,x" },
        { "say \"hi\"", IMX_ESC_TAG, "say\\ \"hi\"" },
        { "a\\b", IMX_ESC_TAG, "a\\b" },            /* before ordinary: as is */
        { "a\\\\b", IMX_ESC_TAG, "a\\\\b" },
        { "a\\,b", IMX_ESC_TAG, "a\\\\\\,b" },      /* odd run before special: padded */
        { "a\\\\,b", IMX_ESC_TAG, "a\\\\\\,b" },    /* even run: kept */
        { "end\\", IMX_ESC_TAG, "end?" },           /* never end in a backslash */
        { "end\\\\", IMX_ESC_TAG, "end??" },
        { "line\nnext", IMX_ESC_TAG, "line\\nnext" },
        { "cr\rtab\t", IMX_ESC_TAG, "cr\\rtab\\t" },
        { "nul\001bell\007del\177", IMX_ESC_TAG, "nul?bell?del?" },
        { "caf\xc3\xa9", IMX_ESC_TAG, "caf\xc3\xa9" },
        { "bad\xc3(", IMX_ESC_TAG, "bad?(" },
        { "overlong\xc0\xaf", IMX_ESC_TAG, "overlong??" },
        { "surrogate\xed\xa0\x80", IMX_ESC_TAG, "surrogate???" },
        { "emoji\xf0\x9f\x98\x80", IMX_ESC_TAG, "emoji\xf0\x9f\x98\x80" },
        { "", IMX_ESC_TAG, "" },
    };
    char out[256];

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        size_t n = imx_escape(out, sizeof(out), t[i].in, strlen(t[i].in), t[i].k);
        CHECK(n == strlen(t[i].out) && !strcmp(out, t[i].out),
              "escape(%s) = '%s', want '%s'", t[i].in, out, t[i].out);
    }
    /* Too small an output is refused, not overrun. */
    CHECK(imx_escape(out, 4, "a b c", 5, IMX_ESC_TAG) == (size_t)-1, "overflow not detected");
    /* 2 * len + 1 always suffices. */
    CHECK(imx_escape(out, 7, ",,,", 3, IMX_ESC_TAG) == 6, "worst case size");
}

/* Values made of the bytes that matter most to a parser. */
static size_t hostile(char *buf, size_t max)
{
    static const char alphabet[] = "ab ,=\\\"\n\r\t'\x01\xc3\xa9\xff#{}";
    size_t n = 1 + rnd() % max;

    for (size_t i = 0; i < n; i++) {
        buf[i] = alphabet[rnd() % (sizeof(alphabet) - 1)];
    }
    buf[n] = '\0';
    return n;
}

/* Whatever the tag values hold, both families of parsers read exactly the
 * tags and fields that were written: nothing is injected. Where the value
 * has no backslash, control byte or non-ASCII byte, 1.x reads it back exactly. */
static void test_no_injection(void)
{
    char raw[3][64], esc[3][160], vhost[200], tags[400], route[200], line[1024];
    imx_names_t *reg = tn_new(4096);
    imx_names_src_t ns = { reg, (const char *const[]){ "GET" }, 1, NULL };
    imx_point_t pt;
    parsed_t p;
    int exact = 0;

    for (int iter = 0; iter < 200000; iter++) {
        for (int k = 0; k < 3; k++) {
            size_t len = hostile(raw[k], 40);
            imx_escape(esc[k], sizeof(esc[k]), raw[k], len, IMX_ESC_TAG);
        }
        snprintf(vhost, sizeof(vhost), ",vhost=%s", esc[0]);
        snprintf(tags, sizeof(tags), ",%s=%s", esc[1], esc[2]);
        snprintf(route, sizeof(route), ",route=%s", esc[2]);
        tn_reset(reg, 4096);
        memset(&pt, 0, sizeof(pt));
        pt.ts_ns = 1700000000123456789LL + iter;
        pt.duration_us = iter;
        pt.bytes_sent = -iter;
        pt.server = tn_server(reg, vhost, tags);
        pt.route = (iter & 1) ? (uint16_t)tn_id(reg, 1, route) : 0;
        pt.reqtag = (iter & 2) ? tn_tag(reg, tags) : 0;
        pt.status = 200;
        CHECK(pt.server > 0 && (!(iter & 1) || pt.route > 1), "registry");
        CHECK(imx_line_max(11, &ns, &pt) < sizeof(line), "line_max");
        size_t n = imx_encode_line(line, "m,host=h\\ 1", 11, &ns, &pt, NULL);
        CHECK(n <= imx_line_max(11, &ns, &pt), "line longer than its bound");
        CHECK(line[n - 1] == '\n' && memchr(line, '\n', n - 1) == NULL,
              "newline inside a line: %.*s", (int)n, line);
        for (int fam = 0; fam < 2; fam++) {
            int ok = parse_line(fam ? token_2x : token_1x, line, n - 1, &p);
            int want_tags = 5 + (iter & 1) + ((iter & 2) ? 1 : 0);
            CHECK(ok, "family %d cannot parse: %.*s", fam, (int)n, line);
            if (!ok) {
                continue;
            }
            CHECK(!strcmp(p.meas, "m"), "measurement '%s'", p.meas);
            CHECK(p.ntags == want_tags, "family %d: %d tags, want %d: %.*s", fam,
                  p.ntags, want_tags, (int)n, line);
            CHECK(p.nfields == 2 && !strcmp(p.fkey[0], "duration_us")
                  && p.fval[0] == iter && !strcmp(p.fkey[1], "bytes_sent")
                  && p.fval[1] == -iter, "fields: %.*s", (int)n, line);
            CHECK(p.ts == pt.ts_ns, "timestamp");
            CHECK(!strcmp(p.val[0], "h 1") && !strcmp(p.key[2], "method")
                  && !strcmp(p.val[3], "200"), "fixed tags: %.*s", (int)n, line);
            if (fam == 0 && !strpbrk(raw[0], "\\\n\r\t\x01\xc3\xa9\xff")) {
                CHECK(!strcmp(p.val[1], raw[0]), "vhost '%s' read back as '%s'",
                      raw[0], p.val[1]);
                exact++;
            }
        }
    }
    CHECK(exact > 1000, "too few exact round trips checked: %d", exact);
    free(reg);
}

/* Decimal formatting (the encoder's, for every number it writes) against
 * snprintf: every power of ten and its neighbours, a stride through each
 * 8-digit chunk, and random values. */
static void test_put_u64(void)
{
    uint64_t x = 88172645463325252ULL;
    char a[32], b[32];
    int bad = 0;

    for (uint64_t i = 0; i < 3000000 && bad < 5; i++) {
        uint64_t v;

        switch (i % 4) {
        case 0: v = i * 33; break;                              /* small */
        case 1: v = (i * 33) * 100000000ULL + 99999999 - i * 33 % 100000000; break;
        case 2: x ^= x << 13; x ^= x >> 7; x ^= x << 17; v = x; break;
        default: v = x >> (i % 64); break;
        }
        *imx_put_u64(a, v) = '\0';
        snprintf(b, sizeof(b), "%llu", (unsigned long long)v);
        if (strcmp(a, b)) {
            CHECK(0, "imx_put_u64(%s) wrote %s", b, a);
            bad++;
        }
    }
    for (uint64_t p = 1;; p *= 10) {
        for (int d = -1; d <= 1; d++) {
            *imx_put_u64(a, p + (uint64_t)(int64_t)d) = '\0';
            snprintf(b, sizeof(b), "%llu", (unsigned long long)(p + (uint64_t)(int64_t)d));
            CHECK(!strcmp(a, b), "imx_put_u64(%s) wrote %s", b, a);
        }
        if (p > UINT64_MAX / 10) {
            break;
        }
    }
    *imx_put_u64(a, UINT64_MAX) = '\0';
    CHECK(!strcmp(a, "18446744073709551615"), "UINT64_MAX: %s", a);
}

typedef struct {
    char *buf;
    size_t len, cap;
} capture_t;

static imx_send_result_t capture_send(void *ctx, const char *body, size_t len, int gzipped,
                                      apr_time_t deadline, imx_send_info_t *info)
{
    capture_t *c = ctx;

    (void)gzipped; (void)deadline; (void)info;
    if (c->len + len > c->cap) {
        c->cap = (c->len + len) * 2;
        c->buf = realloc(c->buf, c->cap);
    }
    memcpy(c->buf + c->len, body, len);
    c->len += len;
    return IMX_SEND_OK;
}

/* The flusher's cache of series texts: thousands of points over more
 * series than it has entries (so entries are replaced and collide), with
 * every optional tag and field, each line exactly what imx_encode_line
 * writes for the point alone; request ids, hostile bytes included, never
 * leave their quotes. */
static void test_series_cache(void)
{
    enum { N = 6000 };
    static const char *const methods[] = { "GET", "POST", "PUT" };
    imx_names_t *reg = tn_new(1 << 20);
    imx_names_src_t ns = { reg, methods, 3, NULL };
    capture_t cap = { NULL, 0, 0 };
    imx_engine_conf_t c;
    imx_point_t *pts = calloc(N, sizeof(*pts));
    char (*rids)[IMX_RID_MAX] = calloc(N, IMX_RID_MAX);
    uint16_t servers[40], routes[12], ups[5];
    uint32_t tags[7];
    char text[64], err[128], line[2048];
    apr_pool_t *p;
    imx_engine_t *e;
    uint32_t x = 7;
    size_t off = 0;

    for (int i = 0; i < 40; i++) {
        snprintf(text, sizeof(text), ",vhost=host%d.example", i);
        servers[i] = (uint16_t)tn_server(reg, text, i % 3 ? ",dc=eu" : "");
    }
    for (int i = 0; i < 12; i++) {
        snprintf(text, sizeof(text), ",route=r%d", i);
        routes[i] = i ? (uint16_t)tn_id(reg, 1, text) : 0;
    }
    for (int i = 0; i < 5; i++) {
        snprintf(text, sizeof(text), ",upstream=http://10.0.0.%d:80", i);
        ups[i] = i ? (uint16_t)tn_id(reg, 2, text) : 0;
    }
    for (int i = 0; i < 7; i++) {
        snprintf(text, sizeof(text), ",tenant=t%d", i);
        tags[i] = i ? tn_tag(reg, text) : 0;
    }
    apr_pool_create(&p, NULL);
    base_conf(&c, NULL, 8192, 1000);
    c.send = capture_send;
    c.send_limit = NULL;
    c.send_ctx = &cap;
    c.names = ns;
    c.rid_cells = 1;
    e = imx_engine_create(p, &c, err, sizeof(err));
    CHECK(e != NULL, "create: %s", err);
    for (int i = 0; i < N; i++) {
        imx_point_t *pt = &pts[i];

        x = x * 1103515245u + 12345u;
        pt->ts_ns = 1764000000000000000LL + (int64_t)i * 999983;
        pt->duration_us = (int64_t)(x % 100000);
        pt->bytes_sent = (int64_t)(x >> 7);
        pt->server = servers[(x >> 3) % 40];
        pt->route = routes[(x >> 9) % 12];
        pt->method = (uint8_t)((x >> 13) % 4);      /* 3: not in the table */
        pt->status = (uint16_t)(100 + (x >> 15) % 500);
        pt->reqtag = tags[(x >> 17) % 7];
        pt->fields = (uint8_t)(x >> 20);
        pt->protocol = (uint8_t)((x >> 11) % 7);
        pt->tls = (uint8_t)((x >> 5) % 8);
        pt->upstream = ups[(x >> 23) % 5];
        pt->ttfb_us = x >> 1;
        pt->bytes_received = (int64_t)(x >> 2);
        pt->sample = (x & 1) ? (uint16_t)(x % 10001) : 0;
        pt->rid_len = (uint8_t)((x >> 25) % (IMX_RID_MAX + 1));
        for (int k = 0; k < pt->rid_len; k++) {
            x = x * 1103515245u + 12345u;
            rids[i][k] = (char)(x >> 16);               /* any byte */
        }
        CHECK(imx_engine_push(e, pt, rids[i]) == 1, "push %d", i);
        if (i % 1500 == 1499) {
            imx_engine_flush_now(e);
        }
    }
    imx_engine_flush_now(e);
    for (int i = 0; i < N; i++) {
        size_t n = imx_encode_line(line, "apache_request,host=test", 24, &ns, &pts[i],
                                   rids[i]);
        const char *q;
        int quotes = 0;

        CHECK(n <= imx_line_max(24, &ns, &pts[i]), "line %d longer than its bound", i);
        if (off + n > cap.len || memcmp(cap.buf + off, line, n)) {
            CHECK(0, "line %d differs:\n  sent %.*s\n  want %.*s", i,
                  (int)(off + n <= cap.len ? n : cap.len - off), cap.buf + off, (int)n, line);
            break;
        }
        for (q = line; q < line + n - 1; q++) {
            CHECK(*q != '\n' && *q != '\\', "line %d: a newline or backslash", i);
            quotes += *q == '"';
        }
        CHECK(quotes == ((pts[i].fields & IMX_F_REQUEST_ID) && pts[i].rid_len ? 2 : 0),
              "line %d: %d quotes", i, quotes);
        off += n;
    }
    CHECK(off == cap.len, "%zu bytes sent, %zu expected", cap.len, off);
    imx_engine_stop(e);
    apr_pool_destroy(p);
    free(cap.buf);
    free(pts);
    free(rids);
    free(reg);
}

/* The values and timestamp through the cache of milliseconds' digits, for
 * runs of points sharing a millisecond, tickets below and above 100, new
 * milliseconds and seconds, and times too small for the cache: the same
 * bytes as without the cache. */
static void test_ts_cache(void)
{
    imx_ts_cache_t tc = { -1, 0, "" };
    char a[512], b[512];
    imx_point_t pt;
    int64_t ts = 1765000000123000000LL;

    memset(&pt, 0, sizeof(pt));
    for (int i = 0; i < 200000; i++) {
        uint32_t r = rnd();
        size_t na, nb;

        switch (r % 8) {
        case 0: ts += 1000000; break;                       /* next millisecond */
        case 1: ts += 1000000000LL * (r % 3); break;        /* another second */
        case 2: ts = ts / 1000000 * 1000000 + r % 500000; break;   /* any ticket */
        case 3: ts = (int64_t)(r % 1000000) * 1000000000LL + r % 1000; break;
        default: ts++; break;
        }
        pt.duration_us = (int64_t)(rnd() % 100000000u);
        pt.bytes_sent = (int64_t)(rnd() % (r & 1 ? 100 : 100000000u));
        na = imx_encode_values(a, &pt, ts, NULL, &tc);
        nb = imx_encode_values(b, &pt, ts, NULL, NULL);
        CHECK(na == nb && !memcmp(a, b, na), "ts %lld: '%.*s' vs '%.*s'", (long long)ts,
              (int)na, a, (int)nb, b);
    }
}

int main(void)
{
    apr_initialize();
    test_escape_table();
    test_put_u64();
    test_series_cache();
    test_ts_cache();
    test_no_injection();
    apr_terminate();
    return check_report();
}
