/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * test_names.h: a names registry (imx_names.h) in plain memory for the
 * engine's tests, fuzzers and benchmarks, with the ids the glue reserves
 * (mod_influx_metrics_summary.c): server 0 ",vhost=other", routes 0 (none)
 * and 1 ",route=other", upstream 0 ",upstream=-".
 */
#ifndef IMX_TEST_NAMES_H
#define IMX_TEST_NAMES_H

#include <stdlib.h>
#include <string.h>

#include "imx_engine.h"
#include "imx_hist.h"

/* Empties r (arena bytes of text) and registers the reserved ids. */
static inline void tn_reset(imx_names_t *r, uint32_t arena)
{
    imx_names_init(r, arena);
    imx_names_intern(r, 0, ",vhost=other", 12, 12);
    imx_names_intern(r, 1, "", 0, 0);
    imx_names_intern(r, 1, ",route=other", 12, 12);
    imx_names_intern(r, 2, ",upstream=-", 11, 11);
}

static inline imx_names_t *tn_new(uint32_t arena)
{
    imx_names_t *r = calloc(1, imx_names_size(arena));

    if (r) {
        tn_reset(r, arena);
    }
    return r;
}

/* ",vhost=<v>" and the static tags text, as one server id; -1: full. */
static inline int tn_server(imx_names_t *r, const char *vhost, const char *tags)
{
    size_t vl = strlen(vhost), tl = strlen(tags);
    char *t = malloc(vl + tl + 1);
    int id;

    memcpy(t, vhost, vl);
    memcpy(t + vl, tags, tl + 1);
    id = imx_names_intern(r, 0, t, vl + tl, vl);
    free(t);
    return id;
}

/* A whole text of kind (1: ",route=..", 2: ",upstream=..", 3: a tag). */
static inline int tn_id(imx_names_t *r, int kind, const char *text)
{
    return imx_names_intern(r, kind, text, strlen(text), strlen(text));
}

/* A request tag (",k=v") as a point's tag reference. */
static inline uint32_t tn_tag(imx_names_t *r, const char *text)
{
    int id = tn_id(r, 3, text);
    return id < 0 ? 0 : IMX_REQTAG_FIXED | (uint32_t)id;
}

#endif /* IMX_TEST_NAMES_H */
