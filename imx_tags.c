/*
 * imx_tags.c: interned request tags in shared memory (see imx_tags.h).
 *
 * Each table is open-addressed by a hash of the escaped text. An entry is
 * claimed with a CAS of its state from EMPTY to WRITING by the first thread
 * (of any child) that meets a new value, filled, then published as READY
 * with a release store; readers compare only READY entries, and a reader
 * that meets a WRITING entry waits for it briefly (the writer copies at most
 * IMX_TAG_TEXT_MAX bytes) before treating it as a miss. The number of
 * entries claimed, not the table's size, enforces the cap.
 */
#include <stdatomic.h>
#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"

#include "apr_shm.h"

#include "batch.h"
#include "imx_status.h"
#include "imx_tags.h"

APLOG_USE_MODULE(influx_metrics);

enum { EMPTY = 0, WRITING = 1, READY = 2 };

typedef struct {
    _Atomic uint32_t state;
    uint32_t hash;
    char text[IMX_TAG_TEXT_MAX];
} entry_t;

typedef struct {
    _Atomic uint32_t used;      /* values admitted */
    uint32_t pad;
} table_hdr_t;

typedef struct {
    uint32_t ntables, max_values, nslots;   /* nslots: entries per table */
} tags_shm_t;

static tags_shm_t *shm;

#define USERDATA_KEY "imx_tags_shm"

static size_t table_bytes(void)
{
    return sizeof(table_hdr_t) + (size_t)shm->nslots * sizeof(entry_t);
}

static table_hdr_t *table(int idx)
{
    return (table_hdr_t *)((char *)shm + APR_ALIGN_DEFAULT(sizeof(*shm))
                           + (size_t)idx * table_bytes());
}

apr_status_t imx_tags_init(server_rec *s, int ntables, int max_values)
{
    /* Twice the cap keeps probe chains short. */
    uint32_t nslots = (uint32_t)max_values * 2;
    int created;

    if (ntables <= 0) {
        return APR_SUCCESS;
    }
    shm = imx_shm_once(s, USERDATA_KEY, APR_ALIGN_DEFAULT(sizeof(tags_shm_t))
                       + (size_t)ntables * (sizeof(table_hdr_t) + nslots * sizeof(entry_t)),
                       &created);
    if (!shm) {
        return APR_ENOMEM;
    }
    if (created) {          /* sized at first start, as the other segments */
        shm->ntables = (uint32_t)ntables;
        shm->max_values = (uint32_t)max_values;
        shm->nslots = nslots;
    }
    return APR_SUCCESS;
}

static uint32_t fnv1a(const char *s)
{
    uint32_t h = 2166136261u;

    while (*s) {
        h = (h ^ (unsigned char)*s++) * 16777619u;
    }
    return h ? h : 1;
}

const char *imx_tags_intern(int idx, const char *key_escaped, const char *value,
                            const char *other_text)
{
    char text[IMX_TAG_TEXT_MAX];
    size_t kl = strlen(key_escaped), vl = strlen(value), n;
    table_hdr_t *t;
    entry_t *ents;
    uint32_t h, i;

    if (!shm || idx < 0 || (uint32_t)idx >= shm->ntables || !vl
        || 2 + kl + 1 >= sizeof(text)) {
        return other_text;
    }
    text[0] = ',';
    memcpy(text + 1, key_escaped, kl);
    text[1 + kl] = '=';
    /* Too long once escaped: imx_escape stops at the end of text. */
    n = imx_escape(text + 2 + kl, sizeof(text) - 2 - kl, value, vl, IMX_ESC_TAG);
    if (n == (size_t)-1) {
        return other_text;
    }
    t = table(idx);
    ents = (entry_t *)(t + 1);
    h = fnv1a(text);
    for (uint32_t probe = 0; probe < shm->nslots; probe++) {
        entry_t *e;
        uint32_t st;

        i = (h + probe) % shm->nslots;
        e = &ents[i];
        st = atomic_load_explicit(&e->state, memory_order_acquire);
        for (int spin = 0; st == WRITING && spin < 1000; spin++) {
            st = atomic_load_explicit(&e->state, memory_order_acquire);
        }
        if (st == READY) {
            if (e->hash == h && !strcmp(e->text, text)) {
                return e->text;
            }
            continue;
        }
        if (st == WRITING) {
            continue;           /* a writer that died; pass it by */
        }
        /* EMPTY: the value is new. Admit it if the cap allows. */
        if (atomic_fetch_add(&t->used, 1) >= shm->max_values) {
            atomic_fetch_sub(&t->used, 1);
            return other_text;
        }
        {
            uint32_t expect = EMPTY;
            if (!atomic_compare_exchange_strong(&e->state, &expect, WRITING)) {
                atomic_fetch_sub(&t->used, 1);
                probe--;        /* someone took it: look at it again */
                continue;
            }
        }
        e->hash = h;
        memcpy(e->text, text, strlen(text) + 1);
        atomic_store_explicit(&e->state, READY, memory_order_release);
        return e->text;
    }
    return other_text;
}
