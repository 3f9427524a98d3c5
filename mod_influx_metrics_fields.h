/*
 * mod_influx_metrics_fields.h: the optional fields and tags of request
 * points (InfluxMetricsFields): what a request_rec says about them, read by
 * the log_transaction hook.
 *
 * Everything a value can be is decided at startup (protocol and TLS version
 * names, upstream names from the configuration), so the request path only
 * stores small indexes; the one free text, the request id, is validated
 * here to a safe alphabet that needs no escaping.
 */
#ifndef IMX_FIELDS_GLUE_H
#define IMX_FIELDS_GLUE_H

#include <stddef.h>
#include <stdint.h>

#include "httpd.h"

/* InfluxMetricsFields bits (the engine's encoder uses the same). */
#ifndef IMX_F_TTFB
#define IMX_F_TTFB           0x01   /* field ttfb_us */
#define IMX_F_BYTES_RECEIVED 0x02   /* field bytes_received */
#define IMX_F_REQUEST_ID     0x04   /* string field request_id */
#define IMX_F_PROTOCOL       0x08   /* tag protocol */
#define IMX_F_TLS            0x10   /* tag tls */
#define IMX_F_UPSTREAM       0x20   /* tag upstream */
#endif

/* Longest request id kept; longer ones are not used. */
#define IMX_RID_MAX 64

/* Protocols and TLS versions, by index. */
enum { IMX_FP_OTHER, IMX_FP_HTTP10, IMX_FP_HTTP11, IMX_FP_HTTP20, IMX_FP_N };
enum { IMX_FT_NONE, IMX_FT_TLS10, IMX_FT_TLS11, IMX_FT_TLS12, IMX_FT_TLS13,
       IMX_FT_OTHER, IMX_FT_N };

/* The values of one request. */
typedef struct imx_fields_val {
    int64_t bytes_received;
    uint32_t ttfb_us;           /* 0: nothing was sent */
    uint16_t upstream;          /* 0: not proxied ("-"), 1: a worker not in
                                 * the configuration ("other") */
    uint8_t protocol;           /* IMX_FP_* */
    uint8_t tls;                /* IMX_FT_* */
    size_t rid_len;             /* 0: no id */
    char rid[IMX_RID_MAX + 1];
} imx_fields_val_t;

/* The bit of a field name, 0 if unknown. */
unsigned imx_fields_bit(const char *name);

/* Names of the tag values, by index. */
const char *imx_fields_protocol_name(unsigned i);
const char *imx_fields_tls_name(unsigned i);
/* The upstream of an id (escaped tag value), "-" for 0 or an unknown id. */
const char *imx_fields_upstream_name(unsigned id);
unsigned imx_fields_upstream_count(void);

/* register_hooks: the filters and mod_proxy's post_request hook. */
void imx_fields_register_hooks(apr_pool_t *p);

/* post_config: the upstream names of every worker and balancer member of
 * mod_proxy's configuration, in every server; whether mod_logio counts. */
void imx_fields_post_config(apr_pool_t *pconf, server_rec *s);

/* insert_filter, for a request whose server writes `fields`. */
void imx_fields_insert(request_rec *r, unsigned fields);

/* The id of a request, from (in order) a valid W3C traceparent header,
 * mod_unique_id's UNIQUE_ID, the header rid_header (may be NULL); each
 * source is used only when it holds 1 to IMX_RID_MAX bytes of
 * [A-Za-z0-9._:@/+=-]. Writes it NUL-terminated into out (IMX_RID_MAX + 1
 * bytes), returns its length, 0 if none. */
size_t imx_fields_request_id(const request_rec *r, const request_rec *last,
                             const char *rid_header, char *out);

/* Fills v with what `fields` asks for (the rest is zero). */
void imx_fields_fill(const request_rec *r, const request_rec *last, unsigned fields,
                     const char *rid_header, imx_fields_val_t *v);

#endif /* IMX_FIELDS_GLUE_H */
