/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * mod_influx_metrics_prefork.c: prefork's stop signals, held while this
 * module (or any module) is in a stretch that a signal must not cut.
 *
 * prefork: its SIGTERM (and SIGHUP) handler exits the child on the spot,
 * freeing its pools inside the handler. So a child could die between this
 * module's point and mod_log_config's line, and a signal that interrupts
 * malloc() corrupts the heap (single-threaded) or deadlocks on it. The
 * signal waits while the main thread is in a stretch of ours: the logging
 * phase, and the child_init phase, which allocates a lot (see
 * term_deferred).
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"
#include "ap_mpm.h"

#include "mod_influx_metrics_prefork.h"

APLOG_USE_MODULE(influx_metrics);

int imx_defer_term;
_Atomic int imx_term_hold;      /* stretches the signal waits for */
static volatile sig_atomic_t term_pending;  /* the signal that waits */
static struct sigaction term_prev[2];       /* prefork's: SIGTERM, SIGHUP */
static pthread_t term_main;                 /* the child's main thread */
static int active;              /* the module records in this generation */

void imx_prefork_post_config(int recording)
{
    int threaded = 0;

    active = recording;
    imx_defer_term = recording && ap_mpm_query(AP_MPMQ_IS_THREADED, &threaded) == APR_SUCCESS
                     && threaded == AP_MPMQ_NOT_SUPPORTED;
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
    if (atomic_load(&imx_term_hold) > 0) {
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
            imx_defer_term = 0;     /* not what prefork installs: leave them be */
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

/* Ends a stretch that imx_term_hold held (prefork): a signal that waited goes
 * on now. */
void imx_prefork_release(void)
{
    if (imx_defer_term && atomic_fetch_sub(&imx_term_hold, 1) == 1 && term_pending) {
        int sig = term_pending;

        term_pending = 0;
        pthread_kill(term_main, sig);   /* to term_deferred, in the main thread */
    }
}

/* The last log hook of all. */
int imx_prefork_log_done(request_rec *r)
{
    (void)r;
    imx_prefork_release();
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
void imx_prefork_child_init_hold(apr_pool_t *pchild, server_rec *s)
{
    ap_generation_t gen = 0;

    (void)pchild;
    if (!active) {
        return;
    }
    /* The child's first line, before any module's child_init: with its
     * last, the exit line (IMX0100: flusher exit: ...), it brackets the
     * child's life in the log. A child that died without it died before
     * this module ran any code in it. */
    ap_mpm_query(AP_MPMQ_GENERATION, &gen);
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, "IMX0019: child starting (generation %d)",
                 (int)gen);
    if (imx_defer_term) {
        atomic_fetch_add(&imx_term_hold, 1);
        defer_term_signals();
        if (!imx_defer_term) {
            atomic_fetch_sub(&imx_term_hold, 1);    /* not prefork's handlers */
        }
    }
}

void imx_prefork_child_init_done(apr_pool_t *pchild, server_rec *s)
{
    (void)pchild; (void)s;
    imx_prefork_release();
}
