"""The multi-process path (torchrun + DDP, gloo on CPU): a real 2-process run of a stage."""

import subprocess
import sys

import pytest
import torch

from detnas.models import build_model, load_model

pytestmark = pytest.mark.slow


def test_two_process_supernet_training_matches_across_ranks(tmp_path, classification_study):
    cfg_path, env = classification_study(num_train=24, steps=3)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "detnas", "train", "supernet", "--task", "classification",
           "--config", str(cfg_path), "--out", str(tmp_path / "out")]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    model, ckpt = load_model(tmp_path / "out" / "checkpoint.pt")
    assert ckpt["step"] == 3
    torch.manual_seed(0)  # the seeded initialisation of the run
    initial = build_model("classification", {"kind": "supernet", "space": "test"}, 3).state_dict()
    moved = [k for k, v in model.state_dict().items()
             if v.is_floating_point() and not torch.equal(v, initial[k])]
    assert any(k.startswith("fc.") for k in moved) and any(".0.main." in k for k in moved)
    assert (tmp_path / "out" / "metrics.json").exists()
