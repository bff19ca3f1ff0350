rule report:
    """The results tables and plots of the whole study."""
    input:
        detection=expand(
            f"{R}/retrain/{{row}}/{{dataset}}/{{detector}}/metrics.json",
            row=ROWS, dataset=DATASETS, detector=DETECTORS,
        ),
        detection_seeds=expand(
            f"{detection_dir('{row}', seed='{seed}')}/metrics.json",
            row=ROWS, dataset=DATASETS, detector=DETECTORS, seed=STUDY.retrain_seeds,
        ),
        rank=expand(rank_json(), dataset=DATASETS, detector=RANKED_DETECTORS),
        classification=expand(f"{R}/retrain/{{row}}/cls/metrics.json", row=SHARED_ROWS),
        classification_searched=expand(
            f"{R}/retrain/{{row}}/{{dataset}}/{{detector}}/cls/metrics.json",
            row=SEARCHED_ROWS, dataset=DATASETS, detector=DETECTORS,
        ),
        search=expand(
            f"{R}/search/{{dataset}}/{{detector}}/{{ablation}}/history.csv",
            ablation=SEARCH_SUPERNET, dataset=DATASETS, detector=DETECTORS,
        ),
        search_classification=f"{R}/search/cls/clsnas/history.csv",
        supernet=expand(
            f"{R}/supernet/{{dataset}}/{{detector}}/{{init}}/metrics.json",
            dataset=DATASETS, detector=DETECTORS, init=["pretrained", "scratch"],
        ),
        nats=expand(f"{R}/nats/{{dataset}}/{{detector}}/arch.json", dataset=DATASETS,
                    detector=DETECTORS),
    output:
        md=f"{R}/report/report.md",
        tables=f"{R}/report/tables.json",
        html=report(f"{R}/report/report.html", caption="../report/report.rst", category="Report"),
        figures=report(
            directory(f"{R}/report/figures"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Report",
        ),
    log:
        "logs/report.log",
    params:
        cfg=part("datasets", "detectors", "retrain_seeds", "rank"),
        results=R,
        out=out_dir,
    threads: 1
    resources:
        gpu=0,
        mem_mb=4000,
        runtime=10,
    shell:
        "detnas report --config {STUDY_CONFIG} --results {params.results} --out {params.out}"
        " > {log} 2>&1"
