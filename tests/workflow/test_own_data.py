"""docs/own-data.md, run: its commands, in order, take a COCO-format dataset written to disk as a
user would have it (tests/user_dataset.py: JPEG and PNG files of several sizes and orientations,
category ids 1, 3, 7, 12, one class with no box in the test images, one image without boxes) to
a finished toy study, with Snakemake, on the CPU; the full-scale configs it then writes for GPUs
are dry runs (CI has no GPU).

The commands are the `bash` blocks of the page, as written, but for the user's folders (`~/mydata`,
`~/imagenet`: the test's), a `snakemake` of a CUDA config (run with `-n`) and `mlflow ui` (a
server a person looks at: run with `--help`, and the store read through MLflow's client as the
UI's view reads it). The page's example output is checked against what `detnas init` prints, and
its job count against the dry run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from doc_pages import bash_blocks
from user_dataset import CATEGORIES, write_imagefolder, write_user_dataset

from detnas.plan import layout
from detnas.plan.study import ROWS

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "own-data.md"


def doc_commands(text: str) -> list[str]:
    """The commands of the page's `bash` blocks, in order, each on one line of single spaces."""
    return [" ".join(line.split()) for block in bash_blocks(text) for line in block]


def doc_example(text: str) -> list[str]:
    """The lines of the example output after step 1's command."""
    after = text.split("it prints, among the rest:", 1)[1]
    return re.search(r"```text\n(.*?)```", after, re.DOTALL)[1].splitlines()


def _configfile(root: Path, command: str) -> dict:
    return yaml.safe_load((root / command.split("--configfile ")[1].split()[0]).read_text())


def _check_the_pages_word(text: str, command: str, output: str, data: Path) -> None:
    """The page's example output of step 1 is what its `detnas init` prints; its job count in
    step 2 is the dry run's."""
    if command == "detnas":
        for line in doc_example(text):
            line = line.replace("~/mydata", str(data))
            assert line in output, f"the page's example is not what detnas init prints:\n{line}"
    elif command == "snakemake -n":
        planned = re.search(r"^total\s+(\d+)$", output, re.MULTILINE)[1]
        assert f"\n{planned} jobs:" in text, f"the dry run plans {planned} jobs"


def test_the_pages_commands_take_a_users_folder_to_a_finished_study(study, tmp_path):
    text = DOC.read_text()
    folders = {"~/mydata": write_user_dataset(tmp_path / "mydata", train=100, test=12),
               "~/imagenet": write_imagefolder(tmp_path / "imagenet")}
    env = dict(study.env, PATH=f"{Path(sys.executable).parent}{os.pathsep}{study.env['PATH']}")
    seen = set()
    for command in doc_commands(text):
        for placeholder, folder in folders.items():
            command = command.replace(placeholder, str(folder))
        if command.startswith("snakemake") and "-n" not in command.split() and _configfile(
                study.root, command).get("device") == "cuda":
            command = command.replace("snakemake", "snakemake -n", 1)
        if command.startswith("mlflow ui"):
            command += " --help"
        proc = subprocess.run(command, shell=True, cwd=study.root, env=env, capture_output=True,
                              text=True, timeout=900)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        key = command.split()[0] + (" -n" if " -n " in command else "")
        if key not in seen:  # the first: step 1's toy init, step 2's dry run
            _check_the_pages_word(text, key, proc.stdout + proc.stderr, folders["~/mydata"])
        seen.add(key)

    # the toy study finished: its report, every row's metrics, the classes counted right
    results = study.root / "results-toy"
    report = (results / layout.REPORT_DIR / layout.REPORT_MD).read_text()
    cfg = _configfile(study.root, "--configfile config/mydata.yaml")
    for row in ROWS:  # the toy config adds no row
        assert f"| {row.title} | mydata / FPN |" in report
    import torch

    for row in ROWS:
        folder = results / "retrain" / row.name / "mydata" / "fpn"
        metrics = json.loads((folder / layout.METRICS).read_text())
        assert {"mmap", "ap50"} <= set(metrics), row.name
        checkpoint = torch.load(folder / layout.CHECKPOINT, map_location="cpu",
                                weights_only=False)
        assert checkpoint["num_classes"] == len(CATEGORIES), row.name
    search = json.loads((results / layout.split_file("search", "mydata")).read_text())
    assert len(search["images"]) == cfg["datasets"]["mydata"]["search_images"] == 8
    assert [c["id"] for c in search["categories"]] == [c["id"] for c in CATEGORIES]

    # the MLflow comparison: a run of each row's retraining, tagged with the row, with its AP
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{results}/mlflow.db")
    experiment = client.get_experiment_by_name("detnas-mydata-toy")
    assert "mlflow.sharedViewState.ablation" in experiment.tags
    runs = client.search_runs([experiment.experiment_id],
                              "tags.stage = 'retrain-detection'", max_results=100)
    assert {r.data.tags["ablation"] for r in runs} == {r.name for r in ROWS}
    assert all("mmap" in r.data.metrics for r in runs)

    # the real study's configs: the paper's recipe for 1 and for 8 GPUs a job
    for name, batch, lr in (("mydata-gpu", 2, 0.0025), ("mydata-slurm", 16, 0.02)):
        gpu = yaml.safe_load((study.root / "config" / f"{name}.yaml").read_text())
        assert (gpu["device"], gpu["space"], gpu["results"]) == ("cuda", "300M", "results")
        assert (gpu["supernet_finetune"]["batch_size"], gpu["supernet_finetune"]["lr"]) == (
            batch, lr)
        assert gpu["classification"]["root"] == str(folders["~/imagenet"])
