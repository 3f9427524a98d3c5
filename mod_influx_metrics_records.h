/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * mod_influx_metrics_records.h: the configuration records of
 * mod_influx_metrics (httpd glue): per-server and per-directory, as the
 * directives leave them (with "unset" markers), and the settings as they
 * apply once the documented defaults fill what is unset
 * (mod_influx_metrics_config.c).
 */
#ifndef IMX_RECORDS_H
#define IMX_RECORDS_H

#include "httpd.h"
#include "http_config.h"

#include "apr_hash.h"

#include "imx_point.h"
#include "imx_prom.h"

extern module AP_MODULE_DECLARE_DATA influx_metrics_module;

#define IMX_UNSET (-1)

/* InfluxMetricsMode: bits of what is written. */
#define IMX_MODE_RAW        1
#define IMX_MODE_SUMMARY    2

/* InfluxMetricsTag: a static tag, as configured (escaped at startup). */
typedef struct {
    const char *key;
    const char *val;
} imx_static_tag_t;

typedef struct {
    /* Global: only the main server's values count (GLOBAL_ONLY directives). */
    apr_array_header_t *urls;   /* const char *, with precision=ns; NULL: unset */
    const void *urls_directive; /* the line that last set urls */
    const char *token;
    const char *measurement;
    apr_interval_time_t flush_interval;
    apr_interval_time_t timeout;
    int batch_size;
    int buffer_size;
    int gzip;
    apr_off_t retry_buffer;
    apr_interval_time_t retry_max_time;
    int tls_verify;
    const char *ca_file;
    const char *proxy;          /* NULL: no proxy, whatever the environment says */
    int mode;
    int summary_series;
    int max_tag_values;
    const char *spool_dir;      /* absolute; NULL: no spool */
    apr_off_t spool_size;
    const imx_prom_buckets_t *prom_buckets;     /* NULL: unset */
    int prom_series;
    /* Per server, merged into virtual hosts. */
    int fields_set;             /* InfluxMetricsFields seen here */
    const void *fields_directive;   /* the line that last set fields */
    unsigned fields;            /* IMX_F_* of InfluxMetricsFields */
    const char *rid_header;     /* InfluxMetricsRequestIDHeader, or NULL */
    apr_array_header_t *static_tags;    /* imx_static_tag_t, raw */
    int index;                  /* position in the server list */
    /* Names-registry ids (mod_influx_metrics_names.h) of this server's tag
     * text and of every route, set at startup: they name the series of raw
     * points and summaries alike, the same in every generation. */
    int reg_server;
    const int *reg_routes;      /* by route index */
} imx_srv_conf_t;

/* Where an InfluxMetricsTagFrom takes its value. */
#define IMX_FROM_ENV     1
#define IMX_FROM_NOTE    2
#define IMX_FROM_HEADER  3

typedef struct {
    int enabled;                /* IMX_UNSET, 0, 1 */
    int route_idx;              /* index in the route list (imx_conf_routes); 0: none */
    double sample;              /* fraction of requests kept in raw mode; < 0: unset */
    apr_interval_time_t keep_slow;  /* IMX_UNSET, or keep requests at least this slow */
    int keep_errors;            /* IMX_UNSET, 0, 1: keep every 5xx */
    /* InfluxMetricsTagFrom: the request tag of requests here. */
    int from_src;               /* IMX_FROM_*; 0: none */
    const char *from_name;      /* the variable, note or header */
    const char *from_key;       /* escaped tag key */
    int from_idx;               /* its table (mod_influx_metrics_reqtags.h) */
    apr_interval_time_t slo;    /* IMX_UNSET, 0 (none) or InfluxMetricsSLO */
    apr_hash_t *from_allow;     /* escaped tag key -> apr_hash_t * of the values
                                 * InfluxMetricsTagValues allows; NULL: none */
} imx_dir_conf_t;

static inline imx_srv_conf_t *imx_srv_conf(const server_rec *s)
{
    return ap_get_module_config(s->module_config, &influx_metrics_module);
}

static inline imx_dir_conf_t *imx_dir_conf(const request_rec *r)
{
    return ap_get_module_config(r->per_dir_config, &influx_metrics_module);
}

/* The global settings as they apply: the main server's, each one it left
 * unset from the documented defaults (mod_influx_metrics_config.c). */
typedef struct imx_settings {
    const char *measurement;
    apr_interval_time_t flush_interval;
    apr_interval_time_t timeout;
    apr_interval_time_t shutdown_timeout;
    apr_interval_time_t retry_interval;
    unsigned retry_base;
    apr_interval_time_t retry_max_delay;
    apr_interval_time_t retry_max_time;
    size_t retry_buffer;
    uint32_t capacity;          /* ring records per child: a power of two */
    uint32_t batch_size;        /* at most capacity */
    int gzip;
    int tls_verify;
    int mode;                   /* IMX_MODE_* */
    uint32_t summary_series;
    int max_tag_values;
    uint64_t spool_size;
    imx_prom_buckets_t prom_buckets;    /* InfluxMetricsPrometheusBuckets */
    uint32_t prom_series;               /* InfluxMetricsPrometheusSeries */
} imx_settings_t;


#endif /* IMX_RECORDS_H */
