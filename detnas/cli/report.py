"""``detnas report``: the results tables, search curves and architecture figures."""

from __future__ import annotations

from pathlib import Path

from detnas.cli.common import add_config_args, load_config
from detnas.plan import layout


def register(sub) -> None:
    p = sub.add_parser("report", help="tables, curves and figures of a results folder")
    add_config_args(p)
    p.add_argument("--results", type=Path, default=None,
                   help="results folder to read (default: the config's `results`)")
    p.add_argument("--out", type=Path, required=True,
                   help="folder for report.md, report.html, tables.json and figures/")
    p.set_defaults(func=_report)


def _report(args) -> int:
    from detnas.report import build_report
    from detnas.run import tracking

    cfg = load_config(args)
    results = args.results or Path(cfg.results)
    data = build_report(cfg, results, args.out)
    print(f"report: {args.out / layout.REPORT_HTML} ({len(data['missing'])} missing inputs)")
    if cfg.tracking.enabled:  # the headline, with its seeds and intervals, on the parent run
        logged = tracking.log_headline(cfg.results, data["headline"])
        if logged:
            print(f"report: {logged} headline metrics logged on the study's MLflow parent run")
    return 0
