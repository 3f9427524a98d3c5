/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * lpencode.c: the module's real escaper and line encoder (imx_lineproto.c) as a
 * filter, for tests/test_injection.py, which builds it with cc into a
 * temporary directory:
 *
 *   cc -std=gnu11 $(apr-1-config --includes --cppflags) -I. -Itests \
 *      -o lpencode tests/fuzz/lpencode.c imx_lineproto.c imx_names.c imx_hist.c \
 *      $(apr-1-config --link-ld --libs)
 *
 * One request per input line, one answer per output line. Values are
 * written as "x" followed by their bytes in hex ("x" alone is the empty
 * value, "-" means none); fields are separated by single spaces.
 *
 *   E <M|T> <value>
 *       imx_escape for a measurement (M) or a tag key/value (T); answers the
 *       escaped value, or "ERR".
 *   C <M|T> <1x|2x|16> <value>
 *       the canonical form of tests/lp_read.h (lp_canon) for that reader.
 *   L <ts> <duration_us> <bytes_sent> <status> <meas> <host> <vhost> <method>
 *     <route|-> [<key> <value>]...
 *       escapes every name and value as the module does (the measurement
 *       with IMX_ESC_MEASUREMENT, the rest with IMX_ESC_TAG), builds the
 *       prefix "meas,host=..", the series (",vhost=..", ",route=.." or "",
 *       static tags ",k=v,.."), and answers imx_encode_line's line, '\n'
 *       included.
 *
 * Anything malformed answers "BAD <reason>".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imx_engine.h"
#include "lp_read.h"
#include "test_names.h"

typedef struct {
    char *p;
    size_t n;
} buf_t;

static int unhex(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes "x<hex>" into a new NUL-terminated buffer; "-" gives p == NULL. */
static int value(const char *tok, buf_t *b)
{
    size_t len = strlen(tok), i;

    b->p = NULL;
    b->n = 0;
    if (!strcmp(tok, "-")) {
        return 1;
    }
    if (tok[0] != 'x' || (len - 1) % 2) {
        return 0;
    }
    b->n = (len - 1) / 2;
    b->p = malloc(b->n + 1);
    for (i = 0; i < b->n; i++) {
        int hi = unhex(tok[1 + 2 * i]), lo = unhex(tok[2 + 2 * i]);
        if (hi < 0 || lo < 0) {
            free(b->p);
            b->p = NULL;
            return 0;
        }
        b->p[i] = (char)(hi * 16 + lo);
    }
    b->p[b->n] = '\0';
    return 1;
}

static void put_hex(const char *s, size_t n)
{
    static const char dig[] = "0123456789abcdef";

    putchar('x');
    for (size_t i = 0; i < n; i++) {
        putchar(dig[(unsigned char)s[i] >> 4]);
        putchar(dig[(unsigned char)s[i] & 15]);
    }
    putchar('\n');
}

static char *escape(const buf_t *b, imx_esc_kind_t kind)
{
    size_t cap = 2 * b->n + 1;
    char *out = malloc(cap);

    if (imx_escape(out, cap, b->p, b->n, kind) == (size_t)-1) {
        free(out);
        return NULL;
    }
    return out;
}

#define MAXTOK 64

static void request(char *line)
{
    char *tok[MAXTOK], *save = NULL, *t;
    int nt = 0;

    for (t = strtok_r(line, " \n", &save); t; t = strtok_r(NULL, " \n", &save)) {
        if (nt == MAXTOK) {
            puts("BAD too many fields");
            return;
        }
        tok[nt++] = t;
    }
    if (nt == 0) {
        puts("BAD empty request");
        return;
    }

    if (!strcmp(tok[0], "E") && nt == 3) {
        buf_t v;
        char *e;
        if (!value(tok[2], &v) || !v.p) {
            puts("BAD value");
            return;
        }
        e = escape(&v, tok[1][0] == 'M' ? IMX_ESC_MEASUREMENT : IMX_ESC_TAG);
        if (e) {
            put_hex(e, strlen(e));
        }
        else {
            puts("ERR");
        }
        free(e);
        free(v.p);
        return;
    }

    if (!strcmp(tok[0], "C") && nt == 4) {
        buf_t v;
        int reader = !strcmp(tok[2], "2x") ? LP_R_2X : !strcmp(tok[2], "16") ? LP_R_16 : LP_R_1X;
        char *c;
        size_t n;
        if (!value(tok[3], &v) || !v.p) {
            puts("BAD value");
            return;
        }
        c = malloc(2 * v.n + 1);
        n = lp_canon(c, (const unsigned char *)v.p, v.n,
                     tok[1][0] == 'M' ? LP_K_MEAS : LP_K_TAG, reader);
        put_hex(c, n);
        free(c);
        free(v.p);
        return;
    }

    if (!strcmp(tok[0], "L") && nt >= 10 && nt % 2 == 0) {
        buf_t v[MAXTOK];
        char *esc[MAXTOK], *prefix, *vhost, *route, *tags, *out;
        size_t tlen = 1, plen, n;
        imx_names_t *reg;
        imx_names_src_t ns;
        imx_point_t pt;
        int i, ok = 1;

        memset(esc, 0, sizeof(esc));
        for (i = 5; i < nt; i++) {
            if (!value(tok[i], &v[i]) || (!v[i].p && i != 9)) {
                ok = 0;
            }
            else if (v[i].p) {
                esc[i] = escape(&v[i], i == 5 ? IMX_ESC_MEASUREMENT : IMX_ESC_TAG);
            }
        }
        if (!ok) {
            puts("BAD value");
            for (i = 5; i < nt; i++) free(v[i].p), free(esc[i]);
            return;
        }
        prefix = malloc(strlen(esc[5]) + strlen(esc[6]) + 8);
        plen = (size_t)sprintf(prefix, "%s,host=%s", esc[5], esc[6]);
        vhost = malloc(strlen(esc[7]) + 8);
        sprintf(vhost, ",vhost=%s", esc[7]);
        for (i = 10; i < nt; i++) {
            tlen += strlen(esc[i]) + 1;
        }
        tags = malloc(tlen);
        tags[0] = '\0';
        for (i = 10; i + 1 < nt; i += 2) {
            strcat(tags, ",");
            strcat(tags, esc[i]);
            strcat(tags, "=");
            strcat(tags, esc[i + 1]);
        }
        route = malloc(esc[9] ? strlen(esc[9]) + 8 : 1);
        if (esc[9]) {
            sprintf(route, ",route=%s", esc[9]);
        }
        else {
            route[0] = '\0';
        }
        reg = tn_new((uint32_t)(strlen(vhost) + strlen(route) + strlen(tags) + 256));
        memset(&ns, 0, sizeof(ns));
        ns.reg = reg;
        ns.methods = (const char *const *)&esc[8];
        ns.nmethods = 1;
        memset(&pt, 0, sizeof(pt));     /* pt.sample = 0: no sample_rate field */
        pt.ts_ns = strtoll(tok[1], NULL, 10);
        pt.duration_us = strtoll(tok[2], NULL, 10);
        pt.bytes_sent = strtoll(tok[3], NULL, 10);
        pt.status = (__typeof__(pt.status))strtoul(tok[4], NULL, 10);
        pt.server = (uint16_t)tn_server(reg, vhost, tags);
        pt.route = (uint16_t)(*route ? tn_id(reg, 1, route) : 0);
        pt.method = 0;
        pt.reqtag = 0;                     /* InfluxMetricsTagFrom: not used here */
        out = malloc(imx_line_max(plen, &ns, &pt));
        n = imx_encode_line(out, prefix, plen, &ns, &pt, NULL);
        free(reg);
        put_hex(out, n);
        free(out);
        free(prefix);
        free(vhost);
        free(route);
        free(tags);
        for (i = 5; i < nt; i++) free(v[i].p), free(esc[i]);
        return;
    }
    puts("BAD unknown request");
}

int main(void)
{
    char *line = NULL;
    size_t cap = 0;

    while (getline(&line, &cap, stdin) > 0) {
        request(line);
    }
    free(line);
    return 0;
}
