/*
 * mod_influx_metrics.c: httpd glue of mod_influx_metrics.
 *
 * Directives, configuration merging and hooks live here; the buffer, the
 * encoder and the sender (batch.c, lineproto.c, http_send.c) know nothing of
 * httpd. Everything a request needs is prepared before the fork: escaped
 * series strings per server, escaped routes per directory, method names. The
 * log_transaction hook then only fills a fixed-size record and pushes it.
 */
#include <pthread.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "ap_mpm.h"
#include "mpm_common.h"
#include "unixd.h"

#include "apr_strings.h"
#include "apr_lib.h"
#include "apr_file_io.h"
#include "apr_hash.h"
#include "apr_env.h"
#include "apr_network_io.h"

#include <curl/curl.h>

#include "batch.h"
#include "mod_influx_metrics_status.h"
#include "mod_influx_metrics_fields.h"
#include "mod_influx_metrics_summary.h"
#include "mod_influx_metrics_tags.h"
#include "mod_status.h"
#include "spool.h"

static void *create_dir_conf(apr_pool_t *p, char *dir);
static void *merge_dir_conf(apr_pool_t *p, void *basev, void *addv);
static void *create_srv_conf(apr_pool_t *p, server_rec *s);
static void *merge_srv_conf(apr_pool_t *p, void *basev, void *addv);
static const command_rec imx_cmds[];
static void imx_register_hooks(apr_pool_t *p);

/* Defined first: AP_DECLARE_MODULE also does APLOG_USE_MODULE, so that
 * LogLevel influx_metrics:<level> applies to every message below. */
AP_DECLARE_MODULE(influx_metrics) = {
    STANDARD20_MODULE_STUFF,
    create_dir_conf,
    merge_dir_conf,
    create_srv_conf,
    merge_srv_conf,
    imx_cmds,
    imx_register_hooks,
    /* Every virtual host gets its own merged configuration (its name and
     * index), also one without any of our directives: httpd would otherwise
     * hand it the main server's. */
    AP_MODULE_FLAG_ALWAYS_MERGE
};

#define UNSET (-1)

/* Defaults of the global settings, in one place. */
#define DEF_MEASUREMENT     "apache_request"
#define DEF_FLUSH_INTERVAL  apr_time_from_sec(1)
#define DEF_BATCH_SIZE      5000
/* The ring is touched in full by every busy child, so it is most of what
 * the module costs a child in memory (prefork sites run hundreds of them).
 * The flusher drains it at every full batch (half the ring at most), not
 * only once per interval, so it need not hold a second of traffic: 512
 * records per thread, at least 2048 (128 KiB), at most 65536 (4 MiB);
 * prefork (one thread) gets 2048, event with 25 threads 16384 (1 MiB). */
#define DEF_BUFFER_PER_THREAD 512
#define DEF_BUFFER_MIN      2048
#define DEF_BUFFER_MAX      65536
#define DEF_TIMEOUT         apr_time_from_sec(5)
#define DEF_GZIP            0
/* The exit flush must end before httpd's stop escalates (SIGTERM again at
 * 3 s, SIGKILL at 9 s): 2 s leaves room for the rest of the child's exit. */
#define SHUTDOWN_TIMEOUT    apr_time_from_sec(2)
/* Retries, as the official clients' defaults scaled to a 1 s flush: first
 * after about 1 s, doubling, at most 30 s apart. */
#define RETRY_INTERVAL      apr_time_from_sec(1)
#define RETRY_BASE          2
#define RETRY_MAX_DELAY     apr_time_from_sec(30)
#define DEF_RETRY_MAX_TIME  apr_time_from_sec(180)
#define DEF_RETRY_BUFFER    ((apr_off_t)64 << 20)
#define DEF_TLS_VERIFY      1
#define DEF_SUMMARY_SERIES  64
#define DEF_MAX_TAG_VALUES  100
#define DEF_SPOOL_SIZE      ((apr_off_t)1 << 30)

/* InfluxMetricsMode: bits of what is written. */
#define MODE_RAW            1
#define MODE_SUMMARY        2
#define DEF_MODE            MODE_RAW

/* Tag keys the module writes itself. */
static const char *const reserved_tags[] = {
    "host", "vhost", "method", "status", "route", "status_class",
    "time", "_measurement", "_field", "duration_us", "bytes_sent", "sample_rate",
    "protocol", "tls", "upstream", "ttfb_us", "bytes_received", "request_id", NULL
};

typedef struct {
    const char *key;
    const char *val;
} imx_tag_t;

typedef struct {
    /* Global: only the main server's values count (GLOBAL_ONLY directives). */
    apr_array_header_t *urls;   /* const char *, with precision=ns; NULL: unset */
    const void *urls_directive; /* the line that last set urls */
    const char *token;
    const char *measurement;
    apr_interval_time_t flush_interval;
    apr_interval_time_t timeout;
    int batch_size;
    int buffer_size;
    int gzip;
    apr_off_t retry_buffer;
    apr_interval_time_t retry_max_time;
    int tls_verify;
    const char *ca_file;
    const char *proxy;          /* NULL: no proxy, whatever the environment says */
    int mode;
    int summary_series;
    int max_tag_values;
    const char *spool_dir;      /* absolute; NULL: no spool */
    apr_off_t spool_size;
    /* Per server, merged into virtual hosts. */
    int fields_set;             /* InfluxMetricsFields seen here */
    const void *fields_directive;   /* the line that last set fields */
    unsigned fields;            /* IMX_F_* of InfluxMetricsFields */
    const char *rid_header;     /* InfluxMetricsRequestIDHeader, or NULL */
    apr_array_header_t *tags;   /* imx_tag_t, raw */
    int index;                  /* position in the server list */
    /* Registry ids (mod_influx_metrics_summary.h) that name the series of
     * raw points and summaries alike, the same in every generation. */
    int sum_server;             /* vhost and static tags */
    const int *sum_routes;      /* by route index */
} imx_srv_conf_t;

typedef struct {
    int enabled;                /* UNSET, 0, 1 */
    int route_idx;              /* index in the route registry (its escaped name
                                 * and series text); 0: none */
    double sample;              /* fraction of requests kept in raw mode; < 0: unset */
    apr_interval_time_t keep_slow;  /* UNSET, or keep requests at least this slow */
    int keep_errors;            /* UNSET, 0, 1: keep every 5xx */
    int tag_src;                /* TAG_* below; 0: no InfluxMetricsTagFrom */
    const char *tag_name;       /* the variable, note or header */
    const char *tag_key;        /* escaped tag key */
    int tag_idx;                /* its table (mod_influx_metrics_tags.c) */
    apr_interval_time_t slo;    /* UNSET, 0 (none) or InfluxMetricsSLO */
    apr_hash_t *tag_allow;      /* escaped tag key -> apr_hash_t * of the values
                                 * InfluxMetricsTagValues allows; NULL: none */
} imx_dir_conf_t;

#define TAG_ENV     1
#define TAG_NOTE    2
#define TAG_HEADER  3

/* Per process. `engine` is what the request path records into, set once the
 * flusher runs and never cleared: its memory lives as long as the process,
 * and a stopped engine refuses (and counts) what is pushed late. */
static _Atomic(imx_engine_t *) engine;
static const char *line_prefix;
static const char *host_escaped;
/* Escaped method names by index: M_* numbers, then HEAD and OTHER. */
static const char *method_names[M_INVALID + 2];
/* By InfluxMetricsTagFrom index: the tag of a value written as "other". */
static uint32_t *tag_other_refs;
static imx_ts_table_t *ts_table;
/* The rings, one per status slot, in shared memory made by the parent: they
 * outlive a child that dies, so a new child can send what it held. */
static char *ring_shm;
static uint32_t ring_cap;
/* Set in post_config when any server records request ids (InfluxMetricsFields
 * request_id): the ring segment then holds IMX_RID_MAX bytes per cell more,
 * after all the cells. */
static int rid_wanted;
static char *ring_rids;
/* prefork: its SIGTERM (and SIGHUP) handler exits the child on the spot,
 * freeing its pools inside the handler. So a child could die between this
 * module's point and mod_log_config's line, and a signal that interrupts
 * malloc() corrupts the heap (single-threaded) or deadlocks on it. The
 * signal waits while the main thread is in a stretch of ours: the logging
 * phase, and the child_init phase, which allocates a lot (see
 * term_deferred). */
static int defer_term;
static _Atomic int term_hold;   /* stretches the signal waits for */
static volatile sig_atomic_t term_pending;  /* the signal that waits */
static struct sigaction term_prev[2];       /* prefork's: SIGTERM, SIGHUP */
static pthread_t term_main;                 /* the child's main thread */
static void defer_term_signals(void);
static int mode = DEF_MODE;
#define METHOD_HEAD M_INVALID
#define METHOD_OTHER (M_INVALID + 1)
static imx_summary_names_t summary_names;
static __thread uint64_t rng_state;

/* ------------------------------------------------------------------------- */
/* Configuration                                                             */

static void *create_srv_conf(apr_pool_t *p, server_rec *s)
{
    imx_srv_conf_t *c = apr_pcalloc(p, sizeof(*c));

    (void)s;
    c->flush_interval = UNSET;
    c->timeout = UNSET;
    c->batch_size = UNSET;
    c->buffer_size = UNSET;
    c->gzip = UNSET;
    c->retry_buffer = UNSET;
    c->retry_max_time = UNSET;
    c->tls_verify = UNSET;
    c->mode = UNSET;
    c->summary_series = UNSET;
    c->max_tag_values = UNSET;
    c->spool_size = UNSET;
    c->tags = apr_array_make(p, 2, sizeof(imx_tag_t));
    return c;
}

#define MERGE(f, unset) c->f = (add->f != (unset)) ? add->f : base->f

static void *merge_srv_conf(apr_pool_t *p, void *basev, void *addv)
{
    imx_srv_conf_t *base = basev, *add = addv;
    imx_srv_conf_t *c = apr_pcalloc(p, sizeof(*c));
    int i, j;

    MERGE(urls, NULL);
    MERGE(token, NULL);
    MERGE(measurement, NULL);
    MERGE(flush_interval, UNSET);
    MERGE(timeout, UNSET);
    MERGE(batch_size, UNSET);
    MERGE(buffer_size, UNSET);
    MERGE(gzip, UNSET);
    MERGE(retry_buffer, UNSET);
    MERGE(retry_max_time, UNSET);
    MERGE(tls_verify, UNSET);
    MERGE(ca_file, NULL);
    MERGE(proxy, NULL);
    MERGE(mode, UNSET);
    MERGE(summary_series, UNSET);
    MERGE(max_tag_values, UNSET);
    MERGE(spool_dir, NULL);
    MERGE(spool_size, UNSET);
    /* A vhost's InfluxMetricsFields replaces the server's list. */
    c->fields_set = add->fields_set || base->fields_set;
    c->fields = add->fields_set ? add->fields : base->fields;
    MERGE(rid_header, NULL);
    /* A vhost's tags add to the server's; the same key in the vhost wins. */
    c->tags = apr_array_copy(p, add->tags);
    for (i = 0; i < base->tags->nelts; i++) {
        imx_tag_t *bt = &APR_ARRAY_IDX(base->tags, i, imx_tag_t);
        for (j = 0; j < add->tags->nelts; j++) {
            if (!strcmp(APR_ARRAY_IDX(add->tags, j, imx_tag_t).key, bt->key)) {
                break;
            }
        }
        if (j == add->tags->nelts) {
            APR_ARRAY_PUSH(c->tags, imx_tag_t) = *bt;
        }
    }
    return c;
}

static void *create_dir_conf(apr_pool_t *p, char *dir)
{
    imx_dir_conf_t *c = apr_pcalloc(p, sizeof(*c));

    (void)dir;
    c->enabled = UNSET;
    c->sample = -1;
    c->keep_slow = UNSET;
    c->keep_errors = UNSET;
    c->slo = UNSET;
    return c;
}

static void *union_values(apr_pool_t *p, const void *key, apr_ssize_t klen,
                          const void *inner, const void *outer, const void *data)
{
    (void)key; (void)klen; (void)data;
    return apr_hash_overlay(p, inner, outer);
}

static void *merge_dir_conf(apr_pool_t *p, void *basev, void *addv)
{
    imx_dir_conf_t *base = basev, *add = addv;
    imx_dir_conf_t *c = apr_pcalloc(p, sizeof(*c));

    MERGE(enabled, UNSET);
    MERGE(route_idx, 0);
    c->sample = add->sample >= 0 ? add->sample : base->sample;
    MERGE(keep_slow, UNSET);
    MERGE(keep_errors, UNSET);
    MERGE(slo, UNSET);
    if (add->tag_src) {
        c->tag_src = add->tag_src;
        c->tag_name = add->tag_name;
        c->tag_key = add->tag_key;
        c->tag_idx = add->tag_idx;
    }
    else {
        c->tag_src = base->tag_src;
        c->tag_name = base->tag_name;
        c->tag_key = base->tag_key;
        c->tag_idx = base->tag_idx;
    }
    /* Nested allow-lists of a key add up, as repeated lines do. */
    if (!add->tag_allow || !base->tag_allow) {
        c->tag_allow = add->tag_allow ? add->tag_allow : base->tag_allow;
    }
    else {
        c->tag_allow = apr_hash_merge(p, add->tag_allow, base->tag_allow,
                                      union_values, NULL);
    }
    return c;
}

#undef MERGE

static imx_srv_conf_t *srv_conf(server_rec *s)
{
    return ap_get_module_config(s->module_config, &influx_metrics_module);
}

#define CMD_SC(cmd) srv_conf((cmd)->server)

static const char *bad(cmd_parms *cmd, const char *arg, const char *why)
{
    return apr_psprintf(cmd->pool, "%s: invalid value '%s': %s",
                        cmd->directive->directive, arg, why);
}

/* "250ms", "2s" or "2" (seconds). */
static const char *parse_duration(cmd_parms *cmd, const char *arg,
                                  apr_interval_time_t min, apr_interval_time_t max,
                                  apr_interval_time_t *out)
{
    char *end;
    apr_int64_t n;
    apr_interval_time_t v;

    if (!apr_isdigit(*arg)) {
        return bad(cmd, arg, "expected a duration such as 500ms or 2s");
    }
    errno = 0;
    n = apr_strtoi64(arg, &end, 10);
    if (errno || n > 86400000) {
        return bad(cmd, arg, "out of range");
    }
    if (!strcmp(end, "ms")) {
        v = apr_time_from_msec(n);
    }
    else if (!*end || !strcmp(end, "s")) {
        v = apr_time_from_sec(n);
    }
    else {
        return bad(cmd, arg, "unit must be ms or s");
    }
    if (v < min || v > max) {
        return apr_psprintf(cmd->pool, "%s: invalid value '%s': must be between "
                            "%" APR_TIME_T_FMT "ms and %" APR_TIME_T_FMT "s",
                            cmd->directive->directive, arg,
                            apr_time_as_msec(min), apr_time_sec(max));
    }
    *out = v;
    return NULL;
}

static const char *parse_int(cmd_parms *cmd, const char *arg, long min, long max,
                             int *out)
{
    char *end;
    apr_int64_t n;

    errno = 0;
    n = apr_strtoi64(arg, &end, 10);
    if (!apr_isdigit(*arg) || *end || errno || n < min || n > max) {
        return apr_psprintf(cmd->pool, "%s: invalid value '%s': expected an integer "
                            "from %ld to %ld", cmd->directive->directive, arg, min, max);
    }
    *out = (int)n;
    return NULL;
}

/* One URL of InfluxMetricsURL (an ITERATE directive: several are failover). */
static const char *set_url(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    imx_srv_conf_t *sc = CMD_SC(cmd);
    const char *rest, *q;
    apr_size_t hostlen;

    (void)dc;
    if (err) {
        return err;
    }
    /* A later InfluxMetricsURL line replaces an earlier one. */
    if (!sc->urls || sc->urls_directive != cmd->directive) {
        sc->urls = apr_array_make(cmd->pool, 2, sizeof(const char *));
        sc->urls_directive = cmd->directive;
    }
    if (sc->urls->nelts >= 8) {
        return apr_psprintf(cmd->pool, "%s: at most 8 URLs", cmd->directive->directive);
    }
    if (!strncasecmp(arg, "http://", 7)) {
        rest = arg + 7;
    }
    else if (!strncasecmp(arg, "https://", 8)) {
        rest = arg + 8;
    }
    else {
        return bad(cmd, imx_url_redacted(cmd->pool, arg),
                   "must start with http:// or https://");
    }
    hostlen = strcspn(rest, "/?#");
    if (hostlen == 0 || rest[hostlen - 1] == '@' || rest[hostlen - 1] == ':') {
        return bad(cmd, imx_url_redacted(cmd->pool, arg), "no host");
    }
    if (strpbrk(arg, " \t\r\n")) {
        return bad(cmd, imx_url_redacted(cmd->pool, arg), "contains white space");
    }
    if (strchr(arg, '#')) {
        return bad(cmd, imx_url_redacted(cmd->pool, arg), "a fragment has no meaning here");
    }
    /* libcurl takes what comes before the first '/' for the host: with a '/'
     * in the password, the POST goes to the wrong host, or nowhere. Only a
     * warning: an '@' may belong to the path. */
    if (rest[hostlen] == '/' && memchr(rest + hostlen, '@', strcspn(rest + hostlen, "?"))) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, cmd->server,
                     "IMX0009: %s: '%s' has an '@' after the first '/'; libcurl takes "
                     "the host from before that '/'. Percent-encode '/', '?', '#' and "
                     "'@' in the user name and password (%%2F, %%3F, %%23, %%40)",
                     cmd->directive->directive, imx_url_redacted(cmd->pool, arg));
    }
    /* Timestamps are nanoseconds; make sure the server reads them so.
     * InfluxDB 3's own endpoint spells it out (and would guess from the
     * magnitude without it). */
    q = strchr(arg, '?');
    {
        apr_size_t plen = q ? (apr_size_t)(q - arg) : strlen(arg);
        int v3 = plen >= 16 && !strncmp(arg + plen - 16, "/api/v3/write_lp", 16);
        const char *want = v3 ? "nanosecond" : "ns";
        apr_size_t wl = strlen(want);
        const char *p = q ? ap_strstr_c(q, "precision=") : NULL;

        if (p && (p[-1] == '?' || p[-1] == '&')) {
            if (strncmp(p + 10, want, wl) || (p[10 + wl] && p[10 + wl] != '&')) {
                return bad(cmd, imx_url_redacted(cmd->pool, arg),
                           apr_psprintf(cmd->pool, "the module writes nanosecond "
                                        "timestamps: use precision=%s or leave it out", want));
            }
        }
        else {
            arg = apr_pstrcat(cmd->pool, arg, !q ? "?" : q[1] ? "&" : "", "precision=",
                              want, NULL);
        }
    }
    APR_ARRAY_PUSH(sc->urls, const char *) = arg;
    return NULL;
}

static const char *check_token(cmd_parms *cmd, const char *tok, const char *where)
{
    if (!*tok) {
        return apr_psprintf(cmd->pool, "%s: the token from %s is empty",
                            cmd->directive->directive, where);
    }
    /* Never echo the token: it would land in logs and terminals. */
    for (const char *s = tok; *s; s++) {
        if ((unsigned char)*s < 0x20 || *s == 0x7f) {
            return apr_psprintf(cmd->pool, "%s: the token from %s contains a "
                                "control character", cmd->directive->directive, where);
        }
    }
    return NULL;
}

static const char *set_token(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    const char *tok;

    (void)dc;
    if (err) {
        return err;
    }
    if (!strncmp(arg, "file:", 5)) {
        const char *path = ap_server_root_relative(cmd->pool, arg + 5);
        char *data = NULL;
        apr_file_t *f;
        apr_finfo_t fi;
        apr_size_t n;
        apr_status_t rv;

        if (!path || !arg[5]) {
            return bad(cmd, arg, "no file name");
        }
        rv = apr_file_open(&f, path, APR_FOPEN_READ, APR_OS_DEFAULT, cmd->temp_pool);
        if (rv == APR_SUCCESS) {
            rv = apr_file_info_get(&fi, APR_FINFO_SIZE, f);
        }
        if (rv == APR_SUCCESS && fi.size > 16384) {
            return apr_psprintf(cmd->pool, "%s: token file '%s' is larger than 16 KiB",
                                cmd->directive->directive, path);
        }
        if (rv == APR_SUCCESS) {
            n = (apr_size_t)fi.size;
            data = apr_pcalloc(cmd->pool, n + 1);
            rv = apr_file_read_full(f, data, n, &n);
            if (rv == APR_EOF) {
                rv = APR_SUCCESS;
            }
            data[n] = '\0';
        }
        if (rv != APR_SUCCESS) {
            char buf[120];
            return apr_psprintf(cmd->pool, "%s: cannot read token file '%s': %s",
                                cmd->directive->directive, path,
                                apr_strerror(rv, buf, sizeof(buf)));
        }
        /* Token files usually end with a newline; trim surrounding space. */
        while (n && apr_isspace(data[n - 1])) {
            data[--n] = '\0';
        }
        tok = data;
        while (apr_isspace(*tok)) {
            tok++;
        }
        err = check_token(cmd, tok, apr_pstrcat(cmd->pool, "file '", path, "'", NULL));
    }
    else if (!strncmp(arg, "env:", 4)) {
        char *val = NULL;
        if (!arg[4] || apr_env_get(&val, arg + 4, cmd->pool) != APR_SUCCESS || !val) {
            return apr_psprintf(cmd->pool, "%s: environment variable '%s' is not set",
                                cmd->directive->directive, arg + 4);
        }
        tok = val;
        err = check_token(cmd, tok, apr_pstrcat(cmd->pool, "variable '", arg + 4, "'", NULL));
    }
    else {
        tok = arg;
        err = check_token(cmd, tok, "the configuration");
    }
    if (err) {
        return err;
    }
    CMD_SC(cmd)->token = tok;
    return NULL;
}

static const char *set_measurement(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)dc;
    if (err) {
        return err;
    }
    /* '#' would make every line a comment (InfluxDB answers 204 and stores
     * nothing); InfluxDB 1.x unescapes measurement names twice, so one with
     * a backslash would not read back as written. */
    if (!*arg || *arg == '_' || *arg == '#' || strchr(arg, '\\')) {
        return bad(cmd, arg, "must be non-empty, not start with '_' or '#', "
                   "and hold no backslash");
    }
    if (strlen(arg) > 256) {
        return bad(cmd, arg, "longer than 256 bytes");
    }
    CMD_SC(cmd)->measurement = arg;
    return NULL;
}

static apr_array_header_t *tag_from_keys(apr_pool_t *pconf);

static const char *set_tag(cmd_parms *cmd, void *dc, const char *key, const char *val)
{
    imx_tag_t *t;
    int i;

    (void)dc;
    if (!*key || !*val) {
        return apr_psprintf(cmd->pool, "%s: invalid tag '%s' '%s': key and value "
                            "must be non-empty", cmd->directive->directive, key, val);
    }
    /* InfluxDB refuses series keys over 64 KiB: keep every part small. */
    if (strlen(key) > 256 || strlen(val) > 1024) {
        return apr_psprintf(cmd->pool, "%s: tag '%.40s...' is too long (key at most 256 "
                            "bytes, value at most 1024)", cmd->directive->directive, key);
    }
    for (i = 0; reserved_tags[i]; i++) {
        if (!strcmp(key, reserved_tags[i])) {
            return apr_psprintf(cmd->pool, "%s: invalid tag key '%s': the module "
                                "writes it itself", cmd->directive->directive, key);
        }
    }
    for (i = 0; i < CMD_SC(cmd)->tags->nelts; i++) {
        if (!strcmp(APR_ARRAY_IDX(CMD_SC(cmd)->tags, i, imx_tag_t).key, key)) {
            return apr_psprintf(cmd->pool, "%s: tag '%s' is set twice in the same "
                                "server", cmd->directive->directive, key);
        }
    }
    {
        apr_array_header_t *tf = tag_from_keys(cmd->pool);
        for (i = 0; i < tf->nelts; i++) {
            if (!strcmp(APR_ARRAY_IDX(tf, i, const char *), key)) {
                return apr_psprintf(cmd->pool, "%s: tag '%s' is also taken from "
                                    "requests by InfluxMetricsTagFrom",
                                    cmd->directive->directive, key);
            }
        }
    }
    t = apr_array_push(CMD_SC(cmd)->tags);
    t->key = key;
    t->val = val;
    return NULL;
}

static const char *set_flush_interval(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)dc;
    return err ? err : parse_duration(cmd, arg, apr_time_from_msec(10),
                                      apr_time_from_sec(3600),
                                      &CMD_SC(cmd)->flush_interval);
}

static const char *set_timeout(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)dc;
    return err ? err : parse_duration(cmd, arg, apr_time_from_msec(10),
                                      apr_time_from_sec(600), &CMD_SC(cmd)->timeout);
}

static const char *set_batch_size(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)dc;
    return err ? err : parse_int(cmd, arg, 1, 1000000, &CMD_SC(cmd)->batch_size);
}

static const char *set_buffer_size(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)dc;
    return err ? err : parse_int(cmd, arg, 16, 1 << 24, &CMD_SC(cmd)->buffer_size);
}

static const char *set_gzip(cmd_parms *cmd, void *dc, int on)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)dc;
    if (err) {
        return err;
    }
    CMD_SC(cmd)->gzip = on;
    return NULL;
}

/* "64M", "512K", "1G" or bytes, from min to max (range: the text of both). */
static const char *parse_size(cmd_parms *cmd, const char *arg, apr_int64_t min,
                              apr_int64_t max, const char *range, apr_off_t *out)
{
    char *end;
    apr_int64_t n;

    errno = 0;
    n = apr_strtoi64(arg, &end, 10);
    if (!apr_isdigit(*arg) || errno || n > max) {
        return bad(cmd, arg, apr_psprintf(cmd->pool, "expected a size from %s, such as 64M",
                                          range));
    }
    switch (apr_toupper(*end)) {
    case 'G': n <<= 10;
        __attribute__((fallthrough));
    case 'M': n <<= 10;
        __attribute__((fallthrough));
    case 'K': n <<= 10;
        end++;
        break;
    case '\0':
        break;
    default:
        return bad(cmd, arg, "unit must be K, M or G");
    }
    if (*end || n < min || n > max) {
        return bad(cmd, arg, apr_psprintf(cmd->pool, "expected a size from %s, such as 64M",
                                          range));
    }
    *out = (apr_off_t)n;
    return NULL;
}

static const char *set_retry_buffer(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)dc;
    return err ? err : parse_size(cmd, arg, 0, (apr_int64_t)16 << 30, "0 to 16G",
                                  &CMD_SC(cmd)->retry_buffer);
}

static const char *set_spool_dir(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    const char *path;

    (void)dc;
    if (err) {
        return err;
    }
    if (!strcasecmp(arg, "none")) {
        CMD_SC(cmd)->spool_dir = NULL;
        return NULL;
    }
    path = ap_server_root_relative(cmd->pool, arg);
    if (!path || !*arg) {
        return bad(cmd, arg, "not a valid path");
    }
    CMD_SC(cmd)->spool_dir = path;
    return NULL;
}

static const char *set_spool_size(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)dc;
    return err ? err : parse_size(cmd, arg, (apr_int64_t)64 << 10, (apr_int64_t)16384 << 30,
                                  "64K to 16384G", &CMD_SC(cmd)->spool_size);
}

static const char *set_retry_max_time(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)dc;
    return err ? err : parse_duration(cmd, arg, 0, apr_time_from_sec(86400),
                                      &CMD_SC(cmd)->retry_max_time);
}

static const char *set_tls_verify(cmd_parms *cmd, void *dc, int on)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)dc;
    if (err) {
        return err;
    }
    CMD_SC(cmd)->tls_verify = on;
    return NULL;
}

static const char *set_ca_file(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    const char *path;
    apr_finfo_t fi;

    (void)dc;
    if (err) {
        return err;
    }
    path = ap_server_root_relative(cmd->pool, arg);
    if (!path || apr_stat(&fi, path, APR_FINFO_TYPE, cmd->temp_pool) != APR_SUCCESS
        || fi.filetype != APR_REG) {
        return bad(cmd, arg, "no such file");
    }
    CMD_SC(cmd)->ca_file = path;
    return NULL;
}

static const char *set_proxy(cmd_parms *cmd, void *dc, const char *arg)
{
    static const char *const schemes[] = { "http://", "https://", "socks5://",
                                           "socks5h://", NULL };
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    const char *rest = NULL;
    apr_size_t hostlen;

    (void)dc;
    if (err) {
        return err;
    }
    /* The URL may carry the proxy's credentials: only ever show it redacted. */
    for (int i = 0; schemes[i]; i++) {
        if (!strncasecmp(arg, schemes[i], strlen(schemes[i]))) {
            rest = arg + strlen(schemes[i]);
            break;
        }
    }
    if (!rest) {
        return bad(cmd, imx_url_redacted(cmd->pool, arg),
                   "must start with http://, https://, socks5:// or socks5h://");
    }
    hostlen = strcspn(rest, "/?#");
    if (hostlen == 0 || rest[hostlen - 1] == '@' || rest[hostlen - 1] == ':') {
        return bad(cmd, imx_url_redacted(cmd->pool, arg), "no host");
    }
    if (strpbrk(arg, " \t\r\n")) {
        return bad(cmd, imx_url_redacted(cmd->pool, arg), "contains white space");
    }
    CMD_SC(cmd)->proxy = arg;
    return NULL;
}

static const char *set_enabled(cmd_parms *cmd, void *dc, int on)
{
    (void)cmd;
    ((imx_dir_conf_t *)dc)->enabled = on;
    return NULL;
}

/* Routes of this configuration, escaped; a route's index is its position
 * (from 1), the same in every child of the generation. */
static apr_array_header_t *route_registry(apr_pool_t *pconf)
{
    void *data = NULL;
    apr_array_header_t *a;

    apr_pool_userdata_get(&data, "imx_routes", pconf);
    if (data) {
        return data;
    }
    a = apr_array_make(pconf, 8, sizeof(const char *));
    APR_ARRAY_PUSH(a, const char *) = NULL;     /* index 0: no route */
    apr_pool_userdata_setn(a, "imx_routes", apr_pool_cleanup_null, pconf);
    return a;
}

static const char *set_route(cmd_parms *cmd, void *dc, const char *arg)
{
    imx_dir_conf_t *d = dc;
    apr_array_header_t *reg = route_registry(cmd->pool);
    const char *name;
    int i;

    if (!*arg || strlen(arg) > 1024) {
        return bad(cmd, arg, "a route name must be non-empty and at most 1024 bytes");
    }
    name = imx_pescape(cmd->pool, arg, IMX_ESC_TAG);
    for (i = 1; i < reg->nelts; i++) {
        if (!strcmp(APR_ARRAY_IDX(reg, i, const char *), name)) {
            break;
        }
    }
    if (i == reg->nelts) {
        if (reg->nelts >= 2047) {
            return bad(cmd, arg, "more than 2046 different routes");
        }
        APR_ARRAY_PUSH(reg, const char *) = name;
    }
    d->route_idx = i;
    return NULL;
}

static const char *set_mode(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)dc;
    if (err) {
        return err;
    }
    if (!strcasecmp(arg, "raw")) {
        CMD_SC(cmd)->mode = MODE_RAW;
    }
    else if (!strcasecmp(arg, "summary")) {
        CMD_SC(cmd)->mode = MODE_SUMMARY;
    }
    else if (!strcasecmp(arg, "both")) {
        CMD_SC(cmd)->mode = MODE_RAW | MODE_SUMMARY;
    }
    else {
        return bad(cmd, arg, "expected raw, summary or both");
    }
    return NULL;
}

static const char *set_summary_series(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)dc;
    return err ? err : parse_int(cmd, arg, 1, 4096, &CMD_SC(cmd)->summary_series);
}

static const char *set_sample(cmd_parms *cmd, void *dc, const char *arg)
{
    char *end;
    double f = strtod(arg, &end);

    if (end == arg || *end || !(f > 0) || f > 1 || f < 0.0001) {
        return bad(cmd, arg, "expected a fraction from 0.0001 to 1, such as 0.1");
    }
    ((imx_dir_conf_t *)dc)->sample = f;
    return NULL;
}

static const char *set_keep_slow(cmd_parms *cmd, void *dc, const char *arg)
{
    return parse_duration(cmd, arg, apr_time_from_msec(1), apr_time_from_sec(86400),
                          &((imx_dir_conf_t *)dc)->keep_slow);
}

/* Keys of the InfluxMetricsTagFrom directives seen so far, so a static tag
 * cannot take the same key (the point would carry it twice). */
static apr_array_header_t *tag_from_keys(apr_pool_t *pconf)
{
    void *data = NULL;

    apr_pool_userdata_get(&data, "imx_tagfrom_keys", pconf);
    if (!data) {
        data = apr_array_make(pconf, 4, sizeof(const char *));
        apr_pool_userdata_setn(data, "imx_tagfrom_keys", apr_pool_cleanup_null, pconf);
    }
    return data;
}

/* Where each InfluxMetricsTagFrom is: one in the main server (or its
 * sections) applies to the requests of every virtual host, one in a
 * virtual host to that host's. check_config compares them with the static
 * tags after the merge, which the directives themselves cannot see. */
typedef struct {
    const char *key;
    server_rec *server;
    const char *file;
    int line;
} imx_tag_where_t;

static apr_array_header_t *tag_from_where(apr_pool_t *pconf)
{
    void *data = NULL;

    apr_pool_userdata_get(&data, "imx_tagfrom_where", pconf);
    if (!data) {
        data = apr_array_make(pconf, 4, sizeof(imx_tag_where_t));
        apr_pool_userdata_setn(data, "imx_tagfrom_where", apr_pool_cleanup_null, pconf);
    }
    return data;
}

/* Number of InfluxMetricsTagFrom directives in this configuration: each has
 * its own table of values. */
static int next_tag_index(apr_pool_t *pconf)
{
    void *data = NULL;
    int *n;

    apr_pool_userdata_get(&data, "imx_tagfrom", pconf);
    if (!data) {
        data = apr_pcalloc(pconf, sizeof(int));
        apr_pool_userdata_setn(data, "imx_tagfrom", apr_pool_cleanup_null, pconf);
    }
    n = data;
    return (*n)++;
}

static int tag_count(apr_pool_t *pconf)
{
    void *data = NULL;

    apr_pool_userdata_get(&data, "imx_tagfrom", pconf);
    return data ? *(int *)data : 0;
}

static const char *set_tag_from(cmd_parms *cmd, void *dc, const char *args)
{
    imx_dir_conf_t *d = dc;
    const char *src = ap_getword_conf(cmd->pool, &args);
    const char *name = ap_getword_conf(cmd->pool, &args);
    const char *key = ap_getword_conf(cmd->pool, &args);
    int i;

    if (d->tag_src) {
        return apr_psprintf(cmd->pool, "%s: only one per context (this one has "
                            "already '%s')", cmd->directive->directive, d->tag_name);
    }
    if (!strcasecmp(src, "env")) {
        d->tag_src = TAG_ENV;
    }
    else if (!strcasecmp(src, "note")) {
        d->tag_src = TAG_NOTE;
    }
    else if (!strcasecmp(src, "header")) {
        d->tag_src = TAG_HEADER;
    }
    else {
        return bad(cmd, src, "expected env, note or header");
    }
    if (!*name || *args) {
        return apr_psprintf(cmd->pool, "%s: expected env|note|header NAME [tag]",
                            cmd->directive->directive);
    }
    if (!*key) {
        key = apr_pstrdup(cmd->pool, name);
        ap_str_tolower((char *)key);
    }
    for (i = 0; reserved_tags[i]; i++) {
        if (!strcmp(key, reserved_tags[i])) {
            return apr_psprintf(cmd->pool, "%s: invalid tag key '%s': the module "
                                "writes it itself", cmd->directive->directive, key);
        }
    }
    for (i = 0; i < CMD_SC(cmd)->tags->nelts; i++) {
        if (!strcmp(APR_ARRAY_IDX(CMD_SC(cmd)->tags, i, imx_tag_t).key, key)) {
            return apr_psprintf(cmd->pool, "%s: tag '%s' is also a static "
                                "InfluxMetricsTag of this server", cmd->directive->directive, key);
        }
    }
    APR_ARRAY_PUSH(tag_from_keys(cmd->pool), const char *) = key;
    {
        imx_tag_where_t *w = apr_array_push(tag_from_where(cmd->pool));
        w->key = key;
        w->server = cmd->server;
        w->file = cmd->directive->filename;
        w->line = cmd->directive->line_num;
    }
    d->tag_name = name;
    d->tag_key = imx_pescape(cmd->pool, key, IMX_ESC_TAG);
    d->tag_idx = next_tag_index(cmd->pool);
    return NULL;
}

static const char *set_max_tag_values(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)dc;
    return err ? err : parse_int(cmd, arg, 1, 100000, &CMD_SC(cmd)->max_tag_values);
}

/* Keys named by InfluxMetricsTagValues so far: check_config makes sure an
 * InfluxMetricsTagFrom writes each, so a misspelt key cannot leave a tag
 * open to any value unnoticed. */
static apr_array_header_t *tag_values_keys(apr_pool_t *pconf)
{
    void *data = NULL;

    apr_pool_userdata_get(&data, "imx_tagvalues_keys", pconf);
    if (!data) {
        data = apr_array_make(pconf, 4, sizeof(const char *));
        apr_pool_userdata_setn(data, "imx_tagvalues_keys", apr_pool_cleanup_null, pconf);
    }
    return data;
}

/* InfluxMetricsTagValues key value...: called once per value. */
static const char *set_tag_values(cmd_parms *cmd, void *dc, const char *key,
                                  const char *val)
{
    imx_dir_conf_t *d = dc;
    const char *k = imx_pescape(cmd->pool, key, IMX_ESC_TAG);
    apr_hash_t *vals;

    if (!d->tag_allow) {
        d->tag_allow = apr_hash_make(cmd->pool);
    }
    vals = apr_hash_get(d->tag_allow, k, APR_HASH_KEY_STRING);
    if (!vals) {
        vals = apr_hash_make(cmd->pool);
        apr_hash_set(d->tag_allow, k, APR_HASH_KEY_STRING, vals);
        APR_ARRAY_PUSH(tag_values_keys(cmd->pool), const char *) = key;
    }
    apr_hash_set(vals, val, APR_HASH_KEY_STRING, val);
    return NULL;
}

/* Every InfluxMetricsTagValues key is written by some InfluxMetricsTagFrom. */
static int check_tag_values(apr_pool_t *pconf)
{
    apr_array_header_t *want = tag_values_keys(pconf), *have = tag_from_keys(pconf);

    for (int i = 0; i < want->nelts; i++) {
        const char *key = APR_ARRAY_IDX(want, i, const char *);
        int j;

        for (j = 0; j < have->nelts && strcmp(APR_ARRAY_IDX(have, j, const char *), key); j++) {
            ;
        }
        if (j == have->nelts) {
            ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_ERR, 0, NULL,
                         "InfluxMetricsTagValues: no InfluxMetricsTagFrom writes the tag "
                         "'%s' (the key is the tag's name, e.g. x-tenant for "
                         "'InfluxMetricsTagFrom header X-Tenant')", key);
            return HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    return OK;
}

static const char *set_keep_errors(cmd_parms *cmd, void *dc, int on)
{
    (void)cmd;
    ((imx_dir_conf_t *)dc)->keep_errors = on;
    return NULL;
}

/* InfluxMetricsFields name...: called once per name; a new line starts a
 * new list (as InfluxMetricsURL does), "none" empties it. */
static const char *set_fields(cmd_parms *cmd, void *dc, const char *arg)
{
    imx_srv_conf_t *sc = CMD_SC(cmd);
    unsigned bit;

    (void)dc;
    if (sc->fields_directive != cmd->directive) {
        sc->fields_directive = cmd->directive;
        sc->fields_set = 1;
        sc->fields = 0;
    }
    if (!strcasecmp(arg, "none")) {
        return NULL;
    }
    bit = imx_fields_bit(arg);
    if (!bit) {
        return bad(cmd, arg, "expected ttfb, bytes_received, request_id, protocol, tls, "
                   "upstream or none");
    }
    sc->fields |= bit;
    return NULL;
}

static const char *set_rid_header(cmd_parms *cmd, void *dc, const char *arg)
{
    (void)dc;
    /* An HTTP field name is a token (RFC 9110). */
    if (!*arg || strlen(arg) > 256 || arg[strspn(arg, "!#$%&'*+-.^_`|~0123456789"
                                                 "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                 "abcdefghijklmnopqrstuvwxyz")]) {
        return bad(cmd, arg, "expected a header name such as X-Request-ID");
    }
    CMD_SC(cmd)->rid_header = arg;
    return NULL;
}

static const char *set_slo(cmd_parms *cmd, void *dc, const char *arg)
{
    imx_dir_conf_t *d = dc;

    if (!strcasecmp(arg, "none")) {
        d->slo = 0;
        return NULL;
    }
    return parse_duration(cmd, arg, apr_time_from_msec(1), apr_time_from_sec(86400), &d->slo);
}

static const command_rec imx_cmds[] = {
    AP_INIT_ITERATE("InfluxMetricsURL", set_url, NULL, RSRC_CONF,
                    "InfluxDB write endpoint(s), e.g. http://127.0.0.1:8086/write?db=apache "
                    "or .../api/v2/write?org=o&bucket=b or .../api/v3/write_lp?db=d; more "
                    "than one act as failover, "
                    "in order; enables the module"),
    AP_INIT_TAKE1("InfluxMetricsToken", set_token, NULL, RSRC_CONF,
                  "API token: file:/path, env:NAME or the token itself; sent as "
                  "'Authorization: Token ...'"),
    AP_INIT_TAKE1("InfluxMetricsMeasurement", set_measurement, NULL, RSRC_CONF,
                  "measurement name of request points (default " DEF_MEASUREMENT ")"),
    AP_INIT_TAKE2("InfluxMetricsTag", set_tag, NULL, RSRC_CONF,
                  "a static tag key and value added to every point of this server; repeatable"),
    AP_INIT_TAKE1("InfluxMetricsFlushInterval", set_flush_interval, NULL, RSRC_CONF,
                  "how often buffered points are sent, e.g. 500ms or 1s (default 1s)"),
    AP_INIT_TAKE1("InfluxMetricsBatchSize", set_batch_size, NULL, RSRC_CONF,
                  "maximum points per POST (default 5000)"),
    AP_INIT_TAKE1("InfluxMetricsBufferSize", set_buffer_size, NULL, RSRC_CONF,
                  "points held per child process before new ones are dropped "
                  "(default 512 per thread, 2048 to 65536; rounded up to a power "
                  "of two)"),
    AP_INIT_TAKE1("InfluxMetricsTimeout", set_timeout, NULL, RSRC_CONF,
                  "time limit of one POST, e.g. 5s (default 5s)"),
    AP_INIT_FLAG("InfluxMetricsGzip", set_gzip, NULL, RSRC_CONF,
                 "On to send gzip-compressed bodies (default Off)"),
    AP_INIT_TAKE1("InfluxMetricsRetryBuffer", set_retry_buffer, NULL, RSRC_CONF,
                  "bytes per child for batches waiting to be retried, e.g. 64M "
                  "(default 64M; 0: do not retry)"),
    AP_INIT_TAKE1("InfluxMetricsRetryMaxTime", set_retry_max_time, NULL, RSRC_CONF,
                  "give up on a batch failing for longer than this, e.g. 180s "
                  "(default 180s; 0: never)"),
    AP_INIT_FLAG("InfluxMetricsTLSVerify", set_tls_verify, NULL, RSRC_CONF,
                 "Off to skip verifying an https server's certificate (default On)"),
    AP_INIT_TAKE1("InfluxMetricsTLSCACertificateFile", set_ca_file, NULL, RSRC_CONF,
                  "PEM file of the CA(s) that sign the https server's certificate"),
    AP_INIT_TAKE1("InfluxMetricsProxy", set_proxy, NULL, RSRC_CONF,
                  "proxy for the POSTs: http://, https://, socks5:// or socks5h://host:port "
                  "(default none; httpd's http_proxy, https_proxy and ALL_PROXY are "
                  "ignored)"),
    AP_INIT_FLAG("InfluxMetrics", set_enabled, NULL, RSRC_CONF | ACCESS_CONF,
                 "On or Off: record requests here (default On once a URL is set)"),
    AP_INIT_TAKE1("InfluxMetricsRoute", set_route, NULL, RSRC_CONF | ACCESS_CONF,
                  "route name, written as tag route=<name> for requests here"),
    AP_INIT_TAKE1("InfluxMetricsMode", set_mode, NULL, RSRC_CONF,
                  "raw (a point per request), summary (per-interval summaries per "
                  "vhost, route, method and status class) or both (default raw)"),
    AP_INIT_TAKE1("InfluxMetricsSummarySeries", set_summary_series, NULL, RSRC_CONF,
                  "summary series a child can hold (default 64; more are counted as "
                  "overflow)"),
    AP_INIT_TAKE1("InfluxMetricsSample", set_sample, NULL, RSRC_CONF | ACCESS_CONF,
                  "fraction of requests written in raw mode, e.g. 0.1 (default 1)"),
    AP_INIT_TAKE1("InfluxMetricsKeepSlow", set_keep_slow, NULL, RSRC_CONF | ACCESS_CONF,
                  "when sampling, keep every request at least this slow, e.g. 500ms"),
    AP_INIT_FLAG("InfluxMetricsKeepErrors", set_keep_errors, NULL, RSRC_CONF | ACCESS_CONF,
                 "when sampling, On keeps every 5xx response (default Off)"),
    AP_INIT_RAW_ARGS("InfluxMetricsTagFrom", set_tag_from, NULL, RSRC_CONF | ACCESS_CONF,
                     "env|note|header NAME [tag]: a tag from the request's environment "
                     "variable, note or header (raw points only)"),
    AP_INIT_ITERATE2("InfluxMetricsTagValues", set_tag_values, NULL, RSRC_CONF | ACCESS_CONF,
                     "key value [value ...]: the only values an InfluxMetricsTagFrom tag "
                     "may take here; others are written as 'other'. Repeatable: adds "
                     "values"),
    AP_INIT_TAKE1("InfluxMetricsMaxTagValues", set_max_tag_values, NULL, RSRC_CONF,
                  "values each InfluxMetricsTagFrom tag may take server-wide before new "
                  "ones are written as 'other' (default 100)"),
    AP_INIT_TAKE1("InfluxMetricsSpoolDir", set_spool_dir, NULL, RSRC_CONF,
                  "directory where points that cannot be sent (at exit, or beyond the "
                  "retry buffer) are kept until they can, e.g. "
                  "/var/cache/apache2/influx_metrics; none: no spool (the default)"),
    AP_INIT_TAKE1("InfluxMetricsSpoolSize", set_spool_size, NULL, RSRC_CONF,
                  "bytes the spool's files may take together, e.g. 1G (default 1G); "
                  "beyond it the oldest files are deleted"),
    AP_INIT_ITERATE("InfluxMetricsFields", set_fields, NULL, RSRC_CONF,
                    "optional fields and tags of request points: ttfb, bytes_received, "
                    "request_id, protocol, tls, upstream, or none (the default); a "
                    "virtual host's list replaces the server's"),
    AP_INIT_TAKE1("InfluxMetricsRequestIDHeader", set_rid_header, NULL, RSRC_CONF,
                  "request header holding a request id, e.g. X-Request-ID: the last "
                  "source of request_id, after traceparent and UNIQUE_ID"),
    AP_INIT_TAKE1("InfluxMetricsSLO", set_slo, NULL, RSRC_CONF | ACCESS_CONF,
                  "latency objective, e.g. 300ms: summaries count the requests no slower "
                  "and not 5xx in slo_good; none: no objective (the default)"),
    { NULL }
};

/* ------------------------------------------------------------------------- */
/* Startup                                                                    */

static const char *tags_text(apr_pool_t *p, const apr_array_header_t *tags)
{
    const char *s = "";
    int i;

    for (i = 0; i < tags->nelts; i++) {
        const imx_tag_t *t = &APR_ARRAY_IDX(tags, i, imx_tag_t);
        s = apr_pstrcat(p, s, ",", imx_pescape(p, t->key, IMX_ESC_TAG), "=",
                        imx_pescape(p, t->val, IMX_ESC_TAG), NULL);
    }
    return s;
}

/* The ring size when InfluxMetricsBufferSize is not set. */
static int default_buffer_size(void)
{
    int threads = 1, n;

    if (ap_mpm_query(AP_MPMQ_MAX_THREADS, &threads) != APR_SUCCESS || threads < 1) {
        threads = 1;
    }
    n = threads > DEF_BUFFER_MAX / DEF_BUFFER_PER_THREAD ? DEF_BUFFER_MAX
        : threads * DEF_BUFFER_PER_THREAD;
    return n < DEF_BUFFER_MIN ? DEF_BUFFER_MIN : n;
}

/* ------------------------------------------------------------------------- */
/* The spool directory                                                        */

/* The user the children run as: httpd's User when it starts as root,
 * otherwise the user it runs as (it cannot change users then). */
static void spool_owner(uid_t *uid, gid_t *gid)
{
    if (geteuid() == 0) {
        *uid = ap_unixd_config.user_id;
        *gid = ap_unixd_config.group_id;
    }
    else {
        *uid = geteuid();
        *gid = getegid();
    }
}


/* Opens one component `name` of a path under the directory dfd, never
 * through a symbolic link that someone other than root (or httpd's own
 * user) could have put there: a link is followed only when root (or
 * httpd's user) owns it and the directory that holds it, and nobody else
 * can write that directory. (System paths such as /var/run are such links;
 * a link in /tmp or in a directory of the children's user is not.) Returns
 * the descriptor, or -1 with *why set (NULL, errno ENOENT: it is missing). */
static int open_component(apr_pool_t *p, int dfd, const char *name, const char *path,
                          const char **why)
{
    struct stat dst, lst;
    int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

    *why = NULL;
    if (fd >= 0 || errno == ENOENT) {
        return fd;
    }
    if (fstatat(dfd, name, &lst, AT_SYMLINK_NOFOLLOW) != 0) {
        *why = apr_psprintf(p, "cannot look up '%s': %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISLNK(lst.st_mode)) {
        *why = S_ISDIR(lst.st_mode)
               ? apr_psprintf(p, "cannot open '%s': %s", path, strerror(errno))
               : "a part of its path is a file, not a directory";
        return -1;
    }
    if (fstat(dfd, &dst) != 0 || (dst.st_uid != 0 && dst.st_uid != geteuid())
        || (dst.st_mode & 022) || (lst.st_uid != 0 && lst.st_uid != geteuid())) {
        *why = apr_psprintf(p, "'%s' is a symbolic link that another user could have "
                            "made or could change; name the real directory instead", path);
        return -1;
    }
    fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        *why = errno == ENOTDIR ? "a part of its path is a file, not a directory"
               : apr_psprintf(p, "cannot open '%s': %s", path, strerror(errno));
    }
    return fd;
}

/* The spool directory `dir`, walked from "/" one component at a time with
 * openat(O_NOFOLLOW), so that nothing on the way is a link another user
 * controls (see open_component). With make (post_config, in the parent,
 * root when httpd starts as root), what is missing is created: parents
 * 0755, the directory itself 0700, given to the children's user uid:gid,
 * as mod_cache_disk does for its cache. A directory that exists is used as
 * it is, never chowned or chmodded: it must be a real directory (not a
 * link) that uid owns, with all rights for its owner and none to write for
 * others; otherwise it is refused, and the error says why. Without make
 * (check_config, so configtest too) nothing changes on disk. Returns NULL,
 * or why not. */
static const char *spool_dir_walk(apr_pool_t *p, const char *dir, uid_t uid, gid_t gid,
                                  int make)
{
    char *path = apr_pstrdup(p, dir), *c = path, *next;
    const char *why = NULL;
    struct stat st;
    struct statvfs v;
    int fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC), nfd;

    if (fd < 0) {
        return apr_psprintf(p, "cannot open '/': %s", strerror(errno));
    }
    for (;;) {
        while (*c == '/') {
            c++;
        }
        next = strchr(c, '/');
        while (next && next[1] == '/') {
            next++;
        }
        if (!next || !next[1]) {
            break;              /* c is the last component */
        }
        *next = '\0';
        nfd = open_component(p, fd, c, path, &why);
        if (nfd < 0 && !why) {
            /* A missing parent: made 0755 (and through the new name's own
             * descriptor, which must then be ours). */
            if (!make) {
                break;          /* c is missing, and so is the rest: fd is where
                                 * it would be made (checked below) */
            }
            if (mkdirat(fd, c, 0755) != 0 && errno != EEXIST) {
                why = apr_psprintf(p, "cannot create '%s': %s", path, strerror(errno));
            }
            else if ((nfd = openat(fd, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0
                     || fstat(nfd, &st) != 0) {
                why = apr_psprintf(p, "cannot open '%s' after creating it: %s", path,
                                   strerror(errno));
            }
            else if (st.st_uid == geteuid() && (st.st_mode & 07777) != 0755
                     && fchmod(nfd, 0755) != 0) {
                why = apr_psprintf(p, "cannot make '%s' mode 0755: %s", path, strerror(errno));
            }
        }
        *next = '/';
        if (why) {
            if (nfd >= 0) {
                close(nfd);
            }
            close(fd);
            return why;
        }
        close(fd);
        fd = nfd;
        c = next + 1;
    }
    if (next && !next[1]) {
        *next = '\0';          /* a trailing slash (after a missing parent,
                                 * next is already cut off: no-op) */
    }
    if (!*c) {
        close(fd);
        return "it names the root directory";
    }
    if (fd >= 0 && fstatat(fd, c, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        if (S_ISLNK(st.st_mode)) {
            why = "it is a symbolic link: name the real directory (httpd gives its "
                  "children's user only a directory it creates itself)";
        }
        else if (!S_ISDIR(st.st_mode)) {
            why = "it exists and is not a directory";
        }
        else if (st.st_uid != uid) {
            why = apr_psprintf(p, "it is owned by uid %u, not by uid %u (the user httpd's "
                               "children run as), and httpd does not change the owner of a "
                               "directory it did not create: chown it, or remove it and "
                               "httpd creates it", (unsigned)st.st_uid, (unsigned)uid);
        }
        else if ((st.st_mode & 0700) != 0700 || (st.st_mode & 022)) {
            why = apr_psprintf(p, "it has mode %04o: its owner needs read, write and search "
                               "rights, and nobody else may write to it (chmod 0700 it)",
                               (unsigned)(st.st_mode & 07777));
        }
        close(fd);
        return why;
    }
    if (fd >= 0 && errno != ENOENT) {
        why = apr_psprintf(p, "cannot look it up: %s", strerror(errno));
        close(fd);
        return why;
    }
    /* Missing (and, without make, maybe some parents too): it is created
     * in the nearest directory that exists, which fd is. */
    if (fd < 0) {
        return "cannot open a parent directory";
    }
    if (fstatvfs(fd, &v) == 0 && (v.f_flag & ST_RDONLY)) {
        close(fd);
        return "it does not exist and cannot be created: its parent is on a read-only "
               "file system";
    }
    if (!make) {
        if (geteuid() != 0 && faccessat(fd, ".", W_OK | X_OK, AT_EACCESS) != 0) {
            why = apr_psprintf(p, "it does not exist and cannot be created: %s",
                               strerror(errno));
        }
        close(fd);
        return why;
    }
    if (mkdirat(fd, c, 0700) != 0) {
        why = apr_psprintf(p, "cannot create it: %s", strerror(errno));
        close(fd);
        return why;
    }
    nfd = openat(fd, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    close(fd);
    if (nfd < 0 || fstat(nfd, &st) != 0) {
        why = apr_psprintf(p, "cannot open it after creating it: %s", strerror(errno));
    }
    else if (st.st_uid != geteuid()) {
        why = "it was replaced while httpd created it";
    }
    else if ((st.st_uid != uid || st.st_gid != gid) && fchown(nfd, uid, gid) != 0) {
        why = apr_psprintf(p, "cannot give it to uid %u: %s", (unsigned)uid, strerror(errno));
    }
    else if ((st.st_mode & 07777) != 0700 && fchmod(nfd, 0700) != 0) {
        why = apr_psprintf(p, "cannot make it mode 0700: %s", strerror(errno));
    }
    if (nfd >= 0) {
        close(nfd);
    }
    return why;
}

static void log_spool_cb(void *ctx, int level, const char *msg)
{
    ap_log_error(APLOG_MARK, level, 0, ctx, "IMX0101: %s", msg);
}

/* post_config: the directory made ready, and the spool's gauges counted
 * from its files when this parent has not counted them yet (it just
 * started, or the directory changed): files outlive httpd, the gauges in
 * shared memory do not. */
static int spool_init(apr_pool_t *pconf, server_rec *s, const char *dir)
{
    imx_spool_shared_t *sh = imx_status_spool();
    imx_spool_drop_t bad = { 0, 0 };
    const char *why;
    struct stat st;
    uid_t uid;
    gid_t gid;
    int rv;

    spool_owner(&uid, &gid);
    why = spool_dir_walk(pconf, dir, uid, gid, 1);
    if (why) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, s,
                     "IMX0014: InfluxMetricsSpoolDir: cannot use '%s': %s", dir, why);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (!sh) {
        return OK;              /* IMX0005 said so: the children do without */
    }
    if (stat(dir, &st) == 0 && sh->dir_dev == (uint64_t)st.st_dev
        && sh->dir_ino == (uint64_t)st.st_ino) {
        return OK;
    }
    rv = imx_spool_recount(dir, uid, sh, &bad, log_spool_cb, s);
    if (rv) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, rv, s,
                     "IMX0014: InfluxMetricsSpoolDir: cannot read '%s'", dir);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    imx_status_add_dropped_spool(bad.points, bad.maybe);
    /* Both numbers: together they are where the spool's identity starts. */
    if (atomic_load(&sh->files) || bad.points) {
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s, "IMX0015: the spool %s holds %"
                     APR_INT64_T_FMT " points in %" APR_INT64_T_FMT " files (%"
                     APR_INT64_T_FMT " bytes), sent once the backend takes writes; %"
                     APR_UINT64_T_FMT " more points were in files found bad "
                     "(dropped_spool)", dir, (apr_int64_t)atomic_load(&sh->points),
                     (apr_int64_t)atomic_load(&sh->files),
                     (apr_int64_t)atomic_load(&sh->bytes), bad.points);
    }
    return OK;
}

/* After the merge, a point of a virtual host carries its merged static
 * tags and the InfluxMetricsTagFrom tag of its context: the same key twice
 * would make InfluxDB 1.x refuse the point ("duplicate tags") and InfluxDB
 * 2.x the whole batch, other hosts' points included. */
static int check_tag_keys(apr_pool_t *pconf, server_rec *s)
{
    apr_array_header_t *where = tag_from_where(pconf);

    for (server_rec *vs = s; vs; vs = vs->next) {
        const apr_array_header_t *tags = srv_conf(vs)->tags;

        for (int i = 0; i < tags->nelts; i++) {
            const char *key = APR_ARRAY_IDX(tags, i, imx_tag_t).key;

            for (int j = 0; j < where->nelts; j++) {
                const imx_tag_where_t *w = &APR_ARRAY_IDX(where, j, imx_tag_where_t);

                if ((w->server == s || w->server == vs) && !strcmp(w->key, key)) {
                    ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, NULL,
                                 "IMX0023: InfluxMetricsTag '%s' of %s %s (%s:%d) is also "
                                 "written by InfluxMetricsTagFrom at %s:%d: InfluxDB "
                                 "refuses a point with the same tag twice. Use another "
                                 "key for one of them", key,
                                 vs == s ? "the main server" : "virtual host",
                                 vs->server_hostname ? vs->server_hostname : "(unnamed)",
                                 vs->defn_name ? vs->defn_name : "?", vs->defn_line_number,
                                 w->file ? w->file : "?", w->line);
                    return HTTP_INTERNAL_SERVER_ERROR;
                }
            }
        }
    }
    return OK;
}

/* Runs for `apachectl configtest` too: settings that are each valid but
 * wrong together, and a spool directory that cannot be made right. */
static int imx_check_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp,
                            server_rec *s)
{
    imx_srv_conf_t *mc = srv_conf(s);
    int cap = mc->buffer_size != UNSET ? mc->buffer_size : default_buffer_size();

    (void)plog;
    if (check_tag_values(pconf) != OK || check_tag_keys(pconf, s) != OK) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (mc->urls && mc->spool_dir) {
        uid_t uid;
        gid_t gid;
        const char *why;

        spool_owner(&uid, &gid);
        why = spool_dir_walk(ptemp, mc->spool_dir, uid, gid, 0);
        if (why) {
            ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, s,
                         "IMX0014: InfluxMetricsSpoolDir: cannot use '%s': %s",
                         mc->spool_dir, why);
            return !OK;
        }
    }
    /* A batch larger than the buffer never completes, so the flusher would
     * only send once per interval and the buffer would overflow between. */
    if (mc->urls && mc->batch_size != UNSET && mc->batch_size > cap) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, s,
                     "IMX0013: InfluxMetricsBatchSize %d is larger than "
                     "InfluxMetricsBufferSize %d: a batch must fit in the buffer "
                     "(leave InfluxMetricsBatchSize unset to use half the buffer)",
                     mc->batch_size, cap);
        return !OK;
    }
    return OK;
}

static pid_t curl_parent;

static apr_status_t curl_cleanup(void *data)
{
    (void)data;
    /* Children run pool cleanups too, prefork's from a signal handler:
     * only the parent that initialised libcurl cleans it up. */
    if (getpid() == curl_parent) {
        curl_global_cleanup();
    }
    return APR_SUCCESS;
}

/* The server-wide table of timestamp tickets (see imx_ts_unique). */
static void ts_init(server_rec *s, apr_pool_t *pconf)
{
    int created;

    ts_table = imx_shm_once(s, "imx_ts_shm", sizeof(imx_ts_table_t), &created);
    if (!ts_table) {
        /* Still unique within each child; children may collide. */
        ts_table = apr_pcalloc(pconf, sizeof(imx_ts_table_t));
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, "IMX0012: cannot create the "
                     "shared memory for timestamps; points of different children "
                     "may share one and be merged by InfluxDB");
    }
}

static void sizes(const imx_srv_conf_t *mc, uint32_t *cap, uint32_t *batch);

/* One ring per status slot, in a segment per ring size: a generation with
 * another InfluxMetricsBufferSize gets its own (children of older
 * generations keep theirs, and rescues stay within one segment). Its slot
 * count is the status segment's, which never changes within a parent's life.
 * Without it, each child's ring is its own memory and dies with it. */
static void ring_init(server_rec *s, const imx_srv_conf_t *mc)
{
    uint32_t cap, batch, nslots = imx_status_nslots();
    int created;

    sizes(mc, &cap, &batch);
    ring_cap = cap;
    ring_shm = imx_shm_once(s, apr_psprintf(s->process->pool, "imx_ring_shm_%u_%d", ring_cap,
                                            rid_wanted),
                            (apr_size_t)nslots * ring_cap * (64 + (rid_wanted ? IMX_RID_MAX : 0)),
                            &created);
    ring_rids = ring_shm && rid_wanted ? ring_shm + (size_t)nslots * ring_cap * 64 : NULL;
    if (!ring_shm) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, "IMX0018: cannot create the "
                     "shared memory for the buffers (%u x %u records); each child keeps "
                     "its own, and what a killed child held is lost", nslots, ring_cap);
    }
}

static int imx_post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp,
                           server_rec *s)
{
    static int curl_ready;
    imx_srv_conf_t *mc = srv_conf(s);
    char host[APRMAXHOSTLEN + 1];
    server_rec *vs;
    int i;

    (void)plog; (void)ptemp;
    if (!mc->urls) {
        return OK;
    }
    /* In the parent, before any child or thread exists: curl_global_init
     * is not thread-safe with every TLS backend. httpd unloads and reloads
     * this module on every restart, so this runs once per generation (the
     * static starts at 0 again); libcurl counts the calls, and the pconf
     * cleanup pairs each with curl_global_cleanup, in the parent only. */
    if (!curl_ready) {
        CURLcode cc = curl_global_init(CURL_GLOBAL_DEFAULT);
        if (cc != CURLE_OK) {
            ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s,
                         "IMX0001: curl_global_init failed: %s", curl_easy_strerror(cc));
            return HTTP_INTERNAL_SERVER_ERROR;
        }
        curl_ready = 1;
        curl_parent = getpid();
        apr_pool_cleanup_register(pconf, NULL, curl_cleanup, apr_pool_cleanup_null);
    }
    if (apr_gethostname(host, sizeof(host), pconf) != APR_SUCCESS) {
        apr_cpystrn(host, "unknown", sizeof(host));
    }
    host_escaped = imx_pescape(pconf, host, IMX_ESC_TAG);
    line_prefix = apr_pstrcat(pconf,
                              imx_pescape(pconf, mc->measurement ? mc->measurement
                                                 : DEF_MEASUREMENT, IMX_ESC_MEASUREMENT),
                              ",host=", host_escaped, NULL);
    ts_init(s, pconf);
    /* Request ids take room beside every cell of every ring: only when a
     * server writes them. */
    rid_wanted = 0;
    for (vs = s; vs; vs = vs->next) {
        rid_wanted |= (srv_conf(vs)->fields & IMX_F_REQUEST_ID) != 0;
    }
    if (imx_status_init(s) == APR_SUCCESS) {
        ring_init(s, mc);
    }
    else {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, "IMX0005: cannot create the "
                     "shared memory for counters; the status page will be empty%s",
                     mc->spool_dir ? ", and nothing is spooled" : "");
    }
    if (mc->spool_dir && spool_init(pconf, s, mc->spool_dir) != OK) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    i = 0;
    {
        apr_array_header_t *routes = route_registry(pconf);
        int *sum_routes = apr_palloc(pconf, sizeof(int) * (apr_size_t)routes->nelts);

        /* Summary ids, the same for the same text in every generation. */
        for (int r = 0; r < routes->nelts; r++) {
            sum_routes[r] = imx_summary_route_id(s, APR_ARRAY_IDX(routes, r, const char *));
        }
        for (vs = s; vs; vs = vs->next) {
            imx_srv_conf_t *c = srv_conf(vs);
            const char *vhost = apr_pstrcat(pconf, ",vhost=",
                                            imx_pescape(pconf, vs->server_hostname
                                                        ? vs->server_hostname : "unknown",
                                                        IMX_ESC_TAG), NULL);
            const char *tags = tags_text(pconf, c->tags);

            c->index = i++;
            c->sum_server = imx_summary_server_id(s, vhost, tags);
            c->sum_routes = sum_routes;
        }
    }
    imx_fields_post_config(pconf, s);
    {
        apr_array_header_t *keys = tag_from_keys(pconf);

        /* A value refused (table full, off the allow-list) is written as
         * "other": a fixed text, so a registry id, as the point's tag. */
        tag_other_refs = apr_pcalloc(pconf, sizeof(uint32_t) * (apr_size_t)(keys->nelts + 1));
        for (int k = 0; k < keys->nelts; k++) {
            int id = imx_summary_name_id(s, 3, apr_pstrcat(ptemp, ",", imx_pescape(
                                             ptemp, APR_ARRAY_IDX(keys, k, const char *),
                                             IMX_ESC_TAG), "=other", NULL));
            tag_other_refs[k] = id < 0 ? 0 : IMX_TAG_NAMED | (uint32_t)id;
        }
    }
    for (i = 0; i < M_INVALID; i++) {
        /* HEAD shares M_GET, so the registry may name M_GET either way. */
        const char *m = i == M_GET ? "GET" : ap_method_name_of(pconf, i);
        method_names[i] = m ? imx_pescape(pconf, m, IMX_ESC_TAG) : NULL;
    }
    method_names[METHOD_HEAD] = "HEAD";
    method_names[METHOD_OTHER] = "OTHER";
    mode = mc->mode != UNSET ? mc->mode : DEF_MODE;
    {
        int threaded = 0;
        defer_term = ap_mpm_query(AP_MPMQ_IS_THREADED, &threaded) == APR_SUCCESS
                     && threaded == AP_MPMQ_NOT_SUPPORTED;
    }
    summary_names.host = host_escaped;
    summary_names.methods = method_names;
    summary_names.nmethods = M_INVALID + 2;
    if (imx_tags_init(s, tag_count(pconf), mc->max_tag_values != UNSET
                      ? mc->max_tag_values : DEF_MAX_TAG_VALUES) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, "IMX0007: cannot create the "
                     "shared memory for request tags; they will be written as 'other'");
    }
    if (imx_summary_init(s, &summary_names, (mode & MODE_SUMMARY) != 0,
                         (uint32_t)(mc->summary_series != UNSET ? mc->summary_series
                                    : DEF_SUMMARY_SERIES),
                         mc->flush_interval != UNSET ? mc->flush_interval
                         : DEF_FLUSH_INTERVAL) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, "IMX0006: cannot create the "
                     "shared memory for summaries; no summaries will be written");
    }
    return OK;
}

static void log_cb(void *ctx, int level, const char *msg)
{
    ap_log_error(APLOG_MARK, level, 0, ctx, "IMX0100: %s", msg);
}

/* pchild pre-cleanup. Prefork runs it from its SIGTERM handler (restart,
 * stop), so it does only async-signal-safe work: imx_engine_stop() sets a
 * flag, writes a pipe and poll()s for the flusher, which flushes, logs and
 * frees its own things; the slot is marked with one atomic store. */
static apr_status_t child_stop(void *data)
{
    imx_engine_t *e = atomic_load(&engine);

    (void)data;
    if (e) {
        imx_engine_stop(e);
    }
    imx_status_exit();
    return APR_SUCCESS;
}

/* Once per interval in the flusher: first what dead children of any
 * generation left in their rings, then summaries. */
static void flusher_tick(void *ctx, imx_engine_t *e, int final)
{
    if (!final) {
        imx_status_rescue(e);
    }
    imx_summary_tick(ctx, e, final);
}

/* The flusher's last act, in its own thread: the sender's handles and its
 * pool are its own, so they go with it. */
static void flusher_exit(void *ctx)
{
    apr_pool_destroy(ctx);
}

/* Effective buffer and batch sizes: a batch never exceeds the ring (an
 * explicit larger one is refused by check_config). */
static void sizes(const imx_srv_conf_t *mc, uint32_t *cap, uint32_t *batch)
{
    uint32_t want = (uint32_t)(mc->buffer_size != UNSET ? mc->buffer_size
                                                          : default_buffer_size());

    *batch = (uint32_t)(mc->batch_size != UNSET ? mc->batch_size : DEF_BATCH_SIZE);
    if (mc->batch_size == UNSET && *batch > want / 2) {
        *batch = want / 2;
    }
    /* The ring holds a power of two of records (as the engine would round
     * it), so this is what the rings, the status page and the engine see. */
    for (*cap = 2; *cap < want; *cap <<= 1) {
        ;
    }
}

static void imx_child_init(apr_pool_t *pchild, server_rec *s)
{
    imx_srv_conf_t *mc = srv_conf(s);
    imx_http_conf_t hc;
    imx_engine_conf_t ec;
    imx_http_t *http;
    imx_engine_t *e;
    apr_pool_t *fpool;
    char err[256];
    apr_status_t rv;
    int slot;
    uint32_t cap;

    (void)pchild;
    if (!mc->urls) {
        return;
    }
    /* The flusher's own pool, not a child of pchild: pchild is destroyed
     * when the child stops, maybe while the flusher still sends, and maybe
     * in a signal handler. The flusher destroys this one itself. */
    if (apr_pool_create_unmanaged_ex(&fpool, NULL, NULL) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s,
                     "IMX0002: cannot create the flusher's pool, recording is off");
        return;
    }
    apr_pool_tag(fpool, "imx_flusher");
    memset(&hc, 0, sizeof(hc));
    hc.urls = (const char *const *)mc->urls->elts;
    hc.nurls = mc->urls->nelts;
    hc.token = mc->token;
    hc.timeout = mc->timeout != UNSET ? mc->timeout : DEF_TIMEOUT;
    hc.tls_verify = mc->tls_verify != UNSET ? mc->tls_verify : DEF_TLS_VERIFY;
    hc.ca_file = mc->ca_file;
    hc.proxy = mc->proxy;
    http = imx_http_create(fpool, &hc, err, sizeof(err));
    if (!http) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s,
                     "IMX0002: cannot set up the sender, recording is off: %s", err);
        apr_pool_destroy(fpool);
        return;
    }
    memset(&ec, 0, sizeof(ec));
    ec.line_prefix = line_prefix;
    sizes(mc, &cap, &ec.batch_size);
    ec.capacity = cap;
    ec.flush_interval = mc->flush_interval != UNSET ? mc->flush_interval : DEF_FLUSH_INTERVAL;
    ec.shutdown_timeout = SHUTDOWN_TIMEOUT;
    ec.retry_interval = RETRY_INTERVAL;
    ec.retry_base = RETRY_BASE;
    ec.retry_max_delay = RETRY_MAX_DELAY;
    ec.retry_max_time = mc->retry_max_time != UNSET ? mc->retry_max_time : DEF_RETRY_MAX_TIME;
    ec.retry_buffer = (size_t)(mc->retry_buffer != UNSET ? mc->retry_buffer : DEF_RETRY_BUFFER);
    ec.gzip = mc->gzip != UNSET ? mc->gzip : DEF_GZIP;
    ec.names.reg = imx_summary_registry();
    ec.names.methods = method_names;
    ec.names.nmethods = M_INVALID + 2;
    ec.names.tag_text = imx_tags_text;
    ec.rid_cells = rid_wanted;
    {
        ap_generation_t gen = 0;
        int shared = ring_shm && cap == ring_cap;

        ap_mpm_query(AP_MPMQ_GENERATION, &gen);

        slot = imx_status_claim(cap, gen, shared ? ring_shm : NULL, shared ? ring_rids : NULL);
        if (slot >= 0 && shared) {
            /* The segment is 64-aligned and each ring a multiple of 64. */
            ec.cells = ring_shm + (size_t)slot * ring_cap * 64;
            ec.rids = ring_rids ? ring_rids + (size_t)slot * ring_cap * IMX_RID_MAX : NULL;
        }
    }
    if (slot >= 0) {
        ec.self_prefix = apr_psprintf(fpool, "apache_influx_metrics,host=%s,slot=%d",
                                      host_escaped, slot);
        ec.on_stats = imx_status_publish;
        ec.counters = imx_status_counters();
        /* Only with a slot: the fold of a dead child's slot is what gives
         * its bytes back. */
        ec.retry_shared = imx_status_retry_budget();
    }
    imx_summary_child(slot);
    ec.on_tick = flusher_tick;
    ec.send = imx_http_send;
    ec.send_limit = imx_http_limit;
    ec.send_ctx = http;
    ec.log = log_cb;
    ec.log_ctx = s;
    ec.on_exit = flusher_exit;
    ec.exit_ctx = fpool;
    if (mc->spool_dir && imx_status_spool()) {
        imx_spool_conf_t sc;

        memset(&sc, 0, sizeof(sc));
        sc.dir = mc->spool_dir;
        sc.max_bytes = (uint64_t)(mc->spool_size != UNSET ? mc->spool_size : DEF_SPOOL_SIZE);
        sc.shared = imx_status_spool();
        sc.log = log_spool_cb;
        sc.log_ctx = s;
        /* From the flusher's pool: only the flusher uses it, and it goes
         * with it. */
        ec.spool = imx_spool_open(fpool, &sc, err, sizeof(err));
        if (!ec.spool) {
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, "IMX0016: %s; this child drops "
                         "what it cannot send instead of spooling it", err);
        }
    }
    /* The ring and the engine come from the process pool, not pchild: a
     * worker thread still logging a request while the child is torn down
     * (mod_http2 joins its workers after this module's cleanup) then finds
     * a stopped engine, not freed memory. Sized once, here. */
    e = imx_engine_create(s->process->pool, &ec, err, sizeof(err));
    if (!e) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s,
                     "IMX0003: cannot create the buffer, recording is off: %s", err);
        imx_status_unclaim();
        apr_pool_destroy(fpool);
        return;
    }
    rv = imx_engine_start(e);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s,
                     "IMX0004: cannot start the flusher thread, recording is off");
        imx_status_unclaim();
        apr_pool_destroy(fpool);
        return;
    }
    atomic_store(&engine, e);
    /* A pre-cleanup, so it runs before the pools of other modules' threads
     * go, on every orderly child exit. */
    apr_pool_pre_cleanup_register(pchild, NULL, child_stop);
}

/* ------------------------------------------------------------------------- */
/* Request path                                                               */

/* Index into method_names of a request's method. */
static int method_index(const request_rec *r)
{
    /* httpd numbers a request by its method's exact name, with one
     * exception: HEAD is M_GET with header_only set. */
    if (r->method_number >= 0 && r->method_number < M_INVALID
        && method_names[r->method_number]) {
        return r->method_number == M_GET && r->header_only ? METHOD_HEAD : r->method_number;
    }
    return METHOD_OTHER;
}

/* Raw mode with sampling: keep this request? Sets pt->sample. */
static int sampled_in(const imx_dir_conf_t *dc, imx_point_t *pt)
{
    uint64_t x;

    if (dc->sample < 0 || dc->sample >= 1) {
        pt->sample = 0;
        return 1;
    }
    if ((dc->keep_errors == 1 && pt->status >= 500)
        || (dc->keep_slow != UNSET && pt->duration_us >= dc->keep_slow)) {
        pt->sample = 10000;     /* kept for what it is: it stands for itself */
        return 1;
    }
    if (!rng_state) {
        /* The variable's address differs per thread: a per-thread seed. */
        rng_state = ((uint64_t)apr_time_now() << 16)
                    ^ (uint64_t)(uintptr_t)&rng_state * 0x9e3779b97f4a7c15ULL;
        rng_state |= 1;
    }
    x = rng_state;              /* xorshift64: per thread, no lock */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    rng_state = x;
    pt->sample = (uint16_t)(dc->sample * 10000 + 0.5);
    return (double)(x >> 11) * (1.0 / 9007199254740992.0) < dc->sample;
}

/* What prefork would have done with sig. Async-signal-safe. */
static void term_run_prev(int sig)
{
    const struct sigaction *pa = &term_prev[sig == SIGHUP];

    if (pa->sa_handler == SIG_IGN) {
        return;
    }
    if (pa->sa_handler != SIG_DFL) {
        pa->sa_handler(sig);
        return;
    }
    sigaction(sig, pa, NULL);
    raise(sig);
}

/* prefork's SIGTERM/SIGHUP, wrapped: while a request is between our first
 * and our last log hook, the signal waits for the last one (imx_log_done),
 * so a child stopped meanwhile exits with the request in the access log and
 * in the ring alike. A flag, not sigprocmask: no system call per request.
 * Should another module's log hook fail (httpd then skips the later ones),
 * the signal keeps waiting until httpd escalates to SIGKILL, after which the
 * ring in shared memory is taken over as after any crash. */
static void term_deferred(int sig)
{
    if (atomic_load(&term_hold) > 0) {
        term_pending = sig;
        return;
    }
    /* prefork's handler exits the process through its pools: from the main
     * thread only, never from one of mod_http2's workers. */
    if (!pthread_equal(pthread_self(), term_main)) {
        pthread_kill(term_main, sig);
        return;
    }
    term_run_prev(sig);
}

/* child_init, prefork: wraps the handlers prefork has just installed. */
static void defer_term_signals(void)
{
    static const int sigs[2] = { SIGTERM, SIGHUP };
    struct sigaction sa;

    for (int i = 0; i < 2; i++) {
        if (sigaction(sigs[i], NULL, &term_prev[i]) != 0
            || (term_prev[i].sa_flags & SA_SIGINFO)) {
            defer_term = 0;     /* not what prefork installs: leave them be */
            return;
        }
    }
    term_main = pthread_self();
    for (int i = 0; i < 2; i++) {
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = term_deferred;
        sa.sa_flags = term_prev[i].sa_flags;    /* SA_RESTART as prefork asked */
        sigfillset(&sa.sa_mask);
        sigaction(sigs[i], &sa, NULL);
    }
}

/* Ends a stretch that term_hold held (prefork): a signal that waited goes
 * on now. */
static void term_release(void)
{
    if (defer_term && atomic_fetch_sub(&term_hold, 1) == 1 && term_pending) {
        int sig = term_pending;

        term_pending = 0;
        pthread_kill(term_main, sig);   /* to term_deferred, in the main thread */
    }
}

/* The last log hook of all. */
static int imx_log_done(request_rec *r)
{
    (void)r;
    term_release();
    return DECLINED;
}

/* The first child_init of all modules (prefork): from here to the last one
 * (imx_child_init_done), prefork's stop signals wait. Every module's
 * child_init allocates, this one's (libcurl, the engine) most, and the
 * process is single-threaded until the flusher starts, so prefork's handler
 * freeing pchild in between would corrupt the heap, as it does when a
 * restart reaches a child before child_init ("corrupted double-linked list",
 * httpd's own window). httpd 2.4.49 and later block signals during
 * child_init themselves; this covers the ones that do not. */
static void imx_child_init_hold(apr_pool_t *pchild, server_rec *s)
{
    (void)pchild;
    if (!srv_conf(s)->urls) {
        return;
    }
    /* Before any module's child_init: a child that died without this line
     * died before this module ran any code in it (the tests tell httpd's
     * own crashes from this module's by it). */
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, "IMX0019: child starting");
    if (defer_term) {
        atomic_fetch_add(&term_hold, 1);
        defer_term_signals();
        if (!defer_term) {
            atomic_fetch_sub(&term_hold, 1);    /* not prefork's handlers */
        }
    }
}

static void imx_child_init_done(apr_pool_t *pchild, server_rec *s)
{
    (void)pchild; (void)s;
    term_release();
}

static int imx_log_transaction(request_rec *r)
{
    const request_rec *last = r;
    const imx_dir_conf_t *dc;
    imx_srv_conf_t *sc;
    imx_point_t pt = { 0 };
    char rid[IMX_RID_MAX + 1];
    apr_time_t now;
    int midx;
    /* Loaded once: the same engine is recorded into, whatever happens. */
    imx_engine_t *e = atomic_load_explicit(&engine, memory_order_acquire);

    if (defer_term) {
        atomic_fetch_add(&term_hold, 1);    /* until imx_log_done */
    }
    if (!e) {
        return DECLINED;
    }
    dc = ap_get_module_config(r->per_dir_config, &influx_metrics_module);
    if (dc->enabled == 0) {
        return DECLINED;
    }
    while (last->next) {
        last = last->next;
    }
    sc = srv_conf(r->server);
    now = apr_time_now();

    /* Unique per millisecond server-wide, so InfluxDB never merges two
     * requests of one series (see imx_ts_unique). */
    pt.ts_ns = imx_ts_unique(ts_table, r->request_time);
    pt.duration_us = now - r->request_time;
    /* As %B: no body went out (HEAD, 304) means 0, whatever was counted. */
    pt.bytes_sent = last->sent_bodyct ? last->bytes_sent : 0;
    midx = method_index(r);
    pt.server = (uint16_t)sc->sum_server;
    pt.route = (uint16_t)sc->sum_routes[dc->route_idx];
    pt.method = (uint8_t)midx;
    pt.status = (uint16_t)(last->status > 0 && last->status < 1000 ? last->status : 0);
    rid[0] = '\0';
    if (sc->fields) {
        imx_fields_fill(r, last, sc->fields, sc->rid_header, &pt, rid);
    }
    if (mode & MODE_SUMMARY) {
        int cls = pt.status / 100;
        uint32_t key = IMX_KEY(sc->sum_server, sc->sum_routes[dc->route_idx], midx,
                               cls < 6 ? cls : 0);
        uint64_t us = (uint64_t)(pt.duration_us > 0 ? pt.duration_us : 0);

        if (sc->fields || dc->slo > 0) {
            imx_summary_record_ex(key, us, pt.status >= 500, pt.ttfb_us,
                                  dc->slo > 0 ? (uint64_t)dc->slo : 0, rid, pt.rid_len);
        }
        else {
            imx_summary_record(key, us, pt.status >= 500);
        }
    }
    if ((mode & MODE_RAW) && sampled_in(dc, &pt)) {
        if (dc->tag_src) {
            const char *v = dc->tag_src == TAG_ENV
                                ? apr_table_get(last->subprocess_env, dc->tag_name)
                            : dc->tag_src == TAG_NOTE
                                ? apr_table_get(last->notes, dc->tag_name)
                            : apr_table_get(r->headers_in, dc->tag_name);
            if (v && *v) {
                apr_hash_t *allow = dc->tag_allow
                    ? apr_hash_get(dc->tag_allow, dc->tag_key, APR_HASH_KEY_STRING) : NULL;

                /* A value off the allow-list never takes a place in the table. */
                uint32_t other = tag_other_refs[dc->tag_idx];

                pt.tag = allow && !apr_hash_get(allow, v, APR_HASH_KEY_STRING)
                         ? other : imx_tags_intern(dc->tag_idx, dc->tag_key, v, other);
            }
        }
        if (pt.rid_len) {
            imx_push_rid(e, &pt, rid);
        }
        else {
            imx_push(e, &pt);
        }
    }
    return DECLINED;
}

/* The filters that measure what InfluxMetricsFields asks for, only for
 * requests that will be recorded. */
static void imx_insert_filter(request_rec *r)
{
    const imx_dir_conf_t *dc;
    const imx_srv_conf_t *sc = srv_conf(r->server);

    if (!(sc->fields & (IMX_F_TTFB | IMX_F_BYTES_RECEIVED))
        || !atomic_load_explicit(&engine, memory_order_relaxed)) {
        return;
    }
    dc = ap_get_module_config(r->per_dir_config, &influx_metrics_module);
    if (dc->enabled != 0) {
        imx_fields_insert(r, sc->fields);
    }
}

static void imx_register_hooks(apr_pool_t *p)
{
    imx_fields_register_hooks(p);
    ap_hook_insert_filter(imx_insert_filter, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_insert_error_filter(imx_insert_filter, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_check_config(imx_check_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(imx_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_monitor(imx_status_monitor, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(imx_child_init_hold, NULL, NULL, APR_HOOK_REALLY_FIRST);
    ap_hook_child_init(imx_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(imx_child_init_done, NULL, NULL, APR_HOOK_REALLY_LAST);
    ap_hook_child_status(imx_tags_child_status, NULL, NULL, APR_HOOK_MIDDLE);
    /* First and last, so that with prefork a stop waits while any module
     * logs (see term_deferred). */
    ap_hook_log_transaction(imx_log_transaction, NULL, NULL, APR_HOOK_FIRST);
    ap_hook_log_transaction(imx_log_done, NULL, NULL, APR_HOOK_REALLY_LAST);
    ap_hook_handler(imx_status_handler, NULL, NULL, APR_HOOK_MIDDLE);
    APR_OPTIONAL_HOOK(ap, status_hook, imx_status_hook, NULL, NULL, APR_HOOK_MIDDLE);
}
