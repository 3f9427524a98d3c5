/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_http.c: posts line protocol bodies with libcurl.
 *
 * One easy handle per flusher, reused for every POST so the connection stays
 * open between flushes. Only the flusher thread calls imx_http_send(); the
 * one cross-thread entry is imx_http_limit(), which shutdown uses to bound a
 * POST already in flight, so it only touches an atomic.
 *
 * Secrets: the token and any user:password in the URL go to libcurl and
 * nowhere else. Error texts name the URL without user info and query.
 * Proxies: only the configured one; the environment's are ignored.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <apr_lib.h>
#include <apr_strings.h>
#include <curl/curl.h>

#include "imx_http.h"

/* Bytes of a response body kept for the error message, and of its end,
 * where InfluxDB puts "dropped=N". */
#define RESP_KEEP 1024
#define RESP_TAIL 64
/* The key of each entry of InfluxDB 3's list of refused lines. In JSON
 * text a quote inside a string is escaped, so this (quotes included) only
 * matches a key, never a part of a refused line's text. */
#define V3_KEY "\"line_number\""
/* InfluxDB 1.x's text for each line it could not parse (a partial write
 * that says dropped=0 for them). A refused line is quoted after it, but
 * every space a point can hold is escaped ("\ "), so the text with its
 * spaces only matches InfluxDB's own words. */
#define PARSE_KEY "unable to parse '"
/* A URL that failed is passed over for this long when there are others,
 * twice as long after each further failure, up to FAILOVER_HOLD_MAX. */
#define FAILOVER_HOLD apr_time_from_sec(10)
#define FAILOVER_HOLD_MAX apr_time_from_sec(320)
/* Longest Retry-After honoured (seconds). */
#define RETRY_AFTER_MAX_S 600
/* How often a POST that waits on the network hands the flusher back to
 * the engine (imx_send_info_t.wait). */
#define WAIT_SLICE_MS 20

/* Counts the occurrences of a fixed text in a body as it streams by, in
 * any cut of it into pieces (Knuth-Morris-Pratt). */
#define MATCH_MAX 32
typedef struct matcher {
    const char *pat;
    unsigned len;
    unsigned state;             /* characters matched so far */
    uint32_t hits;
    unsigned char fail[MATCH_MAX];
} matcher_t;

typedef struct target {
    CURL *curl;
    const char *url_safe;
    apr_time_t down_until;
    apr_interval_time_t hold;   /* how long the next failure passes it over */
} target_t;

struct imx_http {
    target_t *t;
    int n;
    struct curl_slist *hdrs_plain;
    struct curl_slist *hdrs_gzip;
    CURLM *multi;               /* runs every POST, so that it can wait in slices */
    apr_interval_time_t timeout;
    const char *via;                /* "", or " via proxy <redacted URL>" */
    _Atomic apr_time_t limit;       /* 0, or the time a POST must end by */
    char resp[RESP_KEEP + 1];
    size_t resp_len;
    char tail[RESP_TAIL + 1];
    size_t tail_len;
    /* InfluxDB 3 lists each refused line of a partial write, and InfluxDB
     * 1.x names each line it could not parse, with all of its text, so the
     * list outgrows what is kept above: its entries are counted as the
     * body streams by. */
    matcher_t v3_lines;
    matcher_t parse_errors;
    apr_interval_time_t retry_after;
};

static void matcher_init(matcher_t *m, const char *pat)
{
    unsigned k = 0;

    m->pat = pat;
    m->len = (unsigned)strlen(pat);
    m->fail[0] = 0;
    for (unsigned i = 1; i < m->len; i++) {
        while (k && pat[i] != pat[k]) {
            k = m->fail[k - 1];
        }
        if (pat[i] == pat[k]) {
            k++;
        }
        m->fail[i] = (unsigned char)k;
    }
    m->state = 0;
    m->hits = 0;
}

static void matcher_reset(matcher_t *m)
{
    m->state = 0;
    m->hits = 0;
}

static void matcher_feed(matcher_t *m, const char *p, size_t n)
{
    unsigned k = m->state;

    for (size_t i = 0; i < n; i++) {
        while (k && p[i] != m->pat[k]) {
            k = m->fail[k - 1];
        }
        if (p[i] == m->pat[k] && ++k == m->len) {
            m->hits++;
            k = m->fail[k - 1];
        }
    }
    m->state = k;
}

/* User info and query can hold secrets, and users do write '/', '?', '#'
 * and '@' unencoded in passwords, where RFC 3986, libcurl and the user
 * disagree on where the host starts. So this errs on the side of hiding:
 * everything up to the last '@' before the first '?' or '#' goes, and so
 * does the query. An '@' after a '?' or '#' may be in the query, or may end
 * a password holding '?' or '#': then nothing after the scheme is shown. */
const char *imx_url_redacted(apr_pool_t *p, const char *url)
{
    const char *start = url, *s = url, *q, *at = NULL;

    /* scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ), then "://" */
    if (apr_isalpha(*s)) {
        while (apr_isalnum(*s) || *s == '+' || *s == '-' || *s == '.') {
            s++;
        }
        if (!strncmp(s, "://", 3)) {
            start = s + 3;
        }
    }
    q = start + strcspn(start, "?#");
    if (strchr(q, '@')) {
        return apr_pstrcat(p, apr_pstrmemdup(p, url, (apr_size_t)(start - url)),
                           "(hidden)", NULL);
    }
    for (s = start; s < q; s++) {
        if (*s == '@') {
            at = s;
        }
    }
    return apr_pstrcat(p, apr_pstrmemdup(p, url, (apr_size_t)(start - url)),
                       apr_pstrmemdup(p, at ? at + 1 : start,
                                      (apr_size_t)(q - (at ? at + 1 : start))),
                       NULL);
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    imx_http_t *h = userdata;
    size_t n = size * nmemb;
    size_t room = RESP_KEEP - h->resp_len;
    size_t keep;

    memcpy(h->resp + h->resp_len, ptr, n < room ? n : room);
    h->resp_len += n < room ? n : room;
    /* The last RESP_TAIL bytes seen, wherever they fall. */
    keep = n < RESP_TAIL ? n : RESP_TAIL;
    if (h->tail_len + keep > RESP_TAIL) {
        size_t drop = h->tail_len + keep - RESP_TAIL;
        memmove(h->tail, h->tail + drop, h->tail_len - drop);
        h->tail_len -= drop;
    }
    memcpy(h->tail + h->tail_len, ptr + n - keep, keep);
    h->tail_len += keep;
    matcher_feed(&h->v3_lines, ptr, n);
    matcher_feed(&h->parse_errors, ptr, n);
    return n;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *userdata)
{
    imx_http_t *h = userdata;
    size_t n = size * nitems;
    char val[64];
    size_t vl;
    char *end;
    long secs;

    if (n < 13 || strncasecmp(buf, "Retry-After:", 12)) {
        return n;
    }
    vl = n - 12 < sizeof(val) - 1 ? n - 12 : sizeof(val) - 1;
    memcpy(val, buf + 12, vl);
    val[vl] = '\0';
    errno = 0;
    secs = strtol(val, &end, 10);
    while (*end == ' ' || *end == '\r' || *end == '\n') {
        end++;
    }
    /* Clamped in seconds, before the conversion to microseconds, which
     * would overflow for an absurd value (or an HTTP date far ahead). */
    if (end != val && !*end && secs >= 0) {
        h->retry_after = apr_time_from_sec(secs > RETRY_AFTER_MAX_S || errno
                                           ? RETRY_AFTER_MAX_S : secs);
    }
    else {
        time_t when = curl_getdate(val, NULL);   /* an HTTP date */
        if (when > 0) {
            time_t now = time(NULL);
            h->retry_after = when <= now ? 0
                             : apr_time_from_sec(when - now > RETRY_AFTER_MAX_S
                                                 ? RETRY_AFTER_MAX_S : when - now);
        }
    }
    return n;
}

static int on_progress(void *clientp, curl_off_t dltotal, curl_off_t dlnow,
                       curl_off_t ultotal, curl_off_t ulnow)
{
    imx_http_t *h = clientp;
    apr_time_t limit = atomic_load_explicit(&h->limit, memory_order_relaxed);

    (void)dltotal; (void)dlnow; (void)ultotal; (void)ulnow;
    return limit && apr_time_now() >= limit;    /* non-zero aborts */
}

static apr_status_t http_cleanup(void *data)
{
    imx_http_t *h = data;

    for (int i = 0; i < h->n; i++) {
        curl_easy_cleanup(h->t[i].curl);
    }
    if (h->multi) {
        curl_multi_cleanup(h->multi);
    }
    curl_slist_free_all(h->hdrs_plain);
    curl_slist_free_all(h->hdrs_gzip);
    return APR_SUCCESS;
}

imx_http_t *imx_http_create(apr_pool_t *p, const imx_http_conf_t *conf,
                            char *err, size_t errsz)
{
    imx_http_t *h = apr_pcalloc(p, sizeof(*h));
    struct curl_slist *l = NULL;
    int i;

    h->timeout = conf->timeout;
    h->via = conf->proxy ? apr_pstrcat(p, " via proxy ", imx_url_redacted(p, conf->proxy),
                                       NULL) : "";
    h->t = apr_pcalloc(p, sizeof(target_t) * (apr_size_t)conf->nurls);
    /* "Expect:" stops libcurl from waiting for 100-continue on large bodies. */
    l = curl_slist_append(l, "Content-Type: text/plain; charset=utf-8");
    l = curl_slist_append(l, "Expect:");
    if (conf->token) {
        l = curl_slist_append(l, apr_pstrcat(p, "Authorization: Token ", conf->token, NULL));
    }
    h->hdrs_plain = l;
    l = NULL;
    for (struct curl_slist *it = h->hdrs_plain; it; it = it->next) {
        l = curl_slist_append(l, it->data);
    }
    h->hdrs_gzip = curl_slist_append(l, "Content-Encoding: gzip");
    matcher_init(&h->v3_lines, V3_KEY);
    matcher_init(&h->parse_errors, PARSE_KEY);
    h->multi = curl_multi_init();
    apr_pool_cleanup_register(p, h, http_cleanup, apr_pool_cleanup_null);
    if (!h->hdrs_plain || !h->hdrs_gzip) {
        snprintf(err, errsz, "out of memory building headers");
        return NULL;
    }
    if (!h->multi) {
        snprintf(err, errsz, "curl_multi_init failed");
        return NULL;
    }
    for (i = 0; i < conf->nurls; i++) {
        CURL *c = curl_easy_init();

        if (!c) {
            snprintf(err, errsz, "curl_easy_init failed");
            return NULL;
        }
        h->t[i].curl = c;
        h->t[i].hold = FAILOVER_HOLD;
        h->t[i].url_safe = imx_url_redacted(p, conf->urls[i]);
        h->n = i + 1;
        curl_easy_setopt(c, CURLOPT_URL, conf->urls[i]);
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
        /* Threads and signals: httpd owns the process's signal handling. */
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, h);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, h);
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(c, CURLOPT_XFERINFODATA, h);
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, conf->tls_verify ? 1L : 0L);
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, conf->tls_verify ? 2L : 0L);
        if (conf->ca_file) {
            curl_easy_setopt(c, CURLOPT_CAINFO, conf->ca_file);
        }
        curl_easy_setopt(c, CURLOPT_USERAGENT, "mod_influx_metrics");
        /* Memory every child keeps: a body over 64 KB goes out through the
         * upload buffer, so libcurl's smallest one (instead of 64 KB) costs
         * a few more send() calls per POST and saves every child 48 KB.
         * (The receive buffer stays at its default: at 4 KB, a child killed
         * in tests/test_lifecycle.py's SIGKILL test was never rescued, for
         * reasons not found yet.) */
        curl_easy_setopt(c, CURLOPT_UPLOAD_BUFFERSIZE, 16384L);
        /* libcurl would otherwise take a proxy from httpd's environment
         * (http_proxy, https_proxy, ALL_PROXY) and send the token and the
         * points to a host nobody configured for them. "" means no proxy;
         * with one configured, an empty no-proxy list overrides no_proxy, so
         * every URL goes through it as configured. */
        curl_easy_setopt(c, CURLOPT_PROXY, conf->proxy ? conf->proxy : "");
        curl_easy_setopt(c, CURLOPT_NOPROXY, conf->proxy ? "" : "*");
    }
    return h;
}

void imx_http_limit(void *ctx, apr_time_t deadline)
{
    imx_http_t *h = ctx;

    atomic_store_explicit(&h->limit, deadline, memory_order_relaxed);
}

/* Makes the response text safe for a one-line log message. */
static const char *resp_text(imx_http_t *h)
{
    size_t i;

    while (h->resp_len && (h->resp[h->resp_len - 1] == '\n'
                           || h->resp[h->resp_len - 1] == '\r')) {
        h->resp_len--;
    }
    for (i = 0; i < h->resp_len; i++) {
        if ((unsigned char)h->resp[i] < 0x20) {
            h->resp[i] = ' ';
        }
    }
    h->resp[h->resp_len] = '\0';
    return h->resp;
}

/* InfluxDB 1.x reports a partial write as 400 with "partial write: ...
 * dropped=N", InfluxDB 2.x as 422 with the same words (after storing the
 * rest). N counts the points refused after parsing (retention, type
 * conflicts); lines that did not parse are named one by one ("unable to
 * parse '...': duplicate tags") and are not in N, so they are counted from
 * the body. InfluxDB 3 (/api/v3/write_lp, accept_partial=true, its
 * default) answers 400 {"error":"partial write of line protocol occurred",
 * "data":[{"original_line":..,"line_number":..,"error_message":..},..]},
 * one entry per refused line. Its "parsing failed for write_lp endpoint"
 * (with accept_partial=false) stores nothing: a plain rejection. */
static int partial_dropped(imx_http_t *h, uint32_t *dropped)
{
    const char *d, *text = resp_text(h);
    unsigned long n;

    h->tail[h->tail_len] = '\0';
    if (strstr(text, "partial write of line protocol occurred")) {
        if (!h->v3_lines.hits) {
            return 0;
        }
        *dropped = h->v3_lines.hits;
        return 1;
    }
    if (!strstr(text, "partial write")) {
        return 0;
    }
    d = strstr(h->tail, "dropped=");
    if (!d) {
        return 0;
    }
    n = strtoul(d + 8, NULL, 10) + h->parse_errors.hits;
    *dropped = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
    return 1;
}

/* Runs the transfer of t in slices of WAIT_SLICE_MS, handing the thread
 * to the engine between them (info->wait), so that a POST waiting on a
 * backend that does not answer never keeps the ring from being drained. */
static CURLcode perform(imx_http_t *h, target_t *t, imx_send_info_t *info)
{
    CURLcode cc = CURLE_OK;
    CURLMsg *msg;
    int running = 1, left;

    if (curl_multi_add_handle(h->multi, t->curl) != CURLM_OK) {
        return CURLE_FAILED_INIT;
    }
    while (running) {
        if (curl_multi_perform(h->multi, &running) != CURLM_OK) {
            cc = CURLE_FAILED_INIT;
            break;
        }
        if (!running) {
            break;
        }
        if (curl_multi_poll(h->multi, NULL, 0, WAIT_SLICE_MS, NULL) != CURLM_OK) {
            cc = CURLE_FAILED_INIT;
            break;
        }
        if (info->wait) {
            info->wait(info->wait_ctx);
        }
    }
    while ((msg = curl_multi_info_read(h->multi, &left))) {
        if (msg->msg == CURLMSG_DONE && msg->easy_handle == t->curl) {
            cc = msg->data.result;
        }
    }
    curl_multi_remove_handle(h->multi, t->curl);
    return cc;
}

static imx_send_result_t post_one(imx_http_t *h, target_t *t, const char *body,
                                  size_t len, int gzipped, apr_time_t deadline,
                                  imx_send_info_t *info)
{
    apr_interval_time_t budget = h->timeout;
    apr_time_t now = apr_time_now();
    CURLcode cc;
    long code = 0;

    if (deadline) {
        if (deadline <= now) {
            snprintf(info->err, sizeof(info->err), "no time left to post to %s%s",
                     t->url_safe, h->via);
            return IMX_SEND_RETRY;
        }
        if (deadline - now < budget) {
            budget = deadline - now;
        }
    }
    h->resp_len = 0;
    h->tail_len = 0;
    matcher_reset(&h->v3_lines);
    matcher_reset(&h->parse_errors);
    h->retry_after = 0;
    curl_easy_setopt(t->curl, CURLOPT_HTTPHEADER, gzipped ? h->hdrs_gzip : h->hdrs_plain);
    curl_easy_setopt(t->curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(t->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(t->curl, CURLOPT_TIMEOUT_MS, (long)apr_time_as_msec(budget) + 1);
    curl_easy_setopt(t->curl, CURLOPT_CONNECTTIMEOUT_MS, (long)apr_time_as_msec(budget) + 1);

    cc = perform(h, t, info);
    if (cc != CURLE_OK) {
        curl_off_t up = 0;

        snprintf(info->err, sizeof(info->err), "POST %s%s failed: %s", t->url_safe,
                 h->via, curl_easy_strerror(cc));
        /* The whole body went out and no answer came back: the backend may
         * have stored it. Retrying is still right (InfluxDB overwrites the
         * same points), but if this batch is given up later, say so. */
        curl_easy_getinfo(t->curl, CURLINFO_SIZE_UPLOAD_T, &up);
        info->maybe_stored = up == (curl_off_t)len && cc != CURLE_COULDNT_CONNECT
                             && cc != CURLE_COULDNT_RESOLVE_HOST;
        return IMX_SEND_RETRY;
    }
    curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &code);
    if (code >= 200 && code < 300) {
        return IMX_SEND_OK;
    }
    snprintf(info->err, sizeof(info->err), "POST %s%s answered HTTP %ld: %s", t->url_safe,
             h->via, code, resp_text(h));
    if ((code == 400 || code == 422) && partial_dropped(h, &info->dropped)) {
        return IMX_SEND_PARTIAL;
    }
    if (code == 413) {
        return IMX_SEND_TOO_LARGE;
    }
    /* Credentials and databases get fixed by people, without restarting
     * httpd: keep the data and ask again now and then. */
    if (code == 401 || code == 403 || code == 404) {
        info->slow = 1;
        return IMX_SEND_RETRY;
    }
    if (code == 408 || code == 429 || code >= 500) {
        info->retry_after = h->retry_after;
        /* A 5xx other than 503 may come after the write took effect
         * (InfluxDB answers 500 "timeout" for writes it then applies). */
        info->maybe_stored = code >= 500 && code != 503;
        return IMX_SEND_RETRY;
    }
    /* Any other 4xx says these bytes will never be accepted. */
    return IMX_SEND_REJECT;
}

imx_send_result_t imx_http_send(void *ctx, const char *body, size_t len,
                                int gzipped, apr_time_t deadline,
                                imx_send_info_t *info)
{
    imx_http_t *h = ctx;
    imx_send_result_t res = IMX_SEND_RETRY;
    apr_time_t now = apr_time_now(), end;
    imx_send_wait_fn *wait = info->wait;
    void *wait_ctx = info->wait_ctx;
    int tried = 0, maybe = 0;

    /* The whole failover attempt, every URL included, ends within one
     * InfluxMetricsTimeout (and by the caller's deadline): a list of URLs
     * that do not answer costs one timeout per attempt, not one per URL. */
    end = now + h->timeout;
    if (deadline && deadline < end) {
        end = deadline;
    }
    /* In order of preference, passing over URLs that failed recently; if
     * all of them did, try them all. */
    for (int pass = 0; pass < 2 && !tried; pass++) {
        for (int i = 0; i < h->n; i++) {
            target_t *t = &h->t[i];

            if (pass == 0 && h->n > 1 && t->down_until > now) {
                continue;
            }
            if (tried && apr_time_now() >= end) {
                break;
            }
            tried++;
            memset(info, 0, sizeof(*info));
            info->wait = wait;
            info->wait_ctx = wait_ctx;
            res = post_one(h, t, body, len, gzipped, end, info);
            if (res != IMX_SEND_RETRY) {
                t->down_until = 0;
                t->hold = FAILOVER_HOLD;
                return res;
            }
            /* Any URL that may have stored it makes the batch uncertain. */
            maybe |= info->maybe_stored;
            t->down_until = apr_time_now() + t->hold;
            if (t->hold < FAILOVER_HOLD_MAX) {
                t->hold *= 2;
            }
        }
    }
    info->maybe_stored = maybe;
    return res;
}
