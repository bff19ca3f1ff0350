"""The learning curves of the embedded default's recipes (`docs/embedded_default.md`).

Two modes:

- ``--study FOLDER`` (a finished `make run`: its ``logs/`` and ``results/``): the training loss of
  every stage against its steps, from the logs, and each row's top-1 and AP50, from the
  metrics (``study.png``, ``study.json``). Free: it reads what the study wrote.
- ``--rank-sweep``: the ranking check's budget: the lightest and the heaviest of the check's
  architectures trained alone (Faster R-CNN + FPN from scratch, as the check trains them) with 3
  seeds each, for a range of step counts, scored on the test split: the span between the two
  architectures' mean AP50 against the seed spread (the mean |difference| of two seeds of one
  net), the check's bar being span > 2 x spread (``rank.png``, ``rank.json``). About 20 minutes
  on one core.
- ``--sweep``: runs the default's stages through the functions the CLI calls, on the default's
  own data, tracking off, one thread, for a range of step counts (each a whole schedule: warm-up
  and decay fitted to it): ShuffleNetV2's top-1 against steps; Faster R-CNN + FPN's AP50 against
  steps from the retrained classifier and from scratch; RetinaNet's with the GroupNorm head and
  with the reference's plain head (``curves.png``, ``numbers.json``). About 15 minutes on one
  core (``--quick``: two points per curve).

    python scripts/default_curves.py --study . [--out docs/embedded_default]
    python scripts/default_curves.py --sweep [--quick] [--out docs/embedded_default]
    python scripts/default_curves.py --rank-sweep [--out docs/embedded_default]

The figures are of the machine that ran them (the JSON records its numeric environment).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from detnas.data.synthetic import synthesize_classification, synthesize_detection  # noqa: E402
from detnas.plan import config
from detnas.provenance import numeric_environment, pin_cpu_isa  # noqa: E402
from detnas.run import train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CLS_STEPS = (100, 200, 300, 400)
FPN_STEPS = (100, 200, 300, 400)
RETINANET_STEPS = (200, 400, 800)
RANK_STEPS = (200, 400, 800)
RANK_SEEDS = (0, 1, 2)


class _Losses(logging.Handler):
    """Collects the training loop's ``step N/M loss L`` lines."""

    def __init__(self):
        super().__init__()
        self.points: list[tuple[int, float]] = []

    def emit(self, record):
        m = re.match(r"step (\d+)/\d+ loss ([\d.]+)", record.getMessage())
        if m:
            self.points.append((int(m[1]), float(m[2])))


def _study(root: Path) -> config.StudyConfig:
    cfg = config.load(REPO / "config" / "config.yaml", [
        f"results={root}", "device=cpu", "tracking.enabled=false",
        f"classification.root={root}/classification", f"datasets.synth.root={root}/synth",
    ])
    pin_cpu_isa(cfg.cpu_isa)
    synthesize_classification(cfg.classification, cfg.seed)
    synthesize_detection(cfg.datasets["synth"], cfg.seed)
    return cfg


def _timed(fn, *args, **kwargs) -> tuple[dict, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def classification_curve(cfg, root: Path, steps: tuple[int, ...], losses: _Losses) -> dict:
    spec = train.baseline_spec(cfg, "shufflenetv2")
    curve = {"steps": [], "top1": [], "seconds": []}
    for n in steps:
        run = dataclasses.replace(cfg, retrain_pretrain=dataclasses.replace(
            cfg.retrain_pretrain, steps=n, log_every=10, checkpoint_every=n))
        losses.points.clear()
        metrics, seconds = _timed(train.train_classifier, run, spec, "curve", root / f"cls{n}")
        curve["steps"].append(n)
        curve["top1"].append(metrics["top1"])
        curve["seconds"].append(round(seconds, 1))
        if n == cfg.retrain_pretrain.steps:
            curve["loss"] = list(losses.points)
        print(f"classification {n} steps: top-1 {metrics['top1']:.3f} ({seconds:.0f} s)",
              flush=True)
    return curve


def detection_curve(cfg, root: Path, detector: str, steps: tuple[int, ...], init: Path | None,
                    name: str) -> dict:
    spec = train.baseline_spec(cfg, "shufflenetv2")
    curve = {"steps": [], "ap50": [], "seconds": []}
    for n in steps:
        tcfg = dataclasses.replace(cfg.retrain_finetune, steps=n, detector_steps={},
                                   checkpoint_every=n)
        metrics, seconds = _timed(train.train_detector, cfg, spec, "curve", "synth", detector,
                                  init, root / f"{detector}-{name}-{n}", tcfg=tcfg)
        curve["steps"].append(n)
        curve["ap50"].append(metrics["ap50"])
        curve["seconds"].append(round(seconds, 1))
        print(f"{detector} {name} {n} steps: AP50 {metrics['ap50']:.3f} ({seconds:.0f} s)",
              flush=True)
    return curve


def plot(numbers: dict, out: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    c = numbers["classification"]
    ax = axes[0]
    ax.plot(c["steps"], [100 * v for v in c["top1"]], "o-", label="top-1 (val)")
    ax.axhline(25, color="grey", ls=":", label="chance (4 classes)")
    ax.set(xlabel="steps (batch 32)", ylabel="%", title="ShuffleNetV2, classification",
           ylim=(0, 100))
    if c.get("loss"):
        twin = ax.twinx()
        twin.plot(*zip(*c["loss"], strict=True), color="tab:red", alpha=0.5, label="loss")
        twin.set_ylabel("training loss", color="tab:red")
    ax.legend(loc="lower right", fontsize=8)
    for ax, det, title in ((axes[1], "fpn", "Faster R-CNN + FPN"),
                           (axes[2], "retinanet", "RetinaNet")):
        for name, curve in numbers[det].items():
            ax.plot(curve["steps"], [100 * v for v in curve["ap50"]], "o-", label=name)
        ax.set(xlabel="steps (batch 4)", ylabel="AP50 on the test split, %", title=title,
               ylim=(0, 100))
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)


LOSS_LINE = re.compile(r"step (\d+)/\d+ loss ([\d.]+)")
PANELS = (("classification", ("supernet/cls.log", "retrain/*/cls.log", "retrain/*/*/*/cls.log")),
          ("Faster R-CNN + FPN", ("supernet/*/fpn/*.log", "retrain/*/*/fpn/det.log")),
          ("RetinaNet", ("supernet/*/retinanet/*.log", "retrain/*/*/retinanet/det.log")))


def study_curves(study: Path, out: Path) -> None:
    """The loss curves of a finished study's stages and its rows' figures."""
    numbers: dict = {}
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    for ax, (title, patterns) in zip(axes, PANELS, strict=False):
        numbers[title] = {}
        for pattern in patterns:
            for log in sorted((study / "logs").glob(pattern)):
                points = [(int(m[1]), float(m[2])) for m in LOSS_LINE.finditer(log.read_text())]
                name = str(log.relative_to(study / "logs").with_suffix(""))
                numbers[title][name] = points
                if points:
                    supernet = name.startswith("supernet")
                    ax.plot(*zip(*points, strict=True), lw=1.6 if supernet else 0.8,
                            alpha=0.9 if supernet else 0.5,
                            label=name if supernet else None)
        ax.set(title=f"{title}: training loss", xlabel="step", ylabel="loss")
        ax.legend(fontsize=6)
    rows = {}
    for path in sorted((study / "results" / "retrain").glob("*/**/metrics.json")):
        m = json.loads(path.read_text())
        rel = path.parent.relative_to(study / "results" / "retrain")
        for key in ("top1", "ap50"):
            if key in m:
                rows[f"{rel} {key}"] = m[key]
    numbers["figures"] = rows
    ax = axes[3]
    names = sorted(rows)
    ax.barh(range(len(names)), [100 * rows[n] for n in names],
            color=["tab:blue" if n.endswith("top1") else "tab:orange" for n in names])
    ax.set_yticks(range(len(names)), names, fontsize=6)
    ax.set(title="retrained rows: top-1 (blue), AP50 (orange)", xlabel="%", xlim=(0, 100))
    ax.axvline(25, color="grey", ls=":")
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "study.png", dpi=110)
    (out / "study.json").write_text(json.dumps(numbers) + "\n")
    print(f"wrote {out / 'study.png'} and {out / 'study.json'}")


def rank_sweep(out: Path) -> None:
    """The ranking check's standalone training against its budget: does a larger one separate
    the architectures by more than the seeds do?"""
    from detnas.data import make_search_split
    from detnas.nets.backbones import shufflenet_spec
    from detnas.search.evolution import search_limits
    from detnas.search.rank import spread_archs

    numbers: dict = {"steps": list(RANK_STEPS), "seeds": list(RANK_SEEDS), "archs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = _study(root)
        d = cfg.datasets["synth"]
        images = Path(d.root) / d.train_images
        supernet_split, _ = make_search_split(Path(d.root) / d.train_annotations,
                                              d.search_images, cfg.seed, root / "splits")
        test = (Path(d.root) / d.test_images, Path(d.root) / d.test_annotations)
        limits = search_limits(cfg.search, cfg.space)
        archs = spread_archs(cfg.space, cfg.rank.archs, cfg.seed, limits.feasible,
                             cfg.search.flops_input_size, cfg.rank.pool)
        for arch in (archs[0], archs[-1]):  # the lightest and the heaviest
            scores = numbers["archs"][str(arch)] = {}
            for steps in RANK_STEPS:
                tcfg = dataclasses.replace(cfg.rank.train, steps=steps, checkpoint_every=steps)
                scores[steps] = []
                for seed in RANK_SEEDS:
                    run = dataclasses.replace(cfg, seed=seed)
                    metrics, seconds = _timed(
                        train.train_detector, run, shufflenet_spec(arch), "rank", "synth", "fpn",
                        None, root / f"rank-{arch}-{steps}-{seed}", tcfg=tcfg,
                        train_split=(images, supernet_split), test_split=test,
                        stage_name="rank-standalone")
                    scores[steps].append(metrics["ap50"])
                    print(f"rank {arch} {steps} steps seed {seed}: AP50 {metrics['ap50']:.3f} "
                          f"({seconds:.0f} s)", flush=True)
    a, b = numbers["archs"].values()
    numbers["span"], numbers["seed_spread"] = [], []
    for steps in RANK_STEPS:
        mean = [sum(x[steps]) / len(x[steps]) for x in (a, b)]
        pairs = [abs(x[steps][i] - x[steps][j]) for x in (a, b)
                 for i in range(len(RANK_SEEDS)) for j in range(i + 1, len(RANK_SEEDS))]
        numbers["span"].append(abs(mean[0] - mean[1]))
        numbers["seed_spread"].append(sum(pairs) / len(pairs))
    numbers["numeric_environment"] = numeric_environment()
    out.mkdir(parents=True, exist_ok=True)
    (out / "rank.json").write_text(json.dumps(numbers, indent=1) + "\n")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for (name, scores), colour in zip(numbers["archs"].items(), ("tab:blue", "tab:orange"),
                                      strict=True):
        for steps in RANK_STEPS:
            axes[0].plot([steps] * len(scores[steps]), [100 * v for v in scores[steps]], "o",
                         color=colour, alpha=0.6)
        axes[0].plot(RANK_STEPS, [100 * sum(scores[s]) / len(scores[s]) for s in RANK_STEPS],
                     "-", color=colour, label=name)
    axes[0].set(xlabel="steps (batch 4), from scratch", ylabel="AP50 on the test split, %",
                title="standalone FPN, 3 seeds each")
    axes[0].legend(fontsize=8)
    axes[1].plot(RANK_STEPS, [100 * v for v in numbers["span"]], "o-", label="span of the means")
    axes[1].plot(RANK_STEPS, [200 * v for v in numbers["seed_spread"]], "o--",
                 label="2 x seed spread")
    axes[1].set(xlabel="steps", ylabel="AP50 points", title="the ranking check's bar")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "rank.png", dpi=110)
    print(f"wrote {out / 'rank.png'} and {out / 'rank.json'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "docs" / "embedded_default"))
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--study", type=Path, help="a finished study's folder (logs/, results/)")
    mode.add_argument("--sweep", action="store_true", help="train the step sweep")
    mode.add_argument("--rank-sweep", action="store_true",
                      help="the ranking check's standalone span and seed spread against steps")
    p.add_argument("--quick", action="store_true", help="--sweep: two points per curve")
    args = p.parse_args()
    if args.study:
        study_curves(args.study, Path(args.out))
        return
    torch.set_num_threads(1)
    if args.rank_sweep:
        rank_sweep(Path(args.out))
        return
    losses = _Losses()
    logging.getLogger("detnas.run.engine").setLevel(logging.INFO)
    logging.getLogger("detnas.run.engine").addHandler(losses)
    pick = (lambda s: s[1::2]) if args.quick else (lambda s: s)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = _study(root)
        numbers = {"classification": classification_curve(cfg, root, pick(CLS_STEPS), losses)}
        init = root / f"cls{cfg.retrain_pretrain.steps}" / "checkpoint.pt"
        if not init.exists():
            classification_curve(cfg, root, (cfg.retrain_pretrain.steps,), losses)
        numbers["fpn"] = {
            "from the classifier": detection_curve(cfg, root, "fpn", pick(FPN_STEPS), init,
                                                   "pretrained"),
            "from scratch": detection_curve(cfg, root, "fpn", pick(FPN_STEPS), None, "scratch"),
        }
        plain = dataclasses.replace(cfg, detector=dataclasses.replace(
            cfg.detector, retinanet_head_norm="none"))
        numbers["retinanet"] = {
            "from the classifier, GN head": detection_curve(
                cfg, root, "retinanet", pick(RETINANET_STEPS), init, "pretrained"),
            "from scratch, GN head": detection_curve(
                cfg, root, "retinanet", pick(RETINANET_STEPS), None, "scratch"),
            "from the classifier, plain head": detection_curve(
                plain, root, "retinanet", pick(RETINANET_STEPS), init, "plain"),
        }
    numbers["numeric_environment"] = numeric_environment()
    (out / "numbers.json").write_text(json.dumps(numbers, indent=1) + "\n")
    plot(numbers, out)
    print(f"wrote {out / 'curves.png'} and {out / 'numbers.json'}")


if __name__ == "__main__":
    main()
