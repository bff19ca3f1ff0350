"""The study's own tracking server (`detnas tracking serve`, `detnas.run.tracking_server`): a real
PostgreSQL (the distribution's package, started here, on loopback) under a real `mlflow server`
with MLflow's basic-auth app; jobs log over HTTP with ``tracking.uri: server``.

8 stage-like jobs (tests/tracking_job.py, the `detnas.run.tracking` API) log at once: every run ends
FINISHED with every metric, tag and artifact (the artifacts under the results folder). Then the
server is stopped in the middle of a second batch: the jobs finish and keep their outputs and
what they could not log (tracking_pending.json); the server is started again and `detnas
tracking replay` sends the rest, and nothing is lost. The server's throughput in the first batch
(runs and metric values per second) is printed and kept in test-artifacts/tracking-server.json.
Another user (uid 65534, as root) can neither read the credentials nor log to or read the server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from detnas.cli import main
from detnas.io import load_json
from detnas.plan import config, layout
from detnas.run import tracking, tracking_server

sys.path.insert(0, str(Path(__file__).parent))
from tracking_job import KEYS, STEPS, value  # noqa: E402

JOB = Path(__file__).with_name("tracking_job.py")
JOBS = 8
WORKERS = 2  # mlflow server's, on the 2-core CI machine
REPO = Path(__file__).resolve().parents[1]


def _postgres_missing() -> bool:
    try:
        tracking_server._pg_bin()
    except ValueError:
        return True
    return False


@pytest.fixture(scope="module")
def study():
    """``(config path, results folder)`` of a study tracked by its own server, started here.
    The folder is not under pytest's (mode 0700 as root): PostgreSQL, run as ``postgres`` where
    the tests run as root, must pass through the folders above it."""
    if _postgres_missing():
        pytest.skip("needs PostgreSQL's server programs (apt-get install postgresql)")
    base = Path(tempfile.mkdtemp(prefix="detnas-tracking-server-"))
    base.chmod(0o711)
    results = base / "results"
    path = base / "study.yaml"
    path.write_text(yaml.safe_dump({"space": "test", "device": "cpu", "results": str(results),
                                    "tracking": {"uri": "server", "experiment": "t"}}))
    try:
        start = time.perf_counter()
        assert main(["tracking", "serve", "--config", str(path), "--workers", str(WORKERS)]) == 0
        print(f"tracking server up in {time.perf_counter() - start:.1f} s")
        yield path, results
    finally:
        main(["tracking", "serve", "--config", str(path), "--stop"])
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            os.environ.pop(key, None)
        shutil.rmtree(base, ignore_errors=True)


def _jobs(path: Path, outs: list[Path], half: Path | None = None, env: dict | None = None):
    """Start a job (tests/tracking_job.py) per folder of ``outs``; once every one is ready
    (imported), let them all start logging at once."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    start = outs[0].parent / "start"
    procs = [subprocess.Popen([sys.executable, str(JOB), str(path), str(out), str(i), str(start),
                               *([str(half)] if half else [])],
                              env=env, cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i, out in enumerate(outs)]
    _reach(procs, outs, "ready")
    start.touch()
    return procs


def _reach(procs, outs: list[Path], mark: str) -> None:
    """Wait until every job has written ``mark`` in its folder."""
    deadline = time.monotonic() + 240
    while not all((out / mark).exists() for out in outs):
        assert all(p.poll() is None for p in procs), _wait(procs)
        assert time.monotonic() < deadline, f"the jobs did not reach {mark}"
        time.sleep(0.1)


def _wait(procs) -> list[str]:
    logs = [p.communicate(timeout=300)[0] for p in procs]
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    return logs


def _check_run(client, out: Path, index: int, parent: str, results: Path) -> int:
    """Job ``index``'s run is FINISHED with all it logged; returns its number of metric values."""
    run_id = load_json(out / "timing.json")["run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED", (index, run.info.status)
    tags = run.data.tags
    assert tags["mlflow.parentRunId"] == parent
    assert (tags["stage"], tags["ablation"], tags["job"]) == ("search", f"job{index}", str(index))
    assert run.data.params == {"index": str(index), "steps": str(STEPS)}
    for key in KEYS:
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        assert history == [(s, value(key, index, s)) for s in range(STEPS)], (index, key)
    cost = {k for k in run.data.metrics if k.startswith("cost.")}
    assert {"cost.wall_s", "cost.gpu_hours", "cost.cpu_s"} <= cost
    assert {a.path for a in client.list_artifacts(run_id)} == {"config.yaml", "metrics.json"}
    stored = list((results / layout.ARTIFACTS).rglob(f"{run_id}/artifacts/metrics.json"))
    assert len(stored) == 1  # uploaded through the server, kept under the results folder
    assert json.loads(stored[0].read_text()) == load_json(out / "metrics.json")
    return STEPS * len(KEYS) + len(cost)


@pytest.mark.slow
def test_jobs_log_at_once_and_a_restart_mid_study_loses_nothing(study, artifacts_dir):
    path, results = study
    assert main(["tracking", "init", "--config", str(path)]) == 0
    parent = load_json(results / layout.TRACKING)["parent_run_id"]

    first = [results / "first" / f"job{i}" for i in range(JOBS)]
    _wait(_jobs(path, first))
    client = tracking.connect("server", results)
    metrics = sum(_check_run(client, out, i, parent, results) for i, out in enumerate(first))
    times = [load_json(out / "timing.json") for out in first]
    window = max(t["end"] for t in times) - min(t["start"] for t in times)
    throughput = {"runs": JOBS, "metric_values": metrics, "seconds": round(window, 2),
                  "runs_per_s": round(JOBS / window, 2),
                  "metrics_per_s": round(metrics / window, 1),
                  "jobs_at_once": JOBS, "server_workers": WORKERS, "cpus": os.cpu_count()}
    (artifacts_dir / "tracking-server.json").write_text(json.dumps(throughput, indent=2) + "\n")
    print(f"tracking server: {JOBS} runs, {metrics} metric values in {window:.1f} s: "
          f"{throughput['runs_per_s']} runs/s, {throughput['metrics_per_s']} metrics/s")

    # the second batch: the server stops once every job has logged half its steps
    second = [results / "second" / f"job{i}" for i in range(JOBS)]
    half = results / "second" / "half"
    procs = _jobs(path, second, half, env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                                           "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"})
    _reach(procs, second, "halfway")
    assert main(["tracking", "serve", "--config", str(path), "--stop"]) == 0
    half.touch()
    logs = _wait(procs)  # the stages end well without their server
    for out, log in zip(second, logs, strict=True):
        assert (out / "metrics.json").exists()
        pending = load_json(out / tracking.PENDING)
        assert pending["tracking_uri"] == "server" and pending["results"] == str(results)
        assert [c["call"] for c in pending["calls"]][-1] == "terminated"
        assert "tracking_pending.json" in log  # the stage said where it kept them
    with pytest.raises(ValueError, match="the tracking server of .* is stopped"):
        tracking.connect("server", results)

    assert main(["tracking", "serve", "--config", str(path), "--workers", str(WORKERS)]) == 0
    client = tracking.connect("server", results)
    halfway = client.get_run(load_json(second[0] / "timing.json")["run_id"])
    assert halfway.info.status == "RUNNING"
    assert len(client.get_metric_history(halfway.info.run_id, KEYS[0])) == STEPS // 2
    assert main(["tracking", "replay", *map(str, second)]) == 0
    for i, out in enumerate(second):
        _check_run(client, out, i, parent, results)
        assert not (out / tracking.PENDING).exists()
    children = client.search_runs([halfway.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent}'")
    assert len(children) == 2 * JOBS


@pytest.mark.slow
def test_another_user_can_neither_read_nor_log(study):
    """The credentials file is its owner's; MLflow answers 401 to anyone else, for reads as for
    writes; PostgreSQL takes no one without the password."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run a process as another user")
    path, results = study
    state = load_json(tracking_server.folder(results) / tracking_server.STATE)
    code = textwrap.dedent(f"""
        import base64, json, subprocess, urllib.request, urllib.error
        url, out = {state['uri']!r}, {{}}
        try:
            open({str(tracking_server.folder(results) / tracking_server.STATE)!r}).read()
            out["state"] = "read"
        except PermissionError:
            out["state"] = "refused"
        def status(path, auth=None, data=None):
            req = urllib.request.Request(url + path, data=data, headers={{
                "Content-Type": "application/json"}})
            if auth:
                req.add_header("Authorization", "Basic " + base64.b64encode(auth).decode())
            try:
                return urllib.request.urlopen(req, timeout=20).status
            except urllib.error.HTTPError as e:
                return e.code
        search = "/api/2.0/mlflow/experiments/search?max_results=5"
        out["read"] = status(search)
        out["read_guessed"] = status(search, b"detnas:guess")
        out["write"] = status("/api/2.0/mlflow/experiments/create", None, b'{{"name": "x"}}')
        out["ui"] = status("/")
        psql = subprocess.run([{str(tracking_server._pg_bin() / "psql")!r}, "-w", "-h",
                               "127.0.0.1", "-p", "{state['pg_port']}", "-U", "detnas", "-d",
                               "mlflow", "-c", "select 1"], capture_output=True, text=True,
                              env={{"PGPASSWORD": "guess", "PATH": "/usr/bin:/bin"}})
        out["postgres"] = (psql.returncode, psql.stderr.strip())
        print(json.dumps(out))
    """)
    python = shutil.which("python3", path="/usr/bin:/bin")  # not one under /root
    if python is None:
        pytest.skip("needs /usr/bin/python3 for the other user")
    proc = subprocess.run([python, "-c", code], user=65534, group=65534, extra_groups=[],
                          cwd="/", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["state"] == "refused"
    assert (out["read"], out["read_guessed"], out["write"], out["ui"]) == (401, 401, 401, 401)
    assert out["postgres"][0] != 0 and "password authentication failed" in out["postgres"][1]
    # the owner, with the credentials: the same requests pass
    client = tracking.connect("server", results)
    assert client.search_experiments()


def test_a_study_without_its_server_says_how_to_start_it(tmp_path, capsys):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"space": "test", "device": "cpu", "results": str(tmp_path),
                                    "tracking": {"uri": "server"}}))
    assert main(["tracking", "init", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "tracking.uri server: no tracking server was started for the results folder" in err
    assert "detnas tracking serve --config CONFIG" in err
    with pytest.raises(ValueError, match=r"tracking\.uri: 'sever' \(an MLflow store: "):
        config.load(path, ["tracking.uri=sever"])
