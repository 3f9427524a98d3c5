/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * lp_parse.c: the unit tests' readers of line protocol (lp_parse.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lp_parse.h"

/* ------------------------------------------------------------------------- */
/* Line protocol readers, one per family of parsers (see imx_lineproto.c).   */

/* InfluxDB 1.x: a special character is escaped iff the byte before it is a
 * backslash; only backslash + special is unescaped. */
static int is_delim(const char *s, size_t i, const char *delims)
{
    return strchr(delims, s[i]) && (i == 0 || s[i - 1] != '\\');
}

size_t token_1x(const char *s, size_t i, size_t end, const char *delims,
                const char *specials, char *out, size_t outsz)
{
    size_t o = 0;

    while (i < end && !is_delim(s, i, delims)) {
        if (s[i] == '\\' && i + 1 < end && strchr(specials, s[i + 1])) {
            i++;
        }
        if (o + 1 < outsz) out[o++] = s[i];
        i++;
    }
    out[o] = '\0';
    return i;
}

/* The 2.x family: a backslash always takes the next byte with it; "\\" and
 * backslash + special are unescaped, other pairs stay as they are. */
size_t token_2x(const char *s, size_t i, size_t end, const char *delims,
                const char *specials, char *out, size_t outsz)
{
    size_t o = 0;

    while (i < end && !strchr(delims, s[i])) {
        if (s[i] == '\\' && i + 1 < end) {
            if (s[i + 1] == '\\' || strchr(specials, s[i + 1])) {
                if (o + 1 < outsz) out[o++] = s[i + 1];
            }
            else {
                if (o + 2 < outsz) { out[o++] = s[i]; out[o++] = s[i + 1]; }
            }
            i += 2;
            continue;
        }
        if (o + 1 < outsz) out[o++] = s[i];
        i++;
    }
    out[o] = '\0';
    return i;
}

/* Parses one line (without its '\n'); returns 0 when it is not valid line
 * protocol of the shape the module writes. */
int parse_line(token_fn *tok, const char *s, size_t len, parsed_t *p)
{
    size_t i;
    char num[32];

    memset(p, 0, sizeof(*p));
    i = tok(s, 0, len, ", ", ", ", p->meas, sizeof(p->meas));
    if (!p->meas[0]) return 0;
    while (i < len && s[i] == ',') {
        if (p->ntags == 16) return 0;
        i = tok(s, i + 1, len, ",= ", ",= ", p->key[p->ntags], 256);
        if (i >= len || s[i] != '=') return 0;
        i = tok(s, i + 1, len, ",= ", ",= ", p->val[p->ntags], 256);
        if (!p->key[p->ntags][0] || !p->val[p->ntags][0]) return 0;
        p->ntags++;
    }
    if (i >= len || s[i] != ' ') return 0;
    do {
        char *end;
        if (p->nfields == 8) return 0;
        i = tok(s, i + 1, len, ",= ", ",= ", p->fkey[p->nfields], 64);
        if (i >= len || s[i] != '=') return 0;
        i = tok(s, i + 1, len, ", ", "", num, sizeof(num));
        p->fval[p->nfields] = strtoll(num, &end, 10);
        if (end == num || strcmp(end, "i")) return 0;
        p->nfields++;
    } while (i < len && s[i] == ',');
    if (i >= len || s[i] != ' ') return 0;
    i = tok(s, i + 1, len, " ", "", num, sizeof(num));
    if (i != len) return 0;
    p->ts = strtoll(num, NULL, 10);
    return 1;
}

/* ------------------------------------------------------------------------- */
/* Summary lines, their series named ",k=<key>" (key_tags() in fixture.c)    */

/* The value of field `name` in the line of series ",k=<key>" in out. */
long long field_of(const char *out, uint32_t key, const char *name)
{
    char tag[32], f[64];
    const char *l, *p;

    snprintf(tag, sizeof(tag), ",k=%u ", key);
    l = strstr(out, tag);
    if (!l) {
        return -1;
    }
    snprintf(f, sizeof(f), "%s=", name);
    for (p = l; (p = strstr(p, f)) && p < strchr(l, '\n'); p++) {
        if (p[-1] == ' ' || p[-1] == ',') {
            return strtoll(p + strlen(f), NULL, 10);
        }
    }
    return -1;
}

/* Sum of field `name` over every line of out[0..len). */
unsigned long long field_total(const char *out, size_t len, const char *name)
{
    unsigned long long tot = 0;
    size_t nl = strlen(name);

    for (const char *l = out; l < out + len;) {
        const char *end = memchr(l, '\n', (size_t)(out + len - l)), *p = strchr(l, ' ');
        for (; p && p < end; p = strchr(p + 1, ',')) {
            if (!strncmp(p + 1, name, nl) && p[1 + nl] == '=') {
                tot += strtoull(p + 2 + nl, NULL, 10);
                break;
            }
        }
        l = end ? end + 1 : out + len;
    }
    return tot;
}

/* The string value of field `name` in the line of series ",k=<key>", or "". */
const char *str_field_of(const char *out, uint32_t key, const char *name)
{
    static char v[256];
    char tag[32], f[64];
    const char *l, *p, *e;
    size_t n = 0;

    v[0] = '\0';
    snprintf(tag, sizeof(tag), ",k=%u ", key);
    snprintf(f, sizeof(f), ",%s=\"", name);
    if (!(l = strstr(out, tag)) || !(p = strstr(l, f)) || p > (e = strchr(l, '\n'))) {
        return v;
    }
    for (p += strlen(f); p < e && *p != '"' && n < sizeof(v) - 1; p++) {
        if (*p == '\\') {
            p++;
        }
        v[n++] = *p;
    }
    v[n] = '\0';
    return v;
}
