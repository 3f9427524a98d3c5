/*
 * imx_prom.c: request-duration histograms for the Prometheus endpoint
 * (see imx_prom.h): bucket layouts, the per-slot tables written on the
 * request path, and the accumulator a scrape sums them into.
 *
 * Layout of a table, so that only the pages of series in use are backed
 * (shared memory is backed page by page, on first touch, by reads too):
 *   header | keys[cap] | hash index[nindex] | (page aligned)
 *   bodies[cap] | the overflow series' body
 * Series are claimed in order, so keys[0..used) and their bodies are a
 * dense prefix and a reader walks only those. A body is zeroed when it is
 * claimed, never before. A body: sum of microseconds, sum of bytes, one
 * counter per bucket (together in the first cache lines: what every
 * request writes), then with exemplars one per bucket; bodies are rounded
 * to 64 bytes so that two series never share a cache line.
 *
 * Concurrency. Writers: request threads of every child that ever held the
 * slot (a slot's child can die and be replaced while a scrape reads).
 * Readers: scrapes in any child, reading only. Nothing is ever reset, so
 * every counter only grows and each load of one sees at least what an
 * earlier load saw: a scraper never sees a counter go back.
 *  - Claims go through the hash index: a slot goes from empty to BUSY by
 *    CAS, the claimer takes the next dense body, zeroes it, publishes the
 *    key, then the slot (release). A thread that meets BUSY spins a little
 *    (no system call); if the claimer is still not done (preempted, or it
 *    died) it looks further and may claim a second body for the same key,
 *    which every reader adds up by key. No free body, no slot: the overflow
 *    series counts the request, so no request is ever lost. A slot is
 *    never emptied again (a claim that finds the table full marks its slot
 *    DEAD), so a key's chain of slots is never cut.
 *  - A request adds its sums (relaxed), then its bucket with release, then
 *    offers its exemplar. A reader loads the exemplars, then the buckets
 *    (acquire), then the sums: an exemplar it read is of a request whose
 *    bucket it counted, and the sums cover every request it counted.
 *  - An exemplar is a sequence lock: its writer makes seq odd by CAS, which
 *    is also the try-lock (a request that finds it odd, or loses the CAS,
 *    leaves the exemplar to the other), writes, and makes seq even again;
 *    a reader copies and keeps the copy only if seq was even and unchanged
 *    around it. Every field is an atomic, so no access is a data race; the
 *    fields are stored with release and loaded with acquire, which orders
 *    them against seq without fences (x86: plain moves either way). A
 *    writer that dies in the middle leaves seq odd: that exemplar is no
 *    longer written nor read, its counts go on.
 *
 * Cost of imx_prom_record, in instructions (x86-64, gcc 12 -O2, callgrind
 * --toggle-collect=imx_prom_record, the slope between 0.1 and 1.1 million
 * calls of tests/unit/test_prom.c's "cost" mode; `make prom-cost`):
 *   series found in its home slot, no id                     58
 *   the same with an id, exemplar held (written < 1 ms ago)  75
 *   the same, exemplar written (a 36-byte id)               146
 *   table full: the overflow series, after probing          147
 * Of the 58: about 25 for the bucket (a branch-light binary search of
 * fixed length over the 32 bounds padded with UINT64_MAX: six compares,
 * the same cost for any layout), 20 for the hash and the slot, 3 atomic
 * adds. The slow paths (probing, claiming, exemplars) are out of line and
 * entered by a jump, so the common one saves no registers. An exemplar is
 * rewritten at most once a millisecond per series and bucket: under load
 * nearly every request stops at one load, and a hot series' exemplar line
 * is not fought over; when requests are rare enough for every one to
 * write it, its cost does not matter.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imx_prom.h"

#define BUSY 0xffffffffu
/* A slot given up by a claimer that found the table full: never empty
 * again, so that no key claimed past it while it was BUSY is cut off. */
#define DEAD 0xfffffffeu
#define LINE 64
#define PAGE 4096
/* Spins before giving up on a claimer: a claim takes well under a
 * microsecond unless it faults a new page in or is preempted. */
#define CLAIM_SPIN 512

_Static_assert(IMX_PROM_ID_MAX % 8 == 0, "ids are copied in words");

/* One bucket's exemplar (88 bytes). */
typedef struct {
    _Atomic uint32_t seq;       /* 0: never written; odd: being written */
    _Atomic uint32_t len;
    _Atomic int64_t ns;
    _Atomic uint64_t us;
    _Atomic uint64_t id[IMX_PROM_ID_MAX / 8];
} ex_t;

/* The start of a body; exemplars follow at ex_off. */
typedef struct {
    _Atomic uint64_t sum_us;
    _Atomic uint64_t bytes;
    _Atomic uint64_t b[];       /* nb + 1 */
} body_t;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    __asm__ __volatile__("" ::: "memory");
#endif
}

/* ------------------------------------------------------------------------- */
/* Bucket layouts                                                            */

static const uint64_t default_le[] = {
    1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 2500000, 5000000, 10000000
};

void imx_prom_buckets_default(imx_prom_buckets_t *b)
{
    b->n = sizeof(default_le) / sizeof(default_le[0]);
    memcpy(b->le_us, default_le, sizeof(default_le));
}

/* Seconds as decimal text into microseconds; NULL, or why not. */
static const char *parse_us(const char *s, size_t len, uint64_t *us)
{
    uint64_t ip = 0, fp = 0;
    size_t i = 0, idig = 0, fdig = 0;
    int neg = 0, fine = 0;

    if (len && (s[0] == '-' || s[0] == '+')) {
        neg = s[0] == '-';
        i++;
    }
    if ((len - i == 3 && !strncasecmp(s + i, "inf", 3))
        || (len - i == 8 && !strncasecmp(s + i, "infinity", 8))) {
        return neg ? "not above 0" : "the +Inf bucket is always there, implicitly";
    }
    for (; i < len && s[i] >= '0' && s[i] <= '9'; i++, idig++) {
        if (ip <= IMX_PROM_LE_LIMIT_US / 1000000) {
            ip = ip * 10 + (uint64_t)(s[i] - '0');
        }
    }
    if (i < len && s[i] == '.') {
        for (i++; i < len && s[i] >= '0' && s[i] <= '9'; i++, fdig++) {
            if (fdig < 6) {
                fp = fp * 10 + (uint64_t)(s[i] - '0');
            }
            else if (s[i] != '0') {
                fine = 1;
            }
        }
    }
    if (i < len || idig + fdig == 0) {
        return "not a number of seconds (such as 0.005 or 2.5)";
    }
    for (; fdig < 6; fdig++) {
        fp *= 10;
    }
    if (ip > IMX_PROM_LE_LIMIT_US / 1000000) {
        return "above the largest bound, 1000000000 seconds";
    }
    *us = ip * 1000000 + fp;
    if (neg) {
        return "not above 0";
    }
    if (fine) {
        return "finer than a microsecond";
    }
    if (*us == 0) {
        return "not above 0";
    }
    if (*us > IMX_PROM_LE_LIMIT_US) {
        return "above the largest bound, 1000000000 seconds";
    }
    return NULL;
}

/* err: the value (cut, non-printable bytes as '?') and why. */
static int fail(char *err, size_t errsz, const char *s, size_t len, const char *why)
{
    char shown[44];
    size_t n = len < 40 ? len : 40;

    for (size_t i = 0; i < n; i++) {
        shown[i] = s[i] >= 0x20 && s[i] < 0x7f && s[i] != '"' ? s[i] : '?';
    }
    if (len > n) {
        memcpy(shown + n, "...", 3);
        n += 3;
    }
    shown[n] = '\0';
    if (errsz) {
        snprintf(err, errsz, "\"%s\": %s", shown, why);
    }
    return -1;
}

static int add_value(imx_prom_buckets_t *b, const char *s, size_t len, char *err,
                     size_t errsz)
{
    const char *why = NULL;
    char prev[IMX_PROM_LE_MAX], msg[96];
    uint64_t us = 0;

    if ((why = parse_us(s, len, &us))) {
        return fail(err, errsz, s, len, why);
    }
    for (uint32_t i = 0; i < b->n; i++) {
        if (b->le_us[i] == us) {
            return fail(err, errsz, s, len, "given twice");
        }
    }
    if (b->n && us < b->le_us[b->n - 1]) {
        imx_prom_format_le(prev, b->le_us[b->n - 1]);
        snprintf(msg, sizeof(msg), "not above the bound before it (%s): bounds go up", prev);
        return fail(err, errsz, s, len, msg);
    }
    if (b->n >= IMX_PROM_BUCKETS_MAX) {
        return fail(err, errsz, s, len, "one bound more than the 32 allowed");
    }
    b->le_us[b->n++] = us;
    return 0;
}

int imx_prom_buckets_add(imx_prom_buckets_t *b, const char *arg, char *err, size_t errsz)
{
    return add_value(b, arg, strlen(arg), err, errsz);
}

int imx_prom_buckets_parse(imx_prom_buckets_t *b, const char *list, char *err, size_t errsz)
{
    const char *p = list;

    b->n = 0;
    for (;;) {
        size_t len;

        p += strspn(p, " \t,");
        if (!*p) {
            break;
        }
        len = strcspn(p, " \t,");
        if (add_value(b, p, len, err, errsz)) {
            return -1;
        }
        p += len;
    }
    if (!b->n) {
        if (errsz) {
            snprintf(err, errsz, "no bounds given (seconds, such as 0.005 0.05 0.5 5)");
        }
        return -1;
    }
    return 0;
}

size_t imx_prom_format_le(char *out, uint64_t us)
{
    char d[24], *o = out;
    int nd = 0, dp, exp;

    if (!us) {
        memcpy(out, "+Inf", 5);
        return 4;
    }
    for (uint64_t v = us; v; v /= 10) {
        d[nd++] = (char)('0' + v % 10);
    }
    for (int i = 0; i < nd / 2; i++) {
        char c = d[i];
        d[i] = d[nd - 1 - i];
        d[nd - 1 - i] = c;
    }
    dp = nd - 6;                /* the value is 0.d[0]d[1]... x 10^dp */
    while (nd > 1 && d[nd - 1] == '0') {
        nd--;
    }
    exp = dp - 1;
    if (exp < -4 || exp >= 6) {
        /* Go's %g for a shortest rendering: exponential out of 1e-4..1e6 */
        *o++ = d[0];
        if (nd > 1) {
            *o++ = '.';
            memcpy(o, d + 1, (size_t)nd - 1);
            o += nd - 1;
        }
        *o++ = 'e';
        *o++ = exp < 0 ? '-' : '+';
        exp = exp < 0 ? -exp : exp;
        *o++ = (char)('0' + exp / 10);
        *o++ = (char)('0' + exp % 10);
    }
    else if (dp <= 0) {
        *o++ = '0';
        *o++ = '.';
        memset(o, '0', (size_t)-dp);
        o += -dp;
        memcpy(o, d, (size_t)nd);
        o += nd;
    }
    else if (dp >= nd) {
        memcpy(o, d, (size_t)nd);
        o += nd;
        memset(o, '0', (size_t)(dp - nd));
        o += dp - nd;
        memcpy(o, ".0", 2);
        o += 2;
    }
    else {
        memcpy(o, d, (size_t)dp);
        o += dp;
        *o++ = '.';
        memcpy(o, d + dp, (size_t)(nd - dp));
        o += nd - dp;
    }
    *o = '\0';
    return (size_t)(o - out);
}

/* ------------------------------------------------------------------------- */
/* Tables                                                                    */

static uint32_t nindex_of(uint32_t cap)
{
    uint32_t n = 2;

    while (n < 2 * (uint64_t)cap) {
        n <<= 1;
    }
    return n;
}

static size_t round_up(size_t n, size_t to)
{
    return (n + to - 1) & ~(to - 1);
}

static uint32_t clamp_nb(uint32_t nb)
{
    return nb < 1 ? 1 : nb > IMX_PROM_BUCKETS_MAX ? IMX_PROM_BUCKETS_MAX : nb;
}

static size_t counters_size(uint32_t nb)
{
    return round_up(sizeof(body_t) + (nb + 1) * sizeof(uint64_t), LINE);
}

static size_t stride_of(uint32_t nb, int exemplars)
{
    return counters_size(nb) + (exemplars ? round_up((nb + 1) * sizeof(ex_t), LINE) : 0);
}

static size_t bodies_off(uint32_t cap)
{
    return round_up(sizeof(imx_prom_table_t) + (size_t)cap * sizeof(uint64_t)
                    + (size_t)nindex_of(cap) * sizeof(uint32_t), PAGE);
}

size_t imx_prom_table_size(uint32_t cap, uint32_t nbuckets, int exemplars)
{
    return bodies_off(cap) + ((size_t)cap + 1) * stride_of(clamp_nb(nbuckets), exemplars);
}

static _Atomic uint64_t *keys_of(const imx_prom_table_t *t)
{
    return (_Atomic uint64_t *)((char *)(uintptr_t)t + sizeof(*t));
}

static _Atomic uint32_t *index_of(const imx_prom_table_t *t)
{
    return (_Atomic uint32_t *)(keys_of(t) + t->cap);
}

static body_t *body(const imx_prom_table_t *t, uint32_t i)
{
    return (body_t *)((char *)(uintptr_t)t + t->boff + (size_t)i * t->stride);
}

static ex_t *ex_of(const imx_prom_table_t *t, body_t *s, unsigned b)
{
    return (ex_t *)((char *)s + t->ex_off) + b;
}

void imx_prom_init(imx_prom_table_t *t, uint32_t cap, const imx_prom_buckets_t *b, int exemplars)
{
    uint32_t nb = clamp_nb(b->n);

    t->cap = cap;
    t->nindex = nindex_of(cap);
    t->shift = 64u - (31u - (uint32_t)__builtin_clz(t->nindex));
    t->nb = nb;
    t->exemplars = exemplars != 0;
    t->stride = (uint32_t)stride_of(nb, t->exemplars);
    t->ex_off = (uint32_t)counters_size(nb);
    t->boff = (uint32_t)bodies_off(cap);
    t->pad = 0;
    for (uint32_t i = 0; i < IMX_PROM_BUCKETS_MAX; i++) {
        t->le_us[i] = i < nb ? b->le_us[i] : UINT64_MAX;
    }
    memset(keys_of(t), 0, (size_t)cap * sizeof(uint64_t));
    memset(index_of(t), 0, (size_t)t->nindex * sizeof(uint32_t));
    memset(body(t, cap), 0, t->stride);
    atomic_store(&t->used, 0);
}

void imx_prom_table_buckets(const imx_prom_table_t *t, imx_prom_buckets_t *b)
{
    b->n = t->nb;
    memcpy(b->le_us, t->le_us, sizeof(b->le_us[0]) * t->nb);
}

/* Bounds below us, by halving a window of the 32 padded bounds: the
 * number of them < us is the first bucket whose bound is >= us. */
static inline unsigned bucket_of(const uint64_t *le, uint64_t us)
{
    unsigned i = le[15] < us ? 16 : 0;

    i = le[i + 7] < us ? i + 8 : i;
    i = le[i + 3] < us ? i + 4 : i;
    i = le[i + 1] < us ? i + 2 : i;
    i = le[i] < us ? i + 1 : i;
    return le[i] < us ? i + 1 : i;
}

unsigned imx_prom_bucket(const imx_prom_table_t *t, uint64_t us)
{
    return bucket_of(t->le_us, us);
}

static inline uint32_t slot_of(const imx_prom_table_t *t, uint64_t key)
{
    /* Fibonacci hashing: keys are packed small integers, and the top bits
     * of the product depend on all of theirs. */
    return (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> t->shift);
}

/* The series for key from slot h on, claiming one if needed; NULL when
 * none can be had. */
static __attribute__((noinline)) body_t *find_slow(imx_prom_table_t *t, uint64_t key, uint32_t h)
{
    _Atomic uint64_t *keys = keys_of(t);
    _Atomic uint32_t *index = index_of(t);
    uint32_t mask = t->nindex - 1, probe = 0;

    while (probe < t->nindex) {
        uint32_t e = atomic_load_explicit(&index[h], memory_order_acquire), i;
        body_t *s;

        for (int spin = 0; e == BUSY && spin < CLAIM_SPIN; spin++) {
            cpu_relax();
            e = atomic_load_explicit(&index[h], memory_order_acquire);
        }
        if (e == BUSY || e == DEAD
            || (e && (e - 1 >= t->cap
                      || atomic_load_explicit(&keys[e - 1], memory_order_relaxed) != key))) {
            probe++;
            h = (h + 1) & mask;
            continue;
        }
        if (e) {
            return body(t, e - 1);
        }
        if (atomic_load_explicit(&t->used, memory_order_relaxed) >= t->cap) {
            return NULL;
        }
        if (!atomic_compare_exchange_strong_explicit(&index[h], &e, BUSY, memory_order_acq_rel,
                                                     memory_order_acquire)) {
            continue;           /* taken meanwhile: look at it again */
        }
        i = atomic_fetch_add_explicit(&t->used, 1, memory_order_relaxed);
        if (i >= t->cap) {
            atomic_store_explicit(&index[h], DEAD, memory_order_release);
            return NULL;
        }
        s = body(t, i);
        memset(s, 0, t->stride);
        atomic_store_explicit(&keys[i], key, memory_order_release);
        atomic_store_explicit(&index[h], i + 1, memory_order_release);
        return s;
    }
    return NULL;
}

/* Offers an exemplar: skipped when another request holds it. Out of line:
 * the request path without one stays small. */
static __attribute__((noinline)) void ex_write(ex_t *x, const char *rid, size_t len, uint64_t us,
                                               int64_t ns)
{
    uint32_t s = atomic_load_explicit(&x->seq, memory_order_relaxed), next;
    size_t words, rest;

    if ((s & 1)
        || !atomic_compare_exchange_strong_explicit(&x->seq, &s, s + 1, memory_order_acquire,
                                                    memory_order_relaxed)) {
        return;
    }
    /* Release stores: a reader that sees any of them also sees the odd
     * seq before them (no fences: TSan does not model them). */
    len = len < IMX_PROM_ID_MAX ? len : IMX_PROM_ID_MAX;
    atomic_store_explicit(&x->len, (uint32_t)len, memory_order_release);
    atomic_store_explicit(&x->ns, ns, memory_order_release);
    atomic_store_explicit(&x->us, us, memory_order_release);
    words = len / 8;
    rest = len % 8;
    for (size_t i = 0; i < words; i++) {
        uint64_t v;

        memcpy(&v, rid + 8 * i, 8);
        atomic_store_explicit(&x->id[i], v, memory_order_release);
    }
    if (rest) {
        uint64_t v;

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        if (words) {
            /* The last 8 bytes, shifted down to the ones not copied yet:
             * one load rather than a loop over up to 7 bytes. */
            memcpy(&v, rid + len - 8, 8);
            v >>= 8 * (8 - rest);
        }
        else
#endif
        {
            unsigned char tail[8] = { 0 };

            for (size_t k = 0; k < rest; k++) {
                tail[k] = (unsigned char)rid[8 * words + k];
            }
            memcpy(&v, tail, 8);
        }
        atomic_store_explicit(&x->id[words], v, memory_order_release);
    }
    /* Even again; never 0 (never written) when seq wraps. */
    next = s + 2 ? s + 2 : 2;
    atomic_store_explicit(&x->seq, next, memory_order_release);
}

static inline void count(imx_prom_table_t *t, body_t *s, unsigned b, uint64_t us,
                         uint64_t bytes_sent, const char *rid, size_t rid_len, int64_t now_ns)
{
    atomic_fetch_add_explicit(&s->sum_us, us, memory_order_relaxed);
    if (bytes_sent) {
        atomic_fetch_add_explicit(&s->bytes, bytes_sent, memory_order_relaxed);
    }
    /* The count last: a reader that counts this request sees its sums. */
    atomic_fetch_add_explicit(&s->b[b], 1, memory_order_release);
    if (rid_len && t->exemplars && rid) {
        ex_t *x = ex_of(t, s, b);
        int64_t prev = atomic_load_explicit(&x->ns, memory_order_relaxed);

        /* One in a millisecond at most: under load, most requests stop at
         * the load above, and the line is not fought over. Earlier (or
         * none, 0): the clock was set back; written. */
        if (!prev || (uint64_t)now_ns - (uint64_t)prev >= IMX_PROM_EX_HOLD_NS) {
            ex_write(x, rid, rid_len, us, now_ns);
        }
    }
}

/* The request of a series not in its home slot: probing, claiming, the
 * overflow series. Out of line, and with imx_prom_record's own arguments
 * so that calling it is a jump: the common path saves no registers. */
static __attribute__((noinline)) void record_slow(imx_prom_table_t *t, uint64_t key, uint64_t us,
                                                  uint64_t bytes_sent, const char *rid,
                                                  size_t rid_len, int64_t now_ns)
{
    body_t *s = NULL;

    if (key - 1 < IMX_PROM_OVERFLOW - 1) {     /* neither 0 nor the overflow */
        s = find_slow(t, key, slot_of(t, key));
    }
    count(t, s ? s : body(t, t->cap), bucket_of(t->le_us, us), us, bytes_sent, rid, rid_len,
          now_ns);
}

void imx_prom_record(imx_prom_table_t *t, uint64_t key, uint64_t us, uint64_t bytes_sent,
                     const char *rid, size_t rid_len, int64_t now_ns)
{
    uint32_t e = atomic_load_explicit(&index_of(t)[slot_of(t, key)], memory_order_acquire);

    /* e - 1 < cap: neither empty (0), BUSY nor DEAD. Key 0 and the overflow key
     * never match: a published slot's key is neither (record_slow never
     * claims them). */
    if (e - 1 < t->cap
        && atomic_load_explicit(&keys_of(t)[e - 1], memory_order_relaxed) == key) {
        count(t, body(t, e - 1), bucket_of(t->le_us, us), us, bytes_sent, rid, rid_len, now_ns);
        return;
    }
    record_slow(t, key, us, bytes_sent, rid, rid_len, now_ns);
}

/* ------------------------------------------------------------------------- */
/* Accumulators                                                              */

typedef struct {
    uint64_t key;
    uint32_t i;
} key_ref_t;

struct imx_prom_acc {
    imx_prom_buckets_t b;
    int exemplars;
    uint32_t n, cap;            /* series, room for them */
    imx_prom_series_t *s;
    imx_prom_exemplar_t *ex;    /* cap x (nb + 1); len 0: none */
    uint32_t *index, nindex;    /* i + 1 by key hash, 0 empty */
    key_ref_t *order;           /* s by key, when sorted (cap entries) */
    int sorted;
};

imx_prom_acc_t *imx_prom_acc_new(const imx_prom_buckets_t *b, int exemplars)
{
    imx_prom_acc_t *a = calloc(1, sizeof(*a));

    if (a) {
        a->b = *b;
        a->b.n = clamp_nb(b->n);
        a->exemplars = exemplars != 0;
    }
    return a;
}

void imx_prom_acc_free(imx_prom_acc_t *a)
{
    if (a) {
        free(a->s);
        free(a->ex);
        free(a->index);
        free(a->order);
        free(a);
    }
}

static uint32_t acc_slot(uint64_t key, uint32_t mask)
{
    return (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & mask;
}

/* Room for more series in a, so that adding a table cannot fail half way. */
static int acc_reserve(imx_prom_acc_t *a, uint32_t more)
{
    size_t nbk = a->b.n + 1, want = (size_t)a->n + more, cap = a->cap;
    uint32_t nindex = 16, *index;

    if (want <= a->cap) {
        return 0;
    }
    while (cap < want) {
        cap = cap ? cap * 2 : 64;
    }
    if (cap > UINT32_MAX / 4) {
        return IMX_PROM_ENOMEM;
    }
    {
        imx_prom_series_t *s = realloc(a->s, cap * sizeof(*s));
        if (!s) {
            return IMX_PROM_ENOMEM;
        }
        a->s = s;
    }
    if (a->exemplars) {
        imx_prom_exemplar_t *ex = realloc(a->ex, cap * nbk * sizeof(*ex));
        if (!ex) {
            return IMX_PROM_ENOMEM;
        }
        a->ex = ex;
    }
    while (nindex < 2 * cap) {
        nindex <<= 1;
    }
    {
        key_ref_t *order = realloc(a->order, cap * sizeof(*order));
        if (!order) {
            return IMX_PROM_ENOMEM;
        }
        a->order = order;
    }
    if (!(index = calloc(nindex, sizeof(*index)))) {
        return IMX_PROM_ENOMEM;
    }
    for (uint32_t i = 0; i < a->n; i++) {
        uint32_t h = acc_slot(a->s[i].key, nindex - 1);
        while (index[h]) {
            h = (h + 1) & (nindex - 1);
        }
        index[h] = i + 1;
    }
    free(a->index);
    a->index = index;
    a->nindex = nindex;
    a->cap = (uint32_t)cap;
    return 0;
}

/* The series of key, new if needed (acc_reserve made room). */
static uint32_t acc_get(imx_prom_acc_t *a, uint64_t key)
{
    uint32_t mask = a->nindex - 1, h = acc_slot(key, mask), i;

    for (; a->index[h]; h = (h + 1) & mask) {
        if (a->s[a->index[h] - 1].key == key) {
            return a->index[h] - 1;
        }
    }
    i = a->n++;
    memset(&a->s[i], 0, sizeof(a->s[i]));
    a->s[i].key = key;
    if (a->exemplars) {
        memset(&a->ex[(size_t)i * (a->b.n + 1)], 0, (a->b.n + 1) * sizeof(*a->ex));
    }
    a->index[h] = i + 1;
    a->sorted = 0;
    return i;
}

/* A copy of exemplar x, if one is there and was not being written. */
static int ex_read(const ex_t *x, imx_prom_exemplar_t *out)
{
    for (int tries = 0; tries < 4; tries++) {
        uint32_t s1 = atomic_load_explicit(&x->seq, memory_order_acquire), len;

        if (!s1) {
            return 0;
        }
        if (s1 & 1) {
            cpu_relax();
            continue;
        }
        /* Acquire loads: the seq load below comes after them, and sees
         * the odd seq of a writer whose store any of them read. */
        len = atomic_load_explicit(&x->len, memory_order_acquire);
        out->len = len < IMX_PROM_ID_MAX ? len : IMX_PROM_ID_MAX;
        out->ns = atomic_load_explicit(&x->ns, memory_order_acquire);
        out->us = atomic_load_explicit(&x->us, memory_order_acquire);
        for (size_t w = 0; w < IMX_PROM_ID_MAX / 8; w++) {
            uint64_t v = atomic_load_explicit(&x->id[w], memory_order_acquire);
            memcpy(out->id + w * 8, &v, 8);
        }
        if (atomic_load_explicit(&x->seq, memory_order_relaxed) == s1) {
            return out->len != 0;
        }
    }
    return 0;
}

static void acc_body(imx_prom_acc_t *a, const imx_prom_table_t *t, uint64_t key, body_t *s)
{
    imx_prom_exemplar_t ex[IMX_PROM_BUCKETS_MAX + 1];
    uint64_t b[IMX_PROM_BUCKETS_MAX + 1], count = 0, sum, bytes;
    unsigned nbk = t->nb + 1;
    int want_ex = a->exemplars && t->exemplars;
    imx_prom_series_t *d;
    uint32_t i;

    /* In this order: see the file's header. */
    for (unsigned k = 0; want_ex && k < nbk; k++) {
        if (!ex_read(ex_of(t, s, k), &ex[k])) {
            ex[k].len = 0;
        }
    }
    for (unsigned k = 0; k < nbk; k++) {
        b[k] = atomic_load_explicit(&s->b[k], memory_order_acquire);
        count += b[k];
    }
    if (!count) {
        return;                 /* claimed, no request done yet */
    }
    sum = atomic_load_explicit(&s->sum_us, memory_order_relaxed);
    bytes = atomic_load_explicit(&s->bytes, memory_order_relaxed);
    i = acc_get(a, key);
    d = &a->s[i];
    d->count += count;
    d->sum_us += sum;
    d->bytes += bytes;
    for (unsigned k = 0; k < nbk; k++) {
        d->b[k] += b[k];
    }
    for (unsigned k = 0; want_ex && k < nbk; k++) {
        imx_prom_exemplar_t *e = &a->ex[(size_t)i * nbk + k];

        if (ex[k].len && (!e->len || ex[k].ns > e->ns)) {
            *e = ex[k];
        }
    }
}

int imx_prom_acc_add(imx_prom_acc_t *a, const imx_prom_table_t *t)
{
    _Atomic uint64_t *keys = keys_of(t);
    uint32_t n = atomic_load_explicit(&t->used, memory_order_acquire);
    int rc;

    if (t->nb != a->b.n || memcmp(t->le_us, a->b.le_us, t->nb * sizeof(uint64_t))) {
        return IMX_PROM_ELAYOUT;
    }
    n = n < t->cap ? n : t->cap;
    if ((rc = acc_reserve(a, n + 1))) {
        return rc;
    }
    for (uint32_t i = 0; i < n; i++) {
        uint64_t key = atomic_load_explicit(&keys[i], memory_order_acquire);

        if (key) {              /* 0: being claimed */
            acc_body(a, t, key, body(t, i));
        }
    }
    acc_body(a, t, IMX_PROM_OVERFLOW, body(t, t->cap));
    return 0;
}

uint32_t imx_prom_acc_len(const imx_prom_acc_t *a)
{
    return a->n;
}

static int by_key(const void *x, const void *y)
{
    uint64_t kx = ((const key_ref_t *)x)->key, ky = ((const key_ref_t *)y)->key;

    return kx < ky ? -1 : kx > ky;
}

const imx_prom_series_t *imx_prom_acc_series(imx_prom_acc_t *a, uint32_t i)
{
    if (i >= a->n) {
        return NULL;
    }
    if (!a->sorted) {
        /* order has room for cap entries: acc_reserve made it. Keys are
         * unique, so the order of adding cannot show through. */
        for (uint32_t k = 0; k < a->n; k++) {
            a->order[k] = (key_ref_t){ a->s[k].key, k };
        }
        qsort(a->order, a->n, sizeof(*a->order), by_key);
        a->sorted = 1;
    }
    return &a->s[a->order[i].i];
}

const imx_prom_exemplar_t *imx_prom_acc_exemplar(const imx_prom_acc_t *a,
                                                 const imx_prom_series_t *s, unsigned b)
{
    const imx_prom_exemplar_t *e;

    if (!a->exemplars || b > a->b.n) {
        return NULL;
    }
    e = &a->ex[(size_t)(s - a->s) * (a->b.n + 1) + b];
    return e->len ? e : NULL;
}

const imx_prom_buckets_t *imx_prom_acc_buckets(const imx_prom_acc_t *a)
{
    return &a->b;
}
