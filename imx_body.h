/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_body.h: POST bodies, built from the ring by the flusher (an engine
 * unit: imx_engine_int.h).
 */
#ifndef IMX_BODY_H
#define IMX_BODY_H

#include "imx_engine_int.h"

/* Room for `need` bytes in b (`first`: the first allocation's size). */
int imx_lpbuf_grow(imx_lpbuf_t *b, size_t need, size_t first);

/* Moves up to `max` published points from the ring to b (at exit, past a
 * cell whose producer never finished, see imx_ring_pass_unfinished).
 * Returns how many. */
uint32_t imx_body_take(imx_engine_t *e, imx_lpbuf_t *b, uint32_t max);

/* Builds the next batch in e->wb: the module's own line if one is due, the
 * lines handed to imx_engine_submit, then up to batch_size points from the
 * ring. Returns the number of lines in it. */
uint32_t imx_body_fill(imx_engine_t *e);

/* The batch in e->wb is settled (sent, or kept elsewhere). */
void imx_body_done(imx_engine_t *e);

/* gzip data into e->gz; returns its length, 0 on failure. */
size_t imx_body_gzip(imx_engine_t *e, const char *data, size_t len);

/* Once per interval: is there news for the module's own line? */
void imx_body_self_tick(imx_engine_t *e);

/* Frees what the body's builder allocated. */
void imx_body_free(imx_engine_t *e);

#endif /* IMX_BODY_H */
