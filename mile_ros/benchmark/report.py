"""Markdown tables (and one combined plot) from bench results files.

python -m mile_ros.benchmark.report bench/results/paper_a_*.json [--plot all.png]
"""
from __future__ import annotations

import argparse
import sys

from mile_ros.benchmark.results import (
    ResultsError,
    curves,
    load_results,
    mean_se,
    paired_difference,
)


def _f(m, se) -> str:
    return f"{m:.2f}" if se != se else f"{m:.2f} ± {se:.2f}"


def table(data: dict) -> str:
    cfg = data["config"]
    seeds = sorted(data["initial"], key=int)
    init = mean_se([data["initial"][s]["success_rate"] for s in seeds])
    rate = mean_se([r["intervention_rate"] for m in data["methods"].get("mile", {}).values()
                    for r in m if r["iteration"] > 0])
    exp = data["experts"]["expert"]
    head = (f"**{cfg['task']}** — N={cfg['iterations']} × k={cfg['episodes']}, "
            f"{len(seeds)} training seeds, "
            f"{cfg['n_eval']} evaluation episodes. Expert {exp['success_rate']:.2f} "
            f"(mean return {exp['mean_return']:.0f}); initial policy {_f(*init)}; "
            f"intervention rate while collecting (MILE) {_f(*rate)}.\n")
    cv = curves(data)
    its = sorted({i for c in cv.values() for i in c})
    shown = (its if len(its) <= 6
             else sorted({its[0], its[1], its[2], its[len(its) // 2], its[-1]} | set(its[3:6:2])))
    ticks = curves(data, "interventions_total")
    lines = ["| method | " + " | ".join(f"it {i}" for i in shown)
             + " | intervention ticks (last) | MILE − method (paired, last) |",
             "|---|" + "---|" * (len(shown) + 2)]
    for m, c in cv.items():
        cells = [_f(*c[i][:2]) if i in c else "" for i in shown]
        t = ticks[m][max(c)]
        diff = ("" if m == "mile" or "mile" not in cv
                else "{:+.2f} ± {:.2f} (n={})".format(*paired_difference(data, m)))
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {t[0]:.0f} | {diff} |")
    if cfg["iterations"] > 1:
        lines.append("\n" + expert_level_line(data))
    return head + "\n" + "\n".join(lines) + "\n"


def expert_level_line(data: dict, fraction: float = 0.95) -> str:
    """Return the line of first iterations at `fraction` of the expert's success rate.

    Per method, the first iteration at which each training seed reached `fraction` of the
    expert's success rate ("-" if it never did).
    """
    goal = fraction * data["experts"]["expert"]["success_rate"]
    parts = []
    for m in curves(data):
        firsts = [next((str(r["iteration"]) for r in recs if r["success_rate"] >= goal), "-")
                  for _, recs in sorted(data["methods"][m].items(), key=lambda kv: int(kv[0]))]
        parts.append(f"{m} {'/'.join(firsts)}")
    return (f"First iteration at ≥ {fraction:.0%} of the expert's success ({goal:.2f}), "
            "per training seed: " + "; ".join(parts) + ".")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mile_ros.benchmark.report")
    p.add_argument("files", nargs="+")
    p.add_argument("--plot", default=None)
    args = p.parse_args(argv)
    try:
        datas = [load_results(f) for f in args.files]
    except ResultsError as e:
        print(f"report: {e}", file=sys.stderr)
        return 2
    for d in datas:
        print(table(d))
    if args.plot:
        from mile_ros.benchmark.plots import plot_curves
        plot_curves(datas, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
