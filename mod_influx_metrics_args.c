/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * mod_influx_metrics_args.c: directives whose arguments take more than a
 * word to check: URLs (no secret ever echoed, precision added), tokens from
 * a file or the environment, proxies, paths, durations, sizes.
 *
 * Each returns NULL or an error naming the directive and the bad value
 * (redacted where it may hold a secret), so that `apachectl configtest`
 * says what is wrong.
 */
#include <errno.h>

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"

#include "apr_env.h"
#include "apr_file_io.h"
#include "apr_lib.h"
#include "apr_strings.h"

#include "imx_http.h"
#include "mod_influx_metrics_args.h"
#include "mod_influx_metrics_records.h"

APLOG_USE_MODULE(influx_metrics);

#define CMD_SC(cmd) imx_srv_conf((cmd)->server)

const char *imx_arg_bad(cmd_parms *cmd, const char *arg, const char *why)
{
    return apr_psprintf(cmd->pool, "%s: invalid value '%s': %s",
                        cmd->directive->directive, arg, why);
}

/* "250ms", "2s" or "2" (seconds). */
const char *imx_arg_parse_duration(cmd_parms *cmd, const char *arg,
                                  apr_interval_time_t min, apr_interval_time_t max,
                                  apr_interval_time_t *out)
{
    char *end;
    apr_int64_t n;
    apr_interval_time_t v;

    if (!apr_isdigit(*arg)) {
        return imx_arg_bad(cmd, arg, "expected a duration such as 500ms or 2s");
    }
    errno = 0;
    n = apr_strtoi64(arg, &end, 10);
    if (errno || n > 86400000) {
        return imx_arg_bad(cmd, arg, "out of range");
    }
    if (!strcmp(end, "ms")) {
        v = apr_time_from_msec(n);
    }
    else if (!*end || !strcmp(end, "s")) {
        v = apr_time_from_sec(n);
    }
    else {
        return imx_arg_bad(cmd, arg, "unit must be ms or s");
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

const char *imx_arg_parse_int(cmd_parms *cmd, const char *arg, long min, long max,
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
const char *imx_set_url(cmd_parms *cmd, void *dc, const char *arg)
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
        return imx_arg_bad(cmd, imx_url_redacted(cmd->pool, arg),
                   "must start with http:// or https://");
    }
    hostlen = strcspn(rest, "/?#");
    if (hostlen == 0 || rest[hostlen - 1] == '@' || rest[hostlen - 1] == ':') {
        return imx_arg_bad(cmd, imx_url_redacted(cmd->pool, arg), "no host");
    }
    if (strpbrk(arg, " \t\r\n")) {
        return imx_arg_bad(cmd, imx_url_redacted(cmd->pool, arg), "contains white space");
    }
    if (strchr(arg, '#')) {
        return imx_arg_bad(cmd, imx_url_redacted(cmd->pool, arg), "a fragment has no meaning here");
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
                return imx_arg_bad(cmd, imx_url_redacted(cmd->pool, arg),
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

const char *imx_set_token(cmd_parms *cmd, void *dc, const char *arg)
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
            return imx_arg_bad(cmd, arg, "no file name");
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

/* "64M", "512K", "1G" or bytes, from min to max (range: the text of both). */
const char *imx_arg_parse_size(cmd_parms *cmd, const char *arg, apr_int64_t min,
                              apr_int64_t max, const char *range, apr_off_t *out)
{
    char *end;
    apr_int64_t n;

    errno = 0;
    n = apr_strtoi64(arg, &end, 10);
    if (!apr_isdigit(*arg) || errno || n > max) {
        return imx_arg_bad(cmd, arg, apr_psprintf(cmd->pool, "expected a size from %s, such as 64M",
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
        return imx_arg_bad(cmd, arg, "unit must be K, M or G");
    }
    if (*end || n < min || n > max) {
        return imx_arg_bad(cmd, arg, apr_psprintf(cmd->pool, "expected a size from %s, such as 64M",
                                          range));
    }
    *out = (apr_off_t)n;
    return NULL;
}

const char *imx_set_ca_file(cmd_parms *cmd, void *dc, const char *arg)
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
        return imx_arg_bad(cmd, arg, "no such file");
    }
    CMD_SC(cmd)->ca_file = path;
    return NULL;
}

const char *imx_set_proxy(cmd_parms *cmd, void *dc, const char *arg)
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
        return imx_arg_bad(cmd, imx_url_redacted(cmd->pool, arg),
                   "must start with http://, https://, socks5:// or socks5h://");
    }
    hostlen = strcspn(rest, "/?#");
    if (hostlen == 0 || rest[hostlen - 1] == '@' || rest[hostlen - 1] == ':') {
        return imx_arg_bad(cmd, imx_url_redacted(cmd->pool, arg), "no host");
    }
    if (strpbrk(arg, " \t\r\n")) {
        return imx_arg_bad(cmd, imx_url_redacted(cmd->pool, arg), "contains white space");
    }
    CMD_SC(cmd)->proxy = arg;
    return NULL;
}

const char *imx_set_spool_dir(cmd_parms *cmd, void *dc, const char *arg)
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
        return imx_arg_bad(cmd, arg, "not a valid path");
    }
    CMD_SC(cmd)->spool_dir = path;
    return NULL;
}

const char *imx_set_rid_header(cmd_parms *cmd, void *dc, const char *arg)
{
    (void)dc;
    /* An HTTP field name is a token (RFC 9110). */
    if (!*arg || strlen(arg) > 256 || arg[strspn(arg, "!#$%&'*+-.^_`|~0123456789"
                                                 "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                 "abcdefghijklmnopqrstuvwxyz")]) {
        return imx_arg_bad(cmd, arg, "expected a header name such as X-Request-ID");
    }
    CMD_SC(cmd)->rid_header = arg;
    return NULL;
}
