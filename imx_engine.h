/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_engine.h: the engine: a ring of points per process, and the flusher
 * thread that encodes them into line protocol and POSTs them, with retries,
 * a retry buffer and a spool.
 *
 * Everything here depends on APR and the C library only, never on httpd, so
 * the engine links into unit tests and benchmarks without a server. The glue
 * (mod_influx_metrics_request.c) turns a request_rec into an imx_point_t and
 * pushes it; the flusher drains, encodes and hands the bytes to a send
 * callback (imx_http.h provides the libcurl one).
 *
 * The engine's units, each in its own file: imx_ring (the ring),
 * imx_retry (the retry buffer), imx_body (POST bodies from the ring),
 * imx_delivery (sending, and what the answers mean), imx_spill (the
 * engine's side of the spool), imx_engine (the thread and its life).
 */
#ifndef IMX_ENGINE_H
#define IMX_ENGINE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <apr_pools.h>
#include <apr_time.h>

#include "imx_counters.h"
#include "imx_lineproto.h"
#include "imx_log.h"
#include "imx_point.h"
#include "imx_ring.h"
#include "imx_send.h"
#include "imx_spool.h"
#include "imx_ts.h"

typedef struct imx_engine imx_engine_t;

/* Called by the flusher after every round with a snapshot (the glue keeps
 * the last error's text where the status page can read it). */
typedef void imx_stats_fn(void *ctx, const imx_stats_t *st);

/* Called by the flusher once per flush interval, and once more (final = 1)
 * when it stops, so the glue can add points of its own with
 * imx_engine_submit(). */
typedef void imx_tick_fn(void *ctx, imx_engine_t *e, int final);

/* Called by the flusher thread as the very last thing it does, after the
 * final flush: the place to release what only it uses (the sender's
 * handles). Never called from a signal handler. */
typedef void imx_exit_fn(void *ctx);

typedef struct imx_engine_conf {
    const char *line_prefix;    /* escaped "measurement,host=name" */
    uint32_t capacity;          /* records held before drops, >= 2 */
    uint32_t batch_size;        /* max points per send, 1 .. capacity */
    apr_interval_time_t flush_interval;
    apr_interval_time_t shutdown_timeout;   /* budget for the final flush */
    /* Retries, as in the official clients' write APIs: the first after
     * about retry_interval, each next one retry_base times later, at most
     * retry_max_delay apart; a batch failing for longer than retry_max_time
     * (0: no limit) is dropped. Failed batches wait in a retry buffer of at
     * most retry_buffer bytes; when it is full the oldest batch is dropped. */
    apr_interval_time_t retry_interval;
    unsigned retry_base;
    apr_interval_time_t retry_max_delay;
    apr_interval_time_t retry_max_time;
    size_t retry_buffer;
    /* Bytes held in the retry buffers of every engine that shares it (in
     * shared memory: every child of a server). With it, retry_buffer bounds
     * them all together: an engine reserves a batch's size here, in whole
     * pages (the batch is mapped pages of its own), before it keeps it and
     * gives them back when it frees it, and what it holds is also in
     * counters->retry_bytes, so that whoever folds a dead engine's counters
     * can give it back (imx_retry_release). NULL: each engine is bounded
     * alone (malloc'd batches, bytes counted as they are). */
    _Atomic uint64_t *retry_shared;
    int gzip;
    /* Escaped "measurement,host=h,slot=n" of the module's own counters,
     * written once per flush interval when they changed; NULL: never. */
    const char *self_prefix;
    imx_counters_t *counters;   /* zeroed by the caller; NULL: the engine's own */
    /* The ring's cells: capacity (a power of two) x 64 bytes, 64-aligned,
     * from the caller (shared memory in the module, so that it outlives the
     * process, see imx_ring_rescue); NULL: allocated from the pool. */
    void *cells;
    imx_send_fn *send;
    imx_send_limit_fn *send_limit;  /* may be NULL; must be async-signal-safe */
    void *send_ctx;
    imx_log_fn *log;            /* may be NULL */
    void *log_ctx;
    imx_stats_fn *on_stats;     /* may be NULL */
    void *stats_ctx;
    imx_tick_fn *on_tick;       /* may be NULL */
    void *tick_ctx;
    imx_exit_fn *on_exit;       /* may be NULL */
    void *exit_ctx;
    imx_names_src_t names;      /* what the points' indices name */
    /* The server-wide table of timestamp tickets (imx_ts.h): with it, a
     * point's ts_ns is its start, made unique when it is encoded; NULL:
     * ts_ns is written as it is. */
    imx_ts_table_t *ts_table;
    /* Request ids beside the cells: capacity x IMX_RID_MAX bytes, in the
     * same memory as the cells (the caller's, or allocated from the pool
     * when rid_cells is set and this is NULL); NULL with rid_cells 0: no
     * request ids are kept. */
    void *rids;
    int rid_cells;
    /* Optional (NULL: none). What cannot be sent before the exit deadline
     * is written there instead of dropped (the last half of
     * shutdown_timeout is kept for writing), and so are the batches the
     * retry buffer cannot keep (full, too old, too large); the flusher sends
     * spooled files while the backend is healthy, for at most half of each
     * flush interval. Owned by the caller; used by the flusher only. */
    imx_spool_t *spool;
} imx_engine_conf_t;

/* Creates the engine with its memory from p (the buffer is allocated here,
 * once). p must outlive every thread that may still push: request threads
 * can log after the engine stopped, and then find it stopped, not freed.
 * Does not start a thread. Returns NULL and fills err on bad conf. */
imx_engine_t *imx_engine_create(apr_pool_t *p, const imx_engine_conf_t *conf,
                                char *err, size_t errsz);

/* Request path: records pt (rid: NULL, or its request id) in the engine's
 * ring (imx_ring_push: never blocks, never allocates). Thread-safe. */
int imx_engine_push(imx_engine_t *e, const imx_point_t *pt, const char *rid);

/* The engine's ring, valid for the engine's life: imx_ring_rescue's. */
imx_ring_t *imx_engine_ring(imx_engine_t *e);

/* From the flusher thread only (inside on_tick): adds `lines` lines of line
 * protocol that are not request points (summaries) to the head of the next
 * batch, sent right after the tick with the same retries; they do not count
 * in recorded/sent. */
void imx_engine_submit(imx_engine_t *e, const char *data, size_t len, uint32_t lines);

/* Starts the flusher thread. Its memory is its own (malloc), so nothing the
 * caller's pools do at exit can pull it away from under it. */
apr_status_t imx_engine_start(imx_engine_t *e);

/* Stops accepting work and waits, at most shutdown_timeout (plus a little),
 * for the flusher to flush what is held, call on_exit and end. Async-signal-
 * safe when a flusher runs (prefork calls child cleanups from its SIGTERM
 * handler): it only stores atomics, writes a pipe and poll()s another. Without
 * a flusher it drains and frees in the caller instead (tests). Safe to call
 * more than once. Returns 1 if the flusher finished in time. */
int imx_engine_stop(imx_engine_t *e);

/* Without a thread: drain and send everything now (tests, benchmarks). Returns
 * the number of points the backend accepted in this call. */
uint64_t imx_engine_flush_now(imx_engine_t *e);

void imx_engine_stats(imx_engine_t *e, imx_stats_t *st);

#endif /* IMX_ENGINE_H */
