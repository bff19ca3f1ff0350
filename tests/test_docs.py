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
from doc_pages import bash_blocks

from detnas.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", REPO / "config" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Programs the pages use that are not this project's: not checked beyond their name.
OTHERS = {"dvc", "git", "mlflow", "mkdir", "cat", "cd", "cp", "ls", "scancel", "squeue", "sbatch",
          "srun", "sinfo", "pip", "export", "conda", "torchrun", "pytest", "apt-get", "sudo",
          "echo", "curl", "diff", "rm", "du", "test"}


def bash_commands(text: str) -> list[str]:
    """The command lines of the bash blocks of ``text`` (`doc_pages.bash_blocks`), here-documents
    dropped, ``a && b`` split."""
    commands = []
    for block in bash_blocks(text):
        heredoc = None
        for line in block:
            if heredoc:
                heredoc = None if line == heredoc else heredoc
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


def _check_detnas(args: list[str], written: set[str]) -> None:
    parser = build_parser()
    try:
        parsed = parser.parse_args(args)
    except SystemExit as e:
        assert e.code == 0, f"detnas {' '.join(args)}: the CLI does not take it"
        return
    for flag in ("--config", "--configfile"):
        if flag in args:
            _check_repo_file(args[args.index(flag) + 1], written)
    if args[0] == "init":  # the config it writes exists for the page's next commands
        from detnas.plan.own_data import default_name

        name = parsed.name or default_name(parsed.train_images)
        written.add(str(parsed.out or Path("config") / f"{name}.yaml"))


def _check_repo_file(path: str, written: set[str] = frozenset()) -> None:
    """A path into the repository's own folders must exist, or be written by a command before it
    on the page (others are the user's or outputs)."""
    if path in written:
        return
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


def _check_snakemake(args: list[str], written: set[str] = frozenset()) -> None:
    for i, word in enumerate(args):
        if word == "--profile" and not args[i + 1].startswith("profiles/site"):
            assert (REPO / args[i + 1]).is_dir(), f"--profile {args[i + 1]}: no such profile"
        if word == "--configfile":
            _check_repo_file(args[i + 1], written)


def check(command: str, written: set[str] | None = None) -> None:
    """Check one command line; ``written``: the configs the page's earlier commands wrote."""
    written = set() if written is None else written
    words = _words(command)
    program, args = words[0], words[1:]
    if program == "detnas":
        _check_detnas(args, written)
    elif program in ("python", "python3"):
        if args[:2] == ["-m", "detnas"]:
            _check_detnas(args[2:], written)
        elif args[:1] != ["-m"] and args[:1] != ["-c"]:
            _check_script(args)
    elif program == "make":
        _check_make(words)
    elif program == "snakemake":
        _check_snakemake(args, written)
    elif program.startswith(("scripts/", "benchmarks/")):
        _check_script(words)
    else:
        assert program in OTHERS, f"{program}: a program the docs test does not know"


ALL = {page.relative_to(REPO).as_posix(): bash_commands(page.read_text()) for page in PAGES
       if page.exists()}


@pytest.mark.parametrize("page", sorted(ALL))
def test_every_command_of_the_page_names_what_exists(page):
    written: set[str] = set()
    for command in ALL[page]:
        check(command, written)


def test_the_check_sees_drift():
    """What a page gets wrong fails the check."""
    for wrong in ("detnas train supernet --task detection --out o --no-such-option",
                  "detnas no-such-command", "python scripts/no_such_script.py",
                  "make no-such-target", "snakemake --profile profiles/no-such",
                  "detnas report --config config/no.yaml --out r",
                  "python scripts/verdict_stability.py --no-such-option", "unknown-program x"):
        with pytest.raises(AssertionError):
            check(wrong)
    assert sum(map(len, ALL.values())) > 40  # the pages' commands were found
    check("snakemake --configfile config/mine.yaml", {"config/mine.yaml"})
    assert bash_commands("```bash\na \\\n  b  # c\ncat > f <<'Y'\nk: v\nY\nd && e\n```") == [
        "a    b", "cat > f", "d", "e"]


def test_the_workflow_catalog_file_names_a_profile_that_exists():
    import yaml

    usage = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    assert usage["report"] is True and "software-stack-deployment" in usage
    _check_snakemake(usage["mandatory-flags"]["flags"].split())
    assert (REPO / "config" / "README.md").exists() and (REPO / "workflow" / "Snakefile").exists()
