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
On a cluster a study logs over HTTP to a tracking server instead: its own (``tracking.uri:
server``, `detnas.run.tracking_server`: ``detnas tracking serve``, whose URL and credentials the
results folder keeps) or a site's (``http(s)://...``); that server keeps the artifacts.

Tracking records the work and never costs it: a store that cannot be written fails as the stage
starts, before any training (one line naming the URI); a store that fails later (a full disk, a
lost server) is warned about once, the stage finishes and keeps its outputs, and what could not
be sent is kept in the stage's folder (`PENDING`) for ``detnas tracking replay FOLDER``.
"""

from __future__ import annotations

import logging
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from detnas import cost
from detnas.io import load_json, save_json
from detnas.plan import layout
from detnas.plan.config import SERVER
from detnas.plan.layout import ARTIFACTS
from detnas.run import tracking_server

log = logging.getLogger(__name__)

TAG_KEYS = ("stage", "ablation", "detector", "dataset", "space", "arch", "seed", "replicate",
            "config_hash",
            "git_commit")
"""The tags of every stage run (`stage_tags`): ``ablation`` is the row of the study it belongs to
(`detnas.plan.study`), the tag `ABLATION_VIEW` groups by."""
STATUSES = ("FINISHED", "FAILED", "KILLED")

ABLATION_VIEW = "ablation"
"""The experiment's shared view: ``#/experiments/<id>/runs?viewStateShareKey=ablation``."""
VIEW_METRICS = ("mmap", "ap50", "ap75", "voc07", "top1", "cost.gpu_hours")

PENDING = "tracking_pending.json"
"""What a stage run could not send to its store (the calls, in order), in its output folder."""


def _reason(e: BaseException) -> str:
    """One line of an error from the store: the database's own words where SQLAlchemy quotes
    them (``(sqlite3.OperationalError) attempt to write a readonly database``), else the first
    line, shortened."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    quoted = [line for line in lines if re.match(r"\([\w.]+Error\) ", line)]
    text = (quoted or lines or [""])[0]
    return f"{type(e).__name__}: {text[:200]}"


@contextmanager
def _quiet():
    """MLflow logs a store's SQL errors with their traceback before raising them: the error
    this module raises or warns with says it in one line instead."""
    db_log = logging.getLogger("mlflow.store.db.utils")
    level = db_log.level
    db_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        db_log.setLevel(level)


@contextmanager
def _store(uri: str):
    """Turn any failure to reach or write the store at ``uri`` into one ValueError naming it."""
    try:
        with _quiet():
            yield
    except ValueError:
        raise
    except Exception as e:  # MLflow, SQLAlchemy, OS and HTTP errors: many kinds
        raise ValueError(f"tracking.uri {uri}: the MLflow store cannot be written "
                         f"({_reason(e)}); repair it, point tracking.uri elsewhere, or set "
                         "tracking.enabled: false") from None


def connect(uri: str, results: str | Path | None = None):
    """An ``MlflowClient`` of the store ``uri``. For ``server`` (`detnas.plan.config.SERVER`), the
    study's own server: its URL and credentials come from the results folder ``results``
    (`tracking_server.connection`), the credentials to MLflow's HTTP client through this
    process's environment (``MLFLOW_TRACKING_USERNAME``/``PASSWORD``, which it reads per request).

    Raises:
        ValueError: ``server`` without a running server of ``results`` (one line).
    """
    from mlflow.tracking import MlflowClient

    if uri == SERVER:
        if results is None:
            raise ValueError(f"tracking.uri {uri}: the study's results folder is not known here")
        uri, user, password = tracking_server.connection(results)
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = (
            user, password)
    return MlflowClient(tracking_uri=uri)


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
        # an exception may say how the run ended (`detnas.run.stop.Stopped`: KILLED)
        self.finish(getattr(exc, "status", "FAILED") if exc_type else "FINISHED")


class MlflowTracker(NullTracker):
    """A child run of the pipeline's parent run.

    Creating it checks the store (a ValueError naming the URI when it cannot be written). After
    that, a failing store costs nothing but the record: the first failure is warned about, that
    call and every later one are kept, and `finish` writes them to ``out``/`PENDING`.
    """

    def __init__(self, uri: str, experiment: str, run_name: str, tags: dict[str, Any],
                 parent_run_id: str | None = None, flush_every: int = 50,
                 meter: cost.Meter | None = None, results: str | Path | None = None,
                 out: str | Path | None = None):
        """``results``: the study's results folder, where a local store keeps the run's artifacts
        (`ARTIFACTS`; the run is refused where they would land outside it) and the study's own
        server its credentials (`connect`)."""
        super().__init__(meter)
        self.uri, self.out = uri, Path(out) if out is not None else None
        self.results = results
        all_tags = {k: str(v) for k, v in tags.items()}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        with _store(uri):
            self.client = connect(uri, results)
            exp = _experiment(self.client, uri, experiment, results)
            if results is not None:  # a run's artifacts go under its experiment's location
                _check_inside(uri, exp.artifact_location, results)
            self.run_id = self.client.create_run(exp.experiment_id, run_name=run_name,
                                                 tags=all_tags).info.run_id
        self.flush_every = flush_every
        self._buffer: list = []
        self.pending: list[dict] = []
        self.error: str | None = None

    def _send(self, call: str, *args) -> None:
        """Send ``call`` (a `replay_call` name) to the store; once the store has failed, keep it
        (and every later call) for `replay` instead."""
        if self.error is None:
            try:
                with _quiet():
                    replay_call(self.client, self.run_id, call, args, self.out)
                return
            except Exception as e:  # the store's failure must not cost the stage
                self.error = _reason(e)
                log.warning("tracking: the MLflow store %s failed (%s); the stage goes on, and "
                            "what it cannot log is kept in %s for `detnas tracking replay`",
                            self.uri, self.error, self.out / PENDING if self.out else "memory")
        self.pending.append({"call": call, "args": list(args)})

    def log_params(self, params: dict[str, Any]) -> None:
        self._send("params", {k: str(v)[:6000] for k, v in params.items()})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        now = int(time.time() * 1000)
        self._buffer += [[k, float(v), now, step or 0] for k, v in metrics.items()]
        if len(self._buffer) >= self.flush_every:
            self.flush()

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._send("tags", {k: str(v) for k, v in tags.items()})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if self.out is not None and path.resolve().is_relative_to(self.out.resolve()):
            path = path.resolve().relative_to(self.out.resolve())  # valid where the folder goes
        self._send("artifact", str(path), artifact_path)

    def log_dict(self, obj: dict, name: str) -> None:
        """``obj`` as the artifact ``name`` (``.yaml`` / ``.json``)."""
        self._send("dict", obj, name)

    def flush(self) -> None:
        if self._buffer:
            self._send("metrics", self._buffer)
        self._buffer = []

    def finish(self, status: str = "FINISHED") -> None:
        self.flush()
        self._send("terminated", status)
        if self.pending:
            self._keep_pending()

    def _keep_pending(self) -> None:
        """Write the calls the store did not take to ``out``/`PENDING` (warns where it cannot:
        tracking never turns a finished stage into a failed one)."""
        from detnas.io import save_json

        record = {"tracking_uri": self.uri, "run_id": self.run_id, "error": self.error,
                  "calls": self.pending}
        if self.uri == SERVER:  # where replay finds the server's credentials
            record["results"] = str(self.results)
        if self.out is None:
            log.warning("tracking: %d calls to run %s were not logged (no folder to keep them)",
                        len(self.pending), self.run_id)
            return
        try:
            save_json(self.out / PENDING, record)
        except (ValueError, TypeError) as e:
            log.warning("tracking: %d calls to run %s were not logged, nor kept: %s",
                        len(self.pending), self.run_id, e)
            return
        log.warning("tracking: %d calls to run %s kept in %s: log them with `detnas tracking "
                    "replay %s`", len(self.pending), self.run_id, self.out / PENDING, self.out)


def replay_call(client, run_id: str, call: str, args: list | tuple,
                folder: Path | None) -> None:
    """Send one tracker call to run ``run_id`` (artifact paths relative to ``folder``)."""
    from mlflow.entities import Metric, Param

    if call == "params":
        items = [Param(k, v) for k, v in args[0].items()]
        for i in range(0, len(items), 100):
            client.log_batch(run_id, params=items[i : i + 100])
    elif call == "metrics":
        items = [Metric(k, v, t, s) for k, v, t, s in args[0]]
        for i in range(0, len(items), 1000):
            client.log_batch(run_id, metrics=items[i : i + 1000])
    elif call == "tags":
        for k, v in args[0].items():
            client.set_tag(run_id, k, v)
    elif call == "artifact":
        path = Path(args[0]) if folder is None else folder / args[0]
        client.log_artifact(run_id, str(path), args[1])
    elif call == "dict":
        client.log_dict(run_id, args[0], args[1])
    elif call == "terminated":
        client.set_terminated(run_id, status=args[0])
    else:
        raise ValueError(f"unknown tracking call {call!r}")


def replay(folder: str | Path) -> int:
    """Send what a stage run could not log (``folder``/`PENDING`) to its store; returns the
    number of calls sent. The file is removed once every call went through; on a new failure it
    keeps the calls not yet sent.

    Raises:
        ValueError: no such file, or the store failed again (naming its URI).
    """
    from detnas.io import save_json

    folder = Path(folder)
    path = folder / PENDING
    record = load_json(path)
    calls = record["calls"]
    store = connect(record["tracking_uri"], record.get("results"))
    for i, entry in enumerate(calls):
        try:
            with _store(record["tracking_uri"]):
                replay_call(store, record["run_id"], entry["call"], entry["args"], folder)
        except ValueError:
            save_json(path, {**record, "calls": calls[i:]})
            raise
    path.unlink()
    log.info("tracking: %d calls logged to run %s", len(calls), record["run_id"])
    return len(calls)


def _parent_file(results: str | Path) -> Path:
    return Path(results) / layout.TRACKING


def _is_local(uri: str) -> bool:
    return uri.startswith("sqlite:")


DEFAULT_EXPERIMENT_ID = "0"  # MLflow's ``Default`` experiment, in every store


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
    if root is not None:
        _relocate_default(client, uri, root)
        if exp.artifact_location != root:
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
    client = MlflowClient(tracking_uri=uri) if root else None
    exp = client.get_experiment_by_name(experiment) if client else None
    if exp is None:
        return None
    _relocate_default(client, uri, root)
    if exp.artifact_location == root:
        return None
    _rewrite_locations(uri, exp.experiment_id, exp.artifact_location, root)
    return exp.artifact_location, root


def _relocate_default(client, uri: str, root: str) -> None:
    """MLflow creates the ``Default`` experiment (id 0) of a new store with an absolute location
    (``$PWD/mlruns/0``): point it at ``0/`` under the study's artifact root, as the study's own
    experiment is, so that a copied store holds no path of the folder it was recorded in."""
    default = client.get_experiment(DEFAULT_EXPERIMENT_ID)
    if default is not None and default.artifact_location != f"{root}/0":
        _rewrite_locations(uri, DEFAULT_EXPERIMENT_ID, default.artifact_location, f"{root}/0")


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
    with _store(uri):
        exp_id = tracker.client.get_experiment_by_name(experiment).experiment_id
        tracker.client.set_experiment_tag(exp_id, f"mlflow.sharedViewState.{ABLATION_VIEW}",
                                          _ablation_view())
    save_json(path, {"tracking_uri": uri, "experiment": experiment,
                     "parent_run_id": tracker.run_id})
    return tracker.run_id


def finish_parent(results: str | Path, status: str) -> str | None:
    """End the pipeline's parent run with ``status`` (FINISHED, FAILED, KILLED); returns its id,
    None where the study has no parent run (tracking off, or ``tracking init`` never ran)."""
    if status not in STATUSES:
        raise ValueError(f"--status: {status!r} ({', '.join(STATUSES)})")
    path = _parent_file(results)
    if not path.exists():
        return None
    parent = load_json(path)
    if "parent_run_id" not in parent:
        return None
    try:  # the study's end: a store that fails now costs a status, not the study
        connect(parent["tracking_uri"], results).set_terminated(parent["parent_run_id"],
                                                                status=status)
    except Exception as e:
        log.warning("tracking: the parent run %s could not be ended %s in %s (%s)",
                    parent["parent_run_id"], status, parent["tracking_uri"], _reason(e))
        return None
    return parent["parent_run_id"]


def log_headline(results: str | Path, records: list[dict]) -> int:
    """Log the study's headline (`detnas.report.headline`: each row's figures, the seeds they
    rest on and their 95% interval with training and test noise) on the pipeline's parent run,
    as metrics ``<dataset>/<detector>/<row>/<field>``; returns how many. Nothing where the
    study has no parent run; a store that fails costs a warning, never the report."""
    from mlflow.entities import Metric

    path = _parent_file(results)
    parent = load_json(path) if path.exists() else {}
    if "parent_run_id" not in parent:
        return 0
    stamp = int(time.time() * 1000)
    metrics = [Metric(f"{r['dataset']}/{r['detector']}/{r['row']}/{field}", float(value), stamp, 0)
               for r in records for field, value in r.items()
               if field not in ("row", "name", "dataset", "detector") and value is not None]
    try:
        with _quiet():
            store = connect(parent["tracking_uri"], results)
            for i in range(0, len(metrics), 1000):  # MLflow's batch limit
                store.log_batch(parent["parent_run_id"], metrics=metrics[i:i + 1000])
    except Exception as e:
        log.warning("tracking: the headline could not be logged on the parent run %s in %s (%s)",
                    parent["parent_run_id"], parent["tracking_uri"], _reason(e))
        return 0
    return len(metrics)


def stage_tags(cfg, stage: str, resolved: dict | None = None, **tags: Any) -> dict[str, Any]:
    """The tags of a run of stage ``stage`` of study config ``cfg``: `TAG_KEYS` (the given ones:
    ablation, dataset, detector, space, arch; and the seed, the config's hash, the code's
    commit), then the stage's own (e.g. a search's ``strategy``). ``resolved``: ``cfg`` as
    `detnas.plan.typed.to_dict` gives it, where the caller has it (`detnas.run.record`)."""
    from detnas.plan.typed import config_hash
    from detnas.provenance import git_commit

    given = {"stage": stage, **tags, "seed": cfg.run_seed, "replicate": cfg.replicate,
             "config_hash": config_hash(cfg if resolved is None else resolved),
             "git_commit": git_commit()}
    return {k: given[k] for k in TAG_KEYS if k in given} | {
        k: v for k, v in given.items() if k not in TAG_KEYS}


def start_stage(cfg, stage: str, tags: dict[str, Any], *, name: str | None = None,
                gpus: int = 0, arch: dict | None = None, out: str | Path | None = None,
                main: bool = True, resolved: dict | None = None) -> NullTracker:
    """The tracker of one run of stage ``stage`` (every stage starts its tracking here, through
    its `detnas.run.record.StageRecord`): tagged with `stage_tags` (``tags``: the stage's
    ablation, dataset, detector, ...), named ``name`` (default ``<stage>:<ablation>``), the rest
    as `start`; a `NullTracker` on the processes of a multi-process stage other than the
    ``main`` one (which alone writes and tracks).

    Raises:
        ValueError: the store cannot be written (checked here, before the stage's work).
    """
    if not main:
        return NullTracker()
    tags = stage_tags(cfg, stage, resolved, **tags)
    return start(cfg, name or f"{stage}:{tags.get('ablation', '')}", tags, gpus, arch=arch,
                 out=out, resolved=resolved)


def start(cfg, run_name: str, tags: dict[str, Any], gpus: int = 0,
          arch: dict | None = None, out: str | Path | None = None,
          resolved: dict | None = None) -> NullTracker:
    """A tracker for one stage run of study config ``cfg`` (a `detnas.plan.config.StudyConfig`), on
    ``gpus`` GPUs (`detnas.cost`), writing into folder ``out``; logs the resolved config
    (``resolved``, else ``cfg``'s `detnas.plan.typed.to_dict`) and ``arch`` (a backbone spec)
    as artifacts.

    Raises:
        ValueError: the store cannot be written (checked here, before the stage's work).
    """
    from detnas.plan.typed import to_dict

    meter = cost.Meter(gpus, tags)
    if not cfg.tracking.enabled:
        return NullTracker(meter)
    uri = cfg.tracking.uri
    tracker = MlflowTracker(uri, cfg.tracking.experiment, run_name, tags,
                            _parent_id(cfg.results), meter=meter, results=cfg.results, out=out)
    with _store(uri):  # the artifact store too, before the work
        tracker.client.log_dict(tracker.run_id, to_dict(cfg) if resolved is None else resolved,
                                "config.yaml")
        if arch is not None:
            tracker.client.log_dict(tracker.run_id, arch, layout.ARCH)
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
        tracker = MlflowTracker(uri, experiment, run_name, tags, _parent_id(results),
                                results=results)
        with _store(uri):
            for path in files:
                tracker.client.log_artifact(tracker.run_id, str(path), artifact_path)
            tracker.client.set_terminated(tracker.run_id, "FINISHED")
        return tracker.run_id
    from mlflow.exceptions import MlflowException

    store = connect(uri, results)
    try:
        run = store.get_run(run_id)
    except MlflowException:
        raise ValueError(f"MLflow run {run_id} is not in the tracking store {uri} (run from the "
                         "study's folder, or turn tracking off)") from None
    _check_inside(uri, run.info.artifact_uri, results)
    with _store(uri):
        for path in files:
            store.log_artifact(run_id, str(path), artifact_path)
    return run_id
