"""Stopping a run cleanly on SIGINT / SIGTERM (Ctrl-C, a cluster's preemption notice, torchrun forwarding either).

The handlers only record the signal. The training loop asks `StopSignals.agreed` at every step boundary; all ranks
of a torchrun job reduce their flags there, so every rank stops after the same step, saves one complete checkpoint
(the regular atomic format, so ``--resume latest`` continues bitwise as after any checkpoint) and returns. A repeated
signal while that happens is reported and otherwise ignored, so it cannot cut a save short; SIGKILL still stops the
process at once (losing only what the last checkpoint did not hold).

The command exits with ``128 + signal number`` (130 for SIGINT, 143 for SIGTERM), the shell's convention for "ended
by this signal", so a job script can tell a stopped-and-saved run from a finished one (0) or a failed one (1, 2).
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

import torch
import torch.distributed as dist

from medst.train.distributed import DistInfo

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_code_for(signum: int) -> int:
    """The process exit code of a run stopped by ``signum``: 128 + its number (130 SIGINT, 143 SIGTERM)."""
    return 128 + int(signum)


class StopSignals:
    """Turns SIGINT/SIGTERM into a stop request for the training loop.

    `install` puts the handlers in place (the loop does so just before its first step: a signal during set-up
    still ends the process at once, losing nothing), `restore` puts the previous ones back (also usable as a
    context manager). Outside the main thread, where Python cannot install handlers, it does nothing and never
    requests a stop.
    """

    def __init__(self, info: DistInfo) -> None:
        self.info = info
        self.received = 0  # number of the first signal received by this process, 0 for none
        self._previous: dict[int, Any] = {}
        self._group: Any = None

    def __enter__(self) -> StopSignals:
        return self.install()

    def install(self) -> StopSignals:
        if self._previous or threading.current_thread() is not threading.main_thread():
            return self
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        if self.info.distributed and dist.get_backend() != "gloo":
            # The flag is reduced at every step: on a CPU (gloo) group this costs a small message and no
            # synchronisation with the GPU stream, which an NCCL collective read back on the host would.
            self._group = dist.new_group(backend="gloo")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.restore()

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        # os.write, not print: a handler may run while the main thread is inside a write to stderr.
        if self.received:
            os.write(
                2, f"{name} again: still stopping after a checkpoint (SIGKILL stops without one)\n".encode()
            )
            return
        self.received = signum
        os.write(2, f"{name} received: stopping after this step with a checkpoint\n".encode())

    def agreed(self) -> int:
        """The stop signal every rank acts on now, or 0 to go on. Called by every rank at the same step: the
        highest signal number any rank received (a collective on more than one rank)."""
        if not self.info.distributed:
            return self.received
        flag = torch.tensor([self.received], dtype=torch.int64)
        if self._group is None and self.info.device.type == "cuda":
            flag = flag.to(self.info.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
        return int(flag.item())
