/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_body.c: POST bodies from the ring (see imx_body.h).
 *
 * About one byte written per byte sent: a point's series (everything from
 * the measurement to " duration_us=", decided by its indices) is encoded
 * once into a small direct-mapped cache and copied from there afterwards,
 * so that most points cost one copy, their numbers and their timestamp
 * (whose seconds are shared with the previous point's).
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "imx_body.h"
#include "imx_ts.h"

#define SELF_FIELDS 14
#define SELF_MAX (SELF_FIELDS * (16 + 21) + 24)

/* Copies a cached series text (at most IMX_PCACHE_COPY bytes, read and
 * written in whole 16-byte steps: the entry and the body have room past
 * it): a few moves, not a call to memcpy. */
static inline void copy_series(char *o, const char *text, uint32_t len)
{
    if (len <= 128) {
        memcpy(o, text, 64);
        memcpy(o + 64, text + 64, 64);
        return;
    }
    for (uint32_t i = 0; i < len; i += 32) {
        memcpy(o + i, text + i, 32);
    }
}

/* Appends pt's line to b; 0 when b cannot grow (out of memory: the point
 * stays in the ring for the next round). */
static inline int encode_point(imx_engine_t *e, imx_lpbuf_t *b, const imx_point_t *pt,
                               const char *rid)
{
    uint64_t k1 = pt->series[0], k2 = pt->series[1];
    imx_pcache_ent_t *pc = e->pcache
        ? &e->pcache[((k1 * 0x9e3779b97f4a7c15ULL) ^ (k2 * 0xc2b2ae3d27d4eb4fULL)) >> (64 - 8)]
        : NULL;
    size_t n;

    if (pc && pc->len && pc->k1 == k1 && pc->k2 == k2) {
        if (b->len + IMX_PCACHE_TEXT + IMX_VALUES_MAX > b->cap
            && !imx_lpbuf_grow(b, b->len + IMX_PCACHE_TEXT + IMX_VALUES_MAX, 0)) {
            return 0;
        }
        copy_series(b->buf + b->len, pc->text, pc->len);
        n = pc->len;
    }
    else {
        size_t need = b->len + imx_line_max(e->prefix_len, &e->conf.names, pt);

        if (need > b->cap && !imx_lpbuf_grow(b, need, 0)) {
            return 0;
        }
        n = imx_encode_series(b->buf + b->len, e->conf.line_prefix, e->prefix_len,
                              &e->conf.names, pt);
        if (pc && n <= IMX_PCACHE_COPY) {
            memcpy(pc->text, b->buf + b->len, n);
            pc->len = (uint32_t)n;
            pc->k1 = k1;
            pc->k2 = k2;
        }
    }
    b->len += n;
    /* The point's unique time, given here rather than on the request path
     * (see imx_ts.h): the table is server-wide, so it is unique whichever
     * child encodes it. */
    b->len += imx_encode_values(b->buf + b->len, pt,
                                e->conf.ts_table ? imx_ts_take(e->conf.ts_table, &e->tsb,
                                                               pt->ts_ns / 1000)
                                                 : pt->ts_ns, rid, &e->tsc);
    return 1;
}

int imx_lpbuf_grow(imx_lpbuf_t *b, size_t need, size_t first)
{
    size_t cap = b->cap ? b->cap : first ? first : 65536;
    char *nb;

    if (need <= b->cap) {
        return 1;
    }
    while (cap < need) {
        cap *= 2;
    }
    nb = realloc(b->buf, cap);
    if (!nb) {
        return 0;
    }
    b->buf = nb;
    b->cap = cap;
    return 1;
}

static int grow_body(imx_engine_t *e, size_t need)
{
    return imx_lpbuf_grow(&e->wb, need, (size_t)e->conf.batch_size * 160 + 512);
}

uint32_t imx_body_take(imx_engine_t *e, imx_lpbuf_t *b, uint32_t max)
{
    uint32_t n = 0;

    if (!e->pcache && !e->pcache_tried) {
        e->pcache_tried = 1;
        /* Mapped, not calloc'd: a page of it is memory only once an entry
         * in it is used (calloc would clear, so touch, all of it). */
        e->pcache = mmap(NULL, IMX_PCACHE_N * sizeof(*e->pcache), PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (e->pcache == MAP_FAILED) {
            e->pcache = NULL;
        }
    }
    /* The first body gets room for a full batch of typical lines. */
    if (!b->cap && !imx_lpbuf_grow(b, (size_t)max * 160 + 512, 0)) {
        return 0;
    }

    while (n < max) {
        const char *rid;
        const imx_point_t *pt = imx_ring_peek(&e->ring, &rid);

        if (!pt) {
            if (e->final && imx_ring_pass_unfinished(&e->ring, atomic_load(&e->stop_deadline))) {
                continue;
            }
            if (!(pt = imx_ring_peek(&e->ring, &rid))) {
                break;          /* empty, or its producer is still writing */
            }
        }
        if (!encode_point(e, b, pt, rid)) {
            break;              /* out of memory: try again next round */
        }
        imx_ring_next(&e->ring);
        n++;
    }
    /* After the batch is complete: a crash before this leaves its points
     * between taken and head, where a rescuer finds their cells freed
     * (counted lost; they died in this batch). */
    imx_ring_mark_taken(&e->ring);
    return n;
}

/* The module's own counters as one line, so dashboards can watch delivery. */
static size_t encode_self(imx_engine_t *e, char *out)
{
    static const char *const names[SELF_FIELDS] = {
        " recorded=", ",sent=", ",rejected=", ",dropped_full=", ",dropped_retry=",
        ",dropped_exit=", ",retries=", ",buffered=", ",retry_bytes=", ",batches=",
        ",to_spool=", ",unspooled=", ",dropped_spool=", ",spooled="
    };
    imx_stats_t st;
    uint64_t v[SELF_FIELDS];
    size_t pl = strlen(e->conf.self_prefix);
    char *o = out;

    /* The counters, as imx_engine_stats reads them, without the error
     * text this line does not carry. */
    memset(&st, 0, sizeof(st));
    imx_counters_read(e->c, &st);
    if (e->conf.spool) {
        st.spooled = imx_spool_pending(e->conf.spool);
    }
    v[0] = st.recorded; v[1] = st.sent; v[2] = st.rejected; v[3] = st.dropped_full;
    v[4] = st.dropped_retry; v[5] = st.dropped_exit; v[6] = st.retries;
    v[7] = st.buffered; v[8] = st.retry_bytes; v[9] = st.batches;
    v[10] = st.to_spool; v[11] = st.unspooled; v[12] = st.dropped_spool;
    v[13] = st.spooled;
    memcpy(o, e->conf.self_prefix, pl);
    o += pl;
    for (int i = 0; i < SELF_FIELDS; i++) {
        size_t nl = strlen(names[i]);
        memcpy(o, names[i], nl);
        o = imx_put_u64(o + nl, v[i]);
        *o++ = 'i';
    }
    *o++ = ' ';
    o = imx_put_u64(o, (uint64_t)apr_time_now() * 1000);
    *o++ = '\n';
    return (size_t)(o - out);
}

uint32_t imx_body_fill(imx_engine_t *e)
{
    e->wb.len = 0;
    e->work_extra = 0;
    if (e->self_due && e->conf.self_prefix) {
        if (grow_body(e, strlen(e->conf.self_prefix) + SELF_MAX)) {
            e->wb.len = encode_self(e, e->wb.buf);
            e->work_extra = 1;
        }
        e->self_due = 0;
    }
    if (e->xlen && grow_body(e, e->wb.len + e->xlen)) {
        memcpy(e->wb.buf + e->wb.len, e->xbuf, e->xlen);
        e->wb.len += e->xlen;
        e->work_extra += e->xlines;
        e->xlen = 0;
        e->xlines = 0;
    }
    e->work_n = imx_body_take(e, &e->wb, e->conf.batch_size);
    return e->work_n + e->work_extra;
}

void imx_body_done(imx_engine_t *e)
{
    e->work_n = 0;
    e->work_extra = 0;
    e->wb.len = 0;
}

size_t imx_body_gzip(imx_engine_t *e, const char *data, size_t len)
{
    size_t bound;

    if (!e->zs_ready) {
        memset(&e->zs, 0, sizeof(e->zs));
        /* Level 1: the flusher shares the CPU with the server it measures;
         * line protocol still shrinks about tenfold. 15 + 16 = gzip framing. */
        if (deflateInit2(&e->zs, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
            return 0;
        }
        e->zs_ready = 1;
    }
    else {
        deflateReset(&e->zs);
    }
    bound = deflateBound(&e->zs, (uLong)len);
    if (bound > e->gz_cap) {
        unsigned char *ng = realloc(e->gz, bound);
        if (!ng) {
            return 0;
        }
        e->gz = ng;
        e->gz_cap = bound;
    }
    e->zs.next_in = (unsigned char *)data;
    e->zs.avail_in = (uInt)len;
    e->zs.next_out = e->gz;
    e->zs.avail_out = (uInt)e->gz_cap;
    if (deflate(&e->zs, Z_FINISH) != Z_STREAM_END) {
        return 0;
    }
    return e->gz_cap - e->zs.avail_out;
}

void imx_body_self_tick(imx_engine_t *e)
{
    imx_stats_t st;
    uint64_t sum;

    if (!e->conf.self_prefix) {
        return;
    }
    memset(&st, 0, sizeof(st));
    imx_counters_read(e->c, &st);
    if (e->conf.spool) {
        st.spooled = imx_spool_pending(e->conf.spool);
    }
    sum = st.recorded + st.sent + st.rejected + st.dropped_full + st.dropped_retry
          + st.dropped_exit + st.retries + st.buffered + st.to_spool + st.unspooled
          + st.dropped_spool + st.spooled;
    if (sum != e->self_last_sum) {
        e->self_last_sum = sum;
        e->self_due = 1;
    }
}

void imx_body_free(imx_engine_t *e)
{
    free(e->wb.buf);
    free(e->side.buf);
    free(e->gz);
    if (e->pcache) {
        munmap(e->pcache, IMX_PCACHE_N * sizeof(*e->pcache));
        e->pcache = NULL;
    }
    memset(&e->wb, 0, sizeof(e->wb));
    memset(&e->side, 0, sizeof(e->side));
    e->gz = NULL;
    e->gz_cap = 0;
    if (e->zs_ready) {
        deflateEnd(&e->zs);
        e->zs_ready = 0;
    }
}
