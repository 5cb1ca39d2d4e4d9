#!/usr/bin/env python3
"""Self-test of extract_snippets.py: block kinds, names, #line, stale files, and the check."""

import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "extract_snippets.py")

MD = """# Guide

```cpp
int x = 1;
```

1. In a list:

   ```cpp
   #include <vector>
   std::vector<int> v;
   ```

```cpp
#include <cstdio>
int main() { std::puts("hi"); }
```

```sh
not compiled
```

~~~text
```cpp
inside a text block: not a block of its own
```
~~~
"""


def run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True)


def main():
    failures = []

    def expect(cond, what):
        if not cond:
            failures.append(what)

    with tempfile.TemporaryDirectory() as root:
        os.makedirs(os.path.join(root, "docs"))
        md = os.path.join(root, "docs", "guide.md")
        with open(md, "w") as f:
            f.write(MD)
        out = os.path.join(root, "out")
        os.makedirs(out)
        stale = os.path.join(out, "docs_old_md_L1.cpp")
        open(stale, "w").close()
        r = run("extract", "--root", root, "--out", out, md)
        expect(r.returncode == 0, f"extract failed: {r.stderr}")
        names = sorted(n for n in os.listdir(out) if n.endswith(".cpp"))
        expect(names == ["docs_guide_md_L10.cpp", "docs_guide_md_L15.cpp", "docs_guide_md_L4.cpp"],
               f"generated {names}")
        expect(not os.path.exists(stale), "a stale source was not removed")
        cmake = open(os.path.join(out, "snippets.cmake")).read()
        body, tu, main_ = (cmake.split(f"set(RETOOLS_DOC_SNIPPETS_{k}")[1].split(")")[0]
                           for k in ("BODY", "TU", "MAIN"))
        expect("L4.cpp" in body and "L10.cpp" in tu and "L15.cpp" in main_, f"kinds wrong:\n{cmake}")
        text = open(os.path.join(out, "docs_guide_md_L4.cpp")).read()
        expect(f'#line 4 "{md}"\nint x = 1;' in text, f"body source:\n{text}")
        expect("#include <retools/retools.hpp>" in text and "std::chrono_literals" in text, "body prelude")
        text = open(os.path.join(out, "docs_guide_md_L10.cpp")).read()
        expect(text.startswith(f'#line 10 "{md}"\n#include <vector>\nstd::vector<int> v;'),
               f"indented block not dedented:\n{text}")
        expect("retools.hpp" not in text, "a complete translation unit got the prelude")
        mtime = os.path.getmtime(os.path.join(out, "docs_guide_md_L4.cpp"))
        run("extract", "--root", root, "--out", out, md)
        expect(os.path.getmtime(os.path.join(out, "docs_guide_md_L4.cpp")) == mtime,
               "an unchanged source was rewritten")

        # check: objects present and newer pass; a missing one, a changed count or
        # an unlisted docs/*.md fail.
        built = os.path.join(root, "built.txt")
        objs = []
        for n in names:
            o = os.path.join(root, n + ".o") if "L15" not in n else os.path.join(root, "doc_" + n[:-4])
            open(o, "w").close()
            objs.append(o)
        with open(built, "w") as f:
            f.write(";".join(objs[:2]) + "\n" + objs[2] + "\n")
        r = run("check", "--root", root, "--out", out, "--built", built, md)
        expect(r.returncode == 0, f"check failed on a good build: {r.stderr}")
        os.remove(objs[0])
        r = run("check", "--root", root, "--out", out, "--built", built, md)
        expect(r.returncode != 0 and names[0] in r.stderr, f"check passed with an object missing: {r.stdout}")
        open(objs[0], "w").close()
        with open(os.path.join(root, "docs", "other.md"), "w") as f:
            f.write("no code\n")
        r = run("check", "--root", root, "--out", out, "--built", built, md)
        expect(r.returncode != 0 and "docs/other.md" in r.stderr, "check passed with an unlisted doc")
        os.remove(os.path.join(root, "docs", "other.md"))
        with open(md, "a") as f:
            f.write("\n```cpp\nint y = 2;\n```\n")
        r = run("check", "--root", root, "--out", out, "--built", built, md)
        expect(r.returncode != 0 and "4 cpp blocks but 3" in r.stderr, f"check passed with a new block: {r.stderr}")

        with open(md, "a") as f:
            f.write("\n```cpp\nunterminated\n")
        r = run("extract", "--root", root, "--out", out, md)
        expect(r.returncode != 0 and "unterminated" in r.stderr, "an unterminated block was accepted")

    for f in failures:
        print("FAIL:", f, file=sys.stderr)
    print("ok" if not failures else f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
