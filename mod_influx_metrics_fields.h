/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * mod_influx_metrics_fields.h: the optional fields and tags of request
 * points (InfluxMetricsFields): what a request_rec says about them, read by
 * the log_transaction hook.
 *
 * Everything a tag can be is decided at startup (protocol and TLS version
 * names, upstream names from the configuration), so the request path only
 * stores small indexes; the one free text, the request id, is validated
 * here to a safe alphabet that needs no escaping.
 */
#ifndef IMX_FIELDS_GLUE_H
#define IMX_FIELDS_GLUE_H

#include <stddef.h>
#include <stdint.h>

#include "httpd.h"
#include "imx_point.h"

/* The bit (IMX_F_*) of a field name, 0 if unknown. */
unsigned imx_fields_bit(const char *name);

/* register_hooks: the filters, and the hook into mod_proxy (at pre_config). */
void imx_fields_register_hooks(apr_pool_t *p);

/* post_config: the upstream names of every worker and balancer member of
 * mod_proxy's configuration, in every server, into the names registry
 * (kind 2, as ",upstream=<escaped>"); whether mod_logio counts. */
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

/* Sets pt->fields to `fields` and fills the members it names (the others
 * are left alone); the request id goes to rid (IMX_RID_MAX + 1 bytes,
 * NUL-terminated), its length to pt->rid_len. */
void imx_fields_fill(const request_rec *r, const request_rec *last, unsigned fields,
                     const char *rid_header, imx_point_t *pt, char *rid);

#endif /* IMX_FIELDS_GLUE_H */
