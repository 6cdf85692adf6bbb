"""Measure where the simulated person intervened in a `mile-ros demo` run, and what MILE learnt.

Reads a finished demo run directory (bags, checkpoints) ROS-free and reports per iteration:
the episodes' success and interventions, how far the running policy's mean action is from the
scripted expert's on the states it visited (Kc of the person's probit, sim/person.py; the person
intervenes with p > 0.5 only where 0.5 * (Kc - D) > c), the person's p on those states under
three beliefs (the fixed mental model of the initial policy, the running policy's mean as
`mental_model: policy` uses it, and the running policy with its own spread), the share of ticks
with the gripper's sign opposite the expert's, on intervened ticks how far the running and
the next policy's means are from the person's action a_h, and the whole-episode takeovers (the
person took over within WHOLE_ONSET ticks of the start and kept control to the end) with how
many of them had the fixed belief's hazard at or above the handback threshold on every tick (a
person who rightly never handed back).

    python bench/bench_demo_person.py /tmp/dp_policy --out bench/results/demo/x_person.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MUJOCO_GL", "egl")

from mile_ros.bags.loading import load_episodes  # noqa: E402
from mile_ros.learning.checkpoint import load_checkpoint  # noqa: E402
from mile_ros.learning.specs import stack_frames  # noqa: E402
from mile_ros.params import resolve  # noqa: E402
from mile_ros.sim.person import probit_gaussian  # noqa: E402
from mile_ros.sim.person_driver import build_person  # noqa: E402
from mile_ros.sim.widowx import expert_action_from_observation  # noqa: E402

WHOLE_ONSET = 10   # ticks: the reaction delay (6 at 20 Hz) and a few more


def checkpoints(root: Path) -> dict[int, Path]:
    return {int(p.name.split("-")[0][4:]): p for p in (root / "checkpoints").glob("iter*")
            if p.is_dir()}


def fixed_person(settings: dict):
    """Return the demo's calibrated person (cached) as its sim_human built it: belief, c, sigma."""
    p = resolve("sim_human", [settings["params"]] if settings.get("params") else [],
                {"target_rate": settings["intervention_rate"], "seed": settings["seed"],
                 "mental_model": "initial"})
    person, info, _names, _k = build_person(p)
    return person.mental_model, info["c"], np.log(p["expert_sigma"]), p["handback_p"]


def stacked_for(model, ep):
    """Return the episode's states as `model` reads them: its state names, its frame stack."""
    spec = getattr(model, "obs_spec", None)
    if spec is None:
        return stack_frames(ep.state, 4)
    cols = [ep.state_names.index(n) for n in spec.state_names]
    return stack_frames(ep.state[:, cols], spec.frame_stack)


def whole_takeovers(eps, p_fixed, handback_p: float) -> dict:
    """Count the episodes taken over from (nearly) their start to their end (module docstring)."""
    whole = [i for i, e in enumerate(eps) if e.nu.any() and np.argmax(e.nu) <= WHOLE_ONSET
             and e.nu[np.argmax(e.nu):].all()]
    high = [i for i in whole if (p_fixed[i] >= handback_p).all()]
    return {"whole_takeovers": len(whole), "whole_takeovers_hazard_high_throughout": len(high)}


def iteration(eps, running, nxt, fixed, c: float, log_sigma: float,
              handback_p: float = 0.1) -> dict:
    """Return the figures of one iteration's episodes (module docstring)."""
    sig2 = np.exp(2 * log_sigma)
    kc, p_fixed, p_mean, p_spread, grip, d_run, d_next = [], [], [], [], [], [], []
    for e in eps:
        mu = np.clip(np.array([expert_action_from_observation(s) for s in e.state]), -1, 1)
        m_run, ls_run = running.action_distribution(stacked_for(running, e))
        k = ((m_run - mu) ** 2).sum(1) / sig2
        kc.append(k)
        p_mean.append(probit_gaussian(k, mu.shape[1], c))
        p_spread.append(probit_gaussian(k + np.exp(2 * ls_run).sum(1) / sig2, mu.shape[1], c))
        m_fix, ls_fix = fixed.action_distribution(stacked_for(fixed, e))
        k_fix = (((m_fix - mu) ** 2) + np.exp(2 * ls_fix)).sum(1) / sig2
        p_fixed.append(probit_gaussian(k_fix, mu.shape[1], c))
        grip.append(np.sign(e.a_r[:, -1]) != np.sign(mu[:, -1]))
        if e.nu.any():
            d_run.append(np.abs(m_run[e.nu] - e.a_h[e.nu]))
            if nxt is not None:
                d_next.append(np.abs(nxt.action_distribution(stacked_for(nxt, e))[0][e.nu]
                                     - e.a_h[e.nu]))
    kc = np.concatenate(kc)

    def mean(xs):
        return round(float(np.concatenate(xs).mean()), 4)

    def per_dim(xs):
        return np.concatenate(xs).mean(0).round(3).tolist() if xs else None
    return {"episodes": len(eps), "successes": sum(bool(e.success) for e in eps),
            "interventions": [int(e.nu.sum()) for e in eps],
            "first_onset": [int(np.argmax(e.nu)) for e in eps if e.nu.any()],
            "kc_median": round(float(np.median(kc)), 1),
            "kc_p90": round(float(np.percentile(kc, 90)), 1), "kc_max": round(float(kc.max()), 1),
            "p_fixed_belief": mean(p_fixed), "p_policy_mean_belief": mean(p_mean),
            "p_policy_with_spread_belief": mean(p_spread), "gripper_wrong": mean(grip),
            "on_interventions_abs_err_running": per_dim(d_run),
            "on_interventions_abs_err_next": per_dim(d_next)} | whole_takeovers(
                eps, p_fixed, handback_p)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="demo run directory (--out of mile-ros demo)")
    ap.add_argument("--out", help="write the figures here (JSON)")
    args = ap.parse_args(argv)
    root = Path(args.run)
    settings = json.loads((root / "demo.json").read_text())["settings"]
    fixed, c, log_sigma, handback_p = fixed_person(settings)
    ck = checkpoints(root)
    result = {"run": str(root), "settings": settings, "c": c,
              "threshold_kc": 2 * c + 4, "iterations": {}}
    print(f"c = {c:.1f}: p > 0.5 where Kc > {2 * c + 4:.0f}")
    for it in sorted(k for k in ck if k > 0):
        eps, _ = load_episodes([root / f"iter{it}"], only=True, images=False)
        r = iteration(eps, load_checkpoint(ck[it - 1]), load_checkpoint(ck[it]), fixed, c,
                      log_sigma, handback_p)
        result["iterations"][it] = r
        print(f"iter{it}: {json.dumps(r)}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
