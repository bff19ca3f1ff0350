"""The results report: the paper's tables, the EA-against-random curves and the searched nets.

`build_report` reads a results folder (the layout below), writes ``report.md`` (figures linked),
``report.html`` (figures embedded, self-contained), ``tables.json`` and ``figures/*.png``. A
missing input never stops the report: its cells stay blank and the file is named in the report.

Inputs: what a study writes, and where, is `detnas.plan.layout.outputs`
(`detnas.report.results.collect` reads that list): the retrained classifiers' and detectors'
metrics.json (top1; mmap, ap50, voc07, backbone FLOPs and params, arch, bootstrap: mmap and ap50 on
test resamples) of every replicate (`replicates`: ``rep{K}/`` folders), each search's history.csv
(order, generation, arch, fitness, flops) and arch.json (its winner) of every search seed, each NATS
search's arch.json (dilations per layer) and each ranking check's rank.json (`rank.enabled`). The
noise under every figure and the verdict of every comparison: `detnas.report.noise`.

Figure file names depend on the config only (`expected_figures`), so a Snakemake rule can list
them as ``report()`` outputs; a figure without data is drawn as a labelled placeholder.

The rows of the report, their names, colours and comparisons are the study's (`detnas.plan.study`).
Modules, each importing only those above it: `detnas.report.paper` (reference figures, claims,
names), `detnas.report.results` (loading), `detnas.report.tables` (main table, searches,
architectures, observations), `detnas.report.ledger` (the Cost section: every stage's ``cost``
record, found by tag anywhere under the results folder), `detnas.report.headline` (one record
per row of the study: the report's summary, DVC's headline metrics), `detnas.report.figures`
(matplotlib, Agg) and `detnas.report.document` (Markdown / HTML and `build_report`).
"""

from detnas.report.document import build_report, render_html, render_markdown
from detnas.report.figures import arch_cells, dilation_matrix, expected_figures, write_figures
from detnas.report.paper import PAPER, PAPER_CLAIMS, Ref
from detnas.report.results import Results, collect, read_history, search_key
from detnas.report.tables import (
    RECEPTIVE_FIELDS,
    evaluations_to_reach,
    format_main_table,
    kernel_table,
    main_table,
    observations,
    search_curve,
    search_summary,
    search_tables,
    searched_archs,
    shallow_minus_deep,
    stage_kernel_means,
)

__all__ = [
    "PAPER",
    "PAPER_CLAIMS",
    "RECEPTIVE_FIELDS",
    "Ref",
    "Results",
    "arch_cells",
    "build_report",
    "collect",
    "dilation_matrix",
    "evaluations_to_reach",
    "expected_figures",
    "format_main_table",
    "kernel_table",
    "main_table",
    "observations",
    "read_history",
    "render_html",
    "render_markdown",
    "search_curve",
    "search_key",
    "search_summary",
    "search_tables",
    "searched_archs",
    "shallow_minus_deep",
    "stage_kernel_means",
    "write_figures",
]
