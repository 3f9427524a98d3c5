/*
 * Copyright 2026 The mod_influx_metrics authors
 * SPDX-License-Identifier: Apache-2.0
 *
 * lp_parse.h: the unit tests' readers of what the engine writes (lp_parse.c):
 * request points read back by each family of line-protocol parsers, and the
 * fields of summary lines.
 *
 * The readers of tests/lp_read.h (the fuzz target's) are the same rules
 * written for canonical forms; these take a line apart into a parsed_t.
 */
#ifndef IMX_TEST_LP_PARSE_H
#define IMX_TEST_LP_PARSE_H

#include <stddef.h>
#include <stdint.h>

/* One line of the shape the module writes: integer fields only. */
typedef struct {
    char meas[256];
    int ntags;
    char key[16][256], val[16][256];
    int nfields;
    char fkey[8][64];
    long long fval[8];
    long long ts;
} parsed_t;

/* Reads a token of s[i..end) up to an unescaped byte of delims into out,
 * unescaping the specials; returns where it stopped. */
typedef size_t token_fn(const char *s, size_t i, size_t end, const char *delims,
                        const char *specials, char *out, size_t outsz);

size_t token_1x(const char *s, size_t i, size_t end, const char *delims,
                const char *specials, char *out, size_t outsz);
size_t token_2x(const char *s, size_t i, size_t end, const char *delims,
                const char *specials, char *out, size_t outsz);

int parse_line(token_fn *tok, const char *s, size_t len, parsed_t *p);

/* Summary lines whose series are ",k=<key>": -1 (or "") when absent. */
long long field_of(const char *out, uint32_t key, const char *name);
unsigned long long field_total(const char *out, size_t len, const char *name);
const char *str_field_of(const char *out, uint32_t key, const char *name);

#endif
