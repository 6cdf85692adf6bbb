"""Trainer benchmarks -> bench/results/train.json.

1. Training time per iteration at the demo's data sizes (mile-ros demo defaults: K episodes per
   iteration, all data so far, warm start from the last checkpoint), through the trainer's own
   path (bags on disk -> observations -> MILE -> checkpoint): the state policy, and image policies
   (camera frames + end-effector position) at 64 and 96 px.
2. Checkpoint written -> active, through real ROS: a policy server process runs checkpoint A;
   this process writes checkpoint B, sends it with a new CheckpointSender (as a `train` process
   does: DDS discovery included) and, once the server says "pending", publishes an episode
   start; measured: written -> pending (serialise, discovery, transfer, unpack, validate),
   published -> pending, episode start -> active, and the control ticks (20 Hz observations)
   that got no a_r while the checkpoint was being loaded.

    python bench/bench_train.py [--quick] [--skip-image] [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "test"))
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

from mile_ros.policy import delivery  # noqa: E402
from mile_ros.tools import (
    demo,  # noqa: E402
    train,  # noqa: E402
)
from support.train_helpers import simulate_episode, write_external_bag  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "train.json"


def demo_episodes(n: int, seed: int, image_size: int | None, max_ticks: int) -> list[dict]:
    """Episodes shaped like the demo's: up to `max_ticks` ticks, ~25% interventions."""
    return [simulate_episode(seed + i, max_ticks=max_ticks, robot_noise=0.45, threshold=0.8,
                             image_size=image_size) for i in range(n)]


def time_training(run: Path, episodes: list[dict], iterations: int, per_iter: int, image: bool,
                  image_size: int | None, label: str, settings: dict,
                  epochs_scale: float = 1.0, timed: list[int] | None = None) -> list[dict]:
    """Train as the demo does after each iteration.

    All bags so far, warm start from the last checkpoint; `timed`: only these iterations (their
    bags still accumulate).
    """
    rows = []
    for it in range(1, iterations + 1):
        for j, ep in enumerate(episodes[(it - 1) * per_iter: it * per_iter]):
            write_external_bag(run / f"iter{it}" / f"ep{j}", ep, episode_index=j, storage="mcap",
                               t0_ns=(1_700_000_000 + 1000 * it + 10 * j) * 10**9)
        if timed is not None and it not in timed:
            continue
        t0 = time.perf_counter()
        res = train.run_training([run / f"iter{it}"], run / f"ckpt_{label}", init="latest",
                                 image=image, image_size=image_size, seed=it,
                                 epochs_scale=epochs_scale, settings=settings, progress=False,
                                 say=lambda m: None)
        wall = time.perf_counter() - t0
        m, t = res.metrics, res.metrics["timings_s"]
        row = {"iteration": it, "episodes": m["data"]["episodes"], "ticks": m["data"]["ticks"],
               "updates": m["updates_total"], "ms_per_update": m["ms_per_update"],
               "load_s": t["load"], "train_s": t["train"], "save_s": t["save"], "total_s": wall}
        if epochs_scale != 1.0:   # what the unscaled budget would take at this rate
            full = train.scaled_config(type(train_config()), it, 1.0, None, settings)
            n = m["data"]["ticks"]
            budget = int(np.clip(np.ceil(full.epochs * n * (1 - full.holdout) / full.batch_size),
                                 full.min_updates, full.max_updates))
            refit = budget / max(1e-9, 1 - full.holdout) if full.holdout else 0
            row["full_budget_updates_max"] = int(budget + refit)
            row["full_budget_train_s_projected_max"] = (budget + refit) * m["ms_per_update"] / 1e3
        rows.append(row)
        extra = (f"  (full budget <= {row['full_budget_updates_max']} updates: "
                 f"<= {row['full_budget_train_s_projected_max'] / 60:.0f} min)"
                 if "full_budget_updates_max" in row else "")
        print(f"  {label:>9} iter {it}: {row['ticks']:5d} ticks  {row['updates']:5} updates "
              f"{row['ms_per_update']:7.1f} ms/update  train {row['train_s']:6.1f} s  "
              f"load {row['load_s']:5.1f} s{extra}", flush=True)
    return rows


def train_config():
    from mile_ros.learning import MileConfig

    return MileConfig()


# --- checkpoint written -> active ---------------------------------------------------------------
class Arm:
    """Publishes observations at 20 Hz and episode events; counts a_r answers per observation."""

    def __init__(self, ns: str, names: list[str]):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import JointState
        from std_msgs.msg import String

        from mile_ros import interfaces as itf

        self.itf, self.String, self.names = itf, String, names
        self.ctx = rclpy.Context()
        rclpy.init(args=[], context=self.ctx)
        self.node = Node("bench_arm", namespace=f"/{ns}", context=self.ctx)
        latched = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.obs_pub = self.node.create_publisher(JointState, itf.OBSERVATION, 10)
        self.ep_pub = self.node.create_publisher(String, itf.EPISODE, latched)
        self.answered: set[int] = set()
        self.sent: list[int] = []
        self.active: list[tuple[float, dict]] = []
        self.node.create_subscription(JointState, itf.ACTION_ROBOT, lambda m: self.answered.add(
            itf.stamp_to_ns(m.header.stamp)), 50)
        self.node.create_subscription(String, itf.POLICY_ACTIVE, lambda m: self.active.append(
            (time.monotonic(), json.loads(m.data))), latched)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
        self.stop = threading.Event()
        self.ticking = threading.Event()
        self.threads = [threading.Thread(target=self._spin, daemon=True),
                        threading.Thread(target=self._tick, daemon=True)]
        for t in self.threads:
            t.start()
        self.stamp = 1_000_000_000
        self.episode = 0

    def _spin(self):
        while not self.stop.is_set():
            self.ex.spin_once(timeout_sec=0.02)

    def _tick(self):
        rng = np.random.default_rng(0)
        while not self.stop.is_set():
            if self.ticking.is_set():
                self.stamp += 50_000_000
                self.sent.append(self.stamp)
                self.obs_pub.publish(self.itf.vector_msg(
                    self.names, 0.2 + 0.01 * rng.standard_normal(len(self.names)), self.stamp))
            time.sleep(0.05)

    def start_episode(self):
        self.ep_pub.publish(self.String(data=self.itf.episode_event(
            "start", self.episode, self.stamp + 1)))
        self.episode += 1

    def wait_active(self, policy_id: str, since: float, timeout: float = 30.0) -> float | None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for when, a in self.active:
                if when >= since and a.get("id") == policy_id and a.get("state") == "active":
                    return when
            time.sleep(0.002)
        return None

    def close(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=2)
        self.ctx.try_shutdown()


def bench_swap(tmp: Path, repeats: int) -> dict:
    from mile_ros.learning.checkpoint import checkpoint_to_bytes, load_checkpoint, save_checkpoint

    ns = f"bench_swap_{os.getpid()}"
    ep = simulate_episode(1, max_ticks=60)
    write_external_bag(tmp / "swap" / "iter1" / "ep0", ep)
    res = train.run_training([tmp / "swap" / "iter1"], tmp / "swap" / "ckpt", init="none",
                             epochs_scale=0.1, progress=False, say=lambda m: None)
    model = load_checkpoint(res.checkpoint)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    server = subprocess.Popen(
        [sys.executable, "-m", "mile_ros.nodes.policy_server", "--ros-args", "-r", f"__ns:=/{ns}",
         "-p", f"checkpoint:={res.checkpoint}", "-p", f"receive_dir:={tmp / 'received'}"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    arm = Arm(ns, ep["state_names"])
    samples = []
    try:
        if arm.wait_active(res.checkpoint_id, 0.0, 60) is None:
            raise RuntimeError("the policy server did not start")
        arm.ticking.set()
        time.sleep(1.0)
        for r in range(repeats):
            with torch.no_grad():                       # a new checkpoint: perturbed weights
                for p in model.policy.parameters():
                    p.add_(1e-3 * torch.randn_like(p))
            t_written0 = time.monotonic()
            path = tmp / "swap" / "ckpt" / f"bench-{r}"
            ckpt_id = save_checkpoint(model, path)
            t_written = time.monotonic()
            first_tick = len(arm.sent)
            data = checkpoint_to_bytes(path)
            t_bytes = time.monotonic()
            fresh = delivery.CheckpointSender(ns)      # as a `train` process: discovery included
            try:
                answer = fresh.send(data, ckpt_id, 30.0)
            finally:
                fresh.close()
            t_pending = time.monotonic()
            time.sleep(0.2)
            ticks = arm.sent[first_tick:]
            t_start = time.monotonic()
            arm.start_episode()
            t_active = arm.wait_active(ckpt_id, t_start)
            time.sleep(0.3)
            missed = [s for s in ticks[:-2] if s not in arm.answered]
            samples.append({
                "bytes": len(data), "save_s": t_written - t_written0,
                "written_to_pending_s": t_pending - t_written, "serialise_s": t_bytes - t_written,
                "answer": answer.state, "server_answer_s": answer.seconds,
                "episode_start_to_active_s": None if t_active is None else t_active - t_start,
                "written_to_active_if_boundary_at_once_s": None if t_active is None else
                (t_pending - t_written) + (t_active - t_start),
                "ticks_during_loading": len(ticks), "ticks_without_a_r": len(missed)})
            s = samples[-1]
            print(f"  swap {r}: {s['bytes'] / 1e6:.2f} MB written->pending "
                  f"{s['written_to_pending_s'] * 1e3:.0f} ms, start->active "
                  f"{(s['episode_start_to_active_s'] or float('nan')) * 1e3:.1f} ms, "
                  f"ticks without a_r {s['ticks_without_a_r']}/{s['ticks_during_loading']}",
                  flush=True)
    finally:
        arm.close()
        server.send_signal(2)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()

    def stats(key):
        v = np.array([s[key] for s in samples if s[key] is not None], dtype=float)
        return {"median": float(np.median(v)), "min": float(v.min()), "max": float(v.max())} \
            if len(v) else None
    return {"repeats": repeats, "samples": samples,
            "written_to_pending_s": stats("written_to_pending_s"),
            "published_to_pending_s": stats("server_answer_s"),
            "episode_start_to_active_s": stats("episode_start_to_active_s"),
            "written_to_active_if_boundary_at_once_s":
                stats("written_to_active_if_boundary_at_once_s"),
            "ticks_without_a_r_while_loading": int(sum(s["ticks_without_a_r"] for s in samples)),
            "ticks_while_loading": int(sum(s["ticks_during_loading"] for s in samples))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 iterations x 2 episodes (smoke test)")
    ap.add_argument("--parts", default="state,image,swap",
                    help="comma-separated subset of state,image,swap; others are kept from an "
                         "existing results file")
    ap.add_argument("--repeats", type=int, default=5, help="checkpoint swaps to time")
    ap.add_argument("--image-scale", type=float, default=0.02,
                    help="image policies: fraction of the default update budget actually run "
                         "(the full budget is projected from the measured time per update)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    os.environ.setdefault("ROS_DOMAIN_ID", str(40 + os.getpid() % 50))
    iterations, per_iter, max_ticks = ((2, 2, 100) if args.quick else
                                       (demo.DEFAULT_ITERATIONS, demo.DEFAULT_EPISODES, 300))
    result = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "python": platform.python_version(), "torch": torch.__version__},
              "settings": {"iterations": iterations, "episodes_per_iteration": per_iter,
                           "max_ticks_per_episode": max_ticks, "quick": args.quick}}
    parts = set(args.parts.split(","))
    if parts - {"state", "image", "swap"}:
        ap.error(f"--parts: unknown {sorted(parts - {'state', 'image', 'swap'})}")
    if parts != {"state", "image", "swap"} and Path(args.out).is_file():
        result = {**json.loads(Path(args.out).read_text()), **result}
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        tmp = Path(tmp)
        n = iterations * per_iter
        if "state" in parts:
            print(f"simulating {n} episodes (up to {max_ticks} ticks) ...", flush=True)
            episodes = demo_episodes(n, 100, None, max_ticks)
            print("training time per iteration, state policy (4 stacked states):", flush=True)
            result["demo_training_settings"] = demo.TRAINING
            result["state"] = time_training(tmp / "state", episodes, iterations, per_iter, False,
                                            None, "state", demo.TRAINING)
        if "image" in parts:
            print("rendering camera frames (96 px) ...", flush=True)
            frames = demo_episodes(n, 100, 96, max_ticks)
            for size in (64, 96):
                print(f"training time per iteration, image policy ({size} px + EE position):",
                      flush=True)
                result[f"image_{size}px"] = time_training(
                    tmp / f"img{size}", frames, iterations, per_iter, True, size,
                    f"image{size}", {}, epochs_scale=args.image_scale,
                    timed=[1, iterations])
        if "swap" in parts:
            print("checkpoint written -> active through ROS:", flush=True)
            result["swap"] = bench_swap(tmp, args.repeats)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    s = result["swap"]
    print(f"written -> pending: median {s['written_to_pending_s']['median'] * 1e3:.0f} ms "
          f"(published -> pending {s['published_to_pending_s']['median'] * 1e3:.0f} ms); "
          f"episode start -> active: median {s['episode_start_to_active_s']['median'] * 1e3:.1f} "
          f"ms; ticks without a_r while loading: {s['ticks_without_a_r_while_loading']}/"
          f"{s['ticks_while_loading']}; results -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
