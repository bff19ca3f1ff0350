"""The ranking check: the correlations, the spread of architectures, the stage end to end."""

import json
from pathlib import Path

import pytest

from detnas.cli import main
from detnas.data import make_synthetic_detection
from detnas.plan import config, flops, study
from detnas.run import tracking, train
from detnas.search import rank
from detnas.search.evolution import search_limits
from detnas.search.rank import rank_correlation, spread_archs

REPO = Path(__file__).resolve().parents[1]


def test_rank_correlation_known_values():
    # x = 1..5, y = 2 1 4 3 5: 8 concordant and 2 discordant pairs; sum of squared rank
    # differences 4: tau = (8 - 2) / 10, rho = 1 - 6 * 4 / (5 * 24)
    r = rank_correlation([1, 2, 3, 4, 5], [2, 1, 4, 3, 5])
    assert r["kendall_tau"] == pytest.approx(0.6)
    assert r["spearman_rho"] == pytest.approx(0.8)
    assert 0 < r["kendall_p"] < 1 and 0 < r["spearman_p"] < 1
    assert rank_correlation([1, 2, 3], [30, 20, 10])["kendall_tau"] == pytest.approx(-1)
    # ties: tau-b; x = 1 2 3 4, y = 1 1 2 2: 4 concordant, 0 discordant, 2 ties in y
    assert rank_correlation([1, 2, 3, 4], [1, 1, 2, 2])["kendall_tau"] == pytest.approx(
        4 / (6 * 4) ** 0.5)
    undefined = rank_correlation([1, 2, 3], [0.0, 0.0, 0.0])  # one ranking all ties
    assert undefined["kendall_tau"] is None and undefined["spearman_rho"] is None
    with pytest.raises(ValueError, match="paired"):
        rank_correlation([1, 2], [1])


def test_spread_archs_cover_the_flops_range_deterministically():
    cost = flops.cost_table("tiny").backbone_flops
    cfg = config.load(None, ["space=tiny", "search.max_flops=42000000"])
    under = search_limits(cfg.search, "tiny").feasible
    archs = spread_archs("tiny", 5, seed=0, feasible=under, pool=500)
    assert archs == spread_archs("tiny", 5, seed=0, feasible=under, pool=500)
    assert archs != spread_archs("tiny", 5, seed=1, feasible=under, pool=500)
    values = [cost(a) for a in archs]
    assert len(set(archs)) == 5 and values == sorted(values) and max(values) <= 42e6
    # from the cheapest to the dearest of the pool, evenly: gaps within a factor of the mean
    gaps = [b - a for a, b in zip(values, values[1:], strict=False)]
    assert min(gaps) > 0.5 * (values[-1] - values[0]) / 4
    assert values[-1] - values[0] > 0.5 * (42e6 - 32.4e6)
    with pytest.raises(ValueError, match="rank.archs"):
        spread_archs("tiny", 3, seed=0, feasible=lambda a: cost(a) < 33e6, pool=50)


def test_the_command_takes_a_checkpoint_of_each_detection_supernet(monkeypatch, tmp_path,
                                                                   capsys):
    """``detnas rank`` has a ``--<init>`` per detection supernet the rows search (as the rank
    rule, workflow/rules/rank.smk, passes them), handed on in `study.DETECTION_SUPERNETS`'s
    order; without any it says which it takes."""
    given = {}

    def stage(cfg, dataset, detector, supernets, *paths):
        given.update(supernets)
        return {"supernets": {init: {"kendall_tau": 0.0, "spearman_rho": 0.0}
                              for init in supernets}}

    monkeypatch.setattr(rank, "rank_stage", stage)
    args = ["rank", "--config", str(REPO / "config" / "test.yaml"), "--set",
            f"datasets.synth.root={tmp_path}", "--dataset", "synth", "--detector", "fpn",
            "--images", "i", "--annotations", "a", "--search", "s", "--out", "o"]
    inits = study.DETECTION_SUPERNETS
    assert set(inits) == {r.supernet for r in study.ROWS if r.cell_search}
    assert main([*args, *(x for init in inits for x in (f"--{init}", f"{init}.pt"))]) == 0
    assert given == {init: Path(f"{init}.pt") for init in inits} and list(given) == list(inits)
    assert main(args) == 2
    assert f"give {' and/or '.join(f'--{init}' for init in inits)} supernet checkpoints" in (
        capsys.readouterr().err)


@pytest.fixture(scope="module")
def ranked(tmp_path_factory):
    """The stage end to end at toy size: a scratch-trained supernet, 3 standalone nets."""
    root = tmp_path_factory.mktemp("rank")
    make_synthetic_detection(root, seed=0, num_train=8, num_test=4, image_size=64,
                             num_classes=2, max_objects=2, max_distractors=0)
    overrides = [f"datasets.synth.root={root}", "tracking.enabled=false", "rank.archs=3",
                 "rank.pool=50", "rank.train={steps: 2, batch_size: 2, lr: 0.005}",
                 "search.recalib_images=4", "search.recalib_batch_size=2"]
    cfg = config.load(REPO / "config" / "test.yaml", overrides)
    ann = root / "annotations" / "instances_train.json"
    train.supernet_detection(cfg, "synth", "fpn", root / "train", ann, None, root / "supernet")
    args = ["rank", "--config", str(REPO / "config" / "test.yaml"),
            *(x for o in overrides for x in ("--set", o)), "--dataset", "synth",
            "--detector", "fpn", "--pretrained", str(root / "supernet" / "checkpoint.pt"),
            "--scratch", str(root / "supernet" / "checkpoint.pt"), "--images",
            str(root / "train"), "--annotations", str(ann), "--search",
            str(root / "annotations" / "instances_test.json"), "--out", str(root / "out")]
    assert main(args) == 0
    return cfg, root, args


@pytest.mark.slow
def test_rank_stage_end_to_end(ranked):
    cfg, root, _ = ranked
    result = json.loads((root / "out" / "rank.json").read_text())
    assert result["archs"] == [str(a) for a in spread_archs("test", 3, 0, pool=50)]
    assert result["backbone_flops"] == sorted(result["backbone_flops"])
    for arch in result["archs"]:  # each trained alone, its score read back
        metrics = json.loads((root / "out" / "standalone" / arch / "metrics.json").read_text())
        assert metrics["arch"] == arch and metrics["steps"] == 2
    assert result["standalone"] == [json.loads((root / "out" / "standalone" / a /
                                                "metrics.json").read_text())["mmap"]
                                    for a in result["archs"]]
    # the middle net trained again with the next seed: the training noise beside the span
    middle = result["archs"][1]
    again = json.loads((root / "out" / "standalone" / f"{middle}-seed1" /
                        "metrics.json").read_text())
    assert again["arch"] == middle and again["provenance"]["seed"] == 1
    assert result["seed_spread"] == {"arch": middle, "seeds": [0, 1],
                                     "scores": [result["standalone"][1], again["mmap"]],
                                     "spread": abs(result["standalone"][1] - again["mmap"])}
    assert result["standalone_span"] == max(result["standalone"]) - min(result["standalone"])
    assert set(result["supernets"]) == {"pretrained", "scratch"}
    for s in result["supernets"].values():
        assert len(s["fitness"]) == 3
        expected = rank_correlation(s["fitness"], result["standalone"])
        assert {k: s[k] for k in expected} == expected
    # the same checkpoint scores the same: the fitness is a function of the arch alone
    assert result["supernets"]["pretrained"]["fitness"] == result["supernets"]["scratch"][
        "fitness"]
    assert result["provenance"]["stage"] == "rank" and result["provenance"]["seed"] == 0


@pytest.mark.slow
def test_rank_stage_resumes_and_reproduces(ranked, monkeypatch):
    """A rerun keeps the standalone runs that finished and gives the same numbers."""
    _, root, args = ranked
    before = json.loads((root / "out" / "rank.json").read_text())

    def no_training(*a, **k):
        raise AssertionError("a finished standalone run was trained again")

    logged = {}

    class Tracker(tracking.NullTracker):  # the stage's MLflow child run
        def log_metrics(self, metrics, step=None):
            logged.update(metrics)

        def log_artifact(self, path):
            logged["artifact"] = Path(path).name

    def start(cfg, name, tags, gpus=0, arch=None, out=None, resolved=None):
        logged.update(name=name, stage=tags["stage"])
        return Tracker()

    monkeypatch.setattr(train, "train_detector", no_training)
    monkeypatch.setattr(tracking, "start", start)
    assert main(args) == 0
    after = json.loads((root / "out" / "rank.json").read_text())
    assert after["supernets"] == before["supernets"]
    assert after["standalone"] == before["standalone"]
    assert logged["name"] == "rank-synth-fpn" and logged["stage"] == "rank"
    assert logged["artifact"] == "rank.json"
    for init, s in after["supernets"].items():  # tau and rho where defined
        for k in ("kendall_tau", "spearman_rho"):
            assert logged.get(f"{init}_{k}") == s[k]
    # another schedule: the standalone runs of the old one are not reused
    with pytest.raises(AssertionError, match="trained again"):
        main([*args, "--set", "rank.train.lr=0.004"])


@pytest.mark.slow
def test_rank_cli_needs_a_supernet(ranked, capsys):
    _, _, args = ranked
    i = args.index("--pretrained")
    j = args.index("--scratch")
    kept = [a for k, a in enumerate(args) if k not in (i, i + 1, j, j + 1)]
    assert main(kept) == 2
    assert "--pretrained" in capsys.readouterr().err
    assert rank.rank_stage  # the module the CLI runs
