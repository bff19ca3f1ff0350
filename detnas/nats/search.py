"""The NATS search stage: first-order alternating updates of weights and dilation alphas.

A pretrained ResNet is made searchable (`detnas.nats.ops.make_searchable`) inside a torchvision
detector; the search is a stage of the one training loop, `detnas.run.engine.train`: each step takes
an SGD step on the weights with a batch of the weights split and an Adam step on the alphas with a
batch of the architecture split (DARTS, first order; `detnas.run.engine.ArchStep`). The state is
saved atomically to ``search.pt`` every ``checkpoint_every`` steps and after the last (model, both
optimisers, history; batches and RNG are functions of the step), so a killed search continues
where it was and ends where an uninterrupted one would.

Under torchrun (`detnas.run.launch`: one process per GPU) each rank takes its share of every batch,
DDP averages the weight and alpha gradients (and the engine the logged losses) over the ranks, BN
is synchronised on GPU, and rank 0 alone writes; the ranks' weights and alphas stay identical.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch
from torch import nn

from detnas.data.coco import collate_detection
from detnas.io import load_checkpoint, save_json
from detnas.nats.derive import alphas_of, arch_spec, arch_tag, derive
from detnas.nats.ops import arch_parameters, make_searchable, searched_layers
from detnas.nets.detection import build_detector, detection_loss, detector_backbone
from detnas.nets.resnet import ResNetBackbone
from detnas.plan import layout, study
from detnas.plan.config import DETECTORS, NatsConfig, StudyConfig, TrainConfig
from detnas.plan.dilations import check_candidates
from detnas.plan.typed import config_hash
from detnas.run.engine import ArchStep, Stage, setup_distributed, train
from detnas.run.record import StageRecord

log = logging.getLogger(__name__)

ROW = next(r for r in study.ROWS if r.kind == "nats")
"""The study's NATS row (the runs' ``ablation`` tag)."""


def load_pretrained(path: str | Path, depth: int, width: int) -> dict[str, torch.Tensor]:
    """The ResNet backbone state dict of a pretrained checkpoint, in `ResNetBackbone` names.

    Accepts a classification checkpoint of the pipeline (`detnas.nets.models`) or a torchvision
    ResNet state dict (``resnet50-*.pth``; its ``fc`` is dropped).

    Raises:
        ValueError: the file is unreadable, of another network, or of another depth or width.
    """
    ckpt = load_checkpoint(path)
    if "task" in ckpt and "model" in ckpt:
        from detnas.nets.models import backbone_of, load_model

        backbone = backbone_of(load_model(path)[0])
        if not isinstance(backbone, ResNetBackbone):
            raise ValueError(f"{path}: field 'backbone' is {ckpt.get('backbone')}, not a ResNet")
        if (backbone.depth, backbone.width) != (depth, width):
            raise ValueError(f"{path}: ResNet-{backbone.depth} width {backbone.width}, but the "
                             f"config asks for nats.depth={depth}, nats.width={width}")
        return backbone.state_dict()
    state = ckpt.get("state_dict", ckpt)
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.startswith("fc.")}
    reference = ResNetBackbone(depth, width).state_dict()
    missing = sorted(set(reference) - set(state))
    unexpected = sorted(set(state) - set(reference))
    if missing or unexpected:
        raise ValueError(f"{path}: not a ResNet-{depth} width {width} state dict (missing "
                         f"{missing[:3]}, unexpected {unexpected[:3]})")
    for k, v in reference.items():
        if not isinstance(state[k], torch.Tensor) or state[k].shape != v.shape:
            raise ValueError(f"{path}: {k} has shape {tuple(getattr(state[k], 'shape', ()))}, "
                             f"expected {tuple(v.shape)} for ResNet-{depth} width {width}")
    return state


def build_search_model(nats: NatsConfig, detector: str, num_classes: int, detector_cfg=None,
                       backbone_state: dict | None = None) -> nn.Module:
    """The detector around a searchable ResNet initialised from ``backbone_state``."""
    backbone = ResNetBackbone(nats.depth, nats.width)
    if backbone_state is not None:
        backbone.load_state_dict(backbone_state)
    make_searchable(backbone, nats.candidates, nats.groups, nats.group_width,
                    nats.searched_stages)
    return build_detector(backbone, detector, num_classes, detector_cfg)


def make_arch_optimizer(alphas: list[nn.Parameter], nats: NatsConfig) -> torch.optim.Adam:
    """Adam on the architecture alphas (the weights take `detnas.run.engine.make_optimizer`'s
    SGD)."""
    return torch.optim.Adam(alphas, lr=nats.arch_lr, betas=tuple(nats.arch_betas),
                            weight_decay=nats.arch_weight_decay)


def entropy(alpha: torch.Tensor) -> float:
    """Mean entropy (nats) of the per-group softmax of ``alpha``; log(K) at the start."""
    p = alpha.detach().softmax(-1)
    return float(-(p * p.clamp_min(1e-12).log()).sum(-1).mean())


def alphas_json(alphas: dict[str, torch.Tensor], candidates) -> dict:
    """What ``alphas.json`` holds: per layer the raw alphas and their softmax."""
    return {"candidates": [list(c) for c in candidates],
            "layers": {name: {"alpha": a.tolist(), "softmax": a.softmax(-1).tolist()}
                       for name, a in alphas.items()}}


class NatsSearch(ArchStep):
    """The NATS search as the loop's architecture step (`detnas.run.engine.ArchStep`): Adam on
    the dilation alphas with batches of the architecture split, from step
    ``nats.arch_warmup_steps`` on. It records each step's row (losses, mean alpha entropy) and
    the time of the steps (``search_seconds``, not the setup); its resumable state (``search.pt``,
    also the final one) holds them, the alphas, and what `detnas.nats.derive` needs."""

    def __init__(self, nats: NatsConfig, model: nn.Module, arch_data, candidates: list,
                 detector: str, num_classes: int, record: StageRecord):
        alphas = arch_parameters(model)
        super().__init__(alphas, make_arch_optimizer(alphas, nats), arch_data,
                         nats.arch_warmup_steps)
        self.nats, self.backbone, self.candidates = nats, detector_backbone(model), candidates
        self.saved = {"depth": nats.depth, "width": nats.width, "detector": detector,
                      "num_classes": num_classes, "config_hash": config_hash(record.config),
                      "provenance": record.provenance}
        self.history: list[dict] = []
        self.seconds, self.clock = 0.0, time.perf_counter()

    def on_step(self, step: int, metrics: dict) -> dict:
        now = time.perf_counter()
        self.seconds += now - self.clock
        self.clock = now
        row = {"step": step, "lr": metrics["lr"], "weight_loss": metrics["loss"]}
        if "arch_loss" in metrics:
            row["arch_loss"] = metrics["arch_loss"]
        row["alpha_entropy"] = sum(entropy(a) for a in self.params) / max(1, len(self.params))
        self.history.append(row)
        return {"alpha_entropy": row["alpha_entropy"]}

    def state(self) -> dict:
        return {"history": self.history, "seconds": self.seconds,
                "alphas": alphas_of(self.backbone), "candidates": self.candidates, **self.saved}

    def restore(self, state: dict) -> None:
        self.history, self.seconds = state["history"], state["seconds"]

    def write(self, out_dir: Path, step: int, provenance: dict) -> dict:
        """Write ``alphas.json`` and ``arch.json`` (the derived backbone spec, with
        ``provenance``) after ``step`` steps; returns the numbers of ``metrics.json``."""
        current, n = alphas_of(self.backbone), self.nats
        dilations = derive(current, self.candidates)
        save_json(out_dir / "alphas.json", alphas_json(current, self.candidates))
        save_json(out_dir / layout.ARCH, arch_spec(
            n.depth, n.width, dilations, candidates=self.candidates, groups=n.groups,
            group_width=n.group_width, searched_stages=list(n.searched_stages),
            detector=self.saved["detector"], provenance={**provenance, "search_steps": step}))
        last = self.history[-1] if self.history else {}
        return {"steps": step, "search_seconds": self.seconds,
                "weight_loss": last.get("weight_loss", math.nan),
                "arch_loss": last.get("arch_loss", math.nan),
                "alpha_entropy": sum(map(entropy, current.values())) / max(1, len(current)),
                "dilated_groups": sum(e != "1" for enc in dilations.values()
                                      for e in enc.split(",")),
                "groups": sum(m.num_groups for m in searched_layers(self.backbone).values()),
                "arch": arch_tag(dilations)}


def _schedule(cfg: StudyConfig, detector: str, weights_data, arch_data) -> TrainConfig:
    """The weights' schedule of ``detector`` (``nats.search``), the inputs checked against it."""
    if detector not in DETECTORS:
        raise ValueError(f"unknown detector {detector!r} (known: {', '.join(DETECTORS)})")
    if weights_data.num_classes != arch_data.num_classes:
        raise ValueError(f"the weights split has {weights_data.num_classes} classes, the "
                         f"architecture split {arch_data.num_classes}")
    t = cfg.nats.search.for_detector(detector)
    for name, data in (("weights", weights_data), ("architecture", arch_data)):
        if len(data) < t.batch_size:
            raise ValueError(f"nats.search.batch_size: {t.batch_size} is more than the "
                             f"{len(data)} images of the {name} split")
    return t


def search(cfg: StudyConfig, weights_data, arch_data, detector: str, out_dir: str | Path,
           pretrained: str | Path | None = None, dataset: str = "") -> dict:
    """Run (or resume) the NATS search and write its outputs to ``out_dir``.

    A stage of `detnas.run.engine.train` whose architecture step is a `NatsSearch`. Writes
    ``search.pt`` (resumable state, also the final one: resumed when made from this run's
    fingerprint, else set aside), ``alphas.json``, ``arch.json`` (the derived backbone spec with
    provenance), ``metrics.json`` and ``config.yaml`` (`detnas.run.record.StageRecord`).

    Args:
        cfg: the study config; ``cfg.nats`` holds the search settings, ``cfg.nats.search`` the
            weights' SGD schedule and the batch size of both splits.
        weights_data, arch_data: the detection datasets of the weight and the alpha steps
            (``.num_classes``, items as `detnas.data.CocoDetection`).
        detector, dataset: ``fpn`` or ``retinanet``; the dataset's name, for tags.
        pretrained: classification checkpoint or torchvision state dict of the ResNet.

    Returns:
        The metrics written to ``metrics.json`` (``{}`` on the ranks other than 0).

    Raises:
        ValueError: bad detector, data or checkpoint, named in the message (the config is
            checked when it is loaded: `detnas.plan.config.check_nats`).
    """
    t = _schedule(cfg, detector, weights_data, arch_data)
    out_dir, ddp = Path(out_dir), setup_distributed(cfg.device)
    torch.manual_seed(cfg.run_seed)
    state = load_pretrained(pretrained, cfg.nats.depth, cfg.nats.width) if pretrained else None
    model = build_search_model(cfg.nats, detector, weights_data.num_classes, cfg.detector, state)
    candidates = [list(c) for c in check_candidates(cfg.nats.candidates, "config.nats")]
    inputs = (pretrained, *(getattr(data, name, None) for data in (weights_data, arch_data)
                            for name in ("images_dir", "annotation_file")))
    tags = {"ablation": ROW.name, "detector": detector, "dataset": dataset,
            "space": f"resnet{cfg.nats.depth}", "arch": "pending"}
    with StageRecord.open(cfg, "nats-search", out_dir, tags, inputs=inputs,
                          facts={"detector": detector, "dataset": dataset},
                          about={"dataset": dataset, "pretrained": str(pretrained or "")},
                          name=f"nats-search-{detector}-{dataset}", main=ddp.main,
                          gpus=ddp.world if ddp.device.type == "cuda" else 0) as record:
        tracker = record.tracker
        tracker.log_params({f"nats.{k}": v for k, v in record.config["nats"].items()}
                           | {"processes": ddp.world})
        nats = NatsSearch(cfg.nats, model, arch_data, candidates, detector,
                          weights_data.num_classes, record)
        stage = Stage(model, detection_loss, weights_data, collate_detection, meta={},
                      sync_bn=True, num_workers=cfg.workers, arch=nats)
        step = train(stage, t, cfg.run_seed, ddp, out_dir / "search.pt", tracker,
                     record.provenance)["step"]
        if not ddp.main:
            return {}
        metrics = nats.write(out_dir, step, record.final_provenance())
        record.write(metrics, after={"history": nats.history})
        tracker.set_tags({"arch": metrics["arch"]})
        tracker.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float)}, step)
        for name in (layout.ARCH, "alphas.json", layout.METRICS):
            tracker.log_artifact(out_dir / name)
    log.info("nats search done: %s", metrics["arch"])
    return metrics
