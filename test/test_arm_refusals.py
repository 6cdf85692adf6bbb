"""The real arm's refused commands reach every episode bag, whoever ends the episode (real DDS).

The arm node runs the Interbotix backend over the upstream stand-in of test_interbotix_backend (a
joint step too fast for one tick is refused, as upstream's `set_joint_positions` and the backend's
own checks decide); a peer plays the policy and the arbiter (a_r, flags, command, and the
arbiter's episode start and end events, stamped with a tick as the arbiter stamps them); the
recorder runs in its own process. The bag is read back with rosbags only.
"""
import json
import signal
import threading
import time

import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from test_interbotix_backend import Driver, World, arm_params  # noqa: E402
from test_recorder_node import read_bag_directly, start_recorder  # noqa: E402

from mile_ros import interfaces as itf  # noqa: E402
from mile_ros import params  # noqa: E402
from mile_ros.arms import InterbotixArm  # noqa: E402
from mile_ros.nodes.arm import ArmNode  # noqa: E402
from support.ros_graph import spin_until_shutdown  # noqa: E402

ACTION = ["dx", "dy", "dz", "gripper"]
TOO_FAST = [1.0, 1.0, 0.0, 0.0]      # 0.3 m across in one tick: the joints would jump, refused


def wait_until(pred, timeout=20.0, what="condition"):
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def command_for(k: int) -> list[float]:
    """Tick k of the episode: every third one too fast, the others 3 cm to and fro."""
    return TOO_FAST if k % 3 == 2 else [0.1 if k % 2 else -0.1, 0.0, 0.0, 0.0]


class ArbiterPeer:
    """Plays the policy server and the arbiter with `episode_buttons`: one episode of `ticks`."""

    def __init__(self, ns: str, ticks: int):
        self.ctx = rclpy.Context()
        self.ctx.init(args=[])             # not rclpy.init: the stand-in patches that one
        self.node = n = Node("arbiter", namespace=ns, context=self.ctx)
        self.pubs = {t: n.create_publisher(JointState, t, 100) for t in (
            itf.ACTION_ROBOT, itf.INTERVENTION, itf.COMMAND, itf.ACTION_HUMAN)}
        self.pub_episode = n.create_publisher(String, itf.EPISODE, itf.episode_qos())
        self.ticks, self.begin, self.k = ticks, threading.Event(), None
        self.sent, self.refused, self.status, self.events = {}, {}, [], []
        n.create_subscription(JointState, itf.OBSERVATION, self._on_obs, 100)
        n.create_subscription(JointState, itf.ARM_REFUSED, lambda m: self.refused.__setitem__(
            itf.stamp_to_ns(m.header.stamp), m.position[0]), 100)
        n.create_subscription(String, itf.RECORDER_STATUS, lambda m: self.status.append(
            json.loads(m.data)), 10)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(n)
        self.thread = spin_until_shutdown(self.executor, self.ctx)

    def _event(self, event, stamp, **fields):
        text = itf.episode_event(event, 0, stamp, iteration=1, source="arbiter", **fields)
        self.events.append(json.loads(text))
        self.pub_episode.publish(String(data=text))

    def _on_obs(self, msg):
        """As the arbiter: the start event stamped with the tick it starts at, the end after."""
        stamp = itf.stamp_to_ns(msg.header.stamp)
        if self.k is None and self.begin.is_set():
            self.k = 0
            self._event("start", stamp)
        running = self.k is not None and self.k < self.ticks
        command = command_for(self.k) if running else [0.0] * 4
        self.pubs[itf.ACTION_ROBOT].publish(itf.vector_msg(ACTION, command, stamp))
        self.pubs[itf.INTERVENTION].publish(itf.vector_msg(itf.FLAG_NAMES,
                                                           [0.0, float(not running), 0.0], stamp))
        self.pubs[itf.COMMAND].publish(itf.vector_msg(ACTION, command, stamp))
        if running:
            self.sent[stamp] = command
            self.k += 1
            if self.k == self.ticks:   # the last tick's command, then the end (emit's order)
                self._event("end", stamp, success=True, reason="button")

    def matched(self, arm: ArmNode) -> bool:
        """Whether every publisher (the arm's and ours) has matched the recorder's reader."""
        pubs = [(arm.obs_pub, 2), (arm.refused_pub, 2), (arm.pose_pub, 1),
                (self.pubs[itf.ACTION_ROBOT], 1), (self.pubs[itf.INTERVENTION], 1),
                (self.pubs[itf.COMMAND], 2), (self.pub_episode, 2)]   # 2: the arm reads it too
        return all(pub.get_subscription_count() >= n for pub, n in pubs)

    def close(self):
        self.ctx.try_shutdown()
        self.thread.join(timeout=5)


def test_an_arbiter_decided_episode_bag_holds_the_arm_refusals(tmp_path, monkeypatch):
    ns = "/refusal_bag_test"
    World(monkeypatch, Driver(ns=ns))            # the upstream Interbotix API, stood in
    values = params.resolve("arm", [], {**arm_params(max_ee_step_m=0.3),
                                        "control_rate_hz": 10.0})    # time to spare per tick
    pfile = params.ros_params_file({"arm": values}, tmp_path / "arm.yaml")
    context = rclpy.Context()
    context.init(args=["arm", "--ros-args", "-r", f"__ns:={ns}", "--params-file", str(pfile)])
    backends = []
    node = ArmNode(context, backend_factory=lambda p, robot: backends.append(
        InterbotixArm(p, robot)) or backends[-1])
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    runner = threading.Thread(target=node.run, args=(executor,), daemon=True)
    peer = ArbiterPeer(ns, ticks=24)
    out = tmp_path / "runs"
    rec = start_recorder(out, ns, tmp_path / "recorder.log", "record_images:=false")
    try:
        runner.start()
        wait_until(lambda: peer.matched(node), 60, "the recorder's subscriptions")
        time.sleep(0.5)
        peer.begin.set()
        wait_until(lambda: any(s["event"] == "episode_recorded" for s in peer.status), 30,
                   "the episode recorded")
        rec.send_signal(signal.SIGINT)
        assert rec.wait(20) == 0
    finally:
        if rec.poll() is None:
            rec.kill()
        node.close()
        runner.join(timeout=5)
        node.destroy_node()
        context.try_shutdown()
        peer.close()
    (bag,) = sorted((out / "iter1").glob("episode_0000_*"))
    topics, custom = read_bag_directly(bag)
    meta = {k: json.loads(v) for k, v in custom.items()}
    ticks = sorted(peer.sent)
    assert [s for s, _ in topics[itf.OBSERVATION]] == ticks            # the episode's 24 ticks
    flags = {s: m.position[0] for s, m in topics[itf.ARM_REFUSED]}
    assert sorted(flags) == ticks                         # one flag per tick, the last one too
    assert all(list(m.name) == list(itf.REFUSED_NAMES) for _, m in topics[itf.ARM_REFUSED])
    assert flags == {s: peer.refused[s] for s in ticks}   # as the arm published them
    refused = [s for s in ticks if flags[s] == 1.0]
    assert meta["ik_refusals"] == len(refused) > 0
    assert all(peer.sent[s] == TOO_FAST for s in refused)   # only the unreachable ones
    assert backends[0].ik_refusals >= len(refused)
    assert "ik_refusals" not in meta["end_event"]           # the arbiter does not know them
    assert meta["end_reason"] == "button" and meta["ticks"] == 24
