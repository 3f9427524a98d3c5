# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""The documentation's links and its directive reference (tests/check_docs.py).

No server, no build: reads README.md, docs/*.md, bench/*.md, the command
table of mod_influx_metrics_config.c and the #include lines of the module's
sources.
"""

import check_docs


def test_links_resolve():
    problems = check_docs.check_links(check_docs.REPO_ROOT)
    assert not problems, "\n".join(problems)


def test_every_directive_has_its_section():
    problems = check_docs.check_directives(check_docs.REPO_ROOT)
    assert not problems, "\n".join(problems)


def test_source_map_matches_includes():
    problems = check_docs.check_source_map(check_docs.REPO_ROOT)
    assert not problems, "\n".join(problems)
