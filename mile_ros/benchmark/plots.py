"""Success-rate curves (mean ± s.e. over training seeds) from one or more results files."""
from __future__ import annotations

import math

from mile_ros.benchmark.results import curves


def plot_curves(data_list, path: str, title: str | None = None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    data_list = data_list if isinstance(data_list, list) else [data_list]
    fig, axes = plt.subplots(1, len(data_list), figsize=(4.2 * len(data_list), 3.4), squeeze=False)
    for ax, data in zip(axes[0], data_list):
        if data["config"]["iterations"] == 1:
            _bars(ax, data, title)
            continue
        for method, c in curves(data).items():
            its = sorted(c)
            m = [c[i][0] for i in its]
            se = [0.0 if math.isnan(c[i][1]) else c[i][1] for i in its]
            style = {"lw": 2.2, "color": "black"} if method == "mile" else {"lw": 1.3}
            if len(its) == 2:  # protocol (a): initial -> after one iteration; draw markers
                style["marker"] = "o"
            line, = ax.plot(its, m, label=method, **style)
            ax.fill_between(its, [a - b for a, b in zip(m, se)], [a + b for a, b in zip(m, se)],
                            alpha=0.12, color=line.get_color())
        exp = data.get("experts", {}).get("expert", {}).get("success_rate")
        if exp is not None:
            ax.axhline(exp, ls="--", color="gray", lw=1, label="expert")
        cfg = data["config"]
        ax.set_title(title or f"{cfg['task']} (N={cfg['iterations']}, k={cfg['episodes']})",
                     fontsize=9)
        ax.set_xlabel("iteration")
        ax.set_ylabel("success rate")
        ax.set_ylim(-0.02, 1.02)
    if data_list[-1]["config"]["iterations"] > 1:
        axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _bars(ax, data, title=None) -> None:
    """Draw protocol (a): success after the one iteration per method (mean ± s.e.).

    Initial and expert are drawn as lines.
    """
    cv = curves(data)
    methods = list(cv)
    m = [cv[k][1][0] if 1 in cv[k] else float("nan") for k in methods]
    se = [0.0 if (1 not in cv[k] or math.isnan(cv[k][1][1])) else cv[k][1][1] for k in methods]
    colors = ["black" if k == "mile" else f"C{i}" for i, k in enumerate(methods)]
    ax.bar(range(len(methods)), m, yerr=se, color=colors, alpha=0.8, capsize=3)
    ax.set_xticks(range(len(methods)), methods, rotation=35, ha="right", fontsize=8)
    init = cv[methods[0]].get(0, (float("nan"),))[0]
    ax.axhline(init, ls=":", color="red", lw=1, label="initial")
    exp = data.get("experts", {}).get("expert", {}).get("success_rate")
    if exp is not None:
        ax.axhline(exp, ls="--", color="gray", lw=1, label="expert")
    cfg = data["config"]
    ax.set_title(title or f"{cfg['task']} (N=1, k={cfg['episodes']})", fontsize=9)
    ax.set_ylabel("success rate")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, loc="upper left")
