"""The camera node: sensor_msgs/Image (rgb8, width x height) at rate_hz.

source: opencv  OpenCV VideoCapture on `device` (a device index such as "0", or a video file,
                which loops); frames are resized to width x height and stamped when read.
source: sim     the simulated WidowX's workspace camera (MuJoCo offscreen render). The arm node
                runs the simulation in another process, so this node mirrors the state the arm
                publishes (joint_states: joints and fingers; observation: block position and hole)
                into its own copy of the scene and renders that, stamped with the observation's
                stamp; a frame is published only when a new state has come in. The block is drawn
                upright (its orientation is not in the observation).
An unavailable device or file is a start-up error naming the `device` value.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from mile_ros.params import ConfigError

SOURCES = ("sim", "opencv")


class CameraUnavailable(ConfigError):
    """The camera device or video file cannot be opened or read."""


class OpenCVSource:
    def __init__(self, device: str, width: int, height: int, rate_hz: float = 30.0):
        import cv2

        self.cv2, self.size = cv2, (int(width), int(height))
        self.is_file = not device.strip().isdigit()
        if self.is_file and not Path(device).is_file():
            raise CameraUnavailable(f"camera parameter 'device': video file {device!r} does not "
                                    f"exist (give a device index such as \"0\" or a video file)")
        self.device = device if self.is_file else int(device)
        self.cap = cv2.VideoCapture(self.device)
        if not self.cap.isOpened():
            where = "video file" if self.is_file else f"camera device {device} (/dev/video{device})"
            raise CameraUnavailable(f"camera parameter 'device'={device!r}: cannot open the "
                                    f"{where}; is it connected and readable?")
        if not self.is_file:
            self.cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            self.cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
            self.cap.set(cv2.CAP_PROP_FPS, rate_hz)
        self.first = self.read()
        if self.first is None:
            self.cap.release()
            raise CameraUnavailable(f"camera parameter 'device'={device!r}: opened, but no frame "
                                    f"could be read (not a video, or the camera is busy)")

    def read(self) -> np.ndarray | None:
        """The next frame as uint8 RGB [height, width, 3]; a video file starts over at its end."""
        ok, frame = self.cap.read()
        if not ok and self.is_file:
            self.cap.set(self.cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self.cap.read()
        if not ok or frame is None:
            return None
        if (frame.shape[1], frame.shape[0]) != self.size:
            frame = self.cv2.resize(frame, self.size, interpolation=self.cv2.INTER_AREA)
        return self.cv2.cvtColor(frame, self.cv2.COLOR_BGR2RGB)

    def reopen(self) -> bool:
        self.cap.release()
        self.cap = self.cv2.VideoCapture(self.device)
        return self.cap.isOpened()

    def close(self) -> None:
        self.cap.release()


class SimSource:
    """Renders the simulated scene in the state the arm node last published."""

    def __init__(self, width: int, height: int):
        if sys.platform.startswith("linux"):
            os.environ.setdefault("MUJOCO_GL", "egl")
        from mile_ros.sim.widowx import WidowXTask

        self.size = (int(width), int(height))
        self.task = WidowXTask()
        try:
            self.task.render(*self.size)       # fails early (bad size, no GL) at start-up
        except Exception as e:  # noqa: BLE001 - any renderer failure is a start-up error
            self.task.close()
            raise CameraUnavailable(f"camera source 'sim': cannot render {width}x{height}: {e} "
                                    f"(headless Linux needs MUJOCO_GL=egl and Mesa EGL)") from None
        self.task.close()   # a GL context belongs to its thread: the first read() makes a new one
        self.stamp_ns: int | None = None       # of the state mirrored and not yet rendered

    def set_joints(self, names, positions) -> None:
        data = self.task.data
        for name, q in zip(names, positions):
            if name in self.task.joint_names and np.isfinite(q):
                data.joint(name).qpos[0] = q

    def set_observation(self, names, values, stamp_ns: int) -> None:
        v = dict(zip(names, values))
        if all(k in v for k in ("block_x", "block_y", "block_z")):
            self.task.data.joint("block").qpos[:7] = [v["block_x"], v["block_y"], v["block_z"],
                                                       1.0, 0.0, 0.0, 0.0]
        if "hole_x" in v and "hole_y" in v:
            self.task.model.body("sorter").pos[:2] = [v["hole_x"], v["hole_y"]]
        self.stamp_ns = stamp_ns

    def read(self) -> tuple[int, np.ndarray] | None:
        """(stamp, RGB frame) of the newest mirrored state, once per state."""
        if self.stamp_ns is None:
            return None
        import mujoco

        mujoco.mj_forward(self.task.model, self.task.data)
        stamp, self.stamp_ns = self.stamp_ns, None
        return stamp, self.task.render(*self.size)

    def close(self) -> None:
        self.task.close()


def check_params(p: dict) -> None:
    if p["source"] not in SOURCES:
        raise ConfigError(f"camera parameter 'source' must be one of {SOURCES}, "
                          f"got {p['source']!r}")
    for name in ("width", "height"):
        if not 1 <= p[name] <= 8192:
            raise ConfigError(f"camera parameter '{name}' must be in [1, 8192], got {p[name]}")
    if not p["rate_hz"] > 0:
        raise ConfigError(f"camera parameter 'rate_hz' must be > 0, got {p['rate_hz']}")


def image_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str = "camera"):
    from sensor_msgs.msg import Image

    from mile_ros.interfaces import ns_to_stamp

    msg = Image(height=int(rgb.shape[0]), width=int(rgb.shape[1]), encoding="rgb8",
                is_bigendian=0, step=int(rgb.shape[1]) * 3)
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = frame_id
    msg.data = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    return msg


def make_node(node_name: str = "camera", **node_kwargs):
    """The rclpy node (rclpy initialised); CameraUnavailable/ConfigError at start-up."""
    from rclpy.node import Node
    from sensor_msgs.msg import Image, JointState

    from mile_ros import interfaces as itf
    from mile_ros.params import declare_node_parameters

    class CameraNode(Node):
        def __init__(self):
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
                self.create_subscription(JointState, itf.JOINT_STATES, self.on_joints, 10)
                self.create_subscription(JointState, itf.OBSERVATION, self.on_observation, 10)
            self.pub = self.create_publisher(Image, itf.IMAGE, 10)
            self.failures = 0
            self.create_timer(1.0 / p["rate_hz"], self.tick)
            what = f"opencv {p['device']!r}" if p["source"] == "opencv" else "sim (mirrors the arm)"
            self.get_logger().info(f"{what} -> {itf.IMAGE} {p['width']}x{p['height']} rgb8 at "
                                   f"{p['rate_hz']} Hz")

        def on_joints(self, msg):
            self.source.set_joints(msg.name, msg.position)

        def on_observation(self, msg):
            self.source.set_observation(msg.name, msg.position,
                                        itf.stamp_to_ns(msg.header.stamp))

        def tick(self):
            if isinstance(self.source, SimSource):
                got = self.source.read()
                if got is not None:
                    self.pub.publish(image_msg(got[1], got[0]))
                return
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

    return CameraNode()


def main(argv: list[str] | None = None) -> int:
    from mile_ros.nodes._runtime import spin_node

    return spin_node("camera", make_node, argv, "camera: ")


if __name__ == "__main__":
    sys.exit(main())
