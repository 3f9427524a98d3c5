/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_engine.c: the flusher thread and the engine's life (see
 * imx_engine.h).
 *
 * The flusher
 *   One thread per process. It sleeps in poll() on a pipe until the flush
 *   interval passes or a producer whose index completes a batch writes a byte
 *   to it (a full pipe just means a wake-up is already pending). It then
 *   drains the ring in batches of batch_size points, encodes them as line
 *   protocol, optionally gzips them and hands them to the send callback. It
 *   returns to its loop at least once per interval, so the tick (summaries,
 *   the module's own counters) is never starved by a steady stream of full
 *   batches; and a cell claimed but not yet published (its producer was
 *   preempted) makes it wait a millisecond, not spin.
 *
 * Exit
 *   imx_engine_stop() may run in a signal handler (prefork stops children
 *   from SIGTERM's). It only sets a flag and a deadline, bounds the POST in
 *   flight through send_limit, writes to the wake pipe and poll()s the done
 *   pipe. The flusher itself does the final tick and flush, counts what it
 *   could not send, logs, calls on_exit and writes the done pipe. The
 *   flusher is a detached pthread whose buffers are malloc'd by itself: if it
 *   overruns the deadline, the caller goes on and the process exits around
 *   it, but nothing it touches has been freed.
 *
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "imx_body.h"
#include "imx_delivery.h"
#include "imx_spill.h"

static int make_pipe(int *r, int *w)
{
    int fds[2];

    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
        return errno;
    }
    *r = fds[0];
    *w = fds[1];
    return 0;
}

static void drain_pipe(int fd)
{
    char buf[64];

    while (read(fd, buf, sizeof(buf)) > 0) {
        ;
    }
}

/* Pool cleanup: close() is async-signal-safe. A flusher that overran its
 * deadline keeps its pipes: their numbers could otherwise be reused for
 * another file that its last write would then land in. */
static apr_status_t close_pipes(void *data)
{
    imx_engine_t *e = data;

    if (!atomic_load(&e->finished)) {
        return APR_SUCCESS;
    }
    close(e->wake_r);
    close(e->wake_w);
    close(e->done_r);
    close(e->done_w);
    e->wake_r = e->wake_w = e->done_r = e->done_w = -1;
    return APR_SUCCESS;
}

/* Frees what the flusher allocated; by the flusher itself at its exit (or
 * by imx_engine_stop when there is no flusher), never from a pool cleanup,
 * which prefork may run inside a signal handler. */
static void free_buffers(imx_engine_t *e)
{
    while (e->rq.head) {
        imx_retry_pop(&e->rq);
    }
    imx_body_free(e);
    free(e->xbuf);
    e->xbuf = NULL;
    e->xcap = e->xlen = 0;
    free(e->sacc.buf);
    memset(&e->sacc, 0, sizeof(e->sacc));
}

imx_engine_t *imx_engine_create(apr_pool_t *p, const imx_engine_conf_t *conf,
                                char *err, size_t errsz)
{
    imx_engine_t *e;
    uint64_t cap = 2;
    char *mem, *rids = NULL;
    void *cells;
    apr_status_t rv;

    if (!conf->line_prefix || !conf->send || conf->batch_size < 1
        || conf->retry_base < 1 || conf->retry_interval <= 0
        || conf->capacity < 2 || conf->capacity > (1u << 30)) {
        snprintf(err, errsz, "invalid engine configuration");
        return NULL;
    }
    /* A batch larger than the ring would never complete, so producers would
     * never wake the flusher early: the ring would fill and drop instead. */
    if (conf->batch_size > conf->capacity) {
        snprintf(err, errsz, "batch size %u is larger than the buffer (%u points)",
                 conf->batch_size, conf->capacity);
        return NULL;
    }
    while (cap < conf->capacity) {
        cap <<= 1;
    }
    /* apr_palloc aligns to 8 only; the struct and the ring want cache lines. */
    mem = apr_palloc(p, sizeof(*e) + IMX_CACHE_LINE);
    e = (imx_engine_t *)(((uintptr_t)mem + IMX_CACHE_LINE - 1)
                         & ~(uintptr_t)(IMX_CACHE_LINE - 1));
    memset(e, 0, sizeof(*e));
    e->conf = *conf;
    e->c = conf->counters ? conf->counters : &e->own;
    e->wake_r = e->wake_w = e->done_r = e->done_w = -1;
    atomic_store(&e->finished, 1);
    e->prefix_len = strlen(conf->line_prefix);
    e->tsc.ms = -1;
    if (conf->cells) {
        if (cap != conf->capacity || ((uintptr_t)conf->cells & (IMX_CACHE_LINE - 1))) {
            snprintf(err, errsz, "caller's ring must be a power of two of aligned cells");
            return NULL;
        }
        cells = conf->cells;
    }
    else {
        /* apr_palloc aborts the process (its abort function) rather than
         * return NULL, so there is no failure to handle here. */
        mem = apr_palloc(p, cap * sizeof(imx_cell_t) + IMX_CACHE_LINE);
        cells = (void *)(((uintptr_t)mem + IMX_CACHE_LINE - 1)
                         & ~(uintptr_t)(IMX_CACHE_LINE - 1));
    }
    if (conf->rids) {
        rids = conf->rids;
    }
    else if (conf->rid_cells) {
        rids = apr_palloc(p, (size_t)cap * IMX_RID_MAX);
    }
    imx_retry_init(&e->rq, conf->retry_buffer, conf->retry_shared, conf->batch_size,
                   conf->retry_max_time, e->c);
    e->rng = (uint32_t)apr_time_now() ^ (uint32_t)(uintptr_t)e ^ 0x9e3779b9u;
    if (!e->rng) {
        e->rng = 1;
    }
    if ((rv = apr_thread_mutex_create(&e->mu, APR_THREAD_MUTEX_DEFAULT, p)) != APR_SUCCESS) {
        snprintf(err, errsz, "cannot create the flusher's mutex (%d)", rv);
        return NULL;
    }
    if ((rv = make_pipe(&e->wake_r, &e->wake_w)) != 0
        || (rv = make_pipe(&e->done_r, &e->done_w)) != 0) {
        snprintf(err, errsz, "cannot create the flusher's pipes: %s", strerror(rv));
        return NULL;
    }
    imx_ring_init(&e->ring, cells, rids, (uint32_t)cap, e->c, conf->batch_size, e->wake_w);
    apr_pool_cleanup_register(p, e, close_pipes, apr_pool_cleanup_null);
    return e;
}

int imx_engine_push(imx_engine_t *e, const imx_point_t *pt, const char *rid)
{
    return imx_ring_push(&e->ring, pt, rid);
}

imx_ring_t *imx_engine_ring(imx_engine_t *e)
{
    return &e->ring;
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

/* What is left when the flusher gives up: recorded, never to be sent. */
static void count_leftovers(imx_engine_t *e)
{
    if (e->work_n) {
        atomic_fetch_add(&e->c->dropped_exit, e->work_n);
        imx_body_done(e);
    }
    while (e->rq.head) {
        imx_count_drop(e, &e->c->dropped_exit, e->rq.head->n, e->rq.head->maybe_stored);
        imx_retry_pop(&e->rq);
    }
    imx_ring_abandon(&e->ring);
}

static void log_exit(imx_engine_t *e)
{
    imx_stats_t st;

    imx_engine_stats(e, &st);
    imx_logf(e, st.dropped_full || st.dropped_exit || st.dropped_retry || st.rejected
          || st.dropped_spool ? IMX_LOG_WARNING : IMX_LOG_INFO,
          "flusher exit: recorded=%llu sent=%llu rejected=%llu dropped_full=%llu "
          "dropped_exit=%llu retries=%llu batches=%llu bytes=%llu dropped_retry=%llu "
          "maybe_stored=%llu to_spool=%llu unspooled=%llu dropped_spool=%llu",
          (unsigned long long)st.recorded, (unsigned long long)st.sent,
          (unsigned long long)st.rejected, (unsigned long long)st.dropped_full,
          (unsigned long long)st.dropped_exit, (unsigned long long)st.retries,
          (unsigned long long)st.batches, (unsigned long long)st.bytes,
          (unsigned long long)st.dropped_retry, (unsigned long long)st.maybe_stored,
          (unsigned long long)st.to_spool, (unsigned long long)st.unspooled,
          (unsigned long long)st.dropped_spool);
}

/* The flusher's last steps, in its own thread (or in imx_engine_stop's
 * caller when there is none). */
static void finish(imx_engine_t *e)
{
    if (e->conf.on_tick) {
        e->conf.on_tick(e->conf.tick_ctx, e, 1);
    }
    e->final = 1;
    imx_delivery_drain(e, 1, UINT64_MAX);
    if (e->conf.spool) {
        imx_spill_leftovers(e);
    }
    count_leftovers(e);
    publish_stats(e);
    log_exit(e);
    free_buffers(e);
    if (e->conf.on_exit) {
        e->conf.on_exit(e->conf.exit_ctx);
    }
}

static void *flusher_main(void *data)
{
    imx_engine_t *e = data;

    e->next_flush = apr_time_now() + e->conf.flush_interval;
    while (!atomic_load(&e->ring.stopping)) {
        apr_time_t now = apr_time_now(), wake;
        uint64_t until = 0, avail;
        struct pollfd pfd;
        int ms, ticked = 0;

        if (now >= e->next_flush) {
            e->next_flush = now + e->conf.flush_interval;
            until = atomic_load_explicit(&e->c->recorded, memory_order_relaxed);
            ticked = 1;
            imx_body_self_tick(e);
            if (e->conf.on_tick) {
                e->conf.on_tick(e->conf.tick_ctx, e, 0);
            }
        }
        imx_delivery_drain(e, 0, until);
        if (ticked && e->conf.spool) {
            /* Current points first; then old ones for half an interval. */
            imx_delivery_spool_round(e, now + e->conf.flush_interval / 2, UINT_MAX);
        }
        publish_stats(e);

        now = apr_time_now();
        wake = e->rq.head && e->retry_at && e->retry_at < e->next_flush
               ? e->retry_at : e->next_flush;
        avail = imx_ring_avail(&e->ring);
        if (avail >= e->conf.batch_size && !e->rq.head) {
            const char *rid;

            if (imx_ring_peek(&e->ring, &rid)) {
                continue;       /* more full batches wait */
            }
            /* Its producer was preempted between claiming the cell and
             * publishing it: give it a moment instead of spinning. */
            ms = 1;
        }
        else {
            ms = wake > now ? (int)((wake - now + 999) / 1000) : 0;
        }
        pfd.fd = e->wake_r;
        pfd.events = POLLIN;
        pfd.revents = 0;
        if (ms > 0 && poll(&pfd, 1, ms) > 0) {
            drain_pipe(e->wake_r);
        }
    }
    finish(e);
    {
        ssize_t n = write(e->done_w, "", 1);
        (void)n;
    }
    /* The very last touch of the engine: once it is seen, the pipes may be
     * closed and the process may go. The stopper, woken by the byte above,
     * waits for it (a few instructions away). */
    atomic_store_explicit(&e->finished, 1, memory_order_release);
    return NULL;
}

apr_status_t imx_engine_start(imx_engine_t *e)
{
    pthread_attr_t attr;
    sigset_t mask, old;
    int rv;

    atomic_store(&e->finished, 0);
    /* Process-directed signals (prefork's SIGTERM, SIGHUP, SIGUSR1) must land
     * in the threads httpd expects; but a fault in the flusher itself must
     * still reach httpd's crash handling, and blocked synchronous faults
     * would only kill the process silently. */
    sigfillset(&mask);
    sigdelset(&mask, SIGSEGV);
    sigdelset(&mask, SIGBUS);
    sigdelset(&mask, SIGILL);
    sigdelset(&mask, SIGFPE);
    sigdelset(&mask, SIGABRT);
    sigdelset(&mask, SIGTRAP);
    sigdelset(&mask, SIGSYS);
    pthread_attr_init(&attr);
    /* Detached: nobody joins it in a signal handler; done_w says it ended. */
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_sigmask(SIG_BLOCK, &mask, &old);
    rv = pthread_create(&e->thread, &attr, flusher_main, e);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (rv != 0) {
        atomic_store(&e->finished, 1);
        return APR_FROM_OS_ERROR(rv);
    }
    atomic_store(&e->has_thread, 1);
    return APR_SUCCESS;
}

int imx_engine_stop(imx_engine_t *e)
{
    apr_time_t deadline;

    if (atomic_exchange(&e->ring.stopping, 1)) {
        /* Already asked: just wait for the flusher again (bounded). */
        deadline = atomic_load(&e->stop_deadline);
    }
    else {
        apr_time_t send_by;

        deadline = imx_now_safe() + e->conf.shutdown_timeout;
        /* With a spool, the second half is for writing what was not sent. */
        send_by = deadline - (e->conf.spool ? e->conf.shutdown_timeout / 2 : 0);
        atomic_store(&e->send_deadline, send_by);
        atomic_store(&e->stop_deadline, deadline);
        if (e->conf.send_limit) {
            e->conf.send_limit(e->conf.send_ctx, send_by);
        }
        if (!atomic_load(&e->has_thread)) {
            finish(e);          /* no flusher: not in a signal handler (tests) */
            return 1;
        }
        {
            ssize_t n = write(e->wake_w, "", 1);
            (void)n;
        }
    }
    /* Wait for the flusher's word, a little past its own deadline (its
     * last steps after the final POST are short), with poll(): this may be
     * a signal handler. */
    for (;;) {
        struct pollfd pfd;
        apr_time_t left = deadline + apr_time_from_msec(300) - imx_now_safe();

        if (atomic_load(&e->finished)) {
            return 1;
        }
        if (left <= 0) {
            return 0;
        }
        pfd.fd = e->done_r;
        pfd.events = POLLIN;
        pfd.revents = 0;
        if (poll(&pfd, 1, (int)((left + 999) / 1000)) < 0 && errno != EINTR) {
            return atomic_load(&e->finished);
        }
    }
}

uint64_t imx_engine_flush_now(imx_engine_t *e)
{
    uint64_t before = atomic_load(&e->c->sent);

    e->retry_at = 0;
    imx_delivery_drain(e, 0, UINT64_MAX);
    e->spool_scan_at = 0;
    imx_delivery_spool_round(e, (apr_time_t)INT64_MAX, 100000);
    return atomic_load(&e->c->sent) - before;
}

void imx_engine_stats(imx_engine_t *e, imx_stats_t *st)
{
    memset(st, 0, sizeof(*st));
    imx_counters_read(e->c, st);
    if (e->conf.spool) {
        st->spooled = imx_spool_pending(e->conf.spool);
    }
    apr_thread_mutex_lock(e->mu);
    memcpy(st->last_error, e->last_error, sizeof(st->last_error));
    apr_thread_mutex_unlock(e->mu);
}
