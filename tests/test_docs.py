"""Every command in a bash block of the README, of `docs/` and of `config/README.md` names what
exists: a `detnas` command line parses with the CLI's own parser, a script or benchmark exists
and takes the options shown, a make target is in the Makefile, a profile or config file is in
the repository. A page cannot drift from the code unnoticed. (The commands a test runs as written:
docs/dvc-mlflow.md in tests/workflow/test_dvc.py, docs/export.md in tests/test_export.py.)"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from detnas.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", REPO / "config" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Programs the pages use that are not this project's: not checked beyond their name.
OTHERS = {"dvc", "git", "mlflow", "mkdir", "cat", "cd", "cp", "ls", "scancel", "squeue", "sbatch",
          "srun", "sinfo", "pip", "export", "conda", "torchrun", "pytest", "apt-get", "sudo",
          "echo", "curl", "diff", "rm", "du", "test"}


def bash_commands(text: str) -> list[str]:
    """The command lines of the bash blocks of ``text``: continuation lines joined, comments,
    here-documents and blank lines dropped, ``a && b`` split."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        block = block.replace("\\\n", " ")
        heredoc = None
        for line in block.splitlines():
            if heredoc:
                heredoc = None if line.strip() == heredoc else heredoc
                continue
            line = line.split("  #")[0].strip()
            if not line or line.startswith("#"):
                continue
            if m := re.search(r"<<-?'?(\w+)'?", line):
                heredoc = m.group(1)
                line = line[:m.start()].strip()
            commands += [part.strip() for part in re.split(r"&&|;|\|", line) if part.strip()]
    return commands


def _words(command: str) -> list[str]:
    words = shlex.split(command)
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):  # VAR=value before the program
        words = words[1:]
    return words


def _check_detnas(args: list[str]) -> None:
    parser = build_parser()
    try:
        parser.parse_args(args)
    except SystemExit as e:
        assert e.code == 0, f"detnas {' '.join(args)}: the CLI does not take it"
    for flag in ("--config", "--configfile"):
        if flag in args:
            _check_repo_file(args[args.index(flag) + 1])


def _check_repo_file(path: str) -> None:
    """A path into the repository's own folders must exist (others are the user's or outputs)."""
    if path.split("/")[0] in ("config", "profiles", "scripts", "benchmarks", "workflow", "docs"):
        assert (REPO / path).exists(), f"{path}: no such file in the repository"


def _check_script(args: list[str]) -> None:
    script = REPO / args[0]
    assert script.exists(), f"{args[0]}: no such script"
    text = script.read_text()
    for option in (a.split("=")[0] for a in args[1:] if a.startswith("--")):
        assert option in text, f"{args[0]}: takes no {option}"


def _check_make(args: list[str]) -> None:
    makefile = (REPO / "Makefile").read_text()
    for target in (a for a in args[1:] if "=" not in a and not a.startswith("-")):
        assert re.search(rf"(?m)^{re.escape(target)}:", makefile), f"make {target}: no target"


def _check_snakemake(args: list[str]) -> None:
    for i, word in enumerate(args):
        if word == "--profile" and not args[i + 1].startswith("profiles/site"):
            assert (REPO / args[i + 1]).is_dir(), f"--profile {args[i + 1]}: no such profile"
        if word == "--configfile":
            _check_repo_file(args[i + 1])


def check(command: str) -> None:
    words = _words(command)
    program, args = words[0], words[1:]
    if program == "detnas":
        _check_detnas(args)
    elif program in ("python", "python3"):
        if args[:2] == ["-m", "detnas"]:
            _check_detnas(args[2:])
        elif args[:1] != ["-m"] and args[:1] != ["-c"]:
            _check_script(args)
    elif program == "make":
        _check_make(words)
    elif program == "snakemake":
        _check_snakemake(args)
    elif program.startswith(("scripts/", "benchmarks/")):
        _check_script(words)
    else:
        assert program in OTHERS, f"{program}: a program the docs test does not know"


ALL = [(page.relative_to(REPO).as_posix(), c) for page in PAGES if page.exists()
       for c in bash_commands(page.read_text())]


@pytest.mark.parametrize(("page", "command"), ALL, ids=[f"{p}:{c[:50]}" for p, c in ALL])
def test_the_command_names_what_exists(page, command):
    check(command)


def test_the_check_sees_drift():
    """What a page gets wrong fails the check."""
    for wrong in ("detnas train supernet --task detection --out o --no-such-option",
                  "detnas no-such-command", "python scripts/no_such_script.py",
                  "make no-such-target", "snakemake --profile profiles/no-such",
                  "detnas report --config config/no.yaml --out r",
                  "python scripts/verdict_stability.py --no-such-option", "unknown-program x"):
        with pytest.raises(AssertionError):
            check(wrong)
    assert len(ALL) > 40  # the pages' commands were found
    assert bash_commands("```bash\na \\\n  b  # c\ncat > f <<'Y'\nk: v\nY\nd && e\n```") == [
        "a    b", "cat > f", "d", "e"]


def test_the_workflow_catalog_file_names_a_profile_that_exists():
    import yaml

    usage = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    assert usage["report"] is True and "software-stack-deployment" in usage
    _check_snakemake(usage["mandatory-flags"]["flags"].split())
    assert (REPO / "config" / "README.md").exists() and (REPO / "workflow" / "Snakefile").exists()
