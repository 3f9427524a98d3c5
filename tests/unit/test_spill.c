/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * Unit tests of the engine's use of the spool (imx_spill.c): the exit
 * writes what it could not send and a later engine sends it, the retry
 * buffer spills instead of evicting, a shared budget others hold sends
 * every failed batch there, the outcomes of sending a spooled file, and
 * failed writes counted.
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <apr_general.h>
#include <apr_pools.h>

#include "imx_engine.h"
#include "imx_spool.h"

#include "check.h"
#include "fixture.h"

/* The backend is down through the exit: the retry buffer and the ring go to
 * the spool, nothing is dropped; a later engine sends every point once, with
 * its own timestamp, and empties the spool. */
static void test_spool_exit_and_resend(void)
{
    spool_fixture_t fx;
    apr_pool_t *p;
    recorder_t *rc = recorder_new();
    imx_engine_t *e;
    imx_stats_t st;
    imx_point_t pt;

    rc->always_fail = 1;
    apr_pool_create(&p, NULL);
    test_spool = spool_fixture_open(&fx, 1 << 30);
    e = make_engine(p, rc, 4096, 100, 0);
    test_spool = NULL;
    for (int i = 0; i < 700; i++) {
        fill_point(&pt, (uint64_t)i);
        imx_engine_push(e, &pt, NULL);
    }
    imx_engine_flush_now(e);            /* into the retry buffer */
    for (int i = 700; i < 1000; i++) {  /* and some left in the ring */
        fill_point(&pt, (uint64_t)i);
        imx_engine_push(e, &pt, NULL);
    }
    imx_engine_stop(e);
    imx_engine_stats(e, &st);
    check_identity(e, 1000, "spool exit");
    CHECK(st.to_spool == 1000 && st.dropped_exit == 0 && st.dropped_spool == 0
          && st.sent == 0 && atomic_load(&fx.sh->points) == 1000,
          "exit: to_spool %llu dropped_exit %llu spooled %lld",
          (unsigned long long)st.to_spool, (unsigned long long)st.dropped_exit,
          (long long)atomic_load(&fx.sh->points));
    CHECK(count_names(fx.dir, "") == 10, "%d files for 10 batches of 100",
          count_names(fx.dir, ""));
    apr_pool_destroy(p);
    recorder_free(rc);

    rc = recorder_new();
    apr_pool_create(&p, NULL);
    test_spool = spool_fixture_spool(&fx, 1 << 30);
    e = make_engine(p, rc, 4096, 100, 1);
    test_spool = NULL;
    imx_engine_flush_now(e);
    imx_engine_stats(e, &st);
    CHECK(st.unspooled == 1000 && atomic_load(&rc->lines) == 1000
          && atomic_load(&rc->dups) == 0 && rc->seen[0] && rc->seen[999],
          "resend: unspooled %llu, recorder saw %llu, dups %llu",
          (unsigned long long)st.unspooled, (unsigned long long)atomic_load(&rc->lines),
          (unsigned long long)atomic_load(&rc->dups));
    CHECK(count_names(fx.dir, "") == 0 && atomic_load(&fx.sh->points) == 0
          && atomic_load(&fx.sh->bytes) == 0, "spool not empty after resending");
    finish(e, p, rc, 0, "spool resend");
    spool_fixture_close(&fx);
}

/* The backend is down and the retry buffer small: it spills to the spool
 * instead of evicting; when the backend is back, the retry buffer goes
 * first, then the spool; every point arrives once. */
static void test_spool_spill(void)
{
    spool_fixture_t fx;
    apr_pool_t *p;
    recorder_t *rc = recorder_new();
    imx_engine_t *e;
    imx_stats_t st;

    rc->always_fail = 1;
    rc->maybe = 1;
    test_spool = spool_fixture_open(&fx, 1 << 30);
    e = push_n(&p, rc, 1024, 100, 1000, 2 * 100 * 80);
    test_spool = NULL;
    imx_engine_flush_now(e);
    imx_engine_stats(e, &st);
    CHECK(st.dropped_retry == 0 && st.to_spool >= 700 && st.to_spool % 100 == 0
          && st.buffered == 1000 - st.to_spool
          && (uint64_t)atomic_load(&fx.sh->points) == st.to_spool,
          "spill: to_spool %llu dropped_retry %llu buffered %llu",
          (unsigned long long)st.to_spool, (unsigned long long)st.dropped_retry,
          (unsigned long long)st.buffered);
    check_identity(e, 1000, "spill");
    rc->always_fail = 0;
    imx_engine_flush_now(e);
    imx_engine_stats(e, &st);
    CHECK(st.sent + st.unspooled == 1000 && st.unspooled == st.to_spool
          && atomic_load(&rc->lines) == 1000 && atomic_load(&rc->dups) == 0,
          "after recovery: sent %llu unspooled %llu lines %llu dups %llu",
          (unsigned long long)st.sent, (unsigned long long)st.unspooled,
          (unsigned long long)atomic_load(&rc->lines),
          (unsigned long long)atomic_load(&rc->dups));
    finish(e, p, rc, 1000, "spill");
    spool_fixture_close(&fx);
}

/* A shared retry budget that other engines hold in full, with a spool:
 * every failed batch goes to the spool, none is dropped, the budget is left
 * as it was; once the backend is back every point arrives once. */
static void test_spool_shared_budget(void)
{
    spool_fixture_t fx;
    apr_pool_t *p;
    recorder_t *rc = recorder_new();
    imx_engine_conf_t c;
    imx_engine_t *e;
    imx_stats_t st;
    _Atomic uint64_t shared;
    const uint64_t budget = 64 << 10;
    char err[128];

    atomic_store(&shared, budget);
    rc->always_fail = 1;
    apr_pool_create(&p, NULL);
    base_conf(&c, rc, 1024, 100);
    c.retry_buffer = budget;
    c.retry_shared = &shared;
    c.spool = spool_fixture_open(&fx, 1 << 30);
    e = imx_engine_create(p, &c, err, sizeof(err));
    CHECK(e != NULL, "create: %s", err);
    push_ids(e, 100000, 1000);
    imx_engine_flush_now(e);
    imx_engine_stats(e, &st);
    CHECK(st.dropped_retry == 0 && st.to_spool == 1000 && st.retry_bytes == 0
          && atomic_load(&shared) == budget,
          "budget taken: to_spool %llu dropped_retry %llu retry_bytes %llu shared %llu",
          (unsigned long long)st.to_spool, (unsigned long long)st.dropped_retry,
          (unsigned long long)st.retry_bytes, (unsigned long long)atomic_load(&shared));
    atomic_store(&shared, 0);
    rc->always_fail = 0;
    imx_engine_flush_now(e);
    imx_engine_stats(e, &st);
    CHECK(st.unspooled == 1000 && atomic_load(&rc->lines) == 1000 && atomic_load(&rc->dups) == 0
          && atomic_load(&shared) == 0,
          "after recovery: unspooled %llu lines %llu dups %llu",
          (unsigned long long)st.unspooled, (unsigned long long)atomic_load(&rc->lines),
          (unsigned long long)atomic_load(&rc->dups));
    finish(e, p, rc, 1000, "spool shared budget");
    spool_fixture_close(&fx);
}

/* Writes a spool file of the points id0 .. id0 + n - 1, in the shape the
 * recorder parses. */
static void spool_ids(imx_spool_t *sp, int id0, int n)
{
    char *buf = malloc((size_t)n * 128), err[256];
    imx_spool_drop_t ev = { 0, 0 };
    size_t len = 0;

    for (int i = id0; i < id0 + n; i++) {
        len += (size_t)sprintf(buf + len, "apache_request,host=test,vhost=test "
                               "duration_us=%di,bytes_sent=13i %lld\n", i,
                               1700000000000000000LL + i);
    }
    CHECK(imx_spool_write(sp, buf, len, (uint32_t)n, 0, 0, 0, &ev, err, sizeof(err)) == 0,
          "write: %s", err);
    free(buf);
}

/* A spooled file too large for the backend goes in halves, every point
 * once; one the backend refuses is deleted and counted in dropped_spool;
 * one that fails stays, marked "maybe stored" when the POST may have
 * reached the backend, and goes once the backend is back. */
static void test_spool_send_outcomes(void)
{
    spool_fixture_t fx;
    imx_spool_file_t f;
    imx_spool_drop_t bad = { 0, 0 };
    recorder_t *rc;
    imx_engine_t *e;
    imx_stats_t st;
    imx_spool_t *sp;

    sp = spool_fixture_open(&fx, 1 << 20);

    spool_ids(sp, 0, 100);
    rc = recorder_new();
    rc->max_lines = 30;
    test_spool = sp;
    e = make_engine(fx.p, rc, 1024, 100, 0);
    imx_engine_flush_now(e);
    imx_engine_stats(e, &st);
    CHECK(st.unspooled == 100 && atomic_load(&rc->lines) == 100 && atomic_load(&rc->dups) == 0
          && count_names(fx.dir, "") == 0, "413: unspooled %llu lines %llu dups %llu",
          (unsigned long long)st.unspooled, (unsigned long long)atomic_load(&rc->lines),
          (unsigned long long)atomic_load(&rc->dups));
    imx_engine_stop(e);
    recorder_free(rc);

    spool_ids(sp, 100, 10);
    rc = recorder_new();
    rc->reject_first = 1;
    e = make_engine(fx.p, rc, 1024, 100, 0);
    imx_engine_flush_now(e);
    imx_engine_stats(e, &st);
    CHECK(st.dropped_spool == 10 && st.unspooled == 0 && count_names(fx.dir, "") == 0
          && atomic_load(&fx.sh->points) == 0, "reject: dropped_spool %llu",
          (unsigned long long)st.dropped_spool);
    imx_engine_stop(e);
    recorder_free(rc);

    spool_ids(sp, 200, 10);
    rc = recorder_new();
    rc->always_fail = 1;
    rc->maybe = 1;
    e = make_engine(fx.p, rc, 1024, 100, 0);
    imx_engine_flush_now(e);
    imx_engine_stats(e, &st);
    CHECK(st.unspooled == 0 && st.retries == 1 && count_names(fx.dir, "") == 1
          && atomic_load(&fx.sh->points) == 10, "retry: the file must stay");
    CHECK(imx_spool_claim(sp, &f, &bad) && (f.h.flags & IMX_SPOOL_MAYBE),
          "a POST that may have been stored is not noted in the file");
    imx_spool_release(sp, &f, 0);
    rc->always_fail = 0;
    imx_engine_flush_now(e);
    imx_engine_stats(e, &st);
    CHECK(st.unspooled == 10 && atomic_load(&rc->lines) == 10 && count_names(fx.dir, "") == 0,
          "after the retry: unspooled %llu", (unsigned long long)st.unspooled);
    test_spool = NULL;
    imx_engine_stop(e);
    recorder_free(rc);
    spool_fixture_close(&fx);
}

/* A write that fails (here RLIMIT_FSIZE: EFBIG, the same path as ENOSPC
 * and EDQUOT) gives its reservation back, leaves no file, and is counted
 * dropped_spool; the identity holds. */
static void test_spool_write_fails(void)
{
    spool_fixture_t fx;
    imx_spool_drop_t ev = { 0, 0 };
    struct rlimit old, lim;
    struct sigaction ign, prev;
    recorder_t *rc = recorder_new();
    imx_engine_t *e;
    imx_stats_t st;
    imx_point_t pt;
    char err[256], big[1000];

    spool_fixture_open(&fx, 0);
    memset(big, 'x', sizeof(big));
    big[sizeof(big) - 1] = '\n';
    memset(&ign, 0, sizeof(ign));
    ign.sa_handler = SIG_IGN;
    sigaction(SIGXFSZ, &ign, &prev);
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 200;
    setrlimit(RLIMIT_FSIZE, &lim);

    test_spool = spool_fixture_spool(&fx, 1 << 20);
    CHECK(imx_spool_write(test_spool, big, sizeof(big), 1, 0, 0, 0, &ev, err, sizeof(err))
          == EFBIG && strstr(err, "cannot write"), "write past the limit: %s", err);
    CHECK(atomic_load(&fx.sh->bytes) == 0 && atomic_load(&fx.sh->points) == 0
          && count_names(fx.dir, "") == 0 && count_names(fx.dir, ".tmp") == 0,
          "a failed write left something");
    rc->always_fail = 1;
    e = make_engine(fx.p, rc, 4096, 100, 0);
    test_spool = NULL;
    for (int i = 0; i < 300; i++) {
        fill_point(&pt, (uint64_t)i);
        imx_engine_push(e, &pt, NULL);
    }
    imx_engine_stop(e);
    imx_engine_stats(e, &st);
    CHECK(st.to_spool == 300 && st.dropped_spool == 300, "to_spool %llu dropped_spool %llu",
          (unsigned long long)st.to_spool, (unsigned long long)st.dropped_spool);
    check_identity(e, 300, "spool write fails");
    setrlimit(RLIMIT_FSIZE, &old);
    sigaction(SIGXFSZ, &prev, NULL);
    spool_fixture_close(&fx);
    recorder_free(rc);
}

int main(void)
{
    apr_initialize();
    test_spool_exit_and_resend();
    test_spool_spill();
    test_spool_shared_budget();
    test_spool_send_outcomes();
    test_spool_write_fails();
    apr_terminate();
    return check_report();
}
