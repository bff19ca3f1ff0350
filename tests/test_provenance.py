"""What every output records of where it came from: the numeric environment."""

import subprocess
import sys

import torch

from detnas.provenance import environment_key, numeric_environment, provenance


def test_numeric_environment_names_what_decides_the_bits(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.delenv("MKL_CBWR", raising=False)
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
