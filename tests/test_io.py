"""Atomic writes: the mode of a plain open(), no temporary left behind, no umask change."""

import os
import stat

import pytest

from detnas.io import atomic_write, load_json, save_json


def test_atomic_write_mode_and_cleanup(tmp_path):
    old = os.umask(0o027)
    try:
        path = save_json(tmp_path / "sub" / "a.json", {"x": 1})
        assert os.umask(0o027) == 0o027  # writing left the process umask alone
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # 0666 less the umask, as open() does
    assert load_json(path) == {"x": 1}
    with pytest.raises(RuntimeError):
        atomic_write(path, lambda f: (f.write(b"half"), (_ for _ in ()).throw(RuntimeError())))
    assert load_json(path) == {"x": 1} and [p.name for p in path.parent.iterdir()] == ["a.json"]
