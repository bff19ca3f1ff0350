"""What every output records of where it came from: the numeric environment."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from detnas.provenance import (
    AVX2_PIN,
    ISA_VARIABLES,
    environment_key,
    numeric_environment,
    provenance,
)


def test_numeric_environment_names_what_decides_the_bits(monkeypatch):
    for k in ISA_VARIABLES:  # a CLI test earlier in this process may have pinned it
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    env = numeric_environment()
    assert env["torch"] == str(torch.__version__)
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["isa_variables"] == {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert env["threads"] == torch.get_num_threads()
    assert "ONEDNN_MAX_CPU_ISA=AVX2" in environment_key(env)
    assert provenance({}, 0)["numeric_environment"]["torch"] == env["torch"]


def test_numeric_environment_without_torch_does_not_import_it():
    """An output made without torch (an architecture's spec) records no torch, and asking does
    not import it: the core stays torch-free."""
    code = ("import sys; from detnas.provenance import numeric_environment as n; e = n(); "
            "assert 'torch' not in e and 'torch' not in sys.modules, e; print(e['numpy'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip()


def _has_avx2() -> bool:
    from detnas.provenance import _has_avx2 as has
    return has()


@pytest.mark.skipif(not _has_avx2(), reason="the pin applies to x86-64 CPUs with AVX2")
def test_cpu_isa_pin_gives_the_bits_of_an_avx2_machine(tmp_path):
    """`cpu_isa: avx2` (the default): a stage run by the CLI on this machine gives the bits a
    machine without AVX-512 gives (emulated here by capping ATen, oneDNN and MKL at AVX2 from the
    outside, with the pin off). Above AVX2, `cpu_isa: native` gives other bits: the pin is what
    makes the two machines agree."""
    import hashlib

    base = {k: v for k, v in os.environ.items() if k not in AVX2_PIN}
    base.update(OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    common = ["--config", "config/test.yaml", "--set", f"classification.root={tmp_path}/cls",
              "--set", "retrain_pretrain.steps=3", "--set", "tracking.enabled=false",
              "--set", "device=cpu"]
    cwd = Path(__file__).resolve().parents[1]

    def detnas(*args, isa="avx2", env=()):
        subprocess.run([sys.executable, "-m", "detnas", *args, *common, "--set", f"cpu_isa={isa}"],
                       env={**base, **dict(env)}, cwd=cwd, check=True, capture_output=True)

    def trained(name, **kw):
        out = tmp_path / name
        detnas("train", "classifier", "--arch", str(tmp_path / "arch.json"), "--out", str(out),
               **kw)
        state = torch.load(out / "checkpoint.pt", weights_only=False)["model"]
        capability = json.loads((out / "metrics.json").read_text())["provenance"][
            "numeric_environment"]["cpu_capability"]
        return hashlib.sha256(b"".join(v.numpy().tobytes() for v in state.values())).hexdigest(), \
            capability

    detnas("data", "synth-classification")
    detnas("arch", "spec", "shufflenetv2", "--out", str(tmp_path / "arch.json"))
    pinned, pinned_capability = trained("pinned")
    emulated, emulated_capability = trained("avx2-machine", isa="native", env=AVX2_PIN)
    assert pinned_capability == emulated_capability == "AVX2"
    assert pinned == emulated
    native, native_capability = trained("native", isa="native")
    if native_capability != "AVX2":  # an AVX-512 CPU: its own kernels sum in another order
        assert native != pinned


@pytest.mark.skipif(not _has_avx2(), reason="the pin applies to x86-64 CPUs with AVX2")
def test_pin_after_torch_computed_warns():
    """A process whose torch already computed (natively) keeps its capability: the pin says so
    and leaves the environment as it was, so that the provenance names no pin that did not
    apply. In a fresh process (a CLI command) the same call pins."""
    code = ("import os, sys, torch; {first}from detnas.provenance import AVX2_PIN, pin_cpu_isa; "
            "pin_cpu_isa('avx2'); torch.ones(2).sum(); print(torch.backends.cpu."
            "get_cpu_capability(), any(k in os.environ for k in AVX2_PIN))")
    env = {k: v for k, v in os.environ.items() if k not in AVX2_PIN}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])

    def run(first):
        return subprocess.run([sys.executable, "-c", code.format(first=first)], env=env,
                              capture_output=True, text=True, check=True)

    fresh = run("")
    assert fresh.stdout.split() == ["AVX2", "True"]
    late = run("torch.ones(2).sum(); native = torch.backends.cpu.get_cpu_capability(); ")
    if late.stdout.split()[0] == "AVX2":
        pytest.skip("this CPU's best is AVX2: nothing to tell apart")
    assert late.stdout.split()[1] == "False"
    assert "already dispatches to" in late.stderr
