"""``detnas train``: supernet pre-training and fine-tuning, retraining of fixed architectures.

Runs as one process, or under ``torchrun --nproc_per_node N -m detnas train ...`` on N GPUs.
"""

from __future__ import annotations

from pathlib import Path

from detnas.cli.common import add_config_args, load_config, load_spec
from detnas.plan.config import DETECTORS, dataset_of


def register(sub) -> None:
    p = sub.add_parser("train", help="train supernets and fixed architectures")
    cmds = p.add_subparsers(dest="train_command", required=True, metavar="TRAIN_COMMAND")

    sn = cmds.add_parser("supernet", help="path-wise supernet training (one path per step)")
    add_config_args(sn)
    sn.add_argument("--task", choices=("classification", "detection"), required=True)
    sn.add_argument("--dataset", help="detection: dataset name in the config")
    sn.add_argument("--detector", choices=DETECTORS)
    sn.add_argument("--images", type=Path, help="detection: image folder")
    sn.add_argument("--annotations", type=Path, help="detection: the supernet-training split")
    sn.add_argument("--init", type=Path, help="detection: classification supernet checkpoint "
                    "(omit for the DetNAS-scratch ablation)")
    sn.add_argument("--out", type=Path, required=True)
    sn.set_defaults(func=_supernet)

    cl = cmds.add_parser("classifier", help="classification pre-training of a fixed arch")
    add_config_args(cl)
    cl.add_argument("--arch", required=True, help="arch.json, or a registered arch name")
    cl.add_argument("--ablation", default="", help="the row of the results this run belongs to")
    cl.add_argument("--out", type=Path, required=True)
    cl.set_defaults(func=_classifier)

    de = cmds.add_parser("detector", help="detector training of a fixed arch, test evaluation")
    add_config_args(de)
    de.add_argument("--arch", required=True, help="arch.json, or a registered arch name")
    de.add_argument("--ablation", default="")
    de.add_argument("--dataset", required=True)
    de.add_argument("--detector", choices=DETECTORS, required=True)
    de.add_argument("--init", type=Path, help="classification checkpoint of the same arch")
    de.add_argument("--out", type=Path, required=True)
    de.set_defaults(func=_detector)


def _require(args, *names) -> None:
    missing = [f"--{n}" for n in names if getattr(args, n) is None]
    if missing:
        raise ValueError(f"train supernet --task {args.task} needs {', '.join(missing)}")


def _supernet(args) -> int:
    from detnas.run import train

    cfg = load_config(args)
    if args.task == "classification":
        train.supernet_classification(cfg, args.out)
    else:
        _require(args, "dataset", "detector", "images", "annotations")
        dataset_of(cfg, args.dataset)
        train.supernet_detection(cfg, args.dataset, args.detector, args.images,
                                 args.annotations, args.init, args.out)
    return 0


def _classifier(args) -> int:
    from detnas.run import train

    cfg = load_config(args)
    train.train_classifier(cfg, load_spec(args.arch, cfg), args.ablation, args.out)
    return 0


def _detector(args) -> int:
    from detnas.run import train

    cfg = load_config(args)
    dataset_of(cfg, args.dataset)
    train.train_detector(cfg, load_spec(args.arch, cfg), args.ablation, args.dataset,
                         args.detector, args.init, args.out)
    return 0
