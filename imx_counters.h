/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_counters.h: the engine's delivery counters, and a reading of them.
 *
 * They live in memory the caller provides (a status slot in shared memory
 * in the module), so that they stay exact and readable when the process
 * that writes them dies without warning; the status page, the exit line
 * and the module's own points all read them through imx_counters_read.
 */
#ifndef IMX_COUNTERS_H
#define IMX_COUNTERS_H

#include <stdatomic.h>
#include <stdint.h>

#include <apr_time.h>

/* Every recorded point ends as exactly one of sent, rejected,
 * dropped_retry, dropped_exit or to_spool, or is still held: held = recorded
 * - those five, at any instant, because each of them changes with one atomic
 * add at the moment the point's fate is decided. Points handed to the spool
 * leave this process's account there; what becomes of spooled points (of
 * any process, of this generation or an earlier one) is counted by the
 * process that settles them, in unspooled or dropped_spool, which are not
 * terms of its own identity. Zero-filled memory is a valid empty set of
 * counters. */
typedef struct imx_counters {
    _Alignas(64) _Atomic uint64_t recorded;     /* the ring's head: a position */
    _Alignas(64) _Atomic uint64_t dropped_full; /* refused: ring full (never recorded) */
    _Alignas(64) _Atomic uint64_t sent;
    _Atomic uint64_t rejected;
    _Atomic uint64_t dropped_retry;
    _Atomic uint64_t dropped_exit;
    _Atomic uint64_t to_spool;      /* recorded here, handed to the spool */
    _Atomic uint64_t unspooled;     /* spooled points this process sent */
    _Atomic uint64_t dropped_spool; /* spooled points this process gave up on:
                                     * deleted for room, a failed write, a
                                     * bad file, refused by the backend */
    _Atomic uint64_t maybe_stored;
    _Atomic uint64_t retries;
    _Atomic uint64_t batches;
    _Atomic uint64_t bytes;
    _Atomic uint64_t late;          /* pushes refused because the engine stopped:
                                     * counted as recorded and dropped_exit */
    _Atomic uint64_t sending;       /* points of the POST under way */
    _Atomic uint64_t retry_points;  /* points in the retry buffer */
    _Atomic uint64_t retry_bytes;
    _Atomic int64_t last_ok;
    _Atomic int64_t last_error_time;
    /* The ring's positions: `recorded` above is its head (the counters
     * start at zero with the engine); the flusher has taken every point
     * below `taken` out of the ring. */
    _Atomic uint64_t taken;
    _Atomic uint64_t moved;         /* after this engine died: points another
                                     * engine took over from its ring (they
                                     * count as that one's) */
    _Atomic uint64_t lost;          /* after this engine died: cells of its
                                     * ring that were half written */
} imx_counters_t;

/* Points recorded and not yet settled, from a consistent reading. */
uint64_t imx_counters_held(const imx_counters_t *c);

/* A reading of the counters (imx_counters_read), with what only the engine
 * knows (the spool's gauge, the last error's text) filled in by it. */
typedef struct imx_stats imx_stats_t;

struct imx_stats {
    uint64_t recorded;          /* points accepted into the buffer */
    uint64_t dropped_full;      /* points refused because the buffer was full */
    uint64_t sent;              /* points the backend acknowledged */
    uint64_t rejected;          /* points the backend refused for good */
    uint64_t dropped_retry;     /* points of batches evicted from a full retry
                                 * buffer or retried for longer than allowed */
    uint64_t dropped_exit;      /* points still unsent when the flusher gave up at
                                 * exit, or recorded after it stopped */
    uint64_t to_spool;          /* points handed to the spool */
    uint64_t unspooled;         /* spooled points sent by this process */
    uint64_t dropped_spool;     /* spooled points this process gave up on */
    uint64_t spooled;           /* points in the spool now, all processes */
    uint64_t maybe_stored;      /* of the dropped_retry, dropped_exit and
                                 * dropped_spool points, those whose POST failed
                                 * after the body was sent: the backend may
                                 * hold them after all */
    uint64_t retries;           /* failed sends that will be tried again */
    uint64_t batches;           /* successful sends */
    uint64_t bytes;             /* body bytes of successful sends */
    uint64_t buffered;          /* points held: recorded and not settled */
    uint64_t lost;              /* half-written cells found after it died */
    uint64_t retry_bytes;       /* bytes held in the retry buffer */
    apr_time_t last_ok;         /* last successful send, or 0 */
    apr_time_t last_error_time; /* last failed send, or 0 */
    char last_error[200];
};

/* A snapshot of c into st (counters only; spooled and last_error are left
 * alone). */
void imx_counters_read(const imx_counters_t *c, imx_stats_t *st);

#endif /* IMX_COUNTERS_H */
