"""The benchmark's results file.

One JSON, rewritten atomically after every unit of work, so an interrupted run resumes where it
stopped.

    {"format": "mile_ros.bench/1", "config": {...the full configuration...},
     "experts": {...}, "initial": {"<seed>": {...}}, "person": {"<seed>": {...}},
     "methods": {"<method>": {"<seed>": [ {iteration, success_rate, successes, interventions,
                                           ticks, episodes, eval_return, train_seconds, ...},
                                          ...]}},
     "timing": {...}}
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from mile_ros._io import atomic_write

FORMAT = "mile_ros.bench/1"


class ResultsError(ValueError):
    pass


class Results:
    def __init__(self, path: str | os.PathLike, config: dict):
        self.path = Path(path)
        self.data = {"format": FORMAT, "config": config, "experts": {}, "initial": {},
                     "person": {}, "methods": {}, "timing": {}}

    @classmethod
    def open(cls, path, config: dict, resume: bool = True) -> "Results":
        """Open a new results file, or the existing one when its configuration matches (resume)."""
        r = cls(path, config)
        if resume and r.path.exists():
            old = load_results(r.path)
            diff = sorted(k for k in set(old["config"]) | set(config)
                          if old["config"].get(k) != config.get(k))
            if not _extends(old["config"], config, diff):
                raise ResultsError(f"{r.path}: exists with a different configuration "
                                   f"({', '.join(diff)}); "
                                   "use another --out or --no-resume (more iterations or added "
                                   "methods extend a run)")
            old["config"] = config
            r.data = old
        return r

    def records(self, method: str, seed: int) -> list[dict]:
        return self.data["methods"].get(method, {}).get(str(seed), [])

    def add_record(self, method: str, seed: int, record: dict) -> None:
        recs = self.data["methods"].setdefault(method, {}).setdefault(str(seed), [])
        recs[:] = [r for r in recs if r["iteration"] != record["iteration"]] + [record]
        recs.sort(key=lambda r: r["iteration"])
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps(self.data, indent=1, sort_keys=False))


def _extends(old: dict, new: dict, diff: list[str]) -> bool:
    """Return whether `new` extends the run of `old` rather than changing it.

    A run is extended, not changed, by more iterations, methods or training seeds (same
    everything else): its records stay valid because every method's episodes depend only on
    (seed, iteration).
    """
    if not set(diff) <= {"iterations", "methods", "seeds"}:
        return False
    return (new.get("iterations", 0) >= old.get("iterations", 0)
            and all(set(old.get(k, ())) <= set(new.get(k, ())) for k in ("methods", "seeds")))


def load_results(path) -> dict:
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ResultsError(f"{p}: cannot read results file ({e})") from e
    if data.get("format") != FORMAT:
        raise ResultsError(f"{p}: not a mile_ros bench results file "
                           f"(format {data.get('format')!r})")
    return data


def mean_se(values) -> tuple[float, float]:
    v = [float(x) for x in values]
    if not v:
        return float("nan"), float("nan")
    m = sum(v) / len(v)
    if len(v) < 2:
        return m, float("nan")
    var = sum((x - m) ** 2 for x in v) / (len(v) - 1)
    return m, math.sqrt(var / len(v))


def curves(data: dict, key: str = "success_rate") -> dict:
    """Map method -> {iteration: (mean, se, n_seeds)} over the training seeds that reached it."""
    out = {}
    # MILE first
    for method, per_seed in sorted(data["methods"].items(), key=lambda kv: kv[0] != "mile"):
        by_it: dict[int, list] = {}
        for recs in per_seed.values():
            for r in recs:
                by_it.setdefault(r["iteration"], []).append(r[key])
        out[method] = {it: (*mean_se(v), len(v)) for it, v in sorted(by_it.items())}
    return out


def paired_difference(data: dict, method: str, other: str = "mile", key: str = "success_rate"):
    """Other − method at each seed's last common iteration -> (mean, s.e., n).

    Paired over the training seeds both ran (they saw the same episode seeds).
    """
    a, b = data["methods"].get(other, {}), data["methods"].get(method, {})
    diffs = []
    for seed in set(a) & set(b):
        ra, rb = ({r["iteration"]: r[key] for r in a[seed]},
                  {r["iteration"]: r[key] for r in b[seed]})
        common = set(ra) & set(rb)
        if common:
            diffs.append(ra[max(common)] - rb[max(common)])
    return (*mean_se(diffs), len(diffs))


def summary_table(data: dict, key: str = "success_rate") -> str:
    """Markdown table, mean ± s.e. over training seeds.

    Each method's value at iteration 0 (initial), at the last iteration, and the intervention
    ticks it trained on.
    """
    cv = curves(data, key)
    ticks = curves(data, "interventions_total")
    lines = [f"| method | {key} (initial) | {key} (final) | final iteration "
             "| intervention ticks | seeds |",
             "|---|---|---|---|---|---|"]
    for m, c in cv.items():
        last = max(c)
        first = c.get(0, (float("nan"),) * 3)
        t = ticks.get(m, {}).get(last, (float("nan"),) * 3)
        lines.append(f"| {m} | {_fmt(first)} | {_fmt(c[last])} | {last} | {t[0]:.1f} "
                     f"| {c[last][2]} |")
    return "\n".join(lines)


def _fmt(x) -> str:
    m, se = x[0], x[1]
    return f"{m:.3f}" if math.isnan(se) else f"{m:.3f} ± {se:.3f}"
