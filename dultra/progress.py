"""Progress of long work: a live bar on a terminal, plain periodic lines in logs.

    bar = progress(range(start, steps), desc="grpo", total=steps, initial=start)
    for step in bar:
        ...
        bar.set_postfix(reward="0.41")

A redrawn bar written to a pipeline's log is one endless line of carriage returns (40 KB
for a 400-step tiny pretraining); off a terminal the same calls print one line every
LOG_INTERVAL_S seconds, and the last one.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator

from tqdm.auto import tqdm

LOG_INTERVAL_S = 30.0


def progress(iterable: Iterable | None = None, *, desc: str, total: int, initial: int = 0, unit: str = "it",
             enabled: bool = True):
    """A tqdm bar on a terminal, a LogProgress elsewhere, a silent bar when not `enabled` (other ranks)."""
    if not enabled or sys.stderr.isatty():
        return tqdm(iterable, desc=desc, total=total, initial=initial, unit=unit, disable=not enabled)
    return LogProgress(iterable, desc=desc, total=total, initial=initial, unit=unit)


class LogProgress:
    """The part of tqdm's interface dultra uses, as `desc: n/total (pct) unit, postfix` lines on stderr.

    describe(n, total, seconds) -> the line after `desc: `, for counts that read better otherwise (bytes).
    """

    def __init__(self, iterable: Iterable | None, *, desc: str, total: int, initial: int = 0, unit: str = "it",
                 interval_s: float = LOG_INTERVAL_S, describe: Callable[[float, float, float], str] | None = None):
        self.iterable, self.desc, self.total, self.unit = iterable, desc, total, unit
        self.n = self._start = initial
        self.interval_s, self.postfix, self.describe = interval_s, "", describe
        self._began = self._printed = time.monotonic()
        self._closed = False

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self._printed >= self.interval_s:
            self._print()

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.n > self._start:
                self._print()

    def _print(self) -> None:
        self._printed = now = time.monotonic()
        if self.describe is not None:
            print(f"{self.desc}: {self.describe(self.n, self.total, now - self._began)}", file=sys.stderr, flush=True)
            return
        done = self.n - self._start
        rate = f", {(now - self._began) / done:.2f} s/{self.unit}" if done else ""
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        tail = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.n}/{self.total}{pct}{rate}{tail}", file=sys.stderr, flush=True)
