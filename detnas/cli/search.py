"""``detnas search``: evolutionary or random search on a trained supernet (resumable)."""

from __future__ import annotations

import argparse
import dataclasses

from detnas.cli.common import add_config_args, load_config, print_json
from detnas.plan import study
from detnas.plan.config import DETECTORS, clsnas_search, dataset_of, with_overrides

_EPILOG = """\
detection fitness (DetNAS; mmAP, or the dataset's metric, on the held-out search split):
  --data ANN_JSON --images DIR                           the search split
  --recalib-annotations ANN_JSON --recalib-image-dir DIR  the supernet-training split
      (BN recalibration)
classification fitness (ClsNASNet ablation; top-1):
  --data TRAIN_DIR --recalib-data TRAIN_DIR              ImageFolder train split: its
      classification.search_images held-out images score, the rest recalibrates BN
      (classification.search_images: 0 reads --data whole, e.g. a separate val split)

Settings come from the config's `search` section (the classification fitness: its
`clsnas_search` section when set), with the overrides of the --ablation's row of the study
(detnas/plan/study.py, the config's `ablations`) (population, generations, max_flops,
max_params, max_latency (needs the latency table, `detnas latency-table`), objective, workers,
recalib_images (a count), ...); override with --set search.KEY=VALUE. Both strategies evaluate
population * generations candidates. An existing OUT/state.json is resumed.
"""


def register(sub) -> None:
    p = sub.add_parser("search", help="search a supernet: evolution, random")
    cmds = p.add_subparsers(dest="search_command", required=True, metavar="STRATEGY")
    for strategy, text in (("evolution", "evolutionary search under the cost limits"),
                           ("random", "random search with the evolution's evaluation budget")):
        c = cmds.add_parser(strategy, help=text, description=text, epilog=_EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        add_config_args(c)
        c.add_argument("--supernet", required=True, metavar="CKPT",
                       help="supernet model checkpoint (detection or classification)")
        c.add_argument("--fitness", choices=("detection", "classification"),
                       default="detection", help="what a candidate is scored on")
        c.add_argument("--data", required=True, metavar="PATH",
                       help="detection: search-split annotation JSON; "
                            "classification: ImageFolder train dir (held-out part)")
        c.add_argument("--images", metavar="DIR", help="detection: search-split image folder")
        c.add_argument("--recalib-annotations", metavar="ANN_JSON",
                       help="detection: annotations of the training split for BN recalibration")
        c.add_argument("--recalib-image-dir", metavar="DIR",
                       help="detection: image folder of the training split")
        c.add_argument("--recalib-data", metavar="DIR",
                       help="classification: ImageFolder train dir for BN recalibration")
        c.add_argument("--out", required=True, metavar="DIR", help="output folder")
        c.add_argument("--ablation", default=None,
                       help="the row of the study searched: its tag, and its settings "
                            f"(default: {_default_row('detection')}, or "
                            f"{_default_row('classification')} for classification)")
        c.add_argument("--dataset", default=None,
                       help="detection dataset name in the config (metric, tags); default: first")
        c.add_argument("--detector", default=None, choices=DETECTORS,
                       help="expected detector of the checkpoint (checked), for tags")
        c.add_argument("--workers", type=int, default=None, metavar="K",
                       help="evaluation processes, worker i on cuda:i (`detnas launch --gpus K` "
                            "sets it); default: config search.workers, 0 = one per visible GPU")
        c.set_defaults(func=_run, strategy=strategy)


def _default_row(fitness: str) -> str:
    """The paper's first row searched with ``fitness`` (DetNAS, ClsNASNet)."""
    return next(r.name for r in study.ROWS if r.fitness == fitness)


def _searched_row(cfg, name: str, fitness: str) -> study.Row:
    """The row ``name`` of the study (its tag, its settings), searched with ``fitness``.

    Raises:
        ValueError: no such row: naming those searched with ``fitness``.
    """
    rows = [r for r in study.rows(cfg) if r.fitness == fitness]
    found = next((r for r in rows if r.name == name), None)
    if found is None:
        raise ValueError(f"--ablation {name!r}: not a row of the study searched with {fitness} "
                         f"fitness (known: {', '.join(r.name for r in rows)})")
    return found


def _need(args, *names: str) -> None:
    for name in names:
        if not getattr(args, name):
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} is required with --fitness {args.fitness}")


def _run(args) -> int:
    from detnas.search.fitness import fitness_spec
    from detnas.search.stage import search_stage

    cfg = load_config(args)
    ablation = args.ablation or _default_row(args.fitness)
    row = _searched_row(cfg, ablation, args.fitness)
    if row.overrides:  # the row's own search settings
        cfg = with_overrides(cfg, dict(row.overrides), f"ablations.{row.name}.overrides")
    if args.fitness == "classification":  # ClsNASNet: its own settings, one per study
        cfg = dataclasses.replace(cfg, search=clsnas_search(cfg))
    dataset = args.dataset or next(iter(cfg.datasets))
    if args.fitness == "detection":
        dataset_of(cfg, dataset)
        _need(args, "images", "recalib_annotations", "recalib_image_dir")
        recalib_data = args.recalib_annotations
    else:
        _need(args, "recalib_data")
        recalib_data = args.recalib_data
    spec = fitness_spec(cfg, args.fitness, args.supernet, args.data, recalib_data,
                        dataset=dataset, images=args.images or "",
                        recalib_image_dir=args.recalib_image_dir or "", detector=args.detector)
    metrics = search_stage(cfg, args.strategy, args.out, spec=spec, ablation=ablation,
                           dataset=dataset if args.fitness == "detection" else "imagenet",
                           detector=args.detector or "", workers=args.workers)
    print_json(metrics)
    return 0
