"""``detnas launch``: run a command with the process model of its stage (`detnas.run.launch`)."""

from __future__ import annotations

import argparse

from detnas.run.launch import __doc__ as MODEL_DOC


def register(sub) -> None:
    p = sub.add_parser(
        "launch", help="run a stage on G GPUs (torchrun / search workers / srun)",
        description="Run `detnas COMMAND ...` with the GPUs of the job, the way its stage uses "
                    "them.", epilog=MODEL_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpus", type=int, required=True,
                   help="GPUs of the job in all (processes on a CPU machine); 0/1: one process")
    p.add_argument("--nodes", type=int, default=1, help="nodes of the job (SLURM)")
    p.add_argument("--rendezvous", action="store_true",
                   help="go through srun and a torchrun rendezvous even on one node")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND ...",
                   help="the detnas command to run, e.g. -- train supernet --config ...")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from detnas.cli import main
    from detnas.run import warm
    from detnas.run.launch import run

    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise ValueError("detnas launch: no command given (detnas launch --gpus 8 -- train ...)")
    return run(argv, args.gpus, args.nodes, args.rendezvous, command=main,
               replace=warm.replace_process)
