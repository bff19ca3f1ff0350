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
            labels={"row": "{row}", "dataset": "-", "detector": "-", "replicate": "0"},
        ),
    log:
        "logs/retrain/{row}/cls.log",
    wildcard_constraints:
        row=_alt(SHARED),
    params:
        cfg=lambda w: part("seed", "classification", study_row(w.row).pretrain),
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
            "train classifier",
            "--arch {input.arch} --ablation {wildcards.row}{params.rep} --out {params.out}",
            launch=True,
        )


use rule retrain_classifier as retrain_classifier_searched with:
    output:
        checkpoint=rpath(layout.classifier_dir(), layout.CHECKPOINT),
        metrics=report(
            rpath(layout.classifier_dir(), layout.METRICS),
            caption="../report/retrain_classifier.rst",
            category="Retrain classification",
            labels={"row": "{row}", "dataset": "{dataset}", "detector": "{detector}",
                    "replicate": "0"},
        ),
    log:
        "logs/retrain/{row}/{dataset}/{detector}/cls.log",
    wildcard_constraints:
        row=_alt(CELL_SEARCHES),


use rule retrain_classifier as retrain_classifier_rep with:
    output:
        checkpoint=rpath(layout.shared_classifier_dir(rep="{rep}"), layout.CHECKPOINT),
        metrics=report(
            rpath(layout.shared_classifier_dir(rep="{rep}"), layout.METRICS),
            caption="../report/retrain_classifier.rst",
            category="Retrain classification",
            labels={"row": "{row}", "dataset": "-", "detector": "-", "replicate": "{rep}"},
        ),
    log:
        "logs/retrain/{row}/cls.rep{rep}.log",
    params:
        cfg=lambda w: part("seed", "classification", study_row(w.row).pretrain),
        rep=replicate,
        out=out_dir,


use rule retrain_classifier_searched as retrain_classifier_searched_rep with:
    output:
        checkpoint=rpath(layout.classifier_dir(rep="{rep}"), layout.CHECKPOINT),
        metrics=report(
            rpath(layout.classifier_dir(rep="{rep}"), layout.METRICS),
            caption="../report/retrain_classifier.rst",
            category="Retrain classification",
            labels={"row": "{row}", "dataset": "{dataset}", "detector": "{detector}",
                    "replicate": "{rep}"},
        ),
    log:
        "logs/retrain/{row}/{dataset}/{detector}/cls.rep{rep}.log",
    params:
        cfg=lambda w: part("seed", "classification", study_row(w.row).pretrain),
        rep=replicate,
        out=out_dir,


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
            labels={"row": "{row}", "detector": "{detector}", "replicate": "0"},
        ),
    log:
        "logs/retrain/{row}/{dataset}/{detector}/det.log",
    params:
        cfg=lambda w: part("seed", "detector", "retrain_finetune", dataset=w.dataset),
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
            "train detector",
            "--arch {input.arch} --ablation {wildcards.row} --dataset {wildcards.dataset}"
            " --detector {wildcards.detector} --init {input.init}{params.rep} --out {params.out}",
            launch=True,
        )


use rule retrain_detector as retrain_detector_rep with:
    output:
        checkpoint=rpath(layout.detection_dir(rep="{rep}"), layout.CHECKPOINT),
        metrics=report(
            rpath(layout.detection_dir(rep="{rep}"), layout.METRICS),
            caption="../report/retrain_detector.rst",
            category="Retrain detection",
            subcategory="{dataset}",
            labels={"row": "{row}", "detector": "{detector}", "replicate": "{rep}"},
        ),
    log:
        "logs/retrain/{row}/{dataset}/{detector}/det.rep{rep}.log",
    params:
        cfg=lambda w: part("seed", "detector", "retrain_finetune", dataset=w.dataset),
        rep=replicate,
        out=out_dir,
