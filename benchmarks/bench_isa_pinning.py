"""What pinning the instruction set costs, and what it changes: the study's `cpu_isa: avx2` (the
default: ATen, oneDNN and MKL at AVX2) against `cpu_isa: native`, side by side in one run.

Each round trains the same stage twice in fresh one-thread subprocesses, once natively and once
with ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_CBWR=AVX2`` (what `cpu_isa: avx2` sets,
and what a machine without AVX-512 runs), interleaved; prints the median time ratio capped /
native and whether the two trained weights are bit-identical (they are not where the native
capability is above AVX2: the summation order differs; that is why the default pins it).

    python benchmarks/bench_isa_pinning.py [--rounds 3] [--steps 60]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CAPPED = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}

STAGE = r"""
import sys, torch
from pathlib import Path
torch.set_num_threads(1)
from detnas.plan import config
from detnas.run import train
from detnas.data.synthetic import synthesize_classification, synthesize_detection
root, steps, task = sys.argv[1], int(sys.argv[2]), sys.argv[3]
cfg = config.load("config/config.yaml", [f"results={root}", "device=cpu",
    "tracking.enabled=false", f"classification.root={root}/cls", f"datasets.synth.root={root}/det",
    f"retrain_pretrain.steps={steps}", f"retrain_finetune.steps={steps}",
    "classification.num_train=200", "classification.num_val=40", "classification.search_images=40",
    "datasets.synth.num_train=40",
    "datasets.synth.num_test=8", "cpu_isa=native"])
spec = train.baseline_spec(cfg, "shufflenetv2")
if task == "classification":
    synthesize_classification(cfg.classification, cfg.seed)
    train.train_classifier(cfg, spec, "bench", Path(root) / "out")
else:
    synthesize_detection(cfg.datasets["synth"], cfg.seed)
    train.train_detector(cfg, spec, "bench", "synth", "fpn", None, Path(root) / "out")
print(torch.backends.cpu.get_cpu_capability())
"""


def _run(task: str, steps: int, env: dict) -> tuple[float, str, str]:
    """Seconds, the capability torch reported, and the digest of the trained weights."""
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", STAGE, tmp, str(steps), task],
                             env={**os.environ, "OMP_NUM_THREADS": "1", **env},
                             capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parents[1])
        seconds = time.perf_counter() - t0
        state = torch.load(Path(tmp) / "out" / "checkpoint.pt", weights_only=False)["model"]
        digest = hashlib.sha256(b"".join(v.cpu().numpy().tobytes()
                                         for v in state.values())).hexdigest()[:12]
    return seconds, out.stdout.split()[-1], digest


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=60)
    args = p.parse_args()
    base = {k: v for k, v in os.environ.items() if k not in CAPPED}
    os.environ.clear()
    os.environ.update(base)
    for task in ("classification", "detection"):
        times: dict[str, list[float]] = {"native": [], "capped": []}
        seen: dict[str, tuple[str, str]] = {}
        for _ in range(args.rounds):
            for name, env in (("native", {}), ("capped", CAPPED)):
                seconds, capability, digest = _run(task, args.steps, env)
                times[name].append(seconds)
                seen[name] = (capability, digest)
        native, capped = (statistics.median(times[k]) for k in ("native", "capped"))
        same = seen["native"][1] == seen["capped"][1]
        print(f"{task} ({args.steps} steps, 1 thread): native {seen['native'][0]} "
              f"{native:.1f} s, capped {seen['capped'][0]} {capped:.1f} s: ratio capped / "
              f"native {capped / native:.2f}; weights {'bit-identical' if same else 'differ'} "
              f"({seen['native'][1]} / {seen['capped'][1]})")


if __name__ == "__main__":
    main()
