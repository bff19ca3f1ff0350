"""The MLflow UI on a real study's store: the cluster rehearsal's (the `rehearsed` session fixture:
config/coco.yaml's structure at toy size, every stage tracked by detnas.run.tracking), served by
`mlflow server` from its SQLite store and rendered by headless Chromium, grouped by ablation.

DETNAS_UI_STUDY=DIR checks the study in DIR instead (a folder where a study ran, holding
results/config.yaml, results/tracking.json and the store, e.g. this repository after `make run`).

The server runs in the study's folder, as the README's `mlflow ui` does: the store's artifact
locations are relative to it (`detnas.run.tracking`).

Screenshots are kept in test-artifacts/: mlflow-ui-ablation.png (the runs grouped by ablation,
with the AP columns) and mlflow-ui-run.png (a retraining run: metrics, tags, parent run).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from detnas.plan import study
from detnas.run.tracking import ABLATION_VIEW

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

ROWS = {r.name for r in study.rows(None)}  # the rehearsal's config adds none
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1920,1200",
                  "--virtual-time-budget=30000"]  # let the React app fetch and render


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def visible_text(dom: str) -> str:
    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text))


@pytest.fixture(scope="module")
def store(request):
    """``(uri, experiment id, parent run id, study root)`` of the study's MLflow store."""
    from mlflow.tracking import MlflowClient

    if os.environ.get("DETNAS_UI_STUDY"):
        root = Path(os.environ["DETNAS_UI_STUDY"]).resolve()
    else:
        root = request.getfixturevalue("rehearsed")[0].root
    cfg = yaml.safe_load((root / "results" / "config.yaml").read_text())
    uri = cfg["tracking"]["uri"]
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):  # relative to root
        uri = f"sqlite:///{root / uri.removeprefix('sqlite:///')}"
    parent = yaml.safe_load((root / "results" / "tracking.json").read_text())["parent_run_id"]
    experiment = MlflowClient(uri).get_experiment_by_name(cfg["tracking"]["experiment"])
    return uri, experiment.experiment_id, parent, root


def test_the_study_is_tracked_whole(store, monkeypatch):
    """The parent run ended with the study; a child per stage, each with config, arch, cost."""
    from mlflow.tracking import MlflowClient

    uri, exp_id, parent, root = store
    monkeypatch.chdir(root)  # artifact locations are relative to the study's folder
    client = MlflowClient(uri)
    assert client.get_run(parent).info.status == "FINISHED"  # onsuccess: detnas tracking finish
    children = client.search_runs([exp_id], f"tags.mlflow.parentRunId = '{parent}'",
                                  max_results=1000)
    assert {r.data.tags["ablation"] for r in children} >= ROWS
    retrained = [r for r in children if r.data.tags["stage"] == "retrain-detection"]
    assert {r.data.tags["ablation"] for r in retrained} == ROWS
    for run in children:
        assert run.info.status == "FINISHED", run.info.run_name
        assert "cost.wall_s" in run.data.metrics and "cost.gpu_hours" in run.data.metrics
        assert "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}
    for run in retrained:
        assert {"mmap", "ap50"} <= set(run.data.metrics), run.info.run_name
        assert "arch.json" in {a.path for a in client.list_artifacts(run.info.run_id)}


@contextlib.contextmanager
def serve(uri: str, cwd: Path, log: Path):
    """``mlflow server`` on the store ``uri``, run in folder ``cwd``; yields its base URL."""
    port = free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
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
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):
    """The study's store served from the study's folder: ``(base URL, scratch folder)``."""
    uri, _, _, root = store
    tmp = tmp_path_factory.mktemp("mlflow-server")
    with serve(uri, root, tmp / "mlflow-server.log") as base:
        yield base, tmp


def chromium(url: str, tmp_path: Path, screenshot: Path | None = None) -> str:
    """The DOM of ``url`` after rendering (and a screenshot of it)."""
    profile = tmp_path / f"chromium-{time.monotonic_ns()}"
    cmd = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
    dom = subprocess.run([*cmd, "--dump-dom", url], capture_output=True, text=True,
                         timeout=180, check=True).stdout
    if screenshot is not None:
        subprocess.run([*cmd, f"--screenshot={screenshot}", url], capture_output=True,
                       timeout=180, check=True)
        assert screenshot.stat().st_size > 10_000
    return dom


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install chromium)")
def test_ui_groups_the_study_by_ablation_with_the_ap_columns(store, server, artifacts_dir):
    _, exp_id, _, _ = store
    base, tmp = server
    url = f"{base}/#/experiments/{exp_id}/runs?viewStateShareKey={ABLATION_VIEW}"
    page = visible_text(chromium(url, tmp, artifacts_dir / "mlflow-ui-ablation.png"))
    assert "Group by: ablation" in page  # the shared view detnas tracking init created
    for row in sorted(ROWS):  # one group per row of the study
        assert f"Group: {row}" in page, row
    header = page.split("Run Name", 1)[1].split("Group:", 1)[0]  # the table's column headers
    for column in ("mmap", "ap50", "top1"):  # the view's metric columns, shown
        assert f" {column} " in header, column


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install chromium)")
def test_ui_shows_a_retraining_run_with_its_metrics_and_parent(store, server, artifacts_dir):
    from mlflow.tracking import MlflowClient

    uri, exp_id, parent, _ = store
    base, tmp = server
    (run,) = MlflowClient(uri).search_runs(
        [exp_id], "tags.stage = 'retrain-detection' and tags.ablation = 'detnas'",
        max_results=1, order_by=["attributes.start_time ASC"])
    page = visible_text(chromium(f"{base}/#/experiments/{exp_id}/runs/{run.info.run_id}", tmp,
                                 artifacts_dir / "mlflow-ui-run.png"))
    assert run.info.run_name in page and "Status Finished" in page
    shown = re.search(r" mmap ([-\d.e]+) ", page)  # the metrics table: name, value
    assert shown and float(shown[1]) == pytest.approx(run.data.metrics["mmap"], rel=1e-3)
    assert "cost.gpu_hours" in page  # the cost ledger's metrics
    assert "Parent run study" in page and "ablation : detnas" in page


def test_ui_serves_a_copied_studys_artifacts_from_the_copy(store, tmp_path):
    """The run page's artifact tab (the UI's own REST calls) on a copy of the study's store in
    another folder: the server there lists and serves the copy's artifacts (the copy's arch.json
    is marked to tell it from the original's)."""
    import json
    import urllib.parse

    from mlflow.tracking import MlflowClient

    uri, exp_id, _, root = store
    (run,) = MlflowClient(uri).search_runs([exp_id], "tags.stage = 'retrain-detection'",
                                           max_results=1)
    shutil.copytree(root / "results" / "mlartifacts", tmp_path / "results" / "mlartifacts")
    shutil.copy(root / "results" / "mlflow.db", tmp_path / "results" / "mlflow.db")
    stored = tmp_path / "results/mlartifacts" / run.info.run_id / "artifacts/arch.json"
    copied = {**json.loads(stored.read_text()), "copy": True}
    stored.write_text(json.dumps(copied))
    with serve(f"sqlite:///{tmp_path}/results/mlflow.db", tmp_path, tmp_path / "log") as base:
        query = urllib.parse.urlencode({"run_uuid": run.info.run_id})
        with urllib.request.urlopen(f"{base}/ajax-api/2.0/mlflow/artifacts/list?{query}") as r:
            listed = {f["path"] for f in json.load(r).get("files", [])}
        assert {"config.yaml", "arch.json"} <= listed
        query = urllib.parse.urlencode({"run_uuid": run.info.run_id, "path": "arch.json"})
        with urllib.request.urlopen(f"{base}/get-artifact?{query}") as r:
            assert json.loads(r.read()) == copied
