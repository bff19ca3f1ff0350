"""Does a study agree with another run of it (another machine, another instruction set)?

    python scripts/compare_results.py docs/results/tables.json results/report/tables.json

Reads two reports' ``tables.json`` and checks what the README promises of a rerun elsewhere:

- every detection figure of one lies inside the other's 95% bootstrap interval over the test
  images, both ways;
- every top-1 within 3 points;
- every difference between rows that one report finds outside the noise of the test split, the
  other finds outside it too, with the same sign.

Prints one line per check and a verdict; exits 1 when they disagree (0 when bit-identical or in
agreement). Architectures may differ (a search's ties are decided by the last bits); the
figures of the rows must still agree.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

TOP1_POINTS = 3.0
DIFFERENCE = re.compile(r"^(?P<where>[^:]+): (?P<a>.+?) (?P<diff>[+-][\d.]+) \S+ over "
                        r"(?P<b>[^;]+); (?P<verdict>within|outside) the noise of the test split")


def _figures(tables: dict) -> dict[tuple, dict]:
    out = {}
    for ds, table in tables["tables"].items():
        for row in table["rows"]:
            for det in table["detectors"]:
                if row["map"].get(det) is not None:
                    out[(ds, row["row"], det)] = {
                        "map": row["map"][det], "interval": row["map_interval"].get(det),
                        "top1": row["top1"].get(det), "arch": row["arch"].get(det)}
    return out


def _differences(tables: dict) -> dict[tuple, tuple[str, float]]:
    out = {}
    for note in tables["observations"]:
        m = DIFFERENCE.match(note)
        if m:
            out[(m["where"], m["a"], m["b"])] = (m["verdict"], float(m["diff"]))
    return out


def compare(a: dict, b: dict) -> list[tuple[bool, str]]:
    """``(agrees, line)`` per check of ``b`` against ``a``."""
    checks = []
    fa, fb = _figures(a), _figures(b)
    for key in sorted(fa.keys() | fb.keys()):
        name = " / ".join(key)
        if key not in fa or key not in fb:
            checks.append((False, f"{name}: only in one of the two"))
            continue
        x, y = fa[key], fb[key]
        inside = all(iv is not None and iv[0] <= v <= iv[1]
                     for v, iv in ((x["map"], y["interval"]), (y["map"], x["interval"])))
        archs = "same network" if x["arch"] == y["arch"] else f"{x['arch']} / {y['arch']}"
        checks.append((inside, f"{name}: {100 * x['map']:.1f} "
                               f"[{100 * x['interval'][0]:.1f}, {100 * x['interval'][1]:.1f}] "
                               f"against {100 * y['map']:.1f} [{100 * y['interval'][0]:.1f}, "
                               f"{100 * y['interval'][1]:.1f}] ({archs})"))
        if x["top1"] is not None and y["top1"] is not None:
            gap = 100 * abs(x["top1"] - y["top1"])
            checks.append((gap <= TOP1_POINTS, f"{name}: top-1 {100 * x['top1']:.1f} against "
                                               f"{100 * y['top1']:.1f}"))
    da, db = _differences(a), _differences(b)
    for key in sorted(da.keys() | db.keys()):
        va, vb = da.get(key), db.get(key)
        outside = [v for v in (va, vb) if v and v[0] == "outside"]
        if not outside:
            continue
        agree = (va is not None and vb is not None and va[0] == vb[0] == "outside"
                 and (va[1] > 0) == (vb[1] > 0))
        show = [f"{v[1]:+.1f} {v[0]}" if v else "not tested" for v in (va, vb)]
        checks.append((agree, f"{key[0]}: {key[1]} over {key[2]}: {show[0]} the noise against "
                              f"{show[1]}"))
    return checks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("reference", type=Path, help="tables.json of one run (e.g. the README's)")
    p.add_argument("other", type=Path, help="tables.json of the run to compare")
    args = p.parse_args(argv)
    a, b = (json.loads(path.read_text()) for path in (args.reference, args.other))
    if a["tables"] == b["tables"] and a["observations"] == b["observations"]:
        print("bit-identical tables and observations")
        return 0
    checks = compare(a, b)
    for ok, line in checks:
        print(("agrees   " if ok else "DIFFERS  ") + line)
    bad = sum(not ok for ok, _ in checks)
    print(f"{len(checks) - bad} of {len(checks)} checks agree" + (
        "" if not bad else f"; {bad} differ"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
