"""Smoke test: the throughput benchmarks run on CPU in a tiny setting and print their ratios."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script, *args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--device", "cpu",
                          *args], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.slow
def test_fitness_path_benchmark_prints_its_ratios():
    out = _run("bench_fitness_path.py", "--recalib", "4", "--val", "4", "--image-size", "64",
               "--batch", "2", "--candidates", "1")
    assert re.search(r"loader path .*: \d+\.\d\d", out)
    assert re.search(r"prepared path .*: \d+\.\d\d \(target <= 1.2", out)
    assert re.search(r"COCO scoring / forward: pycocotools \d+\.\d\d", out)
    assert "same fitness on both paths: True" in out


@pytest.mark.slow
def test_study_cost_benchmark_prints_gpu_days():
    out = _run("bench_study_cost.py", "--quick", "--iters", "1")
    for stage in ("pretrain", "finetune_fpn", "search_fpn", "retrain_finetune_retinanet"):
        assert re.search(rf"{stage} +\d+\.\d h", out), stage
    assert re.search(r"row DetNAS fpn: [\d.]+ GPU-hours = [\d.]+ GPU-days \(paper: 44", out)
    assert "row NATS fpn" in out


@pytest.mark.slow
def test_imagenet_loader_benchmark_prints_its_ratios():
    out = _run("bench_imagenet_loader.py", "--images", "24", "--batch", "8", "--steps", "2",
               "--image-size", "32")
    assert re.search(r"CPU path +[\d.]+ images/s per core +ratio loader/step +\d+\.\d\d", out)
    assert re.search(r"device path +[\d.]+ images/s +ratio loader/step +\d+\.\d\d", out)


@pytest.mark.slow
def test_roi_pool_benchmark_prints_its_ratios():
    out = _run("bench_roi_pool.py", "--rounds", "1", "--iters", "1")
    assert re.search(r"training step .* ratio \d+\.\d\d", out)
    assert re.search(r"pooler forward \+ backward .* ratio \d+\.\d\d", out)
    assert "forward bit-identical to torchvision's: True" in out


@pytest.mark.slow
def test_detector_batch_benchmark_prints_its_ratios():
    out = _run("bench_detector_batch.py", "--rounds", "1", "--iters", "1")
    for detector in ("fpn", "retinanet"):
        assert re.search(rf"{detector} +step at 4: .* ratio per image 8/4 \d+\.\d\d", out)


@pytest.mark.slow
def test_channels_last_benchmark_prints_its_ratios():
    out = _run("bench_channels_last.py", "--rounds", "1", "--iters", "1")
    for workload in ("classifier 32 x 48 px", "fpn 4 x 96 px", "retinanet 8 x 96 px"):
        assert re.search(rf"{workload} +contiguous .* ratio \d+\.\d\d", out)


@pytest.mark.slow
def test_warm_benchmark_prints_its_ratio():
    out = _run("bench_warm.py", "--rounds", "1", "--steps", "1")
    assert "1 rounds, 1 steps a job, 1 warm jobs" in out
    assert re.search(r"job cold +[\d.]+ s +warm +[\d.]+ s +ratio warm/cold \d+\.\d\d", out)


@pytest.mark.slow
def test_default_speed_benchmark_prints_its_ratios():
    out = _run("bench_default_speed.py", "--rounds", "1", "--iters", "1")
    assert re.search(r"RetinaNet step +P3\.\.P5 .* ratio \d+\.\d\d", out)
    assert re.search(r"classification step .* ratio \d+\.\d\d", out)


@pytest.mark.slow
def test_recalib_padding_benchmark_prints_its_ratios():
    out = _run("bench_recalib_padding.py", "--recalib", "8", "--val", "8", "--candidates", "2")
    assert re.search(r"recalibration s/candidate: padded [\d.]+, regions [\d.]+ \(ratio "
                     r"\d+\.\d\d\), one by one [\d.]+ \(ratio \d+\.\d\d\)", out)
    assert re.search(r"in batches of one size [\d.]+ \(ratio \d+\.\d\d\)", out)
    assert re.search(r"Kendall tau padded vs regions: (-?\d\.\d\d|None)", out)
    # batches of one size give the detections of one image at a time
    assert re.search(r"regions, eval 1 vs regions, same size: .*difference 0\.00[0-4]", out)
