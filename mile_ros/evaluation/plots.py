"""The report's figures (matplotlib, Agg backend).

<out>/roc.png (ROC and precision-recall curves), <out>/calibration.png (reliability curve,
equal-count bins, and the predictions' histogram), <out>/timelines.png (per episode, for a few
episodes: the person's control as shaded spans, its takeover onsets marked, under each
estimator's predicted p per tick, the hazard, with the 0.5 threshold) and, with the truth,
<out>/truth.png (MILE's p against the true p).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from mile_ros.evaluation.metrics import (
    format_metric,
    precision_recall_curve,
    reliability,
    roc_curve,
)
from mile_ros.evaluation.onsets import onsets, takeover_segments

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


def _timeline_picks(episodes: Sequence[dict], max_episodes: int) -> list[int]:
    """Pick the episodes to show, evenly spread over those with an intervention.

    Over all episodes if too few have one.
    """
    pool = [i for i, ep in enumerate(episodes) if np.any(ep["nu"])]
    pool = pool if len(pool) >= min(max_episodes, len(episodes)) else list(range(len(episodes)))
    n = min(max_episodes, len(pool))
    return [pool[j] for j in np.unique(np.linspace(0, len(pool) - 1, n).round().astype(int))]


def _plot_timeline(ax, i: int, ep: dict, per_episode: dict, max_ticks: int) -> None:
    """Episode i: each estimator's p per tick over red spans where the person is in control.

    Takeover onsets are marked at the top; the 0.5 threshold is a thin line.
    """
    nu = np.asarray(ep["nu"], bool)
    n_ticks = len(nu)
    t = np.arange(min(n_ticks, max_ticks))
    for s, e in takeover_segments(nu[:len(t)]):
        ax.axvspan(s - 0.5, e - 0.5, color="tab:red", alpha=0.18, lw=0)
    starts = np.flatnonzero(onsets(nu[:len(t)]))
    ax.plot(starts, np.full(len(starts), 1.0), "v", color="tab:red", ms=5, clip_on=False)
    ax.axhline(0.5, color="lightgray", lw=0.8, zorder=0)
    for name, ps in per_episode.items():
        ax.plot(t, ps[i][:len(t)], STYLES.get(name, "-"), color=COLORS.get(name), lw=1.4,
                label=name)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(-0.5, max(len(t) - 0.5, 0.5))
    ax.set_ylabel("p(nu=1|s)")
    shown = "" if len(t) == n_ticks else f", ticks 0-{len(t) - 1} shown"
    ax.set_title(f"{ep.get('name', f'episode {i}')}: {int(onsets(nu).sum())} takeovers (v), "
                 f"{int(np.sum(nu))}/{n_ticks} ticks in the person's control (red){shown}",
                 fontsize=9, loc="left")
    ax.grid(alpha=0.3)


def plot_timelines(path: Path, episodes: Sequence[dict], per_episode: dict,
                   max_episodes: int = 6, max_ticks: int = 200) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    picks = _timeline_picks(episodes, max_episodes)
    fig, axes = plt.subplots(len(picks), 1, figsize=(11, 1.9 * len(picks) + 0.6), squeeze=False)
    for ax, i in zip(axes[:, 0], picks):
        _plot_timeline(ax, i, episodes[i], per_episode, max_ticks)
    axes[-1, 0].set_xlabel("control tick")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    handles.append(Patch(color="tab:red", alpha=0.3))
    labels.append("person in control (nu=1)")
    fig.legend(handles, labels, loc="upper right", ncol=len(labels), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_truth(path: Path, p_model, p_true, truth: dict) -> None:
    """Plot where MILE's p falls against the true p.

    A 2-D histogram (log colour: piles at 0 and 1 stay visible) with the diagonal.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    fig, ax = plt.subplots(figsize=(6.2, 5.4))
    *_, image = ax.hist2d(p_true, p_model, bins=40, range=[[0, 1], [0, 1]], norm=LogNorm(),
                          cmap="Blues")
    fig.colorbar(image, ax=ax, label="ticks")
    ax.plot([0, 1], [0, 1], color="tab:red", lw=1)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="true p(nu=1|s) (simulated person)",
           ylabel="MILE's predicted p(nu=1|s)")
    text = (f"MAE {format_metric(truth['truth_mae'], '.3f')}, "
            f"Pearson r {format_metric(truth['truth_pearson'], '.3f', ci=False)}")
    ax.set_title(f"MILE vs the truth ({len(p_true)} ticks)\n{text}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(out: Path, report: dict, episodes: Sequence[dict], per_episode: dict,
                true_p: Sequence | None = None) -> list[Path]:
    """Write the figures under `out` (an existing directory); return their paths.

    truth.png only with the report's truth and MILE's predictions.
    """
    import matplotlib
    matplotlib.use("Agg")

    y = np.concatenate([np.asarray(ep["nu"], bool) for ep in episodes])
    pooled = {name: np.concatenate(ps) for name, ps in per_episode.items()}
    files = [out / "roc.png", out / "calibration.png", out / "timelines.png"]
    plot_roc(files[0], y, pooled, report)
    plot_calibration(files[1], y, pooled)
    plot_timelines(files[2], episodes, per_episode)
    if report.get("truth") and "mile" in pooled and true_p is not None:
        files.append(out / "truth.png")
        _plot_known_truth(files[-1], report, per_episode, true_p)
    return files


def _plot_known_truth(path: Path, report: dict, per_episode: dict, true_p: Sequence) -> None:
    """plot_truth over the ticks whose true p is known."""
    known = [i for i, tp in enumerate(true_p) if tp is not None]
    pt = np.concatenate([np.asarray(true_p[i], float) for i in known])
    pm = np.concatenate([per_episode["mile"][i] for i in known])
    ok = np.isfinite(pt)
    plot_truth(path, pm[ok], pt[ok], report["truth"])
