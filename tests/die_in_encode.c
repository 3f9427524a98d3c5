/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * LD_PRELOAD helper for tests/test_summary_robust.py: the process that calls
 * imx_hist_encode() (the writer of summaries, which holds the summary lock
 * then) first after the file named by $IMX_DIE_FILE appears writes its pid
 * to "$IMX_DIE_FILE.pid" and kills itself, still holding the lock. Every
 * other call goes to the module's own function.
 *
 * The module calls imx_hist_encode through its PLT, so a definition that is
 * loaded first (LD_PRELOAD) takes its place. The arguments are passed on
 * untouched with GCC's __builtin_apply, whatever the function's signature.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

typedef void (*fn_t)(void);

void imx_hist_encode(void);

void imx_hist_encode(void)
{
    static fn_t real;
    const char *f = getenv("IMX_DIE_FILE");

    /* unlink: one process wins, even when several write at once. */
    if (f && unlink(f) == 0) {
        char path[4096];
        FILE *o;

        snprintf(path, sizeof(path), "%s.pid", f);
        if ((o = fopen(path, "w"))) {
            fprintf(o, "%d\n", (int)getpid());
            fclose(o);
        }
        raise(SIGKILL);
    }
    if (!real) {
        real = (fn_t)dlsym(RTLD_NEXT, "imx_hist_encode");
    }
    if (!real) {
        abort();
    }
    __builtin_return(__builtin_apply(real, __builtin_apply_args(), 256));
}
