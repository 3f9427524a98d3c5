/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * mod_influx_metrics_status.h: the module's counters in shared memory, and
 * the pages that show them (SetHandler influx-metrics-status, and
 * mod_status's page).
 *
 * httpd glue like mod_influx_metrics.c, kept apart because it is a unit of
 * its own: one segment per httpd parent, created before the first fork and
 * kept across graceful restarts, with one slot per live child and totals of
 * the children that have exited.
 */
#ifndef IMX_STATUS_H
#define IMX_STATUS_H

#include "httpd.h"
#include "imx_engine.h"
#include "imx_spool.h"

/* Creates (once per parent process) or finds the shared segment. */
apr_status_t imx_status_init(server_rec *s);

/* In a new child, from its main thread: takes a free slot and holds it for
 * the life of the process (a robust lock that the kernel releases when the
 * process dies, however it dies). A slot left by a process that is gone is
 * first folded into the totals, unless its ring holds points a rescuer can
 * send. rings, rids: the ring segment's cells and request ids (NULL: the
 * ring is the child's own memory, or no ids). Returns the slot, or -1. */
int imx_status_claim(uint32_t capacity, int64_t gen, char *rings, char *rids);

/* From a flusher, once per interval: the rings of children that are gone,
 * of any generation, are emptied into engine e (imx_ring_rescue), and their
 * slots folded. Points name their series by generation-stable indices, so
 * e encodes them as they were recorded. */
void imx_status_rescue(imx_engine_t *e);

/* Slots of the segment (as first made; 0 without one). */
uint32_t imx_status_nslots(void);

/* Points of spool files found bad by the parent at startup: added to the
 * totals' dropped_spool (and maybe_stored). */
void imx_status_add_dropped_spool(uint64_t points, uint64_t maybe);

/* The spool's gauges in the shared segment (NULL without one). */
imx_spool_shared_t *imx_status_spool(void);

/* The server-wide retry budget: bytes held in every child's retry buffer
 * (NULL without the segment). */
_Atomic uint64_t *imx_status_retry_budget(void);

/* The claimed slot's counters, zeroed, for the engine to write into. */
imx_counters_t *imx_status_counters(void);

/* child_init failed after the claim: give the slot back now. */
void imx_status_unclaim(void);

/* imx_stats_fn: the last error's text and time into this child's slot. */
void imx_status_publish(void *ctx, const imx_stats_t *st);

/* At child exit: the slot stays as it is (still counted) until the process
 * is gone; then the parent or the next child folds it into the totals.
 * Async-signal-safe: one atomic store. */
void imx_status_exit(void);

/* monitor hook (parent, about once a second): folds the slots of children
 * that are gone. */
int imx_status_monitor(apr_pool_t *p, server_rec *s);

/* Reading, for the pages (mod_influx_metrics_status_page.h) and the
 * Prometheus endpoint. Counters summed over children, in the order of
 * imx_status_names; the last three are the spool's gauges, server-wide
 * (never in a slot). */
enum {
    IMX_C_RECORDED, IMX_C_SENT, IMX_C_REJECTED, IMX_C_DROPPED_FULL, IMX_C_DROPPED_RETRY,
    IMX_C_DROPPED_EXIT, IMX_C_RETRIES, IMX_C_BATCHES, IMX_C_BYTES, IMX_C_BUFFERED,
    IMX_C_RETRY_BYTES, IMX_C_LOST, IMX_C_MAYBE, IMX_C_TO_SPOOL, IMX_C_UNSPOOLED,
    IMX_C_DROPPED_SPOOL, IMX_C_SPOOLED, IMX_C_SPOOL_BYTES, IMX_C_SPOOL_BAD, IMX_NCOUNTERS
};

/* The status keys: "recorded", "sent", ..., "lost_in_crash", ... */
extern const char *const imx_status_names[IMX_NCOUNTERS];

typedef struct {
    uint64_t tot[IMX_NCOUNTERS];
    apr_time_t last_ok;
    apr_time_t last_error_time;
    char last_error[200];
} imx_status_totals_t;

/* The server's totals as of one moment (not while a slot is being folded):
 * the children that are gone and every live one. 0 without the segment. */
int imx_status_read_totals(imx_status_totals_t *t);

typedef struct {
    uint32_t slot, pid, capacity;
    int active;                 /* else it went through its exit */
    uint64_t v[IMX_NCOUNTERS];
    apr_time_t last_ok, last_error_time, started;
    char last_error[200];
} imx_status_child_t;

/* Slot i's child, if one holds it (returns 1). */
int imx_status_read_child(uint32_t i, imx_status_child_t *c);

/* Points dropped, all reasons together. */
uint64_t imx_status_dropped(const uint64_t *v);

#endif /* IMX_STATUS_H */
