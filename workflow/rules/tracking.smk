rule tracking_init:
    """The MLflow store, experiment and parent run, once, before the parallel jobs start."""
    output:
        rpath(layout.TRACKING),
    log:
        "logs/tracking_init.log",
    params:
        cfg=part("tracking"),
    threads: 1
    resources:
        gpu=0,
        mem_mb=1000,
        runtime=10,
    shell:
        detnas(
            "tracking init",
        )


# The study's resolved config, written once per run, under the working directory's lock (no dry
# run, no invocation the lock refuses, no job a cluster executor spawns runs this handler); and,
# on a local run, the warm server its jobs fork from.
onstart:
    write_study_config()
    start_warm_server()


# The parent run ends with the invocation: FINISHED when every job succeeded, FAILED otherwise
# (a later invocation's stages still log under it, and its end sets the status again). Not run
# by dry runs, nor by the jobs Snakemake spawns on a cluster (they run with --no-hooks).
onsuccess:
    shell(f"detnas tracking finish --config {STUDY_CONFIG} --status FINISHED")


onerror:
    shell(f"detnas tracking finish --config {STUDY_CONFIG} --status FAILED")
