"""A stage-like job of tests/test_tracking_server.py: one tracked run through `detnas.run.tracking`
as a stage logs it (start_stage: tags, the config artifact; params, metrics per step, a tag, its
output as an artifact, its cost, the end), its outputs written to OUT first.

    python tests/tracking_job.py CONFIG OUT INDEX START [HALF]

Once imported it writes OUT/ready and waits for the file START (so that every job logs at once,
and the time measured is the tracking's). With HALF, it logs the first half of its steps, writes
OUT/halfway and waits for the file HALF before the second half (the test stops the server in
between). OUT/timing.json: the run's id and when its tracking started and ended.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

STEPS = 60
KEYS = ("loss", "lr", "ap", "grad_norm")


def value(key: str, index: int, step: int) -> float:
    """The value job ``index`` logs for metric ``key`` at ``step``."""
    return round(1.0 / (1 + step) + KEYS.index(key) + index / 100, 6)


def _wait(out: Path, mark: str, gate: str) -> None:
    (out / mark).touch()
    while not Path(gate).exists():
        time.sleep(0.05)


def run(config_path: str, out: str, index: int, start_gate: str, half: str | None = None) -> None:
    from detnas.io import save_json
    from detnas.plan import config
    from detnas.run import tracking

    cfg, out = config.load(config_path), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _wait(out, "ready", start_gate)
    start = time.time()
    tags = {"ablation": f"job{index}", "dataset": "synth", "detector": "fpn", "arch": "0-00-00-0"}
    with tracking.start_stage(cfg, "search", tags, name=f"job{index}", out=out) as tracker:
        tracker.log_params({"index": index, "steps": STEPS})
        for step in range(STEPS):
            if half and step == STEPS // 2:
                tracker.flush()
                _wait(out, "halfway", half)
            tracker.log_metrics({k: value(k, index, step) for k in KEYS}, step=step)
        save_json(out / "metrics.json", {"index": index, "ap": value("ap", index, STEPS - 1)})
        tracker.set_tags({"job": index})
        tracker.log_artifact(out / "metrics.json")
        tracker.cost()
    save_json(out / "timing.json", {"run_id": tracker.run_id, "start": start, "end": time.time()})


if __name__ == "__main__":
    run(*sys.argv[1:3], int(sys.argv[3]), *sys.argv[4:6])
