"""Episode bags: writing, reading back, crash recovery, bad files, aggregation, recorder core.

Reading back also covers `ros2 bag record`-style bags; directory aggregation; the recorder core:
routing, write failures, rate flag.
"""
import errno
import json
import logging
import random
import shutil
import struct

import numpy as np
import pytest
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from mile_ros import bags
from mile_ros.bags import (
    BagError,
    EpisodeBagWriter,
    EpisodeRecorder,
    find_episode_bags,
    load_episodes,
    read_episode,
)
from mile_ros.interfaces import FLAG_NAMES, episode_event
from mile_ros.params import ConfigError

TS = bags.typestore()
T = TS.types
STATE = ["q0", "q1", "q2"]
ACTION = ["dx", "dy", "dz", "gripper"]
T0 = 1_700_000_000_000_000_000
DT = 50_000_000


def stamp(ns):
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](
        sec=ns // 10**9, nanosec=ns % 10**9), frame_id="")


def vec(names, values, ns):
    e = np.array([], dtype=np.float64)
    return T["sensor_msgs/msg/JointState"](header=stamp(ns), name=list(names),
                                           position=np.asarray(values, float), velocity=e,
                                           effort=e)


def string(text):
    return T["std_msgs/msg/String"](data=text)


def image(ns, value, h=6, w=8):
    return T["sensor_msgs/msg/Image"](header=stamp(ns), height=h, width=w, encoding="rgb8",
                                      is_bigendian=0, step=w * 3,
                                      data=np.full(h * w * 3, value, dtype=np.uint8))


def pose(ns, xyz):
    P = T["geometry_msgs/msg/Pose"](position=T["geometry_msgs/msg/Point"](x=xyz[0], y=xyz[1],
                                                                           z=xyz[2]),
                                    orientation=T["geometry_msgs/msg/Quaternion"](x=0, y=0, z=0,
                                                                                  w=1))
    return T["geometry_msgs/msg/PoseStamped"](header=stamp(ns), pose=P)


def nu_pattern(n):
    return [(k // 3) % 2 == 1 for k in range(n)]


def tick_messages(n=12, episode=0, images=True, success=True, t0=T0):
    """(topic, message, stamp) of a synthetic episode, in publication order."""
    out = [("episode", string(episode_event("start", episode, t0, iteration=1)), t0)]
    for k, nu in enumerate(nu_pattern(n)):
        s = t0 + k * DT
        out += [("observation", vec(STATE, [k, episode, -k], s), s),
                ("action_robot", vec(ACTION, [0.1 * k, 0, 0, 1], s), s),
                ("intervention", vec(FLAG_NAMES, [float(nu), 0, float(k == 7)], s), s)]
        if nu:
            out.append(("action_human", vec(ACTION, [-1, 0.5, 0, k], s), s))
        out += [("command", vec(ACTION, [0, 0, 0, 0], s), s),
                ("ee_pose", pose(s, [k, 0, 0]), s),
                ("joint_states", vec(["waist"], [k], s), s)]
        if images and k % 2 == 0:
            out.append(("camera/image_raw", image(s, k), s))
    end = t0 + (n - 1) * DT
    out.append(("episode", string(episode_event("end", episode, end, success=success,
                                                 reason="success")), end))
    return out


def write_ours(path, n=12, episode=0, storage="mcap", images=True, metadata=None):
    with EpisodeBagWriter(path, storage=storage, record_images=images, namespace="wx250s") as w:
        for topic, msg, s in tick_messages(n, episode, images):
            w.write(topic, msg, s)
        w.close({"episode": episode, "success": True, **(metadata or {})})
    return path


def write_external(path, storage="sqlite3", n=12, padding=True, topics=None, types=None):
    """Write a bag as `ros2 bag record` of the same topics makes it.

    That is: absolute names, no custom data, JointState bytes as rclpy serializes them (with
    trailing padding).
    """
    types = {**bags.topic_types(True), **(types or {})}
    with Writer(path, version=8, storage_plugin=StoragePlugin.SQLITE3 if storage == "sqlite3"
                else StoragePlugin.MCAP) as w:
        conns = {}
        for topic, msg, s in tick_messages(n, images=True):
            if topics is not None and topic not in topics:
                continue
            if topic not in conns:
                conns[topic] = w.add_connection(f"/wx250s/{topic}", types[topic], typestore=TS)
            raw = bytes(TS.serialize_cdr(msg, msg.__msgtype__))
            if padding and msg.__msgtype__ == "sensor_msgs/msg/JointState":
                raw += b"\0" * 8
            w.write(conns[topic], s + 123, raw)
        chatter = w.add_connection("/rosout_like", "std_msgs/msg/String", typestore=TS)
        w.write(chatter, T0, bytes(TS.serialize_cdr(string("hi"), "std_msgs/msg/String")))
    return path


# --- writing and reading -------------------------------------------------------------------
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_roundtrip_with_metadata_written_last(tmp_path, storage):
    path = write_ours(tmp_path / "iter2" / "episode_0000", storage=storage,
                      metadata={"policy_checkpoint_id": "ck-1", "low_rate": False})
    with Reader(path) as r:      # an independent reader sees a v8 bag with absolute topics
        assert {c.topic for c in r.connections} >= {"/wx250s/observation",
                                                     "/wx250s/camera/image_raw"}
    meta_text = (path / "metadata.yaml").read_text()
    assert "version: 8" in meta_text and "mile_ros_format" in meta_text

    ep = read_episode(path)
    n = 12
    nu = np.array(nu_pattern(n))
    assert ep.complete and len(ep) == n and ep.state_names == STATE and ep.action_names == ACTION
    assert np.array_equal(ep.stamps, T0 + np.arange(n) * DT)
    assert np.array_equal(ep.nu, nu) and ep.interventions == nu.sum()
    assert np.isnan(ep.a_h[~nu]).all()
    assert np.array_equal(ep.a_h[nu][:, 3], np.flatnonzero(nu).astype(float))
    assert np.array_equal(ep.state[:, 0], np.arange(n))
    assert np.array_equal(ep.a_r[:, 0], 0.1 * np.arange(n))
    assert ep.estop.tolist() == [k == 7 for k in range(n)]
    # images every other tick: each tick takes the nearest preceding frame
    assert ep.images.shape == (n, 6, 8, 3)
    assert ep.images[:, 0, 0, 0].tolist() == [k - k % 2 for k in range(n)]
    assert np.array_equal(ep.ee_pos[:, 0], np.arange(n))
    m = ep.metadata
    assert m["success"] is True and m["policy_checkpoint_id"] == "ck-1" and m["low_rate"] is False
    assert m["source"] == "mile_ros" and m["iteration"] == 2 and m["read_ticks"] == n
    small = read_episode(path, images=True, image_size=(3, 4))
    assert small.images.shape == (n, 3, 4, 3)
    assert read_episode(path, images=False).images is None
    assert ep.to_dict()["a_h"] is ep.a_h


def test_rclpy_padding_is_trimmed_so_strict_readers_accept_the_bag(tmp_path):
    serialization = pytest.importorskip("rclpy.serialization")
    from sensor_msgs.msg import JointState

    raw = serialization.serialize_message(JointState(name=["a"], position=[1.0]))
    with pytest.raises(Exception):           # the strict reader rejects rclpy's padded bytes
        TS.deserialize_cdr(raw, "sensor_msgs/msg/JointState")
    clean, msg = bags.clean_cdr(raw, "sensor_msgs/msg/JointState")
    assert list(msg.name) == ["a"] and len(clean) < len(raw)
    assert list(TS.deserialize_cdr(clean, "sensor_msgs/msg/JointState").position) == [1.0]
    with EpisodeBagWriter(tmp_path / "b") as w:
        w.write("observation", JointState(name=["a"], position=[2.0]), T0)   # an rclpy message
        w.write("observation", raw, T0 + 1)                                 # rclpy's bytes
        w.close({})
    with Reader(tmp_path / "b") as r:
        for c, _, data in r.messages():
            TS.deserialize_cdr(data, c.msgtype)      # strict: would raise on padding


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_reads_a_ros2_bag_record_style_bag(tmp_path, storage):
    path = write_external(tmp_path / "iter4" / "rosbag2_2024_01_01-00_00_00", storage=storage)
    ep = read_episode(path)
    assert ep.complete and len(ep) == 12 and ep.metadata["source"] == "external"
    assert ep.metadata["iteration"] == 4 and ep.metadata["success"] is True
    assert np.array_equal(ep.nu, nu_pattern(12)) and not ep.issues
    # only the four learning topics, no episode events, no command: still a usable episode
    lean = write_external(tmp_path / "lean", storage=storage, topics={
        "observation", "action_robot", "action_human", "intervention"})
    ep = read_episode(lean, action_names=["gripper", "dx"])
    assert (ep.action_names == ["gripper", "dx"]
            and ep.a_r[3].tolist() == [1.0, 0.30000000000000004])
    assert ep.images is None and ep.metadata["success"] is None


def test_a_ros2_bag_record_of_a_whole_session_splits_into_episodes(tmp_path):
    path = tmp_path / "iter1" / "session"
    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {}
        for k in range(3):
            for topic, msg, s in tick_messages(8, episode=k, images=False, success=k != 1,
                                               t0=T0 + k * 10**9):
                if topic not in conns:
                    conns[topic] = w.add_connection(f"/wx250s/{topic}", msg.__msgtype__,
                                                    typestore=TS)
                w.write(conns[topic], s, bytes(TS.serialize_cdr(msg, msg.__msgtype__)))
            # the arm keeps publishing between episodes: not part of any episode
            s = T0 + k * 10**9 + 9 * DT
            for topic, names in (("observation", STATE), ("action_robot", ACTION),
                                 ("intervention", FLAG_NAMES)):
                msg = vec(names, [0.0] * len(names), s)
                w.write(conns[topic], s, bytes(TS.serialize_cdr(msg, msg.__msgtype__)))
    episodes = bags.read_bag_episodes(path)
    assert [len(e) for e in episodes] == [8, 8, 8]
    assert [e.metadata["episode"] for e in episodes] == [0, 1, 2]
    assert [e.metadata["success"] for e in episodes] == [True, False, True]
    assert episodes[2].stamps[0] == T0 + 2 * 10**9
    for e in episodes:    # only its own tail: the arm's one message after its end, not the others'
        assert "1 observations outside the episode's stamps" in " ".join(e.issues), e.issues
    with pytest.raises(BagError, match="holds 3 episodes"):
        read_episode(path)
    eps, report = load_episodes(tmp_path / "iter1")
    assert report["episodes"] == 3 and report["ticks"] == 24 and report["bags_found"] == 1


def test_messages_outside_the_recorded_episode_stamps_are_ignored(tmp_path):
    with EpisodeBagWriter(tmp_path / "b", record_images=False) as w:
        for topic, msg, s in tick_messages(10, images=False):
            w.write(topic, msg, s)
        w.close({"start_stamp_ns": T0, "end_stamp_ns": T0 + 6 * DT})
    ep = read_episode(tmp_path / "b")
    assert len(ep) == 7 and ep.stamps[-1] == T0 + 6 * DT
    assert "3 observations outside the episode's stamps" in " ".join(ep.issues)


def test_alignment_reports_inconsistencies(tmp_path):
    msgs = tick_messages(12, images=False)
    drop = {("action_robot", T0 + 3 * DT), ("action_human", T0 + 4 * DT)}   # tick 4 has nu=1
    msgs = [m for m in msgs if (m[0], m[2]) not in drop]
    msgs.append(("action_human", vec(ACTION, [9, 9, 9, 9], T0 + 0 * DT), T0))  # nu=0 there
    msgs.append(("observation", vec(STATE, [99, 0, 0], T0 + 5 * DT), T0 + 5 * DT))  # duplicate
    with EpisodeBagWriter(tmp_path / "b", record_images=False) as w:
        for topic, msg, s in msgs:
            w.write(topic, msg, s)
        w.close({})
    ep = read_episode(tmp_path / "b")
    assert len(ep) == 10 and T0 + 3 * DT not in ep.stamps and T0 + 4 * DT not in ep.stamps
    assert np.isnan(ep.a_h[0]).all() and ep.state[list(ep.stamps).index(T0 + 5 * DT), 0] == 5
    text = " | ".join(ep.issues)
    for part in ("duplicate stamps on observation", "without the rest of their tick",
                 "nu=1 but no action_human", "action_human messages at ticks without nu=1"):
        assert part in text


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_incomplete_bag_is_recovered_then_skipped_with_a_warning(tmp_path, storage, caplog):
    good = write_ours(tmp_path / "iter1" / "episode_0000", storage=storage, images=False)
    w = EpisodeBagWriter(tmp_path / "iter1" / "episode_0001", storage=storage, record_images=False)
    for i, (topic, msg, s) in enumerate(tick_messages(30, episode=1, images=False)):
        w.write(topic, msg, s)
        if topic == "joint_states" and msg.position[0] == 19:
            w.flush()                  # what the recorder does every flush_period_s
    w._writer.storage.bio.close() if storage == "mcap" else w._writer.storage.conn.close()
    bad = w.path                       # the process "died": no close, no metadata.yaml
    assert bags.bag_state(bad) == "incomplete" and bags.bag_state(good) == "complete"
    ep = read_episode(bad)
    assert not ep.complete and len(ep) == 20 and ep.metadata["end_reason"] == "crash"
    assert np.array_equal(ep.state[:, 0], np.arange(20))
    with caplog.at_level(logging.WARNING, logger="mile_ros.bags"):
        eps, report = load_episodes(tmp_path / "iter1")
    assert [e.path for e in eps] == [good]
    assert report["skipped"][0][0] == str(bad) and "incomplete" in report["skipped"][0][1]
    assert str(bad) in caplog.text
    eps, report = load_episodes(tmp_path / "iter1", include_incomplete=True)
    assert len(eps) == 2 and report["ticks"] == 12 + 20


def test_an_empty_metadata_file_is_an_incomplete_bag_not_an_unreadable_one(tmp_path):
    """A power cut after metadata.yaml's rename can leave it empty: the bag was never sealed."""
    good = write_ours(tmp_path / "iter1" / "episode_0000", images=False)
    cut = write_ours(tmp_path / "iter1" / "episode_0001", images=False, n=12)
    (cut / "metadata.yaml").write_bytes(b"")
    assert bags.bag_state(cut) == "incomplete" and bags.bag_state(good) == "complete"
    ep = read_episode(cut)
    assert not ep.complete and len(ep) == 12
    eps, report = load_episodes(tmp_path / "iter1")
    assert [e.path for e in eps] == [good]
    assert report["skipped"][0][0] == str(cut) and "incomplete" in report["skipped"][0][1]


def test_mcap_cut_mid_record_still_recovers_earlier_chunks(tmp_path):
    path = write_ours(tmp_path / "e", images=False, n=12)
    w = EpisodeBagWriter(tmp_path / "f", record_images=False)
    for topic, msg, s in tick_messages(12, images=False):
        w.write(topic, msg, s)
        if topic == "command":
            w.flush()
    w.close({})
    mcap = next((tmp_path / "f").glob("*.mcap"))
    data = mcap.read_bytes()
    (tmp_path / "f" / "metadata.yaml").unlink()
    summary_start = struct.unpack_from("<Q", data, len(data) - 37 + 9)[0]
    mcap.write_bytes(data[:summary_start * 2 // 3])   # killed while writing a record
    ep = read_episode(tmp_path / "f")
    assert not ep.complete and 3 <= len(ep) < 12
    assert "truncated" in " ".join(ep.issues)
    assert read_episode(path).complete


# --- bad files -----------------------------------------------------------------------------
def bad_bag_cases(root):
    cases = {}
    (root / "nobags").mkdir(parents=True)
    (root / "nobags" / "notes.txt").write_text("x")
    cases["no bags"] = (root / "nobags", "no episode bags")
    (root / "d" / "emptydir").mkdir(parents=True)
    cases["empty dir bag"] = (root / "d" / "emptydir", "not a rosbag2 bag")
    with EpisodeBagWriter(root / "d" / "zero") as w:
        w.close({})
    cases["zero messages"] = (root / "d" / "zero", "no complete control ticks")
    trunc = write_ours(root / "d" / "trunc", images=False)
    f = next(trunc.glob("*.mcap"))
    f.write_bytes(f.read_bytes()[:300])
    cases["truncated"] = (trunc, str(f))
    corrupt = write_ours(root / "d" / "corrupt", images=False)
    f = next(corrupt.glob("*.mcap"))
    data = bytearray(f.read_bytes())
    chunk = 17 + struct.unpack_from("<Q", data, 9)[0]          # the record after the header
    assert data[chunk] == 0x06
    pos = chunk + 9 + 40
    while data[pos] != 0x05:                                    # the first message record
        pos += 9 + struct.unpack_from("<Q", data, pos + 1)[0]
    data[pos + 1:pos + 9] = struct.pack("<Q", 10**6)           # garbage record length
    f.write_bytes(bytes(data))
    cases["corrupt"] = (corrupt, "corrupt")
    with Writer(root / "d" / "chatter", version=8) as w:
        c = w.add_connection("/chatter", "std_msgs/msg/String", typestore=TS)
        w.write(c, T0, bytes(TS.serialize_cdr(string("hi"), "std_msgs/msg/String")))
    cases["wrong topics"] = (root / "d" / "chatter", "missing topics")
    write_external(root / "d" / "wrongtype",
                   types={"observation": "geometry_msgs/msg/PoseStamped"})
    cases["wrong type"] = (root / "d" / "wrongtype", "has type geometry_msgs/msg/PoseStamped")
    (root / "d" / "junk.mcap").write_bytes(b"\x89MCAP0\r\n" + bytes(range(256)) * 4)
    cases["junk mcap"] = (root / "d" / "junk.mcap", "junk.mcap")
    cases["missing"] = (root / "nope", "does not exist")
    return cases


def test_bad_bags_raise_bag_error_naming_file_and_problem(tmp_path):
    cases = bad_bag_cases(tmp_path)
    for name, (path, problem) in cases.items():
        with pytest.raises(BagError) as e:
            if name in ("no bags", "missing"):
                load_episodes(path)
            else:
                read_episode(path)
        assert str(path) in str(e.value) and problem in str(e.value), (name, str(e.value))
        assert isinstance(e.value, ValueError)


def test_skip_bad_skips_with_warnings_and_keeps_the_good(tmp_path, caplog):
    cases = bad_bag_cases(tmp_path / "iter1")
    good = write_ours(tmp_path / "iter1" / "d" / "zz_good", images=False)
    with pytest.raises(BagError):
        load_episodes(tmp_path / "iter1" / "d")
    with caplog.at_level(logging.WARNING, logger="mile_ros.bags"):
        eps, report = load_episodes([tmp_path / "iter1" / "d", tmp_path / "iter1" / "nobags"],
                                    skip_bad=True)
    assert [e.path for e in eps] == [good] and report["episodes"] == 1
    skipped = dict(report["skipped"])
    for name in ("empty dir bag", "zero messages", "truncated", "corrupt", "wrong topics",
                 "wrong type", "junk mcap", "no bags"):
        path, problem = cases[name]
        assert str(path) in skipped and str(path) in caplog.text, name


def test_random_bytes_as_bags_give_bag_errors(tmp_path):
    rng = random.Random(0)
    template = write_ours(tmp_path / "template", images=True)
    mcap_bytes = next(template.glob("*.mcap")).read_bytes()
    outcomes = {"error": 0, "read": 0}
    for i in range(40):
        d = tmp_path / f"fuzz{i}"
        kind = i % 5
        if kind == 0:                       # random metadata.yaml and storage file
            shutil.copytree(template, d)
            (d / "metadata.yaml").write_bytes(rng.randbytes(rng.randint(0, 400)))
        elif kind == 1:                     # random .mcap, no metadata
            d.mkdir()
            (d / "x.mcap").write_bytes(rng.randbytes(rng.randint(0, 3000)))
        elif kind == 2:                     # random .db3, no metadata
            d.mkdir()
            (d / "x.db3").write_bytes(rng.randbytes(rng.randint(0, 3000)))
        elif kind == 3:                     # MCAP magic, then noise
            d.mkdir()
            (d / "x.mcap").write_bytes(b"\x89MCAP0\r\n" + rng.randbytes(rng.randint(0, 3000)))
        else:                               # a real bag with random bytes flipped
            shutil.copytree(template, d)
            f = next(d.glob("*.mcap"))
            data = bytearray(mcap_bytes)
            for _ in range(rng.randint(1, 30)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            f.write_bytes(bytes(data))
        try:
            read_episode(d)
            outcomes["read"] += 1
        except BagError as e:
            assert str(d) in str(e)
            outcomes["error"] += 1
    assert outcomes["error"] >= 32          # kinds 0-3 can never read


def test_find_episode_bags_takes_earlier_iterations_unless_only(tmp_path):
    run = tmp_path / "run"
    made = {}
    for it, n in ((1, 2), (2, 1), (3, 2), (10, 1)):
        made[it] = [write_ours(run / f"iter{it}" / f"episode_{k:04d}_x", episode=k, images=False)
                    for k in range(n)]
    (run / "iter3" / "recorder_log.jsonl").write_text("{}\n")
    assert find_episode_bags(run / "iter3") == made[1] + made[2] + made[3]
    assert find_episode_bags(run / "iter3", include_earlier_iters=False) == made[3]
    assert find_episode_bags(run) == made[1] + made[2] + made[3] + made[10]
    assert find_episode_bags(made[2][0]) == made[2]
    eps, report = load_episodes(run / "iter3", only=True, images=False)
    assert report["episodes"] == 2 and report["used"] == [str(p) for p in made[3]]
    eps, report = load_episodes(run / "iter3", images=False)
    assert report["episodes"] == 5 and report["ticks"] == 60
    assert report["interventions"] == 5 * sum(nu_pattern(12))
    with pytest.raises(BagError, match="does not exist"):
        find_episode_bags(run / "iter9")


def test_mixed_dimension_names_are_refused(tmp_path):
    write_ours(tmp_path / "iter1" / "a", images=False)
    with EpisodeBagWriter(tmp_path / "iter1" / "b", record_images=False) as w:
        for topic, msg, s in tick_messages(5, images=False):
            if topic == "observation":
                msg = vec(["other", "q1", "q2"], msg.position, s)
            w.write(topic, msg, s)
        w.close({})
    with pytest.raises(BagError, match="state_names") as e:
        load_episodes(tmp_path / "iter1")
    assert str(tmp_path / "iter1" / "b") in str(e.value)


# --- the recorder core (ROS-free) ----------------------------------------------------------
def raw(msg):
    return bytes(TS.serialize_cdr(msg, msg.__msgtype__))


def feed(rec, messages):
    for topic, msg, _ in messages:
        rec.submit(topic, raw(msg))


def make_recorder(tmp_path, **kw):
    events = []
    kw.setdefault("close_grace_s", 0.05)
    kw.setdefault("reorder_window_s", 0.2)
    rec = EpisodeRecorder(tmp_path / "out", 2, record_images=False, fsync=False,
                          on_event=events.append, robot_name="wx250s", namespace="/wx250s", **kw)
    return rec, events


def test_recorder_routes_by_stamp_and_writes_metadata(tmp_path):
    rec, events = make_recorder(tmp_path, close_grace_s=0.3)
    rec.policy_active(json.dumps({"id": "ck-7", "state": "active"}))
    ep0 = tick_messages(10, episode=0, images=False)
    ep1 = tick_messages(10, episode=1, images=False, t0=T0 + 10**9)
    first_obs = ep0[1]
    last_tick = list(ep0[-9:-1])
    # the first observation arrives before the start event, the last tick after the end event,
    # and episode 1 starts while episode 0 is still in its closing grace
    feed(rec, [first_obs, ep0[0]] + ep0[2:-9] + [ep0[-1]] + last_tick + ep1[:-1])
    rec.close("shutdown")
    assert [e["event"] for e in events] == ["episode_recorded"] * 2 + ["recorder_stopped"]
    assert rec.dropped.total() == 0 and events[2]["written"] == events[2]["received"]
    for k, e in enumerate(events[:2]):
        with Reader(e["path"]) as r:         # an independent reader
            counts = {c.topic: c.msgcount for c in r.connections}
        assert counts["/wx250s/observation"] == 10 and counts["/wx250s/intervention"] == 10
        assert e["ticks"] == 10 and e["intervention_count"] == sum(nu_pattern(10))
        assert e["policy_checkpoint_id"] == "ck-7"
    m = read_episode(events[0]["path"]).metadata
    assert m["iteration"] == 2 and m["episode"] == 0 and m["robot_name"] == "wx250s"
    assert m["end_reason"] == "success" and m["success"] is True
    assert m["estop_events"] == [T0 + 7 * DT] and m["state_names"] == STATE
    assert m["action_names"] == ACTION and m["achieved_rate_hz"] == pytest.approx(20.0)
    assert not m["low_rate"] and m["end_reason"] == "success"
    assert read_episode(events[1]["path"]).metadata["end_reason"] == "shutdown"
    log_lines = (rec.dir / bags.SIDECAR_LOG).read_text().splitlines()
    assert len(log_lines) == 3 and json.loads(log_lines[0])["event"] == "episode_recorded"


def test_recorder_handles_episode_events_later_than_its_reorder_window(tmp_path):
    """Handle an episode event that DDS delivers seconds late.

    DDS can deliver an episode event seconds late (a lost sample waits for a heartbeat):
    episode 1's first ticks arrive before episode 0's end and episode 1's start.
    """
    rec, events = make_recorder(tmp_path, reorder_window_s=0.0)
    ep0 = tick_messages(10, episode=0, images=False)
    ep1 = tick_messages(10, episode=1, images=False, t0=T0 + 10 * DT)
    early = [m for m in ep1[1:-1] if m[2] < T0 + 13 * DT]          # 3 ticks of episode 1
    feed(rec, ep0[:-1] + early)
    assert rec.wait_idle()
    feed(rec, [ep0[-1], ep1[0]] + [m for m in ep1[1:] if m not in early])
    rec.close()
    assert [e["event"] for e in events] == ["episode_recorded"] * 2 + ["recorder_stopped"]
    for k, e in enumerate(events[:2]):
        ep = read_episode(e["path"])
        assert len(ep) == 10 and e["ticks"] == 10
        assert ep.stamps[0] == T0 + 10 * k * DT
    assert read_episode(events[0]["path"]).metadata["stray_ticks_outside_stamps"] == 3
    assert rec.dropped.total() == 0


def test_recorder_flags_low_rate_and_takes_the_rate_from_the_start_event(tmp_path):
    rec, events = make_recorder(tmp_path)
    slow = [(t, m, s) for t, m, s in tick_messages(10, images=False)]
    feed(rec, slow)                                  # 20 Hz against 20 Hz configured: fine
    start = ("episode", string(episode_event("start", 1, T0, control_rate_hz=30.0)), T0)
    feed(rec, [start] + list(slow[1:-1]) +
         [("episode", string(episode_event("end", 1, T0 + 10**9)), 0)])
    rec.close()
    assert [e["low_rate"] for e in events[:2]] == [False, True]
    m = read_episode(events[1]["path"]).metadata
    assert m["control_rate_hz"] == 30.0 and m["achieved_rate_hz"] == pytest.approx(20.0)


def test_recorder_survives_write_failures(tmp_path, caplog):
    """Disk full in episode 1: it is marked failed-to-record, 0 and 2 are intact."""
    class FullDisk(EpisodeBagWriter):
        def write(self, topic, msg, stamp_ns, **kw):
            if "episode_0001" in self.path.name and self.counts.total() >= 15:
                raise OSError(errno.ENOSPC, "No space left on device")
            super().write(topic, msg, stamp_ns, **kw)

    rec, events = make_recorder(tmp_path, writer_factory=FullDisk)
    for k in range(3):
        feed(rec, tick_messages(10, episode=k, images=False, t0=T0 + k * 10**9))
        assert rec.wait_idle()
    rec.close()
    kinds = [e["event"] for e in events]
    assert kinds == ["episode_recorded", "record_failed", "episode_failed", "episode_recorded",
                     "recorder_stopped"]
    assert "No space left" in events[1]["error"] and events[2]["dropped_messages"]
    assert rec.dropped["record_failed"] > 0
    eps, report = load_episodes(rec.dir)
    assert [e.metadata["episode"] for e in eps] == [0, 2] and all(e.complete for e in eps)
    assert "incomplete" in report["skipped"][0][1] and "episode_0001" in report["skipped"][0][0]
    log_text = (rec.dir / bags.SIDECAR_LOG).read_text()
    assert "record_failed" in log_text and "No space left" in log_text


def test_recorder_that_cannot_open_a_bag_keeps_going(tmp_path):
    calls = []

    def factory(path, **kw):
        calls.append(path)
        if len(calls) == 1:
            raise OSError(errno.EROFS, "Read-only file system")
        return EpisodeBagWriter(path, **kw)

    rec, events = make_recorder(tmp_path, writer_factory=factory)
    for k in range(2):
        feed(rec, tick_messages(6, episode=k, images=False, t0=T0 + k * 10**9))
        assert rec.wait_idle()
    rec.close()
    assert [e["event"] for e in events] == ["record_failed", "episode_failed", "episode_recorded",
                                            "recorder_stopped"]


def test_unwritable_out_is_a_config_error_naming_the_path(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError) as e:
        EpisodeRecorder(blocker / "runs", 1)
    assert str(blocker / "runs") in str(e.value) and "'out'" in str(e.value)
    with pytest.raises(ConfigError, match="storage"):
        EpisodeRecorder(tmp_path / "ok", 1, storage="zip")


def test_out_ending_in_iter_is_used_as_is(tmp_path):
    rec = EpisodeRecorder(tmp_path / "demo" / "iter5", 1, fsync=False)
    rec.close()
    assert rec.dir == tmp_path / "demo" / "iter5" and rec.iteration == 5


def test_a_rosbags_that_cannot_flush_is_refused_at_start_up(tmp_path, monkeypatch):
    """Flushing reaches into rosbags' storage: another layout must stop the recorder at once."""
    from rosbags.rosbag2.storage_mcap import McapWriter

    monkeypatch.delattr(McapWriter, "close_chunk")
    with pytest.raises(ConfigError, match=r"'storage'.*rosbags .*>=0\.11,<0\.12") as e:
        EpisodeRecorder(tmp_path / "runs", 1, storage="mcap")
    assert "crash would lose the whole episode" in str(e.value)
    assert not list((tmp_path / "runs").rglob("*.mcap"))      # the probe left nothing behind
