"""The report document: blocks rendered to Markdown and HTML, and `build_report`."""

from __future__ import annotations

import base64
import html
import logging
import re
from pathlib import Path

from detnas.io import atomic_write, save_json
from detnas.plan import layout
from detnas.plan.config import StudyConfig
from detnas.plan.typed import config_hash
from detnas.provenance import environment_key, git_commit
from detnas.report.figures import expected_figures, write_figures
from detnas.report.headline import format_headline, headline
from detnas.report.ledger import collect_costs, cost_tables, format_cost_tables
from detnas.report.paper import METRIC_NAMES, PAPER_CLAIMS
from detnas.report.results import Results, collect
from detnas.report.tables import (
    format_main_table,
    format_noise_table,
    format_rank_table,
    format_stability_table,
    kernel_table,
    key_observations,
    main_table,
    observations,
    rank_table,
    search_stability,
    search_tables,
    searched_archs,
)

log = logging.getLogger(__name__)


# --- the document: a list of blocks, rendered to Markdown and to HTML --------------------------


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[tuple]) -> str:
    """Markdown of blocks ``("h", level, text)``, ``("p", text)``, ``("ul", items)``,
    ``("table", header, rows)`` and ``("img", relative path, caption)``."""
    out = []
    for kind, *args in blocks:
        if kind == "h":
            out.append("#" * args[0] + " " + args[1])
        elif kind == "p":
            out.append(args[0])
        elif kind == "ul":
            out.append("\n".join(f"- {item}" for item in args[0]) or "- (none)")
        elif kind == "table":
            header, rows = args
            lines = ["| " + " | ".join(map(_md_cell, header)) + " |",
                     "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(map(_md_cell, r)) + " |" for r in rows]
            out.append("\n".join(lines))
        elif kind == "img":
            out.append(f"![{args[1]}]({args[0]})\n\n*{args[1]}*")
    return "\n\n".join(out) + "\n"


def _html_inline(text: str) -> str:
    """Escape, then turn Markdown code spans into ``<code>``."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(str(text)))


_CSS = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;font-size:13px;margin:1em 0}"
        "td,th{border:1px solid #bbb;padding:3px 6px;text-align:left}"
        "th{background:#eee}img{max-width:100%}figcaption{font-style:italic;font-size:13px}")


def render_html(blocks: list[tuple], base: Path, title: str) -> str:
    """A self-contained HTML page of the same blocks; images from ``base`` embedded as base64."""
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
           f"</title><style>{_CSS}</style></head><body>"]
    for kind, *args in blocks:
        if kind == "h":
            out.append(f"<h{args[0]}>{_html_inline(args[1])}</h{args[0]}>")
        elif kind == "p":
            out.append(f"<p>{_html_inline(args[0])}</p>")
        elif kind == "ul":
            items = "".join(f"<li>{_html_inline(i)}</li>" for i in args[0]) or "<li>(none)</li>"
            out.append(f"<ul>{items}</ul>")
        elif kind == "table":
            header, rows = args
            head = "".join(f"<th>{_html_inline(h)}</th>" for h in header)
            body = "".join("<tr>" + "".join(f"<td>{_html_inline(c)}</td>" for c in r) + "</tr>"
                           for r in rows)
            out.append(f"<table><tr>{head}</tr>{body}</table>")
        elif kind == "img":
            data = base64.b64encode((base / args[0]).read_bytes()).decode()
            out.append(f"<figure><img alt='{html.escape(args[1])}' "
                       f"src='data:image/png;base64,{data}'>"
                       f"<figcaption>{html.escape(args[1])}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# --- assembling the report --------------------------------------------------------------------


def provenance_table(res: Results) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one per input file with its seed and git commit (and config hash when
    the inputs carry one)."""
    keys = ["seed", "git_commit"]
    if any("config_hash" in p for p in res.inputs.values()):
        keys.append("config_hash")
    rows = [[f"`{rel}`", *(str(p.get(k, "—")) for k in keys)]
            for rel, p in sorted(res.inputs.items())]
    return ["input", *(k.replace("_", " ") for k in keys)], rows


def _tables_blocks(tables: dict, sources: dict[str, int]) -> list[tuple]:
    blocks: list[tuple] = [("h", 2, "Main results")]
    for ds, table in tables.items():
        metric = METRIC_NAMES[table["metric"]]
        blocks.append(("h", 3, f"{ds} ({table['kind']}; {metric})"))
        blocks.append(("table", *format_main_table(table, sources)))
    blocks.append(("p", "Our numbers are percent on our data; the paper columns are the "
                        "paper's figures on COCO (compared with COCO and the synthetic set) or "
                        "VOC. Each figure is the mean ± sample standard deviation over the "
                        "row's replicates (`replicates`: each retrains its classifier and its "
                        "detector from another seed, and with `search_seeds` runs its own "
                        "search); top-1 likewise over its classifier's replicates. In "
                        "brackets: the 95% interval of the mean with both sources of noise, "
                        "training (the replicates' spread, pooled over the rows of the column) "
                        "and the test images (200 resamples, the same for every row); with one "
                        "replicate, the test images' interval alone, and the training noise is "
                        "unknown (docs/noise.md). A blank paper cell means the references give "
                        "no figure."))
    blocks += _noise_blocks(tables)
    blocks.append(("ul", [f"[{n}] {s}" for s, n in sorted(sources.items(), key=lambda x: x[1])]))
    return blocks


def _noise_blocks(tables: dict) -> list[tuple]:
    """The training noise of each column and the smallest difference it resolves."""
    return [("h", 3, "The noise the figures rest on"), ("table", *format_noise_table(tables))]


def _search_blocks(cfg: StudyConfig, searches: dict, stability: dict) -> list[tuple]:
    blocks: list[tuple] = [("h", 2, "Evolutionary search against random search")]
    rows = [[f"`{k}`", str(s["evaluations"]), f"{s['best']:.4f}", f"{s['median']:.4f}",
             f"{s['mean']:.4f}", str(s["best_at"])] for k, s in searches.items()]
    blocks.append(("table", ["search", "evaluations", "best fitness", "median", "mean",
                             "best found at"], rows))
    if cfg.search_seeds > 1:
        blocks += [("h", 3, "Stability over search seeds"),
                   ("p", f"Each search ran with {cfg.search_seeds} seeds (`search_seeds`); "
                         "replicate k of a searched row retrains search seed k's winner."),
                   ("table", *format_stability_table(stability))]
    figs = expected_figures(cfg)
    for name, caption in figs.items():
        if name.startswith(("search_", "flops_fitness_")):
            blocks.append(("img", f"figures/{name}", caption))
    return blocks


def _rank_blocks(cfg: StudyConfig, ranking: list[dict]) -> list[tuple]:
    if not cfg.rank.enabled:
        return []
    blocks: list[tuple] = [
        ("h", 2, "Ranking check: does the supernet rank nets as standalone training does?"),
        ("p", f"{cfg.rank.archs} architectures spread over the search's FLOPs range, each trained "
              "alone from scratch on the supernet's training split (`rank.train`) and scored on "
              "the search split, against their fitness on each supernet (the search's own "
              "function on the same split). Kendall's tau-b and Spearman's rho, with p-values "
              "(`results/rank/{dataset}/{detector}/rank.json`)."),
        ("table", *format_rank_table(ranking))]
    for name, caption in expected_figures(cfg).items():
        if name.startswith("rank_"):
            blocks.append(("img", f"figures/{name}", caption))
    return blocks


def _arch_blocks(cfg: StudyConfig, kernels: list[dict]) -> list[tuple]:
    blocks: list[tuple] = [("h", 2, "Searched architectures")]
    blocks.append(("p", "One cell per block: 3/5/7 = ShuffleNetV2 block with that depthwise "
                        "kernel, X = Xception block; stages separated."))
    for name, caption in expected_figures(cfg).items():
        if name.startswith("archs_"):
            blocks.append(("img", f"figures/{name}", caption))
    rows = [[k["label"], f"`{k['arch']}`", " / ".join(f"{m:.2f}" for m in k["kernel_per_stage"]),
             " / ".join(f"{m:.2f}" for m in k["receptive_per_stage"]),
             f"{k['shallow_minus_deep']:+.2f}"] for k in kernels]
    blocks.append(("h", 3, "Mean kernel size per stage"))
    blocks.append(("table", ["net", "arch", "kernel per stage (X = 3)",
                             "receptive field per stage (X = 7)", "shallow - deep"], rows))
    blocks.append(("h", 2, "NATS dilations"))
    caption = expected_figures(cfg)["nats_dilations.png"]
    blocks.append(("img", "figures/nats_dilations.png", caption))
    return blocks


def _summary_blocks(records: list[dict], notes: list[str]) -> list[tuple]:
    """What the study found, first: the headline table and the observations outside the noise
    (or of rows that are the same network); the details follow."""
    key = key_observations(notes) or [
        "No difference between two rows is decided beyond the noise of training and of the "
        "test images (every observation is under Observations)."]
    return [("h", 2, "Summary"),
            ("p", "Each row of the study: AP50 and mmAP (the mean over its seeds), top-1 of its "
                  "classification training, backbone FLOPs and what it cost in GPU-hours "
                  "(CPU-hours for a study on the CPU; its stages and those it builds on). The "
                  "tables, figures and every observation follow."),
            ("table", *format_headline([r for r in records if _measured(r)])),
            ("h", 3, "Findings"), ("ul", key)]


def _measured(record: dict) -> bool:
    """A headline row with a detection number (a row the study did not run stays out of the
    summary; the main tables show it blank)."""
    return any(record[k] is not None for k in ("ap50", "mmap", "flops"))


def _cost_blocks(costs: dict) -> list[tuple]:
    (stage_header, stage_rows), (row_header, row_rows) = format_cost_tables(costs)
    return [("h", 2, "Cost"),
            ("p", "What each stage cost (the `cost` record of its `metrics.json`): wall time, "
                  "GPU-hours (the GPUs of its process model x wall time; 0 on the CPU), CPU "
                  "time, peak host memory and peak CUDA memory of its main process."),
            ("table", stage_header, stage_rows),
            ("h", 3, "Per row of the study"),
            ("p", "A row costs its own stages and those it builds on (the supernets, ResNet-50's "
                  "ImageNet training for NATS), which therefore count in every row that uses "
                  "them; the last line counts each stage once."),
            ("table", row_header, row_rows)]


def build_report(cfg: StudyConfig, results: str | Path, out: str | Path) -> dict:
    """Write ``report.md``, ``report.html``, ``tables.json`` and ``figures/`` under ``out``.

    Returns:
        The content of ``tables.json``.
    """
    out = Path(out)
    res = collect(cfg, results)
    tables = {ds: main_table(cfg, res, ds) for ds in cfg.datasets}
    searches = search_tables(res)
    stability = search_stability(cfg, res)
    archs = searched_archs(cfg, res)
    kernels = kernel_table(archs)
    ranking = rank_table(res)
    notes = observations(cfg, res, tables, kernels, ranking)
    costs = cost_tables(cfg, collect_costs(res.root))
    records = headline(res, tables, costs)
    write_figures(cfg, res, archs, out / layout.FIGURES)
    prov = _provenance(cfg, res)
    sources: dict[str, int] = {}
    blocks: list[tuple] = [("h", 1, "DetNAS / NATS results"),
                           ("p", f"Results folder `{res.root}`, space `{cfg.space}`, datasets "
                                 f"{', '.join(cfg.datasets)}, detectors "
                                 f"{', '.join(cfg.detectors)}.")]
    blocks += _summary_blocks(records, notes)
    blocks += _tables_blocks(tables, sources)
    blocks += _search_blocks(cfg, searches, stability)
    blocks += _rank_blocks(cfg, ranking)
    blocks += _arch_blocks(cfg, kernels)
    blocks += _cost_blocks(costs)
    blocks += [("h", 2, "Observations"), ("ul", notes), ("h", 3, "The paper's claims"),
               ("ul", list(PAPER_CLAIMS)), ("h", 2, "Missing inputs"),
               ("ul", [f"`{m}`" for m in res.missing])]
    blocks += _provenance_blocks(cfg, res, prov)
    data = {"headline": records, "tables": tables, "searches": searches,
            "search_stability": stability, "ranking": ranking,
            "kernels": kernels, "cost": costs,
            "observations": notes,
            "missing": res.missing, "figures": list(expected_figures(cfg)),
            "paper_sources": {str(n): s for s, n in sources.items()}, "provenance": prov}
    save_json(out / layout.TABLES, data)
    md = render_markdown(blocks).encode()
    atomic_write(out / layout.REPORT_MD, lambda f: f.write(md))
    page = render_html(blocks, out, "DetNAS / NATS results").encode()
    atomic_write(out / layout.REPORT_HTML, lambda f: f.write(page))
    log.info("report written to %s (%d missing inputs)", out, len(res.missing))
    return data


def _provenance(cfg: StudyConfig, res: Results) -> dict:
    """What the report is made from: the config, the code, and its inputs' commits, seeds and
    numeric environments (each input's provenance under ``inputs``)."""
    return {"config_hash": config_hash(cfg), "seed": cfg.seed, "space": cfg.space,
            "report_git_commit": git_commit(),
            "input_git_commits": sorted({str(p.get("git_commit")) for p in res.inputs.values()
                                         if p.get("git_commit")}),
            "input_seeds": sorted({p["seed"] for p in res.inputs.values() if "seed" in p}),
            "numeric_environments": sorted({environment_key(p["numeric_environment"])
                                            for p in res.inputs.values()
                                            if "numeric_environment" in p}),
            "inputs": res.inputs}


def _provenance_blocks(cfg: StudyConfig, res: Results, prov: dict) -> list[tuple]:
    """The report's provenance section (`_provenance`), and each input's in a table."""
    return [("h", 2, "Provenance"),
            ("p", f"Config hash `{prov['config_hash']}`, seed {cfg.seed}, report built at "
                  f"commit `{prov['report_git_commit']}`; inputs from commits "
                  f"{', '.join(f'`{c}`' for c in prov['input_git_commits']) or '—'}, seeds "
                  f"{', '.join(map(str, prov['input_seeds'])) or '—'}; numeric "
                  f"environment {'; '.join(prov['numeric_environments']) or '—'} (the "
                  "figures are bit-identical only where it is the same: README, Results "
                  "of the embedded default)."),
            ("table", *provenance_table(res))]
