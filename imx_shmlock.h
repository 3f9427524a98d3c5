/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_shmlock.h: a lock in shared memory that survives the death of its holder.
 *
 * Children of httpd die without warning (SIGKILL from the OOM killer or from
 * httpd's own stop escalation, a crash in another module). A spinlock or a
 * pid word held by such a child blocks every other process forever, or until
 * its pid is reused. A robust, process-shared pthread mutex does not: the
 * kernel releases it when the holder dies and the next locker is told so
 * (EOWNERDEAD), so it can repair what the holder left half done.
 *
 * Engine side: no httpd headers, so unit tests can kill a holder for real.
 */
#ifndef IMX_SHMLOCK_H
#define IMX_SHMLOCK_H

#include <pthread.h>

typedef struct imx_shmlock {
    pthread_mutex_t mu;
} imx_shmlock_t;

/* Once, by the creator of the shared memory, before any other process can
 * see it. Returns 0 or an errno value. */
int imx_shmlock_init(imx_shmlock_t *l);

/* Blocks until held. Returns 0, or IMX_SHMLOCK_RECOVERED when the previous
 * holder died holding it (the caller owns the lock and must treat what it
 * protects as possibly half written), or an errno value (not held). */
#define IMX_SHMLOCK_RECOVERED (-1)
int imx_shmlock_lock(imx_shmlock_t *l);

/* As imx_shmlock_lock, but returns EBUSY at once when another holds it. */
int imx_shmlock_trylock(imx_shmlock_t *l);

void imx_shmlock_unlock(imx_shmlock_t *l);

#endif /* IMX_SHMLOCK_H */
