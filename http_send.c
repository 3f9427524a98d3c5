/*
 * http_send.c: posts line protocol batches with libcurl.
 *
 * One easy handle per flusher, reused for every POST so the connection stays
 * open between flushes. Only the flusher thread calls imx_http_send(); the
 * one cross-thread entry is imx_http_limit(), which shutdown uses to bound a
 * POST already in flight, so it only touches an atomic.
 *
 * Secrets: the token and any user:password in the URL go to libcurl and
 * nowhere else. Error texts name the URL without user info and query.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <apr_strings.h>
#include <curl/curl.h>

#include "batch.h"

/* Bytes of a response body kept for the error message. */
#define RESP_KEEP 512

struct imx_http {
    CURL *curl;
    struct curl_slist *hdrs_plain;
    struct curl_slist *hdrs_gzip;
    const char *url_safe;
    apr_interval_time_t timeout;
    _Atomic apr_time_t limit;       /* 0, or the time a POST must end by */
    char resp[RESP_KEEP + 1];
    size_t resp_len;
};

const char *imx_url_redacted(apr_pool_t *p, const char *url)
{
    const char *scheme_end = strstr(url, "://");
    const char *auth, *at, *end;

    if (!scheme_end) {
        return "(invalid URL)";
    }
    auth = scheme_end + 3;
    end = auth + strcspn(auth, "?#");
    /* user info is everything up to the last '@' before the path */
    at = NULL;
    for (const char *s = auth; s < end && *s != '/'; s++) {
        if (*s == '@') {
            at = s;
        }
    }
    return apr_pstrcat(p, apr_pstrmemdup(p, url, (apr_size_t)(auth - url)),
                       apr_pstrmemdup(p, at ? at + 1 : auth,
                                      (apr_size_t)(end - (at ? at + 1 : auth))),
                       NULL);
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    imx_http_t *h = userdata;
    size_t n = size * nmemb;
    size_t room = RESP_KEEP - h->resp_len;

    memcpy(h->resp + h->resp_len, ptr, n < room ? n : room);
    h->resp_len += n < room ? n : room;
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

    curl_easy_cleanup(h->curl);
    curl_slist_free_all(h->hdrs_plain);
    curl_slist_free_all(h->hdrs_gzip);
    return APR_SUCCESS;
}

imx_http_t *imx_http_create(apr_pool_t *p, const imx_http_conf_t *conf,
                            char *err, size_t errsz)
{
    imx_http_t *h = apr_pcalloc(p, sizeof(*h));
    struct curl_slist *l = NULL;

    h->curl = curl_easy_init();
    if (!h->curl) {
        snprintf(err, errsz, "curl_easy_init failed");
        return NULL;
    }
    h->url_safe = imx_url_redacted(p, conf->url);
    h->timeout = conf->timeout;
    /* "Expect:" stops libcurl from waiting for 100-continue on large bodies. */
    l = curl_slist_append(l, "Content-Type: text/plain; charset=utf-8");
    l = curl_slist_append(l, "Expect:");
    if (conf->token) {
        l = curl_slist_append(l, apr_pstrcat(p, "Authorization: Token ", conf->token, NULL));
    }
    h->hdrs_plain = l;
    l = NULL;
    for (struct curl_slist *i = h->hdrs_plain; i; i = i->next) {
        l = curl_slist_append(l, i->data);
    }
    h->hdrs_gzip = curl_slist_append(l, "Content-Encoding: gzip");
    apr_pool_cleanup_register(p, h, http_cleanup, apr_pool_cleanup_null);
    if (!h->hdrs_plain || !h->hdrs_gzip) {
        snprintf(err, errsz, "out of memory building headers");
        return NULL;
    }

    curl_easy_setopt(h->curl, CURLOPT_URL, conf->url);
    curl_easy_setopt(h->curl, CURLOPT_PROTOCOLS_STR, "http,https");
    /* Threads and signals: httpd owns the process's signal handling. */
    curl_easy_setopt(h->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h->curl, CURLOPT_POST, 1L);
    curl_easy_setopt(h->curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h->curl, CURLOPT_WRITEDATA, h);
    curl_easy_setopt(h->curl, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h->curl, CURLOPT_XFERINFODATA, h);
    curl_easy_setopt(h->curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h->curl, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h->curl, CURLOPT_SSL_VERIFYPEER, conf->tls_verify ? 1L : 0L);
    curl_easy_setopt(h->curl, CURLOPT_SSL_VERIFYHOST, conf->tls_verify ? 2L : 0L);
    if (conf->ca_file) {
        curl_easy_setopt(h->curl, CURLOPT_CAINFO, conf->ca_file);
    }
    curl_easy_setopt(h->curl, CURLOPT_USERAGENT, "mod_influx_metrics");
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

imx_send_result_t imx_http_send(void *ctx, const char *body, size_t len,
                                int gzipped, apr_time_t deadline,
                                char *err, size_t errsz)
{
    imx_http_t *h = ctx;
    apr_interval_time_t budget = h->timeout;
    apr_time_t now = apr_time_now();
    CURLcode cc;
    long code = 0;

    if (deadline) {
        if (deadline <= now) {
            snprintf(err, errsz, "no time left to post to %s", h->url_safe);
            return IMX_SEND_RETRY;
        }
        if (deadline - now < budget) {
            budget = deadline - now;
        }
    }
    h->resp_len = 0;
    curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, gzipped ? h->hdrs_gzip : h->hdrs_plain);
    curl_easy_setopt(h->curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(h->curl, CURLOPT_TIMEOUT_MS, (long)apr_time_as_msec(budget) + 1);
    curl_easy_setopt(h->curl, CURLOPT_CONNECTTIMEOUT_MS, (long)apr_time_as_msec(budget) + 1);

    cc = curl_easy_perform(h->curl);
    if (cc != CURLE_OK) {
        snprintf(err, errsz, "POST %s failed: %s", h->url_safe, curl_easy_strerror(cc));
        return IMX_SEND_RETRY;
    }
    curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &code);
    if (code >= 200 && code < 300) {
        return IMX_SEND_OK;
    }
    snprintf(err, errsz, "POST %s answered HTTP %ld: %s", h->url_safe, code, resp_text(h));
    /* Worth another try: the server or the path to it may recover, and
     * credentials may be fixed without restarting httpd. Anything else in
     * 4xx says these bytes will never be accepted. */
    if (code == 401 || code == 403 || code == 408 || code == 429 || code >= 500) {
        return IMX_SEND_RETRY;
    }
    return IMX_SEND_REJECT;
}
