/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * imx_log.h: how the engine reports what the glue should log.
 *
 * The engine never logs on its own: it hands a message and a level to a
 * callback the glue gives it (ap_log_error there, a quiet recorder in the
 * unit tests), so it links without httpd.
 */
#ifndef IMX_LOG_H
#define IMX_LOG_H

#include <stdarg.h>
#include <stdio.h>

/* Levels follow syslog numbering, like APLOG_*. */
#define IMX_LOG_ERR     3
#define IMX_LOG_WARNING 4
#define IMX_LOG_NOTICE  5
#define IMX_LOG_INFO    6
#define IMX_LOG_DEBUG   7

typedef void imx_log_fn(void *ctx, int level, const char *msg);

/* Formats a message for log (which may be NULL: then nothing happens). */
static inline void imx_log_say(imx_log_fn *log, void *ctx, int level, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static inline void imx_log_say(imx_log_fn *log, void *ctx, int level, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    if (!log) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);  /* NOLINT(clang-analyzer-valist.Uninitialized): va_start above */
    va_end(ap);
    log(ctx, level, msg);
}

#endif /* IMX_LOG_H */
