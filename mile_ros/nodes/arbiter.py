"""The takeover arbiter node: Joy + observation + a_r in, command + intervention + a_h out.

A thin rclpy shell around `mile_ros.teleop.arbiter.ArbiterLogic` (all decisions live there).
Subscribes  observation, action_robot, joy
Publishes   command, intervention [nu, hold, estop], action_human (only when nu=1), all stamped
            with the observation's stamp; arbiter/status (JSON, no action values: the person never
            sees a_r); episode (only with episode_buttons: true)
"""
from __future__ import annotations

import json
import sys
import time

from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import JointState, Joy
from std_msgs.msg import String

from mile_ros import interfaces as itf
from mile_ros.params import declare_node_parameters
from mile_ros.teleop.arbiter import ArbiterConfig, ArbiterLogic, Tick

STATUS_PERIOD_S = 1.0      # status is also re-sent at this period (and on every change)
WATCHDOG_PERIOD_S = 0.02   # how often Joy silence is checked between ticks


class ArbiterNode(Node):
    """rclpy must be initialised; raises ConfigError on bad parameters."""

    def __init__(self, node_name: str = "arbiter", **node_kwargs):
        super().__init__(node_name, automatically_declare_parameters_from_overrides=True,
                         **node_kwargs)
        self.cfg = ArbiterConfig.from_params(declare_node_parameters(self, "arbiter"))
        self.logic = ArbiterLogic(self.cfg)
        self.names = list(self.cfg.action_names)
        self.pub_command = self.create_publisher(JointState, itf.COMMAND, 10)
        self.pub_flags = self.create_publisher(JointState, itf.INTERVENTION, 10)
        self.pub_human = self.create_publisher(JointState, itf.ACTION_HUMAN, 10)
        self.pub_status = self.create_publisher(String, itf.ARBITER_STATUS, itf.status_qos())
        self.pub_episode = (self.create_publisher(String, itf.EPISODE, itf.status_qos())
                            if self.cfg.episode_buttons else None)
        self.create_subscription(JointState, itf.OBSERVATION, self.on_observation, 10)
        self.create_subscription(JointState, itf.ACTION_ROBOT, self.on_action_robot, 10)
        self.create_subscription(Joy, itf.JOY, self.on_joy, 10)
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.deadline_timer = self.create_timer(self.cfg.a_r_wait_s, self.on_deadline,
                                                clock=steady)
        self.deadline_timer.cancel()
        self.create_timer(WATCHDOG_PERIOD_S, self.on_watchdog, clock=steady)
        self.last_status, self.last_status_time, self.last_counts = None, 0.0, {}
        b = self.cfg.buttons
        self.get_logger().info(
            f"{self.cfg.mode} mode; buttons takeover={b['takeover']} estop={b['estop']} "
            f"reset={b['reset']}; axes {dict(zip(self.names, self.cfg.axes))}; Joy timeout "
            f"{self.cfg.joy_timeout_s} s; handback ramp {self.cfg.handback_ramp_s} s")
        self.publish_status(time.monotonic(), force=True)

    # --- inputs ---
    def on_observation(self, msg):
        self.emit(self.logic.on_observation(itf.stamp_to_ns(msg.header.stamp), time.monotonic()))
        if self.logic.pending is not None:
            self.deadline_timer.reset()   # a_r_wait_s from now

    def on_action_robot(self, msg):
        try:
            values = itf.vector_from_msg(msg, self.names)
        except ValueError:
            values = None
        self.emit(self.logic.on_action_robot(itf.stamp_to_ns(msg.header.stamp), values,
                                             time.monotonic()))

    def on_joy(self, msg):
        self.emit(self.logic.on_joy(msg.axes, msg.buttons, time.monotonic(),
                                    itf.stamp_to_ns(msg.header.stamp)))

    def on_deadline(self):
        self.deadline_timer.cancel()
        self.emit(self.logic.on_deadline(time.monotonic()))

    def on_watchdog(self):
        now = time.monotonic()
        self.logic.check_watchdog(now)
        self.publish_status(now)

    # --- outputs ---
    def emit(self, ticks: list[Tick]) -> None:
        for tick in ticks:
            self.pub_command.publish(itf.vector_msg(self.names, tick.command, tick.stamp_ns))
            self.pub_flags.publish(itf.vector_msg(itf.FLAG_NAMES, tick.flags, tick.stamp_ns))
            if tick.nu:
                self.pub_human.publish(itf.vector_msg(self.names, tick.a_h, tick.stamp_ns))
        if self.logic.pending is None:
            self.deadline_timer.cancel()
        for event in self.logic.pop_events():
            self.pub_episode.publish(String(data=event))
            self.get_logger().info(f"episode event: {event}")
        if ticks:
            self.publish_status(time.monotonic())

    def publish_status(self, now: float, force: bool = False) -> None:
        status = self.logic.status(now)
        key = (status["state"], status["hold"], status["reason"], status["joystick"],
               status["episode_running"])
        previous = self.last_status or (None,) * len(key)
        if key[0] != previous[0]:
            self.get_logger().info(f"state: {status['state']}")
        if status["hold"] and key[2] != previous[2]:
            self.get_logger().warning(f"holding: {status['reason']}")
        if key[3] is False and previous[3] is not False:
            self.get_logger().warning(
                "no Joy received yet" if self.logic.last_joy_time is None else
                f"no Joy for {self.cfg.joy_timeout_s} s: joystick disconnected?")
        elif key[3] and previous[3] is False:
            self.get_logger().info("Joy stream is live")
        for name, n in status["counts"].items():
            if n != self.last_counts.get(name, 0) and name != "late_a_r":
                self.get_logger().warning(f"{name}: {n} so far", throttle_duration_sec=1.0)
        self.last_counts = status["counts"]
        if force or key != self.last_status or now - self.last_status_time >= STATUS_PERIOD_S:
            self.pub_status.publish(String(data=json.dumps(status)))
            self.last_status, self.last_status_time = key, now


def main(argv: list[str] | None = None) -> int:
    from mile_ros.nodes._runtime import run_node

    return run_node("arbiter", ArbiterNode, argv)


if __name__ == "__main__":
    sys.exit(main())
