/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * mod_influx_metrics_capacity.h: how many workers the server has and how
 * many are busy, from the scoreboard (httpd glue): the capacity point
 * (apache_process) and the Prometheus page say the same.
 */
#ifndef IMX_CAPACITY_H
#define IMX_CAPACITY_H

typedef struct imx_workers {
    int busy;                   /* serving, reading, writing, logging, ... */
    int idle;                   /* ready for a request */
    int max;                    /* MaxRequestWorkers: processes x threads */
} imx_workers_t;

/* One pass over the scoreboard, as of now (no lock: each worker's status
 * is one word, read as it is). */
void imx_capacity_workers(imx_workers_t *w);

#endif /* IMX_CAPACITY_H */
