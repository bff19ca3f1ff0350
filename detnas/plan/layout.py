"""The results layout: where each stage writes in the results folder, and what a study writes.

Every path here is relative to the results folder (``config.results``). The workflow's rules build
their outputs and inputs from these functions and the file names below, the stages write through
them, and `outputs` lists what a study writes for its report: the report rule, the report's
collector (`detnas.report.results`) and scripts/collect_metrics.py read that one list. A
function's arguments default to Snakemake wildcards (``"{dataset}"``), so ``search_dir()`` is a
rule's output pattern and ``search_dir("synth", "fpn", "detnas")`` one concrete folder. Which
folders a row has follows from its record (`detnas.plan.study`). Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

from detnas.plan import study

# The files a command writes into its --out folder (writers and readers name them from here).
CHECKPOINT = "checkpoint.pt"  # a trained model (detnas.nets.models.load_model)
METRICS = "metrics.json"  # a stage's numbers, tags, cost and provenance
ARCH = "arch.json"  # an architecture: a search's winner, a baseline's or NATS's backbone spec
HISTORY = "history.csv"  # every candidate a search evaluated
RANK = "rank.json"  # the ranking check
STAGE_CONFIG = "config.yaml"  # a training stage's resolved config with its provenance
TRAIN_FILES = (CHECKPOINT, METRICS)  # train supernet | classifier | detector
SEARCH_FILES = (ARCH, HISTORY, METRICS)  # search evolution | random
SPLIT_FILES = ("instances_supernet.json", "instances_search.json")  # data split
REPORT_MD, REPORT_HTML, TABLES, FIGURES = "report.md", "report.html", "tables.json", "figures"
REPORT_FILES = (REPORT_MD, REPORT_HTML, TABLES)  # report (and its FIGURES folder)
RANK_FILES = (RANK,)  # rank

CONFIG = "config.yaml"  # the config of this results folder, as the workflow resolved it
TRACKING = "tracking.json"  # the MLflow parent run of the study
TRACKING_SERVER = "tracking-server"  # the study's MLflow server (detnas.run.tracking_server)
ARTIFACTS = "mlartifacts"
"""The folder under the results where the study's MLflow runs keep their artifacts (a local store
or the study's own server; copies of outputs: readers of the results skip it)."""
LATENCY_TABLE = "latency/table.json"
REPORT_DIR = "report"
CLASSIFICATION_DATA = "data/classification"


def _row(name: str) -> study.Row | None:
    """The paper's row ``name`` (a row a config adds, or a wildcard, is searched per dataset and
    detector: None)."""
    return next((r for r in study.ROWS if r.name == name), None)


def replicate_dir(folder: str, rep: int | str | None = None) -> str:
    """The folder of replicate ``rep`` of a stage whose first replicate writes to ``folder``:
    ``folder/rep{K}`` (None or 0: ``folder`` itself). A stage's replicates share its data,
    splits and supernets; `detnas.plan.config.StudyConfig.run_seed` seeds each."""
    return folder if rep in (None, 0, "0") else f"{folder}/rep{rep}"


def data_dir(dataset: str = "{dataset}") -> str:
    """Where the workflow generates a synthetic detection set (in COCO layout)."""
    return f"data/{dataset}"


def split_file(name: str, dataset: str = "{dataset}") -> str:
    """One of the two halves of a dataset's training set: ``supernet`` or ``search``."""
    return f"splits/{dataset}/instances_{name}.json"


def supernet_dir(dataset: str = "{dataset}", detector: str = "{detector}",
                 init: str = "{init}") -> str:
    """A detection supernet (``init``: pretrained or scratch); ``supernet/cls`` for the
    classification supernet is `classification_supernet_dir`."""
    return f"supernet/{dataset}/{detector}/{init}"


def classification_supernet_dir() -> str:
    return "supernet/cls"


def search_name(dataset: str = "{dataset}", detector: str = "{detector}",
                method: str = "{ablation}") -> str:
    """A search's name, ``dataset/detector/method``; a search of one architecture for the whole
    study (ClsNASNet's, method clsnas) is ``cls/<method>``. The report's tables and the DVC
    plots are keyed by it."""
    row = _row(method)
    return f"cls/{method}" if row and row.shared else f"{dataset}/{detector}/{method}"


def search_dir(dataset: str = "{dataset}", detector: str = "{detector}",
               method: str = "{ablation}", rep: int | str | None = None) -> str:
    """A search's folder (SEARCH_FILES); ``rep``: its run of that search seed."""
    return replicate_dir(f"search/{search_name(dataset, detector, method)}", rep)


def baseline_arch(row: str = "{baseline}") -> str:
    return f"archs/{row}/{ARCH}"


def nats_dir(dataset: str = "{dataset}", detector: str = "{detector}",
             rep: int | str | None = None) -> str:
    """The NATS search of a dataset and detector (of replicate ``rep``); its derived network is
    `ARCH`."""
    return replicate_dir(f"nats/{dataset}/{detector}", rep)


def arch_json(row: str, dataset: str = "{dataset}", detector: str = "{detector}",
              rep: int | str | None = None) -> str:
    """Where the architecture of a row of the results table comes from; ``rep``: the run of its
    search (a searched row: the search seed, `StudyConfig.search_replicate`; NATS: the
    replicate)."""
    kind = _row(row).kind if _row(row) else "searched"
    if kind == "baseline":
        return baseline_arch(row)
    if kind == "nats":
        return f"{nats_dir(dataset, detector, rep)}/{ARCH}"
    return f"{search_dir(dataset, detector, row, rep)}/{ARCH}"


def classifier_dir(row: str = "{row}", dataset: str = "{dataset}",
                   detector: str = "{detector}", rep: int | str | None = None) -> str:
    """The ImageNet-style retraining a row's detector starts from (TRAIN_FILES), of replicate
    ``rep``: its classifier row's (NATS reuses ResNet-50's: it keeps its weights); the rows of
    one arch per dataset and detector keep theirs in the ``cls/`` of their detection folder."""
    source = _row(_row(row).classifier_row) if _row(row) else None
    if source and source.shared:
        return shared_classifier_dir(source.name, rep)
    return f"{detection_dir(row, dataset, detector, rep)}/cls"


def shared_classifier_dir(row: str = "{row}", rep: int | str | None = None) -> str:
    """`classifier_dir` as a pattern over the shared rows only (one wildcard, row)."""
    return f"{replicate_dir(f'retrain/{row}', rep)}/cls"


def detection_dir(row: str = "{row}", dataset: str = "{dataset}",
                  detector: str = "{detector}", rep: int | str | None = None) -> str:
    """The detection retraining of a row on a dataset with a detector (TRAIN_FILES), of
    replicate ``rep`` (`replicate_dir`)."""
    return replicate_dir(f"retrain/{row}/{dataset}/{detector}", rep)


def rank_dir(dataset: str = "{dataset}", detector: str = "{detector}") -> str:
    """The ranking check of a dataset and detector: its `RANK`."""
    return f"rank/{dataset}/{detector}"


@dataclass(frozen=True)
class Output:
    """A file a study writes for its report (`outputs`)."""

    kind: str  # classifier | detection | search | search_arch | rank | nats | supernet
    path: str  # relative to the results folder
    row: str = ""
    dataset: str = ""  # "" for a file of the whole study (a shared classifier, ClsNASNet)
    detector: str = ""
    rep: int = 0  # its replicate (a search's: its search seed)
    init: str = ""  # supernet: pretrained | scratch


def outputs(cfg) -> list[Output]:
    """Every file of study ``cfg`` (a `detnas.plan.config.StudyConfig`) that its report reads, in
    the order the report reads them: the shared rows' classifiers (each replicate); per dataset
    and detector each row's detection retrainings (its replicates after it), each searched
    row's classifiers, histories and winners (one per search seed), the ranking check, NATS's
    networks and the detection supernets; then the searches of one architecture for the whole
    study.

    ``kind``: ``classifier`` and ``detection`` (their `METRICS`), ``search`` (`HISTORY`) and
    ``search_arch`` (its `ARCH`), ``rank`` (`RANK`), ``nats`` (the row's `ARCH`),
    ``supernet`` (`METRICS`: only its cost is read, found by the ledger under the results).
    """
    rows = study.rows(cfg)
    reps, searches = range(cfg.replicates), range(cfg.search_seeds)
    ranked = cfg.rank.checked_detectors(list(cfg.detectors)) if cfg.rank.enabled else []
    out = [Output("classifier", f"{shared_classifier_dir(r.name, k)}/{METRICS}", r.name, rep=k)
           for r in rows if r.shared for k in reps]
    for ds in cfg.datasets:
        for det in cfg.detectors:
            cell = {"dataset": ds, "detector": det}
            out += [Output("detection", f"{detection_dir(r.name, ds, det, k)}/{METRICS}",
                           r.name, **cell, rep=k) for r in rows for k in reps]
            for r in (r for r in rows if r.cell_search):
                out += [Output("classifier", f"{classifier_dir(r.name, ds, det, k)}/{METRICS}",
                               r.name, **cell, rep=k) for k in reps]
                for k in searches:
                    folder = search_dir(ds, det, r.name, k)
                    out += [Output("search", f"{folder}/{HISTORY}", r.name, **cell, rep=k),
                            Output("search_arch", f"{folder}/{ARCH}", r.name, **cell, rep=k)]
            if det in ranked:
                out.append(Output("rank", f"{rank_dir(ds, det)}/{RANK}", **cell))
            out += [Output("nats", arch_json(r.name, ds, det, k), r.name, **cell, rep=k)
                    for r in rows if r.kind == "nats" for k in reps]
            out += [Output("supernet", f"{supernet_dir(ds, det, init)}/{METRICS}", **cell,
                           init=init) for init in study.DETECTION_SUPERNETS]
    for r in rows:
        if r.kind == "searched" and r.shared:
            for k in searches:
                folder = search_dir("", "", r.name, k)
                out += [Output("search", f"{folder}/{HISTORY}", r.name, rep=k),
                        Output("search_arch", f"{folder}/{ARCH}", r.name, rep=k)]
    return out
