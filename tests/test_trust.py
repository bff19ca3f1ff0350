"""Never a silently wrong result (issue 20): stale resume state, a bad config or split, an error in
a loader worker, a full disk and a failing MLflow store, each on a tiny classification study."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from detnas.cli import main
from detnas.io import save_checkpoint, save_json
from detnas.nets.backbones import shufflenet_spec
from detnas.plan import config
from detnas.plan.space import Arch
from detnas.run import engine, tracking, train

pytestmark = pytest.mark.slow


def _interrupt_after(monkeypatch, steps: int) -> None:
    """Training dies (as killed) in step ``steps`` + 1, after the checkpoints before it."""
    real, calls = engine.backward, []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) > steps:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "backward", dying)


def _killed(monkeypatch, cfg, out: Path, steps: int) -> None:
    real = engine.backward
    _interrupt_after(monkeypatch, steps)
    with pytest.raises(KeyboardInterrupt):
        train.supernet_classification(cfg, out)
    monkeypatch.setattr(engine, "backward", real)


def _weights(path: Path) -> dict:
    return torch.load(path, weights_only=True)["model"]


# --- 1. resumable state bound to what made it ----------------------------------------------------


def test_a_resume_state_of_another_seed_and_lr_is_set_aside(tmp_path, classification_study,
                                                            monkeypatch, caplog):
    path, _ = classification_study(num_train=24, steps=6)
    out = tmp_path / "out"
    _killed(monkeypatch, config.load(path, ["seed=1", "supernet_pretrain.lr=0.3"]), out, 5)
    assert torch.load(out / "resume.pt", weights_only=True)["step"] == 4
    cfg = config.load(path)
    with caplog.at_level("WARNING"):
        train.supernet_classification(cfg, out)
    assert "set aside" in caplog.text and "starting fresh" in caplog.text
    assert len(list(out.glob("resume.pt.stale-*"))) == 1
    train.supernet_classification(cfg, tmp_path / "clean")
    clean, rerun = _weights(tmp_path / "clean" / "checkpoint.pt"), _weights(out / "checkpoint.pt")
    for k, v in clean.items():  # the new config's run, not the old one's continued
        assert torch.equal(rerun[k], v), k


def test_a_longer_run_s_state_does_not_run_past_the_config(tmp_path, classification_study,
                                                            monkeypatch):
    path, _ = classification_study(num_train=24, steps=8)
    out = tmp_path / "out"
    _killed(monkeypatch, config.load(path), out, 7)  # a resume.pt at step 6 of 8
    train.supernet_classification(config.load(path, ["supernet_pretrain.steps=4"]), out)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 4
    assert json.loads((out / "metrics.json").read_text())["steps"] == 4


# --- 3. validation up front ----------------------------------------------------------------------


def test_an_empty_config_file_is_an_error_naming_it(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    with pytest.raises(ValueError, match=f"{empty}: the config file is empty"):
        config.load(empty)
    empty.write_text("- search\n")
    with pytest.raises(ValueError, match=f"{empty}: expected a mapping"):
        config.load(empty)


def test_a_validation_split_without_a_training_class_is_refused(tmp_path, classification_study,
                                                                capsys):
    path, _ = classification_study(num_train=24, steps=1)
    val = tmp_path / "cls" / "val"
    first = sorted(val.iterdir())[0]
    shutil.rmtree(first)  # every later class's label would shift by one
    arch = save_json(tmp_path / "arch.json", shufflenet_spec(Arch("test", (0,) * 6)))
    out = tmp_path / "out"
    code = main(["train", "classifier", "--config", str(path), "--arch", str(arch),
                 "--set", "retrain_pretrain={steps: 1, batch_size: 4}", "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(val) in err and str(tmp_path / "cls" / "train") in err
    assert repr(first.name) in err
    assert not out.exists()  # refused before training


def test_an_error_in_a_loader_worker_is_the_same_one_line(tmp_path, classification_study,
                                                          capsys):
    path, _ = classification_study(num_train=24, steps=2)
    for image in (tmp_path / "cls" / "train").rglob("*.png"):  # every one: the first read fails
        image.write_bytes(image.read_bytes()[:100])
    lines = []
    for workers in (0, 1):
        code = main(["train", "supernet", "--task", "classification", "--config", str(path),
                     "--set", f"workers={workers}", "--set", "classification.cache=false",
                     "--out", str(tmp_path / f"workers{workers}")])
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err
        lines.append(err.strip().splitlines()[-1])
    assert lines[0] == lines[1] and "not a readable image" in lines[0]


# --- 4. a full disk ------------------------------------------------------------------------------


@pytest.fixture
def tmpfs(tmp_path):
    """``mount(size)``: a tmpfs of ``size`` (e.g. ``512k``) in the test's folder, unmounted after
    the test (skipped where mounting is not allowed, e.g. without root)."""
    mounted = []

    def mount(size: str) -> Path:
        disk = tmp_path / f"disk{len(mounted)}"
        disk.mkdir()
        if shutil.which("mount") is None or subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)],
                capture_output=True).returncode != 0:
            pytest.skip("mounting a tmpfs is not allowed here")
        mounted.append(disk)
        return disk

    yield mount
    for disk in mounted:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.fixture
def small_disk(tmpfs):
    return tmpfs("512k")


def _fill(disk: Path) -> None:
    with (disk / "filler").open("wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC


def test_a_full_disk_is_one_line_naming_the_file_and_the_old_file_stays(small_disk):
    old = small_disk / "config.yaml"
    old.write_text("old: 1\n")
    checkpoint = save_checkpoint(small_disk / "resume.pt", {"step": 2})
    before = checkpoint.read_bytes()
    _fill(small_disk)
    with pytest.raises(ValueError, match=rf"{old}: cannot write it \(\[Errno 28\] No space"):
        save_json(old, {"config": "x" * 5553})
    with pytest.raises(ValueError, match=rf"{checkpoint}: cannot write it"):
        save_checkpoint(checkpoint, {"step": 4, "model": torch.zeros(50_000)})
    assert old.read_text() == "old: 1\n" and checkpoint.read_bytes() == before
    assert sorted(p.name for p in small_disk.iterdir()) == ["config.yaml", "filler", "resume.pt"]


def test_training_on_a_full_disk_ends_in_one_line(small_disk, classification_study, capsys):
    path, _ = classification_study(num_train=24, steps=4)
    out = small_disk / "out"
    out.mkdir()
    _fill(small_disk)
    code = main(["train", "supernet", "--task", "classification", "--config", str(path),
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"detnas: error: {out / 'resume.pt'}: cannot "
                                                  "write it ([Errno 28] No space left on device)")
    assert list(out.iterdir()) == []


def test_a_failed_rerun_keeps_the_last_good_result(tmpfs, classification_study, capsys):
    """A rerun by hand into a finished run's folder that fails (a full disk at its first
    resume.pt) leaves the finished run's files as they were."""
    path, _ = classification_study(num_train=24, steps=4)
    out = tmpfs("4m") / "out"
    command = ["train", "supernet", "--task", "classification", "--config", str(path),
               "--out", str(out)]
    assert main(command) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert {"checkpoint.pt", "metrics.json", "config.yaml"} <= before.keys()
    _fill(out.parent)
    assert main(command) == 2
    assert "resume.pt: cannot write it ([Errno 28]" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


# --- 5. tracking never costs results -------------------------------------------------------------


def _tracked(path: Path, uri: str, out: Path) -> list[str]:
    return ["train", "supernet", "--task", "classification", "--config", str(path),
            "--set", "tracking.enabled=true", "--set", f"tracking.uri={uri}", "--out", str(out)]


def test_a_store_that_is_not_a_database_fails_before_training(tmp_path, classification_study,
                                                              capsys):
    path, _ = classification_study(num_train=24, steps=2)
    junk = tmp_path / "store.db"
    junk.write_text("not a database\n" * 200)
    uri, out = f"sqlite:///{junk}", tmp_path / "out"
    assert main(_tracked(path, uri, out)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(
        f"detnas: error: tracking.uri {uri}: the MLflow store cannot be written")
    assert not (out / "resume.pt").exists() and not (out / "checkpoint.pt").exists()


def test_a_read_only_store_fails_before_training(tmp_path, tmpfs, classification_study, capsys):
    path, _ = classification_study(num_train=24, steps=2)
    disk = tmpfs("64m")
    uri, out = f"sqlite:///{disk / 'mlflow.db'}", tmp_path / "out"
    subprocess.run([sys.executable, "-c", "import sys; from mlflow.tracking import MlflowClient; "
                    "MlflowClient(sys.argv[1]).create_experiment('detnas', sys.argv[2])", uri,
                    str(tmp_path / "artifacts")], check=True, capture_output=True)  # (released)
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    assert main(_tracked(path, uri, out)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"tracking.uri {uri}: the MLflow store cannot be written" in err.splitlines()[-1]
    assert not (out / "checkpoint.pt").exists()


def test_a_store_failing_after_training_keeps_the_outputs_for_replay(
        tmp_path, classification_study, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    path, _ = classification_study(num_train=24, steps=2)
    uri, out = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "out"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    def start_then_fill(*args, **kwargs):  # the store's disk fills up once the run is started
        tracker = real_start(*args, **kwargs)
        for name in ("log_batch", "set_tag", "log_artifact", "log_dict", "set_terminated"):
            m.setattr(MlflowClient, name, full)
        return tracker

    real_start = tracking.start
    with monkeypatch.context() as m:
        m.setattr(tracking, "start", start_then_fill)
        assert main(_tracked(path, uri, out)) == 0
    assert {"checkpoint.pt", "metrics.json", "config.yaml"} <= {p.name for p in out.iterdir()}
    pending = json.loads((out / "tracking_pending.json").read_text())
    assert "No space left" in pending["error"] and pending["calls"][-1]["call"] == "terminated"
    run = MlflowClient(uri).get_run(pending["run_id"])
    assert run.info.status == "RUNNING" and not run.data.metrics
    capsys.readouterr()
    assert main(["tracking", "replay", str(out)]) == 0
    run = MlflowClient(uri).get_run(pending["run_id"])
    assert run.info.status == "FINISHED" and "loss" in run.data.metrics
    assert run.data.params["train.steps"] == "2"
    assert not (out / "tracking_pending.json").exists()
