"""The process model (`detnas.run.launch`): the command each stage runs under for G GPUs, N
nodes."""

import sys

import pytest

from detnas.plan.config import load
from detnas.run.launch import launch_command, process_model
from detnas.search.stage import resolve_workers, search_stage

PY = [sys.executable, "-m"]
SLURM = {"SLURM_JOB_ID": "4321", "SLURM_JOB_NODELIST": "gpu07", "SLURM_CPUS_ON_NODE": "48"}


@pytest.mark.parametrize("argv, model", [
    (["train", "supernet", "--task", "detection"], "ddp"),
    (["train", "classifier"], "ddp"),
    (["train", "detector"], "ddp"),
    (["nats", "search"], "ddp"),
    (["search", "evolution"], "workers"),
    (["search", "random"], "workers"),
])
def test_every_gpu_command_has_one_process_model(argv, model):
    assert process_model(argv) == model


def test_commands_without_gpus_have_no_process_model():
    for argv in (["nats", "derive"], ["report"], ["data", "split"]):
        with pytest.raises(ValueError, match="no process model"):
            process_model(argv)


def test_training_runs_under_torchrun_on_one_node():
    argv = ["train", "supernet", "--out", "o"]
    assert launch_command(argv, 0) == [*PY, "detnas", *argv]
    assert launch_command(argv, 1) == [*PY, "detnas", *argv]
    assert launch_command(argv, 8) == [*PY, "torch.distributed.run", "--standalone",
                                       "--nproc_per_node=8", "-m", "detnas", *argv]


def test_search_is_one_process_with_a_worker_per_gpu():
    argv = ["search", "evolution", "--out", "o"]
    assert launch_command(argv, 8) == [*PY, "detnas", *argv, "--workers", "8"]
    assert launch_command(argv, 0) == [*PY, "detnas", *argv, "--workers", "1"]
    with pytest.raises(ValueError, match="one node"):
        launch_command(argv, 16, nodes=2, env=SLURM)


def test_several_nodes_go_through_srun_and_a_rendezvous():
    argv = ["train", "supernet"]
    cmd = launch_command(argv, 16, nodes=2, env=SLURM)
    assert cmd[:5] == ["srun", "--nodes=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
                       "--cpus-per-task=48"]
    torchrun = cmd[5:]
    assert torchrun[:3] == [*PY, "torch.distributed.run"]
    assert "--standalone" not in torchrun
    assert {"--nnodes=2", "--nproc_per_node=8", "--rdzv_backend=c10d",
            "--rdzv_endpoint=gpu07:29721", "--rdzv_id=detnas-4321"} <= set(torchrun)
    assert torchrun[-3:] == ["detnas", *argv]
    one_node = launch_command(argv, 2, nodes=1, rendezvous=True, env=SLURM)
    assert one_node[0] == "srun" and "--nnodes=1" in one_node and "--nproc_per_node=2" in one_node
    with pytest.raises(ValueError, match="multiple of --nodes"):
        launch_command(argv, 12, nodes=5, env=SLURM)
    with pytest.raises(ValueError, match="SLURM allocation"):
        launch_command(argv, 16, nodes=2, env={})


def test_the_search_refuses_to_run_as_torchrun_copies(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = load(None, ["device=cpu", "tracking.enabled=false"])
    with pytest.raises(ValueError, match="not under torchrun"):
        search_stage(cfg, "evolution", tmp_path, factory=lambda: None)
    assert not any(tmp_path.iterdir())


def test_workers_zero_means_one_per_gpu():
    assert resolve_workers(3, "cpu") == 3
    assert resolve_workers(0, "cpu") == 1
    with pytest.raises(ValueError, match="search.workers"):
        resolve_workers(-1, "cpu")
