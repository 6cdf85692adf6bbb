"""Takeover onsets and handbacks: predicted p(nu=1|s) scored as the hazard of a takeover.

Per episode nu is a 0/1 sequence over the control ticks (1: the person is in control).

- An ONSET is a tick t with nu_t = 1 and (t = 0 or nu_{t-1} = 0): the person takes over.
- A HANDBACK is a tick t > 0 with nu_{t-1} = 1 and nu_t = 0: the person gives control back.
- A TAKEOVER SEGMENT is a maximal run of nu = 1, from its onset to the tick before its handback
  (or to the episode's end: such a segment is open, its handback not observed).
- The RISK SET is the ticks where the robot was in control before the tick (t = 0 or
  nu_{t-1} = 0): only there does the person decide whether to take over, so only those ticks are
  scored as onset decisions, with the label nu_t (1 = an onset). Ticks inside a takeover after its
  onset, and the handback ticks, are not in it.

Onset metrics of per-tick predictions p (numpy only):

- onset AUC: the ROC AUC of p over the risk set against its label (mile_ros.evaluation.metrics);
- onset log-likelihood: the mean Bernoulli log-likelihood over the risk set (p clipped to
  [1e-6, 1-1e-6]), nats per decision;
- onset ECE: the expected calibration error over the risk set (10 equal-width bins);
- time to onset: for each observed onset at tick t_o, the predicted onset is the first tick with
  p >= threshold (0.5) in the window from the first robot-decided tick of the same robot-controlled
  run (the tick after the previous handback, or the episode's first tick) to
  min(t_o + horizon, the last tick of the takeover segment); the error is that tick - t_o, in
  ticks (negative: predicted early). Reported as the mean absolute error over the onsets with a
  predicted crossing, and the fraction of onsets without one (missed).

Handback timing is descriptive (no estimator): the observed length of every takeover segment in
ticks (mean, median, min, max), the counts of onsets and handbacks and how many segments are
still open at the episode's end.

The bootstrap over episodes (mile_ros.evaluation.metrics.bootstrap_over_episodes) resamples
pooled tick indices; `PooledOnsets` keeps per pooled tick what the onset metrics need, so that a
resample is scored by indexing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from mile_ros.evaluation.metrics import (
    THRESHOLD,
    episode_starts,
    expected_calibration_error,
    log_likelihood,
    roc_auc,
)

HORIZON = 10    # ticks after an onset that a predicted onset may come (0.5 s at 20 Hz)
ONSET_METRICS = ("onset_auc", "onset_log_likelihood", "onset_ece", "time_to_onset_mae",
                 "time_to_onset_missed")
ONSET_HIGHER_IS_BETTER = {"onset_auc": True, "onset_log_likelihood": True, "onset_ece": False,
                          "time_to_onset_mae": False, "time_to_onset_missed": False}
ONSET_DEFINITIONS = {
    "risk_set": "ticks with t = 0 or nu_{t-1} = 0 (the robot in control before the tick), "
                "labelled nu_t (1 = a takeover onset); ticks inside a takeover are not in it",
    "onset_auc": "ROC AUC of p over the risk set against its onset label, ties count 1/2",
    "onset_log_likelihood": "mean over the risk set of nu*log(p) + (1-nu)*log(1-p), nats, p "
                            "clipped to [1e-6, 1-1e-6]; higher is better",
    "onset_ece": "expected calibration error over the risk set (10 equal-width bins of p)",
    "time_to_onset_mae": "mean |predicted onset - observed onset| in ticks over the onsets with a "
                         "predicted onset: the first tick with p >= threshold from the first "
                         "robot-decided tick of the onset's robot-controlled run to min(onset + "
                         "horizon, the segment's last tick)",
    "time_to_onset_missed": "fraction of the observed onsets without a predicted onset",
    "takeovers": "observed takeover segments: their lengths in ticks (onset to the tick before "
                 "the handback; open = still in control at the episode's end)",
}


# --- the events of one episode --------------------------------------------------------------
def _nu(nu) -> np.ndarray:
    return np.asarray(nu, dtype=bool).ravel()


def _previous(nu: np.ndarray) -> np.ndarray:
    """nu_{t-1} per tick, False at t = 0."""
    return np.r_[False, nu[:-1]] if len(nu) else nu


def risk_set(nu) -> np.ndarray:
    """Return the ticks scored as onset decisions: t = 0 or nu_{t-1} = 0 (a bool mask)."""
    return ~_previous(_nu(nu))


def onsets(nu) -> np.ndarray:
    """Return the takeover onsets: nu_t = 1 and (t = 0 or nu_{t-1} = 0) (a bool mask)."""
    nu = _nu(nu)
    return nu & ~_previous(nu)


def handbacks(nu) -> np.ndarray:
    """Return the handbacks: t > 0, nu_{t-1} = 1 and nu_t = 0 (a bool mask)."""
    nu = _nu(nu)
    return ~nu & _previous(nu)


def takeover_segments(nu) -> list[tuple[int, int]]:
    """Return the takeover segments as (onset tick, end tick exclusive), in order."""
    d = np.diff(np.r_[0, _nu(nu).astype(int), 0])
    return [(int(s), int(e)) for s, e in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1))]


def time_to_onset_errors(nu, p, threshold: float = THRESHOLD,
                         horizon: int = HORIZON) -> np.ndarray:
    """Return, per observed onset in order, predicted onset tick - observed onset tick.

    The predicted onset is the first tick with p >= `threshold` from the first robot-decided tick
    of the onset's robot-controlled run (0, or the tick after the previous handback) to
    min(onset + `horizon`, the segment's last tick); NaN where p stays below the threshold there.
    """
    nu, p = _nu(nu), np.asarray(p, dtype=np.float64).ravel()
    if len(p) != len(nu):
        raise ValueError(f"{len(nu)} labels but {len(p)} predictions")
    if horizon < 0:
        raise ValueError(f"horizon must be >= 0 ticks, got {horizon}")
    errors, first = [], 0
    for start, end in takeover_segments(nu):
        stop = min(start + int(horizon), end - 1)
        hits = np.flatnonzero(p[first:stop + 1] >= threshold)
        errors.append(float(first + hits[0] - start) if len(hits) else math.nan)
        first = end + 1
    return np.array(errors, dtype=np.float64)


# --- onset metrics ----------------------------------------------------------------------------
def score_onsets(y_risk, p_risk, errors) -> dict[str, float]:
    """Return the onset metrics from the risk set's labels and p and the time-to-onset errors.

    `errors`: one per observed onset, NaN (or inf) where no onset was predicted.
    """
    errors = np.asarray(errors, dtype=np.float64).ravel()
    hit = np.isfinite(errors)
    return {"onset_auc": roc_auc(y_risk, p_risk),
            "onset_log_likelihood": log_likelihood(y_risk, p_risk),
            "onset_ece": expected_calibration_error(y_risk, p_risk),
            "time_to_onset_mae": float(np.mean(np.abs(errors[hit]))) if hit.any() else math.nan,
            "time_to_onset_missed": float(np.mean(~hit)) if len(errors) else math.nan}


def onset_metrics(nu_episodes: Sequence, p_episodes: Sequence, threshold: float = THRESHOLD,
                  horizon: int = HORIZON) -> dict[str, float]:
    """Return the onset metrics of per-episode predictions (each [T_e]) on per-episode nu."""
    if len(nu_episodes) != len(p_episodes):
        raise ValueError(f"nu of {len(nu_episodes)} episodes but predictions of "
                         f"{len(p_episodes)}")
    nu = [_nu(y) for y in nu_episodes]
    p = [np.asarray(q, dtype=np.float64).ravel() for q in p_episodes]
    errors = [time_to_onset_errors(y, q, threshold, horizon) for y, q in zip(nu, p)]
    risk = [risk_set(y) for y in nu]
    pooled = (np.concatenate(x) if x else np.zeros(0) for x in (
        [y[r] for y, r in zip(nu, risk)], [q[r] for q, r in zip(p, risk)], errors))
    return score_onsets(*pooled)


def takeover_summary(nu_episodes: Sequence) -> dict:
    """Describe the observed takeovers: counts, and segment lengths in ticks (handback timing)."""
    nu = [_nu(y) for y in nu_episodes]
    segments = [(s, e, len(y)) for y in nu for s, e in takeover_segments(y)]
    lengths = np.array([e - s for s, e, _ in segments], dtype=np.float64)
    risk = int(sum(risk_set(y).sum() for y in nu))
    n_onsets = int(sum(onsets(y).sum() for y in nu))

    def stat(f):
        return float(f(lengths)) if len(lengths) else None
    return {"onsets": n_onsets, "handbacks": int(sum(handbacks(y).sum() for y in nu)),
            "risk_set_ticks": risk, "onset_rate": n_onsets / risk if risk else None,
            "open_at_episode_end": sum(1 for _, e, n in segments if e == n),
            "segment_length_ticks": {"mean": stat(np.mean), "median": stat(np.median),
                                     "min": stat(np.min), "max": stat(np.max)}}


def onset_rate(nu_episodes: Sequence) -> float:
    """Return onsets / risk-set ticks over the episodes (the constant best onset hazard)."""
    risk = sum(int(risk_set(y).sum()) for y in nu_episodes)
    return sum(int(onsets(y).sum()) for y in nu_episodes) / risk if risk else math.nan


# --- pooled over episodes, for the bootstrap --------------------------------------------------
@dataclass
class PooledOnsets:
    """Per pooled tick (episodes concatenated) what the onset metrics of the estimators need.

    risk: the risk-set mask; onset: the onset mask; p: estimator -> the p scored as its onset
    hazard; error: estimator -> the time-to-onset error at each onset tick (inf: missed; NaN at
    the other ticks).
    """

    risk: np.ndarray
    onset: np.ndarray
    p: dict[str, np.ndarray] = field(default_factory=dict)
    error: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def build(cls, nu_episodes: Sequence, pooled_p: dict[str, np.ndarray],
              threshold: float = THRESHOLD, horizon: int = HORIZON) -> "PooledOnsets":
        """Pool the episodes' events and each estimator's pooled p [sum T_e] and errors."""
        nu = [_nu(y) for y in nu_episodes]
        lengths = np.array([len(y) for y in nu])
        out = cls(np.concatenate([risk_set(y) for y in nu]),
                  np.concatenate([onsets(y) for y in nu]))
        bounds = episode_starts(lengths)[1:] if len(lengths) else []
        for name, p in pooled_p.items():
            p = np.asarray(p, dtype=np.float64).ravel()
            if len(p) != len(out.risk):
                raise ValueError(f"{name}: {len(p)} onset predictions for {len(out.risk)} ticks")
            error = np.full(len(p), math.nan)
            for y, q, s in zip(nu, np.split(p, bounds), np.r_[0, bounds].astype(int)):
                e = time_to_onset_errors(y, q, threshold, horizon)
                error[s + np.flatnonzero(onsets(y))] = np.where(np.isnan(e), math.inf, e)
            out.p[name], out.error[name] = p, error
        return out

    def metrics(self, y_all: np.ndarray, name: str, index: np.ndarray) -> dict[str, float]:
        """Return the onset metrics of estimator `name` on the pooled ticks `index`."""
        risk, onset = self.risk[index], self.onset[index]
        return score_onsets(y_all[index][risk], self.p[name][index][risk],
                            self.error[name][index][onset])
