"""The test study's commands on CUDA (marked `gpu`: skipped without a CUDA device)."""

import json

import pytest
import yaml

pytestmark = [pytest.mark.gpu, pytest.mark.workflow, pytest.mark.slow]


def test_test_study_runs_on_cuda(study):
    study.snakemake("--profile", "profiles/local", "--configfile", "config/test.yaml",
                    "--config", "device=cuda", timeout=1800)
    results = study.root / "results"
    assert (results / "report" / "report.html").stat().st_size > 1000
    metrics = json.loads((results / "retrain/detnas/synth/fpn/metrics.json").read_text())
    assert "mmap" in metrics
    prov = yaml.safe_load((results / "retrain/detnas/synth/fpn/config.yaml").read_text())
    assert prov["config"]["device"] == "cuda"
