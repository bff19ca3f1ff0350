"""The settings that used to fail when their job ran, hours into a study, refused when the config
is loaded (`detnas.plan.config.check`, every command and the workflow's parse) or when the workflow
is parsed (`detnas.plan.preflight.check_workflow`); one line naming the key and the value, a YAML
syntax error as FILE:LINE:COLUMN. docs/config-checks.md lists them;
tests/workflow/test_late_failures.py
runs a few through `snakemake -n`."""

from __future__ import annotations

import itertools
import json
import random

import pytest

from detnas.cli import main
from detnas.data import files
from detnas.plan import config, preflight
from detnas.plan.flops import cost_table
from detnas.plan.latency import LatencyTable, Measurement, save_table
from detnas.plan.space import Arch, get_space

TINY = cost_table("tiny")  # the default config's space, at the default flops_input_size 224
# a classifier FLOPs limit above the cheapest backbone, below the cheapest classifier
BETWEEN = TINY.floor().flops + TINY.head.flops // 2

# (overrides of the default config, words of the one-line error): each fails on the code
# before these checks only when its job runs (docs/config-checks.md)
LATE = {
    "search.max_flops": (["search.max_flops=1000000"],
                         ["search.max_flops: 1e+06 is below the cheapest network of space tiny",
                          "backbone FLOPs at 224px"]),
    "search.max_flops classifier": (["search.flops_of=classifier", f"search.max_flops={BETWEEN}"],
                                    ["search.max_flops", "classifier FLOPs at 224px"]),
    "search.max_params": (["search.max_params=1000"],
                          ["search.max_params: 1000 is below the cheapest", "backbone params"]),
    "search.topk": (["search.topk=51"], ["search.topk: 51 exceeds population (50)"]),
    "search.mutations": (["search.mutations=30", "search.crossovers=21"],
                         ["search.mutations: 30 + crossovers 21 exceed population (50)"]),
    "clsnas_search": (["clsnas_search={population: 8, topk: 9}"], ["clsnas_search.topk: 9"]),
    "ablation overrides": (["ablations={lean: {overrides: {search.max_flops: 1000000}}}"],
                           ["ablations.lean.overrides", "search.max_flops: 1e+06"]),
    "flops_bins outside": (["supernet_pretrain.sampling=flops_bins",
                            "supernet_pretrain.flops_bins=[[1000, 2000]]"],
                           ["supernet_pretrain.flops_bins[0]: [1000, 2000]: no network of space "
                            "tiny", "39,291,776 to 58,810,240"]),
    "flops_bins reversed": (["supernet_finetune.sampling=flops_bins",
                             "supernet_finetune.flops_bins=[[5.0e+7, 4.0e+7]]"],
                            ["supernet_finetune.flops_bins[0]: [50000000.0, 40000000.0]",
                             "low <= high"]),
    "flops_bins not a pair": (["retrain_pretrain.sampling=flops_bins",
                               "retrain_pretrain.flops_bins=[[4.0e+7]]"],
                              ["retrain_pretrain.flops_bins[0]: [40000000.0]"]),
    "rank.train.flops_bins": (["rank.train.sampling=flops_bins",
                               "rank.train.flops_bins=[[1000, 2000]]"],
                              ["rank.train.flops_bins[0]: [1000, 2000]"]),
    "nats.groups": (["nats.groups=3"],
                    ["nats.groups: 3 does not divide the 16 channels", "stage 1"]),
    "nats.group_width": (["nats.group_width=24", "nats.searched_stages=[2, 3]"],
                         ["nats.group_width: 24 does not divide the 32 channels", "stage 2"]),
    "nats.arch_images": (["nats.arch_images=240"],
                         ["nats.arch_images: 240 (held out of the 240 training images of "
                          "datasets.synth"]),
    "datasets.num_classes": (["datasets.synth.num_classes=25"],
                             ["datasets.synth.num_classes: 25 (the synthetic sets have 1..24)"]),
    "datasets.image_size": (["datasets.synth.image_size=16"],
                            ["datasets.synth.image_size: 16 (must be >= 32)"]),
    "datasets.search_images": (["datasets.synth.search_images=240"],
                               ["datasets.synth.search_images: 240 (held out of the 240"]),
    "classification.num_classes": (["classification.num_classes=25"],
                                   ["classification.num_classes: 25"]),
    "classification.num_train": (["classification.num_train=5"],
                                 ["classification.num_train: 5 (must be >= num_classes = 10"]),
    "classification.image_size": (["classification.image_size=8"],
                                  ["classification.image_size: 8 (must be >= 16)"]),
    "classification.search_images": (["classification.search_images=2000"],
                                     ["classification.search_images: 2000 (held out of the "
                                      "2000"]),
}


@pytest.mark.parametrize("case", LATE)
def test_a_setting_that_would_fail_late_is_refused_on_load(case):
    overrides, words = LATE[case]
    with pytest.raises(ValueError) as e:
        config.load(None, overrides)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("--set "), message  # said of the override that gave the value
    for word in words:
        assert word in message, message


@pytest.mark.parametrize("overrides", [
    ["search.topk=50", "search.mutations=25", "search.crossovers=25"],  # at the bounds
    [f"search.max_flops={TINY.floor().flops}", f"search.max_params={TINY.floor().params}"],
    ["search.flops_of=classifier", f"search.max_flops={TINY.floor().flops + TINY.head.flops}"],
    ["nats.groups=16", "nats.group_width=0"], ["nats.group_width=8"],
    ["datasets.synth.search_images=239", "datasets.synth.num_classes=24"],
    ["supernet_pretrain.sampling=flops_bins", "supernet_pretrain.flops_bins=[[4.0e+7, 4.2e+7]]"],
])
def test_the_checks_accept_the_limits_themselves(overrides):
    config.load(None, overrides)


def test_flops_bins_are_refused_exactly_where_no_network_falls():
    """`CostTable.reaches` against every network of the test space: a bin in a gap between two
    networks' FLOPs is refused (the space's range alone would pass it), one network's own FLOPs
    as a bin are accepted."""
    table = cost_table("test", 64)
    n = get_space("test").num_blocks
    flops = sorted({table.classifier_flops(Arch("test", c))
                    for c in itertools.product(range(4), repeat=n)})
    gaps = [(a, b) for a, b in itertools.pairwise(flops) if b - a > 2]
    assert len(gaps) > 10
    rng = random.Random(0)
    for a, b in rng.sample(gaps, 10):
        assert not table.reaches(a + 1, b - 1, classifier=True)
        assert table.reaches(a, a, classifier=True) and table.reaches(a + 1, b, classifier=True)
    assert not table.reaches(flops[-1] + 1, flops[-1] + 10**9, classifier=True)
    a, b = gaps[len(gaps) // 2]
    with pytest.raises(ValueError, match=r"finetune\.flops_bins\[1\]: .*no network of space test"):
        config.load(None, ["space=test", "search.flops_input_size=64",
                           "supernet_finetune.sampling=flops_bins",
                           f"supernet_finetune.flops_bins=[[{a}, {a}], [{a + 1}, {b - 1}]]"])


def test_the_nats_batches_within_its_splits_are_the_workflows_check():
    """A config any command loads; the workflow, which runs NATS on every dataset, refuses
    batches larger than a NATS split (it used to fail when the NATS search started)."""
    cfg = config.load(None, ["nats.search.batch_size=51"])
    with pytest.raises(ValueError, match=r"^config\.nats\.search\.batch_size: 51 \(fpn\) is more "
                                         r"than the 50 images of a NATS split of dataset synth"):
        preflight.check_workflow(cfg, "config")
    cfg = config.load(None, ["nats.search.detector_batch_size={retinanet: 200}",
                             "nats.arch_images=100"])
    with pytest.raises(ValueError, match=r"detector_batch_size\.retinanet: 200 \(retinanet\).* "
                                         r"\(140 weights, 100 architecture\)"):
        preflight.check_workflow(cfg, "config")
    preflight.check_workflow(config.load(None), "config")


def _coco(path, images: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "images": [{"id": i, "file_name": f"{i}.png", "width": 8, "height": 8}
                   for i in range(images)],
        "annotations": [], "categories": [{"id": 1, "name": "a"}]}))


def _coco_study(root, *extra):
    return config.load(None, ["datasets.coco.kind=coco", f"datasets.coco.root={root}",
                              "datasets.coco.search_images=2", "nats.search.batch_size=1", *extra])


@pytest.mark.parametrize(("text", "says"), [
    ("{\"images\": [", "not valid JSON (Expecting value: line 1 column 13"),
    ("[]", "not COCO: top level is list"),
    ("{\"images\": []}", "not COCO: 'annotations' is missing"),
])
@pytest.mark.parametrize("key", ["train_annotations", "test_annotations"])
def test_an_annotation_file_that_does_not_parse_is_refused(tmp_path, key, text, says):
    cfg = _coco_study(tmp_path)
    _coco(tmp_path / cfg.datasets["coco"].train_annotations, 10)
    path = tmp_path / getattr(cfg.datasets["coco"], key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    with pytest.raises(ValueError) as e:
        preflight.check_workflow(cfg, "config")
    assert str(e.value).startswith(f"config.datasets.coco.{key}: {path}: {says}"), str(e.value)


def test_a_large_annotation_file_has_only_its_ends_read(tmp_path, monkeypatch):
    cfg = _coco_study(tmp_path)
    path = tmp_path / cfg.datasets["coco"].train_annotations
    _coco(path, 1)  # too few images to hold 2 out: not counted over the limit
    monkeypatch.setattr(files, "PARSE_LIMIT", 16)
    preflight.check_workflow(cfg, "config")
    path.write_text(path.read_text()[:-30])  # an interrupted download
    with pytest.raises(ValueError, match=r"train_annotations: .*: not a JSON object .*truncated"):
        preflight.check_workflow(cfg, "config")


def test_images_held_out_of_a_real_training_set_are_checked_against_its_file(tmp_path):
    cfg = _coco_study(tmp_path)
    path = tmp_path / cfg.datasets["coco"].train_annotations
    _coco(path, 2)
    with pytest.raises(ValueError, match=rf"^config\.datasets\.coco\.search_images: 2 \(held out "
                                         rf"of the 2 training images of {path}: must be 1\.\.1\)"):
        preflight.check_workflow(cfg, "config")
    _coco(path, 40)
    with pytest.raises(ValueError, match=r"^config\.nats\.arch_images: 40 "):
        preflight.check_workflow(_coco_study(tmp_path, "nats.arch_images=40"), "config")
    preflight.check_workflow(_coco_study(tmp_path, "nats.search.batch_size=2"), "config")


def test_imagefolder_splits_with_other_classes_are_refused(tmp_path):
    for split, classes in (("train", "abc"), ("val", "ab")):
        for c in classes:
            (tmp_path / split / c).mkdir(parents=True)
    cfg = config.load(None, ["classification.kind=imagefolder",
                             f"classification.root={tmp_path}"])
    with pytest.raises(ValueError, match=r"^config\.classification\.root: .*val: lacks class "
                                         r"folder 'c' of .*train"):
        preflight.check_workflow(cfg, "config")
    (tmp_path / "val" / "c").mkdir()
    preflight.check_workflow(cfg, "config")


def _table(space: str) -> LatencyTable:
    blocks = tuple((1.0, 2.0, 3.0, 4.0) for _ in range(get_space(space).num_blocks))
    return LatencyTable(space, 1.0, blocks, Measurement(), "cpu", "2", 1)


def test_a_given_latency_table_is_checked_against_the_space_and_the_limits(tmp_path):
    path = tmp_path / "table.json"
    save_table(path, _table("test"))
    cfg = config.load(None, [f"latency.table={path}", "search.max_latency=20"])
    with pytest.raises(ValueError, match=r"^config\.latency\.table: .*the table is of space "
                                         r"'test'"):
        preflight.check_workflow(cfg, "config")
    save_table(path, _table("tiny"))  # the fastest network: 1 + 10 x 1 ms
    preflight.check_workflow(cfg, "config")
    for overrides, key in ((["search.max_latency=10.5"], "search"),
                           (["clsnas_search={max_latency: 10.5}"], "clsnas_search"),
                           (["ablations={fast: {overrides: {search.max_latency: 10.5}}}"],
                            "ablations.fast.overrides")):
        cfg = config.load(None, [f"latency.table={path}", *overrides])
        with pytest.raises(ValueError, match=rf"^config\.{key}\.max_latency: 10\.5 is below the "
                                             r"cheapest network of space tiny \(11 ms"):
            preflight.check_workflow(cfg, "config")


BAD_YAML = {
    "indentation": ("seed: 0\nsearch:\n  population: 4\n   topk: 2\n",
                    ":4:8: mapping values are not allowed here"),
    "unclosed quote": ("seed: 0\nresults: \"out\nspace: tiny\n",
                       ":4:1: found unexpected end of stream (while scanning a quoted scalar, "
                       "at 2:10)"),
    "tab": ("search:\n\tpopulation: 4\n", ":2:1: found character '\\t' that cannot start any "
                                          "token (while scanning for the next token)"),
}


@pytest.mark.parametrize("case", BAD_YAML)
def test_a_yaml_syntax_error_is_one_line_naming_file_line_and_column(tmp_path, case, capsys):
    text, says = BAD_YAML[case]
    path = tmp_path / "study.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as e:
        config.load(path)
    assert str(e.value) == f"{path}{says}"
    assert main(["config", "check", str(path)]) == 2
    assert capsys.readouterr().err == f"detnas: error: {path}{says}\n"


def test_a_set_value_that_is_not_yaml_is_one_line():
    with pytest.raises(ValueError, match=r"^--set search\.population=\[1: not valid YAML at "
                                         r"column 3 of the value: expected ',' or '\]'"):
        config.load(None, ["search.population=[1"])


def test_config_check_says_ok_or_the_error_as_the_workflow_would(tmp_path, capsys, repo_root):
    test = str(repo_root / "config" / "test.yaml")
    assert main(["config", "check", test]) == 0
    assert capsys.readouterr().out == f"{test}: OK\n"
    assert main(["config", "check", test, "--set", "search.topk=5"]) == 2
    assert capsys.readouterr().err == ("detnas: error: --set search.topk=5: search.topk: 5 "
                                       "exceeds population (4): the parents are the top k of a "
                                       "population\n")
    path = tmp_path / "study.yaml"  # the workflow generates the synthetic sets where it says
    path.write_text(f"datasets: {{synth: {{root: {tmp_path}}}}}\n")
    assert main(["config", "check", str(path)]) == 2
    assert "datasets.synth.root" in capsys.readouterr().err
    path.write_text("nats: {search: {batch_size: 64}}\n")  # the workflow's own check
    assert main(["config", "check", str(path)]) == 2
    assert "nats.search.batch_size: 64" in capsys.readouterr().err
