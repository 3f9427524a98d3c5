#!/usr/bin/python3
# Copyright 2026 The mod_influx_metrics authors
# SPDX-License-Identifier: Apache-2.0
"""Checks the Markdown documentation (standard library only, no server).

    /usr/bin/python3 tests/check_docs.py [--old-readme FILE]

Files checked: README.md, docs/*.md and bench/*.md.

- Links: every relative link, `[text](path)`, `[text](path#anchor)`,
  `[text](#anchor)`, images and reference definitions included, names a file
  or directory that exists (relative to the file that links), and an anchor
  names a heading of the Markdown file it points into. Anchors follow
  GitHub's rules: the heading's text, lower case, punctuation removed, each
  space a '-', and '-1', '-2', ... for repeated headings. Links in code
  blocks and code spans are not links. http(s) and mailto links are not
  checked.
- Directives: every directive the module registers (the AP_INIT_* entries
  of mod_influx_metrics_config.c) has its own section in docs/directives.md, a
  heading with its exact name, with Syntax, Default and Context rows and an
  Example; and every such section is a directive the module has.
- Source map: the tables under "## Source layout" in docs/development.md
  name every file of the module (mod_influx_metrics*.[ch], imx_*.[ch]) in
  exactly one row, and each row's "May include" cell lists exactly the
  project headers that its files' #include lines name (besides the row's
  own files); no engine file (imx_*) includes anything in quotes but engine
  headers and APR's.
- With --old-readme FILE (a README from before sections moved out of it, e.g.
  `git show <commit>:README.md > old.md`): every heading of FILE is still a
  heading of README.md or of a file in docs/.

Prints each problem found, one per line; exit status 1 if there is any.
tests/test_docs.py runs the first three checks under pytest.
"""

import argparse
import glob
import os
import re
import sys
import urllib.parse

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FENCE = re.compile(r"^\s{0,3}(```|~~~)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.I)
INLINE_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
DIRECTIVE = re.compile(r"AP_INIT_[A-Z0-9_]+\(\s*\"(\w+)\"")
MODULE_FILE = re.compile(r"^(mod_influx_metrics|imx_)\w*\.[ch]$")
QUOTED_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def doc_files(root):
    files = [os.path.join(root, "README.md")]
    files += sorted(glob.glob(os.path.join(root, "docs", "*.md")))
    files += sorted(glob.glob(os.path.join(root, "bench", "*.md")))
    return [f for f in files if os.path.isfile(f)]


def prose_lines(text):
    """(line number, line) outside fenced code blocks."""
    fence = None
    for n, line in enumerate(text.split("\n"), 1):
        m = FENCE.match(line)
        if m:
            if fence is None:
                fence = m.group(1)
            elif m.group(1) == fence:
                fence = None
            continue
        if fence is None:
            yield n, line


def heading_texts(text):
    """The ATX headings' text, in order, outside code blocks."""
    return [m.group(2) for _, line in prose_lines(text)
            for m in [HEADING.match(line)] if m]


def slug(heading):
    """GitHub's anchor for a heading's text."""
    t = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)   # links: their text
    t = re.sub(r"<[^>]+>", "", t)                          # inline HTML
    t = t.replace("`", "").replace("*", "")
    t = t.strip().lower()
    t = re.sub(r"[^\w\- ]", "", t)
    return t.replace(" ", "-")


def anchors(text):
    out, seen = set(), {}
    for h in heading_texts(text):
        s = slug(h)
        if s in seen:
            seen[s] += 1
            out.add("%s-%d" % (s, seen[s]))
        else:
            seen[s] = 0
            out.add(s)
    out.update(HTML_ANCHOR.findall(text))
    return out


def links(text):
    """(line number, target) of every link outside code."""
    for n, line in prose_lines(text):
        m = REF_DEF.match(line)
        if m:
            yield n, m.group(1)
            continue
        line = CODE_SPAN.sub("", line)
        for m in INLINE_LINK.finditer(line):
            yield n, m.group(1)


def check_links(root):
    problems = []
    cache = {}

    def read(path):
        if path not in cache:
            with open(path, encoding="utf-8") as f:
                cache[path] = f.read()
        return cache[path]

    for f in doc_files(root):
        rel_f = os.path.relpath(f, root)
        for n, target in links(read(f)):
            if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("//"):
                continue
            path, _, anchor = target.partition("#")
            path = urllib.parse.unquote(path)
            dest = os.path.normpath(os.path.join(os.path.dirname(f), path)) if path else f
            where = "%s:%d: %s" % (rel_f, n, target)
            if not os.path.exists(dest):
                problems.append("%s: no such file" % where)
                continue
            if not os.path.realpath(dest).startswith(os.path.realpath(root) + os.sep):
                problems.append("%s: outside the repository" % where)
                continue
            if anchor and dest.endswith(".md"):
                if urllib.parse.unquote(anchor) not in anchors(read(dest)):
                    problems.append("%s: no heading with anchor #%s in %s"
                                    % (where, anchor, os.path.relpath(dest, root)))
    return problems


def check_directives(root):
    with open(os.path.join(root, "mod_influx_metrics_config.c"), encoding="utf-8") as f:
        names = DIRECTIVE.findall(f.read())
    path = os.path.join(root, "docs", "directives.md")
    if not os.path.isfile(path):
        return ["docs/directives.md: missing"]
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if not names:
        return ["mod_influx_metrics_config.c: no AP_INIT_* directive found"]
    # the sections: from a level-2 heading to the next level-1 or level-2 one
    sections, cur = {}, None
    for _, line in prose_lines(text):
        m = HEADING.match(line)
        if m and len(m.group(1)) <= 2:
            cur = m.group(2).strip("` ") if len(m.group(1)) == 2 else None
            if cur is not None:
                if cur in sections:
                    sections[cur].append("(repeated)")
                sections.setdefault(cur, [])
            continue
        if cur is not None:
            sections[cur].append(line)
    problems = []
    for name in names:
        if name not in sections:
            problems.append("docs/directives.md: no section '## %s'" % name)
            continue
        body = "\n".join(sections[name])
        if "(repeated)" in sections[name]:
            problems.append("docs/directives.md: '## %s' appears twice" % name)
        for row in ("**Syntax:**", "**Default:**", "**Context:**"):
            if row not in body:
                problems.append("docs/directives.md: '## %s' has no %s row" % (name, row))
        if not re.search(r"\*\*Syntax:\*\*\s*\|\s*`%s\b" % re.escape(name), body):
            problems.append("docs/directives.md: the Syntax of '## %s' does not start "
                            "with its name" % name)
        if "**Example**" not in body:
            problems.append("docs/directives.md: '## %s' has no Example" % name)
    for name in sections:
        if name.startswith("InfluxMetrics") and name not in names:
            problems.append("docs/directives.md: '## %s' is not a directive of "
                            "mod_influx_metrics_config.c" % name)
    return problems


def module_files(root):
    return sorted(f for f in os.listdir(root)
                  if MODULE_FILE.match(f) and os.path.isfile(os.path.join(root, f)))


def quoted_includes(root, name):
    with open(os.path.join(root, name), encoding="utf-8") as f:
        return QUOTED_INCLUDE.findall(f.read())


def check_source_map(root):
    """The map of docs/development.md's "Source layout" against the sources."""
    rel = "docs/development.md"
    path = os.path.join(root, rel)
    if not os.path.isfile(path):
        return [rel + ": missing"]
    with open(path, encoding="utf-8") as f:
        text = f.read()
    files = module_files(root)
    problems, seen, in_section = [], {}, False
    for n, line in prose_lines(text):
        m = HEADING.match(line)
        if m and len(m.group(1)) <= 2:
            in_section = m.group(2).strip() == "Source layout"
            continue
        if not in_section or not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        names = re.findall(r"`([^`]+)`", cells[0])
        if not names or not all(MODULE_FILE.match(x) for x in names):
            continue
        where = "%s:%d" % (rel, n)
        if len(cells) != 3:
            problems.append("%s: a row of the map needs 3 cells (files, concept, "
                            "may include)" % where)
            continue
        for x in names:
            if x in seen:
                problems.append("%s: %s is in the map twice (also line %d)"
                                % (where, x, seen[x]))
            seen[x] = n
            if x not in files:
                problems.append("%s: %s is not a file of the module" % (where, x))
        want = set()
        for x in names:
            if x in files:
                want.update(i for i in quoted_includes(root, x) if i in files)
        want -= set(names)
        listed = set(re.findall(r"`([^`]+)`", cells[2]))
        if listed != want:
            missing, extra = sorted(want - listed), sorted(listed - want)
            problems.append("%s: %s: 'May include' should list %s%s%s" % (
                where, ", ".join(names), ", ".join(sorted(want)) or "-",
                "; missing " + ", ".join(missing) if missing else "",
                "; not included " + ", ".join(extra) if extra else ""))
    for x in files:
        if x not in seen:
            problems.append("%s: %s is not in the map under 'Source layout'" % (rel, x))
        if x.startswith("imx_"):
            for i in quoted_includes(root, x):
                if not (i.startswith("imx_") or i.startswith("apr")):
                    problems.append("%s: the engine includes \"%s\"; it may include only "
                                    "engine headers and APR's" % (x, i))
    return problems


def check_old_headings(root, old_readme):
    with open(old_readme, encoding="utf-8") as f:
        old = heading_texts(f.read())
    new = set()
    for f in [os.path.join(root, "README.md")] + glob.glob(os.path.join(root, "docs", "*.md")):
        with open(f, encoding="utf-8") as fh:
            new.update(h.strip() for h in heading_texts(fh.read()))
    return ["%s: heading '%s' is in neither README.md nor docs/*.md" % (old_readme, h)
            for h in old if h.strip() not in new]


def check(root=REPO_ROOT, old_readme=None):
    problems = check_links(root) + check_directives(root) + check_source_map(root)
    if old_readme:
        problems += check_old_headings(root, old_readme)
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old-readme", metavar="FILE",
                    help="also check that every heading of FILE is kept")
    args = ap.parse_args()
    problems = check(REPO_ROOT, args.old_readme)
    for p in problems:
        print(p)
    files = doc_files(REPO_ROOT)
    print("%d problem(s) in %d files (%s)" % (
        len(problems), len(files), ", ".join(os.path.relpath(f, REPO_ROOT) for f in files)),
        file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
