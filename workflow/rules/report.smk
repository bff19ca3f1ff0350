rule report:
    """The results tables and plots of the whole study."""
    input:
        detection=study_outputs("detection"),
        classification=study_outputs("classifier", shared=True),
        rank=study_outputs("rank"),
        classification_searched=study_outputs("classifier", shared=False),
        search=study_outputs("search", shared=False),
        search_classification=study_outputs("search", shared=True),
        supernet=study_outputs("supernet"),
        nats=study_outputs("nats"),
    output:
        md=rpath(layout.REPORT_DIR, layout.REPORT_MD),
        tables=rpath(layout.REPORT_DIR, layout.TABLES),
        html=report(
            rpath(layout.REPORT_DIR, layout.REPORT_HTML),
            caption="../report/report.rst",
            category="Report",
        ),
        figures=report(
            directory(rpath(layout.REPORT_DIR, layout.FIGURES)),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Report",
        ),
    log:
        "logs/report.log",
    params:
        cfg=part("datasets", "detectors", "replicates", "search_seeds", "rank",
                 *(["ablations"] if STUDY.ablations else [])),  # the rows a config adds
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
