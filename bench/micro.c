/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * bench/micro.c: micro-benchmarks of the engine (the ring, the engine, the encoder: imx_ring.c, imx_engine.c, imx_lineproto.c), no httpd.
 *
 *   bench/micro [--quick] [--json FILE]
 *
 * push    imx_push() from 1, 2, 8 and 32 threads into one engine whose flusher
 *         runs with a no-op sender, so the ring drains as in a child process.
 *         Two loads:
 *           saturated  every thread pushes in a tight loop: far more than the
 *                      flusher can encode, so most pushes find the ring full
 *                      and are dropped (counted, as the module would)
 *           paced      every thread does ~1 us of busy "request work" between
 *                      pushes (a static-file request in httpd is ~20-40 us),
 *                      so the ring keeps up and pushes are accepted
 *         The latency of a push is measured per group of 64 pushes (two
 *         clock_gettime calls per group, < 1 ns per push of timer cost); the
 *         median and p99 are over those groups. On a machine with fewer cores
 *         than threads, a group during which the thread was preempted shows
 *         as an outlier: the median is unaffected.
 * encode  imx_encode_line() on one core over varied points (methods, status,
 *         routes, sizes): points/s and bytes/point; the same batches gzipped
 *         with zlib level 1 (as the engine does): gzip'd bytes/point and
 *         encode+gzip points/s.
 * flush   the engine's own drain path (imx_engine_flush_now: ring -> line
 *         protocol -> [gzip] -> sender), without and with gzip.
 *
 *
 *   bench/micro --flusher URL [--quick] [--json FILE]
 *
 * flusher the scaling of one flusher with the real libcurl sender (the
 *         module's defaults: ring 65536, batch 5000, 1 s interval) posting
 *         to URL (bench/nullsink.py): one producer thread pushes at 10k, 50k
 *         and 100k points/s for a few seconds, then the engine is stopped
 *         (its exit flush sends the rest). The flusher's CPU time is the
 *         process's (getrusage) minus the producer thread's own
 *         (CLOCK_THREAD_CPUTIME_ID); the main thread only sleeps. Reported:
 *         its share of one core at each rate, its CPU per point (encode,
 *         POST through libcurl and the kernel's loopback send), and the
 *         points/s that cost allows on one whole core. Then "saturated": the
 *         producer pushes without pause and what the flusher sent per second
 *         is counted (on 2 cores the producer, the flusher and the null
 *         backend share them).
 *
 * Results go to stdout as a table, and with --json to FILE. Times are wall
 * clock on whatever else the machine is doing: compare within one run.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <curl/curl.h>

#include <apr_general.h>
#include <apr_pools.h>
#include <apr_time.h>
#include <zlib.h>

#include "imx_engine.h"
#include "imx_http.h"
#include "../tests/test_names.h"

#define GROUP 64                /* pushes per latency sample */
#define MAX_SAMPLES (1 << 16)   /* per thread */
#define NPOINTS 4096            /* distinct points cycled through */
#define BATCH 5000              /* the module's default batch size */
#define CAPACITY 65536          /* the module's default buffer size */

static int quick;
static double push_secs = 0.6, encode_secs = 0.8;

static double clock_s(clockid_t id)
{
    struct timespec ts;

    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double now_s(void)
{
    return clock_s(CLOCK_MONOTONIC);
}

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* ------------------------------------------------------------------------- */
/* Test points                                                                */

/* Series as the glue registers them at startup: per (server, route). */
static const char *const series[4][3] = {
    { ",vhost=www.example.com", "", "" },
    { ",vhost=www.example.com", ",route=static", "" },
    { ",vhost=api.example.com", ",route=api_users", ",env=prod,dc=eu-west-1" },
    { ",vhost=api.example.com", "", ",env=prod,dc=eu-west-1" },
};
static const char *const methods[] = { "GET", "POST", "HEAD", "PUT" };
static imx_names_src_t names;
static imx_point_t points[NPOINTS];
static const char *prefix = "apache_request,host=web-01.example.com";

static void make_points(void)
{
    static const uint8_t method_idx[] = { 0, 0, 0, 0, 1, 2, 3, 0 };
    static const uint16_t statuses[] = { 200, 200, 200, 200, 200, 304, 404, 301, 500, 200 };
    uint32_t x = 12345;
    int64_t ts = 1764000000000000000LL;     /* late 2025, in ns */
    imx_names_t *reg = tn_new(1 << 16);
    uint16_t server[4], route[4];

    for (int i = 0; i < 4; i++) {
        server[i] = (uint16_t)tn_server(reg, series[i][0], series[i][2]);
        route[i] = (uint16_t)(*series[i][1] ? tn_id(reg, 1, series[i][1]) : 0);
    }
    names.reg = reg;
    names.methods = methods;
    names.nmethods = 4;

    for (int i = 0; i < NPOINTS; i++) {
        imx_point_t *p = &points[i];

        x ^= x << 13; x ^= x >> 17; x ^= x << 5;
        ts += 1000 * (int64_t)(x % 200) + 1;
        /* Fields not set here (optional ones) stay 0 / NULL. */
        memset(p, 0, sizeof(*p));
        p->ts_ns = ts;
        p->duration_us = 20 + (int64_t)(x % 5000) * ((x >> 12) % 8 == 0 ? 100 : 1);
        p->bytes_sent = (x >> 8) % 4 == 0 ? 0 : (int64_t)((x >> 4) % 200000);
        p->server = server[(x >> 20) % 4];
        p->route = route[(x >> 20) % 4];
        p->method = method_idx[(x >> 3) % 8];
        p->status = statuses[(x >> 10) % 10];
    }
}

/* ------------------------------------------------------------------------- */
/* A sender that takes everything                                             */

static _Atomic uint64_t sink_calls, sink_bytes;

static imx_send_result_t noop_send(void *ctx, const char *body, size_t len,
                                   int gzipped, apr_time_t deadline,
                                   imx_send_info_t *info)
{
    (void)ctx; (void)body; (void)gzipped; (void)deadline; (void)info;
    atomic_fetch_add_explicit(&sink_calls, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&sink_bytes, len, memory_order_relaxed);
    return IMX_SEND_OK;
}

static imx_engine_t *new_engine(apr_pool_t *p, int gzip, apr_interval_time_t flush)
{
    imx_engine_conf_t ec;
    imx_engine_t *e;
    char err[256];

    memset(&ec, 0, sizeof(ec));
    ec.line_prefix = prefix;
    ec.capacity = CAPACITY;
    ec.batch_size = BATCH;
    ec.flush_interval = flush;
    ec.shutdown_timeout = apr_time_from_sec(2);
    ec.retry_interval = apr_time_from_msec(500);
    ec.retry_base = 2;
    ec.retry_max_delay = apr_time_from_sec(30);
    ec.retry_max_time = 0;
    ec.retry_buffer = 16u << 20;
    ec.gzip = gzip;
    ec.send = noop_send;
    ec.names = names;
    e = imx_engine_create(p, &ec, err, sizeof(err));
    if (!e) {
        fprintf(stderr, "micro: imx_engine_create: %s\n", err);
        exit(2);
    }
    return e;
}

/* ------------------------------------------------------------------------- */
/* push                                                                       */

typedef struct {
    imx_engine_t *e;
    int idx;
    int paced;
    pthread_barrier_t *start;
    _Atomic int *stop;
    uint64_t attempts, accepted;
    double *samples;
    size_t nsamples;
} pusher_t;

static volatile uint64_t work_sink;
/* The reference load: one shared counter on its own cache line. */
static _Alignas(64) _Atomic uint64_t shared_counter;

/* About 1 us of arithmetic that the compiler cannot drop. */
static inline void fake_work(unsigned iters)
{
    uint64_t v = work_sink;

    for (unsigned i = 0; i < iters; i++) {
        v = v * 6364136223846793005ULL + 1442695040888963407ULL;
        __asm__ __volatile__("" : "+r"(v));
    }
    work_sink = v;
}

static unsigned work_iters = 300;
static double timer_ns;         /* cost of one now_ns() pair, subtracted */

static void calibrate_timer(void)
{
    double d[2001];

    for (int i = 0; i < 2001; i++) {
        uint64_t a = now_ns();
        uint64_t b = now_ns();
        d[i] = (double)(b - a);
    }
    qsort(d, 2001, sizeof(double), cmp_double);
    timer_ns = d[1000];
}

static void calibrate_work(void)
{
    /* iterations per microsecond, from the best of a few tries */
    double best = 1e9;

    for (int t = 0; t < 5; t++) {
        double t0 = now_s();
        fake_work(100000);
        double dt = now_s() - t0;
        if (dt < best) best = dt;
    }
    work_iters = (unsigned)(100000 / (best * 1e6));
    if (work_iters < 10) work_iters = 10;
}

/* The CPUs this process may use, for pinning pushers round-robin: threads
 * on different cores is the case that costs (cache lines move between
 * cores); left to the scheduler, a busy machine sometimes time-slices them
 * on one core and the figures swing from run to run. */
static int cpus[CPU_SETSIZE], ncpus;

static void init_cpus(void)
{
    cpu_set_t set;

    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        for (int i = 0; i < CPU_SETSIZE; i++) {
            if (CPU_ISSET(i, &set)) {
                cpus[ncpus++] = i;
            }
        }
    }
}

static void pin(int idx)
{
    cpu_set_t set;

    if (ncpus < 2) {
        return;
    }
    CPU_ZERO(&set);
    CPU_SET(cpus[idx % ncpus], &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static void *pusher_main(void *arg)
{
    pusher_t *pu = arg;
    unsigned k = (unsigned)pu->idx * 997u;

    pin(pu->idx);

    pthread_barrier_wait(pu->start);
    while (!atomic_load_explicit(pu->stop, memory_order_relaxed)) {
        uint64_t acc = 0, t0, t1, spent;

        if (pu->paced) {
            /* time only the pushes, one at a time, work in between */
            spent = 0;
            for (int i = 0; i < GROUP; i++) {
                fake_work(work_iters);
                t0 = now_ns();
                if (pu->paced == 2) {
                    atomic_fetch_add_explicit(&shared_counter, 1, memory_order_relaxed);
                    acc++;
                }
                else {
                    acc += (uint64_t)imx_engine_push(pu->e, &points[k++ % NPOINTS], NULL);
                }
                t1 = now_ns();
                spent += t1 - t0;
            }
            /* the timer's own cost, at most what was measured */
            spent -= (uint64_t)(timer_ns * GROUP) < spent ? (uint64_t)(timer_ns * GROUP) : spent;
        }
        else {
            t0 = now_ns();
            for (int i = 0; i < GROUP; i++) {
                acc += (uint64_t)imx_engine_push(pu->e, &points[k++ % NPOINTS], NULL);
            }
            t1 = now_ns();
            spent = t1 - t0;
        }
        pu->attempts += GROUP;
        pu->accepted += acc;
        if (pu->nsamples < MAX_SAMPLES) {
            pu->samples[pu->nsamples++] = (double)spent / GROUP;
        }
    }
    return NULL;
}

typedef struct {
    int threads;
    int paced;
    double secs;
    uint64_t attempts, accepted, dropped, sent;
    double attempts_per_s, accepted_per_s;
    double median_ns, p90_ns, p99_ns;
} push_result_t;

static void bench_push(apr_pool_t *root, int nthreads, int paced, push_result_t *r)
{
    apr_pool_t *p;
    imx_engine_t *e;
    pthread_t th[64];
    pusher_t pu[64];
    pthread_barrier_t start;
    _Atomic int stop = 0;
    double t0, t1;
    double *all;
    size_t nall = 0;
    imx_stats_t st;

    apr_pool_create(&p, root);
    /* 100 ms flush interval; a completed batch wakes the flusher anyway. */
    e = new_engine(p, 0, apr_time_from_msec(100));
    if (imx_engine_start(e) != APR_SUCCESS) {
        fprintf(stderr, "micro: cannot start the flusher\n");
        exit(2);
    }
    pthread_barrier_init(&start, NULL, (unsigned)nthreads + 1);
    for (int i = 0; i < nthreads; i++) {
        memset(&pu[i], 0, sizeof(pu[i]));
        pu[i].e = e;
        pu[i].idx = i;
        pu[i].paced = paced;
        pu[i].start = &start;
        pu[i].stop = &stop;
        pu[i].samples = malloc(MAX_SAMPLES * sizeof(double));
        if (!pu[i].samples || pthread_create(&th[i], NULL, pusher_main, &pu[i])) {
            fprintf(stderr, "micro: cannot start pusher %d\n", i);
            exit(2);
        }
    }
    pthread_barrier_wait(&start);
    t0 = now_s();
    {
        struct timespec ts = { (time_t)push_secs,
                               (long)((push_secs - (double)(time_t)push_secs) * 1e9) };
        while (nanosleep(&ts, &ts) && errno == EINTR) { }
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < nthreads; i++) {
        pthread_join(th[i], NULL);
    }
    t1 = now_s();
    imx_engine_stop(e);
    imx_engine_stats(e, &st);

    memset(r, 0, sizeof(*r));
    r->threads = nthreads;
    r->paced = paced;
    r->secs = t1 - t0;
    all = malloc((size_t)nthreads * MAX_SAMPLES * sizeof(double));
    for (int i = 0; i < nthreads; i++) {
        r->attempts += pu[i].attempts;
        r->accepted += pu[i].accepted;
        memcpy(all + nall, pu[i].samples, pu[i].nsamples * sizeof(double));
        nall += pu[i].nsamples;
        free(pu[i].samples);
    }
    qsort(all, nall, sizeof(double), cmp_double);
    if (nall) {
        r->median_ns = all[nall / 2];
        r->p90_ns = all[(size_t)((double)nall * 0.90)];
        r->p99_ns = all[(size_t)((double)nall * 0.99)];
    }
    free(all);
    r->dropped = st.dropped_full;
    r->sent = st.sent;
    r->attempts_per_s = (double)r->attempts / r->secs;
    r->accepted_per_s = (double)r->accepted / r->secs;
    pthread_barrier_destroy(&start);
    apr_pool_destroy(p);
}

/* ------------------------------------------------------------------------- */
/* encode                                                                     */

typedef struct {
    double points_per_s;        /* encode only */
    double bytes_per_point;
    double gz_points_per_s;     /* encode + gzip level 1 */
    double gz_bytes_per_point;
    double ns_per_point;
} encode_result_t;

static void bench_encode(encode_result_t *r)
{
    size_t prefix_len = strlen(prefix);
    size_t cap = 0;
    char *buf;
    unsigned char *gz;
    size_t gz_cap;
    z_stream zs;
    uint64_t n = 0, bytes = 0, gzbytes = 0, gzn = 0;
    double t0, dt, best_rate = 0;
    unsigned k = 0;

    for (int i = 0; i < BATCH; i++) {
        cap += imx_line_max(prefix_len, &names, &points[i % NPOINTS]);
    }
    buf = malloc(cap);
    memset(&zs, 0, sizeof(zs));
    if (!buf || deflateInit2(&zs, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        fprintf(stderr, "micro: out of memory / deflateInit2\n");
        exit(2);
    }
    gz_cap = deflateBound(&zs, cap);
    gz = malloc(gz_cap);

    /* Encode only: the best of several ~0.1 s slices (the least disturbed by
     * other processes), plus the overall average. */
    t0 = now_s();
    while ((dt = now_s() - t0) < encode_secs / 2) {
        double s0 = now_s();
        uint64_t sn = 0;
        while (now_s() - s0 < 0.1) {
            size_t len = 0;
            for (int i = 0; i < BATCH; i++) {
                len += imx_encode_line(buf + len, prefix, prefix_len, &names, &points[k++ % NPOINTS], NULL);
            }
            bytes += len;
            sn += BATCH;
        }
        n += sn;
        if ((double)sn / (now_s() - s0) > best_rate) {
            best_rate = (double)sn / (now_s() - s0);
        }
    }
    r->points_per_s = best_rate;
    r->ns_per_point = 1e9 / best_rate;
    r->bytes_per_point = (double)bytes / (double)n;

    /* Encode + gzip level 1, batch by batch as the flusher does. */
    best_rate = 0;
    t0 = now_s();
    while (now_s() - t0 < encode_secs / 2) {
        double s0 = now_s();
        uint64_t sn = 0;
        while (now_s() - s0 < 0.1) {
            size_t len = 0;
            for (int i = 0; i < BATCH; i++) {
                len += imx_encode_line(buf + len, prefix, prefix_len, &names, &points[k++ % NPOINTS], NULL);
            }
            deflateReset(&zs);
            zs.next_in = (unsigned char *)buf;
            zs.avail_in = (uInt)len;
            zs.next_out = gz;
            zs.avail_out = (uInt)gz_cap;
            if (deflate(&zs, Z_FINISH) != Z_STREAM_END) {
                fprintf(stderr, "micro: deflate failed\n");
                exit(2);
            }
            gzbytes += gz_cap - zs.avail_out;
            sn += BATCH;
        }
        gzn += sn;
        if ((double)sn / (now_s() - s0) > best_rate) {
            best_rate = (double)sn / (now_s() - s0);
        }
    }
    r->gz_points_per_s = best_rate;
    r->gz_bytes_per_point = (double)gzbytes / (double)gzn;
    deflateEnd(&zs);
    free(buf);
    free(gz);
}

/* ------------------------------------------------------------------------- */
/* flush: the engine's drain path, single-threaded                           */

typedef struct {
    int gzip;
    double points_per_s;
    double bytes_per_point;     /* as handed to the sender */
} flush_result_t;

static void bench_flush(apr_pool_t *root, int gzip, flush_result_t *r)
{
    apr_pool_t *p;
    imx_engine_t *e;
    uint64_t pts = 0;
    double spent = 0, t0;
    unsigned k = 0;
    uint64_t b0;
    const uint32_t fill = CAPACITY - BATCH;

    apr_pool_create(&p, root);
    e = new_engine(p, gzip, apr_time_from_sec(1));     /* no thread started */
    b0 = atomic_load(&sink_bytes);
    t0 = now_s();
    while (now_s() - t0 < encode_secs / 2) {
        double s;
        for (uint32_t i = 0; i < fill; i++) {
            imx_engine_push(e, &points[k++ % NPOINTS], NULL);
        }
        s = now_s();
        pts += imx_engine_flush_now(e);
        spent += now_s() - s;
    }
    r->gzip = gzip;
    r->points_per_s = (double)pts / spent;
    r->bytes_per_point = (double)(atomic_load(&sink_bytes) - b0) / (double)pts;
    imx_engine_stop(e);
    apr_pool_destroy(p);
}

/* ------------------------------------------------------------------------- */
/* flusher: one engine, the real sender, a null backend                      */

typedef struct {
    double rate;                /* asked for, points/s; 0: saturated */
    double secs;                /* wall time, push start to engine stopped */
    uint64_t pushed, sent, dropped;
    double flusher_cpu_s;
    double core_share;          /* flusher CPU / wall */
    double ns_per_point;        /* flusher CPU per point sent */
    uint64_t posts;
} scale_result_t;

typedef struct {
    imx_engine_t *e;
    double rate, secs;
    uint64_t pushed, dropped;
    double cpu_s;               /* this thread's own CPU time */
} producer_t;

static double thread_cpu_s(void)
{
    return clock_s(CLOCK_THREAD_CPUTIME_ID);
}

static double process_cpu_s(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6
           + (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

/* Pushes in steps of 1 ms (rate / 1000 points each, on an absolute clock so
 * that a late step is made up), or without pause when rate is 0. */
static void *producer_main(void *arg)
{
    producer_t *pr = arg;
    struct timespec next;
    double t0 = now_s(), c0 = thread_cpu_s();
    unsigned k = 0;
    double owed = 0;

    clock_gettime(CLOCK_MONOTONIC, &next);
    while (now_s() - t0 < pr->secs) {
        if (pr->rate > 0) {
            owed += pr->rate / 1000.0;
            while (owed >= 1.0) {
                if (!imx_engine_push(pr->e, &points[k++ % NPOINTS], NULL)) {
                    pr->dropped++;
                }
                pr->pushed++;
                owed -= 1.0;
            }
            next.tv_nsec += 1000000;
            if (next.tv_nsec >= 1000000000) {
                next.tv_nsec -= 1000000000;
                next.tv_sec++;
            }
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
        }
        else {
            for (int i = 0; i < 256; i++) {
                if (!imx_engine_push(pr->e, &points[k++ % NPOINTS], NULL)) {
                    pr->dropped++;
                }
                pr->pushed++;
            }
        }
    }
    pr->cpu_s = thread_cpu_s() - c0;
    return NULL;
}

static void bench_scale(apr_pool_t *root, const char *url, double rate, double secs,
                        scale_result_t *r)
{
    apr_pool_t *p;
    imx_engine_conf_t ec;
    imx_http_conf_t hc;
    imx_http_t *http;
    imx_engine_t *e;
    imx_stats_t st;
    producer_t pr;
    pthread_t t;
    char err[256];
    double t0, c0;
    const char *urls[1];

    apr_pool_create(&p, root);
    urls[0] = url;
    memset(&hc, 0, sizeof(hc));
    hc.urls = urls;
    hc.nurls = 1;
    hc.timeout = apr_time_from_sec(5);
    hc.tls_verify = 1;
    http = imx_http_create(p, &hc, err, sizeof(err));
    if (!http) {
        fprintf(stderr, "micro: imx_http_create: %s\n", err);
        exit(2);
    }
    memset(&ec, 0, sizeof(ec));
    ec.line_prefix = prefix;
    ec.capacity = CAPACITY;
    ec.batch_size = BATCH;
    ec.flush_interval = apr_time_from_sec(1);
    ec.shutdown_timeout = apr_time_from_sec(5);
    ec.retry_interval = apr_time_from_msec(500);
    ec.retry_base = 2;
    ec.retry_max_delay = apr_time_from_sec(30);
    ec.retry_buffer = 64u << 20;
    ec.send = imx_http_send;
    ec.send_limit = imx_http_limit;
    ec.send_ctx = http;
    e = imx_engine_create(p, &ec, err, sizeof(err));
    if (!e || imx_engine_start(e) != APR_SUCCESS) {
        fprintf(stderr, "micro: engine: %s\n", e ? "cannot start" : err);
        exit(2);
    }
    memset(&pr, 0, sizeof(pr));
    pr.e = e;
    pr.rate = rate;
    pr.secs = secs;
    t0 = now_s();
    c0 = process_cpu_s();
    pthread_create(&t, NULL, producer_main, &pr);
    pthread_join(t, NULL);
    imx_engine_stop(e);
    r->secs = now_s() - t0;
    r->flusher_cpu_s = process_cpu_s() - c0 - pr.cpu_s;
    imx_engine_stats(e, &st);
    r->rate = rate;
    r->pushed = pr.pushed;
    r->dropped = pr.dropped;
    r->sent = st.sent;
    r->posts = st.batches;
    r->core_share = r->flusher_cpu_s / r->secs;
    r->ns_per_point = st.sent ? r->flusher_cpu_s * 1e9 / (double)st.sent : 0;
    apr_pool_destroy(p);
}

static int main_flusher(apr_pool_t *root, const char *url, const char *json)
{
    static const double rates[] = { 10000, 50000, 100000, 0 };
    scale_result_t r[4];
    double secs = quick ? 1.5 : 3.0;
    FILE *f;

    curl_global_init(CURL_GLOBAL_DEFAULT);
    for (int i = 0; i < 4; i++) {
        bench_scale(root, url, rates[i], rates[i] > 0 ? secs : secs / 2, &r[i]);
    }
    printf("one flusher, real libcurl sender to %s (ring %d, batch %d, 1 s interval)\n",
           url, CAPACITY, BATCH);
    printf("%-10s %10s %10s %10s %8s %11s %10s %12s\n", "rate", "pushed", "sent",
           "dropped", "POSTs", "core share", "ns/point", "points/s/core");
    for (int i = 0; i < 4; i++) {
        char rate[32];

        if (r[i].rate > 0) {
            snprintf(rate, sizeof(rate), "%.0f/s", r[i].rate);
        }
        else {
            snprintf(rate, sizeof(rate), "saturated");
        }
        printf("%-10s %10" PRIu64 " %10" PRIu64 " %10" PRIu64 " %8" PRIu64 " %10.1f%% %10.0f "
               "%12.0f\n", rate, r[i].pushed, r[i].sent, r[i].dropped, r[i].posts,
               100.0 * r[i].core_share, r[i].ns_per_point,
               r[i].ns_per_point > 0 ? 1e9 / r[i].ns_per_point : 0.0);
    }
    if (json) {
        f = fopen(json, "w");
        if (!f) {
            perror(json);
            return 1;
        }
        fprintf(f, "{\n  \"capacity\": %d, \"batch\": %d, \"cpus\": %d,\n  \"scale\": [\n",
                CAPACITY, BATCH, ncpus);
        for (int i = 0; i < 4; i++) {
            fprintf(f, "    {\"rate\": %.0f, \"secs\": %.3f, \"pushed\": %" PRIu64
                    ", \"sent\": %" PRIu64 ", \"dropped\": %" PRIu64 ", \"posts\": %" PRIu64
                    ", \"flusher_cpu_s\": %.4f, \"core_share\": %.4f, \"ns_per_point\": %.1f"
                    ", \"sent_per_s\": %.0f}%s\n",
                    r[i].rate, r[i].secs, r[i].pushed, r[i].sent, r[i].dropped, r[i].posts,
                    r[i].flusher_cpu_s, r[i].core_share, r[i].ns_per_point,
                    (double)r[i].sent / r[i].secs, i == 3 ? "" : ",");
        }
        fprintf(f, "  ]\n}\n");
        fclose(f);
    }
    curl_global_cleanup();
    return 0;
}

/* ------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    apr_pool_t *root;
    const char *json = NULL;
    static const int threads[] = { 1, 2, 8, 32 };
    static const char *const loads[] = { "saturated", "paced", "atomic-ref" };
    push_result_t push[3][4];
    encode_result_t enc;
    flush_result_t fl[2];
    const char *flusher_url = NULL;
    FILE *f;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) {
            quick = 1;
        }
        else if (!strcmp(argv[i], "--json") && i + 1 < argc) {
            json = argv[++i];
        }
        else if (!strcmp(argv[i], "--flusher") && i + 1 < argc) {
            flusher_url = argv[++i];
        }
        else {
            fprintf(stderr, "usage: %s [--quick] [--json FILE] [--flusher URL]\n", argv[0]);
            return 2;
        }
    }
    if (quick) {
        push_secs = 0.25;
        encode_secs = 0.4;
    }
    apr_initialize();
    apr_pool_create(&root, NULL);
    make_points();
    init_cpus();
    if (flusher_url) {
        int rc = main_flusher(root, flusher_url, json);

        apr_pool_destroy(root);
        apr_terminate();
        return rc;
    }
    calibrate_work();
    calibrate_timer();

    for (int m = 0; m < 3; m++) {
        for (int i = 0; i < 4; i++) {
            bench_push(root, threads[i], m, &push[m][i]);
        }
    }
    bench_encode(&enc);
    bench_flush(root, 0, &fl[0]);
    bench_flush(root, 1, &fl[1]);

    printf("push (buffer of %d, batch %d, flusher running, no-op sender; latency per push\n"
           "over groups of %d; pushers pinned round-robin to %d CPUs)\n", CAPACITY, BATCH,
           GROUP, ncpus);
    printf("%-10s %7s %12s %12s %8s %9s %9s %9s\n", "load", "threads", "pushes/s",
           "accepted/s", "dropped", "median ns", "p90 ns", "p99 ns");
    for (int m = 0; m < 3; m++) {
        for (int i = 0; i < 4; i++) {
            push_result_t *r = &push[m][i];
            printf("%-10s %7d %12.0f %12.0f %7.1f%% %9.1f %9.1f %9.1f\n",
                   loads[m], r->threads, r->attempts_per_s,
                   r->accepted_per_s,
                   r->attempts ? 100.0 * (double)r->dropped / (double)r->attempts : 0.0,
                   r->median_ns, r->p90_ns, r->p99_ns);
        }
    }
    printf("(paced: ~1 us of work between pushes, each push timed alone, minus %.1f ns\n"
           " of timer cost; atomic-ref: the same, but one atomic increment of a shared\n"
           " counter instead of a push: the floor of any shared-buffer design here)\n\n",
           timer_ns);
    printf("encode (one core)      %12.0f points/s  %6.1f ns/point  %6.1f bytes/point\n",
           enc.points_per_s, enc.ns_per_point, enc.bytes_per_point);
    printf("encode + gzip level 1  %12.0f points/s                   %6.1f bytes/point (%.1fx smaller)\n",
           enc.gz_points_per_s, enc.gz_bytes_per_point,
           enc.bytes_per_point / enc.gz_bytes_per_point);
    printf("engine drain, plain    %12.0f points/s                   %6.1f bytes/point\n",
           fl[0].points_per_s, fl[0].bytes_per_point);
    printf("engine drain, gzip     %12.0f points/s                   %6.1f bytes/point\n",
           fl[1].points_per_s, fl[1].bytes_per_point);

    if (json) {
        f = fopen(json, "w");
        if (!f) {
            perror(json);
            return 1;
        }
        fprintf(f, "{\n  \"capacity\": %d, \"batch\": %d, \"group\": %d, \"work_iters\": %u, \"timer_ns\": %.1f, \"cpus\": %d,\n",
                CAPACITY, BATCH, GROUP, work_iters, timer_ns, ncpus);
        fprintf(f, "  \"push\": [\n");
        for (int m = 0; m < 3; m++) {
            for (int i = 0; i < 4; i++) {
                push_result_t *r = &push[m][i];
                fprintf(f, "    {\"load\": \"%s\", \"threads\": %d, \"secs\": %.3f, "
                        "\"attempts\": %" PRIu64 ", \"accepted\": %" PRIu64 ", "
                        "\"dropped\": %" PRIu64 ", \"sent\": %" PRIu64 ", "
                        "\"pushes_per_s\": %.0f, \"accepted_per_s\": %.0f, "
                        "\"median_ns\": %.2f, \"p90_ns\": %.2f, \"p99_ns\": %.2f}%s\n",
                        loads[m], r->threads, r->secs, r->attempts,
                        r->accepted, r->dropped, r->sent, r->attempts_per_s,
                        r->accepted_per_s, r->median_ns, r->p90_ns, r->p99_ns,
                        (m == 2 && i == 3) ? "" : ",");
            }
        }
        fprintf(f, "  ],\n");
        fprintf(f, "  \"encode\": {\"points_per_s\": %.0f, \"ns_per_point\": %.2f, "
                "\"bytes_per_point\": %.2f, \"gz_points_per_s\": %.0f, "
                "\"gz_bytes_per_point\": %.2f},\n",
                enc.points_per_s, enc.ns_per_point, enc.bytes_per_point,
                enc.gz_points_per_s, enc.gz_bytes_per_point);
        fprintf(f, "  \"drain\": [\n");
        for (int g = 0; g < 2; g++) {
            fprintf(f, "    {\"gzip\": %d, \"points_per_s\": %.0f, \"bytes_per_point\": %.2f}%s\n",
                    fl[g].gzip, fl[g].points_per_s, fl[g].bytes_per_point, g ? "" : ",");
        }
        fprintf(f, "  ]\n}\n");
        fclose(f);
    }
    apr_pool_destroy(root);
    apr_terminate();
    return 0;
}
