#!/usr/bin/env python3
"""Peer for "cache fresh hit": a dogpile.cache function on its redis backend."""
from urllib.parse import urlparse

from bench_common import missing, parse_args, result, timed

args = parse_args(__doc__)
try:
    import redis
    from dogpile.cache import make_region
except ImportError as e:
    missing(f"python3-dogpile.cache is not installed ({e})")

url = urlparse(args.url)
region = make_region().configure(
    "dogpile.cache.redis",
    expiration_time=3600,
    arguments={"host": url.hostname, "port": url.port, "db": int(url.path.lstrip("/") or 0),
               "redis_expiration_time": 7200, "distributed_lock": True,
               "thread_local_lock": False},
)
redis.Redis.from_url(args.url).flushdb()


@region.cache_on_arguments()
def load_things(term, limit):
    return [term] * limit


load_things("bunny", 10)  # stored once; every timed call is a fresh hit


def hits():
    for _ in range(args.ops):
        load_things("bunny", 10)


result("cache_hit_nostats", args.ops, timed(hits))
redis.Redis.from_url(args.url).flushdb()
