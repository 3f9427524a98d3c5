/*
 * batch.c: the per-process bounded buffer and its flusher thread.
 *
 * The buffer
 *   A ring of `capacity` (a power of two) cells of 64 bytes each: a sequence
 *   number and one imx_point_t. It is allocated once, from the pool handed to
 *   imx_engine_create(), and never grows. Producers are the worker threads of
 *   one child (many); the consumer is the flusher (one). The design is
 *   Vyukov's bounded queue, restricted to a single consumer:
 *
 *   Invariants, with head = cells claimed by producers so far and tail = cells
 *   consumed by the flusher so far (both only grow, 64-bit, never wrap):
 *     - tail <= head <= tail + capacity.
 *     - cell i % capacity holds seq == i + 1 once the producer that claimed
 *       index i has finished writing it, and seq == i + capacity once the
 *       consumer has read it (free for the producer of index i + capacity).
 *     - recorded == head; every recorded point ends as exactly one of sent,
 *       rejected, dropped_retry, dropped_exit, or is still buffered (in the
 *       ring, the batch being sent, or the retry buffer). Points refused because the ring was full
 *       were never recorded and are counted in dropped_full.
 *
 *   Memory ordering: a producer claims an index with a relaxed CAS on head
 *   (the index is all it needs; no data is published through head), writes
 *   the point into the cell, and publishes it with a release store of seq.
 *   The consumer reads seq with acquire before it reads the point, and frees
 *   the cell with a release store of seq = index + capacity, which the next
 *   producer of that cell reads with acquire before overwriting it.
 *
 *   Drop policy: a producer that finds its cell not yet freed (the ring is
 *   full) drops its own point, counts it in dropped_full and returns at once.
 *   The request path never waits for the flusher, never takes a lock and
 *   never allocates. Older points are kept: they are already on their way.
 *
 * The flusher
 *   One thread per process. It sleeps in poll() on a pipe until the flush
 *   interval passes or a producer whose index completes a batch writes a byte
 *   to it (a full pipe just means a wake-up is already pending). It then
 *   drains the ring in batches of batch_size points, encodes them as line
 *   protocol, optionally gzips them and hands them to the send callback. It
 *   returns to its loop at least once per interval, so the tick (summaries,
 *   the module's own counters) is never starved by a steady stream of full
 *   batches; and a cell claimed but not yet published (its producer was
 *   preempted) makes it wait a millisecond, not spin.
 *
 * Exit
 *   imx_engine_stop() may run in a signal handler (prefork stops children
 *   from SIGTERM's). It only sets a flag and a deadline, bounds the POST in
 *   flight through send_limit, writes to the wake pipe and poll()s the done
 *   pipe. The flusher itself does the final tick and flush, counts what it
 *   could not send, logs, calls on_exit and writes the done pipe. The
 *   flusher is a detached pthread whose buffers are malloc'd by itself: if it
 *   overruns the deadline, the caller goes on and the process exits around
 *   it, but nothing it touches has been freed.
 *
 * The retry buffer
 *   A batch the backend could not take (down, slow, 429, 5xx) is copied into
 *   a FIFO of encoded batches, bounded by retry_buffer bytes, and retried with
 *   exponential backoff and jitter (or after the backend's Retry-After). While
 *   it backs off, the flusher keeps draining the ring into the FIFO, so the
 *   ring stays free for the request path; when the FIFO is full its oldest
 *   batch is dropped and its points counted (dropped_retry), as is a batch
 *   that has failed for longer than retry_max_time. Memory is therefore
 *   bounded by the ring + retry_buffer + one batch being encoded. Order is
 *   kept: nothing new is sent while older batches wait.
 *
 *   With conf.retry_shared, retry_buffer bounds the FIFOs of every engine
 *   sharing the counter (the children of a server) together: each batch's
 *   pages are reserved there before it is kept and given back when it goes.
 *   An engine that finds the budget taken by others drops (or spools) its
 *   own oldest batches first, then the new one.
 *
 *   At stop it sends what is left within shutdown_timeout, and counts what it
 *   could not send as dropped_exit. So, at any time:
 *     recorded == sent + rejected + dropped_retry + dropped_exit + to_spool
 *                 + buffered.
 *   The counters live where the caller says (imx_counters_t, shared memory in
 *   the module), so this holds even for a process that died.
 *
 * The spool (optional, spool.c)
 *   With a spool, nothing is dropped for want of memory or time: batches the
 *   retry buffer cannot keep (full, older than retry_max_time, larger than
 *   it) are written to the spool instead, oldest first, gathered into files
 *   of up to batch_size points. At exit the flusher sends for the first half
 *   of shutdown_timeout (and does not wait out a backoff that ends later),
 *   then writes the retry buffer and the rest of the ring, encoded, to the
 *   spool in the second half; only what is left at the deadline is
 *   dropped_exit. Points are counted in to_spool once their write is over,
 *   whether it succeeded or not (a failed write is dropped_spool too), so a
 *   process killed mid-write still holds them: lost_in_crash, not to_spool.
 *
 *   Sending spooled files: once per flush interval, after the ring's batches,
 *   while the backend is healthy (the retry buffer empty, no backoff under
 *   way) and no full batch of new points waits, for at most half the
 *   interval (at least one file). A file is one POST (split in halves on a
 *   413, and settled only when every part is), deleted once the backend
 *   acknowledged it; then its points are counted in unspooled (or, refused,
 *   in dropped_spool). A file that fails stays for later, marked "maybe
 *   stored" when the POST may have reached the backend. Its parts already
 *   stored are sent again with it then; InfluxDB overwrites them with the
 *   same points, and nothing is counted twice.
 */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <pthread.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <apr_thread_mutex.h>
#include <zlib.h>

#include "batch.h"
#include "spool.h"

#define CACHE_LINE 64

typedef struct cell {
    _Atomic uint64_t seq;
    imx_point_t pt;
} cell_t;

/* A cell is one cache line: neighbours never share one. */
_Static_assert(sizeof(cell_t) == CACHE_LINE, "cell must fill one cache line");

/* The flusher's cache of encoded series texts (imx_encode_series), so that
 * most points cost one copy and their numbers: direct-mapped by the point's
 * indices. Texts longer than an entry are encoded each time. */
#define PCACHE_N 256
#define PCACHE_TEXT 236
typedef struct {
    uint64_t k1, k2;
    uint32_t len;               /* 0: empty */
    char text[PCACHE_TEXT];
} pcache_ent_t;

/* Repeated failures are logged at most once per this interval. */
#define FAIL_LOG_INTERVAL apr_time_from_sec(10)

/* With a spool, the directory is scanned at least this often even when the
 * shared gauge says it holds no file (files put there by hand, a gauge left
 * low by a process killed mid-way). */
#define SPOOL_RESCAN apr_time_from_sec(5)

/* Line protocol being built (malloc'd, grown as needed). */
typedef struct lpbuf {
    char *buf;
    size_t len, cap;
} lpbuf_t;

/* A batch waiting in the retry buffer: one failed POST, or several small
 * ones gathered (rq_append), up to batch_size points, its other lines
 * always first. */
typedef struct rbatch {
    struct rbatch *next, *prev;
    uint32_t n;                 /* request points in it */
    uint32_t extra;             /* lines before them that are not request points
                                 * (the module's counters, summaries) */
    int maybe_stored;           /* a POST of it failed after the body went out:
                                 * the backend may have stored it anyway */
    int posted;                 /* it was POSTed: it is sent again as it was */
    apr_time_t first_fail;      /* of its oldest part */
    apr_time_t last_fail;       /* of its newest part: it expires by this one,
                                 * so no point goes before retry_max_time */
    size_t len;
    size_t size;                /* bytes it takes, header included: its pages
                                 * with a shared budget (what it costs there) */
    char data[];
} rbatch_t;

/* Small failed batches are gathered into the newest retry batch while it
 * is younger than this share of retry_max_time (or RQ_GATHER_MAX): its
 * oldest points then wait at most that much longer than retry_max_time. */
#define RQ_GATHER_SHARE 8
#define RQ_GATHER_MAX apr_time_from_sec(60)
#define PAGE_ROUND(x) (((x) + 4095) & ~(size_t)4095)

struct imx_engine {
    imx_engine_conf_t conf;
    size_t prefix_len;
    uint64_t mask;
    cell_t *cells;
    char *rids;                 /* IMX_RID_MAX bytes per cell, or NULL */
    imx_counters_t *c;          /* conf.counters, or own */
    int wake_r, wake_w;         /* producers and stop wake the flusher */
    int done_r, done_w;         /* the flusher says it has finished */
    _Atomic int stopping;       /* read by producers: refuse new points */

    /* Owned by the flusher (or by the caller of imx_engine_flush_now). */
    _Alignas(CACHE_LINE) uint64_t tail;
    lpbuf_t wb;                 /* the batch being built and sent */
    lpbuf_t side;               /* points moved out of the ring while a POST
                                 * waits (send_wait) */
    int in_wait;
    uint32_t work_n;            /* request points in body */
    uint32_t work_extra;        /* lines of other points before them */
    unsigned char *gz;
    size_t gz_cap;
    z_stream zs;
    int zs_ready;
    rbatch_t *rq_head, *rq_tail;
    size_t rq_bytes;            /* of the batches in the queue */
    size_t rq_held;             /* of every batch allocated, the one being
                                 * sent again included: what is reserved in
                                 * conf.retry_shared */
    uint64_t rq_points;
    unsigned attempt;           /* consecutive failures at the queue's head */
    apr_time_t retry_at;
    apr_time_t last_fail_log;
    unsigned long fails_unlogged;
    int self_due;
    uint64_t self_last_sum;
    pcache_ent_t *pcache;       /* PCACHE_N, or NULL (out of memory) */
    int pcache_tried;
    imx_ts_cache_t tsc;
    int final;                  /* in the last drain, at exit */
    char *xbuf;                 /* lines handed to imx_engine_submit(), sent at the
                                 * head of the next batch */
    size_t xlen, xcap;
    uint32_t xlines;
    uint32_t rng;
    apr_time_t next_flush;
    char *sacc;                 /* batches gathered for one spool file */
    size_t sacc_len, sacc_cap;
    uint32_t sacc_n, sacc_extra;
    int sacc_maybe;
    apr_time_t spool_log_at, spool_scan_at;
    unsigned long spool_unlogged;

    char last_error[200];       /* under mu */
    apr_thread_mutex_t *mu;
    pthread_t thread;
    _Atomic int has_thread;
    _Atomic int finished;       /* the flusher has ended (or never ran) */
    _Atomic apr_time_t stop_deadline;   /* 0 until imx_engine_stop() */
    _Atomic apr_time_t send_deadline;   /* sends end here: stop_deadline, or
                                         * earlier to leave time for the spool */

    imx_counters_t own;
};

static void logf_(imx_engine_t *e, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void logf_(imx_engine_t *e, int level, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    if (!e->conf.log) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);  /* NOLINT(clang-analyzer-valist.Uninitialized): va_start above */
    va_end(ap);
    e->conf.log(e->conf.log_ctx, level, msg);
}

static void rb_free(imx_engine_t *e, rbatch_t *rb);

/* Frees what the flusher allocated; by the flusher itself at its exit (or
 * by imx_engine_stop when there is no flusher), never from a pool cleanup,
 * which prefork may run inside a signal handler. */
static void free_buffers(imx_engine_t *e)
{
    rbatch_t *rb, *next;

    for (rb = e->rq_head; rb; rb = next) {
        next = rb->next;
        rb_free(e, rb);
    }
    e->rq_head = e->rq_tail = NULL;
    free(e->xbuf);
    free(e->wb.buf);
    free(e->side.buf);
    e->side.buf = NULL;
    e->side.cap = e->side.len = 0;
    free(e->gz);
    if (e->pcache) {
        munmap(e->pcache, PCACHE_N * sizeof(*e->pcache));
        e->pcache = NULL;
    }
    free(e->sacc);
    e->sacc = NULL;
    e->sacc_cap = e->sacc_len = 0;
    e->xbuf = e->wb.buf = NULL;
    e->gz = NULL;
    e->xcap = e->xlen = e->wb.cap = e->wb.len = e->gz_cap = 0;
    if (e->zs_ready) {
        deflateEnd(&e->zs);
        e->zs_ready = 0;
    }
}

/* The monotonic-ish wall clock without APR: apr_time_now() is fine too, but
 * this one is async-signal-safe by POSIX. */
static apr_time_t now_safe(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (apr_time_t)ts.tv_sec * APR_USEC_PER_SEC + ts.tv_nsec / 1000;
}

static int make_pipe(int *r, int *w)
{
    int fds[2];

    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
        return errno;
    }
    *r = fds[0];
    *w = fds[1];
    return 0;
}

static void drain_pipe(int fd)
{
    char buf[64];

    while (read(fd, buf, sizeof(buf)) > 0) {
        ;
    }
}

/* Pool cleanup: close() is async-signal-safe. A flusher that overran its
 * deadline keeps its pipes: their numbers could otherwise be reused for
 * another file that its last write would then land in. */
static apr_status_t close_pipes(void *data)
{
    imx_engine_t *e = data;

    if (!atomic_load(&e->finished)) {
        return APR_SUCCESS;
    }
    close(e->wake_r);
    close(e->wake_w);
    close(e->done_r);
    close(e->done_w);
    e->wake_r = e->wake_w = e->done_r = e->done_w = -1;
    return APR_SUCCESS;
}

uint64_t imx_counters_held(const imx_counters_t *c)
{
    /* Settled counts first: they only grow after recorded did, so reading
     * them before it never yields more settled than recorded. */
    uint64_t settled = atomic_load(&c->sent) + atomic_load(&c->rejected)
                       + atomic_load(&c->dropped_retry) + atomic_load(&c->dropped_exit)
                       + atomic_load(&c->lost) + atomic_load(&c->to_spool);
    uint64_t rec = atomic_load(&c->recorded) + atomic_load(&c->late)
                   - atomic_load(&c->moved);

    return rec > settled ? rec - settled : 0;
}

void imx_counters_read(const imx_counters_t *c, imx_stats_t *st)
{
    uint64_t late;

    st->buffered = imx_counters_held(c);
    late = atomic_load(&c->late);
    st->sent = atomic_load(&c->sent);
    st->rejected = atomic_load(&c->rejected);
    st->dropped_retry = atomic_load(&c->dropped_retry);
    st->dropped_exit = atomic_load(&c->dropped_exit);
    st->to_spool = atomic_load(&c->to_spool);
    st->unspooled = atomic_load(&c->unspooled);
    st->dropped_spool = atomic_load(&c->dropped_spool);
    /* Points moved to another engine count as that one's. */
    st->recorded = atomic_load(&c->recorded) + late - atomic_load(&c->moved);
    st->lost = atomic_load(&c->lost);
    st->dropped_full = atomic_load(&c->dropped_full);
    st->maybe_stored = atomic_load(&c->maybe_stored);
    st->retries = atomic_load(&c->retries);
    st->batches = atomic_load(&c->batches);
    st->bytes = atomic_load(&c->bytes);
    st->retry_bytes = atomic_load(&c->retry_bytes);
    st->last_ok = atomic_load(&c->last_ok);
    st->last_error_time = atomic_load(&c->last_error_time);
}

imx_engine_t *imx_engine_create(apr_pool_t *p, const imx_engine_conf_t *conf,
                                char *err, size_t errsz)
{
    imx_engine_t *e;
    uint64_t cap = 2;
    char *mem;
    apr_status_t rv;

    if (!conf->line_prefix || !conf->send || conf->batch_size < 1
        || conf->retry_base < 1 || conf->retry_interval <= 0
        || conf->capacity < 2 || conf->capacity > (1u << 30)) {
        snprintf(err, errsz, "invalid engine configuration");
        return NULL;
    }
    /* A batch larger than the ring would never complete, so producers would
     * never wake the flusher early: the ring would fill and drop instead. */
    if (conf->batch_size > conf->capacity) {
        snprintf(err, errsz, "batch size %u is larger than the buffer (%u points)",
                 conf->batch_size, conf->capacity);
        return NULL;
    }
    while (cap < conf->capacity) {
        cap <<= 1;
    }
    /* apr_palloc aligns to 8 only; the struct and the ring want cache lines. */
    mem = apr_palloc(p, sizeof(*e) + CACHE_LINE);
    e = (imx_engine_t *)(((uintptr_t)mem + CACHE_LINE - 1) & ~(uintptr_t)(CACHE_LINE - 1));
    memset(e, 0, sizeof(*e));
    e->conf = *conf;
    e->c = conf->counters ? conf->counters : &e->own;
    e->wake_r = e->wake_w = e->done_r = e->done_w = -1;
    atomic_store(&e->finished, 1);
    e->prefix_len = strlen(conf->line_prefix);
    e->mask = cap - 1;
    e->tsc.sec = -1;
    if (conf->cells) {
        if (cap != conf->capacity || ((uintptr_t)conf->cells & (CACHE_LINE - 1))) {
            snprintf(err, errsz, "caller's ring must be a power of two of aligned cells");
            return NULL;
        }
        e->cells = conf->cells;
    }
    else {
        /* apr_palloc aborts the process (its abort function) rather than
         * return NULL, so there is no failure to handle here. */
        mem = apr_palloc(p, cap * sizeof(cell_t) + CACHE_LINE);
        e->cells = (cell_t *)(((uintptr_t)mem + CACHE_LINE - 1) & ~(uintptr_t)(CACHE_LINE - 1));
    }
    if (conf->rids) {
        e->rids = conf->rids;
    }
    else if (conf->rid_cells) {
        e->rids = apr_palloc(p, (size_t)cap * IMX_RID_MAX);
    }
    {
        uint64_t head = atomic_load(&e->c->recorded);

        /* Each cell free for its position in the lap that starts at head. */
        for (uint64_t i = 0; i < cap; i++) {
            uint64_t pos = head + ((i - head) & e->mask);
            atomic_store_explicit(&e->cells[i].seq, pos, memory_order_relaxed);
        }
        e->tail = head;
        atomic_store(&e->c->taken, head);
    }
    e->rng = (uint32_t)apr_time_now() ^ (uint32_t)(uintptr_t)e ^ 0x9e3779b9u;
    if (!e->rng) {
        e->rng = 1;
    }
    if ((rv = apr_thread_mutex_create(&e->mu, APR_THREAD_MUTEX_DEFAULT, p)) != APR_SUCCESS) {
        snprintf(err, errsz, "cannot create the flusher's mutex (%d)", rv);
        return NULL;
    }
    if ((rv = make_pipe(&e->wake_r, &e->wake_w)) != 0
        || (rv = make_pipe(&e->done_r, &e->done_w)) != 0) {
        snprintf(err, errsz, "cannot create the flusher's pipes: %s", strerror(rv));
        return NULL;
    }
    apr_pool_cleanup_register(p, e, close_pipes, apr_pool_cleanup_null);
    return e;
}

static inline int push(imx_engine_t *e, const imx_point_t *pt, const char *rid)
{
    _Atomic uint64_t *head = &e->c->recorded;
    uint64_t pos;
    cell_t *c;

    /* A worker still logging after the child began to stop (mod_http2
     * joins its workers after our cleanup) finds the engine stopped, not
     * freed: the point is counted, never written where no one will look. */
    if (atomic_load_explicit(&e->stopping, memory_order_relaxed)) {
        atomic_fetch_add_explicit(&e->c->late, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&e->c->dropped_exit, 1, memory_order_relaxed);
        return 0;
    }
    pos = atomic_load_explicit(head, memory_order_relaxed);
    for (;;) {
        uint64_t seq;

        c = &e->cells[pos & e->mask];
        seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        if (seq == pos) {
            if (atomic_compare_exchange_weak_explicit(head, &pos, pos + 1,
                                                      memory_order_relaxed,
                                                      memory_order_relaxed)) {
                break;
            }
            /* pos now holds the current head: try that index. */
        }
        else if ((int64_t)(seq - pos) < 0) {
            /* The cell still holds the point from one lap ago: full. */
            atomic_fetch_add_explicit(&e->c->dropped_full, 1, memory_order_relaxed);
            return 0;
        }
        else {
            pos = atomic_load_explicit(head, memory_order_relaxed);
        }
    }
    c->pt = *pt;
    if (rid && pt->rid_len) {
        if (e->rids) {
            memcpy(e->rids + (pos & e->mask) * IMX_RID_MAX, rid,
                   pt->rid_len < IMX_RID_MAX ? pt->rid_len : IMX_RID_MAX);
        }
        else {
            c->pt.rid_len = 0;
        }
    }
    atomic_store_explicit(&c->seq, pos + 1, memory_order_release);

    /* Completing a batch wakes the flusher early (batch_size <= capacity,
     * so every lap of the ring completes at least one). A full pipe means a
     * wake-up is pending already. */
    if ((pos + 1) % e->conf.batch_size == 0) {
        ssize_t n = write(e->wake_w, "", 1);
        (void)n;
    }
    return 1;
}

int imx_push(imx_engine_t *e, const imx_point_t *pt)
{
    return push(e, pt, NULL);
}

int imx_push_rid(imx_engine_t *e, const imx_point_t *pt, const char *rid)
{
    return push(e, pt, rid);
}

static int lpbuf_grow(lpbuf_t *b, size_t need, size_t first);

/* Appends pt's line to b; 0 when b cannot grow (out of memory: the point
 * stays in the ring for the next round). */
static int encode_point(imx_engine_t *e, lpbuf_t *b, const imx_point_t *pt, const char *rid)
{
    uint64_t k1 = (uint64_t)pt->server | (uint64_t)pt->route << 16
                  | (uint64_t)pt->upstream << 32 | (uint64_t)pt->status << 48;
    uint64_t k2 = (uint64_t)pt->tag | (uint64_t)pt->method << 32
                  | (uint64_t)pt->protocol << 40 | (uint64_t)pt->tls << 48
                  | (uint64_t)pt->fields << 56;
    size_t first = (size_t)e->conf.batch_size * 160 + 512;
    pcache_ent_t *pc = NULL;
    size_t n;

    if (!e->pcache && !e->pcache_tried) {
        e->pcache_tried = 1;
        /* Mapped, not calloc'd: a page of it is memory only once an entry
         * in it is used (calloc would clear, so touch, all of it). */
        e->pcache = mmap(NULL, PCACHE_N * sizeof(*e->pcache), PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (e->pcache == MAP_FAILED) {
            e->pcache = NULL;
        }
    }
    if (e->pcache) {
        pc = &e->pcache[((k1 * 0x9e3779b97f4a7c15ULL) ^ (k2 * 0xc2b2ae3d27d4eb4fULL))
                        >> (64 - 8)];
    }
    if (pc && pc->len && pc->k1 == k1 && pc->k2 == k2) {
        if (b->len + pc->len + IMX_VALUES_MAX > b->cap
            && !lpbuf_grow(b, b->len + pc->len + IMX_VALUES_MAX, first)) {
            return 0;
        }
        memcpy(b->buf + b->len, pc->text, pc->len);
        n = pc->len;
    }
    else {
        size_t need = b->len + imx_line_max(e->prefix_len, &e->conf.names, pt);

        if (need > b->cap && !lpbuf_grow(b, need, first)) {
            return 0;
        }
        n = imx_encode_series(b->buf + b->len, e->conf.line_prefix, e->prefix_len,
                              &e->conf.names, pt);
        if (pc && n <= PCACHE_TEXT) {
            memcpy(pc->text, b->buf + b->len, n);
            pc->len = (uint32_t)n;
            pc->k1 = k1;
            pc->k2 = k2;
        }
    }
    b->len += n;
    b->len += imx_encode_values(b->buf + b->len, pt, rid, &e->tsc);
    return 1;
}

/* Room for `need` bytes in b (`first`: the first allocation's size). */
static int lpbuf_grow(lpbuf_t *b, size_t need, size_t first)
{
    size_t cap = b->cap ? b->cap : first;
    char *nb;

    if (need <= b->cap) {
        return 1;
    }
    while (cap < need) {
        cap *= 2;
    }
    nb = realloc(b->buf, cap);
    if (!nb) {
        return 0;
    }
    b->buf = nb;
    b->cap = cap;
    return 1;
}

static int grow_body(imx_engine_t *e, size_t need)
{
    return lpbuf_grow(&e->wb, need, (size_t)e->conf.batch_size * 160 + 512);
}

/* At exit: the cell at the tail is claimed but not published, and points
 * were claimed after it. Its producer may be preempted, or may never go on
 * (a worker that logs while the child goes down): after a moment it is
 * passed over and counted alone in dropped_exit, so that the complete
 * points behind it are still sent. Its cell is left as it is: a producer
 * that does finish writes only to it. Returns 1 if it was passed over. */
static int pass_unfinished(imx_engine_t *e)
{
    cell_t *c = &e->cells[e->tail & e->mask];

    if (!e->final || atomic_load_explicit(&e->c->recorded, memory_order_relaxed) <= e->tail + 1
        || now_safe() >= atomic_load(&e->stop_deadline)) {
        return 0;
    }
    for (int i = 0; i < 10; i++) {
        struct timespec ts = { 0, 100000 };

        nanosleep(&ts, NULL);
        if (atomic_load_explicit(&c->seq, memory_order_acquire) == e->tail + 1) {
            return 0;           /* published after all: taken as usual */
        }
    }
    atomic_fetch_add(&e->c->dropped_exit, 1);
    e->tail++;
    return 1;
}

/* Moves up to `max` published points from the ring to b. Returns how many. */
static uint32_t take_points(imx_engine_t *e, lpbuf_t *b, uint32_t max)
{
    uint32_t n = 0;

    while (n < max) {
        cell_t *c = &e->cells[e->tail & e->mask];

        if (atomic_load_explicit(&c->seq, memory_order_acquire) != e->tail + 1) {
            if (pass_unfinished(e)) {
                continue;
            }
            if (atomic_load_explicit(&c->seq, memory_order_acquire) != e->tail + 1) {
                break;          /* empty, or its producer is still writing */
            }
        }
        if (!encode_point(e, b, &c->pt, e->rids ? e->rids + (e->tail & e->mask) * IMX_RID_MAX
                                                : NULL)) {
            break;              /* out of memory: try again next round */
        }
        atomic_store_explicit(&c->seq, e->tail + e->mask + 1, memory_order_release);
        e->tail++;
        n++;
    }
    /* After the batch is complete: a crash before this leaves its points
     * between taken and head, where a rescuer finds their cells freed
     * (counted lost; they died in this batch). */
    atomic_store_explicit(&e->c->taken, e->tail, memory_order_release);
    return n;
}

#define SELF_FIELDS 14
#define SELF_MAX (SELF_FIELDS * (16 + 21) + 24)

/* The module's own counters as one line, so dashboards can watch delivery. */
static size_t encode_self(imx_engine_t *e, char *out)
{
    static const char *const names[SELF_FIELDS] = {
        " recorded=", ",sent=", ",rejected=", ",dropped_full=", ",dropped_retry=",
        ",dropped_exit=", ",retries=", ",buffered=", ",retry_bytes=", ",batches=",
        ",to_spool=", ",unspooled=", ",dropped_spool=", ",spooled="
    };
    imx_stats_t st;
    uint64_t v[SELF_FIELDS];
    size_t pl = strlen(e->conf.self_prefix);
    char *o = out;

    imx_engine_stats(e, &st);
    v[0] = st.recorded; v[1] = st.sent; v[2] = st.rejected; v[3] = st.dropped_full;
    v[4] = st.dropped_retry; v[5] = st.dropped_exit; v[6] = st.retries;
    v[7] = st.buffered; v[8] = st.retry_bytes; v[9] = st.batches;
    v[10] = st.to_spool; v[11] = st.unspooled; v[12] = st.dropped_spool;
    v[13] = st.spooled;
    memcpy(o, e->conf.self_prefix, pl);
    o += pl;
    for (int i = 0; i < SELF_FIELDS; i++) {
        size_t nl = strlen(names[i]);
        memcpy(o, names[i], nl);
        o = imx_put_u64(o + nl, v[i]);
        *o++ = 'i';
    }
    *o++ = ' ';
    o = imx_put_u64(o, (uint64_t)apr_time_now() * 1000);
    *o++ = '\n';
    return (size_t)(o - out);
}

/* Moves up to batch_size published points from the ring into the work body,
 * after the self line if one is due. Returns the number of lines in it. */
static uint32_t fill_batch(imx_engine_t *e)
{
    e->wb.len = 0;
    e->work_extra = 0;
    if (e->self_due && e->conf.self_prefix) {
        if (grow_body(e, strlen(e->conf.self_prefix) + SELF_MAX)) {
            e->wb.len = encode_self(e, e->wb.buf);
            e->work_extra = 1;
        }
        e->self_due = 0;
    }
    if (e->xlen && grow_body(e, e->wb.len + e->xlen)) {
        memcpy(e->wb.buf + e->wb.len, e->xbuf, e->xlen);
        e->wb.len += e->xlen;
        e->work_extra += e->xlines;
        e->xlen = 0;
        e->xlines = 0;
    }
    e->work_n = take_points(e, &e->wb, e->conf.batch_size);
    return e->work_n + e->work_extra;
}

static void work_done(imx_engine_t *e)
{
    e->work_n = 0;
    e->work_extra = 0;
    e->wb.len = 0;
}

/* gzip data into e->gz; returns its length, 0 on failure. */
static size_t gzip_data(imx_engine_t *e, const char *data, size_t len)
{
    size_t bound;

    if (!e->zs_ready) {
        memset(&e->zs, 0, sizeof(e->zs));
        /* Level 1: the flusher shares the CPU with the server it measures;
         * line protocol still shrinks about tenfold. 15 + 16 = gzip framing. */
        if (deflateInit2(&e->zs, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
            return 0;
        }
        e->zs_ready = 1;
    }
    else {
        deflateReset(&e->zs);
    }
    bound = deflateBound(&e->zs, (uLong)len);
    if (bound > e->gz_cap) {
        unsigned char *ng = realloc(e->gz, bound);
        if (!ng) {
            return 0;
        }
        e->gz = ng;
        e->gz_cap = bound;
    }
    e->zs.next_in = (unsigned char *)data;
    e->zs.avail_in = (uInt)len;
    e->zs.next_out = e->gz;
    e->zs.avail_out = (uInt)e->gz_cap;
    if (deflate(&e->zs, Z_FINISH) != Z_STREAM_END) {
        return 0;
    }
    return e->gz_cap - e->zs.avail_out;
}

static uint32_t next_rand(imx_engine_t *e)
{
    uint32_t x = e->rng;

    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return e->rng = x;
}

/* When to try the head of the retry buffer again: retry_interval times
 * retry_base^(attempt-1), capped at retry_max_delay, drawn from [d/2, d] so
 * children that failed together do not retry together. A Retry-After from
 * the backend wins; "slow" failures wait the longest delay. */
static apr_interval_time_t backoff(imx_engine_t *e, const imx_send_info_t *info)
{
    apr_interval_time_t d = e->conf.retry_interval;
    unsigned i;

    if (info->retry_after > 0) {
        return info->retry_after;
    }
    for (i = 1; i < e->attempt && d < e->conf.retry_max_delay; i++) {
        d *= e->conf.retry_base;
    }
    if (info->slow || d > e->conf.retry_max_delay) {
        d = e->conf.retry_max_delay;
    }
    return d / 2 + (apr_interval_time_t)(next_rand(e) % (uint32_t)(d / 2 + 1));
}

static void set_error(imx_engine_t *e, const char *err)
{
    apr_thread_mutex_lock(e->mu);
    snprintf(e->last_error, sizeof(e->last_error), "%s", err);
    apr_thread_mutex_unlock(e->mu);
    atomic_store(&e->c->last_error_time, apr_time_now());
}

/* extra: the summary and self-metric lines in the batch, named apart so that
 * "a batch of 0 points" never reads as a bug when only those were in it. */
static void note_failure(imx_engine_t *e, const char *what, uint32_t n, uint32_t extra,
                         const char *err)
{
    char more[48] = "";

    apr_time_t now = apr_time_now();

    set_error(e, *err ? err : what);
    if (e->last_fail_log && now - e->last_fail_log < FAIL_LOG_INTERVAL) {
        e->fails_unlogged++;
        return;
    }
    if (extra) {
        snprintf(more, sizeof(more), " and %u summary/self lines", extra);
    }
    logf_(e, IMX_LOG_ERR, "%s a batch of %u points%s%s%s (%lu more failures since the last "
          "report)", what, n, more, *err ? ": " : "", err, e->fails_unlogged);
    e->last_fail_log = now;
    e->fails_unlogged = 0;
}

static void rq_publish(imx_engine_t *e)
{
    atomic_store_explicit(&e->c->retry_points, e->rq_points, memory_order_relaxed);
}

void imx_retry_release(_Atomic uint64_t *shared, uint64_t bytes)
{
    uint64_t cur = atomic_load(shared);

    while (!atomic_compare_exchange_weak(shared, &cur, cur > bytes ? cur - bytes : 0)) {
        ;
    }
}

/* What a retry batch of `need` bytes costs: with a shared budget, the
 * whole pages it is mapped in (see rb_alloc), so that the budget bounds the
 * memory the children's retry buffers take, not only their contents. */
static size_t rb_cost(const imx_engine_t *e, size_t need)
{
    return e->conf.retry_shared ? PAGE_ROUND(need) : need;
}

/* Would `need` more bytes fit in the retry buffer: this engine's alone, or
 * with a shared budget, every engine's together. */
static int rq_fits(const imx_engine_t *e, size_t need)
{
    if (e->conf.retry_shared) {
        return atomic_load(e->conf.retry_shared) + rb_cost(e, need) <= e->conf.retry_buffer;
    }
    return e->rq_bytes + need <= e->conf.retry_buffer;
}

/* Reserves `cost` bytes in the shared budget; 0 when others hold it. */
static int budget_take(imx_engine_t *e, size_t cost)
{
    _Atomic uint64_t *shared = e->conf.retry_shared;
    uint64_t cur = atomic_load(shared);

    do {
        if (cur + cost > e->conf.retry_buffer) {
            return 0;
        }
    } while (!atomic_compare_exchange_weak(shared, &cur, cur + cost));
    return 1;
}

static void held_add(imx_engine_t *e, size_t add)
{
    e->rq_held += add;
    atomic_store(&e->c->retry_bytes, e->rq_held);
}

/* A retry batch of `need` bytes, its bytes reserved in the shared budget
 * first; NULL when the budget (other engines hold it) or memory says no.
 * With a shared budget the batch is mapped pages of its own, unmapped when
 * it is freed: from malloc, the pages of batches a child dropped would stay
 * in its arena, and during a long outage, as the budget passes from child
 * to child, every child would keep the high-water mark of what it once
 * held (a 60 s outage of 64 prefork children went 7 MB over a 32M bound).
 * The reservation is made before counters->retry_bytes says so, and given
 * back after it stops saying so: an engine killed in between leaves a few
 * bytes reserved for nobody (a tighter bound), never a budget below what is
 * held. */
static rbatch_t *rb_alloc(imx_engine_t *e, size_t need)
{
    _Atomic uint64_t *shared = e->conf.retry_shared;
    size_t cost = rb_cost(e, need);
    rbatch_t *rb;

    if (shared) {
        void *m;

        if (!budget_take(e, cost)) {
            return NULL;
        }
        m = mmap(NULL, cost, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        rb = m == MAP_FAILED ? NULL : m;
    }
    else {
        rb = malloc(need);
    }
    if (!rb) {
        if (shared) {
            imx_retry_release(shared, cost);
        }
        return NULL;
    }
    rb->size = cost;
    held_add(e, cost);
    return rb;
}

/* Room for `add` more bytes of data in rb, which may move (the caller
 * relinks it); NULL, rb untouched, when the budget or memory says no. */
static rbatch_t *rb_grow(imx_engine_t *e, rbatch_t *rb, size_t add)
{
    size_t need = sizeof(*rb) + rb->len + add, cost = rb_cost(e, need), more;
    rbatch_t *nb;

    if (need <= rb->size) {
        return rb;
    }
    more = cost - rb->size;
    if (e->conf.retry_shared) {
        void *m;

        if (!budget_take(e, more)) {
            return NULL;
        }
        m = mremap(rb, rb->size, cost, MREMAP_MAYMOVE);
        if (m == MAP_FAILED) {
            imx_retry_release(e->conf.retry_shared, more);
            return NULL;
        }
        nb = m;
    }
    else if (!(nb = realloc(rb, cost))) {
        return NULL;
    }
    nb->size = cost;
    held_add(e, more);
    return nb;
}

static void rb_free(imx_engine_t *e, rbatch_t *rb)
{
    size_t cost = rb->size;

    if (e->conf.retry_shared) {
        munmap(rb, cost);
    }
    else {
        free(rb);
    }
    e->rq_held -= cost;
    atomic_store(&e->c->retry_bytes, e->rq_held);
    if (e->conf.retry_shared) {
        imx_retry_release(e->conf.retry_shared, cost);
    }
}

/* Counts n points of a batch given up on. If a POST of it may have reached
 * the backend, they are also counted as maybe_stored: the counters cannot
 * know, and say so instead of guessing. */
static void count_drop(imx_engine_t *e, _Atomic uint64_t *counter, uint64_t n, int maybe)
{
    /* maybe_stored first: a reader then never sees the drop without it. */
    if (maybe) {
        atomic_fetch_add(&e->c->maybe_stored, n);
    }
    atomic_fetch_add(counter, n);
}

/* Takes the head batch out of the retry buffer (the caller owns it then). */
static void rq_unlink_head(imx_engine_t *e)
{
    rbatch_t *rb = e->rq_head;

    e->rq_head = rb->next;
    if (e->rq_head) {
        e->rq_head->prev = NULL;
    }
    else {
        e->rq_tail = NULL;
    }
    e->rq_bytes -= sizeof(*rb) + rb->len;
    e->rq_points -= rb->n;
    rq_publish(e);
}

/* Puts a batch at the head (it is the oldest). */
static void rq_link_head(imx_engine_t *e, rbatch_t *rb)
{
    rb->prev = NULL;
    rb->next = e->rq_head;
    if (e->rq_head) {
        e->rq_head->prev = rb;
    }
    e->rq_head = rb;
    if (!e->rq_tail) {
        e->rq_tail = rb;
    }
    e->rq_bytes += sizeof(*rb) + rb->len;
    e->rq_points += rb->n;
    rq_publish(e);
}

static void rq_link_tail(imx_engine_t *e, rbatch_t *rb)
{
    rb->next = NULL;
    rb->prev = e->rq_tail;
    if (e->rq_tail) {
        e->rq_tail->next = rb;
    }
    else {
        e->rq_head = rb;
    }
    e->rq_tail = rb;
    e->rq_bytes += sizeof(*rb) + rb->len;
    e->rq_points += rb->n;
    rq_publish(e);
}

/* Where the first `lines` lines of data end (0 if it has fewer). */
static size_t lines_end(const char *data, size_t len, uint32_t lines)
{
    size_t cut = 0;

    for (uint32_t seen = 0; seen < lines; seen++) {
        const char *nl = memchr(data + cut, '\n', len - cut);
        if (!nl) {
            return 0;
        }
        cut = (size_t)(nl - data) + 1;
    }
    return cut;
}

/* Appends a batch of n points and `extra` other lines (those first) to
 * the lines at buf (*len bytes, of which the first *extra_have lines are
 * other lines), which have room: its other lines go after theirs, so that
 * they stay first (the 413 split relies on it), its points at the end. */
static void join_lines(char *buf, size_t *len, uint32_t extra_have, const char *data,
                       size_t dlen, uint32_t extra)
{
    size_t xe = extra ? lines_end(data, dlen, extra) : 0;

    if (xe) {
        size_t at = extra_have ? lines_end(buf, *len, extra_have) : 0;

        memmove(buf + at + xe, buf + at, *len - at);
        memcpy(buf + at, data, xe);
    }
    memcpy(buf + *len + xe, data + xe, dlen - xe);
    *len += dlen;
}

/* Gathers a batch that was never POSTed (drained from the ring during a
 * backoff or a long POST) into the newest retry batch, if that one was
 * never POSTed either (see RQ_GATHER_SHARE): during an outage every child
 * adds a small batch at each wake-up, and each in pages of its own would
 * take a shared budget many times over what they hold. A batch that was
 * POSTed is sent again as it was. Returns 0 when it does not go there. */
static int rq_append(imx_engine_t *e, const char *data, size_t len, uint32_t n,
                     uint32_t extra, apr_time_t first_fail, int maybe)
{
    rbatch_t *rb = e->rq_tail, *nb;
    apr_interval_time_t window = e->conf.retry_max_time
                                 ? e->conf.retry_max_time / RQ_GATHER_SHARE : RQ_GATHER_MAX;

    if (window > RQ_GATHER_MAX) {
        window = RQ_GATHER_MAX;
    }
    if (!rb || rb->posted || rb->maybe_stored != maybe
        || (uint64_t)rb->n + n > e->conf.batch_size
        || first_fail - rb->first_fail >= window || first_fail < rb->first_fail
        || (!e->conf.retry_shared && !rq_fits(e, len))) {
        return 0;
    }
    if (!(nb = rb_grow(e, rb, len))) {
        return 0;
    }
    if (nb != rb) {
        if (nb->prev) {
            nb->prev->next = nb;
        }
        else {
            e->rq_head = nb;
        }
        e->rq_tail = nb;
    }
    join_lines(nb->data, &nb->len, nb->extra, data, len, extra);
    nb->n += n;
    nb->extra += extra;
    nb->last_fail = first_fail;
    e->rq_bytes += len;
    e->rq_points += n;
    rq_publish(e);
    return 1;
}

static void rq_pop(imx_engine_t *e)
{
    rbatch_t *rb = e->rq_head;

    rq_unlink_head(e);
    rb_free(e, rb);
}

/* ------------------------------------------------------------------------- */
/* Writing to the spool                                                       */

/* Spool trouble is logged at most once per FAIL_LOG_INTERVAL: a full disk
 * would otherwise log every batch. */
static void spool_note(imx_engine_t *e, int level, const char *what, uint64_t n,
                       const char *err)
{
    apr_time_t now = apr_time_now();

    if (level <= IMX_LOG_ERR) {
        set_error(e, err);
    }
    if (e->spool_log_at && now - e->spool_log_at < FAIL_LOG_INTERVAL) {
        e->spool_unlogged++;
        return;
    }
    logf_(e, level, "%s %llu points%s%s (%lu more since the last report)", what,
          (unsigned long long)n, *err ? ": " : "", err, e->spool_unlogged);
    e->spool_log_at = now;
    e->spool_unlogged = 0;
}

/* Writes one spool file. Its points leave this process's account (to_spool)
 * once the write is over, not before: a process killed mid-write still
 * holds them. A failed write, and older files deleted to make room, are
 * dropped_spool. */
static void spool_write(imx_engine_t *e, const char *data, size_t len, uint32_t n,
                        uint32_t extra, int maybe)
{
    imx_spool_drop_t ev = { 0, 0 };
    char err[256];
    int rv;

    err[0] = '\0';
    rv = imx_spool_write(e->conf.spool, data, len, n, extra, maybe, 0, &ev, err, sizeof(err));
    if (ev.points) {
        count_drop(e, &e->c->dropped_spool, ev.points, 0);
        atomic_fetch_add(&e->c->maybe_stored, ev.maybe);
        spool_note(e, IMX_LOG_WARNING, "spool full (InfluxMetricsSpoolSize): deleted the "
                   "oldest files, dropped", ev.points, "");
    }
    if (rv) {
        count_drop(e, &e->c->dropped_spool, n, maybe);
    }
    atomic_fetch_add(&e->c->to_spool, n);
    if (rv) {
        spool_note(e, IMX_LOG_ERR, "could not spool, dropped", n, err);
    }
}

/* Writes the gathered batches, if any. */
static void spool_flush(imx_engine_t *e)
{
    if (e->sacc_len) {
        spool_write(e, e->sacc, e->sacc_len, e->sacc_n, e->sacc_extra, e->sacc_maybe);
    }
    e->sacc_len = 0;
    e->sacc_n = e->sacc_extra = 0;
    e->sacc_maybe = 0;
}

/* Gathers a batch for the spool: batches go to disk together, up to
 * batch_size points a file, so that an outage's many small batches make few
 * files (and few fsyncs, and later few POSTs). */
static void spool_put(imx_engine_t *e, const char *data, size_t len, uint32_t n,
                      uint32_t extra, int maybe)
{
    /* Up to batch_size points and imx_spool_file_max() bytes a file; a
     * larger batch gets a file of its own. */
    if (e->sacc_len && ((uint64_t)e->sacc_n + n > e->conf.batch_size
                        || e->sacc_len + len > imx_spool_file_max(e->conf.spool))) {
        spool_flush(e);
    }
    if (e->sacc_len + len > e->sacc_cap) {
        /* Grown in steps: most files are small. */
        size_t cap = e->sacc_cap ? e->sacc_cap : 65536;
        char *nb;

        while (cap < e->sacc_len + len) {
            cap *= 2;
        }
        nb = realloc(e->sacc, cap);
        if (!nb) {
            /* Out of memory: this batch goes out on its own. */
            spool_flush(e);
            spool_write(e, data, len, n, extra, maybe);
            return;
        }
        e->sacc = nb;
        e->sacc_cap = cap;
    }
    /* Other lines first in the file too: a 413 split relies on it. */
    join_lines(e->sacc, &e->sacc_len, e->sacc_extra, data, len, extra);
    e->sacc_n += n;
    e->sacc_extra += extra;
    e->sacc_maybe |= maybe;
}

/* With a spool: moves the oldest batches of the retry buffer to it until
 * `need` more bytes fit. */
static void spill(imx_engine_t *e, size_t need)
{
    uint64_t moved = 0;

    while (e->rq_head && !rq_fits(e, need)) {
        rbatch_t *rb = e->rq_head;

        spool_put(e, rb->data, rb->len, rb->n, rb->extra, rb->maybe_stored);
        moved += rb->n;
        rq_pop(e);
    }
    spool_flush(e);
    imx_spool_sync(e->conf.spool);
    spool_note(e, IMX_LOG_NOTICE, "retry buffer full: moved to the spool", moved, "");
}

/* rq_add's how: */
#define RQ_POSTED 1             /* a POST of it failed (else: never POSTed) */
#define RQ_FRONT 2              /* older than what the buffer holds: at its head */

/* Appends a copy of data to the retry buffer, making room by moving the
 * oldest batches to the spool, or without a spool by dropping them. */
static void rq_add(imx_engine_t *e, const char *data, size_t len, uint32_t n,
                   uint32_t extra, apr_time_t first_fail, int maybe, int how)
{
    rbatch_t *rb;
    size_t need = sizeof(*rb) + len;
    int too_large = rb_cost(e, need) > e->conf.retry_buffer;

    if (!how && !too_large && rq_append(e, data, len, n, extra, first_fail, maybe)) {
        return;
    }
    if (!too_large) {
        /* With a spool, nothing is dropped for room: another engine may
         * take what spill() freed before this one reserves it, and then
         * this batch goes to the spool too (below). */
        if (e->conf.spool) {
            if (e->rq_head && !rq_fits(e, need)) {
                spill(e, need);
            }
        }
        else {
            while (e->rq_head && !rq_fits(e, need)) {
                uint32_t old = e->rq_head->n, old_extra = e->rq_head->extra;
                count_drop(e, &e->c->dropped_retry, old, e->rq_head->maybe_stored);
                rq_pop(e);
                note_failure(e, "retry buffer full, dropped the oldest", old, old_extra, "");
            }
        }
    }
    /* Too large, no memory, or (shared budget) the other engines hold all
     * of it once this one's own batches are gone: this batch is the one
     * that goes. */
    if (too_large || !(rb = rb_alloc(e, need))) {
        if (e->conf.spool) {
            spool_write(e, data, len, n, extra, maybe);
            imx_spool_sync(e->conf.spool);
            return;
        }
        count_drop(e, &e->c->dropped_retry, n, maybe);
        note_failure(e, too_large
                     ? "dropped (retry buffer too small for it)"
                     : "retry buffer full, dropped the newest", n, extra, "");
        return;
    }
    memcpy(rb->data, data, len);
    rb->len = len;
    rb->n = n;
    rb->extra = extra;
    rb->first_fail = rb->last_fail = first_fail;
    rb->maybe_stored = maybe;
    rb->posted = (how & RQ_POSTED) != 0;
    if (how & RQ_FRONT) {
        rq_link_head(e, rb);
    }
    else {
        rq_link_tail(e, rb);
    }
}

static int send_data(imx_engine_t *e, const char *data, size_t len, uint32_t n,
                     uint32_t extra, apr_time_t first_fail, imx_send_info_t *info);

/* The halves of a batch a backend refused as too large (413): the cut
 * after half its lines, and the points and other lines of the first half
 * (the other lines come first, see join_lines). 0 when it is one line, or
 * has fewer lines than counted (refuse, don't guess). */
typedef struct {
    size_t cut;
    uint32_t n1, extra1;
} halves_t;

static int halve(const char *data, size_t len, uint32_t n, uint32_t extra, halves_t *hv)
{
    uint32_t lines = n + extra, half = lines / 2;

    hv->extra1 = extra < half ? extra : half;
    hv->n1 = half - hv->extra1;
    return lines >= 2 && (hv->cut = lines_end(data, len, half)) != 0;
}

/* 413: sends the two halves (cut at a line boundary) at once, each split
 * again if need be. They are not queued: a small retry buffer would evict one
 * half to make room for the other. A half that then fails for another reason
 * goes to the retry buffer like any failed batch. Returns 0 if data is one
 * line (cannot split). */
static int send_halves(imx_engine_t *e, const char *data, size_t len, uint32_t n,
                       uint32_t extra, apr_time_t first_fail)
{
    imx_send_info_t info;
    halves_t hv;

    if (!halve(data, len, n, extra, &hv)) {
        return 0;
    }
    if (!send_data(e, data, hv.cut, hv.n1, hv.extra1, first_fail, &info)) {
        rq_add(e, data, hv.cut, hv.n1, hv.extra1, first_fail, info.maybe_stored, RQ_POSTED);
    }
    if (!send_data(e, data + hv.cut, len - hv.cut, n - hv.n1, extra - hv.extra1, first_fail,
                   &info)) {
        rq_add(e, data + hv.cut, len - hv.cut, n - hv.n1, extra - hv.extra1, first_fail,
               info.maybe_stored, RQ_POSTED);
    }
    return 1;
}

/* imx_send_wait_fn, from inside a POST that waits on the network: the
 * flusher is the ring's only drain, so a backend that does not answer (a
 * list of failover URLs that time out one by one) would otherwise let the
 * ring overflow while the backend that answers is up. Once the ring is half
 * full, its points move to the retry buffer in batches of batch_size (or,
 * with a spool, on from there), as they do while the flusher backs off;
 * they are sent after the POST under way, in order. Not without a retry
 * buffer: there, a moved batch would be dropped, and in the ring it may
 * still be sent. */
static void send_wait(void *ctx)
{
    imx_engine_t *e = ctx;
    uint64_t half = (e->mask + 1) / 2;

    if (e->in_wait || (!e->conf.retry_buffer && !e->conf.spool)) {
        return;
    }
    e->in_wait = 1;
    while (atomic_load_explicit(&e->c->recorded, memory_order_relaxed) - e->tail >= half) {
        uint32_t n;

        e->side.len = 0;
        n = take_points(e, &e->side, e->conf.batch_size);
        if (!n) {
            break;
        }
        rq_add(e, e->side.buf, e->side.len, n, 0, apr_time_now(), 0, 0);
    }
    e->in_wait = 0;
}

/* POSTs data (gzipped if configured) and keeps what every answer means for
 * the engine as a whole: successes reset the failure streak, failures set
 * the backoff. `sending`: points of this engine's own the POST carries (if
 * the process dies meanwhile, they may have been stored: maybe_stored);
 * `what`: the subject of failure messages. The caller
 * counts the points by the result. */
static imx_send_result_t post_body(imx_engine_t *e, const char *data, size_t len,
                                   uint32_t n, uint32_t sending, const char *what,
                                   imx_send_info_t *info, size_t *blen_out)
{
    const char *body = data;
    size_t blen = len;
    int gz = 0;
    imx_send_result_t res;

    memset(info, 0, sizeof(*info));
    info->wait = send_wait;
    info->wait_ctx = e;
    if (e->conf.gzip) {
        size_t zl = gzip_data(e, data, len);
        if (zl) {
            body = (const char *)e->gz;
            blen = zl;
            gz = 1;
        }
    }
    /* Each send is bounded by the sender's own timeout; at shutdown also by
     * what is left of shutdown_timeout. */
    atomic_store_explicit(&e->c->sending, sending, memory_order_relaxed);
    res = e->conf.send(e->conf.send_ctx, body, blen, gz, atomic_load(&e->send_deadline), info);
    atomic_store_explicit(&e->c->sending, 0, memory_order_relaxed);
    *blen_out = blen;
    switch (res) {
    case IMX_SEND_OK:
    case IMX_SEND_PARTIAL:
        e->retry_at = 0;
        atomic_fetch_add_explicit(&e->c->batches, 1, memory_order_relaxed);
        if (res == IMX_SEND_OK) {
            atomic_fetch_add_explicit(&e->c->bytes, blen, memory_order_relaxed);
            atomic_store(&e->c->last_ok, apr_time_now());
            if (e->attempt) {
                logf_(e, IMX_LOG_NOTICE, "backend accepts writes again after %u failed "
                      "attempts", e->attempt);
                e->last_fail_log = 0;
            }
        }
        else {
            if (info->dropped > n) {
                info->dropped = n;
            }
            note_failure(e, what, n, 0, info->err);   /* "... stored part of" */
        }
        e->attempt = 0;
        break;
    case IMX_SEND_TOO_LARGE:
        break;
    case IMX_SEND_REJECT:
        e->attempt = 0;
        break;
    default:
        atomic_fetch_add_explicit(&e->c->retries, 1, memory_order_relaxed);
        e->attempt++;
        e->retry_at = apr_time_now() + backoff(e, info);
        break;
    }
    return res;
}

/* Sends one batch. Returns 1 when it is settled (stored, refused or split),
 * 0 when it must be retried (the caller keeps it). */
static int send_data(imx_engine_t *e, const char *data, size_t len, uint32_t n,
                     uint32_t extra, apr_time_t first_fail, imx_send_info_t *info)
{
    size_t blen;

    switch (post_body(e, data, len, n, n, "backend stored part of", info, &blen)) {
    case IMX_SEND_OK:
        atomic_fetch_add_explicit(&e->c->sent, n, memory_order_relaxed);
        return 1;
    case IMX_SEND_PARTIAL:
        atomic_fetch_add_explicit(&e->c->sent, n - info->dropped, memory_order_relaxed);
        atomic_fetch_add_explicit(&e->c->rejected, info->dropped, memory_order_relaxed);
        return 1;
    case IMX_SEND_TOO_LARGE:
        logf_(e, IMX_LOG_WARNING, "backend refused %zu bytes as too large; "
              "sending the batch in halves (consider a smaller InfluxMetricsBatchSize)",
              blen);
        if (send_halves(e, data, len, n, extra, first_fail)) {
            e->attempt = 0;
            return 1;
        }
        /* a single line too large is refused for good */
        __attribute__((fallthrough));
    case IMX_SEND_REJECT:
        atomic_fetch_add_explicit(&e->c->rejected, n, memory_order_relaxed);
        note_failure(e, "backend rejected", n, extra, info->err);
        e->attempt = 0;
        return 1;
    default:
        note_failure(e, "will retry", n, extra, info->err);
        return 0;
    }
}

/* Drops retry-buffer batches that have failed for longer than allowed, or
 * moves them to the spool: there they wait for the backend without a time
 * limit, and without taking memory. */
static void expire(imx_engine_t *e, apr_time_t now)
{
    uint64_t moved = 0;

    while (e->conf.retry_max_time && e->rq_head
           && now - e->rq_head->last_fail > e->conf.retry_max_time) {
        uint32_t n = e->rq_head->n, extra = e->rq_head->extra;
        if (e->conf.spool) {
            spool_put(e, e->rq_head->data, e->rq_head->len, n, e->rq_head->extra,
                      e->rq_head->maybe_stored);
            moved += n;
            rq_pop(e);
            continue;
        }
        count_drop(e, &e->c->dropped_retry, n, e->rq_head->maybe_stored);
        rq_pop(e);
        note_failure(e, "gave up retrying", n, extra, "retry time exceeded");
    }
    if (moved) {
        spool_flush(e);
        imx_spool_sync(e->conf.spool);
        spool_note(e, IMX_LOG_NOTICE, "retry time exceeded: moved to the spool", moved, "");
    }
}

/* The cell at the tail is published: the flusher can take it. */
static int tail_ready(imx_engine_t *e)
{
    return atomic_load_explicit(&e->cells[e->tail & e->mask].seq, memory_order_acquire)
           == e->tail + 1;
}

/* Sends the retry buffer first, then the ring, batch by batch: full batches
 * always, and a partial one only for points recorded before `until` (the
 * ring's head when the flush interval ended), so that a steady trickle of
 * requests cannot turn into a POST per handful of points. While the backend
 * is backed off, the ring is emptied into the retry buffer. Returns when
 * nothing more is due, or (unless final) when the next tick is due, so a
 * steady stream of full batches cannot starve the tick. When stopping, gives
 * up at the deadline. */
static void drain(imx_engine_t *e, int final, uint64_t until)
{
    imx_send_info_t info;

    for (;;) {
        apr_time_t now = apr_time_now();
        apr_time_t stop_at = atomic_load(&e->send_deadline);

        if (stop_at && now >= stop_at) {
            return;
        }
        if (!final && e->next_flush && now >= e->next_flush) {
            return;
        }
        expire(e, now);
        if (e->rq_head) {
            rbatch_t *rb = e->rq_head;

            if (e->retry_at > now) {
                if (fill_batch(e)) {
                    rq_add(e, e->wb.buf, e->wb.len, e->work_n, e->work_extra, now, 0, 0);
                    work_done(e);
                    continue;
                }
                if (!final) {
                    return;
                }
                /* With a spool, a backoff that outlasts the time for
                 * sending is not waited for: the spool takes the rest. */
                if (e->conf.spool && e->retry_at >= stop_at) {
                    return;
                }
                /* At exit, wait out the backoff if the budget allows. */
                apr_sleep((e->retry_at < stop_at ? e->retry_at : stop_at) - now);
                continue;
            }
            /* Out of the queue while it is sent, so that nothing done
             * meanwhile can evict it. */
            rq_unlink_head(e);
            rb->posted = 1;
            if (!send_data(e, rb->data, rb->len, rb->n, rb->extra, rb->first_fail, &info)) {
                rb->maybe_stored |= info.maybe_stored;
                rq_link_head(e, rb);
            }
            else {
                rb_free(e, rb);
            }
            continue;
        }
        if (atomic_load_explicit(&e->c->recorded, memory_order_relaxed) - e->tail
                < e->conf.batch_size
            && e->tail >= until && !e->self_due && !e->xlen) {
            return;             /* only a partial batch of new points: next interval */
        }
        if (!fill_batch(e)) {
            return;
        }
        if (!send_data(e, e->wb.buf, e->wb.len, e->work_n, e->work_extra, now, &info)) {
            /* Before what send_wait moved there meanwhile: it is older. */
            rq_add(e, e->wb.buf, e->wb.len, e->work_n, e->work_extra, now,
                   info.maybe_stored, RQ_POSTED | (e->rq_head ? RQ_FRONT : 0));
        }
        work_done(e);
    }
}

/* ------------------------------------------------------------------------- */
/* Sending from the spool                                                     */

/* POSTs (part of) a spooled file. Returns 1 when every part is settled,
 * adding to *stored and *refused; 0 when it must be tried again, with the
 * backoff set. The caller counts only a settled file, so the parts of a
 * file tried again are never counted twice. */
static int spool_post(imx_engine_t *e, const char *data, size_t len, uint32_t n,
                      uint32_t extra, uint64_t *stored, uint64_t *refused,
                      imx_send_info_t *info)
{
    size_t blen;

    switch (post_body(e, data, len, n, 0, "spooled: backend stored part of", info, &blen)) {
    case IMX_SEND_OK:
        *stored += n;
        return 1;
    case IMX_SEND_PARTIAL:
        *stored += n - info->dropped;
        *refused += info->dropped;
        return 1;
    case IMX_SEND_TOO_LARGE: {
        /* In halves, each split again if need be; the file is settled only
         * when all are. */
        halves_t hv;

        if (halve(data, len, n, extra, &hv)) {
            logf_(e, IMX_LOG_WARNING, "backend refused %zu bytes of spooled points as too "
                  "large; sending them in halves", blen);
            return spool_post(e, data, hv.cut, hv.n1, hv.extra1, stored, refused, info)
                   && spool_post(e, data + hv.cut, len - hv.cut, n - hv.n1, extra - hv.extra1,
                                 stored, refused, info);
        }
    }
        __attribute__((fallthrough));
    case IMX_SEND_REJECT:
        *refused += n;
        note_failure(e, "spooled: backend rejected", n, extra, info->err);
        e->attempt = 0;
        return 1;
    default:
        note_failure(e, "spooled: will retry", n, extra, info->err);
        return 0;
    }
}

/* Sends spooled files, oldest first, while the backend is healthy (nothing
 * in the retry buffer, no backoff under way) and no full batch of new
 * points waits: at least one file when there is one, and more until
 * `until`. */
static void spool_round(imx_engine_t *e, apr_time_t until, unsigned max_files)
{
    imx_spool_t *sp = e->conf.spool;
    int warned = 0;

    for (unsigned i = 0; sp && i < max_files; i++) {
        apr_time_t now = apr_time_now();
        imx_spool_drop_t bad = { 0, 0 };
        imx_spool_file_t f;
        imx_send_info_t info;
        uint64_t stored = 0, refused = 0;
        int got;

        if (atomic_load(&e->stopping) || e->rq_head || now < e->retry_at
            || (i && now >= until)
            || atomic_load_explicit(&e->c->recorded, memory_order_relaxed) - e->tail
               >= e->conf.batch_size) {
            return;
        }
        if (!imx_spool_files(sp) && now < e->spool_scan_at) {
            return;
        }
        /* A file is deleted once sent: without that right, sending would
         * send the same points again and again. */
        if (!imx_spool_writable(sp)) {
            if (!warned++) {
                spool_note(e, IMX_LOG_ERR, "spool directory not writable; not sending the "
                           "spooled", imx_spool_pending(sp), "");
            }
            return;
        }
        got = imx_spool_claim(sp, &f, &bad);
        if (bad.points) {
            atomic_fetch_add(&e->c->maybe_stored, bad.maybe);
            atomic_fetch_add(&e->c->dropped_spool, bad.points);
        }
        if (!got) {
            e->spool_scan_at = now + SPOOL_RESCAN;
            return;
        }
        if (spool_post(e, f.data, (size_t)f.h.len, f.h.points, f.h.extra, &stored, &refused,
                       &info)) {
            /* Deleted first, counted then: a process killed in between
             * leaves the points stored but uncounted, never counted twice. */
            imx_spool_done(sp, &f);
            atomic_fetch_add(&e->c->unspooled, stored);
            atomic_fetch_add(&e->c->dropped_spool, refused);
        }
        else {
            imx_spool_release(sp, &f, info.maybe_stored);
        }
    }
}

/* At exit, in the second half of the budget: the retry buffer (oldest
 * first), the batch at hand and the rest of the ring, encoded, go to the
 * spool until the deadline. What is left then is counted by
 * count_leftovers. */
static void spool_leftovers(imx_engine_t *e)
{
    apr_time_t end = atomic_load(&e->stop_deadline);

    while (e->rq_head && now_safe() < end) {
        spool_put(e, e->rq_head->data, e->rq_head->len, e->rq_head->n, e->rq_head->extra,
                  e->rq_head->maybe_stored);
        rq_pop(e);
    }
    if (!e->rq_head && e->wb.len && now_safe() < end) {
        spool_put(e, e->wb.buf, e->wb.len, e->work_n, e->work_extra, 0);
        work_done(e);
    }
    while (!e->rq_head && !e->wb.len && now_safe() < end && fill_batch(e)) {
        spool_put(e, e->wb.buf, e->wb.len, e->work_n, e->work_extra, 0);
        work_done(e);
    }
    if (e->sacc_len && now_safe() < end) {
        spool_flush(e);
    }
    if (e->sacc_len) {
        count_drop(e, &e->c->dropped_exit, e->sacc_n, e->sacc_maybe);
        e->sacc_len = 0;
        e->sacc_n = e->sacc_extra = 0;
        e->sacc_maybe = 0;
    }
    imx_spool_sync(e->conf.spool);
}

void imx_engine_submit(imx_engine_t *e, const char *data, size_t len, uint32_t lines)
{
    /* Kept for the head of the next batch, which the flusher builds right
     * after its tick: one POST per interval carries everything. */
    if (!len) {
        return;
    }
    if (e->xlen + len > e->xcap) {
        size_t cap = (e->xlen + len) * 2;
        char *nb = realloc(e->xbuf, cap);
        if (!nb) {
            return;
        }
        e->xbuf = nb;
        e->xcap = cap;
    }
    memcpy(e->xbuf + e->xlen, data, len);
    e->xlen += len;
    e->xlines += lines;
}

static void publish_stats(imx_engine_t *e)
{
    imx_stats_t st;

    if (e->conf.on_stats) {
        imx_engine_stats(e, &st);
        e->conf.on_stats(e->conf.stats_ctx, &st);
    }
}

/* Once per interval: is there news for the self line? */
static void self_tick(imx_engine_t *e)
{
    imx_stats_t st;
    uint64_t sum;

    if (!e->conf.self_prefix) {
        return;
    }
    imx_engine_stats(e, &st);
    sum = st.recorded + st.sent + st.rejected + st.dropped_full + st.dropped_retry
          + st.dropped_exit + st.retries + st.buffered + st.to_spool + st.unspooled
          + st.dropped_spool + st.spooled;
    if (sum != e->self_last_sum) {
        e->self_last_sum = sum;
        e->self_due = 1;
    }
}

/* What is left when the flusher gives up: recorded, never to be sent. */
static void count_leftovers(imx_engine_t *e)
{
    uint64_t head = atomic_load(&e->c->recorded);

    if (e->work_n) {
        atomic_fetch_add(&e->c->dropped_exit, e->work_n);
        work_done(e);
    }
    while (e->rq_head) {
        count_drop(e, &e->c->dropped_exit, e->rq_head->n, e->rq_head->maybe_stored);
        rq_pop(e);
    }
    /* Cells claimed but never published (a producer still writing) are
     * counted too: the flusher will not wait for them any more. */
    if (head > e->tail) {
        atomic_fetch_add(&e->c->dropped_exit, head - e->tail);
        e->tail = head;
    }
    /* Nothing below head is left for a rescuer: only what a producer that
     * raced the stop still writes (rescued, or counted when the slot is
     * folded). */
    atomic_store(&e->c->taken, head);
}

static void log_exit(imx_engine_t *e)
{
    imx_stats_t st;

    imx_engine_stats(e, &st);
    logf_(e, st.dropped_full || st.dropped_exit || st.dropped_retry || st.rejected
          || st.dropped_spool ? IMX_LOG_WARNING : IMX_LOG_INFO,
          "flusher exit: recorded=%llu sent=%llu rejected=%llu dropped_full=%llu "
          "dropped_exit=%llu retries=%llu batches=%llu bytes=%llu dropped_retry=%llu "
          "maybe_stored=%llu to_spool=%llu unspooled=%llu dropped_spool=%llu",
          (unsigned long long)st.recorded, (unsigned long long)st.sent,
          (unsigned long long)st.rejected, (unsigned long long)st.dropped_full,
          (unsigned long long)st.dropped_exit, (unsigned long long)st.retries,
          (unsigned long long)st.batches, (unsigned long long)st.bytes,
          (unsigned long long)st.dropped_retry, (unsigned long long)st.maybe_stored,
          (unsigned long long)st.to_spool, (unsigned long long)st.unspooled,
          (unsigned long long)st.dropped_spool);
}

/* The flusher's last steps, in its own thread (or in imx_engine_stop's
 * caller when there is none). */
static void finish(imx_engine_t *e)
{
    if (e->conf.on_tick) {
        e->conf.on_tick(e->conf.tick_ctx, e, 1);
    }
    e->final = 1;
    drain(e, 1, UINT64_MAX);
    if (e->conf.spool) {
        spool_leftovers(e);
    }
    count_leftovers(e);
    publish_stats(e);
    log_exit(e);
    free_buffers(e);
    if (e->conf.on_exit) {
        e->conf.on_exit(e->conf.exit_ctx);
    }
}

static void *flusher_main(void *data)
{
    imx_engine_t *e = data;

    e->next_flush = apr_time_now() + e->conf.flush_interval;
    while (!atomic_load(&e->stopping)) {
        apr_time_t now = apr_time_now(), wake;
        uint64_t until = 0, avail;
        struct pollfd pfd;
        int ms, ticked = 0;

        if (now >= e->next_flush) {
            e->next_flush = now + e->conf.flush_interval;
            until = atomic_load_explicit(&e->c->recorded, memory_order_relaxed);
            ticked = 1;
            self_tick(e);
            if (e->conf.on_tick) {
                e->conf.on_tick(e->conf.tick_ctx, e, 0);
            }
        }
        drain(e, 0, until);
        if (ticked && e->conf.spool) {
            /* Current points first; then old ones for half an interval. */
            spool_round(e, now + e->conf.flush_interval / 2, UINT_MAX);
        }
        publish_stats(e);

        now = apr_time_now();
        wake = e->rq_head && e->retry_at && e->retry_at < e->next_flush
               ? e->retry_at : e->next_flush;
        avail = atomic_load_explicit(&e->c->recorded, memory_order_relaxed) - e->tail;
        if (avail >= e->conf.batch_size && !e->rq_head) {
            if (tail_ready(e)) {
                continue;       /* more full batches wait */
            }
            /* Its producer was preempted between claiming the cell and
             * publishing it: give it a moment instead of spinning. */
            ms = 1;
        }
        else {
            ms = wake > now ? (int)((wake - now + 999) / 1000) : 0;
        }
        pfd.fd = e->wake_r;
        pfd.events = POLLIN;
        pfd.revents = 0;
        if (ms > 0 && poll(&pfd, 1, ms) > 0) {
            drain_pipe(e->wake_r);
        }
    }
    finish(e);
    {
        ssize_t n = write(e->done_w, "", 1);
        (void)n;
    }
    /* The very last touch of the engine: once it is seen, the pipes may be
     * closed and the process may go. The stopper, woken by the byte above,
     * waits for it (a few instructions away). */
    atomic_store_explicit(&e->finished, 1, memory_order_release);
    return NULL;
}

apr_status_t imx_engine_start(imx_engine_t *e)
{
    pthread_attr_t attr;
    sigset_t mask, old;
    int rv;

    atomic_store(&e->finished, 0);
    /* Process-directed signals (prefork's SIGTERM, SIGHUP, SIGUSR1) must land
     * in the threads httpd expects; but a fault in the flusher itself must
     * still reach httpd's crash handling, and blocked synchronous faults
     * would only kill the process silently. */
    sigfillset(&mask);
    sigdelset(&mask, SIGSEGV);
    sigdelset(&mask, SIGBUS);
    sigdelset(&mask, SIGILL);
    sigdelset(&mask, SIGFPE);
    sigdelset(&mask, SIGABRT);
    sigdelset(&mask, SIGTRAP);
    sigdelset(&mask, SIGSYS);
    pthread_attr_init(&attr);
    /* Detached: nobody joins it in a signal handler; done_w says it ended. */
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_sigmask(SIG_BLOCK, &mask, &old);
    rv = pthread_create(&e->thread, &attr, flusher_main, e);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (rv != 0) {
        atomic_store(&e->finished, 1);
        return APR_FROM_OS_ERROR(rv);
    }
    atomic_store(&e->has_thread, 1);
    return APR_SUCCESS;
}

int imx_engine_stop(imx_engine_t *e)
{
    apr_time_t deadline;

    if (atomic_exchange(&e->stopping, 1)) {
        /* Already asked: just wait for the flusher again (bounded). */
        deadline = atomic_load(&e->stop_deadline);
    }
    else {
        apr_time_t send_by;

        deadline = now_safe() + e->conf.shutdown_timeout;
        /* With a spool, the second half is for writing what was not sent. */
        send_by = deadline - (e->conf.spool ? e->conf.shutdown_timeout / 2 : 0);
        atomic_store(&e->send_deadline, send_by);
        atomic_store(&e->stop_deadline, deadline);
        if (e->conf.send_limit) {
            e->conf.send_limit(e->conf.send_ctx, send_by);
        }
        if (!atomic_load(&e->has_thread)) {
            finish(e);          /* no flusher: not in a signal handler (tests) */
            return 1;
        }
        {
            ssize_t n = write(e->wake_w, "", 1);
            (void)n;
        }
    }
    /* Wait for the flusher's word, a little past its own deadline (its
     * last steps after the final POST are short), with poll(): this may be
     * a signal handler. */
    for (;;) {
        struct pollfd pfd;
        apr_time_t left = deadline + apr_time_from_msec(300) - now_safe();

        if (atomic_load(&e->finished)) {
            return 1;
        }
        if (left <= 0) {
            return 0;
        }
        pfd.fd = e->done_r;
        pfd.events = POLLIN;
        pfd.revents = 0;
        if (poll(&pfd, 1, (int)((left + 999) / 1000)) < 0 && errno != EINTR) {
            return atomic_load(&e->finished);
        }
    }
}

uint64_t imx_ring_rescue(imx_engine_t *e, void *cells, const void *rids,
                         uint32_t capacity, imx_counters_t *dead)
{
    cell_t *ring = cells;
    uint64_t mask = (uint64_t)capacity - 1, moved = 0;
    uint64_t head = atomic_load(&dead->recorded), pos = atomic_load(&dead->taken);

    if (!capacity || (capacity & mask) || head - pos > capacity) {
        return 0;               /* not a ring of ours: leave it to the fold */
    }
    for (; pos != head; pos++) {
        cell_t *c = &ring[pos & mask];

        if (atomic_load_explicit(&c->seq, memory_order_acquire) == pos + 1) {
            if (!push(e, &c->pt, rids ? (const char *)rids + (pos & mask) * IMX_RID_MAX
                                      : NULL)) {
                break;          /* full (or stopping): the rest next time */
            }
            atomic_fetch_add(&dead->moved, 1);
            moved++;
        }
        else {
            atomic_fetch_add(&dead->lost, 1);
        }
        atomic_store_explicit(&c->seq, pos + mask + 1, memory_order_release);
        atomic_store(&dead->taken, pos + 1);
    }
    return moved;
}

uint64_t imx_engine_flush_now(imx_engine_t *e)
{
    uint64_t before = atomic_load(&e->c->sent);

    e->retry_at = 0;
    drain(e, 0, UINT64_MAX);
    e->spool_scan_at = 0;
    spool_round(e, (apr_time_t)INT64_MAX, 100000);
    return atomic_load(&e->c->sent) - before;
}

void imx_engine_stats(imx_engine_t *e, imx_stats_t *st)
{
    memset(st, 0, sizeof(*st));
    imx_counters_read(e->c, st);
    if (e->conf.spool) {
        st->spooled = imx_spool_pending(e->conf.spool);
    }
    apr_thread_mutex_lock(e->mu);
    memcpy(st->last_error, e->last_error, sizeof(st->last_error));
    apr_thread_mutex_unlock(e->mu);
}

/* ------------------------------------------------------------------------- */
/* Unique timestamps                                                          */

/* A slot holds its millisecond in the upper bits and the tickets handed out
 * for it in the lower TS_COUNT_BITS. Tickets from 0 to TS_HALF - 1 come from
 * the slot; late ones from TS_HALF up, from the table's one late counter. */
#define TS_COUNT_BITS 20
#define TS_COUNT_MASK ((UINT64_C(1) << TS_COUNT_BITS) - 1)
#define TS_HALF 500000

int64_t imx_ts_unique(imx_ts_table_t *t, apr_time_t start)
{
    uint64_t ms = start > 0 ? (uint64_t)start / 1000 : 0;
    _Atomic uint64_t *slot = &t->slot[ms & (IMX_TS_SLOTS - 1)];
    uint64_t cur = atomic_load_explicit(slot, memory_order_relaxed);
    uint64_t n;

    for (;;) {
        uint64_t cms = cur >> TS_COUNT_BITS, next;

        if (cms == ms) {
            n = cur & TS_COUNT_MASK;
            if (n >= TS_HALF) {
                break;          /* half a million starts in one ms: late range */
            }
            next = cur + 1;
        }
        else if (cms < ms) {
            n = 0;              /* the slot's older millisecond is over: take it */
            next = (ms << TS_COUNT_BITS) | 1;
        }
        else {
            break;              /* reused for a later millisecond already */
        }
        if (atomic_compare_exchange_weak_explicit(slot, &cur, next, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            return (int64_t)(ms * 1000000 + n);
        }
    }
    n = atomic_fetch_add_explicit(&t->late, 1, memory_order_relaxed) % TS_HALF;
    return (int64_t)(ms * 1000000 + TS_HALF + n);
}
