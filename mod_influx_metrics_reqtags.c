/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * mod_influx_metrics_reqtags.c: interned request tags in shared memory (see
 * mod_influx_metrics_reqtags.h).
 *
 * Each table is open-addressed by a hash of the escaped text. An entry is
 * claimed with a CAS of its state from EMPTY to WRITING by the first thread
 * (of any child) that meets a new value, filled, then published as READY
 * with a release store; readers compare only READY entries, and a reader
 * that meets a WRITING entry waits for it briefly (the writer copies at most
 * IMX_REQTAG_TEXT_MAX bytes) before treating it as a miss. The number of
 * entries claimed, not the table's size, enforces the cap.
 *
 * Restarts. The values admitted are forgotten at each restart, graceful or
 * not, so values that clients sent once do not hold the table for the life
 * of the parent. Entries cannot simply be emptied then: a point holds a
 * pointer to its tag text from the moment it is logged until the flusher
 * encodes it, and after a graceful restart the old generation's children go
 * on logging and flushing for as long as their last requests take. A new
 * value written over an entry such a child points to would reach the
 * database as torn text. So the segment holds two banks of tables. Each
 * generation uses one bank; a new generation takes the other one, emptied,
 * when no child of the generations that used it is alive. The parent knows:
 * the child_status hook counts, per bank, the children it forked and the
 * ones it reaped. All of that happens in the parent, so no child can start
 * using a bank behind its back, and a child that crashed is reaped like any
 * other. When the other bank is still in use, the new generation shares the
 * current bank, values and all, and the reset waits for a later restart.
 *
 * Emptying a bank starts a new epoch: each entry's state word holds the
 * epoch it was written in, and an entry of another epoch counts as EMPTY.
 * Nothing is written to the entries, so a reset touches no page. Children
 * take their bank and epoch from statics set by the parent before the fork,
 * never from the segment, which the parent alone changes.
 */
#include <stdatomic.h>
#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"
#include "ap_mpm.h"

#include "apr_shm.h"

#include "imx_lineproto.h"
#include "mod_influx_metrics_shm.h"
#include "mod_influx_metrics_reqtags.h"

APLOG_USE_MODULE(influx_metrics);

enum { EMPTY = 0, WRITING = 1, READY = 2 };

#define STATE(epoch, st) (((epoch) << 2) | (st))
#define EPOCH_MASK 0x3fffffffu

typedef struct {
    _Atomic uint32_t state;     /* STATE(epoch, EMPTY, WRITING or READY) */
    uint32_t hash;
    char text[IMX_REQTAG_TEXT_MAX];
} entry_t;

typedef struct {
    _Atomic uint32_t used;      /* values admitted */
    uint32_t pad;
} table_hdr_t;

/* The parent's bookkeeping of one bank; children never read it. */
typedef struct {
    uint32_t epoch;
    uint32_t live;              /* children of gen_first..gen_last alive */
    ap_generation_t gen_first, gen_last;
} bank_t;

typedef struct {
    uint32_t ntables, max_values, nslots;   /* nslots: entries per table */
    uint32_t cur;               /* the bank of the newest generation */
    bank_t bank[2];
} tags_shm_t;

static tags_shm_t *shm;
static uint32_t my_bank, my_epoch;
/* The segment for reading references, also in a generation without
 * InfluxMetricsTagFrom (it may send points an older one recorded). */
static tags_shm_t *seg;

/* A reference: 1 + the entry's index over both banks in its low REF_BITS,
 * the low 8 bits of the epoch it was written in above them, so that a
 * reference to an entry emptied since reads as gone, never as another
 * value. */
#define REF_BITS 23
#define REF_MAX ((1u << REF_BITS) - 1)

#define USERDATA_KEY "imx_reqtags_shm"

/* Table idx of a bank in segment t (this process's `shm`, or `seg`). */
static table_hdr_t *table_in(const tags_shm_t *t, uint32_t bank, uint32_t idx)
{
    size_t bytes = sizeof(table_hdr_t) + (size_t)t->nslots * sizeof(entry_t);

    return (table_hdr_t *)((char *)t + APR_ALIGN_DEFAULT(sizeof(*t))
                           + ((size_t)bank * t->ntables + idx) * bytes);
}

static table_hdr_t *table(uint32_t bank, int idx)
{
    return table_in(shm, bank, (uint32_t)idx);
}

apr_status_t imx_reqtags_init(server_rec *s, int ntables, int max_values)
{
    /* Twice the cap keeps probe chains short. */
    uint32_t nslots = (uint32_t)max_values * 2;
    ap_generation_t gen = 0;
    int created;

    shm = NULL;
    seg = imx_shm_find(s, USERDATA_KEY);
    if (ntables <= 0) {
        return APR_SUCCESS;
    }
    ap_mpm_query(AP_MPMQ_GENERATION, &gen);
    shm = imx_shm_once(s, USERDATA_KEY, APR_ALIGN_DEFAULT(sizeof(tags_shm_t))
                       + 2 * (size_t)ntables * (sizeof(table_hdr_t) + nslots * sizeof(entry_t)),
                       &created);
    if (!shm) {
        return APR_ENOMEM;
    }
    if (created) {          /* sized at first start, as the other segments */
        shm->ntables = (uint32_t)ntables;
        shm->max_values = (uint32_t)max_values;
        shm->nslots = nslots;
        shm->cur = 0;
        shm->bank[0].gen_first = shm->bank[0].gen_last = gen;
        shm->bank[1].gen_first = 1;     /* an empty range: no generation yet */
        shm->bank[1].gen_last = 0;
    }
    /* The configuration is read twice at start-up: same generation, no
     * restart. */
    else if (gen != shm->bank[shm->cur].gen_last) {
        uint32_t next = 1 - shm->cur;
        bank_t *b = &shm->bank[next];

        if (!b->live) {
            b->epoch = (b->epoch + 1) & EPOCH_MASK;
            for (uint32_t i = 0; i < shm->ntables; i++) {
                atomic_store(&table(next, (int)i)->used, 0);
            }
            b->gen_first = b->gen_last = gen;
            shm->cur = next;
        }
        else {
            shm->bank[shm->cur].gen_last = gen;
            ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s, "IMX0008: InfluxMetricsTagFrom "
                         "values admitted so far stay admitted: %u children of an older "
                         "generation still use the other table; a later restart resets "
                         "them", b->live);
        }
    }
    my_bank = shm->cur;
    my_epoch = shm->bank[my_bank].epoch;
    seg = shm;
    return APR_SUCCESS;
}

void imx_reqtags_child_status(server_rec *s, pid_t pid, ap_generation_t gen, int slot,
                           mpm_child_status state)
{
    void *data = NULL;
    tags_shm_t *t;

    (void)pid; (void)slot;
    if (state != MPM_CHILD_STARTED && state != MPM_CHILD_EXITED) {
        return;
    }
    /* From the process pool, not the static: this generation may have no
     * InfluxMetricsTagFrom while older children still use a bank. */
    data = imx_shm_find(s, USERDATA_KEY);
    t = data;
    if (!t) {
        return;
    }
    for (int i = 0; i < 2; i++) {
        bank_t *b = &t->bank[i];

        if (gen >= b->gen_first && gen <= b->gen_last) {
            if (state == MPM_CHILD_STARTED) {
                b->live++;
            }
            else if (b->live) {
                b->live--;
            }
        }
    }
}

static uint32_t fnv1a(const char *s)
{
    uint32_t h = 2166136261u;

    while (*s) {
        h = (h ^ (unsigned char)*s++) * 16777619u;
    }
    return h ? h : 1;
}

/* An entry's state in this process's epoch. */
static uint32_t state_of(uint32_t word)
{
    return (word >> 2) == my_epoch ? (word & 3) : EMPTY;
}

static uint32_t ref_of(uint32_t bank, int idx, uint32_t i)
{
    uint64_t g = ((uint64_t)bank * shm->ntables + (uint32_t)idx) * shm->nslots + i + 1;

    return g > REF_MAX ? 0 : (uint32_t)g | (my_epoch & 0xff) << REF_BITS;
}

const char *imx_reqtags_text(uint32_t ref)
{
    uint64_t g = (ref & REF_MAX);
    uint32_t per_bank, bank, idx, i, word;
    entry_t *e;

    if (!seg || !g || (ref & IMX_REQTAG_FIXED)) {
        return NULL;
    }
    g--;
    per_bank = seg->ntables * seg->nslots;
    if (!per_bank || g >= 2 * (uint64_t)per_bank) {
        return NULL;
    }
    bank = (uint32_t)(g / per_bank);
    idx = (uint32_t)(g % per_bank) / seg->nslots;
    i = (uint32_t)(g % seg->nslots);
    e = (entry_t *)(table_in(seg, bank, idx) + 1) + i;
    word = atomic_load_explicit(&e->state, memory_order_acquire);
    if ((word & 3) != READY || ((word >> 2) & 0xff) != (ref >> REF_BITS)) {
        return NULL;
    }
    return e->text;
}

uint32_t imx_reqtags_intern(int idx, const char *key_escaped, const char *value,
                         uint32_t other_ref)
{
    char text[IMX_REQTAG_TEXT_MAX];
    size_t kl = strlen(key_escaped), vl = strlen(value), n;
    table_hdr_t *t;
    entry_t *ents;
    uint32_t h, i;

    if (!shm || idx < 0 || (uint32_t)idx >= shm->ntables || !vl
        || 2 + kl + 1 >= sizeof(text)) {
        return other_ref;
    }
    text[0] = ',';
    memcpy(text + 1, key_escaped, kl);
    text[1 + kl] = '=';
    /* Too long once escaped: imx_escape stops at the end of text. */
    n = imx_escape(text + 2 + kl, sizeof(text) - 2 - kl, value, vl, IMX_ESC_TAG);
    if (n == (size_t)-1 || !ref_of(my_bank, idx, shm->nslots - 1)) {
        return other_ref;
    }
    t = table(my_bank, idx);
    ents = (entry_t *)(t + 1);
    h = fnv1a(text);
    for (uint32_t probe = 0; probe < shm->nslots; probe++) {
        entry_t *e;
        uint32_t word, st;

        i = (h + probe) % shm->nslots;
        e = &ents[i];
        word = atomic_load_explicit(&e->state, memory_order_acquire);
        st = state_of(word);
        for (int spin = 0; st == WRITING && spin < 1000; spin++) {
            word = atomic_load_explicit(&e->state, memory_order_acquire);
            st = state_of(word);
        }
        if (st == READY) {
            if (e->hash == h && !strcmp(e->text, text)) {
                return ref_of(my_bank, idx, i);
            }
            continue;
        }
        if (st == WRITING) {
            continue;           /* a writer that died; pass it by */
        }
        /* EMPTY, or left by an earlier epoch: the value is new. Admit it if
         * the cap allows. */
        if (atomic_fetch_add(&t->used, 1) >= shm->max_values) {
            atomic_fetch_sub(&t->used, 1);
            return other_ref;
        }
        if (!atomic_compare_exchange_strong(&e->state, &word, STATE(my_epoch, WRITING))) {
            atomic_fetch_sub(&t->used, 1);
            probe--;            /* someone took it: look at it again */
            continue;
        }
        e->hash = h;
        memcpy(e->text, text, strlen(text) + 1);
        atomic_store_explicit(&e->state, STATE(my_epoch, READY), memory_order_release);
        return ref_of(my_bank, idx, i);
    }
    return other_ref;
}
