"""The report's tables: the main table, search summaries, kernel sizes and observations."""

from __future__ import annotations

import logging
import statistics
from typing import Any

from detnas.plan import study
from detnas.plan.config import StudyConfig, replicate_seed
from detnas.plan.space import KERNEL_SIZES, Arch
from detnas.report import noise
from detnas.report.paper import DETECTOR_NAMES, METRIC_NAMES, paper_dataset, paper_refs
from detnas.report.results import Results, search_key

log = logging.getLogger(__name__)


# --- the main table ---------------------------------------------------------------------------


def _row_arch(res: Results, row: study.Row, ds: str, det: str) -> str | None:
    """The backbone of a cell: from its metrics, else the search's winner, else (for the rows
    that do not depend on the dataset) the classification run's arch."""
    m = res.det.get((row.name, ds, det)) or {}
    if m.get("arch"):
        return m["arch"]
    if row.kind == "searched":
        spec = res.search_archs.get(search_key(ds, det, row.name)) or {}
        if spec.get("arch") or row.cell_search:
            return spec.get("arch")
    return (res.cls.get(row.name) or res.cls.get(row.classifier_row) or {}).get("arch")


def _top1(res: Results, row: study.Row, ds: str, det: str,
          rows: tuple[study.Row, ...]) -> tuple[list[float], str]:
    """Top-1 of a row's classifier replicates and a note; a row that borrows a classifier
    (NATS: ResNet-50's) shows its top-1 (the same weights)."""
    for key in ((row.name, ds, det), row.name):
        if key in res.cls_reps:
            return _values(res.cls_reps[key], "top1"), ""
    source = next(r for r in rows if r.name == row.classifier_row)
    if source.name != row.name and source.name in res.cls_reps:
        return _values(res.cls_reps[source.name], "top1"), f"{source.title}'s, weights reused"
    return [], ""


def _values(runs: dict[int, dict], metric: str) -> list[float]:
    """A metric of each replicate found, in replicate order."""
    return [runs[k][metric] for k in sorted(runs) if runs[k].get(metric) is not None]


def spread(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of a row's runs (std None below two runs)."""
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def figure(res: Results, row: str, ds: str, det: str, metric: str) -> noise.Figure | None:
    """A cell's figure: its replicates' values of ``metric`` and their test-image bootstrap
    values (`detnas.evaluation.bootstrap_coco`; None where a replicate has none)."""
    runs = res.det_reps.get((row, ds, det), {})
    found = [runs[k] for k in sorted(runs) if runs[k].get(metric) is not None]
    if not found:
        return None
    boots = [(m.get("bootstrap") or {}).get(metric) for m in found]
    return noise.Figure([m[metric] for m in found], boots if all(boots) else None)


def cell_noise(figures: dict[str, noise.Figure], det: str) -> noise.TrainingNoise:
    """The training noise of one dataset and detector: pooled over its rows' replicates."""
    return noise.TrainingNoise.pooled([f.values for f in figures.values()],
                                      f"rows with {DETECTOR_NAMES.get(det, det)}")


def _row_entry(cfg: StudyConfig, res: Results, row: study.Row, dataset: str, figures: dict,
               noises: dict, study_rows: tuple[study.Row, ...]) -> dict:
    """The entry of ``row`` in `main_table` (the figures and noise of each detector given)."""
    top1 = {det: _top1(res, row, dataset, det, study_rows) for det in cfg.detectors}
    notes = {note for _, note in top1.values() if note}
    entry: dict[str, Any] = {"row": row.name, "name": row.title,
                             "top1": {det: spread(t)[0] for det, (t, _) in top1.items()},
                             "top1_std": {det: spread(t)[1] for det, (t, _) in top1.items()},
                             "top1_note": notes.pop() if notes else "",
                             "arch": {}, "archs": {}, "backbone_flops": {},
                             "backbone_params": {}, "map": {}, "map_std": {},
                             "map_seeds": {}, "map_interval": {}, "map_mean_interval": {},
                             "map_test_interval": {},
                             "map_test_sd": {},
                             "paper": {"top1": {}, "map": {}, "flops": {}}}
    for det in cfg.detectors:
        _detector_cells(entry, cfg, res, row, dataset, det, figures[det].get(row.name),
                        noises[det])
    return entry


def _detector_cells(entry: dict, cfg: StudyConfig, res: Results, row: study.Row, dataset: str,
                    det: str, fig: noise.Figure | None, cell: noise.TrainingNoise) -> None:
    """Detector ``det``'s cells of ``row``'s entry: its arch, size, mAP (and their spread and
    intervals, from its figure ``fig`` and the noise of its cell) and the paper's figures."""
    d = cfg.datasets[dataset]
    m = res.det.get((row.name, dataset, det), {})
    runs = res.det_reps.get((row.name, dataset, det), {})
    entry["arch"][det] = _row_arch(res, row, dataset, det)
    entry["archs"][det] = [runs[k].get("arch") for k in sorted(runs)]
    entry["backbone_flops"][det] = m.get("backbone_flops")
    entry["backbone_params"][det] = m.get("backbone_params")
    entry["map_seeds"][det] = {
        str(replicate_seed(cfg.seed, k)): runs[k][d.metric] for k in sorted(runs)
        if runs[k].get(d.metric) is not None}
    entry["map"][det], entry["map_std"][det] = spread(fig.values if fig else [])
    boot = fig.boot_means() if fig else None
    entry["map_test_interval"][det] = list(percentile_interval(boot)) if boot else None
    entry["map_test_sd"][det] = spread(boot or [])[1]
    band = noise.interval(fig, cell, rerun=True) if fig else None
    entry["map_interval"][det] = list(band) if band else None
    band = noise.interval(fig, cell) if fig else None
    entry["map_mean_interval"][det] = list(band) if band else None
    for f in ("top1", "map", "flops"):
        entry["paper"][f][det] = [
            {"value": r.value, "source": r.source}
            for r in paper_refs(row.name, paper_dataset(d.kind), det, f)
        ]


def main_table(cfg: StudyConfig, res: Results, dataset: str) -> dict:
    """The paper-shaped table of one dataset: one entry per ablation row.

    Returns:
        ``{"dataset", "kind", "metric", "paper_dataset", "detectors", "noise", "rows": [...]}``;
        ``noise`` per detector: the training noise (``sigma``, ``df``, ``source``; noise.py) and
        ``resolvable``, the smallest difference between two rows the study calls at 95%. Each
        row has per-detector ``arch`` (its first replicate's; ``archs``: every replicate's),
        ``backbone_flops``, ``backbone_params``, ``map`` (fractions, as in the metrics files:
        the mean over the replicates), ``map_std`` (their sample standard deviation; None
        below two), ``map_seeds`` (each replicate's seed -> value), ``map_interval`` (the 95%
        interval a rerun of the study lands in, with training and test noise; None while the
        training noise is unknown), ``map_mean_interval`` (the 95% interval of the mean),
        ``map_test_interval`` and ``map_test_sd`` (the test images' part alone),
        ``top1`` (the mean over its classifier's replicates), ``top1_std``, and ``paper``
        figures (percent) with their sources.
    """
    d = cfg.datasets[dataset]
    pds = paper_dataset(d.kind)
    study_rows = study.rows(cfg)
    ordered = study.table_order(study_rows)
    figures = {det: {r.name: f for r in ordered
                     if (f := figure(res, r.name, dataset, det, d.metric))}
               for det in cfg.detectors}
    noises = {det: cell_noise(figures[det], det) for det in cfg.detectors}
    rows = [_row_entry(cfg, res, row, dataset, figures, noises, study_rows) for row in ordered]
    table = {"dataset": dataset, "kind": d.kind, "metric": d.metric, "paper_dataset": pds,
             "detectors": list(cfg.detectors), "rows": rows,
             "noise": {det: _noise_summary(noises[det], figures[det], cfg.replicates)
                       for det in cfg.detectors}}
    table["verdicts"] = {det: verdicts(cfg, table, det, figures[det], noises[det])
                         for det in cfg.detectors}
    return table


def _noise_summary(training: noise.TrainingNoise, figures: dict[str, noise.Figure],
                   replicates: int) -> dict:
    """The training noise of a table's column, and the smallest difference it resolves: between
    two rows of ``replicates`` replicates, at the median test noise of its rows' differences."""
    names = list(figures)
    test = [noise.paired_test_sd(figures[a], figures[b])
            for i, a in enumerate(names) for b in names[i + 1:]]
    test = [t for t in test if t is not None]
    sd_diff = statistics.median(test) if test else 0.0
    return {"sigma": training.sigma, "df": training.df, "source": training.source,
            "replicates": replicates, "test_sd_difference": sd_diff if test else None,
            "resolvable": noise.resolvable(training, replicates, sd_diff)}


def _pct(x: float | None, std: float | None = None,
         interval: list[float] | None = None) -> str:
    """Percent, with the seeds' standard deviation and the bootstrap interval when there are:
    ``4.7 ± 0.5 [2.9, 6.8]``."""
    if x is None:
        return "—"
    text = f"{100 * x:.1f}" + ("" if std is None else f" ± {100 * std:.1f}")
    return text if not interval else f"{text} [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"


def _si(x: float | None) -> str:
    if x is None:
        return "—"
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:g}"


def _joined(values: list[str]) -> str:
    """One cell for per-detector values: the value once when all agree, else ``a / b``."""
    if len(set(values)) == 1:
        return values[0]
    return " / ".join(values)


def format_main_table(table: dict, sources: dict[str, int]) -> tuple[list[str], list[list[str]]]:
    """Header and string cells of a main table; ``sources`` numbers the paper's sources
    (filled in as they are cited, for the footnotes)."""
    dets = table["detectors"]
    order = " / ".join(DETECTOR_NAMES.get(d, d) for d in dets)
    metric = METRIC_NAMES[table["metric"]]
    pds = table["paper_dataset"].upper()
    header = ["model", f"backbone ({order})", "backbone FLOPs", "params", "top-1 %"]
    seeds = max((len(r.get("map_seeds", {}).get(d, ())) for r in table["rows"] for d in dets),
                default=1)
    combined = any(r.get("map_interval", {}).get(d) for r in table["rows"] for d in dets)
    over = (f" (mean ± std of {seeds} seeds) [95% interval of a rerun: training and test noise]"
            if combined else " (1 seed: training noise unknown) [95% interval over test "
            "images only]")
    header += [f"{DETECTOR_NAMES.get(d, d)} {metric} %{over}" for d in dets]
    header += ["paper FLOPs", f"paper top-1 % ({order})"]
    header += [f"paper {pds} {DETECTOR_NAMES.get(d, d)} %" for d in dets]

    def cite(refs: list[dict]) -> str:
        out = []
        for r in refs:
            n = sources.setdefault(r["source"], len(sources) + 1)
            out.append(f"{r['value']} [{n}]")
        return ", ".join(out) if out else "—"

    rows = []
    for r in table["rows"]:
        top1 = _joined([_pct(r["top1"][d], r.get("top1_std", {}).get(d)) for d in dets]) + (
            f" ({r['top1_note']})" if r["top1_note"] else "")
        cells = [r["name"], _joined([f"`{r['arch'][d]}`" if r["arch"][d] else "—" for d in dets]),
                 _joined([_si(r["backbone_flops"][d]) for d in dets]),
                 _joined([_si(r["backbone_params"][d]) for d in dets]), top1]
        cells += [_pct(r["map"][d], r["map_std"].get(d),
                       r["map_interval"].get(d) if combined else r["map_test_interval"].get(d))
                  for d in dets]
        cells += [_joined([cite(r["paper"]["flops"][d]) for d in dets]),
                  _joined([cite(r["paper"]["top1"][d]) for d in dets])]
        cells += [cite(r["paper"]["map"][d]) for d in dets]
        rows.append(cells)
    return header, rows


def format_noise_table(tables: dict) -> tuple[list[str], list[list[str]]]:
    """Header and cells: per dataset and detector, the training noise of one seed, the test
    images' noise of a difference, and the smallest difference the study calls at 95%."""
    rows = []
    for ds, table in tables.items():
        for det, n in table["noise"].items():
            pts = lambda x: "—" if x is None else f"{100 * x:.1f}"  # noqa: E731
            rows.append([ds, DETECTOR_NAMES.get(det, det), str(n["replicates"]),
                         "unknown" if n["sigma"] is None else pts(n["sigma"]), str(n["df"]),
                         pts(n["test_sd_difference"]), pts(n["resolvable"])])
    return (["dataset", "detector", "seeds per row", "training noise: std of one seed (points)",
             "its degrees of freedom", "test images: std of a difference (points)",
             "smallest difference called at 95% (points)"], rows)


def verdict_notes(tables: dict) -> list[str]:
    """The verdict of every comparison of a report's main tables (`verdicts`), as text."""
    out = []
    for table in tables.values():
        titles = {r["row"]: r["name"] for r in table["rows"]}
        for entries in table["verdicts"].values():
            out += [verdict_text(v, titles, METRIC_NAMES[table["metric"]]) for v in entries]
    return out


# --- searches ---------------------------------------------------------------------------------


def search_curve(history: list[dict]) -> dict:
    """Best-so-far fitness per evaluation and best / mean fitness per generation."""
    best, running = [], float("-inf")
    for r in history:
        running = max(running, r["fitness"])
        best.append(running)
    gens: dict[int, list[float]] = {}
    for r in history:
        gens.setdefault(r["generation"], []).append(r["fitness"])
    keys = sorted(gens)
    return {"evaluations": list(range(1, len(history) + 1)), "best_so_far": best,
            "generations": keys, "generation_best": [max(gens[g]) for g in keys],
            "generation_mean": [statistics.fmean(gens[g]) for g in keys]}


def search_summary(history: list[dict]) -> dict:
    """Best, median and count of a search's fitness, and when the best was first reached."""
    fitness = [r["fitness"] for r in history]
    best = max(fitness)
    return {"evaluations": len(fitness), "best": best, "median": statistics.median(fitness),
            "mean": statistics.fmean(fitness), "best_at": fitness.index(best) + 1}


def evaluations_to_reach(history: list[dict], target: float) -> int | None:
    """1-based index of the first evaluation with fitness >= ``target`` (None if never)."""
    for i, r in enumerate(history, 1):
        if r["fitness"] >= target:
            return i
    return None


def search_tables(res: Results) -> dict:
    """Summary of every search found (its first search seed's), keyed by search key."""
    return {key: search_summary(h) for key, h in sorted(res.histories.items())}


def hamming(a: str, b: str) -> int:
    """Blocks two architecture encodings choose differently (the same space)."""
    return sum(x != y for x, y in zip(a.replace("-", ""), b.replace("-", ""), strict=True))


def search_stability(cfg: StudyConfig, res: Results) -> dict:
    """How stable each search is over its search seeds (`search_seeds`), keyed by search key:
    ``seeds``, ``winners`` (one encoding per seed), ``distinct``, ``hamming`` (mean pairwise
    Hamming distance of the winners' encodings, None below two), ``fitness_mean`` /
    ``fitness_std`` of the winners' fitness, and ``retrained`` (each seed's retrained figure of
    the dataset's metric, where that seed's winner was retrained: replicate k retrains search
    seed k's)."""
    out = {}
    for key, runs in sorted(res.search_runs.items()):
        found = {k: r for k, r in sorted(runs.items()) if r.get("history") and r.get("arch")}
        if not found:
            continue
        winners = [r["arch"]["arch"] for r in found.values()]
        best = [max(h["fitness"] for h in r["history"]) for r in found.values()]
        pairs = [hamming(a, b) for i, a in enumerate(winners) for b in winners[i + 1:]]
        mean, std = spread(best)
        out[key] = {"seeds": len(found), "winners": winners, "distinct": len(set(winners)),
                    "hamming": statistics.fmean(pairs) if pairs else None,
                    "fitness_mean": mean, "fitness_std": std,
                    "retrained": _retrained_per_seed(cfg, res, key, list(found))}
    return out


def _retrained_per_seed(cfg: StudyConfig, res: Results, key: str,
                        seeds: list[int]) -> dict[str, float]:
    """Search seed -> the retrained figure of its winner (a cell search whose seed is some
    replicate's search), as a string key for JSON."""
    ds, det, row = (key.split("/") + ["", ""])[:3]
    if ds == "cls" or cfg.search_seeds == 1 or ds not in cfg.datasets:
        return {}
    runs = res.det_reps.get((row, ds, det), {})
    metric = cfg.datasets[ds].metric
    return {str(k): runs[k][metric] for k in seeds
            if k in runs and runs[k].get(metric) is not None}


def format_stability_table(stability: dict) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the search-stability table."""
    rows = []
    for key, s in stability.items():
        fit = f"{s['fitness_mean']:.4f}" + (
            "" if s["fitness_std"] is None else f" ± {s['fitness_std']:.4f}")
        retrained = ", ".join(f"{100 * v:.1f}" for v in s["retrained"].values()) or "—"
        rows.append([f"`{key}`", str(s["seeds"]), str(s["distinct"]),
                     "—" if s["hamming"] is None else f"{s['hamming']:.1f}", fit, retrained])
    return (["search", "search seeds", "distinct winners", "mean pairwise Hamming distance",
             "winner's fitness (mean ± std)", "retrained, per seed (%)"], rows)


# --- architectures ----------------------------------------------------------------------------

RECEPTIVE_FIELDS = (3, 5, 7, 7)
"""Receptive field of each choice's depthwise path (Xception: three stacked 3x3 convs = 7)."""


def stage_kernel_means(arch: Arch, sizes: tuple[int, ...] = KERNEL_SIZES) -> list[float]:
    """Mean kernel size per stage (``sizes[choice]`` per block)."""
    return [statistics.fmean(sizes[c] for c in stage) for stage in arch.stages()]


def shallow_minus_deep(arch: Arch, sizes: tuple[int, ...] = KERNEL_SIZES) -> float:
    """Mean kernel size of the first half of the stages minus that of the second half."""
    means = stage_kernel_means(arch, sizes)
    half = len(means) // 2
    return statistics.fmean(means[:half]) - statistics.fmean(means[half:])


def searched_archs(cfg: StudyConfig, res: Results) -> list[dict]:
    """Every architecture to draw: the hand-crafted baseline of the space (ShuffleNetV2), the
    searches of the whole study (ClsNASNet), and each search's winner.

    Returns:
        Dicts with ``label``, ``method``, ``dataset``, ``detector`` and ``arch`` (an `Arch`).
    """
    rows = study.rows(cfg)
    out = [{"label": r.title, "method": r.name, "dataset": None, "detector": None,
            "arch": _zero_arch(cfg)} for r in rows if r.kind == "baseline" and r.spec == "space"]
    keys = [("", "", r) for r in rows if r.kind == "searched" and r.shared]
    keys += [(ds, det, r) for ds in cfg.datasets for det in cfg.detectors for r in rows
             if r.cell_search]
    for ds, det, row in keys:
        spec = res.search_archs.get(search_key(ds, det, row.name))
        arch = _parse(spec, cfg.space)
        if arch is None:
            continue
        where = f" {ds} {DETECTOR_NAMES.get(det, det)}" if ds else ""
        out.append({"label": row.title + where, "method": row.name, "dataset": ds or None,
                    "detector": det or None, "arch": arch})
    return out


def _zero_arch(cfg: StudyConfig) -> Arch:
    from detnas.plan.space import get_space

    return Arch(cfg.space, (0,) * get_space(cfg.space).num_blocks)


def _parse(spec: dict | None, space: str) -> Arch | None:
    if not spec or not spec.get("arch"):
        return None
    try:
        return Arch.parse(spec["arch"], spec.get("space", space))
    except ValueError as e:
        log.warning("cannot draw arch: %s", e)
        return None


def kernel_table(archs: list[dict]) -> list[dict]:
    """Mean kernel size per stage (Xception = 3, and = 7 as receptive field) of each arch."""
    return [{"label": a["label"], "method": a["method"], "arch": str(a["arch"]),
             "kernel_per_stage": stage_kernel_means(a["arch"]),
             "receptive_per_stage": stage_kernel_means(a["arch"], RECEPTIVE_FIELDS),
             "shallow_minus_deep": shallow_minus_deep(a["arch"])} for a in archs]


# --- the ranking check -----------------------------------------------------------------------

SUPERNET_NAMES = {"pretrained": "pre-trained supernet (DetNAS)",
                  "scratch": "scratch supernet (DetNAS-scratch)"}


def rank_table(res: Results) -> list[dict]:
    """One entry per (dataset, detector, supernet) of the ranking check: K, tau, rho, p-values."""
    out = []
    for (ds, det), r in sorted(res.rank.items()):
        for init, s in r["supernets"].items():
            seeds = r.get("seed_spread", {})
            out.append({"dataset": ds, "detector": det, "supernet": init, "metric": r["metric"],
                        "archs": len(r["archs"]), "standalone_span": r.get("standalone_span"),
                        "seed_spread": seeds.get("spread"),
                        **{k: s.get(k) for k in ("kendall_tau", "kendall_p", "spearman_rho",
                                                 "spearman_p")}})
    return out


def _num(x: float | None, fmt: str = "+.2f") -> str:
    return "undefined" if x is None else format(x, fmt)


def format_rank_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and string cells of the ranking check's table."""
    header = ["dataset", "detector", "supernet", "archs",
              "standalone span / seed spread (points)", "Kendall tau (p)", "Spearman rho (p)"]
    cells = [[r["dataset"], DETECTOR_NAMES.get(r["detector"], r["detector"]), r["supernet"],
              str(r["archs"]), _span(r),
              f"{_num(r['kendall_tau'])} ({_num(r['kendall_p'], '.2f')})",
              f"{_num(r['spearman_rho'])} ({_num(r['spearman_p'], '.2f')})"] for r in rows]
    return header, cells


def _span(row: dict) -> str:
    """The standalone scores' span over the K nets beside one net's spread over two seeds."""
    span, spread = row.get("standalone_span"), row.get("seed_spread")
    if span is None or spread is None:
        return "—"
    return f"{100 * span:.1f} / {100 * spread:.1f}"


def _rank_observation(row: dict) -> str:
    where = f"{row['dataset']} / {DETECTOR_NAMES.get(row['detector'], row['detector'])}"
    tau, p = row["kendall_tau"], row["kendall_p"]
    if tau is None:
        verdict = "undefined: one of the two rankings is all ties"
    elif p is not None and p < 0.05:
        verdict = "agrees with standalone training" if tau > 0 else "inverts standalone training"
        verdict += f" (p {p:.2f} < 0.05)"
    else:
        verdict = (f"not distinguishable from no agreement with {row['archs']} nets "
                   f"(p {_num(p, '.2f')})")
    differ = ""
    if row.get("standalone_span") is not None and row.get("seed_spread") is not None:
        span, spread = 100 * row["standalone_span"], 100 * row["seed_spread"]
        differ = (f" The nets trained alone span {span:.1f} points, one of them moves "
                  f"{spread:.1f} with a second seed: " + (
                      "the architectures differ by more than twice the training noise."
                      if span > 2 * spread else
                      "the architectures do not differ by more than twice the training noise, "
                      "so any ranking of them is mostly noise."))
    return (f"{where}: the {SUPERNET_NAMES.get(row['supernet'], row['supernet'])} ranks "
            f"{row['archs']} standalone-trained nets with Kendall tau {_num(tau)}, Spearman rho "
            f"{_num(row['spearman_rho'])}: {verdict}.{differ}")


# --- observations -----------------------------------------------------------------------------


def observations(cfg: StudyConfig, res: Results, tables: dict, kernels: list[dict],
                 ranking: list[dict] = ()) -> list[str]:
    """Short statements computed from the data, each beside the paper's claim where there is one:
    per comparison of two rows (`detnas.plan.study.comparisons`) their scores and, for an
    evolution against a random search, their fitness; the kernel sizes of the detection
    searches' winners against the classification search's."""
    rows = study.rows(cfg)
    pairs = study.comparisons(rows)
    titles = {r.name: r.title for r in rows}
    out = [_rank_observation(r) for r in ranking]
    for ds in cfg.datasets:
        for det in cfg.detectors:
            for a, b, _ in pairs:
                if a.cell_search and b.cell_search and (a.strategy, b.strategy) == (
                        "evolution", "random"):
                    out += _search_observation(res, ds, det, a.name, b.name)
            out += [verdict_text(v, titles, METRIC_NAMES[tables[ds]["metric"]])
                    for v in tables[ds]["verdicts"][det]]
    evolved = {r.name for r in rows if r.cell_search and r.strategy == "evolution"}
    det_nets = [k for k in kernels if k["method"] in evolved]
    cls_net = [k for k in kernels if k["method"] in
               {r.name for r in rows if r.fitness == "classification"}]
    if det_nets and cls_net:
        d = statistics.fmean(k["shallow_minus_deep"] for k in det_nets)
        c = cls_net[0]["shallow_minus_deep"]
        shallower = "puts" if d > c else "does not put"
        verdict = "as the paper reports" if d > c else "unlike the paper's observation"
        out.append(f"Mean kernel size, shallow stages minus deep stages: {d:+.2f} for the "
                   f"detection-searched nets (mean of {len(det_nets)}) against {c:+.2f} for "
                   f"ClsNASNet: detection search {shallower} larger kernels in shallower "
                   f"stages than classification search, {verdict}.")
    return out


def _search_observation(res: Results, ds: str, det: str, evolution: str,
                        random: str) -> list[str]:
    ea = res.histories.get(search_key(ds, det, evolution))
    rnd = res.histories.get(search_key(ds, det, random))
    if not ea or not rnd:
        return []
    e, r = search_summary(ea), search_summary(rnd)
    reach = evaluations_to_reach(ea, r["best"])
    reach_text = (f"it matched random search's best after {reach} of {e['evaluations']} "
                  "evaluations" if reach else "it never matched random search's best")
    return [f"{ds} / {DETECTOR_NAMES.get(det, det)}: EA best fitness {e['best']:.4f} against "
            f"random search's best {r['best']:.4f} and median {r['median']:.4f} "
            f"({e['best'] - r['median']:+.4f} over the median); {reach_text}."]


def percentile_interval(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` interval of bootstrap values (linear interpolation)."""
    import numpy as np

    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(np.asarray(values, dtype=float), [tail, 100 - tail])
    return float(lo), float(hi)


SAME_NETWORK = "the same network"
"""What an observation says of two rows that found one architecture (nothing to compare)."""
DECIDED = "better beyond the noise"
"""What an observation says of a difference whose 95% interval, with training and test noise,
excludes 0 (`verdict_text`)."""


def key_observations(notes: list[str]) -> list[str]:
    """The observations a summary leads with: differences decided beyond the noise, and rows
    that are the same network."""
    return [n for n in notes if DECIDED in n or SAME_NETWORK in n]


def verdicts(cfg: StudyConfig, table: dict, det: str, figures: dict[str, noise.Figure],
             training: noise.TrainingNoise) -> list[dict]:
    """Each comparison of two rows (`detnas.plan.study.comparisons`) of a main table's column,
    judged with both sources of noise (`detnas.report.noise.compare`): ``{"dataset",
    "detector", "a", "b", "claim", "same_network", "diff", "interval", "outcome", "seeds"}``."""
    ds = table["dataset"]
    archs = {r["row"]: r["arch"][det] for r in table["rows"]}
    out = []
    for row_a, row_b, paper in study.comparisons(study.rows(cfg)):
        a, b = row_a.name, row_b.name
        entry = {"dataset": ds, "detector": det, "a": a, "b": b, "claim": paper,
                 "same_network": "nats" not in (row_a.kind, row_b.kind)
                 and bool(archs.get(a)) and archs.get(a) == archs.get(b)
                 and cfg.search_seeds == 1}  # (NATS's arch names its ResNet, not its dilations)
        if entry["same_network"]:
            entry["arch"] = archs[a]
        if a in figures and b in figures:
            entry |= noise.compare(figures[a], figures[b], training).to_dict()
            entry["means"] = [figures[a].mean, figures[b].mean]
        elif not entry["same_network"]:
            continue
        out.append(entry)
    return out


def verdict_text(v: dict, titles: dict[str, str], metric: str) -> str:
    """One observation from a `verdicts` entry."""
    where = f"{v['dataset']} / {DETECTOR_NAMES.get(v['detector'], v['detector'])}"
    a, b = titles[v["a"]], titles[v["b"]]
    claim = f" ({v['claim']})" if v["claim"] else ""
    if v["same_network"]:
        scores = " and ".join(f"{100 * m:.1f}" for m in v.get("means", ()))
        scores = f" ({metric} {scores}: its retrainings)" if scores else ""
        return f"{where}: {a} and {b} found {SAME_NETWORK}, `{v['arch']}`{scores}."
    na, nb = v["seeds"]
    seeds = f"means of {na} seeds" if na == nb else f"means of {na} and {nb} seeds"
    head = f"{where}: {a} {100 * v['diff']:+.1f} {metric} over {b} ({seeds})"
    if v["interval"] is None:
        return (f"{head}; undetermined: one seed per row leaves the training noise unknown"
                f"{claim}.")
    lo, hi = (100 * x for x in v["interval"])
    span = (f"the 95% interval of the difference with training and test noise, "
            f"[{lo:+.1f}, {hi:+.1f}]")
    if v["outcome"] == noise.UNDETERMINED:
        return f"{head}; undetermined: {span}, contains 0{claim}."
    better = a if v["outcome"] == noise.A_BETTER else b
    return f"{head}; {better} {DECIDED}: {span}, excludes 0{claim}."
