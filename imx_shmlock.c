/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_shmlock.c: robust process-shared mutexes (see imx_shmlock.h).
 */
#include <errno.h>
#include <string.h>

#include "imx_shmlock.h"

int imx_shmlock_init(imx_shmlock_t *l)
{
    pthread_mutexattr_t a;
    int rv;

    memset(l, 0, sizeof(*l));
    if ((rv = pthread_mutexattr_init(&a)) != 0) {
        return rv;
    }
    if ((rv = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED)) == 0) {
        rv = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    }
    if (rv == 0) {
        rv = pthread_mutex_init(&l->mu, &a);
    }
    pthread_mutexattr_destroy(&a);
    return rv;
}

static int settle(imx_shmlock_t *l, int rv)
{
    if (rv == EOWNERDEAD) {
        /* We hold it now; marking it consistent keeps it usable for the
         * next holders once the caller has repaired the data. */
        pthread_mutex_consistent(&l->mu);
        return IMX_SHMLOCK_RECOVERED;
    }
    return rv;
}

int imx_shmlock_lock(imx_shmlock_t *l)
{
    return settle(l, pthread_mutex_lock(&l->mu));
}

int imx_shmlock_trylock(imx_shmlock_t *l)
{
    return settle(l, pthread_mutex_trylock(&l->mu));
}

void imx_shmlock_unlock(imx_shmlock_t *l)
{
    pthread_mutex_unlock(&l->mu);
}
