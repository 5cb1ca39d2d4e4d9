#!/usr/bin/env python3
"""Peer for "lock acquire + release": redis-py's Lock (SET NX PX, Lua release)."""
from bench_common import missing, parse_args, result, timed

args = parse_args(__doc__)
try:
    import redis
except ImportError as e:
    missing(f"python3-redis is not installed ({e})")

r = redis.Redis.from_url(args.url)
r.flushdb()


def cycles():
    for _ in range(args.ops):
        with r.lock("bench:lock", timeout=60):
            pass


result("lock_cycle", args.ops, timed(cycles))
r.flushdb()
