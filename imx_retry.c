/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_retry.c: the retry buffer (see imx_retry.h).
 *
 *   A batch the backend could not take (down, slow, 429, 5xx) is copied into
 *   a FIFO of encoded batches, bounded by retry_buffer bytes, and retried with
 *   exponential backoff and jitter (or after the backend's Retry-After). While
 *   it backs off, the flusher keeps draining the ring into the FIFO, so the
 *   ring stays free for the request path; when the FIFO is full its oldest
 *   batch is dropped and its points counted (dropped_retry), as is a batch
 *   that has failed for longer than retry_max_time. Memory is therefore
 *   bounded by the ring + retry_buffer + one batch being encoded. Order is
 *   kept: nothing new is sent while older batches wait.
 *
 *   With conf.retry_shared, retry_buffer bounds the FIFOs of every engine
 *   sharing the counter (the children of a server) together: each batch's
 *   pages are reserved there before it is kept and given back when it goes.
 *   An engine that finds the budget taken by others drops (or spools) its
 *   own oldest batches first, then the new one.
 *
 *
 *   Memory: with a shared budget a batch is mapped pages of its own,
 *   unmapped when it is freed. From malloc, the pages of batches a child
 *   dropped would stay in its arena, and during a long outage, as the budget
 *   passes from child to child, every child would keep the high-water mark
 *   of what it once held (a 60 s outage of 64 prefork children went 7 MB
 *   over a 32M bound). Pages are what the budget counts, so small bodies are
 *   gathered into one batch (imx_retry_gather), grown with mremap.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "imx_lineproto.h"
#include "imx_retry.h"

/* Small failed bodies are gathered into the newest batch while it is
 * younger than this share of retry_max_time (or GATHER_MAX): its oldest
 * points then wait at most that much longer than retry_max_time. */
#define GATHER_SHARE 8
#define GATHER_MAX apr_time_from_sec(60)
#define PAGE_ROUND(x) (((x) + 4095) & ~(size_t)4095)

void imx_retry_init(imx_retry_t *q, size_t limit, _Atomic uint64_t *shared,
                    uint32_t batch_size, apr_interval_time_t retry_max_time,
                    imx_counters_t *c)
{
    memset(q, 0, sizeof(*q));
    q->limit = limit;
    q->shared = shared;
    q->gather_points = batch_size;
    q->gather_window = retry_max_time ? retry_max_time / GATHER_SHARE : GATHER_MAX;
    if (q->gather_window > GATHER_MAX) {
        q->gather_window = GATHER_MAX;
    }
    q->c = c;
}

static void publish(imx_retry_t *q)
{
    atomic_store_explicit(&q->c->retry_points, q->points, memory_order_relaxed);
}

void imx_retry_release(_Atomic uint64_t *shared, uint64_t bytes)
{
    uint64_t cur = atomic_load(shared);

    while (!atomic_compare_exchange_weak(shared, &cur, cur > bytes ? cur - bytes : 0)) {
        ;
    }
}

/* What a batch of `need` bytes costs: with a shared budget, the whole pages
 * it is mapped in, so that the budget bounds the memory the children's
 * retry buffers take, not only their contents. */
static size_t cost(const imx_retry_t *q, size_t need)
{
    return q->shared ? PAGE_ROUND(need) : need;
}

int imx_retry_too_large(const imx_retry_t *q, size_t len)
{
    return cost(q, sizeof(imx_rbatch_t) + len) > q->limit;
}

int imx_retry_fits(const imx_retry_t *q, size_t len)
{
    size_t need = sizeof(imx_rbatch_t) + len;

    if (q->shared) {
        return atomic_load(q->shared) + cost(q, need) <= q->limit;
    }
    return q->bytes + need <= q->limit;
}

/* Reserves `n` bytes in the shared budget; 0 when others hold it. The
 * reservation is made before counters->retry_bytes says so, and given back
 * after it stops saying so: an engine killed in between leaves a few bytes
 * reserved for nobody (a tighter bound), never a budget below what is
 * held. */
static int budget_take(imx_retry_t *q, size_t n)
{
    uint64_t cur = atomic_load(q->shared);

    do {
        if (cur + n > q->limit) {
            return 0;
        }
    } while (!atomic_compare_exchange_weak(q->shared, &cur, cur + n));
    return 1;
}

static void held_add(imx_retry_t *q, size_t add)
{
    q->held += add;
    atomic_store(&q->c->retry_bytes, q->held);
}

static imx_rbatch_t *alloc_batch(imx_retry_t *q, size_t need)
{
    size_t n = cost(q, need);
    imx_rbatch_t *rb;

    if (q->shared) {
        void *m;

        if (!budget_take(q, n)) {
            return NULL;
        }
        m = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        rb = m == MAP_FAILED ? NULL : m;
    }
    else {
        rb = malloc(need);
    }
    if (!rb) {
        if (q->shared) {
            imx_retry_release(q->shared, n);
        }
        return NULL;
    }
    rb->size = n;
    held_add(q, n);
    return rb;
}

/* Room for `add` more bytes of data in rb, which may move (the caller
 * relinks it); NULL, rb untouched, when the budget or memory says no. */
static imx_rbatch_t *grow_batch(imx_retry_t *q, imx_rbatch_t *rb, size_t add)
{
    size_t need = sizeof(*rb) + rb->len + add, n = cost(q, need), more;
    imx_rbatch_t *nb;

    if (need <= rb->size) {
        return rb;
    }
    more = n - rb->size;
    if (q->shared) {
        void *m;

        if (!budget_take(q, more)) {
            return NULL;
        }
        m = mremap(rb, rb->size, n, MREMAP_MAYMOVE);
        if (m == MAP_FAILED) {
            imx_retry_release(q->shared, more);
            return NULL;
        }
        nb = m;
    }
    else if (!(nb = realloc(rb, n))) {
        return NULL;
    }
    nb->size = n;
    held_add(q, more);
    return nb;
}

void imx_retry_free(imx_retry_t *q, imx_rbatch_t *rb)
{
    size_t n = rb->size;

    if (q->shared) {
        munmap(rb, n);
    }
    else {
        free(rb);
    }
    q->held -= n;
    atomic_store(&q->c->retry_bytes, q->held);
    if (q->shared) {
        imx_retry_release(q->shared, n);
    }
}

imx_rbatch_t *imx_retry_unlink_head(imx_retry_t *q)
{
    imx_rbatch_t *rb = q->head;

    if (!rb) {
        return NULL;
    }
    q->head = rb->next;
    if (q->head) {
        q->head->prev = NULL;
    }
    else {
        q->tail = NULL;
    }
    q->bytes -= sizeof(*rb) + rb->len;
    q->points -= rb->n;
    publish(q);
    return rb;
}

void imx_retry_push_head(imx_retry_t *q, imx_rbatch_t *rb)
{
    rb->prev = NULL;
    rb->next = q->head;
    if (q->head) {
        q->head->prev = rb;
    }
    q->head = rb;
    if (!q->tail) {
        q->tail = rb;
    }
    q->bytes += sizeof(*rb) + rb->len;
    q->points += rb->n;
    publish(q);
}

void imx_retry_push_tail(imx_retry_t *q, imx_rbatch_t *rb)
{
    rb->next = NULL;
    rb->prev = q->tail;
    if (q->tail) {
        q->tail->next = rb;
    }
    else {
        q->head = rb;
    }
    q->tail = rb;
    q->bytes += sizeof(*rb) + rb->len;
    q->points += rb->n;
    publish(q);
}

void imx_retry_pop(imx_retry_t *q)
{
    imx_rbatch_t *rb = imx_retry_unlink_head(q);

    if (rb) {
        imx_retry_free(q, rb);
    }
}

int imx_retry_gather(imx_retry_t *q, const char *data, size_t len, uint32_t n,
                     uint32_t extra, apr_time_t first_fail, int maybe)
{
    imx_rbatch_t *rb = q->tail, *nb;

    if (!rb || rb->posted || rb->maybe_stored != maybe
        || (uint64_t)rb->n + n > q->gather_points
        || first_fail - rb->first_fail >= q->gather_window || first_fail < rb->first_fail
        || (!q->shared && q->bytes + len > q->limit)) {
        return 0;
    }
    if (!(nb = grow_batch(q, rb, len))) {
        return 0;
    }
    if (nb != rb) {
        if (nb->prev) {
            nb->prev->next = nb;
        }
        else {
            q->head = nb;
        }
        q->tail = nb;
    }
    imx_lp_join(nb->data, &nb->len, nb->extra, data, len, extra);
    nb->n += n;
    nb->extra += extra;
    nb->last_fail = first_fail;
    q->bytes += len;
    q->points += n;
    publish(q);
    return 1;
}

imx_rbatch_t *imx_retry_new(imx_retry_t *q, const char *data, size_t len, uint32_t n,
                            uint32_t extra, apr_time_t first_fail, int maybe, int posted)
{
    imx_rbatch_t *rb = alloc_batch(q, sizeof(*rb) + len);

    if (!rb) {
        return NULL;
    }
    memcpy(rb->data, data, len);
    rb->len = len;
    rb->n = n;
    rb->extra = extra;
    rb->first_fail = rb->last_fail = first_fail;
    rb->maybe_stored = maybe;
    rb->posted = posted;
    rb->next = rb->prev = NULL;
    return rb;
}
