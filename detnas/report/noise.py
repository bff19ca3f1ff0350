"""The noise a figure rests on, and the verdict of a comparison between two rows.

A row's figure is the mean of its replicates: each replicate retrains the row from another seed
(its classifier and its detector, and for a searched row its search when ``search_seeds`` runs
one per replicate), and scores the same test split. Two sources of noise move that mean:

- **training**: what another seed (or the last bits of another CPU) changes. Its standard
  deviation ``sigma`` is the pooled within-row standard deviation of the replicates over every
  row of one dataset and detector (one-way ANOVA's residual: the rows share a recipe, and a
  pooled estimate has ``sum(n_r - 1)`` degrees of freedom where one row's 3 seeds have 2).
  A single-replicate study has no estimate (``df`` 0) unless a calibration supplies one
  (`TrainingNoise.calibrated`, from the seed spread measured at the same recipe);
- **test images**: the figure is measured on a sample of images. `detnas.evaluation`
  resamples the test split (the same draws for every row and replicate); the bootstrap values of
  a row's mean are the means of its replicates' values on each draw, and a difference's are
  paired (the same draw for both rows), which removes what the two rows share.

The two add: ``var = sigma^2 (1/n_a + 1/n_b) + var_test(difference)``. The interval is
Student's t with the Welch-Satterthwaite degrees of freedom (the test part counts as known), so
few seeds widen it as they should. A comparison has one of three outcomes: ``a`` better,
``b`` better, or undetermined (the 95% interval of the difference contains 0, or the training
noise is unknown). It is never decided on the test images alone.

Pure Python + numpy/scipy; fractions in, fractions out (the report prints percent).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

LEVEL = 0.95
A_BETTER, B_BETTER, UNDETERMINED = "a better", "b better", "undetermined"


@dataclass(frozen=True)
class TrainingNoise:
    """The standard deviation a seed moves one replicate's figure by, and what it rests on."""

    sigma: float | None  # None: unknown (one replicate per row, no calibration)
    df: int  # degrees of freedom of the estimate (0: unknown)
    source: str  # in words, for the report

    @classmethod
    def pooled(cls, rows: list[list[float]], what: str = "rows") -> TrainingNoise:
        """Pooled within-row standard deviation of ``rows`` (each: its replicates' values)."""
        df = sum(len(r) - 1 for r in rows if len(r) > 1)
        if df == 0:
            return cls(None, 0, "one replicate per row: no estimate of the training noise")
        ss = sum(sum((x - statistics.fmean(r)) ** 2 for x in r) for r in rows if len(r) > 1)
        n = max(len(r) for r in rows)
        return cls(math.sqrt(ss / df), df,
                   f"pooled over the replicates of {sum(len(r) > 1 for r in rows)} {what} "
                   f"(up to {n} seeds each, {df} degrees of freedom)")

    @classmethod
    def calibrated(cls, sigma: float, df: int, source: str) -> TrainingNoise:
        """A seed spread measured elsewhere at the same recipe (a single-replicate study)."""
        return cls(sigma, df, source)

    @property
    def known(self) -> bool:
        return self.sigma is not None and self.df > 0


@dataclass(frozen=True)
class Figure:
    """A row's figure: its replicates' values and their bootstrap values over test images."""

    values: list[float]  # one per replicate, on the whole test split
    boots: list[list[float]] | None = None  # per replicate, the values on each test resample

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    def boot_means(self) -> list[float] | None:
        """The mean over replicates on each test resample (None without bootstrap values)."""
        if not self.boots or len(self.boots) != self.n or len({len(b) for b in self.boots}) != 1:
            return None
        return [statistics.fmean(draw) for draw in zip(*self.boots, strict=True)]


def _t(df: float, level: float = LEVEL) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, df)) if math.isfinite(df) else float(
        stats.norm.ppf(0.5 + level / 2))


def _variance(values: list[float] | None) -> float:
    return statistics.variance(values) if values and len(values) > 1 else 0.0


def half_width(train_var: float, test_var: float, df: int, level: float = LEVEL) -> float:
    """Half the ``level`` interval of an estimate whose variance has a training part (estimated
    with ``df`` degrees of freedom) and a test part (known): Welch-Satterthwaite's t."""
    total = train_var + test_var
    df_eff = total ** 2 / (train_var ** 2 / df) if train_var > 0 else math.inf
    return _t(df_eff, level) * math.sqrt(total)


def interval(fig: Figure, noise: TrainingNoise, level: float = LEVEL,
             test_sd: float | None = None, rerun: bool = False) -> tuple[float, float] | None:
    """The ``level`` interval of a row's mean with both sources (None: training noise unknown).
    ``rerun``: the interval a rerun of the study (another seed, another machine, the same
    replicates) lands in: both runs are noisy, so sqrt(2) times the mean's (the report prints
    this one: it is what a reader checks a rerun against). ``test_sd``: the test part when the
    bootstrap values are not at hand (an older report)."""
    if not noise.known:
        return None
    test_var = test_sd ** 2 if test_sd is not None else _variance(fig.boot_means())
    h = half_width(noise.sigma ** 2 / fig.n, test_var, noise.df, level)
    h *= math.sqrt(2) if rerun else 1.0  # (the degrees of freedom are unchanged)
    return fig.mean - h, fig.mean + h


@dataclass(frozen=True)
class Verdict:
    """The comparison of row a with row b."""

    diff: float  # mean a - mean b
    low: float | None  # its interval (None: training noise unknown)
    high: float | None
    outcome: str  # A_BETTER | B_BETTER | UNDETERMINED
    seeds: tuple[int, int]  # replicates of a, of b

    def to_dict(self) -> dict:
        return {"diff": self.diff, "interval": None if self.low is None else [self.low, self.high],
                "outcome": self.outcome, "seeds": list(self.seeds)}


def paired_test_sd(a: Figure, b: Figure) -> float | None:
    """The standard deviation of the difference of two rows' means over the test resamples
    (paired: the same draw for both). None without bootstrap values."""
    ma, mb = a.boot_means(), b.boot_means()
    if not ma or not mb or len(ma) != len(mb):
        return None
    return math.sqrt(_variance([x - y for x, y in zip(ma, mb, strict=True)]))


def compare(a: Figure, b: Figure, noise: TrainingNoise, level: float = LEVEL,
            test_sd: float | None = None) -> Verdict:
    """Row a against row b, with both sources of noise. The test part is `paired_test_sd`;
    ``test_sd`` replaces it where the bootstrap values are not at hand (an older report)."""
    diff = a.mean - b.mean
    if not noise.known:
        return Verdict(diff, None, None, UNDETERMINED, (a.n, b.n))
    if test_sd is None:
        test_sd = paired_test_sd(a, b) or 0.0
    h = half_width(noise.sigma ** 2 * (1 / a.n + 1 / b.n), test_sd ** 2, noise.df, level)
    outcome = A_BETTER if diff - h > 0 else B_BETTER if diff + h < 0 else UNDETERMINED
    return Verdict(diff, diff - h, diff + h, outcome, (a.n, b.n))


def resolvable(noise: TrainingNoise, seeds: int, test_sd_diff: float,
               level: float = LEVEL) -> float | None:
    """The smallest difference between two rows of ``seeds`` replicates each that a study calls
    at ``level``: the half width of the difference's interval (None: noise unknown)."""
    if not noise.known:
        return None
    return half_width(2 * noise.sigma ** 2 / seeds, test_sd_diff ** 2, noise.df, level)
