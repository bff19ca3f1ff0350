"""``detnas data``: generate the synthetic sets, split, convert VOC, check a dataset."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from detnas.cli.common import add_config_args, load_config
from detnas.plan import config


def register(sub) -> None:
    p = sub.add_parser("data", help="datasets: synthesise, split, convert VOC, check")
    cmds = p.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")

    sd = cmds.add_parser("synth-detection", help="write a synthetic detection set to its root")
    add_config_args(sd)
    sd.add_argument("--dataset", required=True, help="a name under the config's datasets")
    sd.set_defaults(func=_synth_detection)

    sc = cmds.add_parser("synth-classification", help="write the synthetic classification set")
    add_config_args(sc)
    sc.set_defaults(func=_synth_classification)

    sp = cmds.add_parser("split", help="supernet-training / search-validation split of train")
    add_config_args(sp)
    sp.add_argument("--dataset", required=True)
    sp.add_argument("--out", required=True, help="folder of the two annotation files")
    sp.set_defaults(func=_split)

    cv = cmds.add_parser("convert-voc", help="Pascal VOC image sets to one COCO JSON")
    cv.add_argument("--voc-root", required=True, help="the VOCdevkit folder")
    cv.add_argument("--years", nargs="+", default=["2007", "2012"])
    cv.add_argument("--sets", nargs="+", default=["trainval"], help="e.g. trainval, or test")
    cv.add_argument("--out", required=True, help="the JSON file to write")
    cv.set_defaults(func=_convert_voc)

    ck = cmds.add_parser("check", help="validate a dataset (decoding every image) and count it")
    add_config_args(ck)
    which = ck.add_mutually_exclusive_group(required=True)
    which.add_argument("--dataset", help="a detection dataset of the config")
    which.add_argument("--classification", action="store_true", help="the classification set")
    ck.add_argument("--quick", action="store_true", help="check files exist, do not decode")
    ck.set_defaults(func=_check)


def _dataset(cfg: config.StudyConfig, name: str, synthetic: bool = False) -> config.DatasetConfig:
    d = config.dataset_of(cfg, name)
    if not d.root:
        raise ValueError(f"datasets.{name}.root: empty; set it to the dataset folder")
    if synthetic and d.kind != "synthetic":
        raise ValueError(f"datasets.{name}.kind: {d.kind!r}; only synthetic sets are generated")
    return d


def _synth_detection(args) -> int:
    from detnas.data.synthetic import synthesize_detection

    cfg = load_config(args)
    d = _dataset(cfg, args.dataset, synthetic=True)
    synthesize_detection(d, cfg.seed)
    print(f"wrote {d.num_train} train and {d.num_test} test images to {d.root}")
    return 0


def _synth_classification(args) -> int:
    from detnas.data.synthetic import synthesize_classification

    cfg = load_config(args)
    c = cfg.classification
    if not c.root:
        raise ValueError("classification.root: empty; set it to the dataset folder")
    if c.kind != "synthetic":
        raise ValueError(f"classification.kind: {c.kind!r}; only synthetic sets are generated")
    synthesize_classification(c, cfg.seed)
    print(f"wrote {c.num_train} train and {c.num_val} val images of {c.num_classes} classes "
          f"to {c.root}")
    return 0


def _split(args) -> int:
    from detnas.data import make_search_split

    cfg = load_config(args)
    d = _dataset(cfg, args.dataset)
    paths = make_search_split(Path(d.root) / d.train_annotations, d.search_images, cfg.seed,
                              args.out)
    for p in paths:
        print(p)
    return 0


def _convert_voc(args) -> int:
    from detnas.data import convert_voc

    print(convert_voc(args.voc_root, args.years, args.sets, args.out))
    return 0


def _check(args) -> int:
    cfg = load_config(args)
    if args.classification:
        return _check_classification(cfg, args.quick)
    from detnas.data import CocoDetection

    d = _dataset(cfg, args.dataset)
    root = Path(d.root)
    if not root.is_dir():
        raise ValueError(f"{root}: dataset folder does not exist (datasets.{args.dataset}.root)")
    for split, images, labels_file in (("train", d.train_images, d.train_annotations),
                                       ("test", d.test_images, d.test_annotations)):
        ds = CocoDetection(root / images, root / labels_file, cache=not args.quick)
        labels = ds.label_counts()
        areas = Counter("small" if a["area"] < 32**2 else "medium" if a["area"] < 96**2 else "large"
                        for a in ds.coco.dataset["annotations"] if not a.get("iscrowd", 0))
        print(f"{split}: {len(ds)} images, {sum(labels.values())} boxes, {ds.num_classes} classes"
              f"{'' if args.quick else ', all images decoded'}")
        print("  objects by area: " + ", ".join(f"{k} {areas[k]}"
                                                for k in ("small", "medium", "large")))
        print("  objects by class: " + ", ".join(
            f"{ds.category_names[ds.label_to_category(lb)]} {labels[lb]}"
            for lb in range(1, ds.num_classes + 1)))
        for issue, n in sorted(ds.issues.items()):
            print(f"  {n} {issue}")
    return 0


def _check_classification(cfg: config.StudyConfig, quick: bool) -> int:
    from detnas.data import ImageFolderClassification

    c = cfg.classification
    if not c.root:
        raise ValueError("classification.root: empty; set it to the dataset folder")
    for split in ("train", "val"):
        ds = ImageFolderClassification(Path(c.root) / split, c.image_size, train=False,
                                       cache=not quick)
        counts = Counter(label for _, label in ds.samples)
        print(f"{split}: {len(ds)} images, {ds.num_classes} classes, "
              f"{min(counts.values())}..{max(counts.values())} images per class")
    return 0
