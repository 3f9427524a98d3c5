/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * test_digits.c: the encoder's decimal formatting (imx_put_u64) against
 * snprintf for every value below 10^8 (every case of its small-number
 * path) and for every 8-digit lower half of a 16-digit number (every value
 * of its fixed-width path), plus random 64-bit values and the powers of ten
 * around them. Its multiplications stand in for divisions only within an
 * error bound; this checks the bound holds for each input it can meet.
 * Built with -O2 (a few seconds), not under a sanitizer.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "imx_engine.h"

static unsigned long failures;

/* The reference: one division by ten per digit, as plain as it gets (and
 * several times faster than snprintf, which the random values below still
 * use, so the reference itself is checked against the C library). */
static void ref_u64(char *out, uint64_t v)
{
    char t[24];
    int n = 0;

    do {
        t[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n) {
        *out++ = t[--n];
    }
    *out = '\0';
}

static void check(uint64_t v, const char *b)
{
    char a[32];

    *imx_put_u64(a, v) = '\0';
    if (strcmp(a, b) && failures++ < 10) {
        fprintf(stderr, "FAIL: imx_put_u64(%s) wrote %s\n", b, a);
    }
}

static void one(uint64_t v)
{
    char b[32];

    snprintf(b, sizeof(b), "%llu", (unsigned long long)v);
    check(v, b);
}

static void fast(uint64_t v)
{
    char b[32];

    ref_u64(b, v);
    check(v, b);
}

int main(void)
{
    uint64_t x = 88172645463325252ULL, n = 0;

    for (uint64_t v = 0; v < 100000000ULL; v++) {
        fast(v);
        fast((v + 1) * 100000000ULL + v);
        n += 2;
    }
    for (int i = 0; i < 10000000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        one(x);
        one(x >> (i % 64));
        n += 2;
    }
    for (uint64_t p = 1;; p *= 10) {
        one(p - 1);
        one(p);
        one(p + 1);
        n += 3;
        if (p > UINT64_MAX / 10) {
            break;
        }
    }
    one(UINT64_MAX);
    printf("%llu values, %lu failures\n", (unsigned long long)n + 1, failures);
    return failures != 0;
}
