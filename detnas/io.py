"""Atomic writes and checked reads of the pipeline's files: JSON results and torch checkpoints.

A file is written to a temporary name in the same folder, flushed to disk and renamed over the
target, so a kill at any point leaves either the old file or the new one, never half of one; a
full disk (or any other failed write) is a ValueError naming the file, with the old file intact.
"""

from __future__ import annotations

import collections
import json
import os
import pickle
import re
import secrets
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None],
                 mode: int = 0o666) -> Path:
    """Call ``write(file)`` on a temporary file and rename it to ``path`` once complete.

    The file gets ``mode`` less the umask from its creation on (default: what a plain
    ``open(path, "w")`` gives; 0o600 for a file only its owner may read).

    Raises:
        ValueError: the file could not be written (e.g. the disk is full: ``[Errno 28] No space
            left on device``), naming it; a previous file of that name is left as it was.
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)  # the umask applies
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        error = _write_error(e)
        if error is None:
            raise
        raise ValueError(f"{path}: cannot write it ({error}); the previous file, if any, is "
                         "unchanged") from None
    return path


def _write_error(e: BaseException) -> str | None:
    """The reason a write failed, for the one-line error; None when ``e`` is not a failed write
    (torch's zip writer reports a full disk as a RuntimeError that names the errno)."""
    if isinstance(e, OSError):
        return f"[Errno {e.errno}] {e.strerror}" if e.strerror else str(e)
    if isinstance(e, RuntimeError) and re.search(
            r"file write failed|errno|No space left|inline_container", str(e), re.IGNORECASE):
        return str(e).strip().splitlines()[-1]
    return None


def save_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    data = text.encode()
    return atomic_write(path, lambda f: f.write(data))


def save_json(path: str | Path, obj: Any, mode: int = 0o666) -> Path:
    data = (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()
    return atomic_write(path, lambda f: f.write(data), mode)


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



@dataclass(frozen=True)
class TensorShape:
    """A tensor of a checkpoint read by `checkpoint_header`: its shape, not its data."""

    shape: tuple[int, ...]


class _TorchObject:
    """A torch object of a checkpoint's pickle (a storage, a dtype) read without torch."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def _rebuild_tensor(storage, offset, size, *rest) -> TensorShape:  # torch._utils' v2 and v3
    return TensorShape(tuple(size))


def _rebuild_parameter(data, *rest):
    return data


class _HeaderUnpickler(pickle.Unpickler):
    """Unpickles torch's ``data.pkl`` with tensors as `TensorShape`; any object but a torch
    tensor, a storage, a dtype and an OrderedDict is refused (nothing of the file runs)."""

    TORCH = {"_rebuild_tensor_v2": _rebuild_tensor, "_rebuild_tensor_v3": _rebuild_tensor,
             "_rebuild_parameter": _rebuild_parameter,
             "_rebuild_parameter_with_state": _rebuild_parameter}

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name in self.TORCH:
            return self.TORCH[name]
        if (module, name) == ("torch", "Size"):
            return tuple
        if module == "torch" and re.fullmatch(r"\w*(Storage|float\d*|int\d*|bfloat16|bool|uint8)",
                                              name):
            return _TorchObject
        raise pickle.UnpicklingError(f"GLOBAL {module}.{name}")

    def persistent_load(self, pid):
        return _TorchObject()  # a storage: its data stays in the archive


def checkpoint_header(path: str | Path) -> dict:
    """A checkpoint's content without torch and without its tensors' data: its plain entries
    as saved, each tensor a `TensorShape`. Reads only the pickle of torch's zip format (kilobytes
    to a few megabytes, whatever the checkpoint's size), so that the workflow checks a
    checkpoint given by the config when it is parsed, without importing torch (seconds at every
    invocation).

    Raises:
        ValueError: naming the file: missing, not torch's zip format, or holding an object
            other than tensors and plain data (`load_checkpoint` refuses it too).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint does not exist")
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith("/data.pkl")), None)
            if name is None:
                raise ValueError(f"{path}: not a readable checkpoint (a zip without data.pkl)")
            with archive.open(name) as f:
                return _HeaderUnpickler(f).load()
    except zipfile.BadZipFile:
        raise ValueError(f"{path}: not a readable checkpoint (not torch's zip format)") from None
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path}: not a readable checkpoint ({e}: detnas loads only tensors "
                         "and plain data)") from None
    except (EOFError, OSError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
