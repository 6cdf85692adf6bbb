"""Measure how well behaviour cloning learns the simulated WidowX task from a few demonstrations.

Why: `mile-ros demo` starts from BC on three noisy demonstrations. Until this measurement that
initial policy succeeded on 0/20 episodes (aim 10-50%, `mile_ros.sim.initial.BAND`; 5, 7, 10, 20
or 40 demonstrations gave 0/20 as well), so no person, however helpful, could make the demo show
learning. For each variant, number of demonstrations and training seed: collect the
demonstrations as the initial policy's builder does (`collect_demos`, labels = the executed
actions), fit BC (`fit_bc`), and run the policy alone on 20 episodes of the band-check seed stream
(98). Per run: success, the share of episodes where the block was lifted (block centre above 5 cm
at some tick) and where it was carried over the hole (lifted and within 1 cm of the hole centre).

Variants, one factor at a time from the builder's settings before this change (`before`:
absolute positions, executed-action noise 0.3, early stopping on held-out ticks) to the shipped
ones (`shipped`: widowx.POLICY_STATE_NAMES, the positions relative to the hand and to the block;
noise 0.1; 3000 updates without early stopping, `initial.BC_UPDATES`).

    python bench/bench_widowx_bc.py --demos 3 10 --seeds 0 1
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

import mile_ros.sim.initial as initial  # noqa: E402
from mile_ros.learning.specs import FrameStacker  # noqa: E402
from mile_ros.sim.tasks import WidowXBenchTask  # noqa: E402
from mile_ros.sim.widowx import OBSERVATION_NAMES  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "widowx_bc.json"
ABSOLUTE = OBSERVATION_NAMES[:9]     # ee, gripper, block, hole in table coordinates
# name: (features, executed-action noise, BC updates without early stopping or None)
VARIANTS = {"before": (ABSOLUTE, 0.3, None),
            "relative": ("policy", 0.3, None),
            "relative+noise0.1": ("policy", 0.1, None),
            "absolute, shipped noise and budget": (ABSOLUTE, 0.1, 3000),
            "shipped": ("policy", 0.1, 3000)}


def run_policy(task, policy, seeds, frame_stack: int) -> dict:
    """Run `policy` alone on `seeds`: success, lifted and over-the-hole shares."""
    full = list(task._env.observation_names)
    bz, bxy, hxy = full.index("block_z"), [full.index("block_x"), full.index("block_y")], \
        [full.index("hole_x"), full.index("hole_y")]
    succ, lifted, over = [], [], []
    for s in seeds:
        stacker = FrameStacker(frame_stack)
        so = stacker.reset(task.reset(s))
        top, near, info = 0.0, False, {"success": False}
        for _ in range(task.max_steps):
            obs, _r, done, info = task.step(policy.act(so))
            so = stacker.push(obs)
            o = task._env.observation()
            top = max(top, o[bz])
            near = near or (o[bz] > 0.05 and np.linalg.norm(o[bxy] - o[hxy]) < 0.01)
            if done:
                break
        succ.append(info["success"]), lifted.append(top > 0.05), over.append(near)
    return {"success": float(np.mean(succ)), "lifted": float(np.mean(lifted)),
            "over_hole": float(np.mean(over))}


def one(variant: str, n: int, seed: int) -> dict:
    """Return one variant's figures for (n demonstrations, training seed)."""
    features, noise, updates = VARIANTS[variant]
    task = WidowXBenchTask(seed, features=features)
    cfg = initial.InitialConfig(n_demos=n, demo_noise=noise)
    shipped = dict(initial.BC_UPDATES)
    initial.BC_UPDATES.clear()
    initial.BC_UPDATES.update({"widowx": updates} if updates else {})
    try:
        t0 = time.perf_counter()
        demos = initial.collect_demos(task, n, cfg, seed, noise)
        policy = initial.fit_bc(demos, task, cfg, seed)
        fit_s = time.perf_counter() - t0
        out = run_policy(task, policy, initial.seeds_for(seed, 98, 20), cfg.frame_stack)
    finally:
        initial.BC_UPDATES.clear()
        initial.BC_UPDATES.update(shipped)
        task.close()
    return {"demo_success": float(np.mean([d["success"] for d in demos])),
            "collect_and_fit_s": round(fit_s, 1)} | out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--demos", nargs="+", type=int, default=[3, 10])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    rows, t0 = [], time.time()
    for variant in a.variants:
        for n in a.demos:
            for seed in a.seeds:
                row = {"variant": variant, "n_demos": n, "seed": seed}
                rows.append(row | one(variant, n, seed))
                print(json.dumps(rows[-1]), flush=True)
    out = {"variants": {k: {"features": v[0] if isinstance(v[0], str) else list(v[0]),
                            "noise": v[1], "bc_updates": v[2]} for k, v in VARIANTS.items()},
           "eval_episodes": 20, "wall_s": round(time.time() - t0, 1),
           "load_avg_1min": os.getloadavg()[0], "runs": rows}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
