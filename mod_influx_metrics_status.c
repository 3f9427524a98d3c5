/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
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
#include "imx_retry.h"
#include "imx_shmlock.h"
#include "mod_influx_metrics_shm.h"

APLOG_USE_MODULE(influx_metrics);

const char *const imx_status_names[IMX_NCOUNTERS] = {
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
    _Atomic uint64_t retired[IMX_NCOUNTERS];
    _Atomic apr_time_t retired_last_ok;
    /* The fold under way: the totals it writes, and its slot (-1: none). */
    int32_t j_slot;
    uint64_t j_new[IMX_NCOUNTERS];
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

static void slot_vec(const slot_t *sl, uint64_t v[IMX_NCOUNTERS], apr_time_t *last_ok)
{
    imx_stats_t st;

    memset(&st, 0, sizeof(st));
    imx_counters_read(&sl->c, &st);
    v[IMX_C_RECORDED] = st.recorded;
    v[IMX_C_SENT] = st.sent;
    v[IMX_C_REJECTED] = st.rejected;
    v[IMX_C_DROPPED_FULL] = st.dropped_full;
    v[IMX_C_DROPPED_RETRY] = st.dropped_retry;
    v[IMX_C_DROPPED_EXIT] = st.dropped_exit;
    v[IMX_C_RETRIES] = st.retries;
    v[IMX_C_BATCHES] = st.batches;
    v[IMX_C_BYTES] = st.bytes;
    v[IMX_C_BUFFERED] = st.buffered;
    v[IMX_C_RETRY_BYTES] = st.retry_bytes;
    v[IMX_C_LOST] = 0;
    v[IMX_C_MAYBE] = st.maybe_stored;
    v[IMX_C_TO_SPOOL] = st.to_spool;
    v[IMX_C_UNSPOOLED] = st.unspooled;
    v[IMX_C_DROPPED_SPOOL] = st.dropped_spool;
    v[IMX_C_SPOOLED] = v[IMX_C_SPOOL_BYTES] = v[IMX_C_SPOOL_BAD] = 0;
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
    for (int k = 0; k < IMX_NCOUNTERS; k++) {
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
    uint64_t v[IMX_NCOUNTERS];
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
    held = v[IMX_C_BUFFERED];
    sending = atomic_load(&sl->c.sending);
    /* Half-written cells a rescuer found are lost like the rest. */
    v[IMX_C_LOST] = atomic_load(&sl->c.lost);
    v[IMX_C_BUFFERED] = 0;
    v[IMX_C_RETRY_BYTES] = 0;
    if (state == SLOT_ACTIVE) {
        v[IMX_C_LOST] += held;
    }
    else {
        v[IMX_C_DROPPED_EXIT] += held;
    }
    v[IMX_C_MAYBE] += sending < held ? sending : held;
    err_time = atomic_load(&sl->c.last_error_time);
    read_error(sl, err, sizeof(err));

    lock_totals();
    atomic_fetch_add(&shm->fold_seq, 1);
    for (int k = 0; k < IMX_NCOUNTERS; k++) {
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
 * everything by generation-stable indices (imx_point.h), so the generation that
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
        moved = imx_ring_rescue(imx_engine_ring(e), (char *)(uintptr_t)sl->ring_id + (size_t)i * sl->capacity * 64,
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
    atomic_fetch_add(&shm->retired[IMX_C_MAYBE], maybe);
    atomic_fetch_add(&shm->retired[IMX_C_DROPPED_SPOOL], points);
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

static void totals_once(imx_status_totals_t *t)
{
    memset(t, 0, sizeof(*t));
    for (int i = 0; i < IMX_NCOUNTERS; i++) {
        t->tot[i] = atomic_load(&shm->retired[i]);
    }
    t->last_ok = atomic_load(&shm->retired_last_ok);
    for (uint32_t i = 0; i < shm->nslots; i++) {
        const slot_t *sl = &shm->slots[i];
        uint64_t v[IMX_NCOUNTERS];
        apr_time_t ok = 0, et;

        if (atomic_load(&sl->state) == SLOT_FREE) {
            continue;
        }
        slot_vec(sl, v, &ok);
        for (int k = 0; k < IMX_NCOUNTERS; k++) {
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
        t->tot[IMX_C_SPOOLED] = pts > 0 ? (uint64_t)pts : 0;
        t->tot[IMX_C_SPOOL_BYTES] = by > 0 ? (uint64_t)by : 0;
        t->tot[IMX_C_SPOOL_BAD] = atomic_load(&shm->spool.bad_files);
    }
}

int imx_status_read_totals(imx_status_totals_t *t)
{
    if (!shm) {
        return 0;
    }
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
    return 1;
}

int imx_status_read_child(uint32_t i, imx_status_child_t *c)
{
    const slot_t *sl;
    uint32_t state;

    if (!shm || i >= shm->nslots) {
        return 0;
    }
    sl = &shm->slots[i];
    state = atomic_load(&sl->state);
    if (state == SLOT_FREE) {
        return 0;
    }
    memset(c, 0, sizeof(*c));
    c->slot = i;
    c->pid = atomic_load(&sl->pid);
    c->active = state == SLOT_ACTIVE;
    c->capacity = sl->capacity;
    c->started = sl->started;
    slot_vec(sl, c->v, &c->last_ok);
    c->last_error_time = atomic_load(&sl->c.last_error_time);
    if (c->last_error_time) {
        read_error(sl, c->last_error, sizeof(c->last_error));
    }
    return 1;
}

uint64_t imx_status_dropped(const uint64_t *v)
{
    return v[IMX_C_DROPPED_FULL] + v[IMX_C_DROPPED_RETRY] + v[IMX_C_DROPPED_EXIT]
           + v[IMX_C_LOST] + v[IMX_C_DROPPED_SPOOL];
}
