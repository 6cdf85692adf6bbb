"""The recorder core seals an ended episode as soon as its ticks are in, durably (ROS-free).

When the end event is in and every tick up to its stamp is complete the bag is sealed at once (no
fixed wait); a tick still missing is waited for (bounded); the arm's refusal flags (`arm/refused`)
are part of a tick and counted into the metadata; the bag's files and directories are fsynced, in
an order that a power cut cannot turn into a sealed bag with missing data, before the episode is
declared recorded; the fast seal writes what rosbags' own close writes.
"""
import json
import os
import threading
import time

import pytest
import yaml
from rosbags.rosbag2 import Reader
from test_bags import ACTION, DT, T0, make_recorder, raw, string, tick_messages, vec

from mile_ros import bags
from mile_ros.bags import EpisodeBagWriter, EpisodeRecorder, read_episode
from mile_ros.interfaces import ARM_REFUSED, FLAG_NAMES, REFUSED_NAMES, episode_event


def refusal_flags(messages, refused_ticks):
    """`messages` with the arm's refusal flag after each tick's command (as the arm sends it)."""
    out, k = [], 0
    for topic, msg, s in messages:
        out.append((topic, msg, s))
        if topic == "command":
            out.append((ARM_REFUSED, vec(REFUSED_NAMES, [float(k in refused_ticks)], s), s))
            k += 1
    return out


class Sealed:
    """Records when the recorder declares each episode recorded."""

    def __init__(self):
        self.at, self.events, self.done = {}, [], threading.Event()

    def __call__(self, event):
        self.events.append(event)
        if event["event"] == "episode_recorded":
            self.at[event["episode"]] = time.monotonic()
            self.done.set()


def recorder(tmp_path, **kw):
    sealed = Sealed()
    rec = EpisodeRecorder(tmp_path / "out", 1, record_images=False, fsync=False,
                          on_event=sealed, namespace="/wx250s", **kw)
    return rec, sealed


def submit(rec, messages):
    for topic, msg, _ in messages:
        rec.submit(topic, raw(msg))


def test_everything_in_when_the_end_comes_seals_at_once(tmp_path):
    """No minimum wait: the control period here is 10 s, the seal takes well under one."""
    rec, sealed = recorder(tmp_path, control_rate_hz=0.1, close_grace_s=5.0,
                           max_close_wait_s=30.0, reorder_window_s=3.5)
    ep = tick_messages(10, images=False)
    submit(rec, ep[:-1])
    time.sleep(0.2)
    assert not sealed.at                                       # nothing sealed before the end
    t_end = time.monotonic()
    submit(rec, ep[-1:])
    assert sealed.done.wait(1.0), "not sealed within 1 s of the end event"
    took = sealed.at[0] - t_end
    rec.close()
    assert took < 1.0
    assert len(read_episode(sealed.events[0]["path"])) == 10


def test_a_tick_part_still_missing_is_waited_for_and_then_sealed_at_once(tmp_path):
    """The end event overtook the last tick's command and refusal flag: both end up in the bag."""
    rec, sealed = recorder(tmp_path, close_grace_s=5.0, max_close_wait_s=30.0)
    ep = refusal_flags(tick_messages(10, images=False), refused_ticks={2, 9})
    last = [m for m in ep if m[0] in ("command", ARM_REFUSED) and m[2] == T0 + 9 * DT]
    submit(rec, [m for m in ep if m not in last])
    time.sleep(0.5)
    assert not sealed.at, "sealed without the last tick's command"
    submit(rec, last[:1])
    time.sleep(0.3)
    assert not sealed.at, "sealed without the last tick's refusal flag"
    t_last = time.monotonic()
    submit(rec, last[1:])
    assert sealed.done.wait(2.0)
    assert sealed.at[0] - t_last < 2.0
    rec.close()
    path = sealed.events[0]["path"]
    with Reader(path) as r:
        counts = {c.topic: c.msgcount for c in r.connections}
    assert counts["/wx250s/command"] == 10 and counts[f"/wx250s/{ARM_REFUSED}"] == 10
    meta = read_episode(path).metadata
    assert meta["ik_refusals"] == 2 and sealed.events[0]["ik_refusals"] == 2


def test_a_first_takeover_on_the_last_tick_waits_for_its_a_h(tmp_path):
    """The episode's only nu=1 tick is its last, and its a_h comes after the end event.

    No a_h had been seen in the episode before (found by `mile-ros collect` in lockstep: the bag
    was sealed without it and the a_h counted as `outside_episode`).
    """
    rec, sealed = recorder(tmp_path, close_grace_s=5.0, max_close_wait_s=30.0)
    last = T0 + 9 * DT
    ep = [m for m in tick_messages(10, images=False) if m[0] != "action_human"]
    ep = [(t, vec(FLAG_NAMES, [float(st == last), 0, 0], st) if t == "intervention" else m, st)
          for t, m, st in ep]
    submit(rec, ep)
    time.sleep(0.5)
    assert not sealed.at, "sealed without the last tick's a_h"
    submit(rec, [("action_human", vec(ACTION, [-1, 0.5, 0, 9], last), last)])
    assert sealed.done.wait(2.0)
    rec.close()
    data = read_episode(sealed.events[0]["path"])
    assert len(data) == 10 and data.nu.tolist() == [False] * 9 + [True]
    assert data.a_h[-1].tolist() == [-1, 0.5, 0, 9] and sum(rec.dropped.values()) == 0


def test_an_end_stamped_between_ticks_waits_a_bounded_time_for_a_late_tick(tmp_path):
    """An end stamped after the last tick: a tick stamped before it may still be on its way."""
    rec, sealed = recorder(tmp_path, close_grace_s=0.6, max_close_wait_s=30.0)
    ep = tick_messages(10, images=False)
    late = [m for m in ep if m[2] == T0 + 9 * DT and m[0] != "episode"]
    end = ("episode", string(episode_event("end", 0, T0 + 9 * DT + DT // 2, success=True,
                                           reason="success")), 0)
    t_end = time.monotonic()
    submit(rec, [m for m in ep[:-1] if m not in late] + [end])
    time.sleep(0.2)
    submit(rec, late)                                          # within close_grace_s
    assert sealed.done.wait(5.0)
    rec.close()
    assert sealed.at[0] - t_end >= 0.5                          # waited for a late tick
    assert len(read_episode(sealed.events[0]["path"])) == 10


def test_no_refusal_flags_means_no_refusal_count(tmp_path):
    """An arm that counts no refusals (the simulated one) gives `ik_refusals: null`."""
    rec, events = make_recorder(tmp_path)
    submit(rec, tick_messages(6, images=False))
    rec.close()
    assert read_episode(events[0]["path"]).metadata["ik_refusals"] is None


def test_the_bag_is_durable_before_the_episode_is_declared_recorded(tmp_path, monkeypatch):
    """Make the storage file, metadata.yaml and the directories durable, in order, then say so.

    The storage file is fsynced, then metadata.yaml written, fsynced and renamed into place, then
    the bag directory and its parent fsynced; only then is the episode declared recorded.
    """
    order = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        order.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst, **kw):
        order.append(("replace", str(dst)))
        return real_replace(src, dst, **kw)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    rec = EpisodeRecorder(tmp_path / "out", 1, record_images=False, fsync=True,
                          on_event=lambda e: order.append(("event", e["event"])))
    submit(rec, tick_messages(6, images=False))
    rec.close()
    bag = next((tmp_path / "out" / "iter1").glob("episode_0000_*"))
    mcap, meta = str(next(bag.glob("*.mcap"))), str(bag / "metadata.yaml")
    steps = order[:order.index(("event", "episode_recorded"))]
    assert steps[-5:] == [("fsync", mcap), ("fsync", meta + ".tmp"), ("replace", meta),
                          ("fsync", str(bag)), ("fsync", str(bag.parent))], steps
    assert bags.bag_state(bag) == "complete"
    assert json.loads((bag.parent / bags.SIDECAR_LOG).read_text().splitlines()[0])["event"] == \
        "episode_recorded"


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_the_seal_writes_what_rosbags_own_close_writes(tmp_path, monkeypatch, storage):
    """Sealed with libyaml, a bag has the metadata rosbags' `Writer.close` would give it."""
    def write(path):
        with EpisodeBagWriter(path, storage=storage, record_images=False, namespace="wx250s",
                              fsync=False) as w:
            for topic, msg, s in refusal_flags(tick_messages(8, images=False), {3}):
                w.write(topic, msg, s)
            w.close({"episode": 0, "note": "a: b\nc", "names": ["x", "y"]})

    def info(path):
        data = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        for t in data["topics_with_message_count"]:
            t["topic_metadata"]["offered_qos_profiles"] = yaml.safe_load(
                t["topic_metadata"]["offered_qos_profiles"])
        return data

    ours, theirs = tmp_path / "ours" / "bag", tmp_path / "rosbags" / "bag"
    write(ours)
    monkeypatch.setattr(EpisodeBagWriter, "_seal", lambda self: False)
    write(theirs)
    assert info(ours) == info(theirs)
    with Reader(ours) as r:                               # an independent reader opens it
        counts = {c.topic: c.msgcount for c in r.connections}
        assert sum(1 for _ in r.messages()) == sum(counts.values())
    assert counts["/wx250s/arm/refused"] == 8 and counts["/wx250s/observation"] == 8
    assert read_episode(ours).metadata["note"] == "a: b\nc"
