"""The CUDA-only paths: bf16 autocast, channels_last, extraction, the search's workers on a GPU.

Marked `gpu`: skipped without a CUDA device (tests/conftest.py). Run them on a GPU machine with
``python -m pytest -m gpu`` (docs/testing.md).
"""

from __future__ import annotations

import functools
import random

import pytest
import torch

from detnas.data import make_search_split, make_synthetic_detection
from detnas.data.coco import collate_detection
from detnas.io import load_json, save_checkpoint
from detnas.nets.detection import detection_loss
from detnas.nets.models import build_model, model_meta
from detnas.nets.supernet import Classifier, Supernet
from detnas.plan import config
from detnas.plan.config import DetectorConfig, SearchConfig, TrainConfig
from detnas.plan.space import Arch, sample
from detnas.run import engine
from detnas.run.train import classification_loss
from detnas.search.fitness import FitnessSpec
from detnas.search.stage import search_stage, worker_fitness

pytestmark = pytest.mark.gpu

CUDA = torch.device("cuda")
DET_CFG = DetectorConfig(min_size=64, max_size=64, fpn_channels=16)


def _detection_batch(n=2, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(n):
        images.append(torch.rand(3, size, size, generator=g))
        xy = torch.rand(2, 2, generator=g) * size * 0.5
        boxes = torch.cat([xy, xy + 8 + torch.rand(2, 2, generator=g) * size * 0.4], 1)
        targets.append({"boxes": boxes, "labels": torch.tensor([1, 2])})
    return images, targets


def _one_step_loss(model, loss_fn, batch, amp: bool) -> tuple[float, list[torch.Tensor]]:
    """The loss and gradients of one training step on CUDA, with or without bf16 autocast."""
    model = model.to(CUDA).train()
    batch = engine._to_device(batch, CUDA)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        loss = loss_fn(model, batch)
    model.zero_grad(set_to_none=True)
    loss.backward()
    return loss.item(), [p.grad.float().clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("task", ["classification", "detection"])
def test_bf16_step_is_finite_and_close_to_fp32(task):
    torch.manual_seed(0)
    arch = sample("test", random.Random(0))
    if task == "classification":
        model = build_model("classification", {"kind": "supernet", "space": "test"}, 4)
        batch = (torch.rand(8, 3, 32, 32), torch.arange(8) % 4)
        loss_fn = classification_loss(0.1)
    else:
        model = build_model("detection", {"kind": "supernet", "space": "test"}, 2, "fpn",
                            DET_CFG)
        batch = _detection_batch()
        loss_fn = detection_loss
    supernet = next(m for m in model.modules() if isinstance(m, Supernet))
    supernet.set_path(arch)
    torch.manual_seed(1)  # the same RoI sampling in both runs
    fp32, g32 = _one_step_loss(model, loss_fn, batch, amp=False)
    torch.manual_seed(1)
    bf16, g16 = _one_step_loss(model, loss_fn, batch, amp=True)
    assert all(torch.isfinite(g).all() for g in g16) and torch.isfinite(torch.tensor(bf16))
    assert bf16 == pytest.approx(fp32, rel=0.01)  # 0.07 % (classification), 0.03 % on a CPU
    cos = torch.nn.functional.cosine_similarity(torch.cat([g.flatten() for g in g16]),
                                                torch.cat([g.flatten() for g in g32]), dim=0)
    assert cos > 0.75  # bf16 rounding of a random-init net's gradients: 0.86 / 0.93 on a CPU


def test_channels_last_gives_the_same_outputs():
    torch.manual_seed(0)
    model = Classifier(Supernet("test"), 4).to(CUDA).eval()
    arch = sample("test", random.Random(0))
    x = torch.rand(4, 3, 64, 64, device=CUDA)
    with torch.no_grad(), model.backbone.use(arch):
        expected = model(x)
        got = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_supernet_extraction_is_exact_on_cuda():
    torch.manual_seed(0)
    supernet = Supernet("tiny").to(CUDA).eval()
    x = torch.rand(2, 3, 64, 64, device=CUDA)
    for seed in range(3):
        arch = sample("tiny", random.Random(seed))
        with torch.no_grad(), supernet.use(arch):
            expected = supernet(x)
        net = supernet.extract(arch).to(CUDA).eval()
        with torch.no_grad():
            got = net(x)
        for k in expected:
            torch.testing.assert_close(got[k], expected[k], rtol=0, atol=0)


def test_training_stage_runs_on_cuda(tmp_path):
    """The engine's CUDA path: channels_last, bf16 autocast, pinned loader, checkpoint on CPU."""
    torch.manual_seed(0)
    model = build_model("detection", {"kind": "supernet", "space": "test"}, 2, "fpn", DET_CFG)
    images, targets = _detection_batch(4)
    data = list(zip(images, targets, strict=True))
    stage = engine.Stage(model, detection_loss, data, collate_detection,
                         model_meta("detection", {"kind": "supernet", "space": "test"}, 2, "fpn",
                                    DET_CFG),
                         lambda rng: sample("test", rng), model.backbone.body)
    tcfg = TrainConfig(steps=3, batch_size=2, lr=0.01, checkpoint_every=2, log_every=1)
    from detnas.run.tracking import NullTracker

    result = engine.train(stage, tcfg, 0, engine.Dist(device=CUDA), tmp_path / "resume.pt",
                          NullTracker(), {})
    assert result["step"] == 3
    assert all(torch.isfinite(v).all() for v in result["model"].values() if v.is_floating_point())


@pytest.fixture(scope="module")
def search_inputs(tmp_path_factory):
    """A detection supernet checkpoint and a synthetic search/recalibration split."""
    root = tmp_path_factory.mktemp("gpu-search")
    make_synthetic_detection(root / "data", seed=0, num_train=24, num_test=4, image_size=64,
                             num_classes=2)
    supernet_ann, search_ann = make_search_split(root / "data/annotations/instances_train.json",
                                                 8, 0, root / "splits")
    torch.manual_seed(0)
    model = build_model("detection", {"kind": "supernet", "space": "test"}, 2, "fpn", DET_CFG)
    ckpt = save_checkpoint(root / "supernet.pt", {
        "model": model.state_dict(),
        **model_meta("detection", {"kind": "supernet", "space": "test"}, 2, "fpn", DET_CFG)})
    return FitnessSpec(checkpoint=str(ckpt), kind="detection", space="test", data=str(search_ann),
                       recalib_data=str(supernet_ann), images=str(root / "data/train"),
                       recalib_image_dir=str(root / "data/train"), detector="fpn", metric="ap50",
                       search=SearchConfig(recalib_images=8, recalib_batch_size=4,
                                           eval_batch_size=4, threads=1), device="cuda")


def test_fitness_runs_on_the_workers_gpu(search_inputs):
    fitness = worker_fitness(search_inputs)  # outside a pool: worker 0, cuda:0
    assert next(fitness.model.parameters()).device == torch.device("cuda", 0)
    arch = Arch.parse("0-12-30-2", "test")
    assert 0.0 <= fitness(arch) <= 1.0
    assert fitness(arch) == fitness(arch)


def test_search_with_two_workers_on_one_gpu_equals_one_worker(search_inputs, tmp_path):
    cfg = config.load(None, ["space=test", "device=cuda", "tracking.enabled=false",
                             "search.population=4", "search.topk=2", "search.generations=2",
                             "search.mutations=1", "search.crossovers=1"])
    runs = {}
    for workers in (1, 2):
        out = tmp_path / str(workers)
        search_stage(cfg, "evolution", out, spec=search_inputs, workers=workers)
        runs[workers] = (out / "history.csv").read_text()
        assert load_json(out / "metrics.json")["evaluations"] == 8
    assert runs[1] == runs[2]


def test_worker_factory_is_picklable(search_inputs):
    import pickle

    pickle.dumps(functools.partial(worker_fitness, search_inputs))


def test_nats_search_step_on_cuda():
    """A searchable ResNet made on the GPU (bench_nats.py's order) trains its alphas there."""
    from detnas.nats import search as nats_search
    from detnas.nats.ops import arch_parameters

    cfg = config.load(None, ["device=cuda", "nats.depth=26", "nats.width=8", "nats.groups=2"])
    model = nats_search.build_search_model(cfg.nats, "fpn", 2, DET_CFG)
    for m in model.modules():  # as if pretrained: no zero-initialised residual branches
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(m.weight)
    model = model.to(CUDA).train()
    alphas = arch_parameters(model)
    adam = nats_search.make_arch_optimizer(alphas, cfg.nats)
    assert all(a.device.type == "cuda" for a in alphas)
    before = [a.detach().clone() for a in alphas]
    batch = _detection_batch()
    loss = engine.backward(model, detection_loss, batch, engine.Dist(device=CUDA), True)
    adam.step()
    assert torch.isfinite(torch.tensor(loss))
    assert any(not torch.equal(a, b) for a, b in zip(alphas, before, strict=True))
