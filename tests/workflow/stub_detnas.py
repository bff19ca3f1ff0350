"""A stand-in for the `detnas` CLI that writes each command's outputs in milliseconds.

The DAG tests run the real Snakefile with this script first on PATH (as `detnas`), so they check
the wiring (every path a rule passes exists, every declared output is written) and Snakemake's
rerun behaviour without training anything. It parses its arguments with the real CLI's parser
(an unknown flag fails as it would for real) and writes what detnas/plan/layout.py says each command
writes. Environment:
    STUB_LOG     append one line per call: the command words and --out (or --status)
    STUB_HANG    the end of an --out: write the first output, touch STUB_HANG_FLAG, sleep
    STUB_FAIL    a substring of --out: exit 1 without writing
    STUB_TRACKING  set: the `tracking` commands run for real (the MLflow store and parent run)
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import yaml

from detnas.cli import build_parser
from detnas.plan import layout

# Arguments that name an existing file or folder (every one the rules pass).
PATH_ARGS = ("supernet", "data", "images", "recalib_annotations", "recalib_image_dir",
             "recalib_data", "arch", "init", "annotations", "pretrained", "weights_annotations",
             "arch_annotations", "config", "scratch", "search")

OUTPUTS = {  # command -> files written under --out (a folder)
    "data split": layout.SPLIT_FILES,
    "train supernet": layout.TRAIN_FILES,
    "train classifier": layout.TRAIN_FILES,
    "train detector": layout.TRAIN_FILES,
    "search evolution": layout.SEARCH_FILES,
    "search random": layout.SEARCH_FILES,
    "nats search": (layout.ARCH,),
    "rank": layout.RANK_FILES,
    "report": (*layout.REPORT_FILES, f"{layout.FIGURES}/search.png"),
}


HISTORY = "order,generation,arch,fitness,backbone_flops\n0,0,0-00-00-0,0.1,1000\n"
RANK = json.dumps({"supernets": {init: {"kendall_tau": 0.2, "spearman_rho": 0.3}  # rank.json's
                                 for init in ("pretrained", "scratch")}})  # shape (search/rank.py)


def command_of(args) -> str:
    """The command words, e.g. ``train supernet`` (the group's subcommand dest is
    ``<group>_command``; search's is ``search_command``)."""
    group = args.command.replace("-", "_")
    sub = getattr(args, f"{group}_command", None)
    return f"{args.command} {sub}" if sub else args.command


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main(argv: list[str]) -> int:
    parser = build_parser()
    if argv[:1] == ["launch"]:  # `detnas launch ... -- COMMAND`: its process model must exist
        from detnas.run.launch import process_model

        parser.parse_args(argv)
        argv = argv[argv.index("--") + 1 :]
        process_model(argv)
    args = parser.parse_args(argv)  # exits 2 on a flag the CLI does not know
    command = command_of(args)
    if command == "warm serve":  # no warm server: each job runs this stub
        return 0
    for name in PATH_ARGS:
        value = getattr(args, name, None)
        if command == "arch spec" and name == "arch":  # a baseline's name there
            continue
        if value is not None and not Path(value).exists():
            print(f"stub detnas: --{name.replace('_', '-')} {value} does not exist",
                  file=sys.stderr)
            return 2
    cfg = yaml.safe_load(Path(args.config).read_text())
    out = getattr(args, "out", None)
    if log := os.environ.get("STUB_LOG"):
        with open(log, "a") as f:
            f.write(f"{command} {out or getattr(args, 'status', '')}\n")
    results = Path(cfg.get("results", "results"))
    metrics = json.dumps({"mmap": 0.1, "ap50": 0.2, "top1": 0.3, "top5": 0.6, "arch": "0-00-00-0"})
    if command.startswith("tracking") and os.environ.get("STUB_TRACKING"):
        from detnas.cli import main as real

        return real(argv)
    if command == "tracking init":
        write(results / layout.TRACKING, json.dumps({"parent_run_id": "stub"}))
    elif command == "tracking finish":
        pass
    elif command == "data synth-detection":
        d = cfg["datasets"][args.dataset]
        for images, annotations in ((d["train_images"], d["train_annotations"]),
                                    (d["test_images"], d["test_annotations"])):
            write(Path(d["root"]) / images / "0.png", "image")
            write(Path(d["root"]) / annotations, "{}")
    elif command == "data synth-classification":
        root = Path(cfg["classification"]["root"])
        for split in ("train", "val"):
            write(root / split / "class0" / "0.png", "image")
    elif command in ("latency-table", "arch spec"):
        write(Path(out), json.dumps({"arch": getattr(args, "arch", "")}))
    elif command in OUTPUTS:
        files = OUTPUTS[command]
        fail = os.environ.get("STUB_FAIL")
        if fail and fail in str(out):
            print(f"stub detnas: failing {out} (STUB_FAIL)", file=sys.stderr)
            return 1
        hang = os.environ.get("STUB_HANG")
        if hang and str(out).endswith(hang):
            write(Path(out) / files[0], "partial")
            Path(os.environ["STUB_HANG_FLAG"]).touch()
            time.sleep(600)
        for name in files:
            write(Path(out) / name, RANK if name == layout.RANK else
                  metrics if name.endswith(".json") else HISTORY)
    else:
        print(f"stub detnas: no outputs known for {command!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
