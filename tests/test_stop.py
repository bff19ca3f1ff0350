"""A stop signal (SLURM's SIGTERM before a time limit or on preemption, or SIGUSR1): the stage saves
its state at the step it is in, its MLflow run ends KILLED, the process exits with 128 + the
signal, and the rerun ends with what an uninterrupted run ends with (`detnas.run.stop`)."""

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from search_fakes import noisy_fitness

from detnas.io import load_json
from detnas.plan import config
from detnas.run import stop
from detnas.search import stage
from detnas.search.evolution import evaluation_budget, run_search, serial

STEPS = 60
NEVER = ["--set", "supernet_pretrain.checkpoint_every=1000", "--set",
         "supernet_pretrain.log_every=1"]  # no periodic checkpoint: resume.pt is the stop's


def _train(cfg_path: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "detnas", *extra, "train", "supernet", "--task",
            "classification", "--config", str(cfg_path), *NEVER, "--out", str(out)]


def _wait_for(log: Path, pattern: str, proc: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not (log.exists() and re.search(pattern, log.read_text())):
        assert proc.poll() is None, log.read_text()[-2000:]
        assert time.monotonic() < deadline, f"no {pattern!r} in {log}"
        time.sleep(0.01)


def _weights(path: Path) -> dict:
    return torch.load(path, weights_only=True)["model"]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k, v in wa.items():
        torch.testing.assert_close(wb[k], v, rtol=0, atol=0, msg=k)


def _status(db: Path) -> list[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return [r.info.status for r in sorted(runs, key=lambda r: r.info.start_time)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, classification_study_in):
    """The study of the signal tests and its uninterrupted run (one for both signals)."""
    root = tmp_path_factory.mktemp("uninterrupted")
    cfg_path, env = classification_study_in(root, num_train=48, steps=STEPS)
    subprocess.run(_train(cfg_path, root / "full"), env=env, check=True, timeout=300,
                   capture_output=True)
    return cfg_path, env, root / "full" / "checkpoint.pt"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=["TERM", "USR1"])
def test_a_stop_signal_saves_the_step_and_the_rerun_ends_the_same(tmp_path, uninterrupted, sig):
    cfg_path, env, full = uninterrupted
    db = tmp_path / "mlflow.db"
    tracked = ["--set", "tracking.enabled=true", "--set", f"tracking.uri=sqlite:///{db}"]

    out, log = tmp_path / "stopped", tmp_path / "stopped.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(_train(cfg_path, out) + tracked, env=env, stderr=err,
                                stdout=subprocess.DEVNULL)
        _wait_for(log, rf"step 1\d/{STEPS} ", proc)  # mid-run: no checkpoint is due before 60
        proc.send_signal(sig)
        assert proc.wait(timeout=120) == 128 + sig
    text = log.read_text()
    stopped_at = int(re.search(rf"stopped by {sig.name} at step (\d+) of {STEPS}", text)[1])
    assert 10 <= stopped_at < STEPS
    assert torch.load(out / "resume.pt", weights_only=True)["step"] == stopped_at
    assert not (out / "checkpoint.pt").exists()
    assert _status(db) == ["KILLED"]

    subprocess.run(_train(cfg_path, out) + tracked, env=env, check=True, timeout=300,
                   capture_output=True)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == STEPS
    _assert_same_weights(full, out / "checkpoint.pt")
    assert not (out / "resume.pt").exists()
    assert _status(db) == ["KILLED", "FINISHED"]


def _rank_pid(parent: int, rank: int) -> int | None:
    """The pid of torchrun ``parent``'s worker of ``rank``."""
    for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        with open(f"/proc/{child}/environ", "rb") as f:
            if f"RANK={rank}".encode() in f.read().split(b"\0"):
                return int(child)
    return None


@pytest.mark.slow
def test_under_torchrun_the_ranks_stop_at_the_same_step(tmp_path, classification_study):
    """SIGTERM to rank 1 alone: rank 0 saves the step rank 1 stopped at, and the rerun of the
    2-process run ends with the weights of an uninterrupted one."""
    cfg_path, env = classification_study(num_train=48, steps=STEPS)
    launch = ["launch", "--gpus", "2", "--"]

    def command(out):
        return [sys.executable, "-m", "detnas", *launch, *_train(cfg_path, out)[3:]]

    subprocess.run(command(tmp_path / "full"), env=env, check=True, timeout=300,
                   capture_output=True)
    out, log = tmp_path / "stopped", tmp_path / "stopped.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(command(out), env=env, stderr=err, stdout=subprocess.DEVNULL)
        _wait_for(log, rf"step 1\d/{STEPS} ", proc)
        rank1 = _rank_pid(proc.pid, 1)  # detnas launch exec'd torchrun: the same pid
        assert rank1 is not None
        os.kill(rank1, signal.SIGTERM)
        assert proc.wait(timeout=120) != 0
    stopped_at = int(re.search(r"stopped by SIGTERM at step (\d+)", log.read_text())[1])
    assert torch.load(out / "resume.pt", weights_only=True)["step"] == stopped_at < STEPS
    subprocess.run(command(out), env=env, check=True, timeout=300, capture_output=True)
    _assert_same_weights(tmp_path / "full" / "checkpoint.pt", out / "checkpoint.pt")


class _SignalAt:
    """``noisy_fitness`` that sends this process ``sig`` during evaluation ``at``."""

    def __init__(self, at: int, sig: int):
        self.at, self.sig, self.calls = at, sig, 0

    def __call__(self, arch):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), self.sig)
        return noisy_fitness(arch)


def test_a_search_stops_after_the_evaluation_in_flight_and_resumes(tmp_path):
    cfg = config.load(None, ["search.population=6", "search.topk=2", "search.generations=3",
                             "search.mutations=2", "search.crossovers=2",
                             "tracking.enabled=false"])
    handler = signal.getsignal(signal.SIGTERM)
    reference = run_search("evolution", cfg.space, cfg.search, serial(noisy_fitness),
                           random.Random(cfg.run_seed))
    fitness = _SignalAt(8, signal.SIGTERM)  # in generation 1
    with pytest.raises(stop.Stopped, match="stopped by SIGTERM after 8 evaluations") as e:
        stage.search_stage(cfg, "evolution", tmp_path, factory=lambda: fitness)
    assert e.value.exit_code == 143
    assert len(load_json(tmp_path / "state.json")["history"]) == 8
    assert not (tmp_path / "metrics.json").exists()
    assert signal.getsignal(signal.SIGTERM) is handler  # the loop's handler is gone

    stage.search_stage(cfg, "evolution", tmp_path, factory=lambda: noisy_fitness)
    state = load_json(tmp_path / "state.json")
    assert state["history"] == reference.history
    assert len(state["history"]) == evaluation_budget(cfg.search)


@pytest.mark.slow
def test_a_search_with_workers_stops_without_waiting_for_them(tmp_path):
    """The workers ignore the signal (SLURM sends it to every process of the job); the search's
    process saves its state, kills them and ends at once, not after the evaluations in flight."""
    import functools
    import multiprocessing
    import threading

    from search_fakes import Slow

    cfg = config.load(None, ["search.population=6", "search.topk=2", "search.generations=3",
                             "search.mutations=2", "search.crossovers=2",
                             "tracking.enabled=false"])
    timer = threading.Timer(4.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    start = time.monotonic()
    with pytest.raises(stop.Stopped, match="SIGTERM after"):
        stage.search_stage(cfg, "evolution", tmp_path, workers=2,
                           factory=functools.partial(Slow, str(tmp_path / "calls.txt"), 1.5))
    assert time.monotonic() - start < 4.0 + 1.5 + 1.0  # at most the evaluation it was waiting on
    assert multiprocessing.active_children() == []
    evaluated = len(load_json(tmp_path / "state.json")["history"])
    assert 2 <= evaluated < evaluation_budget(cfg.search)


LINGERING_LOADER = """
import sys, torch
from detnas.run import engine
from detnas.plan.config import TrainConfig
from detnas.run.engine import Dist
data = torch.utils.data.TensorDataset(torch.arange(64.0))
loader = engine.step_loader(data, TrainConfig(steps=8, batch_size=4), 0, 0,
                            Dist(), None, num_workers=2)
kept = iter(loader)  # as an error's traceback keeps a loader: never shut down before exit
next(kept)
print("exiting", flush=True)
"""


def test_a_process_with_shielded_loader_workers_left_running_still_exits():
    """The workers ignore SIGTERM (`stop.shield`), multiprocessing ends daemon children at exit
    with SIGTERM and waits: `stop.end_helpers_at_exit` kills them first."""
    proc = subprocess.run([sys.executable, "-c", LINGERING_LOADER], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0 and proc.stdout.strip() == "exiting", proc.stderr[-2000:]
