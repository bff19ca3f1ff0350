"""Are two runs of a study the same, bit for bit? (e.g. before and after a refactor, same machine)

    python scripts/ci/same_results.py RESULTS_A RESULTS_B [--names metrics.json arch.json ...]
        [--across-commits]

Compares every file of the given names (default: metrics.json, arch.json, history.csv,
tables.json) under two results folders (not MLflow's copies). Each is ``identical`` (the same
bytes), ``same numbers`` (the same once what differs from one run to the next on the same
machine and code is left out: `VOLATILE`, the keys of the measured cost and time and of what
names a run; with ``--across-commits`` also `COMMIT`, what names the code's commit), or
``DIFFERENT``, with the JSON paths that differ; a file that only one folder has is named too.
Exits 1 when a file is different or missing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

NAMES = ("metrics.json", "arch.json", "history.csv", "tables.json")
VOLATILE = {
    "cost",  # the stage's measured wall time, CPU time and memory (detnas.cost)
    "wall_s", "cpu_s", "gpu_hours", "cpu_hours", "peak_rss_mb",  # the report's cost tables
    "search_seconds", "elapsed_s",  # NATS's and a search's wall time
    "candidates_per_min",  # a search's speed
    "fingerprint",  # the digest of the inputs: a folder's by its files' modification times
    "mlflow_run_id",  # the run in the tracking store
}
"""Keys whose values differ between two runs of the same code on the same machine."""
COMMIT = {
    "git_commit", "report_git_commit", "input_git_commits",  # the code's commit
    "sha256",  # an input checkpoint's digest: its provenance holds the commit that wrote it
}
"""Keys that differ between two commits of the same behaviour (``--across-commits``: before
and after a refactor)."""


def _differences(a, b, path: str = "") -> list[str]:
    """The JSON paths where ``a`` and ``b`` differ (all of them, VOLATILE ones included)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in list(a) + [k for k in b if k not in a]:
            if key not in a or key not in b:
                out.append(f"{path}.{key} (only in one)")
            else:
                out += _differences(a[key], b[key], f"{path}.{key}")
        if set(a) == set(b) and list(a) != list(b):
            out.append(f"{path} (key order)")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True))
                for d in _differences(x, y, f"{path}[{i}]")]
    return [] if a == b and type(a) is type(b) else [path or "."]


def _volatile(path: str, keys: set[str]) -> bool:
    return any(part.split("[")[0].split(" ")[0] in keys for part in path.split(".")[1:])


def compare(a: Path, b: Path, names: tuple[str, ...] = NAMES,
            across_commits: bool = False) -> tuple[dict[str, list], bool]:
    """``{verdict: [(relative path, detail)]}`` and whether the two folders agree;
    ``across_commits``: the `COMMIT` keys left out too."""
    volatile = VOLATILE | COMMIT if across_commits else VOLATILE
    def files(root: Path) -> set[str]:
        return {p.relative_to(root).as_posix() for name in names for p in root.rglob(name)
                if "mlartifacts" not in p.relative_to(root).parts}

    found_a, found_b = files(a), files(b)
    verdicts: dict[str, list] = {"identical": [], "same numbers": [], "DIFFERENT": [],
                                 "MISSING": []}
    for rel in sorted(found_a ^ found_b):
        verdicts["MISSING"].append((rel, "only in " + (str(a) if rel in found_a else str(b))))
    for rel in sorted(found_a & found_b):
        x, y = (a / rel).read_bytes(), (b / rel).read_bytes()
        if x == y:
            verdicts["identical"].append((rel, ""))
            continue
        if not rel.endswith(".json"):
            verdicts["DIFFERENT"].append((rel, "bytes"))
            continue
        diffs = _differences(json.loads(x), json.loads(y))
        real = [d for d in diffs if not _volatile(d, volatile)]
        verdict = "DIFFERENT" if real else "same numbers"
        shown = real or sorted({d.split("[")[0] for d in diffs})
        verdicts[verdict].append((rel, ", ".join(shown[:8]) + (" ..." if len(shown) > 8 else "")))
    return verdicts, not verdicts["DIFFERENT"] and not verdicts["MISSING"]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--names", nargs="+", default=list(NAMES))
    parser.add_argument("--across-commits", action="store_true",
                        help="the runs are of two commits: leave out the commit and what holds it")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every file")
    args = parser.parse_args(argv)
    verdicts, agree = compare(args.a, args.b, tuple(args.names), args.across_commits)
    for verdict, items in verdicts.items():
        print(f"{verdict}: {len(items)}")
        if args.verbose or verdict != "identical":
            for rel, detail in items:
                print(f"  {rel}" + (f": {detail}" if detail else ""))
    print("the two runs agree" if agree else "the two runs differ")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
