/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * Unit tests of the spool directory (imx_spool.c, imx_spool_recount.c): bad
 * files moved aside and counted, the startup recount, the size bound, and
 * several processes claiming the same files at once.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <apr_general.h>
#include <apr_pools.h>

#include "imx_spool.h"

#include "check.h"
#include "fixture.h"

static void write_raw(const char *dir, const char *name, const void *data, size_t len)
{
    char path[512];
    int fd;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0 && write(fd, data, len) == (ssize_t)len, "write %s", path);
    if (fd >= 0) {
        close(fd);
    }
}

/* Files on disk: each truncation of a valid file, a corrupt one, a foreign
 * one, a directory and a FIFO under spool names are moved aside (never
 * claimed, never crash, never block), and the one valid file is claimed. */
static void test_spool_bad_files(void)
{
    spool_fixture_t fx;
    imx_spool_file_t f;
    imx_spool_drop_t bad = { 0, 0 };
    imx_spool_t *sp;
    size_t size;
    unsigned char *file = make_file("m a=1i 1\nm a=2i 2\n", 2, 0, &size);
    char name[64], path[512];
    int claimed = 0, nbad;

    spool_fixture_open(&fx, 0);
    for (size_t len = 0; len < size; len++) {
        snprintf(name, sizeof(name), "imx-%016zx-00000001-00000000.spool", len);
        write_raw(fx.dir, name, file, len);
    }
    file[size - 3] ^= 1;            /* payload: CRC */
    write_raw(fx.dir, "imx-1000000000000000-00000001-00000000.spool", file, size);
    write_raw(fx.dir, "imx-1000000000000001-00000001-00000000.spool", "GIF89a\0\0", 8);
    snprintf(path, sizeof(path), "%s/imx-1000000000000002-00000001-00000000.spool", fx.dir);
    CHECK(mkdir(path, 0700) == 0, "mkdir");
    snprintf(path, sizeof(path), "%s/imx-1000000000000003-00000001-00000000.spool", fx.dir);
    CHECK(mkfifo(path, 0600) == 0, "mkfifo");
    write_raw(fx.dir, "not-a-spool-file", "x", 1);
    file[size - 3] ^= 1;
    write_raw(fx.dir, "imx-2000000000000000-00000001-00000000.spool", file, size);
    nbad = (int)size + 4;
    sp = spool_fixture_spool(&fx, 1 << 20);
    for (int round = 0; round < 100; round++) {
        if (!imx_spool_claim(sp, &f, &bad)) {
            break;
        }
        claimed++;
        CHECK(!strcmp(f.name, "imx-2000000000000000-00000001-00000000.spool")
              && f.h.points == 2 && f.h.len == size - IMX_SPOOL_HDR, "claimed %s", f.name);
        imx_spool_done(sp, &f);
    }
    CHECK(claimed == 1, "claimed %d files", claimed);
    CHECK(atomic_load(&fx.sh->bad_files) == (uint64_t)nbad, "bad_files %llu, want %d",
          (unsigned long long)atomic_load(&fx.sh->bad_files), nbad);
    CHECK(count_names(fx.dir, ".bad") == nbad && count_names(fx.dir, "") == 0,
          "%d .bad files, %d spool files left", count_names(fx.dir, ".bad"),
          count_names(fx.dir, ""));
    /* Truncated payloads whose header was whole, and the corrupt one, say
     * how many points they held. */
    CHECK(bad.points == 2 * (size - IMX_SPOOL_HDR) + 2, "bad points %llu",
          (unsigned long long)bad.points);
    spool_fixture_close(&fx);
    free(file);
}

/* A writer killed mid-write leaves a temporary file; a bad header is moved
 * aside; the gauges come from the valid files. */
static void test_spool_recount(void)
{
    spool_fixture_t fx;
    imx_spool_shared_t sh2;
    imx_spool_drop_t ev = { 0, 0 };
    imx_spool_t *sp = spool_fixture_open(&fx, 1 << 20);
    char err[256];

    CHECK(imx_spool_write(sp, "m a=1i 1\nm a=2i 2\n", 18, 2, 0, 0, 0, &ev, err,
                          sizeof(err)) == 0, "write: %s", err);
    CHECK(imx_spool_write(sp, "s a=1i 1\nm a=2i 2\nm a=3i 3\n", 27, 2, 1, 0, 0, &ev, err,
                          sizeof(err)) == 0, "write: %s", err);
    write_raw(fx.dir, ".imx-1000000000000000-00000001-00000000.spool.tmp", "IMXSPO", 6);
    write_raw(fx.dir, "imx-1000000000000001-00000001-00000000.spool", "IMXSPOOLxxxx", 12);
    CHECK(atomic_load(&fx.sh->points) == 4 && atomic_load(&fx.sh->files) == 2,
          "gauges after writing: %lld points %lld files",
          (long long)atomic_load(&fx.sh->points), (long long)atomic_load(&fx.sh->files));
    memset(&sh2, 0, sizeof(sh2));
    CHECK(imx_spool_recount(fx.dir, geteuid(), &sh2, &ev, quiet_log, NULL) == 0, "recount");
    /* The bad file (12 bytes) still takes room. */
    CHECK(atomic_load(&sh2.points) == 4 && atomic_load(&sh2.files) == 2
          && atomic_load(&sh2.bytes) == atomic_load(&fx.sh->bytes) + 12
          && atomic_load(&sh2.bad_files) == 1,
          "recount: %lld points %lld files %lld bytes (want %lld + 12), %llu bad",
          (long long)atomic_load(&sh2.points), (long long)atomic_load(&sh2.files),
          (long long)atomic_load(&sh2.bytes), (long long)atomic_load(&fx.sh->bytes),
          (unsigned long long)atomic_load(&sh2.bad_files));
    CHECK(count_names(fx.dir, ".tmp") == 0 && count_names(fx.dir, ".bad") == 1,
          "tmp %d bad %d", count_names(fx.dir, ".tmp"), count_names(fx.dir, ".bad"));
    spool_fixture_close(&fx);
}

/* InfluxMetricsSpoolSize: the oldest files make room, counted; the newest
 * stay; a file larger than the spool is refused. */
static void test_spool_bound(void)
{
    spool_fixture_t fx;
    imx_spool_drop_t ev = { 0, 0 };
    imx_spool_file_t f;
    imx_spool_t *sp;
    char err[256], line[64];
    uint64_t max = 3 * (IMX_SPOOL_HDR + 20) + 10;
    int first = -1, kept = 0;

    sp = spool_fixture_open(&fx, max);
    for (int i = 0; i < 10; i++) {
        snprintf(line, sizeof(line), "m a=%05di %010d\n", i, i);    /* 20 bytes */
        CHECK(imx_spool_write(sp, line, strlen(line), 1, 0, i == 0, 0, &ev, err,
                              sizeof(err)) == 0, "write %d: %s", i, err);
        CHECK((uint64_t)atomic_load(&fx.sh->bytes) <= max, "bytes %lld over %llu",
              (long long)atomic_load(&fx.sh->bytes), (unsigned long long)max);
    }
    CHECK(ev.points == 7 && ev.maybe == 1 && atomic_load(&fx.sh->points) == 3
          && count_names(fx.dir, "") == 3, "evicted %llu (maybe %llu), left %lld",
          (unsigned long long)ev.points, (unsigned long long)ev.maybe,
          (long long)atomic_load(&fx.sh->points));
    memset(&ev, 0, sizeof(ev));
    while (imx_spool_claim(sp, &f, &ev)) {
        int id = atoi(strchr(f.data, '=') + 1);
        if (first < 0) {
            first = id;
        }
        kept++;
        imx_spool_done(sp, &f);
    }
    CHECK(first == 7 && kept == 3, "kept %d from id %d", kept, first);
    CHECK(atomic_load(&fx.sh->bytes) == 0 && atomic_load(&fx.sh->points) == 0,
          "gauges not back to 0");
    {
        char big[400];
        memset(big, 'x', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\n';
        CHECK(imx_spool_write(sp, big, sizeof(big), 1, 0, 0, 0, &ev, err, sizeof(err))
              == EFBIG && atomic_load(&fx.sh->bytes) == 0, "a file larger than the spool");
    }
    spool_fixture_close(&fx);
}

/* A file moved aside as bad still takes room: it counts in the spool's
 * bytes (at the start's recount too), and is the first deleted for room. */
static void test_spool_bad_counts_and_goes_first(void)
{
    spool_fixture_t fx;
    imx_spool_drop_t ev = { 0, 0 };
    imx_spool_t *sp;
    char path[256], err[256], line[64], junk[100];
    uint64_t max = 3 * (IMX_SPOOL_HDR + 20) + 10;
    FILE *fp;

    spool_fixture_open(&fx, 0);
    memset(junk, 'j', sizeof(junk));
    snprintf(path, sizeof(path), "%s/imx-0000000000000001-00000001-00000001.spool.bad",
             fx.dir);
    fp = fopen(path, "w");
    CHECK(fp && fwrite(junk, 1, sizeof(junk), fp) == sizeof(junk), "write %s", path);
    fclose(fp);
    CHECK(imx_spool_recount(fx.dir, getuid(), fx.sh, &ev, NULL, NULL) == 0, "recount");
    CHECK(atomic_load(&fx.sh->bytes) == (int64_t)sizeof(junk) && atomic_load(&fx.sh->files) == 0,
          "bytes %lld files %lld", (long long)atomic_load(&fx.sh->bytes),
          (long long)atomic_load(&fx.sh->files));
    sp = spool_fixture_spool(&fx, max);
    for (int i = 0; i < 3; i++) {
        snprintf(line, sizeof(line), "m a=%05di %010d\n", i, i);    /* 20 bytes */
        CHECK(imx_spool_write(sp, line, strlen(line), 1, 0, 0, 0, &ev, err, sizeof(err)) == 0,
              "write %d: %s", i, err);
    }
    /* 100 + 3 files > max: the bad file went, no good one did. */
    CHECK(access(path, F_OK) != 0 && ev.points == 0 && atomic_load(&fx.sh->points) == 3
          && atomic_load(&fx.sh->bytes) == (int64_t)(3 * (IMX_SPOOL_HDR + strlen(line))),
          "bad file %s, evicted %llu, points %lld, bytes %lld",
          access(path, F_OK) ? "gone" : "kept", (unsigned long long)ev.points,
          (long long)atomic_load(&fx.sh->points), (long long)atomic_load(&fx.sh->bytes));
    spool_fixture_close(&fx);
}

/* Several processes claim the same files at once, and one dies holding one:
 * every file is sent by exactly one, and deleted once. */
static void test_spool_claim_race(void)
{
    enum { NFILES = 300, NPROC = 4 };
    spool_fixture_t fx;
    _Atomic int *sent = mmap(NULL, NFILES * sizeof(*sent), PROT_READ | PROT_WRITE,
                             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    imx_spool_drop_t ev = { 0, 0 };
    imx_spool_t *sp;
    char err[256], line[64];
    pid_t pids[NPROC + 1];
    int dup = 0, missing = 0, status;

    sp = spool_fixture_open(&fx, 1 << 30);
    for (int i = 0; i < NFILES; i++) {
        snprintf(line, sizeof(line), "m a=%di %d\n", i, i);
        CHECK(imx_spool_write(sp, line, strlen(line), 1, 0, 0, 0, &ev, err, sizeof(err)) == 0,
              "write: %s", err);
    }
    /* The crash: claims the oldest file and dies holding it. */
    if ((pids[NPROC] = fork()) == 0) {
        apr_pool_t *cp;
        imx_spool_file_t f;
        apr_pool_create(&cp, NULL);
        sp = open_spool(cp, fx.dir, fx.sh, 1 << 30);
        _exit(imx_spool_claim(sp, &f, &ev) ? 0 : 1);
    }
    waitpid(pids[NPROC], &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the crashing claimer claimed nothing");
    for (int k = 0; k < NPROC; k++) {
        if ((pids[k] = fork()) == 0) {
            apr_pool_t *cp;
            imx_spool_file_t f;
            unsigned seed = (unsigned)getpid();
            apr_pool_create(&cp, NULL);
            sp = open_spool(cp, fx.dir, fx.sh, 1 << 30);
            for (int idle = 0; idle < 3; ) {
                if (!imx_spool_claim(sp, &f, &ev)) {
                    idle++;
                    usleep(1000);
                    continue;
                }
                idle = 0;
                atomic_fetch_add(&sent[atoi(strchr(f.data, '=') + 1)], 1);
                if (rand_r(&seed) % 4 == 0) {
                    usleep(rand_r(&seed) % 200);    /* hold it a while */
                }
                imx_spool_done(sp, &f);
            }
            _exit(0);
        }
    }
    for (int k = 0; k < NPROC; k++) {
        waitpid(pids[k], &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "claimer %d failed", k);
    }
    for (int i = 0; i < NFILES; i++) {
        dup += atomic_load(&sent[i]) > 1;
        missing += atomic_load(&sent[i]) == 0;
    }
    CHECK(dup == 0 && missing == 0, "%d files sent twice, %d never", dup, missing);
    CHECK(count_names(fx.dir, "") == 0 && atomic_load(&fx.sh->points) == 0
          && atomic_load(&fx.sh->files) == 0 && atomic_load(&fx.sh->bytes) == 0,
          "left: %d files, gauges %lld/%lld/%lld", count_names(fx.dir, ""),
          (long long)atomic_load(&fx.sh->points), (long long)atomic_load(&fx.sh->files),
          (long long)atomic_load(&fx.sh->bytes));
    munmap((void *)sent, NFILES * sizeof(*sent));
    spool_fixture_close(&fx);
}

int main(void)
{
    apr_initialize();
    test_spool_bad_files();
    test_spool_recount();
    test_spool_bound();
    test_spool_bad_counts_and_goes_first();
    test_spool_claim_race();
    apr_terminate();
    return check_report();
}
