#!/usr/bin/env python3
"""Peer for enqueue (one, batch of 1,000) and workers draining no-op jobs:
RQ's SimpleWorker (in-process) and its forking Worker (fork per job)."""
import resource

from bench_common import missing, parse_args, result, timed

args = parse_args(__doc__)
try:
    import redis
    from rq import Queue, SimpleWorker, Worker
except ImportError as e:
    missing(f"python3-rq is not installed ({e})")

import noop_jobs

r = redis.Redis.from_url(args.url)
r.flushdb()
q = Queue("bench", connection=r)


def enqueue_one():
    for _ in range(args.ops):
        q.enqueue(noop_jobs.noop)


result("enqueue_one", args.ops, timed(enqueue_one))
r.flushdb()


def enqueue_batches():
    for _ in range(args.batches):
        q.enqueue_many([Queue.prepare_data(noop_jobs.noop) for _ in range(1000)])


result("enqueue_batch", args.batches * 1000, timed(enqueue_batches))
r.flushdb()


def fill(n):
    for start in range(0, n, 1000):
        q.enqueue_many([Queue.prepare_data(noop_jobs.noop) for _ in range(min(1000, n - start))])


def drain(worker_class, n):
    fill(n)
    worker = worker_class([q], connection=r)
    seconds = timed(lambda: worker.work(burst=True, logging_level="ERROR"))
    if q.count:
        raise SystemExit(f"{worker_class.__name__} left {q.count} jobs")
    return seconds


seconds = drain(SimpleWorker, args.jobs)
result("worker_thread_1", args.jobs, seconds,
       **{"peak RSS MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
r.flushdb()
result("worker_fork", args.fork_jobs, drain(Worker, args.fork_jobs))
r.flushdb()
