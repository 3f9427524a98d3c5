/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_spool_recount.c: the parent's count of the spool directory when
 * httpd starts (see imx_spool.h).
 *
 * The gauges live in shared memory, which a stop and start of httpd
 * empties, while the files outlive it: so the parent counts the files
 * again, with no child running, and sets aside what no child should send.
 * Only headers are read here; payload checksums are checked by the process
 * that sends a file.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imx_spool.h"

int imx_spool_recount(const char *dir, uid_t uid, imx_spool_shared_t *sh,
                      imx_spool_drop_t *bad, imx_log_fn *log, void *log_ctx)
{
    int64_t bytes = 0, points = 0, files = 0;
    struct dirent *de;
    struct stat dst;
    DIR *d;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (dfd < 0 || fstat(dfd, &dst) != 0 || !(d = fdopendir(dfd))) {
        int rv = errno;
        if (dfd >= 0) {
            close(dfd);
        }
        return rv;
    }
    while ((de = readdir(d))) {
        const char *name = de->d_name;
        unsigned char hdr[IMX_SPOOL_HDR];
        imx_spool_hdr_t h;
        imx_spool_check_t c;
        struct stat st;
        const char *why = NULL;
        char whybuf[160];
        ssize_t got;
        int fd, hdr_ok = 0;

        if (imx_spool_tmp_name_ok(name)) {
            /* A writer that died mid-write; a live one holds its lock. */
            fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
            if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0) {
                unlinkat(dfd, name, 0);
                imx_log_say(log, log_ctx, IMX_LOG_NOTICE, "removed %s/%s, left by a writer "
                     "that died before it finished", dir, name);
            }
            if (fd >= 0) {
                close(fd);
            }
            continue;
        }
        if (!imx_spool_name_ok(name, strlen(name))) {
            continue;
        }
        if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            continue;
        }
        memset(&h, 0, sizeof(h));
        if (!S_ISREG(st.st_mode)) {
            why = "not a regular file";
        }
        else if (st.st_uid != uid || (st.st_mode & 0600) != 0600) {
            snprintf(whybuf, sizeof(whybuf), "owned by uid %u with mode %04o, not "
                     "readable and writable by uid %u (the children's user)",
                     (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777), (unsigned)uid);
            why = whybuf;
        }
        else if ((fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC))
                 < 0) {
            snprintf(whybuf, sizeof(whybuf), "cannot be opened: %s", strerror(errno));
            why = whybuf;
        }
        else {
            got = pread(fd, hdr, sizeof(hdr), 0);
            close(fd);
            c = imx_spool_check_header(hdr, got > 0 ? (size_t)got : 0, &h);
            hdr_ok = c == IMX_SPOOL_VALID;
            if (hdr_ok && (uint64_t)st.st_size != IMX_SPOOL_HDR + h.len) {
                c = (uint64_t)st.st_size < IMX_SPOOL_HDR + h.len ? IMX_SPOOL_TRUNCATED
                                                                 : IMX_SPOOL_CORRUPT;
            }
            if (c != IMX_SPOOL_VALID) {
                snprintf(whybuf, sizeof(whybuf), "%s (%llu bytes)", imx_spool_check_text(c),
                         (unsigned long long)st.st_size);
                why = whybuf;
            }
        }
        if (why) {
            char to[IMX_SPOOL_NAME_LEN + 8];
            snprintf(to, sizeof(to), "%.*s.bad", IMX_SPOOL_NAME_LEN, name);
            if (renameat(dfd, name, dfd, to) == 0) {
                atomic_fetch_add(&sh->bad_files, 1);
                imx_log_say(log, log_ctx, IMX_LOG_ERR, "spool file %s/%s is %s: renamed to %s, "
                     "%u points dropped (dropped_spool)", dir, name, why, to,
                     hdr_ok ? h.points : 0);
                if (hdr_ok && bad) {
                    bad->points += h.points;
                    if (h.flags & IMX_SPOOL_MAYBE) {
                        bad->maybe += h.points;
                    }
                }
            }
            else {
                imx_log_say(log, log_ctx, IMX_LOG_ERR, "spool file %s/%s is %s, and cannot be "
                     "renamed to %s: %s", dir, name, why, to, strerror(errno));
            }
            continue;
        }
        bytes += st.st_size;
        points += h.points;
        files++;
    }
    /* Bad files still take room in the spool (see evict_bad): counted in
     * a second pass, which sees the ones renamed above exactly once. */
    rewinddir(d);
    while ((de = readdir(d))) {
        struct stat st;

        if (imx_spool_bad_name_ok(de->d_name) && fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0
            && S_ISREG(st.st_mode)) {
            bytes += st.st_size;
        }
    }
    closedir(d);
    atomic_store(&sh->bytes, bytes);
    atomic_store(&sh->points, points);
    atomic_store(&sh->files, files);
    sh->dir_dev = (uint64_t)dst.st_dev;
    sh->dir_ino = (uint64_t)dst.st_ino;
    return 0;
}
