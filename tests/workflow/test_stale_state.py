"""A finished study rerun after a change upstream: no stage resumes a state made from the old
inputs (issue 20). The real `detnas` CLI on the test config, the smallest part of the DAG that
shows it: the supernet's pre-training and the ClsNASNet search on it."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

TEST = ("--configfile", "config/test.yaml")
SEARCH = "results/search/cls/clsnas"
TRAIN = "results/data/classification/train"


def _fitness(path) -> list[tuple[str, str]]:
    with open(path) as f:
        return [(row["arch"], row["fitness"]) for row in csv.DictReader(f)]


def test_a_retrained_supernet_is_searched_afresh(study):
    study.snakemake(f"{SEARCH}/history.csv", "--cores", "1", *TEST)
    before = _fitness(study.root / SEARCH / "history.csv")
    study.edit_config("test.yaml", "supernet_pretrain", "lr", 0.5)
    assert study.planned(f"{SEARCH}/history.csv", *TEST) == {
        "supernet_classification": 1, "search_classification": 1}
    study.snakemake(f"{SEARCH}/history.csv", "--cores", "1", *TEST)
    after = _fitness(study.root / SEARCH / "history.csv")
    # the reference: the same search of the new supernet, into an empty folder
    subprocess.run([sys.executable, "-m", "detnas", "search", "evolution", "--config",
                    "results/config.yaml", "--supernet", "results/supernet/cls/checkpoint.pt",
                    "--fitness", "classification", "--data", TRAIN, "--recalib-data", TRAIN,
                    "--ablation", "clsnas", "--out", "fresh"], cwd=study.root, env=study.env,
                   check=True, capture_output=True, timeout=600)
    assert after == _fitness(study.root / "fresh" / "history.csv") != before
    assert len(list((study.root / SEARCH).glob("state.json.stale-*"))) == 1
