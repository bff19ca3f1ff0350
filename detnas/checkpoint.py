"""Atomic writes of checkpoints and results, resumable loads, and the provenance of every output.

A file is written to a temporary name in the same folder, flushed to disk and renamed over the
target, so a kill at any point leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(file)`` on a temporary file and rename it to ``path`` once complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; outputs are shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_json(path: str | Path, obj: Any) -> Path:
    data = (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()
    return atomic_write(path, lambda f: f.write(data))


def load_json(path: str | Path) -> Any:
    """Read a JSON file; a missing or corrupt file is a ValueError naming it."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: file does not exist") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def save_checkpoint(path: str | Path, state: dict) -> Path:
    """Save a checkpoint (tensors, numbers, strings, lists and dicts only) atomically."""
    import torch

    return atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint with ``weights_only=True`` (no code runs on load).

    Raises:
        ValueError: the file is missing or is not a readable checkpoint.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: checkpoint does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # torch's message advises a load that runs the payload
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found:
            raise ValueError(f"{path}: refused as unsafe: loading it would import "
                             f"{found[1]}; detnas loads only tensors and plain data. Use a "
                             "checkpoint written by detnas, or a state dict from a source you "
                             "trust") from None
        raise ValueError(f"{path}: not a readable checkpoint ({_reason(str(e))})") from None
    except Exception as e:  # torch raises many kinds for corrupt files
        raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None


def _reason(message: str) -> str:
    """Where the weights-only unpickler stopped, without torch's advice around it (to load the
    file unrestricted, which would run whatever it carries)."""
    found = [line.strip() for line in message.splitlines() if line.strip() and not any(
        word in line for word in ("weights_only", "torch.load", "Weights only", "Please "))]
    return found[0].removeprefix("WeightsUnpickler error: ") if found else "unknown content"


def git_commit() -> str:
    """The commit of the detnas source tree ('unknown' outside a git checkout)."""
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
