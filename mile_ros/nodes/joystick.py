"""The joystick node.

A PS3 controller (teleop.joystick.JoystickReader) -> sensor_msgs/Joy at rate_hz.

A missing controller at start-up is an error naming `device_index`. A disconnect stops the Joy
stream (so the arbiter's Joy watchdog holds the arm) and is logged; publishing resumes when the
controller is back.
"""
from __future__ import annotations

import sys

from rclpy.node import Node
from sensor_msgs.msg import Joy

from mile_ros import interfaces as itf
from mile_ros.params import ConfigError, declare_node_parameters
from mile_ros.teleop.joystick import JoystickReader, JoystickUnavailable

__all__ = ["JoystickNode", "JoystickReader", "JoystickUnavailable", "main"]


class JoystickNode(Node):
    """Publishes the PS3 controller's state as sensor_msgs/Joy at rate_hz."""

    def __init__(self, node_name: str = "joystick", **node_kwargs):
        super().__init__(node_name, automatically_declare_parameters_from_overrides=True,
                         **node_kwargs)
        p = declare_node_parameters(self, "joystick")
        if not p["rate_hz"] > 0:
            raise ConfigError(f"joystick parameter 'rate_hz' must be > 0, got {p['rate_hz']}")
        self.reader = JoystickReader(p["device_index"], p["deadzone"])
        self.pub = self.create_publisher(Joy, itf.JOY, 10)
        self.create_timer(1.0 / p["rate_hz"], self.tick)
        self.get_logger().info(
            f"joystick {self.reader.device_index}: {self.reader.name!r}, "
            f"{self.reader.joystick.get_numaxes()} axes, "
            f"{self.reader.joystick.get_numbuttons()} buttons; Joy at {p['rate_hz']} Hz")

    def tick(self):
        event, state = self.reader.poll()
        if event == "disconnected":
            self.get_logger().error(
                f"joystick device_index={self.reader.device_index} disconnected: Joy stopped "
                f"(the arbiter holds a takeover); waiting for it to come back")
        elif event == "reconnected":
            self.get_logger().warning(f"joystick reconnected: {self.reader.name!r}; "
                                      "press the takeover button to take control again")
        if state is None:
            return
        msg = Joy(axes=[float(a) for a in state[0]], buttons=state[1])
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = "joy"
        self.pub.publish(msg)

    def close(self):
        self.reader.close()


def main(argv: list[str] | None = None) -> int:
    from mile_ros.nodes._runtime import run_node

    return run_node("joystick", JoystickNode, argv)


if __name__ == "__main__":
    sys.exit(main())
