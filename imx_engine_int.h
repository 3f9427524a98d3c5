/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_engine_int.h: the engine's state, shared by its units (imx_engine.c,
 * imx_body.c, imx_delivery.c, imx_spill.c) and by nobody else.
 *
 * Everything below `ring` belongs to the flusher thread (or to the caller
 * of imx_engine_flush_now when there is none): no lock, no atomics, but for
 * what other threads read (the counters, the last error under mu, the
 * deadlines).
 */
#ifndef IMX_ENGINE_INT_H
#define IMX_ENGINE_INT_H

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include <apr_thread_mutex.h>
#include <pthread.h>
#include <zlib.h>

#include "imx_engine.h"
#include "imx_retry.h"

/* Repeated failures are logged at most once per this interval. */
#define IMX_FAIL_LOG_INTERVAL apr_time_from_sec(10)

/* Line protocol being built (malloc'd, grown as needed). */
typedef struct imx_lpbuf {
    char *buf;
    size_t len, cap;
} imx_lpbuf_t;

/* The flusher's cache of encoded series texts (imx_encode_series), so that
 * most points cost one copy and their numbers: direct-mapped by the point's
 * indices. Texts longer than an entry are encoded each time. */
#define IMX_PCACHE_N 256
#define IMX_PCACHE_TEXT 236
/* Longest text cached: copied in 32-byte steps, it must round up within
 * the entry's text. */
#define IMX_PCACHE_COPY 224
typedef struct {
    uint64_t k1, k2;
    uint32_t len;               /* 0: empty */
    char text[IMX_PCACHE_TEXT];
} imx_pcache_ent_t;

struct imx_engine {
    imx_engine_conf_t conf;
    size_t prefix_len;
    imx_counters_t *c;          /* conf.counters, or own */
    int wake_r, wake_w;         /* producers and stop wake the flusher */
    int done_r, done_w;         /* the flusher says it has finished */
    imx_ring_t ring;

    /* The flusher's. */
    imx_lpbuf_t wb;             /* the batch being built and sent */
    uint32_t work_n;            /* request points in wb */
    uint32_t work_extra;        /* lines of other points before them */
    imx_lpbuf_t side;           /* points moved out of the ring while a POST
                                 * waits (imx_delivery_wait) */
    int in_wait;
    int final;                  /* in the last drain, at exit */
    unsigned char *gz;
    size_t gz_cap;
    z_stream zs;
    int zs_ready;
    imx_retry_t rq;
    unsigned attempt;           /* consecutive failures at the queue's head */
    apr_time_t retry_at;
    apr_time_t last_fail_log;
    unsigned long fails_unlogged;
    int self_due;
    uint64_t self_last_sum;
    imx_pcache_ent_t *pcache;   /* IMX_PCACHE_N, or NULL (out of memory) */
    int pcache_tried;
    imx_ts_cache_t tsc;
    imx_ts_block_t tsb;         /* timestamp tickets at hand */
    char *xbuf;                 /* lines handed to imx_engine_submit(), sent at the
                                 * head of the next batch */
    size_t xlen, xcap;
    uint32_t xlines;
    uint32_t rng;
    apr_time_t next_flush;
    imx_lpbuf_t sacc;           /* batches gathered for one spool file */
    uint32_t sacc_n, sacc_extra;
    int sacc_maybe;
    apr_time_t spool_log_at, spool_scan_at;
    unsigned long spool_unlogged;

    char last_error[200];       /* under mu */
    apr_thread_mutex_t *mu;
    pthread_t thread;
    _Atomic int has_thread;
    _Atomic int finished;       /* the flusher has ended (or never ran) */
    _Atomic apr_time_t stop_deadline;   /* 0 until imx_engine_stop() */
    _Atomic apr_time_t send_deadline;   /* sends end here: stop_deadline, or
                                         * earlier to leave time for the spool */

    imx_counters_t own;
};

/* The engine's own messages go to its log callback (imx_log.h). */
#define imx_logf(e, level, ...) imx_log_say((e)->conf.log, (e)->conf.log_ctx, level, __VA_ARGS__)

/* The last error's text for the status page (under mu: the stats reader
 * copies it from another thread). */
static inline void imx_set_error(imx_engine_t *e, const char *err)
{
    apr_thread_mutex_lock(e->mu);
    snprintf(e->last_error, sizeof(e->last_error), "%s", err);
    apr_thread_mutex_unlock(e->mu);
    atomic_store(&e->c->last_error_time, apr_time_now());
}

/* Counts n points of a batch given up on. If a POST of it may have reached
 * the backend, they are also counted as maybe_stored: the counters cannot
 * know, and say so instead of guessing. */
static inline void imx_count_drop(imx_engine_t *e, _Atomic uint64_t *counter, uint64_t n,
                                  int maybe)
{
    /* maybe_stored first: a reader then never sees the drop without it. */
    if (maybe) {
        atomic_fetch_add(&e->c->maybe_stored, n);
    }
    atomic_fetch_add(counter, n);
}

/* The wall clock without APR: apr_time_now() is fine too, but this one is
 * async-signal-safe by POSIX. */
static inline apr_time_t imx_now_safe(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (apr_time_t)ts.tv_sec * APR_USEC_PER_SEC + ts.tv_nsec / 1000;
}

#endif /* IMX_ENGINE_INT_H */
