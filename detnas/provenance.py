"""Where an output came from: the resolved config, the seed, the git commit and the version;
what a resumable state was made from (`fingerprint`), and setting a stale one aside."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


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


def digest(path: str | Path) -> str:
    """A short digest of an input: a file's content (sha256); a folder's files by relative path,
    size and modification time (an image folder of a million files is listed, not read: a copy
    that does not keep the times reads as another input, which at worst trains again)."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                st = p.stat()
                h.update(f"{p.relative_to(path).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n"
                         .encode())
    elif path.is_file():
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    else:
        raise ValueError(f"{path}: input does not exist")
    return h.hexdigest()[:16]


def fingerprint(config: dict, inputs: Iterable[str | Path | None] = (), **facts: Any) -> str:
    """What a resumable state (or a reused run) was made from, as a short digest: the resolved
    ``config`` (less ``tracking``, which records a result and never changes it), the digests of
    the ``inputs`` (None entries skipped) and the stage's other ``facts`` (detector, arch, ...).

    Every resumable state records it; a state whose fingerprint is not the run's is set aside
    (`set_aside`) and the stage starts fresh.
    """
    made_from = {"config": {k: v for k, v in config.items() if k != "tracking"},
                 "inputs": [digest(p) for p in inputs if p is not None], "facts": facts}
    text = json.dumps(made_from, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def set_aside(path: str | Path, found: str | None, expected: str) -> Path:
    """Rename the stale state ``path`` (made from ``found``, not this run's ``expected``) to
    ``<name>.stale-<found>`` beside it, with one warning line saying why; returns the new path."""
    path = Path(path)
    stale = path.with_name(f"{path.name}.stale-{found or 'unbound'}")
    os.replace(path, stale)
    log.warning("%s: set aside as %s: made from %s, this run from %s (another config or "
                "input); starting fresh", path, stale.name,
                f"fingerprint {found}" if found else "no fingerprint", expected)
    return stale


def remove_outputs(folder: str | Path, names: Iterable[str]) -> None:
    """Remove the outputs ``names`` of a previous run from ``folder`` as a fresh run starts (an
    output folder holds the files of one run), with one line naming them."""
    gone = [name for name in names if (Path(folder) / name).exists()]
    for name in gone:
        (Path(folder) / name).unlink()
    if gone:
        log.info("%s: removed the outputs of a previous run (%s)", folder, ", ".join(gone))
