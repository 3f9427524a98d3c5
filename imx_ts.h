/*
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

#endif /* IMX_TS_H */
