/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * mod_influx_metrics_shm.h: the module's shared segments, made once per
 * httpd parent and versioned (httpd glue).
 */
#ifndef IMX_SHM_H
#define IMX_SHM_H

#include "httpd.h"

/* The layout of every shared segment. Bump it when any of them changes: a
 * graceful restart into a build of another layout then makes new segments
 * instead of misreading the old ones (children of the old generation keep
 * theirs). 7: the counters lost an unused field, the summary header gained
 * the last timestamp written. */
#define IMX_SHM_VERSION 7

/* The anonymous shared segment `key`, made once per parent in its process
 * pool, so that children of every generation share it across graceful
 * restarts. Zero-filled when new (*created = 1). NULL if it cannot be made. */
void *imx_shm_once(server_rec *s, const char *key, apr_size_t size, int *created);

/* The segment `key` if this parent made it already, or NULL. */
void *imx_shm_find(server_rec *s, const char *key);

/* Child slots the segments are sized for: twice ServerLimit, since old and
 * new generations overlap during a graceful restart; at least 64. */
uint32_t imx_shm_slots(void);

/* As imx_shm_once, but the mapping commits no memory up front
 * (MAP_NORESERVE): room for tables at full size of which only the pages in
 * use are ever backed, which at a large ServerLimit can be more than
 * heuristic overcommit grants in one piece. Never unmapped: it lives as
 * long as the process, and a cleanup of this module's on the process pool
 * would run after httpd unloaded the module (pconf goes first), a call into
 * unmapped code. */
void *imx_shm_reserve_once(server_rec *s, const char *key, size_t size, int *created);

#endif /* IMX_SHM_H */
