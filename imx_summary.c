/*
 * imx_summary.c: summaries and the capacity point (see imx_summary.h).
 *
 * Shared segment, created once per parent from its process pool (so it
 * outlives graceful restarts, like the counters in imx_status.c):
 *   header | retired table | previous sums | one table per child slot
 * "retired" holds what exited children recorded; "previous sums" is what the
 * last summary covered. Only the lock holder touches those two: the elected
 * writer, or a child folding its table into "retired" as it exits. The lock
 * word is the holder's pid, so a holder that died is noticed and replaced
 * instead of blocking everyone.
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"
#include "ap_mpm.h"
#include "scoreboard.h"

#include "apr_shm.h"
#include "apr_strings.h"

#include "imx_status.h"
#include "imx_summary.h"
#include "summary.h"

APLOG_USE_MODULE(influx_metrics);

typedef struct {
    _Atomic uint32_t lock_pid;
    _Atomic int64_t epoch;      /* last interval number written */
    uint32_t nslots;
    uint32_t nseries;           /* per child table */
    uint32_t gseries;           /* retired and previous tables */
    size_t child_size, global_size, hdr_size;
    apr_time_t last_write;      /* of the previous summaries (under the lock) */
} sum_shm_t;

static sum_shm_t *shm;
static const imx_summary_names_t *names;
static imx_hist_table_t *mine;
static apr_interval_time_t tick_interval;
static int summaries_on;
/* Writer-side scratch (per process, made on first use). */
static imx_hist_table_t *scratch;
static char *outbuf;
static size_t outcap;
static char sum_prefix[512];

#define USERDATA_KEY "imx_summary_shm"
#define ALIGN64(x) (((x) + 63) & ~(size_t)63)

static imx_hist_table_t *table_at(size_t off)
{
    return (imx_hist_table_t *)((char *)shm + off);
}

static imx_hist_table_t *retired(void)
{
    return table_at(shm->hdr_size);
}

static imx_hist_table_t *previous(void)
{
    return table_at(shm->hdr_size + shm->global_size);
}

static imx_hist_table_t *child_table(int slot)
{
    return table_at(shm->hdr_size + 2 * shm->global_size + (size_t)slot * shm->child_size);
}

apr_status_t imx_summary_init(server_rec *s, const imx_summary_names_t *nm,
                              int want_summary, uint32_t nseries,
                              apr_interval_time_t interval)
{
    uint32_t nslots = imx_shm_slots(), gseries = nseries * 4;
    size_t hdr = ALIGN64(sizeof(sum_shm_t));
    size_t csz = ALIGN64(imx_hist_table_size(nseries));
    size_t gsz = ALIGN64(imx_hist_table_size(gseries));
    int created;

    names = nm;
    snprintf(sum_prefix, sizeof(sum_prefix), "apache_summary,host=%s", nm->host);
    tick_interval = interval;
    summaries_on = want_summary;
    /* Sized when first made; a bigger InfluxMetricsSummarySeries needs a full
     * restart, like a bigger ServerLimit. Only the pages of tables in use are
     * ever touched: zeroed tables are empty tables. */
    shm = imx_shm_once(s, USERDATA_KEY, hdr + 2 * gsz + nslots * csz, &created);
    if (!shm) {
        return APR_ENOMEM;
    }
    if (created) {
        shm->nslots = nslots;
        shm->nseries = nseries;
        shm->gseries = gseries;
        shm->child_size = csz;
        shm->global_size = gsz;
        shm->hdr_size = hdr;
        retired()->nseries = gseries;
        previous()->nseries = gseries;
        for (uint32_t i = 0; i < nslots; i++) {
            child_table((int)i)->nseries = nseries;
        }
    }
    return APR_SUCCESS;
}

void imx_summary_child(int slot)
{
    if (!shm || slot < 0 || (uint32_t)slot >= shm->nslots || !shm->nseries) {
        return;
    }
    mine = child_table(slot);
    /* A crashed predecessor's counts in this slot are lost to summaries;
     * the counters page (imx_status.c) accounts for its points. */
    imx_hist_init(mine, shm->nseries);
}

void imx_summary_record(uint32_t key, uint64_t us, int error)
{
    if (mine) {
        imx_hist_record(mine, key, us, error);
    }
}

static int lock(void)
{
    uint32_t me = (uint32_t)getpid();

    for (int i = 0; i < 2000; i++) {
        uint32_t holder = 0;
        if (atomic_compare_exchange_strong(&shm->lock_pid, &holder, me)) {
            return 1;
        }
        if (kill((pid_t)holder, 0) != 0 && errno == ESRCH
            && atomic_compare_exchange_strong(&shm->lock_pid, &holder, me)) {
            return 1;           /* its holder died */
        }
        usleep(500);
    }
    return 0;
}

static void unlock(void)
{
    atomic_store(&shm->lock_pid, 0);
}

/* ",vhost=..,route=..,method=..,status_class=..<static tags>" for a key. */
static const char *key_tags(void *ctx, uint32_t key)
{
    static char buf[4096];
    uint32_t k = key - 1;
    int server = (int)((k >> 20) & 0x7ff), route = (int)((k >> 9) & 0x7ff);
    int method = (int)((k >> 3) & 0x3f), cls = (int)(k & 7);
    static const char *const classes[8] = {
        "other", "1xx", "2xx", "3xx", "4xx", "5xx", "other", "other"
    };

    (void)ctx;
    if (server >= names->nservers || method >= names->nmethods || route >= names->nroutes) {
        return NULL;            /* from an older configuration */
    }
    snprintf(buf, sizeof(buf), "%s%s%s,method=%s,status_class=%s%s",
             names->servers[server]->vhost,
             route ? ",route=" : "", route ? names->routes[route] : "",
             names->methods[method], classes[cls], names->servers[server]->tags);
    return buf;
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
    int slimit = 0, tlimit = 0, max_workers = 0, busy = 0, idle = 0, nproc = 0;
    double user_s, sys_s;
    uint64_t rss;
    char extra[160] = "";
    int xl = 0;

    ap_mpm_query(AP_MPMQ_HARD_LIMIT_DAEMONS, &slimit);
    ap_mpm_query(AP_MPMQ_HARD_LIMIT_THREADS, &tlimit);
    if (ap_mpm_query(AP_MPMQ_MAX_DAEMONS, &max_workers) == APR_SUCCESS) {
        int threads = 1;
        ap_mpm_query(AP_MPMQ_MAX_THREADS, &threads);
        max_workers *= threads > 0 ? threads : 1;
    }
    for (int i = 0; i < slimit; i++) {
        for (int j = 0; j < tlimit; j++) {
            int st = ap_get_scoreboard_worker_from_indexes(i, j)->status;
            if (st == SERVER_READY) {
                idle++;
            }
            else if (st != SERVER_DEAD && st != SERVER_STARTING && st != SERVER_IDLE_KILL) {
                busy++;
            }
        }
    }
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
        names->host, busy, idle, max_workers,
        max_workers > 0 ? (double)busy / max_workers : 0.0, busy, nproc, user_s, sys_s,
        rss, extra, ts_ns);
}

void imx_summary_tick(void *ctx, imx_engine_t *e, int final)
{
    apr_time_t now = apr_time_now();
    int64_t epoch = (int64_t)(now / (tick_interval > 0 ? tick_interval : 1));
    int64_t last;
    size_t len = 0, need;
    long long busy_us = -1, elapsed_us = -1;
    uint32_t lines = 0;

    (void)ctx;
    if (!shm) {
        return;
    }
    /* One writer per interval; an exiting child always writes, so what it
     * recorded is summarised before it goes. */
    last = atomic_load(&shm->epoch);
    if (!final && (last >= epoch || !atomic_compare_exchange_strong(&shm->epoch, &last, epoch))) {
        return;
    }
    if (!lock()) {
        return;
    }
    need = 4096 + (summaries_on && shm->nseries
                   ? (size_t)shm->gseries * (1024 + IMX_HIST_BUCKETS / 4 * 24) : 0);
    if (outcap < need) {
        free(outbuf);
        outbuf = malloc(need);
        outcap = outbuf ? need : 0;
    }
    if (summaries_on && shm->nseries) {
        if (final && mine) {
            imx_hist_add(retired(), mine);
            imx_hist_init(mine, shm->nseries);
            mine = NULL;
        }
        if (!scratch) {
            scratch = malloc(imx_hist_table_size(shm->gseries));
        }
        if (scratch && outbuf) {
            imx_hist_init(scratch, shm->gseries);
            imx_hist_add(scratch, retired());
            for (uint32_t i = 0; i < shm->nslots; i++) {
                imx_hist_table_t *t = child_table((int)i);
                if (t->nseries) {
                    imx_hist_add(scratch, t);
                }
            }
            busy_us = (long long)imx_hist_delta_sum(scratch, previous());
            elapsed_us = shm->last_write ? (long long)(now - shm->last_write) : -1;
            shm->last_write = now;
            len = imx_hist_encode(outbuf, outcap - 4096, sum_prefix, scratch, previous(),
                                  key_tags, NULL, now * 1000, &lines);
        }
    }
    unlock();
    if (!outbuf) {
        return;
    }
    if (!final) {
        /* Its own timestamp: the process series has one point per interval. */
        len += encode_process(outbuf + len, outcap - len, now * 1000 + 1,
                              summaries_on && scratch ? (long long)atomic_load(&scratch->overflow)
                                                      : -1, busy_us, elapsed_us);
        lines++;
    }
    imx_engine_submit(e, outbuf, len, lines);
}
