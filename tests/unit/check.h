/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 */
/* The unit tests' one assertion: counts, reports and goes on. The counters
 * live in check.c, so that the helpers a test program links (fixture.c,
 * lp_parse.c) count in the same totals as its tests. */
#ifndef IMX_TEST_CHECK_H
#define IMX_TEST_CHECK_H

#include <stdio.h>

extern int failures, checks;

#define CHECK(cond, ...) do { \
    checks++; \
    if (!(cond)) { \
        failures++; \
        fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
        fprintf(stderr, __VA_ARGS__); \
        fputc('\n', stderr); \
    } \
} while (0)

/* Prints "N checks, M failures"; the program's exit status. */
int check_report(void);

#endif
