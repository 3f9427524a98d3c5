/*
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
#include "batch.h"
#include "spool.h"

/* The layout of every shared segment. Bump it when any of them changes: a
 * graceful restart into a build of another layout then makes new segments
 * instead of misreading the old ones (children of the old generation keep
 * theirs). 7: the counters lost an unused field, the summary header gained
 * the last timestamp written. */
#define IMX_SHM_VERSION 7
#define IMX_SHM_VERSION_TEXT "7"

/* The anonymous shared segment `key`, made once per parent in its process
 * pool, so that children of every generation share it across graceful
 * restarts. Zero-filled when new (*created = 1). NULL if it cannot be made. */
void *imx_shm_once(server_rec *s, const char *key, apr_size_t size, int *created);

/* The segment `key` if this parent made it already, or NULL. */
void *imx_shm_find(server_rec *s, const char *key);

/* Child slots the segments are sized for: twice ServerLimit, since old and
 * new generations overlap during a graceful restart; at least 64. */
uint32_t imx_shm_slots(void);

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

/* The handler behind SetHandler influx-metrics-status. */
int imx_status_handler(request_rec *r);

/* mod_status's status_hook: our totals on its server-status page. */
int imx_status_hook(request_rec *r, int flags);

#endif /* IMX_STATUS_H */
