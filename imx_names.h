/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_names.h: the registry of names.
 *
 * Texts of four kinds, each given a small id in the order registered, the
 * same id for the same text for the registry's life: a point (imx_point.h)
 * and a summary series key carry ids, never pointers, so whatever process
 * of whatever generation reads them gets the same text. One writer (httpd's
 * parent, at configuration); readers anywhere, at any time: an entry is
 * published with a release store of the count, so a reader that sees the id
 * sees the whole text. A text is stored with a split point (servers: the
 * vhost tag | the static tags), so the two parts can be placed apart in a
 * line.
 */
#ifndef IMX_NAMES_H
#define IMX_NAMES_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

enum {
    IMX_NAMES_SERVER,           /* ",vhost=<escaped>" | static tags */
    IMX_NAMES_ROUTE,            /* ",route=<escaped>" */
    IMX_NAMES_UPSTREAM,         /* ",upstream=<escaped>" */
    IMX_NAMES_FIXED,            /* texts that never change, e.g. ",key=other" */
    IMX_NAMES_KINDS
};

/* Ids imx_names_init registers first, so that they mean the same
 * everywhere: what a full registry (or a name that is gone) reads as. */
#define IMX_SERVER_OTHER    0   /* ",vhost=other" */
#define IMX_ROUTE_NONE      0   /* "" */
#define IMX_ROUTE_OTHER     1   /* ",route=other" */
#define IMX_UPSTREAM_NONE   0   /* ",upstream=-" */

#define IMX_NAMES_MAX 2048      /* ids per kind: 11 bits of a series key */

typedef struct imx_names_ent {
    uint32_t off, len, split, hash;
} imx_names_ent_t;

typedef struct imx_names {
    _Atomic uint32_t n[IMX_NAMES_KINDS];  /* entries published, per kind */
    uint32_t arena_size, arena_used;
    imx_names_ent_t ent[IMX_NAMES_KINDS][IMX_NAMES_MAX];
    char arena[];
} imx_names_t;

size_t imx_names_size(uint32_t arena);

/* On zeroed memory of imx_names_size(arena) bytes: empty but for the
 * reserved ids above. */
void imx_names_init(imx_names_t *r, uint32_t arena);

/* The id of text[0..len) (split: see above), registering it if new; -1
 * when the kind or the arena is full. Single writer. */
int imx_names_intern(imx_names_t *r, int kind, const char *text, size_t len, size_t split);

/* The text of an id (NUL-terminated), or NULL if there is none. */
const char *imx_names_get(const imx_names_t *r, int kind, uint32_t id, size_t *len,
                          size_t *split);

#endif /* IMX_NAMES_H */
