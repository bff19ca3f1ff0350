rule report:
    """The results tables and plots of the whole study."""
    input:
        detection=expand(
            rpath(layout.detection_dir(), "metrics.json"),
            row=layout.ROWS, dataset=DATASETS, detector=DETECTORS,
        ),
        classification=expand(
            rpath(layout.shared_classifier_dir(), "metrics.json"), row=layout.SHARED_ROWS
        ),
        detection_seeds=expand(
            rpath(layout.detection_dir(seed="{seed}"), "metrics.json"),
            row=layout.ROWS, dataset=DATASETS, detector=DETECTORS, seed=STUDY.retrain_seeds,
        ),
        rank=expand(
            rpath(layout.rank_dir(), "rank.json"), dataset=DATASETS, detector=RANKED_DETECTORS
        ),
        classification_searched=expand(
            rpath(layout.classifier_dir(), "metrics.json"),
            row=layout.SEARCHED_ROWS, dataset=DATASETS, detector=DETECTORS,
        ),
        search=expand(
            rpath(layout.search_dir(), "history.csv"),
            ablation=layout.SEARCHED_ROWS, dataset=DATASETS, detector=DETECTORS,
        ),
        search_classification=rpath(layout.search_dir(method='clsnas'), "history.csv"),
        supernet=expand(
            rpath(layout.supernet_dir(), "metrics.json"),
            dataset=DATASETS, detector=DETECTORS, init=layout.SUPERNET_INITS,
        ),
        nats=expand(
            rpath(layout.nats_dir(), "arch.json"), dataset=DATASETS, detector=DETECTORS
        ),
    output:
        md=rpath(layout.REPORT_DIR, "report.md"),
        tables=rpath(layout.REPORT_DIR, "tables.json"),
        html=report(
            rpath(layout.REPORT_DIR, "report.html"),
            caption="../report/report.rst",
            category="Report",
        ),
        figures=report(
            directory(rpath(layout.REPORT_DIR, "figures")),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Report",
        ),
    log:
        "logs/report.log",
    params:
        cfg=part("datasets", "detectors", "retrain_seeds", "rank"),
        out=out_dir,
    threads: 1
    resources:
        gpu=0,
        mem_mb=4000,
        runtime=10,
    shell:
        detnas(
            "report",
            "--out {params.out}",
        )
