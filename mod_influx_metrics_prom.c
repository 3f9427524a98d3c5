/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * mod_influx_metrics_prom.c: the Prometheus endpoint (see
 * mod_influx_metrics_prom.h): its shared segment, each child's table, and
 * the page.
 *
 * Segment, made by the parent from its process pool (like every segment of
 * the module, mod_influx_metrics_shm.h), keyed by its layout (slots,
 * series per table, buckets, exemplars):
 *   header (owner pid and "ready" flag of each slot) | one table per slot
 * each table page aligned. A child takes a free slot (or one whose owner
 * is gone) and counts into its table for its whole life; the slot's table
 * keeps what it counted after it exits or is killed, and the next child in
 * the slot adds to it. A scrape reads the tables that were ever made ready,
 * and only those: the others' pages are never touched, so memory follows
 * the children and series in use, not the segment's size.
 *
 * More children than slots at once (three generations overlapping): a late
 * child shares a live child's table. Tables take any number of writers in
 * any number of processes (imx_prom_int.h), so that costs contention, not
 * counts.
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "unixd.h"

#include "apr_strings.h"

#include "mod_influx_metrics_prom.h"
#include "mod_influx_metrics_shm.h"

APLOG_USE_MODULE(influx_metrics);

#define PAGE 4096
#define PAGE_ALIGN(x) (((x) + PAGE - 1) & ~(size_t)(PAGE - 1))

typedef struct {
    uint32_t nslots, cap;
    size_t table_size, hdr_size;
    int exemplars;
    imx_prom_buckets_t layout;
    /* owner[nslots] (pid, 0: free), then ready[nslots] (1: the table was
     * made and may be read). */
    _Atomic uint32_t slot[];
} prom_shm_t;

static prom_shm_t *shm;
static int my_slot = -1;
static uint32_t my_pid;

static _Atomic uint32_t *owner_of(uint32_t i)
{
    return &shm->slot[i];
}

static _Atomic uint32_t *ready_of(uint32_t i)
{
    return &shm->slot[shm->nslots + i];
}

static imx_prom_table_t *table_of(uint32_t i)
{
    return (imx_prom_table_t *)((char *)shm + shm->hdr_size + (size_t)i * shm->table_size);
}

/* ------------------------------------------------------------------------- */
/* Configuration                                                              */

static int names_handler(const ap_directive_t *d)
{
    for (; d; d = d->next) {
        if (d->args && ap_strcasestr(d->args, IMX_PROM_HANDLER)) {
            return 1;
        }
        if (d->first_child && names_handler(d->first_child)) {
            return 1;
        }
    }
    return 0;
}

int imx_prometheus_wanted(void)
{
    return names_handler(ap_conftree);
}

/* FNV-1a over the bounds: layouts apart get segments apart. */
static uint32_t layout_hash(const imx_prom_buckets_t *b)
{
    uint32_t h = 2166136261u;

    for (uint32_t i = 0; i < b->n; i++) {
        for (int k = 0; k < 8; k++) {
            h = (h ^ (uint32_t)((b->le_us[i] >> (8 * k)) & 0xff)) * 16777619u;
        }
    }
    return h;
}

apr_status_t imx_prometheus_post_config(server_rec *s, const imx_prom_buckets_t *b,
                                        uint32_t cap, int exemplars)
{
    uint32_t nslots = imx_shm_slots();
    size_t hdr = PAGE_ALIGN(sizeof(prom_shm_t) + 2 * sizeof(uint32_t) * nslots);
    size_t tsize = PAGE_ALIGN(imx_prom_table_size(cap, b->n, exemplars));
    const char *key = apr_psprintf(s->process->pool, "imx_prom_shm_%u_%u_%u_%d_%08x", nslots,
                                   cap, b->n, exemplars != 0, layout_hash(b));
    int created;
    prom_shm_t *p = imx_shm_reserve_once(s, key, hdr + (size_t)nslots * tsize, &created);

    if (!p) {
        shm = NULL;
        return APR_ENOMEM;
    }
    if (created) {
        p->nslots = nslots;
        p->cap = cap;
        p->table_size = tsize;
        p->hdr_size = hdr;
        p->exemplars = exemplars != 0;
        p->layout = *b;
    }
    else if (!ap_unixd_mpm_get_retained_data()->was_graceful) {
        /* A full restart: every child of the last generation is gone (the
         * MPM reaped them before reading the configuration again), so
         * nothing writes the tables. They start afresh, as after a stop. */
        for (uint32_t i = 0; i < 2 * p->nslots; i++) {
            atomic_store(&p->slot[i], 0);
        }
    }
    shm = p;
    return APR_SUCCESS;
}

/* ------------------------------------------------------------------------- */
/* In each child                                                              */

static apr_status_t child_exit(void *data)
{
    uint32_t pid = my_pid;

    (void)data;
    /* Async-signal-safe (prefork's SIGTERM handler runs this): one CAS.
     * Threads that still log (mod_http2's) keep counting into the table;
     * a new owner would only share it. */
    if (my_slot >= 0) {
        atomic_compare_exchange_strong(owner_of((uint32_t)my_slot), &pid, 0);
    }
    return APR_SUCCESS;
}

/* A free slot, else one whose owner is gone; -1 if none. */
static int claim(uint32_t pid)
{
    for (uint32_t i = 0; i < shm->nslots; i++) {
        uint32_t o = 0;

        if (atomic_load(owner_of(i)) == 0
            && atomic_compare_exchange_strong(owner_of(i), &o, pid)) {
            return (int)i;
        }
    }
    for (uint32_t i = 0; i < shm->nslots; i++) {
        uint32_t o = atomic_load(owner_of(i));

        if (o && kill((pid_t)o, 0) != 0 && errno == ESRCH
            && atomic_compare_exchange_strong(owner_of(i), &o, pid)) {
            return (int)i;
        }
    }
    return -1;
}

imx_prom_table_t *imx_prometheus_child(apr_pool_t *pchild, server_rec *s)
{
    int i;

    if (!shm) {
        return NULL;
    }
    my_pid = (uint32_t)getpid();
    i = claim(my_pid);
    if (i >= 0) {
        if (!atomic_load_explicit(ready_of((uint32_t)i), memory_order_acquire)) {
            /* Never made (or reset by a full restart): only its owner
             * touches it until it is ready. */
            imx_prom_init(table_of((uint32_t)i), shm->cap, &shm->layout, shm->exemplars);
            atomic_store_explicit(ready_of((uint32_t)i), 1, memory_order_release);
        }
        my_slot = i;
        apr_pool_cleanup_register(pchild, NULL, child_exit, apr_pool_cleanup_null);
    }
    else {
        /* Every slot held by a live child: share one that is ready. */
        for (uint32_t k = 0; k < shm->nslots && i < 0; k++) {
            uint32_t j = (my_pid + k) % shm->nslots;

            if (atomic_load_explicit(ready_of(j), memory_order_acquire)) {
                i = (int)j;
            }
        }
        if (i < 0) {
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, "IMX0026: no table for the "
                         "Prometheus page in this child; its requests are not counted "
                         "there");
            return NULL;
        }
    }
    return table_of((uint32_t)i);
}

/* ------------------------------------------------------------------------- */
/* Reading                                                                    */

imx_prom_acc_t *imx_prometheus_read(int exemplars, int *err)
{
    imx_prom_acc_t *a;

    *err = 0;
    if (!shm) {
        *err = IMX_PROM_ELAYOUT;
        return NULL;
    }
    if (!(a = imx_prom_acc_new(&shm->layout, exemplars && shm->exemplars))) {
        *err = IMX_PROM_ENOMEM;
        return NULL;
    }
    for (uint32_t i = 0; i < shm->nslots; i++) {
        int rc;

        if (!atomic_load_explicit(ready_of(i), memory_order_acquire)) {
            continue;
        }
        if ((rc = imx_prom_acc_add(a, table_of(i))) != 0) {
            imx_prom_acc_free(a);
            *err = rc;
            return NULL;
        }
    }
    return a;
}
