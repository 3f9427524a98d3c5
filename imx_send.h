/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_send.h: what a sender does for the engine.
 *
 * The engine hands each POST body to a callback, so that the unit tests
 * can swap the libcurl sender (imx_http.h) for one that records calls,
 * fails on demand or hangs; only the flusher thread calls it.
 */
#ifndef IMX_SEND_H
#define IMX_SEND_H

#include <stddef.h>
#include <stdint.h>

#include <apr_time.h>

typedef enum {
    IMX_SEND_OK = 0,            /* stored */
    IMX_SEND_RETRY,             /* transient: keep the batch, try again later */
    IMX_SEND_REJECT,            /* permanent for these bytes: count and drop */
    IMX_SEND_PARTIAL,           /* some points stored, info->dropped refused */
    IMX_SEND_TOO_LARGE          /* body too large: split it and send the halves */
} imx_send_result_t;

/* Called by a sender while its POST waits on the network (about every
 * 20 ms), from the flusher thread itself: the engine keeps draining its
 * ring meanwhile. */
typedef void imx_send_wait_fn(void *ctx);

/* What a send tells the engine besides its result. */
typedef struct imx_send_info {
    apr_interval_time_t retry_after;    /* the backend's Retry-After, or 0 */
    int slow;                   /* retry at the slowest pace (credentials,
                                 * missing database: a human must act) */
    uint32_t dropped;           /* IMX_SEND_PARTIAL: points refused */
    int maybe_stored;           /* IMX_SEND_RETRY after the body was sent (no
                                 * answer, cut, timed out): it may be stored */
    char err[256];              /* on failure: what happened, never a secret */
    /* Set by the engine before the call (the rest is zeroed), kept by the
     * sender: NULL, or called while the POST waits. */
    imx_send_wait_fn *wait;
    void *wait_ctx;
} imx_send_info_t;

/* Optional: called from another thread (at shutdown) so that a send in
 * progress returns by `deadline` at the latest. */
typedef void imx_send_limit_fn(void *ctx, apr_time_t deadline);

/* Posts one batch. body is line protocol (gzip-compressed when gzipped != 0).
 * deadline: 0, or an absolute time by which it must return even if its own
 * timeout is longer (set during shutdown). info is zeroed by the caller.
 * Called from the flusher only. */
typedef imx_send_result_t imx_send_fn(void *ctx, const char *body, size_t len,
                                      int gzipped, apr_time_t deadline,
                                      imx_send_info_t *info);

#endif /* IMX_SEND_H */
