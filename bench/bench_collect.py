"""The whole simulated collection graph through `mile-ros collect` (six processes, real DDS).

  lockstep   --realtime-factor 0: control ticks per second when each tick starts as soon as the
             previous one's command arrives (arm -> policy_server -> arbiter -> arm, with the
             simulated person's Joy in every tick), from the recorder's achieved rate per episode
             and from ticks / wall time; once per policy_server `executor` named in
             `--executors` (same episodes and seeds, one after the other), with the hold ticks
  realtime   --realtime-factor 1 at 20 Hz: tick period jitter |dt - 50 ms| from the observation
             stamps in the bags, ticks that held (no command in time / a_r stale), and a_r latency
             is not visible here (see bench_latency.py)

Bags are read with `rosbags` directly. Prints the figures and writes bench/results/collect.json.

    python bench/bench_collect.py [--lockstep-episodes 3] [--episode-s 5] [--realtime-s 20]
                                  [--executors single,events]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from rosbags.rosbag2 import Reader  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)


def run_collect(out: Path, episodes: int, episode_s: float, realtime_factor: float,
                executor: str = "auto") -> float:
    cfg = out.parent / f"{out.name}.yaml"
    cfg.write_text(yaml.safe_dump({"arm": {"ros__parameters": {"episode_timeout_s": episode_s}},
                                   "policy_server": {"ros__parameters": {"executor": executor}}}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(101, 200)))
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("MUJOCO_GL", "egl")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "mile_ros.cli", "collect", "--sim",
                           "--episodes", str(episodes), "--out", str(out / "iter1"),
                           "--params", str(cfg), "--realtime-factor", str(realtime_factor),
                           "--no-progress"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"mile-ros collect failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.monotonic() - t0


def read(bag: Path) -> tuple[dict, dict]:
    info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    meta = {k: json.loads(v) for k, v in info["custom_data"].items()}
    stamps: dict[str, list] = {}
    with Reader(bag) as reader:
        for conn, _t, raw in reader.messages():
            if conn.msgtype != "sensor_msgs/msg/JointState":
                continue
            msg = TYPESTORE.deserialize_cdr(raw, conn.msgtype)
            stamps.setdefault(conn.topic.rsplit("/", 1)[-1], []).append(
                (msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec, list(msg.position)))
    return meta, stamps


def lockstep(out: Path, args, executor: str) -> dict:
    """Collect `--lockstep-episodes` in lockstep with the policy server on `executor`."""
    t0 = time.monotonic()
    wall = run_collect(out, args.lockstep_episodes, args.episode_s, 0.0, executor)
    bags = sorted((out / "iter1").glob("episode_*"))
    rates, ticks, nus, holds = [], 0, [], 0
    for bag in bags:
        meta, stamps = read(bag)
        rates.append(meta["achieved_rate_hz"])
        ticks += meta["ticks"]
        holds += meta["hold_ticks"]
        nus += [p[0] for _, p in stamps.get("intervention", [])]
    print(f"lockstep, policy_server executor {executor}: {ticks} ticks in {wall:.1f} s "
          f"({time.monotonic() - t0:.1f} s with reading)", file=sys.stderr)
    return {"episodes": len(bags), "ticks": ticks, "hold_ticks": holds,
            "ticks_per_s_per_episode": rates, "ticks_per_s_mean": float(np.mean(rates)),
            "speedup_vs_20hz": float(np.mean(rates) / 20),
            "ticks_per_wall_s": round(ticks / wall, 2),
            "intervention_rate": float(np.mean(nus)) if nus else None,
            "wall_s_incl_startup": round(wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lockstep-episodes", type=int, default=3)
    ap.add_argument("--episode-s", type=float, default=5.0, help="simulated seconds per episode")
    ap.add_argument("--realtime-s", type=float, default=20.0)
    ap.add_argument("--executors", default="single,events",
                    help="policy_server executors to run the lockstep part on, in turn")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "collect.json"))
    args = ap.parse_args()
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_avg_1m_at_start": os.getloadavg()[0]}}
    with tempfile.TemporaryDirectory() as tmp:
        result["lockstep"] = {ex: lockstep(Path(tmp) / f"lockstep_{ex}", args, ex)
                              for ex in args.executors.split(",")}
        rates = {ex: r["ticks_per_wall_s"] for ex, r in result["lockstep"].items()}
        if {"single", "events"} <= rates.keys():
            result["lockstep_events_vs_single"] = round(rates["events"] / rates["single"], 2)

        out = Path(tmp) / "realtime"
        run_collect(out, 1, args.realtime_s, 1.0)
        (bag,) = sorted((out / "iter1").glob("episode_*"))
        meta, stamps = read(bag)
        t = np.array([s for s, _ in stamps["observation"]], dtype=np.float64) * 1e-9
        jitter_ms = np.abs(np.diff(t) - 0.05) * 1e3
        flags = np.array([p for _, p in stamps["intervention"]])
        result["realtime"] = {
            "ticks": int(meta["ticks"]), "achieved_rate_hz": meta["achieved_rate_hz"],
            "tick_jitter_ms_p50": float(np.percentile(jitter_ms, 50)),
            "tick_jitter_ms_p99": float(np.percentile(jitter_ms, 99)),
            "tick_jitter_ms_max": float(jitter_ms.max()),
            "hold_ticks": int(flags[:, 1].sum()), "a_r_count": len(stamps["action_robot"]),
            "observations": len(t)}
    print(json.dumps(result, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
