"""Scores of predicted intervention probabilities against the actual interventions (numpy only).

Per tick, pooled over the episodes; `y` = nu, `p` = predicted p(nu=1|s):
accuracy and balanced accuracy of the label p >= 0.5 (balanced = mean of the recalls of the two
classes); ROC-AUC (Mann-Whitney, ties count one half); average precision (sum over decreasing
thresholds of precision x recall increase, no interpolation); log-likelihood per tick
(mean of y log p + (1-y) log(1-p), nats, p clipped to [1e-6, 1-1e-6]; higher is better); Brier
score (mean (p-y)^2; lower is better); expected calibration error (ECE: 10 equal-width bins of p,
sum over bins of (ticks in the bin / all ticks) x |observed nu rate - mean p| in the bin; lower is
better).

With the true p(nu=1|s) of every tick known (a simulated person): how close a model's p is to
it, as mean absolute error, root mean square error and Pearson correlation.

Confidence intervals: percentile bootstrap over EPISODES (episodes resampled with replacement,
ticks of an episode kept together; the caller uses the same resamples for every estimator so that
differences between estimators get intervals too).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

EPS = 1e-6
THRESHOLD = 0.5
LEVEL = 0.95
ECE_BINS = 10
METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "average_precision",
           "log_likelihood", "brier", "ece", "rate_error")
HIGHER_IS_BETTER = {"accuracy": True, "balanced_accuracy": True, "roc_auc": True,
                    "average_precision": True, "log_likelihood": True, "brier": False,
                    "ece": False, "rate_error": False}
DEFINITIONS = {
    "accuracy": "fraction of ticks where (p >= 0.5) == nu",
    "balanced_accuracy": "mean of the recall on nu=1 ticks and on nu=0 ticks, label p >= 0.5",
    "roc_auc": "area under the ROC curve = P(p on a random nu=1 tick > p on a random nu=0 "
               "tick), ties count 1/2",
    "average_precision": "sum over decreasing thresholds of precision * (recall increase)",
    "log_likelihood": "mean over ticks of nu*log(p) + (1-nu)*log(1-p), nats, p clipped to "
                      "[1e-6, 1-1e-6]; higher is better",
    "brier": "mean over ticks of (p - nu)^2; lower is better",
    "ece": "expected calibration error: 10 equal-width bins of p ([0, 0.1), ..., [0.9, 1]), "
           "sum over bins of (n_bin / n) * |mean nu - mean p| in the bin; lower is better",
    "rate_error": "|mean p - mean nu| over ticks: the predicted intervention rate's error "
                  "(0.05 = 5 points); lower is better",
    "truth_mae": "mean |p_mile - p_true| over ticks",
    "truth_rmse": "sqrt(mean (p_mile - p_true)^2) over ticks",
    "truth_pearson": "Pearson correlation of p_mile and p_true over ticks",
    "ci": "percentile bootstrap over episodes (resampled with replacement, the same resamples for "
          "every estimator)",
}


# --- metrics --------------------------------------------------------------------------------
def _check(y, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=bool).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"{len(y)} labels but {len(p)} predictions")
    return y, p


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties given the mean of their ranks."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.r_[0, np.flatnonzero(np.diff(xs)) + 1]
    ends = np.r_[starts[1:], len(xs)]
    mean_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def roc_auc(y, p) -> float:
    y, p = _check(y, p)
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return math.nan
    return float((_average_ranks(p)[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def _counts_by_threshold(y, p):
    """Count (true positives, false positives) predicting nu=1 for p >= each distinct p.

    The distinct p in decreasing order.
    """
    order = np.argsort(-p, kind="mergesort")
    ys, ps = y[order], p[order]
    last = np.r_[np.flatnonzero(np.diff(ps)), len(ps) - 1]   # last index of each tie group
    tps = np.cumsum(ys)[last]
    return tps, (last + 1) - tps


def roc_curve(y, p) -> tuple[np.ndarray, np.ndarray]:
    """Return (false positive rate, true positive rate) from (0, 0) to (1, 1)."""
    y, p = _check(y, p)
    tps, fps = _counts_by_threshold(y, p)
    n1, n0 = max(int(y.sum()), 1), max(len(y) - int(y.sum()), 1)
    return np.r_[0.0, fps / n0], np.r_[0.0, tps / n1]


def precision_recall_curve(y, p) -> tuple[np.ndarray, np.ndarray]:
    """(precision, recall) at decreasing thresholds."""
    y, p = _check(y, p)
    tps, fps = _counts_by_threshold(y, p)
    return tps / (tps + fps), tps / max(int(y.sum()), 1)


def average_precision(y, p) -> float:
    y, p = _check(y, p)
    if not y.any():
        return math.nan
    tps, fps = _counts_by_threshold(y, p)
    return float(np.sum(np.diff(np.r_[0, tps]) * (tps / (tps + fps))) / tps[-1])


def accuracy(y, p, threshold: float = THRESHOLD) -> float:
    y, p = _check(y, p)
    return float(np.mean((p >= threshold) == y)) if len(y) else math.nan


def balanced_accuracy(y, p, threshold: float = THRESHOLD) -> float:
    y, p = _check(y, p)
    if y.all() or not y.any():
        return math.nan
    pred = p >= threshold
    return float(0.5 * (pred[y].mean() + (~pred[~y]).mean()))


def log_likelihood(y, p) -> float:
    y, p = _check(y, p)
    q = np.clip(p, EPS, 1 - EPS)
    return float(np.mean(np.where(y, np.log(q), np.log1p(-q)))) if len(y) else math.nan


def brier(y, p) -> float:
    y, p = _check(y, p)
    return float(np.mean((p - y) ** 2)) if len(y) else math.nan


def expected_calibration_error(y, p, bins: int = ECE_BINS) -> float:
    """Return the ECE of p against y over `bins` equal-width bins of [0, 1].

    Sum over bins b of (n_b / N) |mean(y_b) - mean(p_b)| = sum_b |sum(y_b) - sum(p_b)| / N; bin b
    holds b/bins <= p < (b+1)/bins, the last one also p = 1. NaN without ticks.
    """
    y, p = _check(y, p)
    if not len(y):
        return math.nan
    p = np.clip(p, 0.0, 1.0)
    which = np.minimum((p * bins).astype(int), bins - 1)
    sum_y = np.bincount(which, weights=y.astype(float), minlength=bins)
    sum_p = np.bincount(which, weights=p, minlength=bins)
    return float(np.sum(np.abs(sum_y - sum_p)) / len(y))


def rate_error(y, p) -> float:
    """Return |mean(p) - mean(y)|, the predicted intervention rate's error; NaN without ticks."""
    y, p = _check(y, p)
    return float(abs(np.mean(p) - np.mean(y))) if len(y) else math.nan


METRIC_FUNCTIONS: dict[str, Callable] = {
    "accuracy": accuracy, "balanced_accuracy": balanced_accuracy, "roc_auc": roc_auc,
    "average_precision": average_precision, "log_likelihood": log_likelihood, "brier": brier,
    "ece": expected_calibration_error, "rate_error": rate_error}


def compute_metrics(y, p) -> dict[str, float]:
    return {name: METRIC_FUNCTIONS[name](y, p) for name in METRICS}


def truth_metrics(p_model, p_true) -> dict[str, float]:
    a, b = np.asarray(p_model, float).ravel(), np.asarray(p_true, float).ravel()
    if len(a) == 0:
        return {"truth_mae": math.nan, "truth_rmse": math.nan, "truth_pearson": math.nan}
    pearson = math.nan
    if len(a) > 1 and a.std() > 0 and b.std() > 0:
        pearson = float(np.corrcoef(a, b)[0, 1])
    return {"truth_mae": float(np.mean(np.abs(a - b))),
            "truth_rmse": float(np.sqrt(np.mean((a - b) ** 2))), "truth_pearson": pearson}


def reliability(y, p, bins: int = 10):
    """Return (mean predicted, observed frequency, count) in equal-count bins of p.

    Tied p share a bin, so a constant predictor gives one point.
    """
    edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(len(edges) - 2, 0))
    groups = [np.flatnonzero(which == b) for b in np.unique(which)]
    return (np.array([p[g].mean() for g in groups]), np.array([y[g].mean() for g in groups]),
            np.array([len(g) for g in groups]))


# --- bootstrap over episodes ----------------------------------------------------------------
def episode_starts(lengths: np.ndarray) -> np.ndarray:
    """Index of each episode's first tick in the pooled ticks."""
    return np.r_[0, np.cumsum(lengths)[:-1]]


def bootstrap_over_episodes(statistic: Callable[[np.ndarray], dict], lengths: Sequence[int],
                            n_resamples: int, seed: int, keys: dict,
                            progress: bool = False) -> dict:
    """Bootstrap `statistic` over `n_resamples` resamples of the episodes.

    Returns {name: {metric: [value per resample]}} of `statistic` (pooled tick index -> {name:
    {metric: value}}) over `n_resamples` resamples of the episodes drawn with replacement, an
    episode's ticks kept together. `keys` ({name: {metric: ...}}) names the lists to fill.
    """
    lengths = np.asarray(lengths)
    n_eps, starts = len(lengths), episode_starts(lengths)
    samples: dict = {name: {m: [] for m in vals} for name, vals in keys.items()}
    rng = np.random.default_rng(seed)
    iterator = range(int(n_resamples))
    if progress:
        from tqdm import tqdm
        iterator = tqdm(iterator, desc="bootstrap over episodes", unit="resample")
    for _ in iterator:
        pick = rng.integers(0, n_eps, n_eps)
        index = np.concatenate([np.arange(starts[i], starts[i] + lengths[i]) for i in pick])
        for name, vals in statistic(index).items():
            for m, v in vals.items():
                samples[name][m].append(v)
    return samples


def percentile_ci(samples: np.ndarray, level: float) -> list[float] | None:
    """[lo, hi] of the finite samples at `level`; None when there are none."""
    ok = samples[np.isfinite(samples)]
    if len(ok) == 0:
        return None
    lo, hi = np.percentile(ok, [50 * (1 - level), 50 * (1 + level)])
    return [float(lo), float(hi)]


def finite_or_none(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def format_metric(m: dict, spec: str, ci: bool = True) -> str:
    """'value [lo,hi]' of a {"value", "ci"} entry ('n/a' when undefined)."""
    if m["value"] is None:
        return "n/a"
    text = format(m["value"], spec)
    if ci and m.get("ci"):
        text += f" [{format(m['ci'][0], spec)},{format(m['ci'][1], spec)}]"
    return text
