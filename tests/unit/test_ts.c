/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * Unit tests of unique timestamps (imx_ts.c): points of one series never
 * share a timestamp, or InfluxDB would keep only one of them.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <apr_time.h>

#include "imx_ts.h"

#include "check.h"

typedef struct {
    imx_ts_table_t *t;
    apr_time_t start;
    int n;
    int64_t *out;
} ts_job_t;

static void *ts_main(void *arg)
{
    ts_job_t *j = arg;

    for (int i = 0; i < j->n; i++) {
        j->out[i] = imx_ts_unique(j->t, j->start + (i % 3));
    }
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* As an encoder takes them: through a block of its own, the points of a
 * few milliseconds interleaved with the other encoders'. */
static void *ts_block_main(void *arg)
{
    ts_job_t *j = arg;
    imx_ts_block_t b;

    memset(&b, 0, sizeof(b));
    for (int i = 0; i < j->n; i++) {
        j->out[i] = imx_ts_take(j->t, &b, j->start + (i / 7 % 4) * 1000 + i % 5);
    }
    return NULL;
}

/* 8 encoders taking tickets in blocks, with the request path's single
 * tickets mixed in: every timestamp distinct. */
static void test_ts_blocks(void)
{
    enum { NT = 8, PER = 40000 };
    imx_ts_table_t *t = calloc(1, sizeof(*t));
    int64_t *all = malloc(sizeof(int64_t) * (NT * PER + PER));
    apr_time_t start = apr_time_from_sec(1700000000) + 777;
    pthread_t th[NT];
    ts_job_t jobs[NT];
    size_t n = (size_t)NT * PER, dups = 0;

    for (int i = 0; i < NT; i++) {
        jobs[i] = (ts_job_t){ t, start, PER, all + (size_t)i * PER };
        pthread_create(&th[i], NULL, ts_block_main, &jobs[i]);
    }
    for (int i = 0; i < PER; i++) {
        all[n++] = imx_ts_unique(t, start + (i % 4) * 1000);
    }
    for (int i = 0; i < NT; i++) {
        pthread_join(th[i], NULL);
    }
    qsort(all, n, sizeof(int64_t), cmp_i64);
    for (size_t i = 1; i < n; i++) {
        dups += all[i] == all[i - 1];
    }
    CHECK(dups == 0, "%zu timestamps taken twice of %zu", dups, n);
    free(all);
    free(t);
}

static void test_ts_unique(void)
{
    enum { NT = 8, PER = 40000 };
    imx_ts_table_t *t = calloc(1, sizeof(*t));
    int64_t *all = malloc(sizeof(int64_t) * (NT * PER + 64));
    apr_time_t start = apr_time_from_sec(1700000000) + 123456;
    pthread_t th[NT];
    ts_job_t jobs[NT];
    size_t n = 0, dups = 0, far = 0;

    /* 320,000 requests starting within the same 3 microseconds, from 8
     * threads at once: every timestamp distinct, within 1 ms of the start. */
    for (int i = 0; i < NT; i++) {
        jobs[i] = (ts_job_t){ t, start, PER, all + (size_t)i * PER };
        pthread_create(&th[i], NULL, ts_main, &jobs[i]);
    }
    for (int i = 0; i < NT; i++) {
        pthread_join(th[i], NULL);
    }
    n = (size_t)NT * PER;
    /* A request so long that its millisecond's counter was reused since,
     * and a clock that stepped back by less than the table's span and by
     * more: still distinct. */
    t->slot[(start / 1000) & (IMX_TS_SLOTS - 1)] = 0;   /* as if never used */
    imx_ts_unique(t, start + (apr_time_t)IMX_TS_SLOTS * 1000);  /* reuses the slot */
    for (int i = 0; i < 20; i++) {
        all[n++] = imx_ts_unique(t, start);         /* late: upper half */
    }
    for (int i = 0; i < 20; i++) {
        all[n++] = imx_ts_unique(t, start + 2);     /* late as well */
    }
    for (size_t i = 0; i < n; i++) {
        int64_t d = all[i] - (int64_t)start * 1000;
        if (d <= -1000000 || d >= 1000000) {
            far++;
        }
    }
    qsort(all, n, sizeof(int64_t), cmp_i64);
    for (size_t i = 1; i < n; i++) {
        dups += all[i] == all[i - 1];
    }
    CHECK(dups == 0, "%zu duplicate timestamps among %zu", dups, n);
    CHECK(far == 0, "%zu timestamps shifted by 1 ms or more", far);
    CHECK(atomic_load(&t->late) == 40, "late %llu", (unsigned long long)atomic_load(&t->late));

    /* A clock stepping back into milliseconds already used continues their
     * counters: distinct from what was handed out before. */
    memset(t, 0, sizeof(*t));
    {
        int64_t a = imx_ts_unique(t, start), b;
        imx_ts_unique(t, start + 5000);         /* time goes on ... */
        b = imx_ts_unique(t, start);            /* ... and steps back */
        CHECK(a != b, "clock step back repeated a timestamp");
    }
    free(all);
    free(t);
}

int main(void)
{
    apr_initialize();
    test_ts_unique();
    test_ts_blocks();
    apr_terminate();
    return check_report();
}
