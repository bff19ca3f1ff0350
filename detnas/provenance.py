"""Where an output came from: the resolved config, the seed, the git commit and the version."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any


def git_commit() -> str:
    """The commit of the detnas source tree (``-dirty`` with uncommitted changes to tracked
    files; 'unknown' outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        commit = out.stdout.strip()
        if out.returncode == 0 and commit:
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5,
            ).stdout.strip()
            return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        pass
    return "unknown"


def provenance(config: dict, seed: int, **extra: Any) -> dict:
    """What every output carries: the resolved config, the seed and the git commit."""
    from detnas import __version__

    return {"seed": seed, "git_commit": git_commit(), "detnas_version": __version__,
            **extra, "config": config}
