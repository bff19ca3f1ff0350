rule supernet_classification:
    """Step 1: pre-train the supernet on classification, one sampled path per step (not a job of a
    study that starts from a published one: `CLS_SUPERNET`)."""
    input:
        CLS_TRAIN,
        CLS_VAL,
        TRACKING,
    output:
        checkpoint=rpath(layout.classification_supernet_dir(), layout.CHECKPOINT),
        metrics=report(
            rpath(layout.classification_supernet_dir(), layout.METRICS),
            caption="../report/supernet.rst",
            category="Supernet",
            labels={"task": "classification", "dataset": "-", "detector": "-", "init": "-"},
        ),
    log:
        "logs/supernet/cls.log",
    params:
        cfg=part("seed", "space", "classification", "supernet_pretrain"),
        out=out_dir,
    threads: 1
    resources:
        gpu=0,
        nodes=1,
        mem_mb=3000,
        runtime=60,
    shell:
        detnas(
            "train supernet",
            "--task classification --out {params.out}",
            launch=True,
        )


rule supernet_detection:
    """Step 2: fine-tune the supernet on detection (DetNAS), or train it from scratch (ablation)."""
    input:
        annotations=split("supernet"),
        init=supernet_init,
        tracking=TRACKING,
    output:
        checkpoint=rpath(layout.supernet_dir(), layout.CHECKPOINT),
        metrics=report(
            rpath(layout.supernet_dir(), layout.METRICS),
            caption="../report/supernet.rst",
            category="Supernet",
            labels={
                "task": "detection",
                "dataset": "{dataset}",
                "detector": "{detector}",
                "init": "{init}",
            },
        ),
    log:
        "logs/supernet/{dataset}/{detector}/{init}.log",
    params:
        cfg=lambda w: part(
            "seed", "space", "detector", "supernet_finetune",
            *(["scratch_schedule"] if study.SUPERNETS[w.init].init is None else []),
            dataset=w.dataset,
        ),
        images=train_images,
        init=lambda w, input: f"--init {input.init}" if input.init else "",
        out=out_dir,
    threads: 1
    resources:
        gpu=0,
        nodes=1,
        mem_mb=4000,
        runtime=60,
    shell:
        detnas(
            "train supernet",
            "--task detection --dataset {wildcards.dataset} --detector {wildcards.detector}"
            " --annotations {input.annotations} --images {params.images} {params.init}"
            " --out {params.out}",
            launch=True,
        )
