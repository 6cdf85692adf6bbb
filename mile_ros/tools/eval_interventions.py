"""`mile-ros eval-interventions`: how well a fitted MILE model predicts when the person intervenes.

    mile-ros eval-interventions --model CKPT --bags DIR [DIR ...] [--train-bags DIR ...]
                                [--out report/] [--bootstrap N] [--seed S] [--true-p FILE]

The paper's user-study analysis (DESIGN §4), on a lab's own bags. On every control tick of the
evaluation bags, three estimators give p(nu=1|s):

- `mile`: the checkpoint's intervention model, `MileModel.intervention_probability` on the
  observation the trainer builds (the state stacked over the model's `frame_stack` ticks, current
  first, episode start padded with the first state; image too when the model uses one).
- `majority`: the majority class of the training ticks, i.e. always "no intervention" when people
  intervene on fewer than half the ticks. For the probabilistic metrics (ROC-AUC, average precision,
  log-likelihood, Brier) it predicts the constant p = the training-set intervention rate (from
  --train-bags; without them, from the evaluation bags themselves, which flatters it; the report
  says which).
- `classifier`: an MLP (2 x 64 ReLU, same stacked, standardised state; plain, NOT class-balanced
  binary cross-entropy so that its probabilities stay calibrated; Adam, deterministic seed, early
  stopping on 20% of the training episodes) trained on --train-bags (the earlier iterations).
  Skipped when no --train-bags are given.

Metrics (per tick, pooled over the episodes; `y` = nu, `p` = predicted p(nu=1|s)):
accuracy and balanced accuracy of the label p >= 0.5 (balanced = mean of the recalls of the two
classes); ROC-AUC (Mann-Whitney, ties count one half); average precision (sum over decreasing
thresholds of precision x recall increase, no interpolation); log-likelihood per tick
(mean of y log p + (1-y) log(1-p), nats, p clipped to [1e-6, 1-1e-6]; higher is better); Brier
score (mean (p-y)^2; lower is better). Confidence intervals: percentile bootstrap over EPISODES
(episodes resampled with replacement, ticks of an episode kept together, the same resamples for
every estimator so that the differences `mile - majority` and `mile - classifier` get intervals).

Simulated people: when the true p(nu=1|s) of every tick is known (`--true-p FILE`: JSON lines
`{"stamp_ns": <tick stamp>, "p": <true p>}`, matched to the ticks by their header stamp), the report
adds the truth as an `oracle` estimator (the best any estimator can do on these ticks) and how
close MILE's p is to it: mean absolute error, root mean square error, Pearson correlation.
(The sim_human node does not record its p yet; bench/bench_eval_interventions.py collects with the
benchmark's SimulatedPerson and writes this file.)

Outputs: a printed table; <out>/report.json; <out>/roc.png (ROC and precision-recall curves),
<out>/calibration.png (reliability curve, equal-count bins, and the predictions' histogram),
<out>/timelines.png (predicted p per tick against the actual nu for a few episodes) and, with
the truth, <out>/truth.png (MILE's p against the true p).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from mile_ros._io import json_default as _json_default

EPS = 1e-6
THRESHOLD = 0.5
LEVEL = 0.95
METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "average_precision",
           "log_likelihood", "brier")
HIGHER_IS_BETTER = {"accuracy": True, "balanced_accuracy": True, "roc_auc": True,
                    "average_precision": True, "log_likelihood": True, "brier": False}
DEFINITIONS = {
    "accuracy": "fraction of ticks where (p >= 0.5) == nu",
    "balanced_accuracy": "mean of the recall on nu=1 ticks and on nu=0 ticks, label p >= 0.5",
    "roc_auc": "area under the ROC curve = P(p on a random nu=1 tick > p on a random nu=0 "
               "tick), ties count 1/2",
    "average_precision": "sum over decreasing thresholds of precision * (recall increase)",
    "log_likelihood": "mean over ticks of nu*log(p) + (1-nu)*log(1-p), nats, p clipped to "
                      "[1e-6, 1-1e-6]; higher is better",
    "brier": "mean over ticks of (p - nu)^2; lower is better",
    "truth_mae": "mean |p_mile - p_true| over ticks",
    "truth_rmse": "sqrt(mean (p_mile - p_true)^2) over ticks",
    "truth_pearson": "Pearson correlation of p_mile and p_true over ticks",
    "ci": "percentile bootstrap over episodes (resampled with replacement, the same resamples for "
          "every estimator)",
}
ESTIMATOR_NOTES = {
    "mile": "MILE intervention model of the checkpoint, p(nu=1|s) in closed form (DESIGN §2)",
    "majority": "always 'no intervention' (the majority class); probabilistic metrics use the "
                "constant p = the training-set intervention rate",
    "classifier": "MLP 2x64 ReLU on the stacked standardised state, unweighted (not "
                  "class-balanced) cross-entropy, trained on --train-bags",
    "oracle": "the simulated person's true p(nu=1|s) (from --true-p)",
}


class EvalError(ValueError):
    """Unusable input to the evaluation; the message names the argument or file."""


# --- metrics (numpy only) -------------------------------------------------------------------
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
    """(true positives, false positives) predicting nu=1 for p >= each distinct p, decreasing."""
    order = np.argsort(-p, kind="mergesort")
    ys, ps = y[order], p[order]
    last = np.r_[np.flatnonzero(np.diff(ps)), len(ps) - 1]   # last index of each tie group
    tps = np.cumsum(ys)[last]
    return tps, (last + 1) - tps


def roc_curve(y, p) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) from (0, 0) to (1, 1)."""
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


METRIC_FUNCTIONS: dict[str, Callable] = {
    "accuracy": accuracy, "balanced_accuracy": balanced_accuracy, "roc_auc": roc_auc,
    "average_precision": average_precision, "log_likelihood": log_likelihood, "brier": brier}


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


# --- bootstrap over episodes ----------------------------------------------------------------
def _percentile_ci(samples: np.ndarray, level: float) -> list[float] | None:
    ok = samples[np.isfinite(samples)]
    if len(ok) == 0:
        return None
    lo, hi = np.percentile(ok, [50 * (1 - level), 50 * (1 + level)])
    return [float(lo), float(hi)]


def evaluate(nu: Sequence[np.ndarray], predictions: dict[str, Sequence[np.ndarray]],
             true_p: Sequence[np.ndarray | None] | None = None, n_bootstrap: int = 1000,
             seed: int = 0, level: float = LEVEL, reference: str = "mile",
             progress: bool = False) -> dict:
    """Metrics with episode-bootstrap intervals.

    nu: per episode, bool [T_e]; predictions: estimator name -> per episode p [T_e]; true_p: per
    episode the true p [T_e] or None (unknown). Returns {"estimators": {name: {metric: {"value",
    "ci"}}}, "differences": {"<reference> - <other>": {...}}, "truth": {...} | None,
    "bootstrap": {...}}. An interval is None when no resample defines the metric.
    """
    n_eps = len(nu)
    if n_eps == 0:
        raise EvalError("no episodes to evaluate")
    nu = [np.asarray(y, bool).ravel() for y in nu]
    lengths = np.array([len(y) for y in nu])
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
    y_all = np.concatenate(nu)
    starts = np.r_[0, np.cumsum(lengths)[:-1]]

    # the truth, where known (episodes without it are left out of the truth metrics)
    has_truth = np.zeros(len(y_all), bool)
    p_true_all = np.full(len(y_all), np.nan)
    if true_p is not None:
        for i, tp in enumerate(true_p):
            if tp is not None:
                tp = np.asarray(tp, float).ravel()
                if len(tp) != lengths[i]:
                    raise ValueError(f"true p of episode {i}: {len(tp)} values for "
                                     f"{lengths[i]} ticks")
                p_true_all[starts[i]:starts[i] + lengths[i]] = tp
        has_truth = np.isfinite(p_true_all)
    if has_truth.all() and len(y_all):
        preds["oracle"] = p_true_all
    truth_on = reference in preds and has_truth.any()

    def all_metrics(index: np.ndarray) -> dict:
        y = y_all[index]
        out = {name: compute_metrics(y, p[index]) for name, p in preds.items()}
        if truth_on:
            m = has_truth[index]
            out["_truth"] = truth_metrics(preds[reference][index][m], p_true_all[index][m])
        return out

    point = all_metrics(np.arange(len(y_all)))
    samples: dict = {name: {m: [] for m in vals} for name, vals in point.items()}
    rng = np.random.default_rng(seed)
    iterator = range(int(n_bootstrap))
    if progress:
        from tqdm import tqdm
        iterator = tqdm(iterator, desc="bootstrap over episodes", unit="resample")
    for _ in iterator:
        pick = rng.integers(0, n_eps, n_eps)
        index = np.concatenate([np.arange(starts[i], starts[i] + lengths[i]) for i in pick])
        for name, vals in all_metrics(index).items():
            for m, v in vals.items():
                samples[name][m].append(v)

    def summary(name: str) -> dict:
        return {m: {"value": _finite(v), "ci": _percentile_ci(np.array(samples[name][m]), level)
                    if n_bootstrap else None} for m, v in point[name].items()}

    report = {"estimators": {name: summary(name) for name in preds},
              "differences": {}, "truth": None,
              "bootstrap": {"resamples": int(n_bootstrap), "unit": "episode", "seed": int(seed),
                            "level": level, "method": "percentile"},
              "episodes": n_eps, "ticks": int(len(y_all)),
              "interventions": int(y_all.sum()),
              "intervention_rate": float(y_all.mean()) if len(y_all) else math.nan}
    if truth_on:
        report["truth"] = {**summary("_truth"), "ticks_with_truth": int(has_truth.sum())}
    if reference in preds:
        for other in preds:
            if other in (reference, "oracle"):
                continue
            diff = {}
            for m in METRICS:
                a = np.array(samples[reference][m]) - np.array(samples[other][m])
                diff[m] = {"value": _finite(point[reference][m] - point[other][m]),
                           "ci": _percentile_ci(a, level) if n_bootstrap else None}
            report["differences"][f"{reference} - {other}"] = diff
    return report


def _finite(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


# --- estimators -----------------------------------------------------------------------------
def stack_states(states: np.ndarray, k: int) -> np.ndarray:
    """[T, k*S]: current state first, then the previous ones; the first state pads the start."""
    try:
        from mile_ros.learning.trainer import stack_frames
    except ImportError:           # the learning core not installed: the same rule, locally
        stack_frames = None
    if stack_frames is not None:
        return np.asarray(stack_frames(states, k))
    states = np.asarray(states)
    idx = np.maximum(np.arange(len(states))[:, None] - np.arange(k)[None, :], 0)
    return states[idx].reshape(len(states), -1)


class MajorityEstimator:
    """Predicts the training set's majority class; p = the training intervention rate."""

    def __init__(self, rate: float):
        self.rate = float(rate)

    def predict(self, episodes: Sequence[dict]) -> list[np.ndarray]:
        return [np.full(len(ep["nu"]), self.rate) for ep in episodes]


@dataclass
class ClassifierConfig:
    hidden: tuple = (64, 64)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    max_epochs: int = 200
    max_steps: int = 4000
    patience: int = 15          # epochs without validation improvement
    val_fraction: float = 0.2   # of the training episodes, for early stopping
    frame_stack: int = 4
    seed: int = 0


@dataclass
class NeuralClassifier:
    """MLP p(nu=1 | stacked state) fitted by unweighted binary cross-entropy."""
    config: ClassifierConfig
    net: object = None
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    def _inputs(self, episodes) -> np.ndarray:
        return np.concatenate([stack_states(ep["state"], self.config.frame_stack)
                               for ep in episodes]).astype(np.float32)

    def fit(self, episodes: Sequence[dict], progress: bool = False) -> "NeuralClassifier":
        import torch

        cfg = self.config
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        order = rng.permutation(len(episodes))
        n_val = int(round(cfg.val_fraction * len(episodes))) if len(episodes) >= 5 else 0
        val = [episodes[i] for i in order[:n_val]]
        train = [episodes[i] for i in order[n_val:]]
        x = self._inputs(train)
        y = np.concatenate([ep["nu"] for ep in train]).astype(np.float32)
        self.mean, self.std = x.mean(0), x.std(0) + 1e-6
        layers, width = [], x.shape[1]
        for h in cfg.hidden:
            layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
            width = h
        self.net = torch.nn.Sequential(*layers, torch.nn.Linear(width, 1))
        with torch.no_grad():         # start at the base rate: a sensible, calibrated prior
            rate = float(np.clip(y.mean(), EPS, 1 - EPS))
            self.net[-1].bias.fill_(math.log(rate / (1 - rate)))
        xt = torch.as_tensor((x - self.mean) / self.std)
        yt = torch.as_tensor(y)
        xv = yv = None
        if val:
            xv = torch.as_tensor((self._inputs(val) - self.mean) / self.std)
            yv = torch.as_tensor(np.concatenate([ep["nu"] for ep in val]).astype(np.float32))
        opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        gen = torch.Generator().manual_seed(cfg.seed)
        steps_per_epoch = max(1, math.ceil(len(xt) / cfg.batch_size))
        epochs = max(1, min(cfg.max_epochs, cfg.max_steps // steps_per_epoch))
        best, best_state, stale, epoch = math.inf, None, 0, 0
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=epochs, desc="training the classifier", unit="epoch")
        for epoch in range(epochs):
            self.net.train()
            perm = torch.randperm(len(xt), generator=gen)
            for j in range(0, len(xt), cfg.batch_size):
                i = perm[j:j + cfg.batch_size]
                loss = loss_fn(self.net(xt[i]).squeeze(-1), yt[i])
                opt.zero_grad()
                loss.backward()
                opt.step()
            if bar:
                bar.update()
            if xv is None:
                continue
            self.net.eval()
            with torch.no_grad():
                v = float(loss_fn(self.net(xv).squeeze(-1), yv))
            if v < best - 1e-5:
                best, stale = v, 0
                best_state = {k: t.clone() for k, t in self.net.state_dict().items()}
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
        if bar:
            bar.close()
        if best_state is not None:
            self.net.load_state_dict(best_state)
        self.net.eval()
        self.info = {"train_episodes": len(train), "val_episodes": len(val),
                     "train_ticks": int(len(x)), "epochs": epoch + 1,
                     "val_log_loss": None if best == math.inf else best,
                     "class_balanced": False, "hidden": list(cfg.hidden), "seed": cfg.seed}
        return self

    def predict(self, episodes: Sequence[dict]) -> list[np.ndarray]:
        import torch

        out = []
        with torch.no_grad():
            for ep in episodes:
                x = torch.as_tensor((stack_states(ep["state"], self.config.frame_stack)
                                     .astype(np.float32) - self.mean) / self.std)
                out.append(torch.sigmoid(self.net(x).squeeze(-1)).numpy().astype(np.float64))
        return out


def mile_predict(model, episodes: Sequence[dict], batch: int = 4096) -> list[np.ndarray]:
    """p(nu=1|s) of the model on every tick of every episode, from the observations the trainer
    builds: episode["model_state"] (the model's state dims; else "state") stacked over the model's
    frame_stack, plus episode["image"] for image models."""
    spec = model.obs_spec
    k = int(getattr(spec, "frame_stack", 4))
    uses_image = getattr(spec, "image_shape", None) is not None
    out = []
    for ep in episodes:
        obs = stack_states(ep.get("model_state", ep["state"]), k).astype(np.float32)
        parts = []
        for j in range(0, len(obs), batch):
            o = obs[j:j + batch]
            if uses_image:
                o = {"state": o, "image": ep["image"][j:j + batch]}
            parts.append(np.asarray(model.intervention_probability(o), dtype=np.float64).ravel())
        p = np.concatenate(parts) if parts else np.zeros(0)
        if len(p) != len(obs) or not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
            raise EvalError(f"the model's intervention_probability gave invalid values on "
                            f"{ep.get('name', 'an episode')} (need one finite p in [0,1] per tick)")
        out.append(p)
    return out


# --- plots ----------------------------------------------------------------------------------
COLORS = {"mile": "tab:blue", "classifier": "tab:orange", "majority": "tab:gray",
          "oracle": "black"}
STYLES = {"mile": "-", "classifier": "-", "majority": "--", "oracle": ":"}


def _label(name: str, report: dict, metric: str) -> str:
    m = report["estimators"][name][metric]
    if m["value"] is None:
        return name
    ci = m["ci"]
    return f"{name}  {m['value']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def plot_roc(path: Path, y, preds: dict, report: dict) -> None:
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 5))
    for name, p in preds.items():
        fpr, tpr = roc_curve(y, p)
        a.plot(fpr, tpr, STYLES.get(name, "-"), color=COLORS.get(name), lw=2,
               label=_label(name, report, "roc_auc"))
        precision, recall = precision_recall_curve(y, p)
        b.step(np.r_[0, recall], np.r_[precision[0], precision], STYLES.get(name, "-"),
               where="pre", color=COLORS.get(name), lw=2,
               label=_label(name, report, "average_precision"))
    a.plot([0, 1], [0, 1], color="lightgray", lw=1, zorder=0)
    b.axhline(float(np.mean(y)), color="lightgray", lw=1, zorder=0)
    a.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01),
          title="ROC (legend: AUC [95% CI])")
    b.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01),
          title="precision-recall (legend: AP [95% CI])")
    for ax in (a, b):
        ax.legend(loc="lower right" if ax is a else "upper right", fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(f"predicting interventions: {len(y)} ticks, {int(np.sum(y))} with nu=1")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def reliability(y, p, bins: int = 10):
    """(mean predicted, observed frequency, count) in equal-count bins of p (tied p share a bin,
    so a constant predictor gives one point)."""
    edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(len(edges) - 2, 0))
    groups = [np.flatnonzero(which == b) for b in np.unique(which)]
    return (np.array([p[g].mean() for g in groups]), np.array([y[g].mean() for g in groups]),
            np.array([len(g) for g in groups]))


def plot_calibration(path: Path, y, preds: dict, bins: int = 10) -> None:
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(2, 1, figsize=(6.5, 8), gridspec_kw={"height_ratios": [3, 1.3]})
    top = 0.0
    for name, p in preds.items():
        mean_p, freq, n = reliability(y.astype(float), p, bins)
        err = 1.96 * np.sqrt(np.maximum(freq * (1 - freq), 1e-4) / n)
        a.errorbar(mean_p, freq, yerr=err, fmt="o" + STYLES.get(name, "-"), ms=4, capsize=2,
                   color=COLORS.get(name), label=name)
        top = max(top, float(np.max(mean_p)), float(np.max(freq + err)))
        b.hist(p, bins=40, range=(0, 1), histtype="step", lw=1.5, color=COLORS.get(name),
               label=name)
    top = min(1.0, 1.1 * top + 0.02)
    a.plot([0, 1], [0, 1], color="lightgray", lw=1, zorder=0, label="perfect calibration")
    a.set(xlim=(0, top), ylim=(0, top), xlabel="mean predicted p(nu=1|s) in the bin",
          ylabel="observed intervention frequency",
          title=f"reliability ({bins} equal-count bins, 95% binomial bars)")
    a.legend(fontsize=9, loc="upper left")
    a.grid(alpha=0.3)
    b.set(xlabel="predicted p(nu=1|s)", ylabel="ticks", yscale="log")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    d = np.diff(np.r_[0, mask.astype(int), 0])
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


def plot_timelines(path: Path, episodes: Sequence[dict], per_episode: dict,
                   max_episodes: int = 6, max_ticks: int = 200) -> None:
    import matplotlib.pyplot as plt

    # evenly spread over the episodes with an intervention (all episodes if too few have one)
    pool = [i for i, ep in enumerate(episodes) if np.any(ep["nu"])]
    pool = pool if len(pool) >= min(max_episodes, len(episodes)) else list(range(len(episodes)))
    n = min(max_episodes, len(pool))
    picks = [pool[j] for j in np.unique(np.linspace(0, len(pool) - 1, n).round().astype(int))]
    fig, axes = plt.subplots(len(picks), 1, figsize=(11, 1.9 * len(picks) + 0.6), squeeze=False)
    for ax, i in zip(axes[:, 0], picks):
        ep = episodes[i]
        n_ticks = len(ep["nu"])
        t = np.arange(min(n_ticks, max_ticks))
        for s, e in _runs(np.asarray(ep["nu"], bool)[:len(t)]):
            ax.axvspan(s - 0.5, e - 0.5, color="tab:red", alpha=0.18, lw=0)
        for name, ps in per_episode.items():
            ax.plot(t, ps[i][:len(t)], STYLES.get(name, "-"), color=COLORS.get(name), lw=1.4,
                    label=name)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlim(-0.5, max(len(t) - 0.5, 0.5))
        ax.set_ylabel("p(nu=1|s)")
        shown = "" if len(t) == n_ticks else f", ticks 0-{len(t) - 1} shown"
        ax.set_title(f"{ep.get('name', f'episode {i}')}: {int(np.sum(ep['nu']))}/{n_ticks} ticks "
                     f"intervened (red){shown}", fontsize=9, loc="left")
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("control tick")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    from matplotlib.patches import Patch
    handles.append(Patch(color="tab:red", alpha=0.3))
    labels.append("actual nu=1")
    fig.legend(handles, labels, loc="upper right", ncol=len(labels), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_truth(path: Path, p_model, p_true, truth: dict) -> None:
    """Where MILE's p falls against the true p: a 2-D histogram (log colour: piles at 0 and 1
    stay visible) with the diagonal."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    fig, ax = plt.subplots(figsize=(6.2, 5.4))
    *_, image = ax.hist2d(p_true, p_model, bins=40, range=[[0, 1], [0, 1]], norm=LogNorm(),
                          cmap="Blues")
    fig.colorbar(image, ax=ax, label="ticks")
    ax.plot([0, 1], [0, 1], color="tab:red", lw=1)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="true p(nu=1|s) (simulated person)",
           ylabel="MILE's predicted p(nu=1|s)")
    text = (f"MAE {_fmt(truth['truth_mae'], '.3f')}, "
            f"Pearson r {_fmt(truth['truth_pearson'], '.3f', ci=False)}")
    ax.set_title(f"MILE vs the truth ({len(p_true)} ticks)\n{text}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(out: Path, report: dict, episodes: Sequence[dict], per_episode: dict,
                  true_p: Sequence | None = None) -> list[str]:
    """report.json and the plots under `out`; returns the files written."""
    import matplotlib
    matplotlib.use("Agg")

    out.mkdir(parents=True, exist_ok=True)
    y = np.concatenate([np.asarray(ep["nu"], bool) for ep in episodes])
    pooled = {name: np.concatenate(ps) for name, ps in per_episode.items()}
    files = [out / "roc.png", out / "calibration.png", out / "timelines.png"]
    plot_roc(files[0], y, pooled, report)
    plot_calibration(files[1], y, pooled)
    plot_timelines(files[2], episodes, per_episode)
    if report.get("truth") and "mile" in pooled and true_p is not None:
        known = [i for i, tp in enumerate(true_p) if tp is not None]
        pt = np.concatenate([np.asarray(true_p[i], float) for i in known])
        pm = np.concatenate([per_episode["mile"][i] for i in known])
        ok = np.isfinite(pt)
        files.append(out / "truth.png")
        plot_truth(files[-1], pm[ok], pt[ok], report["truth"])
    report["plots"] = [str(f) for f in files]
    (out / "report.json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    return [str(f) for f in files] + [str(out / "report.json")]




# --- the table ------------------------------------------------------------------------------
def _fmt(m: dict, spec: str, ci: bool = True) -> str:
    """'value [lo,hi]' of a {"value", "ci"} entry ('n/a' when undefined)."""
    if m["value"] is None:
        return "n/a"
    text = format(m["value"], spec)
    if ci and m.get("ci"):
        text += f" [{format(m['ci'][0], spec)},{format(m['ci'][1], spec)}]"
    return text


def format_table(report: dict) -> str:
    names = list(report["estimators"])
    head = f"{'metric':<20}" + "".join(f"{n:>27}" for n in names)
    lines = [head, "-" * len(head)]

    def cell(m: dict) -> str:
        return f"{_fmt(m, '.3f'):>27}"

    for metric in METRICS:
        arrow = "(+)" if HIGHER_IS_BETTER[metric] else "(-)"
        lines.append(f"{metric + ' ' + arrow:<20}" + "".join(
            cell(report["estimators"][n][metric]) for n in names))
    for label, diff in report.get("differences", {}).items():
        lines.append("")
        lines.append(f"{label}: " + ", ".join(
            f"{m} {_fmt(d, '+.3f')}" for m, d in diff.items()
            if m in ("roc_auc", "log_likelihood", "brier") and d["value"] is not None))
    if report.get("truth"):
        t = report["truth"]
        lines.append("")
        lines.append("MILE vs the true p (" + f"{t['ticks_with_truth']} ticks): " + ", ".join(
            f"{k[6:]} {_fmt(v, '.3f')}" for k, v in t.items()
            if k.startswith("truth_") and v["value"] is not None))
    if report.get("majority"):
        m = report["majority"]
        lines.append("")
        lines.append(f"majority: predicts '{m['label']}'; p = {m['p']:.3f}, the intervention "
                     f"rate of the {m['rate_source']}")
    b = report["bootstrap"]
    lines.append("")
    lines.append(f"{report['episodes']} episodes, {report['ticks']} ticks, "
                 f"{report['interventions']} with nu=1 ({report['intervention_rate']:.1%}); "
                 f"[{b['level']:.0%} CI: {b['resamples']} bootstrap resamples of episodes]; "
                 "(+) higher is better, (-) lower is better; labels are p >= 0.5")
    return "\n".join(lines)


# --- loading --------------------------------------------------------------------------------
def _short_name(path: Path) -> str:
    path = Path(path)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def load_bags(dirs: Sequence[str], argument: str, only: bool, images: bool) -> list:
    """EpisodeData of the bags under `dirs`; EvalError naming the argument and the bag."""
    from mile_ros.bags import BagError, load_episodes

    try:
        data, report = load_episodes([Path(d) for d in dirs], only=only, images=images,
                                     progress=sys.stderr.isatty())
    except BagError as e:
        raise EvalError(f"{argument}: {e}") from None
    if not data:
        raise EvalError(f"{argument} {' '.join(map(str, dirs))}: no usable episode bags "
                        f"(skipped: {report.get('skipped') or 'none'})")
    return data


def episode_dicts(data: Sequence, state_names: Sequence[str], argument: str,
                  model=None, source: str = "") -> list[dict]:
    """Episode dicts for the estimators: "state" (the bags' full observation vector, columns in
    the order `state_names`, for the classifier), "nu", "name", "path", "stamps" and, with a
    model, "model_state" (+ "image") built exactly as the trainer builds its observations."""
    from mile_ros.learning.observations import episode_arrays

    out = []
    for ep in data:
        missing = [n for n in state_names if n not in ep.state_names]
        if missing or len(ep.state_names) != len(state_names):
            raise EvalError(f"{argument}: {ep.path} has state {list(ep.state_names)}, the other "
                            f"bags {list(state_names)}")
        index = [list(ep.state_names).index(n) for n in state_names]
        d = {"state": np.asarray(ep.state, float)[:, index], "nu": np.asarray(ep.nu, bool),
             "name": _short_name(ep.path), "path": str(ep.path), "stamps": ep.stamps}
        if model is not None:
            try:
                arrays = episode_arrays(ep, model.obs_spec)
            except ValueError as e:
                want = list(getattr(model.obs_spec, "state_names", []))
                raise EvalError(f"{argument}: the bags do not match {source} (it expects state "
                                f"{want}, {len(want)} dims; the bags have {len(ep.state_names)}): "
                                f"{e}") from None
            d["model_state"] = arrays["state"]
            if "image" in arrays:
                d["image"] = arrays["image"]
        out.append(d)
    return out


def read_true_p(path: Path, episodes: list[dict]) -> list[np.ndarray | None]:
    """Per episode the true p of each tick from a JSON-lines file of {"stamp_ns", "p"} (ticks
    missing from the file get NaN; an episode with none of its ticks there gets None)."""
    if not path.is_file():
        raise EvalError(f"--true-p {path}: no such file")
    table: dict[int, float] = {}
    with path.open() as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                table[int(row["stamp_ns"])] = float(row["p"])
            except (ValueError, KeyError, TypeError) as e:
                raise EvalError(f"--true-p {path}:{n}: expected a JSON object with 'stamp_ns' and "
                                f"'p' ({type(e).__name__}: {e})") from None
    out, matched = [], 0
    for ep in episodes:
        p = np.array([table.get(int(s), np.nan) for s in ep["stamps"]])
        if np.isfinite(p).any() and (np.nanmin(p) < 0 or np.nanmax(p) > 1):
            raise EvalError(f"--true-p {path}: probabilities outside [0, 1]")
        matched += int(np.isfinite(p).sum())
        out.append(p if np.isfinite(p).any() else None)
    if matched == 0:
        raise EvalError(f"--true-p {path}: none of the {sum(len(e['nu']) for e in episodes)} "
                        "evaluation ticks' stamps appear in the file")
    return out


def load_model(path: str):
    from mile_ros.learning.checkpoint import load_checkpoint

    p = Path(path)
    if not p.exists():
        raise EvalError(f"--model {path}: no such checkpoint")
    try:
        return load_checkpoint(p)
    except ValueError as e:
        raise EvalError(f"--model {path}: {e}") from None
    except Exception as e:  # noqa: BLE001 - a corrupt file may fail in torch or pickle
        raise EvalError(f"--model {path}: cannot load the checkpoint: {type(e).__name__}: "
                        f"{str(e)[:300]}") from None


# --- the command ----------------------------------------------------------------------------
def run(model, eval_episodes: list[dict], train_episodes: list[dict] | None = None,
        true_p: Sequence | None = None, n_bootstrap: int = 1000, seed: int = 0,
        out: Path | None = None, progress: bool = False,
        classifier_config: ClassifierConfig | None = None, inputs: dict | None = None) -> dict:
    """Predict with the three estimators, evaluate, and (with `out`) write report.json + plots.
    Episodes are dicts with "state" [T,S], "nu" [T] (and "name"); the states must already be in
    the model's state order."""
    k = int(getattr(model.obs_spec, "frame_stack", 4))
    if train_episodes:
        rate_source = "training bags"
        train_rate = float(np.mean(np.concatenate([e["nu"] for e in train_episodes])))
    else:
        rate_source = "evaluation bags (no --train-bags: optimistic for the majority estimator)"
        train_rate = float(np.mean(np.concatenate([e["nu"] for e in eval_episodes])))
    per_episode = {"mile": mile_predict(model, eval_episodes)}
    classifier_info = None
    if train_episodes:
        cfg = classifier_config or ClassifierConfig(seed=seed)
        clf = NeuralClassifier(cfg).fit(train_episodes, progress=progress)
        per_episode["classifier"] = clf.predict(eval_episodes)
        classifier_info = clf.info
    per_episode["majority"] = MajorityEstimator(train_rate).predict(eval_episodes)
    report = evaluate([e["nu"] for e in eval_episodes], per_episode, true_p, n_bootstrap, seed,
                      progress=progress)
    report["notes"] = {n: ESTIMATOR_NOTES[n] for n in report["estimators"]}
    report["majority"] = {"label": "intervene" if train_rate >= THRESHOLD else "no intervention",
                          "p": train_rate, "rate_source": rate_source}
    report["classifier"] = classifier_info
    report["model"] = {"c": _float_or_none(getattr(model, "c", None)),
                       "beta": _float_or_none(getattr(model, "beta", None)),
                       "frame_stack": k,
                       "state_names": list(getattr(model.obs_spec, "state_names", []) or [])}
    report["inputs"] = inputs or {}
    report["definitions"] = DEFINITIONS
    report["episode_names"] = [e.get("name", str(i)) for i, e in enumerate(eval_episodes)]
    if out is not None:
        if true_p is not None and "oracle" in report["estimators"]:
            per_episode["oracle"] = [np.asarray(t, float) for t in true_p]
        write_outputs(Path(out), report, eval_episodes, per_episode, true_p)
    return report


def _float_or_none(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="mile-ros eval-interventions",
        description="How well the MILE intervention model of a checkpoint predicts when the "
                    "person intervenes, against a majority estimator and a neural classifier "
                    "trained on earlier iterations.")
    ap.add_argument("--model", required=True,
                    help="checkpoint directory (or a directory with a `latest` pointer)")
    ap.add_argument("--bags", required=True, nargs="+", metavar="DIR",
                    help="evaluation episode bags (a bag, a directory of bags, or iter*/ "
                         "directories; exactly these, earlier iterations are not added)")
    ap.add_argument("--train-bags", nargs="+", metavar="DIR", default=None,
                    help="training bags for the classifier and the majority rate (the earlier "
                         "iterations; given `iterN`, iter1..iterN-1 beside it come too)")
    ap.add_argument("--out", default="intervention_report",
                    help="report directory (default: intervention_report)")
    ap.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                    help="bootstrap resamples of episodes for the confidence intervals (0: none)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the classifier and bootstrap")
    ap.add_argument("--true-p", default=None, metavar="FILE",
                    help="JSON lines {\"stamp_ns\": tick stamp, \"p\": true p(nu=1|s)} from a "
                         "simulated person: adds the oracle and MILE's error against the truth")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = _main(args)
    except (EvalError, ValueError, OSError) as e:    # OSError: e.g. --out not writable
        print(f"mile-ros eval-interventions: error: {e}", file=sys.stderr)
        return 2
    print(format_table(report))
    print(f"\nreport: {Path(args.out) / 'report.json'}; plots: "
          + ", ".join(Path(p).name for p in report["plots"]))
    return 0


def _main(args) -> dict:
    import torch

    if args.bootstrap < 0:
        raise EvalError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    try:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EvalError(f"--out {args.out}: cannot create the report directory "
                        f"({e.strerror or e})") from None
    torch.set_num_threads(min(4, torch.get_num_threads()))
    model = load_model(args.model)
    if getattr(model, "c", None) is None:
        raise EvalError(f"--model {args.model}: the checkpoint has no intervention cost c (a "
                        "behaviour-cloning policy?): evaluate a MILE checkpoint")
    images = getattr(model.obs_spec, "image_shape", None) is not None
    eval_data = load_bags(args.bags, "--bags", only=True, images=images)
    names = list(eval_data[0].state_names)
    eval_eps = episode_dicts(eval_data, names, "--bags", model, f"the checkpoint {args.model}")
    train_eps = None
    if args.train_bags:
        train_data = load_bags(args.train_bags, "--train-bags", only=False, images=False)
        overlap = {str(e.path.resolve()) for e in train_data} & {str(e.path.resolve())
                                                               for e in eval_data}
        if overlap:
            raise EvalError(f"--train-bags and --bags share {len(overlap)} episode(s), e.g. "
                            f"{sorted(overlap)[0]}: train the classifier on other episodes")
        if sorted(train_data[0].state_names) != sorted(names):
            raise EvalError(f"--train-bags: state {list(train_data[0].state_names)} "
                            f"({train_data[0].path}) differs from the --bags state {names}")
        train_eps = episode_dicts(train_data, names, "--train-bags")
    true_p = read_true_p(Path(args.true_p), eval_eps) if args.true_p else None
    inputs = {"model": args.model, "bags": args.bags, "train_bags": args.train_bags,
              "true_p": args.true_p, "seed": args.seed}
    return run(model, eval_eps, train_eps, true_p, args.bootstrap, args.seed, Path(args.out),
               progress=sys.stderr.isatty(), inputs=inputs)


if __name__ == "__main__":
    sys.exit(main())
