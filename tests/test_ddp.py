"""The multi-process path (torchrun + DDP, gloo on CPU): real 2-process runs through
`detnas launch`, on one machine and through srun on the local SLURM cluster."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from detnas.nets.models import build_model, load_model

pytestmark = pytest.mark.slow


def _launch(cfg_path, out, *launch_args):
    return [sys.executable, "-m", "detnas", "launch", "--gpus", "2", *launch_args, "--",
            "train", "supernet", "--task", "classification", "--config", str(cfg_path),
            "--out", str(out)]


def _check_trained(out, log: str) -> None:
    assert "weights identical on the 2 ranks" in log, log[-3000:]
    model, ckpt = load_model(out / "checkpoint.pt")
    assert ckpt["step"] == 3
    torch.manual_seed(0)  # the seeded initialisation of the run
    initial = build_model("classification", {"kind": "supernet", "space": "test"}, 3).state_dict()
    moved = [k for k, v in model.state_dict().items()
             if v.is_floating_point() and not torch.equal(v, initial[k])]
    assert any(k.startswith("fc.") for k in moved) and any(".0.main." in k for k in moved)
    cost = json.loads((out / "metrics.json").read_text())["cost"]  # rank 0's ledger record
    assert cost["stage"] == "supernet-pretrain" and cost["wall_s"] > 0
    assert cost["gpus"] == cost["gpu_hours"] == 0  # 2 CPU processes hold no GPU


def test_two_process_supernet_training_keeps_the_ranks_identical(tmp_path, classification_study):
    cfg_path, env = classification_study(num_train=24, steps=3)
    run = subprocess.run(_launch(cfg_path, tmp_path / "out"), env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "torch.distributed.run --standalone --nproc_per_node=2" in run.stderr
    _check_trained(tmp_path / "out", run.stderr)


def test_ranks_that_drift_apart_are_caught(tmp_path):
    script = tmp_path / "drift.py"
    script.write_text(textwrap.dedent("""
        import torch
        from detnas.run.engine import check_replicas, setup_distributed
        ddp = setup_distributed("cpu")
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 2))
        check_replicas(model, ddp)  # identical: passes
        if ddp.rank == 1:
            with torch.no_grad():
                model[1].bias[0] += 1e-7
        check_replicas(model, ddp)
    """))
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=2", str(script)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode != 0
    assert "different weights: 1.bias differs from rank 0's" in run.stderr


@pytest.mark.workflow
def test_the_multi_node_path_runs_through_srun_on_slurm(tmp_path, classification_study,
                                                       slurm_partition):
    """1 node x 2 processes through srun and a torchrun rendezvous, as N nodes would run."""
    cfg_path, env = classification_study(num_train=24, steps=3)
    cmd = " ".join(_launch(cfg_path, tmp_path / "out", "--nodes", "1", "--rendezvous"))
    log = tmp_path / "slurm.log"
    run = subprocess.run(["sbatch", "--wait", "--nodes=1", "--ntasks=1", "--cpus-per-task=2",
                          f"--partition={slurm_partition}", f"--output={log}",
                          f"--chdir={tmp_path}", "--wrap", cmd],
                         env=env, capture_output=True, text=True, timeout=600)
    text = log.read_text() if log.exists() else ""
    assert run.returncode == 0, run.stderr + text[-3000:]
    assert "detnas launch: srun --nodes=1 --ntasks-per-node=1" in text
    assert "--rdzv_backend=c10d" in text and "--standalone" not in text
    _check_trained(tmp_path / "out", text)
