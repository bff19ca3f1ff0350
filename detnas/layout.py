"""The results layout: the rows of the study, and where each stage writes in the results folder.

Every path here is relative to the results folder (``config.results``). The workflow's rules build
their outputs and inputs from these functions, the report reads through them, and so do
scripts/collect_metrics.py and the test stub. A function's arguments default to Snakemake
wildcards (``"{dataset}"``), so ``search_dir()`` is a rule's output pattern and
``search_dir("synth", "fpn", "detnas")`` one concrete folder. Torch-free.
"""

from __future__ import annotations

BASELINES = ("shufflenetv2", "resnet50")
"""Hand-crafted rows: their arch.json is written by `detnas arch spec`, not searched."""
SHARED_ROWS = (*BASELINES, "clsnas")
"""Rows with one architecture (and one retrained classifier) for every dataset and detector."""
SEARCHED_ROWS = ("detnas", "scratch", "random")
"""Rows searched per dataset and detector, on the pre-trained (detnas, random) or the scratch
supernet."""
ROWS = (*SHARED_ROWS, *SEARCHED_ROWS, "nats")
"""Every row of the results table (NATS: one dilated ResNet-50 per dataset and detector)."""
SEARCH_SUPERNET = {"detnas": "pretrained", "scratch": "scratch", "random": "pretrained"}
"""The detection supernet each searched row is searched on."""
SUPERNET_INITS = ("pretrained", "scratch")

# The files a command writes into its --out folder.
TRAIN_FILES = ("checkpoint.pt", "metrics.json")  # train supernet | classifier | detector
SEARCH_FILES = ("arch.json", "history.csv", "metrics.json")  # search evolution | random
SPLIT_FILES = ("instances_supernet.json", "instances_search.json")  # data split
REPORT_FILES = ("report.md", "report.html", "tables.json")  # report (and its figures/ folder)
RANK_FILES = ("rank.json",)  # rank

CONFIG = "config.yaml"  # the config of this results folder, as the workflow resolved it
TRACKING = "tracking.json"  # the MLflow parent run of the study
LATENCY_TABLE = "latency/table.json"
REPORT_DIR = "report"
CLASSIFICATION_DATA = "data/classification"


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
    """A search's name, ``dataset/detector/method``; ClsNASNet's (method clsnas) is
    ``cls/clsnas``. The report's tables and the DVC plots are keyed by it."""
    return "cls/clsnas" if method == "clsnas" else f"{dataset}/{detector}/{method}"


def search_dir(dataset: str = "{dataset}", detector: str = "{detector}",
               method: str = "{ablation}") -> str:
    """A search's folder (SEARCH_FILES)."""
    return f"search/{search_name(dataset, detector, method)}"


def baseline_arch(row: str = "{baseline}") -> str:
    return f"archs/{row}/arch.json"


def nats_dir(dataset: str = "{dataset}", detector: str = "{detector}") -> str:
    """The NATS search of a dataset and detector; its derived network is ``arch.json``."""
    return f"nats/{dataset}/{detector}"


def arch_json(row: str, dataset: str = "{dataset}", detector: str = "{detector}") -> str:
    """Where the architecture of a row of the results table comes from."""
    if row in BASELINES:
        return baseline_arch(row)
    if row == "nats":
        return f"{nats_dir(dataset, detector)}/arch.json"
    return f"{search_dir(dataset, detector, row)}/arch.json"


def classifier_dir(row: str = "{row}", dataset: str = "{dataset}",
                   detector: str = "{detector}") -> str:
    """The ImageNet-style retraining of a row (TRAIN_FILES). NATS reuses ResNet-50's (it keeps
    its weights); the searched rows, one arch per dataset and detector, keep theirs in the
    ``cls/`` of their detection folder."""
    if row == "nats":
        row = "resnet50"
    if row in SHARED_ROWS:
        return shared_classifier_dir(row)
    return f"{detection_dir(row, dataset, detector)}/cls"


def shared_classifier_dir(row: str = "{row}") -> str:
    """`classifier_dir` as a pattern over the shared rows only (one wildcard, row)."""
    return f"retrain/{row}/cls"


def detection_dir(row: str = "{row}", dataset: str = "{dataset}",
                  detector: str = "{detector}", seed: int | str | None = None) -> str:
    """The detection retraining of a row on a dataset with a detector (TRAIN_FILES): with the
    study's seed, or (``seed``) one of ``retrain_seeds``, in its ``seed{N}/``."""
    folder = f"retrain/{row}/{dataset}/{detector}"
    return folder if seed is None else f"{folder}/seed{seed}"


def rank_dir(dataset: str = "{dataset}", detector: str = "{detector}") -> str:
    """The ranking check of a dataset and detector: its ``rank.json``."""
    return f"rank/{dataset}/{detector}"
