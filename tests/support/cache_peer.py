"""The Python side of test_cache_python: reads and writes cached values the
way Python retools does (a hash with `created` and a pickled `value`), with
pickle and redis-py only.

    cache_peer.py <redis url> write   store the Python values under the key "py"
    cache_peer.py <redis url> read    check what C++ stored under the key "cpp"

Exit status 0 when every value matched; messages on stdout otherwise.
"""
import pickle
import sys
import time

import redis

REGION = "shared"
# namespace -> (value for key "py", protocol Python writes it with, value C++ stores for key "cpp")
VALUES = {
    "interop.name.": ("from python \u00e9 \u20ac 'q'", 0, "from c++ \u00e9 \u20ac"),
    "interop.count.": (12345678901, 2, -42),
    "interop.ints.": ([1, 2, 3], 4, [4, 5, 6]),
    "interop.scores.": ({"a": 0.5, "b": 2.0}, 5, {"x": 0.25, "y": -1.5}),
}


def value_key(ns, key):
    return "retools:%s:%s:%s" % (REGION, ns, key)


def main():
    url, mode = sys.argv[1], sys.argv[2]
    if mode == "probe-redis-module":
        sys.exit(0)
    r = redis.Redis.from_url(url)
    ok = True
    for ns, (py_value, protocol, cpp_value) in VALUES.items():
        if mode == "write":
            # What CacheRegion.load stores after calling the function (one MULTI/EXEC).
            p = r.pipeline(transaction=True)
            p.hset(value_key(ns, "py"), mapping={"created": repr(time.time()),
                                                 "value": pickle.dumps(py_value, protocol=protocol)})
            p.expire(value_key(ns, "py"), 604800)
            p.sadd("retools:regions", REGION)
            p.sadd("retools:%s:namespaces" % REGION, ns)
            p.sadd("retools:%s:%s:keys" % (REGION, ns), "py")
            p.execute()
        else:
            stored = r.hgetall(value_key(ns, "cpp"))
            if not stored:
                print("%s: nothing stored under 'cpp'" % ns)
                ok = False
                continue
            age = time.time() - float(stored[b"created"])
            got = pickle.loads(stored[b"value"])
            if got != cpp_value or type(got) is not type(cpp_value) or not 0 <= age < 60:
                print("%s: got %r (age %.1f s), expected %r" % (ns, got, age, cpp_value))
                ok = False
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
