"""The NATS search stage on tiny in-memory detection data: outputs, determinism, resume, CLI."""

import subprocess
import sys
import types

import pytest
import torch

import detnas.nats.search as nats_search
from detnas.cli import main
from detnas.io import load_checkpoint, load_json, save_checkpoint
from detnas.nats.derive import derive_checkpoint
from detnas.nets.backbones import build_backbone
from detnas.nets.detection import detector_backbone
from detnas.nets.models import build_model, model_meta
from detnas.nets.resnet import ResNetBackbone
from detnas.plan.config import check_nats, load
from detnas.run import tracking


class FakeDetection(torch.utils.data.Dataset):
    """The shape of `detnas.data.CocoDetection`: bright boxes on noise, 64x64 images."""

    def __init__(self, n=6, seed=0, num_classes=2):
        g = torch.Generator().manual_seed(seed)
        self.num_classes, self.items = num_classes, []
        for i in range(n):
            image = torch.rand(3, 64, 64, generator=g) * 0.3
            x, y = torch.randint(0, 32, (2,), generator=g).tolist()
            w, h = torch.randint(12, 30, (2,), generator=g).tolist()
            image[:, y : y + h, x : x + w] += 0.6
            label = int(torch.randint(1, num_classes + 1, (1,), generator=g))
            boxes = torch.tensor([[x, y, x + w, y + h]], dtype=torch.float)
            self.items.append((image, {"boxes": boxes, "labels": torch.tensor([label]),
                                       "image_id": i}))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


OVERRIDES = ["device=cpu", "tracking.enabled=false", "nats.depth=26", "nats.width=8",
             "nats.arch_lr=0.05", "nats.search.steps=4", "nats.search.batch_size=2",
             "nats.search.lr=0.01", "nats.search.checkpoint_every=2", "nats.search.log_every=1",
             "detector.min_size=64", "detector.max_size=64", "detector.fpn_channels=16"]


def _cfg(*extra):
    return load(None, OVERRIDES + list(extra))


def _pretrained(path):
    torch.manual_seed(7)
    spec = {"kind": "resnet", "depth": 26, "width": 8}
    model = build_model("classification", spec, 5)
    save_checkpoint(path, {"model": model.state_dict(), **model_meta("classification", spec, 5)})
    return model.backbone.state_dict()


def _run(cfg, out, pretrained=None, detector="fpn"):
    return nats_search.search(cfg, FakeDetection(6, 0), FakeDetection(6, 1), detector, out,
                              pretrained=pretrained, dataset="fake")


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """One uninterrupted 4-step search from a classification checkpoint."""
    root = tmp_path_factory.mktemp("nats")
    backbone_state = _pretrained(root / "cls.pt")
    metrics = _run(_cfg(), root / "a", root / "cls.pt")
    return root, backbone_state, metrics


def test_search_writes_outputs_that_build(done):
    root, _, metrics = done
    out = root / "a"
    spec = load_json(out / "arch.json")
    assert spec["kind"] == "resnet" and (spec["depth"], spec["width"]) == (26, 8)
    assert len(spec["dilations"]) == 8 and spec["provenance"]["seed"] == 0
    assert metrics["steps"] == 4 and metrics["groups"] == 32
    saved = load_json(out / "metrics.json")
    assert len(saved["history"]) == 4
    assert saved["cost"]["stage"] == "nats-search" and saved["cost"]["gpus"] == 0  # on the CPU
    alphas = load_json(out / "alphas.json")
    assert alphas["candidates"] == [[1, 1], [2, 2], [3, 3]]
    a = torch.tensor(alphas["layers"]["layer3.1"]["alpha"])
    assert a.shape == (4, 3) and a.abs().max() > 0  # alphas moved away from zero
    net = build_backbone(spec)
    ckpt = load_checkpoint(out / "search.pt")
    assert ckpt["step"] == 4
    state = {k.removeprefix("backbone.body."): v for k, v in ckpt["model"].items()
             if k.startswith("backbone.body.") and not k.endswith(".alpha")}
    net.load_state_dict(state)  # the search weights load into the derived network by name
    assert derive_checkpoint(out / "search.pt")["dilations"] == spec["dilations"]


def test_search_starts_from_the_pretrained_backbone(done):
    root, backbone_state, _ = done
    cfg = _cfg()
    torch.manual_seed(0)
    state = nats_search.load_pretrained(root / "cls.pt", 26, 8)
    assert all(torch.equal(state[k], v) for k, v in backbone_state.items())
    model = nats_search.build_search_model(cfg.nats, "fpn", 2, cfg.detector, state)
    body = detector_backbone(model)
    assert torch.equal(body.layer2[0].conv2.weight, backbone_state["layer2.0.conv2.weight"])
    with pytest.raises(ValueError, match="nats.width=16"):
        nats_search.load_pretrained(root / "cls.pt", 26, 16)


def test_torchvision_state_dict_is_accepted(tmp_path):
    torch.manual_seed(3)
    net = ResNetBackbone(26, 8)
    state = {**net.state_dict(), "fc.weight": torch.zeros(10, 256), "fc.bias": torch.zeros(10)}
    torch.save(state, tmp_path / "resnet.pth")
    loaded = nats_search.load_pretrained(tmp_path / "resnet.pth", 26, 8)
    assert loaded.keys() == net.state_dict().keys()
    assert torch.equal(loaded["conv1.weight"], net.conv1.weight)
    with pytest.raises(ValueError, match="resnet.pth: not a ResNet-50 width 8"):
        nats_search.load_pretrained(tmp_path / "resnet.pth", 50, 8)


def _initial_model(cfg, pretrained):
    torch.manual_seed(cfg.seed)  # as the search builds it
    state = nats_search.load_pretrained(pretrained, cfg.nats.depth, cfg.nats.width)
    return nats_search.build_search_model(cfg.nats, "fpn", 2, cfg.detector, state)


def test_alternating_steps_touch_only_their_parameters(done, tmp_path):
    """SGD moves the weights and Adam the alphas, each alone: with the other's rate at 0, one
    step leaves the other's parameters exactly as built."""
    ckpt = load_checkpoint(done[0] / "cls.pt")  # a "trained" network: zero-initialised
    for k, v in ckpt["model"].items():  # residual BNs would leave the alphas without gradient
        if k.endswith("bn3.weight"):
            v.fill_(1.0)
    pretrained = save_checkpoint(tmp_path / "cls.pt", ckpt)
    for frozen in ("weights", "alphas"):
        cfg = _cfg("nats.search.steps=1")
        if frozen == "weights":  # a rate of 0, which a study's config refuses (lr > 0)
            cfg.nats.search.lr = 0.0
        else:
            cfg.nats.arch_lr = 0.0
        _run(cfg, tmp_path / frozen, pretrained)
        after = load_checkpoint(tmp_path / frozen / "search.pt")
        assert after["step"] == 1 and len(after["history"]) == 1
        assert set(after["history"][0]) == {"step", "lr", "weight_loss", "arch_loss",
                                            "alpha_entropy"}
        adam = after["arch_optimizer"]["param_groups"][0]
        assert tuple(adam["betas"]) == (0.5, 0.999) and adam["weight_decay"] == 1e-3
        before = dict(_initial_model(cfg, pretrained).named_parameters())
        moved = {n for n, p in before.items() if not torch.equal(after["model"][n], p)}
        alphas = {n for n in before if n.endswith(".alpha")}
        assert len(alphas) == 8
        if frozen == "weights":
            assert moved == alphas
        else:
            assert moved and not moved & alphas


def test_killed_search_resumes_to_the_same_result(done, tmp_path, monkeypatch):
    root, _, _ = done
    real, calls = nats_search.detection_loss, []

    def dying(*args):
        calls.append(1)
        if len(calls) == 7:  # killed in the weight step of step 4, after step 2's checkpoint
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(nats_search, "detection_loss", dying)
    with pytest.raises(KeyboardInterrupt):
        _run(_cfg(), tmp_path, root / "cls.pt")
    assert load_checkpoint(tmp_path / "search.pt")["step"] == 2
    assert not (tmp_path / "arch.json").exists()
    monkeypatch.setattr(nats_search, "detection_loss", real)
    _run(_cfg(), tmp_path, root / "cls.pt")
    resumed = load_checkpoint(tmp_path / "search.pt")
    straight = load_checkpoint(root / "a/search.pt")
    for k, v in straight["model"].items():  # deterministic on CPU, and exactly resumed
        assert torch.equal(resumed["model"][k], v), k
    assert load_json(tmp_path / "alphas.json") == load_json(root / "a/alphas.json")
    again = _run(_cfg(), tmp_path, root / "cls.pt")  # finished: the outputs written again
    assert again["steps"] == 4 and again["arch"] == load_json(root / "a/metrics.json")["arch"]
    finished = load_checkpoint(tmp_path / "search.pt")["fingerprint"]
    other = _run(_cfg("nats.groups=2"), tmp_path, root / "cls.pt")  # another config: fresh
    assert (tmp_path / f"search.pt.stale-{finished}").exists()
    assert other["steps"] == 4
    assert load_checkpoint(tmp_path / "search.pt")["fingerprint"] != finished


def test_retinanet_and_tracking_tags(tmp_path, monkeypatch):
    seen = {}

    class Recorder(tracking.NullTracker):
        def set_tags(self, tags):
            seen.update(tags)

        def log_artifact(self, path):
            seen.setdefault("artifacts", []).append(path.name)

    def start(cfg, run_name, tags, gpus=0, arch=None, out=None, resolved=None):
        seen.update(tags, run_name=run_name)
        return Recorder()

    monkeypatch.setattr(tracking, "start", start)
    metrics = _run(_cfg("nats.search.steps=1", "nats.groups=1", "nats.searched_stages=[3,4]"),
                   tmp_path, detector="retinanet")
    assert seen["stage"] == "nats-search" and seen["ablation"] == "nats"
    assert seen["space"] == "resnet26" and seen["detector"] == "retinanet"
    assert seen["dataset"] == "fake" and seen["seed"] == 0 and len(seen["config_hash"]) == 12
    assert seen["arch"] == metrics["arch"] and seen["arch"].startswith("layer3.0:")
    assert set(seen["artifacts"]) == {"arch.json", "alphas.json", "metrics.json"}
    assert list(load_json(tmp_path / "arch.json")["dilations"]) == [
        "layer3.0", "layer3.1", "layer4.0", "layer4.1"]


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match=r"nats\.candidates"):
        check_nats(_cfg("nats.candidates=[[0, 1]]").nats)
    with pytest.raises(ValueError, match=r"nats\.searched_stages"):
        check_nats(_cfg("nats.searched_stages=[5]").nats)


def test_cli_search_and_derive(done, tmp_path, monkeypatch, capsys):
    root, _, _ = done
    fake = types.ModuleType("detnas.data")
    fake.CocoDetection = lambda images, annotations, **_flip: FakeDetection(6, int(annotations[-6]))
    monkeypatch.setitem(sys.modules, "detnas.data", fake)
    args = ["nats", "search", "--pretrained", str(root / "cls.pt"), "--images", "imgs",
            "--weights-annotations", "w0.json", "--arch-annotations", "a1.json",
            "--detector", "fpn", "--out", str(tmp_path / "s")]
    for item in OVERRIDES:
        args += ["--set", item]
    assert main(args) == 0
    assert load_json(tmp_path / "s/alphas.json") == load_json(root / "a/alphas.json")
    capsys.readouterr()
    assert main(["nats", "derive", "--search", str(tmp_path / "s/search.pt"),
                 "--out", str(tmp_path / "arch.json")]) == 0
    spec = load_json(tmp_path / "arch.json")
    assert spec["dilations"] == load_json(root / "a/arch.json")["dilations"]
    assert capsys.readouterr().out.startswith("layer1.0:")
    assert main(["nats", "derive", "--search", str(tmp_path / "arch.json"),
                 "--out", str(tmp_path / "x.json")]) == 2



TWO_PROCESS_STEP = """
import sys
from pathlib import Path

import torch
from detnas.run import engine, tracking
from detnas.plan.config import TrainConfig

class Pairs(torch.utils.data.Dataset):  # 8 (x, y) pairs; a batch is (list of x, list of y)
    def __init__(self, seed):
        g = torch.Generator().manual_seed(seed)
        self.x, self.y = torch.randn(8, 3, generator=g), torch.randn(8, generator=g)
    def __len__(self):
        return 8
    def __getitem__(self, i):
        return self.x[i], self.y[i]

def loss(model, batch):  # a mean over the process's share, as a detector's loss
    x, y = batch
    return ((model(torch.stack(x)).squeeze(1) - torch.stack(y)) ** 2).mean()

class Net(torch.nn.Module):  # weights and an architecture parameter, as a searchable detector
    def __init__(self):
        super().__init__()
        self.lin, self.alpha = torch.nn.Linear(3, 1), torch.nn.Parameter(torch.zeros(3))
    def forward(self, x):
        return self.lin(x * self.alpha.softmax(0) * 3)

ddp = engine.setup_distributed("cpu")
tcfg = TrainConfig(steps=3, batch_size=4, lr=0.1, warmup_steps=0, checkpoint_every=100,
                   log_every=100)
results = []
for d in (ddp, engine.Dist()):
    torch.manual_seed(0)
    model = Net()
    adam = torch.optim.Adam([model.alpha], lr=0.05)
    rows = []

    class Recorded(engine.ArchStep):  # each step's metrics, as NatsSearch records them
        def on_step(self, step, m):
            rows.append(m)
            return {}

    stage = engine.Stage(model, loss, Pairs(0), lambda b: tuple(map(list, zip(*b))), {},
                         arch=Recorded([model.alpha], adam, Pairs(1), first_step=1))
    engine.train(stage, tcfg, 0, d, Path(sys.argv[1]) / f"world{d.world}.pt",  # never written
                 tracking.NullTracker(), {})
    results.append((rows, [p.detach().clone() for p in model.parameters()]))
(r2, p2), (r1, p1) = results
assert [sorted(r) for r in r2] == [sorted(r) for r in r1]
assert "arch_loss" not in r1[0] and "arch_loss" in r1[2]
for a, b in zip(r2, r1):
    for k in ("loss", "arch_loss"):
        assert abs(a.get(k, 0) - b.get(k, 0)) < 1e-6, (k, a, b)
for a, b in zip(p2, p1):
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
assert not torch.equal(p1[-1], torch.zeros(3))  # the alphas moved
print("rank", ddp.rank, "equal")
"""


@pytest.mark.slow
def test_two_process_step_equals_one_process_step_on_the_whole_batch(tmp_path):
    script = tmp_path / "step.py"
    script.write_text(TWO_PROCESS_STEP)
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=2", str(script), str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("equal") == 2
