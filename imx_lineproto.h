/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_lineproto.h: InfluxDB line protocol: escaping, numbers, the lines of
 * request points, and the few operations on bodies of lines the engine
 * needs (cutting, joining).
 */
#ifndef IMX_LINEPROTO_H
#define IMX_LINEPROTO_H

#include <stddef.h>
#include <stdint.h>

#include <apr_pools.h>

#include "imx_names.h"
#include "imx_point.h"

/* Which escaping rules apply: they differ between measurement names and
 * tag keys/values/field keys (see imx_lineproto.c). */
typedef enum {
    IMX_ESC_MEASUREMENT,
    IMX_ESC_TAG                 /* tag keys, tag values, field keys */
} imx_esc_kind_t;

/* Escapes `in` (len bytes) into out (capacity outsz, NUL-terminated).
 * Returns the length written, or (size_t)-1 when out is too small (outsz of
 * 2 * len + 1 always suffices). Line protocol has no escape for newlines or
 * other control bytes: LF, CR and TAB become the two characters \n, \r, \t
 * (as the official clients do), other control bytes and invalid UTF-8 become
 * '?'. Nothing the input holds can end the value, the tag set or the line. */
size_t imx_escape(char *out, size_t outsz, const char *in, size_t len,
                  imx_esc_kind_t kind);

/* The same, allocated from pool p. */
char *imx_pescape(apr_pool_t *p, const char *in, imx_esc_kind_t kind);

/* Length of the valid UTF-8 sequence at s (n > 0 bytes left), 0 if the
 * bytes there are not one: overlongs, surrogates and code points past
 * U+10FFFF are not. */
size_t imx_utf8_len(const unsigned char *s, size_t n);

/* Writes v in decimal at o (at most 20 bytes, no NUL); returns the end. */
char *imx_put_u64(char *o, uint64_t v);

extern const char *const imx_protocol_names[IMX_PROTO_N];  /* "HTTP/1.1", ... */
extern const char *const imx_tls_names[IMX_TLS_N];         /* "none", "TLSv1.3", ... */

/* What turns a point's indices into text. All of it must stay valid and
 * mean the same for as long as any ring holds points naming it. */
typedef struct imx_names_src {
    const imx_names_t *reg;     /* servers, routes, upstreams, fixed texts */
    const char *const *methods; /* escaped method names by index; NULL: "OTHER" */
    unsigned nmethods;
    imx_reqtag_text_fn *reqtag_text;    /* may be NULL: no request tags */
} imx_names_src_t;

/* Upper bound of one encoded line for `pt` with the given line prefix length. */
size_t imx_line_max(size_t prefix_len, const imx_names_src_t *ns, const imx_point_t *pt);

/* Writes the part of pt's line that its series decides, from `prefix`
 * ("measurement,host=..") to " duration_us=", at out (which must hold
 * imx_line_max() bytes). Returns bytes written. */
size_t imx_encode_series(char *out, const char *prefix, size_t prefix_len,
                         const imx_names_src_t *ns, const imx_point_t *pt);

/* Most bytes imx_encode_values() writes. */
#define IMX_VALUES_MAX (4 * 21 + 80 + 2 * IMX_RID_MAX + 20)

/* The milliseconds of the last timestamp written, in digits: neighbouring
 * points share them, so most timestamps cost six digits, not nineteen. */
typedef struct imx_ts_cache {
    int64_t ms;                 /* -1: none yet */
    uint32_t len;
    char text[24];
} imx_ts_cache_t;

/* Writes the rest of the line: the field values, the timestamp ts_ns
 * (pt->ts_ns, or the unique one the encoder gave it, see imx_ts.h) and
 * '\n'. rid: the request id (pt->rid_len bytes, already validated); tc:
 * NULL, or a cache the caller keeps between calls. */
size_t imx_encode_values(char *out, const imx_point_t *pt, int64_t ts_ns, const char *rid,
                         imx_ts_cache_t *tc);

/* Both: one whole line ("prefix,vhost=...,method=..,status=.. fields ts\n"). */
size_t imx_encode_line(char *out, const char *prefix, size_t prefix_len,
                       const imx_names_src_t *ns, const imx_point_t *pt, const char *rid);

/* Bodies: lines, each ending in '\n'. */

/* Where the first `lines` lines of data end (0 if it has fewer). */
size_t imx_lp_lines_end(const char *data, size_t len, uint32_t lines);

/* Appends data (dlen bytes: its first `extra` lines are other lines, the
 * module's own, then points) to the lines at buf (*len bytes, its first
 * extra_have lines other lines), which must have room: data's other lines
 * go after buf's, so that a body's other lines always come first (a 413
 * split counts them so), its points at the end. */
void imx_lp_join(char *buf, size_t *len, uint32_t extra_have, const char *data, size_t dlen,
                 uint32_t extra);

#endif /* IMX_LINEPROTO_H */
