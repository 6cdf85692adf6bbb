"""How helpful is the simulated person? Rate, assisted success and the initial policy alone.

For each (task, training seed) and person setting (probit scale rule, target rate): the person
is calibrated as the benchmark does (sim/initial.build_person), then k episodes are collected
with the initial policy under the person on the benchmark's own collection seeds of iteration 1,
and the initial policy runs alone on the same seeds. Prints a table and keeps
bench/results/person.json (one entry per setting, resumable).

    python bench/bench_person.py --task metaworld/drawer-open --seeds 0 \
        --settings 0.5:0.25:segments,0.5:0.25:paper,0:0.25:paper
    python bench/bench_person.py --task widowx --reaction-ticks 6 --episodes 10 \
        --settings 0:0.3:segments:10,0:0.3:segments:40,0:0.3:segments:100,0:0.3:paper

A segments setting may end in `:DWELL` (ticks; default the InitialConfig's). Takeover lengths
and the tick of the first onset per episode are reported too. `--calibration-episodes N`: the
closed-loop calibration's episodes per step (InitialConfig.closed_loop_episodes; sim_human's
`calibration_episodes`); the rate measured here, on other seeds, shows how well it held:

    python bench/bench_person.py --task widowx --seeds 0,1,2 --reaction-ticks 6 --episodes 20 \
        --settings 0:0.3:segments --calibration-episodes 5   # then 20
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


def takeovers(nu: np.ndarray) -> list[tuple[int, int]]:
    """(onset tick, length) of every run of nu = 1 in one episode."""
    edges = np.diff(np.r_[0, np.asarray(nu, int), 0])
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [(int(a), int(b - a)) for a, b in zip(starts, ends)]


def measure(task_name: str, seed: int, beta_ratio: float, rate: float, k: int,
            style: str, dwell: int | None = None, reaction: int | None = None,
            calibration: int | None = None) -> dict:
    cfg = InitialConfig(beta_ratio=beta_ratio, target_rate=rate, person=style)
    if calibration is not None:
        cfg.closed_loop_episodes = calibration
    if dwell is not None:
        cfg.dwell_ticks = dwell
    if reaction is not None:
        cfg.reaction_ticks = reaction
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
    runs = [takeovers(e["nu"]) for e in with_person]
    lengths = [n for r in runs for _, n in r]
    return {"task": task_name, "seed": seed, "person": style, "beta_ratio": beta_ratio,
            "target_rate": rate, "takeovers": len(lengths), "dwell_ticks": cfg.dwell_ticks,
            "reaction_ticks": cfg.reaction_ticks,
            "takeover_length_median": float(np.median(lengths)) if lengths else None,
            "first_onset_median": float(np.median([r[0][0] for r in runs if r])) if lengths
            else None, "episode_ticks_mean": ticks / k,
            "episodes": k, "c": info["c"], "scale": info.get("scale"),
            "calibration_episodes": cfg.closed_loop_episodes,
            "calibrated_rate": info.get("closed_loop_rate"),
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
    ap.add_argument("--reaction-ticks", type=int, default=None,
                    help="segments: ticks from the hazard firing to the takeover "
                         "(default: the InitialConfig's)")
    ap.add_argument("--calibration-episodes", type=int, default=None,
                    help="closed-loop calibration episodes per step (default: InitialConfig's)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    task = canonical_task_name(args.task)
    out = Path(args.out)
    done = json.loads(out.read_text()) if out.exists() else []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for item in args.settings.split(","):
            ratio, rate, style, *dwell = item.split(":")
            ratio, rate = float(ratio), float(rate)
            dwell = int(dwell[0]) if dwell else None
            key = (task, seed, style, ratio, rate, args.episodes, dwell, args.reaction_ticks,
                   args.calibration_episodes)
            if any((d["task"], d["seed"], d.get("person", "paper"), d["beta_ratio"],
                    d["target_rate"], d["episodes"], d.get("dwell_set"),
                    d.get("reaction_set"), d.get("calibration_set")) == key for d in done):
                continue
            entry = measure(task, seed, ratio, rate, args.episodes, style, dwell,
                            args.reaction_ticks, args.calibration_episodes)
            done.append(entry | {"dwell_set": dwell, "reaction_set": args.reaction_ticks,
                                 "calibration_set": args.calibration_episodes})
            atomic_write(out, json.dumps(done, indent=1))
    print(f"{'task':26} seed person   ratio target      c  rate assisted initial hard  seconds"
          "  dwell  takeovers  length  1st onset  calib. eps  calib. rate")
    for d in done:
        if d["task"] == task:
            print(f"{d['task']:26} {d['seed']:4} {d.get('person', 'paper'):8} "
                  f"{d['beta_ratio']:5} {d['target_rate']:6} "
                  f"{d['c']:6.1f} {d['rate']:5.2f} {d['assisted_success']:8.2f} "
                  f"{d['initial_success']:7.2f} {d['hard_share']:4.2f} {d['seconds']:8.0f}"
                  f"  {d.get('dwell_ticks', '-')!s:>5}  {d['takeovers']:9}  "
                  f"{d.get('takeover_length_median')!s:>6}  {d.get('first_onset_median')!s:>9}"
                  f"  {d.get('calibration_episodes', '-')!s:>10}  "
                  f"{d.get('calibrated_rate') or float('nan'):11.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
