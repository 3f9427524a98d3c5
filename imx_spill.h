/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_spill.h: the engine's side of the spool (an engine unit:
 * imx_engine_int.h): batches gathered into spool files, the retry buffer
 * spilled to disk, and the exit's leftovers. Sending spooled files back is
 * imx_delivery's.
 */
#ifndef IMX_SPILL_H
#define IMX_SPILL_H

#include "imx_engine_int.h"

/* Spool trouble, logged at most once per IMX_FAIL_LOG_INTERVAL (a full disk
 * would otherwise log every batch); errors also become the last error. */
void imx_spill_note(imx_engine_t *e, int level, const char *what, uint64_t n,
                    const char *err);

/* Writes one spool file now. Its points leave this process's account
 * (to_spool) once the write is over, not before: a process killed mid-write
 * still holds them. A failed write, and older files deleted to make room,
 * are dropped_spool. */
void imx_spill_write(imx_engine_t *e, const char *data, size_t len, uint32_t n,
                     uint32_t extra, int maybe);

/* Gathers a batch for the spool: batches go to disk together, up to
 * batch_size points a file, so that an outage's many small batches make few
 * files (and few fsyncs, and later few POSTs). */
void imx_spill_put(imx_engine_t *e, const char *data, size_t len, uint32_t n,
                   uint32_t extra, int maybe);

/* Writes what imx_spill_put gathered, if anything. */
void imx_spill_flush(imx_engine_t *e);

/* Moves the oldest batches of the retry buffer to the spool until a body
 * of len bytes fits. */
void imx_spill_room(imx_engine_t *e, size_t len);

/* At exit, in the second half of the budget: the retry buffer (oldest
 * first), the batch at hand and the rest of the ring, encoded, go to the
 * spool until the deadline. What is left then the engine counts. */
void imx_spill_leftovers(imx_engine_t *e);

#endif /* IMX_SPILL_H */
