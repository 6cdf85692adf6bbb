"""Image policy on a CPU: one MILE update at 64 px, batch 256, 'patch' against 'conv3'.

The observation is the paper's real-robot one (what `mile-ros demo --image` and `train --image`
train): the camera frame plus the end-effector position. Episodes come from the simulated WidowX
(test/support/train_helpers.simulate_episode: a noisy robot, an expert person who takes over).

  update  ms per MILE update (policy and mental model, as train_mile runs them): train_mile
          itself, with its loss wrapped to stamp each update's start; the first `--warmup`
          updates of every run are left out; each encoder at 1 and 2 torch threads, side by
          side in this process, `--repeats` rounds; median and p90.
  fit     held-out BC-style MSE of the policy's mean action against the expert's, on
          expert-driven episodes of other seeds, after a fixed budget (`--fit-pretrain` BC
          updates on a_r, then `--fit-updates` MILE updates, 2 threads); the MSE of the zero
          action beside it.
Records the load average, torch version and CPUs; prints a table against the target of 100 ms
per update at 64 px / batch 256 on 2 cores. Writes bench/results/image.json.

    python bench/bench_image.py [--updates 20] [--warmup 3] [--repeats 2] [--fit-updates 200]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "test"))
os.environ.setdefault("MUJOCO_GL", "egl")

from mile_ros.learning import MileConfig, mile_training, train_mile  # noqa: E402
from mile_ros.learning import observations as obs  # noqa: E402
from support.train_helpers import simulate_episode  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "image.json"
ENCODERS = ("patch", "conv3")
TARGET_MS = 100.0


def image_episodes(seeds, size: int, robot_noise: float = 0.45):
    """Simulate episodes -> (arrays of end-effector position and frame, obs spec, action spec)."""
    out = []
    for s in seeds:
        ep = simulate_episode(s, max_ticks=150, robot_noise=robot_noise, threshold=0.8,
                              image_size=size)
        cols = [ep["state_names"].index(n) for n in obs.IMAGE_STATE_NAMES]
        out.append({"state": ep["state"][:, cols], "a_r": ep["a_r"], "a_h": ep["a_h"],
                    "nu": ep["nu"], "image": ep["image"]})
    names = ep["state_names"]
    return out, obs.obs_spec(names, size), obs.action_spec(ep["action_names"])


def fixed_budget(encoder: str, updates: int, pretrain: int = 0, batch: int = 256) -> MileConfig:
    return MileConfig(seed=0, holdout=0.0, min_updates=updates, max_updates=updates,
                      epochs=1e9, pretrain_updates=pretrain, batch_size=batch,
                      image_encoder=encoder)


def update_times_ms(data, encoder: str, updates: int, warmup: int, batch: int) -> list[float]:
    """Train_mile for warmup + updates (+1) updates; ms of each update after the warm-up."""
    stamps, make_loss = [], mile_training._mile_loss

    def timed_loss(*args, **kw):
        loss_fn = make_loss(*args, **kw)

        def stamped(idx, **kw2):
            stamps.append(time.perf_counter())
            return loss_fn(idx, **kw2)
        return stamped
    mile_training._mile_loss = timed_loss
    try:
        train_mile(data[0], data[1], data[2], fixed_budget(encoder, warmup + updates + 1,
                                                           batch=batch), progress=False)
    finally:
        mile_training._mile_loss = make_loss
    return (1e3 * np.diff(stamps)[warmup:]).tolist()


def held_out_mse(model, episodes: list[dict]) -> tuple[float, float]:
    """(MSE of the policy's mean action, MSE of the zero action) against the expert's."""
    pred, target = [], []
    for e in episodes:
        pred.append(model.act({"state": e["state"], "image": e["image"]}))
        target.append(e["a_r"])        # robot_noise 0: a_r is the expert's action
    pred, target = np.concatenate(pred), np.concatenate(target)
    return float(np.mean((pred - target) ** 2)), float(np.mean(target ** 2))


def timing_rows(args, data) -> list[dict]:
    times = {(e, t): [] for t in (1, 2) for e in ENCODERS}
    for _ in range(args.repeats):
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for enc in ENCODERS:
                times[enc, threads] += update_times_ms(data, enc, args.updates, args.warmup,
                                                       args.batch)
    return [{"encoder": enc, "threads": t, "updates_timed": len(v),
             "median_ms": float(np.median(v)), "p90_ms": float(np.percentile(v, 90)),
             "min_ms": float(np.min(v))} for (enc, t), v in times.items()]


def fit_rows(args, data, held_out) -> list[dict]:
    torch.set_num_threads(2)
    rows = []
    for enc in ENCODERS:
        t0 = time.perf_counter()
        model, _ = train_mile(data[0], data[1], data[2],
                              fixed_budget(enc, args.fit_updates, args.fit_pretrain, args.batch),
                              progress=False)
        mse, zero = held_out_mse(model, held_out)
        rows.append({"encoder": enc, "fit_s": time.perf_counter() - t0,
                     "held_out_mse": mse, "zero_action_mse": zero})
    return rows


def print_table(res: dict) -> None:
    print(f"\nMILE update at {res['image_size']} px, batch {res['batch']} "
          f"(target <= {TARGET_MS:.0f} ms on 2 cores); cpus {res['cpus']}, "
          f"load {res['load_average_before'][0]:.2f} -> {res['load_average_after'][0]:.2f}")
    print(f"{'encoder':<8} {'threads':>7} {'median ms':>10} {'p90 ms':>8}  target")
    for r in res["update"]:
        ok = "yes" if r["median_ms"] <= TARGET_MS else "no"
        print(f"{r['encoder']:<8} {r['threads']:>7} {r['median_ms']:>10.1f} "
              f"{r['p90_ms']:>8.1f}  {ok}")
    print(f"\nheld-out MSE vs the expert after {res['fit_pretrain']} BC + {res['fit_updates']} "
          f"MILE updates ({res['train_ticks']} training ticks, {res['held_out_ticks']} held out)")
    print(f"{'encoder':<8} {'MSE':>8} {'zero-action MSE':>16} {'fit s':>7}")
    for r in res["fit"]:
        print(f"{r['encoder']:<8} {r['held_out_mse']:>8.4f} {r['zero_action_mse']:>16.4f} "
              f"{r['fit_s']:>7.1f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--updates", type=int, default=20, help="timed updates per run")
    ap.add_argument("--warmup", type=int, default=3, help="updates left out of each run")
    ap.add_argument("--repeats", type=int, default=2, help="rounds over encoders x threads")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--size", type=int, default=64, help="frame size, px")
    ap.add_argument("--episodes", type=int, default=8, help="training episodes (150 ticks)")
    ap.add_argument("--held-out", type=int, default=4, help="held-out expert episodes")
    ap.add_argument("--fit-updates", type=int, default=200)
    ap.add_argument("--fit-pretrain", type=int, default=100)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    train, obs_spec, act_spec = image_episodes(range(args.episodes), args.size)
    held_out, _, _ = image_episodes(range(1000, 1000 + args.held_out), args.size, 0.0)
    data = (train, obs_spec, act_spec)
    res = {"image_size": args.size, "batch": args.batch, "updates": args.updates,
           "warmup": args.warmup, "repeats": args.repeats, "fit_updates": args.fit_updates,
           "fit_pretrain": args.fit_pretrain, "observation": list(obs_spec.state_names)
           + ["image"], "train_ticks": int(sum(len(e["nu"]) for e in train)),
           "held_out_ticks": int(sum(len(e["nu"]) for e in held_out)),
           "update": timing_rows(args, data), "fit": fit_rows(args, data, held_out),
           "target_ms": TARGET_MS, "load_average_before": list(load_before),
           "load_average_after": list(os.getloadavg()), "torch": torch.__version__,
           "cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
           "machine": platform.platform(), "python": platform.python_version()}
    print_table(res)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
