/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * mod_influx_metrics_config.c: the directives of mod_influx_metrics, their
 * checks, the records they fill and how those merge (as mod_md_config.c).
 *
 * Each directive checks its own argument, so a bad value fails
 * `apachectl configtest` with a message naming the directive and the value.
 * What only the whole configuration can tell (a tag key that a merged
 * virtual host would write twice, a batch larger than the ring, a spool
 * directory that cannot be used) is checked by imx_conf_check after the
 * merge. The documented defaults are one struct, `defaults` below: every
 * setting left unset reads from there, in imx_conf_settings.
 */
#include <errno.h>

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "ap_mpm.h"

#include "apr_env.h"
#include "apr_file_io.h"
#include "apr_hash.h"
#include "apr_lib.h"
#include "apr_strings.h"

#include "imx_http.h"
#include "imx_lineproto.h"
#include "imx_prom.h"
#include "mod_influx_metrics_args.h"
#include "mod_influx_metrics_config.h"
#include "mod_influx_metrics_tagconf.h"
#include "mod_influx_metrics_fields.h"
#include "mod_influx_metrics_spooldir.h"

APLOG_USE_MODULE(influx_metrics);

/* The ring is touched in full by every busy child, so it is most of what
 * the module costs a child in memory (prefork sites run hundreds of them).
 * The flusher drains it at every full batch (half the ring at most), not
 * only once per interval, so it need not hold a second of traffic: 512
 * records per thread, at least 2048 (128 KiB), at most 65536 (4 MiB);
 * prefork (one thread) gets 2048, event with 25 threads 16384 (1 MiB). */
#define BUFFER_PER_THREAD   512
#define BUFFER_MIN          2048
#define BUFFER_MAX          65536

/* What applies when a setting is not set (docs/directives.md says the same). */
static const imx_settings_t defaults = {
    .measurement = "apache_request",
    .flush_interval = APR_USEC_PER_SEC,     /* 1 s */
    .timeout = 5 * APR_USEC_PER_SEC,
    /* The exit flush must end before httpd's stop escalates (SIGTERM again
     * at 3 s, SIGKILL at 9 s): 2 s leaves room for the rest of the exit. */
    .shutdown_timeout = 2 * APR_USEC_PER_SEC,
    /* Retries, as the official clients' defaults scaled to a 1 s flush:
     * first after about 1 s, doubling, at most 30 s apart, for 180 s. */
    .retry_interval = APR_USEC_PER_SEC,
    .retry_base = 2,
    .retry_max_delay = 30 * APR_USEC_PER_SEC,
    .retry_max_time = 180 * APR_USEC_PER_SEC,
    .retry_buffer = (size_t)64 << 20,
    .capacity = 0,                          /* by threads: see BUFFER_* */
    .batch_size = 5000,                     /* at most half the ring */
    .gzip = 0,
    .tls_verify = 1,
    .mode = IMX_MODE_RAW,
    .summary_series = 64,
    .max_tag_values = 100,
    .spool_size = (uint64_t)1 << 30,
    /* .prom_buckets: imx_prom_buckets_default (imx_prom.h says why). */
    .prom_series = 1024,
};

void *imx_create_srv_conf(apr_pool_t *p, server_rec *s)
{
    imx_srv_conf_t *c = apr_pcalloc(p, sizeof(*c));

    (void)s;
    c->flush_interval = IMX_UNSET;
    c->timeout = IMX_UNSET;
    c->batch_size = IMX_UNSET;
    c->buffer_size = IMX_UNSET;
    c->gzip = IMX_UNSET;
    c->retry_buffer = IMX_UNSET;
    c->retry_max_time = IMX_UNSET;
    c->tls_verify = IMX_UNSET;
    c->mode = IMX_UNSET;
    c->summary_series = IMX_UNSET;
    c->max_tag_values = IMX_UNSET;
    c->spool_size = IMX_UNSET;
    c->prom_series = IMX_UNSET;
    c->static_tags = apr_array_make(p, 2, sizeof(imx_static_tag_t));
    return c;
}

#define MERGE(f, unset) c->f = (add->f != (unset)) ? add->f : base->f

void *imx_merge_srv_conf(apr_pool_t *p, void *basev, void *addv)
{
    imx_srv_conf_t *base = basev, *add = addv;
    imx_srv_conf_t *c = apr_pcalloc(p, sizeof(*c));
    int i, j;

    MERGE(urls, NULL);
    MERGE(token, NULL);
    MERGE(measurement, NULL);
    MERGE(flush_interval, IMX_UNSET);
    MERGE(timeout, IMX_UNSET);
    MERGE(batch_size, IMX_UNSET);
    MERGE(buffer_size, IMX_UNSET);
    MERGE(gzip, IMX_UNSET);
    MERGE(retry_buffer, IMX_UNSET);
    MERGE(retry_max_time, IMX_UNSET);
    MERGE(tls_verify, IMX_UNSET);
    MERGE(ca_file, NULL);
    MERGE(proxy, NULL);
    MERGE(mode, IMX_UNSET);
    MERGE(summary_series, IMX_UNSET);
    MERGE(max_tag_values, IMX_UNSET);
    MERGE(spool_dir, NULL);
    MERGE(spool_size, IMX_UNSET);
    MERGE(prom_buckets, NULL);
    MERGE(prom_series, IMX_UNSET);
    /* A vhost's InfluxMetricsFields replaces the server's list. */
    c->fields_set = add->fields_set || base->fields_set;
    c->fields = add->fields_set ? add->fields : base->fields;
    MERGE(rid_header, NULL);
    /* A vhost's tags add to the server's; the same key in the vhost wins. */
    c->static_tags = apr_array_copy(p, add->static_tags);
    for (i = 0; i < base->static_tags->nelts; i++) {
        imx_static_tag_t *bt = &APR_ARRAY_IDX(base->static_tags, i, imx_static_tag_t);
        for (j = 0; j < add->static_tags->nelts; j++) {
            if (!strcmp(APR_ARRAY_IDX(add->static_tags, j, imx_static_tag_t).key, bt->key)) {
                break;
            }
        }
        if (j == add->static_tags->nelts) {
            APR_ARRAY_PUSH(c->static_tags, imx_static_tag_t) = *bt;
        }
    }
    return c;
}

void *imx_create_dir_conf(apr_pool_t *p, char *dir)
{
    imx_dir_conf_t *c = apr_pcalloc(p, sizeof(*c));

    (void)dir;
    c->enabled = IMX_UNSET;
    c->sample = -1;
    c->keep_slow = IMX_UNSET;
    c->keep_errors = IMX_UNSET;
    c->slo = IMX_UNSET;
    return c;
}

static void *union_values(apr_pool_t *p, const void *key, apr_ssize_t klen,
                          const void *inner, const void *outer, const void *data)
{
    (void)key; (void)klen; (void)data;
    return apr_hash_overlay(p, inner, outer);
}

void *imx_merge_dir_conf(apr_pool_t *p, void *basev, void *addv)
{
    imx_dir_conf_t *base = basev, *add = addv;
    imx_dir_conf_t *c = apr_pcalloc(p, sizeof(*c));

    MERGE(enabled, IMX_UNSET);
    MERGE(route_idx, 0);
    c->sample = add->sample >= 0 ? add->sample : base->sample;
    MERGE(keep_slow, IMX_UNSET);
    MERGE(keep_errors, IMX_UNSET);
    MERGE(slo, IMX_UNSET);
    if (add->from_src) {
        c->from_src = add->from_src;
        c->from_name = add->from_name;
        c->from_key = add->from_key;
        c->from_idx = add->from_idx;
    }
    else {
        c->from_src = base->from_src;
        c->from_name = base->from_name;
        c->from_key = base->from_key;
        c->from_idx = base->from_idx;
    }
    /* Nested allow-lists of a key add up, as repeated lines do. */
    if (!add->from_allow || !base->from_allow) {
        c->from_allow = add->from_allow ? add->from_allow : base->from_allow;
    }
    else {
        c->from_allow = apr_hash_merge(p, add->from_allow, base->from_allow,
                                      union_values, NULL);
    }
    return c;
}

#undef MERGE

#define CMD_SC(cmd) imx_srv_conf((cmd)->server)

static const char *set_measurement(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)dc;
    if (err) {
        return err;
    }
    /* '#' would make every line a comment (InfluxDB answers 204 and stores
     * nothing); InfluxDB 1.x unescapes measurement names twice, so one with
     * a backslash would not read back as written. */
    if (!*arg || *arg == '_' || *arg == '#' || strchr(arg, '\\')) {
        return imx_arg_bad(cmd, arg, "must be non-empty, not start with '_' or '#', "
                   "and hold no backslash");
    }
    if (strlen(arg) > 256) {
        return imx_arg_bad(cmd, arg, "longer than 256 bytes");
    }
    CMD_SC(cmd)->measurement = arg;
    return NULL;
}


static const char *set_flush_interval(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)dc;
    return err ? err : imx_arg_parse_duration(cmd, arg, apr_time_from_msec(10),
                                      apr_time_from_sec(3600),
                                      &CMD_SC(cmd)->flush_interval);
}

static const char *set_timeout(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)dc;
    return err ? err : imx_arg_parse_duration(cmd, arg, apr_time_from_msec(10),
                                      apr_time_from_sec(600), &CMD_SC(cmd)->timeout);
}

static const char *set_batch_size(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)dc;
    return err ? err : imx_arg_parse_int(cmd, arg, 1, 1000000, &CMD_SC(cmd)->batch_size);
}

static const char *set_buffer_size(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)dc;
    return err ? err : imx_arg_parse_int(cmd, arg, 16, 1 << 24, &CMD_SC(cmd)->buffer_size);
}

static const char *set_gzip(cmd_parms *cmd, void *dc, int on)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)dc;
    if (err) {
        return err;
    }
    CMD_SC(cmd)->gzip = on;
    return NULL;
}

static const char *set_retry_buffer(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)dc;
    return err ? err : imx_arg_parse_size(cmd, arg, 0, (apr_int64_t)16 << 30, "0 to 16G",
                                  &CMD_SC(cmd)->retry_buffer);
}

static const char *set_spool_size(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)dc;
    return err ? err : imx_arg_parse_size(cmd, arg, (apr_int64_t)64 << 10, (apr_int64_t)16384 << 30,
                                  "64K to 16384G", &CMD_SC(cmd)->spool_size);
}

static const char *set_retry_max_time(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)dc;
    return err ? err : imx_arg_parse_duration(cmd, arg, 0, apr_time_from_sec(86400),
                                      &CMD_SC(cmd)->retry_max_time);
}

static const char *set_tls_verify(cmd_parms *cmd, void *dc, int on)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)dc;
    if (err) {
        return err;
    }
    CMD_SC(cmd)->tls_verify = on;
    return NULL;
}

static const char *set_enabled(cmd_parms *cmd, void *dc, int on)
{
    (void)cmd;
    ((imx_dir_conf_t *)dc)->enabled = on;
    return NULL;
}

/* Routes of this configuration, escaped; a route's index is its position
 * (from 1), the same in every child of the generation. */
apr_array_header_t *imx_conf_routes(apr_pool_t *pconf)
{
    void *data = NULL;
    apr_array_header_t *a;

    apr_pool_userdata_get(&data, "imx_routes", pconf);
    if (data) {
        return data;
    }
    a = apr_array_make(pconf, 8, sizeof(const char *));
    APR_ARRAY_PUSH(a, const char *) = NULL;     /* index 0: no route */
    apr_pool_userdata_setn(a, "imx_routes", apr_pool_cleanup_null, pconf);
    return a;
}

static const char *set_route(cmd_parms *cmd, void *dc, const char *arg)
{
    imx_dir_conf_t *d = dc;
    apr_array_header_t *reg = imx_conf_routes(cmd->pool);
    const char *name;
    int i;

    if (!*arg || strlen(arg) > 1024) {
        return imx_arg_bad(cmd, arg, "a route name must be non-empty and at most 1024 bytes");
    }
    name = imx_pescape(cmd->pool, arg, IMX_ESC_TAG);
    for (i = 1; i < reg->nelts; i++) {
        if (!strcmp(APR_ARRAY_IDX(reg, i, const char *), name)) {
            break;
        }
    }
    if (i == reg->nelts) {
        if (reg->nelts >= 2047) {
            return imx_arg_bad(cmd, arg, "more than 2046 different routes");
        }
        APR_ARRAY_PUSH(reg, const char *) = name;
    }
    d->route_idx = i;
    return NULL;
}

static const char *set_mode(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)dc;
    if (err) {
        return err;
    }
    if (!strcasecmp(arg, "raw")) {
        CMD_SC(cmd)->mode = IMX_MODE_RAW;
    }
    else if (!strcasecmp(arg, "summary")) {
        CMD_SC(cmd)->mode = IMX_MODE_SUMMARY;
    }
    else if (!strcasecmp(arg, "both")) {
        CMD_SC(cmd)->mode = IMX_MODE_RAW | IMX_MODE_SUMMARY;
    }
    else {
        return imx_arg_bad(cmd, arg, "expected raw, summary or both");
    }
    return NULL;
}

static const char *set_summary_series(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)dc;
    return err ? err : imx_arg_parse_int(cmd, arg, 1, 4096, &CMD_SC(cmd)->summary_series);
}

static const char *set_prom_buckets(cmd_parms *cmd, void *dc, const char *args)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    imx_prom_buckets_t *b;
    char why[160];

    (void)dc;
    if (err) {
        return err;
    }
    b = apr_palloc(cmd->pool, sizeof(*b));
    if (imx_prom_buckets_parse(b, args, why, sizeof(why)) != 0) {
        return apr_psprintf(cmd->pool, "%s: %s", cmd->cmd->name, why);
    }
    CMD_SC(cmd)->prom_buckets = b;
    return NULL;
}

static const char *set_prom_series(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)dc;
    return err ? err : imx_arg_parse_int(cmd, arg, 1, 65536, &CMD_SC(cmd)->prom_series);
}

static const char *set_sample(cmd_parms *cmd, void *dc, const char *arg)
{
    char *end;
    double f = strtod(arg, &end);

    if (end == arg || *end || !(f > 0) || f > 1 || f < 0.0001) {
        return imx_arg_bad(cmd, arg, "expected a fraction from 0.0001 to 1, such as 0.1");
    }
    ((imx_dir_conf_t *)dc)->sample = f;
    return NULL;
}

static const char *set_keep_slow(cmd_parms *cmd, void *dc, const char *arg)
{
    return imx_arg_parse_duration(cmd, arg, apr_time_from_msec(1), apr_time_from_sec(86400),
                          &((imx_dir_conf_t *)dc)->keep_slow);
}

static const char *set_keep_errors(cmd_parms *cmd, void *dc, int on)
{
    (void)cmd;
    ((imx_dir_conf_t *)dc)->keep_errors = on;
    return NULL;
}

/* InfluxMetricsFields name...: called once per name; a new line starts a
 * new list (as InfluxMetricsURL does), "none" empties it. */
static const char *set_fields(cmd_parms *cmd, void *dc, const char *arg)
{
    imx_srv_conf_t *sc = CMD_SC(cmd);
    unsigned bit;

    (void)dc;
    if (sc->fields_directive != cmd->directive) {
        sc->fields_directive = cmd->directive;
        sc->fields_set = 1;
        sc->fields = 0;
    }
    if (!strcasecmp(arg, "none")) {
        return NULL;
    }
    bit = imx_fields_bit(arg);
    if (!bit) {
        return imx_arg_bad(cmd, arg, "expected ttfb, bytes_received, request_id, protocol, tls, "
                   "upstream or none");
    }
    sc->fields |= bit;
    return NULL;
}

static const char *set_slo(cmd_parms *cmd, void *dc, const char *arg)
{
    imx_dir_conf_t *d = dc;

    if (!strcasecmp(arg, "none")) {
        d->slo = 0;
        return NULL;
    }
    return imx_arg_parse_duration(cmd, arg, apr_time_from_msec(1), apr_time_from_sec(86400), &d->slo);
}

const command_rec imx_cmds[] = {
    AP_INIT_ITERATE("InfluxMetricsURL", imx_set_url, NULL, RSRC_CONF,
                    "InfluxDB write endpoint(s), e.g. http://127.0.0.1:8086/write?db=apache "
                    "or .../api/v2/write?org=o&bucket=b or .../api/v3/write_lp?db=d; more "
                    "than one act as failover, "
                    "in order; enables the module"),
    AP_INIT_TAKE1("InfluxMetricsToken", imx_set_token, NULL, RSRC_CONF,
                  "API token: file:/path, env:NAME or the token itself; sent as "
                  "'Authorization: Token ...'"),
    AP_INIT_TAKE1("InfluxMetricsMeasurement", set_measurement, NULL, RSRC_CONF,
                  "measurement name of request points (default apache_request)"),
    AP_INIT_TAKE2("InfluxMetricsTag", imx_set_tag, NULL, RSRC_CONF,
                  "a static tag key and value added to every point of this server; repeatable"),
    AP_INIT_TAKE1("InfluxMetricsFlushInterval", set_flush_interval, NULL, RSRC_CONF,
                  "how often buffered points are sent, e.g. 500ms or 1s (default 1s)"),
    AP_INIT_TAKE1("InfluxMetricsBatchSize", set_batch_size, NULL, RSRC_CONF,
                  "maximum points per POST (default 5000)"),
    AP_INIT_TAKE1("InfluxMetricsBufferSize", set_buffer_size, NULL, RSRC_CONF,
                  "points held per child process before new ones are dropped "
                  "(default 512 per thread, 2048 to 65536; rounded up to a power "
                  "of two)"),
    AP_INIT_TAKE1("InfluxMetricsTimeout", set_timeout, NULL, RSRC_CONF,
                  "time limit of one POST, e.g. 5s (default 5s)"),
    AP_INIT_FLAG("InfluxMetricsGzip", set_gzip, NULL, RSRC_CONF,
                 "On to send gzip-compressed bodies (default Off)"),
    AP_INIT_TAKE1("InfluxMetricsRetryBuffer", set_retry_buffer, NULL, RSRC_CONF,
                  "bytes per child for batches waiting to be retried, e.g. 64M "
                  "(default 64M; 0: do not retry)"),
    AP_INIT_TAKE1("InfluxMetricsRetryMaxTime", set_retry_max_time, NULL, RSRC_CONF,
                  "give up on a batch failing for longer than this, e.g. 180s "
                  "(default 180s; 0: never)"),
    AP_INIT_FLAG("InfluxMetricsTLSVerify", set_tls_verify, NULL, RSRC_CONF,
                 "Off to skip verifying an https server's certificate (default On)"),
    AP_INIT_TAKE1("InfluxMetricsTLSCACertificateFile", imx_set_ca_file, NULL, RSRC_CONF,
                  "PEM file of the CA(s) that sign the https server's certificate"),
    AP_INIT_TAKE1("InfluxMetricsProxy", imx_set_proxy, NULL, RSRC_CONF,
                  "proxy for the POSTs: http://, https://, socks5:// or socks5h://host:port "
                  "(default none; httpd's http_proxy, https_proxy and ALL_PROXY are "
                  "ignored)"),
    AP_INIT_FLAG("InfluxMetrics", set_enabled, NULL, RSRC_CONF | ACCESS_CONF,
                 "On or Off: record requests here (default On once a URL is set)"),
    AP_INIT_TAKE1("InfluxMetricsRoute", set_route, NULL, RSRC_CONF | ACCESS_CONF,
                  "route name, written as tag route=<name> for requests here"),
    AP_INIT_TAKE1("InfluxMetricsMode", set_mode, NULL, RSRC_CONF,
                  "raw (a point per request), summary (per-interval summaries per "
                  "vhost, route, method and status class) or both (default raw)"),
    AP_INIT_TAKE1("InfluxMetricsSummarySeries", set_summary_series, NULL, RSRC_CONF,
                  "summary series a child can hold (default 64; more are counted as "
                  "overflow)"),
    AP_INIT_RAW_ARGS("InfluxMetricsPrometheusBuckets", set_prom_buckets, NULL, RSRC_CONF,
                     "upper bounds in seconds of the Prometheus histogram's buckets, "
                     "ascending, e.g. 0.005 0.01 0.1 1 (default 0.001 to 10, 13 bounds)"),
    AP_INIT_TAKE1("InfluxMetricsPrometheusSeries", set_prom_series, NULL, RSRC_CONF,
                  "series (vhost, route, method, status) one child can count for the "
                  "Prometheus page (default 1024, at most 65536)"),
    AP_INIT_TAKE1("InfluxMetricsSample", set_sample, NULL, RSRC_CONF | ACCESS_CONF,
                  "fraction of requests written in raw mode, e.g. 0.1 (default 1)"),
    AP_INIT_TAKE1("InfluxMetricsKeepSlow", set_keep_slow, NULL, RSRC_CONF | ACCESS_CONF,
                  "when sampling, keep every request at least this slow, e.g. 500ms"),
    AP_INIT_FLAG("InfluxMetricsKeepErrors", set_keep_errors, NULL, RSRC_CONF | ACCESS_CONF,
                 "when sampling, On keeps every 5xx response (default Off)"),
    AP_INIT_RAW_ARGS("InfluxMetricsTagFrom", imx_set_tag_from, NULL, RSRC_CONF | ACCESS_CONF,
                     "env|note|header NAME [tag]: a tag from the request's environment "
                     "variable, note or header (raw points only)"),
    AP_INIT_ITERATE2("InfluxMetricsTagValues", imx_set_tag_values, NULL, RSRC_CONF | ACCESS_CONF,
                     "key value [value ...]: the only values an InfluxMetricsTagFrom tag "
                     "may take here; others are written as 'other'. Repeatable: adds "
                     "values"),
    AP_INIT_TAKE1("InfluxMetricsMaxTagValues", imx_set_max_tag_values, NULL, RSRC_CONF,
                  "values each InfluxMetricsTagFrom tag may take server-wide before new "
                  "ones are written as 'other' (default 100)"),
    AP_INIT_TAKE1("InfluxMetricsSpoolDir", imx_set_spool_dir, NULL, RSRC_CONF,
                  "directory where points that cannot be sent (at exit, or beyond the "
                  "retry buffer) are kept until they can, e.g. "
                  "/var/cache/apache2/influx_metrics; none: no spool (the default)"),
    AP_INIT_TAKE1("InfluxMetricsSpoolSize", set_spool_size, NULL, RSRC_CONF,
                  "bytes the spool's files may take together, e.g. 1G (default 1G); "
                  "beyond it the oldest files are deleted"),
    AP_INIT_ITERATE("InfluxMetricsFields", set_fields, NULL, RSRC_CONF,
                    "optional fields and tags of request points: ttfb, bytes_received, "
                    "request_id, protocol, tls, upstream, or none (the default); a "
                    "virtual host's list replaces the server's"),
    AP_INIT_TAKE1("InfluxMetricsRequestIDHeader", imx_set_rid_header, NULL, RSRC_CONF,
                  "request header holding a request id, e.g. X-Request-ID: the last "
                  "source of request_id, after traceparent and UNIQUE_ID"),
    AP_INIT_TAKE1("InfluxMetricsSLO", set_slo, NULL, RSRC_CONF | ACCESS_CONF,
                  "latency objective, e.g. 300ms: summaries count the requests no slower "
                  "and not 5xx in slo_good; none: no objective (the default)"),
    { NULL }
};

/* The ring size when InfluxMetricsBufferSize is not set. */
static int default_buffer_size(void)
{
    int threads = 1, n;

    if (ap_mpm_query(AP_MPMQ_MAX_THREADS, &threads) != APR_SUCCESS || threads < 1) {
        threads = 1;
    }
    n = threads > BUFFER_MAX / BUFFER_PER_THREAD ? BUFFER_MAX : threads * BUFFER_PER_THREAD;
    return n < BUFFER_MIN ? BUFFER_MIN : n;
}

int imx_conf_check(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s)
{
    imx_srv_conf_t *mc = imx_srv_conf(s);
    int cap = mc->buffer_size != IMX_UNSET ? mc->buffer_size : default_buffer_size();

    (void)plog;
    if (imx_conf_check_tag_values(pconf) != OK || imx_conf_check_tag_keys(pconf, s) != OK) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (mc->urls && mc->spool_dir) {
        const char *why = imx_spooldir_check(ptemp, mc->spool_dir);

        if (why) {
            ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, s,
                         "IMX0014: InfluxMetricsSpoolDir: cannot use '%s': %s",
                         mc->spool_dir, why);
            return !OK;
        }
    }
    /* A batch larger than the buffer never completes, so the flusher would
     * only send once per interval and the buffer would overflow between. */
    if (mc->urls && mc->batch_size != IMX_UNSET && mc->batch_size > cap) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, s,
                     "IMX0013: InfluxMetricsBatchSize %d is larger than "
                     "InfluxMetricsBufferSize %d: a batch must fit in the buffer "
                     "(leave InfluxMetricsBatchSize unset to use half the buffer)",
                     mc->batch_size, cap);
        return !OK;
    }
    return OK;
}

#define SET(f) st->f = mc->f != IMX_UNSET ? mc->f : defaults.f

void imx_conf_settings(const imx_srv_conf_t *mc, imx_settings_t *st)
{
    uint32_t want = (uint32_t)(mc->buffer_size != IMX_UNSET ? mc->buffer_size
                                                             : default_buffer_size());

    *st = defaults;
    st->measurement = mc->measurement ? mc->measurement : defaults.measurement;
    SET(flush_interval);
    SET(timeout);
    SET(retry_max_time);
    SET(gzip);
    SET(tls_verify);
    SET(mode);
    SET(max_tag_values);
    st->retry_buffer = mc->retry_buffer != IMX_UNSET ? (size_t)mc->retry_buffer
                                                      : defaults.retry_buffer;
    st->summary_series = mc->summary_series != IMX_UNSET ? (uint32_t)mc->summary_series
                                                          : defaults.summary_series;
    st->spool_size = mc->spool_size != IMX_UNSET ? (uint64_t)mc->spool_size
                                                  : defaults.spool_size;
    if (mc->prom_buckets) {
        st->prom_buckets = *mc->prom_buckets;
    }
    else {
        imx_prom_buckets_default(&st->prom_buckets);
    }
    st->prom_series = mc->prom_series != IMX_UNSET ? (uint32_t)mc->prom_series
                                                    : defaults.prom_series;
    /* A batch never exceeds the ring: an explicit larger one is refused by
     * imx_conf_check, the default is cut to half the ring. */
    st->batch_size = mc->batch_size != IMX_UNSET ? (uint32_t)mc->batch_size
                     : defaults.batch_size > want / 2 ? want / 2 : defaults.batch_size;
    /* A power of two of records (as the engine would round it), so that
     * this is what the rings, the status page and the engine see. */
    for (st->capacity = 2; st->capacity < want; st->capacity <<= 1) {
        ;
    }
}

#undef SET
