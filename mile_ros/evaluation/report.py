"""The intervention-prediction report.

Every estimator scored on the evaluation ticks, with episode-bootstrap intervals, written as
report.json beside the plots and printed as a table.

The estimators (mile_ros.evaluation.estimators) give p(nu=1|s) on every control tick of the
evaluation episodes; the metrics (mile_ros.evaluation.metrics) are pooled over the episodes, and
their intervals come from one set of episode resamples shared by every estimator, so that the
differences `mile - majority` and `mile - classifier` get intervals too.

Simulated people: when the true p(nu=1|s) of every tick is known, the report adds the truth as an
`oracle` estimator (the best any estimator can do on these ticks) and how close MILE's p is to
it: mean absolute error, root mean square error, Pearson correlation.

Takeover onsets (mile_ros.evaluation.onsets): every estimator's p is also scored as the hazard of
a takeover on the risk set (the robot-controlled ticks) -- onset AUC, onset log-likelihood, onset
ECE, time-to-onset error -- over the same resamples; an estimator may give other p for that
(`onset_predictions`: the majority estimator's constant is then the training onset rate). The
observed takeovers (counts, segment lengths: handback timing) are described in "takeovers".

Outputs: a printed table; <out>/report.json; the plots of mile_ros.evaluation.plots.
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from mile_ros._io import json_default as _json_default
from mile_ros.evaluation import EvalError
from mile_ros.evaluation.estimators import (
    ESTIMATOR_NOTES,
    ClassifierConfig,
    MajorityEstimator,
    NeuralClassifier,
    mile_predict,
)
from mile_ros.evaluation.metrics import (
    DEFINITIONS,
    HIGHER_IS_BETTER,
    LEVEL,
    METRICS,
    THRESHOLD,
    bootstrap_over_episodes,
    compute_metrics,
    episode_starts,
    finite_or_none,
    format_metric,
    percentile_ci,
    truth_metrics,
)
from mile_ros.evaluation.onsets import (
    HORIZON,
    ONSET_DEFINITIONS,
    ONSET_HIGHER_IS_BETTER,
    ONSET_METRICS,
    PooledOnsets,
    onset_rate,
    takeover_summary,
)
from mile_ros.evaluation.plots import write_plots
from mile_ros.learning.specs import FRAME_STACK

ALL_METRICS = METRICS + ONSET_METRICS


# --- evaluation with episode-bootstrap intervals --------------------------------------------
def evaluate(nu: Sequence[np.ndarray], predictions: dict[str, Sequence[np.ndarray]],
             true_p: Sequence[np.ndarray | None] | None = None, n_bootstrap: int = 1000,
             seed: int = 0, level: float = LEVEL, reference: str = "mile",
             progress: bool = False, onset_predictions: dict | None = None,
             horizon: int = HORIZON) -> dict:
    """Metrics (per tick and of the onsets) with episode-bootstrap intervals.

    nu: per episode, bool [T_e]; predictions: estimator name -> per episode p [T_e]; true_p: per
    episode the true p [T_e] or None (unknown); onset_predictions: estimator name -> per episode
    the p scored as its onset hazard, where it differs from its per-tick p; horizon: of the
    time-to-onset error, in ticks. Returns {"estimators": {name: {metric: {"value", "ci"}}},
    "differences": {"<reference> - <other>": {...}}, "truth": {...} | None, "takeovers": {...},
    "bootstrap": {...}}. An interval is None when no resample defines the metric.
    """
    n_eps = len(nu)
    if n_eps == 0:
        raise EvalError("no episodes to evaluate")
    nu = [np.asarray(y, bool).ravel() for y in nu]
    lengths = np.array([len(y) for y in nu])
    preds = _pooled_predictions(predictions, lengths)
    y_all = np.concatenate(nu)
    p_true_all, has_truth = _pooled_truth(true_p, lengths)
    if has_truth.all() and len(y_all):
        preds["oracle"] = p_true_all
    truth = (reference, p_true_all, has_truth) if reference in preds and has_truth.any() else None
    onset_p = {**preds, **_pooled_predictions(onset_predictions or {}, lengths)}
    pooled_onsets = PooledOnsets.build(nu, {n: onset_p[n] for n in preds}, THRESHOLD, horizon)
    statistic = functools.partial(_all_metrics, y_all, preds, truth, pooled_onsets)
    point = statistic(np.arange(len(y_all)))
    samples = bootstrap_over_episodes(statistic, lengths, n_bootstrap, seed, point, progress)
    summary = functools.partial(_summary, point, samples, n_bootstrap, level)
    report = {"estimators": {name: summary(name) for name in preds},
              "differences": {}, "truth": None,
              "bootstrap": {"resamples": int(n_bootstrap), "unit": "episode", "seed": int(seed),
                            "level": level, "method": "percentile"},
              "episodes": n_eps, "ticks": int(len(y_all)),
              "interventions": int(y_all.sum()),
              "intervention_rate": float(y_all.mean()) if len(y_all) else math.nan,
              "takeovers": takeover_summary(nu),
              "onsets": {"threshold": THRESHOLD, "horizon_ticks": int(horizon)}}
    if truth is not None:
        report["truth"] = {**summary("_truth"), "ticks_with_truth": int(has_truth.sum())}
    if reference in preds:
        report["differences"] = {
            f"{reference} - {other}": _difference(point, samples, reference, other,
                                                  n_bootstrap, level)
            for other in preds if other not in (reference, "oracle")}
    return report


def _pooled_predictions(predictions: dict, lengths: np.ndarray) -> dict[str, np.ndarray]:
    """Each estimator's per-episode predictions concatenated, checked against the tick counts."""
    n_eps = len(lengths)
    preds = {}
    for name, per_ep in predictions.items():
        if len(per_ep) != n_eps:
            raise ValueError(f"{name}: predictions for {len(per_ep)} episodes, expected {n_eps}")
        arrays = [np.asarray(q, float).ravel() for q in per_ep]
        bad = [i for i, q in enumerate(arrays) if len(q) != lengths[i]]
        if bad:
            raise ValueError(f"{name}: episode {bad[0]} has {len(arrays[bad[0]])} predictions "
                             f"for {lengths[bad[0]]} ticks")
        preds[name] = np.concatenate(arrays)
    return preds


def _pooled_truth(true_p, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (true p of every pooled tick, NaN where unknown; whether it is known).

    Episodes without the truth are left out of the truth metrics.
    """
    starts = episode_starts(lengths)
    has_truth = np.zeros(int(lengths.sum()), bool)
    p_true_all = np.full(int(lengths.sum()), np.nan)
    if true_p is None:
        return p_true_all, has_truth
    for i, tp in enumerate(true_p):
        if tp is not None:
            tp = np.asarray(tp, float).ravel()
            if len(tp) != lengths[i]:
                raise ValueError(f"true p of episode {i}: {len(tp)} values for "
                                 f"{lengths[i]} ticks")
            p_true_all[starts[i]:starts[i] + lengths[i]] = tp
    return p_true_all, np.isfinite(p_true_all)


def _all_metrics(y_all: np.ndarray, preds: dict, truth: tuple | None,
                 pooled_onsets: PooledOnsets, index: np.ndarray) -> dict:
    """Return {estimator: metrics, onset metrics included} on the ticks `index`.

    Plus "_truth" (the reference against the true p on the ticks where it is known) when `truth`
    = (reference, p_true_all, has_truth).
    """
    y = y_all[index]
    out = {name: {**compute_metrics(y, p[index]), **pooled_onsets.metrics(y_all, name, index)}
           for name, p in preds.items()}
    if truth is not None:
        reference, p_true_all, has_truth = truth
        m = has_truth[index]
        out["_truth"] = truth_metrics(preds[reference][index][m], p_true_all[index][m])
    return out


def _summary(point: dict, samples: dict, n_bootstrap: int, level: float, name: str) -> dict:
    """{metric: {"value", "ci"}} of one estimator (or "_truth")."""
    return {m: {"value": finite_or_none(v),
                "ci": percentile_ci(np.array(samples[name][m]), level) if n_bootstrap else None}
            for m, v in point[name].items()}


def _difference(point: dict, samples: dict, reference: str, other: str, n_bootstrap: int,
                level: float) -> dict:
    """{metric: {"value", "ci"}} of reference - other, over the same resamples."""
    diff = {}
    for m in ALL_METRICS:
        a = np.array(samples[reference][m]) - np.array(samples[other][m])
        diff[m] = {"value": finite_or_none(point[reference][m] - point[other][m]),
                   "ci": percentile_ci(a, level) if n_bootstrap else None}
    return diff


# --- the estimators on the episodes, and the report -----------------------------------------
def run(model, eval_episodes: list[dict], train_episodes: list[dict] | None = None,
        true_p: Sequence | None = None, n_bootstrap: int = 1000, seed: int = 0,
        out: Path | None = None, progress: bool = False,
        classifier_config: ClassifierConfig | None = None, inputs: dict | None = None,
        horizon: int = HORIZON) -> dict:
    """Predict with the three estimators, evaluate, and (with `out`) write report.json + plots.

    Episodes are dicts with "state" [T,S], "nu" [T] (and "name"); the states must already be in
    the model's state order. `horizon`: of the time-to-onset error, in ticks.
    """
    k = int(getattr(model.obs_spec, "frame_stack", FRAME_STACK))
    (train_rate, train_onset_rate), rate_source = _majority_rate(eval_episodes, train_episodes)
    majority = MajorityEstimator(train_rate, train_onset_rate)
    per_episode = {"mile": mile_predict(model, eval_episodes)}
    classifier_info = None
    if train_episodes:
        cfg = classifier_config or ClassifierConfig(seed=seed)
        clf = NeuralClassifier(cfg).fit(train_episodes, progress=progress)
        per_episode["classifier"] = clf.predict(eval_episodes)
        classifier_info = clf.info
    per_episode["majority"] = majority.predict(eval_episodes)
    report = evaluate([e["nu"] for e in eval_episodes], per_episode, true_p, n_bootstrap, seed,
                      progress=progress, horizon=horizon,
                      onset_predictions={"majority": majority.predict_onsets(eval_episodes)})
    report["notes"] = {n: ESTIMATOR_NOTES[n] for n in report["estimators"]}
    report["majority"] = {"label": "intervene" if train_rate >= THRESHOLD else "no intervention",
                          "p": train_rate, "onset_p": train_onset_rate,
                          "rate_source": rate_source}
    report["classifier"] = classifier_info
    report["model"] = _model_info(model, k)
    report["inputs"] = inputs or {}
    report["definitions"] = {**DEFINITIONS, **ONSET_DEFINITIONS}
    report["episode_names"] = [e.get("name", str(i)) for i, e in enumerate(eval_episodes)]
    if out is not None:
        if true_p is not None and "oracle" in report["estimators"]:
            per_episode["oracle"] = [np.asarray(t, float) for t in true_p]
        write_outputs(Path(out), report, eval_episodes, per_episode, true_p)
    return report


def _majority_rate(eval_episodes: list[dict], train_episodes: list[dict] | None):
    """Return ((the majority estimator's p, its onset p), where the rates come from)."""
    if train_episodes:
        episodes, source = train_episodes, "training bags"
    else:
        episodes = eval_episodes
        source = "evaluation bags (no --train-bags: optimistic for the majority estimator)"
    nu = [np.asarray(e["nu"], bool) for e in episodes]
    return (float(np.mean(np.concatenate(nu))), float(onset_rate(nu))), source


def _model_info(model, k: int) -> dict:
    return {"c": _float_or_none(getattr(model, "c", None)),
            "beta": _float_or_none(getattr(model, "beta", None)),
            "frame_stack": k,
            "state_names": list(getattr(model.obs_spec, "state_names", []) or [])}


def _float_or_none(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def write_outputs(out: Path, report: dict, episodes: Sequence[dict], per_episode: dict,
                  true_p: Sequence | None = None) -> list[str]:
    """report.json and the plots under `out`; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    files = write_plots(out, report, episodes, per_episode, true_p)
    report["plots"] = [str(f) for f in files]
    (out / "report.json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    return [str(f) for f in files] + [str(out / "report.json")]


# --- the table ------------------------------------------------------------------------------
DIFFERENCE_LINES = (("roc_auc", "log_likelihood", "brier", "ece"),
                    ("onset_auc", "onset_log_likelihood", "time_to_onset_mae"))


def format_table(report: dict) -> str:
    names = list(report["estimators"])
    head = f"{'metric':<26}" + "".join(f"{n:>27}" for n in names)
    lines = [head, "-" * len(head)]
    better = {**HIGHER_IS_BETTER, **ONSET_HIGHER_IS_BETTER}
    for metric in ALL_METRICS:
        if metric == ONSET_METRICS[0]:
            lines.append("takeover onsets (the robot-controlled ticks):")
        arrow = "(+)" if better[metric] else "(-)"
        lines.append(f"{metric + ' ' + arrow:<26}" + "".join(
            f"{format_metric(report['estimators'][n][metric], '.3f'):>27}" for n in names))
    for label, diff in report.get("differences", {}).items():
        lines.append("")
        for group in DIFFERENCE_LINES:
            lines.append(f"{label}: " + ", ".join(
                f"{m} {format_metric(diff[m], '+.3f')}" for m in group
                if m in diff and diff[m]["value"] is not None))
    lines += _takeover_lines(report)
    lines += _truth_and_majority_lines(report)
    b = report["bootstrap"]
    lines.append("")
    lines.append(f"{report['episodes']} episodes, {report['ticks']} ticks, "
                 f"{report['interventions']} with nu=1 ({report['intervention_rate']:.1%}); "
                 f"[{b['level']:.0%} CI: {b['resamples']} bootstrap resamples of episodes]; "
                 "(+) higher is better, (-) lower is better; labels are p >= 0.5")
    return "\n".join(lines)


def _takeover_lines(report: dict) -> list[str]:
    """Describe the observed takeovers, handback timing and the time-to-onset settings."""
    t, o = report.get("takeovers"), report.get("onsets")
    if not t:
        return []
    length = t["segment_length_ticks"]
    timing = ("" if length["mean"] is None else
              f"; takeover length (onset to handback) mean {length['mean']:.1f} ticks, median "
              f"{length['median']:.1f}, range {length['min']:.0f}-{length['max']:.0f}")
    rate = "n/a" if t["onset_rate"] is None else f"{t['onset_rate']:.3f}"
    return ["", f"takeovers: {t['onsets']} onsets over {t['risk_set_ticks']} robot-controlled "
                f"ticks (onset rate {rate}), {t['handbacks']} handbacks, "
                f"{t['open_at_episode_end']} still in control at the episode's end{timing}",
            f"time to onset: first p >= {o['threshold']} up to {o['horizon_ticks']} ticks after "
            "the onset; mae in ticks, missed = fraction of onsets without such a tick"]


def _truth_and_majority_lines(report: dict) -> list[str]:
    lines = []
    if report.get("truth"):
        t = report["truth"]
        lines.append("")
        lines.append("MILE vs the true p (" + f"{t['ticks_with_truth']} ticks): " + ", ".join(
            f"{k[6:]} {format_metric(v, '.3f')}" for k, v in t.items()
            if k.startswith("truth_") and v["value"] is not None))
    if report.get("majority"):
        m = report["majority"]
        lines.append("")
        onset = f", onset p = {m['onset_p']:.3f} (their onset rate)" if "onset_p" in m else ""
        lines.append(f"majority: predicts '{m['label']}'; p = {m['p']:.3f}, the intervention "
                     f"rate of the {m['rate_source']}{onset}")
    return lines
