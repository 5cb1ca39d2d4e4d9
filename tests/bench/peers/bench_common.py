"""Shared by the Python peer scripts: the arguments retools-bench passes and
the result lines it reads back (one JSON object per line after "BENCH ")."""
import argparse
import json
import sys
import time


def parse_args(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--url", required=True, help="redis://host:port/db; the script may flush this db")
    p.add_argument("--ops", type=int, default=20000, help="calls per single-call row")
    p.add_argument("--batches", type=int, default=100, help="batches of 1,000 jobs per batch row")
    p.add_argument("--jobs", type=int, default=20000, help="jobs per in-process worker drain")
    p.add_argument("--fork-jobs", type=int, default=2000, help="jobs per fork-per-job worker drain")
    return p.parse_args()


def emit(**fields):
    print("BENCH " + json.dumps(fields), flush=True)


def missing(why):
    """The peer cannot run here: reported as missing in the table, never dropped."""
    emit(missing=why)
    sys.exit(0)


def result(row, count, seconds, **metrics):
    fields = {"row": row, "count": count, "seconds": seconds}
    if metrics:
        fields["metrics"] = metrics
    emit(**fields)


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
