/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_ring.c: the bounded ring of points (see imx_ring.h).
 *
 *   A ring of `capacity` (a power of two) cells of 64 bytes each: a sequence
 *   number and one imx_point_t. It is sized once, in memory the caller
 *   provides, and never grows. Producers are the worker threads of
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
 */
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "imx_ring.h"

void imx_ring_init(imx_ring_t *r, void *cells, char *rids, uint32_t capacity,
                   imx_counters_t *c, uint32_t wake_every, int wake_w)
{
    uint64_t head = atomic_load(&c->recorded);

    r->cells = cells;
    r->rids = rids;
    r->mask = (uint64_t)capacity - 1;
    r->c = c;
    r->wake_every = wake_every;
    r->wake_w = wake_w;
    atomic_store(&r->stopping, 0);
    /* Each cell free for its position in the lap that starts at head. */
    for (uint64_t i = 0; i < capacity; i++) {
        uint64_t pos = head + ((i - head) & r->mask);
        atomic_store_explicit(&r->cells[i].seq, pos, memory_order_relaxed);
    }
    r->tail = head;
    atomic_store(&c->taken, head);
}

void imx_ring_wake(imx_ring_t *r)
{
    if (r->wake_w >= 0) {
        ssize_t n = write(r->wake_w, "", 1);
        (void)n;
    }
}

int imx_ring_push(imx_ring_t *r, const imx_point_t *pt, const char *rid)
{
    uint64_t pos;
    imx_cell_t *c = imx_ring_claim(r, &pos);
    char *ids;

    if (!c) {
        return 0;
    }
    c->pt = *pt;
    if (rid && pt->rid_len) {
        if ((ids = imx_ring_rid(r, pos))) {
            memcpy(ids, rid, pt->rid_len < IMX_RID_MAX ? pt->rid_len : IMX_RID_MAX);
        }
        else {
            c->pt.rid_len = 0;
        }
    }
    imx_ring_publish(r, c, pos);
    return 1;
}

void imx_ring_mark_taken(imx_ring_t *r)
{
    atomic_store_explicit(&r->c->taken, r->tail, memory_order_release);
}

uint64_t imx_ring_avail(const imx_ring_t *r)
{
    return atomic_load_explicit(&r->c->recorded, memory_order_relaxed) - r->tail;
}

static int64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int imx_ring_pass_unfinished(imx_ring_t *r, int64_t deadline_us)
{
    imx_cell_t *c = &r->cells[r->tail & r->mask];

    if (atomic_load_explicit(&r->c->recorded, memory_order_relaxed) <= r->tail + 1
        || atomic_load_explicit(&c->seq, memory_order_acquire) == r->tail + 1
        || now_us() >= deadline_us) {
        return 0;
    }
    for (int i = 0; i < 10; i++) {
        struct timespec ts = { 0, 100000 };

        nanosleep(&ts, NULL);
        if (atomic_load_explicit(&c->seq, memory_order_acquire) == r->tail + 1) {
            return 0;           /* published after all: taken as usual */
        }
    }
    atomic_fetch_add(&r->c->dropped_exit, 1);
    r->tail++;
    return 1;
}

void imx_ring_abandon(imx_ring_t *r)
{
    uint64_t head = atomic_load(&r->c->recorded);

    /* Cells claimed but never published (a producer still writing) are
     * counted too: the consumer will not wait for them any more. */
    if (head > r->tail) {
        atomic_fetch_add(&r->c->dropped_exit, head - r->tail);
        r->tail = head;
    }
    /* Nothing below head is left for a rescuer: only what a producer that
     * raced the stop still writes (rescued, or counted when the slot is
     * folded). */
    atomic_store(&r->c->taken, head);
}

uint64_t imx_ring_rescue(imx_ring_t *r, void *cells, const void *rids, uint32_t capacity,
                         imx_counters_t *dead)
{
    imx_cell_t *ring = cells;
    uint64_t mask = (uint64_t)capacity - 1, moved = 0;
    uint64_t head = atomic_load(&dead->recorded), pos = atomic_load(&dead->taken);

    if (!capacity || (capacity & mask) || head - pos > capacity) {
        return 0;               /* not a ring of ours: leave it to the fold */
    }
    for (; pos != head; pos++) {
        imx_cell_t *c = &ring[pos & mask];

        if (atomic_load_explicit(&c->seq, memory_order_acquire) == pos + 1) {
            if (!imx_ring_push(r, &c->pt, rids ? (const char *)rids + (pos & mask) * IMX_RID_MAX
                                               : NULL)) {
                break;          /* full (or stopping): the rest next time */
            }
            atomic_fetch_add(&dead->moved, 1);
            moved++;
        }
        else {
            atomic_fetch_add(&dead->lost, 1);
        }
        atomic_store_explicit(&c->seq, pos + mask + 1, memory_order_release);
        atomic_store(&dead->taken, pos + 1);
    }
    return moved;
}
