/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * Unit tests of sending and the backend's answers (imx_delivery.c), through
 * the engine: retries then delivery, rejected batches, 413 splits (of a
 * batch in a full retry buffer, with a retry buffer too small), partial
 * writes, Retry-After.
 */
#include <stdatomic.h>

#include <apr_general.h>
#include <apr_pools.h>
#include <apr_time.h>

#include "imx_engine.h"

#include "check.h"
#include "fixture.h"

/* Wait (bounded) until the engine has sent `want` points. */
static int wait_sent(imx_engine_t *e, uint64_t want)
{
    imx_stats_t st;

    for (int i = 0; i < 1000; i++) {
        imx_engine_stats(e, &st);
        if (st.sent + st.rejected >= want) {
            return 1;
        }
        apr_sleep(apr_time_from_msec(5));
    }
    return 0;
}

static void test_retry_then_deliver(void)
{
    apr_pool_t *p;
    recorder_t *rc = recorder_new();
    imx_engine_t *e;
    imx_point_t pt;
    imx_stats_t st;

    apr_pool_create(&p, NULL);
    rc->fail_first = 3;
    e = make_engine(p, rc, 4096, 100, 0);
    for (int i = 0; i < 1000; i++) {
        fill_point(&pt, (uint64_t)i);
        CHECK(imx_engine_push(e, &pt, NULL), "push %d", i);
    }
    imx_engine_start(e);
    CHECK(wait_sent(e, 1000), "not delivered after retries");
    imx_engine_stop(e);
    imx_engine_stats(e, &st);
    CHECK(st.sent == 1000 && st.retries == 3 && atomic_load(&rc->dups) == 0,
          "sent %llu retries %llu dups %llu", (unsigned long long)st.sent,
          (unsigned long long)st.retries, (unsigned long long)atomic_load(&rc->dups));
    check_identity(e, 1000, "retry");
    apr_pool_destroy(p);
    recorder_free(rc);
}

static void test_reject_counts(void)
{
    apr_pool_t *p;
    recorder_t *rc = recorder_new();
    imx_engine_t *e;
    imx_point_t pt;
    imx_stats_t st;

    apr_pool_create(&p, NULL);
    rc->reject_first = 1;
    e = make_engine(p, rc, 4096, 100, 1);
    for (int i = 0; i < 250; i++) {
        fill_point(&pt, (uint64_t)i);
        imx_engine_push(e, &pt, NULL);
    }
    /* Without a thread: batches of 100, 100, 50; the first is refused. */
    CHECK(imx_engine_flush_now(e) == 150, "flush_now");
    imx_engine_stats(e, &st);
    CHECK(st.rejected == 100 && rc->rejected_lines == 100 && st.sent == 150,
          "rejected %llu sent %llu", (unsigned long long)st.rejected,
          (unsigned long long)st.sent);
    finish(e, p, rc, 250, "reject");
}

/* 413: the batch is split until the halves fit; each point arrives once. */
static void test_split_on_413(void)
{
    apr_pool_t *p;
    recorder_t *rc = recorder_new();
    imx_engine_t *e;
    imx_stats_t st;

    rc->max_lines = 7;
    e = push_n(&p, rc, 1024, 100, 250, 0);
    imx_engine_flush_now(e);
    imx_engine_stats(e, &st);
    CHECK(st.sent == 250 && atomic_load(&rc->lines) == 250 && atomic_load(&rc->dups) == 0
          && st.buffered == 0 && st.rejected == 0,
          "split: sent %llu seen %llu", (unsigned long long)st.sent,
          (unsigned long long)atomic_load(&rc->lines));
    for (int i = 0; i < 250; i++) {
        CHECK(rc->seen[i] == 1, "id %d seen %d times", i, rc->seen[i]);
    }
    finish(e, p, rc, 250, "split");
}

/* A 413 for a batch already in a full retry buffer: splitting it must not
 * evict the batch being split, which the sender still holds. */
static void test_split_queued_in_full_buffer(void)
{
    apr_pool_t *p;
    recorder_t *rc = recorder_new();
    imx_engine_t *e;
    imx_stats_t st;

    rc->fail_first = 1;
    rc->max_lines = 7;
    /* Room for the one batch (~125 bytes a line) and little more. */
    e = push_n(&p, rc, 1024, 100, 100, 100 * 135);
    imx_engine_flush_now(e);         /* fails: into the retry buffer */
    for (int i = 0; i < 50; i++) {      /* retried: 413, halves, ... */
        imx_engine_flush_now(e);
    }
    imx_engine_stats(e, &st);
    CHECK(st.sent == 100 && st.dropped_retry == 0 && st.buffered == 0
          && atomic_load(&rc->dups) == 0,
          "split in full buffer: sent %llu dropped_retry %llu buffered %llu",
          (unsigned long long)st.sent, (unsigned long long)st.dropped_retry,
          (unsigned long long)st.buffered);
    finish(e, p, rc, 100, "split-full");
}

/* 413 with a retry buffer too small for the batch (0 included): the halves
 * are sent at once, not queued where one would evict the other. */
static void test_split_small_retry_buffer(void)
{
    static const size_t sizes[] = { 0, 1, 2000 };

    for (int k = 0; k < 3; k++) {
        apr_pool_t *p;
        recorder_t *rc = recorder_new();
        imx_engine_t *e;
        imx_stats_t st;
        imx_point_t pt;

        rc->max_lines = 7;
        apr_pool_create(&p, NULL);
        test_retry_buffer = sizes[k];
        e = make_engine(p, rc, 1024, 100, 0);
        test_retry_buffer = 64 << 20;
        for (int i = 0; i < 250; i++) {
            fill_point(&pt, (uint64_t)i);
            imx_engine_push(e, &pt, NULL);
        }
        imx_engine_flush_now(e);
        imx_engine_stats(e, &st);
        CHECK(st.sent == 250 && st.dropped_retry == 0 && atomic_load(&rc->dups) == 0,
              "split with retry buffer %zu: sent %llu dropped_retry %llu", sizes[k],
              (unsigned long long)st.sent, (unsigned long long)st.dropped_retry);
        finish(e, p, rc, 250, "split-small-buffer");
    }
}

static void test_partial_write(void)
{
    apr_pool_t *p;
    recorder_t *rc = recorder_new();
    imx_engine_t *e;
    imx_stats_t st;

    rc->partial_drop = 3;
    e = push_n(&p, rc, 1024, 100, 100, 0);
    imx_engine_flush_now(e);
    imx_engine_stats(e, &st);
    CHECK(st.sent == 97 && st.rejected == 3 && atomic_load(&rc->lines) == 97,
          "partial: sent %llu rejected %llu", (unsigned long long)st.sent,
          (unsigned long long)st.rejected);
    finish(e, p, rc, 100, "partial");
}

/* Retry-After from the backend sets the next attempt. */
static void test_retry_after(void)
{
    apr_pool_t *p;
    recorder_t *rc = recorder_new();
    imx_engine_t *e;
    imx_stats_t st;

    rc->fail_first = 1;
    rc->retry_after = apr_time_from_msec(300);
    e = push_n(&p, rc, 1024, 100, 10, 0);
    imx_engine_start(e);
    CHECK(wait_sent(e, 10), "not delivered after Retry-After");
    CHECK(rc->call_time[1] - rc->call_time[0] >= apr_time_from_msec(290),
          "retried after %lld ms, Retry-After was 300 ms",
          (long long)apr_time_as_msec(rc->call_time[1] - rc->call_time[0]));
    imx_engine_stop(e);
    imx_engine_stats(e, &st);
    CHECK(st.sent == 10 && st.retries == 1, "retry-after: sent %llu", (unsigned long long)st.sent);
    apr_pool_destroy(p);
    recorder_free(rc);
}

int main(void)
{
    apr_initialize();
    test_reject_counts();
    test_retry_then_deliver();
    test_split_on_413();
    test_split_queued_in_full_buffer();
    test_split_small_retry_buffer();
    test_partial_write();
    test_retry_after();
    apr_terminate();
    return check_report();
}
