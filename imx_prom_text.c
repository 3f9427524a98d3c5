/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_prom_text.c: the text exposition of the Prometheus endpoint (see
 * imx_prom.h): label helpers, the Prometheus text format 0.0.4 and
 * OpenMetrics 1.0.0, and the choice between them.
 *
 * The two formats differ where it matters here:
 *  - metadata: 0.0.4 writes HELP then TYPE, escaping backslash and newline
 *    in HELP; OpenMetrics writes TYPE, UNIT, HELP (its order) and escapes a
 *    double quote in HELP too;
 *  - counters: in 0.0.4 the family is named like its samples, with _total;
 *    in OpenMetrics the family has no _total and its samples have it;
 *  - exemplars and "# EOF" exist only in OpenMetrics (a 0.0.4 parser takes
 *    " # {...}" after a value for garbage).
 * Everything else is written the same in both: le values are OpenMetrics'
 * canonical numbers (imx_prom_format_le), so a series is the same series
 * whichever format a scraper asks for; sums in seconds are exact decimal
 * renderings of the microseconds (never through a double); labels come in
 * the order the glue gives them, the same on every scrape.
 *
 * A scrape runs in a request, not on the request path of others: these
 * writers favour simplicity over speed, but stay linear in the output.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imx_lineproto.h"
#include "imx_prom.h"

/* ------------------------------------------------------------------------- */
/* The output buffer                                                         */

void imx_prom_out_free(imx_prom_out_t *o)
{
    free(o->buf);
    o->buf = NULL;
    o->len = o->cap = 0;
}

/* Room for need more bytes; 0 (and o failed for good) if o cannot grow. */
static int room(imx_prom_out_t *o, size_t need)
{
    size_t cap;
    char *nb;

    if (o->failed) {
        return 0;
    }
    need++;                     /* the NUL kept after the text */
    if (o->len + need <= o->cap) {
        return 1;
    }
    cap = o->cap * 2 > o->len + need ? o->cap * 2 : o->len + need;
    cap = cap < 16384 ? 16384 : cap;
    if (!(nb = realloc(o->buf, cap))) {
        o->failed = 1;
        return 0;
    }
    o->buf = nb;
    o->cap = cap;
    return 1;
}

static void put(imx_prom_out_t *o, const char *s, size_t n)
{
    if (room(o, n)) {
        memcpy(o->buf + o->len, s, n);
        o->len += n;
        o->buf[o->len] = '\0';
    }
}

static void puts_(imx_prom_out_t *o, const char *s)
{
    put(o, s, strlen(s));
}

static void putc_(imx_prom_out_t *o, char c)
{
    put(o, &c, 1);
}

static void put_u64(imx_prom_out_t *o, uint64_t v)
{
    if (room(o, 20)) {
        o->len = (size_t)(imx_put_u64(o->buf + o->len, v) - o->buf);
        o->buf[o->len] = '\0';
    }
}

/* A fraction of `digits` digits, trailing zeros cut but one kept. */
static void put_frac(imx_prom_out_t *o, uint64_t frac, int digits)
{
    char d[12] = { 0 };

    for (int i = digits - 1; i >= 0; i--, frac /= 10) {
        d[i] = (char)('0' + frac % 10);
    }
    while (digits > 1 && d[digits - 1] == '0') {
        digits--;
    }
    putc_(o, '.');
    put(o, d, (size_t)digits);
}

/* Microseconds as seconds, exactly, always with a point: 0.0, 1.5. */
static void put_seconds(imx_prom_out_t *o, uint64_t us)
{
    put_u64(o, us / 1000000);
    put_frac(o, us % 1000000, 6);
}

/* Unix time in nanoseconds as seconds: 1700000000.123456789. */
static void put_unix(imx_prom_out_t *o, int64_t ns)
{
    put_u64(o, (uint64_t)ns / 1000000000);
    put_frac(o, (uint64_t)ns % 1000000000, 9);
}

/* ------------------------------------------------------------------------- */
/* Labels                                                                    */

size_t imx_prom_escape_value(char *out, size_t outsz, const char *in, size_t len)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t o = 0;

    for (size_t i = 0; i < len;) {
        size_t n = imx_utf8_len(s + i, len - i);
        const char *w = (const char *)s + i;
        char esc[2];

        if (s[i] == '\\' || s[i] == '"' || s[i] == '\n') {
            esc[0] = '\\';
            esc[1] = s[i] == '\n' ? 'n' : (char)s[i];
            w = esc;
            n = 2;
            i++;
        }
        else if (!n || (s[i] < 0x20 && s[i] != '\t') || s[i] == 0x7f) {
            w = "?";
            n = 1;
            i++;
        }
        else {
            i += n;
        }
        if (o + n >= outsz) {
            return (size_t)-1;
        }
        memcpy(out + o, w, n);
        o += n;
    }
    if (o >= outsz) {
        return (size_t)-1;
    }
    out[o] = '\0';
    return o;
}

static int name_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
           || c == '_';
}

size_t imx_prom_label_name(char *out, size_t outsz, const char *in, size_t len)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t o = 0;

    if (outsz < 2) {
        return (size_t)-1;
    }
    if (!len || (s[0] >= '0' && s[0] <= '9')) {
        out[o++] = '_';
    }
    for (size_t i = 0; i < len;) {
        size_t n = s[i] < 0x80 ? 1 : imx_utf8_len(s + i, len - i);

        /* One '_' for a whole UTF-8 character, not one per byte. */
        if (o + 1 >= outsz) {
            return (size_t)-1;
        }
        out[o++] = name_char(s[i]) ? (char)s[i] : '_';
        i += n ? n : 1;
    }
    out[o] = '\0';
    return o;
}

/* Where the token from s ends: at an `end` byte not after a backslash
 * (InfluxDB 1.x's rule; imx_lineproto.c escapes so that it is also 2.x's). */
static size_t token_end(const char *s, size_t i, size_t len, char end)
{
    for (; i < len; i++) {
        if (s[i] == end && (i == 0 || s[i - 1] != '\\')) {
            break;
        }
    }
    return i;
}

/* s[from..to) as InfluxDB 1.x stores it: backslash + comma, space or
 * equals sign unescaped, every other byte as it is. */
static size_t lp_unescape(char *out, const char *s, size_t from, size_t to)
{
    size_t o = 0;

    for (size_t i = from; i < to; i++) {
        if (s[i] == '\\' && i + 1 < to && (s[i + 1] == ',' || s[i + 1] == ' ' || s[i + 1] == '=')) {
            i++;
        }
        out[o++] = s[i];
    }
    return o;
}

/* Whether out[0..olen), pairs this file wrote, has a label named name. */
static int has_name(const char *out, size_t olen, const char *name, size_t nlen)
{
    size_t i = 0;

    while (i < olen) {
        size_t eq = i;

        while (eq < olen && out[eq] != '=') {
            eq++;
        }
        if (eq - i == nlen && !memcmp(out + i, name, nlen)) {
            return 1;
        }
        /* Past the quoted value: a quote not escaped ends it. */
        for (i = eq + 2; i < olen && out[i] != '"'; i++) {
            i += out[i] == '\\';
        }
        i += 2;                 /* the quote and the comma */
    }
    return 0;
}

size_t imx_prom_lp_labels(char *out, size_t outsz, const char *lp, size_t len)
{
    size_t o = 0, i = 0;

    if (!outsz) {
        return (size_t)-1;
    }
    out[0] = '\0';
    if (len && lp[0] == ',') {
        i = 1;
    }
    for (; i < len; i++) {
        size_t end = token_end(lp, i, len, ','), eq = token_end(lp, i, end, '=');
        size_t start = o, klen, vlen, n;
        char *tmp;

        if (eq == end) {
            i = end;            /* no '=': not a tag */
            continue;
        }
        /* The pair unescaped goes to the end of out, as work space: what
         * is written from it (at most this much) stays in front of it. */
        if (o + (eq - i) + 2 * (end - eq) + 16 + (end - i) > outsz) {
            return (size_t)-1;
        }
        tmp = out + outsz - (end - i);
        klen = lp_unescape(tmp, lp, i, eq);
        vlen = lp_unescape(tmp + klen, lp, eq + 1, end);
        if (o) {
            out[o++] = ',';
        }
        if (klen == 2 && !memcmp(tmp, "le", 2)) {
            /* The histogram's own label: Prometheus' name for a clash. */
            memcpy(out + o, "exported_le", 11);
            n = 11;
        }
        else if ((n = imx_prom_label_name(out + o, (size_t)(tmp - (out + o)), tmp, klen))
                 == (size_t)-1) {
            return (size_t)-1;  /* cannot happen: room was checked */
        }
        if (has_name(out, start, out + o, n)) {
            o = start;          /* a name given before: the later pair left out */
            out[o] = '\0';
            i = end;
            continue;
        }
        o += n;
        out[o++] = '=';
        out[o++] = '"';
        if ((n = imx_prom_escape_value(out + o, (size_t)(tmp - (out + o)), tmp + klen, vlen))
            == (size_t)-1) {
            return (size_t)-1;
        }
        o += n;
        out[o++] = '"';
        out[o] = '\0';
        i = end;
    }
    return o;
}

char *imx_prom_plp_labels(apr_pool_t *p, const char *lp)
{
    size_t len = strlen(lp), cap = IMX_PROM_LABELS_MAX(len);
    char *out = apr_palloc(p, cap);

    if (imx_prom_lp_labels(out, cap, lp, len) == (size_t)-1) {
        out[0] = '\0';          /* cannot happen: cap is the bound */
    }
    return out;
}

/* ------------------------------------------------------------------------- */
/* Families                                                                  */

#define HELP_DURATION \
    "Time from the start of each request to its logging, after the response was sent."
#define HELP_BYTES "Response body bytes sent (as %B in mod_log_config)."

/* HELP text: backslash and newline escaped, in OpenMetrics the double
 * quote too; bytes that are not UTF-8 as '?'. */
static void put_help(imx_prom_out_t *o, imx_prom_fmt_t fmt, const char *help)
{
    const unsigned char *s = (const unsigned char *)help;
    size_t len = strlen(help);

    for (size_t i = 0; i < len;) {
        size_t n = imx_utf8_len(s + i, len - i);

        if (s[i] == '\\') {
            puts_(o, "\\\\");
        }
        else if (s[i] == '\n') {
            puts_(o, "\\n");
        }
        else if (s[i] == '"' && fmt == IMX_PROM_OPENMETRICS) {
            puts_(o, "\\\"");
        }
        else if (n) {
            put(o, help + i, n);
            i += n;
            continue;
        }
        else {
            putc_(o, '?');
        }
        i++;
    }
}

/* "# KW name<suffix> text\n". */
static void meta_line(imx_prom_out_t *o, const char *kw, const char *name, size_t nlen,
                      const char *suffix, const char *text)
{
    puts_(o, kw);
    put(o, name, nlen);
    puts_(o, suffix);
    putc_(o, ' ');
    puts_(o, text);
    putc_(o, '\n');
}

/* A family's metadata; its name is name[0..nlen) + suffix. */
static void meta(imx_prom_out_t *o, imx_prom_fmt_t fmt, const char *name, size_t nlen,
                 const char *suffix, const char *type, const char *unit, const char *help)
{
    size_t ulen = unit ? strlen(unit) : 0;
    /* A unit that is not the name's suffix would make the exposition
     * invalid: left out rather. */
    int has_unit = fmt == IMX_PROM_OPENMETRICS && ulen && !*suffix && nlen > ulen + 1
                   && name[nlen - ulen - 1] == '_' && !memcmp(name + nlen - ulen, unit, ulen);

    if (fmt == IMX_PROM_OPENMETRICS) {
        meta_line(o, "# TYPE ", name, nlen, "", type);
        if (has_unit) {
            meta_line(o, "# UNIT ", name, nlen, "", unit);
        }
    }
    if (help && *help) {
        puts_(o, "# HELP ");
        put(o, name, nlen);
        puts_(o, suffix);
        putc_(o, ' ');
        put_help(o, fmt, help);
        putc_(o, '\n');
    }
    if (fmt == IMX_PROM_TEXT) {
        meta_line(o, "# TYPE ", name, nlen, suffix, type);
    }
}

/* {labels,le="..."}: nothing when there are neither. */
static void put_labels(imx_prom_out_t *o, const char *labels, const char *le)
{
    int has = labels && *labels;

    if (!has && !le) {
        return;
    }
    putc_(o, '{');
    if (has) {
        puts_(o, labels);
    }
    if (le) {
        puts_(o, has ? ",le=\"" : "le=\"");
        puts_(o, le);
        putc_(o, '"');
    }
    putc_(o, '}');
}

static void put_exemplar(imx_prom_out_t *o, const imx_prom_exemplar_t *e)
{
    char id[2 * IMX_PROM_ID_MAX + 1];
    size_t n = imx_prom_escape_value(id, sizeof(id), e->id, e->len);

    puts_(o, " # {request_id=\"");
    put(o, id, n == (size_t)-1 ? 0 : n);
    puts_(o, "\"} ");
    put_seconds(o, e->us);
    if (e->ns > 0) {
        putc_(o, ' ');
        put_unix(o, e->ns);
    }
}

void imx_prom_write_duration(imx_prom_out_t *o, imx_prom_fmt_t fmt, imx_prom_acc_t *a,
                             imx_prom_labels_fn *labels, void *ctx)
{
    const imx_prom_buckets_t *b = imx_prom_acc_buckets(a);
    char le[IMX_PROM_BUCKETS_MAX + 1][IMX_PROM_LE_MAX];
    uint32_t n = imx_prom_acc_len(a);

    for (uint32_t k = 0; k < b->n; k++) {
        imx_prom_format_le(le[k], b->le_us[k]);
    }
    imx_prom_format_le(le[b->n], 0);
    meta(o, fmt, IMX_PROM_DURATION, sizeof(IMX_PROM_DURATION) - 1, "", "histogram", "seconds",
         HELP_DURATION);
    for (uint32_t i = 0; i < n; i++) {
        const imx_prom_series_t *s = imx_prom_acc_series(a, i);
        const char *lt = s ? labels(ctx, s->key) : NULL;
        uint64_t cum = 0;

        if (!lt) {
            continue;
        }
        for (uint32_t k = 0; k <= b->n; k++) {
            const imx_prom_exemplar_t *e;

            cum += s->b[k];
            puts_(o, IMX_PROM_DURATION "_bucket");
            put_labels(o, lt, le[k]);
            putc_(o, ' ');
            put_u64(o, cum);
            if (fmt == IMX_PROM_OPENMETRICS && (e = imx_prom_acc_exemplar(a, s, k))) {
                put_exemplar(o, e);
            }
            putc_(o, '\n');
        }
        /* _count is the sum of the buckets just written: the +Inf one. */
        puts_(o, IMX_PROM_DURATION "_count");
        put_labels(o, lt, NULL);
        putc_(o, ' ');
        put_u64(o, cum);
        putc_(o, '\n');
        puts_(o, IMX_PROM_DURATION "_sum");
        put_labels(o, lt, NULL);
        putc_(o, ' ');
        put_seconds(o, s->sum_us);
        putc_(o, '\n');
    }
}

void imx_prom_write_bytes(imx_prom_out_t *o, imx_prom_fmt_t fmt, imx_prom_acc_t *a,
                          imx_prom_labels_fn *labels, void *ctx)
{
    uint32_t n = imx_prom_acc_len(a);

    meta(o, fmt, IMX_PROM_BYTES, sizeof(IMX_PROM_BYTES) - 1,
         fmt == IMX_PROM_TEXT ? "_total" : "", "counter", "bytes", HELP_BYTES);
    for (uint32_t i = 0; i < n; i++) {
        const imx_prom_series_t *s = imx_prom_acc_series(a, i);
        const char *lt = s ? labels(ctx, s->key) : NULL;

        if (lt) {
            puts_(o, IMX_PROM_BYTES "_total");
            put_labels(o, lt, NULL);
            putc_(o, ' ');
            put_u64(o, s->bytes);
            putc_(o, '\n');
        }
    }
}

static void samples(imx_prom_out_t *o, const char *name, size_t nlen, const char *suffix,
                    const imx_prom_sample_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        put(o, name, nlen);
        puts_(o, suffix);
        put_labels(o, s[i].labels, NULL);
        putc_(o, ' ');
        put_u64(o, s[i].value);
        putc_(o, '\n');
    }
}

void imx_prom_write_gauge(imx_prom_out_t *o, imx_prom_fmt_t fmt, const char *name,
                          const char *help, const char *unit,
                          const imx_prom_sample_t *s, size_t n)
{
    size_t nlen = strlen(name);

    meta(o, fmt, name, nlen, "", "gauge", unit, help);
    samples(o, name, nlen, "", s, n);
}

void imx_prom_write_counter(imx_prom_out_t *o, imx_prom_fmt_t fmt, const char *name,
                            const char *help, const char *unit,
                            const imx_prom_sample_t *s, size_t n)
{
    size_t nlen = strlen(name);

    if (nlen > 6 && !strcmp(name + nlen - 6, "_total")) {
        nlen -= 6;
    }
    meta(o, fmt, name, nlen, fmt == IMX_PROM_TEXT ? "_total" : "", "counter", unit, help);
    samples(o, name, nlen, "_total", s, n);
}

void imx_prom_write_eof(imx_prom_out_t *o, imx_prom_fmt_t fmt)
{
    if (fmt == IMX_PROM_OPENMETRICS) {
        puts_(o, "# EOF\n");
    }
}

/* ------------------------------------------------------------------------- */
/* Negotiation                                                               */

/* An HTTP qvalue in thousandths ("0", "0.5", "1.000"), -1 if it is not one. */
static int qvalue(const char *v, size_t n)
{
    int q, scale = 100;

    if (!n || (v[0] != '0' && v[0] != '1')) {
        return -1;
    }
    q = (v[0] - '0') * 1000;
    if (n == 1) {
        return q;
    }
    if (v[1] != '.' || n > 5) {
        return -1;
    }
    for (size_t i = 2; i < n; i++, scale /= 10) {
        if (v[i] < '0' || v[i] > '9') {
            return -1;
        }
        q += (v[i] - '0') * scale;
    }
    return q > 1000 ? -1 : q;
}

#define OWS " \t"

imx_prom_fmt_t imx_prom_negotiate(const char *accept)
{
    int om = -1, text = -1;
    const char *p = accept;

    if (!p) {
        return IMX_PROM_TEXT;
    }
    while (*p) {
        const char *type;
        size_t tlen;
        int q = 1000;

        p += strspn(p, OWS ",");
        type = p;
        tlen = strcspn(p, ";," OWS);
        p += tlen;
        /* Parameters: only q matters; a quoted value may hold ';' or ','. */
        for (p += strspn(p, OWS); *p == ';'; p += strspn(p, OWS)) {
            const char *name, *val;
            size_t nlen, vlen = 0;

            p++;
            p += strspn(p, OWS);
            name = p;
            nlen = strcspn(p, "=;," OWS);
            p += nlen;
            p += strspn(p, OWS);
            val = p;
            if (*p == '=') {
                p++;
                p += strspn(p, OWS);
                val = p;
                if (*p == '"') {
                    for (p++; *p && *p != '"'; p++) {
                        p += p[0] == '\\' && p[1];
                    }
                    p += *p == '"';
                    vlen = (size_t)(p - val);
                }
                else {
                    vlen = strcspn(p, ";," OWS);
                    p += vlen;
                }
            }
            if (nlen == 1 && (name[0] == 'q' || name[0] == 'Q')) {
                q = qvalue(val, vlen);
            }
        }
        p += strcspn(p, ",");   /* anything else up to the next range */
        if (q < 0 || !tlen) {
            continue;           /* not a media range we can read: ignored */
        }
        if (tlen == 28 && !strncasecmp(type, "application/openmetrics-text", 28)) {
            om = q > om ? q : om;
        }
        else if (tlen == 10 && !strncasecmp(type, "text/plain", 10)) {
            text = q > text ? q : text;
        }
    }
    return om > 0 && om >= text ? IMX_PROM_OPENMETRICS : IMX_PROM_TEXT;
}

const char *imx_prom_content_type(imx_prom_fmt_t fmt)
{
    return fmt == IMX_PROM_OPENMETRICS
           ? "application/openmetrics-text; version=1.0.0; charset=utf-8"
           : "text/plain; version=0.0.4; charset=utf-8";
}
