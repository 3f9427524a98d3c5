/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * mod_influx_metrics_status_page.h: the status pages (httpd glue).
 */
#ifndef IMX_STATUS_PAGE_H
#define IMX_STATUS_PAGE_H

#include "httpd.h"

/* The handler behind SetHandler influx-metrics-status. */
int imx_status_handler(request_rec *r);

/* mod_status's status_hook: our totals on its server-status page. */
int imx_status_hook(request_rec *r, int flags);

#endif /* IMX_STATUS_PAGE_H */
