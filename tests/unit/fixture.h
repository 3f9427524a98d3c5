/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * fixture.h: what the unit tests of the engine share (fixture.c).
 *
 *   the recording sender   recorder_t and rec_send(): parses every line back
 *                          and marks each point's id, or fails on demand,
 *                          hangs, answers 413 or a partial write
 *   the engine fixture     base_conf(), make_engine(), push_n(), finish() and
 *                          the accounting identity, check_identity()
 *   the spool fixture      spool_fixture_t: a fresh directory, its gauges in
 *                          shared memory, the spool opened in a pool
 *   summary tables         new_table(), key_tags()
 *
 * Each pushed point carries its id in duration_us (fill_point()); the
 * recorder marks it, so delivery is checked point by point: every point
 * pushed is sent exactly once or counted as dropped.
 */
#ifndef IMX_TEST_FIXTURE_H
#define IMX_TEST_FIXTURE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <apr_pools.h>
#include <apr_time.h>

#include "imx_engine.h"
#include "imx_hist.h"
#include "imx_spool.h"

/* A seeded xorshift: the same sequence in every run of a program. */
uint32_t rnd(void);

/* The engine's and the spool's log: silent unless IMX_TEST_VERBOSE is set. */
void quiet_log(void *ctx, int level, const char *msg);

/* ------------------------------------------------------------------------- */
/* The recording sender                                                       */

/* Each pushed point carries its id in duration_us; the recorder marks it. */
#define MAX_IDS (1u << 22)

typedef struct {
    _Atomic unsigned char *seen;    /* per id: times it arrived */
    _Atomic uint64_t lines, dups, bad, calls;
    int fail_first;             /* answer RETRY to this many calls */
    int reject_first;           /* answer REJECT to this many calls (after fails) */
    int hang;                   /* never answer: wait for the deadline/limit */
    int always_fail;            /* RETRY every call */
    int maybe;                  /* ... saying the body may have been stored */
    uint32_t max_lines;         /* TOO_LARGE for bodies with more lines */
    uint32_t partial_drop;      /* PARTIAL with this many dropped, once */
    unsigned delay_us;          /* a slow backend: each call takes this long */
    apr_interval_time_t retry_after;    /* returned with each RETRY */
    apr_time_t call_time[64];
    _Atomic apr_time_t limit;
    uint64_t rejected_lines;
    /* Lines "x_extra,..." stand for the module's own (summaries, counters):
     * not points, counted apart, and they must come first in a body. */
    _Atomic uint64_t extra_lines, extra_after_points;
} recorder_t;

recorder_t *recorder_new(void);
void recorder_free(recorder_t *rc);

/* The engine's send and send_limit callbacks, ctx a recorder_t. */
imx_send_result_t rec_send(void *ctx, const char *body, size_t len, int gzipped,
                           apr_time_t deadline, imx_send_info_t *info);
void rec_limit(void *ctx, apr_time_t deadline);

/* ------------------------------------------------------------------------- */
/* The engine fixture                                                         */

/* The names every engine of these tests encodes with: one server,
 * ",vhost=test" with the static tag ",dc=eu\\ west". */
imx_names_src_t engine_names(void);

/* A point of that server, its id in duration_us. */
void fill_point(imx_point_t *pt, uint64_t id);

/* Handed to the next base_conf() (the retry buffer's size) and
 * make_engine() (the spool, NULL: none). */
extern size_t test_retry_buffer;
extern imx_spool_t *test_spool;

/* The tests' engine configuration: fast intervals, the recording sender. */
void base_conf(imx_engine_conf_t *c, recorder_t *rc, uint32_t cap, uint32_t batch);

imx_engine_t *make_engine(apr_pool_t *p, recorder_t *rc, uint32_t cap, uint32_t batch,
                          int gzip);

/* A new pool and engine (retry_buffer 0: the default), ids 0 .. n - 1
 * pushed, its thread not started. */
imx_engine_t *push_n(apr_pool_t **p, recorder_t *rc, uint32_t cap, uint32_t batch, int n,
                     size_t retry_buffer);

/* Pushes ids first .. first + n - 1 (all of one digit count, so every
 * batch of a size encodes to the same length). */
void push_ids(imx_engine_t *e, uint64_t first, int n);

/* Every point produced is recorded or dropped_full, and every point
 * recorded is sent, rejected, dropped, spooled or still buffered. */
void check_identity(imx_engine_t *e, uint64_t produced, const char *what);

/* Stops the engine, checks the accounting identity, frees everything. */
void finish(imx_engine_t *e, apr_pool_t *p, recorder_t *rc, uint64_t produced,
            const char *what);

/* A producer thread's job (test_stress.c, the flood of test_engine.c). */
typedef struct {
    imx_engine_t *e;
    unsigned idx, per;
    apr_time_t until;
    unsigned char *accepted;    /* per id, written by this producer only */
    uint64_t produced, ok;
    unsigned pace_us;           /* pause every 64 pushes: lets the flusher keep up */
} producer_t;

/* ------------------------------------------------------------------------- */
/* The spool fixture                                                          */

/* Names in dir ending in `suffix` ("" for spool files only). */
int count_names(const char *dir, const char *suffix);

imx_spool_t *open_spool(apr_pool_t *p, const char *dir, imx_spool_shared_t *sh,
                        uint64_t max);

/* A valid file in memory: the lines of `payload`, the first `extra` of them
 * other points. */
unsigned char *make_file(const char *payload, uint32_t points, uint32_t extra,
                         size_t *size);

/* A spool directory made for one test, /tmp/imx-unit-spool-XXXXXX, and its
 * gauges, zeroed, in shared memory (so that forked claimers share them as
 * httpd's children do). */
typedef struct {
    char dir[sizeof("/tmp/imx-unit-spool-XXXXXX")];
    imx_spool_shared_t *sh;
    apr_pool_t *p;              /* the spool's */
    imx_spool_t *sp;
} spool_fixture_t;

/* Makes the directory and the gauges, and opens the spool in a pool of its
 * own with that bound; max_bytes 0: not yet (for files written before the
 * spool is opened), spool_fixture_spool() opens it. Returns f->sp. */
imx_spool_t *spool_fixture_open(spool_fixture_t *f, uint64_t max_bytes);

/* Opens the spool anew in a new pool, as a later child opens it; the pool
 * of the spool before, and whatever else the test put in it, is destroyed
 * first. Returns f->sp. */
imx_spool_t *spool_fixture_spool(spool_fixture_t *f, uint64_t max_bytes);

/* Destroys the pool and removes the directory and its files. */
void spool_fixture_close(spool_fixture_t *f);

/* ------------------------------------------------------------------------- */
/* Summary tables                                                             */

/* A table for cap series, in page-aligned memory (free() it). */
imx_hist_table_t *new_table(uint32_t cap);

/* imx_hist_encode()'s tags callback: ",k=<key>" (read by field_of()). */
const char *key_tags(void *ctx, uint32_t key);

#endif
