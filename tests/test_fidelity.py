"""The paper configs reproduce the authors' code: one test per row of docs/fidelity.md."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead
from torchvision.transforms import v2

from detnas.data import CocoDetection, make_synthetic_classification, make_synthetic_detection
from detnas.nets.models import build_model
from detnas.plan import config, flops, typed
from detnas.plan.config import DETECTORS
from detnas.plan.space import REGISTRY, Arch
from detnas.run import engine, tracking, train
from detnas.search.fitness import SupernetFitness, has_head_norm

REPO = Path(__file__).resolve().parents[1]
COCO = config.load(REPO / "config" / "coco.yaml")
VOC = config.load(REPO / "config" / "voc.yaml")
PAPER = (COCO, VOC)
PUBLISHED_300M = ("DetNAS-COCO-FPN-300M", "DetNAS-COCO-RetinaNet-300M", "DetNAS-VOC-FPN-300M",
                  "DetNAS-VOC-RetinaNet-300M")


def _capture_stage(monkeypatch) -> list:
    """Replace the training loop: keep what a stage function would train, train nothing."""
    seen = []
    monkeypatch.setattr(train, "_run_stage", lambda cfg, run, stage, tcfg, evaluate, **_:
                        seen.append((stage, tcfg)) or {})
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
    finetune = train.path_sampler(cfg, train.finetune_schedule(cfg, "fpn", scratch=False))
    paths = [finetune(rng) for _ in range(2000)]  # fine-tuning: every block's choice uniform
    choices = Counter((block, c) for a in paths for block, c in enumerate(a.choices))
    assert len(choices) == 4 * len(paths[0].choices)
    assert all(abs(n - 500) < 5 * (500 * 0.75) ** 0.5 for n in choices.values()), choices
    edge = sum(290e6 <= table.classifier_flops(a) < 300e6 for a in paths) / len(paths)
    assert edge < 0.05 < bins[0] / 10_000  # not the bins' 1/7 (uniform paths: about 1 %)


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
    """configs/e2e_faster_rcnn_DETNAS_COCO_FPN_300M_*.yaml: BASE_LR 0.02; configs/retinanet/
    retinanet_DETNAS_COCO_FPN_300M_*.yaml:47: 0.01. The optimiser of each detection stage, after
    warm-up: a weight at that lr (its bias at twice it: maskrcnn-benchmark's groups)."""
    for detector, lr in (("fpn", 0.02), ("retinanet", 0.01)):
        model = _paper_detector(detector, cfg)
        weight = next(p for n, p in model.named_parameters() if n.endswith("weight"))
        for tcfg in (train.finetune_schedule(cfg, detector, scratch=False),
                     train.finetune_schedule(cfg, detector, scratch=True),
                     cfg.retrain_finetune.for_detector(detector),
                     cfg.nats.search.for_detector(detector)):
            optimizer = engine.make_optimizer(model, tcfg)
            engine.set_lr(optimizer, 1000, tcfg)
            assert _groups(optimizer)[id(weight)]["lr"] == pytest.approx(lr), tcfg


def test_stages_use_the_detector_learning_rate(tmp_path, monkeypatch):
    """And the detector's own steps and batch size (``detector_steps``, ``detector_batch_size``)."""
    make_synthetic_detection(tmp_path, seed=0, num_train=4, num_test=2, image_size=32,
                             num_classes=2, max_objects=1, max_distractors=0)
    cfg = config.load(REPO / "config" / "test.yaml", [
        f"datasets.synth.root={tmp_path}", "supernet_finetune.detector_lr={retinanet: 0.001}",
        "supernet_finetune.detector_batch_size={retinanet: 3}",
        "retrain_finetune.detector_lr={retinanet: 0.002}",
        "retrain_finetune.detector_steps={retinanet: 5}",
        "retrain_finetune.detector_batch_size={retinanet: 1}"])
    seen = _capture_stage(monkeypatch)
    ann = tmp_path / "annotations/instances_train.json"
    train.supernet_detection(cfg, "synth", "retinanet", tmp_path / "train", ann, None, tmp_path)
    spec = {"kind": "shufflenet", "space": "test", "arch": "0-00-00-0"}
    train.train_detector(cfg, spec, "x", "synth", "retinanet", None, tmp_path)
    train.train_detector(cfg, spec, "x", "synth", "fpn", None, tmp_path)
    assert [tcfg.lr for _stage, tcfg in seen] == [0.001, 0.002, cfg.retrain_finetune.lr]
    assert [tcfg.steps for _stage, tcfg in seen] == [cfg.supernet_finetune.steps, 5,
                                                     cfg.retrain_finetune.steps]
    assert [tcfg.batch_size for _stage, tcfg in seen] == [3, 1, cfg.retrain_finetune.batch_size]


# --- 4. the reference's Faster R-CNN head and FPN ---------------------------------------------


def _paper_detector(detector: str, cfg=COCO, **changes):
    small = typed.from_dict(config.DetectorConfig, {
        **typed.to_dict(cfg.detector), "min_size": 64, "max_size": 64, "fpn_channels": 16,
        "box_conv_channels": 8, "box_head_channels": 32, **changes})
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


@pytest.mark.parametrize("detector", DETECTORS)
def test_recalibration_statistics_leave_out_the_padding_of_other_images(detector):
    """test_server.py::bn_statistic recalibrates at one image per GPU (8 GPUs, SyncBN): an image
    is padded only to a multiple of 32 (DATALOADER.SIZE_DIVISIBILITY), never to another image's
    size. With coco.yaml's search.recalib_padding, a landscape and a portrait image batched
    together give the stem's BN the statistics of the two images run one at a time."""
    from detnas.search.fitness import fitness_spec

    specs = [fitness_spec(dataclasses.replace(c, device="cpu"), "detection", "s.pt", "a.json",
                          "b.json", dataset=next(iter(c.datasets))) for c in PAPER]
    model = _paper_detector(detector).eval()
    regions = specs[0].recalib_regions(model)
    assert regions is not None and specs[1].recalib_regions(model) is not None
    assert config.StudyConfig().search.recalib_padding == "include"  # the embedded default's
    g = torch.Generator().manual_seed(0)
    target = {"boxes": torch.tensor([[4.0, 4.0, 28.0, 28.0]]), "labels": torch.tensor([1])}
    pairs = [(torch.rand(3, 32, 64, generator=g), target),  # 64 x 64 when batched together
             (torch.rand(3, 64, 32, generator=g), target)]
    stem = model.backbone.body.stem[1]  # the first BN
    seen = []

    def evaluate(m):
        seen.append((stem.running_mean.clone(), stem.running_var.clone()))
        return {"mmap": 0.0}

    if not has_head_norm(model):  # RetinaNet: the backbone alone, on images
        pairs = [image for image, _ in pairs]
    arch = Arch.parse("0-12-30-2", "test")
    for batches, regions_ in (([pairs], regions), ([pairs[:1], pairs[1:]], None),
                              ([pairs], None)):
        SupernetFitness(model, evaluate, "mmap", lambda b=batches: b, 2,
                        recalib_regions=regions_)(arch)
    (together, alone, padded) = seen
    for a, b in zip(together, alone, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(padded[1], alone[1], rtol=0.02)  # half the batch is padding


@pytest.mark.parametrize("cfg", PAPER, ids=["coco", "voc"])
def test_detection_batches_are_grouped_by_aspect_ratio(cfg, tmp_path):
    """maskrcnn_benchmark/data/build.py:87-93, 146 (DATALOADER.ASPECT_RATIO_GROUPING, defaults.py
    :86): the images of a batch are all wider than high, or all not, in every detection training
    (supernet fine-tuning, DetNAS-scratch, retraining, NATS, the ranking check)."""
    import json

    images = [{"id": i, "file_name": f"{i}.jpg", "width": 640 if i % 3 else 480,
               "height": 480 if i % 3 else 640} for i in range(1, 101)]  # 67 wide, 33 high
    (tmp_path / "annotations.json").write_text(json.dumps({
        "images": images, "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    for im in images:
        (tmp_path / im["file_name"]).touch()
    data = CocoDetection(tmp_path, tmp_path / "annotations.json", cache=False)
    wide = {i for i, im in enumerate(images) if im["width"] > im["height"]}
    schedules = [train.finetune_schedule(cfg, d, scratch=s) for d in DETECTORS
                 for s in (False, True)]
    schedules += [cfg.retrain_finetune.for_detector(d) for d in DETECTORS]
    for tcfg in schedules + [cfg.nats.search, cfg.rank.train]:
        assert tcfg.aspect_grouping, tcfg
        loader = engine.step_loader(data, dataclasses.replace(tcfg, steps=10), 0, 0,
                                    engine.Dist(), lambda batch: batch)
        batches = list(loader.batch_sampler)
        assert len(batches) == 10 and all(len(b) == 16 for b in batches)
        assert all(len({i in wide for i in b}) == 1 for b in batches)  # 4 + 2 an epoch
    assert not config.StudyConfig().supernet_finetune.aspect_grouping  # the embedded default's
    with pytest.raises(ValueError, match=r"supernet_pretrain\.aspect_grouping: true"):
        config.load(REPO / "config" / "coco.yaml", ["supernet_pretrain.aspect_grouping=true"])


@pytest.mark.parametrize("cfg", PAPER, ids=["coco", "voc"])
def test_evaluation_batches_hold_images_of_one_size(cfg, tmp_path):
    """test_server.py (fitness) and tools/test_net.py evaluate at one image per GPU
    (TEST.IMS_PER_BATCH = GPUs): no image is padded to another's, whose padding would reach into
    its features. The paper configs batch images of one size: the detections are those of one
    image at a time, in the fitness (the search split) and the final evaluation alike."""
    import json

    from PIL import Image

    from detnas.evaluation import predict_detector
    from detnas.search.fitness import fitness_spec

    name = next(iter(cfg.datasets))
    assert cfg.datasets[name].eval_padding == "exclude"
    spec = fitness_spec(dataclasses.replace(cfg, device="cpu"), "detection", "s.pt", "a.json",
                        "b.json", dataset=name)
    assert spec.eval_padding == "exclude"
    assert config.StudyConfig().datasets["synth"].eval_padding == "include"  # the default's
    rng = torch.Generator().manual_seed(0)
    sizes = [(32, 64), (64, 32), (32, 64), (64, 32), (32, 64)]
    images = []
    for i, (h, w) in enumerate(sizes, 1):
        pixels = torch.randint(0, 256, (h, w, 3), generator=rng, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "width": w, "height": h})
    (tmp_path / "a.json").write_text(json.dumps({"images": images, "annotations": [],
                                                 "categories": [{"id": 1, "name": "a"}]}))
    data = CocoDetection(tmp_path, tmp_path / "a.json")
    assert data.same_size_batches(2) == [[0, 2], [1, 3], [4]]
    model = _paper_detector("fpn", cfg, score_thresh=0.0).eval()

    def predictions(batch_size, same_size):
        with model.backbone.body.use(Arch.parse("0-12-30-2", "test")):
            return sorted(predict_detector(model, data, batch_size, "cpu", same_size),
                          key=lambda p: p["image_id"])

    alone, grouped, padded = predictions(1, False), predictions(8, True), predictions(8, False)
    for a, g, p in zip(alone, grouped, padded, strict=True):
        assert a["image_id"] == g["image_id"] == p["image_id"]
        torch.testing.assert_close(g["scores"], a["scores"], rtol=1e-4, atol=1e-5)
    assert any(p["scores"].shape != a["scores"].shape or not torch.allclose(
        p["scores"], a["scores"], rtol=1e-3) for a, p in zip(alone, padded, strict=True))


# --- 4b. the reference's training losses --------------------------------------------------------


LOSSES = ("box_loss_beta", "rpn_straddle_thresh", "retinanet_loss")


def _embedded_detector(detector: str, cfg=COCO):
    """The paper detector with the embedded default's losses (torchvision's)."""
    embedded = config.load(REPO / "config" / "config.yaml").detector
    return _paper_detector(detector, cfg, **{k: getattr(embedded, k) for k in LOSSES})


def _fixed_box_loss(model) -> dict:
    """The box head's training losses of ``model`` on a fixed input: three sampled RoIs of
    labels 1, 0, 2 with fixed predictions (the RoI sampling and the predictor replaced)."""
    heads = model.roi_heads.train()
    labels = [torch.tensor([1, 0, 2])]
    targets = [torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.5, 1.0]])]
    proposals = [torch.tensor([[0.0, 0.0, 20.0, 20.0], [10.0, 10.0, 40.0, 50.0],
                               [30.0, 5.0, 60.0, 60.0]])]
    logits = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    deltas = torch.zeros(3, 3, 4)
    deltas[0, 1] = targets[0][0] + torch.tensor([0.5, -2.0, 0.0, 0.25])  # the errors of RoI 0
    deltas[2, 2] = targets[0][2] + torch.tensor([1.0, 0.1, -0.3, 3.0])  # and of RoI 2
    heads.select_training_samples = lambda p, t: (proposals, None, labels, targets)
    heads.box_predictor = type("Fixed", (nn.Module,), {
        "forward": lambda self, x: (logits, deltas.reshape(3, 12))})()
    features = {str(i): torch.zeros(1, 16, 16 // 2**i, 16 // 2**i) for i in range(4)}
    boxes = {"boxes": torch.zeros(1, 4), "labels": torch.ones(1, dtype=torch.long)}
    _, losses = heads(features, proposals, [(64, 64)], [boxes])
    return losses


@pytest.mark.parametrize("cfg", PAPER, ids=["coco", "voc"])
def test_faster_rcnn_box_loss_is_smooth_l1_with_beta_1(cfg):
    """modeling/roi_heads/box_head/loss.py:159-165: smooth L1 with beta 1 (torchvision's
    fastrcnn_loss: 1/9), summed over the positives' 4 deltas of their class, divided by the
    sampled RoIs. Errors 0.5, -2, 0, 0.25 and 1, 0.1, -0.3, 3 over 3 RoIs:
    beta 1: (0.125 + 1.5 + 0 + 0.03125 + 0.5 + 0.005 + 0.045 + 2.5) / 3 = 1.56875;
    beta 1/9: (0.4444 + 1.9444 + 0 + 0.1944 + 0.9444 + 0.045 + 0.2444 + 2.9444) / 3 = 2.25389."""
    assert cfg.detector.box_loss_beta == 1.0
    losses = _fixed_box_loss(_paper_detector("fpn", cfg))
    assert losses["loss_box_reg"].item() == pytest.approx(1.56875, abs=1e-5)
    cross_entropy = -torch.log_softmax(torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 0.0],
                                                     [0.0, 0.0, 0.0]]), 1)[[0, 1, 2], [1, 0, 2]]
    assert losses["loss_classifier"].item() == pytest.approx(cross_entropy.mean().item())
    assert _fixed_box_loss(_embedded_detector("fpn", cfg))["loss_box_reg"].item() == \
        pytest.approx(2.253889, abs=1e-5)


@pytest.mark.parametrize("cfg", PAPER, ids=["coco", "voc"])
def test_rpn_training_drops_the_anchors_across_the_image_border(cfg):
    """RPN.STRADDLE_THRESH 0 (defaults.py:139; rpn/anchor_generator.py:97-110, rpn/loss.py:
    72-74): an anchor not inside the image (the resized image, not the padded batch) is ignored
    by the RPN's sampler, even one matched to a box at the image's corner; torchvision samples
    every anchor."""
    from torchvision.models.detection.image_list import ImageList

    assert cfg.detector.rpn_straddle_thresh == 0
    images = ImageList(torch.rand(2, 3, 64, 64), [(64, 48), (48, 64)])  # padded to 64 x 64
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 20.0, 20.0], [10.0, 20.0, 40.0, 60.0]]),
                "labels": torch.tensor([1, 2])},
               {"boxes": torch.tensor([[30.0, 24.0, 60.0, 46.0]]), "labels": torch.tensor([1])}]
    seen = {}
    for name, model in (("paper", _paper_detector("fpn", cfg)),
                        ("torchvision", _embedded_detector("fpn", cfg))):
        rpn = model.rpn.train()
        sampler = rpn.fg_bg_sampler
        rpn.fg_bg_sampler = lambda labels, s=sampler, n=name: seen.setdefault(
            n, [x.clone() for x in labels]) and s(labels)
        with model.backbone.body.use(Arch.parse("0-12-30-2", "test")), torch.no_grad():
            features = model.backbone(images.tensors)
            rpn(images, features, targets)
            anchors = rpn.anchor_generator(images, list(features.values()))
    for i, (h, w) in enumerate(images.image_sizes):
        a = anchors[i]
        inside = (a[:, 0] >= 0) & (a[:, 1] >= 0) & (a[:, 2] <= w) & (a[:, 3] <= h)
        paper, plain = seen["paper"][i], seen["torchvision"][i]
        if i == 0:  # anchors matched to the box at the corner: sampled by torchvision only
            assert (plain[~inside] == 1).any()
        assert 0 < inside.sum() < len(a) // 2
        assert (paper[~inside] == -1).all()
        torch.testing.assert_close(paper[inside], plain[inside])
        assert (paper[inside] == 1).any() and (paper[inside] == 0).any()
        assert (plain[~inside] == 0).any()


def _fixed_retinanet_losses(model) -> dict:
    """RetinaNet's training losses on a fixed input: two images of three anchors, zero logits
    (p = 0.5) over the background and 2 classes; image 0's anchor 0 matches a box of class 2,
    its anchor 1 is background, its anchor 2 between the thresholds; image 1 is background."""
    head = model.head
    anchors = [torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0],
                             [0.0, 20.0, 10.0, 30.0]])] * 2
    targets = [{"boxes": torch.tensor([[1.0, 1.0, 11.0, 11.0]]), "labels": torch.tensor([2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    matched = [torch.tensor([0, -1, -2]), torch.tensor([-1, -1, -1])]
    regression = torch.zeros(2, 3, 4)
    regression[0, 0] = torch.tensor([0.0, 1.05, 0.0, 0.5])
    outputs = {"cls_logits": torch.zeros(2, 3, 3), "bbox_regression": regression}
    return head.compute_loss(targets, outputs, anchors, matched)


@pytest.mark.parametrize("cfg", PAPER, ids=["coco", "voc"])
def test_retinanet_losses_are_normalised_over_the_batch_as_the_reference(cfg):
    """modeling/rpn/retinanet/loss.py:66-78: focal loss (alpha 0.25, gamma 2) over the object
    classes only (no background logit), anchors between the thresholds ignored, summed over the
    batch and divided by its positives + images; smooth L1 (beta 0.11) on deltas encoded with
    (10, 10, 5, 5) (retinanet.py), divided by 4 x the positives (BBOX_REG_WEIGHT, defaults.py:
    322-325). At p = 0.5 a positive costs 0.25 x 0.25 ln 2, a negative 0.75 x 0.25 ln 2:
    reference (0.25 + 0.375 + 1.125) ln 2 / (1 + 2) = 0.404336; torchvision (per image over
    every logit, by its positives, then the mean) (1.0 + 1.6875) ln 2 / 2 = 0.931417. Box: the
    target (1, 1, 0, 0) against (0, 1.05, 0, 0.5): (0.945 + 0.011364 + 0.445) / 4 = 0.350341;
    torchvision's L1 on (0.1, 0.1, 0, 0) / 1, then the mean over the 2 images: 0.775."""
    assert cfg.detector.retinanet_loss == "reference"
    model = _paper_detector("retinanet", cfg)
    losses = _fixed_retinanet_losses(model)
    assert losses["classification"].item() == pytest.approx(0.404336, abs=1e-5)
    assert losses["bbox_regression"].item() == pytest.approx(0.350341, abs=1e-5)
    assert model.box_coder.weights == (10.0, 10.0, 5.0, 5.0)  # detections decode alike
    plain = _fixed_retinanet_losses(_embedded_detector("retinanet", cfg))
    assert plain["classification"].item() == pytest.approx(0.931417, abs=1e-5)
    assert plain["bbox_regression"].item() == pytest.approx(0.775, abs=1e-5)


# --- 5. the ImageNet recipe -------------------------------------------------------------------


def test_paper_imagenet_recipe(tmp_path, monkeypatch):
    make_synthetic_classification(tmp_path, seed=0, num_classes=2, num_train=8, num_val=2,
                                  image_size=32)
    overrides = [f"classification.root={tmp_path}", "classification.search_images=2"]
    cfg = config.load(REPO / "config" / "coco.yaml", overrides)
    assert VOC.classification == COCO.classification  # one ImageNet recipe for both studies
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


@pytest.mark.parametrize("path", ["coco.yaml", "voc.yaml"])
def test_resnet_imagenet_recipe_crops_and_flips_without_colour_jitter(path, tmp_path,
                                                                    monkeypatch):
    """torchvision references/classification/presets.py (ClassificationPresetTrain): a random
    resized crop (0.08-1) and a flip, no colour jitter; the ShuffleNet classifiers keep DetNAS's
    ColorJitter(0.4)."""
    make_synthetic_classification(tmp_path, seed=0, num_classes=2, num_train=4, num_val=2,
                                  image_size=32)
    cfg = config.load(REPO / "config" / path, [f"classification.root={tmp_path}",
                                               "classification.loader=cpu"])
    seen = _capture_stage(monkeypatch)
    train.train_classifier(cfg, {"kind": "resnet", "depth": 26, "width": 4}, "x", tmp_path)
    train.train_classifier(cfg, {"kind": "shufflenet", "space": "test", "arch": "0-00-00-0"},
                           "x", tmp_path)
    (resnet, _), (shufflenet, _) = seen
    kinds = [type(t) for t in resnet.dataset.transform.transforms]
    assert v2.RandomResizedCrop in kinds and v2.RandomHorizontalFlip in kinds
    assert v2.ColorJitter not in kinds
    assert v2.ColorJitter in [type(t) for t in shufflenet.dataset.transform.transforms]


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
    epoch = 1_281_167 / 256  # lr x0.1 after epochs 30 and 60 (torchvision references)
    assert [engine.lr_factor(round(e * epoch), r) for e in (29, 31, 61)] == \
        pytest.approx([1, 0.1, 0.01])
    s = train.pretrain_schedule(cfg, {"kind": "shufflenet", "space": "300M", "arch": ""})
    # Supernet-ImageNet/train.py: SGD 0.5, momentum 0.9, wd 4e-5, batch 1024, 300k iterations,
    # linear decay to 0, label smoothing 0.1 (the supernet and every retrained ShuffleNet)
    for t in (s, cfg.supernet_pretrain):
        assert (t.lr, t.momentum, t.weight_decay, t.batch_size, t.steps, t.label_smoothing) == \
            (0.5, 0.9, 4e-5, 1024, 300_000, 0.1)
        assert [engine.lr_factor(n, t) for n in (0, 150_000, 300_000)] == \
            pytest.approx([1, 0.5, 0])
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
    """Deliberate improvements are switches whose paper-config values are the reference's:
    the BN recalibration's running average, fp32 training (the precision each training loop
    builds for a GPU: no autocast, no scaler), the search fitness's metric (what `detnas search`
    scores: COCO's mmAP, VOC 2007's 11-point mAP)."""
    from detnas.run.precision import Precision
    from detnas.search.fitness import fitness_spec

    for cfg in PAPER:
        assert cfg.search.recalib == "momentum"
        for tcfg in (cfg.supernet_pretrain, cfg.supernet_finetune, cfg.retrain_pretrain,
                     cfg.resnet_pretrain, cfg.retrain_finetune, cfg.nats.search, cfg.rank.train):
            precision = Precision.for_device(tcfg.amp, torch.device("cuda"))
            assert (precision.mode, precision.dtype, precision.scaler) == ("off", None, None)
        assert cfg.supernet_finetune.warmup_factor == pytest.approx(1 / 3)
    metrics = [fitness_spec(dataclasses.replace(c, device="cpu"), "detection", "s.pt", "a.json",
                            "b.json", dataset=next(iter(c.datasets))).metric for c in PAPER]
    assert metrics == ["mmap", "voc07"]


def test_warm_up_starts_at_a_third_of_the_lr():
    tcfg = COCO.supernet_finetune
    assert engine.lr_factor(0, tcfg) == pytest.approx(1 / 3)
    assert engine.lr_factor(tcfg.warmup_steps, tcfg) == 1.0


def _train_zero_steps(model: nn.Module, tcfg: config.TrainConfig, tmp_path) -> None:
    """`engine.train` up to its first step: what it sets on the model before training (no data:
    nothing to group by aspect ratio)."""
    stage = engine.Stage(model, lambda m, b: torch.zeros(()), [0], list, {})
    engine.train(stage, dataclasses.replace(tcfg, steps=0, aspect_grouping=False), 0,
                 engine.Dist(), tmp_path / "resume.pt", tracking.NullTracker(), {})


@pytest.mark.parametrize("cfg", PAPER, ids=["coco", "voc"])
def test_syncbn_momentum_is_the_references_per_stage(cfg, tmp_path):
    """DetNAS's DistributedSyncBN (maskrcnn_benchmark/pytorch_distributed_syncbn/syncbn.py:94-97):
    momentum 0.01, 0.1 when the backbone is a search supernet; eps 1e-5. The ImageNet stages use
    torch's BN (0.1)."""
    expected = [(train.finetune_schedule(cfg, "fpn", scratch=False), 0.1),
                (train.finetune_schedule(cfg, "fpn", scratch=True), 0.1),
                (cfg.retrain_finetune.for_detector("fpn"), 0.01),
                (cfg.retrain_finetune.for_detector("retinanet"), 0.01),
                (cfg.rank.train, 0.01), (cfg.supernet_pretrain, 0.1),
                (cfg.retrain_pretrain, 0.1)]
    for tcfg, momentum in expected:
        model = _paper_detector("fpn", cfg)
        _train_zero_steps(model, tcfg, tmp_path)
        synced = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # as engine.train under DDP
        norms = [m for m in synced.modules() if isinstance(m, nn.SyncBatchNorm)]
        assert len(norms) > 12  # backbone, FPN and box head
        assert all(m.momentum == momentum and m.eps == 1e-5 for m in norms), tcfg


def _groups(optimizer) -> dict[int, dict]:
    return {id(p): g for g in optimizer.param_groups for p in g["params"]}


@pytest.mark.parametrize("cfg", PAPER, ids=["coco", "voc"])
def test_detection_solver_has_maskrcnn_benchmarks_parameter_groups(cfg):
    """maskrcnn_benchmark/solver/build.py:9-17 with config/defaults.py:401-406: a parameter named
    *bias* at BIAS_LR_FACTOR 2 and WEIGHT_DECAY_BIAS 0, everything else (BN weights included)
    at the lr with WEIGHT_DECAY; the ImageNet recipe keeps SPOS's groups (Supernet-ImageNet
    utils.py:81-95: decay on conv/fc weights only, one lr)."""
    for detector in DETECTORS:
        model = _paper_detector(detector, cfg)
        for tcfg in (train.finetune_schedule(cfg, detector, scratch=False),
                     cfg.retrain_finetune.for_detector(detector), cfg.nats.search, cfg.rank.train):
            optimizer = engine.make_optimizer(model, tcfg)
            engine.set_lr(optimizer, 1000, tcfg)  # after warm-up, before the first lr step
            groups = _groups(optimizer)
            for name, p in model.named_parameters():
                lr, decay = (2 * tcfg.lr, 0.0) if "bias" in name else (tcfg.lr, 1e-4)
                assert (groups[id(p)]["lr"], groups[id(p)]["weight_decay"]) == \
                    pytest.approx((lr, decay)), (name, tcfg)
            bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
            assert groups[id(bn.weight)]["weight_decay"] == 1e-4
    classifier = build_model("classification", {"kind": "supernet", "space": "test"}, 3)
    for tcfg in (cfg.supernet_pretrain, cfg.retrain_pretrain, cfg.resnet_pretrain):
        optimizer = engine.make_optimizer(classifier, tcfg)
        engine.set_lr(optimizer, 0, tcfg)
        groups = _groups(optimizer)
        for _name, p in classifier.named_parameters():
            decay = tcfg.weight_decay if p.ndim > 1 else 0.0
            assert (groups[id(p)]["lr"], groups[id(p)]["weight_decay"]) == (tcfg.lr, decay)


def test_the_report_names_every_detection_metric():
    from detnas.report.paper import METRIC_NAMES

    assert set(METRIC_NAMES) == {"mmap", "ap50", "voc07"}
    with pytest.raises(ValueError, match=r"datasets\.voc\.metric: 'ap' \(mmap, ap50, voc07\)"):
        config.load(REPO / "config" / "voc.yaml", ["datasets.voc.metric=ap"])


# --- the paper configs through the code: detectors, schedules, search, splits -----------------


def _real_detector(detector: str, cfg):
    """The paper config's detector at its real widths and sizes (around a tiny supernet)."""
    torch.manual_seed(0)
    return build_model("detection", {"kind": "supernet", "space": "test"}, 80, detector,
                       cfg.detector)


@pytest.mark.parametrize("cfg", PAPER, ids=["coco", "voc"])
def test_paper_faster_rcnn_at_the_references_widths_sizes_sampling_and_postprocessing(cfg):
    """configs/e2e_faster_rcnn_DETNAS_COCO_FPN_300M_{search,1x}.yaml and config/defaults.py:
    800 / 1333 px (43-49), 256 FPN channels, 4 convs of 256 + fc 1024 (MODEL.ROI_BOX_HEAD), RoI
    sampling 512 at 1/4 positive (192-194), RPN 256 anchors at 1/2 (149-151), RPN top-n 2000 in
    training and 1000 in test (yaml 15-19), NMS 0.7 (160); boxes: score 0.05, NMS 0.5, 100 per
    image (201-207); RoIAlign 7x7, sampling ratio 2 (yaml 23-25)."""
    model = _real_detector("fpn", cfg)
    assert (model.transform.min_size, model.transform.max_size) == ((800,), 1333)
    assert model.backbone.out_channels == 256
    assert {b[0].out_channels for b in model.backbone.fpn.layer_blocks} == {256}
    head = model.roi_heads.box_head
    assert [m.out_channels for m in head.modules() if isinstance(m, nn.Conv2d)] == [256] * 4
    assert [m.out_features for m in head.modules() if isinstance(m, nn.Linear)] == [1024]
    pool = model.roi_heads.box_roi_pool
    assert (pool.output_size, pool.sampling_ratio) == ((7, 7), 2)
    roi, rpn = model.roi_heads, model.rpn
    assert (roi.fg_bg_sampler.batch_size_per_image, roi.fg_bg_sampler.positive_fraction) == \
        (512, 0.25)
    assert (rpn.fg_bg_sampler.batch_size_per_image, rpn.fg_bg_sampler.positive_fraction) == \
        (256, 0.5)
    assert rpn._pre_nms_top_n == rpn._post_nms_top_n == {"training": 2000, "testing": 1000}
    assert rpn.nms_thresh == 0.7
    assert rpn.anchor_generator.sizes == ((32,), (64,), (128,), (256,), (512,))  # RPN.ANCHOR_SIZES
    assert rpn.anchor_generator.aspect_ratios == ((0.5, 1.0, 2.0),) * 5
    assert (roi.score_thresh, roi.nms_thresh, roi.detections_per_img) == (0.05, 0.5, 100)


def test_faster_rcnn_head_has_the_references_initialisation():
    """roi_box_feature_extractors.py:131-141 (FPNXconv1fcFeatureExtractor: convs N(0, 0.01),
    bias 0; fc6 by make_fc, make_layers.py:81-92: kaiming-uniform a = 1, bias 0) and
    roi_box_predictors.py:45-48 (FPNPredictor: scores N(0, 0.01), boxes N(0, 0.001), bias 0);
    torchvision: kaiming-normal (fan out) convs, torch's Linear init."""
    assert VOC.detector.head_init == COCO.detector.head_init == "reference"
    cfg = COCO
    model = _real_detector("fpn", cfg)
    head, predictor = model.roi_heads.box_head, model.roi_heads.box_predictor
    convs = [m for m in head.modules() if isinstance(m, nn.Conv2d)]
    (fc,) = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert len(convs) == 4
    for conv in convs:
        assert conv.weight.std().item() == pytest.approx(0.01, rel=0.02)
    bound = (3 / fc.in_features) ** 0.5  # kaiming-uniform, a = 1: U(-sqrt(3 / fan_in), ...)
    assert fc.weight.abs().max().item() <= bound
    assert fc.weight.std().item() == pytest.approx(bound / 3**0.5, rel=0.02)
    assert predictor.cls_score.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert predictor.bbox_pred.weight.std().item() == pytest.approx(0.001, rel=0.05)
    for layer in (fc, predictor.cls_score, predictor.bbox_pred):
        assert not layer.bias.any()
    plain = _paper_detector("fpn", cfg, head_init="torchvision").roi_heads
    assert plain.box_head[0][0].weight.std().item() == pytest.approx((2 / (9 * 8)) ** 0.5,
                                                                     rel=0.1)  # fan out 8 x 9
    assert config.StudyConfig().detector.head_init == "torchvision"  # the embedded default's


@pytest.mark.parametrize("cfg", PAPER, ids=["coco", "voc"])
def test_paper_retinanet_at_the_references_widths_sizes_and_postprocessing(cfg):
    """configs/retinanet/retinanet_DETNAS_COCO_FPN_300M_{search,1x}.yaml and config/defaults.py:
    800 / 1333 px, 256 FPN channels, 9 anchors per place (3 scales, 3 ratios: 302-309),
    IoU 0.5 / 0.4 (333-337); inference: score 0.05, the top 1000 per level, NMS 0.4, 100 per
    image (329, 351, 354, 434; modeling/rpn/retinanet/inference.py:176-187)."""
    model = _real_detector("retinanet", cfg)
    assert (model.transform.min_size, model.transform.max_size) == ((800,), 1333)
    assert model.backbone.out_channels == 256
    assert model.anchor_generator.sizes[0] == (32, 40, 51)  # 32 * 2 ** (k / 3)
    assert model.anchor_generator.num_anchors_per_location() == [9] * 5
    assert not any(isinstance(m, nn.GroupNorm | nn.BatchNorm2d) for m in model.head.modules())
    matcher = model.proposal_matcher
    assert (matcher.high_threshold, matcher.low_threshold) == (0.5, 0.4)
    assert (model.score_thresh, model.topk_candidates) == (0.05, 1000)
    assert (model.nms_thresh, model.detections_per_img) == (0.4, 100)


@pytest.mark.parametrize(("cfg", "steps", "milestones"),
                         [(COCO, 90_000, (60_000, 80_000)), (VOC, 22_500, (15_000, 20_000))],
                         ids=["coco", "voc"])
def test_detection_1x_schedule_through_the_code(cfg, steps, milestones):
    """configs/*_1x.yaml: 90k iterations of 16 images, lr steps at 60k and 80k (x0.1), SGD
    momentum 0.9, weight decay 1e-4, linear warm-up from 1/3 over 500 (config/defaults.py:
    401-418); VOC: the paper's 22.5k at the same fractions (no published config)."""
    stages = [train.finetune_schedule(cfg, d, scratch=False) for d in DETECTORS]
    stages += [cfg.retrain_finetune.for_detector(d) for d in DETECTORS]
    stages += [cfg.nats.search.for_detector(d) for d in DETECTORS]
    for tcfg in stages:
        assert (tcfg.steps, tcfg.batch_size, tcfg.momentum, tcfg.weight_decay) == \
            (steps, 16, 0.9, 1e-4)
        factors = [engine.lr_factor(s, tcfg) for s in
                   (0, 250, 500, milestones[0] - 1, milestones[0], milestones[1] - 1,
                    milestones[1], steps - 1)]
        assert factors == pytest.approx([1 / 3, 2 / 3, 1, 1, 0.1, 0.1, 0.01, 0.01], rel=1e-6)
    assert train.finetune_schedule(cfg, "fpn", scratch=True).steps == 3 * steps


def _search_run(search_cfg, space: str = "300M"):
    """A whole search of ``search_cfg`` with a free fitness: what the EA proposes and keeps."""
    from detnas.search.evolution import run_search, serial

    return run_search("evolution", space, search_cfg, serial(lambda a: float(sum(a.choices))),
                      random.Random(0))


@pytest.mark.parametrize("cfg", PAPER, ids=["coco", "voc"])
def test_paper_ea_settings_run_the_references_search(cfg, monkeypatch):
    """distributed_arch_search/arch_search_config.py:29-36 and search.py: population 50, top 10,
    20 generations, 20 mutations (p 0.1) + 20 crossovers of top-10 parents, the rest random,
    under a FLOPs limit on backbone FLOPs at 224 (COCO 300M; VOC 330M: docs/fidelity.md); BN
    recalibration on 500 x 8 training images (test_server.py::bn_statistic), torch's momentum
    0.1. Three generations run: what each proposes, from which parents, with which operator."""
    from detnas.search import evolution
    from detnas.search.evolution import evaluation_budget, search_limits
    from detnas.search.fitness import fitness_spec

    s = cfg.search
    assert evaluation_budget(s) == s.population * s.generations == 1000
    limits = search_limits(s, cfg.space)
    assert limits.limits == {"backbone_flops": 300e6 if cfg is COCO else 330e6}
    fpn = REGISTRY["DetNAS-COCO-FPN-300M"].arch
    assert limits.costs["backbone_flops"](fpn) == 288_082_368  # at 224 px
    made: dict[str, tuple] = {}  # candidate -> (operator, parents, mutation probability)

    def recorded(kind, operator):
        def run(*args):
            arch = operator(*args)
            parents = [a for a in args if isinstance(a, Arch)]
            made.setdefault(str(arch), (kind, [str(a) for a in parents],
                                        args[2] if kind == "mutation" else None))
            return arch
        return run

    for name, kind in (("mutate", "mutation"), ("crossover", "crossover"),
                       ("sample_where", "random")):
        monkeypatch.setattr(evolution, name, recorded(kind, getattr(evolution, name)))
    state = _search_run(dataclasses.replace(s, generations=3), cfg.space)
    assert [g["generation"] for g in state.generations] == [0, 1, 2]
    assert all(r["backbone_flops"] <= s.max_flops for r in state.history)
    assert len({r["arch"] for r in state.history}) == len(state.history) == 3 * s.population
    for generation in (1, 2):
        before = [r for r in state.history if r["generation"] < generation]
        top = {r["arch"] for r in evolution.top_k(before, s.topk)}
        rows = sorted((r for r in state.history if r["generation"] == generation),
                      key=lambda r: r["order"])
        kinds = [made[r["arch"]] for r in rows]
        assert [k for k, _, _ in kinds] == ["mutation"] * s.mutations + \
            ["crossover"] * s.crossovers + ["random"] * (s.population - s.mutations - s.crossovers)
        for kind, parents, prob in kinds:
            assert set(parents) <= top  # mutants and children of the top 10 only
            assert len(parents) == {"mutation": 1, "crossover": 2, "random": 0}[kind]
            assert prob == (s.mutation_prob if kind == "mutation" else None)
    spec = fitness_spec(dataclasses.replace(cfg, device="cpu"), "detection", "s.pt", "a.json",
                        "b.json", dataset=next(iter(cfg.datasets)))
    assert (spec.search.recalib_images, spec.search.recalib_batch_size,
            spec.recalib_momentum) == (4000, 8, 0.1)


def test_clsnas_is_one_spos_search_whatever_the_detection_set(tmp_path, monkeypatch):
    """SinglePathOneShot src/Search/search.py:240-250: population 50, top 10, 20 generations,
    25 mutations (p 0.1) + 25 crossovers, 330M FLOPs counted on the whole classifier
    (flops.py:238-287: every conv and the FC at 224), BN recalibrated on 200 x 128 training
    images (tester.py:52-70, momentum 0.1), scored in batches of 200; the `detnas search
    --fitness classification` command reads these settings, in coco.yaml as in voc.yaml."""
    from detnas.cli import main
    from detnas.search import stage
    from detnas.search.evolution import search_limits

    assert COCO.clsnas_search == VOC.clsnas_search
    seen = []
    monkeypatch.setattr(stage, "search_stage", lambda cfg, *a, spec, **k: seen.append(
        (cfg.search, spec)) or {})
    for path in ("coco.yaml", "voc.yaml"):
        assert main(["search", "evolution", "--config", str(REPO / "config" / path),
                     "--set", "device=cpu", "--supernet", "s.pt", "--fitness",
                     "classification", "--data", "train", "--recalib-data", "train",
                     "--out", str(tmp_path)]) == 0
    (s, spec), (s_voc, spec_voc) = seen
    assert s == s_voc and spec == spec_voc
    assert (s.population, s.topk, s.generations, s.mutations, s.crossovers, s.mutation_prob) == \
        (50, 10, 20, 25, 25, 0.1)
    assert (spec.search.recalib_images, spec.search.recalib_batch_size, spec.recalib_momentum,
            spec.search.eval_batch_size, spec.holdout) == (25_600, 128, 0.1, 200, 50_000)
    assert spec.recalib_augment == (0.08, 0.4)  # imagenet_dataset.py:64-72
    limits = search_limits(s, COCO.space)
    assert limits.limits == {"classifier_flops": 330e6}
    table = flops.cost_table(COCO.space, 224)
    spos = REGISTRY["SPOS-ImageNet-300M"].arch
    assert limits.costs["classifier_flops"](spos) == table.classifier_flops(spos) == 322_918_720
    assert table.head.flops == 640 * 1024 * 7 * 7 + 1024 * 1000  # last conv + FC
    state = _search_run(s)
    assert len(state.history) == 1000
    assert all(table.classifier_flops(Arch.parse(r["arch"], "300M")) <= 330e6
               for r in state.history)


@pytest.mark.parametrize("cfg", PAPER, ids=["coco", "voc"])
def test_search_split_holds_out_the_references_5000_images(cfg, tmp_path, capsys):
    """DetNAS holds 5k images of the detection training set out for the fitness
    (coco_2014_trainval_val, configs/*_search.yaml:31): `detnas data split` of the paper configs."""
    import json

    from detnas.cli import main

    name = next(iter(cfg.datasets))
    annotations = tmp_path / "annotations.json"
    annotations.write_text(json.dumps({
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 8, "height": 8}
                   for i in range(1, 6001)],
        "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    path = REPO / "config" / ("coco.yaml" if cfg is COCO else "voc.yaml")
    assert main(["data", "split", "--config", str(path), "--set", f"datasets.{name}.root=/",
                 "--set", f"datasets.{name}.train_annotations={annotations}",
                 "--dataset", name, "--out", str(tmp_path / "split")]) == 0
    search = json.loads((tmp_path / "split" / "instances_search.json").read_text())
    supernet = json.loads((tmp_path / "split" / "instances_supernet.json").read_text())
    assert (len(search["images"]), len(supernet["images"])) == (5000, 1000)


# --- the table ----------------------------------------------------------------------------------


def _table_rows() -> list[tuple[str, str]]:
    """(setting, test column) of every setting row of docs/fidelity.md's first table."""
    text = (REPO / "docs" / "fidelity.md").read_text()
    table = text.split("| setting |", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    rows = []
    for line in table:
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) >= 4 and not cells[0].startswith("**"):
            rows.append((cells[0], cells[3]))
    return rows


def test_every_row_of_the_fidelity_table_names_an_existing_test():
    import re

    rows = _table_rows()
    assert len(rows) > 25
    for setting, column in rows:
        names = re.findall(r"`([^`]+)`", column)
        if column.startswith("same test"):  # the row above's
            continue
        assert names, f"docs/fidelity.md: the row {setting!r} names no test"
        for name in names:
            path, _, func = name.rpartition("::")
            source = (REPO / (path or "tests/test_fidelity.py")).read_text()
            assert re.search(rf"^def {re.escape(func)}\(", source, re.M), \
                f"docs/fidelity.md: the row {setting!r} names {name!r}, which does not exist"


@pytest.mark.parametrize("cfg", PAPER, ids=["coco", "voc"])
def test_supernet_finetuning_freezes_bn_affine_as_the_reference(cfg, tmp_path):
    """DetNAS's trainer freezes every parameter of a search body each step
    (maskrcnn_benchmark/engine/trainer.py:112-113) and thaws those of Conv2d, Linear and
    nn.BatchNorm2d as they run (tools/train_net.py:62-72): its DistributedSyncBN, a _BatchNorm,
    stays frozen. Retraining trains BN."""
    for tcfg, frozen in ((train.finetune_schedule(cfg, "fpn", scratch=False), True),
                         (train.finetune_schedule(cfg, "fpn", scratch=True), True),
                         (cfg.retrain_finetune, False)):
        model = _paper_detector("fpn", cfg)
        _train_zero_steps(model, tcfg, tmp_path)
        norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        assert norms and all(p.requires_grad != frozen for m in norms
                             for p in (m.weight, m.bias))
        trained = {id(p) for g in engine.make_optimizer(model, tcfg).param_groups
                   for p in g["params"]}
        assert (id(norms[0].weight) in trained) != frozen
        assert all(id(m.weight) in trained for m in model.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize(("search", "legal"), [(COCO.search, True), (VOC.search, True),
                                               (COCO.clsnas_search, False)],
                         ids=["coco", "voc", "clsnas"])
def test_only_legal_candidates_count_toward_the_references_mutations(search, legal,
                                                                      monkeypatch):
    """DetNAS distributed_arch_search/search.py:182-198 decrements its 10 x 20 tries only on
    legal candidates (until 20 are found); SPOS src/Search/search.py:152-166 on every try."""
    from detnas.search import evolution

    modes, mutated = [], set()
    propose = evolution._propose
    monkeypatch.setattr(evolution, "_propose", lambda *a, **k: modes.append(a[-1]) or propose(
        *a, **k))
    _search_run(dataclasses.replace(search, generations=2, population=50))
    assert set(modes) == {"legal" if legal else "all"}

    mutate = evolution.mutate
    monkeypatch.setattr(evolution, "mutate", lambda *a: mutated.add(str(m := mutate(*a))) or m)
    calls = [0]

    def feasible(arch):  # the first 250 candidates offered are illegal
        calls[0] += 1
        return calls[0] > 250

    limits = dataclasses.replace(evolution.search_limits(search, "300M"))
    object.__setattr__(limits, "feasible", feasible)
    rng = random.Random(0)
    state = evolution.SearchState("evolution", "300M", {}, "", generation=1, history=[
        {"arch": str(a), "fitness": float(i), "order": i} for i, a in
        enumerate(REGISTRY[n].arch for n in PUBLISHED_300M)])
    out = evolution._propose(state, "300M", rng, limits, search.mutation_prob, search.mutations,
                             search.crossovers, search.population, 4, modes[0])
    assert len(out) == search.population
    assert sum(str(a) in mutated for a in out) == (search.mutations if legal else 0)


@pytest.mark.parametrize(("cfg", "held"), [(COCO, 35_000), (VOC, 5_000)], ids=["coco", "voc"])
def test_nats_alphas_train_on_their_own_split(cfg, held, tmp_path, monkeypatch):
    """docs/reference/nats.md: the paper trains the alphas on COCO's 35k valminusminival images
    and the weights on train2014 (83k); `detnas nats search` of coco.yaml holds 35k of the
    training set out for the alphas. VOC (no published split): the 5k search split."""
    import json

    from detnas import data
    from detnas.cli import main
    from detnas.nats import search as nats_search

    class Counted:
        def __init__(self, images, annotations, **kwargs):
            self.size = len(json.loads(Path(annotations).read_text())["images"])
            self.num_classes = 1

    seen = []
    monkeypatch.setattr(data, "CocoDetection", Counted)
    monkeypatch.setattr(nats_search, "search", lambda cfg, w, a, *x, **k: seen.append(
        (w.size, a.size)) or {})
    annotations = tmp_path / "train.json"
    annotations.write_text(json.dumps({
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 8, "height": 8}
                   for i in range(1, 40_001)],
        "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    search_split = tmp_path / "search.json"
    search_split.write_text(json.dumps({
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 8, "height": 8}
                   for i in range(1, 5001)],
        "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    path = REPO / "config" / ("coco.yaml" if cfg is COCO else "voc.yaml")
    weights = annotations if cfg.nats.arch_images else tmp_path / "train.json"
    args = ["nats", "search", "--config", str(path), "--pretrained", "r.pt", "--images", "x",
            "--weights-annotations", str(weights), "--detector", "fpn", "--out",
            str(tmp_path / "out")]
    if not cfg.nats.arch_images:
        args += ["--arch-annotations", str(search_split)]
    assert main(args) == 0
    assert seen[0][1] == held
    assert seen[0][0] == 40_000 - (held if cfg.nats.arch_images else 0)


def test_clsnas_recalibrates_on_augmented_training_images_the_same_for_every_candidate(tmp_path):
    """SPOS src/Search/tester.py:58-70 recalibrates on its training provider: RandomResizedCrop,
    ColorJitter(0.4) and flips (imagenet_dataset.py:64-72); here the same augmented images for
    every candidate, so that the fitness is a function of the path."""
    from detnas.io import save_checkpoint
    from detnas.nets.models import model_meta
    from detnas.search.fitness import build_fitness, fitness_spec

    make_synthetic_classification(tmp_path, seed=0, num_classes=2, num_train=12, num_val=2,
                                  image_size=32)
    model = build_model("classification", {"kind": "supernet", "space": "test"}, 2)
    ckpt = save_checkpoint(tmp_path / "s.pt", {
        "model": model.state_dict(),
        **model_meta("classification", {"kind": "supernet", "space": "test"}, 2)})
    cfg = config.load(REPO / "config" / "coco.yaml", [
        f"classification.root={tmp_path}", "classification.image_size=32",
        "classification.search_images=4", "classification.cache=false", "device=cpu",
        "space=test", "supernet_pretrain.sampling=uniform",  # coco.yaml's bins: the 300M space's
        "clsnas_search.recalib_images=8", "clsnas_search.recalib_batch_size=4",
        "clsnas_search.eval_batch_size=4"])
    cfg = dataclasses.replace(cfg, search=config.clsnas_search(cfg))
    train_dir = str(tmp_path / "train")
    augmented = build_fitness(fitness_spec(cfg, "classification", ckpt, train_dir, train_dir))
    plain = build_fitness(dataclasses.replace(
        fitness_spec(cfg, "classification", ckpt, train_dir, train_dir), recalib_augment=None))
    first, again = (torch.cat(list(augmented.recalib_batches())) for _ in range(2))
    assert torch.equal(first, again)
    assert not torch.equal(first, torch.cat(list(plain.recalib_batches())))
    arch, other = Arch.parse("0-12-30-2", "test"), Arch.parse("1-03-21-3", "test")
    assert augmented(arch) == (augmented(other), augmented(arch))[1]
