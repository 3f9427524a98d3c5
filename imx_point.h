/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_point.h: one request as the request path hands it to the engine.
 *
 * A point names everything by index, never by pointer, into tables that
 * mean the same in every process of every generation of one httpd parent
 * (the names registry, imx_names.h; the method table; the request-tag
 * tables of the glue), so that a record left in shared memory by a child of
 * an older generation that died is encoded by any later child exactly as
 * it was recorded.
 */
#ifndef IMX_POINT_H
#define IMX_POINT_H

#include <stdint.h>

/* Optional fields and tags of a raw point (InfluxMetricsFields), a bitmask
 * carried in each point, so that a point is encoded as it was recorded
 * whatever the encoding process's configuration says. */
#define IMX_F_TTFB           0x01   /* field ttfb_us */
#define IMX_F_BYTES_RECEIVED 0x02   /* field bytes_received */
#define IMX_F_REQUEST_ID     0x04   /* string field request_id (when not empty) */
#define IMX_F_PROTOCOL       0x08   /* tag protocol */
#define IMX_F_TLS            0x10   /* tag tls */
#define IMX_F_UPSTREAM       0x20   /* tag upstream */

/* Values of imx_point_t.protocol and .tls: indices into fixed tables
 * (imx_lineproto.h). */
enum { IMX_PROTO_OTHER, IMX_PROTO_09, IMX_PROTO_10, IMX_PROTO_11, IMX_PROTO_20,
       IMX_PROTO_N };
enum { IMX_TLS_NONE, IMX_TLS_10, IMX_TLS_11, IMX_TLS_12, IMX_TLS_13, IMX_TLS_OTHER,
       IMX_TLS_N };

/* Longest request id (InfluxMetricsFields request_id), in bytes. */
#define IMX_RID_MAX 64

/* 56 bytes, so that a ring cell with its sequence number is one 64-byte
 * cache line (imx_ring.h). What decides a point's series (everything of its
 * line before " duration_us=") is the 16 bytes of `series`, so that the
 * encoder finds the series' text with two loads (imx_body.c). */
typedef struct imx_point {
    int64_t ts_ns;              /* request start; the encoder makes it unique
                                 * (imx_engine_conf_t.ts_table) */
    int64_t duration_us;
    int64_t bytes_sent;
    int64_t bytes_received;     /* IMX_F_BYTES_RECEIVED */
    union {
        struct {
            uint16_t server;    /* registry kind SERVER: ",vhost=.." | static tags */
            uint16_t route;     /* registry kind ROUTE: ",route=..", 0: none */
            uint16_t upstream;  /* registry kind UPSTREAM: ",upstream=..", 0: "-" */
            uint16_t status;
            uint32_t reqtag;    /* the request tag (InfluxMetricsTagFrom), 0: none */
            uint8_t method;     /* index into the methods table */
            uint8_t protocol;   /* IMX_PROTO_* */
            uint8_t tls;        /* IMX_TLS_* */
            uint8_t fields;     /* IMX_F_* */
        };
        uint64_t series[2];
    };
    uint32_t ttfb_us;           /* IMX_F_TTFB */
    uint16_t sample;            /* kept with probability sample/10000 (field
                                 * sample_rate); 0: not sampled, no field */
    uint8_t rid_len;            /* bytes of request id kept beside the cell */
    uint8_t spare;
} imx_point_t;

_Static_assert(sizeof(imx_point_t) == 56, "a point and its sequence fill a cache line");

/* A request-tag reference with this bit set names a fixed text of the
 * names registry (kind FIXED, its low 16 bits the id), such as
 * ",key=other"; without it, the reference belongs to imx_reqtag_text_fn. */
#define IMX_REQTAG_FIXED 0x80000000u

/* The text of a request tag (",key=value", escaped) or NULL when it is gone
 * (its table was emptied since). */
typedef const char *imx_reqtag_text_fn(uint32_t ref);

#endif /* IMX_POINT_H */
