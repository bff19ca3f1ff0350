"""The test study on a real SLURM cluster, through profiles/slurm (scripts/ci/start_slurm.sh
starts a one-node cluster; `make test` does it). Skipped where `sinfo` does not answer."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

pytestmark = [pytest.mark.workflow, pytest.mark.slow]


def partition() -> str | None:
    """The default partition of a reachable cluster, or None."""
    if shutil.which("sinfo") is None:
        return None
    proc = subprocess.run(["sinfo", "-h", "-o", "%P %t"], capture_output=True, text=True,
                          timeout=30)
    for line in proc.stdout.splitlines():
        name, state = line.split()
        if state in ("idle", "mix", "alloc") and name.endswith("*"):
            return name.rstrip("*")
    return None


PARTITION = partition()
# The CI cluster: no accounting database (squeue for job states), no accounts, no GPUs; the
# profile's paper-scale set-resources are replaced by one harmless entry.
CI_OVERRIDES = [
    "--default-resources", f"slurm_partition={PARTITION}",
    "--set-resources", "tracking_init:runtime=10",
    "--slurm-status-command", "squeue",
    "--slurm-init-seconds-before-status-checks", "5",
    "--slurm-no-account",
    "--slurm-keep-successful-logs",
    "--retries", "0",
    "--jobs", "2",
    "--latency-wait", "10",
]


@pytest.mark.skipif(PARTITION is None, reason="no SLURM cluster (scripts/ci/start_slurm.sh)")
def test_test_study_runs_on_slurm(study):
    proc = study.snakemake("--profile", "profiles/slurm", "--configfile", "config/test.yaml",
                           *CI_OVERRIDES, check=False, timeout=1800)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    submitted = log.count("has been submitted with SLURM jobid")
    assert submitted == 28, log[-5000:]  # every job but `all` went through sbatch
    results = study.root / "results"
    assert (results / "report" / "report.html").stat().st_size > 1000
    metrics = json.loads((results / "retrain/detnas/synth/fpn/metrics.json").read_text())
    assert "mmap" in metrics
    for row in ("shufflenetv2", "resnet50", "clsnas", "detnas", "scratch", "random", "nats"):
        assert (results / f"retrain/{row}/synth/fpn/checkpoint.pt").exists(), row
    # One SLURM log per job, kept by --slurm-keep-successful-logs.
    assert len(list((study.root / ".snakemake" / "slurm_logs").rglob("*.log"))) == submitted
    # Done is done: the same invocation has nothing left to submit.
    again = study.snakemake("--profile", "profiles/slurm", "--configfile", "config/test.yaml",
                            *CI_OVERRIDES, "-n")
    assert "Nothing to be done" in again.stdout
