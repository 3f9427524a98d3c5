/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_prom_acc.c: what a scrape reads (see imx_prom.h): the sum of any
 * number of tables, by series key, in private memory. Reads shared memory
 * only, never waits for a writer (the order of its loads: imx_prom_int.h).
 */
#include <stdlib.h>
#include <string.h>

#include "imx_prom_int.h"

/* Accumulators                                                              */

typedef struct {
    uint64_t key;
    uint32_t i;
} key_ref_t;

struct imx_prom_acc {
    imx_prom_buckets_t b;
    int exemplars;
    uint32_t n, cap;            /* series, room for them */
    imx_prom_series_t *s;
    imx_prom_exemplar_t *ex;    /* cap x (nb + 1); len 0: none */
    uint32_t *index, nindex;    /* i + 1 by key hash, 0 empty */
    key_ref_t *order;           /* s by key, when sorted (cap entries) */
    int sorted;
};

imx_prom_acc_t *imx_prom_acc_new(const imx_prom_buckets_t *b, int exemplars)
{
    imx_prom_acc_t *a = calloc(1, sizeof(*a));

    if (a) {
        a->b = *b;
        a->b.n = clamp_nb(b->n);
        a->exemplars = exemplars != 0;
    }
    return a;
}

void imx_prom_acc_free(imx_prom_acc_t *a)
{
    if (a) {
        free(a->s);
        free(a->ex);
        free(a->index);
        free(a->order);
        free(a);
    }
}

static uint32_t acc_slot(uint64_t key, uint32_t mask)
{
    return (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & mask;
}

/* Room for more series in a, so that adding a table cannot fail half way. */
static int acc_reserve(imx_prom_acc_t *a, uint32_t more)
{
    size_t nbk = a->b.n + 1, want = (size_t)a->n + more, cap = a->cap;
    uint32_t nindex = 16, *index;

    if (want <= a->cap) {
        return 0;
    }
    while (cap < want) {
        cap = cap ? cap * 2 : 64;
    }
    if (cap > UINT32_MAX / 4) {
        return IMX_PROM_ENOMEM;
    }
    {
        imx_prom_series_t *s = realloc(a->s, cap * sizeof(*s));
        if (!s) {
            return IMX_PROM_ENOMEM;
        }
        a->s = s;
    }
    if (a->exemplars) {
        imx_prom_exemplar_t *ex = realloc(a->ex, cap * nbk * sizeof(*ex));
        if (!ex) {
            return IMX_PROM_ENOMEM;
        }
        a->ex = ex;
    }
    while (nindex < 2 * cap) {
        nindex <<= 1;
    }
    {
        key_ref_t *order = realloc(a->order, cap * sizeof(*order));
        if (!order) {
            return IMX_PROM_ENOMEM;
        }
        a->order = order;
    }
    if (!(index = calloc(nindex, sizeof(*index)))) {
        return IMX_PROM_ENOMEM;
    }
    for (uint32_t i = 0; i < a->n; i++) {
        uint32_t h = acc_slot(a->s[i].key, nindex - 1);
        while (index[h]) {
            h = (h + 1) & (nindex - 1);
        }
        index[h] = i + 1;
    }
    free(a->index);
    a->index = index;
    a->nindex = nindex;
    a->cap = (uint32_t)cap;
    return 0;
}

/* The series of key, new if needed (acc_reserve made room). */
static uint32_t acc_get(imx_prom_acc_t *a, uint64_t key)
{
    uint32_t mask = a->nindex - 1, h = acc_slot(key, mask), i;

    for (; a->index[h]; h = (h + 1) & mask) {
        if (a->s[a->index[h] - 1].key == key) {
            return a->index[h] - 1;
        }
    }
    i = a->n++;
    memset(&a->s[i], 0, sizeof(a->s[i]));
    a->s[i].key = key;
    if (a->exemplars) {
        memset(&a->ex[(size_t)i * (a->b.n + 1)], 0, (a->b.n + 1) * sizeof(*a->ex));
    }
    a->index[h] = i + 1;
    a->sorted = 0;
    return i;
}

/* A copy of exemplar x, if one is there and was not being written. */
static int ex_read(const ex_t *x, imx_prom_exemplar_t *out)
{
    for (int tries = 0; tries < 4; tries++) {
        uint32_t s1 = atomic_load_explicit(&x->seq, memory_order_acquire), len;

        if (!s1) {
            return 0;
        }
        if (s1 & 1) {
            cpu_relax();
            continue;
        }
        /* Acquire loads: the seq load below comes after them, and sees
         * the odd seq of a writer whose store any of them read. */
        len = atomic_load_explicit(&x->len, memory_order_acquire);
        out->len = len < IMX_PROM_ID_MAX ? len : IMX_PROM_ID_MAX;
        out->ns = atomic_load_explicit(&x->ns, memory_order_acquire);
        out->us = atomic_load_explicit(&x->us, memory_order_acquire);
        for (size_t w = 0; w < IMX_PROM_ID_MAX / 8; w++) {
            uint64_t v = atomic_load_explicit(&x->id[w], memory_order_acquire);
            memcpy(out->id + w * 8, &v, 8);
        }
        if (atomic_load_explicit(&x->seq, memory_order_relaxed) == s1) {
            return out->len != 0;
        }
    }
    return 0;
}

static void acc_body(imx_prom_acc_t *a, const imx_prom_table_t *t, uint64_t key, body_t *s)
{
    imx_prom_exemplar_t ex[IMX_PROM_BUCKETS_MAX + 1];
    uint64_t b[IMX_PROM_BUCKETS_MAX + 1], count = 0, sum, bytes;
    unsigned nbk = t->nb + 1;
    int want_ex = a->exemplars && t->exemplars;
    imx_prom_series_t *d;
    uint32_t i;

    /* In this order: see the file's header. */
    for (unsigned k = 0; want_ex && k < nbk; k++) {
        if (!ex_read(ex_of(t, s, k), &ex[k])) {
            ex[k].len = 0;
        }
    }
    for (unsigned k = 0; k < nbk; k++) {
        b[k] = atomic_load_explicit(&s->b[k], memory_order_acquire);
        count += b[k];
    }
    if (!count) {
        return;                 /* claimed, no request done yet */
    }
    sum = atomic_load_explicit(&s->sum_us, memory_order_relaxed);
    bytes = atomic_load_explicit(&s->bytes, memory_order_relaxed);
    i = acc_get(a, key);
    d = &a->s[i];
    d->count += count;
    d->sum_us += sum;
    d->bytes += bytes;
    for (unsigned k = 0; k < nbk; k++) {
        d->b[k] += b[k];
    }
    for (unsigned k = 0; want_ex && k < nbk; k++) {
        imx_prom_exemplar_t *e = &a->ex[(size_t)i * nbk + k];

        if (ex[k].len && (!e->len || ex[k].ns > e->ns)) {
            *e = ex[k];
        }
    }
}

int imx_prom_acc_add(imx_prom_acc_t *a, const imx_prom_table_t *t)
{
    _Atomic uint64_t *keys = keys_of(t);
    uint32_t n = atomic_load_explicit(&t->used, memory_order_acquire);
    int rc;

    if (t->nb != a->b.n || memcmp(t->le_us, a->b.le_us, t->nb * sizeof(uint64_t))) {
        return IMX_PROM_ELAYOUT;
    }
    n = n < t->cap ? n : t->cap;
    if ((rc = acc_reserve(a, n + 1))) {
        return rc;
    }
    for (uint32_t i = 0; i < n; i++) {
        uint64_t key = atomic_load_explicit(&keys[i], memory_order_acquire);

        if (key) {              /* 0: being claimed */
            acc_body(a, t, key, body(t, i));
        }
    }
    acc_body(a, t, IMX_PROM_OVERFLOW, body(t, t->cap));
    return 0;
}

uint32_t imx_prom_acc_len(const imx_prom_acc_t *a)
{
    return a->n;
}

static int by_key(const void *x, const void *y)
{
    uint64_t kx = ((const key_ref_t *)x)->key, ky = ((const key_ref_t *)y)->key;

    return kx < ky ? -1 : kx > ky;
}

const imx_prom_series_t *imx_prom_acc_series(imx_prom_acc_t *a, uint32_t i)
{
    if (i >= a->n) {
        return NULL;
    }
    if (!a->sorted) {
        /* order has room for cap entries: acc_reserve made it. Keys are
         * unique, so the order of adding cannot show through. */
        for (uint32_t k = 0; k < a->n; k++) {
            a->order[k] = (key_ref_t){ a->s[k].key, k };
        }
        qsort(a->order, a->n, sizeof(*a->order), by_key);
        a->sorted = 1;
    }
    return &a->s[a->order[i].i];
}

const imx_prom_exemplar_t *imx_prom_acc_exemplar(const imx_prom_acc_t *a,
                                                 const imx_prom_series_t *s, unsigned b)
{
    const imx_prom_exemplar_t *e;

    if (!a->exemplars || b > a->b.n) {
        return NULL;
    }
    e = &a->ex[(size_t)(s - a->s) * (a->b.n + 1) + b];
    return e->len ? e : NULL;
}

const imx_prom_buckets_t *imx_prom_acc_buckets(const imx_prom_acc_t *a)
{
    return &a->b;
}
