/*
 * mod_influx_metrics_tags.h: tags taken from the request
 * (InfluxMetricsTagFrom), with a server-wide cap on their number of values
 * (InfluxMetricsMaxTagValues).
 *
 * Values are escaped and interned in shared memory, one table per
 * InfluxMetricsTagFrom, so a point can carry a pointer to its tag text that
 * stays valid for the life of the process, and every child sees the same set
 * of admitted values: once a table is full, new values are written as
 * "other", in every child alike. Each restart starts from empty tables, once
 * no child that may still point into them is left (see
 * mod_influx_metrics_tags.c).
 */
#ifndef IMX_TAGS_H
#define IMX_TAGS_H

#include "httpd.h"
#include "ap_mpm.h"

/* Longest escaped ",key=value" text; longer values become "other". */
#define IMX_TAG_TEXT_MAX 160

/* post_config: the segment (once per parent) for ntables tables of
 * max_values values each, in two banks; picks this generation's bank, empty
 * unless children of older generations still use it. */
apr_status_t imx_tags_init(server_rec *s, int ntables, int max_values);

/* child_status hook (parent): counts the live children of each bank. */
void imx_tags_child_status(server_rec *s, pid_t pid, ap_generation_t gen, int slot,
                           mpm_child_status state);

/* Request path: a reference (batch.h's imx_point_t.tag) to the interned
 * ",key=value" for table idx, or other_ref when the table is full or the
 * value too long. Lock-free; no allocation. */
uint32_t imx_tags_intern(int idx, const char *key_escaped, const char *value,
                         uint32_t other_ref);

/* imx_tag_text_fn: the text of a reference, NULL once its table was emptied
 * (a later restart) or when there is none. */
const char *imx_tags_text(uint32_t ref);

#endif /* IMX_TAGS_H */
