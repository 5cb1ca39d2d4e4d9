"""Jobs the RQ workers run: importable by name from the worker (and its forks)."""


def noop():
    return None
