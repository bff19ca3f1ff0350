"""``detnas config check FILE``: the checks the workflow makes of its config when it is parsed."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("config", help="check a study config")
    cmds = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    c = cmds.add_parser(
        "check", help="check a config as `snakemake -n --configfile FILE` does",
        description="Load FILE and check it as the workflow does when it is parsed (types, "
                    "bounds, the cross-field checks, the input files there already); print one "
                    "line, FILE: OK, or the error (a YAML syntax error as FILE:LINE:COLUMN: ...), "
                    "and exit 2 on an error. Snakemake itself says only 'Config file is not "
                    "valid JSON or YAML' of a --configfile it cannot read.")
    c.add_argument("file", metavar="FILE", help="study config YAML")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field, as snakemake's --config KEY=VALUE (repeatable)")
    c.set_defaults(func=_check)


def _check(args) -> int:
    from detnas.plan import config, preflight

    cfg = config.load(args.file, args.overrides, generated=True)
    preflight.check_workflow(cfg, args.file)
    print(f"{args.file}: OK")
    return 0
