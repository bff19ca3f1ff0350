"""The MLflow UI shows a study's runs: a parent run and child runs written by detnas.tracking,
served by `mlflow server` from the SQLite store, rendered by headless Chromium.

Screenshots are kept in test-artifacts/ (mlflow-ui-runs.png, mlflow-ui-run.png).
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                  "--virtual-time-budget=20000"]  # let the React app fetch and render
RUNS = {"retrain-detnas-synth-fpn": 0.4321, "retrain-shufflenetv2-synth-fpn": 0.3123}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def visible_text(dom: str) -> str:
    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text))


@pytest.fixture
def store(tmp_path):
    """A parent run and two child runs with tags and metrics, as the pipeline's stages write."""
    from detnas import tracking

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = SimpleNamespace(results=str(tmp_path),
                          tracking=SimpleNamespace(enabled=True, uri=uri, experiment="detnas-ui"))
    tracking.init_parent(uri, "detnas-ui", tmp_path, "study", {"seed": 0})
    ids = {}
    for name, mmap in RUNS.items():
        tags = {"stage": "retrain", "ablation": name.split("-")[1], "detector": "fpn"}
        with tracking.start(cfg, name, tags) as run:
            for step in range(3):
                run.log_metrics({"loss": 1 / (step + 1)}, step=step)
            run.log_metrics({"mmap": mmap})
            ids[name] = run.run_id
    return uri, ids


@pytest.fixture
def server(store, tmp_path):
    uri, ids = store
    port = free_port()
    log = tmp_path / "mlflow-server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "mlflow server did not start"
                time.sleep(0.5)
        yield base, ids
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def chromium(url: str, tmp_path: Path, screenshot: Path | None = None) -> str:
    """The DOM of ``url`` after rendering (and a screenshot of it)."""
    profile = tmp_path / f"chromium-{time.monotonic_ns()}"
    cmd = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
    dom = subprocess.run([*cmd, "--dump-dom", url], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    if screenshot is not None:
        subprocess.run([*cmd, f"--screenshot={screenshot}", url], capture_output=True,
                       timeout=120, check=True)
        assert screenshot.stat().st_size > 10_000
    return dom


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install chromium)")
def test_ui_shows_runs_and_metrics(server, tmp_path, artifacts_dir):
    base, ids = server
    runs_page = visible_text(chromium(f"{base}/#/experiments/1/runs", tmp_path,
                                      artifacts_dir / "mlflow-ui-runs.png"))
    assert "detnas-ui" in runs_page
    assert "study" in runs_page  # the parent run; the children are grouped under it
    assert "3 matching runs" in runs_page
    for i, (name, mmap) in enumerate(RUNS.items()):
        shot = artifacts_dir / "mlflow-ui-run.png" if i == 0 else None
        page = visible_text(chromium(f"{base}/#/experiments/1/runs/{ids[name]}", tmp_path, shot))
        assert name in page
        assert f"mmap {mmap}" in page  # the metrics table: name, value
        assert "Parent run study" in page
        assert "ablation : " + name.split("-")[1] in page
