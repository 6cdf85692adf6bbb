"""Train MILE and the baselines on a `mile-ros demo` run's bags, with other settings.

Why: on the demo's bags HG-DAgger reached 75-85% alone where MILE stayed at 0-20%, and probes
changing one MILE term at a time (lambda, the anchors, the loss form) did not say whether the
loss or the training budget was at fault. This script takes the person and the loop out: every
learner is fitted once, from the run's initial policy (`checkpoints/iter0-initial`), on all of
the run's bags (`iter1` .. `iterN`), with the demo's training settings (`mile_ros.tools.demo
.TRAINING`) changed by the variant, and evaluated alone on the demo's 20 fixed evaluation
episodes (`demo.evaluate`, the policy server's runner). MILE goes through the `train` node's
code (`tools.train.run_training`); a baseline through the demo's `--compare` code
(`tools.demo_compare.train_baseline`). Unlike the demo, MILE is not warm-started from the
previous iteration: every learner sees the same data from the same start.

A variant is `LEARNER[:NAME=VALUE,...]`, LEARNER `mile` or a baseline name (`hg-dagger`, ...),
NAME a `MileConfig` field, VALUE JSON, and the pseudo-field `d0=true`: the initial policy's own
demonstrations (regenerated from its build info: seeds, count, noise) join the learner's data,
as the baselines' D0 (`demos`) and, for MILE, as episodes the person drove from the first tick
to the last (nu = 1, a_h = the demonstrated action, no a_r). Each variant is trained with each
`--train-seeds` seed. `--iterations K` uses the first K bags only (iter1 .. iterK).

    python bench/bench_demo_learners.py /tmp/demo_c0 /tmp/demo_c1 /tmp/demo_c2
        --variants mile mile:lr=0.002 mile:lr=0.002,lam=0,policy_anchor=0 hg-dagger
        hg-dagger:lr=0.002 --out bench/results/demo_learners.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MUJOCO_GL", "egl")

from mile_ros.learning.checkpoint import load_checkpoint  # noqa: E402
from mile_ros.policy.serving import load_policy_dir, policy_from_model  # noqa: E402
from mile_ros.tools import demo, demo_compare  # noqa: E402
from mile_ros.tools import train as trainer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "demo_learners.json"


def parse_variant(text: str) -> tuple[str, dict]:
    """'mile:lr=0.002,lam=0' -> ('mile', {'lr': 0.002, 'lam': 0}); ValueError naming it."""
    learner, _, rest = text.partition(":")
    if learner != "mile" and learner not in demo_compare.BASELINES:
        raise ValueError(f"--variants {text!r}: unknown learner {learner!r}")
    changes = {}
    for item in filter(None, rest.split(",")):
        name, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"--variants {text!r}: {item!r} is not NAME=VALUE")
        changes[name] = json.loads(value)
    return learner, changes


def run_bags(run: Path) -> list[Path]:
    bags = sorted((p for p in run.glob("iter[0-9]*") if p.is_dir()),
                  key=lambda p: int(p.name[4:]))
    if not bags or not (run / "checkpoints" / "iter0-initial").is_dir():
        raise ValueError(f"{run}: not a mile-ros demo run (no iter1.. bags or "
                         "checkpoints/iter0-initial)")
    return bags


def run_seed(run: Path) -> int:
    return int(json.loads((run / "demo.json").read_text())["settings"]["seed"])


def initial_demos(seed: int, state_names: list[str]) -> list[dict]:
    """Regenerate the WidowX initial policy's own demonstrations for demo seed `seed`."""
    from mile_ros.sim.initial import InitialConfig, build_initial_policy, collect_demos
    from mile_ros.sim.tasks import make_task

    cfg = InitialConfig()
    task = make_task("widowx", seed=seed, options=cfg.task)
    try:
        _model, info = build_initial_policy("widowx", seed, cfg, task=task)
        demos = collect_demos(task, info["n_demos"], cfg, seed, info["demo_noise"])
        names = list(task.state_names)
    finally:
        task.close()
    cols = [names.index(n) for n in state_names]
    return [{"state": d["state"][:, cols], "action": d["action"]} for d in demos]


def fit_mile_d0(initial_dir: Path, bags: list[Path], demos: list[dict], settings: dict,
                seed: int):
    """Fit MILE (train_mile, configured as run_training does) on bags + person-driven demos."""
    from mile_ros.learning import MileConfig, train_mile

    initial = load_checkpoint(initial_dir)
    arrays = demo_compare.bag_arrays(bags, initial.obs_spec)
    arrays = [{k: a[k] for k in ("state", "a_r", "a_h", "nu")} for a in arrays]
    arrays += [{"state": d["state"], "a_h": d["action"], "nu": np.ones(len(d["state"]), bool),
                "a_r": np.full_like(d["action"], np.nan)} for d in demos]
    config = trainer.scaled_config(MileConfig, seed=seed, epochs_scale=1.0, c=None,
                                   settings=settings)
    model, _metrics = train_mile(arrays, initial.obs_spec, initial.action_spec, config,
                                 init=initial, progress=False)
    return model


def fit(learner: str, run: Path, bags: list[Path], settings: dict, seed: int, work: Path):
    """Train one learner on the bags -> a LoadedPolicy."""
    initial = run / "checkpoints" / "iter0-initial"
    settings = dict(settings)
    d0 = bool(settings.pop("d0", False))
    demos = initial_demos(run_seed(run), list(load_checkpoint(initial).obs_spec.state_names)) \
        if d0 else []
    if learner == "mile" and d0:
        return policy_from_model(fit_mile_d0(initial, bags, demos, settings, seed), "mile", True)
    if learner == "mile":
        res = trainer.run_training(bags, work / f"mile{seed}", init=str(initial), seed=seed,
                                   settings=settings, progress=False, say=lambda _m: None,
                                   epochs_over="all")
        return load_policy_dir(res.checkpoint, True)
    model = demo_compare.train_baseline(learner, bags, load_checkpoint(initial), seed, 1.0,
                                        settings, demos)
    return policy_from_model(model, learner, True)


def measure(run: Path, variant: str, seed: int, n_eval: int, iterations: int | None) -> dict:
    learner, changes = parse_variant(variant)
    bags = run_bags(run)[:iterations]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        policy = fit(learner, run, bags, {**demo.TRAINING, **changes}, seed, Path(work))
        train_s = time.perf_counter() - t0
        result = demo.evaluate(policy, n_eval)
    return {"run": str(run), "variant": variant, "train_seed": seed, "bags": len(bags),
            "success": result["success_rate"], "train_s": round(train_s, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="mile-ros demo --out folders")
    ap.add_argument("--variants", nargs="+", default=["mile", "hg-dagger"])
    ap.add_argument("--train-seeds", type=int, nargs="+", default=[100])
    ap.add_argument("--eval-episodes", type=int, default=20)
    ap.add_argument("--iterations", type=int, default=None, help="use the first K bags only")
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args(argv)
    try:
        for v in a.variants:
            parse_variant(v)
        for r in a.runs:
            run_bags(r)
    except ValueError as e:
        print(f"bench_demo_learners: {e}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(1)
    old = json.loads(a.out.read_text()) if a.out.exists() else {"rows": []}
    done = {(r["run"], r["variant"], r["train_seed"], r.get("bags")) for r in old["rows"]}
    rows = old["rows"]
    for run in a.runs:
        for seed in a.train_seeds:
            for v in a.variants:
                n_bags = len(run_bags(run)[:a.iterations])
                if (str(run), v, seed, n_bags) in done:    # resumable: keep what was measured
                    continue
                rows.append(measure(run, v, seed, a.eval_episodes, a.iterations))
                print(json.dumps(rows[-1]), flush=True)
                a.out.parent.mkdir(parents=True, exist_ok=True)
                a.out.write_text(json.dumps({"training": demo.TRAINING, "rows": rows,
                                             "load_avg_1min": os.getloadavg()[0]}, indent=1))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
