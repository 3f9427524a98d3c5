/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * mod_influx_metrics_prefork.h: prefork's stop signals held through the
 * logging phase and child_init (httpd glue; see
 * mod_influx_metrics_prefork.c for why).
 */
#ifndef IMX_PREFORK_H
#define IMX_PREFORK_H

#include <stdatomic.h>

#include "httpd.h"

/* Set at post_config: prefork, and the module records. */
extern int imx_defer_term;
extern _Atomic int imx_term_hold;

/* post_config: recording says whether the module records in this
 * generation. */
void imx_prefork_post_config(int recording);

/* Request path, the first log hook: a stop signal waits from here to the
 * last log hook (imx_prefork_log_done). */
static inline void imx_prefork_hold(void)
{
    if (imx_defer_term) {
        atomic_fetch_add_explicit(&imx_term_hold, 1, memory_order_relaxed);
    }
}

/* Ends a stretch: a signal that waited goes on now. */
void imx_prefork_release(void);

/* log_transaction, REALLY_LAST. */
int imx_prefork_log_done(request_rec *r);

/* child_init, REALLY_FIRST and REALLY_LAST: every module's child_init is
 * such a stretch. */
void imx_prefork_child_init_hold(apr_pool_t *pchild, server_rec *s);
void imx_prefork_child_init_done(apr_pool_t *pchild, server_rec *s);

#endif /* IMX_PREFORK_H */
