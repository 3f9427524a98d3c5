/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * fixture.c: the recording sender, the engine and spool fixtures and the
 * summary tables the unit tests share (fixture.h).
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>

#include <apr_time.h>
#include <zlib.h>

#include "check.h"
#include "fixture.h"
#include "lp_parse.h"
#include "../test_names.h"

static uint32_t rng_state = 12345;

uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

void quiet_log(void *ctx, int level, const char *msg)
{
    (void)ctx;
    if (getenv("IMX_TEST_VERBOSE")) {
        fprintf(stderr, "[log %d] %s\n", level, msg);
    }
}

/* ------------------------------------------------------------------------- */
/* The recording sender                                                       */

static void record_body(recorder_t *rc, const char *body, size_t len, int count)
{
    const char *s = body, *end = body + len;
    int points = 0;

    while (s < end) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        parsed_t p;

        if (nl && !strncmp(s, "x_extra,", 8)) {
            if (count) {
                atomic_fetch_add(&rc->extra_lines, 1);
            }
            if (points) {
                atomic_fetch_add(&rc->extra_after_points, 1);
            }
            s = nl + 1;
            continue;
        }
        points = 1;

        if (!nl || !parse_line(token_1x, s, (size_t)(nl - s), &p) || p.nfields != 2
            || p.fval[0] < 0 || (uint64_t)p.fval[0] >= MAX_IDS) {
            atomic_fetch_add(&rc->bad, 1);
            return;
        }
        if (count) {
            if (atomic_fetch_add(&rc->seen[p.fval[0]], 1)) {
                atomic_fetch_add(&rc->dups, 1);
            }
            atomic_fetch_add(&rc->lines, 1);
        }
        else {
            rc->rejected_lines++;
        }
        s = nl + 1;
    }
}

imx_send_result_t rec_send(void *ctx, const char *body, size_t len, int gzipped,
                           apr_time_t deadline, imx_send_info_t *info)
{
    char *err = info->err;
    size_t errsz = sizeof(info->err);
    recorder_t *rc = ctx;
    uint64_t call = atomic_fetch_add(&rc->calls, 1);
    char *plain = NULL;

    if (rc->hang) {
        /* A blackholed backend: only the deadline or the limit ends it. */
        apr_time_t start = apr_time_now();
        while (apr_time_now() - start < apr_time_from_sec(10)) {
            apr_time_t lim = atomic_load(&rc->limit);
            if ((deadline && apr_time_now() >= deadline) || (lim && apr_time_now() >= lim)) {
                break;
            }
            apr_sleep(1000);
        }
        snprintf(err, errsz, "timed out");
        return IMX_SEND_RETRY;
    }
    if (call < 64) {
        rc->call_time[call] = apr_time_now();
    }
    if (rc->delay_us) {
        apr_sleep(rc->delay_us);
    }
    if ((int)call < rc->fail_first || rc->always_fail) {
        snprintf(err, errsz, "injected failure %d", (int)call);
        info->retry_after = rc->retry_after;
        info->maybe_stored = rc->maybe;
        return IMX_SEND_RETRY;
    }
    if (gzipped) {
        z_stream zs;
        size_t cap = len * 50 + 1024;
        memset(&zs, 0, sizeof(zs));
        plain = malloc(cap);
        inflateInit2(&zs, 15 + 16);
        zs.next_in = (unsigned char *)body;
        zs.avail_in = (uInt)len;
        zs.next_out = (unsigned char *)plain;
        zs.avail_out = (uInt)cap;
        CHECK(inflate(&zs, Z_FINISH) == Z_STREAM_END, "gzip body does not inflate");
        len = cap - zs.avail_out;
        inflateEnd(&zs);
        body = plain;
    }
    if ((int)call < rc->fail_first + rc->reject_first) {
        record_body(rc, body, len, 0);
        free(plain);
        snprintf(err, errsz, "injected rejection");
        return IMX_SEND_REJECT;
    }
    if (rc->max_lines) {
        uint32_t lines = 0;
        for (size_t i = 0; i < len; i++) {
            lines += body[i] == '\n';
        }
        if (lines > rc->max_lines) {
            free(plain);
            return IMX_SEND_TOO_LARGE;
        }
    }
    if (rc->partial_drop) {
        /* The backend stored all but the first partial_drop lines. */
        const char *s = body;
        for (uint32_t i = 0; i < rc->partial_drop; i++) {
            s = memchr(s, '\n', len - (size_t)(s - body)) + 1;
        }
        record_body(rc, s, len - (size_t)(s - body), 1);
        info->dropped = rc->partial_drop;
        rc->partial_drop = 0;
        free(plain);
        return IMX_SEND_PARTIAL;
    }
    record_body(rc, body, len, 1);
    free(plain);
    return IMX_SEND_OK;
}

void rec_limit(void *ctx, apr_time_t deadline)
{
    atomic_store(&((recorder_t *)ctx)->limit, deadline);
}

recorder_t *recorder_new(void)
{
    recorder_t *rc = calloc(1, sizeof(*rc));
    rc->seen = calloc(MAX_IDS, 1);
    return rc;
}

void recorder_free(recorder_t *rc)
{
    free((void *)rc->seen);
    free(rc);
}

/* ------------------------------------------------------------------------- */
/* The engine fixture                                                         */

static imx_names_t *test_reg;
static uint16_t test_server;
static const char *const test_methods[] = { "GET", "POST" };

imx_names_src_t engine_names(void)
{
    imx_names_src_t ns = { NULL, test_methods, 2, NULL };

    if (!test_reg) {
        test_reg = tn_new(1 << 16);
        test_server = tn_server(test_reg, ",vhost=test", ",dc=eu\\ west");
    }
    ns.reg = test_reg;
    return ns;
}

void fill_point(imx_point_t *pt, uint64_t id)
{
    engine_names();
    memset(pt, 0, sizeof(*pt));
    pt->ts_ns = 1700000000000000000LL + (int64_t)id;
    pt->duration_us = (int64_t)id;
    pt->bytes_sent = 13;
    pt->server = test_server;
    pt->status = 200;
}

size_t test_retry_buffer = 64 << 20;
imx_spool_t *test_spool;

void base_conf(imx_engine_conf_t *c, recorder_t *rc, uint32_t cap, uint32_t batch)
{
    memset(c, 0, sizeof(*c));
    c->line_prefix = "apache_request,host=test";
    c->capacity = cap;
    c->batch_size = batch;
    c->flush_interval = apr_time_from_msec(5);
    c->shutdown_timeout = apr_time_from_msec(300);
    c->retry_interval = apr_time_from_msec(5);
    c->retry_base = 2;
    c->retry_max_delay = apr_time_from_msec(20);
    c->retry_buffer = test_retry_buffer;
    c->send = rec_send;
    c->send_limit = rec_limit;
    c->send_ctx = rc;
    c->log = quiet_log;
    c->names = engine_names();
}

imx_engine_t *make_engine(apr_pool_t *p, recorder_t *rc, uint32_t cap,
                          uint32_t batch, int gzip)
{
    imx_engine_conf_t c;
    char err[128];
    imx_engine_t *e;

    base_conf(&c, rc, cap, batch);
    c.gzip = gzip;
    c.spool = test_spool;
    e = imx_engine_create(p, &c, err, sizeof(err));
    CHECK(e != NULL, "create: %s", err);
    return e;
}

void check_identity(imx_engine_t *e, uint64_t produced, const char *what)
{
    imx_stats_t st;

    imx_engine_stats(e, &st);
    CHECK(st.recorded + st.dropped_full == produced,
          "%s: recorded %llu + dropped_full %llu != produced %llu", what,
          (unsigned long long)st.recorded, (unsigned long long)st.dropped_full,
          (unsigned long long)produced);
    CHECK(st.recorded == st.sent + st.rejected + st.dropped_retry + st.dropped_exit
          + st.to_spool + st.buffered,
          "%s: recorded %llu != sent %llu + rejected %llu + dropped_retry %llu + "
          "dropped_exit %llu + to_spool %llu + buffered %llu",
          what, (unsigned long long)st.recorded, (unsigned long long)st.sent,
          (unsigned long long)st.rejected, (unsigned long long)st.dropped_retry,
          (unsigned long long)st.dropped_exit, (unsigned long long)st.to_spool,
          (unsigned long long)st.buffered);
}

void finish(imx_engine_t *e, apr_pool_t *p, recorder_t *rc, uint64_t produced,
            const char *what)
{
    imx_engine_stop(e);
    check_identity(e, produced, what);
    apr_pool_destroy(p);
    recorder_free(rc);
}

imx_engine_t *push_n(apr_pool_t **p, recorder_t *rc, uint32_t cap, uint32_t batch,
                     int n, size_t retry_buffer)
{
    imx_engine_t *e;
    imx_point_t pt;

    apr_pool_create(p, NULL);
    test_retry_buffer = retry_buffer ? retry_buffer : 64 << 20;
    e = make_engine(*p, rc, cap, batch, 0);
    test_retry_buffer = 64 << 20;
    for (int i = 0; i < n; i++) {
        fill_point(&pt, (uint64_t)i);
        CHECK(imx_engine_push(e, &pt, NULL), "push %d", i);
    }
    return e;
}

void push_ids(imx_engine_t *e, uint64_t first, int n)
{
    imx_point_t pt;

    for (int i = 0; i < n; i++) {
        fill_point(&pt, first + (uint64_t)i);
        CHECK(imx_engine_push(e, &pt, NULL), "push %llu", (unsigned long long)(first + (uint64_t)i));
    }
}

/* ------------------------------------------------------------------------- */
/* The spool fixture                                                          */

static void rm_tree(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;

    if (!d) {
        return;
    }
    while ((de = readdir(d))) {
        char path[512];
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) {
            continue;
        }
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        if (unlink(path) != 0) {
            rm_tree(path);
        }
    }
    closedir(d);
    rmdir(dir);
}

int count_names(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;

    while (d && (de = readdir(d))) {
        size_t l = strlen(de->d_name), sl = strlen(suffix);
        if (*suffix ? (l > sl && !strcmp(de->d_name + l - sl, suffix))
                    : (l > 6 && !strcmp(de->d_name + l - 6, ".spool"))) {
            n++;
        }
    }
    if (d) {
        closedir(d);
    }
    return n;
}

imx_spool_t *open_spool(apr_pool_t *p, const char *dir, imx_spool_shared_t *sh,
                        uint64_t max)
{
    imx_spool_conf_t sc;
    char err[256];
    imx_spool_t *sp;

    memset(&sc, 0, sizeof(sc));
    sc.dir = dir;
    sc.max_bytes = max;
    sc.shared = sh;
    sc.log = quiet_log;
    sp = imx_spool_open(p, &sc, err, sizeof(err));
    CHECK(sp != NULL, "spool open: %s", err);
    return sp;
}

unsigned char *make_file(const char *payload, uint32_t points, uint32_t extra,
                         size_t *size)
{
    imx_spool_hdr_t h;
    size_t len = strlen(payload);
    unsigned char *buf = malloc(IMX_SPOOL_HDR + len);

    memset(&h, 0, sizeof(h));
    h.points = points;
    h.extra = extra;
    h.len = len;
    h.created = 1700000000000000LL;
    imx_spool_encode_header(buf, &h, payload);
    memcpy(buf + IMX_SPOOL_HDR, payload, len);
    *size = IMX_SPOOL_HDR + len;
    return buf;
}

imx_spool_t *spool_fixture_open(spool_fixture_t *f, uint64_t max_bytes)
{
    memset(f, 0, sizeof(*f));
    strcpy(f->dir, "/tmp/imx-unit-spool-XXXXXX");
    CHECK(mkdtemp(f->dir) != NULL, "mkdtemp");
    f->sh = mmap(NULL, sizeof(*f->sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                 -1, 0);
    if (f->sh == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    return max_bytes ? spool_fixture_spool(f, max_bytes) : NULL;
}

imx_spool_t *spool_fixture_spool(spool_fixture_t *f, uint64_t max_bytes)
{
    if (f->p) {
        apr_pool_destroy(f->p);
    }
    apr_pool_create(&f->p, NULL);
    f->sp = open_spool(f->p, f->dir, f->sh, max_bytes);
    return f->sp;
}

void spool_fixture_close(spool_fixture_t *f)
{
    if (f->p) {
        apr_pool_destroy(f->p);
    }
    munmap(f->sh, sizeof(*f->sh));
    rm_tree(f->dir);
}

/* ------------------------------------------------------------------------- */
/* Summary tables                                                             */

imx_hist_table_t *new_table(uint32_t cap)
{
    imx_hist_table_t *t = aligned_alloc(IMX_HIST_PAGE, imx_hist_table_size(cap));

    imx_hist_init(t, cap);
    return t;
}

const char *key_tags(void *ctx, uint32_t key)
{
    static char buf[32];
    (void)ctx;
    snprintf(buf, sizeof(buf), ",k=%u", key);
    return buf;
}
