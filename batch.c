/*
 * batch.c: the per-process bounded buffer and its flusher thread.
 *
 * The buffer
 *   A ring of `capacity` (a power of two) cells of 64 bytes each: a sequence
 *   number and one imx_point_t. It is allocated once, from the pool handed to
 *   imx_engine_create(), and never grows. Producers are the worker threads of
 *   one child (many); the consumer is the flusher (one). The design is
 *   Vyukov's bounded queue, restricted to a single consumer:
 *
 *   Invariants, with head = cells claimed by producers so far and tail = cells
 *   consumed by the flusher so far (both only grow, 64-bit, never wrap):
 *     - tail <= head <= tail + capacity.
 *     - cell i % capacity holds seq == i + 1 once the producer that claimed
 *       index i has finished writing it, and seq == i + capacity once the
 *       consumer has read it (free for the producer of index i + capacity).
 *     - recorded == head; every recorded point ends as exactly one of sent,
 *       rejected, dropped_exit, or is still buffered (in the ring or in the
 *       flusher's pending batch). Points refused because the ring was full
 *       were never recorded and are counted in dropped_full.
 *
 *   Memory ordering: a producer claims an index with a relaxed CAS on head
 *   (the index is all it needs; no data is published through head), writes
 *   the point into the cell, and publishes it with a release store of seq.
 *   The consumer reads seq with acquire before it reads the point, and frees
 *   the cell with a release store of seq = index + capacity, which the next
 *   producer of that cell reads with acquire before overwriting it.
 *
 *   Drop policy: a producer that finds its cell not yet freed (the ring is
 *   full) drops its own point, counts it in dropped_full and returns at once.
 *   The request path never waits for the flusher, never takes a lock and
 *   never allocates. Older points are kept: they are already on their way.
 *
 * The flusher
 *   One thread per process. It sleeps on a condition variable until the flush
 *   interval passes or a producer whose index completes a batch signals it
 *   (without the mutex: a missed wake-up costs at most one interval). It then
 *   drains the ring in batches of batch_size points, encodes them as line
 *   protocol, optionally gzips them and hands them to the send callback. A
 *   batch the backend could not take stays pending and is retried with
 *   exponential backoff and jitter; meanwhile the ring absorbs new points
 *   until it is full. At stop it drains and sends what is left within
 *   shutdown_timeout, and counts what it could not send as dropped_exit.
 */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <pthread.h>

#include <apr_thread_proc.h>
#include <apr_thread_mutex.h>
#include <apr_thread_cond.h>
#include <zlib.h>

#include "batch.h"

#define CACHE_LINE 64

typedef struct cell {
    _Atomic uint64_t seq;
    imx_point_t pt;
} cell_t;

/* A cell is one cache line: neighbours never share one. */
_Static_assert(sizeof(cell_t) == CACHE_LINE, "cell must fill one cache line");

/* Repeated failures are logged at most once per this interval. */
#define FAIL_LOG_INTERVAL apr_time_from_sec(10)
/* First retry delay; doubles per attempt up to retry_max_delay. */
#define RETRY_BASE apr_time_from_msec(500)

struct imx_engine {
    imx_engine_conf_t conf;
    size_t prefix_len;
    uint64_t mask;
    cell_t *cells;

    /* Written by producers: each on its own cache line. */
    _Alignas(CACHE_LINE) _Atomic uint64_t head;
    _Alignas(CACHE_LINE) _Atomic uint64_t dropped_full;

    /* Owned by the flusher (or by the caller of imx_engine_flush_now). */
    _Alignas(CACHE_LINE) uint64_t tail;
    char *body;
    size_t body_len, body_cap;
    uint32_t pending;           /* points in body, not yet acknowledged */
    unsigned char *gz;
    size_t gz_cap;
    z_stream zs;
    int zs_ready;
    unsigned attempt;           /* consecutive failures of the pending batch */
    apr_time_t retry_at;
    apr_time_t last_fail_log;
    unsigned long fails_unlogged;
    uint32_t rng;

    /* Read by anyone (stats), written by the flusher. */
    _Atomic uint64_t tail_pub, pending_pub;
    _Atomic uint64_t sent, rejected, dropped_exit, retries, batches, bytes;

    /* Thread control. */
    apr_pool_t *pool;
    apr_thread_mutex_t *mu;
    apr_thread_cond_t *cond;
    apr_thread_t *thread;
    _Atomic int running;
    _Atomic int stopped;
    _Atomic apr_time_t stop_deadline;   /* 0 until imx_engine_stop() */
};

static void logf_(imx_engine_t *e, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void logf_(imx_engine_t *e, int level, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    if (!e->conf.log) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    e->conf.log(e->conf.log_ctx, level, msg);
}

static apr_status_t engine_cleanup(void *data)
{
    imx_engine_t *e = data;

    free(e->body);
    free(e->gz);
    if (e->zs_ready) {
        deflateEnd(&e->zs);
    }
    return APR_SUCCESS;
}

imx_engine_t *imx_engine_create(apr_pool_t *p, const imx_engine_conf_t *conf,
                                char *err, size_t errsz)
{
    imx_engine_t *e;
    uint64_t cap = 2;
    char *mem;
    apr_status_t rv;

    if (!conf->line_prefix || !conf->send || conf->batch_size < 1
        || conf->capacity < 2 || conf->capacity > (1u << 30)) {
        snprintf(err, errsz, "invalid engine configuration");
        return NULL;
    }
    while (cap < conf->capacity) {
        cap <<= 1;
    }
    /* apr_palloc aligns to 8 only; the struct and the ring want cache lines. */
    mem = apr_palloc(p, sizeof(*e) + CACHE_LINE);
    e = (imx_engine_t *)(((uintptr_t)mem + CACHE_LINE - 1) & ~(uintptr_t)(CACHE_LINE - 1));
    memset(e, 0, sizeof(*e));
    e->conf = *conf;
    e->prefix_len = strlen(conf->line_prefix);
    e->mask = cap - 1;
    mem = apr_palloc(p, cap * sizeof(cell_t) + CACHE_LINE);
    if (!mem) {
        snprintf(err, errsz, "cannot allocate a buffer of %llu records",
                 (unsigned long long)cap);
        return NULL;
    }
    e->cells = (cell_t *)(((uintptr_t)mem + CACHE_LINE - 1) & ~(uintptr_t)(CACHE_LINE - 1));
    for (uint64_t i = 0; i < cap; i++) {
        atomic_init(&e->cells[i].seq, i);
    }
    e->pool = p;
    e->rng = (uint32_t)apr_time_now() ^ (uint32_t)(uintptr_t)e ^ 0x9e3779b9u;
    if (!e->rng) {
        e->rng = 1;
    }
    if ((rv = apr_thread_mutex_create(&e->mu, APR_THREAD_MUTEX_DEFAULT, p)) != APR_SUCCESS
        || (rv = apr_thread_cond_create(&e->cond, p)) != APR_SUCCESS) {
        snprintf(err, errsz, "cannot create flusher mutex/condition (%d)", rv);
        return NULL;
    }
    apr_pool_cleanup_register(p, e, engine_cleanup, apr_pool_cleanup_null);
    return e;
}

int imx_push(imx_engine_t *e, const imx_point_t *pt)
{
    uint64_t pos = atomic_load_explicit(&e->head, memory_order_relaxed);
    cell_t *c;

    for (;;) {
        uint64_t seq;

        c = &e->cells[pos & e->mask];
        seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        if (seq == pos) {
            if (atomic_compare_exchange_weak_explicit(&e->head, &pos, pos + 1,
                                                      memory_order_relaxed,
                                                      memory_order_relaxed)) {
                break;
            }
            /* pos now holds the current head: try that index. */
        }
        else if ((int64_t)(seq - pos) < 0) {
            /* The cell still holds the point from one lap ago: full. */
            atomic_fetch_add_explicit(&e->dropped_full, 1, memory_order_relaxed);
            return 0;
        }
        else {
            pos = atomic_load_explicit(&e->head, memory_order_relaxed);
        }
    }
    c->pt = *pt;
    atomic_store_explicit(&c->seq, pos + 1, memory_order_release);

    /* Completing a batch wakes the flusher early; the timed wait covers the
     * rare case where it is not waiting yet. */
    if ((pos + 1) % e->conf.batch_size == 0 && e->cond) {
        apr_thread_cond_signal(e->cond);
    }
    return 1;
}

static int grow_body(imx_engine_t *e, size_t need)
{
    size_t cap = e->body_cap ? e->body_cap : (size_t)e->conf.batch_size * 160;
    char *nb;

    while (cap < need) {
        cap *= 2;
    }
    nb = realloc(e->body, cap);
    if (!nb) {
        return 0;
    }
    e->body = nb;
    e->body_cap = cap;
    return 1;
}

/* Moves up to batch_size published points from the ring into the pending
 * body. Returns the number taken. */
static uint32_t fill_batch(imx_engine_t *e)
{
    uint32_t n = 0;

    e->body_len = 0;
    while (n < e->conf.batch_size) {
        cell_t *c = &e->cells[e->tail & e->mask];
        size_t need;

        if (atomic_load_explicit(&c->seq, memory_order_acquire) != e->tail + 1) {
            break;              /* empty, or its producer is still writing */
        }
        need = e->body_len + imx_line_max(e->prefix_len, &c->pt);
        if (need > e->body_cap && !grow_body(e, need)) {
            break;              /* out of memory: try again next round */
        }
        e->body_len += imx_encode_line(e->body + e->body_len, e->conf.line_prefix,
                                       e->prefix_len, &c->pt);
        atomic_store_explicit(&c->seq, e->tail + e->mask + 1, memory_order_release);
        e->tail++;
        n++;
    }
    e->pending = n;
    atomic_store_explicit(&e->tail_pub, e->tail, memory_order_relaxed);
    atomic_store_explicit(&e->pending_pub, n, memory_order_relaxed);
    return n;
}

/* gzip the pending body into e->gz; returns its length, 0 on failure. */
static size_t gzip_body(imx_engine_t *e)
{
    size_t bound;

    if (!e->zs_ready) {
        memset(&e->zs, 0, sizeof(e->zs));
        /* Level 1: the flusher shares the CPU with the server it measures;
         * line protocol still shrinks about tenfold. 15 + 16 = gzip framing. */
        if (deflateInit2(&e->zs, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
            return 0;
        }
        e->zs_ready = 1;
    }
    else {
        deflateReset(&e->zs);
    }
    bound = deflateBound(&e->zs, e->body_len);
    if (bound > e->gz_cap) {
        unsigned char *ng = realloc(e->gz, bound);
        if (!ng) {
            return 0;
        }
        e->gz = ng;
        e->gz_cap = bound;
    }
    e->zs.next_in = (unsigned char *)e->body;
    e->zs.avail_in = (uInt)e->body_len;
    e->zs.next_out = e->gz;
    e->zs.avail_out = (uInt)e->gz_cap;
    if (deflate(&e->zs, Z_FINISH) != Z_STREAM_END) {
        return 0;
    }
    return e->gz_cap - e->zs.avail_out;
}

static uint32_t next_rand(imx_engine_t *e)
{
    uint32_t x = e->rng;

    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return e->rng = x;
}

/* Exponential backoff with jitter: the delay for attempt n is drawn from
 * [d/2, d] with d = base * 2^(n-1), capped, so children that failed together
 * do not retry together. */
static apr_interval_time_t backoff(imx_engine_t *e)
{
    apr_interval_time_t d = RETRY_BASE;
    unsigned i;

    for (i = 1; i < e->attempt && d < e->conf.retry_max_delay; i++) {
        d *= 2;
    }
    if (d > e->conf.retry_max_delay) {
        d = e->conf.retry_max_delay;
    }
    return d / 2 + (apr_interval_time_t)(next_rand(e) % (uint32_t)(d / 2 + 1));
}

static void note_failure(imx_engine_t *e, const char *what, uint32_t n, const char *err)
{
    apr_time_t now = apr_time_now();

    if (e->last_fail_log && now - e->last_fail_log < FAIL_LOG_INTERVAL) {
        e->fails_unlogged++;
        return;
    }
    logf_(e, IMX_LOG_ERR, "%s a batch of %u points: %s (%lu more failures since the last report)",
          what, n, err, e->fails_unlogged);
    e->last_fail_log = now;
    e->fails_unlogged = 0;
}

/* Sends the pending batch once. Returns the send result. */
static imx_send_result_t send_pending(imx_engine_t *e)
{
    char err[256] = "";
    const char *body = e->body;
    size_t len = e->body_len;
    int gz = 0;
    /* Each send is bounded by the sender's own timeout; at shutdown also by
     * what is left of shutdown_timeout. */
    apr_time_t deadline = atomic_load(&e->stop_deadline);
    imx_send_result_t res;

    if (e->conf.gzip) {
        size_t zl = gzip_body(e);
        if (zl) {
            body = (const char *)e->gz;
            len = zl;
            gz = 1;
        }
    }
    res = e->conf.send(e->conf.send_ctx, body, len, gz, deadline, err, sizeof(err));
    switch (res) {
    case IMX_SEND_OK:
        atomic_fetch_add_explicit(&e->sent, e->pending, memory_order_relaxed);
        atomic_fetch_add_explicit(&e->batches, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&e->bytes, len, memory_order_relaxed);
        if (e->attempt) {
            logf_(e, IMX_LOG_NOTICE, "backend accepts writes again after %u failed attempts",
                  e->attempt);
            e->last_fail_log = 0;
        }
        e->attempt = 0;
        e->retry_at = 0;
        break;
    case IMX_SEND_REJECT:
        atomic_fetch_add_explicit(&e->rejected, e->pending, memory_order_relaxed);
        note_failure(e, "backend rejected", e->pending, err);
        e->attempt = 0;
        e->retry_at = 0;
        break;
    default:
        atomic_fetch_add_explicit(&e->retries, 1, memory_order_relaxed);
        e->attempt++;
        note_failure(e, "will retry", e->pending, err);
        e->retry_at = apr_time_now() + backoff(e);
        return res;
    }
    e->pending = 0;
    atomic_store_explicit(&e->pending_pub, 0, memory_order_relaxed);
    return res;
}

/* Sends everything published so far, batch by batch. Stops early when the
 * backend fails (the batch stays pending) or, when stopping, at the deadline. */
static void drain(imx_engine_t *e, int final)
{
    for (;;) {
        apr_time_t now = apr_time_now();
        apr_time_t stop_at = atomic_load(&e->stop_deadline);

        if (stop_at && now >= stop_at) {
            return;
        }
        if (!e->pending && !fill_batch(e)) {
            return;
        }
        if (e->retry_at > now) {
            if (!final) {
                return;
            }
            /* At exit, wait out a short backoff if the budget allows. */
            apr_sleep(e->retry_at - now < stop_at - now ? e->retry_at - now : stop_at - now);
            continue;
        }
        send_pending(e);
    }
}

static void *APR_THREAD_FUNC flusher_main(apr_thread_t *t, void *data)
{
    imx_engine_t *e = data;
    apr_time_t next_flush = apr_time_now() + e->conf.flush_interval;

    (void)t;
    while (atomic_load(&e->running)) {
        apr_time_t now = apr_time_now();
        apr_time_t wake = e->pending && e->retry_at ? e->retry_at : next_flush;
        uint64_t avail = atomic_load_explicit(&e->head, memory_order_relaxed) - e->tail;

        if (wake > now && avail < e->conf.batch_size) {
            apr_thread_mutex_lock(e->mu);
            if (atomic_load(&e->running)) {
                apr_thread_cond_timedwait(e->cond, e->mu, wake - now);
            }
            apr_thread_mutex_unlock(e->mu);
            if (!atomic_load(&e->running)) {
                break;
            }
        }
        now = apr_time_now();
        if (now >= next_flush) {
            next_flush = now + e->conf.flush_interval;
        }
        drain(e, 0);
    }
    drain(e, 1);
    return NULL;
}

apr_status_t imx_engine_start(imx_engine_t *e, apr_pool_t *p)
{
    apr_status_t rv;
    sigset_t all, old;

    rv = apr_pool_create(&e->pool, p);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    apr_pool_tag(e->pool, "imx_flusher");
    atomic_store(&e->running, 1);
    /* The flusher inherits this mask: process-directed signals (prefork's
     * SIGTERM, SIGHUP, SIGUSR1) must land in the threads httpd expects. */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    rv = apr_thread_create(&e->thread, NULL, flusher_main, e, e->pool);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rv != APR_SUCCESS) {
        atomic_store(&e->running, 0);
        e->thread = NULL;
    }
    return rv;
}

void imx_engine_stop(imx_engine_t *e)
{
    apr_status_t trv;
    imx_stats_t st;

    if (atomic_exchange(&e->stopped, 1)) {
        return;
    }
    atomic_store(&e->stop_deadline, apr_time_now() + e->conf.shutdown_timeout);
    if (e->conf.send_limit) {
        e->conf.send_limit(e->conf.send_ctx, atomic_load(&e->stop_deadline));
    }
    if (e->thread) {
        apr_thread_mutex_lock(e->mu);
        atomic_store(&e->running, 0);
        apr_thread_cond_signal(e->cond);
        apr_thread_mutex_unlock(e->mu);
        apr_thread_join(&trv, e->thread);
        e->thread = NULL;
    }
    else {
        drain(e, 1);
    }
    /* Whatever is left was recorded and will never be sent. */
    atomic_fetch_add(&e->dropped_exit,
                     e->pending + (atomic_load(&e->head) - e->tail));
    e->pending = 0;
    e->tail = atomic_load(&e->head);
    atomic_store(&e->tail_pub, e->tail);
    atomic_store(&e->pending_pub, 0);

    imx_engine_stats(e, &st);
    logf_(e, st.dropped_full || st.dropped_exit || st.rejected ? IMX_LOG_WARNING : IMX_LOG_INFO,
          "flusher exit: recorded=%llu sent=%llu rejected=%llu dropped_full=%llu "
          "dropped_exit=%llu retries=%llu batches=%llu bytes=%llu",
          (unsigned long long)st.recorded, (unsigned long long)st.sent,
          (unsigned long long)st.rejected, (unsigned long long)st.dropped_full,
          (unsigned long long)st.dropped_exit, (unsigned long long)st.retries,
          (unsigned long long)st.batches, (unsigned long long)st.bytes);
}

uint64_t imx_engine_flush_now(imx_engine_t *e, apr_time_t deadline)
{
    uint64_t before = atomic_load(&e->sent);

    (void)deadline;
    e->retry_at = 0;
    drain(e, 0);
    return atomic_load(&e->sent) - before;
}

void imx_engine_stats(imx_engine_t *e, imx_stats_t *st)
{
    uint64_t head = atomic_load_explicit(&e->head, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&e->tail_pub, memory_order_relaxed);

    st->recorded = head;
    st->dropped_full = atomic_load_explicit(&e->dropped_full, memory_order_relaxed);
    st->sent = atomic_load_explicit(&e->sent, memory_order_relaxed);
    st->rejected = atomic_load_explicit(&e->rejected, memory_order_relaxed);
    st->dropped_exit = atomic_load_explicit(&e->dropped_exit, memory_order_relaxed);
    st->retries = atomic_load_explicit(&e->retries, memory_order_relaxed);
    st->batches = atomic_load_explicit(&e->batches, memory_order_relaxed);
    st->bytes = atomic_load_explicit(&e->bytes, memory_order_relaxed);
    st->buffered = (head - tail) + atomic_load_explicit(&e->pending_pub, memory_order_relaxed);
}
