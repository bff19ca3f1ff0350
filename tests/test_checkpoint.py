"""Checkpoints are loaded weights-only: a file carrying code is refused with a safe message."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from detnas.io import load_checkpoint, save_checkpoint


class Payload:
    """Unpickled without restrictions, this would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mknod, (self.marker,))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_a_hostile_checkpoint_is_refused_without_advice_to_run_it(tmp_path, writer, capsys):
    path, marker = tmp_path / "evil.pt", tmp_path / "pwned"
    state = {"model": {"w": [0.0, 1.0]}, "extra": Payload(marker)}
    if writer == "pickle":
        path.write_bytes(pickle.dumps(state, protocol=2))
    else:
        torch.save(state, path)
    with pytest.raises(ValueError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert message.startswith(f"{path}: refused as unsafe")
    assert not any(advice in message for advice in ("weights_only", "add_safe_globals",
                                                    "trusted source"))
    assert not marker.exists()
    assert "posix.mknod" in message  # what the unpickler found

    from detnas.cli import main  # the CLI prints the same one line and exits 2

    assert main(["nats", "derive", "--search", str(path), "--out", str(tmp_path / "a.json")]) == 2
    err_text = capsys.readouterr().err
    assert "refused as unsafe" in err_text and "weights_only" not in err_text
    assert not marker.exists()


def test_a_plain_checkpoint_loads_and_a_corrupt_one_is_named(tmp_path):
    save_checkpoint(tmp_path / "ok.pt", {"step": 3, "w": torch.ones(2)})
    assert load_checkpoint(tmp_path / "ok.pt")["step"] == 3
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt: not a readable checkpoint") as err:
        load_checkpoint(tmp_path / "bad.pt")
    assert "weights_only" not in str(err.value)
