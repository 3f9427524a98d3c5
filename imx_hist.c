/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_hist.c: mergeable duration histograms (see imx_hist.h).
 *
 * Concurrency: a table is written by request threads with relaxed atomic
 * adds; the bucket is added last, with release, so that whoever takes the
 * bucket (a drain, with an exchange) also sees the rest of that request.
 * Series are claimed through the hash index: a slot goes from empty to
 * BUSY by CAS, the claimer takes the next dense entry, zeroes its body,
 * publishes the key, then the slot (release). A thread that meets a BUSY
 * slot waits briefly, then looks further: at worst a key gets two series,
 * which every reader adds up by key.
 *
 * Counts are per drain: the writer of summaries moves every counter of every
 * child's table into a table of pending counts with atomic exchanges, so a
 * request is counted in exactly one summary, whatever the timing, and the
 * child tables never grow stale sums to compare against.
 */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imx_hist.h"
#include "imx_lineproto.h"

#define BUSY 0xffffffffu

_Static_assert(sizeof(imx_hist_series_t) == 4 * IMX_HIST_PAGE, "a series is four pages");

static uint32_t nindex_of(uint32_t cap)
{
    uint32_t n = 2;

    while (n < 2 * (uint64_t)cap) {
        n <<= 1;
    }
    return n;
}

static size_t bodies_off(uint32_t cap)
{
    size_t n = sizeof(imx_hist_table_t) + ((size_t)cap + nindex_of(cap)) * sizeof(uint32_t);

    return (n + IMX_HIST_PAGE - 1) & ~(size_t)(IMX_HIST_PAGE - 1);
}

size_t imx_hist_table_size(uint32_t cap)
{
    return bodies_off(cap) + (size_t)cap * sizeof(imx_hist_series_t);
}

static _Atomic uint32_t *keys_of(const imx_hist_table_t *t)
{
    return (_Atomic uint32_t *)((char *)(uintptr_t)t + sizeof(*t));
}

static _Atomic uint32_t *index_of(const imx_hist_table_t *t)
{
    return keys_of(t) + t->cap;
}

static imx_hist_series_t *body(imx_hist_table_t *t, uint32_t i)
{
    return (imx_hist_series_t *)((char *)t + t->boff) + i;
}

/* Forgets every series: keys[0..n) and the index. */
static void empty(imx_hist_table_t *t, uint32_t n)
{
    memset(keys_of(t), 0, (size_t)n * sizeof(uint32_t));
    memset(index_of(t), 0, (size_t)t->nindex * sizeof(uint32_t));
    atomic_store(&t->used, 0);
}

void imx_hist_init(imx_hist_table_t *t, uint32_t cap)
{
    t->cap = cap;
    t->nindex = nindex_of(cap);
    t->boff = (uint32_t)bodies_off(cap);
    atomic_store(&t->overflow, 0);
    empty(t, cap);
}

uint32_t imx_hist_used(const imx_hist_table_t *t)
{
    uint32_t n = atomic_load_explicit(&t->used, memory_order_acquire);

    return n < t->cap ? n : t->cap;
}

unsigned imx_hist_bucket(uint64_t us)
{
    unsigned e;

    if (us < IMX_HIST_LINEAR) {
        return (unsigned)us;
    }
    if (us >> (IMX_HIST_MAX_EXP + 1)) {
        us = ((uint64_t)1 << (IMX_HIST_MAX_EXP + 1)) - 1;
    }
    e = 63u - (unsigned)__builtin_clzll(us);                /* >= 7 */
    return IMX_HIST_LINEAR + (e - 7) * IMX_HIST_SUB
           + (unsigned)((us >> (e - 6)) & (IMX_HIST_SUB - 1));
}

uint64_t imx_hist_value(unsigned bucket)
{
    unsigned e, sub;
    uint64_t lo, width;

    if (bucket < IMX_HIST_LINEAR) {
        return bucket;
    }
    e = (bucket - IMX_HIST_LINEAR) / IMX_HIST_SUB + 7;
    sub = (bucket - IMX_HIST_LINEAR) % IMX_HIST_SUB;
    width = (uint64_t)1 << (e - 6);
    lo = ((uint64_t)1 << e) + sub * width;
    return lo + width / 2;
}

static uint32_t hash32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

/* The series for key, claiming one if needed; NULL when full. With
 * create == 0, only finds. */
static imx_hist_series_t *find(imx_hist_table_t *t, uint32_t key, int create)
{
    _Atomic uint32_t *keys = keys_of(t), *index = index_of(t);
    uint32_t mask = t->nindex - 1, h = hash32(key) & mask;

    for (uint32_t probe = 0; probe < t->nindex; probe++, h = (h + 1) & mask) {
        uint32_t e = atomic_load_explicit(&index[h], memory_order_acquire), i;
        imx_hist_series_t *s;

        /* Its claimer publishes within a few instructions, unless it was
         * preempted: then wait, yielding, rather than claim a second body
         * for what may be the same key (enough of those fill the table and
         * push requests into overflow). A claim happens once per series and
         * process, so this wait is rare; bounded (about a few ms) for a
         * claimer that died. */
        for (int spin = 0; e == BUSY && spin < 100000; spin++) {
            if ((spin & 63) == 63) {
                sched_yield();
            }
            e = atomic_load_explicit(&index[h], memory_order_acquire);
        }
        if (e == BUSY) {
            continue;           /* its claimer died: look further */
        }
        if (e) {
            if (e - 1 < t->cap && atomic_load_explicit(&keys[e - 1], memory_order_relaxed) == key) {
                return body(t, e - 1);
            }
            continue;
        }
        if (!create || atomic_load_explicit(&t->used, memory_order_relaxed) >= t->cap) {
            return NULL;
        }
        if (!atomic_compare_exchange_strong_explicit(&index[h], &e, BUSY, memory_order_acq_rel,
                                                     memory_order_acquire)) {
            h = (h - 1) & mask;     /* taken meanwhile: look at it again */
            probe--;
            continue;
        }
        i = atomic_fetch_add_explicit(&t->used, 1, memory_order_relaxed);
        if (i >= t->cap) {
            atomic_store_explicit(&index[h], 0, memory_order_release);
            return NULL;
        }
        /* Zeroed now, not when the table was emptied: bodies never used are
         * never touched. Nobody reads it before the key is published. */
        s = body(t, i);
        memset(s, 0, sizeof(*s));
        atomic_store_explicit(&keys[i], key, memory_order_release);
        atomic_store_explicit(&index[h], i + 1, memory_order_release);
        return s;
    }
    return NULL;
}

static void store_max(_Atomic uint64_t *m, uint64_t v)
{
    uint64_t cur = atomic_load_explicit(m, memory_order_relaxed);

    while (v > cur && !atomic_compare_exchange_weak_explicit(m, &cur, v, memory_order_relaxed,
                                                             memory_order_relaxed)) {
        ;
    }
}

static void add(_Atomic uint64_t *c, uint64_t v)
{
    if (v) {
        atomic_fetch_add_explicit(c, v, memory_order_relaxed);
    }
}

/* The exemplar's lock. Held for a 64-byte copy, so a waiter spins briefly;
 * bounded, for a holder that died (then the exemplar is given up). */
static int ex_lock(imx_hist_series_t *s)
{
    for (int spin = 0; spin < 4096; spin++) {
        uint32_t z = 0;

        if (atomic_compare_exchange_weak_explicit(&s->ex_lock, &z, 1, memory_order_acquire,
                                                  memory_order_relaxed)) {
            return 1;
        }
        if ((spin & 63) == 63) {
            sched_yield();
        }
    }
    return 0;
}

static void ex_unlock(imx_hist_series_t *s)
{
    atomic_store_explicit(&s->ex_lock, 0, memory_order_release);
}

/* v: duration + 1. Most requests are not the slowest so far and stop at
 * the first load. */
static void ex_offer(imx_hist_series_t *s, uint64_t v, const char *id, size_t len)
{
    if (v <= atomic_load_explicit(&s->ex_us, memory_order_relaxed) || !ex_lock(s)) {
        return;
    }
    if (v > atomic_load_explicit(&s->ex_us, memory_order_relaxed)) {
        len = len < IMX_HIST_ID_MAX ? len : IMX_HIST_ID_MAX;
        memcpy(s->ex_id, id, len);
        s->ex_len = (uint32_t)len;
        atomic_store_explicit(&s->ex_us, v, memory_order_relaxed);
    }
    ex_unlock(s);
}

/* Takes s's exemplar out (s has none after); 0 if it had none. */
static int ex_take(imx_hist_series_t *s, uint64_t *v, char *id, uint32_t *len)
{
    if (!atomic_load_explicit(&s->ex_us, memory_order_relaxed)) {
        return 0;
    }
    if (!ex_lock(s)) {
        /* Its holder died in the middle of a copy: the id may be torn. */
        atomic_store(&s->ex_us, 0);
        ex_unlock(s);
        return 0;
    }
    *v = atomic_load_explicit(&s->ex_us, memory_order_relaxed);
    *len = s->ex_len < IMX_HIST_ID_MAX ? s->ex_len : IMX_HIST_ID_MAX;
    memcpy(id, s->ex_id, *len);
    atomic_store_explicit(&s->ex_us, 0, memory_order_relaxed);
    ex_unlock(s);
    return *v != 0;
}


int imx_hist_record(imx_hist_table_t *t, uint32_t key, uint64_t us, int error,
                    const imx_hist_extra_t *x)
{
    imx_hist_series_t *s = find(t, key, 1);

    if (!s) {
        atomic_fetch_add_explicit(&t->overflow, 1, memory_order_relaxed);
        return 0;
    }
    atomic_fetch_add_explicit(&s->sum, us, memory_order_relaxed);
    if (error) {
        atomic_fetch_add_explicit(&s->errors, 1, memory_order_relaxed);
    }
    store_max(&s->minr, UINT64_MAX - us);
    store_max(&s->max, us);
    if (x) {
        if (x->slo_us) {
            store_max(&s->slo_us, x->slo_us);
            if (!error && us <= x->slo_us) {
                atomic_fetch_add_explicit(&s->slo_good, 1, memory_order_relaxed);
            }
        }
        if (x->id && x->id_len) {
            ex_offer(s, us + 1, x->id, x->id_len);
        }
    }
    /* Last: the request's count. A drain that takes it sees the rest. */
    atomic_fetch_add_explicit(&s->b[imx_hist_bucket(us)], 1, memory_order_release);
    return 1;
}

static int has_scalars(imx_hist_series_t *s)
{
    return atomic_load_explicit(&s->sum, memory_order_relaxed)
           || atomic_load_explicit(&s->errors, memory_order_relaxed)
           || atomic_load_explicit(&s->minr, memory_order_relaxed)
           || atomic_load_explicit(&s->max, memory_order_relaxed)
           || atomic_load_explicit(&s->slo_good, memory_order_relaxed)
           || atomic_load_explicit(&s->slo_us, memory_order_relaxed)
           || atomic_load_explicit(&s->ex_us, memory_order_relaxed);
}

/* Moves the SLO counts and the exemplar of s into d. */
static void move_extra(imx_hist_series_t *d, imx_hist_series_t *s)
{
    char id[IMX_HIST_ID_MAX];
    uint32_t len;
    uint64_t v;

    add(&d->slo_good, atomic_exchange(&s->slo_good, 0));
    store_max(&d->slo_us, atomic_exchange(&s->slo_us, 0));
    if (ex_take(s, &v, id, &len)) {
        ex_offer(d, v, id, len);
    }
}

uint32_t imx_hist_drain(imx_hist_table_t *dst, imx_hist_table_t *src)
{
    _Atomic uint32_t *keys = keys_of(src);
    uint32_t n = imx_hist_used(src), left = 0;

    if (atomic_load_explicit(&src->overflow, memory_order_relaxed)) {
        add(&dst->overflow, atomic_exchange(&src->overflow, 0));
    }
    for (uint32_t i = 0; i < n; i++) {
        uint32_t key = atomic_load_explicit(&keys[i], memory_order_acquire);
        imx_hist_series_t *ss, *ds = NULL;
        unsigned b;

        if (!key) {
            continue;           /* being claimed */
        }
        ss = body(src, i);
        /* Buckets first: a request whose bucket is taken has its sum, errors,
         * min and max visible by then, so they are taken just below. */
        for (b = 0; b < IMX_HIST_BUCKETS; b++) {
            if (!atomic_load_explicit(&ss->b[b], memory_order_relaxed)) {
                continue;
            }
            if (!ds && !(ds = find(dst, key, 1))) {
                break;
            }
            add(&ds->b[b], atomic_exchange_explicit(&ss->b[b], 0, memory_order_acq_rel));
        }
        if (!ds) {
            if (b < IMX_HIST_BUCKETS || (has_scalars(ss) && !(ds = find(dst, key, 1)))) {
                left++;         /* dst is full: it waits here */
            }
            if (!ds) {
                continue;
            }
        }
        add(&ds->sum, atomic_exchange(&ss->sum, 0));
        add(&ds->errors, atomic_exchange(&ss->errors, 0));
        store_max(&ds->minr, atomic_exchange(&ss->minr, 0));
        store_max(&ds->max, atomic_exchange(&ss->max, 0));
        move_extra(ds, ss);
    }
    return left;
}

static void merge(imx_hist_series_t *d, imx_hist_series_t *s)
{
    for (unsigned b = 0; b < IMX_HIST_BUCKETS; b++) {
        add(&d->b[b], atomic_load_explicit(&s->b[b], memory_order_relaxed));
    }
    add(&d->sum, atomic_load(&s->sum));
    add(&d->errors, atomic_load(&s->errors));
    store_max(&d->minr, atomic_load(&s->minr));
    store_max(&d->max, atomic_load(&s->max));
    move_extra(d, s);
}

void imx_hist_repair(imx_hist_table_t *t)
{
    _Atomic uint32_t *keys = keys_of(t), *index = index_of(t);
    uint32_t n = imx_hist_used(t), mask = t->nindex - 1;

    memset(index, 0, (size_t)t->nindex * sizeof(uint32_t));
    for (uint32_t i = 0; i < n; i++) {
        uint32_t key = atomic_load(&keys[i]), h;

        if (!key) {
            continue;
        }
        /* nindex > n: an empty slot is always found. */
        for (h = hash32(key) & mask;; h = (h + 1) & mask) {
            uint32_t e = atomic_load(&index[h]);
            if (!e) {
                atomic_store(&index[h], i + 1);
                break;
            }
            if (atomic_load(&keys[e - 1]) == key) {
                merge(body(t, e - 1), body(t, i));
                atomic_store(&keys[i], 0);
                break;
            }
        }
    }
    atomic_store(&t->used, n);
}

uint64_t imx_hist_percentile(const uint64_t *b, uint64_t count, double p)
{
    uint64_t rank, seen = 0;

    if (!count) {
        return 0;
    }
    rank = (uint64_t)(p / 100.0 * (double)count + 0.999999999);
    if (rank < 1) {
        rank = 1;
    }
    for (unsigned i = 0; i < IMX_HIST_BUCKETS; i++) {
        seen += b[i];
        if (seen >= rank) {
            return imx_hist_value(i);
        }
    }
    return imx_hist_value(IMX_HIST_BUCKETS - 1);
}

static char *put_field(char *o, const char *name, uint64_t v, int first)
{
    if (!first) {
        *o++ = ',';
    }
    while (*name) {
        *o++ = *name++;
    }
    *o++ = '=';
    o = imx_put_u64(o, v);
    *o++ = 'i';
    return o;
}

int imx_hist_reserve(imx_hist_out_t *o, size_t need)
{
    size_t cap;
    char *nb;

    if (o->len + need <= o->cap) {
        return 1;
    }
    cap = o->cap * 2 > o->len + need ? o->cap * 2 : o->len + need;
    if (cap < 65536) {
        cap = 65536;
    }
    if (!(nb = realloc(o->buf, cap))) {
        return 0;
    }
    o->buf = nb;
    o->cap = cap;
    return 1;
}

/* What a drain took of a request still being recorded: kept for the next
 * interval, where the rest of it is. */
typedef struct {
    uint32_t key;
    uint64_t sum, errors, minr, max, slo_good, slo_us, ex_us;
    uint32_t ex_len;
    char ex_id[IMX_HIST_ID_MAX];
} fragment_t;

/* Upper bound of one series' line, besides prefix and tags: the fields
 * below, the SLO and ttfb fields, and max_request_id with every byte of
 * the id escaped. */
#define FIXED_MAX (9 * 40 + 30 + 5 * 40 + 20 + 2 * IMX_HIST_ID_MAX)

/* A string field: '"' and '\' escaped, control bytes left out (ids are
 * checked by the glue; this keeps a line whole whatever they hold). */
static char *put_str(char *o, const char *name, const char *v, size_t len)
{
    *o++ = ',';
    while (*name) {
        *o++ = *name++;
    }
    *o++ = '=';
    *o++ = '"';
    for (size_t i = 0; i < len; i++) {
        if (v[i] == '"' || v[i] == '\\') {
            *o++ = '\\';
        }
        else if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f) {
            continue;
        }
        *o++ = v[i];
    }
    *o++ = '"';
    return o;
}

/* The counts of series s into b; returns their sum. */
static uint64_t take_buckets(imx_hist_series_t *s, uint64_t *b, unsigned *nz)
{
    uint64_t count = 0;

    for (unsigned i = 0; i < IMX_HIST_BUCKETS; i++) {
        b[i] = atomic_load_explicit(&s->b[i], memory_order_relaxed);
        count += b[i];
        if (nz) {
            *nz += b[i] != 0;
        }
    }
    return count;
}
#define BUCKET_FIELD_MAX (2 + 20 + 1 + 20 + 2)

uint32_t imx_hist_encode(imx_hist_out_t *o, const char *prefix, imx_hist_table_t *t,
                         imx_hist_tags_fn *tags, void *ctx, int64_t ts_ns,
                         uint64_t *sum_us)
{
    static const double pct[4] = { 50, 90, 95, 99 };
    static const char *const pname[4] = { "p50_us", "p90_us", "p95_us", "p99_us" };
    static const double tpct[3] = { 50, 95, 99 };
    static const char *const tname[3] = { "ttfb_p50_us", "ttfb_p95_us", "ttfb_p99_us" };
    static uint64_t tdelta[IMX_HIST_BUCKETS];   /* one writer of summaries */
    _Atomic uint32_t *keys = keys_of(t);
    size_t plen = strlen(prefix), start = o->len;
    uint64_t delta[IMX_HIST_BUCKETS], total = 0, ov;
    uint32_t n = imx_hist_used(t), lines = 0, nfrag = 0, fragcap = 0;
    fragment_t *frag = NULL;

    for (uint32_t i = 0; i < n; i++) {
        uint32_t key = atomic_load(&keys[i]);
        imx_hist_series_t *s;
        uint64_t count = 0, mn, mx, sum;
        const char *tx;
        size_t tlen;
        unsigned nz = 0;
        char *w;

        /* Times to first byte are written with the series they belong to. */
        if (!key || (key & IMX_HIST_TTFB)) {
            continue;
        }
        s = body(t, i);
        count = take_buckets(s, delta, &nz);
        if (!count) {
            if (has_scalars(s)) {
                if (nfrag == fragcap) {
                    fragment_t *nf = realloc(frag, sizeof(*frag) * (fragcap ? fragcap * 2 : 16));
                    if (!nf) {
                        continue;   /* a request's sum lost: not worth failing for */
                    }
                    frag = nf;
                    fragcap = fragcap ? fragcap * 2 : 16;
                }
                frag[nfrag] = (fragment_t){ key, atomic_load(&s->sum), atomic_load(&s->errors),
                                            atomic_load(&s->minr), atomic_load(&s->max),
                                            atomic_load(&s->slo_good), atomic_load(&s->slo_us),
                                            0, 0, { 0 } };
                ex_take(s, &frag[nfrag].ex_us, frag[nfrag].ex_id, &frag[nfrag].ex_len);
                nfrag++;
            }
            continue;
        }
        if (!(tx = tags(ctx, key))) {
            continue;
        }
        tlen = strlen(tx);
        if (!imx_hist_reserve(o, plen + tlen + FIXED_MAX + nz * BUCKET_FIELD_MAX + 24)) {
            o->len = start;     /* all of it next time */
            free(frag);
            return 0;
        }
        w = o->buf + o->len;
        mn = atomic_load(&s->minr);
        mn = mn ? UINT64_MAX - mn : 0;
        mx = atomic_load(&s->max);
        sum = atomic_load(&s->sum);
        memcpy(w, prefix, plen);
        w += plen;
        memcpy(w, tx, tlen);
        w += tlen;
        *w++ = ' ';
        w = put_field(w, "count", count, 1);
        w = put_field(w, "errors", atomic_load(&s->errors), 0);
        w = put_field(w, "duration_us_sum", sum, 0);
        w = put_field(w, "duration_us_min", mn, 0);
        w = put_field(w, "duration_us_max", mx, 0);
        /* Clamp the percentiles into min and max, the one thing known exactly. */
        for (int k = 0; k < 4; k++) {
            uint64_t v = imx_hist_percentile(delta, count, pct[k]);
            if (v < mn) v = mn;
            if (mx && v > mx) v = mx;
            w = put_field(w, pname[k], v, 0);
        }
        /* Bucket counts, named by the bucket's lower bound in microseconds,
         * so histograms of several servers can be summed in a query. */
        for (unsigned b = 0; b < IMX_HIST_BUCKETS; b++) {
            if (delta[b]) {
                char name[24] = "b_";
                uint64_t lo = b < IMX_HIST_LINEAR ? b
                    : imx_hist_value(b) - (((uint64_t)1 << ((b - IMX_HIST_LINEAR) / IMX_HIST_SUB + 1)) / 2);
                char *e = imx_put_u64(name + 2, lo);
                *e = '\0';
                w = put_field(w, name, delta[b], 0);
            }
        }
        {
            imx_hist_series_t *ts = find(t, key | IMX_HIST_TTFB, 0);
            uint64_t tcount = ts ? take_buckets(ts, tdelta, NULL) : 0;
            uint64_t ex_v, slo_us = atomic_load(&s->slo_us);
            char ex_id[IMX_HIST_ID_MAX];
            uint32_t ex_len;

            if (tcount) {
                uint64_t tmn = atomic_load(&ts->minr), tmx = atomic_load(&ts->max);

                tmn = tmn ? UINT64_MAX - tmn : 0;
                for (int k = 0; k < 3; k++) {
                    uint64_t v = imx_hist_percentile(tdelta, tcount, tpct[k]);
                    if (v < tmn) v = tmn;
                    if (tmx && v > tmx) v = tmx;
                    w = put_field(w, tname[k], v, 0);
                }
            }
            if (slo_us) {
                w = put_field(w, "slo_good", atomic_load(&s->slo_good), 0);
                w = put_field(w, "slo_threshold_us", slo_us, 0);
            }
            if (ex_take(s, &ex_v, ex_id, &ex_len) && ex_len) {
                w = put_str(w, "max_request_id", ex_id, ex_len);
            }
        }
        *w++ = ' ';
        w = imx_put_u64(w, (uint64_t)ts_ns);
        *w++ = '\n';
        o->len = (size_t)(w - o->buf);
        total += sum;
        lines++;
    }
    ov = atomic_load(&t->overflow);
    empty(t, n);
    atomic_store(&t->overflow, ov);
    for (uint32_t f = 0; f < nfrag; f++) {
        imx_hist_series_t *s = find(t, frag[f].key, 1);
        if (s) {
            add(&s->sum, frag[f].sum);
            add(&s->errors, frag[f].errors);
            store_max(&s->minr, frag[f].minr);
            store_max(&s->max, frag[f].max);
            add(&s->slo_good, frag[f].slo_good);
            store_max(&s->slo_us, frag[f].slo_us);
            if (frag[f].ex_us) {
                ex_offer(s, frag[f].ex_us, frag[f].ex_id, frag[f].ex_len);
            }
        }
    }
    free(frag);
    *sum_us += total;
    return lines;
}
