/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * Unit tests of the retry buffer (imx_retry.c), through the engine: the
 * oldest batches evicted when it is full, one budget shared by several
 * engines, and the batches drained during a backoff gathered into one.
 */
#include <stdatomic.h>
#include <stdio.h>

#include <apr_general.h>
#include <apr_pools.h>

#include "imx_engine.h"
#include "imx_retry.h"

#include "check.h"
#include "fixture.h"

/* During a backoff, the batches drained from the ring are gathered into one
 * retry batch (a shared budget counts pages), their other lines first, so
 * that a 413 split can tell them from points; then everything is sent. */
static void test_retry_gather(void)
{
    apr_pool_t *p;
    recorder_t *rc = recorder_new();
    _Atomic uint64_t budget = 0;
    imx_engine_conf_t c;
    imx_engine_t *e;
    imx_stats_t st;
    imx_point_t pt;
    char err[128], line[64];
    uint64_t id = 0;

    apr_pool_create(&p, NULL);
    base_conf(&c, rc, 1024, 100);
    c.retry_shared = &budget;
    c.retry_max_time = apr_time_from_sec(60);
    c.retry_interval = apr_time_from_sec(30);   /* one backoff for the whole test */
    e = imx_engine_create(p, &c, err, sizeof(err));
    CHECK(e != NULL, "create: %s", err);
    rc->always_fail = 1;
    for (int round = 0; round < 6; round++) {
        int n = snprintf(line, sizeof(line), "x_extra,round=%d v=1i %d\n", round, round + 1);

        imx_engine_submit(e, line, (size_t)n, 1);
        for (int i = 0; i < 10; i++) {
            fill_point(&pt, id++);
            imx_engine_push(e, &pt, NULL);
        }
        /* The first round's batch is POSTed and kept as it is; later
         * rounds retry it (failing: a 30 s backoff), then drain the ring
         * into the retry buffer. */
        imx_engine_flush_now(e);
    }
    imx_engine_stats(e, &st);
    CHECK(st.buffered == 60 && st.dropped_retry == 0, "buffered %llu dropped %llu",
          (unsigned long long)st.buffered, (unsigned long long)st.dropped_retry);
    /* Two batches: the one POSTed, and the five gathered, in three pages at
     * most instead of one each. */
    CHECK(atomic_load(&budget) == st.retry_bytes && st.retry_bytes <= 4 * 4096,
          "retry bytes %llu, budget %llu", (unsigned long long)st.retry_bytes,
          (unsigned long long)atomic_load(&budget));
    rc->always_fail = 0;
    rc->max_lines = 9;                      /* 413 for the gathered one: split */
    imx_engine_flush_now(e);
    imx_engine_flush_now(e);
    imx_engine_stats(e, &st);
    CHECK(st.sent == 60 && st.buffered == 0 && st.rejected == 0 && atomic_load(&rc->dups) == 0
          && atomic_load(&rc->lines) == 60 && atomic_load(&rc->extra_lines) == 6,
          "sent %llu buffered %llu rejected %llu lines %llu extra %llu",
          (unsigned long long)st.sent, (unsigned long long)st.buffered,
          (unsigned long long)st.rejected, (unsigned long long)atomic_load(&rc->lines),
          (unsigned long long)atomic_load(&rc->extra_lines));
    CHECK(atomic_load(&rc->extra_after_points) == 0, "%llu other lines after points",
          (unsigned long long)atomic_load(&rc->extra_after_points));
    CHECK(atomic_load(&budget) == 0, "budget left %llu",
          (unsigned long long)atomic_load(&budget));
    finish(e, p, rc, 60, "gather");
}

/* Backend down: batches move to the retry buffer; when it is full the
 * oldest go, counted; the ring stays free. */
static void test_retry_buffer_eviction(void)
{
    apr_pool_t *p;
    recorder_t *rc = recorder_new();
    imx_engine_t *e;
    imx_stats_t st;
    imx_point_t pt;

    rc->always_fail = 1;
    rc->maybe = 1;
    /* Room for about two batches of 100 points (~75 bytes each). */
    e = push_n(&p, rc, 1024, 100, 1000, 2 * 100 * 80);
    imx_engine_flush_now(e);
    imx_engine_stats(e, &st);
    CHECK(st.sent == 0 && st.dropped_retry >= 700 && st.dropped_retry % 100 == 0
          && st.buffered == 1000 - st.dropped_retry && st.retry_bytes <= 2 * 100 * 80,
          "evict: dropped_retry %llu buffered %llu retry_bytes %llu",
          (unsigned long long)st.dropped_retry, (unsigned long long)st.buffered,
          (unsigned long long)st.retry_bytes);
    /* The first POSTs "may have been stored": what was evicted of those says so. */
    CHECK(st.maybe_stored > 0 && st.maybe_stored <= st.dropped_retry,
          "maybe_stored %llu", (unsigned long long)st.maybe_stored);
    /* The ring was emptied into the retry buffer: new points fit. */
    fill_point(&pt, 5000);
    CHECK(imx_engine_push(e, &pt, NULL), "ring not drained during the outage");
    /* The backend comes back: what is left arrives, newest kept. */
    rc->always_fail = 0;
    imx_engine_flush_now(e);
    imx_engine_stats(e, &st);
    CHECK(st.sent == 1001 - st.dropped_retry && rc->seen[999] && rc->seen[5000] && !rc->seen[0],
          "after recovery: sent %llu", (unsigned long long)st.sent);
    finish(e, p, rc, 1001, "evict");
}

/* Two engines (two children) sharing one retry budget: together they never
 * hold more than retry_buffer; the one that finds the budget taken by the
 * other drops its own new batches; bytes come back when batches are sent or
 * dropped and when an engine exits; a dead engine's share is given back
 * once, never below zero. */
static void test_retry_shared_budget(void)
{
    apr_pool_t *pa, *pb;
    recorder_t *ra = recorder_new(), *rb = recorder_new();
    imx_engine_conf_t c;
    imx_engine_t *a, *b;
    imx_stats_t sa, sb;
    _Atomic uint64_t shared = 0;
    char err[128];
    uint64_t one;

    ra->always_fail = rb->always_fail = 1;
    apr_pool_create(&pa, NULL);
    apr_pool_create(&pb, NULL);
    /* The size one batch of 100 such points takes, from a first engine. */
    base_conf(&c, ra, 1024, 100);
    c.retry_shared = &shared;
    a = imx_engine_create(pa, &c, err, sizeof(err));
    CHECK(a != NULL, "create: %s", err);
    push_ids(a, 100000, 100);
    imx_engine_flush_now(a);
    imx_engine_stats(a, &sa);
    one = sa.retry_bytes;
    CHECK(one > 100 * 60 && atomic_load(&shared) == one && sa.buffered == 100,
          "one batch: retry_bytes %llu shared %llu", (unsigned long long)one,
          (unsigned long long)atomic_load(&shared));
    imx_engine_stop(a);
    CHECK(atomic_load(&shared) == 0, "a stopped engine still holds %llu",
          (unsigned long long)atomic_load(&shared));
    apr_pool_destroy(pa);
    recorder_free(ra);
    ra = recorder_new();
    ra->always_fail = 1;
    apr_pool_create(&pa, NULL);

    /* Room for three and a half batches, for both engines together. */
    base_conf(&c, ra, 1024, 100);
    c.retry_shared = &shared;
    c.retry_buffer = 3 * one + one / 2;
    a = imx_engine_create(pa, &c, err, sizeof(err));
    CHECK(a != NULL, "create: %s", err);
    c.send_ctx = rb;
    b = imx_engine_create(pb, &c, err, sizeof(err));
    CHECK(b != NULL, "create: %s", err);

    push_ids(a, 100000, 1000);
    imx_engine_flush_now(a);
    imx_engine_stats(a, &sa);
    CHECK(sa.buffered == 300 && sa.dropped_retry == 700 && sa.retry_bytes == 3 * one
          && atomic_load(&shared) == 3 * one,
          "a alone: buffered %llu dropped_retry %llu retry_bytes %llu shared %llu",
          (unsigned long long)sa.buffered, (unsigned long long)sa.dropped_retry,
          (unsigned long long)sa.retry_bytes, (unsigned long long)atomic_load(&shared));
    /* b holds nothing of its own to evict: each new batch of its is the one
     * that goes. */
    push_ids(b, 200000, 1000);
    imx_engine_flush_now(b);
    imx_engine_stats(b, &sb);
    CHECK(sb.buffered == 0 && sb.dropped_retry == 1000 && sb.retry_bytes == 0
          && atomic_load(&shared) == 3 * one,
          "b behind a: buffered %llu dropped_retry %llu retry_bytes %llu shared %llu",
          (unsigned long long)sb.buffered, (unsigned long long)sb.dropped_retry,
          (unsigned long long)sb.retry_bytes, (unsigned long long)atomic_load(&shared));
    /* a's backend comes back: its bytes return, and b can keep batches. */
    ra->always_fail = 0;
    imx_engine_flush_now(a);
    imx_engine_stats(a, &sa);
    CHECK(sa.sent == 300 && sa.retry_bytes == 0 && atomic_load(&shared) == 0,
          "a delivered: sent %llu retry_bytes %llu shared %llu", (unsigned long long)sa.sent,
          (unsigned long long)sa.retry_bytes, (unsigned long long)atomic_load(&shared));
    push_ids(b, 201000, 500);
    imx_engine_flush_now(b);
    imx_engine_stats(b, &sb);
    CHECK(sb.buffered == 300 && sb.dropped_retry == 1200 && atomic_load(&shared) == 3 * one,
          "b alone: buffered %llu dropped_retry %llu shared %llu",
          (unsigned long long)sb.buffered, (unsigned long long)sb.dropped_retry,
          (unsigned long long)atomic_load(&shared));
    /* b exits with its backend still down: its batches are dropped_exit and
     * their bytes given back. */
    imx_engine_stop(b);
    imx_engine_stats(b, &sb);
    CHECK(sb.dropped_exit == 300 && atomic_load(&shared) == 0,
          "b stopped: dropped_exit %llu shared %llu", (unsigned long long)sb.dropped_exit,
          (unsigned long long)atomic_load(&shared));
    check_identity(b, 1500, "shared budget b");
    finish(a, pa, ra, 1000, "shared budget a");
    apr_pool_destroy(pb);
    recorder_free(rb);

    /* What a fold gives back for a dead engine: never below zero. */
    atomic_store(&shared, 5000);
    imx_retry_release(&shared, 3000);
    CHECK(atomic_load(&shared) == 2000, "release: %llu", (unsigned long long)atomic_load(&shared));
    imx_retry_release(&shared, 3000);
    CHECK(atomic_load(&shared) == 0, "release below zero: %llu",
          (unsigned long long)atomic_load(&shared));
}

int main(void)
{
    apr_initialize();
    test_retry_gather();
    test_retry_buffer_eviction();
    test_retry_shared_budget();
    apr_terminate();
    return check_report();
}
