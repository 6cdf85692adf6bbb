"""The camera node: a video file through OpenCV over DDS, clear errors, the simulated source."""
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
cv2 = pytest.importorskip("cv2")
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from mile_ros import interfaces as itf  # noqa: E402
from mile_ros.nodes.camera import CameraNode, CameraUnavailable, OpenCVSource, SimSource  # noqa: E402
from mile_ros.params import ConfigError  # noqa: E402

COLOURS_BGR = [(0, 0, 255), (0, 255, 0), (255, 0, 0)]   # red, green, blue frames


@pytest.fixture
def video(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    assert writer.isOpened()
    for colour in COLOURS_BGR:
        for _ in range(2):
            writer.write(np.full((48, 64, 3), colour, np.uint8))
    writer.release()
    return path


def start(ctx, **overrides):
    node = CameraNode(context=ctx, parameter_overrides=[Parameter(k, value=v)
                                                       for k, v in overrides.items()])
    probe = Node("probe", context=ctx)
    got = []
    probe.create_subscription(Image, itf.IMAGE, got.append, 10)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    executor.add_node(probe)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    return node, probe, got, executor, thread


def test_video_file_to_rgb8_images_over_dds(video):
    ctx = Context()
    rclpy.init(context=ctx)
    node, probe, got, executor, thread = start(ctx, source="opencv", device=str(video),
                                               width=32, height=24, rate_hz=50.0)
    try:
        end = time.monotonic() + 10
        while len(got) < 8 and time.monotonic() < end:      # more frames than the file: it loops
            time.sleep(0.01)
        assert len(got) >= 8
        msg = got[0]
        assert (msg.encoding, msg.height, msg.width, msg.step) == ("rgb8", 24, 32, 96)
        assert itf.stamp_to_ns(msg.header.stamp) > 0
        frames = [np.frombuffer(bytes(m.data), np.uint8).reshape(24, 32, 3) for m in got[:8]]
        dominant = [int(np.argmax(f.reshape(-1, 3).mean(axis=0))) for f in frames]
        assert dominant == [0, 0, 1, 1, 2, 2, 0, 0]          # R, G, B channels in rgb8 order
    finally:
        executor.shutdown(timeout_sec=5)
        thread.join(timeout=5)
        node.close()
        node.destroy_node()
        probe.destroy_node()
        rclpy.shutdown(context=ctx)


def test_unavailable_device_or_file_names_the_device(tmp_path):
    with pytest.raises(CameraUnavailable, match=r"'device'='7'.*camera device 7"):
        OpenCVSource("7", 32, 24)
    missing = tmp_path / "nothing.mp4"
    with pytest.raises(CameraUnavailable, match="nothing.mp4.*does not exist"):
        OpenCVSource(str(missing), 32, 24)
    garbage = tmp_path / "garbage.avi"
    garbage.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(CameraUnavailable, match="garbage.avi"):
        OpenCVSource(str(garbage), 32, 24)
    ctx = Context()
    rclpy.init(context=ctx)
    try:
        with pytest.raises(ConfigError, match="'source'.*webcam"):
            CameraNode(context=ctx, parameter_overrides=[Parameter("source", value="webcam")])
        with pytest.raises(CameraUnavailable, match="'device'='9'"):
            CameraNode(context=ctx, parameter_overrides=[Parameter("source", value="opencv"),
                                                        Parameter("device", value="9")])
    finally:
        rclpy.shutdown(context=ctx)


def test_sim_source_mirrors_the_arms_state():
    pytest.importorskip("mujoco")
    widowx = pytest.importorskip("mile_ros.sim.widowx")
    arm = widowx.WidowXTask(seed=3)
    source = SimSource(48, 48)
    try:
        assert source.read() is None                         # nothing from the arm yet
        obs = arm.observation()
        source.set_joints(arm.joint_names, arm.joint_positions())
        source.set_observation(arm.observation_names, obs, stamp_ns=123)
        stamp, image = source.read()
        assert stamp == 123 and image.shape == (48, 48, 3) and image.dtype == np.uint8
        assert source.read() is None                         # one frame per state
        reference = arm.render(48, 48)
        assert np.abs(image.astype(int) - reference.astype(int)).mean() < 1.0
        for _ in range(10):                                  # the arm moves and closes its hand
            arm.step([1.0, 0.0, 0.0, 1.0])
        source.set_joints(arm.joint_names, arm.joint_positions())
        source.set_observation(arm.observation_names, arm.observation(), stamp_ns=124)
        after = source.read()[1].astype(int)
        assert np.abs(after - arm.render(48, 48).astype(int)).mean() < 1.0
        assert np.abs(after - image.astype(int)).mean() > 5.0
        moved = np.array(arm.observation())
        moved[4:6] += 0.08                                   # the block somewhere else
        source.set_observation(arm.observation_names, moved, stamp_ns=125)
        assert np.abs(source.read()[1].astype(int) - after).mean() > 0.5
    finally:
        source.close()
        arm.close()


def test_sim_camera_node_stamps_frames_with_the_observation():
    pytest.importorskip("mujoco")
    widowx = pytest.importorskip("mile_ros.sim.widowx")
    from sensor_msgs.msg import JointState

    arm = widowx.WidowXTask(seed=1)
    ctx = Context()
    rclpy.init(context=ctx)
    node, probe, got, executor, thread = start(ctx, source="sim", width=40, height=30,
                                               rate_hz=50.0)
    try:
        pub_js = probe.create_publisher(JointState, itf.JOINT_STATES, 10)
        pub_obs = probe.create_publisher(JointState, itf.OBSERVATION, 10)
        end = time.monotonic() + 10
        while node.count_publishers(itf.OBSERVATION) < 1 and time.monotonic() < end:
            time.sleep(0.01)
        time.sleep(0.2)
        assert got == []                                     # no state, no frame
        stamp = 7_000_000_000
        pub_js.publish(itf.vector_msg(arm.joint_names, arm.joint_positions(), stamp))
        pub_obs.publish(itf.vector_msg(arm.observation_names, arm.observation(), stamp))
        while not got and time.monotonic() < end:
            time.sleep(0.01)
        time.sleep(0.1)
        assert len(got) == 1 and itf.stamp_to_ns(got[0].header.stamp) == stamp
        assert (got[0].encoding, got[0].height, got[0].width) == ("rgb8", 30, 40)
    finally:
        executor.shutdown(timeout_sec=5)
        thread.join(timeout=5)
        node.close()
        node.destroy_node()
        probe.destroy_node()
        rclpy.shutdown(context=ctx)
        arm.close()
