"""A study started from a supernet another repository published, as docs/published-supernet.md
tells it: two git + DVC repositories in local folders and a local folder as the DVC remote. The
first pre-trains the `test` space's classification supernet (its pre-training job alone) and
publishes it (`make dvc-push`); the second brings it in (`dvc import`), plans its study without a
pre-training job, and runs the jobs made from it (the fine-tuning, the ClsNASNet search) with the
real `detnas`; their provenance records the file's sha256 and origin. The publisher then
publishes a newer one, and `dvc update` brings it in: those jobs are planned again. Every command
of the page runs here but `make run` (the whole study: the other workflow tests run its DAG)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml
from conftest import base_env, copy_recipe
from doc_pages import bash_blocks
from test_dvc import LOCAL_REMOTE, REPO, make_study_repo, run

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

PAGE = "docs/published-supernet.md"
PUBLISHER = "https://github.com/colleague/detnas-study"  # the page's repository, replaced
FINETUNE = "results/supernet/synth/fpn/pretrained"
CLSNAS = "results/search/cls/clsnas"


def commands(section: str) -> list[str]:
    """The command lines of the bash block of the page's section ``section``, as a user types
    them (comments stripped)."""
    text = (REPO / PAGE).read_text()
    body = text[text.index(f"\n## {section}"):]
    end = body.find("\n## ", 1)
    (block,) = bash_blocks(body if end < 0 else body[:end])
    return block


def planned(out: str) -> dict[str, int]:
    """Rule -> jobs of a `snakemake -n`'s job stats."""
    table = out.split("Job stats:", 1)[1]
    return {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", table, re.M)
            if rule != "total"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_study_runs_from_a_supernet_another_repository_published(tmp_path):
    publisher, importer, remote = (tmp_path / n for n in ("publisher", "importer", "remote"))
    envs = {}
    for repo in (publisher, importer):
        repo.mkdir()
        copy_recipe(repo)
        envs[repo] = make_study_repo(repo, base_env())  # config/test.yaml as its config.yaml

    publish = [line.replace(LOCAL_REMOTE, str(remote)) for line in commands("Publish")]
    for line in publish:
        run(line, publisher, envs[publisher])
    published = publisher / "results/supernet/cls/checkpoint.pt"
    made_by = json.loads((published.parent / "metrics.json").read_text())["provenance"]

    for line in commands("Import"):
        run(line.replace(PUBLISHER, str(publisher)), importer, envs[importer])
    imported = importer / "supernets/cls.pt"
    assert sha256(imported) == sha256(published)
    (section,) = re.findall(r"```yaml\n(.*?)```", (REPO / PAGE).read_text(), re.S)
    config = importer / "config/config.yaml"
    config.write_text(config.read_text() + section)
    assert yaml.safe_load(config.read_text())["supernet_from"] == {
        "classification": "supernets/cls.pt"}

    out = {}
    for line in commands("Run"):
        if line.startswith("make run"):  # the whole study
            continue
        out[line] = run(line, importer, envs[importer]).stdout
    assert out["detnas config check config/config.yaml"].strip() == "config/config.yaml: OK"
    jobs = planned(out["snakemake -n"])
    assert "supernet_classification" not in jobs, jobs
    assert jobs["supernet_detection"] == 2 and jobs["search_classification"] == 1, jobs

    # The jobs made from it, for real (the Snakefile's default target is the whole study).
    made = ["snakemake", f"{FINETUNE}/checkpoint.pt", f"{CLSNAS}/arch.json", "--cores", "2"]
    run(made, importer, envs[importer])
    assert "Nothing to be done" in run([*made, "-n"], importer, envs[importer]).stdout
    rev = run(["git", "rev-parse", "HEAD"], publisher, envs[publisher]).stdout.strip()
    origin = {"path": "supernets/cls.pt", "sha256": sha256(imported),
              "dvc": {"repo": str(publisher), "rev": rev,
                      "path": "results/supernet/cls/checkpoint.pt"}}
    for path, role in ((f"{FINETUNE}/metrics.json", "init"), (f"{CLSNAS}/arch.json", "supernet")):
        source = json.loads((importer / path).read_text())["provenance"]["sources"][role]
        assert {k: source[k] for k in origin} == origin, (path, source)
        assert source["made_by"]["fingerprint"] == made_by["fingerprint"]
        assert source["made_by"]["git_commit"] == made_by["git_commit"]
    assert not (importer / "results/supernet/cls").exists()  # nothing pre-trained here

    # A supernet of another space is refused when the workflow is parsed, in one line.
    proc = run(["snakemake", "-n", "--config", "space=tiny"], importer, envs[importer], ok=False)
    assert proc.returncode != 0
    assert re.search(r"\n[^\n]*config/config.yaml: config.supernet_from.classification: "
                     r"supernets/cls.pt: a supernet of space test, this study's space is tiny\n",
                     proc.stdout + proc.stderr), proc.stdout + proc.stderr

    # The publisher's newer supernet (a longer pre-training); `dvc update` follows it.
    steps = publisher / "config/config.yaml"
    steps.write_text(steps.read_text().replace("supernet_pretrain: {steps: 4,",
                                               "supernet_pretrain: {steps: 6,"))
    for line in publish:
        if not line.startswith("dvc remote add"):  # once
            run(line, publisher, envs[publisher])
    update = commands("Update")
    out = {line: run(line, importer, envs[importer]).stdout for line in update}
    assert sha256(imported) == sha256(published) != origin["sha256"]
    record = yaml.safe_load((importer / "supernets/cls.pt.dvc").read_text())
    assert record["deps"][0]["repo"]["rev_lock"] != rev
    assert "supernet_classification" not in planned(out["snakemake -n"])
    assert planned(run([*made, "-n"], importer, envs[importer]).stdout) == {
        "supernet_detection": 1, "search_classification": 1}  # again, from the newer one
