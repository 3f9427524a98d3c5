/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * mod_influx_metrics_summary.c: summaries and the capacity point (see
 * mod_influx_metrics_summary.h).
 *
 * Shared segment, created once per parent from its process pool (so it
 * outlives graceful restarts, like the counters in
 * mod_influx_metrics_status.c):
 *   header (lock, election, owner of each slot's table) | pending table |
 *   one table per child slot
 * each part page aligned. Children record into their slot's table. The
 * elected writer, holding the lock, drains every claimed table into
 * "pending" and writes pending out; a new child, holding the lock, drains
 * the table of its slot's previous owner into pending before it starts
 * afresh. A child's table stays in place when the child exits or crashes,
 * and is drained every interval like a live one until its slot is claimed
 * again: what it recorded is never lost, including what threads still log
 * after the child's exit cleanup (mod_http2's workers can), and the counts
 * of a child that crashed.
 *
 * The lock is a robust mutex (imx_shmlock.h): a holder that dies releases it,
 * and the next holder repairs what it may have left half done.
 *
 * Memory: readers walk only the claimed series of claimed tables (see
 * imx_hist.h), so what is resident follows the series in use, not the size
 * of the segment.
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"
#include "ap_mpm.h"
#include "scoreboard.h"

#include "apr_shm.h"
#include "apr_strings.h"

#include "imx_hist.h"
#include "mod_influx_metrics_capacity.h"
#include "mod_influx_metrics_names.h"
#include "mod_influx_metrics_shm.h"
#include "mod_influx_metrics_status.h"
#include "mod_influx_metrics_summary.h"
#include "imx_shmlock.h"

APLOG_USE_MODULE(influx_metrics);

typedef struct {
    imx_shmlock_t lock;
    int ready;                  /* the lock could be made */
    /* Start, in microseconds, of the last interval a summary was written
     * for. A time, not an interval number: it means the same to every
     * generation, whatever InfluxMetricsFlushInterval each one has. */
    _Atomic int64_t last_start;
    uint32_t nslots, nseries, gseries;
    uint32_t rotate;            /* under the lock: the slot drained first */
    size_t child_size, pending_size, hdr_size;
    apr_time_t last_write;      /* under the lock: of the previous summaries */
    int64_t last_ts;            /* under the lock: the last timestamp written
                                 * (ns); the next is later, so that two
                                 * writers (an exiting child and the elected
                                 * one) never write one series at one time */
    uint64_t overflow;          /* under the lock: requests not summarised */
    /* Per slot: pid of the child that last claimed its table, 0 if none
     * ever did (then it is never read). Dense, so that the writer finds
     * the tables in use without touching the others. */
    _Atomic uint32_t owner[];
} sum_shm_t;

static sum_shm_t *shm;
static const imx_summary_names_t *names;
/* Set once in child_init, before any request; never cleared (see above). */
static imx_hist_table_t *_Atomic mine;
static apr_interval_time_t tick_interval;
static int summaries_on;
static server_rec *log_server;
static char *sum_prefix;
/* The writer's output and tag text, grown to what is in use. */
static imx_hist_out_t out;
static char *tagbuf;
static size_t tagcap;

#define USERDATA_KEY "imx_summary_shm"
#define PAGE_ALIGN(x) (((x) + IMX_HIST_PAGE - 1) & ~(size_t)(IMX_HIST_PAGE - 1))

/* ",vhost=..,route=..,method=..,status_class=..<static tags>" for a key,
 * whichever generation recorded it. Never cut short: InfluxDB refuses a
 * whole batch for one line cut in the middle of an escape. */
static const char *key_tags(void *ctx, uint32_t key)
{
    static const char *const classes[8] = {
        "other", "1xx", "2xx", "3xx", "4xx", "5xx", "other", "other"
    };
    uint32_t k = key - 1, server = (k >> 20) & 0x7ff, route = (k >> 9) & 0x7ff;
    uint32_t method = (k >> 3) & 0x3f;
    const char *sv, *rt = "", *m;
    size_t slen, ssplit, rlen = 0, rsplit, mlen, need;
    char *w;

    (void)ctx;
    if (!(sv = imx_names_get(imx_reg(), IMX_NAMES_SERVER, server, &slen, &ssplit))
        && !(sv = imx_names_get(imx_reg(), IMX_NAMES_SERVER, IMX_SERVER_OTHER, &slen,
                                &ssplit))) {
        return NULL;
    }
    if (route && !(rt = imx_names_get(imx_reg(), IMX_NAMES_ROUTE, route, &rlen, &rsplit))
        && !(rt = imx_names_get(imx_reg(), IMX_NAMES_ROUTE, IMX_ROUTE_OTHER, &rlen, &rsplit))) {
        return NULL;
    }
    m = (int)method < names->nmethods && names->methods[method] ? names->methods[method]
                                                                  : "OTHER";
    mlen = strlen(m);
    need = slen + rlen + mlen + 64;
    if (need > tagcap) {
        char *nb = realloc(tagbuf, need * 2);
        if (!nb) {
            return NULL;
        }
        tagbuf = nb;
        tagcap = need * 2;
    }
    w = tagbuf;
    memcpy(w, sv, ssplit);
    w += ssplit;
    memcpy(w, rt, rlen);
    w += rlen;
    memcpy(w, ",method=", 8);
    w += 8;
    memcpy(w, m, mlen);
    w += mlen;
    w += sprintf(w, ",status_class=%s", classes[k & 7]);
    memcpy(w, sv + ssplit, slen - ssplit);
    w[slen - ssplit] = '\0';
    return tagbuf;
}

/* ------------------------------------------------------------------------- */
/* The segment                                                                */

static imx_hist_table_t *pending(void)
{
    return (imx_hist_table_t *)((char *)shm + shm->hdr_size);
}

static imx_hist_table_t *child_table(uint32_t slot)
{
    return (imx_hist_table_t *)((char *)shm + shm->hdr_size + shm->pending_size
                                + (size_t)slot * shm->child_size);
}

apr_status_t imx_summary_init(server_rec *s, const imx_summary_names_t *nm,
                              int want_summary, uint32_t nseries,
                              apr_interval_time_t interval)
{
    uint32_t nslots = imx_shm_slots(), gseries = nseries * 4;
    size_t hdr = PAGE_ALIGN(sizeof(sum_shm_t) + nslots * sizeof(uint32_t));
    size_t csz = PAGE_ALIGN(imx_hist_table_size(nseries));
    size_t psz = PAGE_ALIGN(imx_hist_table_size(gseries));
    int created;

    names = nm;
    free(sum_prefix);
    sum_prefix = malloc(strlen(nm->host) + 32);
    if (!sum_prefix) {
        return APR_ENOMEM;
    }
    sprintf(sum_prefix, "apache_summary,host=%s", nm->host);
    tick_interval = interval;
    summaries_on = want_summary;
    log_server = s;
    imx_reg_report(s);
    if (!imx_reg_open(s)) {
        return APR_ENOMEM;
    }
    /* Sized when first made; a bigger InfluxMetricsSummarySeries needs a full
     * restart, like a bigger ServerLimit. */
    shm = imx_shm_reserve_once(s, USERDATA_KEY, hdr + psz + nslots * csz, &created);
    if (!shm) {
        return APR_ENOMEM;
    }
    if (created) {
        shm->nslots = nslots;
        shm->nseries = nseries;
        shm->gseries = gseries;
        shm->child_size = csz;
        shm->pending_size = psz;
        shm->hdr_size = hdr;
        imx_hist_init(pending(), gseries);
        shm->ready = imx_shmlock_init(&shm->lock) == 0;
    }
    if (!shm->ready) {
        shm = NULL;
        return APR_EGENERAL;
    }
    return APR_SUCCESS;
}

/* The lock, waiting at most a second (a holder works for milliseconds; one
 * that is stopped must not stall this thread for good). */
static int lock_summary(void)
{
    for (int i = 0; i < 200; i++) {
        int rv = imx_shmlock_trylock(&shm->lock);
        if (rv != EBUSY) {
            return rv;
        }
        usleep(5000);
    }
    return EBUSY;
}

/* The lock was held by a process that died. Child tables are whole (each
 * counter moves with one exchange); pending may have a key claimed twice
 * or half entered: rebuild its index. What the dead process held in its
 * own memory, at most one interval's summaries, is lost. */
static void recovered(void)
{
    imx_hist_repair(pending());
    ap_log_error(APLOG_MARK, APLOG_WARNING, 0, log_server, "IMX0021: a process died "
                 "holding the summary lock; recovered, the summaries of one interval "
                 "may be incomplete");
}

static int alive(uint32_t pid)
{
    /* Wrong only towards "alive" (a reused pid), which costs capacity, not
     * counts: see imx_summary_child. */
    return pid != (uint32_t)getpid() && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

void imx_summary_child(int slot)
{
    imx_hist_table_t *t;
    uint32_t prev, left = 0;
    int rv;

    if (!shm || slot < 0 || (uint32_t)slot >= shm->nslots || !shm->nseries) {
        return;
    }
    t = child_table((uint32_t)slot);
    rv = lock_summary();
    if (rv != 0 && rv != IMX_SHMLOCK_RECOVERED) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, rv, log_server, "IMX0022: cannot take "
                     "the summary lock; this child's requests are left out of summaries");
        return;
    }
    if (rv == IMX_SHMLOCK_RECOVERED) {
        recovered();
    }
    /* The previous owner's table was left in place (see the top of this
     * file): its counts go to pending before the table starts afresh. A
     * status slot is only free once its owner is gone, but should that
     * process still run (it gave its slot back, or its pid answers for
     * another), its series stay, so that whatever it still records keeps
     * its labels. */
    prev = atomic_load(&shm->owner[slot]);
    if (prev) {
        left = imx_hist_drain(pending(), t);
    }
    if (!prev || (!left && !alive(prev))) {
        imx_hist_init(t, shm->nseries);
    }
    atomic_store(&shm->owner[slot], (uint32_t)getpid());
    imx_shmlock_unlock(&shm->lock);
    atomic_store(&mine, t);
}

void imx_summary_record(uint32_t key, uint64_t us, int error, const imx_summary_extra_t *x)
{
    imx_hist_table_t *t = atomic_load_explicit(&mine, memory_order_relaxed);

    if (!t) {
        return;
    }
    if (x) {
        imx_hist_extra_t hx = { x->slo_us, x->rid_len ? x->rid : NULL, x->rid_len };

        imx_hist_record(t, key, us, error, &hx);
        if (x->ttfb_us) {
            imx_hist_record(t, key | IMX_HIST_TTFB, x->ttfb_us, 0, NULL);
        }
        return;
    }
    imx_hist_record(t, key, us, error, NULL);
}

/* A later interval than the last one written, on this generation's grid;
 * or a last one in the future: the clock was set back. Any change of the
 * interval, either way, can only delay the next election by one interval. */
static int elect(apr_time_t now)
{
    apr_interval_time_t iv = tick_interval > 0 ? tick_interval : 1;
    int64_t start = now - now % iv, last = atomic_load(&shm->last_start);

    if (start <= last && last <= now) {
        return 0;
    }
    return atomic_compare_exchange_strong(&shm->last_start, &last, start);
}

/* Sums of the live children's processes (and the parent) from /proc. */
static void proc_usage(double *user_s, double *sys_s, uint64_t *rss, int *nproc)
{
    long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    int limit = 0;
    unsigned long long ut = 0, st = 0, pages = 0;

    if (ap_mpm_query(AP_MPMQ_HARD_LIMIT_DAEMONS, &limit) != APR_SUCCESS) {
        limit = 0;
    }
    *nproc = 0;
    for (int i = -1; i < limit; i++) {
        pid_t pid = i < 0 ? getppid() : ap_get_scoreboard_process(i)->pid;
        char path[64], buf[1024];
        FILE *f;

        if (pid <= 0) {
            continue;
        }
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        if ((f = fopen(path, "r"))) {
            if (fgets(buf, sizeof(buf), f)) {
                char *p = strrchr(buf, ')');    /* comm may hold spaces */
                unsigned long long u, s;
                if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                                &u, &s) == 2) {
                    ut += u;
                    st += s;
                    (*nproc)++;
                }
            }
            fclose(f);
        }
        snprintf(path, sizeof(path), "/proc/%d/statm", (int)pid);
        if ((f = fopen(path, "r"))) {
            unsigned long long sz, res;
            if (fscanf(f, "%llu %llu", &sz, &res) == 2) {
                pages += res;
            }
            fclose(f);
        }
    }
    *user_s = tck > 0 ? (double)ut / (double)tck : 0;
    *sys_s = tck > 0 ? (double)st / (double)tck : 0;
    *rss = pages * (unsigned long long)page;
}

/* busy_us: request time completed over the last elapsed_us (summary mode),
 * or -1: then utilisation is only the sampled share of busy workers. */
static size_t encode_process(char *out, size_t cap, int64_t ts_ns, long long overflow,
                             long long busy_us, long long elapsed_us)
{
    imx_workers_t w;
    int nproc = 0, max_workers, busy;
    double user_s, sys_s;
    uint64_t rss;
    char extra[160] = "";
    int xl = 0;

    imx_capacity_workers(&w);
    max_workers = w.max;
    busy = w.busy;
    proc_usage(&user_s, &sys_s, &rss, &nproc);

    if (overflow >= 0) {
        /* Requests summaries could not place: a child's table was full. */
        xl = snprintf(extra, sizeof(extra), ",summary_overflow=%lldi", overflow);
    }
    if (busy_us >= 0 && elapsed_us > 0 && xl >= 0 && (size_t)xl < sizeof(extra)) {
        /* Busy worker-seconds over available worker-seconds in the interval
         * (requests completed in it, whole durations). */
        snprintf(extra + xl, sizeof(extra) - (size_t)xl,
                 ",busy_seconds=%.3f,utilization_time=%.4f", (double)busy_us / 1e6,
                 max_workers > 0 ? (double)busy_us / ((double)elapsed_us * max_workers) : 0.0);
    }
    return (size_t)snprintf(out, cap,
        "apache_process,host=%s busy_workers=%di,idle_workers=%di,max_workers=%di,"
        "utilization=%.4f,requests_in_flight=%di,processes=%di,cpu_user_seconds=%.2f,"
        "cpu_system_seconds=%.2f,rss_bytes=%" APR_UINT64_T_FMT "i%s %" APR_INT64_T_FMT "\n",
        names->host, busy, w.idle, max_workers,
        max_workers > 0 ? (double)busy / max_workers : 0.0, busy, nproc, user_s, sys_s,
        rss, extra, ts_ns);
}

void imx_summary_tick(void *ctx, imx_engine_t *e, int final)
{
    apr_time_t now = apr_time_now();
    long long busy_us = -1, elapsed_us = -1, overflow = -1;
    int64_t ts;
    uint32_t lines = 0;
    int rv;

    (void)ctx;
    if (!shm) {
        return;
    }
    /* One writer per interval; an exiting child always writes, so that
     * nothing recorded is left unwritten when httpd stops. */
    if (!final && !elect(now)) {
        return;
    }
    rv = lock_summary();
    if (rv != 0 && rv != IMX_SHMLOCK_RECOVERED) {
        return;
    }
    if (rv == IMX_SHMLOCK_RECOVERED) {
        recovered();
    }
    /* The time under the lock (taking it may have waited), strictly after
     * the last one written: InfluxDB keeps one point per series and time. */
    now = apr_time_now();
    ts = now * 1000 > shm->last_ts ? now * 1000 : shm->last_ts + 2;
    shm->last_ts = ts + 1;      /* ts + 1: the process point's */
    out.len = 0;
    if (summaries_on && shm->nseries) {
        imx_hist_table_t *p = pending();
        uint32_t first = shm->rotate++ % shm->nslots;
        uint64_t busy = 0;

        /* From a different slot each time: when pending is full, the rest
         * waits in its tables, and no slot always comes last. */
        for (uint32_t k = 0; k < shm->nslots; k++) {
            uint32_t i = (first + k) % shm->nslots;
            if (atomic_load(&shm->owner[i])) {
                imx_hist_drain(p, child_table(i));
            }
        }
        shm->overflow += atomic_exchange(&p->overflow, 0);
        lines = imx_hist_encode(&out, sum_prefix, p, key_tags, NULL, ts, &busy);
        busy_us = (long long)busy;
        elapsed_us = shm->last_write ? (long long)(now - shm->last_write) : -1;
        shm->last_write = now;
        overflow = (long long)shm->overflow;
    }
    imx_shmlock_unlock(&shm->lock);
    if (!final && imx_hist_reserve(&out, 1024 + strlen(names->host))) {
        /* Its own timestamp: the process series has one point per interval. */
        size_t n = encode_process(out.buf + out.len, out.cap - out.len, ts + 1,
                                  overflow, busy_us, elapsed_us);
        if (n < out.cap - out.len) {
            out.len += n;
            lines++;
        }
    }
    if (out.len) {
        imx_engine_submit(e, out.buf, out.len, lines);
    }
}
