"""Stop requests: the signals a scheduler or a user sends to end a run early.

SLURM sends SIGTERM (preemption, scancel) or the job's `--signal` (submitit asks for SIGUSR2
before the time limit); users send SIGUSR1 by hand or press Ctrl-C (SIGINT). While a job
runs, `StopRequest` turns each of them into a flag: the trainer checks it at the next step
boundary, writes a checkpoint and stops, and the job records `interrupted`. A second
Ctrl-C stops at once. Afterwards, under submitit, its own handler is called so that the
job is requeued (and resumes from the checkpoint).
"""

from __future__ import annotations

import signal
from types import FrameType

STOP_SIGNALS = tuple(
    getattr(signal, name)
    for name in ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT")
    if hasattr(signal, name)
)


class StopRequest:
    """Within `with StopRequest() as stop:`, `stop.signum` is the first stop signal
    received (None until one is). Only the main thread can own signal handlers: elsewhere
    (a joblib worker thread) it does nothing."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, object] = {}

    def __bool__(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: the user does not want to wait
        if self.signum is None:
            self.signum = signum

    def __enter__(self) -> StopRequest:
        for signum in STOP_SIGNALS:
            try:
                self.previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread
                break
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

    def submitit_requeue(self) -> None:
        """Under submitit, hand the stop to submitit's handler, which requeues this job
        (the launcher resubmits it with the same arguments) and exits the process."""
        for handler in self.previous.values():
            owner = getattr(handler, "__self__", None)
            if type(owner).__module__.startswith("submitit") and hasattr(
                owner, "checkpoint_and_try_requeue"
            ):
                owner.checkpoint_and_try_requeue(self.signum or signal.SIGUSR2, None)
                return
