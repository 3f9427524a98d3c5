/*
 * summary.h: per-interval summaries of request durations, mergeable across
 * children (the engine side of InfluxMetricsMode summary|both).
 *
 * A table holds up to `nseries` series, each a log-linear histogram of
 * durations in microseconds plus count, errors, sum, min and max. Tables live
 * in memory the caller provides (shared memory in the module: one table per
 * child, written only by that child's threads, plus one for children that
 * have exited), so summing them gives exact server-wide counts.
 *
 * Buckets: 0..127 us one microsecond wide; above, 64 buckets per power of
 * two. A bucket is at most 1/64 of its lower bound wide, so its midpoint is
 * within 1/128 (0.8%) of any value in it: percentiles read from the merged
 * histogram are within 1% of the exact ones.
 */
#ifndef IMX_SUMMARY_H
#define IMX_SUMMARY_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define IMX_HIST_LINEAR 128
#define IMX_HIST_SUB 64
/* Durations are clamped below 2^36 us (19 hours). */
#define IMX_HIST_MAX_EXP 35
#define IMX_HIST_BUCKETS (IMX_HIST_LINEAR + (IMX_HIST_MAX_EXP - 6) * IMX_HIST_SUB)

/* A series key: packed small integers the caller defines (vhost, route,
 * method, status class); 0 is reserved for "empty". */
typedef struct imx_hist_series {
    _Atomic uint32_t key;
    uint32_t pad;
    _Atomic uint64_t count;
    _Atomic uint64_t errors;
    _Atomic uint64_t sum;
    _Atomic uint64_t minr;      /* UINT64_MAX - min, so that all-zero memory
                                 * is an empty series */
    _Atomic uint64_t max;
    _Atomic uint32_t b[IMX_HIST_BUCKETS];
} imx_hist_series_t;

typedef struct imx_hist_table {
    uint32_t nseries;
    uint32_t pad;
    _Atomic uint64_t overflow;  /* requests not recorded: table full */
    imx_hist_series_t s[];
} imx_hist_table_t;

size_t imx_hist_table_size(uint32_t nseries);

/* Empties t (memory of imx_hist_table_size(nseries) bytes). Zeroed memory
 * with nseries set is an empty table too. */
void imx_hist_init(imx_hist_table_t *t, uint32_t nseries);

unsigned imx_hist_bucket(uint64_t us);
/* The value a bucket stands for: its midpoint (exact below IMX_HIST_LINEAR). */
uint64_t imx_hist_value(unsigned bucket);

/* Request path: lock-free, no allocation. Returns 0 if the table is full. */
int imx_hist_record(imx_hist_table_t *t, uint32_t key, uint64_t us, int error);

/* dst += src, series by series (dst is written by one thread at a time). */
void imx_hist_add(imx_hist_table_t *dst, const imx_hist_table_t *src);

/* Callback naming a series key as escaped tags (",vhost=a,route=b,...");
 * returns NULL to skip the series. */
typedef const char *imx_hist_tags_fn(void *ctx, uint32_t key);

/* Encodes one line per series whose count grew from prev to cur (delta
 * percentiles, min/max of cur since the last write — see summary.c), then
 * copies cur into prev. out must hold imx_hist_line_max() per series.
 * Returns bytes written; *lines gets the number of lines. */
size_t imx_hist_encode(char *out, size_t outsz, const char *prefix,
                       imx_hist_table_t *cur, imx_hist_table_t *prev,
                       imx_hist_tags_fn *tags, void *ctx, int64_t ts_ns,
                       uint32_t *lines);

/* Sum of durations recorded in cur since prev (series prev does not know
 * count from zero): the busy time of an interval, in microseconds. */
uint64_t imx_hist_delta_sum(imx_hist_table_t *cur, imx_hist_table_t *prev);

/* Percentile (0 < p <= 100) of the counts in b: nearest rank, like
 * InfluxQL's percentile(). */
uint64_t imx_hist_percentile(const uint64_t *b, uint64_t count, double p);

#endif /* IMX_SUMMARY_H */
