"""One stage run's record: what it is made from, where it is tracked, what it leaves behind.

Every stage body (the training stages of `detnas.run.train`, the search `detnas.search.stage`, the
NATS search `detnas.nats.search`, the ranking check `detnas.search.rank`) does its work inside a
`StageRecord`::

    with StageRecord.open(cfg, "search", out, tags, inputs=..., facts=...) as record:
        ...  # the work: record.fingerprint binds its resumable state, record.tracker logs
        record.write(metrics)

- Before the work (`StageRecord.open`): the config is resolved once (`to_dict`; the fingerprint,
  the provenance, the ``config_hash`` tag and the tracked ``config.yaml`` all read that one dict),
  the fingerprint of what the run is made from is computed (`detnas.provenance.fingerprint`), the
  provenance is built, and the tracker (`detnas.run.tracking`) is opened, which checks the store: a
  store that cannot be written fails here, before any work. The tracker's meter (`detnas.cost`)
  starts with it.
- After the work (`write`): the stage's numbers with the cost of the work (``cost``) as
  ``metrics.json`` (or the stage's own file: the ranking check's ``rank.json``), and the
  provenance with the resolved config as ``config.yaml``, each written atomically. Leaving the
  ``with`` block ends the tracker's run: FINISHED, FAILED on an error, KILLED on a stop signal
  (`detnas.run.stop.Stopped`, whose step the work has saved).

The provenance's numeric environment is read again when the outputs are written
(`final_provenance`): the work may import torchvision, start CUDA or set the threads (a search's
fitness does), and the outputs carry the environment the work ran in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from detnas.io import save_json, save_text
from detnas.plan import layout
from detnas.plan.config import StudyConfig
from detnas.plan.typed import to_dict
from detnas.provenance import fingerprint, numeric_environment, provenance, source
from detnas.run import tracking


@dataclass
class StageRecord:
    """The record of one run of a stage, opened before its work (`open`), written after
    (`write`); a context manager that ends the tracker's run."""

    cfg: StudyConfig
    stage: str
    out: Path
    config: dict  # the resolved config (`to_dict`), computed once
    fingerprint: str | None  # what the run is made from; None for a stage that resumes nothing
    provenance: dict  # what every output carries (`detnas.provenance.provenance`)
    tracker: tracking.NullTracker

    @classmethod
    def open(cls, cfg: StudyConfig, stage: str, out: str | Path, tags: dict, *,
             inputs: Iterable[str | Path | None] | None = None, facts: dict | None = None,
             about: dict | None = None, sources: dict[str, str | Path] | None = None,
             seed: int | None = None, keep_fingerprint: bool = True, name: str | None = None,
             gpus: int = 0, arch: dict | None = None, main: bool = True) -> StageRecord:
        """Resolve the config, fingerprint the run, build the provenance and open the tracker.

        Args:
            cfg, stage, out: the study config, the stage's name, its output folder.
            tags: the run's tags (ablation, dataset, detector, space, ...:
                `detnas.run.tracking.stage_tags`).
            inputs: the files and folders the run reads (by content); with ``facts`` (the
                stage's other settings: detector, arch, ...) they make the fingerprint. None:
                the stage has no resumable state, and no fingerprint.
            about: what the provenance says of the run beside its stage (in order).
            sources: the input checkpoints whose origin the provenance records, by role
                (`detnas.provenance.source`).
            seed: the provenance's seed (default: the replicate's, ``cfg.run_seed``).
            keep_fingerprint: the provenance carries the fingerprint (the search's has never:
                its state file alone does).
            name, gpus, arch, main: the tracker's (`detnas.run.tracking.start_stage`).

        Raises:
            ValueError: an input does not exist, or the store cannot be written.
        """
        config = to_dict(cfg)
        made_from = None if inputs is None else fingerprint(config, inputs, stage=stage,
                                                             **(facts or {}))
        extra: dict[str, Any] = dict(about or {})
        if made_from is not None and keep_fingerprint:
            extra["fingerprint"] = made_from
        if sources:
            extra["sources"] = {role: source(path) for role, path in sources.items()}
        prov = provenance(config, cfg.run_seed if seed is None else seed, stage=stage, **extra)
        tracker = tracking.start_stage(cfg, stage, tags, name=name, gpus=gpus, arch=arch,
                                       out=out, main=main, resolved=config)
        return cls(cfg, stage, Path(out), config, made_from, prov, tracker)

    def final_provenance(self) -> dict:
        """The provenance as the outputs carry it, its numeric environment read now, once the
        work is done (updated in place: a checkpoint that holds it carries the same)."""
        self.provenance["numeric_environment"] = numeric_environment()
        return self.provenance

    def write(self, numbers: dict, *, after: dict | None = None, provenance: bool = False,
              name: str = layout.METRICS) -> dict:
        """Write ``{**numbers, "cost": ..., **after}`` to ``out/name`` and the provenance with
        the resolved config to ``out/config.yaml`` (`layout.STAGE_CONFIG`), atomically.

        The cost (`detnas.run.tracking.NullTracker.cost`) is the work's so far, also logged as
        ``cost.*`` metrics; ``provenance``: ``name`` carries the provenance too, less the config
        (``config.yaml`` has it). Returns what was written to ``name``.
        """
        final = self.final_provenance()
        written = {**numbers, "cost": self.tracker.cost(), **(after or {})}
        if provenance:
            written["provenance"] = {k: v for k, v in final.items() if k != "config"}
        save_json(self.out / name, written)
        save_text(self.out / layout.STAGE_CONFIG, yaml.safe_dump(final, sort_keys=False))
        return written

    def __enter__(self) -> StageRecord:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.tracker.__exit__(exc_type, exc, tb)
