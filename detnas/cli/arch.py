"""``detnas arch``: show, list and sample architectures."""

from __future__ import annotations

import random

from detnas.cli.common import add_config_args, load_config, print_json
from detnas.plan import flops, space, study


def register(sub) -> None:
    p = sub.add_parser("arch", help="architectures: show, list, sample")
    cmds = p.add_subparsers(dest="arch_command", required=True, metavar="ARCH_COMMAND")

    show = cmds.add_parser("show", help="encoding, FLOPs and params of a named or encoded arch")
    show.add_argument("arch", help="a registered name or an encoding like 2120-2112-33130031-3132")
    show.add_argument("--space", default=None, help=f"one of {', '.join(space.SPACES)}")
    show.add_argument("--input-size", type=int, default=224)
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=_show)

    lst = cmds.add_parser("list", help="the registered architectures (with --config: against "
                                      "the config's FLOPs limit)")
    lst.add_argument("--json", action="store_true")
    add_config_args(lst)
    lst.set_defaults(func=_list)

    smp = cmds.add_parser("sample", help="seeded random architectures")
    smp.add_argument("--space", required=True)
    smp.add_argument("--max-flops", type=float, default=None, help="backbone FLOPs limit at 224")
    smp.add_argument("-n", type=int, default=1)
    smp.add_argument("--seed", type=int, default=0)
    smp.set_defaults(func=_sample)

    spec = cmds.add_parser("spec", help="write the arch.json of a baseline or a named arch")
    baselines = " | ".join(r.name for r in study.ROWS if r.kind == "baseline")
    spec.add_argument("arch", help=f"{baselines} | a registered name | an encoding")
    add_config_args(spec)
    spec.add_argument("--out", required=True, help="arch.json to write")
    spec.set_defaults(func=_spec)


def _show(args) -> int:
    arch = space.resolve(args.arch, args.space)
    info = flops.summary(arch, args.input_size)
    if args.json:
        print_json(info)
    else:
        for k, v in info.items():
            print(f"{k:18} {v:,}" if isinstance(v, int) else f"{k:18} {v}")
    return 0


def _within(info: dict, cfg) -> str:
    """``ok`` / ``over`` against the config's search limit, ``-`` for other spaces or no limit."""
    if cfg is None or info["space"] != cfg.space or not cfg.search.max_flops:
        return "-"
    size = flops.backbone_flops(space.Arch.parse(info["arch"], info["space"]),
                                cfg.search.flops_input_size)
    return "ok" if size <= cfg.search.max_flops else "over"


def _list(args) -> int:
    cfg = load_config(args) if args.config or args.overrides else None
    rows = []
    for named in space.REGISTRY.values():
        info = flops.summary(named.arch)
        rows.append({"name": named.name, **info, "source": named.source,
                     "within_limit": _within(info, cfg)})
    if args.json:
        print_json(rows)
        return 0
    if cfg is not None:
        print(f"search limit: {cfg.search.max_flops / 1e6:.0f}M backbone FLOPs at "
              f"{cfg.search.flops_input_size} in space {cfg.space}")
    print(f"{'name':28} {'space':5} {'backbone MFLOPs':>15} {'classifier MFLOPs':>17} "
          f"{'limit':>5}  arch")
    for r in rows:
        print(f"{r['name']:28} {r['space']:5} {r['backbone_flops'] / 1e6:15.1f} "
              f"{r['classifier_flops'] / 1e6:17.1f} {r['within_limit']:>5}  {r['arch']}")
    return 0


def _sample(args) -> int:
    space.get_space(args.space)
    rng = random.Random(args.seed)
    table = flops.cost_table(args.space)
    for _ in range(args.n):
        if args.max_flops is None:
            arch = space.sample(args.space, rng)
        else:
            arch = space.sample_within(args.space, rng, table.backbone_flops, args.max_flops)
        print(arch)
    return 0


def _spec(args) -> int:
    from detnas.io import save_json
    from detnas.nets.backbones import shufflenet_spec
    from detnas.plan.typed import to_dict
    from detnas.provenance import provenance
    from detnas.run.train import baseline_spec

    cfg = load_config(args)
    row = study.find(cfg, args.arch)
    if row is not None and row.kind == "baseline":
        spec = baseline_spec(cfg, args.arch)
    else:
        spec = shufflenet_spec(space.resolve(args.arch, cfg.space))
    save_json(args.out, {**spec, "provenance": provenance(to_dict(cfg), cfg.seed)})
    return 0
