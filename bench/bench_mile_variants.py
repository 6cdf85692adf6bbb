"""MILE's settings compared on the same collected data: which learner choices measure better.

Takes the episodes a protocol run collected for MILE (`<results>.work/mile/seed<k>.pt`, iteration
1 of protocol (a)), retrains MILE from the same initial policy with each variant (MileConfig
settings, as `mile-ros bench --mile NAME=VALUE` would) and evaluates each on the run's fixed
evaluation seeds. Also trains the baselines named in --baselines on the same data, for scale.
Keeps bench/results/mile_variants.json (one entry per (results file, seed, variant); resumable).

    python bench/bench_mile_variants.py --results bench/results/one_mile_a_drawer-open.json \
        --seeds 0,1,2 --variants "default;beta=10;beta_update=learn"
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MUJOCO_GL", "egl")

from mile_ros._io import atomic_write  # noqa: E402
from mile_ros.benchmark.protocols import EVAL_SEED_BASE  # noqa: E402
from mile_ros.benchmark.results import load_results  # noqa: E402
from mile_ros.learning import MileConfig, train_mile  # noqa: E402
from mile_ros.learning.baselines import BASELINES, BaselineConfig  # noqa: E402
from mile_ros.learning.config import parse_settings  # noqa: E402
from mile_ros.sim.initial import InitialConfig, build_initial_policy  # noqa: E402
from mile_ros.sim.tasks import TaskOptions, evaluate_policy, make_task  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "mile_variants.json"


def variant_settings(name: str) -> dict:
    """'default' -> {}; 'beta=10+beta_update=learn' -> {beta: 10, beta_update: learn}."""
    return {} if name == "default" else parse_settings(name.split("+"), "--variants")


def train_variant(name, initial, episodes, seed):
    if name.startswith("baseline:"):
        method = name.split(":", 1)[1]
        return BASELINES[method](initial, episodes, [], BaselineConfig(),
                                 MileConfig(seed=seed))
    cfg = MileConfig.with_settings(variant_settings(name), "--variants", seed=seed)
    model, metrics = train_mile(episodes, initial.obs_spec, initial.action_spec, cfg,
                                init=initial, progress=False)
    return model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", required=True)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--variants", default="default;beta=10;beta_update=learn",
                    help="semicolon list of variants, each NAME=VALUE[+NAME=VALUE...]")
    ap.add_argument("--baselines", default="", help="comma list, e.g. rlif,iwr")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    data = load_results(args.results)
    cfg = data["config"]
    task_name = cfg["task"]
    icfg = InitialConfig(**{**cfg["initial"], "hidden": tuple(cfg["initial"]["hidden"]),
                            "task": TaskOptions(**cfg["initial"]["task"])})
    eval_seeds = list(range(EVAL_SEED_BASE, EVAL_SEED_BASE + cfg["n_eval"]))
    out = Path(args.out)
    done = json.loads(out.read_text()) if out.exists() else []
    names = args.variants.split(";") + [f"baseline:{b}" for b in args.baselines.split(",") if b]
    task = make_task(task_name, seed=0, options=icfg.task)
    pool = [task] + [make_task(task_name, seed=i, options=icfg.task) for i in range(1, 10)]
    try:
        for seed in [int(s) for s in args.seeds.split(",")]:
            state = torch.load(Path(args.results + ".work") / "mile" / f"seed{seed}.pt",
                               weights_only=False)
            initial, _ = build_initial_policy(task_name, seed, icfg, task=task)
            for name in names:
                key = (args.results, seed, name)
                if any((d["results"], d["seed"], d["variant"]) == key for d in done):
                    continue
                t0 = time.time()
                model = train_variant(name, initial, state["episodes"], seed * 1000 + 1)
                t1 = time.time()
                ev = evaluate_policy(task_name, model.act, eval_seeds, pool=pool,
                                     frame_stack=icfg.frame_stack)
                done.append({"results": args.results, "seed": seed, "variant": name,
                             "success_rate": float(np.mean(ev["success"])),
                             "c": getattr(model, "c", None), "beta": getattr(model, "beta", None),
                             "train_seconds": t1 - t0, "eval_seconds": time.time() - t1})
                atomic_write(out, json.dumps(done, indent=1))
                print(f"seed {seed} {name:34} success {done[-1]['success_rate']:.2f} "
                      f"(c {done[-1]['c']}, beta {done[-1]['beta']})", flush=True)
    finally:
        for e in pool:
            e.close()
    rows = [d for d in done if d["results"] == args.results]
    for name in dict.fromkeys(d["variant"] for d in rows):
        s = [d["success_rate"] for d in rows if d["variant"] == name]
        print(f"{name:34} mean {np.mean(s):.3f} over {len(s)} seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
