"""A stand-in for the `detnas` CLI that writes each command's contract outputs in milliseconds.

The DAG tests run the real Snakefile with this script first on PATH (as `detnas`), so they check
the wiring (every path a rule passes exists, every declared output is written) and Snakemake's
rerun behaviour without training anything. Environment:
    STUB_LOG     append one line per call: the command words and --out (or --status)
    STUB_HANG    the end of an --out: write the first output, touch STUB_HANG_FLAG, sleep
    STUB_FAIL    a substring of --out: exit 1 without writing
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import yaml

PATH_OPTIONS = ("--supernet", "--data", "--images", "--recalib-annotations", "--recalib-images",
                "--recalib-data", "--arch", "--init", "--annotations", "--pretrained",
                "--weights-annotations", "--arch-annotations", "--config", "--scratch",
                "--search")

OUTPUTS = {  # command -> files written under --out (a folder), per the CLI contract
    "data split": ["instances_supernet.json", "instances_search.json"],
    "train supernet": ["checkpoint.pt", "metrics.json"],
    "train classifier": ["checkpoint.pt", "metrics.json"],
    "train detector": ["checkpoint.pt", "metrics.json"],
    "search evolution": ["arch.json", "history.csv", "metrics.json"],
    "search random": ["arch.json", "history.csv", "metrics.json"],
    "nats search": ["arch.json"],
    "rank": ["rank.json"],
    "report": ["report.md", "report.html", "tables.json", "figures/search.png"],
}


HISTORY = "order,generation,arch,fitness,backbone_flops\n0,0,0-00-00-0,0.1,1000\n"


def parse(argv: list[str]) -> tuple[str, list[str], dict[str, str]]:
    words, opts, i = [], {}, 0
    while i < len(argv) and not argv[i].startswith("--"):
        words.append(argv[i])
        i += 1
    while i < len(argv):
        opts[argv[i]] = argv[i + 1] if i + 1 < len(argv) else ""
        i += 2
    return " ".join(words[:2]), words[2:], opts


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main(argv: list[str]) -> int:
    if argv[:1] == ["launch"]:  # `detnas launch ... -- COMMAND`: its process model must exist
        from detnas.launch import process_model

        argv = argv[argv.index("--") + 1 :]
        process_model(argv)
    command, rest, opts = parse(argv)
    for opt in PATH_OPTIONS:
        if opt in opts and not Path(opts[opt]).exists():
            print(f"stub detnas: {opt} {opts[opt]} does not exist", file=sys.stderr)
            return 2
    cfg = yaml.safe_load(Path(opts["--config"]).read_text())
    if log := os.environ.get("STUB_LOG"):
        with open(log, "a") as f:
            f.write(f"{command} {opts.get('--out', opts.get('--status', ''))}\n")
    results = Path(cfg.get("results", "results"))
    metrics = json.dumps({"mmap": 0.1, "ap50": 0.2, "top1": 0.3, "top5": 0.6, "arch": "0-00-00-0"})
    if command == "tracking init":
        write(results / "tracking.json", json.dumps({"parent_run_id": "stub"}))
    elif command == "tracking finish":
        pass
    elif command == "data synth-detection":
        root = Path(cfg["datasets"][opts["--dataset"]]["root"])
        for split in ("train", "test"):
            write(root / split / "0.png", "image")
            write(root / "annotations" / f"instances_{split}.json", "{}")
    elif command == "data synth-classification":
        root = Path(cfg["classification"]["root"])
        for split in ("train", "val"):
            write(root / split / "class0" / "0.png", "image")
    elif command == "latency-table":
        write(Path(opts["--out"]), "{}")
    elif command == "arch spec":
        write(Path(opts["--out"]), json.dumps({"arch": rest[0]}))
    elif command in OUTPUTS:
        out = Path(opts["--out"])
        files = OUTPUTS[command]
        fail = os.environ.get("STUB_FAIL")
        if fail and fail in str(out):
            print(f"stub detnas: failing {out} (STUB_FAIL)", file=sys.stderr)
            return 1
        hang = os.environ.get("STUB_HANG")
        if hang and str(out).endswith(hang):
            write(out / files[0], "partial")
            Path(os.environ["STUB_HANG_FLAG"]).touch()
            time.sleep(600)
        for name in files:
            write(out / name, metrics if name.endswith(".json") else HISTORY)
    else:
        print(f"stub detnas: unknown command {command!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
