/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_spool_file.h: the file format of the spool (imx_spool.h).
 *
 * Kept apart from the directory's handling: the format is what any later
 * build of the module must still read, and what the tests and the fuzzers
 * check byte by byte.
 */
#ifndef IMX_SPOOL_FILE_H
#define IMX_SPOOL_FILE_H

#include <stddef.h>
#include <stdint.h>

/* A spool file is a 48-byte header followed by the payload: line protocol
 * exactly as it would have been POSTed (uncompressed), one line per point,
 * each ending in '\n'. All integers little-endian.
 *
 *    0  magic "IMXSPOOL"
 *    8  u32 version (1)
 *   12  u32 flags (IMX_SPOOL_MAYBE)
 *   16  u32 request points in the payload
 *   20  u32 other lines in the payload (the module's own points)
 *   24  u64 payload length in bytes
 *   32  i64 when the file was written (microseconds since the epoch)
 *   40  u32 CRC-32 of the payload
 *   44  u32 CRC-32 of bytes 0..43
 *
 * A file is valid only if it is exactly 48 + length bytes long, both CRCs
 * match, the payload ends in '\n' and holds points + other lines lines. */
#define IMX_SPOOL_HDR       48
#define IMX_SPOOL_VERSION   1
/* A POST of this file may have been stored already (see maybe_stored). */
#define IMX_SPOOL_MAYBE     1u
/* Larger files are not ours: refused unread. */
#define IMX_SPOOL_MAX_PAYLOAD ((uint64_t)1 << 30)

typedef struct imx_spool_hdr {
    uint32_t flags;
    uint32_t points;
    uint32_t extra;
    uint64_t len;
    int64_t created;
    uint32_t crc;
} imx_spool_hdr_t;

typedef enum {
    IMX_SPOOL_VALID = 0,
    IMX_SPOOL_TRUNCATED,        /* shorter than its header says */
    IMX_SPOOL_CORRUPT,          /* a CRC, the length or the line count is wrong */
    IMX_SPOOL_FOREIGN           /* not a spool file of this version */
} imx_spool_check_t;

/* Writes the header of a payload (data, h->len bytes) into out; fills h->crc. */
void imx_spool_encode_header(unsigned char out[IMX_SPOOL_HDR], imx_spool_hdr_t *h,
                             const char *data);

/* Checks the first len bytes of a file; with a valid header, fills h (also
 * for a truncated or corrupt payload, so that its points can be counted). */
imx_spool_check_t imx_spool_check_header(const void *buf, size_t len, imx_spool_hdr_t *h);

/* Checks a whole file of len bytes. */
imx_spool_check_t imx_spool_check(const void *buf, size_t len, imx_spool_hdr_t *h);

/* "truncated", "corrupt", ... */
const char *imx_spool_check_text(imx_spool_check_t c);

/* Names: imx-<16 hex: microseconds>-<8 hex: pid>-<8 hex: sequence>.spool,
 * so that sorting the names sorts the files by the time they were written;
 * written as .<name>.tmp first, renamed to <name>.bad when found bad. */
#define IMX_SPOOL_NAME_LEN 44

/* s (n bytes) is a spool file's name. */
int imx_spool_name_ok(const char *s, size_t n);

/* s is the temporary name of a file being written. */
int imx_spool_tmp_name_ok(const char *s);

/* s is the name of a file moved aside as bad. */
int imx_spool_bad_name_ok(const char *s);

#endif /* IMX_SPOOL_FILE_H */
