#!/usr/bin/env python3
"""Extracts the ```cpp blocks of Markdown files into C++ sources, and checks them.

Convention (README.md and docs/): a fenced block tagged `cpp` must compile.
- A block whose first non-blank line starts with `#include` is a complete
  translation unit; it is linked into a program when it defines `main`,
  otherwise only compiled.
- Any other block is the body of a function, compiled after
  `#include <retools/retools.hpp>`, `#include <iostream>` and
  `using namespace std::chrono_literals;`.
Blocks tagged otherwise (sh, text, cmake, json, python ...) are not compiled.

extract: writes one source per block into OUT, named after the Markdown file
and the line of the block's first code line (`docs_cache_md_L42.cpp`); each
starts with a `#line` directive, so a compile error points at the Markdown
line. Files are rewritten only when their content changes. Writes
OUT/snippets.cmake with the three lists (RETOOLS_DOC_SNIPPETS_BODY, _TU, _MAIN).

check: fails unless the Markdown files still hold the same, non-zero number of
cpp blocks as were extracted, every generated source has an up-to-date
compiled object or program (so a snippet that did not compile fails the
test), and every Markdown file of the docs folder (and README.md) is listed.
"""

import argparse
import os
import re
import sys

FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([^\s`]*)")
MAIN = re.compile(r"\bint\s+main\s*\(")


def blocks(path):
    """Yields (first code line number, tag, code lines) for every fenced block."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, tag = len(m.group(1)), m.group(2), m.group(3).lower()
        start = i + 1
        j = start
        body = []
        while j < len(lines):
            close = FENCE.match(lines[j])
            if close and close.group(2).startswith(fence[0] * 3) and len(close.group(2)) >= len(fence) \
                    and not close.group(3):
                break
            line = lines[j]
            body.append(line[indent:] if line[:indent].strip() == "" else line.lstrip())
            j += 1
        if j == len(lines):
            sys.exit(f"{path}:{i + 1}: unterminated code block")
        yield start + 1, tag, body
        i = j + 1


def cpp_blocks(root, md_files):
    for md in md_files:
        rel = os.path.relpath(md, root)
        for line, tag, body in blocks(md):
            if tag == "cpp":
                yield rel, line, body


def source_name(rel, line):
    stem = re.sub(r"[^A-Za-z0-9]+", "_", rel)
    return f"{stem}_L{line}.cpp"


def render(md_abs, line, body):
    first = next((l for l in body if l.strip()), "")
    code = "\n".join(body)
    directive = f'#line {line} "{md_abs}"\n'
    if first.lstrip().startswith("#include"):
        kind = "main" if MAIN.search(code) else "tu"
        return kind, directive + code + "\n"
    fn = f"retools_doc_snippet_L{line}"
    text = ("// Generated from a Markdown code block; edit the Markdown, not this file.\n"
            "#include <retools/retools.hpp>\n#include <iostream>\n"
            "using namespace std::chrono_literals;\n"
            f"namespace {{\n[[maybe_unused]] void {fn}() {{\n{directive}{code}\n}}\n}}  // namespace\n")
    return "body", text


def write_if_changed(path, text):
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return
    except FileNotFoundError:
        pass
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def extract(args):
    os.makedirs(args.out, exist_ok=True)
    lists = {"body": [], "tu": [], "main": []}
    for rel, line, body in cpp_blocks(args.root, args.md):
        kind, text = render(os.path.join(args.root, rel), line, body)
        path = os.path.join(args.out, source_name(rel, line))
        write_if_changed(path, text)
        lists[kind].append(path)
    wanted = {p for ps in lists.values() for p in ps}
    for name in os.listdir(args.out):  # sources of blocks that moved or went away
        path = os.path.join(args.out, name)
        if name.endswith(".cpp") and path not in wanted:
            os.remove(path)
    cmake = "".join(f"set(RETOOLS_DOC_SNIPPETS_{k.upper()}\n" + "".join(f'  "{p}"\n' for p in v) + ")\n"
                    for k, v in lists.items())
    write_if_changed(os.path.join(args.out, "snippets.cmake"), cmake)


def check(args):
    errors = []
    found = [source_name(rel, line) for rel, line, _ in cpp_blocks(args.root, args.md)]
    if not found:
        errors.append("no cpp code blocks found in the docs")
    with open(args.built, encoding="utf-8") as f:
        built = [l.strip() for l in f.read().replace(";", "\n").split("\n") if l.strip()]
    sources = sorted(n for n in os.listdir(args.out) if n.endswith(".cpp"))
    if sorted(found) != sources:
        errors.append(f"the docs hold {len(found)} cpp blocks but {len(sources)} were extracted "
                      "(build again: the extraction runs at configure time)")
    # A unity build compiles several snippets as one object: its batch file
    # (the object's path without ".o") names them in #include lines.
    batched = {}
    for b in built:
        if b.endswith(".cxx.o") and os.path.exists(b[:-2]):
            with open(b[:-2], encoding="utf-8") as f:
                for m in re.finditer(r'#include "([^"]+)"', f.read()):
                    batched.setdefault(os.path.basename(m.group(1)), []).append(b)
    for name in sources:
        src = os.path.join(args.out, name)
        outs = [b for b in built if os.path.basename(b).startswith(name)
                or os.path.basename(b) == "doc_" + name[:-4]] + batched.get(name, [])
        if not outs:
            errors.append(f"{name}: no object or program for it in the build")
        elif not all(os.path.exists(b) and os.path.getmtime(b) >= os.path.getmtime(src) for b in outs):
            errors.append(f"{name}: not built, or did not compile (its object or program is missing or older than it)")
    listed = {os.path.abspath(m) for m in args.md}
    candidates = [os.path.join(args.root, "README.md")]
    docs = os.path.join(args.root, "docs")
    if os.path.isdir(docs):
        candidates += [os.path.join(docs, n) for n in sorted(os.listdir(docs)) if n.endswith(".md")]
    for md in candidates:
        if os.path.exists(md) and os.path.abspath(md) not in listed:
            errors.append(f"{os.path.relpath(md, args.root)} is not in RETOOLS_DOC_FILES (tests/docs/CMakeLists.txt)")
    for e in errors:
        print("docs.snippets_compile:", e, file=sys.stderr)
    if not errors:
        print(f"{len(found)} cpp blocks in {len(args.md)} Markdown files, all compiled")
    return 1 if errors else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=["extract", "check"])
    p.add_argument("--root", required=True, help="source tree root (paths in names are relative to it)")
    p.add_argument("--out", required=True, help="folder of the generated sources")
    p.add_argument("--built", help="check: file listing the objects and programs built from them")
    p.add_argument("md", nargs="+", help="Markdown files")
    args = p.parse_args()
    args.root = os.path.abspath(args.root)
    args.md = [os.path.abspath(m) for m in args.md]
    if args.mode == "extract":
        extract(args)
        return 0
    return check(args)


if __name__ == "__main__":
    sys.exit(main())
