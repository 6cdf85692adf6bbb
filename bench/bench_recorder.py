"""Recorder throughput over real DDS.

The recorder node runs in its own process; a publisher process feeds it, during `--episodes`
episodes spanning `--duration` seconds, with
  30 Hz 640x480 rgb8 images (camera/image_raw), 100 Hz joint_states, and the 20 Hz step topics
  (observation, action_robot, intervention, command, ee_pose; action_human on 25% of ticks),
after a 2 s warm-up outside any episode (DDS discovery settles; not counted).
Counts messages published, received by the recorder and written (recorder's own counters, from
its sidecar log), and counts again what the bags hold with `rosbags` directly. Target: 0 dropped.
Also: bag size and write rate, recorder CPU (of one core) and peak memory, peak writer queue.

    python bench/bench_recorder.py [--duration 64] [--episodes 4] [--storage mcap] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 100)))

NS = "/bench_rec"
TICK_HZ, JOINT_HZ, IMAGE_HZ = 20.0, 100.0, 30.0
W, H = 640, 480
STATE = [f"s{i}" for i in range(12)]
ACTION = ["dx", "dy", "dz", "gripper"]
JOINTS = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate",
          "left_finger", "right_finger"]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- the publisher process --------------------------------------------------------------------
def publisher(args) -> int:
    import numpy as np
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String

    from mile_ros import interfaces as itf

    rclpy.init()
    node = Node("bench_feeder", namespace=NS)
    # Writer history of 4 s: on a loaded machine Fast DDS repairs a lost sample only at its 3 s
    # heartbeat, and a reliable KEEP_LAST writer that has already dropped it sends a gap instead.
    depth = {itf.JOINT_STATES: int(4 * JOINT_HZ), itf.IMAGE: int(4 * IMAGE_HZ)}
    pubs = {t: node.create_publisher(String if t == itf.EPISODE else PoseStamped
                                     if t == itf.EE_POSE else JointState, t,
                                     depth.get(t, int(4 * TICK_HZ)))
            for t in itf.STEP_TOPICS}
    pubs[itf.IMAGE] = node.create_publisher(
        Image, itf.IMAGE, QoSProfile(depth=depth[itf.IMAGE],
                                     reliability=ReliabilityPolicy.RELIABLE))
    t_wait = time.monotonic()
    while not all(p.get_subscription_count() > 0 for p in pubs.values()):
        if time.monotonic() - t_wait > 60:
            print("feeder: no recorder subscribed within 60 s", file=sys.stderr)
            return 1
        time.sleep(0.05)
    time.sleep(2.0)          # let the recorder's side of discovery finish too
    rng = np.random.default_rng(0)
    img = Image(height=H, width=W, encoding="rgb8", step=W * 3,
                data=rng.integers(0, 256, W * H * 3, dtype=np.uint8).tobytes())
    pose = PoseStamped()
    clock = node.get_clock()
    period = {"tick": 1 / TICK_HZ, "joint": 1 / JOINT_HZ, "image": 1 / IMAGE_HZ}

    def stream(seconds: float, counts: Counter) -> None:
        """All topics at their rates for `seconds`, each message stamped when published."""
        t0 = time.monotonic()
        nxt = dict.fromkeys(period, t0)
        k = 0
        while (kind := min(nxt, key=nxt.get)) and nxt[kind] < t0 + seconds:
            if (delay := nxt[kind] - time.monotonic()) > 0:
                time.sleep(delay)
            nxt[kind] += period[kind]
            now = clock.now().nanoseconds
            if kind == "image":
                img.header.stamp = itf.ns_to_stamp(now)
                sent = [(itf.IMAGE, img)]
            elif kind == "joint":
                values = np.sin(np.arange(8) + k)
                values[0] = counts[itf.JOINT_STATES]     # a sequence number, to find losses
                sent = [(itf.JOINT_STATES, itf.vector_msg(JOINTS, values, now))]
            else:
                nu = (k % 8) >= 6
                pose.header.stamp = itf.ns_to_stamp(now)
                sent = [(itf.OBSERVATION, itf.vector_msg(STATE, rng.normal(size=12), now)),
                        (itf.ACTION_ROBOT, itf.vector_msg(ACTION, [0.1, 0, 0, 1], now)),
                        (itf.INTERVENTION, itf.vector_msg(itf.FLAG_NAMES, [float(nu), 0, 0],
                                                          now))]
                sent += [(itf.ACTION_HUMAN, itf.vector_msg(ACTION, [-1, 0, 0, 0], now))] * nu
                sent += [(itf.COMMAND, itf.vector_msg(ACTION, [0, 0, 0, 0], now)),
                         (itf.EE_POSE, pose)]
                k += 1
            for topic, msg in sent:
                pubs[topic].publish(msg)
                counts[topic] += 1

    # warm-up outside any episode: DDS drops a volatile reader's first samples while its own
    # side of discovery is still finishing; the recorder counts these as outside_episode
    warmup: Counter = Counter()
    stream(2.0, warmup)
    time.sleep(0.5)
    counts: Counter = Counter()
    episode_s = args.duration / args.episodes
    t_start = time.monotonic()
    for ep in range(args.episodes):
        pubs[itf.EPISODE].publish(String(data=itf.episode_event(
            "start", ep, clock.now().nanoseconds, iteration=1, control_rate_hz=TICK_HZ)))
        stream(episode_s, counts)
        pubs[itf.EPISODE].publish(String(data=itf.episode_event(      # stamped after the last
            "end", ep, clock.now().nanoseconds, success=True, reason="success")))  # message
        counts[itf.EPISODE] += 2
        time.sleep(0.5)
    feed_s = time.monotonic() - t_start
    time.sleep(1.0)
    Path(args.counts_file).write_text(json.dumps({"published": dict(counts),
                                                  "warmup": dict(warmup), "feed_s": feed_s}))
    node.destroy_node()
    rclpy.shutdown()
    return 0


# --- the driver -------------------------------------------------------------------------------
def count_bags(directory: Path) -> tuple[Counter, int, list]:
    from rosbags.rosbag2 import Reader

    from mile_ros.bags import find_episode_bags

    counts: Counter = Counter()
    size = 0
    meta = []
    for bag in find_episode_bags(directory):
        size += sum(f.stat().st_size for f in bag.iterdir())
        with Reader(bag) as r:
            for c in r.connections:
                counts[c.topic.split("/", 2)[2]] += c.msgcount
        import yaml

        custom = yaml.safe_load((bag / "metadata.yaml").read_text())[
            "rosbag2_bagfile_information"]["custom_data"]
        meta.append({k: json.loads(custom[k]) for k in ("episode", "ticks", "achieved_rate_hz",
                                                         "low_rate", "intervention_count",
                                                         "max_arrival_lag_s")})
    return counts, size, meta


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n    python")[0])
    ap.add_argument("--duration", type=float, default=64.0, help="seconds of feed (>= 60)")
    ap.add_argument("--episodes", type=int, default=4)
    ap.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    ap.add_argument("--keep", help="keep the bags in this directory (default: a temp dir)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "recorder.json"))
    ap.add_argument("--publisher", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--counts-file", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.publisher:
        return publisher(args)

    from tqdm import tqdm

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_recorder_"))
    work.mkdir(parents=True, exist_ok=True)
    out_dir = work / "bags"
    counts_file = work / "published.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    rec = subprocess.Popen(
        [sys.executable, "-m", "mile_ros.nodes.recorder", "--ros-args", "-r", f"__ns:={NS}",
         "-p", f"out:={out_dir}", "-p", f"storage:={args.storage}",
         "-p", "record_images:=true", "-p", f"control_rate_hz:={TICK_HZ}"],
        cwd=ROOT, env=env, stdout=open(work / "recorder.log", "w"), stderr=subprocess.STDOUT)
    feeder = subprocess.Popen(
        [sys.executable, __file__, "--publisher", "--duration", str(args.duration),
         "--episodes", str(args.episodes), "--counts-file", str(counts_file)],
        cwd=ROOT, env=env)
    try:
        # CPU is measured from the first episode on (after start-up and discovery)
        t_cpu0 = cpu0 = None
        total = args.duration + args.episodes * 0.5
        with tqdm(total=round(total), desc="feeding the recorder", unit="s") as bar:
            t_begin = time.monotonic()
            while feeder.poll() is None:
                time.sleep(0.5)
                if cpu0 is None and any(out_dir.glob("iter1/episode_*")):
                    t_cpu0, cpu0 = time.monotonic(), cpu_seconds(rec.pid)
                    t_begin = t_cpu0
                if cpu0 is not None:
                    bar.n = min(round(time.monotonic() - t_begin), bar.total)
                    bar.refresh()
                if rec.poll() is not None:
                    raise RuntimeError(f"recorder exited early; see {work / 'recorder.log'}")
        if feeder.returncode != 0:
            raise RuntimeError("feeder failed")
        t_cpu1, cpu1 = time.monotonic(), cpu_seconds(rec.pid)
        rss = peak_rss_mb(rec.pid)
        rec.send_signal(signal.SIGINT)
        rec.wait(120)
    finally:
        for p in (feeder, rec):
            if p.poll() is None:
                p.kill()
    sent = json.loads(counts_file.read_text())
    published = Counter(sent["published"])
    log_lines = [json.loads(x) for x in (out_dir / "iter1" / "recorder_log.jsonl")
                 .read_text().splitlines()]
    stopped = next(x for x in log_lines if x["event"] == "recorder_stopped")
    warmup = Counter(sent["warmup"])
    received, written = Counter(stopped["received"]), Counter(stopped["written"])
    outside = stopped["dropped"].get("outside_episode", 0)
    dds_lost = sum(published.values()) + sum(warmup.values()) - sum(received.values())
    in_bags, size, episodes = count_bags(out_dir / "iter1")
    topics = sorted(published)
    feed_s = sent["feed_s"]
    results = {
        "benchmark": "recorder throughput (real DDS, recorder node in its own process)",
        "command": "python bench/bench_recorder.py " + " ".join(argv or sys.argv[1:]),
        "storage": args.storage, "feed_s": round(feed_s, 1), "episodes": args.episodes,
        "rates_hz": {"image_640x480_rgb8": IMAGE_HZ, "joint_states": JOINT_HZ,
                     "step_topics": TICK_HZ},
        "published": dict(published), "received_incl_warmup": {t: received[t] for t in topics},
        "written": {t: written[t] for t in topics}, "in_bags": {t: in_bags[t] for t in topics},
        "dropped_total": int(sum(published.values()) - sum(in_bags[t] for t in topics)),
        "dropped_by_dds_incl_warmup": int(dds_lost),
        "dropped_by_recorder": {k: v for k, v in stopped["dropped"].items()
                                if k != "outside_episode"},
        "warmup_published": sum(warmup.values()), "warmup_outside_episode": outside,
        "published_rate_hz": {t: round(published[t] / feed_s, 1) for t in topics},
        "bag_bytes": size, "bag_mb_per_s": round(size / 1e6 / feed_s, 1),
        "recorder_cpu_percent_of_one_core": round(100 * (cpu1 - cpu0) / (t_cpu1 - t_cpu0), 1),
        "recorder_peak_rss_mb": round(rss, 1),
        "peak_writer_queue_mb": round(stopped["peak_queue_bytes"] / 1e6, 1),
        "episodes_recorded": episodes,
        "machine": {"cpus": os.cpu_count(), "loadavg_1min_at_end": os.getloadavg()[0],
                    "python": platform.python_version()},
    }
    print(f"recorder, {feed_s:.0f} s feed, {args.storage}:")
    print(f"  {'topic':<18}{'published':>10}{'+warm-up':>10}{'received':>10}{'written':>10}"
          f"{'in bags':>10}")
    for t in topics:
        print(f"  {t:<18}{published[t]:>10}{warmup[t]:>10}{received[t]:>10}{written[t]:>10}"
              f"{in_bags[t]:>10}")
    print(f"  dropped in episodes: {results['dropped_total']}; lost by DDS (warm-up included): "
          f"{dds_lost}; dropped by the recorder: {results['dropped_by_recorder'] or 0} "
          f"(warm-up, before any episode: {outside} received, not recorded)")
    print(f"  bags: {size / 1e9:.2f} GB, {results['bag_mb_per_s']} MB/s; recorder CPU "
          f"{results['recorder_cpu_percent_of_one_core']}% of one core, peak RSS {rss:.0f} MB, "
          f"peak queue {results['peak_writer_queue_mb']} MB")
    print("  episodes: " + ", ".join(f"{e['episode']}: {e['ticks']} ticks "
                                     f"{e['achieved_rate_hz']:.1f} Hz" for e in episodes))
    lags = {t: max(e["max_arrival_lag_s"].get(t, 0) for e in episodes)
            for t in episodes[0]["max_arrival_lag_s"]}
    results["max_arrival_lag_s"] = lags
    print("  max arrival lag (receive - header stamp): " +
          ", ".join(f"{t} {v * 1e3:.0f} ms" for t, v in lags.items()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
