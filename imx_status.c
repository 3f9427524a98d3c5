/*
 * imx_status.c: counters in shared memory and the status pages.
 *
 * Layout: a header with the totals of children that have exited, then one
 * slot per child. A child claims a slot with a CAS on its pid field and is
 * the only writer of it; its flusher copies the engine's counters in under a
 * sequence lock (odd while writing), so readers (the status handler, in any
 * child) retry instead of reading a torn snapshot and writers never wait.
 * The segment is anonymous shared memory created once, in the parent, from
 * its process pool: children of every generation inherit the same one, so
 * totals survive graceful restarts and child recycling.
 *
 * A child that dies without releasing its slot (SIGKILL, a crash in another
 * module) is noticed by the next child that claims a slot: its last counters
 * are folded into the totals, and the points it still held are counted as
 * lost_in_crash, so the sums stay honest.
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <unistd.h>

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "ap_mpm.h"
#include "mod_status.h"

#include "apr_shm.h"
#include "apr_strings.h"
#include "apr_lib.h"

#include "imx_status.h"

APLOG_USE_MODULE(influx_metrics);

/* Counters summed over children, in the order of names[] below. */
enum {
    C_RECORDED, C_SENT, C_REJECTED, C_DROPPED_FULL, C_DROPPED_RETRY,
    C_DROPPED_EXIT, C_RETRIES, C_BATCHES, C_BYTES, C_BUFFERED, C_RETRY_BYTES,
    C_LOST, C_MAYBE, NCOUNTERS
};

static const char *const names[NCOUNTERS] = {
    "recorded", "sent", "rejected", "dropped_full", "dropped_retry",
    "dropped_exit", "retries", "batches", "bytes", "buffered", "retry_bytes",
    "lost_in_crash", "maybe_stored"
};

typedef struct {
    _Atomic uint32_t pid;       /* 0: free */
    _Atomic uint32_t seq;       /* odd while the owner writes st */
    uint32_t capacity;
    apr_time_t started;
    imx_stats_t st;
} slot_t;

typedef struct {
    uint32_t nslots;
    _Atomic uint64_t retired[NCOUNTERS];
    _Atomic apr_time_t retired_last_ok;
    atomic_flag err_lock;
    /* Folding a slot into the totals moves counts from one place to
     * another: readers retry while one is under way (odd) or happened. */
    atomic_flag fold_lock;
    _Atomic uint32_t fold_seq;
    apr_time_t retired_error_time;
    char retired_error[200];
    slot_t slots[];
} shm_t;

static shm_t *shm;
static int my_slot = -1;

#define USERDATA_KEY "imx_status_shm"

void *imx_shm_once(server_rec *s, const char *key, apr_size_t size, int *created)
{
    apr_pool_t *pp = s->process->pool;
    void *data = NULL;
    apr_shm_t *seg;

    *created = 0;
    apr_pool_userdata_get(&data, key, pp);
    if (data) {
        return data;
    }
    /* Anonymous shared memory is zero-filled, and pages are only backed
     * once touched: slots never used cost nothing. */
    if (apr_shm_create(&seg, size, NULL, pp) != APR_SUCCESS) {
        return NULL;
    }
    data = apr_shm_baseaddr_get(seg);
    apr_pool_userdata_set(data, key, apr_pool_cleanup_null, pp);
    *created = 1;
    return data;
}

uint32_t imx_shm_slots(void)
{
    int limit = 0;

    if (ap_mpm_query(AP_MPMQ_HARD_LIMIT_DAEMONS, &limit) != APR_SUCCESS || limit < 1) {
        limit = 16;
    }
    return (uint32_t)(limit * 2 < 64 ? 64 : limit * 2);
}

apr_status_t imx_status_init(server_rec *s)
{
    uint32_t nslots = imx_shm_slots();
    int created;

    shm = imx_shm_once(s, USERDATA_KEY, sizeof(shm_t) + (apr_size_t)nslots * sizeof(slot_t),
                       &created);
    if (!shm) {
        return APR_ENOMEM;
    }
    if (created) {
        shm->nslots = nslots;
        atomic_flag_clear(&shm->err_lock);
        atomic_flag_clear(&shm->fold_lock);
    }
    return APR_SUCCESS;
}

static void read_slot(const slot_t *sl, imx_stats_t *st)
{
    for (int tries = 0; tries < 1000; tries++) {
        uint32_t s1 = atomic_load_explicit(&sl->seq, memory_order_acquire);
        if (s1 & 1) {
            continue;
        }
        memcpy(st, &sl->st, sizeof(*st));
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&sl->seq, memory_order_relaxed) == s1) {
            return;
        }
    }
    memcpy(st, &sl->st, sizeof(*st));   /* the owner died mid-write */
}

static void stats_vec(const imx_stats_t *st, uint64_t v[NCOUNTERS])
{
    v[C_RECORDED] = st->recorded;
    v[C_SENT] = st->sent;
    v[C_REJECTED] = st->rejected;
    v[C_DROPPED_FULL] = st->dropped_full;
    v[C_DROPPED_RETRY] = st->dropped_retry;
    v[C_DROPPED_EXIT] = st->dropped_exit;
    v[C_RETRIES] = st->retries;
    v[C_BATCHES] = st->batches;
    v[C_BYTES] = st->bytes;
    v[C_BUFFERED] = 0;          /* an exited child holds nothing */
    v[C_RETRY_BYTES] = 0;
    v[C_LOST] = 0;
    v[C_MAYBE] = st->maybe_stored;
}

/* Adds a finished child's counters to the totals; `lost` of its points were
 * still held when it died. */
static void retire(const imx_stats_t *st, uint64_t lost)
{
    uint64_t v[NCOUNTERS];

    stats_vec(st, v);
    v[C_LOST] = lost;
    for (int i = 0; i < NCOUNTERS; i++) {
        if (v[i]) {
            atomic_fetch_add(&shm->retired[i], v[i]);
        }
    }
    if (st->last_ok > atomic_load(&shm->retired_last_ok)) {
        atomic_store(&shm->retired_last_ok, st->last_ok);
    }
    if (st->last_error_time) {
        while (atomic_flag_test_and_set(&shm->err_lock)) {
            ;                   /* held for a copy of 200 bytes */
        }
        if (st->last_error_time > shm->retired_error_time) {
            shm->retired_error_time = st->last_error_time;
            memcpy(shm->retired_error, st->last_error, sizeof(shm->retired_error));
        }
        atomic_flag_clear(&shm->err_lock);
    }
}

/* Adds a slot to the totals and frees it, as one step for readers. `crashed`:
 * its owner died, so what it buffered is lost. */
static void fold_slot(slot_t *sl, int crashed)
{
    imx_stats_t st;

    while (atomic_flag_test_and_set(&shm->fold_lock)) {
        ;                       /* held for the time of one fold */
    }
    atomic_fetch_add(&shm->fold_seq, 1);
    read_slot(sl, &st);
    retire(&st, crashed ? st.buffered : 0);
    atomic_store(&sl->pid, 0);
    atomic_fetch_add(&shm->fold_seq, 1);
    atomic_flag_clear(&shm->fold_lock);
}

int imx_status_claim(uint32_t capacity)
{
    uint32_t me = (uint32_t)getpid();

    if (!shm) {
        return -1;
    }
    /* Children that died holding a slot: fold them in and free the slot. */
    for (uint32_t i = 0; i < shm->nslots; i++) {
        slot_t *sl = &shm->slots[i];
        uint32_t pid = atomic_load(&sl->pid);

        if (pid && pid != me && kill((pid_t)pid, 0) != 0 && errno == ESRCH
            && atomic_compare_exchange_strong(&sl->pid, &pid, me)) {
            fold_slot(sl, 1);
        }
    }
    for (uint32_t i = 0; i < shm->nslots; i++) {
        slot_t *sl = &shm->slots[i];
        uint32_t zero = 0;

        if (atomic_compare_exchange_strong(&sl->pid, &zero, me)) {
            atomic_store(&sl->seq, 0);
            memset(&sl->st, 0, sizeof(sl->st));
            sl->capacity = capacity;
            sl->started = apr_time_now();
            my_slot = (int)i;
            return my_slot;
        }
    }
    return -1;
}

void imx_status_publish(void *ctx, const imx_stats_t *st)
{
    slot_t *sl;

    (void)ctx;
    if (!shm || my_slot < 0) {
        return;
    }
    sl = &shm->slots[my_slot];
    atomic_fetch_add_explicit(&sl->seq, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    memcpy(&sl->st, st, sizeof(*st));
    atomic_fetch_add_explicit(&sl->seq, 1, memory_order_release);
}

void imx_status_release(void)
{
    slot_t *sl;

    if (!shm || my_slot < 0) {
        return;
    }
    sl = &shm->slots[my_slot];
    fold_slot(sl, 0);
    my_slot = -1;
}

/* ------------------------------------------------------------------------- */
/* Reading                                                                    */

typedef struct {
    uint64_t tot[NCOUNTERS];
    apr_time_t last_ok;
    apr_time_t last_error_time;
    char last_error[200];
} totals_t;

static void totals_once(totals_t *t)
{
    memset(t, 0, sizeof(*t));
    for (int i = 0; i < NCOUNTERS; i++) {
        t->tot[i] = atomic_load(&shm->retired[i]);
    }
    t->last_ok = atomic_load(&shm->retired_last_ok);
    while (atomic_flag_test_and_set(&shm->err_lock)) {
        ;
    }
    t->last_error_time = shm->retired_error_time;
    memcpy(t->last_error, shm->retired_error, sizeof(t->last_error));
    atomic_flag_clear(&shm->err_lock);
    for (uint32_t i = 0; i < shm->nslots; i++) {
        const slot_t *sl = &shm->slots[i];
        imx_stats_t st;
        uint64_t v[NCOUNTERS];

        if (!atomic_load(&sl->pid)) {
            continue;
        }
        read_slot(sl, &st);
        stats_vec(&st, v);
        v[C_BUFFERED] = st.buffered;
        v[C_RETRY_BYTES] = st.retry_bytes;
        for (int k = 0; k < NCOUNTERS; k++) {
            t->tot[k] += v[k];
        }
        if (st.last_ok > t->last_ok) {
            t->last_ok = st.last_ok;
        }
        if (st.last_error_time > t->last_error_time) {
            t->last_error_time = st.last_error_time;
            memcpy(t->last_error, st.last_error, sizeof(t->last_error));
        }
    }
}

/* The totals as of one moment: not while a child's slot is being folded. */
static void totals(totals_t *t)
{
    for (int tries = 0; tries < 1000; tries++) {
        uint32_t s1 = atomic_load(&shm->fold_seq);

        if (!(s1 & 1)) {
            totals_once(t);
            if (atomic_load(&shm->fold_seq) == s1) {
                return;
            }
        }
        usleep(100);
    }
    totals_once(t);
}

static uint64_t dropped(const uint64_t *v)
{
    return v[C_DROPPED_FULL] + v[C_DROPPED_RETRY] + v[C_DROPPED_EXIT] + v[C_LOST];
}

static void json_str(request_rec *r, const char *s)
{
    ap_rputc('"', r);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            ap_rprintf(r, "\\%c", c);
        }
        else if (c < 0x20) {
            ap_rprintf(r, "\\u%04x", c);
        }
        else {
            ap_rputc((char)c, r);
        }
    }
    ap_rputc('"', r);
}

static void json_time(request_rec *r, const char *key, apr_time_t t)
{
    char buf[APR_RFC822_DATE_LEN];

    ap_rprintf(r, ",\"%s\":", key);
    if (t) {
        apr_rfc822_date(buf, t);
        json_str(r, buf);
    }
    else {
        ap_rputs("null", r);
    }
}

static void json_counters(request_rec *r, const uint64_t *v)
{
    ap_rprintf(r, "\"dropped\":%" APR_UINT64_T_FMT, dropped(v));
    for (int i = 0; i < NCOUNTERS; i++) {
        ap_rprintf(r, ",\"%s\":%" APR_UINT64_T_FMT, names[i], v[i]);
    }
}

static void page_json(request_rec *r, const totals_t *t)
{
    int first = 1;

    ap_set_content_type(r, "application/json");
    ap_rputs("{", r);
    json_counters(r, t->tot);
    ap_rputs(",\"last_error\":", r);
    if (t->last_error_time) {
        json_str(r, t->last_error);
    }
    else {
        ap_rputs("null", r);
    }
    json_time(r, "last_error_time", t->last_error_time);
    json_time(r, "last_ok", t->last_ok);
    ap_rputs(",\"children\":[", r);
    for (uint32_t i = 0; i < shm->nslots; i++) {
        const slot_t *sl = &shm->slots[i];
        uint32_t pid = atomic_load(&sl->pid);
        imx_stats_t st;
        uint64_t v[NCOUNTERS];

        if (!pid) {
            continue;
        }
        read_slot(sl, &st);
        stats_vec(&st, v);
        v[C_BUFFERED] = st.buffered;
        v[C_RETRY_BYTES] = st.retry_bytes;
        ap_rprintf(r, "%s{\"slot\":%u,\"pid\":%u,\"capacity\":%u,\"buffer_fill\":%.4f,",
                   first ? "" : ",", i, pid, sl->capacity,
                   sl->capacity ? (double)st.buffered / sl->capacity : 0.0);
        json_counters(r, v);
        ap_rputs(",\"last_error\":", r);
        if (st.last_error_time) {
            json_str(r, st.last_error);
        }
        else {
            ap_rputs("null", r);
        }
        json_time(r, "last_error_time", st.last_error_time);
        json_time(r, "last_ok", st.last_ok);
        json_time(r, "started", sl->started);
        ap_rputs("}", r);
        first = 0;
    }
    ap_rputs("]}\n", r);
}

static void page_auto(request_rec *r, const totals_t *t, const char *prefix)
{
    ap_rprintf(r, "%sDropped: %" APR_UINT64_T_FMT "\n", prefix, dropped(t->tot));
    for (int i = 0; i < NCOUNTERS; i++) {
        ap_rprintf(r, "%s%c%s: %" APR_UINT64_T_FMT "\n", prefix,
                   apr_toupper(names[i][0]), names[i] + 1, t->tot[i]);
    }
    if (t->last_error_time) {
        /* One line: the text never holds a newline (the engine strips them). */
        ap_rprintf(r, "%sLast_error: %s\n", prefix, t->last_error);
    }
}

static void page_html(request_rec *r, const totals_t *t)
{
    char buf[APR_RFC822_DATE_LEN];

    ap_set_content_type(r, "text/html; charset=utf-8");
    ap_rputs(DOCTYPE_HTML_4_01 "<html><head><title>mod_influx_metrics status</title>"
             "</head><body><h1>mod_influx_metrics</h1>\n<table border=\"1\">\n", r);
    ap_rprintf(r, "<tr><th>dropped (all reasons)</th><td>%" APR_UINT64_T_FMT "</td></tr>\n",
               dropped(t->tot));
    for (int i = 0; i < NCOUNTERS; i++) {
        ap_rprintf(r, "<tr><th>%s</th><td>%" APR_UINT64_T_FMT "</td></tr>\n",
                   names[i], t->tot[i]);
    }
    if (t->last_ok) {
        apr_rfc822_date(buf, t->last_ok);
        ap_rprintf(r, "<tr><th>last successful write</th><td>%s</td></tr>\n", buf);
    }
    if (t->last_error_time) {
        apr_rfc822_date(buf, t->last_error_time);
        ap_rprintf(r, "<tr><th>last error</th><td>%s: %s</td></tr>\n", buf,
                   ap_escape_html(r->pool, t->last_error));
    }
    ap_rputs("</table>\n<h2>Children</h2>\n<table border=\"1\"><tr><th>slot</th>"
             "<th>pid</th><th>recorded</th><th>sent</th><th>dropped</th><th>buffered</th>"
             "<th>buffer fill</th><th>retries</th></tr>\n", r);
    for (uint32_t i = 0; i < shm->nslots; i++) {
        const slot_t *sl = &shm->slots[i];
        uint32_t pid = atomic_load(&sl->pid);
        imx_stats_t st;

        if (!pid) {
            continue;
        }
        read_slot(sl, &st);
        ap_rprintf(r, "<tr><td>%u</td><td>%u</td><td>%" APR_UINT64_T_FMT "</td><td>%"
                   APR_UINT64_T_FMT "</td><td>%" APR_UINT64_T_FMT "</td><td>%"
                   APR_UINT64_T_FMT "</td><td>%.1f%%</td><td>%" APR_UINT64_T_FMT
                   "</td></tr>\n", i, pid, st.recorded, st.sent,
                   st.dropped_full + st.dropped_retry + st.dropped_exit, st.buffered,
                   sl->capacity ? 100.0 * (double)st.buffered / sl->capacity : 0.0,
                   st.retries);
    }
    ap_rputs("</table></body></html>\n", r);
}

int imx_status_handler(request_rec *r)
{
    totals_t t;

    if (strcmp(r->handler, "influx-metrics-status")) {
        return DECLINED;
    }
    r->allowed = (AP_METHOD_BIT << M_GET);
    if (r->method_number != M_GET) {
        return HTTP_METHOD_NOT_ALLOWED;
    }
    if (!shm) {
        return HTTP_SERVICE_UNAVAILABLE;
    }
    totals(&t);
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    if (r->args && !strcmp(r->args, "json")) {
        page_json(r, &t);
    }
    else if (r->args && !strcmp(r->args, "auto")) {
        ap_set_content_type(r, "text/plain; charset=utf-8");
        page_auto(r, &t, "");
    }
    else {
        page_html(r, &t);
    }
    return OK;
}

int imx_status_hook(request_rec *r, int flags)
{
    totals_t t;

    if (!shm) {
        return OK;
    }
    totals(&t);
    if (flags & AP_STATUS_SHORT) {
        page_auto(r, &t, "InfluxMetrics");
        return OK;
    }
    ap_rputs("<hr />\n<h2>mod_influx_metrics</h2>\n<dl>", r);
    ap_rprintf(r, "<dt>dropped (all reasons): %" APR_UINT64_T_FMT "</dt>\n", dropped(t.tot));
    for (int i = 0; i < NCOUNTERS; i++) {
        ap_rprintf(r, "<dt>%s: %" APR_UINT64_T_FMT "</dt>\n", names[i], t.tot[i]);
    }
    if (t.last_error_time) {
        ap_rprintf(r, "<dt>last error: %s</dt>\n", ap_escape_html(r->pool, t.last_error));
    }
    ap_rputs("</dl>\n", r);
    return OK;
}
