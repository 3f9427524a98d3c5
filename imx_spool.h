/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_spool.h: the on-disk spool of mod_influx_metrics (imx_spool.c).
 *
 * What a child cannot send before it exits, and what its retry buffer cannot
 * hold, is written to a directory as files of encoded line protocol (the
 * timestamps included), and sent later by any live child, oldest first.
 * Like the rest of the engine, it depends on APR and the C library only,
 * never on httpd.
 *
 * Memory is the caller's: the gauges shared by every process of one httpd
 * (imx_spool_shared_t) live where the caller puts them (shared memory in the
 * module, plain memory in the unit tests), the spool object comes from the
 * caller's pool.
 */
#ifndef IMX_SPOOL_H
#define IMX_SPOOL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <apr_pools.h>
#include <apr_time.h>

#include "imx_log.h"
#include "imx_spool_file.h"

typedef struct imx_spool imx_spool_t;

/* ------------------------------------------------------------------------- */
/* The spool                                                                  */

/* Gauges of the directory, shared by every process that uses it. Zero-filled
 * memory is valid; imx_spool_recount() sets them from the directory. */
typedef struct imx_spool_shared {
    _Atomic int64_t bytes;      /* in files, plus what writers have reserved */
    _Atomic int64_t points;     /* request points in files: the `spooled` gauge */
    _Atomic int64_t files;
    _Atomic uint64_t bad_files; /* files moved aside (renamed to *.bad) */
    uint64_t dir_dev, dir_ino;  /* the directory counted (set by recount) */
} imx_spool_shared_t;

typedef struct imx_spool_conf {
    const char *dir;            /* absolute path */
    uint64_t max_bytes;         /* bound of the files' sizes together */
    imx_spool_shared_t *shared;
    imx_log_fn *log;            /* may be NULL */
    void *log_ctx;
} imx_spool_conf_t;

/* Points given up on: their number, and of those, the ones whose file said
 * they may have been stored already. */
typedef struct imx_spool_drop {
    uint64_t points;
    uint64_t maybe;
} imx_spool_drop_t;

/* A file claimed for sending: locked by this process until done or released. */
typedef struct imx_spool_file {
    int fd;
    char name[64];
    imx_spool_hdr_t h;
    const char *data;           /* the payload, valid until done/release */
    uint64_t size;              /* the file's size */
} imx_spool_file_t;

/* Opens the directory for this process (one spool object per process: the
 * names it writes carry its pid). Memory from p, released with it. Returns
 * NULL with err filled when the directory cannot be opened. */
imx_spool_t *imx_spool_open(apr_pool_t *p, const imx_spool_conf_t *conf,
                            char *err, size_t errsz);

/* Writes one file: `len` bytes of line protocol holding `points` request
 * points and `extra` other lines. Written to a temporary name, fsync'd, then
 * renamed, so a crash never leaves half a file under a final name. `when`
 * (0: now) orders the file among the others. When the files would exceed
 * max_bytes, the oldest that no process is sending are deleted first; their
 * points are added to *evicted. Returns 0, or an errno value (ENOSPC and
 * EDQUOT: the disk; EFBIG: larger than the whole spool; ENOBUFS: no room,
 * every older file being sent) with err filled. */
int imx_spool_write(imx_spool_t *sp, const char *data, size_t len, uint32_t points,
                    uint32_t extra, int maybe, apr_time_t when, imx_spool_drop_t *evicted,
                    char *err, size_t errsz);

/* Makes the renames of the files written so far durable (fsync of the
 * directory): once after a series of writes. */
void imx_spool_sync(imx_spool_t *sp);

/* Claims the oldest file no other process holds, reads and checks it. Files
 * that cannot be read or fail the check are renamed to *.bad, counted in
 * shared->bad_files, logged once, and their points (when their header says)
 * added to *bad. Returns 1 with f filled, 0 when there is none to send. */
int imx_spool_claim(imx_spool_t *sp, imx_spool_file_t *f, imx_spool_drop_t *bad);

/* The file is settled (acknowledged, or refused for good): deletes it and
 * releases it. */
void imx_spool_done(imx_spool_t *sp, imx_spool_file_t *f);

/* The file could not be sent now: releases it for a later try. maybe: a POST
 * of it may have been stored, noted in the file. */
void imx_spool_release(imx_spool_t *sp, imx_spool_file_t *f, int maybe);

/* Request points in the spool now (the shared gauge, never negative). */
uint64_t imx_spool_pending(const imx_spool_t *sp);

/* The size the writer should keep a file under when it gathers batches into
 * one: a quarter of max_bytes (so that eviction frees room in steps, not
 * the whole spool at once), at most 16 MiB. */
size_t imx_spool_file_max(const imx_spool_t *sp);

/* Spool files now (the shared gauge): 0 means there is nothing to scan for. */
uint64_t imx_spool_files(const imx_spool_t *sp);

/* Can this process create and delete files there now? */
int imx_spool_writable(const imx_spool_t *sp);

/* At startup, in the parent, with no child running: sets the gauges from
 * the directory's files, removes the temporary files of writers that died,
 * and renames to *.bad the files whose header is bad or does not match
 * their size, that are not regular files, or that are not owned by `uid`
 * (the children could not read them, or should not trust them); the points
 * of those whose header was whole are added to *bad. Only headers are read
 * here: payload checksums are checked by the process that sends a file.
 * Returns 0, or an errno value. */
int imx_spool_recount(const char *dir, uid_t uid, imx_spool_shared_t *sh,
                      imx_spool_drop_t *bad, imx_log_fn *log, void *log_ctx);

#endif /* IMX_SPOOL_H */
