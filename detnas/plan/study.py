"""The rows of the study: one record per row of the results table, from which the rest derives.

A row is the paper's table's unit: a backbone that is retrained (classification, then detection
per dataset and detector) and reported. Its record says how the backbone is found (a baseline's
spec, a search: its strategy, the supernet it searches, its settings; NATS), which retrained
classifier its detector starts from, and which rows it is compared with (and the paper's claim
for the comparison). Everything else derives from the records: the workflow's rules and their
wildcards (workflow/rules/*.smk), the results layout (`detnas.plan.layout.outputs`), the report's
rows, names and colours (`detnas.report`), the cost each row is charged (`upstream`), and the
MLflow grouping (every stage of a row is tagged ``ablation: <name>``).

The paper's rows are `ROWS`; a study config adds searched rows in its ``ablations`` section
(`detnas.plan.config.AblationConfig`; `rows` returns both). A row's ``name`` is its key everywhere:
the ``ablation`` tag, the ``{row}`` / ``{ablation}`` wildcards and the folders under results/.
Torch-free, and imports nothing of detnas: `detnas.plan.layout` and `detnas.plan.config` build on
it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

KINDS = ("baseline", "searched", "nats")
STRATEGIES = ("evolution", "random")  # a search's: the evolution, or random search with its budget


@dataclass(frozen=True)
class Supernet:
    """A supernet that searches score candidates on."""

    name: str  # its key: cls, or the {init} of a detection supernet (layout.supernet_dir)
    task: str  # classification | detection: the fitness of a search on it
    stage: str  # the stage that trains it (its cost records)
    tag: str  # the ablation tag of that stage (MLflow, cost records)
    init: str | None = None  # the supernet it starts from


SUPERNETS = {s.name: s for s in (
    Supernet("cls", "classification", "supernet-pretrain", "supernet"),
    Supernet("pretrained", "detection", "supernet-finetune", "detnas", init="cls"),
    Supernet("scratch", "detection", "supernet-finetune", "scratch"),
)}
"""The classification supernet (ImageNet pre-training, one path per step), the detection
supernet fine-tuned from it (DetNAS) and the one trained from scratch (DetNAS-scratch)."""
DETECTION_SUPERNETS = tuple(s.name for s in SUPERNETS.values() if s.task == "detection")
"""The detection supernets, one per dataset and detector each (the ``{init}`` wildcard)."""

SPECS = {"space": ("space",), "resnet": ("nats.depth", "nats.width")}
"""A baseline's spec kind -> the config keys its arch.json depends on: ``space`` (ShuffleNetV2:
every block the 3x3 choice of the config's space), ``resnet`` (torchvision ResNet at the NATS
depth and width); `detnas.run.train.baseline_spec` builds it."""


@dataclass(frozen=True)
class Row:
    """One row of the study.

    Attributes:
        name: the key (``ablation`` tag, wildcards, folders).
        title: the printed name (report, figures).
        kind: ``baseline`` (a hand-crafted arch), ``searched`` (a supernet search) or ``nats``
            (NATS's dilated ResNet, one per dataset and detector).
        colour: its colour in the figures (None: matplotlib's next).
        spec: a baseline's spec kind (`SPECS`).
        strategy: a search's strategy: ``evolution`` or ``random`` (the same budget).
        supernet: the supernet a row searches (`SUPERNETS`; its task is the fitness).
        overrides: ``(dotted config key, value)`` pairs of its search's settings (keys of
            ``search``; `detnas search --ablation <name>` applies them).
        classifier: the row whose retrained classifier its detector starts from ("": its own).
        compared_with: ``(row, the paper's claim)``: the rows its observations compare it
            with ("this row, +x over that one").
    """

    name: str
    title: str
    kind: str
    colour: str | None = None
    spec: str = ""
    strategy: str = "evolution"
    supernet: str = ""
    overrides: tuple[tuple[str, Any], ...] = ()
    classifier: str = ""
    compared_with: tuple[tuple[str, str], ...] = ()

    @property
    def fitness(self) -> str | None:
        """A search's fitness: ``detection`` or ``classification`` (the supernet's task)."""
        return SUPERNETS[self.supernet].task if self.kind == "searched" else None

    @property
    def shared(self) -> bool:
        """One architecture and one retrained classifier for every dataset and detector (the
        baselines, a classification search), not one per dataset and detector."""
        return self.kind == "baseline" or self.fitness == "classification"

    @property
    def cell_search(self) -> bool:
        """A search per dataset and detector (detection fitness)."""
        return self.fitness == "detection"

    @property
    def classifier_row(self) -> str:
        """The row whose retrained classifier this row's detector starts from."""
        return self.classifier or self.name

    @property
    def spec_keys(self) -> tuple[str, ...]:
        """A baseline's config keys (those its arch.json depends on)."""
        return SPECS[self.spec] if self.kind == "baseline" else ()

    @property
    def pretrain(self) -> str:
        """The config section of its classification retraining's schedule: ResNet's recipe for
        a ResNet, the reference's ShuffleNet recipe for the search-space networks."""
        return "resnet_pretrain" if self.spec == "resnet" else "retrain_pretrain"


ROWS: tuple[Row, ...] = (
    Row("shufflenetv2", "ShuffleNetV2 (hand-crafted)", "baseline", spec="space"),
    Row("resnet50", "ResNet-50", "baseline", spec="resnet"),
    Row("clsnas", "ClsNASNet", "searched", "#1f77b4", supernet="cls"),
    Row("detnas", "DetNAS", "searched", "#d62728", supernet="pretrained", compared_with=(
        ("shufflenetv2", ""), ("clsnas", "paper: > 1 on COCO, > 3 on VOC"),
        ("random", "paper: within 1"), ("scratch", ""))),
    Row("scratch", "DetNAS-scratch", "searched", "#9467bd", supernet="scratch"),
    Row("random", "DetNAS (random search)", "searched", "#7f7f7f", strategy="random",
        supernet="pretrained"),
    Row("nats", "NATS (ResNet-50)", "nats", classifier="resnet50",
        compared_with=(("resnet50", "paper: +2.0 on COCO FPN"),)),
)
"""The rows of the DetNAS paper's table (and NATS), in the workflow's order (jobs, folders)."""


def rows(cfg: Any = None) -> tuple[Row, ...]:
    """The rows of study config ``cfg``: `ROWS`, then those of its ``ablations`` section."""
    extra = getattr(cfg, "ablations", None) or {}
    return ROWS + tuple(
        Row(name, a.title or name, "searched", a.colour, strategy=a.strategy,
            supernet=a.supernet, overrides=tuple(a.overrides.items()),
            compared_with=tuple((other, "") for other in a.compared_with))
        for name, a in extra.items())


def find(cfg: Any, name: str) -> Row | None:
    """The row ``name`` of study ``cfg`` (None: no such row)."""
    return next((r for r in rows(cfg) if r.name == name), None)


def row(cfg: Any, name: str) -> Row:
    """The row ``name`` of study ``cfg``.

    Raises:
        ValueError: no such row (naming the study's rows).
    """
    found = find(cfg, name)
    if found is None:
        raise ValueError(f"{name!r} is not a row of the study "
                         f"({', '.join(r.name for r in rows(cfg))})")
    return found


def table_order(rows_: tuple[Row, ...]) -> list[Row]:
    """The rows as the report prints them: each after the rows it is compared with (the paper's
    table: the baselines and ablations, then the method they are compared with), else in their
    order."""
    names = {r.name for r in rows_}
    out: list[Row] = []
    pending = list(rows_)
    while pending:
        done = {r.name for r in out}
        ready = next((r for r in pending
                      if all(o in done or o not in names for o, _ in r.compared_with)),
                     pending[0])  # a cycle of comparisons: declaration order
        out.append(ready)
        pending.remove(ready)
    return out


def comparisons(rows_: tuple[Row, ...]) -> list[tuple[Row, Row, str]]:
    """``(row, other, claim)`` for each comparison of the rows (``row`` +x over ``other``)."""
    by_name = {r.name: r for r in rows_}
    return [(r, by_name[other], claim) for r in rows_ for other, claim in r.compared_with
            if other in by_name]


def upstream(row_: Row, rows_: tuple[Row, ...] = ROWS) -> tuple[tuple[str, str], ...]:
    """``(stage, ablation tag)`` of the stages a row builds on besides its own (tagged with its
    name): the supernets its search starts from, the classifier it borrows (and what that
    built on). Its cost is theirs too (`detnas.report.ledger`)."""
    stages = []
    net = SUPERNETS.get(row_.supernet) if row_.kind == "searched" else None
    while net is not None:
        stages.append((net.stage, net.tag))
        net = SUPERNETS.get(net.init) if net.init else None
    if row_.classifier_row != row_.name:
        source = next(r for r in rows_ if r.name == row_.classifier_row)
        stages += [("retrain-classification", source.name), *upstream(source, rows_)]
    return tuple(s for s in dict.fromkeys(stages) if s[1] != row_.name)


def check(rows_: tuple[Row, ...], where: str = "study") -> None:
    """The rows are coherent: names unique and usable as folder names, every reference to a
    supernet, spec or row known.

    Raises:
        ValueError: naming the row and the field.
    """
    names = [r.name for r in rows_]
    for r in rows_:
        at = f"{where}.{r.name}"
        if not re.fullmatch(r"[a-z][a-z0-9_]*", r.name):
            raise ValueError(f"{at}: a row's name is a folder name and a tag: lower-case "
                             "letters, digits and _")
        if names.count(r.name) > 1:
            raise ValueError(f"{at}: two rows of the name {r.name!r}")
        if r.kind not in KINDS:
            raise ValueError(f"{at}.kind: {r.kind!r} ({', '.join(KINDS)})")
        if r.kind == "baseline" and r.spec not in SPECS:
            raise ValueError(f"{at}.spec: {r.spec!r} ({', '.join(SPECS)})")
        if r.kind == "searched" and (r.supernet not in SUPERNETS or r.strategy not in STRATEGIES):
            raise ValueError(f"{at}: supernet {r.supernet!r} ({', '.join(SUPERNETS)}), strategy "
                             f"{r.strategy!r} ({', '.join(STRATEGIES)})")
        source = next((s for s in rows_ if s.name == r.classifier_row), None)
        if source is None or source.classifier_row != source.name:
            raise ValueError(f"{at}.classifier: {r.classifier!r} is not a row with a classifier "
                             "of its own")
        for other, _ in r.compared_with:
            if other not in names or other == r.name:
                raise ValueError(f"{at}.compared_with: {other!r} is not another row "
                                 f"({', '.join(names)})")
