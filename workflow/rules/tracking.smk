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
