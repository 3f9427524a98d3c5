/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_spool.c: files of line protocol that outlive the process that wrote them.
 *
 * Names
 *   imx-<16 hex: microseconds>-<8 hex: pid>-<8 hex: sequence>.spool
 *   Sorting the names sorts the files by the time they were written, so
 *   "oldest first" is a name comparison. A file is written under
 *   .<name>.tmp, fsync'd and renamed: a crash mid-write leaves a temporary
 *   file, never half a file under a final name. Temporary files of writers
 *   that died are removed at the next start (imx_spool_recount). A file
 *   found bad is renamed to <name>.bad and left for a human. Other names in
 *   the directory are ignored.
 *
 * Claiming
 *   A sender opens a file and takes flock(LOCK_EX | LOCK_NB) on it; on
 *   EWOULDBLOCK another process has it, and the next oldest is tried. Having
 *   the lock is not enough: the previous holder may have deleted the file
 *   between our open() and our flock(), so the sender then checks that the
 *   name still leads to the inode it holds (fstat against fstatat). Only the
 *   holder deletes a file, and only after the backend acknowledged it, so
 *   each file is sent by one process at a time, and deleted once. The kernel
 *   drops a lock with its process, however it dies: the file of a sender
 *   that crashed is claimed again by the next one. Writers hold the lock on
 *   their temporary file too, so the startup clean-up never takes a file
 *   that is still being written.
 *
 * Accounting
 *   The gauges in imx_spool_shared_t are shared by all processes of one
 *   httpd. A writer reserves a file's bytes before writing it (so
 *   concurrent writers cannot overshoot max_bytes together), adds its points
 *   before the rename (so a sender that deletes it at once never subtracts
 *   them first), and gives the reservation back if the write fails. Whoever
 *   deletes a file or moves it aside subtracts it. The parent sets the gauges
 *   from the directory when it starts. A process killed between the steps
 *   leaves a gauge off by one file until the next start; the gauges never go
 *   below zero.
 */
#include <dirent.h>
#include <stdarg.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <apr_strings.h>
#include <zlib.h>

#include "imx_spool.h"

#define NAME_LEN    IMX_SPOOL_NAME_LEN
#define NCAND       32          /* oldest names kept per directory scan */
#define NSKIP       16          /* names this process failed to remove */

struct imx_spool {
    int dirfd;
    DIR *dir;                   /* on a dup of dirfd, rewound for each scan */
    const char *path;
    uint64_t max_bytes;
    imx_spool_shared_t *sh;
    imx_log_fn *log;
    void *log_ctx;
    unsigned pid;
    uint32_t seq;
    char cand[NCAND][NAME_LEN + 1];
    int ncand, icand;
    char skip[NSKIP][NAME_LEN + 1];
    int nskip;
    unsigned skip_next;
    unsigned char *rbuf;
    size_t rcap;
};

/* ------------------------------------------------------------------------- */
/* Helpers                                                                    */

/* Never below zero: a process killed between two steps, or a file put there
 * by hand, must not make a gauge wrap. */
static void gauge_sub(_Atomic int64_t *g, int64_t v)
{
    int64_t cur = atomic_load(g);

    while (!atomic_compare_exchange_weak(g, &cur, cur > v ? cur - v : 0)) {
        ;
    }
}

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int read_all(int fd, void *buf, size_t len)
{
    char *p = buf;
    off_t off = 0;

    while (len) {
        ssize_t n = pread(fd, p, len, off);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        if (n == 0) {
            errno = EIO;        /* shrank under us */
            return -1;
        }
        p += n;
        off += n;
        len -= (size_t)n;
    }
    return 0;
}

static apr_time_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (apr_time_t)ts.tv_sec * APR_USEC_PER_SEC + ts.tv_nsec / 1000;
}

static int skipped(const imx_spool_t *sp, const char *name)
{
    for (int i = 0; i < sp->nskip; i++) {
        if (!strcmp(sp->skip[i], name)) {
            return 1;
        }
    }
    return 0;
}

/* A file this process could not delete or move aside: not offered to it
 * again (the last NSKIP such names are kept), so it neither loops on it nor
 * logs it again. */
static void add_skip(imx_spool_t *sp, const char *name)
{
    snprintf(sp->skip[sp->skip_next++ % NSKIP], sizeof(sp->skip[0]), "%s", name);
    if (sp->nskip < NSKIP) {
        sp->nskip++;
    }
}

/* ------------------------------------------------------------------------- */
/* Candidates: the oldest names of one directory scan                         */

static void scan(imx_spool_t *sp)
{
    struct dirent *de;

    sp->ncand = sp->icand = 0;
    if (!sp->dir) {
        return;
    }
    rewinddir(sp->dir);
    while ((de = readdir(sp->dir))) {
        int i;

        if (!imx_spool_name_ok(de->d_name, strlen(de->d_name)) || skipped(sp, de->d_name)) {
            continue;
        }
        /* Insertion into the sorted list of the NCAND smallest names. */
        for (i = sp->ncand; i > 0 && strcmp(sp->cand[i - 1], de->d_name) > 0; i--) {
            if (i < NCAND) {
                memcpy(sp->cand[i], sp->cand[i - 1], sizeof(sp->cand[0]));
            }
        }
        if (i < NCAND) {
            memcpy(sp->cand[i], de->d_name, NAME_LEN + 1);
            if (sp->ncand < NCAND) {
                sp->ncand++;
            }
        }
    }
}

/* The next name to try. A caller rescans at most MAX_SCANS times (counted
 * in *scans): enough to get past a few dozen bad files, bounded when every
 * file is being sent by another process. */
#define MAX_SCANS 4
static const char *next_candidate(imx_spool_t *sp, int *scans)
{
    if (sp->icand >= sp->ncand) {
        if (*scans >= MAX_SCANS) {
            return NULL;
        }
        ++*scans;
        scan(sp);
        if (!sp->ncand) {
            return NULL;
        }
    }
    return sp->cand[sp->icand++];
}

/* ------------------------------------------------------------------------- */
/* Claiming and moving aside                                                  */

enum { C_OK, C_GONE, C_BUSY, C_BAD };

/* Opens and locks `name`; C_OK with *fd and *st set, C_BAD with *why set. */
static int lock_file(imx_spool_t *sp, const char *name, int *fd, struct stat *st,
                     char *why, size_t whysz)
{
    struct stat now;

    /* O_NONBLOCK: a FIFO under a spool name must not block the flusher. */
    *fd = openat(sp->dirfd, name, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (*fd < 0) {
        if (errno == ENOENT) {
            return C_GONE;
        }
        snprintf(why, whysz, "cannot be opened: %s", strerror(errno));
        return C_BAD;
    }
    if (flock(*fd, LOCK_EX | LOCK_NB) != 0) {
        close(*fd);
        *fd = -1;
        return C_BUSY;
    }
    /* Locked; but the holder before us may have deleted it meanwhile. */
    if (fstat(*fd, st) != 0 || st->st_nlink == 0
        || fstatat(sp->dirfd, name, &now, AT_SYMLINK_NOFOLLOW) != 0
        || now.st_ino != st->st_ino || now.st_dev != st->st_dev) {
        close(*fd);
        *fd = -1;
        return C_GONE;
    }
    if (!S_ISREG(st->st_mode)) {
        snprintf(why, whysz, "not a regular file");
        return C_BAD;
    }
    return C_OK;
}

/* Renames a bad file to <name>.bad (the caller holds it, or could not open
 * it), subtracts it from the gauges, counts and logs it once. A file that
 * cannot be renamed is still there: logged once by this process, skipped by
 * it, and counted by none. */
static void move_aside(imx_spool_t *sp, const char *name, uint64_t size, int hdr_ok,
                       const imx_spool_hdr_t *h, const char *why, imx_spool_drop_t *bad)
{
    char to[NAME_LEN + 8];
    int rv;

    snprintf(to, sizeof(to), "%.*s.bad", NAME_LEN, name);
    rv = renameat(sp->dirfd, name, sp->dirfd, to);
    if (rv != 0) {
        int err = errno;
        if (err != ENOENT) {
            add_skip(sp, name);
            imx_log_say(sp->log, sp->log_ctx, IMX_LOG_ERR, "spool file %s/%s is %s, and cannot "
                 "be renamed to %s: %s; this process leaves it alone", sp->path, name,
                 why, to, strerror(err));
        }
        return;
    }
    imx_log_say(sp->log, sp->log_ctx, IMX_LOG_ERR, "spool file %s/%s is %s: renamed to "
         "%s, %u points dropped (dropped_spool)", sp->path, name, why, to,
         hdr_ok ? h->points : 0);
    atomic_fetch_add(&sp->sh->bad_files, 1);
    /* Its bytes stay counted: a bad file still takes room in the spool,
     * until it is deleted to make room (evict_bad). */
    (void)size;
    if (hdr_ok) {
        gauge_sub(&sp->sh->points, h->points);
        gauge_sub(&sp->sh->files, 1);
        if (bad) {
            bad->points += h->points;
            if (h->flags & IMX_SPOOL_MAYBE) {
                bad->maybe += h->points;
            }
        }
    }
}

/* Locks a candidate file for this process (lock_file). One that cannot be a
 * spool file is moved aside, counted in *bad, closed, and given back as
 * C_BAD. */
static int take_file(imx_spool_t *sp, const char *name, int *fd, struct stat *st,
                     imx_spool_drop_t *bad)
{
    imx_spool_hdr_t h;
    char why[160];
    int rv = lock_file(sp, name, fd, st, why, sizeof(why));

    if (rv == C_BAD) {
        memset(&h, 0, sizeof(h));
        move_aside(sp, name, *fd >= 0 ? (uint64_t)st->st_size : 0, 0, &h, why, bad);
        if (*fd >= 0) {
            close(*fd);
            *fd = -1;
        }
    }
    return rv;
}

static int ensure_rbuf(imx_spool_t *sp, size_t need)
{
    unsigned char *nb;

    if (need <= sp->rcap) {
        return 1;
    }
    nb = realloc(sp->rbuf, need);
    if (!nb) {
        return 0;
    }
    sp->rbuf = nb;
    sp->rcap = need;
    return 1;
}

int imx_spool_claim(imx_spool_t *sp, imx_spool_file_t *f, imx_spool_drop_t *bad)
{
    int scans = 0;

    memset(f, 0, sizeof(*f));
    f->fd = -1;
    /* Bounded: a directory of files all being sent, or all bad, ends the
     * round instead of keeping the flusher. */
    for (int tries = 0; tries < MAX_SCANS * NCAND; tries++) {
        const char *name = next_candidate(sp, &scans);
        char why[160];
        struct stat st;
        imx_spool_hdr_t h;
        imx_spool_check_t c;
        int fd, rv, hdr_ok;

        if (!name) {
            return 0;
        }
        rv = take_file(sp, name, &fd, &st, bad);
        if (rv != C_OK) {
            continue;           /* gone, busy, or set aside */
        }
        memset(&h, 0, sizeof(h));
        if ((uint64_t)st.st_size > IMX_SPOOL_HDR + IMX_SPOOL_MAX_PAYLOAD) {
            move_aside(sp, name, (uint64_t)st.st_size, 0, &h, "too large for a spool file",
                       bad);
            close(fd);
            continue;
        }
        if (!ensure_rbuf(sp, (size_t)st.st_size + 1)) {
            close(fd);          /* out of memory: try again next round */
            return 0;
        }
        if (read_all(fd, sp->rbuf, (size_t)st.st_size) != 0) {
            snprintf(why, sizeof(why), "unreadable: %s", strerror(errno));
            move_aside(sp, name, (uint64_t)st.st_size, 0, &h, why, bad);
            close(fd);
            continue;
        }
        hdr_ok = imx_spool_check_header(sp->rbuf, (size_t)st.st_size, &h) == IMX_SPOOL_VALID;
        c = imx_spool_check(sp->rbuf, (size_t)st.st_size, &h);
        if (c != IMX_SPOOL_VALID) {
            if (hdr_ok) {
                snprintf(why, sizeof(why), "%s (%llu bytes, the header says %llu)",
                         imx_spool_check_text(c), (unsigned long long)st.st_size,
                         (unsigned long long)(IMX_SPOOL_HDR + h.len));
            }
            else {
                snprintf(why, sizeof(why), "%s (%llu bytes)", imx_spool_check_text(c),
                         (unsigned long long)st.st_size);
            }
            move_aside(sp, name, (uint64_t)st.st_size, hdr_ok, &h, why, bad);
            close(fd);
            continue;
        }
        f->fd = fd;
        memcpy(f->name, name, NAME_LEN + 1);
        f->h = h;
        f->data = (const char *)sp->rbuf + IMX_SPOOL_HDR;
        f->size = (uint64_t)st.st_size;
        return 1;
    }
    return 0;
}

/* Deletes a file this process holds, and takes it off the gauges. Returns 0
 * when it is still there. */
static int remove_held(imx_spool_t *sp, const char *name, uint64_t size,
                       const imx_spool_hdr_t *h)
{
    if (unlinkat(sp->dirfd, name, 0) != 0) {
        add_skip(sp, name);
        imx_log_say(sp->log, sp->log_ctx, IMX_LOG_ERR, "cannot delete spool file %s/%s: %s; "
             "another process may send it again", sp->path, name, strerror(errno));
        return 0;
    }
    gauge_sub(&sp->sh->points, h->points);
    gauge_sub(&sp->sh->files, 1);
    gauge_sub(&sp->sh->bytes, (int64_t)size);
    return 1;
}

void imx_spool_done(imx_spool_t *sp, imx_spool_file_t *f)
{
    if (f->fd < 0) {
        return;
    }
    remove_held(sp, f->name, f->size, &f->h);
    close(f->fd);
    f->fd = -1;
}

void imx_spool_release(imx_spool_t *sp, imx_spool_file_t *f, int maybe)
{
    (void)sp;
    if (f->fd < 0) {
        return;
    }
    /* Only a qualifier of later drops: no fsync, and a failed write of it
     * loses nothing else. */
    if (maybe && !(f->h.flags & IMX_SPOOL_MAYBE)) {
        unsigned char hdr[IMX_SPOOL_HDR];
        f->h.flags |= IMX_SPOOL_MAYBE;
        imx_spool_encode_header(hdr, &f->h, f->data);
        if (pwrite(f->fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr)) {
            ;                   /* the flag stays unset: maybe_stored undercounts */
        }
    }
    close(f->fd);
    f->fd = -1;
}

/* Deletes the oldest file moved aside as bad (kept for a human to look at,
 * its points already counted in dropped_spool), before any file that can
 * still be sent: bad files count in the spool's size, and would otherwise
 * fill it for good. Returns 0 when there is none. */
static int evict_bad(imx_spool_t *sp)
{
    char oldest[NAME_LEN + 5] = "";
    struct dirent *de;
    struct stat st;

    if (!sp->dir) {
        return 0;
    }
    rewinddir(sp->dir);
    while ((de = readdir(sp->dir))) {
        if (imx_spool_bad_name_ok(de->d_name) && (!oldest[0] || strcmp(de->d_name, oldest) < 0)) {
            memcpy(oldest, de->d_name, sizeof(oldest));
        }
    }
    if (!oldest[0] || fstatat(sp->dirfd, oldest, &st, AT_SYMLINK_NOFOLLOW) != 0
        || unlinkat(sp->dirfd, oldest, 0) != 0) {
        return 0;
    }
    gauge_sub(&sp->sh->bytes, S_ISREG(st.st_mode) ? (int64_t)st.st_size : 0);
    imx_log_say(sp->log, sp->log_ctx, IMX_LOG_NOTICE, "deleted %s/%s, a spool file found bad "
         "earlier, to make room (InfluxMetricsSpoolSize)", sp->path, oldest);
    return 1;
}

/* Deletes the oldest file no process is sending, to make room: a bad one
 * first. Returns 0 when there is none. */
static int evict_oldest(imx_spool_t *sp, imx_spool_drop_t *ev)
{
    int scans = 0;

    if (evict_bad(sp)) {
        return 1;
    }

    for (int tries = 0; tries < MAX_SCANS * NCAND; tries++) {
        const char *name = next_candidate(sp, &scans);
        unsigned char hdr[IMX_SPOOL_HDR];
        imx_spool_hdr_t h;
        struct stat st;
        ssize_t got;
        imx_spool_check_t c;
        int fd, rv;

        if (!name) {
            return 0;
        }
        rv = take_file(sp, name, &fd, &st, ev);
        if (rv == C_BAD) {
            return 1;           /* set aside: room made */
        }
        if (rv != C_OK) {
            continue;
        }
        memset(&h, 0, sizeof(h));
        got = pread(fd, hdr, sizeof(hdr), 0);
        c = imx_spool_check_header(hdr, got > 0 ? (size_t)got : 0, &h);
        if (c == IMX_SPOOL_VALID && (uint64_t)st.st_size != IMX_SPOOL_HDR + h.len) {
            c = (uint64_t)st.st_size < IMX_SPOOL_HDR + h.len ? IMX_SPOOL_TRUNCATED
                                                             : IMX_SPOOL_CORRUPT;
            move_aside(sp, name, (uint64_t)st.st_size, 1, &h, imx_spool_check_text(c), ev);
        }
        else if (c != IMX_SPOOL_VALID) {
            move_aside(sp, name, (uint64_t)st.st_size, 0, &h, imx_spool_check_text(c), ev);
        }
        else if (remove_held(sp, name, (uint64_t)st.st_size, &h)) {
            ev->points += h.points;
            if (h.flags & IMX_SPOOL_MAYBE) {
                ev->maybe += h.points;
            }
        }
        else {
            close(fd);
            continue;           /* still there: try the next */
        }
        close(fd);
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------------------------- */
/* Writing                                                                    */

int imx_spool_write(imx_spool_t *sp, const char *data, size_t len, uint32_t points,
                    uint32_t extra, int maybe, apr_time_t when, imx_spool_drop_t *evicted,
                    char *err, size_t errsz)
{
    unsigned char hdr[IMX_SPOOL_HDR];
    imx_spool_hdr_t h;
    char name[NAME_LEN + 1], tmp[NAME_LEN + 6];
    uint64_t size = IMX_SPOOL_HDR + (uint64_t)len;
    const char *step;
    int fd = -1, rv, counted = 0;

    if (size > sp->max_bytes || len > IMX_SPOOL_MAX_PAYLOAD) {
        snprintf(err, errsz, "%llu bytes do not fit in the spool (InfluxMetricsSpoolSize "
                 "%llu)", (unsigned long long)size, (unsigned long long)sp->max_bytes);
        return EFBIG;
    }
    /* Reserve first, then make room: concurrent writers see each other's
     * reservations, so together they stay within max_bytes. */
    if ((uint64_t)(atomic_fetch_add(&sp->sh->bytes, (int64_t)size) + (int64_t)size)
        > sp->max_bytes) {
        sp->icand = sp->ncand;  /* evict from a fresh scan */
        while ((uint64_t)atomic_load(&sp->sh->bytes) > sp->max_bytes) {
            if (!evict_oldest(sp, evicted)) {
                gauge_sub(&sp->sh->bytes, (int64_t)size);
                snprintf(err, errsz, "the spool is full (InfluxMetricsSpoolSize %llu) and "
                         "every older file is being sent",
                         (unsigned long long)sp->max_bytes);
                return ENOBUFS;
            }
        }
    }
    if (!when) {
        when = now_us();
    }
    snprintf(name, sizeof(name), "imx-%016llx-%08x-%08x.spool",
             (unsigned long long)when, sp->pid, sp->seq++);
    snprintf(tmp, sizeof(tmp), ".%s.tmp", name);
    memset(&h, 0, sizeof(h));
    h.flags = maybe ? IMX_SPOOL_MAYBE : 0;
    h.points = points;
    h.extra = extra;
    h.len = len;
    h.created = now_us();
    imx_spool_encode_header(hdr, &h, data);

    step = "create";
    fd = openat(sp->dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        goto fail;
    }
    /* The start-up clean-up skips temporary files that are locked. */
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        goto fail;
    }
    step = "write";
    if (write_all(fd, hdr, sizeof(hdr)) != 0 || write_all(fd, data, len) != 0) {
        goto fail;
    }
    step = "fsync";
    if (fsync(fd) != 0) {
        goto fail;
    }
    /* Before the rename: a sender may delete the file the moment it has a
     * name, and must never subtract what was not added yet. */
    atomic_fetch_add(&sp->sh->points, points);
    atomic_fetch_add(&sp->sh->files, 1);
    counted = 1;
    step = "rename";
    if (renameat(sp->dirfd, tmp, sp->dirfd, name) != 0) {
        goto fail;
    }
    close(fd);
    return 0;

fail:
    rv = errno ? errno : EIO;
    if (fd >= 0) {
        unlinkat(sp->dirfd, tmp, 0);
        close(fd);
    }
    if (counted) {
        gauge_sub(&sp->sh->points, points);
        gauge_sub(&sp->sh->files, 1);
    }
    gauge_sub(&sp->sh->bytes, (int64_t)size);
    snprintf(err, errsz, "cannot %s %s/%s: %s", step, sp->path, tmp, strerror(rv));
    return rv;
}

void imx_spool_sync(imx_spool_t *sp)
{
    if (fsync(sp->dirfd) != 0) {
        ;                       /* the files are written; only their names may wait */
    }
}

uint64_t imx_spool_pending(const imx_spool_t *sp)
{
    int64_t v = atomic_load(&sp->sh->points);

    return v > 0 ? (uint64_t)v : 0;
}

size_t imx_spool_file_max(const imx_spool_t *sp)
{
    uint64_t m = sp->max_bytes / 4;

    return m > ((uint64_t)16 << 20) ? (size_t)16 << 20 : (size_t)m;
}

uint64_t imx_spool_files(const imx_spool_t *sp)
{
    int64_t v = atomic_load(&sp->sh->files);

    return v > 0 ? (uint64_t)v : 0;
}

int imx_spool_writable(const imx_spool_t *sp)
{
    return faccessat(sp->dirfd, ".", W_OK | X_OK, AT_EACCESS) == 0;
}

/* ------------------------------------------------------------------------- */
/* Opening                                                                    */

static apr_status_t spool_cleanup(void *data)
{
    imx_spool_t *sp = data;

    if (sp->dir) {
        closedir(sp->dir);
        sp->dir = NULL;
    }
    if (sp->dirfd >= 0) {
        close(sp->dirfd);
        sp->dirfd = -1;
    }
    free(sp->rbuf);
    sp->rbuf = NULL;
    sp->rcap = 0;
    return APR_SUCCESS;
}

imx_spool_t *imx_spool_open(apr_pool_t *p, const imx_spool_conf_t *conf,
                            char *err, size_t errsz)
{
    imx_spool_t *sp;
    int dfd;

    if (!conf->dir || !conf->shared || conf->max_bytes < IMX_SPOOL_HDR) {
        snprintf(err, errsz, "invalid spool configuration");
        return NULL;
    }
    sp = apr_pcalloc(p, sizeof(*sp));
    sp->dirfd = open(conf->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sp->dirfd < 0) {
        snprintf(err, errsz, "cannot open the spool directory %s: %s", conf->dir,
                 strerror(errno));
        return NULL;
    }
    dfd = fcntl(sp->dirfd, F_DUPFD_CLOEXEC, 0);
    if (dfd < 0 || !(sp->dir = fdopendir(dfd))) {
        snprintf(err, errsz, "cannot read the spool directory %s: %s", conf->dir,
                 strerror(errno));
        if (dfd >= 0) {
            close(dfd);
        }
        close(sp->dirfd);
        return NULL;
    }
    sp->path = apr_pstrdup(p, conf->dir);
    sp->max_bytes = conf->max_bytes;
    sp->sh = conf->shared;
    sp->log = conf->log;
    sp->log_ctx = conf->log_ctx;
    sp->pid = (unsigned)getpid();
    apr_pool_cleanup_register(p, sp, spool_cleanup, apr_pool_cleanup_null);
    return sp;
}
