rule arch_spec:
    """A hand-crafted baseline's arch.json: ShuffleNetV2 of the config's space, or ResNet-50."""
    output:
        f"{R}/archs/{{baseline}}/arch.json",
    log:
        "logs/archs/{baseline}.log",
    wildcard_constraints:
        baseline=_alt(BASELINES),
    params:
        cfg=lambda w: part("space") if w.baseline == "shufflenetv2" else part("nats"),
    threads: 1
    resources:
        gpu=0,
        mem_mb=1000,
        runtime=10,
    shell:
        "detnas arch spec {wildcards.baseline} --config {STUDY_CONFIG} --out {output} > {log} 2>&1"
