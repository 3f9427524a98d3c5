/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * mod_influx_metrics_names.c: the names registry of the module (httpd glue
 * around imx_names.h): the vhost and static-tag texts of every server, the
 * routes, the upstreams and the fixed request-tag texts, given ids that
 * raw points, summaries and Prometheus series carry, the same in every
 * generation.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"

#include "mod_influx_metrics_names.h"
#include "mod_influx_metrics_shm.h"

APLOG_USE_MODULE(influx_metrics);

/* The registry of vhost and route texts (imx_names.h), its own segment. Its
 * arena is only backed where texts are. Full: "other", and IMX0020. */
#define NAMES_KEY "imx_names"
#define NAMES_ARENA (4u << 20)

static imx_names_t *reg;
static int names_missed;        /* texts that did not fit, this generation */

static apr_status_t forget_registry(void *data)
{
    *(imx_names_t **)data = NULL;
    return APR_SUCCESS;
}

static imx_names_t *registry(server_rec *s)
{
    int created;
    uint32_t arena = NAMES_ARENA;

    if (!reg) {
        reg = imx_shm_once(s, NAMES_KEY, imx_names_size(arena), &created);
        if (!reg) {
            /* Without shared memory, names hold within this generation
             * only; so do the rings then (IMX0018), so nothing needs them
             * to hold longer. */
            arena /= 16;
            reg = apr_pcalloc(s->process->pconf, imx_names_size(arena));
            apr_pool_cleanup_register(s->process->pconf, &reg, forget_registry,
                                      apr_pool_cleanup_null);
            created = 1;
        }
        if (created) {
            imx_names_init(reg, arena);     /* with the reserved ids */
        }
    }
    return reg;
}

const imx_names_t *imx_reg(void)
{
    return reg;
}

int imx_reg_text_id(server_rec *s, int kind, const char *text)
{
    imx_names_t *r = registry(s);
    int id = r ? imx_names_intern(r, kind, text, strlen(text), strlen(text)) : -1;

    if (id < 0) {
        names_missed++;
    }
    return id;
}

int imx_reg_server_id(server_rec *s, const char *vhost_text, const char *tags_text)
{
    imx_names_t *r = registry(s);
    size_t vl = strlen(vhost_text), tl = strlen(tags_text);
    char *text;
    int id = -1;

    if (r && (text = malloc(vl + tl + 1))) {
        memcpy(text, vhost_text, vl);
        memcpy(text + vl, tags_text, tl + 1);
        id = imx_names_intern(r, IMX_NAMES_SERVER, text, vl + tl, vl);
        free(text);
    }
    if (id < 0) {
        names_missed++;
        return IMX_SERVER_OTHER;
    }
    return id;
}

int imx_reg_route_id(server_rec *s, const char *route_escaped)
{
    char *text;
    int id;

    if (!route_escaped) {
        return 0;
    }
    if (!(text = malloc(strlen(route_escaped) + 8))) {
        names_missed++;
        return IMX_ROUTE_OTHER;
    }
    sprintf(text, ",route=%s", route_escaped);
    id = imx_reg_text_id(s, IMX_NAMES_ROUTE, text);
    free(text);
    return id < 0 ? IMX_ROUTE_OTHER : id;
}

void imx_reg_report(server_rec *s)
{
    if (names_missed) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, "IMX0020: the registry of summary "
                     "names is full (%d virtual host tag sets and %d routes since httpd "
                     "started): %d of this configuration are written as vhost=other or "
                     "route=other until httpd is stopped and started", IMX_NAMES_MAX - 1,
                     IMX_NAMES_MAX - 2, names_missed);
        names_missed = 0;
    }
}

const imx_names_t *imx_reg_open(server_rec *s)
{
    return registry(s);
}
