#!/usr/bin/env python3
"""Peer for "lock acquire + release" and "lock hand-over": redis-py's Lock
(SET NX PX, Lua release; a blocked acquire polls every `sleep`, 0.1 s by default)."""
import multiprocessing
import time

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

# Hand-over: the protocol of retools-bench's row. Two processes pass the lock
# back and forth; each holds it 2 ms, notes the time (CLOCK_MONOTONIC, shared
# by every process) just before releasing, and waits for the other to take it.
count = max(args.ops // 100, 20)


def hand_over(acquisitions, released_at, latency, failures):
    conn = redis.Redis.from_url(args.url)
    lock = conn.lock("bench:handover", timeout=60)  # redis-py's defaults otherwise
    while True:
        if not lock.acquire(blocking=True, blocking_timeout=10):
            failures.value += 1
            return
        acquired_at = time.monotonic()
        with acquisitions.get_lock():
            n = acquisitions.value
            acquisitions.value += 1
        if 1 <= n <= count:
            latency[n - 1] = acquired_at - released_at.value
        if n >= count:
            lock.release()
            return
        time.sleep(0.002)
        released_at.value = time.monotonic()
        lock.release()
        deadline = time.monotonic() + 10
        while acquisitions.value < n + 2:
            if time.monotonic() > deadline:
                failures.value += 1
                return
            time.sleep(0.00005)


ctx = multiprocessing.get_context("fork")
acquisitions = ctx.Value("l", 0)
released_at = ctx.Value("d", 0.0, lock=False)
latency = ctx.Array("d", count, lock=False)
failures = ctx.Value("i", 0)
procs = [ctx.Process(target=hand_over, args=(acquisitions, released_at, latency, failures)) for _ in range(2)]
for p in procs:
    p.start()
for p in procs:
    p.join(120)
if failures.value or any(p.exitcode != 0 for p in procs):
    raise SystemExit("a hand-over process failed")
us = sorted(v * 1e6 for v in latency)
at = lambda q: us[min(len(us) - 1, int(q * len(us)))]
result("lock_handover", count, sum(us) / 1e6, **{"p50 µs": at(0.5), "p99 µs": at(0.99)})
r.flushdb()
