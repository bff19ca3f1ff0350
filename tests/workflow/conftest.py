"""Fixtures to run the real Snakefile in a scratch copy of the repository's recipe."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STUB = Path(__file__).with_name("stub_detnas.py")


class Study:
    """A scratch folder with workflow/, config/ and profiles/ copied in; runs snakemake there."""

    def __init__(self, root: Path, env: dict[str, str]):
        self.root, self.env = root, env

    def snakemake(self, *args: str, check: bool = True, timeout: float = 600,
                  **kwargs) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "snakemake", "--nolock", *args]
        proc = subprocess.run(cmd, cwd=self.root, env=self.env, capture_output=True, text=True,
                              timeout=timeout, **kwargs)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def planned(self, *args: str) -> dict[str, int]:
        """Rule name -> number of jobs a dry run would execute ({} when nothing to do)."""
        out = self.snakemake("-n", *args).stdout
        if "Nothing to be done" in out:
            return {}
        table = out.split("Job stats:", 1)[1]
        counts = dict(re.findall(r"^(\w+)\s+(\d+)$", table, re.MULTILINE))
        counts.pop("total", None)
        return {rule: int(n) for rule, n in counts.items()}

    def edit_config(self, name: str, section: str, key: str, value) -> None:
        import yaml

        path = self.root / "config" / name
        data = yaml.safe_load(path.read_text())
        data.setdefault(section, {})[key] = value
        path.write_text(yaml.safe_dump(data, sort_keys=False))


def copy_recipe(dest: Path) -> None:
    for name in ("workflow", "config", "profiles"):
        shutil.copytree(REPO / name, dest / name)


def base_env() -> dict[str, str]:
    """This process's environment as a user's shell has it: without the variables of a `make`
    the tests may run under (`make test`: a nested make would print its directory)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


@pytest.fixture
def study(tmp_path) -> Study:
    """The recipe in a scratch folder, with the real `detnas` CLI."""
    copy_recipe(tmp_path)
    return Study(tmp_path, base_env())


@pytest.fixture
def stub_study(tmp_path) -> Study:
    """The recipe in a scratch folder, with `detnas` replaced by tests/workflow/stub_detnas.py."""
    copy_recipe(tmp_path)
    bin_dir = tmp_path / ".stub-bin"
    bin_dir.mkdir()
    exe = bin_dir / "detnas"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} {STUB} \"$@\"\n")
    exe.chmod(0o755)
    env = base_env()
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    env["STUB_LOG"] = str(tmp_path / "stub-calls.log")
    return Study(tmp_path, env)


@pytest.fixture(scope="session")
def rehearsed(tmp_path_factory, artifacts_dir, slurm_partition):
    """The cluster rehearsal (tests/workflow/test_rehearsal.py), run once per session: its
    checks and the MLflow UI test (on the study's real store) share it. Returns ``(study, args,
    planned jobs, profile, log)``."""
    from test_rehearsal import rehearse

    root = tmp_path_factory.mktemp("rehearsal")
    copy_recipe(root)
    return rehearse(Study(root, base_env()), artifacts_dir, slurm_partition)
