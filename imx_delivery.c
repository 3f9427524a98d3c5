/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_delivery.c: sending, and what the answers mean (see imx_delivery.h).
 *
 * A batch the backend could not take (down, slow, 429, 5xx) waits in the
 * retry buffer (imx_retry.h) and is retried with exponential backoff and
 * jitter, or after the backend's Retry-After. While it backs off, the
 * flusher keeps draining the ring into the retry buffer behind it, so the
 * ring stays free for the request path, and so it does while a POST waits
 * on a backend that does not answer (send_wait). When the retry buffer is
 * full its oldest batch is dropped and counted (dropped_retry), or moved to
 * the spool, as is a batch that has failed for longer than retry_max_time.
 * Memory is therefore bounded by the ring + retry_buffer + one batch being
 * encoded. Order is kept: nothing new is sent while older batches wait.
 *
 * Sending spooled files: once per flush interval, after the ring's batches,
 * while the backend is healthy (the retry buffer empty, no backoff under
 * way) and no full batch of new points waits, for at most half the
 * interval (at least one file). A file is one POST (split in halves on a
 * 413, and settled only when every part is), deleted once the backend
 * acknowledged it; then its points are counted in unspooled (or, refused,
 * in dropped_spool). A file that fails stays for later, marked "maybe
 * stored" when the POST may have reached the backend. Its parts already
 * stored are sent again with it then; InfluxDB overwrites them with the
 * same points, and nothing is counted twice.
 */
#include <string.h>

#include "imx_body.h"
#include "imx_delivery.h"
#include "imx_spill.h"

/* With a spool, the directory is scanned at least this often even when the
 * shared gauge says it holds no file (files put there by hand, a gauge left
 * low by a process killed mid-way). */
#define SPOOL_RESCAN apr_time_from_sec(5)

/* extra: the summary and self-metric lines in the batch, named apart so that
 * "a batch of 0 points" never reads as a bug when only those were in it. */
static void note_failure(imx_engine_t *e, const char *what, uint32_t n, uint32_t extra,
                         const char *err)
{
    char more[48] = "";

    apr_time_t now = apr_time_now();

    imx_set_error(e, *err ? err : what);
    if (e->last_fail_log && now - e->last_fail_log < IMX_FAIL_LOG_INTERVAL) {
        e->fails_unlogged++;
        return;
    }
    if (extra) {
        snprintf(more, sizeof(more), " and %u summary/self lines", extra);
    }
    imx_logf(e, IMX_LOG_ERR, "%s a batch of %u points%s%s%s (%lu more failures since the last "
          "report)", what, n, more, *err ? ": " : "", err, e->fails_unlogged);
    e->last_fail_log = now;
    e->fails_unlogged = 0;
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

/* rq_add's how: */
#define RQ_POSTED 1             /* a POST of it failed (else: never POSTed) */

#define RQ_FRONT 2              /* older than what the buffer holds: at its head */

/* Appends a copy of data to the retry buffer (gathered into the newest
 * batch when it can be), making room by moving the oldest batches to the
 * spool, or without a spool by dropping them. */
static void rq_add(imx_engine_t *e, const char *data, size_t len, uint32_t n,
                   uint32_t extra, apr_time_t first_fail, int maybe, int how)
{
    imx_rbatch_t *rb;
    int too_large = imx_retry_too_large(&e->rq, len);

    if (!how && !too_large && imx_retry_gather(&e->rq, data, len, n, extra, first_fail, maybe)) {
        return;
    }
    if (!too_large) {
        /* With a spool, nothing is dropped for room: another engine may
         * take what spill() freed before this one reserves it, and then
         * this batch goes to the spool too (below). */
        if (e->conf.spool) {
            if (e->rq.head && !imx_retry_fits(&e->rq, len)) {
                imx_spill_room(e, len);
            }
        }
        else {
            while (e->rq.head && !imx_retry_fits(&e->rq, len)) {
                uint32_t old = e->rq.head->n, old_extra = e->rq.head->extra;
                imx_count_drop(e, &e->c->dropped_retry, old, e->rq.head->maybe_stored);
                imx_retry_pop(&e->rq);
                note_failure(e, "retry buffer full, dropped the oldest", old, old_extra, "");
            }
        }
    }
    /* Too large, no memory, or (shared budget) the other engines hold all
     * of it once this one's own batches are gone: this batch is the one
     * that goes. */
    if (too_large || !(rb = imx_retry_new(&e->rq, data, len, n, extra, first_fail, maybe,
                                          (how & RQ_POSTED) != 0))) {
        if (e->conf.spool) {
            imx_spill_write(e, data, len, n, extra, maybe);
            imx_spool_sync(e->conf.spool);
            return;
        }
        imx_count_drop(e, &e->c->dropped_retry, n, maybe);
        note_failure(e, too_large
                     ? "dropped (retry buffer too small for it)"
                     : "retry buffer full, dropped the newest", n, extra, "");
        return;
    }
    if (how & RQ_FRONT) {
        imx_retry_push_head(&e->rq, rb);
    }
    else {
        imx_retry_push_tail(&e->rq, rb);
    }
}

/* Drops retry-buffer batches that have failed for longer than allowed, or
 * moves them to the spool: there they wait for the backend without a time
 * limit, and without taking memory. */
static void expire(imx_engine_t *e, apr_time_t now)
{
    uint64_t moved = 0;

    while (e->conf.retry_max_time && e->rq.head
           && now - e->rq.head->last_fail > e->conf.retry_max_time) {
        uint32_t n = e->rq.head->n, extra = e->rq.head->extra;
        if (e->conf.spool) {
            imx_spill_put(e, e->rq.head->data, e->rq.head->len, n, e->rq.head->extra,
                      e->rq.head->maybe_stored);
            moved += n;
            imx_retry_pop(&e->rq);
            continue;
        }
        imx_count_drop(e, &e->c->dropped_retry, n, e->rq.head->maybe_stored);
        imx_retry_pop(&e->rq);
        note_failure(e, "gave up retrying", n, extra, "retry time exceeded");
    }
    if (moved) {
        imx_spill_flush(e);
        imx_spool_sync(e->conf.spool);
        imx_spill_note(e, IMX_LOG_NOTICE, "retry time exceeded: moved to the spool", moved, "");
    }
}

static int send_data(imx_engine_t *e, const char *data, size_t len, uint32_t n,
                     uint32_t extra, apr_time_t first_fail, imx_send_info_t *info);

/* The halves of a batch a backend refused as too large (413): the cut
 * after half its lines, and the points and other lines of the first half
 * (the other lines come first, see imx_lp_join). 0 when it is one line, or
 * has fewer lines than counted (refuse, don't guess). */
typedef struct {
    size_t cut;
    uint32_t n1, extra1;
} halves_t;

static int halve(const char *data, size_t len, uint32_t n, uint32_t extra, halves_t *hv)
{
    uint32_t lines = n + extra, half = lines / 2;

    hv->extra1 = extra < half ? extra : half;
    hv->n1 = half - hv->extra1;
    return lines >= 2 && (hv->cut = imx_lp_lines_end(data, len, half)) != 0;
}

/* 413: sends the two halves (cut at a line boundary) at once, each split
 * again if need be. They are not queued: a small retry buffer would evict one
 * half to make room for the other. A half that then fails for another reason
 * goes to the retry buffer like any failed batch. Returns 0 if data is one
 * line (cannot split). */
static int send_halves(imx_engine_t *e, const char *data, size_t len, uint32_t n,
                       uint32_t extra, apr_time_t first_fail)
{
    imx_send_info_t info;
    halves_t hv;

    if (!halve(data, len, n, extra, &hv)) {
        return 0;
    }
    if (!send_data(e, data, hv.cut, hv.n1, hv.extra1, first_fail, &info)) {
        rq_add(e, data, hv.cut, hv.n1, hv.extra1, first_fail, info.maybe_stored, RQ_POSTED);
    }
    if (!send_data(e, data + hv.cut, len - hv.cut, n - hv.n1, extra - hv.extra1, first_fail,
                   &info)) {
        rq_add(e, data + hv.cut, len - hv.cut, n - hv.n1, extra - hv.extra1, first_fail,
               info.maybe_stored, RQ_POSTED);
    }
    return 1;
}

/* imx_send_wait_fn, from inside a POST that waits on the network: the
 * flusher is the ring's only drain, so a backend that does not answer (a
 * list of failover URLs that time out one by one) would otherwise let the
 * ring overflow while the backend that answers is up. Once the ring is three
 * quarters full, its points move to the retry buffer in batches of
 * batch_size (or, with a spool, on from there), as they do while the
 * flusher backs off; they are sent after the POST under way, in order. Not without a retry
 * buffer: there, a moved batch would be dropped, and in the ring it may
 * still be sent. */
static void send_wait(void *ctx)
{
    imx_engine_t *e = ctx;
    uint64_t high = (e->ring.mask + 1) / 4 * 3;

    if (e->in_wait || (!e->conf.retry_buffer && !e->conf.spool)) {
        return;
    }
    e->in_wait = 1;
    while (imx_ring_avail(&e->ring) >= high) {
        uint32_t n;

        e->side.len = 0;
        n = imx_body_take(e, &e->side, e->conf.batch_size);
        if (!n) {
            break;
        }
        rq_add(e, e->side.buf, e->side.len, n, 0, apr_time_now(), 0, 0);
    }
    e->in_wait = 0;
}

/* POSTs data (gzipped if configured) and keeps what every answer means for
 * the engine as a whole: successes reset the failure streak, failures set
 * the backoff. `sending`: points of this engine's own the POST carries (if
 * the process dies meanwhile, they may have been stored: maybe_stored);
 * `what`: the subject of failure messages. The caller
 * counts the points by the result. */
static imx_send_result_t post_body(imx_engine_t *e, const char *data, size_t len,
                                   uint32_t n, uint32_t sending, const char *what,
                                   imx_send_info_t *info, size_t *blen_out)
{
    const char *body = data;
    size_t blen = len;
    int gz = 0;
    imx_send_result_t res;

    memset(info, 0, sizeof(*info));
    info->wait = send_wait;
    info->wait_ctx = e;
    if (e->conf.gzip) {
        size_t zl = imx_body_gzip(e, data, len);
        if (zl) {
            body = (const char *)e->gz;
            blen = zl;
            gz = 1;
        }
    }
    /* Each send is bounded by the sender's own timeout; at shutdown also by
     * what is left of shutdown_timeout. */
    atomic_store_explicit(&e->c->sending, sending, memory_order_relaxed);
    res = e->conf.send(e->conf.send_ctx, body, blen, gz, atomic_load(&e->send_deadline), info);
    atomic_store_explicit(&e->c->sending, 0, memory_order_relaxed);
    *blen_out = blen;
    switch (res) {
    case IMX_SEND_OK:
    case IMX_SEND_PARTIAL:
        e->retry_at = 0;
        atomic_fetch_add_explicit(&e->c->batches, 1, memory_order_relaxed);
        if (res == IMX_SEND_OK) {
            atomic_fetch_add_explicit(&e->c->bytes, blen, memory_order_relaxed);
            atomic_store(&e->c->last_ok, apr_time_now());
            if (e->attempt) {
                imx_logf(e, IMX_LOG_NOTICE, "backend accepts writes again after %u failed "
                      "attempts", e->attempt);
                e->last_fail_log = 0;
            }
        }
        else {
            if (info->dropped > n) {
                info->dropped = n;
            }
            note_failure(e, what, n, 0, info->err);   /* "... stored part of" */
        }
        e->attempt = 0;
        break;
    case IMX_SEND_TOO_LARGE:
        break;
    case IMX_SEND_REJECT:
        e->attempt = 0;
        break;
    default:
        atomic_fetch_add_explicit(&e->c->retries, 1, memory_order_relaxed);
        e->attempt++;
        e->retry_at = apr_time_now() + backoff(e, info);
        break;
    }
    return res;
}

/* Sends one batch. Returns 1 when it is settled (stored, refused or split),
 * 0 when it must be retried (the caller keeps it). */
static int send_data(imx_engine_t *e, const char *data, size_t len, uint32_t n,
                     uint32_t extra, apr_time_t first_fail, imx_send_info_t *info)
{
    size_t blen;

    switch (post_body(e, data, len, n, n, "backend stored part of", info, &blen)) {
    case IMX_SEND_OK:
        atomic_fetch_add_explicit(&e->c->sent, n, memory_order_relaxed);
        return 1;
    case IMX_SEND_PARTIAL:
        atomic_fetch_add_explicit(&e->c->sent, n - info->dropped, memory_order_relaxed);
        atomic_fetch_add_explicit(&e->c->rejected, info->dropped, memory_order_relaxed);
        return 1;
    case IMX_SEND_TOO_LARGE:
        imx_logf(e, IMX_LOG_WARNING, "backend refused %zu bytes as too large; "
              "sending the batch in halves (consider a smaller InfluxMetricsBatchSize)",
              blen);
        if (send_halves(e, data, len, n, extra, first_fail)) {
            e->attempt = 0;
            return 1;
        }
        /* a single line too large is refused for good */
        __attribute__((fallthrough));
    case IMX_SEND_REJECT:
        atomic_fetch_add_explicit(&e->c->rejected, n, memory_order_relaxed);
        note_failure(e, "backend rejected", n, extra, info->err);
        e->attempt = 0;
        return 1;
    default:
        note_failure(e, "will retry", n, extra, info->err);
        return 0;
    }
}

void imx_delivery_drain(imx_engine_t *e, int final, uint64_t until)
{
    imx_send_info_t info;

    for (;;) {
        apr_time_t now = apr_time_now();
        apr_time_t stop_at = atomic_load(&e->send_deadline);

        if (stop_at && now >= stop_at) {
            return;
        }
        if (!final && e->next_flush && now >= e->next_flush) {
            return;
        }
        expire(e, now);
        if (e->rq.head) {
            imx_rbatch_t *rb = e->rq.head;

            if (e->retry_at > now) {
                if (imx_body_fill(e)) {
                    rq_add(e, e->wb.buf, e->wb.len, e->work_n, e->work_extra, now, 0, 0);
                    imx_body_done(e);
                    continue;
                }
                if (!final) {
                    return;
                }
                /* With a spool, a backoff that outlasts the time for
                 * sending is not waited for: the spool takes the rest. */
                if (e->conf.spool && e->retry_at >= stop_at) {
                    return;
                }
                /* At exit, wait out the backoff if the budget allows. */
                apr_sleep((e->retry_at < stop_at ? e->retry_at : stop_at) - now);
                continue;
            }
            /* Out of the queue while it is sent, so that nothing done
             * meanwhile can evict it. */
            imx_retry_unlink_head(&e->rq);
            rb->posted = 1;
            if (!send_data(e, rb->data, rb->len, rb->n, rb->extra, rb->first_fail, &info)) {
                rb->maybe_stored |= info.maybe_stored;
                imx_retry_push_head(&e->rq, rb);
            }
            else {
                imx_retry_free(&e->rq, rb);
            }
            continue;
        }
        if (imx_ring_avail(&e->ring)
                < e->conf.batch_size
            && e->ring.tail >= until && !e->self_due && !e->xlen) {
            return;             /* only a partial batch of new points: next interval */
        }
        if (!imx_body_fill(e)) {
            return;
        }
        if (!send_data(e, e->wb.buf, e->wb.len, e->work_n, e->work_extra, now, &info)) {
            /* Before what send_wait moved there meanwhile: it is older. */
            rq_add(e, e->wb.buf, e->wb.len, e->work_n, e->work_extra, now,
                   info.maybe_stored, RQ_POSTED | (e->rq.head ? RQ_FRONT : 0));
        }
        imx_body_done(e);
    }
}

/* ------------------------------------------------------------------------- */
/* Sending from the spool                                                     */

/* POSTs (part of) a spooled file. Returns 1 when every part is settled,
 * adding to *stored and *refused; 0 when it must be tried again, with the
 * backoff set. The caller counts only a settled file, so the parts of a
 * file tried again are never counted twice. */
static int spool_post(imx_engine_t *e, const char *data, size_t len, uint32_t n,
                      uint32_t extra, uint64_t *stored, uint64_t *refused,
                      imx_send_info_t *info)
{
    size_t blen;

    switch (post_body(e, data, len, n, 0, "spooled: backend stored part of", info, &blen)) {
    case IMX_SEND_OK:
        *stored += n;
        return 1;
    case IMX_SEND_PARTIAL:
        *stored += n - info->dropped;
        *refused += info->dropped;
        return 1;
    case IMX_SEND_TOO_LARGE: {
        /* In halves, each split again if need be; the file is settled only
         * when all are. */
        halves_t hv;

        if (halve(data, len, n, extra, &hv)) {
            imx_logf(e, IMX_LOG_WARNING, "backend refused %zu bytes of spooled points as too "
                  "large; sending them in halves", blen);
            return spool_post(e, data, hv.cut, hv.n1, hv.extra1, stored, refused, info)
                   && spool_post(e, data + hv.cut, len - hv.cut, n - hv.n1, extra - hv.extra1,
                                 stored, refused, info);
        }
    }
        __attribute__((fallthrough));
    case IMX_SEND_REJECT:
        *refused += n;
        note_failure(e, "spooled: backend rejected", n, extra, info->err);
        e->attempt = 0;
        return 1;
    default:
        note_failure(e, "spooled: will retry", n, extra, info->err);
        return 0;
    }
}

void imx_delivery_spool_round(imx_engine_t *e, apr_time_t until, unsigned max_files)
{
    imx_spool_t *sp = e->conf.spool;
    int warned = 0;

    for (unsigned i = 0; sp && i < max_files; i++) {
        apr_time_t now = apr_time_now();
        imx_spool_drop_t bad = { 0, 0 };
        imx_spool_file_t f;
        imx_send_info_t info;
        uint64_t stored = 0, refused = 0;
        int got;

        if (atomic_load(&e->ring.stopping) || e->rq.head || now < e->retry_at
            || (i && now >= until)
            || imx_ring_avail(&e->ring) >= e->conf.batch_size) {
            return;
        }
        if (!imx_spool_files(sp) && now < e->spool_scan_at) {
            return;
        }
        /* A file is deleted once sent: without that right, sending would
         * send the same points again and again. */
        if (!imx_spool_writable(sp)) {
            if (!warned++) {
                imx_spill_note(e, IMX_LOG_ERR, "spool directory not writable; not sending the "
                           "spooled", imx_spool_pending(sp), "");
            }
            return;
        }
        got = imx_spool_claim(sp, &f, &bad);
        if (bad.points) {
            atomic_fetch_add(&e->c->maybe_stored, bad.maybe);
            atomic_fetch_add(&e->c->dropped_spool, bad.points);
        }
        if (!got) {
            e->spool_scan_at = now + SPOOL_RESCAN;
            return;
        }
        if (spool_post(e, f.data, (size_t)f.h.len, f.h.points, f.h.extra, &stored, &refused,
                       &info)) {
            /* Deleted first, counted then: a process killed in between
             * leaves the points stored but uncounted, never counted twice. */
            imx_spool_done(sp, &f);
            atomic_fetch_add(&e->c->unspooled, stored);
            atomic_fetch_add(&e->c->dropped_spool, refused);
        }
        else {
            imx_spool_release(sp, &f, info.maybe_stored);
        }
    }
}
