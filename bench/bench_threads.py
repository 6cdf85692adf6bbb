"""Torch intra-op threads for training and inference: 1 against 2, idle and beside a CPU burner.

For each thread count, in this one process, side by side:
  state   MILE training updates per second on the demo's state policy (simulated episodes like
          the demo's, batch 256, a fixed number of updates, no early stopping);
  image   the same for the image + end-effector policy at 64 px;
  infer   policy inference per control tick (PolicyRunner.step, the policy server's call):
          p50 / p99 in ms.
Each measurement is repeated idle and with one `yes` process running beside it (a competing
process on a 2-core machine). Prints a table and writes bench/results/threads.json.

    python bench/bench_threads.py [--updates 300] [--image-updates 20] [--ticks 2000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "test"))

from mile_ros.learning import ActionSpec, MileConfig, ObsSpec, train_mile  # noqa: E402
from support.train_helpers import simulate_episode  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "threads.json"


def episodes(image_size: int | None, n: int = 8) -> list[dict]:
    return [simulate_episode(i, max_ticks=150, robot_noise=0.45, threshold=0.8,
                             image_size=image_size) for i in range(n)]


def specs(eps: list[dict], image_size: int | None):
    shape = None if image_size is None else (image_size, image_size, 3)
    return (ObsSpec(eps[0]["state_names"], image_shape=shape),
            ActionSpec(eps[0]["action_names"], "continuous"))


def updates_per_s(eps, obs_spec, act_spec, updates: int) -> float:
    cfg = MileConfig(seed=0, holdout=0.0, min_updates=updates, max_updates=updates,
                     epochs=1e9, pretrain_updates=0)
    t0 = time.perf_counter()
    train_mile(eps, obs_spec, act_spec, cfg, progress=False)
    return updates / (time.perf_counter() - t0)


def inference_ms(model, eps, ticks: int) -> tuple[float, float]:
    runner = model.runner()
    runner.reset()
    states = np.concatenate([e["state"] for e in eps])
    times = []
    for i in range(ticks):
        t0 = time.perf_counter()
        runner.step(states[i % len(states)])
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def measure(args, threads: int, state, image) -> dict:
    """Median of `args.repeats` runs of each figure at `threads` intra-op threads."""
    torch.set_num_threads(threads)
    out = {"state_updates_per_s": float(np.median(
        [updates_per_s(*state, args.updates) for _ in range(args.repeats)]))}
    if image is not None:
        out["image_updates_per_s"] = float(np.median(
            [updates_per_s(*image, args.image_updates) for _ in range(args.repeats)]))
    cfg = MileConfig(seed=0, holdout=0.0, min_updates=50, max_updates=50, pretrain_updates=0)
    model, _ = train_mile(state[0], state[1], state[2], cfg, progress=False)
    out["infer_p50_ms"], out["infer_p99_ms"] = inference_ms(model, state[0], args.ticks)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--updates", type=int, default=300)
    ap.add_argument("--image-updates", type=int, default=20)
    ap.add_argument("--ticks", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-image", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    s_eps = episodes(None)
    state = (s_eps, *specs(s_eps, None))
    image = None
    if not args.skip_image:
        i_eps = episodes(64, n=4)
        image = (i_eps, *specs(i_eps, 64))
    updates_per_s(*state, 20)                      # warm-up: first calls allocate and compile
    if image is not None:
        updates_per_s(*image, 2)
    rows = []
    for load in ("idle", "one burner"):
        burner = subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) if load != "idle" else None
        try:
            for threads in (1, 2):
                row = {"load": load, "threads": threads, **measure(args, threads, state, image)}
                row["load_average"] = os.getloadavg()[0]
                rows.append(row)
                print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v)
                                  for k, v in row.items()}), flush=True)
        finally:
            if burner is not None:
                burner.kill()
    res = {"rows": rows, "updates": args.updates, "image_updates": args.image_updates,
           "ticks": args.ticks, "machine": platform.platform(), "cpus": os.cpu_count(),
           "torch": torch.__version__}
    args.out.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
