rule arch_spec:
    """A hand-crafted baseline's arch.json: ShuffleNetV2 of the config's space, or ResNet-50."""
    output:
        rpath(layout.baseline_arch()),
    log:
        "logs/archs/{baseline}.log",
    wildcard_constraints:
        baseline=_alt(BASELINES),
    params:
        cfg=lambda w: part(*study_row(w.baseline).spec_keys),
    threads: 1
    resources:
        gpu=0,
        mem_mb=1000,
        runtime=10,
    shell:
        detnas(
            "arch spec {wildcards.baseline}",
            "--out {output}",
        )
