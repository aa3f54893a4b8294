"""Transfer progress that boto3's transfer threads can update: a byte bar on a terminal,
plain lines every LOG_INTERVAL_S seconds in logs (a pipeline step's), none when disabled."""

from __future__ import annotations

import sys
import threading
import time

from tqdm import tqdm

from dultra.progress import LOG_INTERVAL_S

GiB = 1 << 30


class ByteProgress:
    """Callback for `upload_file` / `download_file` (called from several threads at once).

    enabled: True a bar, False nothing, None a bar on a terminal and lines elsewhere.
    """

    def __init__(self, total: int, desc: str, enabled: bool | None = None, interval_s: float = LOG_INTERVAL_S):
        self.total, self.desc, self.interval_s = total, desc, interval_s
        self.done = 0
        self._lines = enabled is None and not sys.stderr.isatty()
        self._bar = None if self._lines else tqdm(
            total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
            disable=enabled is False, leave=False)
        self._lock = threading.Lock()
        self._began = self._printed = time.monotonic()

    def __call__(self, n: int) -> None:
        with self._lock:
            self.done += n
            if self._bar is not None:
                self._bar.update(n)
            elif time.monotonic() - self._printed >= self.interval_s:
                self._line()

    def _line(self) -> None:
        self._printed = now = time.monotonic()
        rate = self.done / max(now - self._began, 1e-9) / (1 << 20)
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        print(f"{self.desc}: {self.done / GiB:.2f} of {self.total / GiB:.2f} GiB{pct}, {rate:.0f} MiB/s",
              file=sys.stderr, flush=True)

    def __enter__(self) -> ByteProgress:
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.done:
            self._line()
