"""Transfer progress that boto3's transfer threads can update: a byte bar on a terminal,
plain lines every LOG_INTERVAL_S seconds in logs (a pipeline step's), none when disabled."""

from __future__ import annotations

import sys
import threading

from tqdm import tqdm

from dultra.progress import LOG_INTERVAL_S, LogProgress

GiB = 1 << 30


def _bytes(done: float, total: float, seconds: float) -> str:
    pct = f" ({100 * done / total:.0f}%)" if total else ""
    return f"{done / GiB:.2f} of {total / GiB:.2f} GiB{pct}, {done / max(seconds, 1e-9) / (1 << 20):.0f} MiB/s"


class ByteProgress:
    """Callback for `upload_file` / `download_file` (called from several threads at once).

    enabled: True a bar, False nothing, None a bar on a terminal and lines elsewhere.
    """

    def __init__(self, total: int, desc: str, enabled: bool | None = None, interval_s: float = LOG_INTERVAL_S):
        if enabled is None and not sys.stderr.isatty():
            self._bar = LogProgress(None, desc=desc, total=total, unit="B", interval_s=interval_s, describe=_bytes)
        else:
            self._bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                             disable=enabled is False, leave=False)
        self._lock = threading.Lock()

    def __call__(self, n: int) -> None:
        with self._lock:
            self._bar.update(n)

    def __enter__(self) -> ByteProgress:
        return self

    def __exit__(self, *exc) -> None:
        self._bar.close()
