/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * mod_influx_metrics_config.h: the configuration of mod_influx_metrics
 * (httpd glue, as mod_md_config.h): the command table, the records'
 * makers and merges, the documented defaults, and the checks after the
 * merge.
 */
#ifndef IMX_CONFIG_H
#define IMX_CONFIG_H

#include "mod_influx_metrics_records.h"

/* The main server's settings as they apply (defaults for what is unset). */
void imx_conf_settings(const imx_srv_conf_t *main_conf, imx_settings_t *st);

/* The command table and the record makers of the module structure. */
extern const command_rec imx_cmds[];
void *imx_create_dir_conf(apr_pool_t *p, char *dir);
void *imx_merge_dir_conf(apr_pool_t *p, void *basev, void *addv);
void *imx_create_srv_conf(apr_pool_t *p, server_rec *s);
void *imx_merge_srv_conf(apr_pool_t *p, void *basev, void *addv);

/* check_config hook (configtest too): settings that are each valid but
 * wrong together, a tag key written twice, a spool directory that cannot
 * be used. */
int imx_conf_check(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s);

/* What the directives of this configuration collected, for startup: the
 * routes, escaped, by index (index 0: none). */
apr_array_header_t *imx_conf_routes(apr_pool_t *pconf);

#endif /* IMX_CONFIG_H */
