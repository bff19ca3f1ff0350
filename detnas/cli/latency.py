"""``detnas latency-table`` and ``detnas latency-check``: latency on this machine's device."""

from __future__ import annotations

from detnas.cli.common import add_config_args, load_config, print_json


def register(sub) -> None:
    p = sub.add_parser(
        "latency-table", help="measure the per-block latency table of the config's space",
        description="Time the first conv and every (block, choice) of the config's space on "
                    "the device of the config's `latency` section (batch_size, input_size, "
                    "threads, warmup, repeats, clock), and write the table that "
                    "search.max_latency reads.")
    add_config_args(p)
    p.add_argument("--out", default=None, metavar="JSON",
                   help="table to write (default: latency.table, or "
                        "<results>/latency/table.json)")
    p.set_defaults(func=_table)

    c = sub.add_parser(
        "latency-check", help="predicted vs measured latency of architectures",
        description="Predict the backbone latency of each arch from a latency table and measure "
                    "its whole standalone backbone with the table's own settings.")
    c.add_argument("archs", nargs="+", metavar="ARCH",
                   help="arch.json files, registered names or encodings of the table's space")
    c.add_argument("--table", required=True, metavar="JSON", help="the latency table")
    c.set_defaults(func=_check)


def _table(args) -> int:
    from detnas.latency import measure_table, measurement
    from detnas.plan.config import latency_table_path
    from detnas.plan.latency import save_table
    from detnas.plan.typed import to_dict
    from detnas.provenance import provenance

    cfg = load_config(args)
    out = args.out or latency_table_path(cfg)
    table = measure_table(cfg.space, measurement(cfg), cfg.seed)
    save_table(out, table, **provenance(to_dict(cfg), cfg.seed, stage="latency-table"))
    print_json({"table": str(out), "space": table.space, "device_name": table.device_name,
                "torch": table.torch, "threads": table.threads,
                "stem_ms": table.stem_ms, "floor_ms": table.floor(),
                "ceiling_ms": table.stem_ms + sum(max(row) for row in table.blocks_ms)})
    return 0


def _check(args) -> int:
    from detnas.io import load_json
    from detnas.latency import check_winners
    from detnas.plan.latency import load_table
    from detnas.plan.space import Arch, resolve

    data = load_json(args.table)
    table = load_table(args.table, str(data.get("space") if isinstance(data, dict) else None))
    archs = []
    for text in args.archs:
        if text.endswith(".json"):
            spec = load_json(text)
            if spec.get("space") != table.space or "arch" not in spec:
                raise ValueError(f"{text}: not an arch.json of space {table.space} "
                                 f"(space {spec.get('space')!r})")
            archs.append(Arch.parse(spec["arch"], table.space))
        else:
            archs.append(resolve(text, table.space))
    rows = check_winners(table, archs)
    if not rows:
        raise ValueError(f"{args.table}: measured on {table.measurement.device}, which this "
                         "machine does not have")
    print_json(rows)
    return 0
