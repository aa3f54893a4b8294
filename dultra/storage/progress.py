"""A byte progress bar that boto3's transfer threads can update."""

from __future__ import annotations

import sys
import threading

from tqdm import tqdm


class ByteProgress:
    """Callback for `upload_file` / `download_file` (called from several threads at once)."""

    def __init__(self, total: int, desc: str, enabled: bool | None = None):
        # tqdm's `disable=None` means "only on a terminal": logs of pipelines stay clean.
        self._bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                         file=sys.stderr, disable=None if enabled is None else not enabled, leave=False)
        self._lock = threading.Lock()

    def __call__(self, n: int) -> None:
        with self._lock:
            self._bar.update(n)

    def __enter__(self) -> ByteProgress:
        return self

    def __exit__(self, *exc) -> None:
        self._bar.close()
