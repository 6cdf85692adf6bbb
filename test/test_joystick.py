"""The joystick node through SDL's virtual joystick: pygame's real device path, Joy over DDS."""
import threading
import time

import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("pygame")
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Joy  # noqa: E402

from mile_ros import interfaces as itf  # noqa: E402
from mile_ros.nodes.joystick import JoystickNode, JoystickReader, JoystickUnavailable  # noqa: E402
from mile_ros.params import resolve  # noqa: E402
from mile_ros.teleop.arbiter import TAKEN_OVER, ArbiterConfig, ArbiterLogic  # noqa: E402
from support.virtual_joystick import VirtualJoystick  # noqa: E402

PS3 = ArbiterConfig.from_params(resolve("arbiter"))     # the shipped hid-sony map


class JoyGraph:
    def __init__(self, **overrides):
        self.ctx = Context()
        rclpy.init(context=self.ctx)
        self.node = JoystickNode(context=self.ctx, parameter_overrides=[
            Parameter(k, value=v) for k, v in overrides.items()])
        self.probe = Node("probe", context=self.ctx)
        self.msgs = []
        self.probe.create_subscription(Joy, itf.JOY,
                                       lambda m: self.msgs.append((time.monotonic(), m)), 10)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.executor.add_node(self.probe)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def wait(self, predicate, timeout=5.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.msgs and predicate(self.msgs[-1][1]):
                return self.msgs[-1][1]
            time.sleep(0.005)
        raise AssertionError(f"no matching Joy; last: {self.msgs[-1][1] if self.msgs else None}")

    def close(self):
        self.executor.shutdown(timeout_sec=5)
        self.thread.join(timeout=5)
        self.node.close()
        self.node.destroy_node()
        self.probe.destroy_node()
        rclpy.shutdown(context=self.ctx)


@pytest.fixture
def pad():
    with VirtualJoystick(n_axes=6, n_buttons=17) as v:
        yield v


def test_missing_device_names_device_index():
    with pytest.raises(JoystickUnavailable, match="device_index=0"):
        JoystickReader(0)
    with VirtualJoystick():
        with pytest.raises(JoystickUnavailable, match=r"device_index=2.*1 joystick"):
            JoystickReader(2)


def test_buttons_axes_deadzone_and_disconnect(pad, capfd):
    g = JoyGraph(deadzone=0.1, rate_hz=100.0)
    try:
        first = g.wait(lambda m: True)
        assert len(first.axes) == 6 and len(first.buttons) == 17 and not any(first.buttons)
        assert itf.stamp_to_ns(first.header.stamp) > 0

        pad.set_button(PS3.buttons["takeover"], True)           # R1
        msg = g.wait(lambda m: any(m.buttons))
        assert [i for i, b in enumerate(msg.buttons) if b] == [5]

        pad.set(axes={1: -1.0, 0: 0.05, 4: 0.55, 3: -0.5})     # left stick up, a twitch, ...
        msg = g.wait(lambda m: m.axes[1] < -0.99)
        assert msg.axes[0] == 0.0                                # inside the deadzone
        assert msg.axes[4] == pytest.approx((0.55 - 0.1) / 0.9, abs=1e-3)
        assert msg.axes[3] == pytest.approx(-(0.5 - 0.1) / 0.9, abs=1e-3)

        # the same messages drive the arbiter through the shipped PS3 map
        logic = ArbiterLogic(PS3)
        logic.on_joy(msg.axes, [0] * 17, 0.0)
        logic.on_joy(msg.axes, msg.buttons, 0.01)
        assert logic.state == TAKEN_OVER
        assert logic.a_h[0] == pytest.approx(1.0, abs=1e-3)      # stick up = +dx
        assert logic.a_h[3] < -0.4                               # right stick left = gripper -

        stamps = [itf.stamp_to_ns(m.header.stamp) for _, m in g.msgs]
        assert stamps == sorted(stamps)

        pad.detach()                                             # unplug
        time.sleep(0.15)
        count = len(g.msgs)
        time.sleep(0.3)
        assert len(g.msgs) == count and not g.node.reader.connected
        assert "device_index=0 disconnected" in capfd.readouterr().err

        with VirtualJoystick(n_axes=6, n_buttons=17) as again:   # plug back in
            again.set_button(PS3.buttons["estop"], True)
            msg = g.wait(lambda m: m.buttons[10] == 1)
            assert g.node.reader.connected and not msg.buttons[5]
            assert "joystick reconnected" in capfd.readouterr().err
    finally:
        g.close()


def test_hats_become_axis_pairs():
    with VirtualJoystick(n_axes=2, n_buttons=4, n_hats=1) as v:
        reader = JoystickReader(0)
        try:
            v.set_hat(0, 1 | 8)                                  # up-left
            time.sleep(0.01)
            _, (axes, buttons) = reader.poll()
            assert axes == [0.0, 0.0, -1.0, 1.0] and buttons == [0, 0, 0, 0]
        finally:
            reader.close()
