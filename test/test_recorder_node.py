"""The recorder node over real DDS.

A test publisher node plays two short episodes; the bags are read back with `rosbags` directly
(not the package's reader). SIGKILL mid-episode, SIGINT, write failures (disk full) and an
unwritable output directory.
"""
import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

rclpy = pytest.importorskip("rclpy")
from geometry_msgs.msg import PoseStamped  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from rosbags.rosbag2 import Reader  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from mile_ros import bags  # noqa: E402
from mile_ros import interfaces as itf
from mile_ros.interfaces import RECORDER_STATUS as STATUS_TOPIC  # noqa: E402
from mile_ros.nodes.recorder import RecorderNode  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TS = bags.typestore()
STATE = ["q0", "q1", "q2"]
ACTION = ["dx", "dy", "dz", "gripper"]


def wait_until(pred, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def executor():
    rclpy.init()
    ex = SingleThreadedExecutor()
    thread = threading.Thread(target=ex.spin, daemon=True)
    thread.start()
    yield ex
    ex.shutdown()
    rclpy.shutdown()
    thread.join(5)


class TickPublisher:
    """Plays synthetic control ticks into a namespace, as the arm/policy/arbiter would."""

    def __init__(self, executor, namespace, images=True):
        self.node = Node("tick_publisher", namespace=namespace)
        self.pubs = {t: self.node.create_publisher(
            String if ty == "std_msgs/msg/String" else PoseStamped if "Pose" in ty else JointState,
            t, itf.episode_qos() if t == itf.EPISODE else 100)       # as the arm offers it
            for t, ty in itf.STEP_TOPICS.items()}
        if images:
            self.pubs[itf.IMAGE] = self.node.create_publisher(Image, itf.IMAGE, 30)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.active = self.node.create_publisher(String, itf.POLICY_ACTIVE, latched)
        self.status = []
        self.node.create_subscription(String, STATUS_TOPIC,
                                      lambda m: self.status.append(json.loads(m.data)), 10)
        self.executor = executor
        executor.add_node(self.node)
        self.published = []        # (episode, stamp, nu)

    def subscribers(self):
        """{topic: endpoint ids of its subscriptions} (a killed recorder's linger a while)."""
        return {t: {bytes(i.endpoint_gid) for i in
                    self.node.get_subscriptions_info_by_topic(p.topic_name)}
                for t, p in self.pubs.items()}

    def wait_for_recorder(self, before=None, topics=None):
        """Until a recorder not in `before` subscribes to every topic (of `topics`)."""
        before = before or {t: set() for t in self.pubs}
        topics = topics or list(self.pubs)
        wait_until(lambda: all(s - before[t] for t, s in self.subscribers().items()
                               if t in topics), 30, "recorder discovery")
        time.sleep(0.3)

    def events(self, kind):
        return [s for s in self.status if s["event"] == kind]

    def play(self, episode, ticks=15, end=True, success=True, period=0.02):
        clock = self.node.get_clock()
        t0 = clock.now().nanoseconds
        self.pubs[itf.EPISODE].publish(String(data=itf.episode_event(
            "start", episode, t0, iteration=1)))
        stamp = t0
        for k in range(ticks):
            stamp = clock.now().nanoseconds
            nu = (k // 3) % 2 == 1
            self.pubs[itf.OBSERVATION].publish(itf.vector_msg(STATE, [k, episode, 0.5], stamp))
            self.pubs[itf.ACTION_ROBOT].publish(itf.vector_msg(ACTION, [0.1, 0, 0, 1], stamp))
            self.pubs[itf.INTERVENTION].publish(itf.vector_msg(itf.FLAG_NAMES,
                                                               [float(nu), 0, 0], stamp))
            if nu:
                self.pubs[itf.ACTION_HUMAN].publish(itf.vector_msg(ACTION, [-1, 0, 0, 0], stamp))
            self.pubs[itf.COMMAND].publish(itf.vector_msg(ACTION, [0, 0, 0, 0], stamp))
            pose = PoseStamped()
            pose.header.stamp = itf.ns_to_stamp(stamp)
            pose.pose.position.x = float(k)
            self.pubs[itf.EE_POSE].publish(pose)
            self.pubs[itf.JOINT_STATES].publish(itf.vector_msg(["waist"], [k], stamp))
            if itf.IMAGE in self.pubs and k % 2 == 0:
                img = Image(height=24, width=32, encoding="rgb8", step=96,
                            data=bytes([k]) * (24 * 96))
                img.header.stamp = itf.ns_to_stamp(stamp)
                self.pubs[itf.IMAGE].publish(img)
            self.published.append((episode, stamp, nu))
            time.sleep(period)
        if end:
            self.pubs[itf.EPISODE].publish(String(data=itf.episode_event(
                "end", episode, stamp, success=success,
                reason="success" if success else "timeout")))

    def close(self):
        self.executor.remove_node(self.node)
        self.node.destroy_node()


def start_recorder(out, namespace, log_file, *params):
    cmd = [sys.executable, "-m", "mile_ros.nodes.recorder", "--ros-args", "-r",
           f"__ns:={namespace}", "-p", f"out:={out}", "-p", "flush_period_s:=0.2",
           "-p", "reorder_window_s:=0.3"]
    for p in params:
        cmd += ["-p", p]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(log_file, "w"),
                            stderr=subprocess.STDOUT)


def read_bag_directly(path):
    """{relative topic: [(stamp_ns, message)]} and custom metadata, through rosbags only."""
    out = {}
    with Reader(path) as r:
        for c, _, data in r.messages():
            msg = TS.deserialize_cdr(data, c.msgtype)        # strict: no padding left
            rel = c.topic.split("/", 2)[2]
            s = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec \
                if hasattr(msg, "header") else None
            out.setdefault(rel, []).append((s, msg))
    custom = yaml.safe_load((path / "metadata.yaml").read_text())[
        "rosbag2_bagfile_information"]["custom_data"]
    return out, custom


def check_ticks(path, published, images=True):
    topics, custom = read_bag_directly(path)
    stamps = {t: [s for s, _ in topics.get(t, [])] for t in topics}
    sent = [s for _, s, _ in published]
    for topic in ("observation", "action_robot", "intervention", "command", "ee_pose",
                  "joint_states"):
        assert sorted(stamps[topic]) == sent, (path, topic)
    nu = {s: m.position[0] > 0.5 for s, m in topics["intervention"]}
    assert sorted(stamps["action_human"]) == [s for s in sent if nu[s]]
    assert set(nu.values()) == {True, False}
    assert [nu[s] for s in sent] == [n for _, _, n in published]
    if images:
        assert sorted(stamps["camera/image_raw"]) == sent[::2]
    events = [json.loads(m.data)["event"] for _, m in topics["episode"]]
    assert events == ["start", "end"]
    return {k: json.loads(v) for k, v in custom.items()}


def offered_qos(path) -> dict:
    """{topic: its first offered QoS profile} from a bag's metadata.yaml (a YAML string, v8)."""
    info = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    return {t["topic_metadata"]["name"]: yaml.safe_load(
        t["topic_metadata"]["offered_qos_profiles"])[0] for t in info["topics_with_message_count"]}


def test_two_episodes_then_sigkill_then_sigint(executor, tmp_path):
    ns = "/rec_node_test"
    out = tmp_path / "runs"
    pub = TickPublisher(executor, ns)
    rec = start_recorder(out, ns, tmp_path / "rec1.log")
    try:
        pub.wait_for_recorder()
        pub.active.publish(String(data=json.dumps({"id": "ck-A", "state": "active"})))
        pub.play(0, success=True)
        pub.play(1, success=False)
        wait_until(lambda: len(pub.events("episode_recorded")) == 2, 20, "two episodes")
        pub.play(2, end=False)                      # mid-episode ...
        time.sleep(1.0)                             # ... past a flush, then the recorder dies
        rec.send_signal(signal.SIGKILL)
        assert rec.wait(10) == -signal.SIGKILL
    finally:
        if rec.poll() is None:
            rec.kill()
    paths = sorted((out / "iter1").glob("episode_*"))
    assert [p.name[:12] for p in paths] == ["episode_0000", "episode_0001", "episode_0002"]
    for k, path in enumerate(paths[:2]):
        meta = check_ticks(path, [p for p in pub.published if p[0] == k])
        assert meta["episode"] == k and meta["iteration"] == 1 and meta["success"] is (k == 0)
        assert meta["end_reason"] == ("success" if k == 0 else "timeout")
        assert meta["ticks"] == 15 and meta["intervention_count"] == 6
        assert meta["policy_checkpoint_id"] == "ck-A" and meta["robot_name"] == "rec_node_test"
        assert meta["state_names"] == STATE and meta["action_names"] == ACTION
        assert meta["control_rate_hz"] == 20.0 and meta["achieved_rate_hz"] > 0
        assert isinstance(meta["low_rate"], bool) and meta["record_errors"] == []
        assert meta["ik_refusals"] is None       # no refusal flags: an arm that counts none
    # each topic recorded with its publisher's QoS: `episode` transient local, as offered
    offered = offered_qos(paths[0])
    assert offered[f"{ns}/{itf.EPISODE}"]["durability"] == int(DurabilityPolicy.TRANSIENT_LOCAL)
    assert offered[f"{ns}/{itf.OBSERVATION}"]["durability"] == int(DurabilityPolicy.VOLATILE)
    assert offered[f"{ns}/{itf.OBSERVATION}"]["reliability"] == int(ReliabilityPolicy.RELIABLE)
    # the killed episode: no metadata.yaml, detected, partly recoverable, skipped by the trainer
    assert not (paths[2] / "metadata.yaml").exists()
    assert bags.bag_state(paths[2]) == "incomplete"
    recovered = bags.read_episode(paths[2])
    assert not recovered.complete and 5 <= len(recovered) <= 15
    eps, report = bags.load_episodes(out / "iter1")
    assert len(eps) == 2 and report["skipped"][0][0] == str(paths[2])
    assert "incomplete" in report["skipped"][0][1]

    # a new recorder names the incomplete bag at start-up; Ctrl-C closes the open episode
    before = pub.subscribers()
    rec = start_recorder(out, ns, tmp_path / "rec2.log", "record_images:=false")
    try:
        pub.wait_for_recorder(before, topics=list(itf.STEP_TOPICS))
        pub.published.clear()
        pub.play(3, ticks=8, end=False)
        wait_until(lambda: len(list((out / "iter1").glob("episode_0003*"))) == 1, 10, "bag 3")
        time.sleep(0.5)
        rec.send_signal(signal.SIGINT)
        assert rec.wait(20) == 0
    finally:
        if rec.poll() is None:
            rec.kill()
    log_text = (tmp_path / "rec2.log").read_text()
    assert "INCOMPLETE" in log_text and paths[2].name in log_text
    bag3 = next((out / "iter1").glob("episode_0003*"))
    topics, custom = read_bag_directly(bag3)
    assert json.loads(custom["end_reason"]) == "shutdown" and json.loads(custom["ticks"]) == 8
    assert "camera/image_raw" not in topics
    pub.close()


def test_write_failure_marks_the_episode_and_keeps_recording(executor, tmp_path, monkeypatch):
    """Disk full during episode 1: failed-to-record, reported; episodes 0 and 2 intact."""
    original = bags.EpisodeBagWriter.write

    def full_disk(self, topic, msg, stamp_ns, **kw):
        if "episode_0001" in self.path.name and self.counts.total() >= 10:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, topic, msg, stamp_ns, **kw)

    monkeypatch.setattr(bags.EpisodeBagWriter, "write", full_disk)
    ns = "/rec_fail_test"
    node = RecorderNode(namespace=ns, parameter_overrides=[
        Parameter("out", value=str(tmp_path / "out")), Parameter("record_images", value=False),
        Parameter("flush_period_s", value=0.2), Parameter("reorder_window_s", value=0.3)])
    executor.add_node(node)
    pub = TickPublisher(executor, ns, images=False)
    try:
        pub.wait_for_recorder()
        for k in range(3):
            pub.play(k)
            wait_until(lambda: len(pub.events("episode_recorded")) +
                       len(pub.events("episode_failed")) == k + 1, 20, f"episode {k}")
        failed = pub.events("record_failed")
        assert len(failed) == 1 and failed[0]["episode"] == 1
        assert "No space left on device" in failed[0]["error"]
        assert [e["episode"] for e in pub.events("episode_recorded")] == [0, 2]
        # the callbacks kept taking every message while the episode failed
        assert node.recorder.received["observation"] == 45
        assert node.recorder.dropped["record_failed"] > 0
    finally:
        node.close()
        executor.remove_node(node)
        node.destroy_node()
        pub.close()
    paths = sorted((tmp_path / "out" / "iter1").glob("episode_*"))
    assert (paths[0] / "metadata.yaml").exists() and (paths[2] / "metadata.yaml").exists()
    assert not (paths[1] / "metadata.yaml").exists()
    for path, k in ((paths[0], 0), (paths[2], 2)):
        check_ticks(path, [p for p in pub.published if p[0] == k], images=False)
    eps, report = bags.load_episodes(tmp_path / "out" / "iter1")
    assert [e.metadata["episode"] for e in eps] == [0, 2] and all(len(e) == 15 for e in eps)
    log_lines = [json.loads(x) for x in
                 (tmp_path / "out" / "iter1" / bags.SIDECAR_LOG).read_text().splitlines()]
    assert [x["event"] for x in log_lines] == ["episode_recorded", "record_failed",
                                               "episode_failed", "episode_recorded",
                                               "recorder_stopped"]
    assert log_lines[-1]["received"]["observation"] == 45
    assert "internal_error" not in log_lines[-1]["dropped"]


def test_unwritable_out_and_bad_parameters_are_clear_startup_errors(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for param, expect in ((f"out:={blocker}/runs", [str(blocker / "runs"), "not writable"]),
                          ("storage:=zip", ["storage", "zip"])):
        r = subprocess.run([sys.executable, "-m", "mile_ros.nodes.recorder", "--ros-args",
                            "-p", param], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 2, r.stderr
        for part in expect:
            assert part in r.stderr
        assert "Traceback" not in r.stderr


def test_ctrl_c_mid_episode_closes_the_bag_and_logs_cleanly(executor, tmp_path):
    """SIGINT stops the spinning first and closes the node while its context is still valid.

    The recorder's last lines (the episode it closes) used to go to a context that Ctrl-C had
    already shut down: "Failed to publish log message to rosout".
    """
    ns, out, log = "/rec_node_sigint", tmp_path / "runs", tmp_path / "rec.log"
    pub = TickPublisher(executor, ns)
    rec = start_recorder(out, ns, log)
    try:
        pub.wait_for_recorder()
        pub.play(0, end=False)                      # an episode open when Ctrl-C comes
        time.sleep(0.5)
        t0 = time.monotonic()
        rec.send_signal(signal.SIGINT)
        assert rec.wait(10) == 0
        took = time.monotonic() - t0
    finally:
        if rec.poll() is None:
            rec.kill()
    text = log.read_text()
    for problem in ("Failed to publish log message", "Traceback", "RCLError",
                    "context is not valid"):
        assert problem not in text, text[-3000:]
    assert "episode 0 recorded" in text and took < 5.0, (took, text[-2000:])
    (bag,) = sorted((out / "iter1").glob("episode_0000_*"))
    assert bags.bag_state(bag) == "complete"
    assert bags.read_episode(bag).metadata["end_reason"] == "shutdown"
