/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * mod_influx_metrics.c: the module: its hooks, and what httpd's parent sets
 * up before the fork and each child after it (httpd glue).
 *
 * The layers, as mod_md's: this glue knows httpd; the engine (imx_*.c)
 * knows only APR, libcurl and zlib, and is handed what it needs as
 * callbacks (a log function, a send function). The glue's other files hold
 * one concept each: the configuration (mod_influx_metrics_config.c, _args.c,
 * _tagconf.c), the request path (_request.c), prefork's stop signals
 * (_prefork.c), the shared segments (_shm.c), the names registry
 * (_names.c), the counters and their pages (_status.c, _status_page.c),
 * summaries (_summary.c), request tags (_reqtags.c), optional fields
 * (_fields.c), the spool's directory (_spooldir.c), the workers from the
 * scoreboard (_capacity.c) and the Prometheus page (_prom.c,
 * _prom_page.c). docs/development.md has the map.
 */
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "ap_mpm.h"
#include "mpm_common.h"
#include "mod_status.h"

#include "apr_strings.h"

#include <curl/curl.h>

#include "imx_engine.h"
#include "imx_http.h"
#include "imx_ts.h"
#include "mod_influx_metrics_config.h"
#include "mod_influx_metrics_tagconf.h"
#include "mod_influx_metrics_fields.h"
#include "mod_influx_metrics_names.h"
#include "mod_influx_metrics_prefork.h"
#include "mod_influx_metrics_prom.h"
#include "mod_influx_metrics_reqtags.h"
#include "mod_influx_metrics_request.h"
#include "mod_influx_metrics_shm.h"
#include "mod_influx_metrics_spooldir.h"
#include "mod_influx_metrics_status.h"
#include "mod_influx_metrics_status_page.h"
#include "mod_influx_metrics_summary.h"

static void register_hooks(apr_pool_t *p);

/* The one symbol httpd looks up (LoadModule): everything else is hidden
 * (-fvisibility=hidden). Defined first: AP_DECLARE_MODULE also does
 * APLOG_USE_MODULE, so that LogLevel influx_metrics:<level> applies to
 * every message below. */
extern module __attribute__((visibility("default"))) AP_MODULE_DECLARE_DATA influx_metrics_module;

AP_DECLARE_MODULE(influx_metrics) = {
    STANDARD20_MODULE_STUFF,
    imx_create_dir_conf,
    imx_merge_dir_conf,
    imx_create_srv_conf,
    imx_merge_srv_conf,
    imx_cmds,
    register_hooks,
    /* Every virtual host gets its own merged configuration (its name and
     * index), also one without any of our directives: httpd would otherwise
     * hand it the main server's. */
    AP_MODULE_FLAG_ALWAYS_MERGE
};

/* Per process, set in post_config (before the fork) but for `engine`, set
 * in child_init and never cleared. */
static imx_settings_t settings;
static const char *line_prefix;
static const char *host_escaped;
static imx_summary_names_t summary_names;
static imx_ts_table_t *ts_table;
static _Atomic(imx_engine_t *) engine;
/* The rings, one per status slot, in shared memory made by the parent: they
 * outlive a child that dies, so a new child can send what it held. With
 * request ids (InfluxMetricsFields request_id, in any server), the segment
 * holds IMX_RID_MAX bytes per cell more, after all the cells. */
static char *ring_shm;
static char *ring_rids;
static uint32_t ring_cap;
static int rid_wanted;
/* The configuration names the Prometheus handler (this generation). */
static int prom_wanted;
static pid_t curl_parent;

/* ------------------------------------------------------------------------- */
/* Before the fork                                                            */

static apr_status_t curl_cleanup(void *data)
{
    (void)data;
    /* Children run pool cleanups too, prefork's from a signal handler:
     * only the parent that initialised libcurl cleans it up. */
    if (getpid() == curl_parent) {
        curl_global_cleanup();
    }
    return APR_SUCCESS;
}

/* In the parent, before any child or thread exists: curl_global_init is not
 * thread-safe with every TLS backend. httpd unloads and reloads this module
 * on every restart, so this runs once per generation (the static starts at
 * 0 again); libcurl counts the calls, and the pconf cleanup pairs each with
 * curl_global_cleanup, in the parent only. */
static int curl_init(apr_pool_t *pconf, server_rec *s)
{
    static int curl_ready;
    CURLcode cc;

    if (curl_ready) {
        return OK;
    }
    if ((cc = curl_global_init(CURL_GLOBAL_DEFAULT)) != CURLE_OK) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s,
                     "IMX0001: curl_global_init failed: %s", curl_easy_strerror(cc));
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    curl_ready = 1;
    curl_parent = getpid();
    apr_pool_cleanup_register(pconf, NULL, curl_cleanup, apr_pool_cleanup_null);
    return OK;
}

/* The server-wide table of timestamp tickets (see imx_ts_unique). */
static imx_ts_table_t *ts_init(server_rec *s, apr_pool_t *pconf)
{
    imx_ts_table_t *t;
    int created;

    t = imx_shm_once(s, "imx_ts_shm", sizeof(imx_ts_table_t), &created);
    if (!t) {
        /* Still unique within each child; children may collide. */
        t = apr_pcalloc(pconf, sizeof(imx_ts_table_t));
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, "IMX0012: cannot create the "
                     "shared memory for timestamps; points of different children "
                     "may share one and be merged by InfluxDB");
    }
    return t;
}

/* One ring per status slot, in a segment per ring size: a generation with
 * another InfluxMetricsBufferSize gets its own (children of older
 * generations keep theirs, and rescues stay within one segment). Its slot
 * count is the status segment's, which never changes within a parent's life.
 * Without it, each child's ring is its own memory and dies with it. */
static void ring_init(server_rec *s)
{
    uint32_t nslots = imx_status_nslots();
    int created;

    ring_cap = settings.capacity;
    ring_shm = imx_shm_once(s, apr_psprintf(s->process->pool, "imx_ring_shm_%u_%d", ring_cap,
                                            rid_wanted),
                            (apr_size_t)nslots * ring_cap * (64 + (rid_wanted ? IMX_RID_MAX : 0)),
                            &created);
    ring_rids = ring_shm && rid_wanted ? ring_shm + (size_t)nslots * ring_cap * 64 : NULL;
    if (!ring_shm) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, "IMX0018: cannot create the "
                     "shared memory for the buffers (%u x %u records); each child keeps "
                     "its own, and what a killed child held is lost", nslots, ring_cap);
    }
}

/* A server's static tags, escaped, as they follow its vhost tag. */
static const char *static_tags_text(apr_pool_t *p, const apr_array_header_t *tags)
{
    const char *s = "";

    for (int i = 0; i < tags->nelts; i++) {
        const imx_static_tag_t *t = &APR_ARRAY_IDX(tags, i, imx_static_tag_t);
        s = apr_pstrcat(p, s, ",", imx_pescape(p, t->key, IMX_ESC_TAG), "=",
                        imx_pescape(p, t->val, IMX_ESC_TAG), NULL);
    }
    return s;
}

/* Every server's tag text and every route as registry ids, the same for
 * the same text in every generation. */
static void register_names(apr_pool_t *pconf, server_rec *s)
{
    apr_array_header_t *routes = imx_conf_routes(pconf);
    int *reg_routes = apr_palloc(pconf, sizeof(int) * (apr_size_t)routes->nelts);
    int i = 0;

    for (int r = 0; r < routes->nelts; r++) {
        reg_routes[r] = imx_reg_route_id(s, APR_ARRAY_IDX(routes, r, const char *));
    }
    for (server_rec *vs = s; vs; vs = vs->next) {
        imx_srv_conf_t *c = imx_srv_conf(vs);
        const char *vhost = apr_pstrcat(pconf, ",vhost=",
                                        imx_pescape(pconf, vs->server_hostname
                                                    ? vs->server_hostname : "unknown",
                                                    IMX_ESC_TAG), NULL);

        c->index = i++;
        c->reg_server = imx_reg_server_id(s, vhost, static_tags_text(pconf, c->static_tags));
        c->reg_routes = reg_routes;
    }
}

/* The Prometheus page's segment, when the configuration names its handler. */
static void prometheus_init(server_rec *s)
{
    apr_status_t rv = imx_prometheus_post_config(s, &settings.prom_buckets, settings.prom_series,
                                                 rid_wanted);

    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, rv, s, "IMX0025: cannot create the "
                     "shared memory for the Prometheus page (%u series per child); it "
                     "shows no request histograms", settings.prom_series);
    }
}

/* What writing to InfluxDB needs before the names are registered: the
 * points' prefix, the counters, the rings and the spool directory. */
static int influx_post_config(apr_pool_t *pconf, server_rec *s, const imx_srv_conf_t *mc)
{
    char host[APRMAXHOSTLEN + 1];

    if (curl_init(pconf, s) != OK) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (apr_gethostname(host, sizeof(host), pconf) != APR_SUCCESS) {
        apr_cpystrn(host, "unknown", sizeof(host));
    }
    host_escaped = imx_pescape(pconf, host, IMX_ESC_TAG);
    line_prefix = apr_pstrcat(pconf, imx_pescape(pconf, settings.measurement,
                                                 IMX_ESC_MEASUREMENT),
                              ",host=", host_escaped, NULL);
    if (imx_status_init(s) == APR_SUCCESS) {
        ring_init(s);
    }
    else {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, "IMX0005: cannot create the "
                     "shared memory for counters; the status page will be empty%s",
                     mc->spool_dir ? ", and nothing is spooled" : "");
    }
    if (mc->spool_dir && imx_spooldir_init(pconf, s, mc->spool_dir) != OK) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    return OK;
}

/* What writing to InfluxDB needs once the request path is set up: the
 * timestamps, the request tags' tables and the summaries. */
static void influx_post_config_late(apr_pool_t *pconf, server_rec *s)
{
    ts_table = ts_init(s, pconf);
    if (imx_reqtags_init(s, imx_conf_reqtag_keys(pconf)->nelts,
                         settings.max_tag_values) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, "IMX0007: cannot create the "
                     "shared memory for request tags; they will be written as 'other'");
    }
    summary_names.host = host_escaped;
    summary_names.methods = imx_request_methods();
    summary_names.nmethods = IMX_METHODS;
    if (imx_summary_init(s, &summary_names, (settings.mode & IMX_MODE_SUMMARY) != 0,
                         settings.summary_series, settings.flush_interval) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, "IMX0006: cannot create the "
                     "shared memory for summaries; no summaries will be written");
    }
}

static int post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s)
{
    imx_srv_conf_t *mc = imx_srv_conf(s);

    (void)plog;
    imx_conf_settings(mc, &settings);
    prom_wanted = imx_prometheus_wanted();
    imx_prefork_post_config(mc->urls != NULL || prom_wanted);
    if (!mc->urls && !prom_wanted) {
        return OK;
    }
    /* Request ids take room beside every cell of every ring (and in every
     * Prometheus series, as exemplars): only when a server records them. */
    rid_wanted = 0;
    for (server_rec *vs = s; vs; vs = vs->next) {
        rid_wanted |= (imx_srv_conf(vs)->fields & IMX_F_REQUEST_ID) != 0;
    }
    if (mc->urls && influx_post_config(pconf, s, mc) != OK) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    /* Both sinks: the names, the fields and the request path. */
    register_names(pconf, s);
    imx_fields_post_config(pconf, s);
    imx_request_post_config(pconf, ptemp, s, settings.mode);
    if (mc->urls) {
        influx_post_config_late(pconf, s);
    }
    if (prom_wanted) {
        prometheus_init(s);
    }
    return OK;
}

/* ------------------------------------------------------------------------- */
/* In each child                                                              */

static void log_cb(void *ctx, int level, const char *msg)
{
    ap_log_error(APLOG_MARK, level, 0, ctx, "IMX0100: %s", msg);
}

/* pchild pre-cleanup. Prefork runs it from its SIGTERM handler (restart,
 * stop), so it does only async-signal-safe work: imx_engine_stop() sets a
 * flag, writes a pipe and poll()s for the flusher, which flushes, logs and
 * frees its own things; the slot is marked with one atomic store. */
static apr_status_t child_stop(void *data)
{
    imx_engine_t *e = atomic_load(&engine);

    (void)data;
    if (e) {
        imx_engine_stop(e);
    }
    imx_status_exit();
    return APR_SUCCESS;
}

/* Once per interval in the flusher: first what dead children of any
 * generation left in their rings, then summaries. */
static void flusher_tick(void *ctx, imx_engine_t *e, int final)
{
    if (!final) {
        imx_status_rescue(e);
    }
    imx_summary_tick(ctx, e, final);
}

/* The flusher's last act, in its own thread: the sender's handles and its
 * pool are its own, so they go with it. */
static void flusher_exit(void *ctx)
{
    apr_pool_destroy(ctx);
}

/* The spool of this child, from the flusher's pool (only the flusher uses
 * it, and it goes with it); NULL: none. */
static imx_spool_t *child_spool(apr_pool_t *fpool, server_rec *s, const imx_srv_conf_t *mc)
{
    imx_spool_conf_t sc;
    imx_spool_t *sp;
    char err[256];

    if (!mc->spool_dir || !imx_status_spool()) {
        return NULL;
    }
    memset(&sc, 0, sizeof(sc));
    sc.dir = mc->spool_dir;
    sc.max_bytes = settings.spool_size;
    sc.shared = imx_status_spool();
    sc.log = imx_spooldir_log;
    sc.log_ctx = s;
    if (!(sp = imx_spool_open(fpool, &sc, err, sizeof(err)))) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, "IMX0016: %s; this child drops "
                     "what it cannot send instead of spooling it", err);
    }
    return sp;
}

/* The engine's configuration for this child: its slot's counters and ring
 * in shared memory when it has one. */
static void engine_conf(imx_engine_conf_t *ec, apr_pool_t *fpool, server_rec *s,
                        imx_http_t *http, int *slot)
{
    ap_generation_t gen = 0;
    int shared = ring_shm && settings.capacity == ring_cap;

    memset(ec, 0, sizeof(*ec));
    ec->line_prefix = line_prefix;
    ec->capacity = settings.capacity;
    ec->batch_size = settings.batch_size;
    ec->flush_interval = settings.flush_interval;
    ec->shutdown_timeout = settings.shutdown_timeout;
    ec->retry_interval = settings.retry_interval;
    ec->retry_base = settings.retry_base;
    ec->retry_max_delay = settings.retry_max_delay;
    ec->retry_max_time = settings.retry_max_time;
    ec->retry_buffer = settings.retry_buffer;
    ec->gzip = settings.gzip;
    ec->names.reg = imx_reg();
    ec->names.methods = imx_request_methods();
    ec->names.nmethods = IMX_METHODS;
    ec->names.reqtag_text = imx_reqtags_text;
    ec->ts_table = ts_table;
    ec->rid_cells = rid_wanted;
    ap_mpm_query(AP_MPMQ_GENERATION, &gen);
    *slot = imx_status_claim(settings.capacity, gen, shared ? ring_shm : NULL,
                             shared ? ring_rids : NULL);
    if (*slot >= 0 && shared) {
        /* The segment is 64-aligned and each ring a multiple of 64. */
        ec->cells = ring_shm + (size_t)*slot * ring_cap * 64;
        ec->rids = ring_rids ? ring_rids + (size_t)*slot * ring_cap * IMX_RID_MAX : NULL;
    }
    if (*slot >= 0) {
        ec->self_prefix = apr_psprintf(fpool, "apache_influx_metrics,host=%s,slot=%d",
                                       host_escaped, *slot);
        ec->on_stats = imx_status_publish;
        ec->counters = imx_status_counters();
        /* Only with a slot: the fold of a dead child's slot is what gives
         * its bytes back. */
        ec->retry_shared = imx_status_retry_budget();
    }
    ec->on_tick = flusher_tick;
    ec->send = imx_http_send;
    ec->send_limit = imx_http_limit;
    ec->send_ctx = http;
    ec->log = log_cb;
    ec->log_ctx = s;
    ec->on_exit = flusher_exit;
    ec->exit_ctx = fpool;
}

static void child_init(apr_pool_t *pchild, server_rec *s)
{
    imx_srv_conf_t *mc = imx_srv_conf(s);
    imx_http_conf_t hc;
    imx_engine_conf_t ec;
    imx_http_t *http;
    imx_engine_t *e;
    apr_pool_t *fpool;
    char err[256];
    apr_status_t rv;
    int slot;

    if (prom_wanted) {
        imx_request_prom(imx_prometheus_child(pchild, s));
    }
    if (!mc->urls) {
        return;
    }
    /* The flusher's own pool, not a child of pchild: pchild is destroyed
     * when the child stops, maybe while the flusher still sends, and maybe
     * in a signal handler. The flusher destroys this one itself. */
    if (apr_pool_create_unmanaged_ex(&fpool, NULL, NULL) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s,
                     "IMX0002: cannot create the flusher's pool, recording is off");
        return;
    }
    apr_pool_tag(fpool, "imx_flusher");
    memset(&hc, 0, sizeof(hc));
    hc.urls = (const char *const *)mc->urls->elts;
    hc.nurls = mc->urls->nelts;
    hc.token = mc->token;
    hc.timeout = settings.timeout;
    hc.tls_verify = settings.tls_verify;
    hc.ca_file = mc->ca_file;
    hc.proxy = mc->proxy;
    http = imx_http_create(fpool, &hc, err, sizeof(err));
    if (!http) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s,
                     "IMX0002: cannot set up the sender, recording is off: %s", err);
        apr_pool_destroy(fpool);
        return;
    }
    engine_conf(&ec, fpool, s, http, &slot);
    imx_summary_child(slot);
    ec.spool = child_spool(fpool, s, mc);
    /* The ring and the engine come from the process pool, not pchild: a
     * worker thread still logging a request while the child is torn down
     * (mod_http2 joins its workers after this module's cleanup) then finds
     * a stopped engine, not freed memory. Sized once, here. */
    e = imx_engine_create(s->process->pool, &ec, err, sizeof(err));
    if (!e) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s,
                     "IMX0003: cannot create the buffer, recording is off: %s", err);
        imx_status_unclaim();
        apr_pool_destroy(fpool);
        return;
    }
    rv = imx_engine_start(e);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s,
                     "IMX0004: cannot start the flusher thread, recording is off");
        imx_status_unclaim();
        apr_pool_destroy(fpool);
        return;
    }
    atomic_store(&engine, e);
    imx_request_child(imx_engine_ring(e));
    /* A pre-cleanup, so it runs before the pools of other modules' threads
     * go, on every orderly child exit. */
    apr_pool_pre_cleanup_register(pchild, NULL, child_stop);
}

static void register_hooks(apr_pool_t *p)
{
    imx_fields_register_hooks(p);
    ap_hook_insert_filter(imx_request_insert_filter, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_insert_error_filter(imx_request_insert_filter, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_check_config(imx_conf_check, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_monitor(imx_status_monitor, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(imx_prefork_child_init_hold, NULL, NULL, APR_HOOK_REALLY_FIRST);
    ap_hook_child_init(child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(imx_prefork_child_init_done, NULL, NULL, APR_HOOK_REALLY_LAST);
    ap_hook_child_status(imx_reqtags_child_status, NULL, NULL, APR_HOOK_MIDDLE);
    /* First and last, so that with prefork a stop waits while any module
     * logs (see mod_influx_metrics_prefork.c). */
    ap_hook_log_transaction(imx_request_log, NULL, NULL, APR_HOOK_FIRST);
    ap_hook_log_transaction(imx_prefork_log_done, NULL, NULL, APR_HOOK_REALLY_LAST);
    ap_hook_handler(imx_status_handler, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(imx_prometheus_handler, NULL, NULL, APR_HOOK_MIDDLE);
    APR_OPTIONAL_HOOK(ap, status_hook, imx_status_hook, NULL, NULL, APR_HOOK_MIDDLE);
}
