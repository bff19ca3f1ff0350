"""``detnas rank``: the ranking check of the supernets of one dataset and detector."""

from __future__ import annotations

from pathlib import Path

from detnas.cli.common import add_config_args, load_config, print_json
from detnas.plan import study
from detnas.plan.config import DETECTORS


def register(sub) -> None:
    p = sub.add_parser(
        "rank", help="does the supernet rank architectures as standalone training does?",
        description="Train rank.archs architectures (spread over the search's FLOPs range) "
                    "alone on the supernet's training split, score them on the search split, and "
                    "correlate with their fitness on each supernet (Kendall's tau, Spearman's "
                    "rho). Writes OUT/rank.json; finished standalone runs are kept.")
    add_config_args(p)
    p.add_argument("--dataset", required=True, help="detection dataset name in the config")
    p.add_argument("--detector", choices=DETECTORS, required=True)
    for init in study.DETECTION_SUPERNETS:
        rows = ", ".join(r.name for r in study.ROWS if r.supernet == init)
        p.add_argument(f"--{init}", type=Path, metavar="CKPT",
                       help=f"the {init} detection supernet's checkpoint (rows {rows})")
    p.add_argument("--images", type=Path, required=True, help="image folder of both splits")
    p.add_argument("--annotations", type=Path, required=True,
                   help="the supernet's training split (standalone training, BN recalibration)")
    p.add_argument("--search", type=Path, required=True, help="the search split (scores)")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_rank)


def _rank(args) -> int:
    from detnas.search.rank import rank_stage

    cfg = load_config(args)
    supernets = {init: getattr(args, init) for init in study.DETECTION_SUPERNETS
                 if getattr(args, init) is not None}
    if not supernets:
        given = " and/or ".join(f"--{init}" for init in study.DETECTION_SUPERNETS)
        raise ValueError(f"detnas rank: give {given} supernet checkpoints")
    result = rank_stage(cfg, args.dataset, args.detector, supernets, args.images,
                        args.annotations, args.search, args.out)
    print_json({init: {k: s[k] for k in ("kendall_tau", "spearman_rho")}
                for init, s in result["supernets"].items()})
    return 0
