/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * mod_influx_metrics_summary.h: httpd glue of InfluxMetricsMode summary|both,
 * and of the per-interval capacity point (apache_process).
 *
 * Each child records into its own histogram table in shared memory (lock-
 * free, no contention between children). Once per flush interval one child,
 * elected through shared memory, drains every table into a table of pending
 * counts and writes them as apache_summary points (so summaries are per
 * server, exact across children), and writes apache_process from the
 * scoreboard and /proc.
 *
 * Series keys name their vhost and route by ids from a registry in shared
 * memory that lives as long as httpd's parent: the same text gets the same
 * id in every generation, so a child of any generation names a key recorded
 * by a child of any other.
 */
#ifndef IMX_SUMMARY_GLUE_H
#define IMX_SUMMARY_GLUE_H

#include "httpd.h"
#include "imx_engine.h"

/* Names of this generation, escaped, built in post_config. */
typedef struct imx_summary_names {
    const char *host;           /* escaped host name */
    const char *const *methods; /* by method index */
    int nmethods;
} imx_summary_names_t;

/* 11 bits of server id, 11 of route id (mod_influx_metrics_names.h), 6 of
 * method index, 3 of status class. */
#define IMX_KEY(server, route, method, cls) \
    (((((uint32_t)(server) & 0x7ff) << 20) | (((uint32_t)(route) & 0x7ff) << 9) \
      | (((uint32_t)(method) & 0x3f) << 3) | ((uint32_t)(cls) & 0x7)) + 1)

/* post_config: the shared segment (once per parent) and the names. */
apr_status_t imx_summary_init(server_rec *s, const imx_summary_names_t *names,
                              int want_summary, uint32_t nseries,
                              apr_interval_time_t interval);

/* child_init, after imx_status_claim(): this child's table. */
void imx_summary_child(int slot);

/* What a request adds besides its duration (InfluxMetricsFields and
 * InfluxMetricsSLO): the time to first byte (0: none, nothing sent), the
 * objective (0: none), the request id (rid_len 0: none). */
typedef struct imx_summary_extra {
    uint32_t ttfb_us;
    uint64_t slo_us;
    const char *rid;
    size_t rid_len;
} imx_summary_extra_t;

/* Request path: x may be NULL. */
void imx_summary_record(uint32_t key, uint64_t us, int error, const imx_summary_extra_t *x);

/* imx_tick_fn for the engine. */
void imx_summary_tick(void *ctx, imx_engine_t *e, int final);

#endif /* IMX_SUMMARY_GLUE_H */
