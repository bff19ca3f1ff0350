rule nats_search:
    """NATS: channel-level dilation search on the pre-trained ResNet, then derive the network."""
    input:
        pretrained=f"{classifier_dir(NATS.name)}/{layout.CHECKPOINT}",  # ResNet-50's
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
            " --detector {wildcards.detector} --dataset {wildcards.dataset} --out {params.out}",
            launch=True,
        )
