"""The recorder node: every control tick to rosbag2, one bag per episode under `<out>/iter<N>/`.

Subscribes (relative to its namespace, i.e. /<robot_name>/...) to every topic of
`interfaces.STEP_TOPICS`, to `camera/image_raw` when `record_images`, and to `policy/active`
(the checkpoint id written into each episode's metadata). `episode` start events open a bag, end
events close it with its metadata; Ctrl-C / SIGTERM close the open bag with end reason
"shutdown". Subscriptions take the serialized bytes (no deserialization in the callback) and hand
them to the writer thread of `bags.EpisodeRecorder`, so recording never holds up the graph.

Publishes `recorder/status` (std_msgs/String, JSON): one message per episode recorded or failed
to record, and one per write failure as it happens.

    ros2 run mile_ros recorder --ros-args -r __ns:=/wx250s -p out:=runs/collect -p iteration:=3
"""
from __future__ import annotations

import importlib
import json
import sys
from functools import partial

import rclpy
from rclpy.node import Node
from std_msgs.msg import String

from mile_ros.bags import EpisodeRecorder, topic_types
from mile_ros.interfaces import (
    EPISODE,
    IMAGE,
    POLICY_ACTIVE,
    RECORDER_STATUS,
    active_reader_qos,
    control_qos,
    image_qos,
)
from mile_ros.params import declare_node_parameters


def message_class(typename: str):
    package, _, name = typename.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


QOS_REFRESH_S = 1.0   # how often the publishers' QoS is read from the graph


class RecorderNode(Node):
    def __init__(self, **node_kwargs):
        super().__init__("recorder", automatically_declare_parameters_from_overrides=True,
                         **node_kwargs)
        p = declare_node_parameters(self, "recorder")
        namespace = self.get_namespace()
        self.status_pub = self.create_publisher(String, RECORDER_STATUS, 10)
        self.recorder = EpisodeRecorder(
            p["out"], p["iteration"], storage=p["storage"], record_images=p["record_images"],
            control_rate_hz=p["control_rate_hz"], min_rate_fraction=p["min_rate_fraction"],
            flush_period_s=p["flush_period_s"], reorder_window_s=p["reorder_window_s"],
            robot_name=namespace.strip("/"),
            namespace=namespace, on_event=self._publish_status, logger=self.get_logger())
        # deep reader queues: a 2-core machine can stall this process for a second or more
        reliable, images = control_qos(), image_qos()
        self._subs = [
            self.create_subscription(message_class(typename), topic,
                                     self._on_episode if topic == EPISODE
                                     else partial(self.recorder.submit, topic),
                                     images if topic == IMAGE else reliable, raw=True)
            # episode events first: within one executor cycle they are then taken first
            for topic, typename in sorted(topic_types(p["record_images"]).items(),
                                          key=lambda kv: kv[0] != EPISODE)]
        self._subs.append(self.create_subscription(
            String, POLICY_ACTIVE, lambda m: self.recorder.policy_active(m.data),
            active_reader_qos()))
        self._topics = list(topic_types(p["record_images"]))
        self._learn_publisher_qos()
        self.create_timer(QOS_REFRESH_S, self._learn_publisher_qos)
        self.get_logger().info(
            f"recording {len(self._subs) - 1} topics under {self.get_namespace()} into "
            f"{self.recorder.dir} ({p['storage']}, "
            f"images {'on' if p['record_images'] else 'off'})")

    def _on_episode(self, raw: bytes) -> None:
        """Submit an episode event, first learning any publisher QoS not yet known.

        A bag takes the QoS known when it opens (at the start event); the periodic refresh can
        lag a just-started publisher by up to QOS_REFRESH_S.
        """
        if len(self.recorder.publisher_qos) < len(self._topics):
            self._learn_publisher_qos()
        self.recorder.submit(EPISODE, raw)

    def _learn_publisher_qos(self) -> None:
        """Keep each recorded topic's publisher QoS, which the bags' metadata records.

        `ros2 bag play` republishes a topic with the QoS its bag says, e.g. `episode` as the arm
        offers it (transient local), not the recorder's own reader QoS.
        """
        for topic in self._topics:
            infos = self.get_publishers_info_by_topic(self.resolve_topic_name(topic))
            if infos:
                q = infos[0].qos_profile
                self.recorder.publisher_qos[topic] = {
                    "history": int(q.history), "depth": int(q.depth),
                    "reliability": int(q.reliability), "durability": int(q.durability)}

    def _publish_status(self, event: dict) -> None:
        if rclpy.ok(context=self.context):
            self.status_pub.publish(String(data=json.dumps(event, default=str)))

    def close(self, reason: str = "shutdown") -> None:
        self.recorder.close(reason)


def main(argv: list[str] | None = None) -> int:
    from mile_ros.nodes._runtime import run_node

    return run_node("recorder", RecorderNode, argv)


if __name__ == "__main__":
    sys.exit(main())
