/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * Concurrent unit tests, built twice: with ASan+UBSan and with TSan. Many
 * producers against a small ring and a live flusher (every point pushed is
 * sent exactly once or counted as dropped), the same with the backend down
 * and the spool taking everything, and many threads recording summaries
 * while another drains them (every request counted exactly once).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <apr_pools.h>
#include <apr_time.h>

#include "imx_engine.h"
#include "imx_hist.h"
#include "imx_spool.h"

#include "check.h"
#include "fixture.h"
#include "lp_parse.h"

static void *producer_main(void *arg)
{
    producer_t *pr = arg;
    imx_point_t pt;

    for (unsigned i = 0; i < pr->per; i++) {
        uint64_t id = (uint64_t)pr->idx * pr->per + i;
        if ((i & 1023) == 0 && apr_time_now() > pr->until) {
            break;              /* time limit: a slow sanitizer run ends early */
        }
        if (pr->pace_us && (i & 63) == 63) {
            apr_sleep(pr->pace_us);
        }
        fill_point(&pt, id);
        pr->produced++;
        if (imx_engine_push(pr->e, &pt, NULL)) {
            pr->accepted[id] = 1;
            pr->ok++;
        }
    }
    return NULL;
}

/* N producers against a small ring and a live flusher: every point pushed is
 * either sent exactly once or counted as dropped, never both, never twice.
 * Guard areas allocated around the engine must stay intact. */
static void stress(unsigned nthreads, unsigned per, uint32_t cap, uint32_t batch, int gzip,
                   unsigned pace_us)
{
    apr_pool_t *p;
    recorder_t *rc = recorder_new();
    unsigned char *guard1, *guard2, *accepted = calloc(MAX_IDS, 1);
    producer_t pr[64];
    pthread_t th[64];
    imx_engine_t *e;
    uint64_t produced = 0, ok = 0, mismatch = 0;
    imx_stats_t st;

    apr_pool_create(&p, NULL);
    guard1 = apr_palloc(p, 4096);
    memset(guard1, 0xA5, 4096);
    e = make_engine(p, rc, cap, batch, gzip);
    guard2 = apr_palloc(p, 4096);
    memset(guard2, 0x5A, 4096);
    CHECK(imx_engine_start(e) == APR_SUCCESS, "start");
    for (unsigned i = 0; i < nthreads; i++) {
        pr[i] = (producer_t){ e, i, per, apr_time_now() + apr_time_from_sec(20),
                              accepted, 0, 0, pace_us };
        pthread_create(&th[i], NULL, producer_main, &pr[i]);
    }
    for (unsigned i = 0; i < nthreads; i++) {
        pthread_join(th[i], NULL);
        produced += pr[i].produced;
        ok += pr[i].ok;
    }
    imx_engine_stop(e);
    imx_engine_stats(e, &st);
    check_identity(e, produced, "stress");
    CHECK(st.recorded == ok, "recorded %llu, pushes accepted %llu",
          (unsigned long long)st.recorded, (unsigned long long)ok);
    CHECK(st.sent == atomic_load(&rc->lines), "sent %llu but recorder saw %llu",
          (unsigned long long)st.sent, (unsigned long long)atomic_load(&rc->lines));
    CHECK(st.sent + st.dropped_exit == ok, "sent + dropped_exit != accepted");
    CHECK(atomic_load(&rc->dups) == 0, "%llu duplicates",
          (unsigned long long)atomic_load(&rc->dups));
    CHECK(atomic_load(&rc->bad) == 0, "unparsable lines");
    for (uint64_t id = 0; id < (uint64_t)nthreads * per; id++) {
        if (!!rc->seen[id] != !!accepted[id]) {
            mismatch++;
        }
    }
    CHECK(st.dropped_exit || mismatch == 0, "%llu ids sent but not accepted or vice versa",
          (unsigned long long)mismatch);
    for (int i = 0; i < 4096; i++) {
        if (guard1[i] != 0xA5 || guard2[i] != 0x5A) {
            CHECK(0, "guard byte %d overwritten", i);
            break;
        }
    }
    printf("stress %u threads x %u, ring %u, batch %u%s: produced %llu sent %llu "
           "dropped_full %llu dropped_exit %llu batches %llu\n", nthreads, per, cap, batch,
           gzip ? ", gzip" : "", (unsigned long long)produced, (unsigned long long)st.sent,
           (unsigned long long)st.dropped_full, (unsigned long long)st.dropped_exit,
           (unsigned long long)st.batches);
    apr_pool_destroy(p);
    recorder_free(rc);
    free(accepted);
}

/* Producers push while the flusher, its backend down, spills its small
 * retry buffer to the spool; at stop the rest goes there too. A second
 * engine then sends the spool: every point accepted arrives exactly once,
 * and the identities hold on both sides. Runs under TSan too. */
static void stress_spool(void)
{
    spool_fixture_t fx;
    apr_pool_t *p;
    recorder_t *rc = recorder_new();
    unsigned char *accepted = calloc(MAX_IDS, 1);
    producer_t pr[4];
    pthread_t th[4];
    imx_engine_t *e;
    imx_stats_t st, st2;
    uint64_t produced = 0, ok = 0, mismatch = 0;

    rc->always_fail = 1;
    apr_pool_create(&p, NULL);
    test_spool = spool_fixture_open(&fx, 1 << 30);
    test_retry_buffer = 64 << 10;
    e = make_engine(p, rc, 1024, 256, 0);
    test_retry_buffer = 64 << 20;
    test_spool = NULL;
    CHECK(imx_engine_start(e) == APR_SUCCESS, "start");
    for (unsigned i = 0; i < 4; i++) {
        pr[i] = (producer_t){ e, i, 20000, apr_time_now() + apr_time_from_sec(20),
                              accepted, 0, 0, 200 };
        pthread_create(&th[i], NULL, producer_main, &pr[i]);
    }
    for (unsigned i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        produced += pr[i].produced;
        ok += pr[i].ok;
    }
    imx_engine_stop(e);
    imx_engine_stats(e, &st);
    check_identity(e, produced, "stress spool");
    CHECK(st.sent == 0 && st.dropped_retry == 0 && st.dropped_spool == 0
          && st.to_spool + st.dropped_exit == ok
          && (uint64_t)atomic_load(&fx.sh->points) == st.to_spool,
          "spooling: to_spool %llu dropped_exit %llu accepted %llu spooled %lld",
          (unsigned long long)st.to_spool, (unsigned long long)st.dropped_exit,
          (unsigned long long)ok, (long long)atomic_load(&fx.sh->points));
    apr_pool_destroy(p);
    recorder_free(rc);

    rc = recorder_new();
    apr_pool_create(&p, NULL);
    test_spool = spool_fixture_spool(&fx, 1 << 30);
    e = make_engine(p, rc, 1024, 256, 0);
    test_spool = NULL;
    CHECK(imx_engine_start(e) == APR_SUCCESS, "start");
    for (int i = 0; i < 2000 && atomic_load(&fx.sh->files); i++) {
        apr_sleep(apr_time_from_msec(5));
    }
    imx_engine_stop(e);
    imx_engine_stats(e, &st2);
    CHECK(st2.unspooled == st.to_spool && atomic_load(&rc->lines) == st.to_spool
          && atomic_load(&rc->dups) == 0 && atomic_load(&rc->bad) == 0
          && count_names(fx.dir, "") == 0,
          "resend: unspooled %llu of %llu, lines %llu, dups %llu",
          (unsigned long long)st2.unspooled, (unsigned long long)st.to_spool,
          (unsigned long long)atomic_load(&rc->lines),
          (unsigned long long)atomic_load(&rc->dups));
    for (uint64_t id = 0; id < 4 * 20000; id++) {
        mismatch += !!rc->seen[id] != !!accepted[id];
    }
    CHECK(st.dropped_exit || mismatch == 0, "%llu ids spooled but not accepted or vice versa",
          (unsigned long long)mismatch);
    printf("stress spool 4 threads x 20000: accepted %llu to_spool %llu dropped_exit %llu "
           "unspooled %llu\n", (unsigned long long)ok, (unsigned long long)st.to_spool,
           (unsigned long long)st.dropped_exit, (unsigned long long)st2.unspooled);
    apr_pool_destroy(p);
    recorder_free(rc);
    free(accepted);
    spool_fixture_close(&fx);
}

/* Many threads record while another drains and writes, as the elected
 * child does to live children: every request counted exactly once. */
typedef struct {
    imx_hist_table_t *t;
    unsigned id, n;
    _Atomic unsigned *finished;
} hist_producer_t;

static void *hist_producer_main(void *arg)
{
    hist_producer_t *p = arg;

    for (unsigned i = 0; i < p->n; i++) {
        imx_hist_record(p->t, 1 + (p->id * 7 + i) % 40, i % 3000, i % 10 == 0, NULL);
    }
    atomic_fetch_add(p->finished, 1);
    return NULL;
}

static void stress_hist(unsigned nthreads, unsigned per)
{
    imx_hist_table_t *t = new_table(64), *pend = new_table(256);
    imx_hist_out_t o = { NULL, 0, 0 };
    hist_producer_t pr[16];
    pthread_t th[16];
    unsigned long long count = 0, errors = 0, sum = 0, want_sum = 0;
    uint64_t busy = 0;
    _Atomic unsigned finished = 0;
    int rounds = 0, done;

    for (unsigned i = 0; i < nthreads; i++) {
        pr[i] = (hist_producer_t){ t, i, per, &finished };
        pthread_create(&th[i], NULL, hist_producer_main, &pr[i]);
    }
    do {
        done = atomic_load(&finished) == nthreads;
        imx_hist_drain(pend, t);
        o.len = 0;
        imx_hist_encode(&o, "s", pend, key_tags, NULL, 1, &busy);
        count += field_total(o.buf, o.len, "count");
        errors += field_total(o.buf, o.len, "errors");
        sum += field_total(o.buf, o.len, "duration_us_sum");
        rounds++;
    } while (!done);
    for (unsigned i = 0; i < nthreads; i++) {
        pthread_join(th[i], NULL);
    }
    imx_hist_drain(pend, t);
    o.len = 0;
    imx_hist_encode(&o, "s", pend, key_tags, NULL, 1, &busy);
    count += field_total(o.buf, o.len, "count");
    errors += field_total(o.buf, o.len, "errors");
    sum += field_total(o.buf, o.len, "duration_us_sum");
    for (unsigned i = 0; i < per; i++) {
        want_sum += i % 3000;
    }
    want_sum *= nthreads;
    CHECK(count == (unsigned long long)nthreads * per, "count %llu", count);
    CHECK(errors == (unsigned long long)nthreads * ((per + 9) / 10), "errors %llu", errors);
    CHECK(sum == want_sum && busy == want_sum, "sum %llu busy %llu want %llu", sum,
          (unsigned long long)busy, want_sum);
    CHECK(imx_hist_used(pend) == 0, "nothing left pending");
    printf("stress_hist %u threads x %u: %d drains\n", nthreads, per, rounds);
    free(t); free(pend); free(o.buf);
}

int main(void)
{
    apr_initialize();
    stress_hist(8, 200000);
    /* Flat out (mostly drops), paced (mostly sent), tiny ring + gzip, many threads. */
    stress(8, 100000, 1024, 256, 0, 0);
    stress(8, 20000, 1024, 256, 0, 1000);
    stress(4, 20000, 64, 16, 1, 500);
    stress(32, 10000, 65536, 5000, 0, 20);
    stress_spool();
    apr_terminate();
    return check_report();
}
