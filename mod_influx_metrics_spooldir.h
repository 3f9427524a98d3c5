/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * mod_influx_metrics_spooldir.h: the spool's directory, checked at
 * configtest and made ready at startup (httpd glue).
 */
#ifndef IMX_SPOOLDIR_H
#define IMX_SPOOLDIR_H

#include "httpd.h"

/* configtest and check_config: can the directory be used (or made)? NULL if
 * so, else why not. Changes nothing on disk. */
const char *imx_spooldir_check(apr_pool_t *p, const char *dir);

/* post_config, in the parent: the directory made ready (created for the
 * children's user if missing, refused if it is a link or another's), and
 * the spool's gauges counted from its files when this parent has not
 * counted them yet (it just started, or the directory changed): files
 * outlive httpd, the gauges in shared memory do not. OK, or an error
 * (logged, IMX0014). */
int imx_spooldir_init(apr_pool_t *pconf, server_rec *s, const char *dir);

/* imx_log_fn of the spool (IMX0101); ctx: the server_rec. */
void imx_spooldir_log(void *ctx, int level, const char *msg);

#endif /* IMX_SPOOLDIR_H */
