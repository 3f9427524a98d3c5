/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_spool_file.c: the spool's file format (see imx_spool_file.h).
 *
 * Integers are written byte by byte, little-endian, so a file reads the
 * same on any machine that may later hold the directory.
 */
#include <string.h>

#include <zlib.h>

#include "imx_spool_file.h"

static const unsigned char magic[8] = { 'I', 'M', 'X', 'S', 'P', 'O', 'O', 'L' };

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16
           | (uint32_t)p[3] << 24;
}

static uint64_t get64(const unsigned char *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* zlib's crc32 takes a uInt length: feed it in pieces. */
static uint32_t crc(const void *data, uint64_t len)
{
    const unsigned char *p = data;
    uLong c = crc32(0L, Z_NULL, 0);

    while (len) {
        uInt n = len > (1u << 30) ? (1u << 30) : (uInt)len;
        c = crc32(c, p, n);
        p += n;
        len -= n;
    }
    return (uint32_t)c;
}

void imx_spool_encode_header(unsigned char out[IMX_SPOOL_HDR], imx_spool_hdr_t *h,
                             const char *data)
{
    h->crc = crc(data, h->len);
    memcpy(out, magic, sizeof(magic));
    put32(out + 8, IMX_SPOOL_VERSION);
    put32(out + 12, h->flags);
    put32(out + 16, h->points);
    put32(out + 20, h->extra);
    put64(out + 24, h->len);
    put64(out + 32, (uint64_t)h->created);
    put32(out + 40, h->crc);
    put32(out + 44, crc(out, 44));
}

imx_spool_check_t imx_spool_check_header(const void *buf, size_t len, imx_spool_hdr_t *h)
{
    const unsigned char *b = buf;

    memset(h, 0, sizeof(*h));
    /* A prefix of the magic is the start of a file cut short; anything else
     * is not ours. */
    if (memcmp(b, magic, len < sizeof(magic) ? len : sizeof(magic))) {
        return IMX_SPOOL_FOREIGN;
    }
    if (len < 12) {
        return IMX_SPOOL_TRUNCATED;
    }
    if (get32(b + 8) != IMX_SPOOL_VERSION) {
        return IMX_SPOOL_FOREIGN;
    }
    if (len < IMX_SPOOL_HDR) {
        return IMX_SPOOL_TRUNCATED;
    }
    if (get32(b + 44) != crc(b, 44)) {
        return IMX_SPOOL_CORRUPT;
    }
    h->flags = get32(b + 12);
    h->points = get32(b + 16);
    h->extra = get32(b + 20);
    h->len = get64(b + 24);
    h->created = (int64_t)get64(b + 32);
    h->crc = get32(b + 40);
    if (h->len > IMX_SPOOL_MAX_PAYLOAD) {
        return IMX_SPOOL_CORRUPT;
    }
    return IMX_SPOOL_VALID;
}

imx_spool_check_t imx_spool_check(const void *buf, size_t len, imx_spool_hdr_t *h)
{
    imx_spool_check_t c = imx_spool_check_header(buf, len, h);
    const char *data = (const char *)buf + IMX_SPOOL_HDR, *s, *end;
    uint64_t lines = 0;

    if (c != IMX_SPOOL_VALID) {
        return c;
    }
    if (len - IMX_SPOOL_HDR < h->len) {
        return IMX_SPOOL_TRUNCATED;
    }
    if (len - IMX_SPOOL_HDR > h->len || crc(data, h->len) != h->crc) {
        return IMX_SPOOL_CORRUPT;
    }
    /* The counts decide what is counted as sent: they must match the lines. */
    end = data + h->len;
    for (s = data; s < end && (s = memchr(s, '\n', (size_t)(end - s))); s++) {
        lines++;
    }
    if ((h->len && data[h->len - 1] != '\n')
        || lines != (uint64_t)h->points + h->extra || !lines) {
        return IMX_SPOOL_CORRUPT;
    }
    return IMX_SPOOL_VALID;
}

const char *imx_spool_check_text(imx_spool_check_t c)
{
    switch (c) {
    case IMX_SPOOL_VALID: return "valid";
    case IMX_SPOOL_TRUNCATED: return "truncated";
    case IMX_SPOOL_CORRUPT: return "corrupt";
    default: return "not a spool file of this version";
    }
}

/* ------------------------------------------------------------------------- */
/* Names                                                                      */

static int is_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
            return 0;
        }
    }
    return 1;
}

int imx_spool_name_ok(const char *s, size_t n)
{
    return n == IMX_SPOOL_NAME_LEN && !memcmp(s, "imx-", 4) && is_hex(s + 4, 16) && s[20] == '-'
           && is_hex(s + 21, 8) && s[29] == '-' && is_hex(s + 30, 8)
           && !memcmp(s + 38, ".spool", 6);
}

int imx_spool_tmp_name_ok(const char *s)
{
    size_t n = strlen(s);

    return n == IMX_SPOOL_NAME_LEN + 5 && s[0] == '.' && imx_spool_name_ok(s + 1, IMX_SPOOL_NAME_LEN)
           && !memcmp(s + 1 + IMX_SPOOL_NAME_LEN, ".tmp", 4);
}

int imx_spool_bad_name_ok(const char *s)
{
    size_t n = strlen(s);

    return n == IMX_SPOOL_NAME_LEN + 4 && imx_spool_name_ok(s, IMX_SPOOL_NAME_LEN) && !memcmp(s + IMX_SPOOL_NAME_LEN, ".bad", 4);
}
