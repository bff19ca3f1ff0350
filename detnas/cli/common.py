"""Arguments and helpers shared by command groups."""

from __future__ import annotations

import argparse
import json
import sys

from detnas.plan import config
from detnas.provenance import pin_cpu_isa


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and repeatable ``--set key=value`` overrides."""
    parser.add_argument("--config", default=None, help="study config YAML (default: built-in)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config field, e.g. --set search.generations=5 (repeatable)",
    )


def load_config(args: argparse.Namespace) -> config.StudyConfig:
    """The study config of a command, with the CPU numerics pinned as it says (``cpu_isa``)."""
    cfg = config.load(args.config, args.overrides)
    pin_cpu_isa(cfg.cpu_isa)
    return cfg


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


def load_spec(arch: str, cfg: config.StudyConfig) -> dict:
    """A backbone spec from an ``arch.json`` file or a registered arch name."""
    from detnas.nets.backbones import read_spec

    return read_spec(arch)
