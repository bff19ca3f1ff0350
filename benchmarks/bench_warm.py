"""A study job cold (a fresh ``detnas`` process) against warm (a fork of the warm server,
`detnas.run.warm`), side by side in one run (alternating rounds, median): ``detnas train supernet``
of a few steps on a tiny synthetic classification set, tracked to a SQLite MLflow store, one
thread, the way a local Snakemake run's jobs run. Prints the wall time of each and the ratio
warm / cold (below 1: the warm start saves the imports).

    python benchmarks/bench_warm.py [--device cpu] [--rounds 5] [--steps 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from detnas.data import make_synthetic_classification
from detnas.run import warm


def _study(root: Path, steps: int) -> Path:
    make_synthetic_classification(root / "cls", seed=0, num_classes=3, num_train=24, num_val=6,
                                  image_size=32)
    cfg = {"space": "test", "device": "cpu", "results": str(root),
           "classification": {"root": str(root / "cls"), "image_size": 32, "search_images": 6},
           "supernet_pretrain": {"steps": steps, "batch_size": 8, "checkpoint_every": steps},
           "tracking": {"enabled": True, "uri": f"sqlite:///{root}/mlflow.db"}}
    path = root / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu"], help="where the jobs train")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=2)
    args = p.parse_args()
    if not warm.available():
        sys.exit("warm starts need Linux")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = _study(root, args.steps)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        env.pop(warm.ADDRESS_VARIABLE, None)
        detnas = [sys.executable, "-m", "detnas"]
        subprocess.run([*detnas, "tracking", "init", "--config", str(cfg)], env=env, check=True,
                       capture_output=True)
        log = root / "warm.log"
        address, server = warm.start(log, os.getpid(), detnas)
        while "serving" not in log.read_text():
            time.sleep(0.1)
        times = {"cold": [], "warm": []}
        envs = {"cold": env, "warm": {**env, warm.ADDRESS_VARIABLE: address}}
        for i in range(args.rounds):
            for name, job_env in envs.items():
                command = [*detnas, "launch", "--gpus", "0", "--", "train", "supernet", "--task",
                           "classification", "--config", str(cfg), "--out",
                           str(root / f"{name}{i}")]
                t = time.perf_counter()
                subprocess.run(command, env=job_env, check=True, capture_output=True)
                times[name].append(time.perf_counter() - t)
        server.terminate()
        server.wait()
        forks = sum(" runs " in line for line in log.read_text().splitlines())
    med = {name: statistics.median(v) for name, v in times.items()}
    print(f"device cpu, {args.rounds} rounds, {args.steps} steps a job, {forks} warm jobs")
    print(f"job cold {med['cold']:6.2f} s  warm {med['warm']:6.2f} s  ratio warm/cold "
          f"{med['warm'] / med['cold']:.2f}")


if __name__ == "__main__":
    main()
