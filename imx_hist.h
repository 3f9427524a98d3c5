/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_hist.h: per-interval summaries of request durations, mergeable across
 * children (the engine side of InfluxMetricsMode summary|both).
 *
 * A table holds up to `cap` series, each a log-linear histogram of durations
 * in microseconds plus errors, sum, min and max. Tables live in memory the
 * caller provides (shared memory in the module: one table per child slot,
 * written by that child's threads, and one of pending counts that the
 * writer of summaries drains the others into), so summing them gives exact
 * server-wide counts.
 *
 * Layout, so that readers touch only the pages of series in use (shared
 * memory is backed page by page, and a read of an untouched page backs it
 * too):
 *   header | keys[cap] | hash index[nindex] | (page aligned) bodies[cap]
 * Series are claimed in order: keys[0..used) is dense, and a reader walks
 * only those keys and their bodies. A body is zeroed when claimed, never
 * before, so an unused body is never touched. Each body is 16 KiB, four
 * whole pages.
 *
 * Counters are 64-bit: a child can live for months, and tables in shared
 * memory live as long as httpd's parent.
 *
 * Buckets: 0..127 us one microsecond wide; above, 64 buckets per power of
 * two. A bucket is at most 1/64 of its lower bound wide, so its midpoint is
 * within 1/128 (0.8%) of any value in it: percentiles read from the merged
 * histogram are within 1% of the exact ones.
 */
#ifndef IMX_HIST_H
#define IMX_HIST_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define IMX_HIST_LINEAR 128
#define IMX_HIST_SUB 64
/* Durations are clamped below 2^36 us (19 hours). */
#define IMX_HIST_MAX_EXP 35
#define IMX_HIST_BUCKETS (IMX_HIST_LINEAR + (IMX_HIST_MAX_EXP - 6) * IMX_HIST_SUB)
#define IMX_HIST_PAGE 4096
/* Keys use 31 bits: a key with this bit set holds the times to first byte
 * of the requests of the key without it (written as its ttfb_p*_us
 * fields, never as a line of its own). */
#define IMX_HIST_TTFB 0x80000000u
/* Longest exemplar id. */
#define IMX_HIST_ID_MAX 64

/* One series. Its request count is the sum of its buckets, so a point's
 * count and histogram always agree. */
typedef struct imx_hist_series {
    _Atomic uint64_t sum;
    _Atomic uint64_t errors;
    _Atomic uint64_t minr;      /* UINT64_MAX - min, so that all-zero memory
                                 * is an empty series */
    _Atomic uint64_t max;
    /* InfluxMetricsSLO: requests within the objective, and the objective
     * (the largest of the interval's; 0: none). */
    _Atomic uint64_t slo_good;
    _Atomic uint64_t slo_us;
    /* The exemplar: the slowest request that had an id, its duration + 1
     * (0: none) and id, under ex_lock (a spin lock taken only by a request
     * slower than the exemplar so far, and by drains). */
    _Atomic uint64_t ex_us;
    _Atomic uint32_t ex_lock;
    uint32_t ex_len;
    char ex_id[IMX_HIST_ID_MAX];
    _Atomic uint64_t b[IMX_HIST_BUCKETS];
    /* To whole pages: a series in use touches exactly its own pages. */
    uint64_t pad[(4 * IMX_HIST_PAGE) / 8 - 8 - IMX_HIST_ID_MAX / 8 - IMX_HIST_BUCKETS];
} imx_hist_series_t;

typedef struct imx_hist_table {
    uint32_t cap;               /* series */
    uint32_t nindex;            /* hash slots: a power of two, >= 2 cap */
    _Atomic uint32_t used;      /* keys claimed (may pass cap: read as cap) */
    uint32_t boff;              /* offset of the bodies */
    _Atomic uint64_t overflow;  /* requests not recorded: table full */
} imx_hist_table_t;

size_t imx_hist_table_size(uint32_t cap);

/* Empties t (memory of imx_hist_table_size(cap) bytes, page aligned for the
 * page bound above): writes the header, keys and index, not the bodies.
 * Nobody may use t meanwhile. */
void imx_hist_init(imx_hist_table_t *t, uint32_t cap);

/* Series claimed (keys[0..n) are dense). */
uint32_t imx_hist_used(const imx_hist_table_t *t);

unsigned imx_hist_bucket(uint64_t us);
/* The value a bucket stands for: its midpoint (exact below IMX_HIST_LINEAR). */
uint64_t imx_hist_value(unsigned bucket);

/* What a request adds besides its duration. */
typedef struct imx_hist_extra {
    uint64_t slo_us;            /* its objective, 0: none; within it when no
                                 * slower and not an error */
    const char *id;             /* its id (at most IMX_HIST_ID_MAX bytes that
                                 * need no escaping), or NULL */
    size_t id_len;
} imx_hist_extra_t;

/* Request path: lock-free, no allocation; any number of threads, in any
 * number of processes. key: packed small integers the caller defines
 * (vhost, route, method, status class), never 0; x: NULL, or what the
 * request adds. Returns 0 if the table is full (counted in overflow). */
int imx_hist_record(imx_hist_table_t *t, uint32_t key, uint64_t us, int error,
                    const imx_hist_extra_t *x);

/* Moves src's counts into dst, series by series, while src is being
 * recorded into: each counter is taken with an atomic exchange, so every
 * request ends up in exactly one drain. dst has one writer at a time.
 * Series that do not fit into a full dst stay in src (for a later drain);
 * returns their number. */
uint32_t imx_hist_drain(imx_hist_table_t *dst, imx_hist_table_t *src);

/* After a writer of t died in the middle of an update (its lock was
 * recovered): rebuilds t's index from its keys, merging duplicates. */
void imx_hist_repair(imx_hist_table_t *t);

/* Callback naming a series key as escaped tags (",vhost=a,route=b,...");
 * the text stays valid until the next call. NULL: the series is dropped. */
typedef const char *imx_hist_tags_fn(void *ctx, uint32_t key);

/* A growing output buffer (malloc'ed; free buf when done). */
typedef struct imx_hist_out {
    char *buf;
    size_t len, cap;
} imx_hist_out_t;

/* Room for need more bytes in o; 0 if it cannot grow. */
int imx_hist_reserve(imx_hist_out_t *o, size_t need);

/* Appends one line per series of t with requests (percentiles, min and max
 * of what t holds) to o, then empties t, keeping only what requests still
 * in flight at the drain left half recorded. Returns the lines written and
 * adds the durations written to *sum_us. If o cannot grow, writes nothing
 * and leaves t as it was. t has one writer (the caller). */
/* (Exported from the module although all else is hidden: the tests load a
 * stand-in before it with LD_PRELOAD, to kill the writer of summaries while
 * it holds their lock; once per interval, the PLT costs nothing.) */
__attribute__((visibility("default")))
uint32_t imx_hist_encode(imx_hist_out_t *o, const char *prefix, imx_hist_table_t *t,
                         imx_hist_tags_fn *tags, void *ctx, int64_t ts_ns,
                         uint64_t *sum_us);

/* Percentile (0 < p <= 100) of the counts in b: nearest rank, like
 * InfluxQL's percentile(). */
uint64_t imx_hist_percentile(const uint64_t *b, uint64_t count, double p);

#endif /* IMX_HIST_H */
