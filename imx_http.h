/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_http.h: the libcurl sender (imx_send.h's callbacks).
 *
 * One easy handle per URL, each reused for every POST (keep-alive), run
 * through one multi handle in slices so that the engine keeps draining its
 * ring while a POST waits on the network.
 */
#ifndef IMX_HTTP_H
#define IMX_HTTP_H

#include <apr_pools.h>

#include "imx_send.h"

typedef struct imx_http imx_http_t;

typedef struct imx_http_conf {
    const char *const *urls;    /* write URLs in order of preference, may hold
                                 * user:pass@ */
    int nurls;                  /* >= 1 */
    const char *token;          /* sent as "Authorization: Token ..."; may be NULL */
    apr_interval_time_t timeout;    /* per POST */
    int tls_verify;             /* 1 unless explicitly disabled */
    const char *ca_file;        /* may be NULL */
    const char *proxy;          /* proxy URL, may hold user:pass@; NULL: none,
                                 * whatever httpd's environment says */
} imx_http_conf_t;

/* The URL without user info and query, safe to log: everything up to the
 * last '@' before the query is left out, and all but the scheme when an '@'
 * follows a '?' or '#' (see imx_http.c). */
const char *imx_url_redacted(apr_pool_t *p, const char *url);

/* One easy handle per URL, each reused for every POST (keep-alive). Call
 * curl_global_init before, in a single thread. Returns NULL with err filled
 * on failure. */
imx_http_t *imx_http_create(apr_pool_t *p, const imx_http_conf_t *conf,
                            char *err, size_t errsz);

/* imx_send_fn and imx_send_limit_fn implementations; ctx is the imx_http_t.
 * Answers: 2xx stored; 400 or 422 with "partial write ... dropped=N"
 * partial (N plus the lines InfluxDB could not parse refused); other 400
 * and 4xx rejected; 413 too large; 401, 403, 404 retried slowly; 408, 429,
 * 5xx and transport errors retried (Retry-After honoured). A URL that fails
 * that way passes the batch to the next URL, within one timeout for the
 * whole attempt; a failed URL is passed over for 10 s, twice as long after
 * each further failure (at most 320 s), then tried first again. */
imx_send_result_t imx_http_send(void *ctx, const char *body, size_t len,
                                int gzipped, apr_time_t deadline,
                                imx_send_info_t *info);
void imx_http_limit(void *ctx, apr_time_t deadline);

#endif /* IMX_HTTP_H */
