/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * Unit tests of the engine's thread and lifecycle (imx_engine.c): stop
 * bounded by the shutdown budget when the backend hangs, ticks every
 * interval under a flood of full batches, stop from a real SIGTERM handler,
 * and the flusher's signal mask.
 *
 * The other units, through the engine where they have no API of their own:
 * test_ring.c, test_retry.c, test_delivery.c, test_spill.c; the concurrent
 * tests, also run under TSan: test_stress.c. The recording sender and the
 * engine fixture they all use: fixture.h.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>

#include <apr_general.h>
#include <apr_pools.h>
#include <apr_time.h>

#include "imx_engine.h"

#include "check.h"
#include "fixture.h"

/* A backend that never answers: stop returns within the shutdown budget and
 * counts what it could not send. */
static void test_stop_bounded(void)
{
    apr_pool_t *p;
    recorder_t *rc = recorder_new();
    imx_engine_t *e;
    imx_point_t pt;
    imx_stats_t st;
    apr_time_t t0;

    apr_pool_create(&p, NULL);
    rc->hang = 1;
    e = make_engine(p, rc, 1024, 50, 0);
    imx_engine_start(e);
    for (int i = 0; i < 300; i++) {
        fill_point(&pt, (uint64_t)i);
        imx_engine_push(e, &pt, NULL);
    }
    apr_sleep(apr_time_from_msec(50));   /* the flusher is now stuck in a send */
    t0 = apr_time_now();
    imx_engine_stop(e);
    CHECK(apr_time_now() - t0 < apr_time_from_msec(1500), "stop took %lld ms",
          (long long)apr_time_as_msec(apr_time_now() - t0));
    imx_engine_stats(e, &st);
    CHECK(st.sent == 0 && st.dropped_exit == 300 && st.buffered == 0,
          "sent %llu dropped_exit %llu", (unsigned long long)st.sent,
          (unsigned long long)st.dropped_exit);
    check_identity(e, 300, "stop");
    apr_pool_destroy(p);
    recorder_free(rc);
}

static _Atomic int ticks;

static void count_tick(void *ctx, imx_engine_t *e, int final)
{
    (void)ctx; (void)e;
    if (!final) {
        atomic_fetch_add(&ticks, 1);
    }
}

static void *flood_main(void *arg)
{
    producer_t *pr = arg;
    imx_point_t pt;

    while (apr_time_now() < pr->until) {
        fill_point(&pt, pr->produced % 1000);
        pr->produced++;
        pr->ok += (uint64_t)imx_engine_push(pr->e, &pt, NULL);
    }
    return NULL;
}

/* A steady stream of full batches to a slow backend: the flusher must
 * still tick every interval (summaries, its own counters). */
static void test_tick_under_full_batches(void)
{
    apr_pool_t *p;
    recorder_t *rc = recorder_new();
    imx_engine_conf_t c;
    imx_engine_t *e;
    char err[128];
    producer_t pr;
    pthread_t th;

    apr_pool_create(&p, NULL);
    rc->delay_us = 2000;
    base_conf(&c, rc, 4096, 16);
    c.flush_interval = apr_time_from_msec(20);
    c.on_tick = count_tick;
    e = imx_engine_create(p, &c, err, sizeof(err));
    atomic_store(&ticks, 0);
    CHECK(imx_engine_start(e) == APR_SUCCESS, "start");
    pr = (producer_t){ e, 0, 0, apr_time_now() + apr_time_from_msec(600), NULL, 0, 0, 0 };
    pthread_create(&th, NULL, flood_main, &pr);
    pthread_join(th, NULL);
    /* About 30 intervals passed; a starved flusher ticks once at most. */
    CHECK(atomic_load(&ticks) >= 10, "only %d ticks in 600 ms of full batches",
          atomic_load(&ticks));
    imx_engine_stop(e);
    check_identity(e, pr.produced, "tick-flood");
    apr_pool_destroy(p);
    recorder_free(rc);
}

static _Atomic int mask_seen, mask_ok;

static void mask_tick(void *ctx, imx_engine_t *e, int final)
{
    sigset_t cur;

    (void)ctx; (void)e; (void)final;
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    atomic_store(&mask_ok, !sigismember(&cur, SIGSEGV) && !sigismember(&cur, SIGBUS)
                           && !sigismember(&cur, SIGILL) && !sigismember(&cur, SIGFPE)
                           && sigismember(&cur, SIGTERM) && sigismember(&cur, SIGHUP));
    atomic_store(&mask_seen, 1);
}

/* The flusher blocks process-directed signals (httpd's threads take them)
 * but not synchronous faults: a fault in it must reach httpd's crash
 * handling, not kill the process silently. */
static void test_flusher_signal_mask(void)
{
    apr_pool_t *p;
    recorder_t *rc = recorder_new();
    imx_engine_conf_t c;
    imx_engine_t *e;
    char err[128];

    apr_pool_create(&p, NULL);
    base_conf(&c, rc, 64, 16);
    c.on_tick = mask_tick;
    e = imx_engine_create(p, &c, err, sizeof(err));
    CHECK(imx_engine_start(e) == APR_SUCCESS, "start");
    for (int i = 0; i < 200 && !atomic_load(&mask_seen); i++) {
        apr_sleep(apr_time_from_msec(5));
    }
    CHECK(atomic_load(&mask_seen) && atomic_load(&mask_ok),
          "flusher mask: seen %d, faults unblocked and SIGTERM/SIGHUP blocked %d",
          atomic_load(&mask_seen), atomic_load(&mask_ok));
    finish(e, p, rc, 0, "mask");
}

/* prefork calls the child's cleanups from its SIGTERM handler: stopping the
 * engine there must work and flush everything, the handler doing only
 * async-signal-safe work while the flusher sends. */
static imx_engine_t *sig_engine;
static volatile sig_atomic_t sig_result = -1;

static void on_term(int sig)
{
    (void)sig;
    sig_result = imx_engine_stop(sig_engine);
}

static void test_stop_in_signal_handler(void)
{
    apr_pool_t *p;
    recorder_t *rc = recorder_new();
    imx_engine_t *e = push_n(&p, rc, 1024, 1000, 300, 0);
    struct sigaction sa, old;
    imx_stats_t st;

    CHECK(imx_engine_start(e) == APR_SUCCESS, "start");
    sig_engine = e;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, &old);
    raise(SIGTERM);
    sigaction(SIGTERM, &old, NULL);
    CHECK(sig_result == 1, "stop in the handler did not see the flusher finish");
    imx_engine_stats(e, &st);
    CHECK(st.sent == 300 && st.dropped_exit == 0, "signal stop: sent %llu dropped_exit %llu",
          (unsigned long long)st.sent, (unsigned long long)st.dropped_exit);
    finish(e, p, rc, 300, "signal-stop");
}

int main(void)
{
    apr_initialize();
    test_stop_bounded();
    test_tick_under_full_batches();
    test_stop_in_signal_handler();
    test_flusher_signal_mask();
    apr_terminate();
    return check_report();
}
