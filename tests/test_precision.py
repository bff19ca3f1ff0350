"""Mixed precision: the `amp` setting (bf16 | fp16 | off) and the fp16 gradient-scaler path.

fp16 autocast and `torch.amp.GradScaler` run on the CPU too, so the scaler's stepping and
skipping are tested here; the engine on CUDA with fp16 is marked `gpu`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import jsonschema
import pytest
import torch
import yaml

from detnas.plan import config
from detnas.plan.config import TrainConfig
from detnas.run import engine, tracking
from detnas.run.precision import Precision

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("written", "read"), [("fp16", "fp16"), ("bf16", "bf16"),
                                               ("off", "off"), ("'off'", "off"),
                                               ("false", "off"), ("true", "bf16")])
def test_amp_values_and_yamls_booleans(written, read, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(f"supernet_pretrain:\n  amp: {written}\n")  # YAML: bare off is false
    assert config.load(path).supernet_pretrain.amp == read
    assert config.load(None, [f"nats.search.amp={written}"]).nats.search.amp == read
    jsonschema.validate(yaml.safe_load(path.read_text()), config.json_schema())


def test_a_bad_amp_value_names_the_field(tmp_path):
    with pytest.raises(ValueError, match=r"retrain_finetune\.amp: 'fp8' \(bf16, fp16, off\)"):
        config.load(None, ["retrain_finetune.amp=fp8"])
    with pytest.raises(ValueError, match="amp: 'fp8'"):
        Precision("fp8", "cpu")


def _model_and_batch():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 6 * 6, 2))
    return model, torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 0, 1])


def _step(precision: Precision, scale_loss: float = 1.0):
    model, x, y = _model_and_batch()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    with precision.autocast():
        out = model(x)
    loss = torch.nn.functional.cross_entropy(out.float(), y) * scale_loss
    precision.backward(loss)
    grads = [p.grad.clone() for p in model.parameters()]
    stepped = precision.step(optimizer)
    return out.dtype, stepped, before, list(model.parameters()), grads


def test_fp16_scales_the_loss_and_steps_on_unscaled_gradients():
    reference = _step(Precision("off", "cpu"))
    precision = Precision("fp16", "cpu")
    scale = precision.scaler.get_scale()
    dtype, stepped, before, after, grads = _step(precision)
    assert dtype == torch.float16 and stepped and scale == 2.0**16
    for g, g32 in zip(grads, reference[4], strict=True):  # backward saw the scaled loss
        torch.testing.assert_close(g / scale, g32, rtol=0.05, atol=1e-4)
    for p0, p1, p32 in zip(before, after, reference[3], strict=True):  # the step: unscaled
        assert not torch.equal(p0, p1)
        torch.testing.assert_close(p1.detach(), p32.detach(), rtol=0.01, atol=1e-4)
    assert precision.state_dict()["scale"] == scale  # goes into resume.pt


def test_fp16_skips_a_step_with_inf_gradients_and_lowers_the_scale():
    precision = Precision("fp16", "cpu")
    scale = precision.scaler.get_scale()
    _, stepped, before, after, _ = _step(precision, scale_loss=float("inf"))
    assert not stepped and precision.scaler.get_scale() == scale / 2
    for p0, p1 in zip(before, after, strict=True):
        assert torch.equal(p0, p1.detach())


def test_cpu_training_stays_fp32_and_bf16_falls_back_to_fp16_without_native_support(
        monkeypatch, caplog):
    for amp in ("bf16", "fp16", "off"):
        p = Precision.for_device(amp, torch.device("cpu"))
        assert p.mode == "off" and p.scaler is None and p.dtype is None
    with pytest.raises(ValueError, match="amp: 'yes'"):
        Precision.for_device("yes", torch.device("cpu"))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    with caplog.at_level(logging.WARNING, logger="detnas.run.precision"):
        p = Precision("bf16", torch.device("cuda", 0))
    assert p.mode == "fp16" and p.dtype == torch.float16
    assert "bf16 is not supported natively on Tesla V100; using fp16" in caplog.text


@pytest.mark.gpu
def test_engine_trains_in_fp16_on_cuda_and_keeps_the_scaler_for_resume(tmp_path):
    from test_engine import _stage

    from detnas.io import load_checkpoint

    cuda = torch.device("cuda", 0)
    tcfg = TrainConfig(steps=3, batch_size=4, lr=0.05, checkpoint_every=2, amp="fp16")
    result = engine.train(_stage(), tcfg, 0, engine.Dist(device=cuda), tmp_path / "resume.pt",
                          tracking.NullTracker(), {})
    assert result["step"] == 3
    assert all(torch.isfinite(v).all() for v in result["model"].values() if v.is_floating_point())
    tcfg = TrainConfig(steps=4, batch_size=4, lr=0.05, checkpoint_every=2, amp="fp16")
    engine.train(_stage(), tcfg, 0, engine.Dist(device=cuda), tmp_path / "b" / "resume.pt",
                 tracking.NullTracker(), {})
    assert load_checkpoint(tmp_path / "b" / "resume.pt")["scaler"]["scale"] > 0
