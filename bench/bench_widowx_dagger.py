"""Measure whether the trainer's BC learns the simulated WidowX task from expert labels (DAgger).

Why: `mile-ros demo` stays far below its 60% target for MILE and HG-DAgger alike, and BC on the
scripted expert's labels at every state of the demo's bags succeeded on 0/20 episodes
(bench/results/demo/bag_audit_executor_fix_seed0.json) while BC on 10 demonstrations succeeded on
20/20. That bounds every method trained on the bags by the learner, not by the person. This
benchmark takes the person and the bags out: each round rolls out the current policy (no person,
deterministic), labels every state it visited with the scripted expert's mean action
(`WidowXTask.expert_action`, a function of the observation alone), adds the round to the data and
refits, DAgger's loop (Ross et al., 2011) -- the best case of learning from interventions, since
every state gets the expert's label. Each fit is `train_bc` with the initial policy's settings
(`initial.bc_config`: 3000 updates, hidden 256 x 2, lr 1e-3), the robot trainer's BC.

Per round: the rollouts' own success, the data size, and success of the refitted policy alone on
20 evaluation episodes (seed stream 50, `initial.seeds_for`). Variants of the fit: "nll" (the
plain Gaussian NLL with a learned state-dependent log-std in networks.LOG_STD_BOUNDS, the
paper's), "beta0.5" (MileConfig.nll_beta = 0.5, `mile.gaussian_nll`'s beta-NLL), "fixed"
(log-std bounds (-1.2, -1.19): a fixed sigma ~ 0.3, i.e. a mean-squared error). For reference,
per fit: BC on N noisy expert demonstrations (seed stream 5, `initial.collect_demos`) labelled
with the executed actions, and the same states labelled with the expert's mean action -- the
labels a person sampling the expert's Gaussian gives on average, without the noise.

    python bench/bench_widowx_dagger.py --rounds 6 --rollouts 8 --seed 0 --demos 10

`--dagger-demos N ...` starts DAgger's data set with N noisy demonstrations (the D0 of Ross et
al.; the same demonstrations as the reference's, seed stream 5), one DAgger run per N:

    python bench/bench_widowx_dagger.py --fits beta0.5 --dagger-demos 0 3 10 --demos 10
        --out bench/results/widowx_dagger_d0.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace as dataclass_replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MUJOCO_GL", "egl")

import mile_ros.sim.initial as initial  # noqa: E402
from mile_ros.learning import train_bc  # noqa: E402
from mile_ros.sim.tasks import evaluate_policy, make_task  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "widowx_dagger.json"
FITS = {"nll": {}, "beta0.5": {"nll_beta": 0.5}, "fixed": {"log_std_bounds": (-1.2, -1.19)}}
EVAL_STREAM, ROUND_STREAM, DEMO_STREAM = 50, 10, 5


def fit(task, episodes: list[dict], seed: int, changes: dict):
    """BC of the episodes' labels with the initial policy's settings and `changes` (MileModel)."""
    cfg = initial.InitialConfig()
    obs_spec, action_spec = initial.task_specs(task, cfg.frame_stack)
    settings = dataclass_replace(initial.bc_config(cfg, seed, "widowx"), **changes)
    data = [{"state": e["state"], "a_r": e["action"]} for e in episodes]
    return train_bc(data, obs_spec, action_spec, settings, target="a_r", progress=False)


def success_alone(task, policy, seed: int, n: int) -> float:
    seeds = initial.seeds_for(seed, EVAL_STREAM, n)
    return float(np.mean(evaluate_policy("widowx", policy.act, seeds, pool=[task])["success"]))


def labelled_rollouts(task, policy, seeds) -> list[dict]:
    """Roll the policy out alone; label each visited state with the expert's mean action."""
    def act(stacked, _obs, _t):
        return policy.act(stacked[None])[0], task._env.expert_action()
    return [initial.rollout(task, act, s) for s in seeds]


def relabelled(task, demos: list[dict], seeds) -> list[dict]:
    """Return the demonstrations' states, each labelled with the expert's mean action there."""
    out = []
    for demo, seed in zip(demos, seeds):
        task.reset(seed)
        labels = []
        for action in demo["action"]:        # replay the executed actions
            labels.append(task._env.expert_action())
            task.step(action)
        out.append({"state": demo["state"], "action": np.asarray(labels)})
    return out


def reference(task, seed: int, n: int, changes: dict, n_eval: int) -> dict:
    """Success alone of BC on n demonstrations: executed-action and expert-mean labels."""
    demos = initial.collect_demos(task, n, initial.InitialConfig(), seed, stream=DEMO_STREAM)
    means = relabelled(task, demos, initial.seeds_for(seed, DEMO_STREAM, n))
    return {kind: success_alone(task, fit(task, data, seed, changes), seed, n_eval)
            for kind, data in (("executed_labels", demos), ("expert_mean_labels", means))}


def dagger(task, start, seed: int, rounds: int, rollouts: int, changes, n_eval: int,
           demos: int = 0) -> list:
    """Run DAgger's rounds; the data set starts with `demos` noisy demonstrations (D0)."""
    data = (initial.collect_demos(task, demos, initial.InitialConfig(), seed, stream=DEMO_STREAM)
            if demos else [])
    policy, rows = start, []
    for r in range(rounds):
        t0 = time.perf_counter()
        new = labelled_rollouts(task, policy, initial.seeds_for(seed, ROUND_STREAM + r, rollouts))
        data += new
        policy = fit(task, data, seed, changes)
        rows.append({"round": r, "rollout_success": float(np.mean([e["success"] for e in new])),
                     "ticks": int(sum(len(e["state"]) for e in data)),
                     "success_alone": success_alone(task, policy, seed, n_eval),
                     "seconds": round(time.perf_counter() - t0, 1)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--rollouts", type=int, default=8, help="rollouts per round")
    ap.add_argument("--fits", nargs="+", default=list(FITS), choices=list(FITS))
    ap.add_argument("--demos", nargs="+", type=int, default=[10])
    ap.add_argument("--dagger-demos", type=int, nargs="+", default=[0],
                    help="noisy demonstrations DAgger's data set starts with (one run each)")
    ap.add_argument("--eval-episodes", type=int, default=20)
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    t0 = time.time()
    task = make_task("widowx", seed=a.seed)
    start, info = initial.build_initial_policy("widowx", a.seed, task=task)
    out = {"seed": a.seed, "eval_episodes": a.eval_episodes, "rollouts_per_round": a.rollouts,
           "initial": {"check_success": info["check_success"],
                       "success_alone": success_alone(task, start, a.seed, a.eval_episodes)},
           "dagger": {}, "demos": {}}
    print(json.dumps(out["initial"]), flush=True)
    for name in a.fits:
        for d in a.dagger_demos:
            key = name if d == 0 else f"{name}, {d} demos"
            out["dagger"][key] = dagger(task, start, a.seed, a.rounds, a.rollouts, FITS[name],
                                        a.eval_episodes, d)
        for n in a.demos:
            out["demos"][f"{name}, {n}"] = reference(task, a.seed, n, FITS[name], a.eval_episodes)
            print(json.dumps({"fit": name, "demos": n} | out["demos"][f"{name}, {n}"]),
                  flush=True)
    task.close()
    out |= {"wall_s": round(time.time() - t0, 1), "load_avg_1min": os.getloadavg()[0]}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
