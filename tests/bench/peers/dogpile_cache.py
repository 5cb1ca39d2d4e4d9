#!/usr/bin/env python3
"""Peer for "cache fresh hit": dogpile.cache functions (a string value, a list
value) on its redis backend; values are pickled."""
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
    return (term + " ") * limit


@region.cache_on_arguments()
def load_list(term, limit):
    return [term] * limit


for fn, row in ((load_things, "cache_hit_nostats"), (load_list, "cache_hit_json")):
    fn("bunny", 10)  # stored once; every timed call is a fresh hit

    def hits():
        for _ in range(args.ops):
            fn("bunny", 10)

    result(row, args.ops, timed(hits))
redis.Redis.from_url(args.url).flushdb()
