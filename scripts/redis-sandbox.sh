#!/usr/bin/env bash
# Runs a command with REDIS_URL pointing at a private redis-server on a free
# loopback port, then stops the server: scripts/redis-sandbox.sh CMD [ARGS...]
set -euo pipefail

dir=$(mktemp -d /tmp/retools-sandbox-XXXXXX)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

for attempt in $(seq 1 20); do
  port=$(( 20000 + RANDOM % 40000 ))
  port_in_use "$port" && continue
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
    --dir "$dir" --logfile "$dir/redis.log" &
  pid=$!
  for i in $(seq 1 100); do
    if redis-cli -p "$port" ping >/dev/null 2>&1; then break 2; fi
    kill -0 "$pid" 2>/dev/null || { pid=; break; }
    sleep 0.05
  done
  [ -n "$pid" ] && { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; pid=; }
done
[ -n "$pid" ] || { echo "could not start redis-server" >&2; exit 1; }

echo "private redis-server on 127.0.0.1:$port" >&2
REDIS_URL="redis://127.0.0.1:$port/0" "$@"
