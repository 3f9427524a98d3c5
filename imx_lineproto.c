/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_lineproto.c: InfluxDB line protocol, escaping and encoding.
 *
 * Escaping is where points get injected or corrupted, so the rules are spelt
 * out here, as checked against a real InfluxDB 1.x parser:
 *
 *  - In measurement names, a comma or a space ends the name: both get a
 *    backslash. In tag keys, tag values and field keys, a comma, a space or an
 *    equals sign ends the token: all three get a backslash.
 *  - Backslashes are where parsers disagree. InfluxDB 1.x treats a special
 *    character as escaped when the byte before it is a backslash, unescapes
 *    only backslash + special character, and stores "\\" as two backslashes;
 *    parsers of the 2.x family (and VictoriaMetrics) skip the byte after any
 *    backslash and unescape "\\" to one. What is safe under both: a run of
 *    backslashes followed by an ordinary byte is written unchanged. A run
 *    followed by a special character gets one more backslash if it is odd,
 *    then the escaped character, so no reading can end the token there. A
 *    token must never end in a backslash (1.x would take the delimiter after
 *    it as escaped and reject the line), so trailing backslashes become '?'.
 *    These are the only cases where a value read back can differ from the
 *    configured one; it is the price of never splitting a token.
 *  - Line protocol cannot carry newlines or other control bytes at all. LF, CR
 *    and TAB become the two characters \n, \r, \t (as the official clients
 *    write them); any other control byte, and any byte that is not part of a
 *    valid UTF-8 sequence, becomes '?'. InfluxDB returns strings as JSON, so
 *    invalid UTF-8 would not read back as written anyway.
 *
 * Escaping runs at startup (measurement, host, vhost, tags, routes); the
 * flusher only concatenates pre-escaped strings and formats integers.
 */
#include <string.h>

#include <apr_strings.h>

#include "imx_lineproto.h"

size_t imx_utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len, i;
    unsigned char lo = 0x80, hi = 0xBF;

    if (c < 0x80) {
        return 1;
    }
    else if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    }
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    }
    else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    }
    else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi) {
        return 0;
    }
    for (i = 2; i < len; i++) {
        if (s[i] < 0x80 || s[i] > 0xBF) {
            return 0;
        }
    }
    return len;
}

static int is_special(unsigned char c, imx_esc_kind_t kind)
{
    return c == ',' || c == ' ' || (c == '=' && kind == IMX_ESC_TAG);
}

#define PUT(ch) do { if (o + 1 >= outsz) return (size_t)-1; out[o++] = (char)(ch); } while (0)

size_t imx_escape(char *out, size_t outsz, const char *in, size_t len,
                  imx_esc_kind_t kind)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t i = 0, o = 0, run = 0, k;

    if (outsz == 0) {
        return (size_t)-1;
    }
    while (i < len) {
        unsigned char c = s[i];
        size_t sl;

        if (c == '\\') {
            run++;
            i++;
            continue;
        }
        if (is_special(c, kind)) {
            for (k = 0; k < run + (run & 1); k++) PUT('\\');
            run = 0;
            PUT('\\');
            PUT(c);
            i++;
            continue;
        }
        for (k = 0; k < run; k++) PUT('\\');
        run = 0;
        if (c == '\n' || c == '\r' || c == '\t') {
            PUT('\\');
            PUT(c == '\n' ? 'n' : c == '\r' ? 'r' : 't');
            i++;
        }
        else if (c < 0x20 || c == 0x7F) {
            PUT('?');
            i++;
        }
        else if ((sl = imx_utf8_len(s + i, len - i)) == 0) {
            PUT('?');
            i++;
        }
        else {
            if (o + sl >= outsz) {
                return (size_t)-1;
            }
            memcpy(out + o, s + i, sl);
            o += sl;
            i += sl;
        }
    }
    /* A trailing backslash would escape the delimiter after the token. */
    for (k = 0; k < run; k++) PUT('?');
    out[o] = '\0';
    return o;
}
#undef PUT

char *imx_pescape(apr_pool_t *p, const char *in, imx_esc_kind_t kind)
{
    size_t len = strlen(in);
    size_t cap = 2 * len + 1;
    char *out = apr_palloc(p, cap);

    /* Cannot fail: every input byte yields at most two output bytes. */
    imx_escape(out, cap, in, len, kind);
    return out;
}

/* Longest decimal form of a uint32. */
#define U32_DIGITS 10

const char *const imx_protocol_names[IMX_PROTO_N] = {
    "other", "HTTP/0.9", "HTTP/1.0", "HTTP/1.1", "HTTP/2.0"
};
const char *const imx_tls_names[IMX_TLS_N] = {
    "none", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3", "other"
};

/* A registry text by kind and id; an id the registry does not hold (it was
 * full) reads as the kind's reserved "other" (imx_names.h). */
static const char *name_of(const imx_names_src_t *ns, int kind, uint32_t id,
                           size_t *len, size_t *split)
{
    const char *t = NULL;

    if (ns->reg) {
        t = imx_names_get(ns->reg, kind, id, len, split);
        if (!t) {
            t = imx_names_get(ns->reg, kind, kind == IMX_NAMES_ROUTE ? IMX_ROUTE_OTHER : 0,
                              len, split);
        }
    }
    if (!t) {
        static const char *const fallback[3] = { ",vhost=other", "", ",upstream=-" };
        t = fallback[kind];
        *len = *split = strlen(t);
    }
    return t;
}

static const char *method_of(const imx_names_src_t *ns, const imx_point_t *pt)
{
    const char *m = pt->method < ns->nmethods && ns->methods ? ns->methods[pt->method] : NULL;
    return m ? m : "OTHER";
}

static const char *reqtag_of(const imx_names_src_t *ns, const imx_point_t *pt)
{
    size_t len, split;

    if (pt->reqtag & IMX_REQTAG_FIXED) {
        return ns->reg ? imx_names_get(ns->reg, IMX_NAMES_FIXED, pt->reqtag & 0xffff, &len,
                                       &split) : NULL;
    }
    return pt->reqtag && ns->reqtag_text ? ns->reqtag_text(pt->reqtag) : NULL;
}

size_t imx_line_max(size_t prefix_len, const imx_names_src_t *ns, const imx_point_t *pt)
{
    size_t slen, ssplit, rlen, rsplit, ulen = 0, usplit;
    const char *tag = reqtag_of(ns, pt);

    name_of(ns, IMX_NAMES_SERVER, pt->server, &slen, &ssplit);
    name_of(ns, IMX_NAMES_ROUTE, pt->route, &rlen, &rsplit);
    if (pt->fields & IMX_F_UPSTREAM) {
        name_of(ns, IMX_NAMES_UPSTREAM, pt->upstream, &ulen, &usplit);
    }
    return prefix_len + slen + rlen + ulen
        + sizeof(",method=") - 1 + strlen(method_of(ns, pt))
        + sizeof(",status=") - 1 + U32_DIGITS
        + (tag ? strlen(tag) : 0)
        + sizeof(",protocol=HTTP/0.9,tls=TLSv1.1") - 1
        + sizeof(" duration_us=") - 1
        + IMX_VALUES_MAX;
}

#define PUT_LIT(o, lit) (memcpy((o), (lit), sizeof(lit) - 1), (o) + sizeof(lit) - 1)

static char *put_mem(char *o, const char *s, size_t n)
{
    memcpy(o, s, n);
    return o + n;
}

static char *put_str(char *o, const char *s)
{
    return put_mem(o, s, strlen(s));
}

/* "00".."99": integers go out two digits per step. */
static const char digits2[201] =
    "0001020304050607080910111213141516171819"
    "2021222324252627282930313233343536373839"
    "4041424344454647484950515253545556575859"
    "6061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* The number writers below are inlined into the encoder's one loop (the
 * per-point cost is a budget: see bench/): a call per number would cost
 * more than the digits. */
#define INLINE static inline __attribute__((always_inline))

/* The leading pair of digits (one digit if below 10). */
INLINE char *put_lead(char *o, unsigned d)
{
    if (d < 10) {
        *o = (char)('0' + d);
        return o + 1;
    }
    memcpy(o, digits2 + 2 * d, 2);
    return o + 2;
}

/* n pairs of digits of f, a fixed-point number with `bits` fraction bits
 * whose integer part is the next pair: each further pair by a
 * multiplication by 100. Inlined with constants, the loop unrolls. */
static inline __attribute__((always_inline)) char *put_pairs(char *o, uint64_t f,
                                                             unsigned bits, int n)
{
#pragma GCC unroll 4
    for (int i = 0; i < n; i++) {
        memcpy(o + 2 * i, digits2 + 2 * (f >> bits), 2);
        f = (f & ((UINT64_C(1) << bits) - 1)) * 100;
    }
    return o + 2 * n;
}

/* The same, with the first pair as one digit when below 10. */
static inline __attribute__((always_inline)) char *put_lead_pairs(char *o, uint64_t f,
                                                                  unsigned bits, int n)
{
    o = put_lead(o, (unsigned)(f >> bits));
    return put_pairs(o, (f & ((UINT64_C(1) << bits) - 1)) * 100, bits, n - 1);
}

/* Up to 8 digits (x < 10^8), no leading zeros, with no division: x over a
 * power of 100 as a fixed-point number (the multipliers are 2^32 / 100,
 * 2^32 / 10^4 and 2^48 / 10^6 rounded up; the excess stays below the last
 * digit pair, checked for every x by tests/unit/test_digits.c). */
INLINE char *put_small(char *o, uint32_t x)
{
    if (x < 100) {
        return put_lead(o, x);
    }
    if (x < 10000) {
        return put_lead_pairs(o, (uint64_t)x * 42949673u, 32, 2);
    }
    if (x < 1000000) {
        return put_lead_pairs(o, (uint64_t)x * 429497u, 32, 3);
    }
    return put_lead_pairs(o, (uint64_t)x * 281474977u, 48, 4);
}

/* Exactly 8 digits of x < 10^8, leading zeros kept. */
INLINE char *put8(char *o, uint32_t x)
{
    return put_pairs(o, (uint64_t)x * 281474977u, 48, 4);
}

/* Values past 10^8 are rare in a point but for its timestamp (which
 * put_ts writes): out of line. */
static char *put_large(char *o, uint64_t v)
{
    uint64_t rest;

    if (v < 10000000000000000ULL) {
        o = put_small(o, (uint32_t)(v / 100000000u));
        return put8(o, (uint32_t)(v % 100000000u));
    }
    rest = v % 10000000000000000ULL;
    o = put_small(o, (uint32_t)(v / 10000000000000000ULL));
    o = put8(o, (uint32_t)(rest / 100000000u));
    return put8(o, (uint32_t)(rest % 100000000u));
}

INLINE char *put_u64(char *o, uint64_t v)
{
    return v < 100000000u ? put_small(o, (uint32_t)v) : put_large(o, v);
}

char *imx_put_u64(char *o, uint64_t v)
{
    return put_u64(o, v);
}

INLINE char *put_i64(char *o, int64_t v)
{
    if (v < 0) {
        *o++ = '-';
        return put_u64(o, (uint64_t)0 - (uint64_t)v);
    }
    return put_u64(o, (uint64_t)v);
}

size_t imx_encode_series(char *out, const char *prefix, size_t prefix_len,
                         const imx_names_src_t *ns, const imx_point_t *pt)
{
    size_t slen, ssplit, rlen, rsplit;
    const char *sv = name_of(ns, IMX_NAMES_SERVER, pt->server, &slen, &ssplit);
    const char *rt = name_of(ns, IMX_NAMES_ROUTE, pt->route, &rlen, &rsplit);
    const char *tag = reqtag_of(ns, pt);
    char *o = out;

    o = put_mem(o, prefix, prefix_len);
    o = put_mem(o, sv, ssplit);                 /* ",vhost=.." */
    o = PUT_LIT(o, ",method=");
    o = put_str(o, method_of(ns, pt));
    o = PUT_LIT(o, ",status=");
    o = put_u64(o, pt->status);
    o = put_mem(o, rt, rlen);
    o = put_mem(o, sv + ssplit, slen - ssplit); /* static tags */
    if (tag) {
        o = put_str(o, tag);
    }
    if (pt->fields & IMX_F_PROTOCOL) {
        o = PUT_LIT(o, ",protocol=");
        o = put_str(o, imx_protocol_names[pt->protocol < IMX_PROTO_N ? pt->protocol : 0]);
    }
    if (pt->fields & IMX_F_TLS) {
        o = PUT_LIT(o, ",tls=");
        o = put_str(o, imx_tls_names[pt->tls < IMX_TLS_N ? pt->tls : IMX_TLS_OTHER]);
    }
    if (pt->fields & IMX_F_UPSTREAM) {
        size_t ulen, usplit;
        const char *up = name_of(ns, IMX_NAMES_UPSTREAM, pt->upstream, &ulen, &usplit);
        o = put_mem(o, up, ulen);
    }
    o = PUT_LIT(o, " duration_us=");
    return (size_t)(o - out);
}

/* A timestamp (ns) through the cache of its milliseconds' digits: a point
 * is the millisecond of its start and its ticket there (imx_ts.h), so
 * neighbouring points share the first 13 digits, copied as a fixed 16
 * bytes (the line has room past them, see IMX_VALUES_MAX; the digits after
 * them overwrite the rest), and the ticket is six digits. */
static __attribute__((noinline)) void ts_cache_fill(imx_ts_cache_t *tc, int64_t ms)
{
    tc->len = (uint32_t)(put_u64(tc->text, (uint64_t)ms) - tc->text);
    tc->ms = ms;
}

INLINE char *put_ts(char *o, int64_t ts, imx_ts_cache_t *tc)
{
    int64_t ms;
    uint32_t tick;

    if (!tc || ts < 1000000000000000LL) {
        return put_i64(o, ts);
    }
    ms = ts / 1000000;
    tick = (uint32_t)(ts - ms * 1000000);
    if (ms != tc->ms) {
        ts_cache_fill(tc, ms);
    }
    memcpy(o, tc->text, 16);
    o += tc->len;
    /* Exactly six digits, leading zeros kept: most tickets are below 100
     * (the first ones of a millisecond); else the x < 10^6 case of
     * put_small, without its leading-digit step. */
    if (tick < 100) {
        memcpy(o, "0000", 4);
        memcpy(o + 4, digits2 + 2 * tick, 2);
        return o + 6;
    }
    return put_pairs(o, (uint64_t)tick * 429497u, 32, 3);
}

static __attribute__((noinline)) size_t values_full(char *out, const imx_point_t *pt,
                                                   int64_t ts_ns, const char *rid,
                                                   imx_ts_cache_t *tc)
{
    char *o = out;

    o = put_i64(o, pt->duration_us);
    o = PUT_LIT(o, "i,bytes_sent=");
    o = put_i64(o, pt->bytes_sent);
    *o++ = 'i';
    if (pt->sample) {
        /* A float: 10000 -> 1, 1000 -> 0.1, 25 -> 0.0025. */
        o = PUT_LIT(o, ",sample_rate=");
        if (pt->sample >= 10000) {
            *o++ = '1';
        }
        else {
            unsigned v = pt->sample, d = 1000;
            *o++ = '0';
            *o++ = '.';
            do {
                *o++ = (char)('0' + v / d);
                v %= d;
                d /= 10;
            } while (v && d);
        }
    }
    if (pt->fields & IMX_F_TTFB) {
        o = PUT_LIT(o, ",ttfb_us=");
        o = imx_put_u64(o, pt->ttfb_us);
        *o++ = 'i';
    }
    if (pt->fields & IMX_F_BYTES_RECEIVED) {
        o = PUT_LIT(o, ",bytes_received=");
        o = put_i64(o, pt->bytes_received);
        *o++ = 'i';
    }
    if ((pt->fields & IMX_F_REQUEST_ID) && rid && pt->rid_len) {
        size_t n = pt->rid_len < IMX_RID_MAX ? pt->rid_len : IMX_RID_MAX;

        o = PUT_LIT(o, ",request_id=\"");
        /* The glue admits only bytes that need no escaping; whatever else
         * a corrupted cell might hold cannot end the string or the line. */
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)rid[i];
            *o++ = c < 0x21 || c > 0x7e || c == '"' || c == '\\' ? '?' : (char)c;
        }
        *o++ = '"';
    }
    *o++ = ' ';
    o = put_ts(o, ts_ns, tc);
    *o++ = '\n';
    return (size_t)(o - out);
}

/* The common point (no optional field, not sampled, numbers below 10^8) in
 * one straight line. */
size_t imx_encode_values(char *out, const imx_point_t *pt, int64_t ts_ns, const char *rid,
                         imx_ts_cache_t *tc)
{
    char *o;

    if ((pt->fields | pt->sample) || (uint64_t)pt->duration_us >= 100000000u
        || (uint64_t)pt->bytes_sent >= 100000000u) {
        return values_full(out, pt, ts_ns, rid, tc);
    }
    o = put_small(out, (uint32_t)pt->duration_us);
    o = PUT_LIT(o, "i,bytes_sent=");
    o = put_small(o, (uint32_t)pt->bytes_sent);
    o = PUT_LIT(o, "i ");
    o = put_ts(o, ts_ns, tc);
    *o++ = '\n';
    return (size_t)(o - out);
}

size_t imx_encode_line(char *out, const char *prefix, size_t prefix_len,
                       const imx_names_src_t *ns, const imx_point_t *pt, const char *rid)
{
    size_t n = imx_encode_series(out, prefix, prefix_len, ns, pt);

    return n + imx_encode_values(out + n, pt, pt->ts_ns, rid, NULL);
}

/* ------------------------------------------------------------------------- */
/* Bodies                                                                     */

size_t imx_lp_lines_end(const char *data, size_t len, uint32_t lines)
{
    size_t cut = 0;

    for (uint32_t seen = 0; seen < lines; seen++) {
        const char *nl = memchr(data + cut, '\n', len - cut);
        if (!nl) {
            return 0;
        }
        cut = (size_t)(nl - data) + 1;
    }
    return cut;
}

void imx_lp_join(char *buf, size_t *len, uint32_t extra_have, const char *data, size_t dlen,
                 uint32_t extra)
{
    size_t xe = extra ? imx_lp_lines_end(data, dlen, extra) : 0;

    if (xe) {
        size_t at = extra_have ? imx_lp_lines_end(buf, *len, extra_have) : 0;

        memmove(buf + at + xe, buf + at, *len - at);
        memcpy(buf + at, data, xe);
    }
    memcpy(buf + *len + xe, data + xe, dlen - xe);
    *len += dlen;
}
