/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_ts.c: unique timestamps (see imx_ts.h).
 *
 * The table is shared by every child of every generation, so two children
 * never hand out the same ticket; an encoder pays one CAS on the slot of a
 * millisecond per block of tickets it takes there.
 */
#include "imx_ts.h"

/* A slot holds its millisecond in the upper bits and the tickets handed out
 * for it in the lower TS_COUNT_BITS. Tickets from 0 to TS_HALF - 1 come from
 * the slot; late ones from TS_HALF up, from the table's one late counter. */
#define TS_COUNT_BITS 20
#define TS_COUNT_MASK ((UINT64_C(1) << TS_COUNT_BITS) - 1)
#define TS_HALF 500000

int64_t imx_ts_unique(imx_ts_table_t *t, apr_time_t start)
{
    uint64_t ms = start > 0 ? (uint64_t)start / 1000 : 0;
    _Atomic uint64_t *slot = &t->slot[ms & (IMX_TS_SLOTS - 1)];
    uint64_t cur = atomic_load_explicit(slot, memory_order_relaxed);
    uint64_t n;

    for (;;) {
        uint64_t cms = cur >> TS_COUNT_BITS, next;

        if (cms == ms) {
            n = cur & TS_COUNT_MASK;
            if (n >= TS_HALF) {
                break;          /* half a million starts in one ms: late range */
            }
            next = cur + 1;
        }
        else if (cms < ms) {
            n = 0;              /* the slot's older millisecond is over: take it */
            next = (ms << TS_COUNT_BITS) | 1;
        }
        else {
            break;              /* reused for a later millisecond already */
        }
        if (atomic_compare_exchange_weak_explicit(slot, &cur, next, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            return (int64_t)(ms * 1000000 + n);
        }
    }
    n = atomic_fetch_add_explicit(&t->late, 1, memory_order_relaxed) % TS_HALF;
    return (int64_t)(ms * 1000000 + TS_HALF + n);
}

int64_t imx_ts_refill(imx_ts_table_t *t, imx_ts_block_t *b, uint64_t ms, apr_time_t start)
{
    _Atomic uint64_t *slot = &t->slot[ms & (IMX_TS_SLOTS - 1)];
    uint64_t cur = atomic_load_explicit(slot, memory_order_relaxed);

    for (;;) {
        uint64_t cms = cur >> TS_COUNT_BITS, n, take, next;

        if (cms == ms) {
            n = cur & TS_COUNT_MASK;
        }
        else if (cms < ms) {
            n = 0;              /* the slot's older millisecond is over */
        }
        else {
            break;              /* reused for a later millisecond already */
        }
        if (n >= TS_HALF) {
            break;
        }
        take = TS_HALF - n < IMX_TS_BLOCK ? TS_HALF - n : IMX_TS_BLOCK;
        next = (ms << TS_COUNT_BITS) | (n + take);
        if (atomic_compare_exchange_weak_explicit(slot, &cur, next, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            b->ms = ms;
            b->next = (uint32_t)n + 1;
            b->end = (uint32_t)(n + take);
            return (int64_t)(ms * 1000000 + n);
        }
    }
    return imx_ts_unique(t, start);
}
