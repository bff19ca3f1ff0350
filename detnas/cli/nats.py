"""``detnas nats``: the NATS dilation search of a pretrained ResNet, and its derivation."""

from __future__ import annotations

from detnas.cli.common import add_config_args, load_config, print_json
from detnas.plan.config import DETECTORS


def register(sub) -> None:
    p = sub.add_parser("nats", help="NATS: channel-level dilation search of a pretrained ResNet")
    cmds = p.add_subparsers(dest="nats_command", required=True, metavar="NATS_COMMAND")

    s = cmds.add_parser("search", help="search dilations; writes search.pt, alphas.json, "
                        "metrics.json, arch.json (resumes from search.pt)")
    add_config_args(s)
    s.add_argument("--pretrained", required=True, metavar="FILE",
                   help="classification checkpoint of the pipeline, or a torchvision ResNet "
                   "state dict")
    s.add_argument("--weights-annotations", required=True, metavar="JSON",
                   help="COCO annotations of the weights split (with nats.arch_images: of the "
                   "whole training set, split here)")
    s.add_argument("--arch-annotations", default=None, metavar="JSON",
                   help="COCO annotations of the architecture split (unless nats.arch_images)")
    s.add_argument("--images", required=True, metavar="DIR", help="images of the weights split")
    s.add_argument("--arch-images", default=None, metavar="DIR",
                   help="images of the architecture split (default: --images)")
    s.add_argument("--detector", required=True, choices=DETECTORS)
    s.add_argument("--dataset", default=None,
                   help="dataset name for tags (default: the config's first dataset)")
    s.add_argument("--out", required=True, metavar="DIR")
    s.set_defaults(func=_search)

    d = cmds.add_parser("derive", help="the derived architecture (arch.json) of a search.pt")
    d.add_argument("--search", required=True, metavar="CKPT", help="a search.pt")
    d.add_argument("--out", required=True, metavar="JSON", help="arch.json to write")
    d.set_defaults(func=_derive)


def _search(args) -> int:
    from detnas.data import CocoDetection
    from detnas.nats.search import search

    cfg = load_config(args)
    dataset = args.dataset or next(iter(cfg.datasets), "")
    flip = cfg.datasets[dataset].flip_prob if dataset in cfg.datasets else 0.0
    weights, arch = args.weights_annotations, args.arch_annotations
    if cfg.nats.arch_images:  # the paper's own split: the alphas' images held out here
        from pathlib import Path

        from detnas.data import make_search_split

        weights, arch = make_search_split(weights, cfg.nats.arch_images, cfg.seed,
                                          Path(args.out) / "arch_split")
    elif not arch:
        raise ValueError("--arch-annotations is required unless nats.arch_images is set")
    weights_data = CocoDetection(args.images, weights, flip_prob=flip)
    arch_data = CocoDetection(args.arch_images or args.images, arch, flip_prob=flip)
    metrics = search(cfg, weights_data, arch_data, args.detector, args.out,
                     pretrained=args.pretrained, dataset=dataset)
    if metrics:  # rank 0 (the other ranks of a multi-GPU search write nothing)
        print_json({k: v for k, v in metrics.items() if k != "history"})
    return 0


def _derive(args) -> int:
    from detnas.io import save_json
    from detnas.nats.derive import arch_tag, derive_checkpoint

    spec = derive_checkpoint(args.search)
    save_json(args.out, spec)
    print(arch_tag(spec["dilations"]))
    return 0
