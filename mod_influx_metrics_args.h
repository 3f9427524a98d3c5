/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * mod_influx_metrics_args.h: the handlers of directives whose arguments
 * take more than a word to check, and the checks the other handlers share
 * (httpd glue; the command table is mod_influx_metrics_config.c's).
 */
#ifndef IMX_ARGS_H
#define IMX_ARGS_H

#include "httpd.h"
#include "http_config.h"

/* "<directive>: invalid value '<arg>': <why>". */
const char *imx_arg_bad(cmd_parms *cmd, const char *arg, const char *why);

/* "250ms", "2s" or "2" (seconds), from min to max, into *out. */
const char *imx_arg_parse_duration(cmd_parms *cmd, const char *arg, apr_interval_time_t min,
                                   apr_interval_time_t max, apr_interval_time_t *out);

/* An integer from min to max, into *out. */
const char *imx_arg_parse_int(cmd_parms *cmd, const char *arg, long min, long max, int *out);

/* "64M", "512K", "1G" or bytes, from min to max (range: the text of both). */
const char *imx_arg_parse_size(cmd_parms *cmd, const char *arg, apr_int64_t min,
                               apr_int64_t max, const char *range, apr_off_t *out);

/* The handlers (cmd_func) of InfluxMetricsURL, InfluxMetricsToken,
 * InfluxMetricsTLSCACertificateFile, InfluxMetricsProxy,
 * InfluxMetricsSpoolDir and InfluxMetricsRequestIDHeader. */
const char *imx_set_url(cmd_parms *cmd, void *dc, const char *arg);
const char *imx_set_token(cmd_parms *cmd, void *dc, const char *arg);
const char *imx_set_ca_file(cmd_parms *cmd, void *dc, const char *arg);
const char *imx_set_proxy(cmd_parms *cmd, void *dc, const char *arg);
const char *imx_set_spool_dir(cmd_parms *cmd, void *dc, const char *arg);
const char *imx_set_rid_header(cmd_parms *cmd, void *dc, const char *arg);

#endif /* IMX_ARGS_H */
