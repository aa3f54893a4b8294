"""A warm worker: isolates itself once, then forks one child per request.

    python -m sandbox.worker INDEX CONFIG_JSON    (started by sandbox.pool, one per slot)

Protocol on its stdin/stdout: one JSON object per line. First it writes a hello
(`{"ready": true, "isolation": ...}`), then for each normalized request line it writes one
result line. Anything else it prints goes to stderr, so a stray print cannot corrupt the
protocol. It imports the modules solutions commonly use before the first fork, so children
start with them loaded.
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import json
import os
import sys

from sandbox import isolation
from sandbox.config import SandboxConfig
from sandbox.executor import Executor

_M_ARENA_MAX = -8

# Modules HumanEval/MBPP-style solutions and tests import; loaded once, shared by every fork.
_PRELOAD = (
    "math", "re", "string", "collections", "itertools", "functools", "heapq", "bisect",
    "typing", "random", "fractions", "decimal", "statistics", "hashlib", "datetime",
    "copy", "operator", "json", "array", "queue", "dataclasses", "enum", "textwrap",
    "cmath", "numbers", "traceback", "io", "struct", "threading", "unittest", "ctypes",
)


def main(argv: list[str]) -> int:
    index = int(argv[0])
    fields = json.loads(argv[1])
    config = SandboxConfig(**{k: v for k, v in fields.items()
                              if k in {f.name for f in dataclasses.fields(SandboxConfig)}})
    mode = isolation.probe(config.isolation)
    if mode == "namespaces":
        isolation.enter_worker_namespaces(config.tmpfs_mb)
    else:
        isolation.prctl(isolation.PR_SET_CHILD_SUBREAPER, 1)
    isolation.prefer_for_oom_kill()
    isolation.make_non_dumpable()
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    os.close(devnull)
    for name in _PRELOAD:
        __import__(name)
    # glibc reserves 64 MiB of address space per thread arena; under RLIMIT_AS that would
    # make a handful of threads exhaust memory_mb. Two arenas, shared by all threads.
    ctypes.CDLL(None).mallopt(_M_ARENA_MAX, 2)
    executor = Executor(config, mode, index)
    # Everything loaded so far is shared with every fork; keeping the collector off it
    # avoids touching (and so copying) those pages in each child.
    gc.freeze()

    def send(message: dict) -> None:
        replies.write(json.dumps(message).encode() + b"\n")
        replies.flush()

    send({"ready": True, **executor.describe()})
    try:
        for line in requests:
            send(executor.run(json.loads(line)))
    finally:
        executor.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
