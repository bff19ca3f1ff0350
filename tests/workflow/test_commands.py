"""Every `detnas` command the rules run is one the real CLI accepts (flags, choices, arguments).

The DAG tests run the rules against tests/workflow/stub_detnas.py, which parses with the same
parser; this checks every job of the default and the test DAG from a dry run alone.
"""

from __future__ import annotations

import re
import shlex

import pytest

from detnas.cli import build_parser

pytestmark = pytest.mark.workflow


def detnas_argv(command: str) -> list[str]:
    """The `detnas` arguments of a rule's shell command (after `detnas launch ... --`, if any);
    environment assignments before it and redirections after it dropped."""
    words = shlex.split(command)
    argv = words[words.index("detnas") + 1 :]
    return argv[: next((i for i, w in enumerate(argv) if w.startswith((">", "2>"))), len(argv))]


def parse_or_fail(parser, argv: list[str], command: str) -> None:
    try:
        parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"the real `detnas` CLI rejects a rule's command:\n{command}")


@pytest.mark.parametrize("configfile", ["config/config.yaml", "config/test.yaml"])
def test_every_rule_command_parses_with_the_real_cli(study, configfile):
    proc = study.snakemake("-n", "-p", "--configfile", configfile)
    commands = re.findall(r"^Shell command: (.*\bdetnas\b.*)$", proc.stdout, re.MULTILINE)
    table = proc.stdout.split("Job stats:", 1)[1]  # (a dry run prints it twice)
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", table, re.MULTILINE))
    jobs = sum(int(n) for rule, n in jobs.items() if rule not in ("all", "total"))
    assert len(commands) == jobs > 20  # one `detnas` command per job
    parser = build_parser()
    for command in commands:
        argv = detnas_argv(command)
        parse_or_fail(parser, argv, command)
        if argv[0] == "launch":
            parse_or_fail(parser, argv[argv.index("--") + 1 :], command)


def test_the_cli_parser_loads_without_torch():
    """The stub (a `detnas` per job of the DAG tests) and `detnas --help` stay fast."""
    import subprocess
    import sys

    code = "import sys; from detnas.cli import build_parser; build_parser(); print(sorted(" \
           "m for m in ('torch', 'torchvision') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
