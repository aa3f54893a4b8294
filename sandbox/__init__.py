"""The dultra code-execution sandbox: run model-written Python safely and fast.

    python -m sandbox serve --host 127.0.0.1 --port 8080 --workers 4

`sandbox.isolation` documents the layers and what they do not protect against;
`sandbox.server` is the HTTP API; `sandbox.pool` the warm worker pool it shares with the
in-process client mode. This package imports nothing from `dultra` (so the image has no torch).
"""

STATUSES = (
    "passed",
    "failed",
    "timeout",
    "runtime_error",
    "syntax_error",
    "memory_exceeded",
    "output_exceeded",
    "sandbox_error",
)
