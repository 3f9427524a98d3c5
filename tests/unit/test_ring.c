/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * Unit tests of the bounded ring (imx_ring.c), through the engine: a full
 * ring keeps the oldest points and counts the others, pushes after stop are
 * refused and counted, a dead engine's ring is rescued by another, and the
 * exit passes over a cell claimed but never published.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <apr_pools.h>

#include "imx_counters.h"
#include "imx_engine.h"
#include "imx_ring.h"

#include "check.h"
#include "fixture.h"

static void test_full_ring_drops(void)
{
    apr_pool_t *p;
    recorder_t *rc = recorder_new();
    imx_engine_t *e;
    imx_point_t pt;
    imx_stats_t st;
    int ok = 0;

    apr_pool_create(&p, NULL);
    e = make_engine(p, rc, 100, 10, 0);  /* rounded up to 128 */
    for (int i = 0; i < 200; i++) {
        fill_point(&pt, (uint64_t)i);
        ok += imx_engine_push(e, &pt, NULL);
    }
    CHECK(ok == 128, "ring of 100 took %d", ok);
    imx_engine_stats(e, &st);
    CHECK(st.dropped_full == 72 && st.buffered == 128, "dropped_full %llu buffered %llu",
          (unsigned long long)st.dropped_full, (unsigned long long)st.buffered);
    CHECK(imx_engine_flush_now(e) == 128, "flush");
    /* The oldest were kept: ids 0..127 arrived. */
    CHECK(rc->seen[0] && rc->seen[127] && !rc->seen[128], "kept the wrong points");
    finish(e, p, rc, 200, "full");
}

/* Points pushed after stop are refused and counted, recorded and
 * dropped_exit alike, so the identity still holds. */
static void test_push_after_stop(void)
{
    apr_pool_t *p;
    recorder_t *rc = recorder_new();
    imx_engine_t *e = push_n(&p, rc, 1024, 100, 10, 0);
    imx_stats_t st;
    imx_point_t pt;

    imx_engine_stop(e);
    fill_point(&pt, 10);
    CHECK(imx_engine_push(e, &pt, NULL) == 0, "push after stop accepted");
    imx_engine_stats(e, &st);
    CHECK(st.sent == 10 && st.recorded == 11 && st.dropped_exit == 1 && st.buffered == 0,
          "late push: sent %llu recorded %llu dropped_exit %llu",
          (unsigned long long)st.sent, (unsigned long long)st.recorded,
          (unsigned long long)st.dropped_exit);
    finish(e, p, rc, 11, "late");
}

/* An engine whose ring and counters are caller memory dies (here: is just
 * abandoned) with points in its ring and one cell claimed but never
 * written; another engine rescues the ring: every written point is sent by
 * the rescuer, the half-written one is counted lost, and across the two
 * the identity holds: recorded == sent + lost. */
static void test_ring_rescue(void)
{
    apr_pool_t *p;
    recorder_t *rc = recorder_new();
    imx_counters_t *ca = aligned_alloc(64, sizeof(imx_counters_t));
    void *cells = aligned_alloc(64, 256 * 64);
    imx_engine_conf_t c;
    imx_engine_t *a, *b;
    imx_stats_t sa, sb;
    imx_point_t pt;
    char err[128];
    uint64_t moved;

    memset(ca, 0, sizeof(*ca));
    apr_pool_create(&p, NULL);
    base_conf(&c, rc, 256, 100);
    c.counters = ca;
    c.cells = cells;
    a = imx_engine_create(p, &c, err, sizeof(err));
    CHECK(a != NULL, "create a: %s", err);
    for (int i = 0; i < 150; i++) {
        fill_point(&pt, (uint64_t)i);
        imx_engine_push(a, &pt, NULL);
    }
    atomic_fetch_add(&ca->recorded, 1); /* a producer claimed a cell and died */
    /* a is "dead" from here on: nobody touches it again but the rescuer. */
    c.counters = NULL;
    c.cells = NULL;
    b = imx_engine_create(p, &c, err, sizeof(err));
    CHECK(b != NULL, "create b: %s", err);
    moved = imx_ring_rescue(imx_engine_ring(b), cells, NULL, 256, ca);
    CHECK(moved == 150, "moved %llu", (unsigned long long)moved);
    CHECK(imx_ring_rescue(imx_engine_ring(b), cells, NULL, 256, ca) == 0, "rescued twice");
    imx_engine_flush_now(b);
    imx_counters_read(ca, &sa);
    imx_engine_stats(b, &sb);
    CHECK(sa.recorded == 1 && sa.sent == 0 && sa.lost == 1 && sa.buffered == 0,
          "dead: recorded %llu sent %llu lost %llu buffered %llu",
          (unsigned long long)sa.recorded, (unsigned long long)sa.sent,
          (unsigned long long)sa.lost, (unsigned long long)sa.buffered);
    CHECK(sb.recorded == 150 && sb.sent == 150, "rescuer: recorded %llu sent %llu",
          (unsigned long long)sb.recorded, (unsigned long long)sb.sent);
    CHECK(atomic_load(&rc->lines) == 150 && atomic_load(&rc->dups) == 0,
          "backend saw %llu lines, %llu twice", (unsigned long long)atomic_load(&rc->lines),
          (unsigned long long)atomic_load(&rc->dups));
    imx_engine_stop(b);
    apr_pool_destroy(p);
    recorder_free(rc);
    free(cells);
    free(ca);
}

/* At exit, a cell a producer claimed but never published (a worker that
 * went on logging while the child went down) is passed over and counted
 * alone: the complete points behind it are still sent. */
static void test_exit_passes_unfinished_cell(void)
{
    apr_pool_t *p;
    recorder_t *rc = recorder_new();
    imx_counters_t *ca = aligned_alloc(64, sizeof(imx_counters_t));
    void *cells = aligned_alloc(64, 256 * 64);
    imx_engine_conf_t c;
    imx_engine_t *e;
    imx_stats_t st;
    imx_point_t pt;
    char err[128];

    memset(ca, 0, sizeof(*ca));
    apr_pool_create(&p, NULL);
    base_conf(&c, rc, 256, 100);
    c.counters = ca;
    c.cells = cells;
    e = imx_engine_create(p, &c, err, sizeof(err));
    CHECK(e != NULL, "create: %s", err);
    for (int i = 0; i < 3; i++) {
        fill_point(&pt, (uint64_t)i);
        imx_engine_push(e, &pt, NULL);
    }
    atomic_fetch_add(&ca->recorded, 1);     /* claimed, never published */
    for (int i = 3; i < 8; i++) {
        fill_point(&pt, (uint64_t)i);
        CHECK(imx_engine_push(e, &pt, NULL), "push %d", i);
    }
    imx_engine_stop(e);
    imx_engine_stats(e, &st);
    CHECK(st.recorded == 9 && st.sent == 8 && st.dropped_exit == 1 && st.buffered == 0,
          "recorded %llu sent %llu dropped_exit %llu buffered %llu",
          (unsigned long long)st.recorded, (unsigned long long)st.sent,
          (unsigned long long)st.dropped_exit, (unsigned long long)st.buffered);
    CHECK(atomic_load(&rc->lines) == 8, "backend saw %llu lines",
          (unsigned long long)atomic_load(&rc->lines));
    apr_pool_destroy(p);
    recorder_free(rc);
    free(cells);
    free(ca);
}

int main(void)
{
    apr_initialize();
    test_full_ring_drops();
    test_exit_passes_unfinished_cell();
    test_push_after_stop();
    test_ring_rescue();
    apr_terminate();
    return check_report();
}
