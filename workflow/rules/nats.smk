rule nats_search:
    """NATS: channel-level dilation search on the pre-trained ResNet, then derive the network."""
    input:
        pretrained=lambda w: f"{classifier_dir(NATS.name, rep=w.get('rep'))}/{layout.CHECKPOINT}",
        # ResNet-50's, of the same replicate
        # nats.arch_images: the command holds the alphas' images out of the whole training set
        weights=train_annotations if STUDY.nats.arch_images else split("supernet"),
        arch=[] if STUDY.nats.arch_images else split("search"),
        tracking=TRACKING,
    output:
        arch=rpath(layout.nats_dir(), layout.ARCH),
    log:
        "logs/nats/{dataset}/{detector}.log",
    params:
        cfg=lambda w: part("seed", "detector", "nats", dataset=w.dataset),
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
            "nats search",
            "--pretrained {input.pretrained} --weights-annotations {input.weights}"
            + ("" if STUDY.nats.arch_images else " --arch-annotations {input.arch}")
            + " --images {params.images}"
            " --detector {wildcards.detector} --dataset {wildcards.dataset}{params.rep}"
            " --out {params.out}",
            launch=True,
        )


use rule nats_search as nats_search_rep with:
    output:
        arch=rpath(layout.nats_dir(rep="{rep}"), layout.ARCH),
    log:
        "logs/nats/{dataset}/{detector}.rep{rep}.log",
    params:
        cfg=lambda w: part("seed", "detector", "nats", dataset=w.dataset),
        images=train_images,
        rep=replicate,
        out=out_dir,
