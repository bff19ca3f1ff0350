"""The cluster rehearsal: the paper configs' DAG through profiles/slurm, every GPU rule on 2 GPUs.

`config/coco.yaml` keeps its structure (datasets and metrics, every ablation, FLOPs bins and
limits, NATS's candidates and groups, one search worker per GPU) and is shrunk in size
(`rehearsal_config`): synthetic data under the paper's dataset names, a few steps, tiny images,
and Faster R-CNN + FPN alone. RetinaNet's jobs are FPN's with another ``--detector``: the same
rules, resources and process models (`test_retinanet_doubles_the_detection_jobs` plans them), and
they would double the rehearsal's jobs, whose 20 s are nearly all process start-up; RetinaNet's
stages are tested in-process (tests/test_fidelity.py, test_search_fitness.py,
test_nats_search.py).

It runs on the local SLURM cluster (scripts/ci/start_slurm.sh), whose node declares 2 stand-in
GPUs: each GPU rule gets `--gpus=2` from the profile as on a GPU cluster, and its 2 processes run
on the CPU with gloo. Then the outputs are checked against what one process computes: the search's
fitness values exactly, NATS's derived architecture, training ranks.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import time

import pytest
import yaml

# The MLflow UI on the rehearsal's store (tests/workflow/mlflow_ui.py), collected here: one
# pytest-xdist worker runs a test file (`make test`: --dist loadfile), and the rehearsal once.
from mlflow_ui import (  # noqa: F401
    server,
    store,
    test_the_study_is_tracked_whole,
    test_ui_groups_the_study_by_ablation_with_the_ap_columns,
    test_ui_serves_a_copied_studys_artifacts_from_the_copy,
    test_ui_shows_a_retraining_run_with_its_metrics_and_parent,
)

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

GPUS = 2  # per GPU rule: the stand-in GPUs of the CI node

# 4 images per process: BN over fewer values (32 px images end at 1x1) blows the gradients up
TRAIN = {"steps": 4, "batch_size": 8, "checkpoint_every": 2, "log_every": 1}
DETECTION_TRAIN = {"steps": 3, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 2,
                   "log_every": 1}
SHRINK = {  # sizes only; what is not named here is the paper config's
    "device": "cpu",  # gloo and CPU processes stand in for NCCL and GPUs
    "workers": 1,
    "classification": {"kind": "synthetic", "root": "", "num_classes": 4, "num_train": 64,
                       "num_val": 16,
                       "image_size": 64, "cache": True, "search_images": 16},
    "detector": {"min_size": 64, "max_size": 64, "fpn_channels": 16, "box_head_channels": 32,
                 "box_batch_size_per_image": 32, "rpn_batch_size_per_image": 32,
                 "rpn_post_nms_top_n": 100},
    "supernet_pretrain": TRAIN, "retrain_pretrain": TRAIN, "resnet_pretrain": TRAIN,
    "supernet_finetune": DETECTION_TRAIN, "retrain_finetune": DETECTION_TRAIN,
    # exact recalibration: the reference's momentum-0.1 average over 2 batches is still mostly
    # the reset statistics, and every candidate would score alike
    "search": {"population": 4, "topk": 2, "generations": 2, "mutations": 1, "crossovers": 1,
               "recalib_images": 4, "recalib_batch_size": 2, "recalib": "exact"},
    "clsnas_search": {"population": 4, "topk": 2, "generations": 2, "mutations": 1,
                      "crossovers": 1, "recalib_images": 4, "recalib_batch_size": 2,
                      "eval_batch_size": 4, "recalib": "exact"},
    "nats": {"width": 8, "search": DETECTION_TRAIN},
    # the study's own store, read by the MLflow UI test; the paper's tracking server (uri:
    # server) has its own test (tests/test_tracking_server.py)
    "tracking": {"uri": "sqlite:///results/mlflow.db"},
}
DATASET = {"kind": "synthetic", "root": "", "num_train": 24, "num_test": 8, "image_size": 64,
           "num_classes": 2, "search_images": 8, "cache": True}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = (_merge(base[key], value) if isinstance(value, dict)
                    and isinstance(base.get(key), dict) else value)
    return out


def _schedules(cfg: dict):
    yield from (cfg[k] for k in ("supernet_pretrain", "supernet_finetune", "retrain_pretrain",
                                 "resnet_pretrain", "retrain_finetune"))
    yield cfg["nats"]["search"]


def rehearsal_config(paper: dict) -> dict:
    """``paper`` at toy size: its datasets (names, metrics) become small synthetic sets, and each
    learning rate follows its batch size (the linear scaling rule)."""
    cfg = _merge(paper, SHRINK)
    for small, big in zip(_schedules(cfg), _schedules(paper), strict=True):
        scale = small["batch_size"] / big["batch_size"]
        small["lr"] = big["lr"] * scale
        small["detector_lr"] = {d: lr * scale for d, lr in big.get("detector_lr", {}).items()}
    cfg["detectors"] = ["fpn"]
    cfg["datasets"] = {name: {**DATASET, **{k: d[k] for k in ("metric", "flip_prob") if k in d}}
                       for name, d in paper["datasets"].items()}
    if paper["nats"].get("arch_images"):  # coco.yaml: the alphas' own split, 35k -> 8 images
        cfg["nats"]["arch_images"] = 8
    return cfg


def slurm_overrides(profile: dict, partition: str) -> list[str]:
    """The CI cluster's site settings (what a user's site profile holds, docs/cluster.md), on the
    command line; every rule the profile gives GPUs gets 2 of them."""
    resources = []
    for rule, res in profile["set-resources"].items():
        if res.get("gpu", 0):
            resources += [f"{rule}:gpu={GPUS}", f"{rule}:cpus_per_gpu=1", f"{rule}:mem_mb=2500",
                          f"{rule}:runtime=30"]
        else:
            resources += [f"{rule}:mem_mb=1500", f"{rule}:runtime=30"]
    # The plugin's path for multi-node rules (mpi: the job's shell runs in the allocation, where
    # `detnas launch --nodes N` would start srun), on one node.
    resources += ["supernet_classification:mpi=srun", "supernet_classification:tasks_per_node=2"]
    return ["--default-resources", f"slurm_partition={partition}", "mem_mb=1500", "runtime=30",
            "--set-resources", *resources,
            "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "5",
            "--slurm-no-account", "--slurm-keep-successful-logs", "--retries", "0",
            "--jobs", "8", "--latency-wait", "10"]


def _history(path) -> list[tuple[str, str]]:
    with open(path) as f:
        return [(r["arch"], r["fitness"]) for r in csv.DictReader(f)]


def _detnas(study, *args) -> str:
    proc = subprocess.run([sys.executable, "-m", "detnas", *args, "--config",
                           "results/config.yaml", "--set", "tracking.enabled=false"],
                          cwd=study.root, env=study.env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


def _gpu_rules(profile: dict) -> set[str]:
    return {rule for rule, res in profile["set-resources"].items() if res.get("gpu", 0)}


def rehearse(study, artifacts, slurm_partition):
    """Run the rehearsal in ``study`` (the session fixture ``rehearsed`` of conftest.py calls
    this once: the MLflow UI test looks at the same study's store)."""
    gres = subprocess.run(["sinfo", "-h", "-o", "%G"], capture_output=True, text=True).stdout
    assert f"gpu:{GPUS}" in gres, f"the CI node declares no {GPUS} GPUs ({gres.strip()}): " \
                                  "run scripts/ci/start_slurm.sh"
    root = study.root
    paper = yaml.safe_load((root / "config" / "coco.yaml").read_text())
    (root / "config" / "rehearsal.yaml").write_text(yaml.safe_dump(rehearsal_config(paper)))
    profile = yaml.safe_load((root / "profiles" / "slurm" / "config.yaml").read_text())
    args = ("--profile", "profiles/slurm", "--configfile", "config/rehearsal.yaml",
            *slurm_overrides(profile, slurm_partition))
    planned = study.planned(*args)
    start = time.perf_counter()
    proc = study.snakemake(*args, check=False, timeout=2400)
    seconds = time.perf_counter() - start
    log = proc.stdout + proc.stderr
    (artifacts / "rehearsal.log").write_text(log)
    assert proc.returncode == 0, log[-6000:]
    print(f"rehearsal: {sum(planned.values())} jobs in {seconds:.0f} s")
    return study, args, planned, profile, log


def _localrules(snakefile) -> set[str]:
    """The rules the Snakefile's ``localrules:`` block keeps off the cluster."""
    block = re.search(r"^localrules:\n((?:[ \t]+\w+,?\n)+)", snakefile.read_text(), re.M)
    return set(re.findall(r"\w+", block[1]))


def test_every_rule_completes_through_sbatch(rehearsed):
    study, args, planned, _, log = rehearsed
    submitted = log.count("has been submitted with SLURM jobid")
    local = _localrules(study.root / "workflow" / "Snakefile")
    assert {"all", "report", "split"} <= local
    # every job went through sbatch but those of the localrules (data, splits, specs, report)
    assert submitted == sum(n for rule, n in planned.items() if rule not in local)
    assert "localrule synth_detection" in log and "localrule report" in log
    assert planned["search_detection"] >= 3 and planned["nats_search"] == 1
    assert len(list((study.root / ".snakemake" / "slurm_logs").rglob("*.log"))) == submitted
    assert (study.root / "results" / "report" / "report.html").stat().st_size > 1000
    assert "Nothing to be done" in study.snakemake(*args, "-n").stdout


def test_each_gpu_rule_ran_its_process_model_once(rehearsed):
    study, _, planned, profile, _ = rehearsed
    logs = study.root / "logs"
    searches = list((logs / "search").rglob("*.log"))
    assert searches
    for path in searches:  # one search process with 2 workers, not 2 copies of the search
        text = path.read_text()
        assert f"--workers {GPUS}" in text.split("\n", 1)[0], path
        assert len(re.findall(r"search of space \S+: \d+ evaluations", text)) == 1, path
        assert f"{GPUS} worker(s)" in text, path
    trained = list((logs / "supernet").rglob("*.log")) + list((logs / "retrain").rglob("*.log"))
    trained += list((logs / "nats").rglob("*.log"))
    assert len(trained) == sum(n for rule, n in planned.items()
                               if rule.startswith(("supernet_", "retrain_", "nats_search")))
    for path in trained:  # DDP on 2 processes, and the ranks ended with the same weights
        text = path.read_text()
        assert f"--nproc_per_node={GPUS}" in text.split("\n", 1)[0], path
        assert f"weights identical on the {GPUS} ranks" in text, path
    assert {"supernet_classification", "supernet_detection", "search_detection",
            "search_classification", "nats_search", "retrain_detector"} <= _gpu_rules(profile)


@pytest.mark.parametrize("search", ["coco/fpn/detnas", "cls/clsnas"])
def test_search_fitness_equals_one_process(rehearsed, tmp_path, search):
    study, *_ = rehearsed
    r, out = "results", tmp_path / "one"
    if search.startswith("cls"):
        fitness = ["--fitness", "classification", "--data", f"{r}/data/classification/train",
                   "--recalib-data", f"{r}/data/classification/train", "--ablation", "clsnas",
                   "--supernet", f"{r}/supernet/cls/checkpoint.pt"]
    else:
        dataset, detector, ablation = search.split("/")
        fitness = ["--fitness", "detection",
                   "--data", f"{r}/splits/{dataset}/instances_search.json",
                   "--images", f"{r}/data/{dataset}/train",
                   "--recalib-annotations", f"{r}/splits/{dataset}/instances_supernet.json",
                   "--recalib-image-dir", f"{r}/data/{dataset}/train", "--dataset", dataset,
                   "--detector", detector, "--ablation", ablation,
                   "--supernet", f"{r}/supernet/{dataset}/{detector}/pretrained/checkpoint.pt"]
    _detnas(study, "search", "evolution", *fitness, "--workers", "1", "--out", str(out))
    two = _history(study.root / r / "search" / search / "history.csv")
    assert _history(out / "history.csv") == two
    if search.startswith("cls"):  # detectors trained for 3 steps still score 0 at toy size
        assert len({f for _, f in two}) > 1  # the fitness tells candidates apart


def test_nats_on_two_processes_derives_a_complete_architecture(rehearsed, tmp_path):
    """NATS on 2 processes against 1: the same layers and groups, not the same choices.

    The gradient averaging itself is exact (tests/test_nats_search.py compares a 2-process step
    with a 1-process step on the whole batch). What differs here is what CPU processes cannot
    share: BN batch statistics (SyncBN needs GPUs, so each process normalises over its 2 images)
    and the RoI/anchor sampling draws. After 3 Adam steps of 3e-4 each alpha is about the sign of
    its summed gradient, so the argmax of a group agrees at about chance level (24 of 64 groups
    in one run); the ranks of the 2-process run stay identical (checked at the end of the run).
    """
    study, *_ = rehearsed
    r = "results"
    out = tmp_path / "one"
    _detnas(study, "nats", "search", "--pretrained", f"{r}/retrain/resnet50/cls/checkpoint.pt",
            "--weights-annotations", f"{r}/splits/coco/instances_supernet.json",
            "--arch-annotations", f"{r}/splits/coco/instances_search.json",
            "--images", f"{r}/data/coco/train", "--detector", "fpn", "--dataset", "coco",
            "--out", str(out))
    one = json.loads((out / "arch.json").read_text())["dilations"]
    two = json.loads((study.root / r / "nats/coco/fpn/arch.json").read_text())["dilations"]
    assert one.keys() == two.keys() and len(one) == 16  # ResNet-50's bottlenecks
    assert all(len(one[k].split(",")) == len(two[k].split(",")) == 4 for k in one)  # groups
    log = (study.root / "logs/nats/coco/fpn.log").read_text()
    assert f"weights identical on the {GPUS} ranks" in log


def test_voc_config_plans_the_same_dag(rehearsed):
    study, _, planned, _, _ = rehearsed
    paper = yaml.safe_load((study.root / "config" / "voc.yaml").read_text())
    voc = {**rehearsal_config(paper), "results": "results-voc"}  # the COCO study's results stay
    (study.root / "config" / "rehearsal_voc.yaml").write_text(yaml.safe_dump(voc))
    assert study.planned("--configfile", "config/rehearsal_voc.yaml") == planned


def test_retinanet_doubles_the_detection_jobs(rehearsed):
    """The paper's two detectors: every job of a detection rule twice, the others once."""
    study, _, planned, _, _ = rehearsed
    paper = yaml.safe_load((study.root / "config" / "coco.yaml").read_text())
    both = {**rehearsal_config(paper), "detectors": paper["detectors"], "results": "results-both"}
    (study.root / "config" / "rehearsal_both.yaml").write_text(yaml.safe_dump(both))
    twice = study.planned("--configfile", "config/rehearsal_both.yaml")
    detection = {"supernet_detection", "search_detection", "nats_search", "retrain_detector",
                 "retrain_classifier_searched", "rank"}  # a searched row: one net per detector
    assert paper["detectors"] == ["fpn", "retinanet"]
    assert twice == {rule: n * (2 if rule in detection else 1) for rule, n in planned.items()}


def test_a_stop_signal_through_slurm_loses_no_step(rehearsed):
    """`scancel --signal=TERM` (what `--signal=TERM@120` sends before a time limit) in the middle
    of a training job: the signal reaches `detnas` through the job's Snakemake, its shell and
    `detnas launch` / torchrun; it saves the step, its MLflow run ends KILLED, the job fails.
    The rerun of the workflow continues from that step to the weights of an uninterrupted run
    (the same workflow and process model on this machine, without SLURM's start-up and polling)."""
    import torch
    from mlflow.tracking import MlflowClient

    study, args, *_ = rehearsed
    root, steps = study.root, 100
    base = yaml.safe_load((root / "config" / "rehearsal.yaml").read_text())
    target = "retrain/shufflenetv2/cls/checkpoint.pt"  # its inputs: the data and its spec
    for name in ("full", "stop"):
        cfg = {**base, "results": f"results-{name}",
               "tracking": {**base["tracking"], "uri": f"sqlite:///results-{name}/mlflow.db"},
               "retrain_pretrain": {**base["retrain_pretrain"], "steps": steps,
                                    "checkpoint_every": 1000, "log_every": 1}}
        (root / "config" / f"rehearsal_{name}.yaml").write_text(yaml.safe_dump(cfg))
    configfile = args.index("--configfile") + 1

    def run(name, *local):
        argv = [*args[:configfile], f"config/rehearsal_{name}.yaml", *args[configfile + 1:]]
        return [sys.executable, "-m", "snakemake", "--nolock", *argv, *local,
                f"results-{name}/{target}"]

    # the rule's shell as on the cluster (`detnas launch --gpus 2`: torchrun, 2 ranks), run here
    subprocess.run(run("full", "--executor", "local", "--cores", "2"), cwd=root, env=study.env,
                   check=True, capture_output=True, timeout=600)
    assert "--nproc_per_node=2" in (root / "logs/retrain/shufflenetv2/cls.log").read_text()
    log = root / "logs" / "retrain" / "shufflenetv2" / "cls.log"
    log.unlink()
    proc = subprocess.Popen(run("stop"), cwd=root, env=study.env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (log.exists() and re.search(rf"step [2-9]\d/{steps} ", log.read_text())):
        assert proc.poll() is None and time.monotonic() < deadline, "no training step seen"
        time.sleep(0.05)
    running = subprocess.run(["squeue", "-h", "-t", "R", "-o", "%i %k"], capture_output=True,
                             text=True, check=True).stdout.splitlines()  # %k: the plugin's comment
    jobs = [line.split()[0] for line in running if "rule_retrain_classifier" in line]
    assert len(jobs) == 1, running
    subprocess.run(["scancel", "--signal=TERM", jobs[0]], check=True)
    assert proc.wait(timeout=300) != 0
    text = log.read_text()
    stopped = int(re.search(rf"stopped by SIGTERM at step (\d+) of {steps}", text)[1])
    out = root / "results-stop" / "retrain" / "shufflenetv2" / "cls"
    assert torch.load(out / "resume.pt", weights_only=True)["step"] == stopped < steps

    subprocess.run(run("stop"), cwd=root, env=study.env, check=True, capture_output=True,
                   timeout=600)
    assert f"at step {stopped}/{steps}" in log.read_text()  # resumed, not started over
    full = torch.load(root / "results-full" / target, weights_only=True)["model"]
    resumed = torch.load(root / "results-stop" / target, weights_only=True)["model"]
    for k, v in full.items():
        torch.testing.assert_close(resumed[k], v, rtol=0, atol=0, msg=k)
    client = MlflowClient(f"sqlite:///{root}/results-stop/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              "tags.stage = 'retrain-classification'")
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"]
