/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * mod_influx_metrics_tagconf.h: the directives of tags (httpd glue):
 * InfluxMetricsTag, InfluxMetricsTagFrom, InfluxMetricsMaxTagValues and
 * InfluxMetricsTagValues, and the checks after the merge.
 */
#ifndef IMX_TAGCONF_H
#define IMX_TAGCONF_H

#include "httpd.h"
#include "http_config.h"

const char *imx_set_tag(cmd_parms *cmd, void *dc, const char *key, const char *val);
const char *imx_set_tag_from(cmd_parms *cmd, void *dc, const char *args);
const char *imx_set_max_tag_values(cmd_parms *cmd, void *dc, const char *arg);
const char *imx_set_tag_values(cmd_parms *cmd, void *dc, const char *key, const char *val);

/* Every InfluxMetricsTagValues key has its InfluxMetricsTagFrom. */
int imx_conf_check_tag_values(apr_pool_t *pconf);

/* No merged server writes a key twice (IMX0023). */
int imx_conf_check_tag_keys(apr_pool_t *pconf, server_rec *s);

/* The keys of the InfluxMetricsTagFrom directives of this configuration,
 * in the order of their tables (mod_influx_metrics_reqtags.h). */
apr_array_header_t *imx_conf_reqtag_keys(apr_pool_t *pconf);

#endif /* IMX_TAGCONF_H */
