/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_prom.c: request-duration histograms for the Prometheus endpoint
 * (see imx_prom.h): bucket layouts, and the per-slot tables written on
 * the request path (their layout and concurrency: imx_prom_int.h; the
 * scrape's side: imx_prom_acc.c).
 *
 * Cost of imx_prom_record, in instructions (x86-64, gcc 12 -O2, callgrind
 * --toggle-collect=imx_prom_record, the slope between 0.1 and 1.1 million
 * calls of tests/unit/test_prom.c's "cost" mode; `make prom-cost`):
 *   series found in its home slot, no id                     58
 *   the same with an id, exemplar held (written < 1 ms ago)  75
 *   the same, exemplar written (a 36-byte id)               146
 *   table full: the overflow series, after probing          147
 * Of the 58: about 25 for the bucket (a branch-light binary search of
 * fixed length over the 32 bounds padded with UINT64_MAX: six compares,
 * the same cost for any layout), 20 for the hash and the slot, 3 atomic
 * adds. The slow paths (probing, claiming, exemplars) are out of line and
 * entered by a jump, so the common one saves no registers. An exemplar is
 * rewritten at most once a millisecond per series and bucket: under load
 * nearly every request stops at one load, and a hot series' exemplar line
 * is not fought over; when requests are rare enough for every one to
 * write it, its cost does not matter.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imx_prom_int.h"

/* ------------------------------------------------------------------------- */
/* Bucket layouts                                                            */

static const uint64_t default_le[] = {
    1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 2500000, 5000000, 10000000
};

void imx_prom_buckets_default(imx_prom_buckets_t *b)
{
    b->n = sizeof(default_le) / sizeof(default_le[0]);
    memcpy(b->le_us, default_le, sizeof(default_le));
}

/* Seconds as decimal text into microseconds; NULL, or why not. */
static const char *parse_us(const char *s, size_t len, uint64_t *us)
{
    uint64_t ip = 0, fp = 0;
    size_t i = 0, idig = 0, fdig = 0;
    int neg = 0, fine = 0;

    if (len && (s[0] == '-' || s[0] == '+')) {
        neg = s[0] == '-';
        i++;
    }
    if ((len - i == 3 && !strncasecmp(s + i, "inf", 3))
        || (len - i == 8 && !strncasecmp(s + i, "infinity", 8))) {
        return neg ? "not above 0" : "the +Inf bucket is always there, implicitly";
    }
    for (; i < len && s[i] >= '0' && s[i] <= '9'; i++, idig++) {
        if (ip <= IMX_PROM_LE_LIMIT_US / 1000000) {
            ip = ip * 10 + (uint64_t)(s[i] - '0');
        }
    }
    if (i < len && s[i] == '.') {
        for (i++; i < len && s[i] >= '0' && s[i] <= '9'; i++, fdig++) {
            if (fdig < 6) {
                fp = fp * 10 + (uint64_t)(s[i] - '0');
            }
            else if (s[i] != '0') {
                fine = 1;
            }
        }
    }
    if (i < len || idig + fdig == 0) {
        return "not a number of seconds (such as 0.005 or 2.5)";
    }
    for (; fdig < 6; fdig++) {
        fp *= 10;
    }
    if (ip > IMX_PROM_LE_LIMIT_US / 1000000) {
        return "above the largest bound, 1000000000 seconds";
    }
    *us = ip * 1000000 + fp;
    if (neg) {
        return "not above 0";
    }
    if (fine) {
        return "finer than a microsecond";
    }
    if (*us == 0) {
        return "not above 0";
    }
    if (*us > IMX_PROM_LE_LIMIT_US) {
        return "above the largest bound, 1000000000 seconds";
    }
    return NULL;
}

/* err: the value (cut, non-printable bytes as '?') and why. */
static int fail(char *err, size_t errsz, const char *s, size_t len, const char *why)
{
    char shown[44];
    size_t n = len < 40 ? len : 40;

    for (size_t i = 0; i < n; i++) {
        shown[i] = s[i] >= 0x20 && s[i] < 0x7f && s[i] != '"' ? s[i] : '?';
    }
    if (len > n) {
        memcpy(shown + n, "...", 3);
        n += 3;
    }
    shown[n] = '\0';
    if (errsz) {
        snprintf(err, errsz, "\"%s\": %s", shown, why);
    }
    return -1;
}

static int add_value(imx_prom_buckets_t *b, const char *s, size_t len, char *err,
                     size_t errsz)
{
    const char *why = NULL;
    char prev[IMX_PROM_LE_MAX], msg[96];
    uint64_t us = 0;

    if ((why = parse_us(s, len, &us))) {
        return fail(err, errsz, s, len, why);
    }
    for (uint32_t i = 0; i < b->n; i++) {
        if (b->le_us[i] == us) {
            return fail(err, errsz, s, len, "given twice");
        }
    }
    if (b->n && us < b->le_us[b->n - 1]) {
        imx_prom_format_le(prev, b->le_us[b->n - 1]);
        snprintf(msg, sizeof(msg), "not above the bound before it (%s): bounds go up", prev);
        return fail(err, errsz, s, len, msg);
    }
    if (b->n >= IMX_PROM_BUCKETS_MAX) {
        return fail(err, errsz, s, len, "one bound more than the 32 allowed");
    }
    b->le_us[b->n++] = us;
    return 0;
}

int imx_prom_buckets_add(imx_prom_buckets_t *b, const char *arg, char *err, size_t errsz)
{
    return add_value(b, arg, strlen(arg), err, errsz);
}

int imx_prom_buckets_parse(imx_prom_buckets_t *b, const char *list, char *err, size_t errsz)
{
    const char *p = list;

    b->n = 0;
    for (;;) {
        size_t len;

        p += strspn(p, " \t,");
        if (!*p) {
            break;
        }
        len = strcspn(p, " \t,");
        if (add_value(b, p, len, err, errsz)) {
            return -1;
        }
        p += len;
    }
    if (!b->n) {
        if (errsz) {
            snprintf(err, errsz, "no bounds given (seconds, such as 0.005 0.05 0.5 5)");
        }
        return -1;
    }
    return 0;
}

size_t imx_prom_format_le(char *out, uint64_t us)
{
    char d[24], *o = out;
    int nd = 0, dp, exp;

    if (!us) {
        memcpy(out, "+Inf", 5);
        return 4;
    }
    for (uint64_t v = us; v; v /= 10) {
        d[nd++] = (char)('0' + v % 10);
    }
    for (int i = 0; i < nd / 2; i++) {
        char c = d[i];
        d[i] = d[nd - 1 - i];
        d[nd - 1 - i] = c;
    }
    dp = nd - 6;                /* the value is 0.d[0]d[1]... x 10^dp */
    while (nd > 1 && d[nd - 1] == '0') {
        nd--;
    }
    exp = dp - 1;
    if (exp < -4 || exp >= 6) {
        /* Go's %g for a shortest rendering: exponential out of 1e-4..1e6 */
        *o++ = d[0];
        if (nd > 1) {
            *o++ = '.';
            memcpy(o, d + 1, (size_t)nd - 1);
            o += nd - 1;
        }
        *o++ = 'e';
        *o++ = exp < 0 ? '-' : '+';
        exp = exp < 0 ? -exp : exp;
        *o++ = (char)('0' + exp / 10);
        *o++ = (char)('0' + exp % 10);
    }
    else if (dp <= 0) {
        *o++ = '0';
        *o++ = '.';
        memset(o, '0', (size_t)-dp);
        o += -dp;
        memcpy(o, d, (size_t)nd);
        o += nd;
    }
    else if (dp >= nd) {
        memcpy(o, d, (size_t)nd);
        o += nd;
        memset(o, '0', (size_t)(dp - nd));
        o += dp - nd;
        memcpy(o, ".0", 2);
        o += 2;
    }
    else {
        memcpy(o, d, (size_t)dp);
        o += dp;
        *o++ = '.';
        memcpy(o, d + dp, (size_t)(nd - dp));
        o += nd - dp;
    }
    *o = '\0';
    return (size_t)(o - out);
}

/* ------------------------------------------------------------------------- */
/* Tables                                                                    */

static uint32_t nindex_of(uint32_t cap)
{
    uint32_t n = 2;

    while (n < 2 * (uint64_t)cap) {
        n <<= 1;
    }
    return n;
}

static size_t counters_size(uint32_t nb)
{
    return round_up(sizeof(body_t) + (nb + 1) * sizeof(uint64_t), LINE);
}

static size_t stride_of(uint32_t nb, int exemplars)
{
    return counters_size(nb) + (exemplars ? round_up((nb + 1) * sizeof(ex_t), LINE) : 0);
}

static size_t bodies_off(uint32_t cap)
{
    return round_up(sizeof(imx_prom_table_t) + (size_t)cap * sizeof(uint64_t)
                    + (size_t)nindex_of(cap) * sizeof(uint32_t), PAGE);
}

size_t imx_prom_table_size(uint32_t cap, uint32_t nbuckets, int exemplars)
{
    return bodies_off(cap) + ((size_t)cap + 1) * stride_of(clamp_nb(nbuckets), exemplars);
}

void imx_prom_init(imx_prom_table_t *t, uint32_t cap, const imx_prom_buckets_t *b, int exemplars)
{
    uint32_t nb = clamp_nb(b->n);

    t->cap = cap;
    t->nindex = nindex_of(cap);
    t->shift = 64u - (31u - (uint32_t)__builtin_clz(t->nindex));
    t->nb = nb;
    t->exemplars = exemplars != 0;
    t->stride = (uint32_t)stride_of(nb, t->exemplars);
    t->ex_off = (uint32_t)counters_size(nb);
    t->boff = (uint32_t)bodies_off(cap);
    t->pad = 0;
    for (uint32_t i = 0; i < IMX_PROM_BUCKETS_MAX; i++) {
        t->le_us[i] = i < nb ? b->le_us[i] : UINT64_MAX;
    }
    memset(keys_of(t), 0, (size_t)cap * sizeof(uint64_t));
    memset(index_of(t), 0, (size_t)t->nindex * sizeof(uint32_t));
    memset(body(t, cap), 0, t->stride);
    atomic_store(&t->used, 0);
}

void imx_prom_table_buckets(const imx_prom_table_t *t, imx_prom_buckets_t *b)
{
    b->n = t->nb;
    memcpy(b->le_us, t->le_us, sizeof(b->le_us[0]) * t->nb);
}

/* Bounds below us, by halving a window of the 32 padded bounds: the
 * number of them < us is the first bucket whose bound is >= us. */
static inline unsigned bucket_of(const uint64_t *le, uint64_t us)
{
    unsigned i = le[15] < us ? 16 : 0;

    i = le[i + 7] < us ? i + 8 : i;
    i = le[i + 3] < us ? i + 4 : i;
    i = le[i + 1] < us ? i + 2 : i;
    i = le[i] < us ? i + 1 : i;
    return le[i] < us ? i + 1 : i;
}

unsigned imx_prom_bucket(const imx_prom_table_t *t, uint64_t us)
{
    return bucket_of(t->le_us, us);
}

static inline uint32_t slot_of(const imx_prom_table_t *t, uint64_t key)
{
    /* Fibonacci hashing: keys are packed small integers, and the top bits
     * of the product depend on all of theirs. */
    return (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> t->shift);
}

/* The series for key from slot h on, claiming one if needed; NULL when
 * none can be had. */
static __attribute__((noinline)) body_t *find_slow(imx_prom_table_t *t, uint64_t key, uint32_t h)
{
    _Atomic uint64_t *keys = keys_of(t);
    _Atomic uint32_t *index = index_of(t);
    uint32_t mask = t->nindex - 1, probe = 0;

    while (probe < t->nindex) {
        uint32_t e = atomic_load_explicit(&index[h], memory_order_acquire), i;
        body_t *s;

        for (int spin = 0; e == BUSY && spin < CLAIM_SPIN; spin++) {
            cpu_relax();
            e = atomic_load_explicit(&index[h], memory_order_acquire);
        }
        if (e == BUSY || e == DEAD
            || (e && (e - 1 >= t->cap
                      || atomic_load_explicit(&keys[e - 1], memory_order_relaxed) != key))) {
            probe++;
            h = (h + 1) & mask;
            continue;
        }
        if (e) {
            return body(t, e - 1);
        }
        if (atomic_load_explicit(&t->used, memory_order_relaxed) >= t->cap) {
            return NULL;
        }
        if (!atomic_compare_exchange_strong_explicit(&index[h], &e, BUSY, memory_order_acq_rel,
                                                     memory_order_acquire)) {
            continue;           /* taken meanwhile: look at it again */
        }
        i = atomic_fetch_add_explicit(&t->used, 1, memory_order_relaxed);
        if (i >= t->cap) {
            atomic_store_explicit(&index[h], DEAD, memory_order_release);
            return NULL;
        }
        s = body(t, i);
        memset(s, 0, t->stride);
        atomic_store_explicit(&keys[i], key, memory_order_release);
        atomic_store_explicit(&index[h], i + 1, memory_order_release);
        return s;
    }
    return NULL;
}

/* Offers an exemplar: skipped when another request holds it. Out of line:
 * the request path without one stays small. */
static __attribute__((noinline)) void ex_write(ex_t *x, const char *rid, size_t len, uint64_t us,
                                               int64_t ns)
{
    uint32_t s = atomic_load_explicit(&x->seq, memory_order_relaxed), next;
    size_t words, rest;

    if ((s & 1)
        || !atomic_compare_exchange_strong_explicit(&x->seq, &s, s + 1, memory_order_acquire,
                                                    memory_order_relaxed)) {
        return;
    }
    /* Release stores: a reader that sees any of them also sees the odd
     * seq before them (no fences: TSan does not model them). */
    len = len < IMX_PROM_ID_MAX ? len : IMX_PROM_ID_MAX;
    atomic_store_explicit(&x->len, (uint32_t)len, memory_order_release);
    atomic_store_explicit(&x->ns, ns, memory_order_release);
    atomic_store_explicit(&x->us, us, memory_order_release);
    words = len / 8;
    rest = len % 8;
    for (size_t i = 0; i < words; i++) {
        uint64_t v;

        memcpy(&v, rid + 8 * i, 8);
        atomic_store_explicit(&x->id[i], v, memory_order_release);
    }
    if (rest) {
        uint64_t v;

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        if (words) {
            /* The last 8 bytes, shifted down to the ones not copied yet:
             * one load rather than a loop over up to 7 bytes. */
            memcpy(&v, rid + len - 8, 8);
            v >>= 8 * (8 - rest);
        }
        else
#endif
        {
            unsigned char tail[8] = { 0 };

            for (size_t k = 0; k < rest; k++) {
                tail[k] = (unsigned char)rid[8 * words + k];
            }
            memcpy(&v, tail, 8);
        }
        atomic_store_explicit(&x->id[words], v, memory_order_release);
    }
    /* Even again; never 0 (never written) when seq wraps. */
    next = s + 2 ? s + 2 : 2;
    atomic_store_explicit(&x->seq, next, memory_order_release);
}

static inline void count(imx_prom_table_t *t, body_t *s, unsigned b, uint64_t us,
                         uint64_t bytes_sent, const char *rid, size_t rid_len, int64_t now_ns)
{
    atomic_fetch_add_explicit(&s->sum_us, us, memory_order_relaxed);
    if (bytes_sent) {
        atomic_fetch_add_explicit(&s->bytes, bytes_sent, memory_order_relaxed);
    }
    /* The count last: a reader that counts this request sees its sums. */
    atomic_fetch_add_explicit(&s->b[b], 1, memory_order_release);
    if (rid_len && t->exemplars && rid) {
        ex_t *x = ex_of(t, s, b);
        int64_t prev = atomic_load_explicit(&x->ns, memory_order_relaxed);

        /* One in a millisecond at most: under load, most requests stop at
         * the load above, and the line is not fought over. Earlier (or
         * none, 0): the clock was set back; written. */
        if (!prev || (uint64_t)now_ns - (uint64_t)prev >= IMX_PROM_EX_HOLD_NS) {
            ex_write(x, rid, rid_len, us, now_ns);
        }
    }
}

/* The request of a series not in its home slot: probing, claiming, the
 * overflow series. Out of line, and with imx_prom_record's own arguments
 * so that calling it is a jump: the common path saves no registers. */
static __attribute__((noinline)) void record_slow(imx_prom_table_t *t, uint64_t key, uint64_t us,
                                                  uint64_t bytes_sent, const char *rid,
                                                  size_t rid_len, int64_t now_ns)
{
    body_t *s = NULL;

    if (key - 1 < IMX_PROM_OVERFLOW - 1) {     /* neither 0 nor the overflow */
        s = find_slow(t, key, slot_of(t, key));
    }
    count(t, s ? s : body(t, t->cap), bucket_of(t->le_us, us), us, bytes_sent, rid, rid_len,
          now_ns);
}

void imx_prom_record(imx_prom_table_t *t, uint64_t key, uint64_t us, uint64_t bytes_sent,
                     const char *rid, size_t rid_len, int64_t now_ns)
{
    uint32_t e = atomic_load_explicit(&index_of(t)[slot_of(t, key)], memory_order_acquire);

    /* e - 1 < cap: neither empty (0), BUSY nor DEAD. Key 0 and the overflow key
     * never match: a published slot's key is neither (record_slow never
     * claims them). */
    if (e - 1 < t->cap
        && atomic_load_explicit(&keys_of(t)[e - 1], memory_order_relaxed) == key) {
        count(t, body(t, e - 1), bucket_of(t->le_us, us), us, bytes_sent, rid, rid_len, now_ns);
        return;
    }
    record_slow(t, key, us, bytes_sent, rid, rid_len, now_ns);
}
