"""The process model: how a ``detnas`` command uses the GPUs (or processes) its job is given.

Decided here, once, for every command; Snakemake rules (and users, by hand) run
``detnas launch --gpus G [--nodes N] -- COMMAND ...``:

=================  ========  ==========================================================
command            model     G GPUs (G processes on a CPU machine)
=================  ========  ==========================================================
``train ...``      ddp       G DDP processes through torchrun, one per GPU (SyncBN for
                             detection); N > 1 nodes: ``srun`` starts one torchrun per node,
                             which meet at a c10d rendezvous on the first node (G/N each)
``nats search``    ddp       the same: weight and alpha gradients averaged over the ranks,
                             SyncBN on GPU, rank 0 writes
``search ...``     workers   one process (it alone writes the state and outputs) with G
                             evaluation workers, worker i on ``cuda:i``; one node
=================  ========  ==========================================================

G <= 1 runs the plain command, in the ``detnas launch`` process itself. On a CPU machine the same
G processes run with gloo instead of NCCL, and the search's workers run on the CPU: this is how CI
rehearses the cluster.

A local Snakemake run starts each command warm: a fork of a process that has torch, torchvision,
MLflow and detnas imported (`detnas.run.warm`), not a fresh interpreter.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence

# The process model of each command (its first words); the only place that decides it.
COMMANDS = {("train",): "ddp", ("nats", "search"): "ddp", ("search",): "workers"}

RENDEZVOUS_PORT = 29400  # + the SLURM job id modulo 1000: jobs sharing a node do not collide


def process_model(argv: Sequence[str]) -> str:
    """The process model of ``detnas argv``.

    Raises:
        ValueError: the command has none (it runs as one process, without ``detnas launch``).
    """
    for words, model in COMMANDS.items():
        if tuple(argv[: len(words)]) == words:
            return model
    known = ", ".join(" ".join(w) for w in COMMANDS)
    raise ValueError(f"detnas launch: {' '.join(argv[:2])!r} has no process model (commands: "
                     f"{known}); run it directly")


def _head_node(env: Mapping[str, str]) -> str:
    """The first host of the SLURM allocation (the rendezvous host)."""
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodelist:
        raise ValueError("detnas launch: several nodes need a SLURM allocation "
                         "(SLURM_JOB_NODELIST is not set)")
    if re.fullmatch(r"[\w.-]+", nodelist):  # one host, not a range like node[01-04]
        return nodelist
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                         text=True, check=True).stdout
    return out.split()[0]


def launch_command(argv: Sequence[str], gpus: int, nodes: int = 1, rendezvous: bool = False,
                   env: Mapping[str, str] | None = None) -> list[str]:
    """The command line that runs ``detnas argv`` on ``gpus`` GPUs over ``nodes`` nodes.

    Args:
        argv: the ``detnas`` command and its arguments (``train supernet --config ...``).
        gpus: GPUs of the job in all (processes on a CPU machine); 0 or 1: one process.
        nodes: nodes of the job; more than one goes through ``srun`` and a torchrun rendezvous.
        rendezvous: go through ``srun`` and the rendezvous on one node too (a SLURM test of the
            multi-node path).
        env: the environment (SLURM variables); default ``os.environ``.

    Raises:
        ValueError: a command without a process model, or GPUs and nodes that do not fit it.
    """
    env = os.environ if env is None else env
    model = process_model(argv)
    if gpus < 0 or nodes < 1:
        raise ValueError(f"detnas launch: --gpus {gpus} --nodes {nodes}: need gpus >= 0, "
                         "nodes >= 1")
    detnas = [sys.executable, "-m", "detnas", *argv]
    if model == "workers":
        if nodes > 1:
            raise ValueError(f"detnas launch: {' '.join(argv[:2])} runs on one node "
                             f"(its workers are processes of one search), got --nodes {nodes}")
        return [*detnas, "--workers", str(max(gpus, 1))]
    if nodes == 1 and not rendezvous:
        if gpus <= 1:
            return detnas
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={gpus}", "-m", "detnas", *argv]
    if gpus % nodes:
        raise ValueError(f"detnas launch: --gpus {gpus} is not a multiple of --nodes {nodes} "
                         "(the same number of GPUs on every node)")
    job = int(env.get("SLURM_JOB_ID", "0"))
    return ["srun", f"--nodes={nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
            *([f"--cpus-per-task={env['SLURM_CPUS_ON_NODE']}"]
              if "SLURM_CPUS_ON_NODE" in env else []),
            sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}",
            f"--nproc_per_node={max(gpus // nodes, 1)}", "--rdzv_backend=c10d",
            f"--rdzv_endpoint={_head_node(env)}:{RENDEZVOUS_PORT + job % 1000}",
            f"--rdzv_id=detnas-{job}", "-m", "detnas", *argv]


def run(argv: Sequence[str], gpus: int, nodes: int = 1, rendezvous: bool = False,
        command: Callable[[list[str]], int] | None = None,
        replace: Callable[[list[str]], int] | None = None) -> int:
    """Run ``detnas argv`` under its process model: a command that runs as one process by
    ``command(argv)`` (`detnas.cli.main`) in this process, which a warm start (`detnas.run.warm`)
    keeps warm; torchrun and srun by ``replace(cmd)``, by default replacing this process
    (``exec``: the signals of a time limit reach them, `detnas.run.stop`)."""
    cmd = launch_command(argv, gpus, nodes, rendezvous)
    print("detnas launch:", " ".join(cmd), file=sys.stderr, flush=True)
    if command is not None and cmd[:3] == [sys.executable, "-m", "detnas"]:
        return command(cmd[3:])
    if replace is not None:
        return replace(cmd)
    os.execvp(cmd[0], cmd)
