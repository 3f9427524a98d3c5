/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * Unit tests of the duration histograms and the summary lines (imx_hist.c):
 * buckets, merging and percentiles, 64-bit counters, the pages a table
 * touches, a full pending table, half-recorded requests, the optional
 * fields and the exemplar, repair after a dead lock holder. Many threads
 * recording while another drains: test_stress.c.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <apr_general.h>

#include "imx_hist.h"

#include "check.h"
#include "fixture.h"
#include "lp_parse.h"

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double rel_err(uint64_t got, uint64_t want)
{
    return want ? (double)(got > want ? got - want : want - got) / (double)want : (double)got;
}

/* Every value maps to a bucket whose midpoint is within 1% of it, and the
 * buckets are ordered. */
static void test_hist_buckets(void)
{
    unsigned prev = 0;
    double worst = 0;

    for (uint64_t v = 0; v < ((uint64_t)1 << 36); v = v < 5000 ? v + 1 : v + v / 997 + 1) {
        unsigned b = imx_hist_bucket(v);
        double e = rel_err(imx_hist_value(b), v);
        CHECK(b < IMX_HIST_BUCKETS && b >= prev, "bucket of %llu: %u", (unsigned long long)v, b);
        if (e > worst) {
            worst = e;
        }
        prev = b;
    }
    CHECK(worst <= 0.0079, "worst relative error %.4f", worst);
    CHECK(imx_hist_bucket(UINT64_MAX) == IMX_HIST_BUCKETS - 1, "clamp");
}

/* A series' body, for tests that reach inside: claimed in order. */
static imx_hist_series_t *series_at(imx_hist_table_t *t, uint32_t i)
{
    return (imx_hist_series_t *)((char *)t + t->boff) + i;
}

static _Atomic uint32_t *keys_at(imx_hist_table_t *t)
{
    return (_Atomic uint32_t *)(t + 1);
}

/* Two tables (two children) drained into pending, over two intervals:
 * counts exact, and the percentiles of each interval within 1% of the exact
 * nearest-rank ones of that interval's values. */
static void test_hist_merge_and_percentiles(void)
{
    imx_hist_table_t *a = new_table(16), *b = new_table(16), *pend = new_table(64);
    enum { N = 20001 };
    uint64_t *vals = malloc(sizeof(uint64_t) * N), busy;
    imx_hist_out_t o = { NULL, 0, 0 };
    static const double ps[3] = { 50, 95, 99 };
    static const char *const pn[3] = { "p50_us", "p95_us", "p99_us" };
    uint32_t lines;

    for (int round = 0; round < 2; round++) {
        uint64_t sum = 0;
        for (int i = 0; i < N; i++) {
            /* A mix like a web server's: fast, medium, a slow tail; slower in
             * the second interval. */
            uint64_t v = (rnd() % 10 < 7) ? 50 + rnd() % 400
                         : (rnd() % 10 < 9) ? 1000 + rnd() % 20000 : 100000 + rnd() % 2000000;
            v *= (uint64_t)(round + 1);
            vals[i] = v;
            sum += v;
            imx_hist_record(i & 1 ? a : b, 7, v, v > 1000000, NULL);
        }
        imx_hist_record(a, 9, 123, 0, NULL);
        CHECK(imx_hist_drain(pend, a) == 0 && imx_hist_drain(pend, b) == 0, "drain");
        o.len = 0;
        busy = 0;
        lines = imx_hist_encode(&o, "apache_summary,host=h", pend, key_tags, NULL,
                                1000 + round, &busy);
        CHECK(imx_hist_reserve(&o, 1), "room for the NUL");
        o.buf[o.len] = '\0';
        CHECK(lines == 2, "round %d: %u lines", round, lines);
        CHECK(busy == sum + 123, "busy %llu", (unsigned long long)busy);
        CHECK(field_of(o.buf, 7, "count") == N, "round %d count %lld", round,
              field_of(o.buf, 7, "count"));
        CHECK(field_of(o.buf, 9, "count") == 1, "key 9 count");
        CHECK(field_of(o.buf, 7, "duration_us_sum") == (long long)sum, "sum");
        qsort(vals, N, sizeof(vals[0]), cmp_u64);
        CHECK(field_of(o.buf, 7, "duration_us_min") == (long long)vals[0], "min");
        CHECK(field_of(o.buf, 7, "duration_us_max") == (long long)vals[N - 1], "max");
        for (int k = 0; k < 3; k++) {
            uint64_t exact = vals[(size_t)((ps[k] / 100.0 * N) + 0.999999) - 1];
            long long got = field_of(o.buf, 7, pn[k]);
            CHECK(rel_err((uint64_t)got, exact) <= 0.01, "round %d %s = %lld, exact %llu",
                  round, pn[k], got, (unsigned long long)exact);
        }
        /* Buckets add up to the count, so servers can be summed. */
        {
            long long tot = 0;
            const char *l = strstr(o.buf, ",k=7 "), *end = strchr(l, '\n'), *p = l;
            while ((p = strstr(p, ",b_")) && p < end) {
                tot += strtoll(strchr(p, '=') + 1, NULL, 10);
                p++;
            }
            CHECK(tot == N, "bucket fields sum to %lld", tot);
        }
        CHECK(imx_hist_used(pend) == 0, "pending emptied: %u", imx_hist_used(pend));
    }
    /* Nothing new: nothing written. */
    imx_hist_drain(pend, a);
    imx_hist_drain(pend, b);
    o.len = 0;
    lines = imx_hist_encode(&o, "s", pend, key_tags, NULL, 3, &busy);
    CHECK(lines == 0 && o.len == 0, "idle interval wrote %u lines", lines);
    free(a); free(b); free(pend); free(vals); free(o.buf);
}

/* A bucket of a long-lived child (or of the tables that live as
 * long as httpd's parent) past 2^32 requests keeps counting. */
static void test_hist_counters_64bit(void)
{
    imx_hist_table_t *t = new_table(4), *pend = new_table(4);
    imx_hist_out_t o = { NULL, 0, 0 };
    uint64_t busy = 0;
    unsigned bk = imx_hist_bucket(100);

    imx_hist_record(t, 5, 100, 0, NULL);
    atomic_store(&series_at(t, 0)->b[bk], 0xFFFFFFFFull);   /* 4G requests so far */
    imx_hist_record(t, 5, 100, 0, NULL);
    CHECK(atomic_load(&series_at(t, 0)->b[bk]) == 0x100000000ull, "child bucket wrapped: %llu",
          (unsigned long long)atomic_load(&series_at(t, 0)->b[bk]));
    /* And where counts are summed. */
    imx_hist_record(pend, 5, 100, 0, NULL);
    atomic_store(&series_at(pend, 0)->b[bk], 0xFFFFFFFFull);
    imx_hist_drain(pend, t);
    imx_hist_encode(&o, "s", pend, key_tags, NULL, 1, &busy);
    imx_hist_reserve(&o, 1);
    o.buf[o.len] = '\0';
    CHECK(field_of(o.buf, 5, "count") == 0x1FFFFFFFFll, "count %lld", field_of(o.buf, 5, "count"));
    CHECK(field_of(o.buf, 5, "b_100") == 0x1FFFFFFFFll, "b_100 %lld", field_of(o.buf, 5, "b_100"));
    free(t); free(pend); free(o.buf);
}

static size_t resident_pages(void *p, size_t len)
{
    size_t n = (len + 4095) / 4096, r = 0;
    unsigned char *v = malloc(n);

    if (mincore(p, len, v) != 0) {
        perror("mincore");
        exit(2);
    }
    for (size_t i = 0; i < n; i++) {
        r += v[i] & 1;
    }
    free(v);
    return r;
}

/* In shared memory (backed page by page, reads included), the
 * pages a child's table and the pending table occupy follow the series in
 * use: header, keys and index, then four pages per series. Recording,
 * draining and encoding touch nothing else. */
static void test_hist_pages_follow_series(void)
{
    uint32_t cap = 4096, gcap = 4 * cap;
    size_t csz = imx_hist_table_size(cap), gsz = imx_hist_table_size(gcap);
    imx_hist_table_t *t = mmap(NULL, csz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    imx_hist_table_t *pend = mmap(NULL, gsz, PROT_READ | PROT_WRITE,
                                  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    imx_hist_out_t o = { NULL, 0, 0 };
    size_t head_c, head_p, rc, rp;
    uint64_t busy = 0;

    CHECK(t != MAP_FAILED && pend != MAP_FAILED, "mmap");
    imx_hist_init(t, cap);
    imx_hist_init(pend, gcap);
    head_c = t->boff / 4096;
    head_p = pend->boff / 4096;
    for (int round = 0; round < 3; round++) {
        for (uint32_t k = 1; k <= 3; k++) {
            for (int i = 0; i < 1000; i++) {
                imx_hist_record(t, k * 7919, (uint64_t)(i * 37 % 5000), 0, NULL);
            }
        }
        imx_hist_drain(pend, t);
        o.len = 0;
        CHECK(imx_hist_encode(&o, "s", pend, key_tags, NULL, 1, &busy) == 3, "3 lines");
    }
    rc = resident_pages(t, csz);
    rp = resident_pages(pend, gsz);
    CHECK(rc <= head_c + 3 * 4, "child table: %zu pages resident of %zu (bound %zu)",
          rc, csz / 4096, head_c + 3 * 4);
    CHECK(rp <= head_p + 3 * 4, "pending table: %zu pages resident of %zu (bound %zu)",
          rp, gsz / 4096, head_p + 3 * 4);
    /* A fresh table is emptied by touching its header, keys and index only. */
    imx_hist_init(t, cap);
    CHECK(resident_pages(t, csz) == rc, "init touched bodies");
    munmap(t, csz);
    munmap(pend, gsz);
    free(o.buf);
}

/* A pending table too small for everything: what does not fit stays in the
 * child's table and comes out in a later interval; nothing is lost. */
static void test_hist_pending_full(void)
{
    imx_hist_table_t *t = new_table(8), *pend = new_table(1);
    imx_hist_out_t o = { NULL, 0, 0 };
    uint64_t busy = 0;
    unsigned long long count = 0;

    for (uint32_t k = 1; k <= 3; k++) {
        imx_hist_record(t, k, 10 * k, 0, NULL);
        imx_hist_record(t, k, 10 * k, 0, NULL);
    }
    for (int round = 0; round < 3; round++) {
        CHECK(imx_hist_drain(pend, t) == (uint32_t)(2 - round), "round %d left", round);
        o.len = 0;
        CHECK(imx_hist_encode(&o, "s", pend, key_tags, NULL, 1, &busy) == 1, "a line");
        count += field_total(o.buf, o.len, "count");
    }
    CHECK(count == 6 && busy == 120, "count %llu busy %llu", count, (unsigned long long)busy);
    free(t); free(pend); free(o.buf);
}

/* A drain that took part of a request still being recorded (its sum, not
 * yet its bucket) keeps that part for the interval where the rest is. */
static void test_hist_fragment_carried(void)
{
    imx_hist_table_t *t = new_table(4), *pend = new_table(4);
    imx_hist_out_t o = { NULL, 0, 0 };
    uint64_t busy = 0;
    imx_hist_series_t *s;

    imx_hist_record(t, 3, 40, 1, NULL);
    s = series_at(t, 0);
    /* Half a request: sum and errors added, bucket not yet. */
    atomic_fetch_add(&s->sum, 60);
    atomic_fetch_add(&s->errors, 1);
    atomic_store(&s->b[imx_hist_bucket(40)], 0);
    imx_hist_drain(pend, t);
    CHECK(imx_hist_encode(&o, "s", pend, key_tags, NULL, 1, &busy) == 0, "no line without count");
    CHECK(imx_hist_used(pend) == 1, "the fragment stays pending");
    atomic_fetch_add(&s->b[imx_hist_bucket(40)], 1);
    atomic_fetch_add(&s->b[imx_hist_bucket(60)], 1);
    imx_hist_drain(pend, t);
    CHECK(imx_hist_encode(&o, "s", pend, key_tags, NULL, 2, &busy) == 1, "one line");
    imx_hist_reserve(&o, 1);
    o.buf[o.len] = '\0';
    CHECK(field_of(o.buf, 3, "count") == 2 && field_of(o.buf, 3, "duration_us_sum") == 100
          && field_of(o.buf, 3, "errors") == 2, "%s", o.buf);
    free(t); free(pend); free(o.buf);
}

/* Drains src into pend and encodes pend into o (emptied first), as the
 * writer of summaries does; returns the text, NUL-terminated. */
static const char *drain_encode(imx_hist_table_t *src, imx_hist_table_t *pend,
                                imx_hist_out_t *o, int64_t ts, uint64_t *busy)
{
    imx_hist_drain(pend, src);
    o->len = 0;
    imx_hist_encode(o, "s", pend, key_tags, NULL, ts, busy);
    imx_hist_reserve(o, 1);
    o->buf[o->len] = '\0';
    return o->buf;
}

/* The summaries' optional fields: ttfb percentiles from the TTFB series of a
 * key (never a line of their own), slo_good exact, and the exemplar is the
 * id of the slowest request across two children's tables. */
static void test_hist_fields(void)
{
    imx_hist_table_t *a = new_table(8), *b = new_table(8), *pend = new_table(16);
    imx_hist_out_t o = { NULL, 0, 0 };
    imx_hist_extra_t x = { 300000, NULL, 0 };
    uint64_t busy = 0;
    char id[16];
    uint32_t lines;

    for (int i = 0; i < 100; i++) {
        /* 100 requests of 10 ms .. 1 s; every tenth a 5xx. ttfb = d / 4. */
        uint64_t d = 10000 + (uint64_t)i * 10000;
        int err = i % 10 == 9;

        snprintf(id, sizeof(id), "req-%d", i);
        x.id = id;
        x.id_len = strlen(id);
        imx_hist_record(i & 1 ? a : b, 7, d, err, &x);
        imx_hist_record(i & 1 ? a : b, 7 | IMX_HIST_TTFB, d / 4, 0, NULL);
    }
    /* A series without ids, SLO or ttfb writes none of those fields. */
    imx_hist_record(a, 9, 50, 0, NULL);
    imx_hist_drain(pend, a);
    imx_hist_drain(pend, b);
    lines = imx_hist_encode(&o, "s", pend, key_tags, NULL, 1, &busy);
    imx_hist_reserve(&o, 1);
    o.buf[o.len] = '\0';
    CHECK(lines == 2, "two lines (the ttfb series is no line): %u\n%s", lines, o.buf);
    /* d <= 300 ms: i = 0..29, minus the 5xx among them (9, 19, 29). */
    CHECK(field_of(o.buf, 7, "slo_good") == 27, "slo_good %lld", field_of(o.buf, 7, "slo_good"));
    CHECK(field_of(o.buf, 7, "slo_threshold_us") == 300000, "threshold");
    CHECK(!strcmp(str_field_of(o.buf, 7, "max_request_id"), "req-99"), "exemplar '%s'",
          str_field_of(o.buf, 7, "max_request_id"));
    /* ttfb: 2.5 ms .. 250 ms in 2.5 ms steps; p50 = the 50th = 125 ms. */
    CHECK(rel_err((uint64_t)field_of(o.buf, 7, "ttfb_p50_us"), 125000) < 0.01, "ttfb p50 %lld",
          field_of(o.buf, 7, "ttfb_p50_us"));
    CHECK(rel_err((uint64_t)field_of(o.buf, 7, "ttfb_p99_us"), 247500) < 0.01, "ttfb p99 %lld",
          field_of(o.buf, 7, "ttfb_p99_us"));
    CHECK(field_of(o.buf, 9, "slo_good") == -1 && field_of(o.buf, 9, "ttfb_p50_us") == -1
          && !*str_field_of(o.buf, 9, "max_request_id"), "no extra fields: %s", o.buf);
    CHECK(field_of(o.buf, 7, "count") == 100 && busy == 10000 * 100 + 10000 * 4950 + 50,
          "count and busy exclude the ttfb series: busy %llu", (unsigned long long)busy);
    CHECK(imx_hist_used(pend) == 0, "pending emptied");

    /* The next interval starts afresh: a faster request is the new exemplar. */
    x.id = "next";
    x.id_len = 4;
    imx_hist_record(a, 7, 20, 0, &x);
    drain_encode(a, pend, &o, 2, &busy);
    CHECK(!strcmp(str_field_of(o.buf, 7, "max_request_id"), "next")
          && field_of(o.buf, 7, "slo_good") == 1, "%s", o.buf);

    /* Whatever an id holds, the line stays one line with one string. */
    x.id = "a\"b\\c\nd";
    x.id_len = 7;
    imx_hist_record(a, 7, 20, 0, &x);
    drain_encode(a, pend, &o, 3, &busy);
    CHECK(strstr(o.buf, ",max_request_id=\"a\\\"b\\\\cd\" 3\n") && strchr(o.buf, '\n')
          == o.buf + o.len - 1, "escaped: %s", o.buf);
    free(a); free(b); free(pend); free(o.buf);
}

typedef struct {
    imx_hist_table_t *t;
    unsigned id, per;
} ex_producer_t;

static void *ex_producer_main(void *arg)
{
    ex_producer_t *p = arg;
    char id[32];
    imx_hist_extra_t x = { 0, id, 0 };

    for (unsigned i = 0; i < p->per; i++) {
        /* Durations unique across threads: i * 64 + thread. */
        uint64_t d = (uint64_t)i * 64 + p->id;
        x.id_len = (size_t)snprintf(id, sizeof(id), "t%u-%" PRIu64, p->id, d);
        imx_hist_record(p->t, 3, d, 0, &x);
    }
    return NULL;
}

/* Threads racing for the exemplar: it always names the slowest. */
static void test_hist_exemplar_race(void)
{
    imx_hist_table_t *t = new_table(4), *pend = new_table(4);
    imx_hist_out_t o = { NULL, 0, 0 };
    ex_producer_t pr[8];
    pthread_t th[8];
    uint64_t busy = 0;

    for (unsigned i = 0; i < 8; i++) {
        pr[i] = (ex_producer_t){ t, i, 20000 };
        pthread_create(&th[i], NULL, ex_producer_main, &pr[i]);
    }
    for (unsigned i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
    }
    drain_encode(t, pend, &o, 1, &busy);
    CHECK(!strcmp(str_field_of(o.buf, 3, "max_request_id"), "t7-1279943"), "exemplar '%s'",
          str_field_of(o.buf, 3, "max_request_id"));
    free(t); free(pend); free(o.buf);
}

/* After a holder of the lock died in the middle of an update: a key
 * entered twice, a slot left BUSY, an entry claimed but never keyed. Repair
 * merges and clears, and the table works again. */
static void test_hist_repair(void)
{
    imx_hist_table_t *t = new_table(8);
    imx_hist_out_t o = { NULL, 0, 0 };
    _Atomic uint32_t *keys = keys_at(t), *index = keys + t->cap;
    uint64_t busy = 0;

    imx_hist_record(t, 5, 10, 0, NULL);
    imx_hist_record(t, 6, 20, 0, NULL);
    atomic_store(&keys[1], 5);                  /* key 5 twice */
    atomic_store(&t->used, 3);                  /* entry 2 claimed, no key */
    for (uint32_t h = 0; h < t->nindex; h++) {
        if (!atomic_load(&index[h])) {
            atomic_store(&index[h], 0xffffffffu);       /* left BUSY */
        }
    }
    imx_hist_repair(t);
    for (uint32_t k = 100; k < 105; k++) {
        CHECK(imx_hist_record(t, k, 1, 0, NULL) == 1, "record after repair");
    }
    imx_hist_encode(&o, "s", t, key_tags, NULL, 1, &busy);
    imx_hist_reserve(&o, 1);
    o.buf[o.len] = '\0';
    CHECK(field_of(o.buf, 5, "count") == 2 && field_of(o.buf, 5, "duration_us_sum") == 30,
          "merged: %s", o.buf);
    CHECK(field_total(o.buf, o.len, "count") == 7, "total %llu",
          field_total(o.buf, o.len, "count"));
    free(t); free(o.buf);
}

int main(void)
{
    apr_initialize();
    test_hist_buckets();
    test_hist_merge_and_percentiles();
    test_hist_counters_64bit();
    test_hist_pages_follow_series();
    test_hist_pending_full();
    test_hist_fragment_carried();
    test_hist_repair();
    test_hist_fields();
    test_hist_exemplar_race();
    apr_terminate();
    return check_report();
}
