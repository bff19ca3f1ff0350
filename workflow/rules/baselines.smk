# The config keys each baseline's arch.json depends on.
BASELINE_KEYS = {"shufflenetv2": ["space"], "resnet50": ["nats.depth", "nats.width"]}


rule arch_spec:
    """A hand-crafted baseline's arch.json: ShuffleNetV2 of the config's space, or ResNet-50."""
    output:
        rpath(layout.baseline_arch()),
    log:
        "logs/archs/{baseline}.log",
    wildcard_constraints:
        baseline=_alt(layout.BASELINES),
    params:
        cfg=lambda w: part(*BASELINE_KEYS[w.baseline]),
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
