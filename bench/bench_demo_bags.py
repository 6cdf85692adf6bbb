"""Audit the bags `mile-ros demo` collected: what the arm executed, what BC can learn from them.

Why: MILE, HG-DAgger and BC trained on the demo's bags stay far below BC on ten offline expert
demonstrations (19/20, bench_widowx_bc.py). This script separates the data from the learners:

- `command_vs_a_r`: on ticks recorded with nu=0, the share whose applied command (the `command`
  topic) differs from a_r by more than 1e-3 -- the arbiter's handback ramp (`handback_ramp_s`)
  and hold ticks, where the robot did not execute its own action;
- `replay_divergence_m`: the largest end-effector distance between the recorded states and a
  fresh WidowXTask (the episode's seed) driven by the recorded commands (0: the bags are the sim);
- `bc_success`: BC (the initial policy's settings, `bc_config`) on the bags' states labelled with
  the scripted expert's action at each recorded state ("expert labels") and on the interventions
  (a_h, "a_h only"), evaluated offline alone on 20 episodes of the seed stream 50; beside it BC on
  `--demos` offline expert demonstrations (`collect_demos`) through the same code.

    python bench/bench_demo_bags.py /tmp/demo/iter6 --out bench/results/demo/bag_audit_seed0.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mile_ros.bags import reader  # noqa: E402
from mile_ros.bags.loading import load_episodes  # noqa: E402
from mile_ros.learning.bc import train_bc  # noqa: E402
from mile_ros.sim import initial  # noqa: E402
from mile_ros.sim.tasks import make_task  # noqa: E402
from mile_ros.sim.widowx import (  # noqa: E402
    POLICY_STATE_NAMES,
    WidowXTask,
    expert_action_from_observation,
)


def commands(path: str) -> np.ndarray:
    """Return the `command` messages of one episode bag, in order ([T, action dims])."""
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    _, _, _, messages, _ = reader._open_messages(Path(path))
    return np.array([store.deserialize_cdr(raw, kind).position
                     for topic, kind, raw in messages if topic.endswith("/command")])


def command_share(episodes) -> dict:
    """Count nu=0 ticks whose applied command is not a_r."""
    robot = differs = 0
    for e in episodes:
        applied = commands(e.path)[:len(e.nu)]
        own = ~e.nu[:len(applied)]
        robot += int(own.sum())
        differs += int((np.abs(applied - e.a_r[:len(applied)]).max(1) > 1e-3)[own].sum())
    return {"robot_ticks": robot, "command_not_a_r": differs,
            "share": differs / max(robot, 1)}


def replay_divergence(episodes, n: int = 5) -> float:
    """Return the largest ee distance (m) replaying the recorded commands in a fresh task."""
    worst = 0.0
    for e in episodes[:n]:
        task = WidowXTask(seed=e.metadata["seed"])
        try:
            task.reset(seed=e.metadata["seed"])
            for i, a in enumerate(commands(e.path)[:len(e.state) - 1]):
                obs = task.step(a)[0]
                worst = max(worst, float(np.abs(obs[:3] - e.state[i + 1][:3]).max()))
        finally:
            task.close()
    return worst


def success(task, model, cfg, n: int = 20) -> int:
    seeds = initial.seeds_for(0, 50, n)
    return sum(initial.rollout(task, lambda so, _o, _t: (model.act(so),) * 2, s,
                               cfg.frame_stack)["success"] for s in seeds)


def bag_datasets(episodes) -> dict:
    cols = [episodes[0].state_names.index(n) for n in POLICY_STATE_NAMES]

    def expert(e):
        return np.array([expert_action_from_observation(s, observation_names=e.state_names)
                         for s in e.state])
    return {"expert labels": [{"state": e.state[:, cols], "a_r": expert(e)} for e in episodes],
            "a_h only": [{"state": e.state[:, cols], "a_r": np.nan_to_num(e.a_h),
                          "weight": e.nu.astype(float)} for e in episodes]}


def bc_success(episodes, demos: int) -> dict:
    cfg = initial.InitialConfig()
    task = make_task("widowx", seed=0, options=cfg.task)
    try:
        offline = [{"state": d["state"], "a_r": d["action"]}
                   for d in initial.collect_demos(task, demos, cfg, 0)]
        sets = bag_datasets(episodes) | {f"{demos} offline demonstrations": offline}
        obs_spec, act_spec = initial.task_specs(task, cfg.frame_stack)
        out = {}
        for name, data in sets.items():
            model = train_bc(data, obs_spec, act_spec, initial.bc_config(cfg, 0, "widowx"),
                             target="a_r", progress=False)
            out[name] = {"successes": success(task, model, cfg), "episodes": 20,
                         "ticks": int(sum(len(d["state"]) for d in data))}
            print(f"BC on {name}: {out[name]}", flush=True)
        return out
    finally:
        task.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bags", help="a demo's iterN directory (it and the earlier iter* are read)")
    ap.add_argument("--demos", type=int, default=10, help="offline demonstrations for reference")
    ap.add_argument("--out", type=Path, default=None, help="results JSON")
    args = ap.parse_args(argv)
    t0 = time.time()
    episodes, report = load_episodes([args.bags])
    res = {"bags": args.bags, "episodes": len(episodes),
           "ticks": int(sum(len(e.nu) for e in episodes)),
           "interventions": int(sum(e.nu.sum() for e in episodes)),
           "command_vs_a_r": command_share(episodes),
           "replay_divergence_m": replay_divergence(episodes)}
    print(json.dumps(res, indent=1), flush=True)
    res["bc_success"] = bc_success(episodes, args.demos)
    res["seconds"] = round(time.time() - t0, 1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
