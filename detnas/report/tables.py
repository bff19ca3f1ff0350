"""The report's tables: the main table, search summaries, kernel sizes and observations."""

from __future__ import annotations

import logging
import statistics
from typing import Any

from detnas import study
from detnas.config import StudyConfig
from detnas.report.paper import DETECTOR_NAMES, METRIC_NAMES, paper_dataset, paper_refs
from detnas.report.results import Results, search_key
from detnas.space import KERNEL_SIZES, Arch

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
          rows: tuple[study.Row, ...]) -> tuple[float | None, str]:
    """Top-1 of a row and a note; a row that borrows a classifier (NATS: ResNet-50's) falls
    back to its top-1 (the same weights)."""
    for key in ((row.name, ds, det), row.name):
        if "top1" in res.cls.get(key, {}):
            return res.cls[key]["top1"], ""
    source = next(r for r in rows if r.name == row.classifier_row)
    if source.name != row.name and "top1" in res.cls.get(source.name, {}):
        return res.cls[source.name]["top1"], f"{source.title}'s, weights reused"
    return None, ""


def spread(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of a row's runs (std None below two runs)."""
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def main_table(cfg: StudyConfig, res: Results, dataset: str) -> dict:
    """The paper-shaped table of one dataset: one entry per ablation row.

    Returns:
        ``{"dataset", "kind", "metric", "paper_dataset", "detectors", "rows": [...]}``; each row has
        per-detector ``arch``, ``backbone_flops``, ``backbone_params``, ``map`` (fractions, as in
        the metrics files: the mean over the seeds found), ``map_std`` (their sample standard
        deviation; None below two seeds), ``map_seeds`` (seed -> value), ``map_interval`` (the
        95% bootstrap interval over test images of the study seed's run, or None), ``top1``, and
        ``paper`` figures (percent) with their sources.
    """
    d = cfg.datasets[dataset]
    pds = paper_dataset(d.kind)
    study_rows = study.rows(cfg)
    rows = []
    for row in study.table_order(study_rows):
        top1 = {det: _top1(res, row, dataset, det, study_rows) for det in cfg.detectors}
        notes = {note for _, note in top1.values() if note}
        entry: dict[str, Any] = {"row": row.name, "name": row.title,
                                 "top1": {det: t for det, (t, _) in top1.items()},
                                 "top1_note": notes.pop() if notes else "",
                                 "arch": {}, "backbone_flops": {}, "backbone_params": {},
                                 "map": {}, "map_std": {}, "map_seeds": {}, "map_interval": {},
                                 "paper": {"top1": {}, "map": {}, "flops": {}}}
        for det in cfg.detectors:
            m = res.det.get((row.name, dataset, det), {})
            entry["arch"][det] = _row_arch(res, row, dataset, det)
            entry["backbone_flops"][det] = m.get("backbone_flops")
            entry["backbone_params"][det] = m.get("backbone_params")
            runs = {seed: r[d.metric] for seed, r in
                    sorted(res.det_seeds.get((row.name, dataset, det), {}).items())
                    if r.get(d.metric) is not None}
            entry["map_seeds"][det] = {str(seed): v for seed, v in runs.items()}
            entry["map"][det], entry["map_std"][det] = spread(list(runs.values()))
            boot = _bootstrap(res, row.name, dataset, det, d.metric)
            entry["map_interval"][det] = list(percentile_interval(boot)) if boot else None
            for f in ("top1", "map", "flops"):
                entry["paper"][f][det] = [
                    {"value": r.value, "source": r.source}
                    for r in paper_refs(row.name, pds, det, f)
                ]
        rows.append(entry)
    return {"dataset": dataset, "kind": d.kind, "metric": d.metric, "paper_dataset": pds,
            "detectors": list(cfg.detectors), "rows": rows}


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
    over = f" (mean ± std of {seeds} seeds)" if seeds > 1 else ""
    if any(r.get("map_interval", {}).get(d) for r in table["rows"] for d in dets):
        over += " [95% bootstrap interval over test images]"
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
        top1 = _joined([_pct(r["top1"][d]) for d in dets]) + (
            f" ({r['top1_note']})" if r["top1_note"] else "")
        cells = [r["name"], _joined([f"`{r['arch'][d]}`" if r["arch"][d] else "—" for d in dets]),
                 _joined([_si(r["backbone_flops"][d]) for d in dets]),
                 _joined([_si(r["backbone_params"][d]) for d in dets]), top1]
        cells += [_pct(r["map"][d], r.get("map_std", {}).get(d), r.get("map_interval", {}).get(d))
                  for d in dets]
        cells += [_joined([cite(r["paper"]["flops"][d]) for d in dets]),
                  _joined([cite(r["paper"]["top1"][d]) for d in dets])]
        cells += [cite(r["paper"]["map"][d]) for d in dets]
        rows.append(cells)
    return header, rows


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
    """Summary of every search found, keyed by search key."""
    return {key: search_summary(h) for key, h in sorted(res.histories.items())}


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
    from detnas.space import get_space

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
    per comparison of two rows (`detnas.study.comparisons`) their scores and, for an
    evolution against a random search, their fitness; the kernel sizes of the detection
    searches' winners against the classification search's."""
    rows = study.rows(cfg)
    pairs = study.comparisons(rows)
    out = [_rank_observation(r) for r in ranking]
    for ds in cfg.datasets:
        for det in cfg.detectors:
            for a, b, _ in pairs:
                if a.cell_search and b.cell_search and (a.strategy, b.strategy) == (
                        "evolution", "random"):
                    out += _search_observation(res, ds, det, a.name, b.name)
            out += _map_observations(res, tables[ds], det, pairs)
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


def noise_verdict(a: list[float], b: list[float]) -> str:
    """Whether two rows' seeds differ beyond their seed-to-seed spread: outside the noise when
    the intervals mean ± one standard deviation are disjoint, within it when they overlap."""
    (ma, sa), (mb, sb) = spread(a), spread(b)
    if sa is None or sb is None:
        return "one seed per row: no estimate of the training noise"
    if ma - sa > mb + sb or mb - sb > ma + sa:
        return "outside the noise of training: the mean ± std spreads of the seeds do not overlap"
    return "within the noise of training: the mean ± std spreads of the seeds overlap"


def percentile_interval(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` interval of bootstrap values (linear interpolation)."""
    import numpy as np

    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(np.asarray(values, dtype=float), [tail, 100 - tail])
    return float(lo), float(hi)


def bootstrap_verdict(a: list[float], b: list[float]) -> str:
    """Whether two rows differ beyond the noise of the test split: the 95% interval of their
    paired bootstrap differences (the same resamples of the test images) excludes 0 or not."""
    lo, hi = percentile_interval([x - y for x, y in zip(a, b, strict=True)])
    where = "outside" if lo > 0 or hi < 0 else "within"
    word = "excludes" if where == "outside" else "contains"
    return (f"{where} the noise of the test split: the paired bootstrap 95% interval of the "
            f"difference, [{100 * lo:+.1f}, {100 * hi:+.1f}], {word} 0")


def _bootstrap(res: Results, row: str, ds: str, det: str, metric: str) -> list[float] | None:
    """The study seed's bootstrap values of ``metric`` for a cell (None without them)."""
    return ((res.det.get((row, ds, det)) or {}).get("bootstrap") or {}).get(metric)


SAME_NETWORK = "the same network"
"""What an observation says of two rows that found one architecture (nothing to compare)."""
OUTSIDE_NOISE = "outside the noise"
"""What an observation says of a difference beyond the noise (`noise_verdict`,
`bootstrap_verdict`)."""


def key_observations(notes: list[str]) -> list[str]:
    """The observations a summary leads with: differences outside the noise, and rows that are
    the same network."""
    return [n for n in notes if OUTSIDE_NOISE in n or SAME_NETWORK in n]


def _same_network(where: str, a: study.Row, b: study.Row, arch: str, runs: dict,
                  metric: str) -> str:
    """Two rows that found one architecture: named as such, not as a difference of +0.0."""
    values = " and ".join(f"{100 * statistics.fmean(runs[r.name]):.1f}" for r in (a, b)
                          if runs.get(r.name))
    scores = f" ({metric} {values}: its retrainings)" if values else ""
    return f"{where}: {a.title} and {b.title} found {SAME_NETWORK}, `{arch}`{scores}."


def _map_observations(res: Results, table: dict, det: str,
                      pairs: list[tuple[study.Row, study.Row, str]]) -> list[str]:
    """Per comparison ``(a, b, the paper's claim)``: a's score over b's, against the noise."""
    runs = {r["row"]: list(r["map_seeds"][det].values()) for r in table["rows"]}
    archs = {r["row"]: r["arch"][det] for r in table["rows"]}
    metric = METRIC_NAMES[table["metric"]]
    ds = table["dataset"]
    where = f"{ds} / {DETECTOR_NAMES.get(det, det)}"
    out = []
    for row_a, row_b, paper in pairs:
        a, b, claim = row_a.name, row_b.name, f" ({paper})" if paper else ""
        if "nats" not in (row_a.kind, row_b.kind) and archs.get(a) and archs.get(a) == archs.get(
                b):  # (NATS's arch names its ResNet, not the dilations that make it another net)
            out.append(_same_network(where, row_a, row_b, archs[a], runs, metric))
            continue
        if not runs.get(a) or not runs.get(b):
            continue
        diff = 100 * (statistics.fmean(runs[a]) - statistics.fmean(runs[b]))
        n = min(len(runs[a]), len(runs[b]))
        verdicts = [noise_verdict(runs[a], runs[b])] if n > 1 else []
        boot_a, boot_b = (_bootstrap(res, r, ds, det, table["metric"]) for r in (a, b))
        if boot_a and boot_b and len(boot_a) == len(boot_b):
            verdicts.append(bootstrap_verdict(boot_a, boot_b))
        if not verdicts:
            verdicts.append(noise_verdict(runs[a], runs[b]))
        mean = f" (means of {n} seeds)" if n > 1 else ""
        out.append(f"{where}: {row_a.title} {diff:+.1f} {metric} over {row_b.title}{mean}; "
                   f"{'; '.join(verdicts)}{claim}.")
    return out
