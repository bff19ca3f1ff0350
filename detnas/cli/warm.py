"""``detnas warm serve ADDRESS --parent PID``: the warm server of a local Snakemake run
(`detnas.run.warm`; started by the Snakefile's onstart handler, not by hand)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("warm", help="the warm server of a local Snakemake run (started by it)")
    cmds = p.add_subparsers(dest="warm_command", required=True, metavar="WARM_COMMAND")
    serve = cmds.add_parser("serve", help="import torch, torchvision, MLflow and detnas once and "
                            "run each detnas command of the run in a fork")
    serve.add_argument("address", help="the abstract Unix socket name to serve")
    serve.add_argument("--parent", type=int, required=True,
                       help="the process (Snakemake) whose end stops the server")
    serve.set_defaults(func=_serve)


def _serve(args) -> int:
    from detnas.cli import main
    from detnas.run import warm

    warm.serve(args.address, args.parent, main)
    return 0
