/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * mod_influx_metrics_names.h: the module's names registry (httpd glue
 * around imx_names.h), in a shared segment that lives as long as httpd's
 * parent: the same text gets the same id in every generation, so a point
 * or a series key recorded by a child of any generation names the same
 * texts for a child of any other.
 */
#ifndef IMX_NAMES_GLUE_H
#define IMX_NAMES_GLUE_H

#include "httpd.h"

#include "imx_names.h"

/* post_config, in the parent: the id of a server's tag text (",vhost=
 * <escaped>" and the static tags text, escaped); IMX_SERVER_OTHER when the
 * registry is full. */
int imx_reg_server_id(server_rec *s, const char *vhost_text, const char *tags_text);

/* The same for a route's escaped name; NULL (no route) is IMX_ROUTE_NONE,
 * and a full registry gives IMX_ROUTE_OTHER. */
int imx_reg_route_id(server_rec *s, const char *route_escaped);

/* The id of a text of kind IMX_NAMES_UPSTREAM (",upstream=<escaped>") or
 * IMX_NAMES_FIXED; -1 when the registry is full. */
int imx_reg_text_id(server_rec *s, int kind, const char *text);

/* The registry, made once per parent (NULL if it cannot be). */
const imx_names_t *imx_reg_open(server_rec *s);

/* The registry as made (for the engine's imx_names_src_t), valid for the
 * process's life; NULL before imx_reg_open. */
const imx_names_t *imx_reg(void);

/* post_config: logs (IMX0020) how many texts of this configuration did
 * not fit. */
void imx_reg_report(server_rec *s);

#endif /* IMX_NAMES_GLUE_H */
