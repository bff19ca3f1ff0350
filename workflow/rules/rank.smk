rule rank:
    """The ranking check (`rank.enabled`): rank.archs architectures spread over the search's
    FLOPs range, each trained alone on the supernet's split, scored on the search split, against
    their fitness on each detection supernet (`study.DETECTION_SUPERNETS`: the pre-trained and
    the scratch one; Kendall's tau, Spearman's rho), each given as ``--<init> CHECKPOINT``."""
    input:
        **{init: rpath(layout.supernet_dir(init=init), layout.CHECKPOINT)
           for init in study.DETECTION_SUPERNETS},
        annotations=split("supernet"),
        search=split("search"),
        tracking=TRACKING,
    output:
        rank=report(
            rpath(layout.rank_dir(), layout.RANK),
            caption="../report/rank.rst",
            category="Ranking check",
            labels={"dataset": "{dataset}", "detector": "{detector}"},
        ),
    log:
        "logs/rank/{dataset}/{detector}.log",
    params:
        cfg=lambda w: part("seed", "space", "detector", "search", "rank", dataset=w.dataset),
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
            "rank",
            "--dataset {wildcards.dataset} --detector {wildcards.detector}"
            + "".join(f" --{init} {{input.{init}}}" for init in study.DETECTION_SUPERNETS)
            + " --images {params.images}"
            " --annotations {input.annotations} --search {input.search} --out {params.out}",
            omp=True,
        )
