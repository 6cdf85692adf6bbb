"""Can the expert rescue the robot, and does a per-tick coin flip? (motivates the segment person).

On the benchmark's iteration-1 collection seeds of training seed 0, the initial policy runs for
t0 ticks and then (a) the expert keeps control, or (b) expert and robot alternate every other
tick -- what a per-tick person whose p(nu=1|s) sits near 0.5 in trouble does. Prints successes
out of the episodes and keeps bench/results/takeover.json.

    python bench/bench_takeover.py --task metaworld/drawer-open
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MUJOCO_GL", "egl")

from mile_ros._io import atomic_write  # noqa: E402
from mile_ros.learning.specs import FrameStacker  # noqa: E402
from mile_ros.sim.initial import InitialConfig, build_initial_policy, seeds_for  # noqa: E402
from mile_ros.sim.tasks import canonical_task_name, make_task  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "takeover.json"


def run(task, policy, seed: int, t0: int, mode: str, frame_stack: int) -> bool:
    stacker = FrameStacker(frame_stack)
    obs = task.reset(seed)
    so = stacker.reset(obs)
    for t in range(task.max_steps):
        expert = t >= t0 and (mode == "expert" or t % 2 == 0)
        a = task.expert(obs).action if expert else policy.act(so)
        obs, _r, done, info = task.step(a)
        so = stacker.push(obs)
        if done:
            return bool(info["success"])
    return False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="metaworld/drawer-open")
    ap.add_argument("--episodes", type=int, default=15)
    ap.add_argument("--starts", default="0,20,50,100,200")
    args = ap.parse_args(argv)
    name = canonical_task_name(args.task)
    cfg = InitialConfig()
    task = make_task(name, seed=0, options=cfg.task)
    try:
        initial, _ = build_initial_policy(name, 0, cfg, task=task)
        seeds = seeds_for(0, 3, args.episodes)
        alone = sum(run(task, initial, s, 10**9, "expert", cfg.frame_stack) for s in seeds)
        rows = {"task": name, "training_seed": 0, "episodes": len(seeds), "initial_alone": alone,
                "from": {}}
        print(f"{name}: initial policy alone {alone}/{len(seeds)}")
        for t0 in (int(v) for v in args.starts.split(",")):
            keep = sum(run(task, initial, s, t0, "expert", cfg.frame_stack) for s in seeds)
            alt = sum(run(task, initial, s, t0, "alternate", cfg.frame_stack) for s in seeds)
            rows["from"][str(t0)] = {"expert_keeps_control": keep, "alternate": alt}
            print(f"  from tick {t0:3}: expert keeps control {keep}/{len(seeds)}, "
                  f"alternating every other tick {alt}/{len(seeds)}")
    finally:
        task.close()
    done = json.loads(OUT.read_text()) if OUT.exists() else []
    done = [d for d in done if d["task"] != name] + [rows]
    atomic_write(OUT, json.dumps(done, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
