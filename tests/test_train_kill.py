"""A training killed with SIGKILL and restarted ends with the weights of an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

pytestmark = pytest.mark.slow


def _command(cfg_path, out):
    return [sys.executable, "-m", "detnas", "train", "supernet", "--task", "classification",
            "--config", str(cfg_path), "--out", str(out)]


def test_sigkill_then_restart_reaches_the_same_weights(tmp_path, classification_study):
    cfg_path, env = classification_study(num_train=48, steps=40)

    subprocess.run(_command(cfg_path, tmp_path / "full"), env=env, check=True, timeout=300,
                   capture_output=True)

    out = tmp_path / "killed"
    proc = subprocess.Popen(_command(cfg_path, out), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (out / "resume.pt").exists():  # the first checkpoint is on disk
        assert proc.poll() is None and time.monotonic() < deadline, "ended before a checkpoint"
        time.sleep(0.01)
    time.sleep(0.05)  # somewhere in the following steps (38 left: about 0.5 s)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "checkpoint.pt").exists(), "the run finished before the kill"
    killed_at = torch.load(out / "resume.pt", weights_only=True)["step"]
    assert 2 <= killed_at < 40

    subprocess.run(_command(cfg_path, out), env=env, check=True, timeout=300,
                   capture_output=True)
    full = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    resumed = torch.load(out / "checkpoint.pt", weights_only=True)
    assert resumed["step"] == full["step"] == 40
    for k, v in full["model"].items():
        torch.testing.assert_close(resumed["model"][k], v, rtol=0, atol=0, msg=k)
    assert not (out / "resume.pt").exists()
