"""``detnas <command>``: every pipeline stage also runs by hand.

Each command group lives in its own module with a ``register(subparsers)`` function. A bad input
prints one line naming the file, field and value, and exits with status 2 (set DETNAS_DEBUG=1 for
the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

COMMAND_GROUPS = ("arch", "data", "train", "search", "rank", "latency", "nats", "tracking",
                  "report", "launch", "export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="detnas", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_GROUPS:
        importlib.import_module(f"detnas.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return args.func(args) or 0
    except (ValueError, FileNotFoundError) as e:
        if os.environ.get("DETNAS_DEBUG"):
            raise
        print(f"detnas: error: {e}", file=sys.stderr)
        return 2
