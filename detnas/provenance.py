"""Where an output came from: the resolved config, the seed, the git commit, the version and the
numeric environment (the libraries and the instruction set that decided its floating-point
results); what a resumable state was made from (`fingerprint`), and setting a stale one aside."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from detnas.io import checkpoint_header
from detnas.version import __version__

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


# Environment variables that cap the instruction set of torch's CPU kernels (ATen), of oneDNN and
# of MKL, or make MKL's results reproducible: each changes the floating-point summation order.
ISA_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_CBWR",
                 "MKL_ENABLE_INSTRUCTIONS")
# What config `cpu_isa: avx2` sets them to: AVX2 kernels in ATen and oneDNN, MKL's AVX2 code path.
AVX2_PIN = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}


def _cpuinfo(field: str) -> str | None:
    """The first ``field`` of /proc/cpuinfo (Linux), None where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return None


def _has_avx2() -> bool:
    return "avx2" in (_cpuinfo("flags") or "").split()


def pin_cpu_isa(isa: str) -> None:
    """Pin the CPU numerics of this process, and of the processes it starts, to ``isa`` (config
    ``cpu_isa``): an AVX-512 machine then sums in the order an AVX2 one does, and the two give the
    same bits. Each library reads its variable at its first operation, so this works before torch
    computes anything (importing it is fine), as in every ``detnas`` command. In a process where
    torch already computed (a notebook, a test calling the CLI in-process), it is too late for
    that process: a warning says so, and the outputs record the capability that ran.
    ``native``, a CPU without AVX2 and another architecture leave the environment as it is."""
    if isa == "native" or not _has_avx2():
        return
    before = {k: os.environ.get(k) for k in AVX2_PIN}
    os.environ.update(AVX2_PIN)
    torch = sys.modules.get("torch")
    if torch is not None and (found := torch.backends.cpu.get_cpu_capability()) != "AVX2":
        for k, v in before.items():  # unpinned, as it runs: the provenance must not say AVX2
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v
        log.warning(
            "cpu_isa: %s: torch already dispatches to %s in this process, which keeps it (the "
            "outputs record it); start a new process to pin it", isa, found)


def cpu_model() -> str:
    """The CPU's model name."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def numeric_environment() -> dict:
    """What decides an output's floating-point results beside its config and inputs.

    The library versions, the CPU and the instruction set torch dispatches to (and the variables
    that cap it), the threads, and CUDA / cuDNN with the device name where a GPU is used. torch
    is read only where the process has imported it: an output made without torch does not depend
    on it.
    """
    import numpy

    env = {"python": platform.python_version(), "numpy": numpy.__version__,
           "machine": platform.machine(), "cpu": cpu_model(),
           "isa_variables": {k: os.environ[k] for k in ISA_VARIABLES if k in os.environ}}
    torch = sys.modules.get("torch")
    if torch is None:
        return env
    match = re.search(r"MKL-DNN (v[\d.]+)", torch.__config__.show())
    torchvision = sys.modules.get("torchvision")
    env.update({"torch": str(torch.__version__),  # a str subclass YAML cannot write
                "torchvision": str(torchvision.__version__) if torchvision else None,
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "onednn": match.group(1) if match else None,
                "threads": torch.get_num_threads(),
                "deterministic_algorithms": torch.are_deterministic_algorithms_enabled()})
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        env.update({"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                    "device": torch.cuda.get_device_name()})
    return env


def environment_key(env: dict) -> str:
    """A short line naming what makes two numeric environments give different bits."""
    parts = [f"torch {env.get('torch', '-')}", f"numpy {env.get('numpy', '-')}",
             env.get("cpu_capability") or env.get("machine", "-")]
    parts += [f"{k}={v}" for k, v in sorted(env.get("isa_variables", {}).items())]
    if env.get("device"):
        parts.append(f"{env['device']} (CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')})")
    return ", ".join(parts)


def provenance(config: dict, seed: int, **extra: Any) -> dict:
    """What every output carries: the resolved config, the seed, the git commit and the numeric
    environment."""
    return {"seed": seed, "git_commit": git_commit(), "detnas_version": __version__,
            "numeric_environment": numeric_environment(), **extra, "config": config}


def sha256(path: str | Path) -> str:
    """The sha256 of a file's content (hex, whole)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def digest(path: str | Path) -> str:
    """A short digest of an input: a file's content (sha256); a folder's files by relative path,
    size and modification time (an image folder of a million files is listed, not read: a copy
    that does not keep the times reads as another input, which at worst trains again)."""
    path = Path(path)
    if path.is_file():
        return sha256(path)[:16]
    if not path.is_dir():
        raise ValueError(f"{path}: input does not exist")
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(path).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n"
                     .encode())
    return h.hexdigest()[:16]


MADE_BY = ("stage", "git_commit", "detnas_version", "seed", "fingerprint", "mlflow_run_id")
"""What an input checkpoint's own provenance says of the run that made it (`source`)."""


def source(path: str | Path) -> dict:
    """Where an input checkpoint came from, for the provenance of what is made from it: its
    path and sha256; a DVC import's origin, from the ``PATH.dvc`` file `dvc import` (or `dvc
    import-url`) wrote beside it: the repository, the commit (``rev_lock``) and the path in it
    (or the URL); and the run that made it (`MADE_BY`), from the provenance the checkpoint
    carries (read without torch)."""
    path = Path(path)
    found: dict[str, Any] = {"path": str(path), "sha256": sha256(path)}
    origin = _dvc_origin(path.with_name(f"{path.name}.dvc"))
    if origin:
        found["dvc"] = origin
    try:
        made = checkpoint_header(path).get("provenance")
    except (ValueError, AttributeError):
        made = None
    if isinstance(made, dict):
        found["made_by"] = {k: made[k] for k in MADE_BY if k in made}
    return found


def _dvc_origin(record: Path) -> dict | None:
    """Where `dvc import` (``repo``, ``rev``: its commit, ``path`` in it) or `dvc import-url`
    (``url``) took a file from, as its record ``record`` says; None without a readable one."""
    try:
        dep = yaml.safe_load(record.read_text())["deps"][0]
        if isinstance(dep.get("repo"), dict):
            return {"repo": dep["repo"].get("url"), "rev": dep["repo"].get("rev_lock"),
                    "path": dep.get("path")}
        return {"url": dep["path"]}
    except (OSError, yaml.YAMLError, TypeError, KeyError, IndexError, AttributeError):
        return None


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
