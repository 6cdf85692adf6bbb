"""Simulated WidowX: ticks per second and the scripted expert's success rate and episode length.

Control ticks per second are measured with and without a camera frame per tick. Prints the
figures, writes bench/results/sim.json.

    python bench/bench_sim.py [--seeds 50] [--ticks 2000] [--out bench/results/sim.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from mile_ros.sim.widowx import WidowXTask  # noqa: E402


def ticks_per_second(task: WidowXTask, n_ticks: int, render: tuple[int, int] | None,
                     label: str, hold: bool = False, chunk: int = 50) -> dict:
    """Measure the tick rate under the scripted expert (resets at episode ends are not timed).

    The machine is shared, so besides the overall rate the best chunk of ``chunk`` ticks is
    reported too.
    """
    task.reset(seed=0)
    times, episode = [], 0
    for _ in tqdm(range(n_ticks), desc=label, unit="tick", leave=False, mininterval=1.0):
        action = task.expert_action()
        start = time.perf_counter()
        _, _, terminated, truncated, _ = task.hold() if hold else task.step(action)
        if render is not None:
            task.render(*render)
        times.append(time.perf_counter() - start)
        if terminated or truncated:
            episode += 1
            task.reset(seed=episode)
    times = np.array(times)
    chunk = min(chunk, len(times))
    best = chunk / times[: len(times) // chunk * chunk].reshape(-1, chunk).sum(axis=1).min()
    return {"ticks": int(len(times)), "seconds": float(times.sum()),
            "ticks_per_s": float(len(times) / times.sum()), "ticks_per_s_best_chunk": float(best),
            "ms_per_tick_p50": float(1e3 * np.median(times)),
            "ms_per_tick_p99": float(1e3 * np.percentile(times, 99))}


def expert_rollouts(task: WidowXTask, seeds: range, sigma: float, label: str) -> dict:
    rng = np.random.default_rng(0)
    successes, lengths, clipped = [], [], 0
    for seed in tqdm(seeds, desc=label, unit="episode", leave=False, mininterval=1.0):
        task.reset(seed=seed)
        for _ in range(task.max_episode_steps):
            action = task.expert_action()
            clipped += int(np.any(np.abs(action) > 1.0))
            if sigma > 0:
                action = np.clip(action + rng.normal(0.0, sigma, 4), -1.0, 1.0)
            _, _, terminated, truncated, info = task.step(action)
            if terminated or truncated:
                break
        successes.append(bool(info["success"]))
        lengths.append(task.tick)
    ok = [n for n, s in zip(lengths, successes) if s]
    return {"episodes": len(successes), "action_noise_sigma": sigma,
            "success_rate": float(np.mean(successes)),
            "mean_episode_ticks": float(np.mean(lengths)),
            "mean_successful_episode_ticks": float(np.mean(ok)) if ok else None,
            "min_episode_ticks": int(min(lengths)), "max_episode_ticks": int(max(lengths)),
            "expert_actions_outside_unit_box": clipped,
            "failed_seeds": [s for s, ok_ in zip(seeds, successes) if not ok_]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=50, help="expert episodes (seeds 0..N-1)")
    parser.add_argument("--ticks", type=int, default=2000, help="ticks per timing run")
    parser.add_argument("--render-size", type=int, default=96)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parent / "results" / "sim.json")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.ticks < 1 or args.render_size < 1:
        parser.error("--seeds, --ticks and --render-size must be positive")

    task = WidowXTask(seed=0)
    try:
        size = (args.render_size, args.render_size)
        results = {
            "task": "wx250s block through the hole (MuJoCo)",
            "control_rate_hz": task.control_rate_hz,
            "physics_substeps_per_tick": task.substeps,
            "physics_timestep_s": float(task.model.opt.timestep),
            "max_episode_steps": task.max_episode_steps,
            "physics_only": ticks_per_second(task, args.ticks, None, "physics"),
            "mujoco_substeps_only": ticks_per_second(task, args.ticks, None, "hold", hold=True),
            f"with_render_{size[0]}x{size[1]}": ticks_per_second(task, args.ticks // 4, size,
                                                                 "physics+render"),
            "expert": expert_rollouts(task, range(args.seeds), 0.0, "expert"),
            "expert_noisy": expert_rollouts(task, range(args.seeds), 0.1, "expert+noise"),
        }
    finally:
        task.close()
    results["machine"] = {"python": platform.python_version(), "mujoco": mujoco.__version__,
                          "cpu_count": os.cpu_count(), "platform": platform.platform(),
                          "mujoco_gl": os.environ.get("MUJOCO_GL", "")}
    results["command"] = "python bench/bench_sim.py " + " ".join(argv or sys.argv[1:])

    for key in ("physics_only", "mujoco_substeps_only", f"with_render_{size[0]}x{size[1]}"):
        r = results[key]
        print(f"control ticks/s, {key:24s}: {r['ticks_per_s']:7.1f} overall, "
              f"{r['ticks_per_s_best_chunk']:7.1f} best chunk; p50 {r['ms_per_tick_p50']:.2f} ms, "
              f"p99 {r['ms_per_tick_p99']:.2f} ms")
    for key in ("expert", "expert_noisy"):
        e = results[key]
        print(f"{key:13s}: success {e['success_rate']:.0%} over {e['episodes']} seeds "
              f"(noise sigma {e['action_noise_sigma']}), "
              f"mean episode {e['mean_episode_ticks']:.1f} "
              f"ticks [{e['min_episode_ticks']}, {e['max_episode_ticks']}]")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
