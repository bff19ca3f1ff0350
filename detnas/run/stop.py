"""Stopping on request: a time limit or a preemption saves the work done, and a rerun continues.

SLURM sends SIGTERM at a job's time limit and on preemption, then SIGKILL a grace period later
(``KillWait``, 30 s by default). The workflow asks for the SIGTERM two minutes before the
limit (``SBATCH_SIGNAL=TERM@120``, workflow/Snakefile); a batch script of your own may ask for
SIGUSR1 instead (``sbatch --signal=B:USR1@120`` with ``exec detnas ...`` as its last line).

Inside `honoured` (a training stage, a NATS search, an evolutionary search), either signal is a
request, not an end: the loop finishes the step (or the candidate) it is in, saves its resumable
state at that point (``resume.pt``, the search's ``state.json``) and raises `Stopped`. That ends
the stage's MLflow run KILLED and the process with 128 + the signal's number, and the rerun
continues from the saved step to the weights an uninterrupted run ends with. Under DDP the ranks
agree on the step (`requested`: one all-reduce of a flag per step), so that rank 0 saves a state
every rank reached. A request in the last step saves that step and lets the stage finish.
Outside the loops (setup, the final evaluation) the signals end the process as they always did.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

_received: int | None = None  # the first stop signal this process got inside `honoured`


class Stopped(Exception):
    """A stop signal was honoured: the stage saved its state and ends (its MLflow run KILLED)."""

    status = "KILLED"  # the stage's MLflow run status (`detnas.run.tracking.NullTracker.__exit__`)

    def __init__(self, signum: int, where: str):
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name} {where}; rerun the same "
                         "command (or the workflow) to continue from there")


def _record(signum: int, _frame) -> None:
    global _received
    if _received is None:
        _received = signum


@contextmanager
def honoured() -> Iterator[None]:
    """Within: SIGTERM and SIGUSR1 are recorded for the loop (`requested`) instead of ending the
    process; the previous handlers come back after. Only the main thread can set handlers: in
    another thread this changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    global _received
    _received = None
    previous = {sig: signal.signal(sig, _record) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def requested(ddp=None) -> int | None:
    """The stop signal this process received inside `honoured`, or None. Under DDP (``ddp`` with
    ``world > 1``) every rank gets the same answer, any rank's signal: call it at the same point
    of every rank's step."""
    if ddp is None or ddp.world <= 1:
        return _received
    import torch
    from torch import distributed as dist

    flag = torch.tensor([_received or 0], device=ddp.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item()) or None


def shield(_worker_id: int | None = None) -> None:
    """In a helper process (a DataLoader worker, a search's evaluation worker): ignore the stop
    signals, which SLURM sends to every process of the job. The stage's main process honours
    them and ends its helpers; a helper ended by the signal would fail the step it serves. The
    process that starts shielded helpers calls `end_helpers_at_exit`."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


_ending_helpers = False


def end_helpers_at_exit() -> None:
    """In a process that starts shielded helpers (`shield`) as daemon processes (DataLoader
    workers): at its exit, kill the ones still there. multiprocessing ends daemon children at exit
    with SIGTERM, which they ignore, and then waits for them: a loader left to the garbage
    collector (an error's traceback holds it) would make the process wait for ever at exit.
    Registered once, after multiprocessing's own exit handler, so that it runs before it."""
    global _ending_helpers
    if _ending_helpers:
        return
    import atexit
    import multiprocessing.util  # noqa: F401 (its exit handler first: it runs after ours)

    atexit.register(_kill_daemon_children)
    _ending_helpers = True


def _kill_daemon_children() -> None:
    import multiprocessing

    # torch's SIGCHLD handler raises when a loader worker dies of a signal: moot at exit
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    children = [c for c in multiprocessing.active_children() if c.daemon]
    for child in children:
        child.kill()
    for child in children:
        child.join(timeout=5)
