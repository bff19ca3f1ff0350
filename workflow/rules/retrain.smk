rule retrain_classifier:
    """Retrain a row's architecture from scratch on classification (ImageNet pre-training): the
    rows of one architecture for the whole study (`SHARED`) here, those searched per dataset and
    detector (`CELL_SEARCHES`) in `retrain_classifier_searched`; NATS reuses ResNet-50's."""
    input:
        arch=row_arch,
        train=CLS_TRAIN,
        val=CLS_VAL,
        tracking=TRACKING,
    output:
        checkpoint=rpath(layout.shared_classifier_dir(), layout.CHECKPOINT),
        metrics=report(
            rpath(layout.shared_classifier_dir(), layout.METRICS),
            caption="../report/retrain_classifier.rst",
            category="Retrain classification",
            labels={"row": "{row}", "dataset": "-", "detector": "-"},
        ),
    log:
        "logs/retrain/{row}/cls.log",
    wildcard_constraints:
        row=_alt(SHARED),
    params:
        cfg=lambda w: part("seed", "classification", study_row(w.row).pretrain),
        out=out_dir,
    threads: 1
    resources:
        gpu=0,
        nodes=1,
        mem_mb=3000,
        runtime=120,
    shell:
        detnas(
            "train classifier",
            "--arch {input.arch} --ablation {wildcards.row} --out {params.out}",
            launch=True,
        )


use rule retrain_classifier as retrain_classifier_searched with:
    output:
        checkpoint=rpath(layout.classifier_dir(), layout.CHECKPOINT),
        metrics=report(
            rpath(layout.classifier_dir(), layout.METRICS),
            caption="../report/retrain_classifier.rst",
            category="Retrain classification",
            labels={"row": "{row}", "dataset": "{dataset}", "detector": "{detector}"},
        ),
    log:
        "logs/retrain/{row}/{dataset}/{detector}/cls.log",
    wildcard_constraints:
        row=_alt(CELL_SEARCHES),


rule retrain_detector:
    """Train the detector on the row's retrained backbone, evaluate on the test split (every row
    of the study, per dataset and detector)."""
    input:
        arch=row_arch,
        init=row_classifier,
        train=train_annotations,
        test=test_annotations,
        tracking=TRACKING,
    output:
        checkpoint=rpath(layout.detection_dir(), layout.CHECKPOINT),
        metrics=report(
            rpath(layout.detection_dir(), layout.METRICS),
            caption="../report/retrain_detector.rst",
            category="Retrain detection",
            subcategory="{dataset}",
            labels={"row": "{row}", "detector": "{detector}", "seed": "-"},
        ),
    log:
        "logs/retrain/{row}/{dataset}/{detector}/det.log",
    params:
        cfg=lambda w: part("seed", "detector", "retrain_finetune", dataset=w.dataset),
        seed="",
        out=out_dir,
    threads: 1
    resources:
        gpu=0,
        nodes=1,
        mem_mb=4000,
        runtime=120,
    shell:
        detnas(
            "train detector",
            "--arch {input.arch} --ablation {wildcards.row} --dataset {wildcards.dataset}"
            " --detector {wildcards.detector} --init {input.init}{params.seed} --out {params.out}",
            launch=True,
        )


use rule retrain_detector as retrain_detector_seed with:
    output:
        checkpoint=rpath(layout.detection_dir(seed="{seed}"), layout.CHECKPOINT),
        metrics=report(
            rpath(layout.detection_dir(seed="{seed}"), layout.METRICS),
            caption="../report/retrain_detector.rst",
            category="Retrain detection",
            subcategory="{dataset}",
            labels={"row": "{row}", "detector": "{detector}", "seed": "{seed}"},
        ),
    log:
        "logs/retrain/{row}/{dataset}/{detector}/det.seed{seed}.log",
    params:
        cfg=lambda w: part("detector", "retrain_finetune", dataset=w.dataset),
        seed=lambda w: f" --set seed={w.seed} --set 'retrain_seeds=[]'",  # one run, that seed
        out=out_dir,
