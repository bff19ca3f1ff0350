"""``detnas tracking init``: the MLflow store and the pipeline's parent run, before any job;
``detnas tracking finish --status S``: end that run (the Snakefile's onsuccess / onerror);
``detnas tracking replay FOLDER``: log what a stage could not (its ``tracking_pending.json``);
``detnas tracking relocate``: point a copied store's artifact locations at this results folder;
``detnas tracking serve [--stop]``: the study's own tracking server (PostgreSQL + mlflow server)."""

from __future__ import annotations

from detnas.cli.common import add_config_args, load_config


def register(sub) -> None:
    p = sub.add_parser("tracking", help="MLflow tracking")
    cmds = p.add_subparsers(dest="tracking_command", required=True, metavar="TRACKING_COMMAND")
    init = cmds.add_parser("init", help="create the store and the parent run of this pipeline")
    add_config_args(init)
    init.add_argument("--name", default="study", help="run name of the parent run")
    init.set_defaults(func=_init)
    finish = cmds.add_parser("finish", help="end the parent run of this pipeline "
                             "(FINISHED when the study succeeded, FAILED when it failed)")
    add_config_args(finish)
    finish.add_argument("--status", required=True, choices=("FINISHED", "FAILED", "KILLED"))
    finish.set_defaults(func=_finish)
    replay = cmds.add_parser("replay", help="log to MLflow what a stage run could not (the "
                             "tracking_pending.json its folder keeps when the store failed)")
    replay.add_argument("folders", nargs="+", metavar="FOLDER", help="a stage's output folder")
    replay.set_defaults(func=_replay)
    relocate = cmds.add_parser("relocate", help="point the artifact locations of a store "
                               "recorded in another folder at this study's results folder")
    add_config_args(relocate)
    relocate.set_defaults(func=_relocate)
    serve = cmds.add_parser("serve", help="start (in the background) or --stop the study's own "
                            "MLflow tracking server (PostgreSQL, mlflow server) for its results "
                            "folder: the jobs of a study with tracking.uri: server log to it")
    add_config_args(serve)
    serve.add_argument("--host", default="127.0.0.1", help="the address it listens on "
                       "(default 127.0.0.1: this machine's jobs only; a cluster's login node: "
                       "0.0.0.0 or its name on the cluster's network)")
    serve.add_argument("--port", type=int, default=0,
                       help="its port (default: the one it had, else a free one)")
    serve.add_argument("--workers", type=int, default=4, help="mlflow server's worker processes")
    serve.add_argument("--stop", action="store_true", help="stop it (its records are kept)")
    serve.set_defaults(func=_serve)


def _init(args) -> int:
    from detnas.io import save_json
    from detnas.plan import layout, typed
    from detnas.provenance import git_commit
    from detnas.run import tracking

    cfg = load_config(args)
    if not cfg.tracking.enabled:
        save_json(f"{cfg.results}/{layout.TRACKING}", {"enabled": False})
        return 0
    run_id = tracking.init_parent(
        cfg.tracking.uri, cfg.tracking.experiment, cfg.results, args.name,
        {"space": cfg.space, "seed": cfg.seed, "config_hash": typed.config_hash(cfg),
         "git_commit": git_commit()},
    )
    print(run_id)
    return 0


def _finish(args) -> int:
    from detnas.run import tracking

    cfg = load_config(args)
    run_id = tracking.finish_parent(cfg.results, args.status) if cfg.tracking.enabled else None
    print(f"{run_id} {args.status}" if run_id else "no parent run: nothing to finish")
    return 0


def _replay(args) -> int:
    from detnas.run import tracking

    for folder in args.folders:
        print(f"{folder}: {tracking.replay(folder)} calls logged")
    return 0


def _relocate(args) -> int:
    from detnas.run import tracking

    cfg = load_config(args)
    moved = (tracking.relocate(cfg.tracking.uri, cfg.tracking.experiment, cfg.results)
             if cfg.tracking.enabled else None)
    print(f"artifacts: {moved[0]} -> {moved[1]}" if moved else "artifacts: nothing to relocate")
    return 0


def _serve(args) -> int:
    from detnas.plan import layout
    from detnas.plan.config import SERVER
    from detnas.run import tracking_server

    cfg = load_config(args)
    if args.stop:
        print("stopped" if tracking_server.stop(cfg.results) else "no tracking server running")
        return 0
    if cfg.tracking.uri != SERVER:
        raise ValueError(f"{args.config or 'config'}: tracking.uri is {cfg.tracking.uri!r}, not "
                         f"{SERVER}: the study would not log to this server")
    state = tracking_server.serve(cfg.results, args.host, args.port, args.workers)
    where = tracking_server.folder(cfg.results)
    print(f"tracking server: {state['uri']} (user {state['username']}, password in "
          f"{where / tracking_server.STATE}); PostgreSQL on 127.0.0.1:{state['pg_port']}; "
          f"artifacts in {cfg.results}/{layout.ARTIFACTS}")
    return 0
