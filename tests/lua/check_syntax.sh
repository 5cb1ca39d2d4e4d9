#!/bin/sh
# Usage: check_syntax.sh <luac5.1> <file.lua>...
# Every file must parse as Lua 5.1, the version Redis embeds: 5.2+ syntax
# (`//`, `goto` and labels, `<const>`/`<close>`, bitwise operators) is refused.
# Prints each file that fails, with the compiler's message; exits 1 if any.
luac=$1
shift
if ! command -v "$luac" >/dev/null 2>&1; then
  echo "FAILED: no Lua 5.1 compiler ($luac): install the Debian package lua5.1 (scripts/install-deps.sh)"
  exit 1
fi
status=0
for f in "$@"; do
  if ! out=$("$luac" -p "$f" 2>&1); then
    echo "FAILED: $f does not parse as Lua 5.1:"
    echo "$out"
    status=1
  fi
done
[ "$status" -eq 0 ] && echo "$# Lua files parse as Lua 5.1"
exit "$status"
