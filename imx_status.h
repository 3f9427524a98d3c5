/*
 * imx_status.h: the module's counters in shared memory, and the pages that
 * show them (SetHandler influx-metrics-status, and mod_status's page).
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

/* The anonymous shared segment `key`, made once per parent in its process
 * pool, so that children of every generation share it across graceful
 * restarts. Zero-filled when new (*created = 1). NULL if it cannot be made. */
void *imx_shm_once(server_rec *s, const char *key, apr_size_t size, int *created);

/* Child slots the segments are sized for: twice ServerLimit, since old and
 * new generations overlap during a graceful restart; at least 64. */
uint32_t imx_shm_slots(void);

/* Creates (once per parent process) or finds the shared segment. */
apr_status_t imx_status_init(server_rec *s);

/* In a new child: takes a free slot (folding the slots of children that died
 * without releasing theirs into the totals). Returns the slot, or -1. */
int imx_status_claim(uint32_t capacity);

/* imx_stats_fn: the flusher's snapshot into this child's slot; ctx unused. */
void imx_status_publish(void *ctx, const imx_stats_t *st);

/* At child exit, after the final publish: adds the slot to the totals of
 * exited children and frees it. */
void imx_status_release(void);

/* The handler behind SetHandler influx-metrics-status. */
int imx_status_handler(request_rec *r);

/* mod_status's status_hook: our totals on its server-status page. */
int imx_status_hook(request_rec *r, int flags);

#endif /* IMX_STATUS_H */
