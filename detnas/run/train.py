"""One function per training stage: data + model + `detnas.run.engine` + checkpoints + tracking.

Every stage writes, in its output folder: ``checkpoint.pt`` (the model, rebuildable with
`detnas.nets.models.load_model`), ``metrics.json`` and ``config.yaml`` (the resolved config with its
provenance). A run in progress keeps ``resume.pt`` there, which a restart picks up.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import default_collate

from detnas.data.coco import collate_detection
from detnas.data.imagefolder import check_same_classes, class_folders
from detnas.io import save_checkpoint
from detnas.nets.detection import detection_loss
from detnas.nets.models import backbone_of, build_model, load_model, model_meta
from detnas.plan import flops, layout, study, typed
from detnas.plan.config import StudyConfig, TrainConfig
from detnas.plan.space import get_space, sample, sample_binned
from detnas.provenance import fingerprint
from detnas.run import engine
from detnas.run.record import StageRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Run:
    """Where a stage writes and how it is tagged."""

    out: Path
    stage: str
    tags: dict
    arch: dict | None = None  # the backbone spec of a fixed architecture (an MLflow artifact)
    inputs: tuple[Path | None, ...] = ()  # the files and folders the run reads (fingerprinted)

    @property
    def checkpoint(self) -> Path:
        return self.out / layout.CHECKPOINT

    @property
    def resume(self) -> Path:
        return self.out / "resume.pt"

    @property
    def facts(self) -> dict:
        """What the run's fingerprint holds beside the config and the inputs."""
        return {"tags": self.tags, "arch": self.arch}


def classification_loss(label_smoothing: float):
    def loss(model: nn.Module, batch) -> torch.Tensor:
        images, labels = batch
        return F.cross_entropy(model(images), labels, label_smoothing=label_smoothing)

    return loss


def path_sampler(cfg: StudyConfig, tcfg: TrainConfig):
    """Uniform paths (the reference's detection fine-tuning), or its ImageNet supernet's FLOPs
    bins: one bin drawn uniformly, then a path rejection-sampled into it, on classifier FLOPs
    (first conv + blocks + last conv + FC, 1000 classes) at ``search.flops_input_size``."""
    if tcfg.sampling == "uniform":
        return lambda rng: sample(cfg.space, rng)
    cost = flops.cost_table(cfg.space, cfg.search.flops_input_size).classifier_flops
    bins = [tuple(b) for b in tcfg.flops_bins]
    return lambda rng: sample_binned(cfg.space, rng, cost, bins)


def run_fingerprint(cfg: StudyConfig, run: Run) -> str:
    """What a training run is made from (`detnas.provenance.fingerprint`, as its `StageRecord`
    computes it): its resumable state and its outputs' provenance carry it; the ranking check
    reuses a run only with the same."""
    return fingerprint(typed.to_dict(cfg), run.inputs, stage=run.stage, **run.facts)


def _run_stage(cfg: StudyConfig, run: Run, stage: engine.Stage, tcfg: TrainConfig,
               evaluate, sources: dict[str, Path] | None = None) -> dict:
    """Train, evaluate, and write checkpoint, metrics and resolved config (main process only);
    ``sources``: the input checkpoints whose origin the provenance records (`source`), by role."""
    ddp = engine.setup_distributed(cfg.device)
    torch.manual_seed(cfg.run_seed)
    gpus = ddp.world if ddp.device.type == "cuda" else 0
    with StageRecord.open(cfg, run.stage, run.out, run.tags, inputs=run.inputs, facts=run.facts,
                          about={"tags": run.tags}, sources=sources, gpus=gpus, arch=run.arch,
                          main=ddp.main) as record:
        tracker, prov = record.tracker, record.provenance
        prov["mlflow_run_id"] = tracker.run_id  # where `detnas export` logs this stage's model
        tracker.log_params({"train." + k: v for k, v in typed.to_dict(tcfg).items()})
        stage = dataclasses.replace(stage, num_workers=cfg.workers)
        result = engine.train(stage, tcfg, cfg.run_seed, ddp, run.resume, tracker, prov)
        if not ddp.main:
            return {}
        metrics = {"steps": result["step"], **evaluate(stage.model, ddp.device)}
        tracker.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float)},
                            step=result["step"])
        record.final_provenance()  # the checkpoint's (``result``) as the metrics'
        save_checkpoint(run.checkpoint, result)
        record.write({**metrics, **run.tags}, provenance=True)
        run.resume.unlink(missing_ok=True)
    return metrics


def _classification_data(cfg: StudyConfig, split: str, train: bool, holdout: int = 0,
                         resnet: bool = False):
    """The classification set; ``resnet``: with ResNet's recipe (``resnet_color_jitter``)."""
    from detnas.data import ImageFolderClassification

    c = cfg.classification
    jitter = c.resnet_color_jitter if resnet and c.resnet_color_jitter is not None \
        else c.color_jitter
    return ImageFolderClassification(Path(c.root) / split, c.image_size, train=train,
                                     cache=c.cache, crop_scale=c.crop_scale,
                                     color_jitter=jitter, holdout=holdout, seed=cfg.seed,
                                     classes_of=None if split == "train" else
                                     Path(c.root) / "train")


def classifier_options(cfg: StudyConfig) -> dict:
    """The reference's classifier regularisation and initialisation, from the config."""
    return {"dropout": cfg.classification.dropout, "init": cfg.classification.init}


def _classification_inputs(cfg: StudyConfig, data, loss):
    """``(loss, dataset, collate)`` of a training stage for ``classification.loader``."""
    loader = cfg.classification.loader
    if loader == "cpu":
        return loss, data, default_collate
    if loader == "gpu":  # decode + augment in the step, on the model's device
        from detnas.data.device_loader import (
            DeviceAugment,
            EncodedImages,
            collate_encoded,
            on_device,
        )

        return on_device(loss, DeviceAugment(data)), EncodedImages(data), collate_encoded
    raise ValueError(f"classification.loader: {loader!r} (expected cpu | gpu)")


def _evaluate_classifier(cfg: StudyConfig):
    def evaluate(model, device):
        from detnas.data import classification_loader
        from detnas.evaluation import evaluate_classifier

        loader = classification_loader(_classification_data(cfg, "val", False), 64, False,
                                       cfg.seed)
        return evaluate_classifier(model, loader, device)

    return evaluate


def _no_evaluation(model, device) -> dict:
    return {}


def supernet_classification(cfg: StudyConfig, out: Path) -> dict:
    """Step 1 of DetNAS: path-wise supernet pre-training on classification, on the training set
    less the ``classification.search_images`` that the ClsNASNet search scores candidates on."""
    torch.manual_seed(cfg.run_seed)  # the initial weights are a function of the seed
    data = _classification_data(cfg, "train", True, cfg.classification.search_images)
    backbone = {"kind": "supernet", "space": cfg.space}
    model = build_model("classification", backbone, data.num_classes, **classifier_options(cfg))
    tcfg = cfg.supernet_pretrain
    stage = engine.Stage(
        model, *_classification_inputs(cfg, data, classification_loss(tcfg.label_smoothing)),
        model_meta("classification", backbone, data.num_classes),
        path_sampler(cfg, tcfg), backbone_of(model),
    )
    net = study.SUPERNETS["cls"]
    run = Run(out, net.stage, {"ablation": net.tag, "space": cfg.space}, inputs=(data.root,))
    return _run_stage(cfg, run, stage, tcfg, _no_evaluation)


def _load_backbone_weights(target: nn.Module, checkpoint: Path, space: str | None) -> None:
    """Copy the backbone (or supernet) weights of a classification checkpoint into ``target``."""
    source, ckpt = load_model(checkpoint)
    src_space = ckpt["backbone"].get("space")
    if space is not None and src_space != space:
        raise ValueError(f"{checkpoint}: a checkpoint of space {src_space}, expected {space}")
    missing, unexpected = backbone_of(target).load_state_dict(
        backbone_of(source).state_dict(), strict=False)
    if unexpected or len(missing) == len(backbone_of(target).state_dict()):
        raise ValueError(f"{checkpoint}: its backbone does not match (unexpected {unexpected[:3]})")
    log.info("initialised the backbone from %s", checkpoint)


def _detection_data(images: Path, annotations: Path, cache: bool, flip_prob: float = 0.0):
    from detnas.data import CocoDetection

    return CocoDetection(images, annotations, cache=cache, flip_prob=flip_prob)


def finetune_schedule(cfg: StudyConfig, detector: str, scratch: bool) -> TrainConfig:
    """The supernet's detection schedule: the detector's own lr, and DetNAS-scratch's longer run
    (``scratch_schedule`` times the steps; the step fractions and warm-up stay)."""
    tcfg = cfg.supernet_finetune.for_detector(detector)
    if scratch:
        tcfg = dataclasses.replace(tcfg, steps=round(tcfg.steps * cfg.scratch_schedule))
    return tcfg


def supernet_detection(cfg: StudyConfig, dataset: str, detector: str, images: Path,
                       annotations: Path, init: Path | None, out: Path) -> dict:
    """Step 2 of DetNAS: path-wise fine-tuning on detection; ``init=None`` is DetNAS-scratch."""
    torch.manual_seed(cfg.run_seed)  # the initial weights are a function of the seed
    d = cfg.datasets[dataset]
    data = _detection_data(images, annotations, d.cache, d.flip_prob)
    backbone = {"kind": "supernet", "space": cfg.space}
    model = build_model("detection", backbone, data.num_classes, detector, cfg.detector)
    if init is not None:
        _load_backbone_weights(model, init, cfg.space)
    tcfg = finetune_schedule(cfg, detector, scratch=init is None)
    stage = engine.Stage(
        model, detection_loss, data, collate_detection,
        model_meta("detection", backbone, data.num_classes, detector, cfg.detector),
        path_sampler(cfg, tcfg), backbone_of(model), sync_bn=True,
    )
    net = study.SUPERNETS["pretrained" if init else "scratch"]  # DetNAS's, DetNAS-scratch's
    tags = {"ablation": net.tag, "space": cfg.space, "dataset": dataset, "detector": detector}
    run = Run(out, net.stage, tags, inputs=(images, annotations, init))
    return _run_stage(cfg, run, stage, tcfg, _no_evaluation,
                      sources={"init": init} if init is not None else None)


def _spec_tags(spec: dict) -> dict:
    return {"arch": spec.get("arch", f"resnet{spec.get('depth', '')}"),
            "space": spec.get("space", "resnet")}


def pretrain_schedule(cfg: StudyConfig, spec: dict) -> TrainConfig:
    """ImageNet pre-training of a fixed network: ResNet's standard recipe for ResNets, the
    ShuffleNet recipe of the reference (``retrain_pretrain``) for the search-space networks."""
    return cfg.resnet_pretrain if spec.get("kind") == "resnet" else cfg.retrain_pretrain


def train_classifier(cfg: StudyConfig, spec: dict, ablation: str, out: Path) -> dict:
    """Retraining, part 1: classification pre-training of a fixed architecture."""
    torch.manual_seed(cfg.run_seed)  # the initial weights are a function of the seed
    data = _classification_data(cfg, "train", True, resnet=spec.get("kind") == "resnet")
    val = Path(cfg.classification.root) / "val"  # scored after training: checked before it
    check_same_classes(val, class_folders(val), data.root)
    model = build_model("classification", spec, data.num_classes, **classifier_options(cfg))
    tcfg = pretrain_schedule(cfg, spec)
    stage = engine.Stage(model, *_classification_inputs(
        cfg, data, classification_loss(tcfg.label_smoothing)),
        model_meta("classification", spec, data.num_classes))
    run = Run(out, "retrain-classification", {"ablation": ablation, **_spec_tags(spec)}, spec,
              (data.root, Path(cfg.classification.root) / "val"))
    return _run_stage(cfg, run, stage, tcfg, _evaluate_classifier(cfg))


def detector_run(cfg: StudyConfig, spec: dict, ablation: str, dataset: str, detector: str,
                 init: Path | None, out: Path, *, train_split: tuple[Path, Path] | None = None,
                 test_split: tuple[Path, Path] | None = None,
                 stage_name: str = "retrain-detection") -> Run:
    """The `Run` of `train_detector` (its folder, tags and inputs: the ranking check reuses a
    finished one only with its fingerprint, `run_fingerprint`)."""
    d = cfg.datasets[dataset]
    root = Path(d.root)
    train_split = train_split or (root / d.train_images, root / d.train_annotations)
    test_split = test_split or (root / d.test_images, root / d.test_annotations)
    tags = {"ablation": ablation, "dataset": dataset, "detector": detector, **_spec_tags(spec)}
    return Run(out, stage_name, tags, spec, (*train_split, *test_split, init))


def train_detector(cfg: StudyConfig, spec: dict, ablation: str, dataset: str, detector: str,
                   init: Path | None, out: Path, *, train_split: tuple[Path, Path] | None = None,
                   test_split: tuple[Path, Path] | None = None, tcfg: TrainConfig | None = None,
                   stage_name: str = "retrain-detection") -> dict:
    """Retraining, part 2: the detector on the full training set, evaluated on the test split
    (with AP@[.5:.95] and AP50 on resamples of the test images: `evaluation.bootstrap_coco`).

    ``train_split`` and ``test_split`` (image folder, annotation JSON) replace the dataset's
    training and test sets, ``tcfg`` the ``retrain_finetune`` schedule (the ranking check trains
    on the supernet's split and scores on the search split).
    """
    torch.manual_seed(cfg.run_seed)  # the initial weights are a function of the seed
    d = cfg.datasets[dataset]
    run = detector_run(cfg, spec, ablation, dataset, detector, init, out,
                       train_split=train_split, test_split=test_split, stage_name=stage_name)
    train_images, train_annotations, test_images, test_annotations, _ = run.inputs
    data = _detection_data(train_images, train_annotations, d.cache, d.flip_prob)
    model = build_model("detection", spec, data.num_classes, detector, cfg.detector)
    if init is not None:
        _load_backbone_weights(model, init, spec.get("space"))
    tcfg = (tcfg or cfg.retrain_finetune).for_detector(detector)

    def evaluate(trained, device):
        from detnas.evaluation import bootstrap_coco, detection_metrics, predict_detector

        test = _detection_data(test_images, test_annotations, d.cache)
        predictions = predict_detector(trained, test, 8, device, d.eval_padding == "exclude")
        size = flops.count(backbone_of(trained).cpu(), cfg.search.flops_input_size)
        backbone_of(trained).to(device)
        return {**detection_metrics(test, predictions), "backbone_flops": size.flops,
                "backbone_params": size.params, "bootstrap": bootstrap_coco(test, predictions)}

    stage = engine.Stage(model, detection_loss, data, collate_detection,
                         model_meta("detection", spec, data.num_classes, detector, cfg.detector),
                         sync_bn=True)
    return _run_stage(cfg, run, stage, tcfg, evaluate)


def baseline_spec(cfg: StudyConfig, name: str) -> dict:
    """The arch spec of a hand-crafted baseline row (`detnas.plan.study.SPECS`): of spec ``space``
    (ShuffleNetV2: all 3x3 blocks in the config's space), or ``resnet`` (ResNet-50: torchvision
    ResNet at the config's NATS depth and width).

    Raises:
        ValueError: ``name`` is not a baseline of the study.
    """
    row = study.find(cfg, name)
    if row is None or row.kind != "baseline":
        baselines = [r.name for r in study.rows(cfg) if r.kind == "baseline"]
        raise ValueError(f"unknown baseline {name!r} ({', '.join(baselines)})")
    if row.spec == "space":
        from detnas.nets.backbones import shufflenet_spec
        from detnas.plan.space import Arch

        return shufflenet_spec(Arch(cfg.space, (0,) * get_space(cfg.space).num_blocks))
    return {"kind": "resnet", "depth": cfg.nats.depth, "width": cfg.nats.width}

