/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_delivery.h: sending batches and keeping what every answer means (an
 * engine unit: imx_engine_int.h): retries with backoff, the retry buffer's
 * policy (what goes when it is full, what expires), 413 splits, and sending
 * spooled files back.
 */
#ifndef IMX_DELIVERY_H
#define IMX_DELIVERY_H

#include "imx_engine_int.h"

/* Sends the retry buffer first, then the ring, batch by batch: full batches
 * always, and a partial one only for points recorded before `until` (the
 * ring's head when the flush interval ended), so that a steady trickle of
 * requests cannot turn into a POST per handful of points. While the backend
 * is backed off, the ring is emptied into the retry buffer. Returns when
 * nothing more is due, or (unless final) when the next tick is due, so a
 * steady stream of full batches cannot starve the tick. When stopping, gives
 * up at the deadline. */
void imx_delivery_drain(imx_engine_t *e, int final, uint64_t until);

/* Sends spooled files, oldest first, while the backend is healthy (nothing
 * in the retry buffer, no backoff under way) and no full batch of new
 * points waits: at least one file when there is one, and more until
 * `until`, at most max_files. */
void imx_delivery_spool_round(imx_engine_t *e, apr_time_t until, unsigned max_files);

#endif /* IMX_DELIVERY_H */
