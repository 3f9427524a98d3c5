/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * prefork calls child cleanups from its SIGTERM handler, so stopping the
 * engine there may only do async-signal-safe work. The engine is linked with
 * -Wl,--wrap for the calls that are not (allocation, mutexes, condition
 * variables, joins, APR's clock): each wrapper fails the test when it runs
 * on the thread that is inside the handler. The flusher, another thread,
 * may do all of them.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <apr_pools.h>
#include <apr_thread_mutex.h>
#include <apr_thread_cond.h>
#include <apr_thread_proc.h>
#include <apr_time.h>

#include "imx_engine.h"
#include "../test_names.h"

static volatile sig_atomic_t in_handler;
static pthread_t handler_thread;
static _Atomic int violations;
static const char *_Atomic first_violation;

static void check(const char *what)
{
    if (in_handler && pthread_equal(pthread_self(), handler_thread)) {
        const char *none = NULL;
        atomic_fetch_add(&violations, 1);
        atomic_compare_exchange_strong(&first_violation, &none, what);
    }
}

#define WRAP(ret, name, params, args) \
    ret __real_##name params; \
    ret __wrap_##name params; \
    ret __wrap_##name params { check(#name); return __real_##name args; }

WRAP(void *, malloc, (size_t n), (n))
WRAP(void *, calloc, (size_t a, size_t b), (a, b))
WRAP(void *, realloc, (void *p, size_t n), (p, n))
WRAP(int, pthread_mutex_lock, (pthread_mutex_t *m), (m))
WRAP(int, pthread_cond_signal, (pthread_cond_t *c), (c))
WRAP(int, pthread_join, (pthread_t t, void **r), (t, r))
WRAP(apr_status_t, apr_thread_mutex_lock, (apr_thread_mutex_t *m), (m))
WRAP(apr_status_t, apr_thread_cond_signal, (apr_thread_cond_t *c), (c))
WRAP(apr_status_t, apr_thread_join, (apr_status_t *rv, apr_thread_t *t), (rv, t))
WRAP(apr_time_t, apr_time_now, (void), ())

void __real_free(void *p);
void __wrap_free(void *p);
void __wrap_free(void *p)
{
    check("free");
    __real_free(p);
}

static _Atomic uint64_t lines;

static imx_send_result_t sink(void *ctx, const char *body, size_t len, int gz,
                              apr_time_t deadline, imx_send_info_t *info)
{
    (void)ctx; (void)gz; (void)deadline; (void)info;
    for (size_t i = 0; i < len; i++) {
        if (body[i] == '\n') {
            atomic_fetch_add(&lines, 1);
        }
    }
    return IMX_SEND_OK;
}

static void sink_limit(void *ctx, apr_time_t deadline)
{
    (void)ctx; (void)deadline;
}

static imx_engine_t *engine;
static volatile sig_atomic_t stopped_ok = -1;

static void on_term(int sig)
{
    (void)sig;
    in_handler = 1;
    stopped_ok = imx_engine_stop(engine);
    in_handler = 0;
}

int main(void)
{
    imx_engine_conf_t c;
    struct sigaction sa;
    apr_pool_t *p;
    imx_point_t pt;
    imx_stats_t st;
    char err[128];
    int failures = 0;

    apr_initialize();
    apr_pool_create(&p, NULL);
    memset(&c, 0, sizeof(c));
    c.line_prefix = "apache_request,host=t";
    c.capacity = 1024;
    c.batch_size = 1000;
    c.flush_interval = apr_time_from_sec(10);   /* nothing goes out before the stop */
    c.shutdown_timeout = apr_time_from_sec(2);
    c.retry_interval = apr_time_from_msec(5);
    c.retry_base = 2;
    c.retry_max_delay = apr_time_from_msec(20);
    c.retry_buffer = 1 << 20;
    c.send = sink;
    c.send_limit = sink_limit;
    c.names.reg = tn_new(4096);
    engine = imx_engine_create(p, &c, err, sizeof(err));
    if (!engine || imx_engine_start(engine) != APR_SUCCESS) {
        fprintf(stderr, "FAIL: setup: %s\n", err);
        return 1;
    }
    memset(&pt, 0, sizeof(pt));
    pt.server = tn_server((imx_names_t *)c.names.reg, ",vhost=t", "");
    pt.status = 200;
    for (int i = 0; i < 300; i++) {
        pt.ts_ns = 1700000000000000000LL + i;
        pt.duration_us = i;
        imx_engine_push(engine, &pt, NULL);
    }
    handler_thread = pthread_self();
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    raise(SIGTERM);

    imx_engine_stats(engine, &st);
    if (atomic_load(&violations)) {
        fprintf(stderr, "FAIL: %d calls that are not async-signal-safe in the handler, "
                "first: %s\n", atomic_load(&violations), atomic_load(&first_violation));
        failures++;
    }
    if (stopped_ok != 1 || st.sent != 300 || atomic_load(&lines) != 300) {
        fprintf(stderr, "FAIL: stop %d, sent %llu, lines %llu\n", (int)stopped_ok,
                (unsigned long long)st.sent, (unsigned long long)atomic_load(&lines));
        failures++;
    }
    apr_pool_destroy(p);
    apr_terminate();
    printf("%d checks, %d failures\n", 2, failures);
    return failures ? 1 : 0;
}
