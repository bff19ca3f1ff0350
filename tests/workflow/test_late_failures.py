"""`snakemake -n` refuses the settings that used to fail only when their job ran, hours into a
study (docs/config-checks.md), in one line naming the file, the key and the value: one case per
kind of check here, every item through `detnas.plan.config` in tests/test_config_checks.py."""

from __future__ import annotations

import json

import pytest
import yaml

pytestmark = pytest.mark.workflow

TEST = ("--configfile", "config/test.yaml")

# (changes to config/test.yaml by dotted key, what the error says after "config.")
CASES = {
    "max_flops below the cheapest network": (
        {"search.max_flops": 1000000},
        "search.max_flops: 1e+06 is below the cheapest network of space test"),
    "topk over the population": ({"search.topk": 5}, "search.topk: 5 exceeds population (4)"),
    "mutations and crossovers over the population": (
        {"search.mutations": 3, "search.crossovers": 2},
        "search.mutations: 3 + crossovers 2 exceed population (4)"),
    "flops bins no network falls into": (
        {"supernet_pretrain.sampling": "flops_bins", "supernet_pretrain.flops_bins": [[1, 2]]},
        "supernet_pretrain.flops_bins[0]: [1, 2]: no network of space test"),
    "nats groups that do not divide the channels": (
        {"nats.groups": 3}, "nats.groups: 3 does not divide the 4 channels"),
    "synthetic images held out of too few": (
        {"datasets.synth.search_images": 24},
        "datasets.synth.search_images: 24 (held out of the 24 training images"),
    "nats batches over a split": (
        {"nats.search.batch_size": 9},
        "nats.search.batch_size: 9 (fpn) is more than the 8 images of a NATS split"),
    "an annotation file that does not parse": (
        {"datasets": {"coco": {"kind": "coco", "root": "coco", "search_images": 2}}},
        "datasets.coco.train_annotations: coco/annotations/instances_train.json: not valid JSON"),
}


def _edit(path, changes: dict) -> None:
    data = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        *keys, last = dotted.split(".")
        node = data
        for key in keys:
            node = node.setdefault(key, {})
        node[last] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.mark.parametrize("case", CASES)
def test_snakemake_n_refuses_what_used_to_fail_late(study, case):
    changes, says = CASES[case]
    _edit(study.root / "config" / "test.yaml", changes)
    annotations = study.root / "coco" / "annotations" / "instances_train.json"
    annotations.parent.mkdir(parents=True)
    annotations.write_text(json.dumps({"images": []})[:-1])  # truncated
    proc = study.snakemake("-n", *TEST, check=False)
    out = proc.stderr + proc.stdout
    assert proc.returncode != 0
    assert f"/config/test.yaml: config.{says}" in out, out  # the file, key and value: one line


BAD = "seed: 0\nsearch:\n  population: 4\n   topk: 2\n"


def test_a_yaml_syntax_error_in_the_default_config_names_its_line_and_column(study):
    (study.root / "config" / "config.yaml").write_text(BAD)
    proc = study.snakemake("-n", check=False)
    out = proc.stderr + proc.stdout
    assert proc.returncode != 0
    assert "\nconfig/config.yaml:4:8: mapping values are not allowed here\n" in out, out


def test_a_configfiles_yaml_error_is_snakemakes_and_config_check_names_the_place(study):
    """Snakemake reads a --configfile before the Snakefile runs, and says only that it is not
    JSON or YAML; the docs send the reader to `detnas config check FILE`."""
    import subprocess
    import sys

    (study.root / "bad.yaml").write_text(BAD)
    proc = study.snakemake("-n", "--configfile", "bad.yaml", check=False)
    assert proc.returncode != 0 and "is not valid JSON or YAML" in proc.stderr + proc.stdout
    check = subprocess.run([sys.executable, "-m", "detnas", "config", "check", "bad.yaml"],
                           cwd=study.root, env=study.env, capture_output=True, text=True)
    assert check.returncode == 2
    assert check.stderr == "detnas: error: bad.yaml:4:8: mapping values are not allowed here\n"
