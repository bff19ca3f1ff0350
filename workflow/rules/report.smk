# What the report reads (detnas/layout.py `outputs`: the one list the report's collector and
# scripts/collect_metrics.py read too), by kind; the supernets for their cost.
OUTPUTS = layout.outputs(STUDY)


def study_outputs(kind, shared=None, seeds=False):
    """The study's outputs of ``kind``: of the whole study (``shared``) or per dataset and
    detector; ``seeds``: the detection retrainings of `retrain_seeds`. Row by row (each row's
    cells in order): the order of the report's inputs, in which Snakemake numbers the jobs."""
    found = [o for o in OUTPUTS if o.kind == kind
             and (shared is None or shared == (not o.dataset)) and seeds == (o.seed is not None)]
    order = {r.name: i for i, r in enumerate(ROWS)}
    return [rpath(o.path) for o in sorted(found, key=lambda o: order.get(o.row, -1))]


rule report:
    """The results tables and plots of the whole study."""
    input:
        detection=study_outputs("detection"),
        classification=study_outputs("classifier", shared=True),
        detection_seeds=study_outputs("detection", seeds=True),
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
        cfg=part("datasets", "detectors", "retrain_seeds", "rank",
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
