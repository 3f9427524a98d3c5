/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * mod_influx_metrics_tagconf.c: the directives of tags: static ones
 * (InfluxMetricsTag), the request tag of a context (InfluxMetricsTagFrom)
 * with its allowed values and server-wide cap (InfluxMetricsTagValues,
 * InfluxMetricsMaxTagValues), and the checks that no point ever carries a
 * key twice (InfluxDB refuses such a point, and InfluxDB 2.x the whole
 * batch with it).
 */
#include "httpd.h"
#include "http_config.h"
#include "http_log.h"

#include "apr_hash.h"
#include "apr_strings.h"

#include "imx_lineproto.h"
#include "mod_influx_metrics_args.h"
#include "mod_influx_metrics_records.h"
#include "mod_influx_metrics_tagconf.h"

APLOG_USE_MODULE(influx_metrics);

#define CMD_SC(cmd) imx_srv_conf((cmd)->server)

/* Tag keys the module writes itself. */
static const char *const reserved_tags[] = {
    "host", "vhost", "method", "status", "route", "status_class",
    "time", "_measurement", "_field", "duration_us", "bytes_sent", "sample_rate",
    "protocol", "tls", "upstream", "ttfb_us", "bytes_received", "request_id", NULL
};

/* ------------------------------------------------------------------------- */
/* Configuration                                                             */

/* The error of a directive whose tag key the module writes itself, or NULL. */
static const char *reserved_key(cmd_parms *cmd, const char *key)
{
    for (int i = 0; reserved_tags[i]; i++) {
        if (!strcmp(key, reserved_tags[i])) {
            return apr_psprintf(cmd->pool, "%s: invalid tag key '%s': the module "
                                "writes it itself", cmd->directive->directive, key);
        }
    }
    return NULL;
}

/* Whether the server of cmd has a static tag key. */
static int static_key(cmd_parms *cmd, const char *key)
{
    const apr_array_header_t *tags = CMD_SC(cmd)->static_tags;

    for (int i = 0; i < tags->nelts; i++) {
        if (!strcmp(APR_ARRAY_IDX(tags, i, imx_static_tag_t).key, key)) {
            return 1;
        }
    }
    return 0;
}

const char *imx_set_tag(cmd_parms *cmd, void *dc, const char *key, const char *val)
{
    imx_static_tag_t *t;
    const char *err;
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
    if ((err = reserved_key(cmd, key))) {
        return err;
    }
    if (static_key(cmd, key)) {
        return apr_psprintf(cmd->pool, "%s: tag '%s' is set twice in the same "
                            "server", cmd->directive->directive, key);
    }
    {
        apr_array_header_t *tf = imx_conf_reqtag_keys(cmd->pool);
        for (i = 0; i < tf->nelts; i++) {
            if (!strcmp(APR_ARRAY_IDX(tf, i, const char *), key)) {
                return apr_psprintf(cmd->pool, "%s: tag '%s' is also taken from "
                                    "requests by InfluxMetricsTagFrom",
                                    cmd->directive->directive, key);
            }
        }
    }
    t = apr_array_push(CMD_SC(cmd)->static_tags);
    t->key = key;
    t->val = val;
    return NULL;
}

/* Keys of the InfluxMetricsTagFrom directives seen so far, so a static tag
 * cannot take the same key (the point would carry it twice). */
apr_array_header_t *imx_conf_reqtag_keys(apr_pool_t *pconf)
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

const char *imx_set_tag_from(cmd_parms *cmd, void *dc, const char *args)
{
    imx_dir_conf_t *d = dc;
    const char *src = ap_getword_conf(cmd->pool, &args);
    const char *name = ap_getword_conf(cmd->pool, &args);
    const char *key = ap_getword_conf(cmd->pool, &args);
    const char *err;

    if (d->from_src) {
        return apr_psprintf(cmd->pool, "%s: only one per context (this one has "
                            "already '%s')", cmd->directive->directive, d->from_name);
    }
    if (!strcasecmp(src, "env")) {
        d->from_src = IMX_FROM_ENV;
    }
    else if (!strcasecmp(src, "note")) {
        d->from_src = IMX_FROM_NOTE;
    }
    else if (!strcasecmp(src, "header")) {
        d->from_src = IMX_FROM_HEADER;
    }
    else {
        return imx_arg_bad(cmd, src, "expected env, note or header");
    }
    if (!*name || *args) {
        return apr_psprintf(cmd->pool, "%s: expected env|note|header NAME [tag]",
                            cmd->directive->directive);
    }
    if (!*key) {
        key = apr_pstrdup(cmd->pool, name);
        ap_str_tolower((char *)key);
    }
    if ((err = reserved_key(cmd, key))) {
        return err;
    }
    if (static_key(cmd, key)) {
        return apr_psprintf(cmd->pool, "%s: tag '%s' is also a static "
                            "InfluxMetricsTag of this server", cmd->directive->directive, key);
    }
    APR_ARRAY_PUSH(imx_conf_reqtag_keys(cmd->pool), const char *) = key;
    {
        imx_tag_where_t *w = apr_array_push(tag_from_where(cmd->pool));
        w->key = key;
        w->server = cmd->server;
        w->file = cmd->directive->filename;
        w->line = cmd->directive->line_num;
    }
    d->from_name = name;
    d->from_key = imx_pescape(cmd->pool, key, IMX_ESC_TAG);
    /* Each InfluxMetricsTagFrom has a table of values of its own. */
    d->from_idx = imx_conf_reqtag_keys(cmd->pool)->nelts - 1;
    return NULL;
}

const char *imx_set_max_tag_values(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)dc;
    return err ? err : imx_arg_parse_int(cmd, arg, 1, 100000, &CMD_SC(cmd)->max_tag_values);
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
const char *imx_set_tag_values(cmd_parms *cmd, void *dc, const char *key,
                                  const char *val)
{
    imx_dir_conf_t *d = dc;
    const char *k = imx_pescape(cmd->pool, key, IMX_ESC_TAG);
    apr_hash_t *vals;

    if (!d->from_allow) {
        d->from_allow = apr_hash_make(cmd->pool);
    }
    vals = apr_hash_get(d->from_allow, k, APR_HASH_KEY_STRING);
    if (!vals) {
        vals = apr_hash_make(cmd->pool);
        apr_hash_set(d->from_allow, k, APR_HASH_KEY_STRING, vals);
        APR_ARRAY_PUSH(tag_values_keys(cmd->pool), const char *) = key;
    }
    apr_hash_set(vals, val, APR_HASH_KEY_STRING, val);
    return NULL;
}

/* Every InfluxMetricsTagValues key is written by some InfluxMetricsTagFrom. */
int imx_conf_check_tag_values(apr_pool_t *pconf)
{
    apr_array_header_t *want = tag_values_keys(pconf), *have = imx_conf_reqtag_keys(pconf);

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

/* After the merge, a point of a virtual host carries its merged static
 * tags and the InfluxMetricsTagFrom tag of its context: the same key twice
 * would make InfluxDB 1.x refuse the point ("duplicate tags") and InfluxDB
 * 2.x the whole batch, other hosts' points included. */
int imx_conf_check_tag_keys(apr_pool_t *pconf, server_rec *s)
{
    apr_array_header_t *where = tag_from_where(pconf);

    for (server_rec *vs = s; vs; vs = vs->next) {
        const apr_array_header_t *tags = imx_srv_conf(vs)->static_tags;

        for (int i = 0; i < tags->nelts; i++) {
            const char *key = APR_ARRAY_IDX(tags, i, imx_static_tag_t).key;

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
