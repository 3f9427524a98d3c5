/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * Unit tests of the Prometheus engine (imx_prom.c, imx_prom_text.c)
 * without httpd.
 *
 *   test_prom               all tests (built with ASan+UBSan)
 *   test_prom stress        the concurrent ones only (built with TSan)
 *   test_prom sample [om]   prints a small scrape, 0.0.4 or OpenMetrics,
 *                           for promtool check metrics and a parser
 *   test_prom cost WHAT N   N calls of imx_prom_record for callgrind
 *                           (plain, ex or overflow; built with -O2)
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include <apr_general.h>
#include <apr_pools.h>

#include "imx_lineproto.h"
#include "imx_prom.h"

#include "check.h"

#define MS 1000000LL

/* ------------------------------------------------------------------------- */
/* Helpers                                                                   */

static imx_prom_table_t *new_table(uint32_t cap, const imx_prom_buckets_t *b, int ex)
{
    size_t sz = imx_prom_table_size(cap, b->n, ex);
    imx_prom_table_t *t = aligned_alloc(4096, (sz + 4095) & ~(size_t)4095);

    /* Garbage where bodies go: a claim must zero its own body. */
    memset(t, 0xa5, sz);
    imx_prom_init(t, cap, b, ex);
    return t;
}

static imx_prom_buckets_t layout(const char *list)
{
    imx_prom_buckets_t b;
    char err[160];

    if (imx_prom_buckets_parse(&b, list, err, sizeof(err))) {
        fprintf(stderr, "bad layout %s: %s\n", list, err);
        abort();
    }
    return b;
}

static imx_prom_acc_t *sum_of(imx_prom_table_t **t, int n, int ex)
{
    imx_prom_buckets_t b;
    imx_prom_acc_t *a;

    imx_prom_table_buckets(t[0], &b);
    a = imx_prom_acc_new(&b, ex);
    for (int i = 0; i < n; i++) {
        CHECK(imx_prom_acc_add(a, t[i]) == 0, "add table %d", i);
    }
    return a;
}

static const imx_prom_series_t *series_of(imx_prom_acc_t *a, uint64_t key)
{
    for (uint32_t i = 0; i < imx_prom_acc_len(a); i++) {
        const imx_prom_series_t *s = imx_prom_acc_series(a, i);
        if (s->key == key) {
            return s;
        }
    }
    return NULL;
}

/* Labels for tests: key 1 "a", others numbered, the overflow "other". */
static const char *test_labels(void *ctx, uint64_t key)
{
    static char buf[64];

    (void)ctx;
    if (key == IMX_PROM_OVERFLOW) {
        return "route=\"other\"";
    }
    if (key == 99) {
        return NULL;
    }
    snprintf(buf, sizeof(buf), "route=\"r%llu\"", (unsigned long long)key);
    return buf;
}

static const char *no_labels(void *ctx, uint64_t key)
{
    (void)ctx;
    (void)key;
    return "";
}

/* The internals some tests reach into (imx_prom.c's layout). */
static _Atomic uint32_t *index_at(imx_prom_table_t *t)
{
    return (_Atomic uint32_t *)((_Atomic uint64_t *)(t + 1) + t->cap);
}

static _Atomic uint32_t *ex_seq_at(imx_prom_table_t *t, uint32_t body, unsigned bucket)
{
    return (_Atomic uint32_t *)((char *)t + t->boff + (size_t)body * t->stride + t->ex_off
                                + bucket * 88);
}

/* ------------------------------------------------------------------------- */
/* Layouts                                                                   */

static void test_parse_good(void)
{
    imx_prom_buckets_t b;
    char err[160] = "";
    static const struct {
        const char *in;
        uint32_t n;
        uint64_t first, last;
    } good[] = {
        { "0.005 0.01 0.1, 1 2.5", 5, 5000, 2500000 },
        { "1", 1, 1000000, 1000000 },
        { " .5,5.  ,\t10 ", 3, 500000, 10000000 },
        { "0.000001 0.0000020", 2, 1, 2 },
        { "1.000000000 +2", 2, 1000000, 2000000 },
        { "0007 1000000000", 2, 7000000, 1000000000000000ULL },
    };

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        int rc = imx_prom_buckets_parse(&b, good[i].in, err, sizeof(err));
        CHECK(rc == 0 && b.n == good[i].n && b.le_us[0] == good[i].first
              && b.le_us[b.n - 1] == good[i].last, "\"%s\": rc %d n %u (%s)", good[i].in, rc,
              b.n, err);
    }
    /* 32 bounds: the most. */
    {
        char list[400] = "";
        for (int i = 1; i <= 32; i++) {
            snprintf(list + strlen(list), sizeof(list) - strlen(list), "%d ", i);
        }
        CHECK(imx_prom_buckets_parse(&b, list, err, sizeof(err)) == 0 && b.n == 32,
              "32 bounds: %s", err);
    }
    /* One argument at a time, as an ITERATE directive gives them. */
    b.n = 0;
    CHECK(imx_prom_buckets_add(&b, "0.1", err, sizeof(err)) == 0
          && imx_prom_buckets_add(&b, "0.25", err, sizeof(err)) == 0 && b.n == 2
          && b.le_us[1] == 250000, "add");
    CHECK(imx_prom_buckets_add(&b, "0.2", err, sizeof(err)) == -1
          && strstr(err, "\"0.2\"") && strstr(err, "0.25"), "add out of order: %s", err);
    imx_prom_buckets_default(&b);
    CHECK(b.n == 13 && b.le_us[0] == 1000 && b.le_us[12] == 10000000, "default");
    for (uint32_t i = 1; i < b.n; i++) {
        CHECK(b.le_us[i] > b.le_us[i - 1], "default ascending");
    }
}

static void test_parse_bad(void)
{
    static const struct {
        const char *in, *shown, *why;
    } bad[] = {
        { "", NULL, "no bounds" },
        { " , \t", NULL, "no bounds" },
        { "abc", "\"abc\"", "not a number" },
        { "0.1 x 1", "\"x\"", "not a number" },
        { "1e-3", "\"1e-3\"", "not a number" },
        { "0x10", "\"0x10\"", "not a number" },
        { "1.2.3", "\"1.2.3\"", "not a number" },
        { "1;2", "\"1;2\"", "not a number" },
        { ".", "\".\"", "not a number" },
        { "-", "\"-\"", "not a number" },
        { "1s", "\"1s\"", "not a number" },
        { "-1", "\"-1\"", "not above 0" },
        { "-0.5", "\"-0.5\"", "not above 0" },
        { "0", "\"0\"", "not above 0" },
        { "0.000", "\"0.000\"", "not above 0" },
        { "0.0000005", "\"0.0000005\"", "finer than a microsecond" },
        { "1.0000001", "\"1.0000001\"", "finer than a microsecond" },
        { "1 1", "\"1\"", "given twice" },
        { "0.5 1 0.50", "\"0.50\"", "given twice" },
        { "2 1", "\"1\"", "not above the bound before it (2.0)" },
        { "0.1 0.2 0.15", "\"0.15\"", "not above the bound before it (0.2)" },
        { "+Inf", "\"+Inf\"", "implicitly" },
        { "1 inf", "\"inf\"", "implicitly" },
        { "-Inf", "\"-Inf\"", "not above 0" },
        { "1000000000.000001", "\"1000000000.000001\"", "largest bound" },
        { "99999999999999999999999", "\"99999999999999999999999\"", "largest bound" },
        { "\"1\"", "\"?1?\"", "not a number" },
    };
    imx_prom_buckets_t b;
    char err[200];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc;

        err[0] = '\0';
        rc = imx_prom_buckets_parse(&b, bad[i].in, err, sizeof(err));
        CHECK(rc == -1 && (!bad[i].shown || strstr(err, bad[i].shown)) && strstr(err, bad[i].why),
              "\"%s\": rc %d, \"%s\"", bad[i].in, rc, err);
    }
    {
        char list[400] = "";
        for (int i = 1; i <= 33; i++) {
            snprintf(list + strlen(list), sizeof(list) - strlen(list), "%d ", i);
        }
        CHECK(imx_prom_buckets_parse(&b, list, err, sizeof(err)) == -1
              && strstr(err, "\"33\"") && strstr(err, "32"), "33 bounds: %s", err);
    }
    /* A long bad value is cut in the message; a tiny buffer is not overrun. */
    {
        char list[200];
        memset(list, 'z', 150);
        list[150] = '\0';
        CHECK(imx_prom_buckets_parse(&b, list, err, sizeof(err)) == -1 && strlen(err) < 120
              && strstr(err, "...\""), "long value: %s", err);
        CHECK(imx_prom_buckets_parse(&b, list, err, 8) == -1 && strlen(err) == 7, "tiny err");
        CHECK(imx_prom_buckets_parse(&b, list, NULL, 0) == -1, "no err buffer");
    }
}

static void test_format_le(void)
{
    static const struct {
        uint64_t us;
        const char *le;
    } cases[] = {
        { 0, "+Inf" }, { 1, "1e-06" }, { 10, "1e-05" }, { 25, "2.5e-05" }, { 100, "0.0001" },
        { 125, "0.000125" }, { 1000, "0.001" }, { 2500, "0.0025" }, { 5000, "0.005" },
        { 10000, "0.01" }, { 100000, "0.1" }, { 999999, "0.999999" }, { 1000000, "1.0" },
        { 1000001, "1.000001" }, { 2500000, "2.5" }, { 10000000, "10.0" },
        { 123456789, "123.456789" }, { 100000000000ULL, "100000.0" },
        { 999999000000ULL, "999999.0" }, { 1000000000000ULL, "1e+06" },
        { 1500000000000ULL, "1.5e+06" }, { 1234567000000ULL, "1.234567e+06" },
        { 1000000000000000ULL, "1e+09" },
    };
    char out[IMX_PROM_LE_MAX];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = imx_prom_format_le(out, cases[i].us);
        CHECK(n == strlen(cases[i].le) && !strcmp(out, cases[i].le), "%llu: %s, want %s",
              (unsigned long long)cases[i].us, out, cases[i].le);
    }
    /* What it writes parses back to the same bound (but the exponents,
     * which the directive does not take), whatever the spelling was. */
    for (uint64_t us = 1; us < 3000000000ULL; us = us * 3 + 7) {
        imx_prom_buckets_t b;
        char err[160];

        imx_prom_format_le(out, us);
        if (!strchr(out, 'e')) {
            CHECK(imx_prom_buckets_parse(&b, out, err, sizeof(err)) == 0 && b.le_us[0] == us,
                  "%s back: %s", out, err);
        }
    }
}

/* ------------------------------------------------------------------------- */
/* Buckets                                                                   */

static unsigned naive_bucket(const imx_prom_buckets_t *b, uint64_t us)
{
    unsigned i = 0;

    while (i < b->n && us > b->le_us[i]) {
        i++;
    }
    return i;
}

/* le is less or equal: a value equal to a bound is in that bound's bucket,
 * one more is in the next. Every layout size, every bound and its
 * neighbours, both through imx_prom_bucket and through a record read back. */
static void test_bucket_choice(void)
{
    imx_prom_buckets_t b;
    uint64_t seed = 42;

    imx_prom_buckets_default(&b);
    {
        imx_prom_table_t *t = new_table(4, &b, 0);
        imx_prom_acc_t *a;
        const imx_prom_series_t *s;

        for (uint32_t k = 0; k < b.n; k++) {
            CHECK(imx_prom_bucket(t, b.le_us[k]) == k, "at %llu", (unsigned long long)b.le_us[k]);
            CHECK(imx_prom_bucket(t, b.le_us[k] + 1) == k + 1, "after");
            CHECK(imx_prom_bucket(t, b.le_us[k] - 1) == k, "before");
            imx_prom_record(t, 1, b.le_us[k], 0, NULL, 0, 0);
            imx_prom_record(t, 2, b.le_us[k] + 1, 0, NULL, 0, 0);
        }
        CHECK(imx_prom_bucket(t, 0) == 0 && imx_prom_bucket(t, UINT64_MAX) == b.n, "ends");
        a = sum_of(&t, 1, 0);
        s = series_of(a, 1);
        for (uint32_t k = 0; s && k < b.n; k++) {
            CHECK(s->b[k] == 1, "record at bound %u", k);
        }
        CHECK(s && s->b[b.n] == 0 && s->count == b.n, "nothing above");
        s = series_of(a, 2);
        CHECK(s && s->b[0] == 0 && s->b[b.n] == 1, "record after bounds");
        imx_prom_acc_free(a);
        free(t);
    }
    for (uint32_t n = 1; n <= IMX_PROM_BUCKETS_MAX; n++) {
        imx_prom_table_t *t;
        uint64_t v = 0;

        b.n = n;
        for (uint32_t k = 0; k < n; k++) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            v += 1 + (seed >> 40) % 100000;
            b.le_us[k] = v;
        }
        t = new_table(2, &b, 0);
        for (uint32_t k = 0; k < n; k++) {
            for (int d = -2; d <= 2; d++) {
                uint64_t us = b.le_us[k] + (uint64_t)(int64_t)d;
                CHECK(imx_prom_bucket(t, us) == naive_bucket(&b, us), "n %u bound %u %+d", n, k, d);
            }
        }
        for (int r = 0; r < 2000; r++) {
            uint64_t us;
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            us = (seed >> 20) % (v + 1000);
            CHECK(imx_prom_bucket(t, us) == naive_bucket(&b, us), "n %u random %llu", n,
                  (unsigned long long)us);
        }
        CHECK(imx_prom_bucket(t, UINT64_MAX) == n && imx_prom_bucket(t, 0) == 0, "n %u ends", n);
        free(t);
    }
}

/* ------------------------------------------------------------------------- */
/* Tables                                                                    */

static void test_record_and_read(void)
{
    imx_prom_buckets_t b = layout("0.01 0.1 1");
    imx_prom_table_t *t = new_table(16, &b, 0);
    imx_prom_acc_t *a;
    const imx_prom_series_t *s;

    imx_prom_record(t, 7, 5000, 100, NULL, 0, 1);
    imx_prom_record(t, 7, 10000, 200, NULL, 0, 1);
    imx_prom_record(t, 7, 2000000, 0, NULL, 0, 1);
    imx_prom_record(t, 3, 50000, 1, NULL, 0, 1);
    imx_prom_record(t, 0, 1, 1, NULL, 0, 1);                     /* overflow */
    imx_prom_record(t, IMX_PROM_OVERFLOW, 1, 1, NULL, 0, 1);     /* overflow */
    a = sum_of(&t, 1, 0);
    CHECK(imx_prom_acc_len(a) == 3, "3 series: %u", imx_prom_acc_len(a));
    s = imx_prom_acc_series(a, 0);
    CHECK(s && s->key == 3 && s->count == 1 && s->b[1] == 1 && s->sum_us == 50000
          && s->bytes == 1, "key 3 first");
    s = imx_prom_acc_series(a, 1);
    CHECK(s && s->key == 7 && s->count == 3 && s->b[0] == 2 && s->b[1] == 0 && s->b[2] == 0
          && s->b[3] == 1 && s->sum_us == 2015000 && s->bytes == 300, "key 7");
    s = imx_prom_acc_series(a, 2);
    CHECK(s && s->key == IMX_PROM_OVERFLOW && s->count == 2 && s->bytes == 2, "overflow last");
    CHECK(imx_prom_acc_series(a, 3) == NULL, "past the end");
    CHECK(imx_prom_acc_exemplar(a, imx_prom_acc_series(a, 0), 1) == NULL, "no exemplars");
    imx_prom_acc_free(a);
    free(t);
}

/* A full table: what finds no series goes to the overflow series, and the
 * sums over all series stay exact. */
static void test_full_table_overflow(void)
{
    imx_prom_buckets_t b;
    imx_prom_table_t *t;
    imx_prom_acc_t *a;
    uint64_t count = 0, sum = 0, bytes = 0, want_sum = 0;
    const imx_prom_series_t *ov;

    imx_prom_buckets_default(&b);
    t = new_table(4, &b, 0);
    for (uint64_t i = 0; i < 10000; i++) {
        imx_prom_record(t, 1 + i % 10, i, 3, NULL, 0, 0);
        want_sum += i;
    }
    a = sum_of(&t, 1, 0);
    CHECK(imx_prom_acc_len(a) == 5, "4 series and the overflow: %u", imx_prom_acc_len(a));
    for (uint32_t i = 0; i < imx_prom_acc_len(a); i++) {
        const imx_prom_series_t *s = imx_prom_acc_series(a, i);
        uint64_t c = 0;
        for (uint32_t k = 0; k <= b.n; k++) {
            c += s->b[k];
        }
        CHECK(c == s->count, "count is the buckets' sum");
        count += s->count;
        sum += s->sum_us;
        bytes += s->bytes;
    }
    ov = series_of(a, IMX_PROM_OVERFLOW);
    CHECK(ov && ov->count == 6000, "overflow %llu", ov ? (unsigned long long)ov->count : 0ULL);
    CHECK(count == 10000 && sum == want_sum && bytes == 30000, "exact: %llu %llu %llu",
          (unsigned long long)count, (unsigned long long)sum, (unsigned long long)bytes);
    imx_prom_acc_free(a);
    free(t);
}

/* A claimer that died: its slot stays BUSY, or its body was taken but its
 * key never published. Requests still count, under their key. */
static void test_dead_claimer(void)
{
    imx_prom_buckets_t b = layout("1");
    imx_prom_table_t *t = new_table(8, &b, 0);
    imx_prom_acc_t *a;
    uint32_t h = (uint32_t)((5 * 0x9E3779B97F4A7C15ull) >> t->shift);
    const imx_prom_series_t *s;

    atomic_store(&index_at(t)[h], 0xffffffffu);     /* died holding key 5's slot */
    atomic_store(&t->used, 1);                      /* and body 0, key unpublished */
    for (int i = 0; i < 10; i++) {
        imx_prom_record(t, 5, 10, 0, NULL, 0, 0);
    }
    imx_prom_record(t, 6, 10, 0, NULL, 0, 0);
    a = sum_of(&t, 1, 0);
    s = series_of(a, 5);
    CHECK(s && s->count == 10, "key 5 counted past the BUSY slot");
    CHECK(series_of(a, 6) && imx_prom_acc_len(a) == 2, "body 0 skipped: %u",
          imx_prom_acc_len(a));
    imx_prom_acc_free(a);
    /* The table fills up, and the claim that held key 5's home slot gives
     * it up (DEAD, as a claimer that found the table full leaves it): key
     * 5, claimed past it, is still found. */
    for (uint64_t k = 10; k < 20; k++) {
        imx_prom_record(t, k, 10, 0, NULL, 0, 0);
    }
    atomic_store(&index_at(t)[h], 0xfffffffeu);
    for (int i = 0; i < 10; i++) {
        imx_prom_record(t, 5, 10, 0, NULL, 0, 0);
    }
    a = sum_of(&t, 1, 0);
    s = series_of(a, 5);
    CHECK(s && s->count == 20, "key 5 found past a given-up slot: %llu",
          s ? (unsigned long long)s->count : 0ULL);
    CHECK(series_of(a, IMX_PROM_OVERFLOW) && series_of(a, IMX_PROM_OVERFLOW)->count == 5,
          "5 of the 10 keys found it full");
    imx_prom_acc_free(a);
    free(t);
}

static size_t resident_pages(void *p, size_t len)
{
    size_t n = (len + 4095) / 4096, r = 0;
    unsigned char *v = malloc(n);

    if (mincore(p, len, v) == 0) {
        for (size_t i = 0; i < n; i++) {
            r += v[i] & 1;
        }
    }
    free(v);
    return r;
}

/* Only the pages of series in use are backed: a table of 4096 series with
 * exemplars is 5.8 MB; 3 series in use back its head and a page or two. */
static void test_pages_follow_series(void)
{
    imx_prom_buckets_t b;
    uint32_t cap = 4096;
    size_t sz;
    imx_prom_table_t *t;
    imx_prom_acc_t *a;
    size_t head, rc, ovp;

    imx_prom_buckets_default(&b);
    sz = imx_prom_table_size(cap, b.n, 1);
    t = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(t != MAP_FAILED, "mmap");
    if (t == MAP_FAILED) {
        return;
    }
    imx_prom_init(t, cap, &b, 1);
    head = t->boff / 4096;
    ovp = (t->stride + 4095) / 4096 + 1;
    CHECK(resident_pages(t, sz) <= head + ovp, "init: %zu pages", resident_pages(t, sz));
    for (uint64_t k = 1; k <= 3; k++) {
        for (int i = 0; i < 1000; i++) {
            imx_prom_record(t, k * 7919, (uint64_t)i * 37, 10, "id", 2, i);
        }
    }
    a = sum_of(&t, 1, 1);
    CHECK(imx_prom_acc_len(a) == 3, "3 series");
    imx_prom_acc_free(a);
    rc = resident_pages(t, sz);
    CHECK(rc <= head + ovp + (3 * t->stride + 4095) / 4096 + 1,
          "%zu pages resident of %zu (head %zu)", rc, sz / 4096, head);
    munmap(t, sz);
}

/* Several tables (children) summed by key; the newest exemplar of each
 * bucket wins; a table of another layout is refused whole. */
static void test_merge(void)
{
    imx_prom_buckets_t b = layout("0.01 0.1"), other = layout("0.01 0.2");
    imx_prom_table_t *t[3], *odd = new_table(4, &other, 1), *noex = new_table(4, &b, 0);
    imx_prom_acc_t *a;
    const imx_prom_series_t *s;
    const imx_prom_exemplar_t *e;
    uint64_t total = 0;

    for (int i = 0; i < 3; i++) {
        t[i] = new_table(8, &b, 1);
        for (uint64_t k = 1; k <= 4; k++) {
            for (int r = 0; r <= i; r++) {
                char id[16];
                int n = snprintf(id, sizeof(id), "t%d-k%d", i, (int)k);
                /* Table 1 has the newest exemplar for key 1's bucket 0. */
                imx_prom_record(t[i], k, 5000, 1, id, (size_t)n, (i == 1 ? 3000 : 1000 + i) * MS);
            }
        }
        imx_prom_record(t[i], 9, 50000, 0, "mid", 3, 5);
    }
    imx_prom_record(odd, 1, 1, 1, "x", 1, 99999);
    imx_prom_record(noex, 1, 5000, 1, "late", 4, 99999);
    a = sum_of(t, 3, 1);
    CHECK(imx_prom_acc_add(a, odd) == IMX_PROM_ELAYOUT, "other layout refused");
    CHECK(imx_prom_acc_add(a, noex) == 0, "a table without exemplars adds its counts");
    CHECK(imx_prom_acc_len(a) == 5, "5 series: %u", imx_prom_acc_len(a));
    for (uint32_t i = 0; i < imx_prom_acc_len(a); i++) {
        s = imx_prom_acc_series(a, i);
        total += s->count;
        CHECK(i == 0 || s->key > imx_prom_acc_series(a, i - 1)->key, "ascending keys");
    }
    CHECK(total == 4 * 6 + 3 + 1, "total %llu", (unsigned long long)total);
    s = series_of(a, 1);
    CHECK(s && s->count == 7 && s->bytes == 7, "key 1 over 4 tables");
    e = s ? imx_prom_acc_exemplar(a, s, 0) : NULL;
    CHECK(e && e->len == 5 && !memcmp(e->id, "t1-k1", 5) && e->ns == 3000 * MS && e->us == 5000,
          "newest exemplar: %.*s", e ? (int)e->len : 0, e ? e->id : "");
    CHECK(s && !imx_prom_acc_exemplar(a, s, 1) && !imx_prom_acc_exemplar(a, s, 2)
          && !imx_prom_acc_exemplar(a, s, 3), "only bucket 0 has one");
    s = series_of(a, 9);
    e = s ? imx_prom_acc_exemplar(a, s, 1) : NULL;
    CHECK(e && e->len == 3 && e->us == 50000, "exemplar of bucket 1");
    /* Without exemplars in the accumulator, none comes out. */
    imx_prom_acc_free(a);
    a = sum_of(t, 3, 0);
    CHECK(!imx_prom_acc_exemplar(a, series_of(a, 1), 0), "acc without exemplars");
    imx_prom_acc_free(a);
    for (int i = 0; i < 3; i++) {
        free(t[i]);
    }
    free(odd);
    free(noex);
}

/* The exemplar: latest wins, long ids are cut, one being written is
 * skipped by a writer (counted all the same) and by a reader. */
static void test_exemplars(void)
{
    imx_prom_buckets_t b = layout("0.01");
    imx_prom_table_t *t = new_table(4, &b, 1);
    imx_prom_acc_t *a;
    const imx_prom_exemplar_t *e;
    char longid[80];
    _Atomic uint32_t *seq;

    memset(longid, 'L', sizeof(longid));
    imx_prom_record(t, 1, 10, 0, "first", 5, 10 * MS);
    imx_prom_record(t, 1, 20, 0, "second", 6, 20 * MS);
    imx_prom_record(t, 1, 30, 0, NULL, 0, 30 * MS);              /* no id: kept */
    imx_prom_record(t, 1, 25, 0, "soon", 4, 20 * MS + MS / 2);   /* held */
    imx_prom_record(t, 1, 20000, 0, longid, sizeof(longid), 40 * MS);
    a = sum_of(&t, 1, 1);
    e = imx_prom_acc_exemplar(a, series_of(a, 1), 0);
    CHECK(e && e->len == 6 && !memcmp(e->id, "second", 6) && e->us == 20 && e->ns == 20 * MS,
          "latest with an id, a millisecond apart");
    e = imx_prom_acc_exemplar(a, series_of(a, 1), 1);
    CHECK(e && e->len == IMX_PROM_ID_MAX && e->id[63] == 'L', "cut to 64");
    imx_prom_acc_free(a);

    /* Held by another request (odd): the writer skips it, counts still. */
    seq = ex_seq_at(t, 0, 0);
    atomic_fetch_add(seq, 1);
    imx_prom_record(t, 1, 15, 0, "skipped", 7, 50 * MS);
    a = sum_of(&t, 1, 1);
    CHECK(series_of(a, 1)->count == 6, "counted while the exemplar was busy");
    CHECK(!imx_prom_acc_exemplar(a, series_of(a, 1), 0), "reader skips a busy exemplar");
    CHECK(imx_prom_acc_exemplar(a, series_of(a, 1), 1), "others still read");
    imx_prom_acc_free(a);
    atomic_fetch_add(seq, 1);
    a = sum_of(&t, 1, 1);
    e = imx_prom_acc_exemplar(a, series_of(a, 1), 0);
    CHECK(e && e->len == 6 && !memcmp(e->id, "second", 6), "released: the old one stays");
    imx_prom_acc_free(a);
    /* The sequence never comes back to 0 ("never written") when it wraps. */
    atomic_store(seq, 0xfffffffeu);
    imx_prom_record(t, 1, 15, 0, "wrap", 4, 60 * MS);
    CHECK(atomic_load(seq) == 2, "wrapped to %u", atomic_load(seq));
    a = sum_of(&t, 1, 1);
    e = imx_prom_acc_exemplar(a, series_of(a, 1), 0);
    CHECK(e && e->len == 4 && !memcmp(e->id, "wrap", 4), "after the wrap");
    imx_prom_acc_free(a);
    /* A clock set back: the earlier time is written, not held forever. */
    imx_prom_record(t, 1, 15, 0, "back", 4, 5 * MS);
    a = sum_of(&t, 1, 1);
    e = imx_prom_acc_exemplar(a, series_of(a, 1), 0);
    CHECK(e && e->len == 4 && !memcmp(e->id, "back", 4) && e->ns == 5 * MS, "clock back");
    imx_prom_acc_free(a);
    /* Ids of every length up to the most, and beyond: whole, nothing more. */
    for (size_t len = 1; len <= sizeof(longid); len++) {
        char id[80];
        for (size_t i = 0; i < len; i++) {
            id[i] = (char)('!' + (i * 7 + len) % 90);
        }
        imx_prom_record(t, 2, 15, 0, id, len, (int64_t)(100 + len) * MS);
        a = sum_of(&t, 1, 1);
        e = imx_prom_acc_exemplar(a, series_of(a, 2), 0);
        CHECK(e && e->len == (len < 64 ? len : 64) && !memcmp(e->id, id, e->len),
              "id of %zu bytes", len);
        imx_prom_acc_free(a);
    }
    free(t);
}

/* Tables in shared memory written by threads of several processes, read
 * while they run: every read at least the one before, the end exact. */
static void test_processes(void)
{
    imx_prom_buckets_t b;
    uint32_t cap = 16;
    size_t sz;
    imx_prom_table_t *t[2];
    char *mem;
    pid_t pid[3];
    uint64_t last = 0;
    int status, ok = 1, reads = 0;

    imx_prom_buckets_default(&b);
    sz = (imx_prom_table_size(cap, b.n, 1) + 4095) & ~(size_t)4095;
    mem = mmap(NULL, 2 * sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(mem != MAP_FAILED, "mmap");
    if (mem == MAP_FAILED) {
        return;
    }
    t[0] = (imx_prom_table_t *)mem;
    t[1] = (imx_prom_table_t *)(mem + sz);
    imx_prom_init(t[0], cap, &b, 1);
    imx_prom_init(t[1], cap, &b, 1);
    for (int p = 0; p < 3; p++) {
        if ((pid[p] = fork()) == 0) {
            /* Two children share table 0 (a slot taken over), one has 1. */
            imx_prom_table_t *mine = t[p == 2];
            for (uint64_t i = 0; i < 200000; i++) {
                imx_prom_record(mine, 1 + i % 20, i % 20000, 1, "rid", 3, (int64_t)i * 50000);
            }
            _exit(0);
        }
    }
    for (int reaped = 0; reaped < 3;) {
        imx_prom_acc_t *a;
        uint64_t c = 0;

        while (waitpid(-1, &status, WNOHANG) > 0) {
            reaped++;
        }
        a = sum_of(t, 2, 1);
        for (uint32_t i = 0; i < imx_prom_acc_len(a); i++) {
            c += imx_prom_acc_series(a, i)->count;
        }
        imx_prom_acc_free(a);
        ok &= c >= last;
        last = c;
        reads++;
    }
    {
        imx_prom_acc_t *a = sum_of(t, 2, 1);
        uint64_t c = 0, bytes = 0;
        for (uint32_t i = 0; i < imx_prom_acc_len(a); i++) {
            c += imx_prom_acc_series(a, i)->count;
            bytes += imx_prom_acc_series(a, i)->bytes;
        }
        CHECK(ok, "a read went back");
        CHECK(c == 600000 && bytes == 600000, "3 processes: %llu counted", (unsigned long long)c);
        CHECK(series_of(a, IMX_PROM_OVERFLOW)->count >= 3 * 200000 / 20 * 4,
              "4 of 20 keys found the tables full");
        imx_prom_acc_free(a);
    }
    printf("processes: %d reads while 3 processes wrote\n", reads);
    munmap(mem, 2 * sz);
}

/* ------------------------------------------------------------------------- */
/* Exposition                                                                */

static void small_scrape(imx_prom_out_t *o, imx_prom_fmt_t fmt)
{
    imx_prom_buckets_t b = layout("0.005 0.5 1");
    imx_prom_table_t *t = new_table(4, &b, 1);
    imx_prom_acc_t *a;
    imx_prom_sample_t workers[2] = { { "state=\"busy\"", 3 }, { "state=\"idle\"", 7 } };
    imx_prom_sample_t recorded = { NULL, 123 };

    imx_prom_record(t, 1, 5000, 100, "abc", 3, 1700000000123456789LL);
    imx_prom_record(t, 1, 250000, 50, NULL, 0, 0);
    imx_prom_record(t, 1, 3000000, 0, "slow\"one", 8, 1700000001000000000LL);
    imx_prom_record(t, IMX_PROM_OVERFLOW, 1, 1, NULL, 0, 0);
    imx_prom_record(t, 99, 1, 1, NULL, 0, 0);       /* labels: NULL, left out */
    a = sum_of(&t, 1, 1);
    imx_prom_write_duration(o, fmt, a, test_labels, NULL);
    imx_prom_write_bytes(o, fmt, a, test_labels, NULL);
    imx_prom_write_gauge(o, fmt, "apache_workers", "Workers by state.", NULL, workers, 2);
    imx_prom_write_counter(o, fmt, "apache_influx_metrics_recorded_total",
                           "Requests recorded.", NULL, &recorded, 1);
    imx_prom_write_eof(o, fmt);
    imx_prom_acc_free(a);
    free(t);
}

static void test_exposition(void)
{
    static const char want_text[] =
        "# HELP apache_request_duration_seconds Time from the start of each request to its "
        "logging, after the response was sent.\n"
        "# TYPE apache_request_duration_seconds histogram\n"
        "apache_request_duration_seconds_bucket{route=\"r1\",le=\"0.005\"} 1\n"
        "apache_request_duration_seconds_bucket{route=\"r1\",le=\"0.5\"} 2\n"
        "apache_request_duration_seconds_bucket{route=\"r1\",le=\"1.0\"} 2\n"
        "apache_request_duration_seconds_bucket{route=\"r1\",le=\"+Inf\"} 3\n"
        "apache_request_duration_seconds_count{route=\"r1\"} 3\n"
        "apache_request_duration_seconds_sum{route=\"r1\"} 3.255\n"
        "apache_request_duration_seconds_bucket{route=\"other\",le=\"0.005\"} 1\n"
        "apache_request_duration_seconds_bucket{route=\"other\",le=\"0.5\"} 1\n"
        "apache_request_duration_seconds_bucket{route=\"other\",le=\"1.0\"} 1\n"
        "apache_request_duration_seconds_bucket{route=\"other\",le=\"+Inf\"} 1\n"
        "apache_request_duration_seconds_count{route=\"other\"} 1\n"
        "apache_request_duration_seconds_sum{route=\"other\"} 0.000001\n"
        "# HELP apache_response_bytes_total Response body bytes sent (as %B in "
        "mod_log_config).\n"
        "# TYPE apache_response_bytes_total counter\n"
        "apache_response_bytes_total{route=\"r1\"} 150\n"
        "apache_response_bytes_total{route=\"other\"} 1\n"
        "# HELP apache_workers Workers by state.\n"
        "# TYPE apache_workers gauge\n"
        "apache_workers{state=\"busy\"} 3\n"
        "apache_workers{state=\"idle\"} 7\n"
        "# HELP apache_influx_metrics_recorded_total Requests recorded.\n"
        "# TYPE apache_influx_metrics_recorded_total counter\n"
        "apache_influx_metrics_recorded_total 123\n";
    static const char want_om[] =
        "# TYPE apache_request_duration_seconds histogram\n"
        "# UNIT apache_request_duration_seconds seconds\n"
        "# HELP apache_request_duration_seconds Time from the start of each request to its "
        "logging, after the response was sent.\n"
        "apache_request_duration_seconds_bucket{route=\"r1\",le=\"0.005\"} 1"
        " # {request_id=\"abc\"} 0.005 1700000000.123456789\n"
        "apache_request_duration_seconds_bucket{route=\"r1\",le=\"0.5\"} 2\n"
        "apache_request_duration_seconds_bucket{route=\"r1\",le=\"1.0\"} 2\n"
        "apache_request_duration_seconds_bucket{route=\"r1\",le=\"+Inf\"} 3"
        " # {request_id=\"slow\\\"one\"} 3.0 1700000001.0\n"
        "apache_request_duration_seconds_count{route=\"r1\"} 3\n"
        "apache_request_duration_seconds_sum{route=\"r1\"} 3.255\n"
        "apache_request_duration_seconds_bucket{route=\"other\",le=\"0.005\"} 1\n"
        "apache_request_duration_seconds_bucket{route=\"other\",le=\"0.5\"} 1\n"
        "apache_request_duration_seconds_bucket{route=\"other\",le=\"1.0\"} 1\n"
        "apache_request_duration_seconds_bucket{route=\"other\",le=\"+Inf\"} 1\n"
        "apache_request_duration_seconds_count{route=\"other\"} 1\n"
        "apache_request_duration_seconds_sum{route=\"other\"} 0.000001\n"
        "# TYPE apache_response_bytes counter\n"
        "# UNIT apache_response_bytes bytes\n"
        "# HELP apache_response_bytes Response body bytes sent (as %B in mod_log_config).\n"
        "apache_response_bytes_total{route=\"r1\"} 150\n"
        "apache_response_bytes_total{route=\"other\"} 1\n"
        "# TYPE apache_workers gauge\n"
        "# HELP apache_workers Workers by state.\n"
        "apache_workers{state=\"busy\"} 3\n"
        "apache_workers{state=\"idle\"} 7\n"
        "# TYPE apache_influx_metrics_recorded counter\n"
        "# HELP apache_influx_metrics_recorded Requests recorded.\n"
        "apache_influx_metrics_recorded_total 123\n"
        "# EOF\n";
    imx_prom_out_t o = { 0 };

    small_scrape(&o, IMX_PROM_TEXT);
    CHECK(!o.failed && o.len == strlen(want_text) && !memcmp(o.buf, want_text, o.len),
          "0.0.4:\n%.*s", (int)o.len, o.buf);
    imx_prom_out_free(&o);
    small_scrape(&o, IMX_PROM_OPENMETRICS);
    CHECK(!o.failed && o.len == strlen(want_om) && !memcmp(o.buf, want_om, o.len),
          "OpenMetrics:\n%.*s", (int)o.len, o.buf);
    imx_prom_out_free(&o);
}

/* Metadata edge cases: help escaping per format, a counter given with or
 * without _total, a unit that is not the name's suffix, no labels. */
static void test_families(void)
{
    imx_prom_out_t o = { 0 };
    imx_prom_sample_t s = { "", 5 };

    imx_prom_write_counter(&o, IMX_PROM_OPENMETRICS, "x_sent_bytes", "a\\b \"q\"\nc", "bytes",
                           &s, 1);
    imx_prom_write_gauge(&o, IMX_PROM_OPENMETRICS, "x_depth", "", "seconds", &s, 1);
    CHECK(o.len && !strncmp(o.buf,
                            "# TYPE x_sent_bytes counter\n"
                            "# UNIT x_sent_bytes bytes\n"
                            "# HELP x_sent_bytes a\\\\b \\\"q\\\"\\nc\n"
                            "x_sent_bytes_total 5\n"
                            "# TYPE x_depth gauge\n"
                            "x_depth 5\n", o.len), "OpenMetrics:\n%.*s", (int)o.len, o.buf);
    imx_prom_out_free(&o);
    imx_prom_write_counter(&o, IMX_PROM_TEXT, "x_sent_bytes", "a\\b \"q\"\nc", "bytes", &s, 1);
    imx_prom_write_counter(&o, IMX_PROM_TEXT, "y_total", NULL, NULL, &s, 1);
    CHECK(o.len && !strncmp(o.buf,
                            "# HELP x_sent_bytes_total a\\\\b \"q\"\\nc\n"
                            "# TYPE x_sent_bytes_total counter\n"
                            "x_sent_bytes_total 5\n"
                            "# TYPE y_total counter\n"
                            "y_total 5\n", o.len), "0.0.4:\n%.*s", (int)o.len, o.buf);
    imx_prom_out_free(&o);
    /* An empty accumulator: the metadata, no samples. */
    {
        imx_prom_buckets_t b = layout("1");
        imx_prom_acc_t *a = imx_prom_acc_new(&b, 0);
        imx_prom_write_duration(&o, IMX_PROM_TEXT, a, test_labels, NULL);
        CHECK(o.len && !strstr(o.buf, "_bucket") && strstr(o.buf, "# TYPE"), "empty");
        imx_prom_acc_free(a);
        imx_prom_out_free(&o);
    }
    /* Labels "" on a histogram: {le=".."} alone, and no braces elsewhere. */
    {
        imx_prom_buckets_t b = layout("1");
        imx_prom_table_t *t = new_table(2, &b, 0);
        imx_prom_acc_t *a;
        imx_prom_record(t, 1, 1, 1, NULL, 0, 0);
        a = sum_of(&t, 1, 0);
        imx_prom_write_duration(&o, IMX_PROM_TEXT, a, no_labels, NULL);
        CHECK(o.len && strstr(o.buf,
                              "\napache_request_duration_seconds_bucket{le=\"1.0\"} 1\n"
                              "apache_request_duration_seconds_bucket{le=\"+Inf\"} 1\n"
                              "apache_request_duration_seconds_count 1\n"
                              "apache_request_duration_seconds_sum 0.000001\n"),
              "no labels:\n%.*s", (int)o.len, o.buf);
        imx_prom_acc_free(a);
        free(t);
        imx_prom_out_free(&o);
    }
}

/* ------------------------------------------------------------------------- */
/* Labels                                                                    */

static void test_escape_and_names(void)
{
    static const struct {
        const char *in, *out;
    } esc[] = {
        { "plain", "plain" }, { "a\"b", "a\\\"b" }, { "a\\b", "a\\\\b" }, { "a\nb", "a\\nb" },
        { "tab\tcr\r\x01\x7f", "tab\tcr???" },
        { "caf\xc3\xa9 \xe2\x82\xac", "caf\xc3\xa9 \xe2\x82\xac" },
        { "bad\xff\xc3", "bad??" }, { "\xed\xa0\x80", "???" }, { "", "" },
    }, names[] = {
        { "vhost", "vhost" }, { "a-b.c", "a_b_c" }, { "9lives", "_9lives" }, { "", "_" },
        { "_ok_1", "_ok_1" }, { "caf\xc3\xa9", "caf_" }, { "a\xff" "b", "a_b" },
        { "a b=c", "a_b_c" },
    };
    char out[64];

    for (size_t i = 0; i < sizeof(esc) / sizeof(esc[0]); i++) {
        size_t n = imx_prom_escape_value(out, sizeof(out), esc[i].in, strlen(esc[i].in));
        CHECK(n == strlen(esc[i].out) && !strcmp(out, esc[i].out), "escape %s: %s", esc[i].in, out);
    }
    CHECK(imx_prom_escape_value(out, sizeof(out), "nul\0in", 6) == 6 && !strcmp(out, "nul?in"),
          "NUL: %s", out);
    CHECK(imx_prom_escape_value(out, 4, "a\"b", 3) == (size_t)-1, "too small");
    CHECK(imx_prom_escape_value(out, 5, "a\"b", 3) == 4, "just enough");
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        size_t n = imx_prom_label_name(out, sizeof(out), names[i].in, strlen(names[i].in));
        CHECK(n == strlen(names[i].out) && !strcmp(out, names[i].out), "name %s: %s",
              names[i].in, out);
    }
    CHECK(imx_prom_label_name(out, 3, "abc", 3) == (size_t)-1, "name too small");
}

static void test_lp_labels(void)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        { ",vhost=www.example.com,team=a\\ b,dc=eu\\,west",
          "vhost=\"www.example.com\",team=\"a b\",dc=\"eu,west\"" },
        { "vhost=a", "vhost=\"a\"" },
        { "", "" },
        { ",", "" },
        { ",k=a\\=b", "k=\"a=b\"" },
        { ",we\\ ird\\=key=v", "we_ird_key=\"v\"" },
        { ",q=say \"hi\"", "q=\"say \\\"hi\\\"\"" },
        /* InfluxDB 1.x keeps a backslash before anything but , space = */
        { ",p=C:\\dir", "p=\"C:\\\\dir\"" },
        { ",p=a\\\\\\,b", "p=\"a\\\\\\\\,b\"" },
        { ",n=line\\nbreak", "n=\"line\\\\nbreak\"" },
        { ",u=caf\xc3\xa9,\xc3\xa9t\xc3\xa9=1", "u=\"caf\xc3\xa9\",_t_=\"1\"" },
        { ",bad=\xff", "bad=\"?\"" },
        { ",le=5,x=1", "exported_le=\"5\",x=\"1\"" },
        { ",a=1,a=2,b=3", "a=\"1\",b=\"3\"" },
        { ",a-b=1,a_b=2", "a_b=\"1\"" },
        { ",noequals,k=v", "k=\"v\"" },
        { ",k=,1=x", "k=\"\",_1=\"x\"" },
        { ",=v", "_=\"v\"" },
        { ",a=x\\,y=z,b=2", "a=\"x,y=z\",b=\"2\"" },
    };
    char out[256];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = imx_prom_lp_labels(out, sizeof(out), cases[i].in, strlen(cases[i].in));
        CHECK(n == strlen(cases[i].out) && !strcmp(out, cases[i].out), "%s: %s (want %s)",
              cases[i].in, n == (size_t)-1 ? "(too small)" : out, cases[i].out);
    }
    CHECK(imx_prom_lp_labels(out, 8, ",vhost=www.example.com", 22) == (size_t)-1, "too small");
    {
        apr_pool_t *p;
        apr_pool_create(&p, NULL);
        CHECK(!strcmp(imx_prom_plp_labels(p, ",a=b\\ c"), "a=\"b c\""), "pool");
        apr_pool_destroy(p);
    }
}

/* What imx_lineproto.c escapes comes back as it was (for values without the
 * backslash runs and control bytes it cannot keep), and any input at all
 * fits IMX_PROM_LABELS_MAX and gives well-formed, duplicate-free pairs. */
static int well_formed(const char *s, size_t n)
{
    size_t i = 0, names = 0;
    char seen[64][64];

    while (i < n) {
        size_t st = i, len;
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || s[i] == '_')) {
            return 0;
        }
        while (i < n && s[i] != '=') {
            if (!(s[i] == '_' || (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z')
                  || (s[i] >= '0' && s[i] <= '9'))) {
                return 0;
            }
            i++;
        }
        len = i - st;
        for (size_t k = 0; k < names && len < 64; k++) {
            if (strlen(seen[k]) == len && !memcmp(seen[k], s + st, len)) {
                return 0;
            }
        }
        if (names < 64 && len < 64) {
            memcpy(seen[names], s + st, len);
            seen[names++][len] = '\0';
        }
        if (i + 1 >= n || s[i + 1] != '"') {
            return 0;
        }
        for (i += 2; i < n && s[i] != '"'; i++) {
            if (s[i] == '\n') {
                return 0;
            }
            if (s[i] == '\\') {
                if (i + 1 >= n || (s[i + 1] != '\\' && s[i + 1] != '"' && s[i + 1] != 'n')) {
                    return 0;
                }
                i++;
            }
            else if ((unsigned char)s[i] >= 0x80) {
                size_t u = imx_utf8_len((const unsigned char *)s + i, n - i);
                if (!u) {
                    return 0;
                }
                i += u - 1;
            }
        }
        if (i >= n) {
            return 0;
        }
        i++;
        if (i < n && s[i++] != ',') {
            return 0;
        }
    }
    return 1;
}

static void test_lp_labels_random(void)
{
    static const char alpha[] = { ',', ' ', '=', '\\', '"', 'a', 'l', 'e', '1', '\n', (char)0xc3,
                                  (char)0xa9, 'k' };
    static const char safe[] = { ' ', ',', '=', '"', 'a', 'Z', '0', (char)0xc3, (char)0xa9 };
    uint64_t seed = 7;
    int bad = 0, lost = 0;

    for (int r = 0; r < 20000; r++) {
        char in[64], *out;
        size_t len, cap, n;

        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        len = (seed >> 33) % sizeof(in);
        for (size_t i = 0; i < len; i++) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            in[i] = alpha[(seed >> 33) % sizeof(alpha)];
        }
        cap = IMX_PROM_LABELS_MAX(len);
        out = malloc(cap);
        n = imx_prom_lp_labels(out, cap, in, len);
        if (n == (size_t)-1 || n >= cap || out[n] || !well_formed(out, n)) {
            if (bad++ < 5) {
                fprintf(stderr, "input %.*s -> %s\n", (int)len, in,
                        n == (size_t)-1 ? "(too small)" : out);
            }
        }
        free(out);
    }
    CHECK(!bad, "%d random inputs gave bad pairs", bad);
    /* Round trip through the line-protocol escaper. */
    for (int r = 0; r < 20000; r++) {
        char v[40], esc[100], lp[120], out[400], want[100];
        size_t len, el, n;

        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        len = 1 + (seed >> 33) % (sizeof(v) - 1);
        for (size_t i = 0; i < len; i++) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            v[i] = safe[(seed >> 33) % sizeof(safe)];
        }
        /* Only whole UTF-8 characters: a lone byte would become '?'. */
        for (size_t i = 0; i < len; i++) {
            if ((unsigned char)v[i] >= 0x80) {
                v[i] = (char)0xc3;
                if (i + 1 < len) {
                    v[++i] = (char)0xa9;
                }
                else {
                    v[i] = 'x';
                }
            }
        }
        el = imx_escape(esc, sizeof(esc), v, len, IMX_ESC_TAG);
        snprintf(lp, sizeof(lp), ",tag=%s", esc);
        n = imx_prom_lp_labels(out, sizeof(out), lp, strlen(lp));
        imx_prom_escape_value(want, sizeof(want), v, len);
        if (el == (size_t)-1 || n != 6 + strlen(want) || strncmp(out, "tag=\"", 5)
            || strncmp(out + 5, want, strlen(want))) {
            if (lost++ < 5) {
                fprintf(stderr, "value %.*s -> %s -> %s\n", (int)len, v, esc, out);
            }
        }
    }
    CHECK(!lost, "%d values did not come back", lost);
}

/* ------------------------------------------------------------------------- */
/* Negotiation                                                               */

static void test_negotiate(void)
{
    static const struct {
        const char *accept;
        imx_prom_fmt_t want;
    } cases[] = {
        { NULL, IMX_PROM_TEXT },
        { "", IMX_PROM_TEXT },
        { "*/*", IMX_PROM_TEXT },
        { "text/plain", IMX_PROM_TEXT },
        { "application/*", IMX_PROM_TEXT },
        /* Prometheus 2.x's own */
        { "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
          "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1", IMX_PROM_OPENMETRICS },
        { "application/openmetrics-text", IMX_PROM_OPENMETRICS },
        { "Application/OpenMetrics-Text ; Q=0.5", IMX_PROM_OPENMETRICS },
        { "application/openmetrics-text;q=0", IMX_PROM_TEXT },
        { "application/openmetrics-text; q=0.000, text/plain", IMX_PROM_TEXT },
        { "application/openmetrics-text;q=0.001", IMX_PROM_OPENMETRICS },
        { "text/plain;q=1, application/openmetrics-text;q=0.5", IMX_PROM_TEXT },
        { "text/plain;q=0.5,application/openmetrics-text;q=0.5", IMX_PROM_OPENMETRICS },
        { "text/plain;version=0.0.4;q=0.3, application/openmetrics-text;version=1.0.0;q=0.8",
          IMX_PROM_OPENMETRICS },
        { "application/openmetrics-text;version=\"1.0.0;q=0, x\",text/plain;q=0.9",
          IMX_PROM_OPENMETRICS },
        { "application/openmetrics-textx", IMX_PROM_TEXT },
        { "xapplication/openmetrics-text", IMX_PROM_TEXT },
        { "application/openmetrics-text;q=abc", IMX_PROM_TEXT },
        { "application/openmetrics-text;q=1.5", IMX_PROM_TEXT },
        { "application/openmetrics-text;q=0.0001", IMX_PROM_TEXT },
        { " , ,application/openmetrics-text", IMX_PROM_OPENMETRICS },
        { "application/json, application/openmetrics-text;q=0.2", IMX_PROM_OPENMETRICS },
        { ";;;,,=", IMX_PROM_TEXT },
        { "application/openmetrics-text;q", IMX_PROM_TEXT },
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        CHECK(imx_prom_negotiate(cases[i].accept) == cases[i].want, "Accept: %s",
              cases[i].accept ? cases[i].accept : "(none)");
    }
    CHECK(!strcmp(imx_prom_content_type(IMX_PROM_OPENMETRICS),
                  "application/openmetrics-text; version=1.0.0; charset=utf-8")
          && !strcmp(imx_prom_content_type(IMX_PROM_TEXT),
                     "text/plain; version=0.0.4; charset=utf-8"), "content types");
}

/* ------------------------------------------------------------------------- */
/* Concurrency                                                               */

#define STRESS_TABLES 4
#define STRESS_KEYS 40

typedef struct {
    imx_prom_table_t **t;
    unsigned id;
    double seconds;
    _Atomic int *stop;
    uint64_t n, sum_us, bytes;  /* what this producer recorded */
} producer_t;

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *producer_main(void *arg)
{
    producer_t *p = arg;
    double end = now_s() + p->seconds;
    uint64_t x = p->id * 2654435761u + 1;

    while (!atomic_load_explicit(p->stop, memory_order_relaxed)) {
        for (int i = 0; i < 256; i++) {
            char rid[24];
            uint64_t us, key;
            int n;

            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            key = 1 + (x >> 33) % STRESS_KEYS;
            us = (x >> 17) % 12000000;
            n = snprintf(rid, sizeof(rid), "p%u-%llu", p->id, (unsigned long long)us);
            imx_prom_record(p->t[(p->id + (x >> 60)) % STRESS_TABLES], key, us, us & 1023,
                            (x >> 40) & 1 ? rid : NULL, (size_t)n, (int64_t)p->n * 100000);
            p->n++;
            p->sum_us += us;
            p->bytes += us & 1023;
        }
        if (now_s() >= end) {
            break;
        }
    }
    return NULL;
}

typedef struct {
    imx_prom_table_t **t;
    _Atomic int *producers_done;
    int reads, bad_monotonic, bad_exemplar, bad_count;
} reader_t;

static void *reader_main(void *arg)
{
    reader_t *r = arg;
    uint64_t last[STRESS_KEYS + 2][IMX_PROM_BUCKETS_MAX + 1] = { { 0 } };
    uint64_t last_total = 0;
    int done;

    do {
        imx_prom_acc_t *a;
        uint64_t total = 0;

        done = atomic_load(r->producers_done);
        a = sum_of(r->t, STRESS_TABLES, 1);
        for (uint32_t i = 0; i < imx_prom_acc_len(a); i++) {
            const imx_prom_series_t *s = imx_prom_acc_series(a, i);
            const imx_prom_buckets_t *b = imx_prom_acc_buckets(a);
            unsigned slot = s->key == IMX_PROM_OVERFLOW ? STRESS_KEYS + 1 : (unsigned)s->key;
            uint64_t cum = 0;

            if (slot > STRESS_KEYS + 1) {
                r->bad_count++;
                continue;
            }
            for (uint32_t k = 0; k <= b->n; k++) {
                const imx_prom_exemplar_t *e = imx_prom_acc_exemplar(a, s, k);

                cum += s->b[k];
                /* Cumulative counts, as a scraper sees them, never go back. */
                r->bad_monotonic += cum < last[slot][k];
                last[slot][k] = cum;
                if (e) {
                    unsigned long long v;
                    unsigned id;
                    char id_text[IMX_PROM_ID_MAX + 1];
                    memcpy(id_text, e->id, e->len);
                    id_text[e->len] = '\0';
                    /* Whole (not torn), and in its bucket. */
                    r->bad_exemplar += sscanf(id_text, "p%u-%llu", &id, &v) != 2 || v != e->us
                                       || (k < b->n && e->us > b->le_us[k])
                                       || (k > 0 && e->us <= b->le_us[k - 1]);
                }
            }
            r->bad_count += cum != s->count;
            total += s->count;
        }
        r->bad_monotonic += total < last_total;
        last_total = total;
        imx_prom_acc_free(a);
        r->reads++;
    } while (!done);
    return NULL;
}

static void stress(unsigned nthreads, double seconds)
{
    imx_prom_buckets_t b;
    imx_prom_table_t *t[STRESS_TABLES];
    producer_t p[16];
    pthread_t th[16], rth;
    _Atomic int stop = 0, done = 0;
    reader_t r = { t, &done, 0, 0, 0, 0 };
    uint64_t n = 0, sum = 0, bytes = 0, cn = 0, csum = 0, cbytes = 0;
    imx_prom_acc_t *a;

    imx_prom_buckets_default(&b);
    for (int i = 0; i < STRESS_TABLES; i++) {
        /* Small enough that some requests overflow. */
        t[i] = new_table(i == 0 ? 8 : 64, &b, 1);
    }
    pthread_create(&rth, NULL, reader_main, &r);
    for (unsigned i = 0; i < nthreads; i++) {
        p[i] = (producer_t){ t, i, seconds, &stop, 0, 0, 0 };
        pthread_create(&th[i], NULL, producer_main, &p[i]);
    }
    for (unsigned i = 0; i < nthreads; i++) {
        pthread_join(th[i], NULL);
        n += p[i].n;
        sum += p[i].sum_us;
        bytes += p[i].bytes;
    }
    atomic_store(&done, 1);
    pthread_join(rth, NULL);
    a = sum_of(t, STRESS_TABLES, 1);
    for (uint32_t i = 0; i < imx_prom_acc_len(a); i++) {
        const imx_prom_series_t *s = imx_prom_acc_series(a, i);
        cn += s->count;
        csum += s->sum_us;
        cbytes += s->bytes;
    }
    CHECK(cn == n && csum == sum && cbytes == bytes, "exact: counted %llu of %llu",
          (unsigned long long)cn, (unsigned long long)n);
    CHECK(series_of(a, IMX_PROM_OVERFLOW) != NULL, "the small table overflowed");
    CHECK(!r.bad_monotonic, "%d counts went back", r.bad_monotonic);
    CHECK(!r.bad_exemplar, "%d exemplars torn or out of their bucket", r.bad_exemplar);
    CHECK(!r.bad_count, "%d counts not the buckets' sum", r.bad_count);
    CHECK(r.reads > 1, "reads %d", r.reads);
    printf("stress %u threads, %.1f s: %llu records, %d reads\n", nthreads, seconds,
           (unsigned long long)n, r.reads);
    imx_prom_acc_free(a);
    for (int i = 0; i < STRESS_TABLES; i++) {
        free(t[i]);
    }
}

/* ------------------------------------------------------------------------- */
/* Modes for other tools                                                     */

/* A scrape like the glue's: labels from line-protocol tag texts. */
static const char *sample_labels(void *ctx, uint64_t key)
{
    static const char *const lp[] = {
        ",vhost=www.example.com,route=checkout,method=GET,status=200,team=a\\ b,dc=eu\\,west",
        ",vhost=www.example.com,route=api,method=POST,status=500,q=say\\ \"hi\"\\ C:\\dir",
        ",vhost=www.example.com,route=checkout,method=HEAD,status=304,le=1",
        ",vhost=caf\xc3\xa9.example,route=other,method=OTHER,status=0",
    };
    static char out[512];
    const char *tags = lp[key == IMX_PROM_OVERFLOW ? 3 : (key - 1) % 3];

    (void)ctx;
    imx_prom_lp_labels(out, sizeof(out), tags, strlen(tags));
    return out;
}

static int sample(imx_prom_fmt_t fmt)
{
    imx_prom_buckets_t b;
    imx_prom_table_t *t[2];
    imx_prom_acc_t *a;
    imx_prom_out_t o = { 0 };
    imx_prom_sample_t workers[2] = { { "state=\"busy\"", 3 }, { "state=\"idle\"", 22 } };
    imx_prom_sample_t recorded = { NULL, 123 };

    imx_prom_buckets_default(&b);
    for (int i = 0; i < 2; i++) {
        t[i] = new_table(3, &b, 1);
        for (uint64_t r = 0; r < 200; r++) {
            char id[32];
            int n = snprintf(id, sizeof(id), "req-%d-%llu", i, (unsigned long long)r);
            imx_prom_record(t[i], 1 + r % 4, r * r * 997 % 15000000, r * 13, id, (size_t)n,
                            1700000000000000000LL + (int64_t)r * 1000000);
        }
    }
    a = sum_of(t, 2, 1);
    imx_prom_write_duration(&o, fmt, a, sample_labels, NULL);
    imx_prom_write_bytes(&o, fmt, a, sample_labels, NULL);
    imx_prom_write_gauge(&o, fmt, "apache_workers", "Workers by state.", NULL, workers, 2);
    imx_prom_write_counter(&o, fmt, "apache_influx_metrics_recorded_total",
                           "Requests recorded.", NULL, &recorded, 1);
    imx_prom_write_eof(&o, fmt);
    fwrite(o.buf, 1, o.len, stdout);
    imx_prom_out_free(&o);
    imx_prom_acc_free(a);
    free(t[0]);
    free(t[1]);
    return 0;
}

/* imx_prom_record n times, for callgrind (--toggle-collect=imx_prom_record):
 * 64 series claimed first, varied durations over all buckets. plain: no
 * id; ex: an id of 36 bytes every nanosecond (most exemplars held);
 * exall: every 2 ms (every one written); overflow: a full table. */
static int cost(const char *what, long n)
{
    imx_prom_buckets_t b;
    int ex = !strncmp(what, "ex", 2);
    int64_t step = !strcmp(what, "exall") ? 2 * MS : 1;
    imx_prom_table_t *t;
    uint64_t x = 1;

    imx_prom_buckets_default(&b);
    t = new_table(!strcmp(what, "overflow") ? 1 : 1024, &b, ex);
    for (uint64_t k = 1; k <= 64; k++) {
        imx_prom_record(t, k * 0x10001, 0, 0, NULL, 0, 0);
    }
    for (long i = 0; i < n; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        imx_prom_record(t, (2 + (x >> 58)) * 0x10001, (x >> 40) % 12000000, 1024,
                        ex ? "0123456789abcdef0123456789abcdef0123" : NULL, ex ? 36 : 0,
                        MS + (int64_t)i * step);
    }
    free(t);
    return 0;
}

int main(int argc, char **argv)
{
    int stress_only = argc > 1 && !strcmp(argv[1], "stress");

    if (argc > 1 && !strcmp(argv[1], "sample")) {
        return sample(argc > 2 && !strcmp(argv[2], "om") ? IMX_PROM_OPENMETRICS : IMX_PROM_TEXT);
    }
    if (argc > 3 && !strcmp(argv[1], "cost")) {
        return cost(argv[2], atol(argv[3]));
    }
    apr_initialize();
    if (!stress_only) {
        test_parse_good();
        test_parse_bad();
        test_format_le();
        test_bucket_choice();
        test_record_and_read();
        test_full_table_overflow();
        test_dead_claimer();
        test_pages_follow_series();
        test_merge();
        test_exemplars();
        test_processes();
        test_exposition();
        test_families();
        test_escape_and_names();
        test_lp_labels();
        test_lp_labels_random();
        test_negotiate();
    }
    stress(8, stress_only ? 3.0 : 1.0);
    stress(2, 0.5);
    apr_terminate();
    return check_report();
}
