"""Shared test setup: marks (slow, workflow, gpu), the repository root, the artifacts folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# One thread for every test, set once here: results compared with one-thread subprocesses are
# bit-identical, and the test machines have 2 cores (more threads only contend).
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_process_or_thread_outlives_its_test():
    """A non-daemon child process or thread that a test leaves behind makes pytest hang at exit
    (multiprocessing and threading wait for them): it fails the test that left it, naming it.
    (Daemon children, a DataLoader's workers kept by an error's traceback, are killed at exit by
    `detnas.run.stop.end_helpers_at_exit`: tests/test_stop.py.)"""
    import concurrent.futures.thread
    import multiprocessing
    import threading

    before = {t.ident for t in threading.enumerate()}
    yield
    # A thread pool's idle workers (MLflow's artifact uploads) end at exit: concurrent.futures
    # wakes and joins them. Any other non-daemon thread is waited for.
    pooled = getattr(concurrent.futures.thread, "_threads_queues", {})
    threads = [t for t in threading.enumerate()
               if not t.daemon and t.ident not in before and t.is_alive() and t not in pooled]
    children = [c for c in multiprocessing.active_children() if not c.daemon]
    for t in threads:  # a timer or a helper may be ending: give it a moment
        t.join(timeout=5)
    for child in children:
        child.join(timeout=5)
    threads = [t for t in threads if t.is_alive()]
    children = [c for c in children if c.is_alive()]
    for child in children:
        child.kill()
    assert not children and not threads, (
        f"left behind: processes {[c.name for c in children]} (killed), "
        f"non-daemon threads {[t.name for t in threads]}")


def pytest_sessionfinish(session, exitstatus):
    """If the interpreter has not ended a minute after the last test (something waits at exit),
    print every thread's stack to stderr and end with an error, rather than hang CI."""
    import faulthandler

    faulthandler.dump_traceback_later(60, exit=True)


def pytest_collection_modifyitems(config, items):
    """Skip `gpu` tests where there is no CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def classification_study(tmp_path: Path):
    """``make(num_train, steps)``: a tiny synthetic classification set, a study config pre-training
    the `test` supernet on it for ``steps`` steps (checkpoint every 2), and the environment for a
    one-thread subprocess."""
    return lambda num_train, steps: _classification_study(tmp_path, num_train, steps)


@pytest.fixture(scope="session")
def classification_study_in():
    """``make(folder, num_train, steps)``: `classification_study` in a folder of the caller's (a
    module's fixture shares one)."""
    return _classification_study


def _classification_study(tmp_path: Path, num_train: int, steps: int) -> tuple[Path, dict]:
    import os

    import yaml

    from detnas.data import make_synthetic_classification

    make_synthetic_classification(tmp_path / "cls", seed=0, num_classes=3, num_train=num_train,
                                  num_val=6, image_size=32)
    cfg = {"space": "test", "device": "cpu", "results": str(tmp_path),
           "classification": {"root": str(tmp_path / "cls"), "image_size": 32,
                              "search_images": 6},
           "supernet_pretrain": {"steps": steps, "batch_size": 8, "checkpoint_every": 2},
           "tracking": {"enabled": False}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """`test-artifacts/`: files a test keeps for people to look at (screenshots, logs)."""
    path = REPO / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def slurm_partition() -> str:
    """The default partition of a reachable SLURM cluster (scripts/ci/start_slurm.sh starts a
    one-node one); skips the test where `sinfo` does not answer."""
    import shutil
    import subprocess

    if shutil.which("sinfo") is not None:
        out = subprocess.run(["sinfo", "-h", "-o", "%P %t"], capture_output=True, text=True,
                             timeout=30).stdout
        for name, state in map(str.split, out.splitlines()):
            if name.endswith("*") and state in ("idle", "mix", "alloc"):
                return name.rstrip("*")
    pytest.skip("no SLURM cluster (scripts/ci/start_slurm.sh)")
