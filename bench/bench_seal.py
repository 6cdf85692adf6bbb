"""How soon the recorder seals an episode's bag after its end event, over real DDS.

The recorder node runs in its own process; this process plays `--episodes` episodes of `--ticks`
control ticks at 20 Hz (observation, action_robot, intervention, command, ee_pose, joint_states
each tick, action_human on nu=1 ticks, and the arm's refusal flags when the graph has that topic),
each ended by an end event stamped with its last tick (as the arm and the arbiter stamp it),
published right after that tick's command. The seal latency of an episode is the time from its
end event's arrival to the arrival of the recorder's `episode_recorded` status (both seen by this
process through DDS): an upper bound of the time the recorder took to seal the bag (metadata
written, files and directories fsynced).

    python bench/bench_seal.py [--episodes 12] [--ticks 20] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 100)))

NS = "/bench_seal"
PERIOD = 0.05
STATE = ["s0", "s1", "s2"]
ACTION = ["dx", "dy", "dz", "gripper"]


class Feeder:
    """Plays the arm, the policy and the arbiter; keeps the arrival times of events and status."""

    def __init__(self):
        import rclpy
        from geometry_msgs.msg import PoseStamped
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from sensor_msgs.msg import JointState
        from std_msgs.msg import String

        from mile_ros import interfaces as itf

        self.itf, self.String, self.PoseStamped = itf, String, PoseStamped
        rclpy.init()
        self.node = n = Node("seal_feeder", namespace=NS)
        self.pubs = {t: n.create_publisher(String if t == itf.EPISODE else PoseStamped
                                           if t == itf.EE_POSE else JointState, t,
                                           itf.episode_qos() if t == itf.EPISODE else 100)
                     for t in itf.STEP_TOPICS}
        self.ends, self.sealed = {}, {}
        n.create_subscription(String, itf.EPISODE, self._on_episode, itf.episode_qos())
        n.create_subscription(String, itf.RECORDER_STATUS, self._on_status, 50)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(n)
        threading.Thread(target=self.executor.spin, daemon=True).start()

    def _on_episode(self, msg) -> None:
        event = json.loads(msg.data)
        if event["event"] == "end":
            self.ends.setdefault(event["episode"], time.monotonic())

    def _on_status(self, msg) -> None:
        event = json.loads(msg.data)
        if event["event"] == "episode_recorded":
            self.sealed.setdefault(event["episode"], time.monotonic())

    def wait_for_recorder(self, timeout: float = 60.0) -> None:
        give_up = time.monotonic() + timeout
        while not all(p.get_subscription_count() > 0 for p in self.pubs.values()):
            if time.monotonic() > give_up:
                raise SystemExit("bench_seal: no recorder subscribed within 60 s")
            time.sleep(0.05)
        time.sleep(1.0)

    def play(self, episode: int, ticks: int) -> None:
        itf, pubs, clock = self.itf, self.pubs, self.node.get_clock()
        refused = getattr(itf, "ARM_REFUSED", None)
        first = clock.now().nanoseconds
        pubs[itf.EPISODE].publish(self.String(data=itf.episode_event(
            "start", episode, first, iteration=1, control_rate_hz=1 / PERIOD)))
        stamp, nxt = first, time.monotonic()
        for k in range(ticks):
            stamp = first if k == 0 else clock.now().nanoseconds
            nu = k % 4 == 3
            pose = self.PoseStamped()
            pose.header.stamp = itf.ns_to_stamp(stamp)
            for topic, msg in ((itf.OBSERVATION, itf.vector_msg(STATE, [k, 0, 0], stamp)),
                               (itf.JOINT_STATES, itf.vector_msg(["waist"], [k], stamp)),
                               (itf.EE_POSE, pose),
                               (itf.ACTION_ROBOT, itf.vector_msg(ACTION, [0.1, 0, 0, 1], stamp)),
                               (itf.INTERVENTION, itf.vector_msg(itf.FLAG_NAMES,
                                                                 [float(nu), 0, 0], stamp))):
                pubs[topic].publish(msg)
            if nu:
                pubs[itf.ACTION_HUMAN].publish(itf.vector_msg(ACTION, [-1, 0, 0, 0], stamp))
            pubs[itf.COMMAND].publish(itf.vector_msg(ACTION, [0.1, 0, 0, 1], stamp))
            if refused is not None:
                pubs[refused].publish(itf.vector_msg(["refused"], [float(k % 5 == 2)], stamp))
            nxt += PERIOD
            if k < ticks - 1:
                time.sleep(max(0.0, nxt - time.monotonic()))
        pubs[itf.EPISODE].publish(self.String(data=itf.episode_event(
            "end", episode, stamp, success=True, reason="success")))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n    python")[0])
    ap.add_argument("--episodes", type=int, default=12)
    ap.add_argument("--ticks", type=int, default=20)
    ap.add_argument("--out", help="write the figures (JSON) here")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench_seal_"))
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    rec = subprocess.Popen(
        [sys.executable, "-m", "mile_ros.nodes.recorder", "--ros-args", "-r", f"__ns:={NS}",
         "-p", f"out:={work / 'bags'}", "-p", "record_images:=false"],
        cwd=ROOT, env=env, stdout=open(work / "recorder.log", "w"), stderr=subprocess.STDOUT)
    feeder = Feeder()
    try:
        feeder.wait_for_recorder()
        for ep in range(args.episodes):
            feeder.play(ep, args.ticks)
            give_up = time.monotonic() + 10.0
            while ep not in feeder.sealed and time.monotonic() < give_up:
                time.sleep(0.005)
            time.sleep(0.3)
    finally:
        rec.terminate()
        rec.wait(20)
    lat = [feeder.sealed[e] - feeder.ends[e] for e in sorted(feeder.sealed) if e in feeder.ends]
    figures = {"episodes": args.episodes, "sealed": len(lat),
               "seal_latency_s": [round(x, 4) for x in lat],
               "median_s": round(statistics.median(lat), 4) if lat else None,
               "max_s": round(max(lat), 4) if lat else None,
               "loadavg_1min": round(os.getloadavg()[0], 2)}
    print(json.dumps(figures))
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=1) + "\n")
    return 0 if len(lat) == args.episodes else 1


if __name__ == "__main__":
    sys.exit(main())
