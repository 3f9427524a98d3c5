/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * mod_influx_metrics_reqtags.h: tags taken from the request
 * (InfluxMetricsTagFrom), with a server-wide cap on their number of values
 * (InfluxMetricsMaxTagValues).
 *
 * Values are escaped and interned in shared memory, one table per
 * InfluxMetricsTagFrom, so a point can carry a pointer to its tag text that
 * stays valid for the life of the process, and every child sees the same set
 * of admitted values: once a table is full, new values are written as
 * "other", in every child alike. Each restart starts from empty tables, once
 * no child that may still point into them is left (see
 * mod_influx_metrics_reqtags.c).
 */
#ifndef IMX_REQTAGS_H
#define IMX_REQTAGS_H

#include "httpd.h"
#include "ap_mpm.h"

/* Longest escaped ",key=value" text; longer values become "other". */
#define IMX_REQTAG_TEXT_MAX 160

/* post_config: the segment (once per parent) for ntables tables of
 * max_values values each, in two banks; picks this generation's bank, empty
 * unless children of older generations still use it. */
apr_status_t imx_reqtags_init(server_rec *s, int ntables, int max_values);

/* child_status hook (parent): counts the live children of each bank. */
void imx_reqtags_child_status(server_rec *s, pid_t pid, ap_generation_t gen, int slot,
                           mpm_child_status state);

/* Request path: a reference (imx_point_t.reqtag) to the interned
 * ",key=value" for table idx, or other_ref when the table is full or the
 * value too long. Lock-free; no allocation. */
uint32_t imx_reqtags_intern(int idx, const char *key_escaped, const char *value,
                         uint32_t other_ref);

/* imx_reqtag_text_fn: the text of a reference, NULL once its table was emptied
 * (a later restart) or when there is none. */
const char *imx_reqtags_text(uint32_t ref);

#endif /* IMX_REQTAGS_H */
