"""Snapshot the workflow's DAG for every config, to compare a change of the recipe before / after.

    python scripts/ci/dag_snapshot.py OUT [--repo ROOT] [--scratch DIR] [--stub] [--case NAME ...]
    diff -r BEFORE AFTER

For each case (a config under config/, with the variations tests/workflow uses) it writes, into
``OUT/<case>/``: the dry run's jobs with their shell commands (``snakemake -n -p``), the job
graph (``--dag``) and the rule graph (``--rulegraph``), normalised (the header, the dates and the
order Snakemake happens to print jobs and files in are dropped; the scratch folder reads
``<SCRATCH>``). With ``--stub`` the test and default configs also run whole with
tests/workflow/stub_detnas.py as ``detnas``, and ``stub-metadata.json`` keeps what Snakemake
records of each output (rule, inputs, params, shell command and its template: a change there
reruns the job) and
``stub-files.txt`` the files the run wrote.

The paper configs (coco.yaml, voc.yaml) read their data where it is: their roots point at
stand-ins under the scratch folder (annotation files of image entries alone, no images).
``rehearsal`` and ``rehearsal_voc`` are their shrunk copies
(tests/workflow/test_rehearsal.py). ``ROOT`` (default: this checkout) is the code under test;
``--scratch`` must be the same for the two snapshots compared.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parents[2]
TEST = ("--configfile", "config/test.yaml")


def _edit(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _stand_in_coco(images: int) -> dict:
    """A COCO annotation file the config checks accept (``images`` image entries, no boxes, one
    category): the DAG reads no more of a dataset than that."""
    return {"images": [{"id": i, "file_name": f"{i}.jpg", "width": 800, "height": 800}
                       for i in range(1, images + 1)],
            "annotations": [], "categories": [{"id": 1, "name": "object"}]}


def _paper_data(root: Path, name: str) -> None:
    """config/<name>.yaml with its roots at empty stand-ins under ``root``/data."""
    path = root / "config" / f"{name}.yaml"
    data = yaml.safe_load(path.read_text())
    for key, d in data["datasets"].items():
        d["root"] = str(root / "data" / key)
        for sub, default in (("train_images", "train"), ("test_images", "test")):
            (root / "data" / key / d.get(sub, default)).mkdir(parents=True, exist_ok=True)
        for sub in ("train_annotations", "test_annotations"):
            file = root / "data" / key / d[sub]
            file.parent.mkdir(parents=True, exist_ok=True)
            held_out = max(d.get("search_images", 0), data["nats"].get("arch_images", 0))
            file.write_text(json.dumps(_stand_in_coco(held_out + 1000)))
    data["classification"]["root"] = str(root / "data" / "imagenet")
    for split in ("train", "val"):
        for wnid in ("n01440764", "n01443537"):  # two class folders, no images
            (root / "data" / "imagenet" / split / wnid).mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _rehearsal(repo: Path, root: Path, paper: str, name: str) -> None:
    sys.path.insert(0, str(repo / "tests" / "workflow"))
    try:
        from test_rehearsal import rehearsal_config
    finally:
        sys.path.pop(0)
    data = yaml.safe_load((root / "config" / f"{paper}.yaml").read_text())
    (root / "config" / f"{name}.yaml").write_text(yaml.safe_dump(rehearsal_config(data)))


def _cases(repo: Path) -> dict:
    """case -> (snakemake arguments, how to prepare the scratch copy)."""
    def latency(root):
        _edit(root / "config" / "test.yaml", lambda d: d["search"].update(max_latency=5.0))

    def second_dataset(root):
        _edit(root / "config" / "test.yaml", lambda d: d["datasets"].update(
            other={"kind": "synthetic", "num_train": 20, "search_images": 8}))

    return {
        "default": ((), None),
        "test": (TEST, None),
        "test-seed7": ((*TEST, "--config", "seed=7"), None),
        "test-latency": (TEST, latency),
        "test-two-datasets": (TEST, second_dataset),
        "coco": (("--configfile", "config/coco.yaml"), lambda r: _paper_data(r, "coco")),
        "voc": (("--configfile", "config/voc.yaml"), lambda r: _paper_data(r, "voc")),
        "rehearsal": (("--configfile", "config/rehearsal.yaml"),
                      lambda r: _rehearsal(repo, r, "coco", "rehearsal")),
        "rehearsal_voc": (("--configfile", "config/rehearsal_voc.yaml"),
                          lambda r: _rehearsal(repo, r, "voc", "rehearsal_voc")),
    }


STUB_CASES = ("default", "test")


def _env(repo: Path, stub_bin: Path | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(repo), PYTHONHASHSEED="0")
    if stub_bin is not None:
        env["PATH"] = f"{stub_bin}{os.pathsep}{env['PATH']}"
    return env


def _snakemake(root: Path, env: dict, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--nolock", *args], cwd=root,
                          env=env, capture_output=True, text=True, timeout=1200)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"snakemake {' '.join(args)} in {root} failed:\n{out[-4000:]}")
    return out


_DATE = re.compile(r"^\[\w{3} \w{3} [ \d]\d [\d:]{8} \d{4}\]$")
_LISTS = re.compile(r"^(\s+reason: )(.*)$")


def _sorted_reason(line: str) -> str:
    """A ``reason:`` line with the files of each of its clauses sorted (a set, printed in hash
    order)."""
    m = _LISTS.match(line)
    if not m:
        return line
    clauses = []
    for clause in m.group(2).split("; "):
        head, sep, items = clause.partition(": ")
        clauses.append(head + sep + ", ".join(sorted(items.split(", "))) if sep else clause)
    return m.group(1) + "; ".join(clauses)


def normalise_dry_run(text: str, scratch: str) -> str:
    """A ``snakemake -n -p`` output without its header and dates: its job blocks sorted, the
    files of each reason sorted, the job stats tables sorted; the other paragraphs in order."""
    text = text.replace(scratch, "<SCRATCH>").split("Building DAG of jobs...", 1)[-1]
    text = text.replace("\nJob stats:", "\n\nJob stats:")
    jobs, other = [], []
    for block in text.split("\n\n"):
        lines = [_sorted_reason(line) for line in block.splitlines()
                 if line.strip() and not _DATE.match(line)]
        if not lines:
            continue
        if any(re.match(r"^(local)?rule \w+:$", line) for line in lines):
            jobs.append("\n".join(lines))
        elif lines[0] == "Job stats:":
            other.append("\n".join([*lines[:3], *sorted(lines[3:])]))
        else:
            other.append("\n".join(lines))
    return "\n\n".join(other + sorted(jobs)) + "\n"


def normalise_graph(text: str) -> str:
    """A ``--dag`` / ``--rulegraph`` dot file, its lines sorted (node numbers are job ids)."""
    start = text.index("digraph")
    return "\n".join(sorted(text[start:].splitlines())) + "\n"


def _stub_bin(repo: Path, scratch: Path) -> Path:
    bin_dir = scratch / ".stub-bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    exe = bin_dir / "detnas"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} "
                   f"{repo / 'tests' / 'workflow' / 'stub_detnas.py'} \"$@\"\n")
    exe.chmod(0o755)
    return bin_dir


def stub_metadata(root: Path) -> dict:
    """What Snakemake recorded of each output of a finished run (what decides a rerun)."""
    records = {}
    for path in sorted((root / ".snakemake" / "metadata").iterdir()):
        name = base64.b64decode(path.name.replace("@", "/") + "==").decode()
        meta = json.loads(path.read_text())
        records[name] = {k: meta.get(k) for k in ("rule", "input", "log", "params", "shellcmd",
                                                  "code", "software_stack_hash")}
        records[name]["input"] = sorted(records[name]["input"] or [])
    return records


def snapshot(repo: Path, out: Path, scratch: Path, names: list[str], stub: bool) -> None:
    cases = _cases(repo)
    for name in names or list(cases):
        args, prepare = cases[name]
        root = scratch / name
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        for folder in ("workflow", "config", "profiles"):
            shutil.copytree(repo / folder, root / folder)
        if prepare:
            prepare(root)
        env = _env(repo)
        dest = out / name
        dest.mkdir(parents=True, exist_ok=True)
        dry = _snakemake(root, env, "-n", "-p", *args)
        (dest / "dry-run.txt").write_text(normalise_dry_run(dry, str(scratch)))
        for flag in ("--dag", "--rulegraph"):
            graph = _snakemake(root, env, flag, *args)
            (dest / f"{flag[2:]}.dot").write_text(normalise_graph(graph))
        if stub and name in STUB_CASES:
            env = _env(repo, _stub_bin(repo, scratch))
            _snakemake(root, env, "--cores", "2", *args)
            (dest / "stub-metadata.json").write_text(
                json.dumps(stub_metadata(root), indent=1, sort_keys=True).replace(
                    str(scratch), "<SCRATCH>") + "\n")
            files = sorted(p.relative_to(root).as_posix() for p in (root / "results").rglob("*")
                           if p.is_file())
            (dest / "stub-files.txt").write_text("\n".join(files) + "\n")
        print(f"{name}: {dest}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--repo", type=Path, default=HERE, help="the code under test")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/detnas-dag-snapshot"))
    parser.add_argument("--stub", action="store_true",
                        help="also run the default and test configs with the stub CLI")
    parser.add_argument("--case", action="append", default=[], choices=list(_cases(HERE)))
    args = parser.parse_args(argv)
    snapshot(args.repo.resolve(), args.out, args.scratch.resolve(), args.case, args.stub)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
