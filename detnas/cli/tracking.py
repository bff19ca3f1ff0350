"""``detnas tracking init``: the MLflow store and the pipeline's parent run, before any job."""

from __future__ import annotations

from detnas.cli.common import add_config_args, load_config


def register(sub) -> None:
    p = sub.add_parser("tracking", help="MLflow tracking")
    cmds = p.add_subparsers(dest="tracking_command", required=True, metavar="TRACKING_COMMAND")
    init = cmds.add_parser("init", help="create the store and the parent run of this pipeline")
    add_config_args(init)
    init.add_argument("--name", default="study", help="run name of the parent run")
    init.set_defaults(func=_init)


def _init(args) -> int:
    from detnas import config, layout, tracking
    from detnas.checkpoint import git_commit, save_json

    cfg = load_config(args)
    if not cfg.tracking.enabled:
        save_json(f"{cfg.results}/{layout.TRACKING}", {"enabled": False})
        return 0
    run_id = tracking.init_parent(
        cfg.tracking.uri, cfg.tracking.experiment, cfg.results, args.name,
        {"space": cfg.space, "seed": cfg.seed, "config_hash": config.config_hash(cfg),
         "git_commit": git_commit()},
    )
    print(run_id)
    return 0
