/*
 * mod_influx_metrics_status.c: counters in shared memory and the status pages.
 *
 * Layout: a header with the totals of children that are gone, then one slot
 * per child. The slot holds the engine's counters themselves (imx_counters_t:
 * the engine adds to them where they are), so they are exact at any instant,
 * also for a child that was killed: what it still held is recorded - settled.
 *
 * Ownership: a child takes a slot by locking the slot's robust, process-shared
 * mutex from its main thread, and keeps it locked for its whole life; the
 * kernel releases it when the process ends, however it ends. So "is the owner
 * alive" is a trylock, never a pid check (pids are reused, and kill() says
 * EPERM for processes of other users). A slot is folded into the totals only
 * once its owner is gone, by the next child that takes it or by the parent's
 * monitor hook: nothing can still write to it then, not even a worker thread
 * that logs after the child's exit cleanup.
 *
 * Folding moves counts from a slot to the totals. Readers retry while one is
 * under way (fold_seq odd), so nothing is counted twice or missed. The fold
 * itself is journalled (the totals it will write, then plain stores), so a
 * folder killed half way is repaired by the next one to take the lock.
 *
 * Segments are versioned (imx_shm_once): a module of another layout loaded by
 * a graceful restart makes new segments instead of misreading old ones.
 */
#include <errno.h>
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

#include "mod_influx_metrics_status.h"
#include "shmlock.h"

APLOG_USE_MODULE(influx_metrics);

/* Counters summed over children, in the order of names[] below. The last
 * three are the spool's gauges, server-wide (never in a slot). */
enum {
    C_RECORDED, C_SENT, C_REJECTED, C_DROPPED_FULL, C_DROPPED_RETRY,
    C_DROPPED_EXIT, C_RETRIES, C_BATCHES, C_BYTES, C_BUFFERED, C_RETRY_BYTES,
    C_LOST, C_MAYBE, C_TO_SPOOL, C_UNSPOOLED, C_DROPPED_SPOOL,
    C_SPOOLED, C_SPOOL_BYTES, C_SPOOL_BAD, NCOUNTERS
};

static const char *const names[NCOUNTERS] = {
    "recorded", "sent", "rejected", "dropped_full", "dropped_retry",
    "dropped_exit", "retries", "batches", "bytes", "buffered", "retry_bytes",
    "lost_in_crash", "maybe_stored", "to_spool", "unspooled", "dropped_spool",
    "spooled", "spool_bytes", "spool_bad_files"
};

enum { SLOT_FREE = 0, SLOT_ACTIVE = 1, SLOT_EXITED = 2 };

typedef struct {
    imx_shmlock_t owner;        /* held by the owning child's main thread */
    _Atomic uint32_t state;     /* SLOT_* */
    _Atomic uint32_t pid;       /* for the page only */
    uint32_t capacity;
    apr_time_t started;
    int64_t gen;                /* the owner's generation */
    /* Where its ring is: the address of the ring segment's cells, and of
     * its request ids (0: none), the same in every child of this parent
     * (segments are made in the parent and never go away), so any child of
     * any later generation can take over what a dead one left. */
    uint64_t ring_id;
    uint64_t rid_id;
    apr_time_t dead_since;      /* first seen gone with points to hand over */
    _Atomic uint32_t err_seq;   /* odd while the owner writes the error */
    char last_error[200];
    imx_counters_t c;
} slot_t;

typedef struct {
    uint32_t nslots;
    imx_shmlock_t lock;         /* folds, the journal, retired_error */
    _Atomic uint32_t fold_seq;
    _Atomic uint64_t retired[NCOUNTERS];
    _Atomic apr_time_t retired_last_ok;
    /* The fold under way: the totals it writes, and its slot (-1: none). */
    int32_t j_slot;
    uint64_t j_new[NCOUNTERS];
    apr_time_t j_last_ok;
    apr_time_t retired_error_time;
    char retired_error[200];
    /* The spool's gauges: in the directory, not in any child, so they
     * outlive every generation (and are counted again from the files when
     * httpd starts). */
    _Alignas(64) imx_spool_shared_t spool;
    /* Bytes in the retry buffers of every child, all generations: the
     * server-wide InfluxMetricsRetryBuffer budget (imx_engine_conf_t's
     * retry_shared). A dead child's share is given back when its slot is
     * folded. */
    _Alignas(64) _Atomic uint64_t retry_held;
    _Alignas(64) slot_t slots[];
} shm_t;

static shm_t *shm;
static int my_slot = -1;
/* How long a dead child's points wait for a new child to send them. */
#define ADOPT_WAIT apr_time_from_sec(30)

#define USERDATA_KEY "imx_status_shm"
#define SHM_VERSION IMX_SHM_VERSION
#define SHM_MAGIC 0x494d5853u   /* "IMXS" */

typedef struct {
    uint32_t magic, version;
    apr_size_t size;
} shm_hdr_t;

/* The header sits right before the data, which is 64-byte aligned (APR's
 * anonymous segments start 8 bytes into the page). */
/* The userdata key of segment `key` for this layout version. */
static const char *versioned(apr_pool_t *pp, const char *key)
{
    return apr_psprintf(pp, "%s_v%d", key, SHM_VERSION);
}

static shm_hdr_t *hdr_of(void *data)
{
    return (shm_hdr_t *)((char *)data - sizeof(shm_hdr_t));
}

void *imx_shm_once(server_rec *s, const char *key, apr_size_t size, int *created)
{
    apr_pool_t *pp = s->process->pool;
    const char *vkey = versioned(pp, key);
    void *data = NULL;
    apr_shm_t *seg;
    shm_hdr_t *h;
    char *base;

    *created = 0;
    apr_pool_userdata_get(&data, vkey, pp);
    if (data) {
        /* Kept as first made, also when this generation would want it
         * larger (a bigger ServerLimit): splitting it would split what
         * children of both generations share. Callers use the sizes they
         * stored in it; a larger size takes a full restart. */
        h = hdr_of(data);
        if (h->magic == SHM_MAGIC && h->version == SHM_VERSION) {
            return data;
        }
    }
    /* Anonymous shared memory is zero-filled, and pages are only backed
     * once touched: slots never used cost nothing. */
    if (apr_shm_create(&seg, size + sizeof(shm_hdr_t) + 64, NULL, pp) != APR_SUCCESS) {
        return NULL;
    }
    base = apr_shm_baseaddr_get(seg);
    data = (void *)(((uintptr_t)base + sizeof(shm_hdr_t) + 63) & ~(uintptr_t)63);
    h = hdr_of(data);
    h->magic = SHM_MAGIC;
    h->version = SHM_VERSION;
    h->size = size;
    apr_pool_userdata_set(data, vkey, apr_pool_cleanup_null, pp);
    *created = 1;
    return data;
}

void *imx_shm_find(server_rec *s, const char *key)
{
    apr_pool_t *pp = s->process->pool;
    void *data = NULL;

    apr_pool_userdata_get(&data, versioned(pp, key), pp);
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
    shm_t *n;
    int created;

    n = imx_shm_once(s, USERDATA_KEY, sizeof(shm_t) + (apr_size_t)nslots * sizeof(slot_t),
                     &created);
    if (!n) {
        return APR_ENOMEM;
    }
    if (created) {
        n->nslots = nslots;
        n->j_slot = -1;
        if (imx_shmlock_init(&n->lock) != 0) {
            return APR_EGENERAL;
        }
        for (uint32_t i = 0; i < nslots; i++) {
            if (imx_shmlock_init(&n->slots[i].owner) != 0) {
                return APR_EGENERAL;
            }
        }
    }
    shm = n;
    return APR_SUCCESS;
}

static void slot_vec(const slot_t *sl, uint64_t v[NCOUNTERS], apr_time_t *last_ok)
{
    imx_stats_t st;

    memset(&st, 0, sizeof(st));
    imx_counters_read(&sl->c, &st);
    v[C_RECORDED] = st.recorded;
    v[C_SENT] = st.sent;
    v[C_REJECTED] = st.rejected;
    v[C_DROPPED_FULL] = st.dropped_full;
    v[C_DROPPED_RETRY] = st.dropped_retry;
    v[C_DROPPED_EXIT] = st.dropped_exit;
    v[C_RETRIES] = st.retries;
    v[C_BATCHES] = st.batches;
    v[C_BYTES] = st.bytes;
    v[C_BUFFERED] = st.buffered;
    v[C_RETRY_BYTES] = st.retry_bytes;
    v[C_LOST] = 0;
    v[C_MAYBE] = st.maybe_stored;
    v[C_TO_SPOOL] = st.to_spool;
    v[C_UNSPOOLED] = st.unspooled;
    v[C_DROPPED_SPOOL] = st.dropped_spool;
    v[C_SPOOLED] = v[C_SPOOL_BYTES] = v[C_SPOOL_BAD] = 0;
    if (last_ok) {
        *last_ok = st.last_ok;
    }
}

static void read_error(const slot_t *sl, char *out, size_t outsz)
{
    for (int tries = 0; tries < 1000; tries++) {
        uint32_t s1 = atomic_load_explicit(&sl->err_seq, memory_order_acquire);
        if (s1 & 1) {
            continue;
        }
        memcpy(out, sl->last_error, outsz < sizeof(sl->last_error) ? outsz
                                                                     : sizeof(sl->last_error));
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&sl->err_seq, memory_order_relaxed) == s1) {
            break;
        }
    }
    out[outsz - 1] = '\0';
}

/* Finishes a journalled fold: idempotent, so a folder that died anywhere in
 * it is completed by the next holder of the lock. */
static void apply_journal(void)
{
    int32_t i = shm->j_slot;
    slot_t *sl;

    if (i < 0 || (uint32_t)i >= shm->nslots) {
        shm->j_slot = -1;
        return;
    }
    for (int k = 0; k < NCOUNTERS; k++) {
        atomic_store(&shm->retired[k], shm->j_new[k]);
    }
    atomic_store(&shm->retired_last_ok, shm->j_last_ok);
    sl = &shm->slots[i];
    memset(&sl->c, 0, sizeof(sl->c));
    atomic_store(&sl->pid, 0);
    atomic_store(&sl->state, SLOT_FREE);
    shm->j_slot = -1;
}

static void lock_totals(void)
{
    if (imx_shmlock_lock(&shm->lock) == IMX_SHMLOCK_RECOVERED) {
        /* Its holder died: complete what it had journalled, and make the
         * sequence even again so readers stop waiting. */
        apply_journal();
        if (atomic_load(&shm->fold_seq) & 1) {
            atomic_fetch_add(&shm->fold_seq, 1);
        }
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, NULL, "IMX0010: a process died "
                     "while it updated the counters' totals; they were repaired");
    }
}

/* Adds a slot whose owner is gone to the totals and frees it. The caller
 * holds the slot's owner lock. ACTIVE: its process died without its exit
 * path, so what it held is lost_in_crash; EXITED: it went through its exit,
 * and what it still held (points recorded after the flusher stopped, or left
 * when the flusher ran out of time) is dropped_exit. A POST under way when it
 * died may have been stored: maybe_stored. */
static void fold_slot(uint32_t i)
{
    slot_t *sl = &shm->slots[i];
    uint64_t v[NCOUNTERS];
    apr_time_t last_ok = 0;
    uint32_t state = atomic_load(&sl->state);
    uint64_t held, sending;
    char err[200];
    apr_time_t err_time;

    /* Its retry buffer is gone with it: its bytes go back to the budget
     * (exchanged, so a folder that dies here and a second fold cannot give
     * them back twice). */
    imx_retry_release(&shm->retry_held, atomic_exchange(&sl->c.retry_bytes, 0));
    slot_vec(sl, v, &last_ok);
    held = v[C_BUFFERED];
    sending = atomic_load(&sl->c.sending);
    /* Half-written cells a rescuer found are lost like the rest. */
    v[C_LOST] = atomic_load(&sl->c.lost);
    v[C_BUFFERED] = 0;
    v[C_RETRY_BYTES] = 0;
    if (state == SLOT_ACTIVE) {
        v[C_LOST] += held;
    }
    else {
        v[C_DROPPED_EXIT] += held;
    }
    v[C_MAYBE] += sending < held ? sending : held;
    err_time = atomic_load(&sl->c.last_error_time);
    read_error(sl, err, sizeof(err));

    lock_totals();
    atomic_fetch_add(&shm->fold_seq, 1);
    for (int k = 0; k < NCOUNTERS; k++) {
        shm->j_new[k] = atomic_load(&shm->retired[k]) + v[k];
    }
    shm->j_last_ok = atomic_load(&shm->retired_last_ok);
    if (last_ok > shm->j_last_ok) {
        shm->j_last_ok = last_ok;
    }
    if (err_time > shm->retired_error_time) {
        shm->retired_error_time = err_time;
        memcpy(shm->retired_error, err, sizeof(shm->retired_error));
    }
    atomic_thread_fence(memory_order_seq_cst);
    shm->j_slot = (int32_t)i;
    atomic_thread_fence(memory_order_seq_cst);
    apply_journal();
    atomic_fetch_add(&shm->fold_seq, 1);
    imx_shmlock_unlock(&shm->lock);
    if (state == SLOT_ACTIVE && held) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, NULL, "IMX0011: a child that died "
                     "without its exit path held %" APR_UINT64_T_FMT " points "
                     "(lost_in_crash)", held);
    }

}

/* Points a dead owner left that a live child can still send. Records name
 * everything by generation-stable indices (batch.h), so the generation that
 * wrote them does not matter. */
static uint64_t ring_left(const slot_t *sl)
{
    uint64_t head = atomic_load(&sl->c.recorded), taken = atomic_load(&sl->c.taken);

    if (!sl->ring_id || head <= taken || head - taken > sl->capacity) {
        return 0;
    }
    return head - taken;
}

static void own_slot(slot_t *sl, uint32_t capacity, int64_t gen, uint64_t ring_id,
                     uint64_t rid_id)
{
    atomic_store(&sl->err_seq, 0);
    sl->last_error[0] = '\0';
    sl->capacity = capacity;
    sl->gen = gen;
    sl->ring_id = ring_id;
    sl->rid_id = rid_id;
    sl->dead_since = 0;
    sl->started = apr_time_now();
}

int imx_status_claim(uint32_t capacity, int64_t gen, char *rings, char *rids)
{
    uint32_t me = (uint32_t)getpid();

    if (!shm) {
        return -1;
    }
    for (uint32_t i = 0; i < shm->nslots; i++) {
        slot_t *sl = &shm->slots[i];
        int rv;

        /* A slot with points a rescuer can still send is left for one. */
        if (atomic_load(&sl->state) != SLOT_FREE && ring_left(sl)) {
            continue;
        }
        rv = imx_shmlock_trylock(&sl->owner);
        if (rv != 0 && rv != IMX_SHMLOCK_RECOVERED) {
            continue;           /* a live process has it */
        }
        if (atomic_load(&sl->state) != SLOT_FREE) {
            fold_slot(i);       /* its owner is gone */
        }
        memset(&sl->c, 0, sizeof(sl->c));
        own_slot(sl, capacity, gen, (uint64_t)(uintptr_t)rings, (uint64_t)(uintptr_t)rids);
        atomic_store(&sl->pid, me);
        atomic_store(&sl->state, SLOT_ACTIVE);
        my_slot = (int)i;
        return my_slot;
    }
    return -1;
}

void imx_status_rescue(imx_engine_t *e)
{
    if (!shm) {
        return;
    }
    for (uint32_t i = 0; i < shm->nslots; i++) {
        slot_t *sl = &shm->slots[i];
        uint64_t moved;
        int rv;

        if ((int)i == my_slot || atomic_load(&sl->state) == SLOT_FREE || !ring_left(sl)) {
            continue;
        }
        /* From the flusher thread: the lock then belongs to it, and is
         * released when it returns (or by the kernel if this one dies). */
        rv = imx_shmlock_trylock(&sl->owner);
        if (rv != 0 && rv != IMX_SHMLOCK_RECOVERED) {
            continue;           /* its owner lives */
        }
        moved = imx_ring_rescue(e, (char *)(uintptr_t)sl->ring_id + (size_t)i * sl->capacity * 64,
                                sl->rid_id ? (char *)(uintptr_t)sl->rid_id
                                             + (size_t)i * sl->capacity * IMX_RID_MAX : NULL,
                                sl->capacity, &sl->c);
        if (!ring_left(sl)) {
            fold_slot(i);
        }
        imx_shmlock_unlock(&sl->owner);
        if (moved) {
            ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, NULL, "IMX0017: took over %"
                         APR_UINT64_T_FMT " points that a child that is gone had left "
                         "in its buffer; they are sent with this child's", moved);
        }
    }
}

uint32_t imx_status_nslots(void)
{
    return shm ? shm->nslots : 0;
}

void imx_status_add_dropped_spool(uint64_t points, uint64_t maybe)
{
    if (!shm || (!points && !maybe)) {
        return;
    }
    /* Like a fold: readers see the totals before or after, never half. */
    lock_totals();
    atomic_fetch_add(&shm->fold_seq, 1);
    atomic_fetch_add(&shm->retired[C_MAYBE], maybe);
    atomic_fetch_add(&shm->retired[C_DROPPED_SPOOL], points);
    atomic_fetch_add(&shm->fold_seq, 1);
    imx_shmlock_unlock(&shm->lock);
}

imx_spool_shared_t *imx_status_spool(void)
{
    return shm ? &shm->spool : NULL;
}

_Atomic uint64_t *imx_status_retry_budget(void)
{
    return shm ? &shm->retry_held : NULL;
}

imx_counters_t *imx_status_counters(void)
{
    return shm && my_slot >= 0 ? &shm->slots[my_slot].c : NULL;
}

void imx_status_unclaim(void)
{
    slot_t *sl;

    if (!shm || my_slot < 0) {
        return;
    }
    sl = &shm->slots[my_slot];
    atomic_store(&sl->state, SLOT_EXITED);
    fold_slot((uint32_t)my_slot);
    imx_shmlock_unlock(&sl->owner);
    my_slot = -1;
}

void imx_status_publish(void *ctx, const imx_stats_t *st)
{
    slot_t *sl;

    (void)ctx;
    if (!shm || my_slot < 0 || !st->last_error_time) {
        return;
    }
    sl = &shm->slots[my_slot];
    if (!memcmp(sl->last_error, st->last_error, sizeof(sl->last_error))) {
        return;
    }
    atomic_fetch_add_explicit(&sl->err_seq, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    memcpy(sl->last_error, st->last_error, sizeof(sl->last_error));
    atomic_fetch_add_explicit(&sl->err_seq, 1, memory_order_release);
}

void imx_status_exit(void)
{
    if (shm && my_slot >= 0) {
        atomic_store(&shm->slots[my_slot].state, SLOT_EXITED);
    }
}

int imx_status_monitor(apr_pool_t *p, server_rec *s)
{
    apr_time_t now = apr_time_now();
    ap_generation_t gen = 0;

    (void)p; (void)s;
    if (!shm) {
        return DECLINED;
    }
    ap_mpm_query(AP_MPMQ_GENERATION, &gen);
    for (uint32_t i = 0; i < shm->nslots; i++) {
        slot_t *sl = &shm->slots[i];
        int rv;

        if (atomic_load(&sl->state) == SLOT_FREE) {
            continue;
        }
        rv = imx_shmlock_trylock(&sl->owner);
        if (rv != 0 && rv != IMX_SHMLOCK_RECOVERED) {
            continue;
        }
        /* Points a new child of this generation can still send: give one
         * the chance to start (httpd replaces dead children within seconds)
         * before counting them lost. */
        if (atomic_load(&sl->state) != SLOT_FREE && ring_left(sl)) {
            if (!sl->dead_since) {
                sl->dead_since = now;
            }
            if (now - sl->dead_since < ADOPT_WAIT) {
                imx_shmlock_unlock(&sl->owner);
                continue;
            }
        }
        if (atomic_load(&sl->state) != SLOT_FREE) {
            fold_slot(i);
        }
        imx_shmlock_unlock(&sl->owner);
    }
    return DECLINED;
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
    for (uint32_t i = 0; i < shm->nslots; i++) {
        const slot_t *sl = &shm->slots[i];
        uint64_t v[NCOUNTERS];
        apr_time_t ok = 0, et;

        if (atomic_load(&sl->state) == SLOT_FREE) {
            continue;
        }
        slot_vec(sl, v, &ok);
        for (int k = 0; k < NCOUNTERS; k++) {
            t->tot[k] += v[k];
        }
        if (ok > t->last_ok) {
            t->last_ok = ok;
        }
        et = atomic_load(&sl->c.last_error_time);
        if (et > t->last_error_time) {
            t->last_error_time = et;
            read_error(sl, t->last_error, sizeof(t->last_error));
        }
    }
    {
        int64_t pts = atomic_load(&shm->spool.points), by = atomic_load(&shm->spool.bytes);
        t->tot[C_SPOOLED] = pts > 0 ? (uint64_t)pts : 0;
        t->tot[C_SPOOL_BYTES] = by > 0 ? (uint64_t)by : 0;
        t->tot[C_SPOOL_BAD] = atomic_load(&shm->spool.bad_files);
    }
}

/* The totals as of one moment: not while a slot is being folded. */
static void totals(totals_t *t)
{
    for (int tries = 0; tries < 1000; tries++) {
        uint32_t s1 = atomic_load(&shm->fold_seq);

        if (!(s1 & 1)) {
            totals_once(t);
            if (atomic_load(&shm->fold_seq) == s1) {
                break;
            }
        }
        usleep(100);
        if (tries == 999) {
            totals_once(t);
        }
    }
    /* The totals' own last error, if it is newer than every live one. */
    if (imx_shmlock_trylock(&shm->lock) == 0) {
        if (shm->retired_error_time > t->last_error_time) {
            t->last_error_time = shm->retired_error_time;
            memcpy(t->last_error, shm->retired_error, sizeof(t->last_error));
        }
        imx_shmlock_unlock(&shm->lock);
    }
}

static uint64_t dropped(const uint64_t *v)
{
    return v[C_DROPPED_FULL] + v[C_DROPPED_RETRY] + v[C_DROPPED_EXIT] + v[C_LOST]
           + v[C_DROPPED_SPOOL];
}

/* A JSON string: backend answers and texts can hold any bytes, and JSON
 * must be valid UTF-8, so invalid sequences become U+FFFD. */
static void json_str(request_rec *r, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);

    ap_rputc('"', r);
    while (n) {
        size_t l = imx_utf8_len(p, n);

        if (!l) {
            ap_rputs("\\ufffd", r);
            l = 1;
        }
        else if (*p == '"' || *p == '\\') {
            ap_rprintf(r, "\\%c", *p);
        }
        else if (*p < 0x20 || *p == 0x7f) {
            ap_rprintf(r, "\\u%04x", *p);
        }
        else {
            ap_rwrite(p, (int)l, r);
        }
        p += l;
        n -= l;
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
        uint32_t pid = atomic_load(&sl->pid), state = atomic_load(&sl->state);
        uint64_t v[NCOUNTERS];
        apr_time_t ok = 0, et;
        char err[200];

        if (state == SLOT_FREE) {
            continue;
        }
        slot_vec(sl, v, &ok);
        et = atomic_load(&sl->c.last_error_time);
        ap_rprintf(r, "%s{\"slot\":%u,\"pid\":%u,\"state\":\"%s\",\"capacity\":%u,"
                   "\"buffer_fill\":%.4f,", first ? "" : ",", i, pid,
                   state == SLOT_ACTIVE ? "active" : "exited", sl->capacity,
                   sl->capacity ? (double)v[C_BUFFERED] / sl->capacity : 0.0);
        json_counters(r, v);
        ap_rputs(",\"last_error\":", r);
        if (et) {
            read_error(sl, err, sizeof(err));
            json_str(r, err);
        }
        else {
            ap_rputs("null", r);
        }
        json_time(r, "last_error_time", et);
        json_time(r, "last_ok", ok);
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
             "<th>buffer fill</th><th>retries</th><th>to spool</th><th>unspooled</th>"
             "</tr>\n", r);
    for (uint32_t i = 0; i < shm->nslots; i++) {
        const slot_t *sl = &shm->slots[i];
        uint32_t pid = atomic_load(&sl->pid);
        uint64_t v[NCOUNTERS];

        if (atomic_load(&sl->state) == SLOT_FREE) {
            continue;
        }
        slot_vec(sl, v, NULL);
        ap_rprintf(r, "<tr><td>%u</td><td>%u</td><td>%" APR_UINT64_T_FMT "</td><td>%"
                   APR_UINT64_T_FMT "</td><td>%" APR_UINT64_T_FMT "</td><td>%"
                   APR_UINT64_T_FMT "</td><td>%.1f%%</td><td>%" APR_UINT64_T_FMT
                   "</td><td>%" APR_UINT64_T_FMT "</td><td>%" APR_UINT64_T_FMT
                   "</td></tr>\n", i, pid, v[C_RECORDED], v[C_SENT], dropped(v),
                   v[C_BUFFERED],
                   sl->capacity ? 100.0 * (double)v[C_BUFFERED] / sl->capacity : 0.0,
                   v[C_RETRIES], v[C_TO_SPOOL], v[C_UNSPOOLED]);
    }
    ap_rputs("</table></body></html>\n", r);
}

static int status_page(request_rec *r);

/* Every request passes here: declining costs a comparison, not the frame of
 * the page's large locals. */
int imx_status_handler(request_rec *r)
{
    if (!r->handler || r->handler[0] != 'i' || strcmp(r->handler, "influx-metrics-status")) {
        return DECLINED;
    }
    return status_page(r);
}

static __attribute__((noinline)) int status_page(request_rec *r)
{
    totals_t t;

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
