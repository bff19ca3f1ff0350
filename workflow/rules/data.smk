rule synth_detection:
    """A synthetic detection dataset in COCO layout (real datasets are read where they are)."""
    output:
        train=rpath(layout.data_dir(), detnas_config.DatasetConfig.train_annotations),
        test=rpath(layout.data_dir(), detnas_config.DatasetConfig.test_annotations),
    log:
        "logs/data/{dataset}.log",
    wildcard_constraints:
        dataset=_alt(SYNTHETIC) or "^$",
    params:
        cfg=dataset_cfg,
    threads: 1
    resources:
        gpu=0,
        mem_mb=1000,
        runtime=30,
    shell:
        detnas(
            "data synth-detection",
            "--dataset {wildcards.dataset}",
        )


rule synth_classification:
    """The synthetic ImageNet stand-in (ImageFolder layout)."""
    output:
        train=directory(CLS_TRAIN),
        val=directory(CLS_VAL),
    log:
        "logs/data/classification.log",
    params:
        cfg=part("seed", "classification"),
    threads: 1
    resources:
        gpu=0,
        mem_mb=1000,
        runtime=30,
    shell:
        detnas(
            "data synth-classification",
        )


rule split:
    """Hold `search_images` training images out for the search fitness; the rest trains."""
    input:
        train_annotations,
    output:
        supernet=split("supernet"),
        search=split("search"),
    log:
        "logs/split/{dataset}.log",
    params:
        cfg=dataset_cfg,
        out=out_dir,
    threads: 1
    resources:
        gpu=0,
        mem_mb=4000,
        runtime=30,
    shell:
        detnas(
            "data split",
            "--dataset {wildcards.dataset} --out {params.out}",
        )
