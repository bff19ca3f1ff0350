"""Export of a found network to TorchScript and ONNX, checked against PyTorch, with provenance.

The source is a detnas checkpoint: a retrained classifier or detector, or a supernet with the
architecture to take from it (`detnas.nets.models.load_fixed_model`). ``part="backbone"`` exports
the backbone in the form `detnas.backbone` returns (outputs C2..C5); ``part="detector"`` the whole
torchvision detector (eval mode: a list of ``(3, H, W)`` images in, ``(losses, detections)`` out).

In the output folder: ``<part>.torchscript.pt`` (``torch.jit.load``; for the detector,
``import torchvision`` first: its graph calls ``torchvision::nms``, see `LOAD`), ``<part>.onnx``
(opset `OPSET`, dynamic batch and image size) and ``<part>.json``, the sidecar: source checkpoint
and its sha256, the arch spec, the input contract (`input_contract`: channel order, value range,
normalisation, sizes), the checkpoint's provenance (seed, git commit, config hash, MLflow run) and
the check of each file against the PyTorch model on an input of another size than the traced one.
Every file is written atomically. TorchScript must equal PyTorch exactly; ONNX (onnxruntime, CPU)
within `ONNX_RTOL` of the largest output.

The detector exports to TorchScript only: torchvision's detectors are scriptable (the backbone is
traced inside), but ``torch.onnx.export``'s exporter (torch.export) does not take their
data-dependent postprocessing, so ``formats=("onnx",)`` with the detector is refused.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
from torch import nn

from detnas.io import atomic_write, save_json
from detnas.nets.backbones import read_spec, torchvision_backbone
from detnas.nets.detection import inference_heads, replace_detector_backbone
from detnas.nets.models import backbone_of, load_fixed_model
from detnas.nets.roi_pool import RoIPooler
from detnas.plan import typed
from detnas.provenance import git_commit, sha256

log = logging.getLogger(__name__)

PARTS = ("backbone", "detector")
FORMATS = ("torchscript", "onnx")
OPSET = 18
ONNX_RTOL = 1e-5
OUTPUT_NAMES = ("c2", "c3", "c4", "c5")


def _require_onnx() -> None:
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if not importlib.util.find_spec(m)]
    if missing:
        raise ValueError(f"format 'onnx' needs {', '.join(missing)}: pip install 'detnas[export]' "
                         "(or export --format torchscript only)")


def _flat(outputs) -> list[torch.Tensor]:
    """The tensors of a backbone's OrderedDict or a detector's ``(losses, detections)``."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, dict):
        return [t for v in outputs.values() for t in _flat(v)]
    return [t for v in outputs for t in _flat(v)]


def _torchscript(model: nn.Module, part: str, example: torch.Tensor) -> torch.jit.ScriptModule:
    """The backbone traced (it has no data-dependent control flow), or the detector scripted
    around its traced backbone (torchvision's detectors are written for TorchScript)."""
    if part == "backbone":
        return torch.jit.trace(model, example, strict=False)
    model = inference_heads(copy.deepcopy(model))
    heads = getattr(model, "roi_heads", None)
    if isinstance(getattr(heads, "box_roi_pool", None), RoIPooler):
        heads.box_roi_pool = heads.box_roi_pool.as_torchvision()
    traced = torch.jit.trace(backbone_of(model), example[None], strict=False)
    return torch.jit.script(replace_detector_backbone(model, traced))


def _onnx(model: nn.Module, example: torch.Tensor) -> bytes:
    """The backbone as ONNX with dynamic batch, height and width."""
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height", min=32),
            3: torch.export.Dim("width", min=32)}
    program = torch.onnx.export(model, (example,), input_names=["images"],
                                output_names=list(OUTPUT_NAMES), dynamic_shapes=(dims,),
                                opset_version=OPSET, dynamo=True, verbose=False)
    return program.model_proto.SerializeToString()


def _check_torchscript(path: Path, model: nn.Module, inputs) -> float:
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        expected, got = _flat(model(inputs)), _flat(loaded(inputs))
    if len(expected) != len(got) or any(a.shape != b.shape for a, b in zip(expected, got,
                                                                             strict=True)):
        raise RuntimeError(f"{path}: TorchScript outputs differ in number or shape from PyTorch")
    diff = max((float((a - b).abs().max()) for a, b in zip(expected, got, strict=True)
                if a.numel()), default=0.0)
    if diff != 0.0:
        raise RuntimeError(f"{path}: TorchScript outputs differ from PyTorch by {diff:.3g}")
    return diff


def _check_onnx(path: Path, model: nn.Module, inputs: torch.Tensor) -> float:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": inputs.numpy()})
    with torch.no_grad():
        expected = _flat(model(inputs))
    rel = max(float((torch.from_numpy(b) - a).abs().max() / a.abs().max().clamp_min(1e-12))
              for a, b in zip(expected, got, strict=True))
    if rel > ONNX_RTOL:
        raise RuntimeError(f"{path}: onnxruntime outputs differ from PyTorch by {rel:.3g} "
                           f"of the largest output (tolerance {ONNX_RTOL})")
    return rel


def export(checkpoint: str | Path, out: str | Path, arch: str | Path | None = None,
           part: str = "backbone", formats: tuple[str, ...] | None = None,
           input_size: int = 224, tracking: bool = True) -> dict:
    """Export the network of ``checkpoint`` (of ``arch`` for a supernet) into folder ``out``.

    Args:
        arch: an ``arch.json`` or a registered name; required for a supernet checkpoint.
        part: ``backbone`` or ``detector`` (a detection checkpoint's whole detector).
        formats: of `FORMATS`; default: both for the backbone, TorchScript for the detector.
        input_size: side of the square input the models are traced on.
        tracking: log the files to MLflow when the checkpoint's study tracks.

    Returns:
        The sidecar's content.

    Raises:
        ValueError: naming the file and the value: bad checkpoint, arch, part or format.
    """
    checkpoint, out = Path(checkpoint), Path(out)
    if part not in PARTS:
        raise ValueError(f"part {part!r}: expected one of {', '.join(PARTS)}")
    formats = tuple(formats or (FORMATS if part == "backbone" else ("torchscript",)))
    bad = [f for f in formats if f not in FORMATS or (part == "detector" and f == "onnx")]
    if bad:
        raise ValueError(f"format {bad[0]!r} for the {part}: expected "
                         f"{'torchscript' if part == 'detector' else ' | '.join(FORMATS)}")
    if "onnx" in formats:
        _require_onnx()
    spec = read_spec(arch) if arch is not None else None
    model, spec, ckpt = load_fixed_model(checkpoint, spec, str(arch))
    if part == "detector" and ckpt["task"] != "detection":
        raise ValueError(f"{checkpoint}: a {ckpt['task']} checkpoint has no detector; "
                         "export its backbone")
    net = torchvision_backbone(backbone_of(model)) if part == "backbone" else model
    files, check = _write(net, part, formats, input_size, out)
    sidecar = _sidecar(checkpoint, ckpt, part, spec, net, files, check,
                       input_contract(model, ckpt, part))
    study = ckpt.get("provenance", {}).get("config")
    sidecar_path = save_json(out / f"{part}.json", sidecar)
    if tracking and study and study.get("tracking", {}).get("enabled"):
        sidecar["mlflow_run_id"] = _log(study, sidecar["source"]["provenance"], part, spec,
                                        [out / f for f in files.values()] + [sidecar_path])
        save_json(sidecar_path, sidecar)
    log.info("exported the %s of %s to %s (%s)", part, checkpoint, out, ", ".join(files))
    return sidecar


def _write(net: nn.Module, part: str, formats: tuple[str, ...], input_size: int,
           out: Path) -> tuple[dict, dict]:
    """Write each format of ``net`` and check it; returns the files and the check's numbers.

    The check input has another batch and size than the traced one: the exported graphs must
    not be fixed to it. A file that fails its check is removed.
    """
    generator = torch.Generator().manual_seed(0)
    example = torch.rand(1, 3, input_size, input_size, generator=generator)
    check = torch.rand(2, 3, input_size + 32, input_size + 64, generator=generator)
    files, checks = {}, {"input_shape": list(check.shape)}
    with torch.no_grad():
        if "torchscript" in formats:
            scripted = _torchscript(net, part, example[0] if part == "detector" else example)
            path = atomic_write(out / f"{part}.torchscript.pt",
                                lambda f: torch.jit.save(scripted, f))
            inputs = list(check) if part == "detector" else check
            checks["torchscript_max_abs_diff"] = _checked(path, _check_torchscript, net, inputs)
            files["torchscript"] = path.name
        if "onnx" in formats:
            data = _onnx(net, example)
            path = atomic_write(out / f"{part}.onnx", lambda f: f.write(data))
            checks["onnx_max_rel_diff"] = _checked(path, _check_onnx, net, check)
            checks["onnx_rtol"] = ONNX_RTOL
            files["onnx"] = path.name
    return files, checks


def _checked(path: Path, check, net: nn.Module, inputs) -> float:
    try:
        return check(path, net, inputs)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


# How to load the TorchScript file in a fresh interpreter: the detector's graph calls
# torchvision's registered operators (``torchvision::nms``), which exist once torchvision is
# imported; without the import ``torch.jit.load`` fails with "Unknown builtin op".
LOAD = {"detector": "import torch, torchvision  # torchvision registers torchvision::nms\n"
                    "model = torch.jit.load('detector.torchscript.pt')",
        "backbone": "import torch\nmodel = torch.jit.load('backbone.torchscript.pt')"}


def _sidecar(checkpoint: Path, ckpt: dict, part: str, spec: dict, net: nn.Module, files: dict,
             check: dict, inputs: dict) -> dict:
    """What ``<part>.json`` says: the files, their inputs (`input_contract`), their source and
    provenance, the check."""
    study = ckpt.get("provenance", {}).get("config")
    return {
        "part": part, "arch": spec, "files": files, "inputs": inputs,
        "outputs": ("(losses, detections): detections a list of {boxes, labels, scores}"
                    if part == "detector"
                    else dict(zip(OUTPUT_NAMES, net.stage_channels, strict=True))),
        "check": check,
        "load": LOAD[part] if "torchscript" in files else None,
        "source": {"checkpoint": str(checkpoint), "sha256": sha256(checkpoint),
                   "task": ckpt["task"], "detector": ckpt.get("detector"),
                   "config_hash": typed.config_hash(study) if study else None,
                   "provenance": {k: v for k, v in ckpt.get("provenance", {}).items()
                                  if k != "config"}},
        "torch_version": torch.__version__, "onnx_opset": OPSET if "onnx" in files else None,
        "git_commit": git_commit(),
    }


def input_contract(model: nn.Module, ckpt: dict, part: str) -> dict:
    """What the exported ``part`` of ``model`` (loaded from ``ckpt``) expects, as it was trained:
    RGB images, values in [0, 1], normalised per channel by ``(x - mean) / std``, at the sizes
    of training. The detector normalises and resizes inside (torchvision's transform); the
    backbone takes images normalised and sized by the caller.
    """
    if ckpt["task"] == "detection":  # torchvision's GeneralizedRCNNTransform, inside the model
        t = model.transform
        mean, std = list(t.image_mean), list(t.image_std)
        sizes = {"min_size": t.min_size[0], "max_size": t.max_size,
                 "resize": "shorter side to min_size, longer side at most max_size"}
    else:
        from detnas.data.imagefolder import IMAGENET_MEAN, IMAGENET_STD

        mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)
        study = ckpt.get("provenance", {}).get("config") or {}
        size = study.get("classification", {}).get("image_size")
        sizes = {"image_size": size, "resize": "shorter side to image_size * 8 / 7, centre "
                 "crop image_size x image_size (evaluation)"}
    contract = {"channel_order": "RGB", "dtype": "float32", "value_range": [0.0, 1.0],
                "mean": mean, "std": std, **sizes}
    if part == "detector":
        return {**contract, "layout": "a list of (3, H, W) tensors, any H and W",
                "normalisation": "inside the detector: give images in [0, 1], not normalised",
                "resize": f"inside the detector: {sizes['resize']}"}
    return {**contract, "layout": "(N, 3, H, W), H and W >= 32",
            "normalisation": "by the caller: (x - mean) / std per channel, x in [0, 1]"}


def _log(study: dict, prov: dict, part: str, spec: dict, files: list[Path]) -> str:
    """Log the export into the checkpoint's MLflow run, or a child run named after it."""
    from detnas.run import tracking

    t = study["tracking"]
    tags = {**prov.get("tags", {}), "stage": f"export-{part}", "seed": prov.get("seed"),
            "arch": spec.get("arch", "")}
    return tracking.log_files(t["uri"], t["experiment"], study["results"],
                              prov.get("mlflow_run_id"), f"export:{part}", tags, files,
                              f"export/{part}")
