/*
 * lineproto.c: InfluxDB line protocol, escaping and encoding.
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

#include "batch.h"

/* Length of the valid UTF-8 sequence starting at s (n bytes left), 0 if the
 * bytes there are not one. Rejects overlongs, surrogates and > U+10FFFF. */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
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
        else if ((sl = utf8_seq_len(s + i, len - i)) == 0) {
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

/* Longest decimal form of an int64 with sign, and of a uint32. */
#define I64_DIGITS 20
#define U32_DIGITS 10

size_t imx_line_max(size_t prefix_len, const imx_point_t *pt)
{
    return prefix_len
        + strlen(pt->series->vhost) + strlen(pt->series->tags)
        + sizeof(",method=") - 1 + strlen(pt->method)
        + sizeof(",status=") - 1 + U32_DIGITS
        + strlen(pt->series->route) + (pt->tag ? strlen(pt->tag) : 0)
        + sizeof(" duration_us=") - 1 + I64_DIGITS + 1
        + sizeof(",bytes_sent=") - 1 + I64_DIGITS + 1
        + (pt->sample ? sizeof(",sample_rate=0.0000") - 1 : 0)
        + 1 + I64_DIGITS + 1;
}

static char *put_str(char *o, const char *s)
{
    while (*s) {
        *o++ = *s++;
    }
    return o;
}

#define PUT_LIT(o, lit) (memcpy((o), (lit), sizeof(lit) - 1), (o) + sizeof(lit) - 1)

char *imx_put_u64(char *o, uint64_t v)
{
    char tmp[I64_DIGITS];
    size_t n = 0;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n) {
        *o++ = tmp[--n];
    }
    return o;
}

static char *put_i64(char *o, int64_t v)
{
    if (v < 0) {
        *o++ = '-';
        return imx_put_u64(o, (uint64_t)0 - (uint64_t)v);
    }
    return imx_put_u64(o, (uint64_t)v);
}

size_t imx_encode_line(char *out, const char *prefix, size_t prefix_len,
                       const imx_point_t *pt)
{
    char *o = out;

    memcpy(o, prefix, prefix_len);
    o += prefix_len;
    o = put_str(o, pt->series->vhost);
    o = PUT_LIT(o, ",method=");
    o = put_str(o, pt->method);
    o = PUT_LIT(o, ",status=");
    o = imx_put_u64(o, pt->status);
    o = put_str(o, pt->series->route);
    o = put_str(o, pt->series->tags);
    if (pt->tag) {
        o = put_str(o, pt->tag);
    }
    o = PUT_LIT(o, " duration_us=");
    o = put_i64(o, pt->duration_us);
    o = PUT_LIT(o, "i,bytes_sent=");
    o = put_i64(o, pt->bytes_sent);
    if (pt->sample) {
        /* A float: 10000 -> 1, 1000 -> 0.1, 25 -> 0.0025. */
        o = PUT_LIT(o, "i,sample_rate=");
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
        o = PUT_LIT(o, " ");
    }
    else {
        o = PUT_LIT(o, "i ");
    }
    o = put_i64(o, pt->ts_ns);
    *o++ = '\n';
    return (size_t)(o - out);
}
