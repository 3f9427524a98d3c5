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
 *       rejected, dropped_retry, dropped_exit, or is still buffered (in the
 *       ring, the batch being sent, or the retry buffer). Points refused because the ring was full
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
 *   protocol, optionally gzips them and hands them to the send callback.
 *
 * The retry buffer
 *   A batch the backend could not take (down, slow, 429, 5xx) is copied into
 *   a FIFO of encoded batches, bounded by retry_buffer bytes, and retried with
 *   exponential backoff and jitter (or after the backend's Retry-After). While
 *   it backs off, the flusher keeps draining the ring into the FIFO, so the
 *   ring stays free for the request path; when the FIFO is full its oldest
 *   batch is dropped and its points counted (dropped_retry), as is a batch
 *   that has failed for longer than retry_max_time. Memory is therefore
 *   bounded by the ring + retry_buffer + one batch being encoded. Order is
 *   kept: nothing new is sent while older batches wait.
 *
 *   At stop it sends what is left within shutdown_timeout, and counts what it
 *   could not send as dropped_exit. So, at any time:
 *     recorded == sent + rejected + dropped_retry + dropped_exit + buffered.
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

/* A batch waiting in the retry buffer. */
typedef struct rbatch {
    struct rbatch *next;
    uint32_t n;                 /* request points in it */
    uint32_t extra;             /* lines before them that are not request points
                                 * (the module's counters, summaries) */
    int maybe_stored;           /* a POST of it failed after the body went out:
                                 * the backend may have stored it anyway */
    apr_time_t first_fail;
    size_t len;
    char data[];
} rbatch_t;

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
    char *body;                 /* the batch being built and sent */
    size_t body_len, body_cap;
    uint32_t work_n;            /* request points in body */
    uint32_t work_extra;        /* lines of other points before them */
    unsigned char *gz;
    size_t gz_cap;
    z_stream zs;
    int zs_ready;
    rbatch_t *rq_head, *rq_tail;
    size_t rq_bytes;
    uint64_t rq_points;
    unsigned attempt;           /* consecutive failures at the queue's head */
    apr_time_t retry_at;
    apr_time_t last_fail_log;
    unsigned long fails_unlogged;
    int self_due;
    uint64_t self_last_sum;
    const imx_series_t *lm_series;  /* the last line bound and what it was for */
    const char *lm_method, *lm_tag;
    uint16_t lm_sample;
    size_t lm;
    char *xbuf;                 /* lines handed to imx_engine_submit(), sent at the
                                 * head of the next batch */
    size_t xlen, xcap;
    uint32_t xlines;
    uint32_t rng;

    /* Read by anyone (stats), written by the flusher. */
    _Atomic uint64_t tail_pub, work_pub, rq_points_pub, rq_bytes_pub;
    _Atomic uint64_t sent, rejected, dropped_retry, dropped_exit, retries, batches, bytes;
    _Atomic uint64_t maybe_stored;
    _Atomic apr_time_t last_ok, last_error_time;
    char last_error[200];       /* under mu */

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
    vsnprintf(msg, sizeof(msg), fmt, ap);  /* NOLINT(clang-analyzer-valist.Uninitialized): va_start above */
    va_end(ap);
    e->conf.log(e->conf.log_ctx, level, msg);
}

static apr_status_t engine_cleanup(void *data)
{
    imx_engine_t *e = data;

    rbatch_t *rb, *next;

    for (rb = e->rq_head; rb; rb = next) {
        next = rb->next;
        free(rb);
    }
    e->rq_head = e->rq_tail = NULL;
    free(e->xbuf);
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
        || conf->retry_base < 1 || conf->retry_interval <= 0
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
    size_t cap = e->body_cap ? e->body_cap : (size_t)e->conf.batch_size * 160 + 512;
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

#define SELF_FIELDS 10
#define SELF_MAX (SELF_FIELDS * (16 + 21) + 24)

/* The module's own counters as one line, so dashboards can watch delivery. */
static size_t encode_self(imx_engine_t *e, char *out)
{
    static const char *const names[SELF_FIELDS] = {
        " recorded=", ",sent=", ",rejected=", ",dropped_full=", ",dropped_retry=",
        ",dropped_exit=", ",retries=", ",buffered=", ",retry_bytes=", ",batches="
    };
    imx_stats_t st;
    uint64_t v[SELF_FIELDS];
    size_t pl = strlen(e->conf.self_prefix);
    char *o = out;

    imx_engine_stats(e, &st);
    v[0] = st.recorded; v[1] = st.sent; v[2] = st.rejected; v[3] = st.dropped_full;
    v[4] = st.dropped_retry; v[5] = st.dropped_exit; v[6] = st.retries;
    v[7] = st.buffered; v[8] = st.retry_bytes; v[9] = st.batches;
    memcpy(o, e->conf.self_prefix, pl);
    o += pl;
    for (int i = 0; i < SELF_FIELDS; i++) {
        size_t nl = strlen(names[i]);
        memcpy(o, names[i], nl);
        o = imx_put_u64(o + nl, v[i]);
        *o++ = 'i';
    }
    *o++ = ' ';
    o = imx_put_u64(o, (uint64_t)apr_time_now() * 1000);
    *o++ = '\n';
    return (size_t)(o - out);
}

/* Moves up to batch_size published points from the ring into the work body,
 * after the self line if one is due. Returns the number of lines in it. */
static uint32_t fill_batch(imx_engine_t *e)
{
    uint32_t n = 0;

    e->body_len = 0;
    e->work_extra = 0;
    if (e->self_due && e->conf.self_prefix) {
        if (e->body_cap >= strlen(e->conf.self_prefix) + SELF_MAX
            || grow_body(e, strlen(e->conf.self_prefix) + SELF_MAX)) {
            e->body_len = encode_self(e, e->body);
            e->work_extra = 1;
        }
        e->self_due = 0;
    }
    if (e->xlen && (e->body_cap >= e->body_len + e->xlen
                    || grow_body(e, e->body_len + e->xlen))) {
        memcpy(e->body + e->body_len, e->xbuf, e->xlen);
        e->body_len += e->xlen;
        e->work_extra += e->xlines;
        e->xlen = 0;
        e->xlines = 0;
    }
    while (n < e->conf.batch_size) {
        cell_t *c = &e->cells[e->tail & e->mask];
        size_t need;

        if (atomic_load_explicit(&c->seq, memory_order_acquire) != e->tail + 1) {
            break;              /* empty, or its producer is still writing */
        }
        /* Neighbouring points mostly share their strings: reuse the bound. */
        if (c->pt.series != e->lm_series || c->pt.method != e->lm_method
            || c->pt.tag != e->lm_tag || c->pt.sample != e->lm_sample) {
            e->lm_series = c->pt.series;
            e->lm_method = c->pt.method;
            e->lm_tag = c->pt.tag;
            e->lm_sample = c->pt.sample;
            e->lm = imx_line_max(e->prefix_len, &c->pt);
        }
        need = e->body_len + e->lm;
        if (need > e->body_cap && !grow_body(e, need)) {
            break;              /* out of memory: try again next round */
        }
        e->body_len += imx_encode_line(e->body + e->body_len, e->conf.line_prefix,
                                       e->prefix_len, &c->pt);
        atomic_store_explicit(&c->seq, e->tail + e->mask + 1, memory_order_release);
        e->tail++;
        n++;
    }
    e->work_n = n;
    atomic_store_explicit(&e->work_pub, n, memory_order_relaxed);
    atomic_store_explicit(&e->tail_pub, e->tail, memory_order_relaxed);
    return n + e->work_extra;
}

static void work_done(imx_engine_t *e)
{
    e->work_n = 0;
    e->work_extra = 0;
    e->body_len = 0;
    atomic_store_explicit(&e->work_pub, 0, memory_order_relaxed);
}

/* gzip data into e->gz; returns its length, 0 on failure. */
static size_t gzip_data(imx_engine_t *e, const char *data, size_t len)
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
    bound = deflateBound(&e->zs, (uLong)len);
    if (bound > e->gz_cap) {
        unsigned char *ng = realloc(e->gz, bound);
        if (!ng) {
            return 0;
        }
        e->gz = ng;
        e->gz_cap = bound;
    }
    e->zs.next_in = (unsigned char *)data;
    e->zs.avail_in = (uInt)len;
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

/* When to try the head of the retry buffer again: retry_interval times
 * retry_base^(attempt-1), capped at retry_max_delay, drawn from [d/2, d] so
 * children that failed together do not retry together. A Retry-After from
 * the backend wins; "slow" failures wait the longest delay. */
static apr_interval_time_t backoff(imx_engine_t *e, const imx_send_info_t *info)
{
    apr_interval_time_t d = e->conf.retry_interval;
    unsigned i;

    if (info->retry_after > 0) {
        return info->retry_after;
    }
    for (i = 1; i < e->attempt && d < e->conf.retry_max_delay; i++) {
        d *= e->conf.retry_base;
    }
    if (info->slow || d > e->conf.retry_max_delay) {
        d = e->conf.retry_max_delay;
    }
    return d / 2 + (apr_interval_time_t)(next_rand(e) % (uint32_t)(d / 2 + 1));
}

static void set_error(imx_engine_t *e, const char *err)
{
    apr_thread_mutex_lock(e->mu);
    snprintf(e->last_error, sizeof(e->last_error), "%s", err);
    apr_thread_mutex_unlock(e->mu);
    atomic_store(&e->last_error_time, apr_time_now());
}

static void note_failure(imx_engine_t *e, const char *what, uint32_t n, const char *err)
{
    apr_time_t now = apr_time_now();

    set_error(e, *err ? err : what);
    if (e->last_fail_log && now - e->last_fail_log < FAIL_LOG_INTERVAL) {
        e->fails_unlogged++;
        return;
    }
    logf_(e, IMX_LOG_ERR, "%s a batch of %u points%s%s (%lu more failures since the last report)",
          what, n, *err ? ": " : "", err, e->fails_unlogged);
    e->last_fail_log = now;
    e->fails_unlogged = 0;
}

static void rq_publish(imx_engine_t *e)
{
    atomic_store_explicit(&e->rq_points_pub, e->rq_points, memory_order_relaxed);
    atomic_store_explicit(&e->rq_bytes_pub, e->rq_bytes, memory_order_relaxed);
}

/* Counts n points of a batch given up on. If a POST of it may have reached
 * the backend, they are also counted as maybe_stored: the counters cannot
 * know, and say so instead of guessing. */
static void count_drop(imx_engine_t *e, _Atomic uint64_t *counter, uint32_t n, int maybe)
{
    atomic_fetch_add(counter, n);
    if (maybe) {
        atomic_fetch_add(&e->maybe_stored, n);
    }
}

/* Takes the head batch out of the retry buffer (the caller owns it then). */
static void rq_unlink_head(imx_engine_t *e)
{
    rbatch_t *rb = e->rq_head;

    e->rq_head = rb->next;
    if (!e->rq_head) {
        e->rq_tail = NULL;
    }
    e->rq_bytes -= sizeof(*rb) + rb->len;
    e->rq_points -= rb->n;
    rq_publish(e);
}

/* Puts a batch back at the head (it was the oldest and stays so). */
static void rq_link_head(imx_engine_t *e, rbatch_t *rb)
{
    rb->next = e->rq_head;
    e->rq_head = rb;
    if (!e->rq_tail) {
        e->rq_tail = rb;
    }
    e->rq_bytes += sizeof(*rb) + rb->len;
    e->rq_points += rb->n;
    rq_publish(e);
}

static void rq_pop(imx_engine_t *e)
{
    rbatch_t *rb = e->rq_head;

    rq_unlink_head(e);
    free(rb);
}

/* Appends (or, with front, prepends) a copy of data to the retry buffer,
 * evicting the oldest batches to make room. */
static void rq_add(imx_engine_t *e, const char *data, size_t len, uint32_t n,
                   uint32_t extra, apr_time_t first_fail, int front, int maybe)
{
    rbatch_t *rb;
    size_t need = sizeof(*rb) + len;

    if (need > e->conf.retry_buffer || !(rb = malloc(need))) {
        count_drop(e, &e->dropped_retry, n, maybe);
        note_failure(e, "dropped (retry buffer too small for it)", n, "");
        return;
    }
    while (e->rq_head && e->rq_bytes + need > e->conf.retry_buffer) {
        uint32_t old = e->rq_head->n;
        count_drop(e, &e->dropped_retry, old, e->rq_head->maybe_stored);
        rq_pop(e);
        note_failure(e, "retry buffer full, dropped the oldest", old, "");
    }
    memcpy(rb->data, data, len);
    rb->len = len;
    rb->n = n;
    rb->extra = extra;
    rb->first_fail = first_fail;
    rb->maybe_stored = maybe;
    if (front) {
        rb->next = e->rq_head;
        e->rq_head = rb;
        if (!e->rq_tail) {
            e->rq_tail = rb;
        }
    }
    else {
        rb->next = NULL;
        if (e->rq_tail) {
            e->rq_tail->next = rb;
        }
        else {
            e->rq_head = rb;
        }
        e->rq_tail = rb;
    }
    e->rq_bytes += need;
    e->rq_points += n;
    rq_publish(e);
}

/* 413: the two halves (at a line boundary) go to the front of the retry
 * buffer, to be sent at once. Returns 0 if data is one line (cannot split). */
static int split_to_front(imx_engine_t *e, const char *data, size_t len, uint32_t n,
                          uint32_t extra, apr_time_t first_fail)
{
    uint32_t lines = n + extra, half = lines / 2, seen = 0;
    uint32_t extra1 = extra < half ? extra : half;  /* extra lines come first */
    size_t cut = 0;

    if (lines < 2) {
        return 0;
    }
    while (seen < half) {
        const char *nl = memchr(data + cut, '\n', len - cut);
        if (!nl) {
            return 0;           /* fewer lines than counted: refuse, don't guess */
        }
        cut = (size_t)(nl - data) + 1;
        seen++;
    }
    /* Second half first, so the first half ends up at the very front. */
    rq_add(e, data + cut, len - cut, n - (half - extra1), extra - extra1, first_fail, 1, 0);
    rq_add(e, data, cut, half - extra1, extra1, first_fail, 1, 0);
    e->retry_at = 0;
    return 1;
}

/* Sends one batch. Returns 1 when it is settled (stored, refused or split),
 * 0 when it must be retried (the caller keeps it). */
static int send_data(imx_engine_t *e, const char *data, size_t len, uint32_t n,
                     uint32_t extra, apr_time_t first_fail, imx_send_info_t *info)
{
    const char *body = data;
    size_t blen = len;
    int gz = 0;
    imx_send_result_t res;

    memset(info, 0, sizeof(*info));
    if (e->conf.gzip) {
        size_t zl = gzip_data(e, data, len);
        if (zl) {
            body = (const char *)e->gz;
            blen = zl;
            gz = 1;
        }
    }
    /* Each send is bounded by the sender's own timeout; at shutdown also by
     * what is left of shutdown_timeout. */
    res = e->conf.send(e->conf.send_ctx, body, blen, gz, atomic_load(&e->stop_deadline), info);
    switch (res) {
    case IMX_SEND_OK:
        atomic_fetch_add_explicit(&e->sent, n, memory_order_relaxed);
        atomic_fetch_add_explicit(&e->batches, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&e->bytes, blen, memory_order_relaxed);
        atomic_store(&e->last_ok, apr_time_now());
        if (e->attempt) {
            logf_(e, IMX_LOG_NOTICE, "backend accepts writes again after %u failed attempts",
                  e->attempt);
            e->last_fail_log = 0;
        }
        e->attempt = 0;
        return 1;
    case IMX_SEND_PARTIAL:
        if (info->dropped > n) {
            info->dropped = n;
        }
        atomic_fetch_add_explicit(&e->sent, n - info->dropped, memory_order_relaxed);
        atomic_fetch_add_explicit(&e->rejected, info->dropped, memory_order_relaxed);
        atomic_fetch_add_explicit(&e->batches, 1, memory_order_relaxed);
        note_failure(e, "backend stored part of", n, info->err);
        e->attempt = 0;
        return 1;
    case IMX_SEND_TOO_LARGE:
        if (split_to_front(e, data, len, n, extra, first_fail)) {
            logf_(e, IMX_LOG_WARNING, "backend refused %zu bytes as too large; "
                  "sending the batch in halves (consider a smaller InfluxMetricsBatchSize)",
                  blen);
            return 1;
        }
        /* a single line too large is refused for good */
        __attribute__((fallthrough));
    case IMX_SEND_REJECT:
        atomic_fetch_add_explicit(&e->rejected, n, memory_order_relaxed);
        note_failure(e, "backend rejected", n, info->err);
        e->attempt = 0;
        return 1;
    default:
        atomic_fetch_add_explicit(&e->retries, 1, memory_order_relaxed);
        e->attempt++;
        note_failure(e, "will retry", n, info->err);
        e->retry_at = apr_time_now() + backoff(e, info);
        return 0;
    }
}

/* Drops retry-buffer batches that have failed for longer than allowed. */
static void expire(imx_engine_t *e, apr_time_t now)
{
    while (e->conf.retry_max_time && e->rq_head
           && now - e->rq_head->first_fail > e->conf.retry_max_time) {
        uint32_t n = e->rq_head->n;
        count_drop(e, &e->dropped_retry, n, e->rq_head->maybe_stored);
        rq_pop(e);
        note_failure(e, "gave up retrying", n, "retry time exceeded");
    }
}

/* Sends the retry buffer first, then the ring, batch by batch: full batches
 * always, and a partial one only for points recorded before `until` (the
 * ring's head when the flush interval ended), so that a steady trickle of
 * requests cannot turn into a POST per handful of points. While the backend
 * is backed off, the ring is emptied into the retry buffer. When stopping,
 * gives up at the deadline. */
static void drain(imx_engine_t *e, int final, uint64_t until)
{
    imx_send_info_t info;

    for (;;) {
        apr_time_t now = apr_time_now();
        apr_time_t stop_at = atomic_load(&e->stop_deadline);

        if (stop_at && now >= stop_at) {
            return;
        }
        expire(e, now);
        if (e->rq_head) {
            rbatch_t *rb = e->rq_head;

            if (e->retry_at > now) {
                if (fill_batch(e)) {
                    rq_add(e, e->body, e->body_len, e->work_n, e->work_extra, now, 0, 0);
                    work_done(e);
                    continue;
                }
                if (!final) {
                    return;
                }
                /* At exit, wait out the backoff if the budget allows. */
                apr_sleep((e->retry_at < stop_at ? e->retry_at : stop_at) - now);
                continue;
            }
            /* Out of the queue while it is sent, so that nothing done
             * meanwhile (a 413 split making room) can evict it; its points
             * count as "being sent" for the stats. */
            rq_unlink_head(e);
            atomic_store_explicit(&e->work_pub, rb->n, memory_order_relaxed);
            if (!send_data(e, rb->data, rb->len, rb->n, rb->extra, rb->first_fail, &info)) {
                rb->maybe_stored |= info.maybe_stored;
                rq_link_head(e, rb);
            }
            else {
                free(rb);
            }
            atomic_store_explicit(&e->work_pub, 0, memory_order_relaxed);
            continue;
        }
        if (atomic_load_explicit(&e->head, memory_order_relaxed) - e->tail < e->conf.batch_size
            && e->tail >= until && !e->self_due && !e->xlen) {
            return;             /* only a partial batch of new points: next interval */
        }
        if (!fill_batch(e)) {
            return;
        }
        if (!send_data(e, e->body, e->body_len, e->work_n, e->work_extra, now, &info)) {
            rq_add(e, e->body, e->body_len, e->work_n, e->work_extra, now, 0,
                   info.maybe_stored);
        }
        work_done(e);
    }
}

void imx_engine_submit(imx_engine_t *e, const char *data, size_t len, uint32_t lines)
{
    /* Kept for the head of the next batch, which the flusher builds right
     * after its tick: one POST per interval carries everything. */
    if (!len) {
        return;
    }
    if (e->xlen + len > e->xcap) {
        size_t cap = (e->xlen + len) * 2;
        char *nb = realloc(e->xbuf, cap);
        if (!nb) {
            return;
        }
        e->xbuf = nb;
        e->xcap = cap;
    }
    memcpy(e->xbuf + e->xlen, data, len);
    e->xlen += len;
    e->xlines += lines;
}

static void publish_stats(imx_engine_t *e)
{
    imx_stats_t st;

    if (e->conf.on_stats) {
        imx_engine_stats(e, &st);
        e->conf.on_stats(e->conf.stats_ctx, &st);
    }
}

/* Once per interval: is there news for the self line? */
static void self_tick(imx_engine_t *e)
{
    imx_stats_t st;
    uint64_t sum;

    if (!e->conf.self_prefix) {
        return;
    }
    imx_engine_stats(e, &st);
    sum = st.recorded + st.sent + st.rejected + st.dropped_full + st.dropped_retry
          + st.retries + st.buffered;
    if (sum != e->self_last_sum) {
        e->self_last_sum = sum;
        e->self_due = 1;
    }
}

static void *APR_THREAD_FUNC flusher_main(apr_thread_t *t, void *data)
{
    imx_engine_t *e = data;
    apr_time_t next_flush = apr_time_now() + e->conf.flush_interval;

    (void)t;
    while (atomic_load(&e->running)) {
        uint64_t until;
        apr_time_t now = apr_time_now();
        apr_time_t wake = e->rq_head && e->retry_at && e->retry_at < next_flush
                          ? e->retry_at : next_flush;
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
        until = 0;
        if (now >= next_flush) {
            next_flush = now + e->conf.flush_interval;
            until = atomic_load_explicit(&e->head, memory_order_relaxed);
            self_tick(e);
            if (e->conf.on_tick) {
                e->conf.on_tick(e->conf.tick_ctx, e, 0);
            }
        }
        drain(e, 0, until);
        publish_stats(e);
    }
    if (e->conf.on_tick) {
        e->conf.on_tick(e->conf.tick_ctx, e, 1);
    }
    drain(e, 1, UINT64_MAX);
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
    uint64_t left;

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
        drain(e, 1, UINT64_MAX);
    }
    /* Whatever is left was recorded and will never be sent. */
    left = e->work_n + (atomic_load(&e->head) - e->tail);
    atomic_fetch_add(&e->dropped_exit, left);
    work_done(e);
    while (e->rq_head) {
        count_drop(e, &e->dropped_exit, e->rq_head->n, e->rq_head->maybe_stored);
        rq_pop(e);
    }
    e->tail = atomic_load(&e->head);
    atomic_store(&e->tail_pub, e->tail);

    imx_engine_stats(e, &st);
    publish_stats(e);
    logf_(e, st.dropped_full || st.dropped_exit || st.dropped_retry || st.rejected
          ? IMX_LOG_WARNING : IMX_LOG_INFO,
          "flusher exit: recorded=%llu sent=%llu rejected=%llu dropped_full=%llu "
          "dropped_exit=%llu retries=%llu batches=%llu bytes=%llu dropped_retry=%llu "
          "maybe_stored=%llu",
          (unsigned long long)st.recorded, (unsigned long long)st.sent,
          (unsigned long long)st.rejected, (unsigned long long)st.dropped_full,
          (unsigned long long)st.dropped_exit, (unsigned long long)st.retries,
          (unsigned long long)st.batches, (unsigned long long)st.bytes,
          (unsigned long long)st.dropped_retry, (unsigned long long)st.maybe_stored);
}

uint64_t imx_engine_flush_now(imx_engine_t *e)
{
    uint64_t before = atomic_load(&e->sent);

    e->retry_at = 0;
    drain(e, 0, UINT64_MAX);
    return atomic_load(&e->sent) - before;
}

void imx_engine_stats(imx_engine_t *e, imx_stats_t *st)
{
    uint64_t head = atomic_load_explicit(&e->head, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&e->tail_pub, memory_order_relaxed);

    memset(st, 0, sizeof(*st));
    st->recorded = head;
    st->dropped_full = atomic_load_explicit(&e->dropped_full, memory_order_relaxed);
    st->sent = atomic_load_explicit(&e->sent, memory_order_relaxed);
    st->rejected = atomic_load_explicit(&e->rejected, memory_order_relaxed);
    st->dropped_retry = atomic_load_explicit(&e->dropped_retry, memory_order_relaxed);
    st->maybe_stored = atomic_load_explicit(&e->maybe_stored, memory_order_relaxed);
    st->dropped_exit = atomic_load_explicit(&e->dropped_exit, memory_order_relaxed);
    st->retries = atomic_load_explicit(&e->retries, memory_order_relaxed);
    st->batches = atomic_load_explicit(&e->batches, memory_order_relaxed);
    st->bytes = atomic_load_explicit(&e->bytes, memory_order_relaxed);
    st->retry_bytes = atomic_load_explicit(&e->rq_bytes_pub, memory_order_relaxed);
    st->buffered = (head - tail) + atomic_load_explicit(&e->work_pub, memory_order_relaxed)
                   + atomic_load_explicit(&e->rq_points_pub, memory_order_relaxed);
    st->last_ok = atomic_load(&e->last_ok);
    st->last_error_time = atomic_load(&e->last_error_time);
    apr_thread_mutex_lock(e->mu);
    memcpy(st->last_error, e->last_error, sizeof(st->last_error));
    apr_thread_mutex_unlock(e->mu);
}
