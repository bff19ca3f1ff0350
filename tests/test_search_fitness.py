import dataclasses
import types

import pytest
import torch

import detnas
from detnas.io import save_checkpoint
from detnas.nets.models import backbone_of, build_model, model_meta
from detnas.plan.config import DetectorConfig, SearchConfig
from detnas.plan.space import Arch
from detnas.search.fitness import (
    FitnessSpec,
    SupernetFitness,
    build_fitness,
    check_checkpoint,
    has_head_norm,
)

DET_CFG = DetectorConfig(min_size=64, max_size=64, fpn_channels=16)
A, B = Arch.parse("0-12-30-2", "test"), Arch.parse("1-03-21-3", "test")


def _detector():
    torch.manual_seed(0)
    return build_model("detection", {"kind": "supernet", "space": "test"}, 2, "fpn", DET_CFG)


def _images(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, 48 + 8 * (i % 2), 64, generator=g) for i in range(n)]


def _probe(seen):
    """A fake evaluation: records the stem BN statistics and scores the backbone's output."""

    def evaluate(model):
        supernet = backbone_of(model)
        seen.append(supernet.stem[1].running_mean.clone())
        batch, _ = model.transform(_images(2, seed=9))
        with torch.no_grad():
            return {"mmap": supernet(batch.tensors)["3"].mean().item()}

    return evaluate


def test_detector_fitness_recalibrates_on_transformed_images_and_never_leaks():
    model = _detector().eval()
    images = _images(6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []
    fitness = SupernetFitness(model, _probe(seen), "mmap", lambda: [images[:4], images[4:]], 5)
    assert fitness.recalib_module is backbone_of(model)  # FPN and heads have no BN
    a1, b1, a2 = fitness(A), fitness(B), fitness(A)
    assert a1 == a2 != b1
    batch, _ = model.transform(images[:5])  # what the detector sees: resized, normalised
    with torch.no_grad():
        stem_out = backbone_of(model).stem[0](batch.tensors)
    # padding of the batched tensor counts too, as in the detector's own forward
    torch.testing.assert_close(seen[0], stem_out.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not model.training
    with pytest.raises(ValueError, match="'ap50' not in evaluation"):
        SupernetFitness(model, _probe([]), "ap50", lambda: [images], 2)(A)


def _fake_modules(monkeypatch, calls):
    data = types.SimpleNamespace(
        CocoDetection=lambda images, ann, cache: (
            calls.append(("coco", images, ann)), _images(5))[1],
        detection_loader=lambda ds, batch_size, shuffle, seed: [
            (ds[i : i + batch_size], [{}] * len(ds[i : i + batch_size]))
            for i in range(0, len(ds), batch_size)],
        ImageFolderClassification=lambda root, size, train, cache, **_held: torch.rand(
            6, 3, size, size),
        classification_loader=lambda ds, batch_size, shuffle, seed: [  # reusable, as DataLoader
            (ds[i : i + batch_size], torch.zeros(len(ds[i : i + batch_size]), dtype=torch.long))
            for i in range(0, len(ds), batch_size)],
    )

    def evaluate_detector(model, dataset, batch_size, device, backend="auto", same_size=False):
        calls.append(("evaluate", len(dataset), batch_size))
        return _probe([])(model)

    def evaluate_classifier(model, loader, device):
        with torch.no_grad():
            return {"top1": sum(model(x).softmax(1)[:, 0].sum().item() for x, _ in loader)}

    evaluation = types.SimpleNamespace(evaluate_detector=evaluate_detector,
                                       evaluate_classifier=evaluate_classifier)
    for name, module in (("data", data), ("evaluation", evaluation)):
        monkeypatch.setitem(__import__("sys").modules, f"detnas.{name}", module)
        monkeypatch.setattr(detnas, name, module, raising=False)


def _spec(path=None, search=None, **changes):
    """A fitness spec; ``search``: settings of the `search` section (4 recalibration images in
    batches of 2, evaluation batches of 3 here)."""
    settings = SearchConfig(**{"recalib_images": 4, "recalib_batch_size": 2,
                               "eval_batch_size": 3, **(search or {})})
    values = dict(checkpoint=str(path), kind="detection", space="test", data="search.json",
                  images="search/", recalib_data="train.json", recalib_image_dir="train/",
                  detector="fpn", search=settings)
    return FitnessSpec(**{**values, **changes})


def test_build_fitness_from_a_checkpoint(tmp_path, monkeypatch):
    calls = []
    _fake_modules(monkeypatch, calls)
    model = _detector()
    path = save_checkpoint(tmp_path / "det.pt", {
        "model": model.state_dict(),
        **model_meta("detection", {"kind": "supernet", "space": "test"}, 2, "fpn", DET_CFG)})
    fitness = build_fitness(_spec(path))
    assert fitness(A) == fitness(A) != fitness(B)
    assert ("coco", "search/", "search.json") in calls
    assert ("coco", "train/", "train.json") in calls
    assert ("evaluate", 5, 3) in calls
    for key, value in fitness.model.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key

    torch.manual_seed(0)
    cls = build_model("classification", {"kind": "supernet", "space": "test"}, 3)
    cls_path = save_checkpoint(tmp_path / "cls.pt", {
        "model": cls.state_dict(),
        **model_meta("classification", {"kind": "supernet", "space": "test"}, 3)})
    spec = _spec(cls_path, kind="classification", data="val/", recalib_data="train/",
                 metric="top1", image_size=32)
    fitness = build_fitness(spec)
    assert fitness(A) == fitness(A) != fitness(B)
    assert fitness.recalib_module is fitness.model  # the classifier's last BN is recalibrated


@pytest.mark.parametrize("changes,match", [
    ({"space": "tiny"}, r"det.pt: backbone.space is 'test' but the config searches space 'tiny'"),
    ({"kind": "classification"}, r"det.pt: task is 'detection'"),
    ({"detector": "retinanet"}, r"det.pt: detector is 'fpn', expected 'retinanet'"),
])
def test_checkpoint_of_another_space_task_or_detector(tmp_path, changes, match):
    ckpt = model_meta("detection", {"kind": "supernet", "space": "test"}, 2, "fpn", DET_CFG)
    with pytest.raises(ValueError, match=match):
        check_checkpoint(ckpt, tmp_path / "det.pt", _spec(tmp_path / "det.pt", **changes))
    resnet = {**ckpt, "backbone": {"kind": "resnet", "depth": 50}}
    with pytest.raises(ValueError, match="backbone.kind is 'resnet'"):
        check_checkpoint(resnet, "x.pt", _spec("x.pt"))


CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA")])


@pytest.mark.parametrize("device", ["cpu", CUDA])
def _widen(root, split: str) -> None:
    """Every other image of a synthetic split 16 px wider (grey on the right): two sizes."""
    import json

    from PIL import Image

    path = root / "annotations" / f"instances_{split}.json"
    data = json.loads(path.read_text())
    for image in data["images"][::2]:
        old = Image.open(root / split / image["file_name"])
        new = Image.new("RGB", (old.width + 16, old.height), (128, 128, 128))
        new.paste(old)
        new.save(root / split / image["file_name"])
        image["width"] += 16
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("detector,mode,norm,padding", [
    ("fpn", "resized", "none", "include"), ("retinanet", "resized", "none", "include"),
    ("fpn", "decoded", "none", "include"), ("fpn", "resized", "bn", "include"),
    ("fpn", "decoded", "bn", "include"),  # bn: the paper configs' detector
    ("retinanet", "resized", "none", "exclude"), ("fpn", "decoded", "bn", "exclude")])
def test_prepared_fitness_equals_the_loader_path(tmp_path, monkeypatch, detector, mode, norm,
                                                 padding, device):
    """Images decoded (and resized) once give the fitness of the loader path, bit for bit; with
    BN in the FPN and head the whole detector recalibrates on the kept (image, target) pairs;
    with the paper configs' padding settings (images of two sizes: BN statistics of the images'
    own pixels, evaluation batches of one size) too."""
    from detnas import evaluation
    from detnas.data import make_synthetic_detection

    make_synthetic_detection(tmp_path, seed=0, num_train=7, num_test=5, image_size=48,
                             num_classes=2)
    if padding == "exclude":
        _widen(tmp_path, "train")
        _widen(tmp_path, "test")
    cfg = DetectorConfig(min_size=64, max_size=64, fpn_channels=16, score_thresh=0.0, norm=norm,
                         box_head="4conv1fc" if norm == "bn" else "twomlp",
                         box_conv_channels=8, box_head_channels=16)
    torch.manual_seed(0)
    model = build_model("detection", {"kind": "supernet", "space": "test"}, 2, detector, cfg)
    assert has_head_norm(model) == (norm == "bn")
    path = save_checkpoint(tmp_path / "det.pt", {
        "model": model.state_dict(),
        **model_meta("detection", {"kind": "supernet", "space": "test"}, 2, detector, cfg)})
    seen = []
    coco_evaluate = evaluation.coco_evaluate
    monkeypatch.setattr(evaluation, "coco_evaluate", lambda ds, preds, backend="auto": (
        seen.append(preds), coco_evaluate(ds, preds, backend))[1])
    ann = tmp_path / "annotations"
    spec = _spec(path, data=str(ann / "instances_test.json"), images=str(tmp_path / "test"),
                 recalib_data=str(ann / "instances_train.json"),
                 recalib_image_dir=str(tmp_path / "train"), detector=detector, device=device,
                 eval_padding=padding,
                 search={"recalib_images": 5, "recalib_batch_size": 2, "eval_batch_size": 2,
                         "recalib_padding": padding})
    loader_path, prepared = build_fitness(spec), build_fitness(dataclasses.replace(
        spec, search=dataclasses.replace(spec.search, prepare=mode)))
    for arch in (A, B, A):
        assert loader_path(arch) == prepared(arch)
        old, new = seen[-2:]
        assert [p["image_id"] for p in old] == [p["image_id"] for p in new]
        for p, q in zip(old, new, strict=True):
            for key in ("boxes", "scores", "labels"):
                assert torch.equal(p[key], q[key]), key  # the same kernels on the same values
    assert sum(len(p["boxes"]) for p in seen[0]) > 0
    if padding == "exclude":  # the regions were set: not the padded batches' statistics
        assert loader_path.recalib_regions is not None and loader_path.recalib_regions.sizes
