/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_ring.h: the per-process bounded ring of points.
 *
 * Producers are the worker threads of one child (many), the consumer is
 * its flusher (one). Cells live in memory the caller provides (shared
 * memory made by httpd's parent, in the module), so that what a child held
 * when it died is still there for another child to send (imx_ring_rescue).
 */
#ifndef IMX_RING_H
#define IMX_RING_H

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "imx_counters.h"
#include "imx_point.h"

#define IMX_CACHE_LINE 64

/* A cell is one cache line: neighbours never share one. */
typedef struct imx_cell {
    _Atomic uint64_t seq;
    imx_point_t pt;
} imx_cell_t;

_Static_assert(sizeof(imx_cell_t) == IMX_CACHE_LINE, "a cell fills one cache line");

typedef struct imx_ring {
    imx_cell_t *cells;          /* capacity of them, 64-aligned */
    char *rids;                 /* IMX_RID_MAX bytes per cell, or NULL */
    uint64_t mask;              /* capacity - 1 */
    imx_counters_t *c;          /* recorded is the ring's head */
    uint32_t wake_every;        /* a producer whose index completes this many
                                 * points wakes the consumer */
    int wake_w;                 /* ... by writing a byte here */
    _Atomic int stopping;       /* producers refuse new points */
    /* The consumer's, on a line of its own. */
    _Alignas(IMX_CACHE_LINE) uint64_t tail;
} imx_ring_t;

/* Makes every cell free for its position in the lap that starts at the
 * counters' head (they start at zero with the engine). capacity: a power
 * of two; cells and rids (may be NULL) as above. */
void imx_ring_init(imx_ring_t *r, void *cells, char *rids, uint32_t capacity,
                   imx_counters_t *c, uint32_t wake_every, int wake_w);

/* Request path, in two steps so that a point is written once, in its cell:
 * imx_ring_claim returns the cell of the next position (its index in *pos),
 * or NULL when the point is refused (ring full: dropped_full; stopping:
 * counted as recorded, late and dropped_exit); the caller fills cell->pt
 * (every field) and publishes it with imx_ring_publish. Never blocks, never
 * allocates; thread-safe. */
static inline imx_cell_t *imx_ring_claim(imx_ring_t *r, uint64_t *pos_out)
{
    _Atomic uint64_t *head = &r->c->recorded;
    uint64_t pos;

    /* A worker still logging after the child began to stop (mod_http2
     * joins its workers after our cleanup) finds the ring stopped, not
     * freed: the point is counted, never written where no one will look. */
    if (atomic_load_explicit(&r->stopping, memory_order_relaxed)) {
        atomic_fetch_add_explicit(&r->c->late, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&r->c->dropped_exit, 1, memory_order_relaxed);
        return NULL;
    }
    pos = atomic_load_explicit(head, memory_order_relaxed);
    for (;;) {
        imx_cell_t *c = &r->cells[pos & r->mask];
        uint64_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);

        if (seq == pos) {
            if (atomic_compare_exchange_weak_explicit(head, &pos, pos + 1,
                                                      memory_order_relaxed,
                                                      memory_order_relaxed)) {
                *pos_out = pos;
                return c;
            }
            /* pos now holds the current head: try that index. */
        }
        else if ((int64_t)(seq - pos) < 0) {
            /* The cell still holds the point from one lap ago: full. */
            atomic_fetch_add_explicit(&r->c->dropped_full, 1, memory_order_relaxed);
            return NULL;
        }
        else {
            pos = atomic_load_explicit(head, memory_order_relaxed);
        }
    }
}

/* Out of line: wakes the consumer (a write to its pipe). */
void imx_ring_wake(imx_ring_t *r);

/* Publishes the point claimed at pos. Completing a batch wakes the
 * consumer early (wake_every <= capacity, so every lap of the ring
 * completes at least one); a full pipe means a wake-up is pending. */
static inline void imx_ring_publish(imx_ring_t *r, imx_cell_t *c, uint64_t pos)
{
    atomic_store_explicit(&c->seq, pos + 1, memory_order_release);
    if ((pos + 1) % r->wake_every == 0) {
        imx_ring_wake(r);
    }
}

/* The request id area of the cell at pos (IMX_RID_MAX bytes), or NULL when
 * the ring keeps none. */
static inline char *imx_ring_rid(imx_ring_t *r, uint64_t pos)
{
    return r->rids ? r->rids + (pos & r->mask) * IMX_RID_MAX : NULL;
}

/* Claim, copy and publish in one (rescue, tests): 1 when recorded. rid:
 * NULL, or pt->rid_len bytes of request id, kept when the ring keeps ids. */
int imx_ring_push(imx_ring_t *r, const imx_point_t *pt, const char *rid);

/* Consumer: the point at the tail if its producer has published it (its
 * request id in *rid, or NULL), else NULL. */
static inline const imx_point_t *imx_ring_peek(imx_ring_t *r, const char **rid)
{
    imx_cell_t *c = &r->cells[r->tail & r->mask];

    if (atomic_load_explicit(&c->seq, memory_order_acquire) != r->tail + 1) {
        return NULL;            /* empty, or its producer is still writing */
    }
    *rid = imx_ring_rid(r, r->tail);
    return &c->pt;
}

/* Consumer: frees the tail's cell (after imx_ring_peek) and moves on. */
static inline void imx_ring_next(imx_ring_t *r)
{
    atomic_store_explicit(&r->cells[r->tail & r->mask].seq, r->tail + r->mask + 1,
                          memory_order_release);
    r->tail++;
}

/* Consumer: says every point below the tail has left the ring (`taken`): a
 * rescuer of this ring starts there. */
void imx_ring_mark_taken(imx_ring_t *r);

/* Points claimed by producers and not consumed (published or not). */
uint64_t imx_ring_avail(const imx_ring_t *r);

/* Consumer, at exit: the cell at the tail is claimed but unpublished while
 * points were claimed after it. Waits a moment (at most until `deadline`),
 * then passes over it, counting it alone in dropped_exit, so that the
 * complete points behind it are still sent; returns 1 if it did. The cell
 * is left as it is: a producer that does finish writes only to it. */
int imx_ring_pass_unfinished(imx_ring_t *r, int64_t deadline_us);

/* Consumer, at exit: what is left between tail and head is counted in
 * dropped_exit, and the ring is marked taken to its head. */
void imx_ring_abandon(imx_ring_t *r);

/* From r's consumer: takes over what a ring that died (its cells, request
 * ids or NULL, and counters, which must no longer be written by anyone)
 * left, pushing each published point into r, which then records and sends
 * it as its own; the dead one counts it in moved. A cell its producer never
 * finished is counted in the dead one's lost. Resumable: stops when r is
 * full (the rest waits for the next call) and advances the dead one's taken
 * as it goes. Returns the points moved. */
uint64_t imx_ring_rescue(imx_ring_t *r, void *cells, const void *rids, uint32_t capacity,
                         imx_counters_t *dead);

#endif /* IMX_RING_H */
