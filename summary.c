/*
 * summary.c: mergeable duration histograms (see summary.h).
 *
 * Concurrency: a table is written by the request threads of one child with
 * relaxed atomic adds (a counter may be read a moment before or after its
 * neighbours; each is exact on its own). Series are claimed by a CAS on their
 * key, with linear probing from a hash of it; a full table counts the request
 * in overflow rather than waiting. Readers (the writer of summaries, one at a
 * time) sum tables into a private one and take min/max with an exchange, so
 * those two are per interval while the counters are cumulative: a summary is
 * the difference of two cumulative snapshots, exact across children.
 */
#include <stdio.h>
#include <string.h>

#include "batch.h"
#include "summary.h"

size_t imx_hist_table_size(uint32_t nseries)
{
    return sizeof(imx_hist_table_t) + (size_t)nseries * sizeof(imx_hist_series_t);
}

void imx_hist_init(imx_hist_table_t *t, uint32_t nseries)
{
    memset(t, 0, imx_hist_table_size(nseries));
    t->nseries = nseries;
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

/* The series for key, claiming an empty one if needed; NULL when full. With
 * create == 0, only finds. */
static imx_hist_series_t *find(imx_hist_table_t *t, uint32_t key, int create)
{
    uint32_t n = t->nseries;
    uint32_t i = hash32(key) % n;

    for (uint32_t probe = 0; probe < n; probe++, i = (i + 1 == n ? 0 : i + 1)) {
        imx_hist_series_t *s = &t->s[i];
        uint32_t k = atomic_load_explicit(&s->key, memory_order_acquire);

        if (k == key) {
            return s;
        }
        if (k == 0) {
            uint32_t zero = 0;
            if (!create) {
                return NULL;
            }
            if (atomic_compare_exchange_strong_explicit(&s->key, &zero, key,
                                                        memory_order_acq_rel,
                                                        memory_order_acquire)) {
                return s;
            }
            if (zero == key) {
                return s;       /* another thread claimed it for the same key */
            }
        }
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

int imx_hist_record(imx_hist_table_t *t, uint32_t key, uint64_t us, int error)
{
    imx_hist_series_t *s = find(t, key, 1);

    if (!s) {
        atomic_fetch_add_explicit(&t->overflow, 1, memory_order_relaxed);
        return 0;
    }
    atomic_fetch_add_explicit(&s->b[imx_hist_bucket(us)], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->sum, us, memory_order_relaxed);
    if (error) {
        atomic_fetch_add_explicit(&s->errors, 1, memory_order_relaxed);
    }
    store_max(&s->minr, UINT64_MAX - us);
    store_max(&s->max, us);
    /* Last: a reader that sees the count sees (almost) everything it covers. */
    atomic_fetch_add_explicit(&s->count, 1, memory_order_release);
    return 1;
}

void imx_hist_add(imx_hist_table_t *dst, const imx_hist_table_t *src)
{
    imx_hist_table_t *s_mut = (imx_hist_table_t *)src;

    atomic_fetch_add(&dst->overflow, atomic_load(&src->overflow));
    for (uint32_t i = 0; i < src->nseries; i++) {
        imx_hist_series_t *ss = &s_mut->s[i];
        uint32_t key = atomic_load_explicit(&ss->key, memory_order_acquire);
        imx_hist_series_t *ds;
        uint64_t mnr, mx;

        if (!key || !(ds = find(dst, key, 1))) {
            continue;
        }
        atomic_fetch_add_explicit(&ds->count, atomic_load_explicit(&ss->count,
                                  memory_order_acquire), memory_order_relaxed);
        atomic_fetch_add_explicit(&ds->errors, atomic_load(&ss->errors), memory_order_relaxed);
        atomic_fetch_add_explicit(&ds->sum, atomic_load(&ss->sum), memory_order_relaxed);
        for (unsigned b = 0; b < IMX_HIST_BUCKETS; b++) {
            uint32_t c = atomic_load_explicit(&ss->b[b], memory_order_relaxed);
            if (c) {
                atomic_fetch_add_explicit(&ds->b[b], c, memory_order_relaxed);
            }
        }
        /* Min and max belong to the interval: take them and reset. */
        mnr = atomic_exchange(&ss->minr, 0);
        mx = atomic_exchange(&ss->max, 0);
        store_max(&ds->minr, mnr);
        store_max(&ds->max, mx);
    }
}

uint64_t imx_hist_delta_sum(imx_hist_table_t *cur, imx_hist_table_t *prev)
{
    uint64_t tot = 0;

    for (uint32_t i = 0; i < cur->nseries; i++) {
        uint32_t key = atomic_load(&cur->s[i].key);
        imx_hist_series_t *ps;
        uint64_t c, p;

        if (!key) {
            continue;
        }
        ps = find(prev, key, 0);
        c = atomic_load(&cur->s[i].sum);
        p = ps ? atomic_load(&ps->sum) : 0;
        tot += c > p ? c - p : 0;
    }
    return tot;
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

static void copy_series(imx_hist_series_t *ps, imx_hist_series_t *cs)
{
    atomic_store(&ps->count, atomic_load(&cs->count));
    atomic_store(&ps->errors, atomic_load(&cs->errors));
    atomic_store(&ps->sum, atomic_load(&cs->sum));
    for (unsigned b = 0; b < IMX_HIST_BUCKETS; b++) {
        atomic_store_explicit(&ps->b[b], atomic_load_explicit(&cs->b[b], memory_order_relaxed),
                              memory_order_relaxed);
    }
}

/* Upper bound of one series' line, besides prefix and tags. */
#define FIXED_MAX (9 * 40 + 30)
#define BUCKET_FIELD_MAX (2 + 20 + 1 + 20 + 2)

size_t imx_hist_encode(char *out, size_t outsz, const char *prefix,
                       imx_hist_table_t *cur, imx_hist_table_t *prev,
                       imx_hist_tags_fn *tags, void *ctx, int64_t ts_ns,
                       uint32_t *lines)
{
    static const double pct[4] = { 50, 90, 95, 99 };
    static const char *const pname[4] = { "p50_us", "p90_us", "p95_us", "p99_us" };
    size_t plen = strlen(prefix);
    uint64_t delta[IMX_HIST_BUCKETS];
    char *o = out;

    *lines = 0;
    for (uint32_t i = 0; i < cur->nseries; i++) {
        imx_hist_series_t *cs = &cur->s[i];
        uint32_t key = atomic_load(&cs->key);
        imx_hist_series_t *ps;
        uint64_t count, pc = 0, mn, mx;
        const char *t;
        size_t tlen, need;
        unsigned nz = 0;

        if (!key) {
            continue;
        }
        ps = find(prev, key, 1);
        if (!ps) {
            continue;           /* cannot track it: the previous table is full */
        }
        pc = atomic_load(&ps->count);
        count = atomic_load(&cs->count) - pc;
        if (atomic_load(&cs->count) < pc) {
            count = 0;          /* counts were lost (a child died): resync */
        }
        for (unsigned b = 0; b < IMX_HIST_BUCKETS && count; b++) {
            uint64_t c = atomic_load_explicit(&cs->b[b], memory_order_relaxed);
            uint64_t p = atomic_load_explicit(&ps->b[b], memory_order_relaxed);
            if (c < p) {
                count = 0;
                break;
            }
            delta[b] = c - p;
            nz += delta[b] != 0;
        }
        if (!count || !(t = tags(ctx, key))) {
            copy_series(ps, cs);
            continue;
        }
        tlen = strlen(t);
        need = plen + tlen + FIXED_MAX + nz * BUCKET_FIELD_MAX + 24;
        if ((size_t)(o - out) + need > outsz) {
            break;              /* the rest goes out next interval */
        }
        mn = atomic_load(&cs->minr);
        mn = mn ? UINT64_MAX - mn : 0;
        mx = atomic_load(&cs->max);
        memcpy(o, prefix, plen);
        o += plen;
        memcpy(o, t, tlen);
        o += tlen;
        *o++ = ' ';
        o = put_field(o, "count", count, 1);
        o = put_field(o, "errors", atomic_load(&cs->errors) - atomic_load(&ps->errors), 0);
        o = put_field(o, "duration_us_sum", atomic_load(&cs->sum) - atomic_load(&ps->sum), 0);
        /* min/max were taken for this interval (see imx_hist_add); clamp the
         * percentiles into them, the one thing known exactly. */
        o = put_field(o, "duration_us_min", mn, 0);
        o = put_field(o, "duration_us_max", mx, 0);
        for (int k = 0; k < 4; k++) {
            uint64_t v = imx_hist_percentile(delta, count, pct[k]);
            if (v < mn) v = mn;
            if (mx && v > mx) v = mx;
            o = put_field(o, pname[k], v, 0);
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
                o = put_field(o, name, delta[b], 0);
            }
        }
        *o++ = ' ';
        o = imx_put_u64(o, (uint64_t)ts_ns);
        *o++ = '\n';
        (*lines)++;
        copy_series(ps, cs);
    }
    return (size_t)(o - out);
}
