/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_ts.h: timestamps that never merge two requests.
 *
 * See imx_ts.c for how tickets are handed out.
 */
#ifndef IMX_TS_H
#define IMX_TS_H

#include <stdatomic.h>
#include <stdint.h>

#include <apr_time.h>

/* InfluxDB keeps one point per series and timestamp: two requests of one
 * series with the same timestamp would silently become one. A point's time
 * is its start's millisecond plus a ticket, unique among all points that
 * started in that millisecond, server-wide: ts = ms * 10^6 + n. The table
 * holds a ticket counter for each of the last IMX_TS_SLOTS milliseconds
 * (about 4.4 minutes) and lives in shared memory across children and
 * generations. A point whose start's counter was already reused for a later
 * millisecond (a request longer than that, or a clock that stepped back by
 * more) takes a ticket from the upper half of the millisecond, from one
 * server-wide counter (counted in late). The time shifts by less than 1 ms. */
#define IMX_TS_SLOTS (1u << 18)
typedef struct imx_ts_table {
    _Atomic uint64_t late;
    _Atomic uint64_t slot[IMX_TS_SLOTS];
} imx_ts_table_t;

/* The unique timestamp in nanoseconds of a point that started at `start`. */
int64_t imx_ts_unique(imx_ts_table_t *t, apr_time_t start);

/* An encoder's tickets: taken from the table a block at a time, so that
 * the points of one millisecond (a busy server has many) cost one atomic
 * operation between them, not one each. Tickets of a block left unused are
 * gaps, never reused. Zeroed: empty. */
#define IMX_TS_BLOCK 16
typedef struct imx_ts_block {
    uint64_t ms;
    uint32_t next, end;
} imx_ts_block_t;

int64_t imx_ts_refill(imx_ts_table_t *t, imx_ts_block_t *b, uint64_t ms, apr_time_t start);

/* As imx_ts_unique, through b. */
static inline int64_t imx_ts_take(imx_ts_table_t *t, imx_ts_block_t *b, apr_time_t start)
{
    uint64_t ms = start > 0 ? (uint64_t)start / 1000 : 0;

    if (ms == b->ms && b->next < b->end) {
        return (int64_t)(ms * 1000000 + b->next++);
    }
    return imx_ts_refill(t, b, ms, start);
}

#endif /* IMX_TS_H */
