/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * lp_read.h: reference line-protocol readers, and the canonical form a value
 * escaped by imx_escape() reads back as, computed from the input alone.
 *
 * Header-only, C library only; used by the fuzz target (tests/fuzz/
 * fuzz_encoder.c) and the encoding helper of tests/test_injection.py
 * (tests/fuzz/lpencode.c). tests/test_injection.py has the same canonical
 * forms in Python and checks them against a real influxd.
 *
 * Readers (LP_R_*):
 *
 *   LP_R_1X  InfluxDB 1.x as imx_lineproto.c's header comment describes it
 *            (the logic of token_1x in tests/unit/lp_parse.c): a delimiter is
 *            escaped iff the byte before it is a backslash; only backslash +
 *            special byte is unescaped (specials: ", " in measurement names,
 *            ",= " elsewhere).
 *   LP_R_2X  The 2.x family and VictoriaMetrics (token_2x): a backslash takes
 *            the next byte with it; "\\" and backslash + special are
 *            unescaped, other pairs are kept as they are.
 *   LP_R_16  What influxd 1.6 really stores (pinned by tests/test_injection.py
 *            against a real influxd): as LP_R_1X for tag keys and values,
 *            but a measurement name is unescaped TWICE, each time turning
 *            backslash + one of  , " = space  into that byte (Go's
 *            escape.Unescape: once when the point is parsed, once more when
 *            the name is taken from the series key). Measurement names that
 *            differ between one and two unescapes may not be SELECTable
 *            in 1.6 (a backslash run before , or space, typically); SHOW
 *            MEASUREMENTS and SHOW TAG VALUES do list them.
 *
 * All readers treat a line whose first byte that is not a space or tab is
 * '#' as a comment (both InfluxDB generations do): it holds no point.
 *
 * Canonical form (lp_canon), derived from the rules in imx_lineproto.c: the
 * input is read as runs of r >= 0 backslashes each followed by one unit:
 *
 *   unit                      written as                     reads back (1X)
 *   special byte c            r + (r & 1) + 1 backslashes, c  r + (r & 1) backslashes, c
 *   LF, CR, TAB               r backslashes, "\n" "\r" "\t"   the same
 *   other control byte, DEL,  r backslashes, '?'              the same
 *   byte not in valid UTF-8
 *   valid UTF-8 sequence      r backslashes, the sequence     the same
 *   end of the value          r question marks                the same
 *
 * Under 2X a run of r backslashes before c, '?' or a UTF-8 sequence reads
 * back as ceil(r / 2) backslashes (before LF/CR/TAB: ceil((r + 1) / 2) and
 * the letter). Under 16, in a measurement name, a run before ',' or ' '
 * reads back as r + (r & 1) - 1 backslashes (0 if r is 0), one before '='
 * or '"' as max(r - 2, 0); anything else as under 1X.
 *
 * A value without backslashes, control bytes and invalid UTF-8 reads back
 * unchanged under every reader ("plain", lp_is_plain).
 */
#ifndef IMX_LP_READ_H
#define IMX_LP_READ_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The checking code is not what a fuzzer should learn from, and coverage
 * callbacks on every byte it compares make it slow: no coverage for it. */
#if defined(__clang__)
#define LP_NOCOV __attribute__((no_sanitize("coverage")))
#elif defined(__has_attribute)
#if __has_attribute(no_sanitize_coverage)
#define LP_NOCOV __attribute__((no_sanitize_coverage))
#endif
#endif
#ifndef LP_NOCOV
#define LP_NOCOV
#endif
#define LP_UNUSED __attribute__((unused)) LP_NOCOV

enum { LP_R_1X, LP_R_2X, LP_R_16, LP_NREADERS };
enum { LP_K_MEAS, LP_K_TAG };       /* like IMX_ESC_MEASUREMENT, IMX_ESC_TAG */

static const char *const lp_reader_name[LP_NREADERS] __attribute__((unused)) = { "1x", "2x", "influxd-1.6" };

/* ------------------------------------------------------------------------- */
/* UTF-8, written independently of imx_lineproto.c's check                    */

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0. Decodes the
 * code point and rejects overlongs, surrogates and values past U+10FFFF. */
static LP_UNUSED size_t lp_utf8_len(const unsigned char *s, size_t n)
{
    uint32_t cp, min;
    size_t len, i;

    if (s[0] < 0x80) {
        return 1;
    }
    if ((s[0] & 0xE0) == 0xC0) {
        len = 2; cp = s[0] & 0x1F; min = 0x80;
    }
    else if ((s[0] & 0xF0) == 0xE0) {
        len = 3; cp = s[0] & 0x0F; min = 0x800;
    }
    else if ((s[0] & 0xF8) == 0xF0) {
        len = 4; cp = s[0] & 0x07; min = 0x10000;
    }
    else {
        return 0;
    }
    if (n < len) {
        return 0;
    }
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
        return 0;
    }
    return len;
}

static LP_UNUSED int lp_utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0, l;

    while (i < n) {
        if ((l = lp_utf8_len(s + i, n - i)) == 0) {
            return 0;
        }
        i += l;
    }
    return 1;
}

static LP_UNUSED int lp_is_ctl(unsigned char c)
{
    return c < 0x20 || c == 0x7F;
}

/* No backslash, no control byte, valid UTF-8: reads back exactly. */
static LP_UNUSED int lp_is_plain(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\' || lp_is_ctl(s[i])) {
            return 0;
        }
    }
    return lp_utf8_valid(s, n);
}

static LP_UNUSED int lp_is_special(unsigned char c, int kind)
{
    return c == ',' || c == ' ' || (c == '=' && kind == LP_K_TAG);
}

/* ------------------------------------------------------------------------- */
/* Canonical form                                                             */

static LP_UNUSED size_t lp_put_bs(char *o, size_t k)
{
    for (size_t j = 0; j < k; j++) {
        o[j] = '\\';
    }
    return k;
}

/* Writes the canonical form of in (len bytes) for kind and reader into out,
 * which must hold 2 * len + 1 bytes; NUL-terminates; returns the length. */
static LP_UNUSED size_t lp_canon(char *out, const unsigned char *in, size_t len,
                                 int kind, int reader)
{
    size_t i = 0, o = 0, r, sl;
    int meas16 = reader == LP_R_16 && kind == LP_K_MEAS;

    while (i < len) {
        r = 0;
        while (i < len && in[i] == '\\') {
            r++;
            i++;
        }
        if (i == len) {
            memset(out + o, '?', r);
            o += r;
            break;
        }
        unsigned char c = in[i];
        if (lp_is_special(c, kind)) {
            size_t k = reader == LP_R_2X ? (r + 1) / 2
                     : meas16 ? (r ? r + (r & 1) - 1 : 0)
                     : r + (r & 1);
            o += lp_put_bs(out + o, k);
            out[o++] = (char)c;
            i++;
        }
        else if (c == '\n' || c == '\r' || c == '\t') {
            char letter = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
            if (reader == LP_R_2X) {
                o += lp_put_bs(out + o, (r + 2) / 2);
            }
            else {
                o += lp_put_bs(out + o, r + 1);
            }
            out[o++] = letter;
            i++;
        }
        else if (meas16 && (c == '=' || c == '"')) {
            o += lp_put_bs(out + o, r >= 2 ? r - 2 : 0);
            out[o++] = (char)c;
            i++;
        }
        else {
            o += lp_put_bs(out + o, reader == LP_R_2X ? (r + 1) / 2 : r);
            if (lp_is_ctl(c) || (sl = lp_utf8_len(in + i, len - i)) == 0) {
                out[o++] = '?';
                i++;
            }
            else {
                memcpy(out + o, in + i, sl);
                o += sl;
                i += sl;
            }
        }
    }
    out[o] = '\0';
    return o;
}

/* ------------------------------------------------------------------------- */
/* Readers                                                                    */

typedef struct {
    const char *p;              /* into lp_point_t.buf */
    size_t n;
} lp_str_t;

#define LP_MAX_TAGS 16
#define LP_MAX_FIELDS 8

typedef struct {
    lp_str_t meas;
    int ntags;
    lp_str_t key[LP_MAX_TAGS], val[LP_MAX_TAGS];
    int nfields;
    lp_str_t fkey[LP_MAX_FIELDS];
    lp_str_t fraw[LP_MAX_FIELDS];   /* the value as written */
    int fint[LP_MAX_FIELDS];        /* 1: integer ("<digits>i"), 0: float */
    long long fval[LP_MAX_FIELDS];  /* integers only */
    long long ts;
    char *buf;                  /* decoded text; caller-owned, >= len + 64 */
    size_t cap, used;
} lp_point_t;

static LP_UNUSED int lp_in(unsigned char c, const char *set)
{
    for (; *set; set++) {
        if ((unsigned char)*set == c) {
            return 1;
        }
    }
    return 0;
}

/* One token from s[i..end) into p->buf. Returns the index of the byte that
 * ended it (end when the line ended). specials: what backslash unescapes;
 * reader: how delimiters and backslashes are read. */
static LP_UNUSED size_t lp_token(int reader, const char *s, size_t i, size_t end,
                       const char *delims, const char *specials,
                       lp_point_t *p, lp_str_t *tok)
{
    char *o = p->buf + p->used;
    size_t n = 0;

    if (reader == LP_R_2X) {
        while (i < end && !lp_in((unsigned char)s[i], delims)) {
            if (s[i] == '\\' && i + 1 < end) {
                if (s[i + 1] == '\\' || lp_in((unsigned char)s[i + 1], specials)) {
                    o[n++] = s[i + 1];
                }
                else {
                    o[n++] = s[i];
                    o[n++] = s[i + 1];
                }
                i += 2;
                continue;
            }
            o[n++] = s[i++];
        }
    }
    else {
        while (i < end && !(lp_in((unsigned char)s[i], delims)
                            && (i == 0 || s[i - 1] != '\\'))) {
            if (s[i] == '\\' && i + 1 < end && lp_in((unsigned char)s[i + 1], specials)) {
                i++;
            }
            o[n++] = s[i++];
        }
    }
    tok->p = o;
    tok->n = n;
    p->used += n;
    return i;
}

/* Go's escape.Unescape, in place: backslash + one of , " = space -> that byte. */
static LP_UNUSED size_t lp_unescape_go(char *s, size_t n)
{
    size_t i = 0, o = 0;

    while (i < n) {
        if (s[i] == '\\' && i + 1 < n && lp_in((unsigned char)s[i + 1], ",\"= ")) {
            s[o++] = s[i + 1];
            i += 2;
        }
        else {
            s[o++] = s[i++];
        }
    }
    return o;
}

/* A numeric field value: "<digits>i" (integer, *isint = 1) or a float in
 * plain decimal notation (digits, at most one '.', optional sign). */
static LP_UNUSED int lp_number(const lp_str_t *t, long long *v, int *isint)
{
    char num[32], *end;
    size_t i, dots = 0, digits = 0;

    if (t->n < 1 || t->n >= sizeof(num)) {
        return 0;
    }
    memcpy(num, t->p, t->n);
    num[t->n] = '\0';
    if (num[t->n - 1] == 'i') {
        *isint = 1;
        *v = strtoll(num, &end, 10);
        return end != num && !strcmp(end, "i");
    }
    *isint = 0;
    *v = 0;
    for (i = (num[0] == '-'); i < t->n; i++) {
        if (num[i] == '.') dots++;
        else if (num[i] >= '0' && num[i] <= '9') digits++;
        else return 0;
    }
    return digits > 0 && dots <= 1;
}

/* Parses one line (without its '\n') of the shape the module writes.
 * Returns 1 on success, 0 when it is not a valid line, -1 for a comment. */
static LP_UNUSED int lp_parse(int reader, const char *s, size_t len, lp_point_t *p)
{
    size_t i = 0;
    const char *tagsp = ",= ";
    int r = reader == LP_R_2X ? LP_R_2X : LP_R_1X;
    lp_str_t num;

    p->ntags = p->nfields = 0;
    p->used = 0;
    while (i < len && (s[i] == ' ' || s[i] == '\t')) {
        i++;
    }
    if (i < len && s[i] == '#') {
        return -1;
    }
    if (i != 0 || p->cap < len + 64) {
        return 0;
    }
    /* Measurement: 1.6 unescapes the raw name twice with its own codes. */
    i = lp_token(r, s, 0, len, ", ", reader == LP_R_16 ? "" : ", ", p, &p->meas);
    if (reader == LP_R_16) {
        p->meas.n = lp_unescape_go((char *)p->meas.p, p->meas.n);
        p->meas.n = lp_unescape_go((char *)p->meas.p, p->meas.n);
    }
    if (!p->meas.n) return 0;
    while (i < len && s[i] == ',') {
        if (p->ntags == LP_MAX_TAGS) return 0;
        i = lp_token(r, s, i + 1, len, ",= ", tagsp, p, &p->key[p->ntags]);
        if (i >= len || s[i] != '=') return 0;
        i = lp_token(r, s, i + 1, len, ",= ", tagsp, p, &p->val[p->ntags]);
        if (!p->key[p->ntags].n || !p->val[p->ntags].n) return 0;
        p->ntags++;
    }
    if (i >= len || s[i] != ' ') return 0;
    do {
        if (p->nfields == LP_MAX_FIELDS) return 0;
        i = lp_token(r, s, i + 1, len, ",= ", tagsp, p, &p->fkey[p->nfields]);
        if (i >= len || s[i] != '=') return 0;
        i = lp_token(r, s, i + 1, len, ", ", "", p, &p->fraw[p->nfields]);
        if (!lp_number(&p->fraw[p->nfields], &p->fval[p->nfields],
                       &p->fint[p->nfields])) return 0;
        p->nfields++;
    } while (i < len && s[i] == ',');
    if (i >= len || s[i] != ' ') return 0;
    i = lp_token(r, s, i + 1, len, " ", "", p, &num);
    if (i != len || num.n == 0 || num.n > 20) return 0;
    {
        char t[24], *end;
        memcpy(t, num.p, num.n);
        t[num.n] = '\0';
        p->ts = strtoll(t, &end, 10);
        if (*end) return 0;
    }
    return 1;
}

static LP_UNUSED int lp_eq(const lp_str_t *t, const char *s, size_t n)
{
    return t->n == n && memcmp(t->p, s, n) == 0;
}

static LP_UNUSED int lp_eqz(const lp_str_t *t, const char *s)
{
    return lp_eq(t, s, strlen(s));
}

#endif /* IMX_LP_READ_H */
