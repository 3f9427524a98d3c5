/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * mod_influx_metrics_spooldir.c: the spool's directory (InfluxMetricsSpoolDir)
 * made ready by httpd's parent, root when httpd starts as root.
 *
 * The children's user owns the directory, and so could replace it, or a
 * directory on its path, with a symbolic link to somewhere only root may
 * change: so nothing here follows a link another user could have made, and
 * nothing is chowned or chmodded unless this code just created it.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"
#include "unixd.h"

#include "apr_strings.h"

#include "imx_spool.h"
#include "mod_influx_metrics_shm.h"
#include "mod_influx_metrics_status.h"
#include "mod_influx_metrics_spooldir.h"

APLOG_USE_MODULE(influx_metrics);

/* The user the children run as: httpd's User when it starts as root,
 * otherwise the user it runs as (it cannot change users then). */
static void spool_owner(uid_t *uid, gid_t *gid)
{
    if (geteuid() == 0) {
        *uid = ap_unixd_config.user_id;
        *gid = ap_unixd_config.group_id;
    }
    else {
        *uid = geteuid();
        *gid = getegid();
    }
}

/* Opens one component `name` of a path under the directory dfd, never
 * through a symbolic link that someone other than root (or httpd's own
 * user) could have put there: a link is followed only when root (or
 * httpd's user) owns it and the directory that holds it, and nobody else
 * can write that directory. (System paths such as /var/run are such links;
 * a link in /tmp or in a directory of the children's user is not.) Returns
 * the descriptor, or -1 with *why set (NULL, errno ENOENT: it is missing). */
static int open_component(apr_pool_t *p, int dfd, const char *name, const char *path,
                          const char **why)
{
    struct stat dst, lst;
    int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

    *why = NULL;
    if (fd >= 0 || errno == ENOENT) {
        return fd;
    }
    if (fstatat(dfd, name, &lst, AT_SYMLINK_NOFOLLOW) != 0) {
        *why = apr_psprintf(p, "cannot look up '%s': %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISLNK(lst.st_mode)) {
        *why = S_ISDIR(lst.st_mode)
               ? apr_psprintf(p, "cannot open '%s': %s", path, strerror(errno))
               : "a part of its path is a file, not a directory";
        return -1;
    }
    if (fstat(dfd, &dst) != 0 || (dst.st_uid != 0 && dst.st_uid != geteuid())
        || (dst.st_mode & 022) || (lst.st_uid != 0 && lst.st_uid != geteuid())) {
        *why = apr_psprintf(p, "'%s' is a symbolic link that another user could have "
                            "made or could change; name the real directory instead", path);
        return -1;
    }
    fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        *why = errno == ENOTDIR ? "a part of its path is a file, not a directory"
               : apr_psprintf(p, "cannot open '%s': %s", path, strerror(errno));
    }
    return fd;
}

/* The spool directory `dir`, walked from "/" one component at a time with
 * openat(O_NOFOLLOW), so that nothing on the way is a link another user
 * controls (see open_component). With make (post_config, in the parent,
 * root when httpd starts as root), what is missing is created: parents
 * 0755, the directory itself 0700, given to the children's user uid:gid,
 * as mod_cache_disk does for its cache. A directory that exists is used as
 * it is, never chowned or chmodded: it must be a real directory (not a
 * link) that uid owns, with all rights for its owner and none to write for
 * others; otherwise it is refused, and the error says why. Without make
 * (check_config, so configtest too) nothing changes on disk. Returns NULL,
 * or why not. */
static const char *spool_dir_walk(apr_pool_t *p, const char *dir, uid_t uid, gid_t gid,
                                  int make)
{
    char *path = apr_pstrdup(p, dir), *c = path, *next;
    const char *why = NULL;
    struct stat st;
    struct statvfs v;
    int fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC), nfd;

    if (fd < 0) {
        return apr_psprintf(p, "cannot open '/': %s", strerror(errno));
    }
    for (;;) {
        while (*c == '/') {
            c++;
        }
        next = strchr(c, '/');
        while (next && next[1] == '/') {
            next++;
        }
        if (!next || !next[1]) {
            break;              /* c is the last component */
        }
        *next = '\0';
        nfd = open_component(p, fd, c, path, &why);
        if (nfd < 0 && !why) {
            /* A missing parent: made 0755 (and through the new name's own
             * descriptor, which must then be ours). */
            if (!make) {
                break;          /* c is missing, and so is the rest: fd is where
                                 * it would be made (checked below) */
            }
            if (mkdirat(fd, c, 0755) != 0 && errno != EEXIST) {
                why = apr_psprintf(p, "cannot create '%s': %s", path, strerror(errno));
            }
            else if ((nfd = openat(fd, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0
                     || fstat(nfd, &st) != 0) {
                why = apr_psprintf(p, "cannot open '%s' after creating it: %s", path,
                                   strerror(errno));
            }
            else if (st.st_uid == geteuid() && (st.st_mode & 07777) != 0755
                     && fchmod(nfd, 0755) != 0) {
                why = apr_psprintf(p, "cannot make '%s' mode 0755: %s", path, strerror(errno));
            }
        }
        *next = '/';
        if (why) {
            if (nfd >= 0) {
                close(nfd);
            }
            close(fd);
            return why;
        }
        close(fd);
        fd = nfd;
        c = next + 1;
    }
    if (next && !next[1]) {
        *next = '\0';          /* a trailing slash (after a missing parent,
                                 * next is already cut off: no-op) */
    }
    if (!*c) {
        close(fd);
        return "it names the root directory";
    }
    if (fd >= 0 && fstatat(fd, c, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        if (S_ISLNK(st.st_mode)) {
            why = "it is a symbolic link: name the real directory (httpd gives its "
                  "children's user only a directory it creates itself)";
        }
        else if (!S_ISDIR(st.st_mode)) {
            why = "it exists and is not a directory";
        }
        else if (st.st_uid != uid) {
            why = apr_psprintf(p, "it is owned by uid %u, not by uid %u (the user httpd's "
                               "children run as), and httpd does not change the owner of a "
                               "directory it did not create: chown it, or remove it and "
                               "httpd creates it", (unsigned)st.st_uid, (unsigned)uid);
        }
        else if ((st.st_mode & 0700) != 0700 || (st.st_mode & 022)) {
            why = apr_psprintf(p, "it has mode %04o: its owner needs read, write and search "
                               "rights, and nobody else may write to it (chmod 0700 it)",
                               (unsigned)(st.st_mode & 07777));
        }
        close(fd);
        return why;
    }
    if (fd >= 0 && errno != ENOENT) {
        why = apr_psprintf(p, "cannot look it up: %s", strerror(errno));
        close(fd);
        return why;
    }
    /* Missing (and, without make, maybe some parents too): it is created
     * in the nearest directory that exists, which fd is. */
    if (fd < 0) {
        return "cannot open a parent directory";
    }
    if (fstatvfs(fd, &v) == 0 && (v.f_flag & ST_RDONLY)) {
        close(fd);
        return "it does not exist and cannot be created: its parent is on a read-only "
               "file system";
    }
    if (!make) {
        if (geteuid() != 0 && faccessat(fd, ".", W_OK | X_OK, AT_EACCESS) != 0) {
            why = apr_psprintf(p, "it does not exist and cannot be created: %s",
                               strerror(errno));
        }
        close(fd);
        return why;
    }
    if (mkdirat(fd, c, 0700) != 0) {
        why = apr_psprintf(p, "cannot create it: %s", strerror(errno));
        close(fd);
        return why;
    }
    nfd = openat(fd, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    close(fd);
    if (nfd < 0 || fstat(nfd, &st) != 0) {
        why = apr_psprintf(p, "cannot open it after creating it: %s", strerror(errno));
    }
    else if (st.st_uid != geteuid()) {
        why = "it was replaced while httpd created it";
    }
    else if ((st.st_uid != uid || st.st_gid != gid) && fchown(nfd, uid, gid) != 0) {
        why = apr_psprintf(p, "cannot give it to uid %u: %s", (unsigned)uid, strerror(errno));
    }
    else if ((st.st_mode & 07777) != 0700 && fchmod(nfd, 0700) != 0) {
        why = apr_psprintf(p, "cannot make it mode 0700: %s", strerror(errno));
    }
    if (nfd >= 0) {
        close(nfd);
    }
    return why;
}

const char *imx_spooldir_check(apr_pool_t *p, const char *dir)
{
    uid_t uid;
    gid_t gid;

    spool_owner(&uid, &gid);
    return spool_dir_walk(p, dir, uid, gid, 0);
}

void imx_spooldir_log(void *ctx, int level, const char *msg)
{
    ap_log_error(APLOG_MARK, level, 0, ctx, "IMX0101: %s", msg);
}

int imx_spooldir_init(apr_pool_t *pconf, server_rec *s, const char *dir)
{
    imx_spool_shared_t *sh = imx_status_spool();
    imx_spool_drop_t bad = { 0, 0 };
    const char *why;
    struct stat st;
    uid_t uid;
    gid_t gid;
    int rv;

    spool_owner(&uid, &gid);
    why = spool_dir_walk(pconf, dir, uid, gid, 1);
    if (why) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, s,
                     "IMX0014: InfluxMetricsSpoolDir: cannot use '%s': %s", dir, why);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (!sh) {
        return OK;              /* IMX0005 said so: the children do without */
    }
    if (stat(dir, &st) == 0 && sh->dir_dev == (uint64_t)st.st_dev
        && sh->dir_ino == (uint64_t)st.st_ino) {
        return OK;
    }
    rv = imx_spool_recount(dir, uid, sh, &bad, imx_spooldir_log, s);
    if (rv) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, rv, s,
                     "IMX0014: InfluxMetricsSpoolDir: cannot read '%s'", dir);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    imx_status_add_dropped_spool(bad.points, bad.maybe);
    /* Both numbers: together they are where the spool's identity starts. */
    if (atomic_load(&sh->files) || bad.points) {
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s, "IMX0015: the spool %s holds %"
                     APR_INT64_T_FMT " points in %" APR_INT64_T_FMT " files (%"
                     APR_INT64_T_FMT " bytes), sent once the backend takes writes; %"
                     APR_UINT64_T_FMT " more points were in files found bad "
                     "(dropped_spool)", dir, (apr_int64_t)atomic_load(&sh->points),
                     (apr_int64_t)atomic_load(&sh->files),
                     (apr_int64_t)atomic_load(&sh->bytes), bad.points);
    }
    return OK;
}
