/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * mod_influx_metrics_request.h: the request path (httpd glue).
 */
#ifndef IMX_REQUEST_H
#define IMX_REQUEST_H

#include "httpd.h"

#include "imx_prom.h"
#include "imx_ring.h"

/* Method names by index: httpd's M_* numbers, then HEAD and OTHER. */
#define IMX_METHODS (M_INVALID + 2)

/* post_config, in the parent: what requests are recorded as (mode:
 * IMX_MODE_*), the method names and the "other" text of each request tag. */
void imx_request_post_config(apr_pool_t *pconf, apr_pool_t *ptemp, server_rec *s, int mode);

/* The escaped method names (IMX_METHODS of them; NULL: not a method). */
const char *const *imx_request_methods(void);

/* child_init, once the flusher runs: the ring requests are recorded into. */
void imx_request_child(imx_ring_t *ring);

/* child_init: the Prometheus table requests are counted into. */
void imx_request_prom(imx_prom_table_t *t);

/* log_transaction hook (APR_HOOK_FIRST). */
int imx_request_log(request_rec *r);

/* insert_filter and insert_error_filter hooks: the filters that measure
 * what InfluxMetricsFields asks for, only for requests that are recorded. */
void imx_request_insert_filter(request_rec *r);

#endif /* IMX_REQUEST_H */
