/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * mod_influx_metrics_prom.h: the Prometheus endpoint (httpd glue around
 * imx_prom.h): SetHandler influx-metrics-prometheus.
 *
 * Every child counts its requests into a table of its own in one shared
 * segment that the parent makes and keeps across graceful restarts; a
 * scrape, in whichever child serves it, adds up every table. Tables are
 * never emptied while the parent runs (a new child in a slot adds to what
 * the slot's earlier children counted), so the page's counters only grow,
 * through recycling, graceful restarts and crashes; a full restart (not
 * graceful) or a stop starts them from zero.
 */
#ifndef IMX_PROM_GLUE_H
#define IMX_PROM_GLUE_H

#include "httpd.h"

#include "imx_prom.h"

#define IMX_PROM_HANDLER "influx-metrics-prometheus"

/* A series key: 11 bits of server id, 11 of route id (the names registry,
 * the same in every generation), 6 of method index, 10 of status code;
 * plus one, so that no key is 0. */
#define IMX_PROM_KEY(server, route, method, status) \
    (((((uint64_t)(server) & 0x7ff) << 27) | (((uint64_t)(route) & 0x7ff) << 16) \
      | (((uint64_t)(method) & 0x3f) << 10) | ((uint64_t)(status) & 0x3ff)) + 1)

/* post_config: whether the configuration names the handler anywhere
 * (SetHandler, AddHandler, a rewrite's H= flag, ...): only then are
 * requests counted for it. */
int imx_prometheus_wanted(void);

/* post_config, in the parent, when wanted: the segment, made once per
 * parent and layout (buckets b, cap series per child, exemplars or not);
 * after a full restart its tables start empty again. */
apr_status_t imx_prometheus_post_config(server_rec *s, const imx_prom_buckets_t *b,
                                        uint32_t cap, int exemplars);

/* child_init: this child's table, for the request path (NULL: none). */
imx_prom_table_t *imx_prometheus_child(apr_pool_t *pchild, server_rec *s);

/* The sum of every table made so far (a scrape's view), with the
 * exemplars when asked for and recorded; NULL with *err set
 * (IMX_PROM_ENOMEM, or IMX_PROM_ELAYOUT: no segment). imx_prom_acc_free it. */
imx_prom_acc_t *imx_prometheus_read(int exemplars, int *err);

/* The handler (mod_influx_metrics_prom_page.c). */
int imx_prometheus_handler(request_rec *r);

#endif /* IMX_PROM_GLUE_H */
