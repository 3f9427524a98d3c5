/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * mod_influx_metrics_status_page.c: the module's counters as pages: the
 * handler behind SetHandler influx-metrics-status (HTML, ?json, ?auto) and
 * mod_status's server-status page.
 *
 * Read from the counters in shared memory (mod_influx_metrics_status.h),
 * so any child answers for all of them, the ones that are gone included.
 */
#include <string.h>

#include "httpd.h"
#include "http_protocol.h"
#include "http_request.h"
#include "mod_status.h"

#include "apr_lib.h"
#include "apr_strings.h"

#include "imx_lineproto.h"
#include "mod_influx_metrics_status.h"
#include "mod_influx_metrics_status_page.h"

/* A JSON string: backend answers and texts can hold any bytes, and JSON
 * must be valid UTF-8, so invalid sequences become U+FFFD. */
static void json_str(request_rec *r, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);

    ap_rputc('"', r);
    while (n) {
        size_t l = imx_utf8_len(p, n);

        if (!l) {
            ap_rputs("\\ufffd", r);
            l = 1;
        }
        else if (*p == '"' || *p == '\\') {
            ap_rprintf(r, "\\%c", *p);
        }
        else if (*p < 0x20 || *p == 0x7f) {
            ap_rprintf(r, "\\u%04x", *p);
        }
        else {
            ap_rwrite(p, (int)l, r);
        }
        p += l;
        n -= l;
    }
    ap_rputc('"', r);
}

static void json_time(request_rec *r, const char *key, apr_time_t t)
{
    char buf[APR_RFC822_DATE_LEN];

    ap_rprintf(r, ",\"%s\":", key);
    if (t) {
        apr_rfc822_date(buf, t);
        json_str(r, buf);
    }
    else {
        ap_rputs("null", r);
    }
}

static void json_counters(request_rec *r, const uint64_t *v)
{
    ap_rprintf(r, "\"dropped\":%" APR_UINT64_T_FMT, imx_status_dropped(v));
    for (int i = 0; i < IMX_NCOUNTERS; i++) {
        ap_rprintf(r, ",\"%s\":%" APR_UINT64_T_FMT, imx_status_names[i], v[i]);
    }
}

static void page_json(request_rec *r, const imx_status_totals_t *t)
{
    int first = 1;

    ap_set_content_type(r, "application/json");
    ap_rputs("{", r);
    json_counters(r, t->tot);
    ap_rputs(",\"last_error\":", r);
    if (t->last_error_time) {
        json_str(r, t->last_error);
    }
    else {
        ap_rputs("null", r);
    }
    json_time(r, "last_error_time", t->last_error_time);
    json_time(r, "last_ok", t->last_ok);
    ap_rputs(",\"children\":[", r);
    for (uint32_t i = 0; i < imx_status_nslots(); i++) {
        imx_status_child_t c;

        if (!imx_status_read_child(i, &c)) {
            continue;
        }
        ap_rprintf(r, "%s{\"slot\":%u,\"pid\":%u,\"state\":\"%s\",\"capacity\":%u,"
                   "\"buffer_fill\":%.4f,", first ? "" : ",", i, c.pid,
                   c.active ? "active" : "exited", c.capacity,
                   c.capacity ? (double)c.v[IMX_C_BUFFERED] / c.capacity : 0.0);
        json_counters(r, c.v);
        ap_rputs(",\"last_error\":", r);
        if (c.last_error_time) {
            json_str(r, c.last_error);
        }
        else {
            ap_rputs("null", r);
        }
        json_time(r, "last_error_time", c.last_error_time);
        json_time(r, "last_ok", c.last_ok);
        json_time(r, "started", c.started);
        ap_rputs("}", r);
        first = 0;
    }
    ap_rputs("]}\n", r);
}

static void page_auto(request_rec *r, const imx_status_totals_t *t, const char *prefix)
{
    ap_rprintf(r, "%sDropped: %" APR_UINT64_T_FMT "\n", prefix, imx_status_dropped(t->tot));
    for (int i = 0; i < IMX_NCOUNTERS; i++) {
        ap_rprintf(r, "%s%c%s: %" APR_UINT64_T_FMT "\n", prefix,
                   apr_toupper(imx_status_names[i][0]), imx_status_names[i] + 1, t->tot[i]);
    }
    if (t->last_error_time) {
        /* One line: the text never holds a newline (the engine strips them). */
        ap_rprintf(r, "%sLast_error: %s\n", prefix, t->last_error);
    }
}

static void page_html(request_rec *r, const imx_status_totals_t *t)
{
    char buf[APR_RFC822_DATE_LEN];

    ap_set_content_type(r, "text/html; charset=utf-8");
    ap_rputs(DOCTYPE_HTML_4_01 "<html><head><title>mod_influx_metrics status</title>"
             "</head><body><h1>mod_influx_metrics</h1>\n<table border=\"1\">\n", r);
    ap_rprintf(r, "<tr><th>dropped (all reasons)</th><td>%" APR_UINT64_T_FMT "</td></tr>\n",
               imx_status_dropped(t->tot));
    for (int i = 0; i < IMX_NCOUNTERS; i++) {
        ap_rprintf(r, "<tr><th>%s</th><td>%" APR_UINT64_T_FMT "</td></tr>\n",
                   imx_status_names[i], t->tot[i]);
    }
    if (t->last_ok) {
        apr_rfc822_date(buf, t->last_ok);
        ap_rprintf(r, "<tr><th>last successful write</th><td>%s</td></tr>\n", buf);
    }
    if (t->last_error_time) {
        apr_rfc822_date(buf, t->last_error_time);
        ap_rprintf(r, "<tr><th>last error</th><td>%s: %s</td></tr>\n", buf,
                   ap_escape_html(r->pool, t->last_error));
    }
    ap_rputs("</table>\n<h2>Children</h2>\n<table border=\"1\"><tr><th>slot</th>"
             "<th>pid</th><th>recorded</th><th>sent</th><th>dropped</th><th>buffered</th>"
             "<th>buffer fill</th><th>retries</th><th>to spool</th><th>unspooled</th>"
             "</tr>\n", r);
    for (uint32_t i = 0; i < imx_status_nslots(); i++) {
        imx_status_child_t c;
        const uint64_t *v = c.v;

        if (!imx_status_read_child(i, &c)) {
            continue;
        }
        ap_rprintf(r, "<tr><td>%u</td><td>%u</td><td>%" APR_UINT64_T_FMT "</td><td>%"
                   APR_UINT64_T_FMT "</td><td>%" APR_UINT64_T_FMT "</td><td>%"
                   APR_UINT64_T_FMT "</td><td>%.1f%%</td><td>%" APR_UINT64_T_FMT
                   "</td><td>%" APR_UINT64_T_FMT "</td><td>%" APR_UINT64_T_FMT
                   "</td></tr>\n", i, c.pid, v[IMX_C_RECORDED], v[IMX_C_SENT],
                   imx_status_dropped(v), v[IMX_C_BUFFERED],
                   c.capacity ? 100.0 * (double)v[IMX_C_BUFFERED] / c.capacity : 0.0,
                   v[IMX_C_RETRIES], v[IMX_C_TO_SPOOL], v[IMX_C_UNSPOOLED]);
    }
    ap_rputs("</table></body></html>\n", r);
}

static int status_page(request_rec *r);

/* Every request passes here: declining costs a comparison, not the frame of
 * the page's large locals. */
int imx_status_handler(request_rec *r)
{
    if (!r->handler || r->handler[0] != 'i' || strcmp(r->handler, "influx-metrics-status")) {
        return DECLINED;
    }
    return status_page(r);
}

static __attribute__((noinline)) int status_page(request_rec *r)
{
    imx_status_totals_t t;

    /* The Allow header of a 405 (HEAD comes with GET). */
    ap_allow_standard_methods(r, REPLACE_ALLOW, M_GET, -1);
    if (r->method_number != M_GET) {
        return HTTP_METHOD_NOT_ALLOWED;
    }
    if (!imx_status_read_totals(&t)) {
        return HTTP_SERVICE_UNAVAILABLE;
    }
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    if (r->args && !strcmp(r->args, "json")) {
        page_json(r, &t);
    }
    else if (r->args && !strcmp(r->args, "auto")) {
        ap_set_content_type(r, "text/plain; charset=utf-8");
        page_auto(r, &t, "");
    }
    else {
        page_html(r, &t);
    }
    return OK;
}

int imx_status_hook(request_rec *r, int flags)
{
    imx_status_totals_t t;

    if (!imx_status_read_totals(&t)) {
        return OK;
    }
    if (flags & AP_STATUS_SHORT) {
        page_auto(r, &t, "InfluxMetrics");
        return OK;
    }
    ap_rputs("<hr />\n<h2>mod_influx_metrics</h2>\n<dl>", r);
    ap_rprintf(r, "<dt>dropped (all reasons): %" APR_UINT64_T_FMT "</dt>\n", imx_status_dropped(t.tot));
    for (int i = 0; i < IMX_NCOUNTERS; i++) {
        ap_rprintf(r, "<dt>%s: %" APR_UINT64_T_FMT "</dt>\n", imx_status_names[i], t.tot[i]);
    }
    if (t.last_error_time) {
        ap_rprintf(r, "<dt>last error: %s</dt>\n", ap_escape_html(r->pool, t.last_error));
    }
    ap_rputs("</dl>\n", r);
    return OK;
}
