"""The README's results block, written from a report's ``tables.json`` (``make readme``).

The block sits between `BEGIN` and `END` in README.md; `readme_block` is its only writer, and the
``tables.json`` it was written from is kept beside it (docs/results/tables.json), so a test can
check that the README shows exactly what that run produced.
"""

from __future__ import annotations

from pathlib import Path

from detnas.io import atomic_write, load_json
from detnas.report.document import render_markdown
from detnas.report.paper import METRIC_NAMES
from detnas.report.tables import (
    format_main_table,
    format_noise_table,
    format_rank_table,
    verdict_notes,
)

BEGIN = "<!-- results: written by `make readme` from docs/results/tables.json; do not edit -->"
END = "<!-- /results -->"


def readme_block(tables: dict) -> str:
    """The Markdown of the results block (markers included) for a report's ``tables.json``."""
    blocks: list[tuple] = []
    for name, table in tables["tables"].items():
        header, rows = format_main_table(table, {})
        keep = 5 + len(table["detectors"])  # model, backbone, FLOPs, params, top-1, a metric each
        blocks += [("p", f"Dataset `{name}` ({METRIC_NAMES[table['metric']]} on its test "
                         "split, %):"),
                   ("table", header[:keep], [r[:keep] for r in rows])]
    blocks += [("p", "The noise these figures rest on (training: the replicates' spread, pooled "
                     "over the rows; test images: paired resamples; docs/noise.md):"),
               ("table", *format_noise_table(tables["tables"])),
               ("p", "Verdicts (each difference against both sources of noise, at 95%):"),
               ("ul", verdict_notes(tables["tables"]))]
    if tables.get("ranking"):
        blocks += [("p", "Ranking check (supernet fitness against standalone training of the "
                         "same nets, on the search split):"),
                   ("table", *format_rank_table(tables["ranking"]))]
    prov = tables["provenance"]
    blocks.append(("p", f"Written from `results/report/tables.json` of `make run` at commit "
                        f"`{prov['report_git_commit']}` (config hash `{prov['config_hash']}`, "
                        f"seed {prov['seed']}, numeric environment "
                        f"{'; '.join(prov.get('numeric_environments', [])) or '—'}); the full "
                        "report with the paper's figures beside these: "
                        "`results/report/report.md`."))
    return f"{BEGIN}\n{render_markdown(blocks)}{END}"


def write_readme(tables_path: str | Path, readme_path: str | Path) -> None:
    """Replace the results block of ``readme_path`` with the one of ``tables_path``.

    Raises:
        ValueError: the README has no block (its `BEGIN` / `END` markers).
    """
    readme_path = Path(readme_path)
    text = readme_path.read_text()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{readme_path}: no results block (the lines {BEGIN!r} ... {END!r})")
    new = text[:start] + readme_block(load_json(tables_path)) + text[end + len(END):]
    atomic_write(readme_path, lambda f: f.write(new.encode()))
