/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_spill.c: the engine's side of the spool (see imx_spill.h).
 *
 * With a spool, nothing is dropped for want of memory or time: batches the
 * retry buffer cannot keep (full, older than retry_max_time, larger than
 * it) are written to the spool instead, oldest first, gathered into files
 * of up to batch_size points. At exit the flusher sends for the first half
 * of shutdown_timeout (and does not wait out a backoff that ends later),
 * then writes the retry buffer and the rest of the ring, encoded, to the
 * spool in the second half; only what is left at the deadline is
 * dropped_exit. Points are counted in to_spool once their write is over,
 * whether it succeeded or not (a failed write is dropped_spool too), so a
 * process killed mid-write still holds them: lost_in_crash, not to_spool.
 */
#include <stdlib.h>
#include <string.h>

#include "imx_body.h"
#include "imx_spill.h"

void imx_spill_note(imx_engine_t *e, int level, const char *what, uint64_t n,
                    const char *err)
{
    apr_time_t now = apr_time_now();

    if (level <= IMX_LOG_ERR) {
        imx_set_error(e, err);
    }
    if (e->spool_log_at && now - e->spool_log_at < IMX_FAIL_LOG_INTERVAL) {
        e->spool_unlogged++;
        return;
    }
    imx_logf(e, level, "%s %llu points%s%s (%lu more since the last report)", what,
             (unsigned long long)n, *err ? ": " : "", err, e->spool_unlogged);
    e->spool_log_at = now;
    e->spool_unlogged = 0;
}

void imx_spill_write(imx_engine_t *e, const char *data, size_t len, uint32_t n,
                     uint32_t extra, int maybe)
{
    imx_spool_drop_t ev = { 0, 0 };
    char err[256];
    int rv;

    err[0] = '\0';
    rv = imx_spool_write(e->conf.spool, data, len, n, extra, maybe, 0, &ev, err, sizeof(err));
    if (ev.points) {
        imx_count_drop(e, &e->c->dropped_spool, ev.points, 0);
        atomic_fetch_add(&e->c->maybe_stored, ev.maybe);
        imx_spill_note(e, IMX_LOG_WARNING, "spool full (InfluxMetricsSpoolSize): deleted the "
                       "oldest files, dropped", ev.points, "");
    }
    if (rv) {
        imx_count_drop(e, &e->c->dropped_spool, n, maybe);
    }
    atomic_fetch_add(&e->c->to_spool, n);
    if (rv) {
        imx_spill_note(e, IMX_LOG_ERR, "could not spool, dropped", n, err);
    }
}

void imx_spill_flush(imx_engine_t *e)
{
    if (e->sacc.len) {
        imx_spill_write(e, e->sacc.buf, e->sacc.len, e->sacc_n, e->sacc_extra, e->sacc_maybe);
    }
    e->sacc.len = 0;
    e->sacc_n = e->sacc_extra = 0;
    e->sacc_maybe = 0;
}

void imx_spill_put(imx_engine_t *e, const char *data, size_t len, uint32_t n,
                   uint32_t extra, int maybe)
{
    /* Up to batch_size points and imx_spool_file_max() bytes a file; a
     * larger batch gets a file of its own. */
    if (e->sacc.len && ((uint64_t)e->sacc_n + n > e->conf.batch_size
                        || e->sacc.len + len > imx_spool_file_max(e->conf.spool))) {
        imx_spill_flush(e);
    }
    /* Grown in steps from 64 KiB: most files are small. */
    if (!imx_lpbuf_grow(&e->sacc, e->sacc.len + len, 65536)) {
        /* Out of memory: this batch goes out on its own. */
        imx_spill_flush(e);
        imx_spill_write(e, data, len, n, extra, maybe);
        return;
    }
    /* Other lines first in the file too: a 413 split relies on it. */
    imx_lp_join(e->sacc.buf, &e->sacc.len, e->sacc_extra, data, len, extra);
    e->sacc_n += n;
    e->sacc_extra += extra;
    e->sacc_maybe |= maybe;
}

void imx_spill_room(imx_engine_t *e, size_t len)
{
    uint64_t moved = 0;

    while (e->rq.head && !imx_retry_fits(&e->rq, len)) {
        imx_rbatch_t *rb = e->rq.head;

        imx_spill_put(e, rb->data, rb->len, rb->n, rb->extra, rb->maybe_stored);
        moved += rb->n;
        imx_retry_pop(&e->rq);
    }
    imx_spill_flush(e);
    imx_spool_sync(e->conf.spool);
    imx_spill_note(e, IMX_LOG_NOTICE, "retry buffer full: moved to the spool", moved, "");
}

void imx_spill_leftovers(imx_engine_t *e)
{
    apr_time_t end = atomic_load(&e->stop_deadline);

    while (e->rq.head && imx_now_safe() < end) {
        imx_rbatch_t *rb = e->rq.head;

        imx_spill_put(e, rb->data, rb->len, rb->n, rb->extra, rb->maybe_stored);
        imx_retry_pop(&e->rq);
    }
    if (!e->rq.head && e->wb.len && imx_now_safe() < end) {
        imx_spill_put(e, e->wb.buf, e->wb.len, e->work_n, e->work_extra, 0);
        imx_body_done(e);
    }
    while (!e->rq.head && !e->wb.len && imx_now_safe() < end && imx_body_fill(e)) {
        imx_spill_put(e, e->wb.buf, e->wb.len, e->work_n, e->work_extra, 0);
        imx_body_done(e);
    }
    if (e->sacc.len && imx_now_safe() < end) {
        imx_spill_flush(e);
    }
    if (e->sacc.len) {
        imx_count_drop(e, &e->c->dropped_exit, e->sacc_n, e->sacc_maybe);
        e->sacc.len = 0;
        e->sacc_n = e->sacc_extra = 0;
        e->sacc_maybe = 0;
    }
    imx_spool_sync(e->conf.spool);
}
