/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_prom_int.h: the layout of a Prometheus table in shared memory, private
 * to its writers (imx_prom.c, the request path) and its readers
 * (imx_prom_acc.c, a scrape): what the two must agree on, and nothing else.
 *
 * Layout of a table, so that only the pages of series in use are backed
 * (shared memory is backed page by page, on first touch, by reads too):
 *   header | keys[cap] | hash index[nindex] | (page aligned)
 *   bodies[cap] | the overflow series' body
 * Series are claimed in order, so keys[0..used) and their bodies are a
 * dense prefix and a reader walks only those. A body is zeroed when it is
 * claimed, never before. A body: sum of microseconds, sum of bytes, one
 * counter per bucket (together in the first cache lines: what every
 * request writes), then with exemplars one per bucket; bodies are rounded
 * to 64 bytes so that two series never share a cache line.
 *
 * Concurrency. Writers: request threads of every child that ever held the
 * slot (a slot's child can die and be replaced while a scrape reads).
 * Readers: scrapes in any child, reading only. Nothing is ever reset, so
 * every counter only grows and each load of one sees at least what an
 * earlier load saw: a scraper never sees a counter go back.
 *  - Claims go through the hash index: a slot goes from empty to BUSY by
 *    CAS, the claimer takes the next dense body, zeroes it, publishes the
 *    key, then the slot (release). A thread that meets BUSY spins a little
 *    (no system call); if the claimer is still not done (preempted, or it
 *    died) it looks further and may claim a second body for the same key,
 *    which every reader adds up by key. No free body, no slot: the overflow
 *    series counts the request, so no request is ever lost. A slot is
 *    never emptied again (a claim that finds the table full marks its slot
 *    DEAD), so a key's chain of slots is never cut.
 *  - A request adds its sums (relaxed), then its bucket with release, then
 *    offers its exemplar. A reader loads the exemplars, then the buckets
 *    (acquire), then the sums: an exemplar it read is of a request whose
 *    bucket it counted, and the sums cover every request it counted.
 *  - An exemplar is a sequence lock: its writer makes seq odd by CAS, which
 *    is also the try-lock (a request that finds it odd, or loses the CAS,
 *    leaves the exemplar to the other), writes, and makes seq even again;
 *    a reader copies and keeps the copy only if seq was even and unchanged
 *    around it. Every field is an atomic, so no access is a data race; the
 *    fields are stored with release and loaded with acquire, which orders
 *    them against seq without fences (x86: plain moves either way). A
 *    writer that dies in the middle leaves seq odd: that exemplar is no
 *    longer written nor read, its counts go on.
 */
#ifndef IMX_PROM_INT_H
#define IMX_PROM_INT_H

#include <stdatomic.h>
#include <stdint.h>

#include "imx_prom.h"

#define BUSY 0xffffffffu
/* A slot given up by a claimer that found the table full: never empty
 * again, so that no key claimed past it while it was BUSY is cut off. */
#define DEAD 0xfffffffeu
#define LINE 64
#define PAGE 4096
/* Spins before giving up on a claimer: a claim takes well under a
 * microsecond unless it faults a new page in or is preempted. */
#define CLAIM_SPIN 512

_Static_assert(IMX_PROM_ID_MAX % 8 == 0, "ids are copied in words");

/* One bucket's exemplar (88 bytes). */
typedef struct {
    _Atomic uint32_t seq;       /* 0: never written; odd: being written */
    _Atomic uint32_t len;
    _Atomic int64_t ns;
    _Atomic uint64_t us;
    _Atomic uint64_t id[IMX_PROM_ID_MAX / 8];
} ex_t;

/* The start of a body; exemplars follow at ex_off. */
typedef struct {
    _Atomic uint64_t sum_us;
    _Atomic uint64_t bytes;
    _Atomic uint64_t b[];       /* nb + 1 */
} body_t;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    __asm__ __volatile__("" ::: "memory");
#endif
}

static inline uint32_t clamp_nb(uint32_t nb)
{
    return nb < 1 ? 1 : nb > IMX_PROM_BUCKETS_MAX ? IMX_PROM_BUCKETS_MAX : nb;
}

static inline _Atomic uint64_t *keys_of(const imx_prom_table_t *t)
{
    return (_Atomic uint64_t *)((char *)(uintptr_t)t + sizeof(*t));
}

static inline _Atomic uint32_t *index_of(const imx_prom_table_t *t)
{
    return (_Atomic uint32_t *)(keys_of(t) + t->cap);
}

static inline body_t *body(const imx_prom_table_t *t, uint32_t i)
{
    return (body_t *)((char *)(uintptr_t)t + t->boff + (size_t)i * t->stride);
}

static inline ex_t *ex_of(const imx_prom_table_t *t, body_t *s, unsigned b)
{
    return (ex_t *)((char *)s + t->ex_off) + b;
}

static inline size_t round_up(size_t n, size_t to)
{
    return (n + to - 1) & ~(to - 1);
}

#endif /* IMX_PROM_INT_H */
