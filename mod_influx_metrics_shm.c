/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * mod_influx_metrics_shm.c: the module's shared segments (httpd glue).
 *
 * Every segment is made by httpd's parent, in its process pool, so that
 * children of every generation share it across graceful restarts, and each
 * is found again by a key that carries the layout version: a generation of
 * another layout makes segments of its own instead of misreading the old
 * ones, while children of the old generation keep theirs.
 */
#include <sys/mman.h>

#include "httpd.h"
#include "ap_mpm.h"

#include "apr_shm.h"
#include "apr_strings.h"

#include "mod_influx_metrics_shm.h"

#define SHM_VERSION IMX_SHM_VERSION
#define SHM_MAGIC 0x494d5853u   /* "IMXS" */

/* The header sits right before the data, which is 64-byte aligned (APR's
 * anonymous segments start 8 bytes into the page). */
typedef struct {
    uint32_t magic, version;
    apr_size_t size;
} shm_hdr_t;

/* The userdata key of segment `key` for this layout version. */
static const char *versioned(apr_pool_t *pp, const char *key)
{
    return apr_psprintf(pp, "%s_v%d", key, SHM_VERSION);
}

static shm_hdr_t *hdr_of(void *data)
{
    return (shm_hdr_t *)((char *)data - sizeof(shm_hdr_t));
}

void *imx_shm_once(server_rec *s, const char *key, apr_size_t size, int *created)
{
    apr_pool_t *pp = s->process->pool;
    const char *vkey = versioned(pp, key);
    void *data = NULL;
    apr_shm_t *seg;
    shm_hdr_t *h;
    char *base;

    *created = 0;
    apr_pool_userdata_get(&data, vkey, pp);
    if (data) {
        /* Kept as first made, also when this generation would want it
         * larger (a bigger ServerLimit): splitting it would split what
         * children of both generations share. Callers use the sizes they
         * stored in it; a larger size takes a full restart. */
        h = hdr_of(data);
        if (h->magic == SHM_MAGIC && h->version == SHM_VERSION) {
            return data;
        }
    }
    /* Anonymous shared memory is zero-filled, and pages are only backed
     * once touched: slots never used cost nothing. */
    if (apr_shm_create(&seg, size + sizeof(shm_hdr_t) + 64, NULL, pp) != APR_SUCCESS) {
        return NULL;
    }
    base = apr_shm_baseaddr_get(seg);
    data = (void *)(((uintptr_t)base + sizeof(shm_hdr_t) + 63) & ~(uintptr_t)63);
    h = hdr_of(data);
    h->magic = SHM_MAGIC;
    h->version = SHM_VERSION;
    h->size = size;
    apr_pool_userdata_set(data, vkey, apr_pool_cleanup_null, pp);
    *created = 1;
    return data;
}

void *imx_shm_find(server_rec *s, const char *key)
{
    apr_pool_t *pp = s->process->pool;
    void *data = NULL;

    apr_pool_userdata_get(&data, versioned(pp, key), pp);
    return data;
}

uint32_t imx_shm_slots(void)
{
    int limit = 0;

    if (ap_mpm_query(AP_MPMQ_HARD_LIMIT_DAEMONS, &limit) != APR_SUCCESS || limit < 1) {
        limit = 16;
    }
    return (uint32_t)(limit * 2 < 64 ? 64 : limit * 2);
}

void *imx_shm_reserve_once(server_rec *s, const char *key, size_t size, int *created)
{
    apr_pool_t *pp = s->process->pool;
    void *data = NULL;

    *created = 0;
    key = versioned(pp, key);
    apr_pool_userdata_get(&data, key, pp);
    if (data) {
        return data;
    }
    data = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE,
                -1, 0);
    if (data == MAP_FAILED) {
        return NULL;
    }
    /* Never unmapped: it lives as long as the process, and a cleanup of
     * this module's on the process pool would run after httpd unloaded the
     * module (pconf goes first), a call into unmapped code: the parent
     * crashed at every stop. */
    apr_pool_userdata_set(data, key, apr_pool_cleanup_null, pp);
    *created = 1;
    return data;
}
