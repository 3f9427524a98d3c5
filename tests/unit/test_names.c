/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * Unit tests of the registry of names (imx_names.c): the vhost, route and
 * upstream texts the summaries and the encoder share by id.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>

#include "imx_names.h"

#include "check.h"

/* The registry of names: the reserved ids first, stable ids, full kinds
 * and arena say -1. */
static void test_names(void)
{
    uint32_t arena = 64 * 1024;
    imx_names_t *r = calloc(1, imx_names_size(arena));
    char text[64];
    size_t len, split;
    const char *got;
    int id;

    imx_names_init(r, arena);
    got = imx_names_get(r, IMX_NAMES_SERVER, IMX_SERVER_OTHER, &len, &split);
    CHECK(got && !strcmp(got, ",vhost=other"), "reserved server");
    got = imx_names_get(r, IMX_NAMES_ROUTE, IMX_ROUTE_OTHER, &len, &split);
    CHECK(got && !strcmp(got, ",route=other"), "reserved route");
    got = imx_names_get(r, IMX_NAMES_UPSTREAM, IMX_UPSTREAM_NONE, &len, &split);
    CHECK(got && !strcmp(got, ",upstream=-"), "reserved upstream");
    CHECK(imx_names_intern(r, 0, ",vhost=a,t=1", 12, 8) == 1, "first");
    CHECK(imx_names_intern(r, 1, ",route=x", 8, 8) == 2, "kinds apart");
    CHECK(imx_names_intern(r, 0, ",vhost=b", 8, 8) == 2, "second");
    CHECK(imx_names_intern(r, 0, ",vhost=a,t=1", 12, 8) == 1, "same text, same id");
    CHECK(imx_names_intern(r, 0, ",vhost=a,t=1", 12, 12) == 3, "split counts");
    got = imx_names_get(r, 0, 1, &len, &split);
    CHECK(got && len == 12 && split == 8 && !strcmp(got, ",vhost=a,t=1"), "get");
    CHECK(!imx_names_get(r, 0, 4, &len, &split), "unknown id");
    for (int i = 4; i < IMX_NAMES_MAX; i++) {
        snprintf(text, sizeof(text), ",vhost=h%d", i);
        CHECK(imx_names_intern(r, 0, text, strlen(text), strlen(text)) == i, "id %d", i);
    }
    CHECK(imx_names_intern(r, 0, ",vhost=one-more", 15, 15) == -1, "kind full");
    CHECK(imx_names_intern(r, 0, ",vhost=h7", 9, 9) == 7, "known texts still found");
    {
        char *big = malloc(arena);
        memset(big, 'x', arena - 1);
        big[arena - 1] = '\0';
        id = imx_names_intern(r, 1, big, arena - 1, arena - 1);
        CHECK(id == -1, "arena full: %d", id);
        free(big);
    }
    free(r);
}

int main(void)
{
    apr_initialize();
    test_names();
    apr_terminate();
    return check_report();
}
