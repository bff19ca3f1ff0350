"""The JSON schema generated from detnas/plan/config.py (the workflow validates with it), and
config/*.yaml against it and the loader."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import jsonschema
import pytest
import yaml

from detnas.plan import config as detnas_config
from detnas.plan import typed
from detnas.plan.space import SPACES

REPO = Path(__file__).resolve().parents[2]
SCHEMA = detnas_config.json_schema()
CONFIGS = sorted((REPO / "config").glob("*.yaml"))


def resolve(node: dict) -> dict:
    while "$ref" in node:
        node = SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[1]]
    return node


def check_keys(cls: type, node: dict, where: str) -> None:
    """Every dataclass field is a schema property and back, recursively."""
    node = resolve(node)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert set(node["properties"]) == set(fields), where
    assert node.get("additionalProperties") is False, where
    hints = typing.get_type_hints(cls)
    for name in fields:
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            check_keys(tp, node["properties"][name], f"{where}.{name}")
        elif typing.get_origin(tp) is dict and dataclasses.is_dataclass(typing.get_args(tp)[1]):
            (item,) = typing.get_args(tp)[1:]
            check_keys(item, node["properties"][name]["additionalProperties"], f"{where}.{name}")


def test_schema_has_the_keys_of_the_dataclasses():
    check_keys(detnas_config.StudyConfig, SCHEMA, "config")


def test_schema_knows_every_space():
    assert SCHEMA["properties"]["space"]["enum"] == list(SPACES)


def test_schema_accepts_the_defaults():
    defaults = typed.to_dict(detnas_config.StudyConfig())
    for ds in defaults["datasets"].values():
        ds["root"] = "results/data/synth"
    jsonschema.validate(defaults, SCHEMA)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_configs_pass_schema_and_loader(path):
    jsonschema.validate(yaml.safe_load(path.read_text()), SCHEMA)
    detnas_config.load(path)


def test_schema_is_a_valid_json_schema_with_the_field_comments():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    search = SCHEMA["$defs"]["SearchConfig"]["properties"]
    assert search["objective"]["enum"] == ["fitness", "pareto"]
    # a comment and its continuation lines, joined
    assert search["objective"]["description"].startswith("fitness: parents are the top k")
    assert search["objective"]["description"].endswith("(front.json)")
    assert search["recalib_images"]["description"].startswith("BN recalibration images")


@pytest.mark.parametrize(("data", "words"), [
    ({"search": {"population": 0}}, ["population", "0"]),
    ({"datasets": {"d": {"kind": "imagenet"}}}, ["kind", "imagenet"]),
    ({"detectors": []}, ["detectors"]),
    ({"detectors": ["fpnx"]}, ["fpnx"]),
    ({"supernet_pretrain": {"detector_lr": {"ssd": 0.1}}}, ["ssd"]),
    ({"classification": {"dropout": 1.0}}, ["dropout", "1.0"]),
    ({"latency": {"clock": "gpu"}}, ["clock", "gpu"]),
    ({"search": {"generations": 0}}, ["generations", "0"]),  # bounds that used to fail only
    ({"search": {"max_flops": -1}}, ["max_flops", "-1"]),  # inside a later job
    ({"supernet_pretrain": {"lr": -0.1}}, ["lr", "-0.1"]),
    ({"retrain_finetune": {"steps": 0}}, ["steps", "0"]),
    ({"supernet_finetune": {"detector_lr": {"fpn": 0}}}, ["fpn", "0"]),
    ({"nats": {"arch_lr": 0}}, ["arch_lr", "0"]),
    ({"detector": {"min_size": 0}}, ["min_size", "0"]),
])
def test_schema_and_loader_reject_the_same_values(data, words):
    """Choices and bounds live in the dataclasses' types: the schema and the loader agree."""
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, SCHEMA)
    with pytest.raises(ValueError) as e:
        typed.from_dict(detnas_config.StudyConfig, data)
    for word in words:
        assert word in str(e.value)


@dataclasses.dataclass
class _Either:
    amp: typing.Literal["bf16", "off"] | bool = "bf16"  # a choice, or a YAML boolean


def test_a_union_field_takes_any_of_its_types_in_schema_and_loader():
    schema = typed._dataclass_schema(_Either, {})
    assert schema["properties"]["amp"]["description"] == "a choice, or a YAML boolean"
    for good in ("off", False):
        jsonschema.validate({"amp": good}, schema)
        assert typed.from_dict(_Either, {"amp": good}).amp == good
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"amp": "fp8"}, schema)
    with pytest.raises(ValueError, match="'fp8'"):
        typed.from_dict(_Either, {"amp": "fp8"})


def test_data_roots_one_rule_for_the_workflow_and_the_cli():
    def study(**datasets):
        return typed.from_dict(detnas_config.StudyConfig,
                                       {"results": "out", "datasets": datasets})

    cfg = study(synth={})
    detnas_config.resolve_data_roots(cfg, "config", generated=True)
    assert cfg.datasets["synth"].root == "out/data/synth"
    assert cfg.classification.root == "out/data/classification"
    cfg = study(synth={"root": "/elsewhere"})
    detnas_config.resolve_data_roots(cfg, "config")  # a CLI run may point at any folder
    assert cfg.datasets["synth"].root == "/elsewhere"
    with pytest.raises(ValueError, match=r"config.datasets.synth.root: '/elsewhere': a synthetic"):
        detnas_config.resolve_data_roots(cfg, "config", generated=True)  # the workflow writes it
    with pytest.raises(ValueError, match=r"config.datasets.c.root: set the folder of the coco"):
        detnas_config.resolve_data_roots(study(c={"kind": "coco"}), "config", generated=True)
    with pytest.raises(ValueError, match=r"config.datasets.s.train_images: 'img'"):
        detnas_config.resolve_data_roots(study(s={"train_images": "img"}), "config",
                                         generated=True)


@pytest.mark.parametrize("override, says", [
    ("search.generations=abc", "--set search.generations=abc: search.generations: expected int"),
    ("search.population=0", "--set search.population=0: search.population: 0 (must be >= 1)"),
    ("search.nope=1", "--set search.nope=1: search: unknown key 'nope'"),
    ("nope.x=1", "--set nope.x=1: unknown key 'nope'"),
])
def test_an_error_in_a_set_value_is_said_of_the_set_not_of_the_file(override, says, tmp_path):
    path = REPO / "config" / "config.yaml"
    with pytest.raises(ValueError) as e:
        detnas_config.load(path, ["search.topk=2", override])
    assert str(e.value).startswith(says) and str(path) not in str(e.value)
    key, value = override.split("=")  # the same value in a file: said of the file
    data: dict = {}
    typed.set_dotted(data, key, yaml.safe_load(value))
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=f"^{study}"):
        detnas_config.load(study, ["search.topk=2"])
