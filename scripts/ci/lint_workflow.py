"""`snakemake --lint` for CI: fails on any lint but the accepted ones below (`make test` runs it).

    python scripts/ci/lint_workflow.py [SNAKEMAKE ARGS...]

Snakemake 9 prints lints as text only (exit status 1 when there are any), so they are read from
its output: one ``    * TITLE`` line per lint under ``Lints for ...``. The workflow is loaded with
a scratch results folder: loading writes ``<results>/config.yaml``, which must not replace that
of a study in ./results.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile

ACCEPTED = {
    # Every rule runs the one `detnas` package, installed once (pyproject.toml; environment.yml
    # for conda users installs this checkout with `pip install -e .`, which a per-rule Snakemake
    # environment, built in .snakemake/conda, cannot do). See workflow/Snakefile.
    "Specify a conda environment or container for each rule.",
}


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "--config",
                               f"results={tmp}/results", *argv], capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0 and "Lints for" not in output:
        print(output, file=sys.stderr)  # not a lint: the workflow did not even load
        return proc.returncode
    lints = re.findall(r"^Lints for (.*):\n((?:    .*\n?)*)", output, re.MULTILINE)
    bad = [(where, title) for where, block in lints
           for title in re.findall(r"^    \* (.*?):?$", block, re.MULTILINE)
           if title not in ACCEPTED]
    for where, title in bad:
        print(f"{where}: {title}", file=sys.stderr)
    accepted = sum(len(re.findall(r"^    \* ", b, re.MULTILINE)) for _, b in lints) - len(bad)
    print(f"snakemake --lint: {len(bad)} lints, {accepted} accepted "
          f"({', '.join(sorted(ACCEPTED))})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
