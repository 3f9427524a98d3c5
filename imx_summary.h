/*
 * imx_summary.h: httpd glue of InfluxMetricsMode summary|both, and of the
 * per-interval capacity point (apache_process).
 *
 * Each child records into its own histogram table in shared memory (lock-
 * free, no contention between children). Once per flush interval one child,
 * elected by a CAS on the interval number, sums every table, writes the
 * difference from the previous sums as apache_summary points (so summaries
 * are per server, exact across children) and writes apache_process from the
 * scoreboard and /proc.
 */
#ifndef IMX_SUMMARY_GLUE_H
#define IMX_SUMMARY_GLUE_H

#include "httpd.h"
#include "batch.h"

/* Names of the parts of a series key, escaped, built in post_config. */
typedef struct imx_summary_names {
    const char *host;           /* escaped host name */
    const imx_series_t **servers;   /* by server index */
    int nservers;
    const char *const *routes;  /* by route index (0: none) */
    int nroutes;
    const char *const *methods; /* by method index */
    int nmethods;
} imx_summary_names_t;

#define IMX_KEY(server, route, method, cls) \
    (((((uint32_t)(server) & 0x7ff) << 20) | (((uint32_t)(route) & 0x7ff) << 9) \
      | (((uint32_t)(method) & 0x3f) << 3) | ((uint32_t)(cls) & 0x7)) + 1)

/* post_config: the shared segment (once per parent) and the names. */
apr_status_t imx_summary_init(server_rec *s, const imx_summary_names_t *names,
                              int want_summary, uint32_t nseries,
                              apr_interval_time_t interval);

/* child_init, after imx_status_claim(): this child's table. */
void imx_summary_child(int slot);

/* Request path. */
void imx_summary_record(uint32_t key, uint64_t us, int error);

/* imx_tick_fn for the engine. */
void imx_summary_tick(void *ctx, imx_engine_t *e, int final);

#endif /* IMX_SUMMARY_GLUE_H */
