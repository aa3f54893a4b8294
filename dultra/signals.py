"""How dultra stops on Ctrl-C and SIGTERM.

    with graceful_stop("train", announce=True) as stop:
        for step in steps:
            train(step)
            if signum := stop.agreed(accelerator):
                save_checkpoint(step)
                raise stop_exception(signum)

Outside training, SIGTERM (`kill`, Kubernetes stopping a pod) raises Terminated where the
program is, as Ctrl-C raises KeyboardInterrupt, so clean-up runs. Inside a training loop
the first signal only asks to stop: the step in progress finishes, every process agrees to
stop after the same step, and the loop saves a checkpoint before the interrupt goes on up,
so a preempted run loses no steps. A second signal interrupts at once.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as Ctrl-C's KeyboardInterrupt is (the CLI exits with 143 instead of 130)."""


def stop_exception(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def raise_terminated(signum, frame) -> None:
    """A SIGTERM handler: stop where the program is."""
    raise Terminated


class StopRequest:
    """The signal that asked a training loop to stop (None: none yet)."""

    def __init__(self, name: str, announce: bool):
        self.name, self.announce = name, announce
        self.signum: int | None = None

    def handle(self, signum, frame) -> None:
        if self.signum is not None:  # asked twice: stop now, without the checkpoint
            raise stop_exception(signum)
        self.signum = signum
        if self.announce:
            print(f"\n{self.name}: stopping after this step, with a checkpoint (again to stop at once)",
                  file=sys.stderr, flush=True)

    def agreed(self, accelerator) -> int:
        """The signal every process stops for after this step (0: go on). With several
        processes, one of them may have been signalled: all stop, after the same step."""
        mine = self.signum or 0
        if accelerator.num_processes == 1:
            return mine
        import torch

        return int(accelerator.gather(torch.tensor([mine], device=accelerator.device)).max().item())


@contextlib.contextmanager
def handling(signums: tuple[int, ...], handler) -> Iterator[None]:
    """`handler` for these signals while inside, the previous handlers after. Only the main
    thread may set handlers: elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in signums}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextlib.contextmanager
def graceful_stop(name: str, announce: bool) -> Iterator[StopRequest]:
    """Ctrl-C and SIGTERM only set the StopRequest while inside (see `handling`)."""
    request = StopRequest(name, announce)
    with handling(STOP_SIGNALS, request.handle):
        yield request
