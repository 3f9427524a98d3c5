/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * mod_influx_metrics_request.c: the request path: what every request costs
 * the server it is measured in (httpd glue).
 *
 * Everything a request needs was prepared before the fork (escaped series
 * texts as registry ids, method names, request-tag tables): the
 * log_transaction hook reads the clock once, fills a fixed-size record and
 * pushes it into the child's ring, and adds the request to its summary
 * table. It never waits on the network, takes no lock a flush can hold,
 * and allocates nothing; a full ring counts a drop.
 */
#include <stdatomic.h>

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"

#include "apr_hash.h"
#include "apr_strings.h"

#include "imx_engine.h"
#include "mod_influx_metrics_records.h"
#include "mod_influx_metrics_tagconf.h"
#include "mod_influx_metrics_fields.h"
#include "mod_influx_metrics_names.h"
#include "mod_influx_metrics_prefork.h"
#include "mod_influx_metrics_prom.h"
#include "mod_influx_metrics_reqtags.h"
#include "mod_influx_metrics_request.h"
#include "mod_influx_metrics_summary.h"

APLOG_USE_MODULE(influx_metrics);

#define METHOD_HEAD M_INVALID
#define METHOD_OTHER (M_INVALID + 1)

/* Set before the fork (post_config) but for the ring, set once per child
 * when its flusher runs and never cleared: its memory lives as long as the
 * process, and a stopped ring refuses (and counts) what is pushed late. */
static _Atomic(imx_ring_t *) ring;
/* The Prometheus table, set once per child in child_init, never cleared. */
static _Atomic(imx_prom_table_t *) prom;
static int mode;
/* Escaped method names by index: M_* numbers, then HEAD and OTHER. */
static const char *method_names[IMX_METHODS];
/* By InfluxMetricsTagFrom index: the tag of a value written as "other". */
static uint32_t *reqtag_other;
static __thread uint64_t rng_state;

void imx_request_post_config(apr_pool_t *pconf, apr_pool_t *ptemp, server_rec *s, int m)
{
    apr_array_header_t *keys = imx_conf_reqtag_keys(pconf);

    mode = m;
    for (int i = 0; i < M_INVALID; i++) {
        /* HEAD shares M_GET, so the registry may name M_GET either way. */
        const char *name = i == M_GET ? "GET" : ap_method_name_of(pconf, i);
        method_names[i] = name ? imx_pescape(pconf, name, IMX_ESC_TAG) : NULL;
    }
    method_names[METHOD_HEAD] = "HEAD";
    method_names[METHOD_OTHER] = "OTHER";
    /* A value refused (table full, off the allow-list) is written as
     * "other": a fixed text, so a registry id, as the point's tag. */
    reqtag_other = apr_pcalloc(pconf, sizeof(uint32_t) * (apr_size_t)(keys->nelts + 1));
    for (int k = 0; k < keys->nelts; k++) {
        int id = imx_reg_text_id(s, IMX_NAMES_FIXED, apr_pstrcat(ptemp, ",", imx_pescape(
                                     ptemp, APR_ARRAY_IDX(keys, k, const char *), IMX_ESC_TAG),
                                     "=other", NULL));
        reqtag_other[k] = id < 0 ? 0 : IMX_REQTAG_FIXED | (uint32_t)id;
    }
}

const char *const *imx_request_methods(void)
{
    return method_names;
}

void imx_request_child(imx_ring_t *r)
{
    atomic_store_explicit(&ring, r, memory_order_release);
}

void imx_request_prom(imx_prom_table_t *t)
{
    atomic_store_explicit(&prom, t, memory_order_release);
}

/* ------------------------------------------------------------------------- */
/* Request path                                                               */

/* A request into the Prometheus table, but not a scrape: its own page
 * could count it only one scrape late, so every scrape would see one
 * request more than the one before, of its own making. */
static inline void prom_count(imx_prom_table_t *t, const request_rec *r,
                              const request_rec *last, const imx_srv_conf_t *sc,
                              const imx_dir_conf_t *dc, int midx, apr_time_t now,
                              const char *rid, size_t rid_len)
{
    const char *h = last->handler;
    int status = last->status > 0 && last->status < 1000 ? last->status : 0;

    if (h && h[0] == 'i' && !strcmp(h, IMX_PROM_HANDLER)) {
        return;
    }
    imx_prom_record(t, IMX_PROM_KEY(sc->reg_server, sc->reg_routes[dc->route_idx], midx, status),
                    (uint64_t)(now > r->request_time ? now - r->request_time : 0),
                    last->sent_bodyct ? (uint64_t)last->bytes_sent : 0, rid, rid_len,
                    (int64_t)now * 1000);
}

/* Index into method_names of a request's method. */
static int method_index(const request_rec *r)
{
    /* httpd numbers a request by its method's exact name, with one
     * exception: HEAD is M_GET with header_only set. */
    if (r->method_number >= 0 && r->method_number < M_INVALID
        && method_names[r->method_number]) {
        return r->method_number == M_GET && r->header_only ? METHOD_HEAD : r->method_number;
    }
    return METHOD_OTHER;
}

/* Raw mode with sampling: keep this request? Sets pt->sample. */
static int sampled_in(const imx_dir_conf_t *dc, imx_point_t *pt)
{
    uint64_t x;

    if (dc->sample < 0 || dc->sample >= 1) {
        pt->sample = 0;
        return 1;
    }
    if ((dc->keep_errors == 1 && pt->status >= 500)
        || (dc->keep_slow != IMX_UNSET && pt->duration_us >= dc->keep_slow)) {
        pt->sample = 10000;     /* kept for what it is: it stands for itself */
        return 1;
    }
    if (!rng_state) {
        /* The variable's address differs per thread: a per-thread seed. */
        rng_state = ((uint64_t)apr_time_now() << 16)
                    ^ (uint64_t)(uintptr_t)&rng_state * 0x9e3779b97f4a7c15ULL;
        rng_state |= 1;
    }
    x = rng_state;              /* xorshift64: per thread, no lock */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    rng_state = x;
    pt->sample = (uint16_t)(dc->sample * 10000 + 0.5);
    return (double)(x >> 11) * (1.0 / 9007199254740992.0) < dc->sample;
}

/* The request tag of a request (InfluxMetricsTagFrom of its context), or 0. */
static uint32_t reqtag_of(const request_rec *r, const request_rec *last,
                          const imx_dir_conf_t *dc)
{
    const char *v = dc->from_src == IMX_FROM_ENV ? apr_table_get(last->subprocess_env,
                                                                 dc->from_name)
                    : dc->from_src == IMX_FROM_NOTE ? apr_table_get(last->notes, dc->from_name)
                    : apr_table_get(r->headers_in, dc->from_name);
    apr_hash_t *allow;
    uint32_t other;

    if (!v || !*v) {
        return 0;
    }
    allow = dc->from_allow ? apr_hash_get(dc->from_allow, dc->from_key, APR_HASH_KEY_STRING)
                           : NULL;
    other = reqtag_other[dc->from_idx];
    /* A value off the allow-list never takes a place in the table. */
    if (allow && !apr_hash_get(allow, v, APR_HASH_KEY_STRING)) {
        return other;
    }
    return imx_reqtags_intern(dc->from_idx, dc->from_key, v, other);
}

/* Everything but the plainest request: summaries, sampling, request tags,
 * optional fields. Out of line, so that the common path keeps no request
 * id buffer on its stack. */
static __attribute__((noinline)) void log_full(request_rec *r, const request_rec *last,
                                               const imx_dir_conf_t *dc,
                                               const imx_srv_conf_t *sc, imx_ring_t *rg,
                                               imx_prom_table_t *pm, apr_time_t now, int midx)
{
    imx_point_t pt = { 0 };
    char rid[IMX_RID_MAX + 1];

    /* The start: the encoder makes it unique server-wide, so InfluxDB
     * never merges two requests of one series (imx_ts.h). */
    pt.ts_ns = r->request_time * 1000;
    pt.duration_us = now - r->request_time;
    /* As %B: no body went out (HEAD, 304) means 0, whatever was counted. */
    pt.bytes_sent = last->sent_bodyct ? last->bytes_sent : 0;
    pt.server = (uint16_t)sc->reg_server;
    pt.route = (uint16_t)sc->reg_routes[dc->route_idx];
    pt.method = (uint8_t)midx;
    pt.status = (uint16_t)(last->status > 0 && last->status < 1000 ? last->status : 0);
    rid[0] = '\0';
    if (sc->fields) {
        imx_fields_fill(r, last, sc->fields, sc->rid_header, &pt, rid);
    }
    if (pm) {
        prom_count(pm, r, last, sc, dc, midx, now, pt.rid_len ? rid : NULL, pt.rid_len);
    }
    if (!rg) {
        return;
    }
    if (mode & IMX_MODE_SUMMARY) {
        int cls = pt.status / 100;
        uint32_t key = IMX_KEY(sc->reg_server, pt.route, midx, cls < 6 ? cls : 0);
        uint64_t us = (uint64_t)(pt.duration_us > 0 ? pt.duration_us : 0);
        imx_summary_extra_t x = { pt.ttfb_us, dc->slo > 0 ? (uint64_t)dc->slo : 0, rid,
                                  pt.rid_len };

        imx_summary_record(key, us, pt.status >= 500, sc->fields || dc->slo > 0 ? &x : NULL);
    }
    if ((mode & IMX_MODE_RAW) && sampled_in(dc, &pt)) {
        if (dc->from_src) {
            pt.reqtag = reqtag_of(r, last, dc);
        }
        imx_ring_push(rg, &pt, pt.rid_len ? rid : NULL);
    }
}

int imx_request_log(request_rec *r)
{
    const request_rec *last = r;
    const imx_dir_conf_t *dc;
    const imx_srv_conf_t *sc;
    imx_cell_t *c;
    uint64_t pos;
    apr_time_t now;
    int midx;
    /* Loaded once: the same ring is recorded into, whatever happens. */
    imx_ring_t *rg = atomic_load_explicit(&ring, memory_order_acquire);
    imx_prom_table_t *pm = atomic_load_explicit(&prom, memory_order_acquire);

    imx_prefork_hold();         /* until imx_prefork_log_done */
    if (!rg && !pm) {
        return DECLINED;
    }
    dc = imx_dir_conf(r);
    if (dc->enabled == 0) {
        return DECLINED;
    }
    now = apr_time_now();
    while (last->next) {
        last = last->next;
    }
    sc = imx_srv_conf(r->server);
    midx = method_index(r);
    if (!rg || mode != IMX_MODE_RAW || sc->fields || dc->from_src
        || (dc->sample >= 0 && dc->sample < 1)) {
        if (rg || (sc->fields & IMX_F_REQUEST_ID)) {
            log_full(r, last, dc, sc, rg, pm, now, midx);
        }
        else {
            prom_count(pm, r, last, sc, dc, midx, now, NULL, 0);
        }
        return DECLINED;
    }
    if (pm) {
        prom_count(pm, r, last, sc, dc, midx, now, NULL, 0);
    }
    /* The common case: a raw point, written once, in its cell. */
    if ((c = imx_ring_claim(rg, &pos))) {
        imx_point_t *pt = &c->pt;

        pt->ts_ns = r->request_time * 1000;
        pt->duration_us = now - r->request_time;
        pt->bytes_sent = last->sent_bodyct ? last->bytes_sent : 0;
        pt->bytes_received = 0;
        pt->reqtag = 0;
        pt->ttfb_us = 0;
        pt->server = (uint16_t)sc->reg_server;
        pt->route = (uint16_t)sc->reg_routes[dc->route_idx];
        pt->upstream = 0;
        pt->status = (uint16_t)(last->status > 0 && last->status < 1000 ? last->status : 0);
        pt->sample = 0;
        pt->method = (uint8_t)midx;
        pt->protocol = 0;
        pt->tls = 0;
        pt->rid_len = 0;
        pt->fields = 0;
        pt->spare = 0;
        imx_ring_publish(rg, c, pos);
    }
    return DECLINED;
}

void imx_request_insert_filter(request_rec *r)
{
    const imx_srv_conf_t *sc = imx_srv_conf(r->server);

    if (!(sc->fields & (IMX_F_TTFB | IMX_F_BYTES_RECEIVED))
        || !atomic_load_explicit(&ring, memory_order_relaxed)) {
        return;
    }
    if (imx_dir_conf(r)->enabled != 0) {
        imx_fields_insert(r, sc->fields);
    }
}
