"""`detnas export` and `detnas.backbone`: exported files compute what the PyTorch model computes,
a found backbone drops into a plain torchvision detector, bad inputs are named."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import torch
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FrozenBatchNorm2d

import detnas
from detnas import export
from detnas.cli import main
from detnas.io import load_checkpoint, save_checkpoint
from detnas.nets.backbones import RETURN_LAYERS
from detnas.nets.models import backbone_of, build_model, load_model, model_meta
from detnas.plan.config import DetectorConfig
from detnas.plan.space import Arch

ARCH = {"kind": "shufflenet", "space": "test", "arch": "1-23-01-3"}
SUPERNET = {"kind": "supernet", "space": "test"}
DETECTOR = DetectorConfig(min_size=64, max_size=64, score_thresh=0.0)  # every box kept


def _save(path, task, spec, detector=None, cfg=DETECTOR):
    torch.manual_seed(0)
    cfg = cfg if task == "detection" else None
    model = build_model(task, spec, 3, detector, cfg)
    with torch.no_grad():  # non-trivial BN statistics: eval mode must use them, not defaults
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    save_checkpoint(path, {**model_meta(task, spec, 3, detector, cfg), "model": model.state_dict()})
    return path


@pytest.fixture
def files(tmp_path):
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(ARCH))
    return {"arch": arch,
            "supernet": _save(tmp_path / "supernet.pt", "classification", SUPERNET),
            "detector": _save(tmp_path / "detector.pt", "detection", ARCH, "fpn")}


@pytest.mark.slow
def test_supernet_path_exports_to_torchscript_and_onnx_equal_to_pytorch(files, tmp_path):
    out = tmp_path / "export"
    sidecar = export.export(files["supernet"], out, arch=files["arch"], input_size=64,
                            tracking=False)
    assert sorted(p.name for p in out.iterdir()) == [
        "backbone.json", "backbone.onnx", "backbone.torchscript.pt"]
    assert json.loads((out / "backbone.json").read_text()) == sidecar
    assert sidecar["arch"] == ARCH and sidecar["source"]["task"] == "classification"
    assert sidecar["outputs"] == {"c2": 16, "c3": 32, "c4": 48, "c5": 64}
    assert sidecar["inputs"]["channel_order"] == "RGB" and sidecar["inputs"]["std"]
    assert sidecar["check"]["torchscript_max_abs_diff"] == 0.0
    assert sidecar["check"]["onnx_max_rel_diff"] <= 1e-5

    # what the supernet computes on the arch's path, on an input of a third size
    supernet, _ = load_model(files["supernet"])
    backbone = backbone_of(supernet).eval()
    x = torch.randn(3, 3, 80, 48)
    with torch.no_grad(), backbone.use(Arch.parse(ARCH["arch"], "test")):
        expected = list(backbone(x).values())
    scripted = torch.jit.load(str(out / "backbone.torchscript.pt"))
    for a, b in zip(expected, scripted(x).values(), strict=True):
        assert torch.equal(a, b)

    import onnxruntime

    session = onnxruntime.InferenceSession(str(out / "backbone.onnx"),
                                           providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["c2", "c3", "c4", "c5"]
    for a, b in zip(expected, session.run(None, {"images": x.numpy()}), strict=True):
        torch.testing.assert_close(torch.from_numpy(b), a, rtol=1e-5, atol=1e-5 * a.abs().max())


def test_the_sidecar_states_the_input_contract(files):
    from detnas.data.imagefolder import IMAGENET_MEAN, IMAGENET_STD
    from detnas.nets.models import load_fixed_model

    model, _, ckpt = load_fixed_model(files["detector"])
    for part in ("backbone", "detector"):
        contract = export.input_contract(model, ckpt, part)
        assert contract["channel_order"] == "RGB" and contract["value_range"] == [0.0, 1.0]
        assert contract["mean"] == pytest.approx(IMAGENET_MEAN)
        assert contract["std"] == pytest.approx(IMAGENET_STD)
        assert (contract["min_size"], contract["max_size"]) == (64, 64)  # DETECTOR's sizes
    assert contract["normalisation"].startswith("inside the detector")
    assert export.input_contract(model, ckpt, "backbone")["normalisation"].startswith("by the "
                                                                                      "caller")
    cls = _save(files["arch"].parent / "cls.pt", "classification", ARCH)
    ckpt = {**load_checkpoint(cls), "provenance": {"config": {"classification":
                                                              {"image_size": 32}}}}
    contract = export.input_contract(None, ckpt, "backbone")
    assert contract["image_size"] == 32 and contract["mean"] == pytest.approx(IMAGENET_MEAN)


@pytest.mark.parametrize("losses", ["torchvision",
                                    pytest.param("reference", marks=pytest.mark.slow)])
@pytest.mark.parametrize("detector", ["fpn", "retinanet"])
def test_detector_exports_to_torchscript_with_equal_detections(tmp_path, detector, losses):
    """The reference's losses (config/coco.yaml) change training only: the scripted detector
    has torchvision's heads (TorchScript has no super()) and RetinaNet's box weights."""
    cfg = DETECTOR if losses == "torchvision" else dataclasses.replace(
        DETECTOR, box_loss_beta=1.0, rpn_straddle_thresh=0, retinanet_loss="reference")
    path = _save(tmp_path / "detector.pt", "detection", ARCH, detector, cfg)
    if detector == "retinanet":  # the background logit far above the others: must stay unused
        ckpt = load_checkpoint(path)
        ckpt["model"]["head.classification_head.cls_logits.bias"].view(-1, 4)[:, 0] = 8.0
        save_checkpoint(path, ckpt)
    sidecar = export.export(path, tmp_path / "export", part="detector", input_size=64,
                            tracking=False)
    assert sidecar["files"] == {"torchscript": "detector.torchscript.pt"}
    model, _ = load_model(path)
    scripted = torch.jit.load(str(tmp_path / "export" / "detector.torchscript.pt"))
    images = [torch.rand(3, 72, 56), torch.rand(3, 64, 96)]
    with torch.no_grad():
        expected = model.eval()(images)
        _losses, got = scripted(images)  # TorchScript detectors return (losses, detections)
    for e, g in zip(expected, got, strict=True):
        assert len(e["boxes"]) > 0 and (g["labels"] > 0).all()
        for key in ("boxes", "labels", "scores"):
            assert torch.equal(e[key], g[key]), key


def test_the_sidecars_load_recipe_works_in_a_fresh_interpreter(tmp_path):
    """A fresh interpreter without torchvision cannot run the detector's graph (it calls
    torchvision::nms); the sidecar's recipe, which imports torchvision, can."""
    path = _save(tmp_path / "detector.pt", "detection", ARCH, "fpn")
    sidecar = export.export(path, tmp_path / "export", part="detector", input_size=64,
                            tracking=False)
    run = "\nimport torch\nwith torch.no_grad(): model([torch.rand(3, 64, 64)])\nprint('ran')"

    def fresh(code: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", code], cwd=tmp_path / "export",
                              capture_output=True, text=True, timeout=120)

    bare = fresh("import torch\nmodel = torch.jit.load('detector.torchscript.pt')" + run)
    assert bare.returncode != 0 and "torchvision::nms" in bare.stderr
    recipe = fresh(sidecar["load"] + run)
    assert recipe.returncode == 0 and recipe.stdout.strip() == "ran", recipe.stderr


def test_bad_inputs_are_named(files, tmp_path):
    out = tmp_path / "export"
    with pytest.raises(ValueError, match="missing.pt: checkpoint does not exist"):
        export.export(tmp_path / "missing.pt", out, tracking=False)
    with pytest.raises(ValueError, match=r"supernet.pt: a supernet checkpoint \(space test\)"):
        export.export(files["supernet"], out, tracking=False)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"kind": "shufflenet", "space": "tiny", "arch": "00-00-0000-00"}))
    with pytest.raises(ValueError, match=r"other.json: 00-00-0000-00 \(tiny\) is not a path of "
                                         r".*supernet.pt, a supernet of space test"):
        export.export(files["supernet"], out, arch=other, tracking=False)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({**ARCH, "arch": "0-23-01-3"}))
    with pytest.raises(ValueError, match=r"wrong.json: 0-23-01-3 \(test\) is not the network of "
                                         r".*detector.pt, a checkpoint of 1-23-01-3 \(test\)"):
        export.export(files["detector"], out, arch=wrong, tracking=False)
    # a NATS net: other dilations have the same weight shapes, and are still another network
    nats = {"kind": "resnet", "depth": 26, "width": 8, "dilations": {"layer3.0": "1,2"}}
    resnet = _save(tmp_path / "nats.pt", "classification", nats)
    (tmp_path / "nats.json").write_text(json.dumps({**nats, "dilations": {"layer3.0": "1,3"}}))
    with pytest.raises(ValueError, match=r"nats.json: ResNet-26 width 8 NATS \(1/1 blocks dilat"
                                         r"ed\) is not the network of .*nats.pt"):
        export.export(resnet, out, arch=tmp_path / "nats.json", tracking=False)
    with pytest.raises(ValueError, match="supernet.pt: a classification checkpoint has no det"):
        export.export(files["supernet"], out, arch=files["arch"], part="detector")
    with pytest.raises(ValueError, match="format 'onnx' for the detector"):
        export.export(files["detector"], out, part="detector", formats=("onnx",))
    assert not out.exists()  # nothing written on any of these


def test_cli_exit_status_and_message(files, tmp_path, capsys):
    args = ["export", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o")]
    assert main(args) == 2
    assert f"{tmp_path / 'missing.pt'}: checkpoint does not exist" in capsys.readouterr().err


def test_backbone_drops_into_a_torchvision_faster_rcnn(files, tmp_path):
    net = detnas.backbone(files["arch"], weights=files["detector"])
    detector, _ = load_model(files["detector"])
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = backbone_of(detector).eval()(x)
        got = net.eval()(x)
    assert list(got) == ["0", "1", "2", "3"] and net.out_channels == 64
    for key in expected:
        assert torch.equal(expected[key], got[key])

    # torchvision's own FPN wrapper and detector, as a user writes them
    model = FasterRCNN(BackboneWithFPN(net, RETURN_LAYERS, list(net.stage_channels), 32),
                       num_classes=4, min_size=64, max_size=64)
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 80)]
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[10.0, 2.0, 50.0, 20.0]]), "labels": torch.tensor([3])}]
    losses = model.train()(images, targets)
    sum(losses.values()).backward()
    assert net.layer1[0].main[0].weight.grad is not None  # the found net trains inside it
    with torch.no_grad():
        detections = model.eval()(images)
    assert [sorted(d) for d in detections] == [["boxes", "labels", "scores"]] * 2

    # a state dict of this module loads back; weights of another network are refused
    torch.save(net.state_dict(), tmp_path / "net.pth")
    again = detnas.backbone(files["arch"], weights=tmp_path / "net.pth").eval()
    with torch.no_grad():
        assert torch.equal(again(x)["3"], net.eval()(x)["3"])
    with pytest.raises(ValueError, match=r"net.pth: not the weights of 00-00-0000-00 \(tiny\) "
                                         r"\(ShuffleNetV2-tiny\): .*size mismatch"):
        detnas.backbone("ShuffleNetV2-tiny", weights=tmp_path / "net.pth")


def test_backbone_of_a_supernet_and_of_a_resnet_spec(files, tmp_path):
    supernet, _ = load_model(files["supernet"])
    x = torch.randn(1, 3, 64, 64)
    net = detnas.backbone(files["arch"], weights=files["supernet"]).eval()
    with torch.no_grad(), backbone_of(supernet).eval().use(Arch.parse(ARCH["arch"], "test")):
        assert torch.equal(backbone_of(supernet)(x)["3"], net(x)["3"])
    frozen = detnas.backbone(files["arch"], weights=files["supernet"],
                             norm_layer=FrozenBatchNorm2d)
    assert isinstance(frozen.layer4[0].main[1], FrozenBatchNorm2d)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x)["3"], net(x)["3"])
    resnet = tmp_path / "resnet.json"
    resnet.write_text(json.dumps({"kind": "resnet", "depth": 26, "width": 8,
                                  "dilations": {"layer3.0": "1,2"}}))
    net = detnas.backbone(resnet)
    fpn = BackboneWithFPN(net, RETURN_LAYERS, list(net.stage_channels), 16).eval()
    with torch.no_grad():
        assert [f.shape[1] for f in fpn(x).values()] == [16] * 5


def test_import_detnas_does_not_import_torch():
    code = ("import sys, detnas; assert 'torch' not in sys.modules; "
            "detnas.backbone; assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_export_is_logged_into_the_run_that_made_the_checkpoint(tmp_path, classification_study):
    import yaml
    from mlflow.tracking import MlflowClient

    from detnas.plan import config, typed
    from detnas.run import tracking, train

    path, _env = classification_study(12, 1)
    study = yaml.safe_load(path.read_text())
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    study["tracking"] = {"enabled": True, "uri": uri, "experiment": "export-test"}
    path.write_text(yaml.safe_dump(study))
    cfg = config.load(path, [])
    tracking.init_parent(uri, "export-test", tmp_path, "study", {})
    train.supernet_classification(cfg, tmp_path / "supernet")
    ckpt = load_checkpoint(tmp_path / "supernet" / "checkpoint.pt")
    run_id = ckpt["provenance"]["mlflow_run_id"]
    assert run_id

    sidecar = export.export(tmp_path / "supernet" / "checkpoint.pt", tmp_path / "export",
                            arch=_arch(tmp_path),
                            formats=("torchscript",), input_size=32)
    client = MlflowClient(uri)
    assert sidecar["mlflow_run_id"] == run_id
    assert sidecar["source"]["config_hash"] == typed.config_hash(cfg)
    logged = sorted(a.path for a in client.list_artifacts(run_id, "export/backbone"))
    assert logged == ["export/backbone/backbone.json", "export/backbone/backbone.torchscript.pt"]

    # a checkpoint that names no run: a child run of the study's parent, named after the export
    del ckpt["provenance"]["mlflow_run_id"]
    save_checkpoint(tmp_path / "old.pt", ckpt)
    sidecar = export.export(tmp_path / "old.pt", tmp_path / "export2", arch=_arch(tmp_path),
                            formats=("torchscript",), input_size=32)
    run = client.get_run(sidecar["mlflow_run_id"])
    parent = json.loads((tmp_path / "tracking.json").read_text())["parent_run_id"]
    assert run.info.run_name == "export:backbone" and run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["export"]


def _arch(tmp_path):
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(ARCH))
    return path


@pytest.mark.slow
def test_the_export_page_works_as_written(repo_root, tmp_path, monkeypatch):
    """The commands and the snippet of docs/export.md, on a stand-in of the embedded
    study's outputs (the paths `make run` writes; the `test` space for speed)."""
    import re
    import shlex

    section = (repo_root / "docs" / "export.md").read_text()
    bash, python = re.findall(r"```(?:bash|python)\n(.*?)```", section, re.S)
    monkeypatch.chdir(tmp_path)
    found = ARCH
    results = tmp_path / "results"
    (results / "search/synth/fpn/detnas").mkdir(parents=True)
    (results / "search/synth/fpn/detnas/arch.json").write_text(json.dumps(found))
    cfg = DetectorConfig(min_size=96, max_size=96)
    for path, spec in (("retrain/detnas/synth/fpn", found),
                       ("supernet/synth/fpn/pretrained", SUPERNET)):
        model = build_model("detection", spec, 3, "fpn", cfg)
        save_checkpoint(results / path / "checkpoint.pt",
                        {**model_meta("detection", spec, 3, "fpn", cfg),
                         "model": model.state_dict()})
    commands = [line for line in bash.splitlines() if line.startswith("detnas ")]
    assert len(commands) == 3
    for line in commands:
        assert main(shlex.split(line)[1:]) == 0, line
    assert sorted(p.name for p in (results / "export/detnas-fpn").iterdir()) == [
        "backbone.json", "backbone.onnx", "backbone.torchscript.pt", "detector.json",
        "detector.torchscript.pt"]
    namespace = {}
    exec(python, namespace)
    assert isinstance(namespace["model"], FasterRCNN)
    assert namespace["net"].stage_channels == (16, 32, 48, 64)
