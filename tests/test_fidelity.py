"""The paper configs reproduce the authors' code: one test per row of docs/fidelity.md."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead
from torchvision.transforms import v2

from detnas import config, engine, flops, train
from detnas.data import CocoDetection, make_synthetic_classification, make_synthetic_detection
from detnas.models import build_model
from detnas.search.fitness import SupernetFitness, has_head_norm
from detnas.space import REGISTRY, Arch

REPO = Path(__file__).resolve().parents[1]
COCO = config.load(REPO / "config" / "coco.yaml")
VOC = config.load(REPO / "config" / "voc.yaml")
PAPER = (COCO, VOC)
PUBLISHED_300M = ("DetNAS-COCO-FPN-300M", "DetNAS-COCO-RetinaNet-300M", "DetNAS-VOC-FPN-300M",
                  "DetNAS-VOC-RetinaNet-300M")


def _capture_stage(monkeypatch) -> list:
    """Replace the training loop: keep what a stage function would train, train nothing."""
    seen = []
    monkeypatch.setattr(train, "_run_stage",
                        lambda cfg, run, stage, tcfg, evaluate: seen.append((stage, tcfg)) or {})
    return seen


# --- 1. path sampling -------------------------------------------------------------------------


def test_supernet_paths_are_uniform_over_seven_classifier_flops_bins():
    """DetNAS Supernet-ImageNet/train.py: a 10M bin of [290, 360) uniformly, then a path in it,
    on classifier FLOPs; fine-tuning samples paths uniformly (engine/trainer.py)."""
    assert VOC.supernet_pretrain == COCO.supernet_pretrain
    assert COCO.supernet_finetune.sampling == VOC.supernet_finetune.sampling == "uniform"
    cfg = COCO
    sample = train.path_sampler(cfg, cfg.supernet_pretrain)
    table = flops.cost_table(cfg.space, 224)
    rng = random.Random(0)
    archs = [sample(rng) for _ in range(10_000)]
    bins = Counter(min(int((table.classifier_flops(a) - 290e6) // 10e6), 6) for a in archs)
    assert sorted(bins) == list(range(7))
    assert all(abs(n - 10_000 / 7) < 5 * (10_000 / 7) ** 0.5 for n in bins.values()), bins
    # paths under 290M backbone FLOPs (the COCO-FPN net has 288M) are trained too
    assert sum(table.backbone_flops(a) < 290e6 for a in archs) > 1000
    for name in PUBLISHED_300M[:3]:  # VOC-RetinaNet has 360.6M, 0.2 % above the last bin
        assert 290e6 <= table.classifier_flops(REGISTRY[name].arch) <= 360e6, name


# --- 2. horizontal flip -----------------------------------------------------------------------


def test_detection_training_flips_half_the_images_with_their_boxes(tmp_path, monkeypatch):
    make_synthetic_detection(tmp_path, seed=0, num_train=8, num_test=2, image_size=32,
                             num_classes=2, max_objects=2, max_distractors=0)
    cfg = config.load(REPO / "config" / "test.yaml", [f"datasets.synth.root={tmp_path}"])
    assert all(c.datasets[n].flip_prob == 0.5 for c in PAPER for n in c.datasets)
    seen = _capture_stage(monkeypatch)
    train.supernet_detection(cfg, "synth", "fpn", tmp_path / "train",
                             tmp_path / "annotations/instances_train.json", None, tmp_path)
    data = seen[0][0].dataset
    plain = CocoDetection(tmp_path / "train", tmp_path / "annotations/instances_train.json")
    flips = 0
    for step in range(50):  # the training loop reads item i under the step's seed
        torch.manual_seed(step)
        i = step % len(data)
        image, target = data[i]
        original, truth = plain[i]
        if torch.equal(image, original):
            assert torch.equal(target["boxes"], truth["boxes"])
            continue
        flips += 1
        torch.testing.assert_close(image, original.flip(-1))
        w = image.shape[-1]
        x1, y1, x2, y2 = truth["boxes"].unbind(1)
        torch.testing.assert_close(target["boxes"], torch.stack([w - x2, y1, w - x1, y2], 1))
    assert 15 <= flips <= 35


# --- 3. per-detector learning rate ------------------------------------------------------------


@pytest.mark.parametrize("cfg", PAPER, ids=["coco", "voc"])
def test_retinanet_trains_at_its_own_learning_rate(cfg):
    for tcfg in (cfg.supernet_finetune, cfg.retrain_finetune, cfg.nats.search):
        assert tcfg.for_detector("fpn").lr == 0.02
        assert tcfg.for_detector("retinanet").lr == 0.01
    assert train.finetune_schedule(cfg, "retinanet", scratch=False).lr == 0.01


def test_stages_use_the_detector_learning_rate(tmp_path, monkeypatch):
    make_synthetic_detection(tmp_path, seed=0, num_train=4, num_test=2, image_size=32,
                             num_classes=2, max_objects=1, max_distractors=0)
    cfg = config.load(REPO / "config" / "test.yaml", [
        f"datasets.synth.root={tmp_path}", "supernet_finetune.detector_lr={retinanet: 0.001}",
        "retrain_finetune.detector_lr={retinanet: 0.002}",
        "retrain_finetune.detector_steps={retinanet: 5}"])
    seen = _capture_stage(monkeypatch)
    ann = tmp_path / "annotations/instances_train.json"
    train.supernet_detection(cfg, "synth", "retinanet", tmp_path / "train", ann, None, tmp_path)
    spec = {"kind": "shufflenet", "space": "test", "arch": "0-00-00-0"}
    train.train_detector(cfg, spec, "x", "synth", "retinanet", None, tmp_path)
    train.train_detector(cfg, spec, "x", "synth", "fpn", None, tmp_path)
    assert [tcfg.lr for _stage, tcfg in seen] == [0.001, 0.002, cfg.retrain_finetune.lr]
    assert [tcfg.steps for _stage, tcfg in seen] == [cfg.supernet_finetune.steps, 5,
                                                     cfg.retrain_finetune.steps]


# --- 4. the reference's Faster R-CNN head and FPN ---------------------------------------------


def _paper_detector(detector: str, cfg=COCO):
    small = config.from_dict(config.DetectorConfig, {
        **config.to_dict(cfg.detector), "min_size": 64, "max_size": 64, "fpn_channels": 16,
        "box_conv_channels": 8, "box_head_channels": 32})
    torch.manual_seed(0)
    return build_model("detection", {"kind": "supernet", "space": "test"}, 2, detector, small)


def _norms(module: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in module.modules())


def test_paper_faster_rcnn_has_the_4conv1fc_head_and_a_normalised_fpn():
    fpn = _paper_detector("fpn")
    head = fpn.roi_heads.box_head
    assert isinstance(head, FastRCNNConvFCHead)
    assert sum(isinstance(m, nn.Conv2d) for m in head.modules()) == 4
    assert sum(isinstance(m, nn.Linear) for m in head.modules()) == 1
    assert _norms(head) == 4 and _norms(fpn.backbone.fpn) == 8  # 4 inner + 4 layer convs
    assert _norms(_paper_detector("retinanet").backbone.fpn) == 0  # the reference's RetinaNet
    light = build_model("detection", {"kind": "supernet", "space": "test"}, 2, "fpn",
                        config.DetectorConfig(min_size=64, max_size=64, fpn_channels=16))
    assert not has_head_norm(light)  # the embedded default keeps the light head


def test_fitness_recalibrates_a_normalised_detector_whole_with_targets():
    """The reference's bn_statistic resets every BN of the detector and runs it in training mode
    with targets; the heads' statistics must follow the candidate too."""
    model = _paper_detector("fpn").eval()
    g = torch.Generator().manual_seed(0)
    pairs = [(torch.rand(3, 64, 64, generator=g),
              {"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([1])})
             for _ in range(4)]
    head_bn = model.roi_heads.box_head[0][1]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inside = []

    def evaluate(m):
        inside.append(head_bn.running_mean.clone())
        return {"mmap": float(head_bn.running_var.mean())}

    fitness = SupernetFitness(model, evaluate, "mmap", lambda: [pairs[:2], pairs[2:]], 4)
    assert fitness.recalib_module is model
    a1, b1, a2 = (fitness(Arch.parse(e, "test")) for e in ("0-12-30-2", "1-03-21-3", "0-12-30-2"))
    assert a1 == a2 != b1  # the RoI sampler is seeded: statistics do not depend on the order
    assert not torch.equal(inside[0], before["roi_heads.box_head.0.1.running_mean"])
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


# --- 5. the ImageNet recipe -------------------------------------------------------------------


def test_paper_imagenet_recipe(tmp_path, monkeypatch):
    make_synthetic_classification(tmp_path, seed=0, num_classes=2, num_train=8, num_val=2,
                                  image_size=32)
    overrides = [f"classification.root={tmp_path}", "classification.search_images=2"]
    cfg = config.load(REPO / "config" / "coco.yaml", overrides)
    data = train._classification_data(cfg, "train", True)
    crop, jitter = data.transform.transforms[:2]
    assert isinstance(crop, v2.RandomResizedCrop) and crop.scale == (0.08, 1.0)
    assert isinstance(jitter, v2.ColorJitter)
    assert jitter.brightness == jitter.contrast == jitter.saturation == (0.6, 1.4)
    seen = _capture_stage(monkeypatch)
    cfg.space = "test"
    train.supernet_classification(cfg, tmp_path)
    train.train_classifier(cfg, {"kind": "shufflenet", "space": "test", "arch": "0-00-00-0"},
                           "x", tmp_path)
    for stage, _tcfg in seen:
        assert isinstance(stage.model.dropout, nn.Dropout2d) and stage.model.dropout.p == 0.2
        first = stage.model.backbone.stem[0].weight
        assert first.std().item() == pytest.approx(0.01, rel=0.3)  # reference: N(0, 0.01)
        assert stage.model.fc.weight.std().item() == pytest.approx(0.01, rel=0.3)
        bn = stage.model.backbone.stem[1]
        assert torch.all(bn.bias == 1e-4)
    assert len(seen[0][0].dataset) == 6  # the ClsNASNet images are held out of the supernet's


def test_resnet_classifier_keeps_torchvision_init_and_no_dropout():
    model = build_model("classification", {"kind": "resnet", "depth": 26, "width": 4}, 3,
                        dropout=0.2, init="reference")
    assert isinstance(model.dropout, nn.Identity)


# --- 6. random search -------------------------------------------------------------------------


def test_random_search_repeats_is_gone_with_its_claim():
    """Nothing read it: the random row is one random search with the EA's budget."""
    with pytest.raises(ValueError, match="unknown key 'random_search_repeats'"):
        config.load(None, ["random_search_repeats=5"])
    from detnas.report.paper import PAPER_CLAIMS

    claim = next(c for c in PAPER_CLAIMS if c.startswith("random search"))
    assert "EA's evaluation budget" in claim


# --- 7. FLOPs limits --------------------------------------------------------------------------


def test_every_published_300m_net_is_within_its_dataset_limit(capsys):
    from detnas.cli import main

    for name in PUBLISHED_300M:
        cfg = COCO if "COCO" in name else VOC
        assert flops.backbone_flops(REGISTRY[name].arch) <= cfg.search.max_flops, name
    assert VOC.search.max_flops == 330e6 and COCO.search.max_flops == 300e6
    assert main(["arch", "list", "--config", str(REPO / "config" / "voc.yaml")]) == 0
    rows = {line.split()[0]: line.split()[4] for line in capsys.readouterr().out.splitlines()
            if line.startswith("DetNAS-")}
    assert all(rows[name] == "ok" for name in PUBLISHED_300M)


# --- 8. baselines and ablations on their own recipes ------------------------------------------


@pytest.mark.parametrize("cfg", PAPER, ids=["coco", "voc"])
def test_resnet_and_scratch_have_their_own_schedules(cfg):
    r = train.pretrain_schedule(cfg, {"kind": "resnet", "depth": 50, "width": 64})
    assert (r.lr, r.batch_size, r.weight_decay, r.label_smoothing) == (0.1, 256, 1e-4, 0.0)
    assert r.schedule == "step" and r.steps * r.batch_size == pytest.approx(90 * 1_281_167, 1e-3)
    s = train.pretrain_schedule(cfg, {"kind": "shufflenet", "space": "300M", "arch": ""})
    assert (s.lr, s.weight_decay) == (0.5, 4e-5)
    scratch = train.finetune_schedule(cfg, "fpn", scratch=True)
    assert scratch.steps == 3 * cfg.supernet_finetune.steps
    assert train.finetune_schedule(cfg, "fpn", scratch=False).steps == cfg.supernet_finetune.steps


def test_clsnas_fitness_scores_images_held_out_of_train(tmp_path):
    from detnas.data import ImageFolderClassification

    make_synthetic_classification(tmp_path, seed=0, num_classes=2, num_train=10, num_val=2,
                                  image_size=32)
    rest = ImageFolderClassification(tmp_path / "train", 32, False, holdout=4, seed=0)
    held = ImageFolderClassification(tmp_path / "train", 32, False, holdout=4, held_out=True)
    assert len(rest) == 6 and len(held) == 4
    assert not {p for p, _ in rest.samples} & {p for p, _ in held.samples}
    assert all(c.classification.search_images == 50_000 for c in PAPER)


# --- 9-10 and the switches --------------------------------------------------------------------


def test_paper_configs_use_the_reference_switches():
    """Deliberate improvements are switches whose paper-config values are the reference's."""
    for cfg in PAPER:
        assert cfg.search.recalib == "momentum"
        assert {t.amp for t in (cfg.supernet_pretrain, cfg.supernet_finetune,
                                cfg.retrain_pretrain, cfg.resnet_pretrain,
                                cfg.retrain_finetune, cfg.nats.search)} == {"off"}
        assert cfg.supernet_finetune.warmup_factor == pytest.approx(1 / 3)
    assert VOC.datasets["voc"].metric == "voc07"


def test_warm_up_starts_at_a_third_of_the_lr():
    tcfg = COCO.supernet_finetune
    assert engine.lr_factor(0, tcfg) == pytest.approx(1 / 3)
    assert engine.lr_factor(tcfg.warmup_steps, tcfg) == 1.0


def test_syncbn_keeps_the_reference_momentum_and_eps():
    """DistributedSyncBN (pytorch_distributed_syncbn) hard-codes momentum 0.1 and eps 1e-5."""
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(_paper_detector("fpn"))
    norms = [m for m in synced.modules() if isinstance(m, nn.SyncBatchNorm)]
    assert norms and all(m.momentum == 0.1 and m.eps == 1e-5 for m in norms)


def test_the_report_names_every_detection_metric():
    from detnas.report.paper import METRIC_NAMES

    assert set(METRIC_NAMES) == {"mmap", "ap50", "voc07"}
    with pytest.raises(ValueError, match=r"datasets\.voc\.metric: 'ap' \(mmap, ap50, voc07\)"):
        config.load(REPO / "config" / "voc.yaml", ["datasets.voc.metric=ap"])
