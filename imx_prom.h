/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_prom.h: the engine of the Prometheus endpoint (no httpd headers).
 *
 * Every httpd child records its requests into its own table, in shared
 * memory the parent made (one table per child slot). A table is never
 * emptied while the server runs: a later child in the same slot adds to
 * what its predecessors counted, so every counter only grows, as
 * Prometheus counters must. A scrape, in whichever child serves it, sums
 * all the slot tables by series key into private memory (an accumulator)
 * and writes the text exposition from the sum.
 *
 * A series holds one counter per bucket (not cumulative), the sum of the
 * durations in microseconds and the sum of the bytes sent; no separate
 * count, so a scrape's _count is the sum of the very bucket values it
 * read and always equals its +Inf bucket. A request the table cannot give
 * a series to (full, or its key unclaimable) is counted in the table's
 * overflow series (key IMX_PROM_OVERFLOW), so the sum over all series is
 * exactly the number of requests recorded.
 *
 * imx_prom.c: layouts, tables, recording; imx_prom_acc.c: accumulators;
 * imx_prom_int.h: the table layout both share.
 * imx_prom_text.c: label helpers, the text formats, negotiation.
 */
#ifndef IMX_PROM_H
#define IMX_PROM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <apr_pools.h>

/* Bucket bounds at most (+Inf comes on top of them). */
#define IMX_PROM_BUCKETS_MAX 32
/* The series of a table's requests that found no series of their own. */
#define IMX_PROM_OVERFLOW UINT64_MAX
/* Longest exemplar id (longer ones are cut). */
#define IMX_PROM_ID_MAX 64
/* An exemplar is replaced by a request at least this much later (ns). */
#define IMX_PROM_EX_HOLD_NS 1000000
/* Room for an le value: "+Inf", "0.000123", "123456789.123456", "1e+09". */
#define IMX_PROM_LE_MAX 24
/* Largest bound: 10^9 seconds, in microseconds. */
#define IMX_PROM_LE_LIMIT_US 1000000000000000ULL

/* ------------------------------------------------------------------------- */
/* Bucket layouts                                                            */

/* Upper bounds in microseconds, strictly ascending, 1 <= n <= 32. */
typedef struct imx_prom_buckets {
    uint32_t n;
    uint64_t le_us[IMX_PROM_BUCKETS_MAX];
} imx_prom_buckets_t;

/* The default: 0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10
 * seconds. From a cache hit or a small static file (about a millisecond)
 * to a slow application (10 s), three buckets a decade (1, 2.5, 5): each
 * bucket at most 2.5 times its lower bound wide, so a histogram_quantile()
 * estimate lands within a factor 2.5 of the truth anywhere in that range.
 * That is the Prometheus clients' default (0.005 .. 10) with 1 ms and
 * 2.5 ms added: httpd answers static files and cache hits in under 5 ms,
 * which the clients' default puts into one bucket. With 14 buckets a
 * series' counters and sums are 128 bytes: two cache lines. */
void imx_prom_buckets_default(imx_prom_buckets_t *b);

/* Parses a whole list of bounds in seconds, separated by blanks and/or
 * commas ("0.005 0.01 0.1, 1 2.5"), into b: what the glue calls once with
 * the directive's arguments joined (RAW_ARGS). Each value is decimal
 * digits with an optional fraction of at most 6 significant digits
 * (microseconds; trailing zeros past them are fine): "1", "0.005", "2.5",
 * ".5", "+5". Rejected: non-numbers (exponents, "+Inf": it is implicit),
 * values not above 0 (a minus sign among them), finer than a microsecond,
 * above 10^9 s, repeated, not strictly ascending, more than 32, an empty
 * list. Returns 0, or -1
 * with a message naming the bad value in err (errsz bytes; b is then
 * unspecified). */
int imx_prom_buckets_parse(imx_prom_buckets_t *b, const char *list, char *err, size_t errsz);

/* Appends one bound (one argument of an ITERATE directive) to b, which
 * starts with n = 0; the same rules and messages. */
int imx_prom_buckets_add(imx_prom_buckets_t *b, const char *arg, char *err, size_t errsz);

/* The le label value of bound us (0: "+Inf") into out (IMX_PROM_LE_MAX
 * bytes, NUL-terminated); returns its length. Canonical, whatever the
 * spelling in the configuration ("0.50" and ".5" give "0.5"), and the same
 * in both formats, so a series keeps its identity across scrapes, restarts
 * and a scraper's change of format: OpenMetrics' canonical numbers (Go's
 * shortest %g, with ".0" when that has neither a point nor an exponent):
 * "0.001", "0.0025", "1.0", "2.5", "10.0", "1e-05", "1e+06". */
size_t imx_prom_format_le(char *out, uint64_t us);

/* ------------------------------------------------------------------------- */
/* Tables (one per child slot, in shared memory)                             */

/* The header; keys, hash index and bodies follow it (see imx_prom.c).
 * Read-only after imx_prom_init but for `used`. */
typedef struct imx_prom_table {
    uint32_t cap;               /* series, besides the overflow one */
    uint32_t nindex;            /* hash slots: a power of two >= 2 cap */
    uint32_t shift;             /* 64 - log2(nindex) */
    uint32_t nb;                /* bounds; buckets are nb + 1 */
    uint32_t exemplars;
    uint32_t stride;            /* bytes per series body */
    uint32_t ex_off;            /* offset of the exemplars in a body */
    uint32_t boff;              /* offset of the bodies from the table */
    _Atomic uint32_t used;      /* bodies claimed (may pass cap: read as cap) */
    uint32_t pad;
    /* The bounds, then UINT64_MAX to IMX_PROM_BUCKETS_MAX, for a search of
     * fixed length. */
    uint64_t le_us[IMX_PROM_BUCKETS_MAX];
} imx_prom_table_t;

/* Bytes of a table of cap series (cap <= 2^24) of nbuckets bounds (a
 * layout's n), with or without exemplars. A series takes a body of 16 +
 * 8 (n + 1) bytes rounded to 64 (128 with the default's 13 bounds), plus
 * 88 (n + 1) rounded to 64 with exemplars (1408 in all), a key (8) and
 * two index slots (8). Cap 1024, default layout: 151680 bytes, 1463680
 * with exemplars; of which the header, keys and index are 20 KiB, all that
 * is backed before series are claimed (besides the overflow body). */
size_t imx_prom_table_size(uint32_t cap, uint32_t nbuckets, int exemplars);

/* Makes an empty table in t (imx_prom_table_size() bytes, 64-byte
 * aligned; page aligned so that a series in use backs only the pages of
 * its own body). Writes the header, the keys, the index and the overflow
 * series, never the other bodies: each is zeroed when its series is
 * claimed. Nobody may use t meanwhile. */
void imx_prom_init(imx_prom_table_t *t, uint32_t cap, const imx_prom_buckets_t *b, int exemplars);

/* t's layout into b. */
void imx_prom_table_buckets(const imx_prom_table_t *t, imx_prom_buckets_t *b);

/* The bucket of a duration: the first whose bound is >= us (le: less or
 * equal), nb for +Inf. */
unsigned imx_prom_bucket(const imx_prom_table_t *t, uint64_t us);

/* Request path: counts one request of series key (caller-defined, nonzero;
 * 0 and IMX_PROM_OVERFLOW go to the overflow series) that took us
 * microseconds and sent bytes_sent body bytes. rid (rid_len bytes, at most
 * IMX_PROM_ID_MAX taken; NULL/0: none) becomes the exemplar of its series
 * and bucket, with now_ns (unix time), when t has exemplars, the exemplar
 * there is IMX_PROM_EX_HOLD_NS older (or from a later now_ns: a clock set
 * back) and not being written by another request at that moment (then it
 * is left to the other one): each bucket's exemplar is the latest request
 * with an id, give or take a millisecond. Lock-free: no allocation, no
 * system call, no wait but a short bounded spin for a series being
 * claimed; any number of threads in any number of processes. */
void imx_prom_record(imx_prom_table_t *t, uint64_t key, uint64_t us, uint64_t bytes_sent,
                     const char *rid, size_t rid_len, int64_t now_ns);

/* ------------------------------------------------------------------------- */
/* Reading: the sum of any number of tables, in private memory              */

/* One series of an accumulator. */
typedef struct imx_prom_series {
    uint64_t key;
    uint64_t count;             /* the sum of b */
    uint64_t sum_us;
    uint64_t bytes;
    uint64_t b[IMX_PROM_BUCKETS_MAX + 1];   /* per bucket, not cumulative */
} imx_prom_series_t;

/* The latest request with an id in one series and bucket. */
typedef struct imx_prom_exemplar {
    int64_t ns;                 /* when it was recorded */
    uint64_t us;                /* its duration */
    uint32_t len;
    char id[IMX_PROM_ID_MAX];   /* not NUL-terminated */
} imx_prom_exemplar_t;

typedef struct imx_prom_acc imx_prom_acc_t;

/* An empty accumulator for tables of layout b (malloc'ed; NULL when out
 * of memory). exemplars: keep them (of the tables that have them). */
imx_prom_acc_t *imx_prom_acc_new(const imx_prom_buckets_t *b, int exemplars);

/* Errors of imx_prom_acc_add. */
#define IMX_PROM_ELAYOUT (-1)   /* t's buckets are not the accumulator's */
#define IMX_PROM_ENOMEM (-2)

/* Adds every series of t (also being recorded into, in any process) to a,
 * by key, and keeps the newest exemplar of each bucket. Reads t only:
 * never writes shared memory, never waits for a writer. Returns 0, or an
 * error with nothing of t added. */
int imx_prom_acc_add(imx_prom_acc_t *a, const imx_prom_table_t *t);

/* Series in a (those with at least one request). */
uint32_t imx_prom_acc_len(const imx_prom_acc_t *a);

/* The i-th series in ascending key order (the overflow series last);
 * valid until the next imx_prom_acc_add or imx_prom_acc_free. */
const imx_prom_series_t *imx_prom_acc_series(imx_prom_acc_t *a, uint32_t i);

/* The exemplar of bucket b (0..nb) of series s of a, NULL if none. */
const imx_prom_exemplar_t *imx_prom_acc_exemplar(const imx_prom_acc_t *a,
                                                 const imx_prom_series_t *s, unsigned b);

/* a's layout. */
const imx_prom_buckets_t *imx_prom_acc_buckets(const imx_prom_acc_t *a);

void imx_prom_acc_free(imx_prom_acc_t *a);

/* ------------------------------------------------------------------------- */
/* Text exposition (imx_prom_text.c)                                         */

typedef enum {
    IMX_PROM_TEXT = 0,          /* Prometheus text format 0.0.4 */
    IMX_PROM_OPENMETRICS = 1    /* OpenMetrics 1.0.0 text */
} imx_prom_fmt_t;

/* A growing output buffer (malloc'ed; imx_prom_out_free when done; a
 * zeroed one is empty), buf[len] is always '\0'. A failed growth sets
 * `failed` and makes every later write a no-op, so a caller checks once,
 * at the end, and answers 500 rather than a partial exposition (which a
 * scraper must reject whole anyway). */
typedef struct imx_prom_out {
    char *buf;
    size_t len, cap;
    int failed;
} imx_prom_out_t;

void imx_prom_out_free(imx_prom_out_t *o);

/* The label text of a series key, already in Prometheus form without
 * braces ('vhost="a",route="b",method="GET",status="200"', "" for none),
 * valid until the next call; NULL leaves the series out. It must give the
 * overflow series (IMX_PROM_OVERFLOW) labels too, or the sums over all
 * series are no longer exact. */
typedef const char *imx_prom_labels_fn(void *ctx, uint64_t key);

/* Family names. */
#define IMX_PROM_DURATION "apache_request_duration_seconds"
#define IMX_PROM_BYTES "apache_response_bytes"

/* The histogram family IMX_PROM_DURATION of a's series: TYPE, HELP (and
 * UNIT in OpenMetrics), then per series its cumulative buckets, _count
 * and _sum (seconds); in OpenMetrics each bucket with an exemplar gets it:
 * ' # {request_id="..."} <seconds> <unix time>'. */
void imx_prom_write_duration(imx_prom_out_t *o, imx_prom_fmt_t fmt, imx_prom_acc_t *a,
                             imx_prom_labels_fn *labels, void *ctx);

/* The counter family of the response body bytes of a's series:
 * apache_response_bytes_total in 0.0.4; in OpenMetrics the family
 * apache_response_bytes (unit bytes) with samples ..._total. */
void imx_prom_write_bytes(imx_prom_out_t *o, imx_prom_fmt_t fmt, imx_prom_acc_t *a,
                          imx_prom_labels_fn *labels, void *ctx);

/* One sample of a generic family: labels as for imx_prom_labels_fn
 * (NULL or "": none). */
typedef struct imx_prom_sample {
    const char *labels;
    uint64_t value;
} imx_prom_sample_t;

/* A gauge family: TYPE and HELP (and UNIT in OpenMetrics when unit is not
 * NULL; name must then end in "_" unit), then its n samples. */
void imx_prom_write_gauge(imx_prom_out_t *o, imx_prom_fmt_t fmt, const char *name,
                          const char *help, const char *unit,
                          const imx_prom_sample_t *s, size_t n);

/* A counter family, name with or without "_total" (the same output):
 * 0.0.4 names family and samples name_total; OpenMetrics names the family
 * without _total and its samples with it. */
void imx_prom_write_counter(imx_prom_out_t *o, imx_prom_fmt_t fmt, const char *name,
                            const char *help, const char *unit,
                            const imx_prom_sample_t *s, size_t n);

/* The end of an exposition: "# EOF" in OpenMetrics, nothing in 0.0.4. */
void imx_prom_write_eof(imx_prom_out_t *o, imx_prom_fmt_t fmt);

/* The format to answer a request with Accept header value accept (NULL:
 * none): OpenMetrics when it lists application/openmetrics-text with a q
 * above 0 and no text/plain with a higher q; else 0.0.4. */
imx_prom_fmt_t imx_prom_negotiate(const char *accept);

/* The Content-Type of an answer in fmt. */
const char *imx_prom_content_type(imx_prom_fmt_t fmt);

/* ------------------------------------------------------------------------- */
/* Labels (imx_prom_text.c). Each writes into out (outsz bytes) with a NUL  */
/* and returns the length, or (size_t)-1 when out is too small.             */

/* A label value escaped for both formats: backslash, double quote and
 * newline get a backslash (newline as \n); a byte that is not valid UTF-8
 * (both formats require UTF-8), NUL (it would end the text), CR (which
 * OpenMetrics bans from lines) and other control bytes but TAB become '?'.
 * 2 * len + 1 always suffices. */
size_t imx_prom_escape_value(char *out, size_t outsz, const char *in, size_t len);

/* A label name from any text: bytes outside [a-zA-Z0-9_] become '_' (one
 * for a whole UTF-8 character), a leading digit gets a '_' before it, ""
 * becomes "_". len + 2 suffices. (Names starting with "__" are reserved
 * for Prometheus' own use: left as they are, but best not configured.) */
size_t imx_prom_label_name(char *out, size_t outsz, const char *in, size_t len);

/* Label pairs from a tag text in InfluxDB line protocol as the glue keeps
 * it (",vhost=www.example.com,team=a\ b,dc=eu\,west", leading comma
 * optional): 'vhost="www.example.com",team="a b",dc="eu,west"'. Keys and
 * values are read back as InfluxDB 1.x stores them (a comma, space or
 * equals sign after a backslash is unescaped, any other backslash kept;
 * see imx_lineproto.c), keys made label names, values escaped. A pair without
 * '=' or whose name came earlier is left out; a tag named le (the
 * histogram's own label) is named exported_le. IMX_PROM_LABELS_MAX(len)
 * always suffices. */
size_t imx_prom_lp_labels(char *out, size_t outsz, const char *lp, size_t len);
#define IMX_PROM_LABELS_MAX(len) (6 * (size_t)(len) + 16)

/* The same, allocated from pool p. */
char *imx_prom_plp_labels(apr_pool_t *p, const char *lp);

#endif /* IMX_PROM_H */
