"""How helpful is the simulated person? Rate, assisted success and the initial policy alone.

For each (task, training seed) and person setting (probit scale rule, target rate): the person
is calibrated as the benchmark does (sim/initial.build_person), then k episodes are collected
with the initial policy under the person on the benchmark's own collection seeds of iteration 1,
and the initial policy runs alone on the same seeds. Prints a table and keeps
bench/results/person.json (one entry per setting, resumable).

    python bench/bench_person.py --task metaworld/drawer-open --seeds 0 \
        --settings 0.5:0.25:segments,0.5:0.25:paper,0:0.25:paper
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MUJOCO_GL", "egl")

from mile_ros._io import atomic_write  # noqa: E402
from mile_ros.sim.initial import (  # noqa: E402
    InitialConfig,
    build_initial_policy,
    build_person,
    seeds_for,
)
from mile_ros.sim.person import collect_episode  # noqa: E402
from mile_ros.sim.tasks import canonical_task_name, make_task  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "person.json"


def measure(task_name: str, seed: int, beta_ratio: float, rate: float, k: int,
            style: str) -> dict:
    cfg = InitialConfig(beta_ratio=beta_ratio, target_rate=rate, person=style)
    task = make_task(task_name, seed=0, options=cfg.task)
    try:
        t0 = time.time()
        initial, _ = build_initial_policy(task_name, seed, cfg, task=task)
        person, info = build_person(task_name, seed, initial, cfg, task=task)
        seeds = seeds_for(seed, 3, k)               # the protocols' iteration-1 episode seeds
        with_person = [collect_episode(task, initial, person, s, cfg.frame_stack, [seed, 1, j, 5])
                       for j, s in enumerate(seeds)]
        never = type(person)(task.expert, person.mental_model, c=1e12, seed=seed,
                             state_dim=task.obs_dim)
        alone = [collect_episode(task, initial, never, s, cfg.frame_stack, [s]) for s in seeds]
    finally:
        task.close()
    ticks = sum(len(e["nu"]) for e in with_person)
    p = np.concatenate([e["p"] for e in with_person])
    onsets = sum(int((e["nu"] & ~np.r_[False, e["nu"][:-1]]).sum()) for e in with_person)
    return {"task": task_name, "seed": seed, "person": style, "beta_ratio": beta_ratio,
            "target_rate": rate, "takeovers": onsets,
            "episodes": k, "c": info["c"], "scale": info.get("scale"),
            "rate": float(sum(e["nu"].sum() for e in with_person) / ticks),
            "assisted_success": float(np.mean([e["success"] for e in with_person])),
            "initial_success": float(np.mean([e["success"] for e in alone])),
            "hard_share": float(np.mean((p < 0.01) | (p > 0.99))),
            "seconds": time.time() - t0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="metaworld/drawer-open")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--settings", default="0.5:0.25:segments,0.5:0.25:paper",
                    help="comma list of beta_ratio:target_rate:person (segments | paper)")
    ap.add_argument("--episodes", type=int, default=15)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    task = canonical_task_name(args.task)
    out = Path(args.out)
    done = json.loads(out.read_text()) if out.exists() else []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for item in args.settings.split(","):
            ratio, rate, style = item.split(":")
            ratio, rate = float(ratio), float(rate)
            key = (task, seed, style, ratio, rate, args.episodes)
            if any((d["task"], d["seed"], d.get("person", "paper"), d["beta_ratio"],
                    d["target_rate"], d["episodes"]) == key for d in done):
                continue
            done.append(measure(task, seed, ratio, rate, args.episodes, style))
            atomic_write(out, json.dumps(done, indent=1))
    print(f"{'task':26} seed person   ratio target      c  rate assisted initial hard  seconds")
    for d in done:
        if d["task"] == task:
            print(f"{d['task']:26} {d['seed']:4} {d.get('person', 'paper'):8} "
                  f"{d['beta_ratio']:5} {d['target_rate']:6} "
                  f"{d['c']:6.1f} {d['rate']:5.2f} {d['assisted_success']:8.2f} "
                  f"{d['initial_success']:7.2f} {d['hard_share']:4.2f} {d['seconds']:8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
