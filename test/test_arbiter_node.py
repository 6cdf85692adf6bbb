"""The arbiter node over real DDS, in-process: stamps, flags, a_h, holds, e-stop, watchdog."""
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.context import Context  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import JointState, Joy  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from mile_ros import interfaces as itf  # noqa: E402
from mile_ros.nodes.arbiter import ArbiterNode  # noqa: E402
from mile_ros.params import ConfigError, resolve  # noqa: E402
from mile_ros.teleop.arbiter import ArbiterConfig, JoyMap  # noqa: E402
from support.executors import UNDER_TEST, make_executor  # noqa: E402

NAMES = ["dx", "dy", "dz", "gripper"]
LATCHED = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


class Graph:
    """The arbiter plus a probe node that plays arm, policy server and joystick.

    Both spin on `executor` (events | single), by default the one the arbiter would get.
    """

    def __init__(self, executor=None, **overrides):
        overrides.setdefault("handback_ramp_s", 0.0)
        self.ctx = Context()
        rclpy.init(context=self.ctx)
        self.map = JoyMap(ArbiterConfig.from_params(resolve("arbiter", overrides=overrides)))
        self.arbiter = ArbiterNode(context=self.ctx, parameter_overrides=[
            Parameter(k, value=v) for k, v in overrides.items()])
        self.probe = Node("probe", context=self.ctx)
        self.pub_obs = self.probe.create_publisher(JointState, itf.OBSERVATION, 10)
        self.pub_ar = self.probe.create_publisher(JointState, itf.ACTION_ROBOT, 10)
        self.pub_joy = self.probe.create_publisher(Joy, itf.JOY, 10)
        self.got = {name: [] for name in ("command", "intervention", "action_human", "status",
                                          "episode")}
        for topic, key in ((itf.COMMAND, "command"), (itf.INTERVENTION, "intervention"),
                           (itf.ACTION_HUMAN, "action_human")):
            self.probe.create_subscription(JointState, topic, self._store(key), 10)
        self.probe.create_subscription(String, itf.ARBITER_STATUS,
                                       lambda m: self.got["status"].append(json.loads(m.data)),
                                       LATCHED)
        self.probe.create_subscription(String, itf.EPISODE,
                                       lambda m: self.got["episode"].append(json.loads(m.data)),
                                       LATCHED)
        self.joy_on, self.action, self.held = True, np.zeros(4), set()
        self.last_joy = 0.0
        self.executor = make_executor(self.ctx, executor)
        self.executor.add_node(self.arbiter)
        self.executor.add_node(self.probe)
        self.spinning = True
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()
        self.running = True
        self.joy_thread = threading.Thread(target=self._joy_stream, daemon=True)
        self.joy_thread.start()                                    # a 50 Hz joystick
        self.stamp = 1_000_000_000
        self.wait(lambda: self.probe.count_subscribers(itf.OBSERVATION) >= 1
                  and self.probe.count_publishers(itf.COMMAND) >= 1)
        time.sleep(0.2)

    def _spin(self):
        # spin_once, as the nodes do: rclpy 9.1's EventsExecutor deadlocks when another thread
        # calls into it (wake, shutdown, destroying an entity) while it is in spin()
        while self.spinning:
            self.executor.spin_once(timeout_sec=0.05)

    def _store(self, key):
        def store(msg):
            self.got[key].append((itf.stamp_to_ns(msg.header.stamp), np.array(msg.position),
                                  time.monotonic()))
        return store

    def _joy_stream(self):
        while self.running:
            if self.joy_on:
                self.send_joy()
            time.sleep(0.02)

    def send_joy(self):
        axes, buttons = self.map.joy_for(self.action, self.held, n_axes=6, n_buttons=17)
        msg = Joy(axes=[float(a) for a in axes], buttons=buttons)
        msg.header.stamp = self.probe.get_clock().now().to_msg()
        self.pub_joy.publish(msg)
        self.last_joy = time.monotonic()

    def press(self, role):
        self.held = self.held | {role}
        time.sleep(0.06)
        self.held = self.held - {role}
        time.sleep(0.06)

    def tick(self, a_r=(0.1, 0.2, 0.3, 0.4)):
        """observation(t) then, after 'inference', a_r(t); returns the command for t."""
        self.stamp += 50_000_000
        self.pub_obs.publish(itf.vector_msg(["x", "y"], [0.0, 1.0], self.stamp))
        if a_r is not None:
            time.sleep(0.003)
            self.pub_ar.publish(itf.vector_msg(NAMES, a_r, self.stamp))
        return self.result(self.stamp)

    def result(self, stamp):
        self.wait(lambda: any(s == stamp for s, *_ in self.got["intervention"]))
        self.wait(lambda: any(s == stamp for s, *_ in self.got["command"]))
        command = [v for s, v, _ in self.got["command"] if s == stamp]
        flags = [v for s, v, _ in self.got["intervention"] if s == stamp]
        if flags and flags[0][0]:     # nu=1: a_h(t) comes on its own topic, in no fixed order
            try:
                self.wait(lambda: any(s == stamp for s, *_ in self.got["action_human"]), 2.0)
            except AssertionError:
                pass                  # missing a_h: the caller's assertion reports it
        human = [v for s, v, _ in self.got["action_human"] if s == stamp]
        assert len(command) == 1 and len(flags) == 1 and len(human) <= 1
        return command[0], flags[0], (human[0] if human else None)

    def status(self):
        return self.got["status"][-1]

    def wait(self, predicate, timeout=5.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return
            time.sleep(0.005)
        raise AssertionError("timed out waiting")

    def close(self):
        self.running = False
        self.joy_thread.join(timeout=5)
        self.spinning = False
        self.thread.join(timeout=5)
        self.executor.shutdown(timeout_sec=5)
        self.arbiter.destroy_node()
        self.probe.destroy_node()
        rclpy.shutdown(context=self.ctx)


@pytest.fixture
def graph():
    made = []

    def make(**overrides):
        made.append(Graph(**overrides))
        return made[-1]
    yield make
    for g in made:
        g.close()


@pytest.mark.parametrize("executor", UNDER_TEST)
def test_takeover_handback_stale_nan_and_estop_over_dds(graph, executor):
    g = graph(executor=executor, joy_timeout_s=1.0)   # the Joy watchdog has its own test
    command, flags, human = g.tick(a_r=(0.1, 0.2, 0.3, 0.4))
    np.testing.assert_allclose(command, [0.1, 0.2, 0.3, 0.4])
    np.testing.assert_array_equal(flags, [0, 0, 0])
    assert human is None

    g.action = np.array([0.5, 0.0, -0.5, 1.0])
    g.press("takeover")
    g.wait(lambda: g.status()["state"] == "taken_over")
    command, flags, human = g.tick(a_r=None)            # taken over: no need for a_r
    np.testing.assert_allclose(command, [0.5, 0.0, -0.5, 1.0], atol=1e-6)
    np.testing.assert_allclose(human, command)
    np.testing.assert_array_equal(flags, [1, 0, 0])

    g.press("takeover")
    g.wait(lambda: g.status()["state"] == "autonomous")
    command, flags, human = g.tick(a_r=(-0.2, 0.2, -0.2, 0.6))
    np.testing.assert_allclose(command, [-0.2, 0.2, -0.2, 0.6])
    assert human is None and flags[0] == 0

    sent = time.monotonic()                              # the policy stalls
    command, flags, human = g.tick(a_r=None)
    received = [r for s, _, r in g.got["command"] if s == g.stamp][0]
    assert received - sent >= 0.045
    np.testing.assert_allclose(command, [0.0, 0.0, 0.0, 0.6])      # gripper unchanged
    np.testing.assert_array_equal(flags, [0, 1, 0])
    g.wait(lambda: (g.status()["reason"] or "").startswith("a_r stale"))
    command, flags, _ = g.tick(a_r=(0.3, 0.3, 0.3, 0.3))            # fresh again: resumes
    np.testing.assert_array_equal(flags, [0, 0, 0])

    command, flags, _ = g.tick(a_r=(math.nan, 0.0, math.inf, 5.0))
    assert np.all(np.isfinite(command)) and flags[1] == 1
    g.wait(lambda: g.status()["counts"]["nonfinite_a_r"] == 1)

    g.press("estop")
    for _ in range(2):
        command, flags, human = g.tick()
        np.testing.assert_array_equal(flags, [0, 1, 1])
        assert np.all(command[:3] == 0) and human is None
    g.press("takeover")                                             # ignored while latched
    assert g.tick()[1][2] == 1
    g.press("reset")
    command, flags, _ = g.tick()
    np.testing.assert_array_equal(flags, [0, 0, 0])
    np.testing.assert_allclose(command, [0.1, 0.2, 0.3, 0.4])
    text = json.dumps(g.got["status"])
    assert "0.1, 0.2" not in text and "0.4" not in text             # a_r never shown


def test_joystick_silence_during_takeover_holds_until_a_press(graph):
    g = graph()
    g.action = np.array([0.0, 0.8, 0.0, -0.4])
    g.press("takeover")
    assert g.tick()[1][0] == 1
    g.joy_on = False                                                 # the controller is gone
    time.sleep(0.03)
    silent_since = g.last_joy
    ticks = []
    for _ in range(12):
        time.sleep(0.045)
        sent = time.monotonic() - silent_since
        ticks.append((sent, *g.tick(a_r=(0.9, 0.9, 0.9, 0.9))))
    holds = [flags[1] == 1 for _, _, flags, _ in ticks]
    first = holds.index(True)
    assert all(holds[first:]), holds                                 # once held, stays held
    for sent, command, flags, human in ticks:
        if sent > 0.25 + 0.1:                                        # the safety property
            assert flags[1] == 1 and flags[0] == 0 and human is None
            np.testing.assert_allclose(command, [0.0, 0.0, 0.0, -0.4])
        if not flags[1]:
            np.testing.assert_allclose(human, [0.0, 0.8, 0.0, -0.4], atol=1e-6)
    assert first >= 1                                    # the person drove until the timeout
    assert g.status()["state"] == "joy_lost"
    g.joy_on = True                                                  # reconnected
    time.sleep(0.1)
    for _ in range(3):
        flags = g.tick(a_r=(0.9, 0.9, 0.9, 0.9))[1]
        np.testing.assert_array_equal(flags, [0, 1, 0])              # the policy does not drive
    g.press("takeover")
    command, flags, human = g.tick()
    np.testing.assert_array_equal(flags, [1, 0, 0])
    np.testing.assert_allclose(human, [0.0, 0.8, 0.0, -0.4], atol=1e-6)


def test_episode_buttons_publish_episode_events(graph):
    g = graph(episode_buttons=True, joy_timeout_s=1.0)
    assert g.tick()[1][1] == 1                                       # no episode: hold
    g.press("episode_start")
    assert g.tick()[1][1] == 0
    g.press("episode_success")
    g.wait(lambda: len(g.got["episode"]) == 2)
    start, end = g.got["episode"]
    assert start["event"] == "start" and end["event"] == "end" and end["success"] is True
    assert end["episode"] == start["episode"] == 0


def test_bad_button_name_is_a_startup_error():
    ctx = Context()
    rclpy.init(context=ctx)
    try:
        with pytest.raises(ConfigError, match="buttons.takeover.*'r5'"):
            ArbiterNode(context=ctx, parameter_overrides=[Parameter("buttons.takeover",
                                                                    value="r5")])
    finally:
        rclpy.shutdown(context=ctx)
    out = subprocess.run([sys.executable, "-m", "mile_ros.nodes.arbiter", "--ros-args", "-p",
                          "axes.dx:=9"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "axes.dx" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("executor", UNDER_TEST)
def test_process_logs_its_executor_and_stops_cleanly_on_ctrl_c(executor):
    """The node starts on the executor its parameter names, says so, and Ctrl-C exits 0."""
    proc = subprocess.Popen([sys.executable, "-m", "mile_ros.nodes.arbiter", "--ros-args", "-r",
                             "__ns:=/arbiter_exec_" + executor, "-p", f"executor:={executor}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "MILE_ROS_EXECUTOR": ""})
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "arbiter: executor" in line:
                break
        time.sleep(1.0)                          # spinning: the watchdog timer runs
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = "".join(lines) + out
    name = {"events": "EventsExecutor (rclpy.experimental)", "single": "SingleThreadedExecutor"}
    assert f"arbiter: executor {name[executor]}\n" in text, text
    assert "no Joy received yet" in text, text   # the watchdog timer ran on it
    assert proc.returncode == 0 and "Traceback" not in text, text


def test_executor_parameter_is_checked_and_events_needs_an_executor(monkeypatch):
    from mile_ros.nodes import _runtime

    with pytest.raises(ConfigError, match="'executor' of node 'arbiter' must be one of auto, "
                                          "events, single, got 'fast'"):
        resolve("arbiter", overrides={"executor": "fast"})
    monkeypatch.setitem(sys.modules, "rclpy.experimental", None)   # Humble: no EventsExecutor
    factory, text = _runtime.executor_factory("auto")
    assert factory.__name__ == "SingleThreadedExecutor" and "not available" in text
    with pytest.raises(ConfigError, match="'executor' is 'events', but this rclpy has no "
                                          "EventsExecutor"):
        _runtime.executor_factory("events")
    monkeypatch.setenv("MILE_ROS_EXECUTOR", "single")
    assert _runtime.executor_choice("events") == ("single", "single")
    monkeypatch.setenv("MILE_ROS_EXECUTOR", "fast")
    with pytest.raises(ConfigError, match="MILE_ROS_EXECUTOR"):
        _runtime.executor_choice("auto")
