"""The learning check: the embedded default's data and recipes, on their own, learn.

A pipeline that trains and writes figures but learns nothing (labels shifted, the retrained
classifier's weights not loaded into the detector, BN recalibration skipped, inputs not
normalised) would still fill the results table; the figures of `config/config.yaml` then sit at
chance, and only a check like this one tells. It runs the stages the study runs, through the
same functions the CLI calls, on the default's data and schedules (the detection set shortened),
and asserts that each learned well clear of chance:

- the supernet's paths after path-wise pre-training, scored by the search's own fitness (BN
  recalibrated per path), on the images held out for ClsNASNet (chance: 1 / 4 classes); the
  same with the checkpoint's BN statistics reset, as the reference resets them (here, where each
  choice has its own BN, the trained statistics are close enough that a skipped recalibration
  would go unseen without the reset);
- ShuffleNetV2 retrained on classification, on the validation split, also with its images
  normalised as the detector normalises its own (the weights it hands over must read the same
  inputs);
- Faster R-CNN + FPN from that classifier, AP50 on the test split; and with the backbone frozen
  (only the FPN and the heads train), from the classifier against from scratch: the classifier's
  weights must be what makes the difference. (Fine-tuned whole, a detector from scratch reaches
  0.43 to 0.68 AP50 against 0.67 to 0.71 from the classifier in the same 300 steps, depending on
  the seed and the instruction set: too close to tell a classifier whose weights were never
  loaded. Frozen, random features leave it at 0.26.)

The thresholds sit halfway between what each check measures (`docs/embedded_default.md`) and
chance, far from both: rounding and the machine's instruction set move them by a few points.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
import torch

from detnas.data import ImageFolderClassification
from detnas.data.images import read_image
from detnas.data.synthetic import synthesize_classification, synthesize_detection
from detnas.io import load_checkpoint, save_checkpoint
from detnas.nets.detection import detector_backbone
from detnas.nets.models import build_model, load_model
from detnas.plan import config
from detnas.plan.space import Arch, get_space, sample
from detnas.run import engine, train
from detnas.search.fitness import build_fitness, fitness_spec

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

# chance: top-1 0.25 (4 classes), AP50 about 0
MIN_SUPERNET_TOP1 = 0.35  # every path scored; measured 0.435-0.54
MIN_CLASSIFIER_TOP1 = 0.6  # measured 0.96
MIN_FPN_AP50 = 0.35  # measured 0.71 (300 steps, the default's, on 160 images)
MAX_NORMALISATION_GAP = 0.02  # top-1 on the detector's normalisation against its own: 0 here
MIN_PRETRAINING_GAIN = 0.15  # AP50 with the backbone frozen, from the classifier minus from
# scratch: measured 0.35 (the classifier's weights not loaded: 0.00)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[config.StudyConfig, Path]:
    """The default config on its own data under a temporary folder, tracking off, one thread."""
    root = tmp_path_factory.mktemp("learning")
    cfg = config.load(REPO / "config" / "config.yaml", [
        f"results={root}", "device=cpu", "tracking.enabled=false",
        f"classification.root={root}/classification", f"datasets.synth.root={root}/synth",
    ])
    synthesize_classification(cfg.classification, cfg.seed)
    synthesize_detection(cfg.datasets["synth"], cfg.seed)
    return cfg, root


@pytest.fixture(scope="module")
def classifier(study) -> tuple[dict, Path]:
    cfg, root = study
    out = root / "classifier"
    metrics = train.train_classifier(cfg, train.baseline_spec(cfg, "shufflenetv2"), "check", out)
    return metrics, out / "checkpoint.pt"


def _detector_ap50(cfg: config.StudyConfig, init: Path | None, out: Path) -> float:
    """AP50 of ShuffleNetV2's Faster R-CNN + FPN trained as the default retrains it, from
    ``init`` (the classifier's checkpoint; None: from scratch)."""
    steps = cfg.retrain_finetune.steps  # the default's FPN schedule, scored on its 80 test images
    schedule = dataclasses.replace(cfg.retrain_finetune, steps=steps, checkpoint_every=steps)
    metrics = train.train_detector(cfg, train.baseline_spec(cfg, "shufflenetv2"), "check",
                                   "synth", "fpn", init, out, tcfg=schedule)
    return metrics["ap50"]


def _without_bn_statistics(checkpoint: Path, out: Path) -> Path:
    """The checkpoint with every BN's running statistics reset (mean 0, variance 1), as the
    reference resets them before recalibrating."""
    ckpt = load_checkpoint(checkpoint)
    for key, value in ckpt["model"].items():
        if key.endswith("running_mean"):
            value.zero_()
        elif key.endswith("running_var"):
            value.fill_(1.0)
    save_checkpoint(out, ckpt)
    return out


def test_supernet_paths_learn(study):
    """Path-wise pre-training teaches every path: the search's fitness of ShuffleNetV2's path and
    of random paths, on the held-out training images. The fitness recalibrates each path's BN
    statistics: with the checkpoint's statistics reset it is the same, bit for bit."""
    cfg, root = study
    train.supernet_classification(cfg, root / "supernet")
    c = cfg.classification
    space = get_space(cfg.space)
    paths = [Arch(cfg.space, (0,) * space.num_blocks),
             *(sample(cfg.space, random.Random(i)) for i in range(2))]

    def scores(checkpoint: Path) -> dict[str, float]:
        fitness = build_fitness(fitness_spec(cfg, "classification", checkpoint,
                                             f"{c.root}/train", f"{c.root}/train"))
        return {str(a): fitness(a) for a in paths}

    trained = scores(root / "supernet" / "checkpoint.pt")
    reset = scores(_without_bn_statistics(root / "supernet" / "checkpoint.pt",
                                          root / "supernet-reset.pt"))
    print("supernet paths, top-1 on the held-out images:", trained, "statistics reset:", reset)
    assert min(trained.values()) >= MIN_SUPERNET_TOP1, trained
    assert reset == trained


def test_classifier_learns_and_speaks_the_detectors_input(study, classifier):
    """ShuffleNetV2 retrained on classification is accurate on the validation split, also when
    its images are normalised as the detector normalises its own (torchvision's transform): the
    classifier's weights start the detector, so the two must agree on what an input is."""
    cfg, _ = study
    metrics, checkpoint = classifier
    model = load_model(checkpoint)[0].eval()
    detector = build_model("detection", train.baseline_spec(cfg, "shufflenetv2"), 3, "fpn",
                           cfg.detector)
    val = ImageFolderClassification(Path(cfg.classification.root) / "val",
                                    cfg.classification.image_size, train=False)
    right = 0
    with torch.no_grad():
        for path, label in val.samples:
            image = val.transform(read_image(path)).float().div(255)  # (3, S, S) in [0, 1]
            logits = model(detector.transform.normalize(image)[None])
            right += int(logits.argmax(1).item() == label)
    as_detector = right / len(val.samples)
    print(f"ShuffleNetV2 top-1: {metrics['top1']:.3f}, {as_detector:.3f} on the detector's "
          "normalisation")
    assert metrics["top1"] >= MIN_CLASSIFIER_TOP1, metrics
    assert abs(as_detector - metrics["top1"]) <= MAX_NORMALISATION_GAP  # the same inputs


def test_detector_learns_from_the_classifier(study, classifier, monkeypatch):
    """The detector reaches its AP50, and with its backbone frozen the retrained classifier's
    features are what it learns from."""
    cfg, root = study
    pretrained = _detector_ap50(cfg, classifier[1], root / "fpn")
    make_optimizer = engine.make_optimizer

    def frozen_backbone(model, tcfg, exclude=()):
        backbone = detector_backbone(model).parameters()
        return make_optimizer(model, tcfg, exclude=(*exclude, *backbone))

    monkeypatch.setattr(engine, "make_optimizer", frozen_backbone)
    frozen = _detector_ap50(cfg, classifier[1], root / "fpn-frozen")
    scratch = _detector_ap50(cfg, None, root / "fpn-frozen-scratch")
    print(f"FPN AP50: {pretrained:.3f} from the classifier; backbone frozen: {frozen:.3f} from "
          f"the classifier, {scratch:.3f} from scratch")
    assert pretrained >= MIN_FPN_AP50
    assert frozen - scratch >= MIN_PRETRAINING_GAIN
