"""MILE variants compared on the fixed protocol (a) data -> bench/results/mile_variants.json.

Re-trains MILE with each variant on the very episodes that MILE collected in protocol (a)
(bench/results/paper_a_<task>.json.work/mile/seed<S>.pt, written by bench/run_paper_bench.sh),
several training seeds per data seed, and evaluates on the benchmark's 50 fixed evaluation seeds.
This is how MILE's benchmark defaults (c by maximum likelihood, anchored mental model) were
chosen: on data seeds 0-2 only; seeds 3-4 of protocol (a) were run afterwards.

    python bench/bench_mile_variants.py --tasks metaworld/drawer-open --data-seeds 0,1,2
        --train-seeds 3
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "egl")

from mile_ros.benchmark.mile_adapter import train_mile_on  # noqa: E402
from mile_ros.benchmark.protocols import EVAL_SEED_BASE  # noqa: E402
from mile_ros.benchmark.results import mean_se  # noqa: E402
from mile_ros.sim.initial import InitialConfig, build_initial_policy, demos_for  # noqa: E402
from mile_ros.sim.tasks import evaluate_policy, make_task  # noqa: E402

VARIANTS = {  # name -> MileBenchConfig overrides
    "rate": {"c_fit": "rate"},                             # c from the intervention rate, once
    "mle": {"c_fit": "mle"},                               # c by maximum likelihood (default)
    "mle-joint": {"c_fit": "mle", "mental": "joint"},      # pihat trained by J1 only (the paper)
    "mle-frozen": {"c_fit": "mle", "mental": "frozen"},    # pihat kept at the initial policy
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default="metaworld/drawer-open,metaworld/button-press,"
                                      "metaworld/peg-insert-side,lunarlander")
    p.add_argument("--data-seeds", default="0,1,2")
    p.add_argument("--train-seeds", type=int, default=3)
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help="comma list of: " + ", ".join(VARIANTS))
    p.add_argument("--out", default=str(ROOT / "bench/results/mile_variants.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    variants = [v.strip() for v in args.variants.split(",")]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        p.error(f"unknown variant(s) {bad}; valid: {list(VARIANTS)}")
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    cfg = InitialConfig()
    eval_seeds = list(range(EVAL_SEED_BASE, EVAL_SEED_BASE + 50))
    for task_name in args.tasks.split(","):
        name = task_name.split("/")[-1]
        task = make_task(task_name, 0, cfg.task)
        pool = [task] + [make_task(task_name, i, cfg.task) for i in range(1, 10)]
        per_task = results.setdefault(task_name, {})
        for variant in variants:
            rates = {}
            t0 = time.time()
            for s in (int(x) for x in args.data_seeds.split(",")):
                work = ROOT / f"bench/results/paper_a_{name}.json.work/mile/seed{s}.pt"
                if not work.exists():
                    p.error(f"{work}: missing; run bench/run_paper_bench.sh a-... first")
                episodes = torch.load(work, weights_only=False)["episodes"]
                initial, _ = build_initial_policy(task_name, s, cfg, task=task)
                demos = demos_for(task_name, s, cfg, task=task)
                for ts in range(args.train_seeds):
                    model = train_mile_on(initial, episodes, task, VARIANTS[variant],
                                          s * 1000 + 1 + 7 * ts, demos)
                    ev = evaluate_policy(task_name, model.act, eval_seeds, pool=pool,
                                         frame_stack=cfg.frame_stack)
                    rates.setdefault(str(s), []).append(float(np.mean(ev["success"])))
            per_seed = [float(np.mean(v)) for v in rates.values()]
            m, se = mean_se(per_seed)
            per_task[variant] = {"overrides": VARIANTS[variant], "success": rates, "mean": m,
                                 "se_over_data_seeds": se, "seconds": time.time() - t0}
            print(f"{task_name:28s} {variant:12s} {m:.2f} ± {se:.2f}  per data seed "
                  + " ".join(f"{float(np.mean(v)):.2f}" for v in rates.values()), flush=True)
            out.write_text(json.dumps(results, indent=1))
        for e in pool:
            e.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
