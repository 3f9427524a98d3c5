/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * mod_influx_metrics_fields.c: the optional fields and tags of request
 * points (see mod_influx_metrics_fields.h).
 *
 * Where each value comes from:
 *   ttfb_us         our own output filter, as mod_logio's %^FB: the time the
 *                   first brigade of the response passes the resource
 *                   filters, from the request's start. mod_proxy_http passes
 *                   a flush as soon as the backend's headers are in, so a
 *                   proxied response counts from its headers, not its body.
 *   bytes_received  mod_logio's count of the connection's bytes in since
 *                   the last request was logged (%I), read from its
 *                   connection config before its own log hook resets it;
 *                   without mod_logio, the body bytes read, counted by our
 *                   input filter.
 *   request_id      traceparent, UNIQUE_ID, then InfluxMetricsRequestIDHeader.
 *   protocol        r->proto_num.
 *   tls             SSL_PROTOCOL of the connection (of the master connection
 *                   for HTTP/2 streams), through the core's ap_ssl_var_lookup.
 *   upstream        mod_proxy's scheme_handler hook names the worker that
 *                   serves the request; its name is looked up among the
 *                   workers of the configuration, registered at startup,
 *                   so the tag takes only configured values. That hook is
 *                   mod_proxy's own (not an optional hook), and linking to
 *                   mod_proxy would make it a requirement: its registration
 *                   function is looked up once every module is loaded.
 * Filters are only added for requests whose server asks for the field.
 */
#include <dlfcn.h>
#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "http_ssl.h"
#include "util_filter.h"
#include "mod_proxy.h"

#include "apr_hash.h"
#include "apr_strings.h"

#include "imx_engine.h"
#include "mod_influx_metrics_fields.h"
#include "mod_influx_metrics_names.h"
#include "mod_influx_metrics_summary.h"

APLOG_USE_MODULE(influx_metrics);

/* What the filters and hooks learnt of one request, in its request_config. */
typedef struct {
    apr_time_t first_out;       /* first response brigade, or 0 */
    apr_off_t body_in;          /* body bytes read (without mod_logio) */
    uint16_t upstream;          /* 0: not proxied */
    unsigned filters;           /* IMX_F_* whose filter this request has */
} req_note_t;

static const struct {
    const char *name;
    unsigned bit;
} field_names[] = {
    { "ttfb", IMX_F_TTFB }, { "bytes_received", IMX_F_BYTES_RECEIVED },
    { "request_id", IMX_F_REQUEST_ID }, { "protocol", IMX_F_PROTOCOL },
    { "tls", IMX_F_TLS }, { "upstream", IMX_F_UPSTREAM }, { NULL, 0 }
};

/* Upstream names: raw worker name -> registry id (kind 2). Built in the
 * parent at post_config, read-only in the children. Id 0 is "-". */
#define UPSTREAM_MAX 2046
static apr_hash_t *upstream_ids;
static unsigned upstream_n;
static uint16_t upstream_other;         /* ",upstream=other" */
/* mod_logio, when loaded: its connection config starts with bytes_in. */
static module *logio;

/* Added by handle: by name, each request would look the name up. */
static ap_filter_rec_t *ttfb_filter;
static ap_filter_rec_t *body_filter;

unsigned imx_fields_bit(const char *name)
{
    for (unsigned i = 0; field_names[i].name; i++) {
        if (!strcasecmp(name, field_names[i].name)) {
            return field_names[i].bit;
        }
    }
    return 0;
}

static req_note_t *note_of(request_rec *r)
{
    req_note_t *n = ap_get_module_config(r->request_config, &influx_metrics_module);

    if (!n) {
        n = apr_pcalloc(r->pool, sizeof(*n));
        ap_set_module_config(r->request_config, &influx_metrics_module, n);
    }
    return n;
}

/* ------------------------------------------------------------------------- */
/* Filters and hooks                                                          */

static apr_status_t ttfb_out(ap_filter_t *f, apr_bucket_brigade *bb)
{
    if (f->r) {
        req_note_t *n = note_of(f->r);
        if (!n->first_out) {
            n->first_out = apr_time_now();
        }
    }
    /* Once is all it takes: out of the way of the rest of the response. */
    ap_remove_output_filter(f);
    return ap_pass_brigade(f->next, bb);
}

static apr_status_t body_in(ap_filter_t *f, apr_bucket_brigade *bb, ap_input_mode_t mode,
                            apr_read_type_e block, apr_off_t readbytes)
{
    apr_status_t rv = ap_get_brigade(f->next, bb, mode, block, readbytes);
    apr_off_t len = 0;

    /* What a handler consumed (not a speculative peek). */
    if (rv == APR_SUCCESS && f->r && mode != AP_MODE_SPECULATIVE
        && apr_brigade_length(bb, 0, &len) == APR_SUCCESS && len > 0) {
        note_of(f->r)->body_in += len;
    }
    return rv;
}

/* mod_proxy's scheme handlers are asked in turn to handle a request, with
 * the worker that will serve it (a balancer's member, once the balancer
 * chose); this one, asked first, only notes the worker and declines. A
 * balancer that retries on another member asks again: the last one noted
 * is the one that answered. */
static int proxy_seen(request_rec *r, proxy_worker *worker, proxy_server_conf *conf,
                      char *url, const char *proxyname, apr_port_t proxyport)
{
    const char *name;
    void *id;

    (void)conf; (void)url; (void)proxyname; (void)proxyport;
    if (!worker || !worker->s || !r || !upstream_ids) {
        return DECLINED;
    }
    name = worker->s->name_ex[0] ? worker->s->name_ex : worker->s->name;
    id = apr_hash_get(upstream_ids, name, APR_HASH_KEY_STRING);
    note_of(r)->upstream = id ? (uint16_t)(uintptr_t)id : upstream_other;
    return DECLINED;
}

typedef void proxy_hook_add_t(proxy_HOOK_scheme_handler_t *pf, const char *const *pre,
                              const char *const *succ, int order);
typedef apr_array_header_t *proxy_hook_get_t(void);

/* pre_config: every LoadModule has been read (httpd loads modules with
 * RTLD_GLOBAL), and this generation's mod_proxy is fresh. */
static int hook_proxy(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp)
{
    proxy_hook_add_t *add;
    proxy_hook_get_t *get;
    apr_array_header_t *have;

    (void)pconf; (void)plog; (void)ptemp;
    if (!ap_find_linked_module("mod_proxy.c")) {
        return OK;
    }
    add = (proxy_hook_add_t *)dlsym(RTLD_DEFAULT, "proxy_hook_scheme_handler");
    get = (proxy_hook_get_t *)dlsym(RTLD_DEFAULT, "proxy_hook_get_scheme_handler");
    if (!add || !get) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, NULL, "IMX0061: mod_proxy is loaded "
                     "but its scheme_handler hook cannot be found; the tag upstream is "
                     "'-' for every request");
        return OK;
    }
    /* httpd reads its configuration twice at start: add it once. */
    have = get();
    for (int i = 0; have && i < have->nelts; i++) {
        if (APR_ARRAY_IDX(have, i, proxy_LINK_scheme_handler_t).pFunc == proxy_seen) {
            return OK;
        }
    }
    add(proxy_seen, NULL, NULL, APR_HOOK_REALLY_FIRST);
    /* The hooks were sorted before pre_config, so it was appended; mod_proxy
     * asks them until one does not decline: move it first. */
    have = get();
    if (have && have->nelts > 1) {
        proxy_LINK_scheme_handler_t mine = APR_ARRAY_IDX(have, have->nelts - 1,
                                                         proxy_LINK_scheme_handler_t);
        memmove(have->elts + have->elt_size, have->elts,
                (size_t)(have->nelts - 1) * (size_t)have->elt_size);
        APR_ARRAY_IDX(have, 0, proxy_LINK_scheme_handler_t) = mine;
    }
    return OK;
}

void imx_fields_register_hooks(apr_pool_t *p)
{
    (void)p;
    ttfb_filter = ap_register_output_filter("IMX_TTFB", ttfb_out, NULL, AP_FTYPE_RESOURCE);
    body_filter = ap_register_input_filter("IMX_BODY_IN", body_in, NULL, AP_FTYPE_RESOURCE);
    ap_hook_pre_config(hook_proxy, NULL, NULL, APR_HOOK_MIDDLE);
}

/* Also called for error responses (insert_error_filter), maybe after the
 * filters were added: a second body filter would count the body twice. */
void imx_fields_insert(request_rec *r, unsigned fields)
{
    req_note_t *n;

    fields &= IMX_F_TTFB | (logio ? 0 : IMX_F_BYTES_RECEIVED);
    if (!fields) {
        return;
    }
    n = note_of(r);
    if ((fields & IMX_F_TTFB) && !(n->filters & IMX_F_TTFB)) {
        ap_add_output_filter_handle(ttfb_filter, NULL, r, r->connection);
    }
    if ((fields & IMX_F_BYTES_RECEIVED) && !(n->filters & IMX_F_BYTES_RECEIVED)) {
        ap_add_input_filter_handle(body_filter, NULL, r, r->connection);
    }
    n->filters |= fields;
}

/* ------------------------------------------------------------------------- */
/* Startup                                                                    */

static void add_upstream(apr_pool_t *p, server_rec *s, const proxy_worker *w)
{
    const char *name;
    int id;

    if (!w || !w->s) {
        return;
    }
    name = w->s->name_ex[0] ? w->s->name_ex : w->s->name;
    if (!*name || apr_hash_get(upstream_ids, name, APR_HASH_KEY_STRING)) {
        return;
    }
    if (upstream_n >= UPSTREAM_MAX) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, "IMX0060: more than %d proxy "
                     "workers: the tag upstream of '%s' and later ones is 'other'",
                     UPSTREAM_MAX, name);
        return;
    }
    /* The registry lives as long as httpd's parent and is shared by every
     * generation, so a worker keeps its id across graceful restarts. */
    id = imx_reg_text_id(s, IMX_NAMES_UPSTREAM, apr_pstrcat(p, ",upstream=",
                                               imx_pescape(p, name, IMX_ESC_TAG), NULL));
    if (id <= 0 || id > UINT16_MAX) {
        return;                 /* full (IMX0020 says so): "other" */
    }
    upstream_n++;
    apr_hash_set(upstream_ids, apr_pstrdup(p, name), APR_HASH_KEY_STRING,
                 (void *)(uintptr_t)id);
}

void imx_fields_post_config(apr_pool_t *pconf, server_rec *s)
{
    module *proxy = ap_find_linked_module("mod_proxy.c");
    int id;

    logio = ap_find_linked_module("mod_logio.c");
    upstream_ids = apr_hash_make(pconf);
    upstream_n = 0;
    id = imx_reg_text_id(s, IMX_NAMES_UPSTREAM, ",upstream=other");
    upstream_other = (uint16_t)(id > 0 && id <= UINT16_MAX ? id : 0);
    if (!proxy) {
        return;
    }
    for (server_rec *vs = s; vs; vs = vs->next) {
        proxy_server_conf *pc = ap_get_module_config(vs->module_config, proxy);

        if (!pc) {
            continue;
        }
        for (int i = 0; pc->workers && i < pc->workers->nelts; i++) {
            add_upstream(pconf, s, &APR_ARRAY_IDX(pc->workers, i, proxy_worker));
        }
        for (int i = 0; pc->balancers && i < pc->balancers->nelts; i++) {
            proxy_balancer *b = &APR_ARRAY_IDX(pc->balancers, i, proxy_balancer);

            for (int j = 0; b->workers && j < b->workers->nelts; j++) {
                add_upstream(pconf, s, APR_ARRAY_IDX(b->workers, j, proxy_worker *));
            }
        }
    }
}

/* ------------------------------------------------------------------------- */
/* Request path                                                               */

/* Bytes allowed in a request id (ID_CHAR): no escaping needed in a line
 * protocol string or a tag, nothing that reads as markup in a dashboard;
 * and lowercase hex digits (HEX), for traceparent. */
#define ID_CHAR 1
#define HEX 2
static const unsigned char char_class[256] = {
    ['0' ... '9'] = ID_CHAR | HEX, ['a' ... 'f'] = ID_CHAR | HEX, ['g' ... 'z'] = ID_CHAR,
    ['A' ... 'Z'] = ID_CHAR, ['.'] = ID_CHAR, ['_'] = ID_CHAR, [':'] = ID_CHAR,
    ['@'] = ID_CHAR, ['/'] = ID_CHAR, ['+'] = ID_CHAR, ['='] = ID_CHAR, ['-'] = ID_CHAR
};

/* Copies s when it is 1 to IMX_RID_MAX id characters; 0 otherwise. */
static size_t take_id(const char *s, char *out)
{
    size_t n = 0;

    if (!s) {
        return 0;
    }
    while (n <= IMX_RID_MAX && (char_class[(unsigned char)s[n]] & ID_CHAR)) {
        n++;
    }
    if (!n || n > IMX_RID_MAX || s[n]) {
        return 0;
    }
    memcpy(out, s, n);
    out[n] = '\0';
    return n;
}

/* n lowercase hex digits at s, and with nonzero, not all '0'. */
static int lower_hex(const char *s, size_t n, int nonzero)
{
    unsigned char cls = HEX, any = 0;

    for (size_t i = 0; i < n; i++) {
        cls &= char_class[(unsigned char)s[i]];
        any |= (unsigned char)(s[i] ^ '0');
    }
    return cls && (any || !nonzero);
}

/* The trace id of a W3C traceparent ("00-<32 hex>-<16 hex>-<2 hex>"): later
 * versions may append fields after a '-', version ff is invalid. */
static size_t traceparent_id(const char *v, char *out)
{
    size_t len;

    if (!v) {
        return 0;
    }
    while (*v == ' ' || *v == '\t') {
        v++;
    }
    len = strlen(v);
    while (len && (v[len - 1] == ' ' || v[len - 1] == '\t')) {
        len--;
    }
    if (len < 55 || !lower_hex(v, 2, 0) || !strncmp(v, "ff", 2)
        || (!strncmp(v, "00", 2) ? len != 55 : (len > 55 && v[55] != '-'))
        || v[2] != '-' || v[35] != '-' || v[52] != '-'
        || !lower_hex(v + 3, 32, 1) || !lower_hex(v + 36, 16, 1) || !lower_hex(v + 53, 2, 0)) {
        return 0;
    }
    memcpy(out, v + 3, 32);
    out[32] = '\0';
    return 32;
}

size_t imx_fields_request_id(const request_rec *r, const request_rec *last,
                             const char *rid_header, char *out)
{
    size_t n = traceparent_id(apr_table_get(r->headers_in, "traceparent"), out);
    const char *u;

    if (n) {
        return n;
    }
    u = apr_table_get(r->subprocess_env, "UNIQUE_ID");
    if (!u && last != r) {
        u = apr_table_get(last->subprocess_env, "UNIQUE_ID");
    }
    if ((n = take_id(u, out))) {
        return n;
    }
    if (rid_header && (n = take_id(apr_table_get(r->headers_in, rid_header), out))) {
        return n;
    }
    out[0] = '\0';
    return 0;
}

static unsigned tls_of(const request_rec *r)
{
    conn_rec *c = r->connection->master ? r->connection->master : r->connection;
    const char *v;

    if (!ap_ssl_conn_is_ssl(c)) {
        return IMX_TLS_NONE;
    }
    v = ap_ssl_var_lookup(r->pool, r->server, c, NULL, "SSL_PROTOCOL");
    if (!v || strncmp(v, "TLSv1", 5)) {
        return IMX_TLS_OTHER;
    }
    return !v[5] ? IMX_TLS_10 : !strcmp(v + 5, ".1") ? IMX_TLS_11
           : !strcmp(v + 5, ".2") ? IMX_TLS_12 : !strcmp(v + 5, ".3") ? IMX_TLS_13
           : IMX_TLS_OTHER;
}

void imx_fields_fill(const request_rec *r, const request_rec *last, unsigned fields,
                     const char *rid_header, imx_point_t *pt, char *rid)
{
    const request_rec *q;
    apr_time_t first = 0;
    apr_off_t body = 0;
    uint16_t up = 0;

    pt->fields = (uint8_t)fields;
    /* Internal redirects: each request of the chain has its own notes. */
    q = r;
    do {
        const req_note_t *n = ap_get_module_config(q->request_config, &influx_metrics_module);
        if (n) {
            if (n->first_out && (!first || n->first_out < first)) {
                first = n->first_out;
            }
            body += n->body_in;
            if (n->upstream) {
                up = n->upstream;
            }
        }
    } while ((q = q->next));
    if (fields & IMX_F_TTFB) {
        apr_time_t d = first ? first - r->request_time : 0;
        pt->ttfb_us = !first ? 0 : d < 1 ? 1 : d > (apr_time_t)UINT32_MAX ? UINT32_MAX
                      : (uint32_t)d;
    }
    if (fields & IMX_F_BYTES_RECEIVED) {
        const apr_off_t *in = logio ? ap_get_module_config(r->connection->conn_config, logio)
                                    : NULL;
        pt->bytes_received = in ? *in : body;
    }
    pt->rid_len = 0;
    rid[0] = '\0';
    if (fields & IMX_F_REQUEST_ID) {
        pt->rid_len = (uint8_t)imx_fields_request_id(r, last, rid_header, rid);
    }
    if (fields & IMX_F_PROTOCOL) {
        pt->protocol = r->proto_num == HTTP_VERSION(1, 1) ? IMX_PROTO_11
                       : r->proto_num == HTTP_VERSION(2, 0) ? IMX_PROTO_20
                       : r->proto_num == HTTP_VERSION(1, 0) ? IMX_PROTO_10
                       : r->proto_num == HTTP_VERSION(0, 9) ? IMX_PROTO_09 : IMX_PROTO_OTHER;
    }
    if (fields & IMX_F_TLS) {
        pt->tls = (uint8_t)tls_of(r);
    }
    if (fields & IMX_F_UPSTREAM) {
        pt->upstream = up;
    }
}
