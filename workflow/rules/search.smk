# The latency table the searches read (search.max_latency, or latency.table given): the user's
# own file, or <results>/latency/table.json measured by rule latency_table. None by default.
LATENCY_TABLE = (
    [detnas_config.latency_table_path(STUDY)] if detnas_config.search_uses_latency(STUDY) else []
)


rule latency_table:
    """Latency-aware search: the per-block latency table of the space, measured on the device
    of the config's `latency` section. Only a search under search.max_latency asks for it."""
    output:
        rpath(layout.LATENCY_TABLE),
    log:
        "logs/latency_table.log",
    params:
        cfg=part("seed", "space", "device", "latency"),
    threads: STUDY.latency.threads
    resources:
        gpu=0,
        nodes=1,
        mem_mb=4000,
        runtime=30,
    shell:
        detnas(
            "latency-table",
            "--out {output}",
        )


rule search_detection:
    """Step 3: evolutionary search with detection fitness (DetNAS, DetNAS-scratch), or random
    search with the same evaluation budget (ablation), on the fine-tuned supernet."""
    input:
        supernet=lambda w: rpath(
            layout.supernet_dir(w.dataset, w.detector, layout.SEARCH_SUPERNET[w.ablation]),
            "checkpoint.pt",
        ),
        search=split("search"),
        recalib=split("supernet"),
        latency=LATENCY_TABLE,
        tracking=TRACKING,
    output:
        arch=rpath(layout.search_dir(), "arch.json"),
        history=report(
            rpath(layout.search_dir(), "history.csv"),
            caption="../report/search.rst",
            category="Search",
            labels={"ablation": "{ablation}", "dataset": "{dataset}", "detector": "{detector}"},
        ),
        metrics=rpath(layout.search_dir(), "metrics.json"),
    log:
        "logs/search/{dataset}/{detector}/{ablation}.log",
    wildcard_constraints:
        ablation=_alt(layout.SEARCHED_ROWS),
    params:
        cfg=lambda w: part("seed", "space", "detector", "search", dataset=w.dataset),
        method=lambda w: "random" if w.ablation == "random" else "evolution",
        images=train_images,
        out=out_dir,
    threads: 1
    resources:
        gpu=0,
        nodes=1,
        mem_mb=4000,
        runtime=120,
    shell:
        detnas(
            "search {params.method}",
            "--supernet {input.supernet} --fitness detection --data {input.search}"
            " --images {params.images} --recalib-annotations {input.recalib}"
            " --recalib-image-dir {params.images} --dataset {wildcards.dataset}"
            " --detector {wildcards.detector} --ablation {wildcards.ablation} --out {params.out}",
            launch=True,
        )


rule search_classification:
    """ClsNASNet (ablation): the evolution with classification fitness (settings: `clsnas_search`,
    else `search`), on the pre-trained supernet, scored on `classification.search_images` held out
    of the training set (SPOS)."""
    input:
        supernet=CLS_SUPERNET,
        train=CLS_TRAIN,
        latency=LATENCY_TABLE,
        tracking=TRACKING,
    output:
        arch=rpath(layout.search_dir(method='clsnas'), "arch.json"),
        history=report(
            rpath(layout.search_dir(method='clsnas'), "history.csv"),
            caption="../report/search.rst",
            category="Search",
            labels={"ablation": "clsnas", "dataset": "classification", "detector": "-"},
        ),
        metrics=rpath(layout.search_dir(method='clsnas'), "metrics.json"),
    log:
        "logs/search/cls/clsnas.log",
    params:
        cfg=part("seed", "space", "classification", "search", "clsnas_search"),
        out=out_dir,
    threads: 1
    resources:
        gpu=0,
        nodes=1,
        mem_mb=3000,
        runtime=120,
    shell:
        detnas(
            "search evolution",
            "--supernet {input.supernet} --fitness classification --data {input.train}"
            " --recalib-data {input.train} --ablation clsnas --out {params.out}",
            launch=True,
        )
