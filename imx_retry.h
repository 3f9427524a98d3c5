/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_retry.h: the retry buffer, a FIFO of POST bodies that failed.
 *
 * What it holds is bounded by retry_buffer bytes: this engine's alone, or
 * with a shared budget (a counter in shared memory), every engine's that
 * shares it (the children of one server) together. What to do when it is
 * full (drop the oldest, move it to the spool) is the engine's policy; this
 * unit keeps the batches and the bytes right.
 */
#ifndef IMX_RETRY_H
#define IMX_RETRY_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <apr_time.h>

#include "imx_counters.h"

/* One failed POST, or several small bodies gathered (imx_retry_gather), up
 * to batch_size points, its other lines (the module's own) always first. */
typedef struct imx_rbatch {
    struct imx_rbatch *next, *prev;
    uint32_t n;                 /* request points in it */
    uint32_t extra;             /* lines before them that are not request points */
    int maybe_stored;           /* a POST of it failed after the body went out:
                                 * the backend may have stored it anyway */
    int posted;                 /* it was POSTed: it is sent again as it was */
    apr_time_t first_fail;      /* of its oldest part */
    apr_time_t last_fail;       /* of its newest part: it expires by this one,
                                 * so no point goes before retry_max_time */
    size_t len;
    size_t size;                /* bytes it takes, header included: its pages
                                 * with a shared budget (what it costs there) */
    char data[];
} imx_rbatch_t;

typedef struct imx_retry {
    imx_rbatch_t *head, *tail;
    size_t bytes;               /* of the batches in the queue (header + data) */
    size_t held;                /* of every batch allocated, one out of the
                                 * queue while it is sent included: what is
                                 * reserved in the shared budget */
    uint64_t points;
    size_t limit;               /* retry_buffer */
    _Atomic uint64_t *shared;   /* the shared budget, or NULL */
    uint32_t gather_points;     /* most points a gathered batch holds */
    apr_interval_time_t gather_window;
    imx_counters_t *c;          /* where retry_bytes and retry_points show */
} imx_retry_t;

/* limit: retry_buffer; shared: NULL, or the budget every engine of a server
 * shares (then batches are mapped pages of their own, see imx_retry.c);
 * batch_size and retry_max_time bound what is gathered into one batch. */
void imx_retry_init(imx_retry_t *q, size_t limit, _Atomic uint64_t *shared,
                    uint32_t batch_size, apr_interval_time_t retry_max_time,
                    imx_counters_t *c);

/* Is a body of len bytes larger than the whole buffer? */
int imx_retry_too_large(const imx_retry_t *q, size_t len);

/* Would a body of len bytes fit now (this engine's, or everyone's)? */
int imx_retry_fits(const imx_retry_t *q, size_t len);

/* Gathers a body that was never POSTed into the newest batch, if that one
 * was never POSTed either, is young enough, has room for n more points and
 * the same maybe_stored, and the bytes are there: during an outage every
 * child adds a small body at each wake-up, and each in pages of its own
 * would take a shared budget many times over what they hold. Returns 0
 * when it does not go there. */
int imx_retry_gather(imx_retry_t *q, const char *data, size_t len, uint32_t n,
                     uint32_t extra, apr_time_t first_fail, int maybe);

/* A new batch holding a copy of data, not yet in the queue; NULL when the
 * budget (or memory) says no. */
imx_rbatch_t *imx_retry_new(imx_retry_t *q, const char *data, size_t len, uint32_t n,
                            uint32_t extra, apr_time_t first_fail, int maybe, int posted);

void imx_retry_push_tail(imx_retry_t *q, imx_rbatch_t *rb);
/* At the head: it is older than what the queue holds. */
void imx_retry_push_head(imx_retry_t *q, imx_rbatch_t *rb);

/* Takes the head out of the queue (the caller owns it then: it pushes it
 * back or frees it); NULL when empty. */
imx_rbatch_t *imx_retry_unlink_head(imx_retry_t *q);

void imx_retry_free(imx_retry_t *q, imx_rbatch_t *rb);

/* Frees the head. */
void imx_retry_pop(imx_retry_t *q);

/* Gives back `bytes` reserved in a shared budget by an engine that is gone:
 * never below zero. */
void imx_retry_release(_Atomic uint64_t *shared, uint64_t bytes);

#endif /* IMX_RETRY_H */
