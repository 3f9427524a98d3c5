/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * mod_delay: a test-only handler that answers after a requested delay, so
 * the tests know what durations the server saw.
 *
 *   <Location /delay> SetHandler imx-delay </Location>
 *   GET /delay?us=1500            answers 200 "ok" after 1.5 ms
 *   GET /delay?us=0&status=503    answers 503 at once
 *   GET /delay?note=users          sets the request note "app-route" to "users",
 *                                  as an application would name its route
 */
#include "httpd.h"
#include "http_config.h"
#include "http_protocol.h"
#include "apr_strings.h"

static long arg_of(const char *args, const char *name, long def)
{
    size_t n = strlen(name);
    const char *p = args;

    while (p && *p) {
        if (!strncmp(p, name, n) && p[n] == '=') {
            return strtol(p + n + 1, NULL, 10);
        }
        p = strchr(p, '&');
        p = p ? p + 1 : NULL;
    }
    return def;
}

static int delay_handler(request_rec *r)
{
    long us, status;
    const char *p;

    if (!r->handler || strcmp(r->handler, "imx-delay")) {
        return DECLINED;
    }
    us = arg_of(r->args, "us", 0);
    status = arg_of(r->args, "status", 200);
    if (r->args && (p = strstr(r->args, "note=")) && (p == r->args || p[-1] == '&')) {
        apr_table_setn(r->notes, "app-route",
                       apr_pstrndup(r->pool, p + 5, strcspn(p + 5, "&")));
    }
    if (us > 0 && us < 60000000) {
        /* A signal (prefork's graceful restart) cuts a sleep short. */
        apr_time_t end = apr_time_now() + us, now;

        while ((now = apr_time_now()) < end) {
            apr_sleep(end - now);
        }
    }
    if (status != 200) {
        return (int)status;
    }
    ap_set_content_type(r, "text/plain");
    ap_rputs("ok\n", r);
    return OK;
}

static void delay_hooks(apr_pool_t *p)
{
    (void)p;
    ap_hook_handler(delay_handler, NULL, NULL, APR_HOOK_MIDDLE);
}

module AP_MODULE_DECLARE_DATA delay_module = {
    STANDARD20_MODULE_STUFF, NULL, NULL, NULL, NULL, NULL, delay_hooks, AP_MODULE_FLAG_NONE
};
