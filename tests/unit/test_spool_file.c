/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * Unit tests of the spool's file format (imx_spool_file.c), in memory: every
 * truncation, flipped bit, trailing byte, other version and wrong count is
 * refused.
 */
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>

#include "imx_spool_file.h"

#include "check.h"
#include "fixture.h"

/* Every truncation point of a valid file is refused as truncated (in a
 * buffer of exactly that size, so ASan sees any read past it); every
 * flipped byte, trailing garbage, another version and wrong counts are
 * refused too. */
static void test_spool_format(void)
{
    const char *payload = "apache_influx_metrics,host=h sent=1i 1\n"
                          "apache_request,host=h,vhost=v duration_us=1i,bytes_sent=2i 2\n"
                          "apache_request,host=h,vhost=v duration_us=3i,bytes_sent=4i 3\n";
    imx_spool_hdr_t h;
    size_t size;
    unsigned char *file = make_file(payload, 2, 1, &size);
    unsigned char *b;

    CHECK(imx_spool_check(file, size, &h) == IMX_SPOOL_VALID && h.points == 2
          && h.extra == 1 && h.len == strlen(payload), "valid file refused");
    for (size_t len = 0; len < size; len++) {
        imx_spool_check_t c;
        b = malloc(len ? len : 1);
        memcpy(b, file, len);
        c = imx_spool_check(b, len, &h);
        CHECK(c == IMX_SPOOL_TRUNCATED, "cut at %zu of %zu: %s", len, size,
              imx_spool_check_text(c));
        free(b);
    }
    for (size_t i = 0; i < size; i++) {
        for (int bit = 0; bit < 8; bit += 3) {
            imx_spool_check_t c;
            b = malloc(size);
            memcpy(b, file, size);
            b[i] ^= (unsigned char)(1 << bit);
            c = imx_spool_check(b, size, &h);
            CHECK(c == IMX_SPOOL_CORRUPT || c == IMX_SPOOL_FOREIGN,
                  "byte %zu bit %d flipped: %s", i, bit, imx_spool_check_text(c));
            if (i < 12) {
                CHECK(c == IMX_SPOOL_FOREIGN, "magic/version byte %zu: %s", i,
                      imx_spool_check_text(c));
            }
            free(b);
        }
    }
    b = malloc(size + 1);
    memcpy(b, file, size);
    b[size] = '\n';
    CHECK(imx_spool_check(b, size + 1, &h) == IMX_SPOOL_CORRUPT, "trailing byte accepted");
    free(b);
    {
        /* Another version, its header checksum right. */
        unsigned char v2[IMX_SPOOL_HDR];
        memcpy(v2, file, sizeof(v2));
        v2[8] = 2;
        CHECK(imx_spool_check_header(v2, sizeof(v2), &h) == IMX_SPOOL_FOREIGN, "version 2");
        CHECK(imx_spool_check_header("GIF89a..", 8, &h) == IMX_SPOOL_FOREIGN, "foreign");
        CHECK(imx_spool_check_header("IMXS", 4, &h) == IMX_SPOOL_TRUNCATED, "prefix");
    }
    free(file);
    /* Counts that do not match the lines, checksums right. */
    file = make_file(payload, 3, 1, &size);
    CHECK(imx_spool_check(file, size, &h) == IMX_SPOOL_CORRUPT, "wrong count accepted");
    free(file);
    file = make_file("no newline at the end 1", 1, 0, &size);
    CHECK(imx_spool_check(file, size, &h) == IMX_SPOOL_CORRUPT, "unterminated accepted");
    free(file);
}

int main(void)
{
    apr_initialize();
    test_spool_format();
    apr_terminate();
    return check_report();
}
