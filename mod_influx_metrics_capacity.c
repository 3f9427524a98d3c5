/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * mod_influx_metrics_capacity.c: workers busy and idle (see
 * mod_influx_metrics_capacity.h).
 */
#include "httpd.h"
#include "ap_mpm.h"
#include "scoreboard.h"

#include "mod_influx_metrics_capacity.h"

void imx_capacity_workers(imx_workers_t *w)
{
    int slimit = 0, tlimit = 0;

    w->busy = w->idle = w->max = 0;
    ap_mpm_query(AP_MPMQ_HARD_LIMIT_DAEMONS, &slimit);
    ap_mpm_query(AP_MPMQ_HARD_LIMIT_THREADS, &tlimit);
    if (ap_mpm_query(AP_MPMQ_MAX_DAEMONS, &w->max) == APR_SUCCESS) {
        int threads = 1;

        ap_mpm_query(AP_MPMQ_MAX_THREADS, &threads);
        w->max *= threads > 0 ? threads : 1;
    }
    if (!ap_scoreboard_image) {
        return;
    }
    for (int i = 0; i < slimit; i++) {
        for (int j = 0; j < tlimit; j++) {
            int st = ap_get_scoreboard_worker_from_indexes(i, j)->status;

            /* Starting, dead and being killed for idleness: not a worker
             * that takes or holds a request. */
            if (st == SERVER_READY) {
                w->idle++;
            }
            else if (st != SERVER_DEAD && st != SERVER_STARTING && st != SERVER_IDLE_KILL) {
                w->busy++;
            }
        }
    }
}
