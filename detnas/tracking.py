"""The only module that talks to MLflow.

One parent run per pipeline run (created once by ``detnas tracking init`` before parallel jobs
start; its id is kept in ``<results>/tracking.json``; ended FINISHED or FAILED by ``detnas tracking
finish`` from the Snakefile's onsuccess / onerror handlers) and one child run per stage and
ablation, tagged so that the MLflow UI groups and compares them (the experiment's shared view
`ABLATION_VIEW`: runs grouped by ablation, AP columns shown). Every stage run logs the resolved
study config (``config.yaml``) and, where it has one, its architecture (``arch.json``) as
artifacts, and its cost (`detnas.cost`, ``cost.*`` metrics). Metrics are buffered and sent in
batches. With tracking disabled every call goes to a `NullTracker`, which still meters the cost.

A local store (``sqlite:``) keeps its artifacts in `ARTIFACTS` under the results, at a location
relative to the working directory as the store's own URI is (``sqlite:///results/mlflow.db``):
the store finds them wherever the study's folder is copied or DVC-pulled, and no run writes
outside the results folder it was given (`relocate` converts a store that holds absolute paths).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from detnas import cost, layout
from detnas.io import load_json, save_json

log = logging.getLogger(__name__)

TAG_KEYS = ("stage", "ablation", "detector", "dataset", "space", "arch", "seed", "config_hash",
            "git_commit")
STATUSES = ("FINISHED", "FAILED", "KILLED")

ABLATION_VIEW = "ablation"
"""The experiment's shared view: ``#/experiments/<id>/runs?viewStateShareKey=ablation``."""
VIEW_METRICS = ("mmap", "ap50", "ap75", "voc07", "top1", "cost.gpu_hours")


class NullTracker:
    """Tracking switched off: accepts every call and sends nothing; meters the stage's cost."""

    run_id: str | None = None

    def __init__(self, meter: cost.Meter | None = None):
        self.meter = meter or cost.Meter()

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def set_tags(self, tags: dict[str, Any]) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def log_dict(self, obj: dict, name: str) -> None: ...
    def flush(self) -> None: ...
    def finish(self, status: str = "FINISHED") -> None: ...

    def cost(self) -> dict:
        """The stage's cost so far (`detnas.cost.Meter.read`), logged as ``cost.*`` metrics: the
        ``cost`` block of the stage's ``metrics.json``."""
        record = self.meter.read()
        self.log_metrics({f"cost.{k}": v for k, v in cost.numbers(record).items()})
        return record

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.finish("FAILED" if exc_type else "FINISHED")


class MlflowTracker(NullTracker):
    """A child run of the pipeline's parent run."""

    def __init__(self, uri: str, experiment: str, run_name: str, tags: dict[str, Any],
                 parent_run_id: str | None = None, flush_every: int = 50,
                 meter: cost.Meter | None = None, results: str | Path | None = None):
        """``results``: the study's results folder, where a local store keeps the run's artifacts
        (`ARTIFACTS`); the run is refused where they would land outside it."""
        from mlflow.tracking import MlflowClient

        super().__init__(meter)
        self.client = MlflowClient(tracking_uri=uri)
        exp = _experiment(self.client, uri, experiment, results)
        if results is not None:  # a run's artifacts go under its experiment's location
            _check_inside(uri, exp.artifact_location, results)
        all_tags = {k: str(v) for k, v in tags.items()}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(exp.experiment_id, run_name=run_name, tags=all_tags)
        self.run_id = run.info.run_id
        self.flush_every = flush_every
        self._buffer: list = []

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._buffer += [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        if len(self._buffer) >= self.flush_every:
            self.flush()

    def set_tags(self, tags: dict[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dict(self, obj: dict, name: str) -> None:
        """``obj`` as the artifact ``name`` (``.yaml`` / ``.json``)."""
        self.client.log_dict(self.run_id, obj, name)

    def flush(self) -> None:
        for i in range(0, len(self._buffer), 1000):
            self.client.log_batch(self.run_id, metrics=self._buffer[i : i + 1000])
        self._buffer = []

    def finish(self, status: str = "FINISHED") -> None:
        self.flush()
        self.client.set_terminated(self.run_id, status=status)


def _parent_file(results: str | Path) -> Path:
    return Path(results) / layout.TRACKING


ARTIFACTS = "mlartifacts"
"""The folder under the results where a local store keeps its runs' artifacts (copies of
outputs: readers of the results skip it)."""


def _is_local(uri: str) -> bool:
    return uri.startswith("sqlite:")


def _artifact_root(uri: str, results: str | Path) -> str | None:
    """Where a new experiment keeps its artifacts: `ARTIFACTS` under the results for a local
    store (versioned with the results by DVC, not ``./mlruns``), relative to the working
    directory where the results lie under it; a tracking server's own root (None)."""
    if not _is_local(uri):
        return None
    root, cwd = Path(results, ARTIFACTS), Path.cwd()
    if root.is_absolute() and root.is_relative_to(cwd):
        root = root.relative_to(cwd)
    return root.as_posix()


def _experiment(client, uri: str, experiment: str, results: str | Path | None):
    """The MLflow experiment ``experiment``, created where missing with its artifacts at
    `_artifact_root` (MLflow makes a relative location absolute on creation: the relative one is
    written back)."""
    exp = client.get_experiment_by_name(experiment)
    if exp:
        return exp
    root = _artifact_root(uri, results) if results is not None else None
    exp = client.get_experiment(client.create_experiment(experiment, root))
    if root is not None and exp.artifact_location != root:
        _rewrite_locations(uri, exp.experiment_id, exp.artifact_location, root)
        exp = client.get_experiment(exp.experiment_id)
    return exp


def _rewrite_locations(uri: str, exp_id: str, old: str, new: str) -> None:
    """Replace the prefix ``old`` by ``new`` in the artifact locations of experiment ``exp_id``
    and of its runs, in the SQL store at ``uri`` (MLflow has no API to move them)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri)
    params = {"id": exp_id, "old": old, "new": new}
    try:
        with engine.begin() as db:
            db.execute(sqlalchemy.text("UPDATE experiments SET artifact_location = :new "
                                       "WHERE experiment_id = :id"), params)
            db.execute(sqlalchemy.text(
                "UPDATE runs SET artifact_uri = :new || substr(artifact_uri, length(:old) + 1) "
                "WHERE experiment_id = :id AND substr(artifact_uri, 1, length(:old)) = :old"),
                params)
    finally:
        engine.dispose()


def _check_inside(uri: str, artifact_uri: str, results: str | Path) -> None:
    """Refuse artifacts of a local store that would land outside the results folder
    ``results`` (a store recorded elsewhere, before its locations were relative)."""
    from mlflow.utils.file_utils import local_file_uri_to_path

    if not _is_local(uri):
        return
    where = Path(local_file_uri_to_path(artifact_uri)).resolve()
    if not where.is_relative_to(Path(results).resolve()):
        raise ValueError(f"MLflow store {uri}: artifacts would go to {where}, outside "
                         f"the results folder {results} (a store recorded in another folder): "
                         "run `detnas tracking relocate --config CONFIG` in the study's folder")


def relocate(uri: str, experiment: str, results: str | Path) -> tuple[str, str] | None:
    """Point the artifact locations of ``experiment`` and its runs in the local store at ``uri``
    to `ARTIFACTS` under ``results`` (relative, as a new experiment has them): for a store that
    holds the absolute paths of the folder it was recorded in. Returns ``(old, new)`` root, None
    where there is nothing to change (a tracking server, no such experiment, already there).
    """
    from mlflow.tracking import MlflowClient

    root = _artifact_root(uri, results)
    exp = MlflowClient(tracking_uri=uri).get_experiment_by_name(experiment) if root else None
    if exp is None or exp.artifact_location == root:
        return None
    _rewrite_locations(uri, exp.experiment_id, exp.artifact_location, root)
    return exp.artifact_location, root


def _ablation_view() -> str:
    """The UI state of `ABLATION_VIEW`: child runs grouped by the ``ablation`` tag, with the stage
    tags and the AP (and top-1, GPU-hours) metric columns (the MLflow UI's shared-view format)."""
    import json

    columns = [f"tags.`{t}`" for t in ("stage", "dataset", "detector", "arch")]
    columns += [f"metrics.`{m}`" for m in VIEW_METRICS]
    group = {"mode": "tag", "groupByData": "ablation"}
    return json.dumps({"selectedColumns": columns,
                       "groupBy": {"aggregateFunction": "average", "groupByKeys": [group]}})


def _parent_id(results: str | Path) -> str | None:
    path = _parent_file(results)
    return load_json(path).get("parent_run_id") if path.exists() else None


def init_parent(uri: str, experiment: str, results: str | Path, run_name: str,
                tags: dict[str, Any]) -> str:
    """Create the store, the experiment (with its `ABLATION_VIEW`) and the pipeline's parent run
    (once per results folder)."""
    path = _parent_file(results)
    if path.exists():
        return load_json(path)["parent_run_id"]
    tracker = MlflowTracker(uri, experiment, run_name, {**tags, "stage": "pipeline"},
                            results=results)
    exp_id = tracker.client.get_experiment_by_name(experiment).experiment_id
    tracker.client.set_experiment_tag(exp_id, f"mlflow.sharedViewState.{ABLATION_VIEW}",
                                      _ablation_view())
    save_json(path, {"tracking_uri": uri, "experiment": experiment,
                     "parent_run_id": tracker.run_id})
    return tracker.run_id


def finish_parent(results: str | Path, status: str) -> str | None:
    """End the pipeline's parent run with ``status`` (FINISHED, FAILED, KILLED); returns its id,
    None where the study has no parent run (tracking off, or ``tracking init`` never ran)."""
    from mlflow.tracking import MlflowClient

    if status not in STATUSES:
        raise ValueError(f"--status: {status!r} ({', '.join(STATUSES)})")
    path = _parent_file(results)
    if not path.exists():
        return None
    parent = load_json(path)
    if "parent_run_id" not in parent:
        return None
    MlflowClient(parent["tracking_uri"]).set_terminated(parent["parent_run_id"], status=status)
    return parent["parent_run_id"]


def start(cfg, run_name: str, tags: dict[str, Any], gpus: int = 0,
          arch: dict | None = None) -> NullTracker:
    """A tracker for one stage run of study config ``cfg`` (a `detnas.config.StudyConfig`), on
    ``gpus`` GPUs (`detnas.cost`); logs the resolved config and ``arch`` (a backbone spec) as
    artifacts."""
    from detnas.config import to_dict

    meter = cost.Meter(gpus, tags)
    if not cfg.tracking.enabled:
        return NullTracker(meter)
    tracker = MlflowTracker(cfg.tracking.uri, cfg.tracking.experiment, run_name, tags,
                            _parent_id(cfg.results), meter=meter, results=cfg.results)
    tracker.log_dict(to_dict(cfg), "config.yaml")
    if arch is not None:
        tracker.log_dict(arch, "arch.json")
    return tracker


def log_files(uri: str, experiment: str, results: str | Path, run_id: str | None, run_name: str,
              tags: dict[str, Any], files: list[Path], artifact_path: str) -> str:
    """Log ``files`` as artifacts (under ``artifact_path``) of run ``run_id``, the stage run that
    produced their input, or, where none is recorded, of a new child run ``run_name`` of the
    study's parent run. Returns the run's id.

    Raises:
        ValueError: ``run_id`` is not in the store at ``uri``, or its artifacts lie outside
            ``results`` (a local store recorded in another folder).
    """
    if run_id is None:
        with MlflowTracker(uri, experiment, run_name, tags, _parent_id(results),
                           results=results) as tracker:
            for path in files:
                tracker.log_artifact(path, artifact_path)
        return tracker.run_id
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ValueError(f"MLflow run {run_id} is not in the tracking store {uri} (run from the "
                         "study's folder, or turn tracking off)") from None
    _check_inside(uri, run.info.artifact_uri, results)
    for path in files:
        client.log_artifact(run_id, str(path), artifact_path)
    return run_id
