"""``detnas init``: a study config for your own COCO-format detection data, the data checked
(`detnas.plan.own_data`)."""

from __future__ import annotations

import sys
from pathlib import Path

DESCRIPTION = """\
Check a COCO-format detection dataset (an annotation file and its image folder; a test split
given, or a fifth held out) and write a study config for it: the classes counted, the search
split held out of train, the space and the schedules scaled to the dataset's size and the GPUs a
job has, each decision said in the config's comments and printed. Each problem of the data is
one line naming the file and the item; an error (a warning too, with --strict) stops it with
exit status 2 and writes nothing. The config is checked as `snakemake -n --configfile` checks
it. Run from the repository's folder: the config builds on config/coco.yaml (full scale) or
config/test.yaml (toy scale). Walk-through: docs/own-data.md."""


def register(sub) -> None:
    p = sub.add_parser("init", help="write and check a study config for your COCO-format data",
                       description=DESCRIPTION)
    p.add_argument("--train-annotations", required=True, type=Path, metavar="FILE",
                   help="COCO annotation file of the training images (file_name relative to "
                        "--train-images)")
    p.add_argument("--train-images", required=True, type=Path, metavar="DIR",
                   help="folder of the training images")
    p.add_argument("--test-annotations", type=Path, metavar="FILE",
                   help="COCO annotation file of the test images (final evaluation only; same "
                        "categories). Default: a fifth of the training file's images (at most "
                        "5000) held out, written beside it (or in --split-dir)")
    p.add_argument("--test-images", type=Path, metavar="DIR",
                   help="folder of the test images (default: --train-images)")
    p.add_argument("--classification", type=Path, metavar="DIR",
                   help="an ImageFolder classification set for the pre-training (DIR/train/"
                        "<class>/*, DIR/val/<class>/*). Default: the embedded default's "
                        "synthetic stand-in, a check of the pipeline")
    p.add_argument("--gpus", type=int, default=1, metavar="N",
                   help="GPUs a training job has (default 1): the batches are N x the paper's "
                        "images per GPU, the learning rates scaled with them; 0: CPU (toy "
                        "scale only)")
    p.add_argument("--scale", choices=("full", "toy"), default="full",
                   help="full (default): the paper's recipe (config/coco.yaml) scaled to the "
                        "data and GPUs; toy: config/test.yaml's scale, every stage on your "
                        "files in minutes, a check before the GPU-days")
    p.add_argument("--name", help="the dataset's name in the config (default: from the image "
                                  "folder's path)")
    p.add_argument("--out", type=Path, metavar="FILE",
                   help="the config to write (default: config/NAME.yaml)")
    p.add_argument("--split-dir", type=Path, metavar="DIR",
                   help="where a held-out test split's two annotation files go (default: "
                        "beside the training file)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="set a config field in the written config, e.g. --set "
                        "supernet_finetune.steps=20 (repeatable; checked like the rest)")
    p.add_argument("--quick", action="store_true",
                   help="read the images' headers only (sizes), do not decode them whole")
    p.add_argument("--strict", action="store_true", help="a warning stops it too")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(func=_init)


def _value(value) -> str:
    if isinstance(value, dict) and "steps" in value:
        return f"{value['steps']} steps of {value['batch_size']}, lr {value['lr']:g}"
    if isinstance(value, dict):
        return "(section)"
    return str(value)


def _init(args) -> int:
    import shlex

    from detnas.plan import own_data

    name = args.name or own_data.default_name(args.train_images)
    request = own_data.Request(
        train_annotations=args.train_annotations, train_images=args.train_images,
        out=args.out or Path("config") / f"{name}.yaml", name=name,
        test_annotations=args.test_annotations, test_images=args.test_images,
        classification=args.classification, gpus=args.gpus, scale=args.scale,
        split_dir=args.split_dir, overrides=args.overrides, quick=args.quick,
        strict=args.strict, force=args.force,
        command="detnas init " + " ".join(map(shlex.quote, sys.argv[1:][1:]))
        if sys.argv[1:2] == ["init"] else "")
    try:
        outcome = own_data.init(request)
    except own_data.DataError as e:
        for line in e.outcome.problems:
            print(line, file=sys.stderr)
        raise
    for line in outcome.problems:
        print(line, file=sys.stderr)
    print(f"detnas init: dataset {name}")
    for line in outcome.summary:
        print(f"  {line}")
    print("decided (the config's comments say the same):")
    for key, why in outcome.decisions.items():
        try:
            value = own_data.Settings(outcome.settings).get(key)
        except KeyError:
            value = None
        shown = f" = {_value(value)}" if value is not None and not why.startswith("--set") else ""
        print(f"  {key}{shown}: {why}")
    for path in outcome.written:
        print(f"wrote {path}")
    print("next:")
    for line in outcome.next_steps:
        print(f"  {line}")
    return 0
