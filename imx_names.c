/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_names.c: the registry of names (see imx_names.h).
 *
 * Lookups walk the kind's entries comparing hashes: the registry is filled
 * at configuration, by the parent, and read by id everywhere else, so the
 * lookup by text is off every hot path.
 */
#include <string.h>

#include "imx_names.h"

size_t imx_names_size(uint32_t arena)
{
    return sizeof(imx_names_t) + arena;
}

void imx_names_init(imx_names_t *r, uint32_t arena)
{
    r->arena_size = arena;
    r->arena_used = 0;
    for (int k = 0; k < IMX_NAMES_KINDS; k++) {
        atomic_store(&r->n[k], 0);
    }
    imx_names_intern(r, IMX_NAMES_SERVER, ",vhost=other", 12, 12);
    imx_names_intern(r, IMX_NAMES_ROUTE, "", 0, 0);
    imx_names_intern(r, IMX_NAMES_ROUTE, ",route=other", 12, 12);
    imx_names_intern(r, IMX_NAMES_UPSTREAM, ",upstream=-", 11, 11);
}

static uint32_t fnv1a(const char *s, size_t len, size_t split)
{
    uint32_t h = 2166136261u ^ (uint32_t)split;

    for (size_t i = 0; i < len; i++) {
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    }
    return h;
}

int imx_names_intern(imx_names_t *r, int kind, const char *text, size_t len, size_t split)
{
    uint32_t n, h = fnv1a(text, len, split);
    imx_names_ent_t *e;

    if (kind < 0 || kind >= IMX_NAMES_KINDS || split > len) {
        return -1;
    }
    n = atomic_load_explicit(&r->n[kind], memory_order_relaxed);
    for (uint32_t i = 0; i < n; i++) {
        e = &r->ent[kind][i];
        if (e->hash == h && e->len == len && e->split == split
            && !memcmp(r->arena + e->off, text, len)) {
            return (int)i;
        }
    }
    if (n >= IMX_NAMES_MAX || len >= r->arena_size - r->arena_used) {
        return -1;
    }
    e = &r->ent[kind][n];
    e->off = r->arena_used;
    e->len = (uint32_t)len;
    e->split = (uint32_t)split;
    e->hash = h;
    memcpy(r->arena + e->off, text, len);
    r->arena[e->off + len] = '\0';
    r->arena_used += (uint32_t)len + 1;
    /* Readers in other processes may look at any time: the entry is
     * complete before the count that makes it visible. */
    atomic_store_explicit(&r->n[kind], n + 1, memory_order_release);
    return (int)n;
}

const char *imx_names_get(const imx_names_t *r, int kind, uint32_t id, size_t *len,
                          size_t *split)
{
    const imx_names_ent_t *e;

    if (kind < 0 || kind >= IMX_NAMES_KINDS
        || id >= atomic_load_explicit(&r->n[kind], memory_order_acquire)) {
        return NULL;
    }
    e = &r->ent[kind][id];
    *len = e->len;
    *split = e->split;
    return r->arena + e->off;
}
