"""``detnas <command>``: every pipeline stage also runs by hand.

Each command group lives in its own module with a ``register(subparsers)`` function. A bad input
prints one line naming the file, field and value, and exits with status 2 (set DETNAS_DEBUG=1 for
the traceback); a stage stopped by SIGTERM or SIGUSR1 saves its state and exits with 128 + the
signal's number (`detnas.run.stop`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from detnas.run.stop import Stopped

COMMAND_GROUPS = ("arch", "data", "train", "search", "rank", "latency", "nats", "tracking",
                  "report", "launch", "export", "warm", "config", "init")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="detnas", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_GROUPS:
        importlib.import_module(f"detnas.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``detnas argv`` (default: the command line), in a fork of the warm server where a
    local Snakemake run has one (`detnas.run.warm`)."""
    if argv is None:
        from detnas.run import warm

        code = warm.run(sys.argv[1:])
        if code is not None:
            return code
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger(__name__).debug("detnas %s (process %d)", " ".join(argv or sys.argv[1:]),
                                      os.getpid())
    try:
        return args.func(args) or 0
    except Stopped as e:  # a time limit or a preemption: the state is saved, the rerun goes on
        print(f"detnas: {e}", file=sys.stderr)
        return e.exit_code
    except (ValueError, FileNotFoundError) as e:
        if os.environ.get("DETNAS_DEBUG"):
            raise
        print(f"detnas: error: {one_line(e)}", file=sys.stderr)
        return 2


def one_line(e: BaseException) -> str:
    """The message of ``e``; of an error raised in a DataLoader worker (which torch re-raises
    with the worker's traceback in the message), the worker's own message: the same line as
    the same error in the main process."""
    text = str(e)
    if not (text.startswith("Caught ") and "Original Traceback" in text):
        return text
    last = [line for line in text.splitlines() if line.strip()][-1]
    return last.split(": ", 1)[1] if last.startswith(f"{type(e).__name__}: ") else last
