/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * Unit tests of the libcurl sender's URL redaction (imx_http.c): what the
 * module's messages show of a URL.
 */
#include <stdio.h>
#include <string.h>

#include <apr_general.h>
#include <apr_pools.h>

#include "imx_http.h"

#include "check.h"
#include "fixture.h"

/* URLs in messages: never user info, never the query, whatever characters
 * the password holds (users write '/', '?', '#' and '@' unencoded). */
static void test_url_redacted(void)
{
    static const char *const cases[][2] = {
        { "http://u:p@h:8086/write?db=x&p=secret", "http://h:8086/write" },
        { "http://u:pa/ss@127.0.0.1:8086/write?db=x", "http://127.0.0.1:8086/write" },
        { "http://u:p@x@host/w?db=x", "http://host/w" },
        { "http://u:p/a?s#w@host/path", "http://(hidden)" },
        { "http://u:p?x@host/w", "http://(hidden)" },
        { "http://host/w?u=bob@corp&p=se@cret", "http://(hidden)" },
        { "https://host/api/v2/write?org=o&bucket=b", "https://host/api/v2/write" },
        { "HTTP://U:P@H/", "HTTP://H/" },
        { "http://user@host", "http://host" },
        { "ftp://u:secret@h/x", "ftp://h/x" },
        { "u:secret@h:1/x?y", "h:1/x" },
        { "127.0.0.1:8086/write?db=x", "127.0.0.1:8086/write" },
        { "u:p@h/w?q=http://a", "h/w" },
        { "socks5h://u:p@proxy:1080", "socks5h://proxy:1080" },
        { "http://", "http://" },
        { "", "" },
    };
    static const char pw_chars[] = "XYZ/?#@:%";
    apr_pool_t *p;
    char url[128], pw[16];

    apr_pool_create(&p, NULL);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *got = imx_url_redacted(p, cases[i][0]);
        CHECK(!strcmp(got, cases[i][1]), "'%s' shown as '%s', want '%s'",
              cases[i][0], got, cases[i][1]);
    }
    /* Random passwords: X, Y and Z appear nowhere else, so no fragment of
     * the password holding one of them may be shown. */
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = 1 + rnd() % 12;
        for (size_t k = 0; k < n; k++) {
            pw[k] = pw_chars[rnd() % (sizeof(pw_chars) - 1)];
        }
        pw[n] = '\0';
        snprintf(url, sizeof(url), "%s://wr:%s@h.example:8086/write?db=d&p=X%s",
                 iter & 1 ? "http" : "https", pw, iter & 2 ? "&e=a@b" : "");
        const char *got = imx_url_redacted(p, url);
        CHECK(!strpbrk(got, "XYZ") && !strstr(got, "wr:") && !strchr(got, '?'),
              "'%s' shown as '%s'", url, got);
    }
    apr_pool_destroy(p);
}

int main(void)
{
    apr_initialize();
    test_url_redacted();
    apr_terminate();
    return check_report();
}
