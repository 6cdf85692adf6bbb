"""Helpers for the trainer's tests and benchmark: episodes from the simulated WidowX, as bags.

The episodes have a noisy "robot" and an expert "person", and are written as bags the way
`ros2 bag record` would have written them (rosbags directly: absolute topic names, no custom
metadata).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

NAMESPACE = "wx250s"


def simulate_episode(seed: int, max_ticks: int = 60, robot_noise: float = 0.6,
                     threshold: float = 0.5, image_size: int | None = None) -> dict:
    """Simulate one episode: a_r = expert + noise.

    The person takes over while a_r is far from the expert's action. Returns state, a_r, a_h
    (NaN where nu=0), nu, names, optional images.
    """
    from mile_ros.sim.widowx import WidowXTask

    rng = np.random.default_rng(seed)
    task = WidowXTask(seed=seed)
    try:
        obs, _ = task.reset(seed=seed)
        rows = {"state": [], "a_r": [], "a_h": [], "nu": [], "image": [], "ee": []}
        for _ in range(max_ticks):
            expert = task.expert_action()
            a_r = np.clip(expert + robot_noise * rng.standard_normal(4), -1, 1)
            nu = bool(np.abs(a_r - expert).max() > threshold)
            rows["state"].append(obs)
            rows["a_r"].append(a_r)
            rows["a_h"].append(expert if nu else np.full(4, np.nan))
            rows["nu"].append(nu)
            rows["ee"].append(task.ee_pose()[0])
            if image_size:
                rows["image"].append(task.render(image_size, image_size))
            obs, _, terminated, truncated, _ = task.step(expert if nu else a_r)
            if terminated or truncated:
                break
        names = list(task.observation_names)
    finally:
        task.close()
    ep = {k: np.asarray(v) for k, v in rows.items() if len(v)}
    ep["state_names"], ep["action_names"] = names, ["dx", "dy", "dz", "gripper"]
    return ep


def write_external_bag(path: Path, episode: dict, namespace: str = NAMESPACE,
                       storage: str = "sqlite3", episode_index: int = 0,
                       t0_ns: int = 1_700_000_000_000_000_000, period_ns: int = 50_000_000,
                       topics: dict | None = None, others: dict | None = None) -> Path:
    """Write a bag of the graph's topics as `ros2 bag record -a` would store it.

    That is: absolute names, the graph's message types, log time = header stamp, no custom
    metadata. `others` ({namespace: episode}) adds other robots' episodes to the same bag, as a
    `ros2 bag record -a` of a shared domain holds them.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    T = ts.types
    Time, Header = T["builtin_interfaces/msg/Time"], T["std_msgs/msg/Header"]
    JointState, String = T["sensor_msgs/msg/JointState"], T["std_msgs/msg/String"]
    Pose, PoseStamped = T["geometry_msgs/msg/Pose"], T["geometry_msgs/msg/PoseStamped"]
    Point, Quat = T["geometry_msgs/msg/Point"], T["geometry_msgs/msg/Quaternion"]
    Image = T["sensor_msgs/msg/Image"]
    empty = np.zeros(0)

    def header(ns):
        return Header(stamp=Time(sec=ns // 10**9, nanosec=ns % 10**9), frame_id="")

    def vector(names, values, ns):
        return JointState(header=header(ns), name=list(names),
                          position=np.asarray(values, np.float64), velocity=empty, effort=empty)

    names = {"observation": "sensor_msgs/msg/JointState",
             "action_robot": "sensor_msgs/msg/JointState",
             "action_human": "sensor_msgs/msg/JointState",
             "intervention": "sensor_msgs/msg/JointState",
             "command": "sensor_msgs/msg/JointState",
             "ee_pose": "geometry_msgs/msg/PoseStamped",
             "episode": "std_msgs/msg/String"}
    if "image" in episode:
        names["camera/image_raw"] = "sensor_msgs/msg/Image"
    if topics is not None:
        names = topics
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    writer = Writer(path, version=8, storage_plugin=plugin)
    writer.open()
    robots = {namespace: episode, **(others or {})}
    all_conns = {robot: {rel: writer.add_connection(f"/{robot}/{rel}", typename, typestore=ts)
                         for rel, typename in names.items()} for robot in robots}
    conns = {}

    def put(rel, msg, ns):
        if rel not in conns:
            return
        if names[rel] != msg.__msgtype__:       # a wrongly typed topic: some other message
            msg = (String(data="not a vector") if names[rel] == "std_msgs/msg/String" else
                   T["sensor_msgs/msg/Joy"](header=header(ns), axes=np.zeros(6, np.float32),
                                            buttons=np.zeros(17, np.int32)))
        writer.write(conns[rel], ns, ts.serialize_cdr(msg, names[rel]))

    for robot, episode in robots.items():
        conns = all_conns[robot]
        _write_episode(episode, put, episode_index, t0_ns, period_ns, vector, header, String,
                       Image, PoseStamped, Pose, Point, Quat)
    writer.close()
    return path


def _write_episode(episode, put, episode_index, t0_ns, period_ns, vector, header, String, Image,
                   PoseStamped, Pose, Point, Quat):
    import json

    T_ = len(episode["nu"])
    put("episode", String(data=json.dumps({"event": "start", "episode": episode_index,
                                           "stamp_ns": t0_ns})), t0_ns)
    for i in range(T_):
        ns = t0_ns + i * period_ns
        put("observation", vector(episode["state_names"], episode["state"][i], ns), ns)
        if "image" in episode:
            img = episode["image"][i]
            put("camera/image_raw", Image(header=header(ns), height=img.shape[0],
                                          width=img.shape[1], encoding="rgb8", is_bigendian=0,
                                          step=img.shape[1] * 3, data=img.reshape(-1)), ns)
        if "ee" in episode:
            p = episode["ee"][i]
            put("ee_pose", PoseStamped(header=header(ns), pose=Pose(
                position=Point(x=float(p[0]), y=float(p[1]), z=float(p[2])),
                orientation=Quat(x=0.0, y=0.0, z=0.0, w=1.0))), ns)
        put("action_robot", vector(episode["action_names"], episode["a_r"][i], ns), ns + 1000)
        nu = bool(episode["nu"][i])
        put("intervention", vector(["nu", "hold", "estop"], [float(nu), 0.0, 0.0], ns), ns + 2000)
        executed = episode["a_h"][i] if nu else episode["a_r"][i]
        if nu:
            put("action_human", vector(episode["action_names"], episode["a_h"][i], ns), ns + 2000)
        put("command", vector(episode["action_names"], executed, ns), ns + 3000)
    end = t0_ns + T_ * period_ns
    put("episode", String(data=json.dumps({"event": "end", "episode": episode_index,
                                           "success": False, "reason": "timeout",
                                           "stamp_ns": end})), end)
