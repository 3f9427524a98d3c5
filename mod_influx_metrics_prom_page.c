/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * mod_influx_metrics_prom_page.c: the page behind SetHandler
 * influx-metrics-prometheus (httpd glue): the request histograms of every
 * child (mod_influx_metrics_prom.c), the workers from the scoreboard and the
 * module's delivery counters, in the text format 0.0.4 or, when the scrape
 * asks for it, OpenMetrics 1.0 with exemplars.
 *
 * A scrape reads shared memory and writes private memory only: it takes no
 * lock a request takes, and any number of them can run at once.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"

#include "apr_strings.h"

#include "imx_names.h"
#include "mod_influx_metrics_capacity.h"
#include "mod_influx_metrics_names.h"
#include "mod_influx_metrics_prom.h"
#include "mod_influx_metrics_request.h"
#include "mod_influx_metrics_status.h"

APLOG_USE_MODULE(influx_metrics);

/* The labels of a key, for imx_prom_write_*: built in line-protocol form
 * from the registry (vhost, route, method, status, then the server's static
 * tags), the very texts the raw points carry, then made labels. */
typedef struct {
    char *lp, *out;
    size_t lpcap, outcap;
} labels_t;

static int grow(char **buf, size_t *cap, size_t need)
{
    if (need > *cap) {
        char *nb = realloc(*buf, need * 2);

        if (!nb) {
            return -1;
        }
        *buf = nb;
        *cap = need * 2;
    }
    return 0;
}

static const char *key_labels(void *ctx, uint64_t key)
{
    labels_t *l = ctx;
    const imx_names_t *reg = imx_reg();
    const char *const *methods = imx_request_methods();
    uint64_t k = key - 1;
    uint32_t server = (uint32_t)(k >> 27) & 0x7ff, route = (uint32_t)(k >> 16) & 0x7ff;
    uint32_t method = (uint32_t)(k >> 10) & 0x3f, status = (uint32_t)k & 0x3ff;
    const char *sv, *rt = "", *m;
    size_t slen, ssplit, rlen = 0, rsplit, mlen, n;
    char *w;

    if (key == IMX_PROM_OVERFLOW) {
        /* Requests of a child whose table was full: still counted, under
         * labels of their own, so that sums over all series stay exact. */
        return "vhost=\"other\",route=\"other\",method=\"OTHER\",status=\"other\"";
    }
    if (!reg || (!(sv = imx_names_get(reg, IMX_NAMES_SERVER, server, &slen, &ssplit))
                 && !(sv = imx_names_get(reg, IMX_NAMES_SERVER, IMX_SERVER_OTHER, &slen,
                                         &ssplit)))) {
        sv = ",vhost=other";
        slen = ssplit = strlen(sv);
    }
    if (route && reg && !(rt = imx_names_get(reg, IMX_NAMES_ROUTE, route, &rlen, &rsplit))) {
        rt = ",route=other";
        rlen = strlen(rt);
    }
    m = method < IMX_METHODS && methods[method] ? methods[method] : "OTHER";
    mlen = strlen(m);
    if (grow(&l->lp, &l->lpcap, slen + rlen + mlen + 32) != 0) {
        return NULL;
    }
    w = l->lp;
    memcpy(w, sv, ssplit);
    w += ssplit;
    memcpy(w, rt, rlen);
    w += rlen;
    w += sprintf(w, ",method=%s,status=%u", m, status);
    memcpy(w, sv + ssplit, slen - ssplit);
    w += slen - ssplit;
    n = (size_t)(w - l->lp);
    if (grow(&l->out, &l->outcap, IMX_PROM_LABELS_MAX(n)) != 0) {
        return NULL;
    }
    imx_prom_lp_labels(l->out, l->outcap, l->lp, n);
    return l->out;
}

/* The delivery counters of the status page, by their status keys: counters
 * (they only grow) and levels. */
static void write_delivery(imx_prom_out_t *o, imx_prom_fmt_t fmt)
{
    static const struct {
        int idx, counter;
        const char *help;
    } keys[] = {
        { IMX_C_RECORDED, 1, "Requests recorded as points." },
        { IMX_C_SENT, 1, "Points InfluxDB accepted." },
        { IMX_C_REJECTED, 1, "Points InfluxDB refused (bad data, not retried)." },
        { IMX_C_DROPPED_FULL, 1, "Points dropped: the child's buffer was full." },
        { IMX_C_DROPPED_RETRY, 1, "Points dropped: retry time or buffer exhausted." },
        { IMX_C_DROPPED_EXIT, 1, "Points dropped at a child's exit." },
        { IMX_C_RETRIES, 1, "Retried writes." },
        { IMX_C_BATCHES, 1, "Writes InfluxDB accepted." },
        { IMX_C_BYTES, 1, "Bytes of the writes InfluxDB accepted." },
        { IMX_C_LOST, 1, "Points a crashed child held that were lost." },
        { IMX_C_MAYBE, 1, "Points whose write had no answer: stored or not." },
        { IMX_C_TO_SPOOL, 1, "Points written to the spool." },
        { IMX_C_UNSPOOLED, 1, "Points sent from the spool." },
        { IMX_C_DROPPED_SPOOL, 1, "Points dropped by the spool (full or bad files)." },
        { IMX_C_BUFFERED, 0, "Points waiting in the children's buffers." },
        { IMX_C_RETRY_BYTES, 0, "Bytes held for retry." },
        { IMX_C_SPOOLED, 0, "Points in the spool." },
        { IMX_C_SPOOL_BYTES, 0, "Bytes of the spool files." },
        { IMX_C_SPOOL_BAD, 0, "Spool files found bad." },
    };
    imx_status_totals_t t;
    char name[96];

    if (!imx_status_read_totals(&t)) {
        return;                 /* no InfluxMetricsURL: nothing is delivered */
    }
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        imx_prom_sample_t smp = { NULL, t.tot[keys[i].idx] };

        snprintf(name, sizeof(name), "apache_influx_metrics_%s", imx_status_names[keys[i].idx]);
        if (keys[i].counter) {
            imx_prom_write_counter(o, fmt, name, keys[i].help, NULL, &smp, 1);
        }
        else {
            imx_prom_write_gauge(o, fmt, name, keys[i].help, NULL, &smp, 1);
        }
    }
}

static void write_workers(imx_prom_out_t *o, imx_prom_fmt_t fmt)
{
    imx_workers_t w;
    imx_prom_sample_t smp = { NULL, 0 };

    imx_capacity_workers(&w);
    smp.value = (uint64_t)w.busy;
    imx_prom_write_gauge(o, fmt, "apache_busy_workers",
                         "Workers serving a request now (the scoreboard).", NULL, &smp, 1);
    smp.value = (uint64_t)w.idle;
    imx_prom_write_gauge(o, fmt, "apache_idle_workers",
                         "Workers ready for a request now (the scoreboard).", NULL, &smp, 1);
    smp.value = (uint64_t)(w.max > 0 ? w.max : 0);
    imx_prom_write_gauge(o, fmt, "apache_max_workers",
                         "Workers the server may run (MaxRequestWorkers).", NULL, &smp, 1);
}

static __attribute__((noinline)) int page(request_rec *r)
{
    imx_prom_fmt_t fmt = imx_prom_negotiate(apr_table_get(r->headers_in, "Accept"));
    imx_prom_out_t o = { 0 };
    labels_t l = { 0 };
    imx_prom_acc_t *a;
    int err;

    /* The Allow header of a 405 (HEAD comes with GET). */
    ap_allow_standard_methods(r, REPLACE_ALLOW, M_GET, -1);
    if (r->method_number != M_GET) {
        return HTTP_METHOD_NOT_ALLOWED;
    }
    a = imx_prometheus_read(fmt == IMX_PROM_OPENMETRICS, &err);
    if (a) {
        imx_prom_write_duration(&o, fmt, a, key_labels, &l);
        imx_prom_write_bytes(&o, fmt, a, key_labels, &l);
        imx_prom_acc_free(a);
    }
    else if (err == IMX_PROM_ENOMEM) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "IMX0027: out of memory for a scrape");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    /* else: the configuration names no such handler, or the segment could
     * not be made (logged at startup): the other families still come. */
    write_workers(&o, fmt);
    write_delivery(&o, fmt);
    imx_prom_write_eof(&o, fmt);
    free(l.lp);
    free(l.out);
    if (o.failed) {
        imx_prom_out_free(&o);
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "IMX0027: out of memory for a scrape");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    ap_set_content_type(r, imx_prom_content_type(fmt));
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    apr_table_mergen(r->headers_out, "Vary", "Accept");
    ap_set_content_length(r, (apr_off_t)o.len);
    if (!r->header_only) {
        ap_rwrite(o.buf, (int)o.len, r);
    }
    imx_prom_out_free(&o);
    return OK;
}

int imx_prometheus_handler(request_rec *r)
{
    if (!r->handler || r->handler[0] != 'i' || strcmp(r->handler, IMX_PROM_HANDLER)) {
        return DECLINED;
    }
    return page(r);
}
