"""The arm node over real DDS.

Tick protocol, episode events, command checking and holding, start-up gating, and clear
configuration errors. A peer node plays the rest of the graph.
"""
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from geometry_msgs.msg import PoseStamped
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from mile_ros import interfaces as itf
from mile_ros import params
from mile_ros.arms import ACTION_NAMES, StepOutcome, check_arm_params
from mile_ros.interfaces import SIM_EXPERT_ACTION, episode_qos
from mile_ros.nodes.arm import ArmNode, ArmStats, check_command
from mile_ros.params import ConfigError
from support.executors import UNDER_TEST, make_executor

ROOT = Path(__file__).resolve().parents[1]
_ns = itertools.count()


class FakeBackend:
    """Counts ticks; an episode ends after `length` ticks, with success on odd episodes."""

    owns_episodes, has_expert, publishes_joint_states = True, True, True
    observation_names, action_names, joint_names = ["tick", "episode"], list(ACTION_NAMES), ["j0"]

    def __init__(self, length=5):
        self.length, self.applied, self.resets, self.episode = length, [], [], -1

    def reset(self, seed):
        self.resets.append(seed)
        self.t, self.episode = 0, self.episode + 1

    def observation(self):
        return np.array([float(self.t), float(self.episode)])

    def apply(self, action):
        self.applied.append(None if action is None else np.array(action))
        self.t += 1
        if self.t >= self.length:
            success = self.episode % 2 == 1
            return StepOutcome(True, success, "success" if success else "timeout")
        return StepOutcome()

    def expert_action(self):
        return np.array([0.5, -0.5, 0.0, float(self.t)])

    def joint_positions(self):
        return np.array([0.1 * self.t])

    def ee_pose(self):
        return np.array([0.2, 0.0, 0.1]), np.array([1.0, 0.0, 0.0, 0.0])

    def close(self):
        pass


class Peer:
    """Plays policy_server + arbiter: answers each observation with `respond(i, stamp)`."""

    def __init__(self, ns, respond, name="peer"):
        self.context = rclpy.Context()
        rclpy.init(args=[], context=self.context)
        self.node = Node(name, namespace=ns, context=self.context)
        self.respond = respond
        self.obs, self.events, self.expert, self.joints, self.poses = [], [], [], [], []
        self.refused = []          # (stamp, values) of arm/refused
        n = self.node
        self.pub = n.create_publisher(JointState, itf.COMMAND, 10)
        n.create_subscription(JointState, itf.OBSERVATION, self._on_obs, 50)
        n.create_subscription(String, itf.EPISODE, lambda m: self.events.append(
            itf.parse_episode_event(m.data)), episode_qos())
        n.create_subscription(JointState, SIM_EXPERT_ACTION, lambda m: self.expert.append(
            (itf.stamp_to_ns(m.header.stamp), list(m.position))), 50)
        n.create_subscription(JointState, itf.JOINT_STATES, lambda m: self.joints.append(
            itf.stamp_to_ns(m.header.stamp)), 50)
        n.create_subscription(PoseStamped, itf.EE_POSE, lambda m: self.poses.append(
            itf.stamp_to_ns(m.header.stamp)), 50)
        n.create_subscription(JointState, itf.ARM_REFUSED, lambda m: self.refused.append(
            (itf.stamp_to_ns(m.header.stamp), list(m.name), list(m.position))), 50)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(n)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self):
        try:
            while self.context.ok():
                self.executor.spin_once(timeout_sec=0.05)
        except ExternalShutdownException:
            pass

    def _on_obs(self, msg):
        stamp = itf.stamp_to_ns(msg.header.stamp)
        self.obs.append((stamp, list(msg.position)))
        reply = self.respond(len(self.obs) - 1, stamp)
        if reply is not None:
            stamp, names, values, delay = reply
            if delay:
                threading.Timer(delay, lambda: self.pub.publish(
                    itf.vector_msg(names, values, stamp))).start()
            else:
                self.pub.publish(itf.vector_msg(names, values, stamp))

    def close(self):
        self.context.try_shutdown()
        self.thread.join(timeout=2)


def answer(values, *, stamp_shift=0, names=ACTION_NAMES, delay=0.0):
    return lambda i, stamp: (stamp + stamp_shift, list(names), list(values), delay)


def run_arm(tmp_path, backend, respond, wait_for_peer=True, executor=None, **overrides):
    """Run an ArmNode to completion against a Peer; returns (rc, node, peer).

    The arm spins on `executor` (events | single), by default the one the node would get.
    """
    ns = f"/arm_test_{next(_ns)}"
    values = params.resolve("arm", [], {"realtime_factor": 0.0, "lockstep_timeout_s": 0.3,
                                        "startup_timeout_s": 10.0, "episodes": 2,
                                        "wait_for_nodes": ["peer"], **overrides})
    pfile = params.ros_params_file({"arm": values}, tmp_path / "arm.yaml")
    peer = Peer(ns, respond) if wait_for_peer else None
    context = rclpy.Context()
    rclpy.init(args=["arm", "--ros-args", "-r", f"__ns:={ns}", "--params-file", str(pfile)],
               context=context)
    node = ArmNode(context, backend_factory=lambda p, robot: backend)
    executor = make_executor(context, executor)
    executor.add_node(node)
    try:
        rc = node.run(executor)
    finally:
        node.close()
        node.destroy_node()
        context.try_shutdown()
    time.sleep(0.2)  # the last messages reach the peer
    if peer is not None:
        peer.close()
    return rc, node, peer


@pytest.mark.parametrize("executor", UNDER_TEST)
def test_lockstep_ticks_episodes_and_stamps(tmp_path, executor):
    backend = FakeBackend(length=5)
    rc, node, peer = run_arm(tmp_path, backend, answer([0.25, -0.5, 1.0, 0.0]), seed=7,
                             executor=executor)
    assert rc == 0
    assert backend.resets == [7, 8]
    assert [(e["event"], e["episode"]) for e in peer.events] == \
        [("start", 0), ("end", 0), ("start", 1), ("end", 1)]
    assert [e.get("reason") for e in peer.events if e["event"] == "end"] == ["timeout", "success"]
    assert [e["success"] for e in peer.events if e["event"] == "end"] == [False, True]
    stamps = [s for s, _ in peer.obs]
    assert len(stamps) == 10 and all(b > a for a, b in zip(stamps, stamps[1:]))
    # episode events carry the stamps of their first and last tick
    assert [e["stamp_ns"] for e in peer.events] == [stamps[0], stamps[4], stamps[5], stamps[9]]
    assert [e["seed"] for e in peer.events if e["event"] == "start"] == [7, 8]
    assert all(e["control_rate_hz"] == 20.0 for e in peer.events if e["event"] == "start")
    # one stamp through the tick: expert action, joint states and pose carry it too
    assert [s for s, _ in peer.expert] == stamps
    assert peer.joints == stamps and peer.poses == stamps
    assert [v[3] for _, v in peer.expert] == [float(i % 5) for i in range(10)]
    # every tick applied the command stamped with it
    assert len(backend.applied) == 10
    for a in backend.applied:
        np.testing.assert_allclose(a, [0.25, -0.5, 1.0, 0.0])
    assert node.stats.held_missing == 0 and node.stats.applied == 10


def test_bad_or_missing_commands_hold_and_are_counted(tmp_path):
    plan = [answer([np.nan, 0, 0, 0]),                       # non-finite: rejected
            answer([0.1, 0, 0, 0], stamp_shift=-1),          # stamped for another tick: late
            answer([5.0, -5.0, 0.5, 2.0]),                   # out of range: clipped
            answer([0.1, 0, 0], names=["dx", "dy", "dz"]),   # missing a dimension: malformed
            lambda i, s: None,                               # no answer: hold after timeout
            answer([0.0, 0.0, 0.0, inf := float("inf")])]    # infinite: rejected
    backend = FakeBackend(length=len(plan))
    rc, node, _ = run_arm(tmp_path, backend, lambda i, s: plan[i](i, s), episodes=1)
    assert rc == 0 and inf
    assert backend.applied[0] is None and backend.applied[1] is None
    np.testing.assert_allclose(backend.applied[2], [1.0, -1.0, 0.5, 1.0])
    assert backend.applied[3] is None and backend.applied[4] is None and backend.applied[5] is None
    s = node.stats
    assert (s.rejected_nonfinite, s.late, s.clipped, s.malformed) == (2, 1, 1, 1)
    assert s.held_missing == 3 and s.applied == 1 and s.ticks == 6


def test_real_time_pacing_never_applies_a_late_command(tmp_path):
    # 50 Hz wall clock; answers come 0.3 s late, i.e. after their tick is over
    backend = FakeBackend(length=4)
    rc, node, peer = run_arm(tmp_path, backend, answer([0.3, 0, 0, 0], delay=0.3),
                             episodes=1, realtime_factor=1.0, control_rate_hz=50.0)
    assert rc == 0
    assert peer.events[0]["control_rate_hz"] == 50.0
    assert backend.applied == [None] * 4
    assert node.stats.held_missing == 4 and node.stats.late >= 1


class BackgroundArm:
    """An ArmNode running its episodes in a thread, waiting for `wait_for` at start-up."""

    def __init__(self, tmp_path, wait_for: str):
        self.backend = FakeBackend(length=2)
        self.ns = f"/arm_test_{next(_ns)}"
        values = params.resolve("arm", [], {"realtime_factor": 0.0, "lockstep_timeout_s": 0.2,
                                            "episodes": 1, "wait_for_nodes": [wait_for],
                                            "startup_timeout_s": 20.0})
        pfile = params.ros_params_file({"arm": values}, tmp_path / "arm.yaml")
        self.context = rclpy.Context()
        rclpy.init(args=["arm", "--ros-args", "-r", f"__ns:={self.ns}",
                         "--params-file", str(pfile)],
                   context=self.context)
        self.node = ArmNode(self.context, backend_factory=lambda p, robot: self.backend)
        self.executor = make_executor(self.context)
        self.executor.add_node(self.node)
        self.result = {}

    def start(self):
        self.runner = threading.Thread(
            target=lambda: self.result.update(rc=self.node.run(self.executor)), daemon=True)
        self.runner.start()

    def close(self):
        self.node.close()
        self.node.destroy_node()
        self.context.try_shutdown()


def test_first_episode_waits_for_the_named_nodes(tmp_path):
    arm = BackgroundArm(tmp_path, "late_peer")
    arm.start()
    time.sleep(1.5)
    assert arm.backend.resets == []            # nobody there yet: no episode
    peer = Peer(arm.ns, answer([0.0, 0.0, 0.0, 0.0]), name="late_peer")
    arm.runner.join(timeout=20)
    try:
        assert arm.result.get("rc") == 0 and arm.backend.resets == [0]
        assert [(e["event"]) for e in peer.events] == ["start", "end"]
    finally:
        arm.close()
        peer.close()


def test_a_named_node_counts_as_up_only_with_its_endpoints(tmp_path):
    # the policy server is in the graph while it still loads its checkpoint; an episode started
    # then would record ticks without a_r (seen once in CI: a bag with no complete tick)
    arm = BackgroundArm(tmp_path, "policy_server")
    peer = Peer(arm.ns, answer([0.0, 0.0, 0.0, 0.0]), name="policy_server")  # no action_robot yet
    arm.start()
    try:
        time.sleep(2.0)
        assert arm.backend.resets == []        # named node present, a_r publisher missing
        peer.node.create_publisher(JointState, itf.ACTION_ROBOT, 10)
        arm.runner.join(timeout=20)
        assert arm.result.get("rc") == 0 and arm.backend.resets == [0]
        assert [(e["event"]) for e in peer.events] == ["start", "end"]
    finally:
        arm.close()
        peer.close()


def test_simulated_widowx_backend_runs_an_episode(tmp_path):
    from mile_ros.arms import SimArm

    p = params.resolve("arm", [], {"episode_timeout_s": 0.5})
    backend = SimArm(p)
    rc, node, peer = run_arm(tmp_path, backend, answer([0.0, 0.0, 1.0, -1.0]), episodes=1,
                             episode_timeout_s=0.5)
    assert rc == 0
    assert len(peer.obs) == 10   # 0.5 s at 20 Hz
    assert peer.events[-1]["reason"] == "timeout"
    z = [v[backend.observation_names.index("ee_z")] for _, v in peer.obs]
    assert z[-1] > z[0] + 0.05   # dz = +1 for 10 ticks moved the end effector up


class RefusingBackend(FakeBackend):
    """Refuses every command of episode 0.

    The refusals are counted in `ik_refusals`, like the Interbotix backend's.
    """

    def __init__(self, length=5):
        super().__init__(length)
        self.ik_refusals = 0

    def apply(self, action):
        if self.episode == 0:
            self.ik_refusals += 1
        return super().apply(action)


def test_end_events_report_the_episode_refusals(tmp_path):
    backend = RefusingBackend(length=5)
    rc, node, peer = run_arm(tmp_path, backend, answer([0.25, 0.0, 0.0, 0.0]))
    assert rc == 0
    ends = [e for e in peer.events if e["event"] == "end"]
    assert [e["ik_refusals"] for e in ends] == [5, 0]          # per episode, not cumulative
    assert node.stats.ik_refusals == 5 and "ik_refusals=5" in node.stats.summary()


def test_each_tick_says_whether_its_command_was_refused(tmp_path):
    """`arm/refused`(t) after each tick's command, stamped with the tick: 1.0 where refused.

    The recorder files it into the episode by its stamp, so bags of episodes that the arm does
    not end itself (the arbiter's buttons) hold the refusals too.
    """
    backend = RefusingBackend(length=5)
    rc, _, peer = run_arm(tmp_path, backend, answer([0.25, 0.0, 0.0, 0.0]))
    assert rc == 0
    stamps = [s for s, _ in peer.obs]
    assert [s for s, _, _ in peer.refused] == stamps              # one per tick, its stamp
    assert all(names == list(itf.REFUSED_NAMES) for _, names, _ in peer.refused)
    assert [v for _, _, v in peer.refused] == [[1.0]] * 5 + [[0.0]] * 5
    assert sum(v == [1.0] for _, _, v in peer.refused) == backend.ik_refusals


def test_sim_end_events_have_no_refusal_field(tmp_path):
    """A backend that counts no refusals (the simulated arm) says nothing about them."""
    rc, _, peer = run_arm(tmp_path, FakeBackend(length=3), answer([0.0, 0.0, 0.0, 0.0]),
                          episodes=1)
    assert rc == 0 and all("ik_refusals" not in e for e in peer.events)
    assert peer.refused == [] and len(peer.obs) == 3


class ContinuousBackend(RefusingBackend):
    """The real arm's shape: episodes are decided elsewhere (the arbiter's buttons)."""

    owns_episodes, has_expert, publishes_joint_states = False, False, False

    def __init__(self):
        super().__init__(length=10 ** 9)
        self.t = self.episode = 0

    def apply(self, action):
        return StepOutcome()


def test_real_arm_refusals_are_reported_per_arbiter_episode(tmp_path):
    ns = f"/arm_test_{next(_ns)}"
    values = params.resolve("arm", [], {"backend": "interbotix"})
    pfile = params.ros_params_file({"arm": values}, tmp_path / "arm.yaml")
    context = rclpy.Context()
    rclpy.init(args=["arm", "--ros-args", "-r", f"__ns:={ns}", "--params-file", str(pfile)],
               context=context)
    backend = ContinuousBackend()
    node = ArmNode(context, backend_factory=lambda p, robot: backend)
    executor = make_executor(context)
    executor.add_node(node)
    runner = threading.Thread(target=node.run, args=(executor,), daemon=True)
    runner.start()
    arbiter_ctx = rclpy.Context()
    rclpy.init(args=[], context=arbiter_ctx)
    arbiter = Node("arbiter", namespace=ns, context=arbiter_ctx)
    pub = arbiter.create_publisher(String, itf.EPISODE, episode_qos())

    def send(event, **fields):
        pub.publish(String(data=itf.episode_event(event, 4, time.time_ns(), source="arbiter",
                                                  **fields)))

    def wait_for(condition):
        give_up = time.monotonic() + 10.0
        while not condition() and time.monotonic() < give_up:
            time.sleep(0.05)
        return condition()

    try:
        assert wait_for(lambda: pub.get_subscription_count() > 0), "arm ignores episode events"
        backend.ik_refusals = 2                      # before the episode: not counted
        send("start")
        assert wait_for(lambda: node._refusals_at_start is not None)
        backend.ik_refusals = 5
        send("end", success=True, reason="button")
        assert wait_for(lambda: 4 in node.episode_refusals)
        assert node.episode_refusals == {4: 3}
    finally:
        node.close()
        runner.join(timeout=5)
        node.destroy_node()
        context.try_shutdown()
        arbiter_ctx.try_shutdown()


def test_check_command():
    stats = ArmStats()
    assert check_command(np.array([np.nan, 0, 0, 0]), stats) is None
    np.testing.assert_allclose(check_command(np.array([2.0, 0, -3, 0.5]), stats), [1, 0, -1, 0.5])
    assert (stats.rejected_nonfinite, stats.clipped) == (1, 1)


@pytest.mark.parametrize("override, name", [
    ({"action_names": ["dx", "dy", "dz"]}, "action_names"),
    ({"workspace_min_m": [0.5, 0.0, 0.0]}, "workspace_min_m"),
    ({"workspace_max_m": [0.5, 0.0]}, "workspace_max_m"),
    ({"realtime_factor": -1.0}, "realtime_factor"),
    ({"control_rate_hz": 0.0}, "control_rate_hz"),
    ({"episodes": -2}, "episodes"),
    ({"driver_timeout_s": 0.0}, "driver_timeout_s"),
])
def test_bad_values_name_the_parameter(override, name):
    with pytest.raises(ConfigError, match=f"'{name}'"):
        check_arm_params(params.resolve("arm", [], override))


@pytest.mark.parametrize("arg, needle", [
    ("realtime_factor:=-0.5", "'realtime_factor'"),
    ("control_rate:=30.0", "unknown parameter 'control_rate'"),
    ("backend:=gazebo", "'backend'"),
    ("executor:=fast", "'executor' of node 'arm' must be one of auto, events, single"),
])
def test_node_process_refuses_bad_configuration_with_one_clear_line(arg, needle):
    proc = subprocess.run([sys.executable, "-m", "mile_ros.nodes.arm", "--ros-args", "-r",
                           f"__ns:=/arm_cfg_{next(_ns)}", "-p", arg],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr


def test_an_episode_line_counts_only_that_episode():
    """'episode N ended' gives the episode's own ticks and rate, not the totals since start-up."""
    stats = ArmStats(ticks=80, applied=79, held_missing=1, ik_refusals=2)
    stats.started -= 8.0
    start = stats.snapshot()
    stats.ticks, stats.applied, stats.ik_refusals = 230, 228, 5
    start.started -= 7.5                                # the episode ran 7.5 s
    episode = stats.since(start)
    assert (episode.ticks, episode.applied, episode.held_missing) == (150, 149, 0)
    assert episode.ik_refusals == 3
    assert "ticks=150 (20.0/s)" in episode.summary()


@pytest.mark.parametrize("executor", UNDER_TEST)
def test_ctrl_c_mid_episode_ends_it_on_either_executor(executor, tmp_path):
    """The arm process logs its executor; Ctrl-C mid-episode still sends the episode's end.

    The end event ("shutdown") and the summary go out through the node's context: Ctrl-C stops
    the arm's loop and spin thread first, and shuts the context down only after `close()`.
    """
    ns = f"/arm_sigint_{next(_ns)}"
    peer = Peer(ns, answer([0.0, 0.0, 0.0, 0.0]))
    env = {**os.environ, "MILE_ROS_EXECUTOR": "", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mile_ros.nodes.arm", "--ros-args", "-r",
                             f"__ns:={ns}", "-p", f"executor:={executor}", "-p",
                             "wait_for_nodes:=[peer]", "-p", "episode_timeout_s:=60.0"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        give_up = time.monotonic() + 60
        while len(peer.obs) < 20 and time.monotonic() < give_up and proc.poll() is None:
            time.sleep(0.05)
        assert len(peer.obs) >= 20, "the arm never ticked"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        time.sleep(0.3)
    finally:
        if proc.poll() is None:
            proc.kill()
        peer.close()
    name = {"events": "EventsExecutor (rclpy.experimental)", "single": "SingleThreadedExecutor"}
    assert f"]: arm: executor {name[executor]}\n" in out, out
    assert proc.returncode == 0 and "Traceback" not in out, out
    assert [(e["event"], e.get("reason")) for e in peer.events] == [("start", None),
                                                                     ("end", "shutdown")], out
    assert "[INFO]" in out.split("arm: ticks=")[0].splitlines()[-1], out   # through the node
