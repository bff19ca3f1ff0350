"""The noise model of the report (detnas/report/noise.py): pooled training noise, test-image
noise, three-outcome comparisons that hold their 95% level."""

import math
import random

import pytest

from detnas.report import noise
from detnas.report.noise import Figure, TrainingNoise


def test_pooled_sigma_is_the_within_row_spread_over_all_rows():
    t = TrainingNoise.pooled([[1.0, 2.0, 3.0], [4.0, 6.0], [5.0]])
    # within-row sums of squares 2 + 2 over (3 - 1) + (2 - 1) degrees of freedom; a row of one
    # replicate adds nothing
    assert t.df == 3 and t.sigma == pytest.approx(math.sqrt(4 / 3))
    assert TrainingNoise.pooled([[0.7], [0.8]]).known is False


def test_one_seed_per_row_is_undetermined_whatever_the_test_images_say():
    a = Figure([0.80], [[0.80 + 0.001 * i for i in range(-5, 6)]])
    b = Figure([0.50], [[0.50 + 0.001 * i for i in range(-5, 6)]])
    v = noise.compare(a, b, TrainingNoise.pooled([a.values, b.values]))
    assert v.outcome == noise.UNDETERMINED and v.low is None
    assert noise.interval(a, TrainingNoise.pooled([a.values])) is None


def test_half_width_is_welch_satterthwaite_t():
    sigma, df, n, test_sd = 0.02, 10, 3, 0.01
    train_var, test_var = sigma ** 2 * 2 / n, test_sd ** 2
    df_eff = (train_var + test_var) ** 2 / (train_var ** 2 / df)
    from scipy import stats

    expected = stats.t.ppf(0.975, df_eff) * math.sqrt(train_var + test_var)
    got = noise.half_width(train_var, test_var, df)
    assert got == pytest.approx(expected) and 0.039 < got < 0.041
    # fewer degrees of freedom widen it; no training part leaves the normal quantile
    assert noise.half_width(train_var, test_var, 2) > got
    assert noise.half_width(0.0, test_var, 0) == pytest.approx(1.959964 * test_sd, rel=1e-5)


def test_compare_names_the_better_row_and_pairs_the_test_resamples():
    known = TrainingNoise.calibrated(0.01, 20, "test")
    draws = [0.002 * i for i in range(-50, 51)]
    a = Figure([0.70, 0.71, 0.72], [[v + d for d in draws] for v in (0.70, 0.71, 0.72)])
    b = Figure([0.60, 0.61, 0.62], [[v + d for d in draws] for v in (0.60, 0.61, 0.62)])
    # the same draw moves both rows alike: the paired difference has no test noise
    assert noise.paired_test_sd(a, b) == pytest.approx(0.0, abs=1e-12)
    assert noise.compare(a, b, known).outcome == noise.A_BETTER
    assert noise.compare(b, a, known).outcome == noise.B_BETTER
    close = Figure([0.705, 0.715, 0.725], a.boots)
    assert noise.compare(close, a, known).outcome == noise.UNDETERMINED
    # a given test noise (an older report's interval) widens it
    wide = noise.compare(a, b, known, test_sd=0.2)
    assert wide.outcome == noise.UNDETERMINED and wide.high - wide.low > 0.7


@pytest.mark.parametrize("rows, reps", [(2, 2), (7, 3)])
def test_equal_rows_are_called_different_about_5_percent_of_the_time(rows, reps):
    """Rows with the same true figure, training noise 3 points and test noise 2 points per
    replicate: the comparisons the model decides are its false verdicts. Student's t with the
    pooled degrees of freedom keeps them near 5% (the normal quantile with 2 degrees of
    freedom would give about 20%)."""
    rng = random.Random(0)
    wrong, trials = 0, 3000
    for _ in range(trials):
        test_shift = [rng.gauss(0, 0.02) for _ in range(40)]  # the test sample, shared
        figs = [Figure([0.6 + rng.gauss(0, 0.03) for _ in range(reps)],
                       [[0.0] * 40] * reps) for _ in range(rows)]
        figs = [Figure(f.values, [[v + s for s in test_shift] for v in f.values]) for f in figs]
        training = TrainingNoise.pooled([f.values for f in figs])
        wrong += noise.compare(figs[0], figs[1], training).outcome != noise.UNDETERMINED
    assert 0.025 < wrong / trials < 0.075


def test_resolvable_difference_shrinks_with_seeds():
    t = TrainingNoise.calibrated(0.03, 14, "test")
    r1, r3, r9 = (noise.resolvable(t, n, 0.01) for n in (1, 3, 9))
    assert r1 > r3 > r9 > 1.9 * 0.01
    assert noise.resolvable(TrainingNoise.pooled([[0.5]]), 3, 0.01) is None


def test_a_rerun_lands_in_sqrt_2_times_the_means_interval():
    """Another run is as noisy as this one: the interval a rerun's figure lands in is sqrt(2)
    times the mean's, and holds about 95% of reruns (the mean's only about 83%)."""
    fig = Figure([0.60, 0.62, 0.64])
    t = TrainingNoise.calibrated(0.02, 14, "test")
    lo, hi = noise.interval(fig, t)
    rlo, rhi = noise.interval(fig, t, rerun=True)
    assert (rhi - rlo) == pytest.approx(math.sqrt(2) * (hi - lo))
    rng, inside, means = random.Random(1), [0, 0], 2000
    for _ in range(means):
        a, b = (Figure([rng.gauss(0.6, 0.02) for _ in range(3)]) for _ in range(2))
        for k, rerun in enumerate((False, True)):
            lo, hi = noise.interval(a, t, test_sd=0.0, rerun=rerun)
            inside[k] += lo <= b.mean <= hi
    assert 0.78 < inside[0] / means < 0.88 and 0.93 < inside[1] / means < 0.97
