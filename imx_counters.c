/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_counters.c: reading the engine's counters (see imx_counters.h).
 *
 * Writers add with one atomic add at the moment a point's fate is decided;
 * a reader that loads the settled counts before the recorded one can never
 * see more settled than recorded, so "held" never goes negative.
 */
#include "imx_counters.h"

uint64_t imx_counters_held(const imx_counters_t *c)
{
    /* Settled counts first: they only grow after recorded did, so reading
     * them before it never yields more settled than recorded. */
    uint64_t settled = atomic_load(&c->sent) + atomic_load(&c->rejected)
                       + atomic_load(&c->dropped_retry) + atomic_load(&c->dropped_exit)
                       + atomic_load(&c->lost) + atomic_load(&c->to_spool);
    uint64_t rec = atomic_load(&c->recorded) + atomic_load(&c->late)
                   - atomic_load(&c->moved);

    return rec > settled ? rec - settled : 0;
}

void imx_counters_read(const imx_counters_t *c, imx_stats_t *st)
{
    uint64_t late;

    st->buffered = imx_counters_held(c);
    late = atomic_load(&c->late);
    st->sent = atomic_load(&c->sent);
    st->rejected = atomic_load(&c->rejected);
    st->dropped_retry = atomic_load(&c->dropped_retry);
    st->dropped_exit = atomic_load(&c->dropped_exit);
    st->to_spool = atomic_load(&c->to_spool);
    st->unspooled = atomic_load(&c->unspooled);
    st->dropped_spool = atomic_load(&c->dropped_spool);
    /* Points moved to another engine count as that one's. */
    st->recorded = atomic_load(&c->recorded) + late - atomic_load(&c->moved);
    st->lost = atomic_load(&c->lost);
    st->dropped_full = atomic_load(&c->dropped_full);
    st->maybe_stored = atomic_load(&c->maybe_stored);
    st->retries = atomic_load(&c->retries);
    st->batches = atomic_load(&c->batches);
    st->bytes = atomic_load(&c->bytes);
    st->retry_bytes = atomic_load(&c->retry_bytes);
    st->last_ok = atomic_load(&c->last_ok);
    st->last_error_time = atomic_load(&c->last_error_time);
}
