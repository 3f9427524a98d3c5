/*
 * batch.h: the engine of mod_influx_metrics.
 *
 * Everything here depends on APR and the C library only, never on httpd, so the
 * engine links into unit tests and benchmarks without a server. The glue
 * (mod_influx_metrics.c) turns a request_rec into an imx_point_t and pushes it;
 * a flusher thread per process drains, encodes line protocol and hands the bytes
 * to a send callback (http_send.c provides the libcurl one).
 */
#ifndef IMX_BATCH_H
#define IMX_BATCH_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <apr_pools.h>
#include <apr_time.h>

/* The registry of names (histogram.h): servers, routes and upstreams by
 * small ids that mean the same text in every generation. */
typedef struct imx_names imx_names_t;

/* Optional fields and tags of a raw point (InfluxMetricsFields), a bitmask
 * carried in each point, so that a point is encoded as it was recorded
 * whatever the encoding process's configuration says. */
#define IMX_F_TTFB           0x01   /* field ttfb_us */
#define IMX_F_BYTES_RECEIVED 0x02   /* field bytes_received */
#define IMX_F_REQUEST_ID     0x04   /* string field request_id (when not empty) */
#define IMX_F_PROTOCOL       0x08   /* tag protocol */
#define IMX_F_TLS            0x10   /* tag tls */
#define IMX_F_UPSTREAM       0x20   /* tag upstream */

/* Values of imx_point_t.protocol and .tls: indices into fixed tables. */
enum { IMX_PROTO_OTHER, IMX_PROTO_09, IMX_PROTO_10, IMX_PROTO_11, IMX_PROTO_20,
       IMX_PROTO_N };
enum { IMX_TLS_NONE, IMX_TLS_10, IMX_TLS_11, IMX_TLS_12, IMX_TLS_13, IMX_TLS_OTHER,
       IMX_TLS_N };
extern const char *const imx_protocol_names[IMX_PROTO_N];  /* "HTTP/1.1", ... */
extern const char *const imx_tls_names[IMX_TLS_N];         /* "none", "TLSv1.3", ... */

/* Longest request id (InfluxMetricsFields request_id), in bytes. */
#define IMX_RID_MAX 64

/* One request, as the request path hands it over: 56 bytes, so that a
 * buffer cell with its sequence number is one 64-byte cache line. It names
 * everything by index, never by pointer, into tables that mean the same in
 * every process of every generation of one httpd parent: a record left in
 * shared memory by a child of an older generation that died is encoded by
 * any later child exactly as it was recorded. */
typedef struct imx_point {
    int64_t ts_ns;              /* request start, made unique (imx_ts_unique) */
    int64_t duration_us;
    int64_t bytes_sent;
    int64_t bytes_received;     /* IMX_F_BYTES_RECEIVED */
    uint32_t tag;               /* InfluxMetricsTagFrom value (imx_tag_text_fn), 0: none */
    uint32_t ttfb_us;           /* IMX_F_TTFB */
    uint16_t server;            /* registry kind 0: ",vhost=.." | static tags */
    uint16_t route;             /* registry kind 1: ",route=..", 0: none */
    uint16_t upstream;          /* registry kind 2: ",upstream=..", 0: "-" */
    uint16_t status;
    uint16_t sample;            /* kept with probability sample/10000 (field
                                 * sample_rate); 0: not sampled, no field */
    uint8_t method;             /* index into the methods table */
    uint8_t protocol;           /* IMX_PROTO_* */
    uint8_t tls;                /* IMX_TLS_* */
    uint8_t rid_len;            /* bytes of request id kept beside the cell */
    uint8_t fields;             /* IMX_F_* */
    uint8_t spare;
} imx_point_t;

/* A tag reference with this bit set names registry kind 3 (its low 16 bits:
 * the id), texts that never change, such as ",key=other"; without it, the
 * reference belongs to imx_tag_text_fn. */
#define IMX_TAG_NAMED 0x80000000u

/* The text of an InfluxMetricsTagFrom value (",key=value", escaped) or NULL
 * when it is gone (its table was emptied since). */
typedef const char *imx_tag_text_fn(uint32_t ref);

/* What turns a point's indices into text. All of it must stay valid and
 * mean the same for as long as any ring holds points naming it. */
typedef struct imx_names_src {
    const imx_names_t *reg;     /* servers, routes, upstreams */
    const char *const *methods; /* escaped method names by index; NULL: "OTHER" */
    unsigned nmethods;
    imx_tag_text_fn *tag_text;  /* may be NULL: no request tags */
} imx_names_src_t;

/* ------------------------------------------------------------------------- */
/* Line protocol (lineproto.c)                                                */

/* Which escaping rules apply: they differ between measurement names and
 * tag keys/values/field keys (see lineproto.c). */
typedef enum {
    IMX_ESC_MEASUREMENT,
    IMX_ESC_TAG                 /* tag keys, tag values, field keys */
} imx_esc_kind_t;

/* Escapes `in` (len bytes) into out (capacity outsz, NUL-terminated).
 * Returns the length written, or (size_t)-1 when out is too small (outsz of
 * 2 * len + 1 always suffices). Line protocol has no escape for newlines or
 * other control bytes: LF, CR and TAB become the two characters \n, \r, \t
 * (as the official clients do), other control bytes and invalid UTF-8 become
 * '?'. Nothing the input holds can end the value, the tag set or the line. */
size_t imx_escape(char *out, size_t outsz, const char *in, size_t len,
                  imx_esc_kind_t kind);

/* The same, allocated from pool p. */
char *imx_pescape(apr_pool_t *p, const char *in, imx_esc_kind_t kind);

/* Length of the valid UTF-8 sequence at s (n > 0 bytes left), 0 if the
 * bytes there are not one: overlongs, surrogates and code points past
 * U+10FFFF are not. */
size_t imx_utf8_len(const unsigned char *s, size_t n);

/* Writes v in decimal at o (at most 20 bytes, no NUL); returns the end. */
char *imx_put_u64(char *o, uint64_t v);

/* Upper bound of one encoded line for `pt` with the given line prefix length. */
size_t imx_line_max(size_t prefix_len, const imx_names_src_t *ns, const imx_point_t *pt);

/* Writes the part of pt's line that its series decides, from `prefix`
 * ("measurement,host=..") to " duration_us=", at out (which must hold
 * imx_line_max() bytes). Returns bytes written. */
size_t imx_encode_series(char *out, const char *prefix, size_t prefix_len,
                         const imx_names_src_t *ns, const imx_point_t *pt);

/* Most bytes imx_encode_values() writes. */
#define IMX_VALUES_MAX (4 * 21 + 80 + 2 * IMX_RID_MAX + 20)

/* The seconds of the last timestamp written, in digits: neighbouring
 * points share them, so most timestamps cost nine digits, not nineteen. */
typedef struct imx_ts_cache {
    int64_t sec;                /* -1: none yet */
    uint32_t len;
    char text[20];
} imx_ts_cache_t;

/* Writes the rest of the line: the field values, the timestamp and '\n'.
 * rid: the request id (pt->rid_len bytes, already validated); tc: NULL, or
 * a cache the caller keeps between calls. */
size_t imx_encode_values(char *out, const imx_point_t *pt, const char *rid,
                         imx_ts_cache_t *tc);

/* Both: one whole line ("prefix,vhost=...,method=..,status=.. fields ts\n"). */
size_t imx_encode_line(char *out, const char *prefix, size_t prefix_len,
                       const imx_names_src_t *ns, const imx_point_t *pt, const char *rid);

/* ------------------------------------------------------------------------- */
/* Sending                                                                    */

typedef enum {
    IMX_SEND_OK = 0,            /* stored */
    IMX_SEND_RETRY,             /* transient: keep the batch, try again later */
    IMX_SEND_REJECT,            /* permanent for these bytes: count and drop */
    IMX_SEND_PARTIAL,           /* some points stored, info->dropped refused */
    IMX_SEND_TOO_LARGE          /* body too large: split it and send the halves */
} imx_send_result_t;

/* Called by a sender while its POST waits on the network (about every
 * 20 ms), from the flusher thread itself: the engine keeps draining its
 * ring meanwhile. */
typedef void imx_send_wait_fn(void *ctx);

/* What a send tells the engine besides its result. */
typedef struct imx_send_info {
    apr_interval_time_t retry_after;    /* the backend's Retry-After, or 0 */
    int slow;                   /* retry at the slowest pace (credentials,
                                 * missing database: a human must act) */
    uint32_t dropped;           /* IMX_SEND_PARTIAL: points refused */
    int maybe_stored;           /* IMX_SEND_RETRY after the body was sent (no
                                 * answer, cut, timed out): it may be stored */
    char err[256];              /* on failure: what happened, never a secret */
    /* Set by the engine before the call (the rest is zeroed), kept by the
     * sender: NULL, or called while the POST waits. */
    imx_send_wait_fn *wait;
    void *wait_ctx;
} imx_send_info_t;

/* Optional: called from another thread (at shutdown) so that a send in
 * progress returns by `deadline` at the latest. */
typedef void imx_send_limit_fn(void *ctx, apr_time_t deadline);

/* Posts one batch. body is line protocol (gzip-compressed when gzipped != 0).
 * deadline: 0, or an absolute time by which it must return even if its own
 * timeout is longer (set during shutdown). info is zeroed by the caller.
 * Called from the flusher only. */
typedef imx_send_result_t imx_send_fn(void *ctx, const char *body, size_t len,
                                      int gzipped, apr_time_t deadline,
                                      imx_send_info_t *info);

/* Levels follow syslog numbering, like APLOG_*. */
#define IMX_LOG_ERR     3
#define IMX_LOG_WARNING 4
#define IMX_LOG_NOTICE  5
#define IMX_LOG_INFO    6
#define IMX_LOG_DEBUG   7

typedef void imx_log_fn(void *ctx, int level, const char *msg);

/* ------------------------------------------------------------------------- */
/* The engine: bounded buffer + flusher                                       */

typedef struct imx_engine imx_engine_t;

typedef struct imx_stats imx_stats_t;

/* The on-disk spool (spool.h). */
typedef struct imx_spool imx_spool_t;

/* The engine's counters, in memory the caller provides: shared memory in the
 * module, so that they stay exact and readable when the process dies without
 * warning. Every recorded point ends as exactly one of sent, rejected,
 * dropped_retry, dropped_exit or to_spool, or is still held: held = recorded
 * - those five, at any instant, because each of them changes with one atomic
 * add at the moment the point's fate is decided. Points handed to the spool
 * leave this process's account there; what becomes of spooled points (of
 * any process, of this generation or an earlier one) is counted by the
 * process that settles them, in unspooled or dropped_spool, which are not
 * terms of its own identity. Zero-filled memory is a valid empty set of
 * counters. */
typedef struct imx_counters {
    _Alignas(64) _Atomic uint64_t recorded;     /* the ring's head: a position */
    _Alignas(64) _Atomic uint64_t dropped_full; /* refused: ring full (never recorded) */
    _Alignas(64) _Atomic uint64_t sent;
    _Atomic uint64_t rejected;
    _Atomic uint64_t dropped_retry;
    _Atomic uint64_t dropped_exit;
    _Atomic uint64_t to_spool;      /* recorded here, handed to the spool */
    _Atomic uint64_t unspooled;     /* spooled points this process sent */
    _Atomic uint64_t dropped_spool; /* spooled points this process gave up on:
                                     * deleted for room, a failed write, a
                                     * bad file, refused by the backend */
    _Atomic uint64_t maybe_stored;
    _Atomic uint64_t retries;
    _Atomic uint64_t batches;
    _Atomic uint64_t bytes;
    _Atomic uint64_t late;          /* pushes refused because the engine stopped:
                                     * counted as recorded and dropped_exit */
    _Atomic uint64_t sending;       /* points of the POST under way */
    _Atomic uint64_t retry_points;  /* points in the retry buffer */
    _Atomic uint64_t retry_bytes;
    _Atomic int64_t last_ok;
    _Atomic int64_t last_error_time;
    /* The ring's positions: `recorded` above is its head (the counters
     * start at zero with the engine); the flusher has taken every point
     * below `taken` out of the ring. */
    _Atomic uint64_t taken;
    _Atomic uint64_t moved;         /* after this engine died: points another
                                     * engine took over from its ring (they
                                     * count as that one's) */
    _Atomic uint64_t lost;          /* after this engine died: cells of its
                                     * ring that were half written */
} imx_counters_t;

/* Points recorded and not yet settled, from a consistent reading. */
uint64_t imx_counters_held(const imx_counters_t *c);

/* Gives back `bytes` reserved in a shared retry budget (conf.retry_shared)
 * by an engine that is gone: never below zero. */
void imx_retry_release(_Atomic uint64_t *shared, uint64_t bytes);

/* A snapshot of c into st (counters only; last_error is left alone). */
void imx_counters_read(const imx_counters_t *c, imx_stats_t *st);

/* Called by the flusher after every round with a snapshot (the glue keeps
 * the last error's text where the status page can read it). */
typedef void imx_stats_fn(void *ctx, const imx_stats_t *st);

/* Called by the flusher once per flush interval, and once more (final = 1)
 * when it stops, so the glue can add points of its own with
 * imx_engine_submit(). */
typedef void imx_tick_fn(void *ctx, imx_engine_t *e, int final);

/* Called by the flusher thread as the very last thing it does, after the
 * final flush: the place to release what only it uses (the sender's
 * handles). Never called from a signal handler. */
typedef void imx_exit_fn(void *ctx);

typedef struct imx_engine_conf {
    const char *line_prefix;    /* escaped "measurement,host=name" */
    uint32_t capacity;          /* records held before drops, >= 2 */
    uint32_t batch_size;        /* max points per send, 1 .. capacity */
    apr_interval_time_t flush_interval;
    apr_interval_time_t shutdown_timeout;   /* budget for the final flush */
    /* Retries, as in the official clients' write APIs: the first after
     * about retry_interval, each next one retry_base times later, at most
     * retry_max_delay apart; a batch failing for longer than retry_max_time
     * (0: no limit) is dropped. Failed batches wait in a retry buffer of at
     * most retry_buffer bytes; when it is full the oldest batch is dropped. */
    apr_interval_time_t retry_interval;
    unsigned retry_base;
    apr_interval_time_t retry_max_delay;
    apr_interval_time_t retry_max_time;
    size_t retry_buffer;
    /* Bytes held in the retry buffers of every engine that shares it (in
     * shared memory: every child of a server). With it, retry_buffer bounds
     * them all together: an engine reserves a batch's size here, in whole
     * pages (the batch is mapped pages of its own), before it keeps it and
     * gives them back when it frees it, and what it holds is also in
     * counters->retry_bytes, so that whoever folds a dead engine's counters
     * can give it back (imx_retry_release). NULL: each engine is bounded
     * alone (malloc'd batches, bytes counted as they are). */
    _Atomic uint64_t *retry_shared;
    int gzip;
    /* Escaped "measurement,host=h,slot=n" of the module's own counters,
     * written once per flush interval when they changed; NULL: never. */
    const char *self_prefix;
    imx_counters_t *counters;   /* zeroed by the caller; NULL: the engine's own */
    /* The ring's cells: capacity (a power of two) x 64 bytes, 64-aligned,
     * from the caller (shared memory in the module, so that it outlives the
     * process, see imx_ring_rescue); NULL: allocated from the pool. */
    void *cells;
    imx_send_fn *send;
    imx_send_limit_fn *send_limit;  /* may be NULL; must be async-signal-safe */
    void *send_ctx;
    imx_log_fn *log;            /* may be NULL */
    void *log_ctx;
    imx_stats_fn *on_stats;     /* may be NULL */
    void *stats_ctx;
    imx_tick_fn *on_tick;       /* may be NULL */
    void *tick_ctx;
    imx_exit_fn *on_exit;       /* may be NULL */
    void *exit_ctx;
    imx_names_src_t names;      /* what the points' indices name */
    /* Request ids beside the cells: capacity x IMX_RID_MAX bytes, in the
     * same memory as the cells (the caller's, or allocated from the pool
     * when rid_cells is set and this is NULL); NULL with rid_cells 0: no
     * request ids are kept. */
    void *rids;
    int rid_cells;
    /* Optional (NULL: none). What cannot be sent before the exit deadline
     * is written there instead of dropped (the last half of
     * shutdown_timeout is kept for writing), and so are the batches the
     * retry buffer cannot keep (full, too old, too large); the flusher sends
     * spooled files while the backend is healthy, for at most half of each
     * flush interval. Owned by the caller; used by the flusher only. */
    imx_spool_t *spool;
} imx_engine_conf_t;

struct imx_stats {
    uint64_t recorded;          /* points accepted into the buffer */
    uint64_t dropped_full;      /* points refused because the buffer was full */
    uint64_t sent;              /* points the backend acknowledged */
    uint64_t rejected;          /* points the backend refused for good */
    uint64_t dropped_retry;     /* points of batches evicted from a full retry
                                 * buffer or retried for longer than allowed */
    uint64_t dropped_exit;      /* points still unsent when the flusher gave up at
                                 * exit, or recorded after it stopped */
    uint64_t to_spool;          /* points handed to the spool */
    uint64_t unspooled;         /* spooled points sent by this process */
    uint64_t dropped_spool;     /* spooled points this process gave up on */
    uint64_t spooled;           /* points in the spool now, all processes */
    uint64_t maybe_stored;      /* of the dropped_retry, dropped_exit and
                                 * dropped_spool points, those whose POST failed
                                 * after the body was sent: the backend may
                                 * hold them after all */
    uint64_t retries;           /* failed sends that will be tried again */
    uint64_t batches;           /* successful sends */
    uint64_t bytes;             /* body bytes of successful sends */
    uint64_t buffered;          /* points held: recorded and not settled */
    uint64_t lost;              /* half-written cells found after it died */
    uint64_t retry_bytes;       /* bytes held in the retry buffer */
    apr_time_t last_ok;         /* last successful send, or 0 */
    apr_time_t last_error_time; /* last failed send, or 0 */
    char last_error[200];
};

/* Creates the engine with its memory from p (the buffer is allocated here,
 * once). p must outlive every thread that may still push: request threads
 * can log after the engine stopped, and then find it stopped, not freed.
 * Does not start a thread. Returns NULL and fills err on bad conf. */
imx_engine_t *imx_engine_create(apr_pool_t *p, const imx_engine_conf_t *conf,
                                char *err, size_t errsz);

/* Request path. Never blocks, never allocates: returns 1 when buffered,
 * 0 when dropped (buffer full, counted in dropped_full; or engine stopped,
 * counted in dropped_exit). Thread-safe. */
int imx_push(imx_engine_t *e, const imx_point_t *pt);

/* The same with a request id of pt->rid_len bytes (at most IMX_RID_MAX,
 * validated by the caller: it is written as it is), kept beside the cell
 * when the engine keeps ids (else the point goes without it). */
int imx_push_rid(imx_engine_t *e, const imx_point_t *pt, const char *rid);

/* From the flusher thread only (inside on_tick): adds `lines` lines of line
 * protocol that are not request points (summaries) to the head of the next
 * batch, sent right after the tick with the same retries; they do not count
 * in recorded/sent. */
void imx_engine_submit(imx_engine_t *e, const char *data, size_t len, uint32_t lines);

/* Starts the flusher thread. Its memory is its own (malloc), so nothing the
 * caller's pools do at exit can pull it away from under it. */
apr_status_t imx_engine_start(imx_engine_t *e);

/* Stops accepting work and waits, at most shutdown_timeout (plus a little),
 * for the flusher to flush what is held, call on_exit and end. Async-signal-
 * safe when a flusher runs (prefork calls child cleanups from its SIGTERM
 * handler): it only stores atomics, writes a pipe and poll()s another. Without
 * a flusher it drains and frees in the caller instead (tests). Safe to call
 * more than once. Returns 1 if the flusher finished in time. */
int imx_engine_stop(imx_engine_t *e);

/* From e's flusher: takes over what an engine that died (its cells and
 * counters, which must no longer be written by anyone) left in its ring,
 * pushing each published point into e, which then records and sends it as
 * its own; the dead one counts it in moved. A cell its producer never
 * finished is counted in the dead one's lost. rids: the dead ring's request
 * ids, or NULL. Resumable: stops when e's ring
 * is full (the rest waits for the next call) and advances the dead one's
 * taken as it goes. Returns the points moved. */
uint64_t imx_ring_rescue(imx_engine_t *e, void *cells, const void *rids,
                         uint32_t capacity, imx_counters_t *dead);

/* Without a thread: drain and send everything now (tests, benchmarks). Returns
 * the number of points the backend accepted in this call. */
uint64_t imx_engine_flush_now(imx_engine_t *e);

void imx_engine_stats(imx_engine_t *e, imx_stats_t *st);

/* ------------------------------------------------------------------------- */
/* Unique timestamps                                                          */

/* InfluxDB keeps one point per series and timestamp: two requests of one
 * series with the same timestamp would silently become one. A point's time
 * is its start's millisecond plus a ticket, unique among all points that
 * started in that millisecond, server-wide: ts = ms * 10^6 + n. The table
 * holds a ticket counter for each of the last IMX_TS_SLOTS milliseconds
 * (about 4.4 minutes) and lives in shared memory across children and
 * generations. A point whose start's counter was already reused for a later
 * millisecond (a request longer than that, or a clock that stepped back by
 * more) takes a ticket from the upper half of the millisecond, from one
 * server-wide counter (counted in late). The time shifts by less than 1 ms. */
#define IMX_TS_SLOTS (1u << 18)
typedef struct imx_ts_table {
    _Atomic uint64_t late;
    _Atomic uint64_t slot[IMX_TS_SLOTS];
} imx_ts_table_t;

/* The unique timestamp in nanoseconds of a point that started at `start`. */
int64_t imx_ts_unique(imx_ts_table_t *t, apr_time_t start);

/* ------------------------------------------------------------------------- */
/* The libcurl sender (http_send.c)                                           */

typedef struct imx_http imx_http_t;

typedef struct imx_http_conf {
    const char *const *urls;    /* write URLs in order of preference, may hold
                                 * user:pass@ */
    int nurls;                  /* >= 1 */
    const char *token;          /* sent as "Authorization: Token ..."; may be NULL */
    apr_interval_time_t timeout;    /* per POST */
    int tls_verify;             /* 1 unless explicitly disabled */
    const char *ca_file;        /* may be NULL */
    const char *proxy;          /* proxy URL, may hold user:pass@; NULL: none,
                                 * whatever httpd's environment says */
} imx_http_conf_t;

/* The URL without user info and query, safe to log: everything up to the
 * last '@' before the query is left out, and all but the scheme when an '@'
 * follows a '?' or '#' (see http_send.c). */
const char *imx_url_redacted(apr_pool_t *p, const char *url);

/* One easy handle per URL, each reused for every POST (keep-alive). Call
 * curl_global_init before, in a single thread. Returns NULL with err filled
 * on failure. */
imx_http_t *imx_http_create(apr_pool_t *p, const imx_http_conf_t *conf,
                            char *err, size_t errsz);

/* imx_send_fn and imx_send_limit_fn implementations; ctx is the imx_http_t.
 * Answers: 2xx stored; 400 or 422 with "partial write ... dropped=N"
 * partial (N plus the lines InfluxDB could not parse refused); other 400
 * and 4xx rejected; 413 too large; 401, 403, 404 retried slowly; 408, 429,
 * 5xx and transport errors retried (Retry-After honoured). A URL that fails
 * that way passes the batch to the next URL, within one timeout for the
 * whole attempt; a failed URL is passed over for 10 s, twice as long after
 * each further failure (at most 320 s), then tried first again. */
imx_send_result_t imx_http_send(void *ctx, const char *body, size_t len,
                                int gzipped, apr_time_t deadline,
                                imx_send_info_t *info);
void imx_http_limit(void *ctx, apr_time_t deadline);

#endif /* IMX_BATCH_H */
