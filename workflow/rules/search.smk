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
    """Step 3, for each row searched per dataset and detector (`CELL_SEARCHES`): evolutionary
    search with detection fitness (DetNAS, DetNAS-scratch), or random search with the same
    evaluation budget (ablation), on the row's fine-tuned supernet."""
    input:
        supernet=lambda w: rpath(
            layout.supernet_dir(w.dataset, w.detector, study_row(w.ablation).supernet),
            layout.CHECKPOINT,
        ),
        search=split("search"),
        recalib=split("supernet"),
        latency=LATENCY_TABLE,
        tracking=TRACKING,
    output:
        arch=rpath(layout.search_dir(), layout.ARCH),
        history=report(
            rpath(layout.search_dir(), layout.HISTORY),
            caption="../report/search.rst",
            category="Search",
            labels={"ablation": "{ablation}", "dataset": "{dataset}", "detector": "{detector}",
                    "search seed": "0"},
        ),
        metrics=rpath(layout.search_dir(), layout.METRICS),
    log:
        "logs/search/{dataset}/{detector}/{ablation}.log",
    wildcard_constraints:
        ablation=_alt(CELL_SEARCHES),
    params:
        cfg=search_cfg,
        method=lambda w: study_row(w.ablation).strategy,
        images=train_images,
        rep="",
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
            " --detector {wildcards.detector} --ablation {wildcards.ablation}{params.rep}"
            " --out {params.out}",
            launch=True,
        )


use rule search_detection as search_detection_rep with:
    output:
        arch=rpath(layout.search_dir(rep="{rep}"), layout.ARCH),
        history=report(
            rpath(layout.search_dir(rep="{rep}"), layout.HISTORY),
            caption="../report/search.rst",
            category="Search",
            labels={"ablation": "{ablation}", "dataset": "{dataset}", "detector": "{detector}",
                    "search seed": "{rep}"},
        ),
        metrics=rpath(layout.search_dir(rep="{rep}"), layout.METRICS),
    log:
        "logs/search/{dataset}/{detector}/{ablation}.rep{rep}.log",
    params:
        cfg=search_cfg,
        method=lambda w: study_row(w.ablation).strategy,
        images=train_images,
        rep=replicate,
        out=out_dir,


rule search_classification:
    """ClsNASNet (ablation; `CLS_SEARCH`, the row searched with classification fitness): the
    evolution with classification fitness (settings: `clsnas_search`, else `search`), on the
    pre-trained supernet, scored on `classification.search_images` held out of the training set
    (SPOS)."""
    input:
        supernet=CLS_SUPERNET,
        train=CLS_TRAIN,
        latency=LATENCY_TABLE,
        tracking=TRACKING,
    output:
        arch=rpath(layout.search_dir(method=CLS_SEARCH.name), layout.ARCH),
        history=report(
            rpath(layout.search_dir(method=CLS_SEARCH.name), layout.HISTORY),
            caption="../report/search.rst",
            category="Search",
            labels={"ablation": CLS_SEARCH.name, "dataset": "classification", "detector": "-",
                    "search seed": "0"},
        ),
        metrics=rpath(layout.search_dir(method=CLS_SEARCH.name), layout.METRICS),
    log:
        f"logs/search/cls/{CLS_SEARCH.name}.log",
    params:
        cfg=part("seed", "space", "classification", "search", "clsnas_search"),
        rep="",
        out=out_dir,
    threads: 1
    resources:
        gpu=0,
        nodes=1,
        mem_mb=3000,
        runtime=120,
    shell:
        detnas(
            f"search {CLS_SEARCH.strategy}",
            "--supernet {input.supernet} --fitness classification --data {input.train}"
            f" --recalib-data {{input.train}} --ablation {CLS_SEARCH.name}{{params.rep}}"
            " --out {params.out}",
            launch=True,
        )


use rule search_classification as search_classification_rep with:
    output:
        arch=rpath(layout.search_dir(method=CLS_SEARCH.name, rep="{rep}"), layout.ARCH),
        history=report(
            rpath(layout.search_dir(method=CLS_SEARCH.name, rep="{rep}"), layout.HISTORY),
            caption="../report/search.rst",
            category="Search",
            labels={"ablation": CLS_SEARCH.name, "dataset": "classification", "detector": "-",
                    "search seed": "{rep}"},
        ),
        metrics=rpath(layout.search_dir(method=CLS_SEARCH.name, rep="{rep}"), layout.METRICS),
    log:
        f"logs/search/cls/{CLS_SEARCH.name}.rep{{rep}}.log",
    params:
        cfg=part("seed", "space", "classification", "search", "clsnas_search"),
        rep=replicate,
        out=out_dir,
