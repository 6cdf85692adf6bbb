"""The camera node: sensor_msgs/Image (rgb8, width x height) at rate_hz.

source: opencv  OpenCV VideoCapture on `device` (a device index such as "0", or a video file,
                which loops); frames are resized to width x height and stamped when read.
source: sim     the simulated WidowX's workspace camera (MuJoCo offscreen render). The arm node
                runs the simulation in another process, so this node mirrors the state the arm
                publishes (joint_states: joints and fingers; observation: block position and hole)
                into its own copy of the scene and renders that, stamped with the observation's
                stamp: one frame per arm tick, published as soon as the tick's joint_states and
                observation are both in (rate_hz does not apply), so that in lockstep the policy
                server can wait for the frame of its tick. The block is drawn upright (its
                orientation is not in the observation).
An unavailable device or file is a start-up error naming the `device` value.
"""
from __future__ import annotations

import sys

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState

from mile_ros import interfaces as itf
from mile_ros.cameras import CameraUnavailable, OpenCVSource, SimSource, check_params
from mile_ros.params import declare_node_parameters

PAIRING_MAX = 50   # sim: ticks waiting for their other half (joints or observation)
__all__ = ["CameraNode", "CameraUnavailable", "OpenCVSource", "SimSource", "image_msg", "main"]


def image_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str = "camera"):
    from sensor_msgs.msg import Image

    from mile_ros.interfaces import ns_to_stamp

    msg = Image(height=int(rgb.shape[0]), width=int(rgb.shape[1]), encoding="rgb8",
                is_bigendian=0, step=int(rgb.shape[1]) * 3)
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = frame_id
    msg.data = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    return msg


class CameraNode(Node):
    """Publishes the configured source's frames on camera/image_raw."""

    def __init__(self, node_name: str = "camera", **node_kwargs):
        super().__init__(node_name, automatically_declare_parameters_from_overrides=True,
                         **node_kwargs)
        p = declare_node_parameters(self, "camera")
        check_params(p)
        self.p = p
        if p["source"] == "opencv":
            self.source = OpenCVSource(p["device"], p["width"], p["height"], p["rate_hz"])
            self.pending_frame = self.source.first
        else:
            self.source = SimSource(p["width"], p["height"])
            self._ticks: dict[int, dict] = {}    # stamp -> the tick's joints / observation
            # deep queues: a render can take longer than a lockstep tick while the person drives
            self.create_subscription(JointState, itf.JOINT_STATES, self.on_joints,
                                     itf.control_qos())
            self.create_subscription(JointState, itf.OBSERVATION, self.on_observation,
                                     itf.control_qos())
        self.pub = self.create_publisher(Image, itf.IMAGE, itf.image_qos())
        self.failures = 0
        if p["source"] == "opencv":
            self.create_timer(1.0 / p["rate_hz"], self.tick)
        what = (f"opencv {p['device']!r} at {p['rate_hz']} Hz" if p["source"] == "opencv"
                else "sim (mirrors the arm, a frame per tick)")
        self.get_logger().info(f"{what} -> {itf.IMAGE} {p['width']}x{p['height']} rgb8")

    def setup(self, executor) -> None:
        """Sim: make the renderer's GL context in the spinning thread before the first tick.

        A context belongs to its thread, and the first render takes a few hundred ms.
        """
        if isinstance(self.source, SimSource):
            self.source.warm_up()

    def on_joints(self, msg):
        self._arrive(itf.stamp_to_ns(msg.header.stamp), "joints", msg)

    def on_observation(self, msg):
        self._arrive(itf.stamp_to_ns(msg.header.stamp), "observation", msg)

    def _arrive(self, stamp: int, kind: str, msg) -> None:
        """Pair a tick's joints and observation by stamp; render each tick once both are in.

        The two topics interleave freely: in lockstep, while the person drives, the arm runs
        ahead and the joints of tick t+1 can come before the observation of tick t. Mirroring
        only the newest of each skipped tick t's frame; ticks are kept apart until paired.
        """
        entry = self._ticks.setdefault(stamp, {})
        entry[kind] = msg
        if len(entry) < 2:
            if len(self._ticks) > PAIRING_MAX:           # a half tick whose other half is lost
                del self._ticks[min(self._ticks)]
            return
        for old in [s for s in self._ticks if s <= stamp]:
            del self._ticks[old]
        joints, obs = entry["joints"], entry["observation"]
        self.source.set_joints(joints.name, joints.position, stamp)
        self.source.set_observation(obs.name, obs.position, stamp)
        self.publish_sim()

    def publish_sim(self):
        """Publish the frame of the tick mirrored, once its joints and observation are in."""
        got = self.source.read()
        if got is not None:
            self.pub.publish(image_msg(got[1], got[0]))

    def tick(self):
        frame = self.pending_frame if self.pending_frame is not None else self.source.read()
        self.pending_frame = None
        if frame is None:
            self.failures += 1
            self.get_logger().error(f"camera {self.p['device']!r}: no frame; retrying",
                                    throttle_duration_sec=2.0)
            if self.failures % max(1, int(self.p["rate_hz"])) == 0:
                self.source.reopen()
            return
        self.failures = 0
        self.pub.publish(image_msg(frame, self.get_clock().now().nanoseconds))

    def close(self):
        self.source.close()


def main(argv: list[str] | None = None) -> int:
    from mile_ros.nodes._runtime import run_node

    return run_node("camera", CameraNode, argv)


if __name__ == "__main__":
    sys.exit(main())
