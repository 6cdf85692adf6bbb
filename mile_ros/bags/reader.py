"""Episode bags, reading: bags -> `EpisodeData`, the control ticks aligned by header stamp.

`read_episode` and `read_bag_episodes` serve the trainer (through `loading.load_episodes`) and
tools. They read this package's bags and also bags of the same topics recorded by `ros2 bag
record` (absolute topic names, no custom metadata, sqlite3 or mcap, one session split at the
episode events it holds). An incomplete bag (no `metadata.yaml`: its recording stopped
mid-episode) is read as far as it was flushed (`complete=False`); `load_episodes` skips it with a
warning unless asked to use it.
"""
from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from mile_ros.bags.codec import FORMAT_KEY, STORAGE_SUFFIXES, BagError, bag_topic, deserialize
from mile_ros.bags.index import _storage_files, bag_state, scan_mcap
from mile_ros.interfaces import (
    ACTION_HUMAN,
    ACTION_ROBOT,
    EE_POSE,
    EPISODE,
    FLAG_NAMES,
    IMAGE,
    IMAGE_TYPE,
    INTERVENTION,
    OBSERVATION,
    STEP_TOPICS,
)
from mile_ros.runs import ITER_RE

REQUIRED_TOPICS = (OBSERVATION, ACTION_ROBOT, INTERVENTION)   # what a tick needs

log = logging.getLogger("mile_ros.bags")     # one logger for the whole of mile_ros.bags


class SharedBagError(BagError):
    """A bag holding several robots' topics (one shared domain), read without naming a robot."""


@dataclass
class EpisodeData:
    """One episode's control ticks, aligned by header stamp. T ticks, S state dims, A action dims.

    a_h is NaN where nu is False. `images` (uint8 [T,H,W,3]) and `ee_pos` ([T,3]) are aligned to
    the ticks by the nearest preceding stamp (the first one for ticks before it).
    """

    path: Path
    complete: bool
    metadata: dict
    state: np.ndarray
    state_names: list[str]
    a_r: np.ndarray
    a_h: np.ndarray
    action_names: list[str]
    nu: np.ndarray
    hold: np.ndarray
    estop: np.ndarray
    stamps: np.ndarray
    images: np.ndarray | None = None
    image_stamps: np.ndarray | None = None
    ee_pos: np.ndarray | None = None
    issues: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.stamps)

    @property
    def success(self) -> bool | None:
        return self.metadata.get("success")

    @property
    def interventions(self) -> int:
        return int(self.nu.sum())

    @property
    def achieved_rate_hz(self) -> float:
        s = self.stamps
        return (float((len(s) - 1) / ((s[-1] - s[0]) * 1e-9))
                if len(s) > 1 and s[-1] > s[0] else 0.0)

    def to_dict(self) -> dict:
        """Return the learning core's episode dict: state, a_r, a_h, nu (+ image, ee_pos)."""
        d = {"state": self.state, "a_r": self.a_r, "a_h": self.a_h, "nu": self.nu}
        if self.images is not None:
            d["image"] = self.images
        if self.ee_pos is not None:
            d["ee_pos"] = self.ee_pos
        return d


def _decode_custom(custom: dict | None) -> dict:
    out = {}
    for k, v in (custom or {}).items():
        try:
            out[k] = json.loads(v) if isinstance(v, str) else v
        except ValueError:
            out[k] = v
    return out


def _open_messages(path: Path) -> tuple[bool, dict, list[tuple[str, str]], Iterator, str]:
    """(complete, custom metadata, [(topic, type)], iterator of (topic, type, raw), note)."""
    from rosbags.rosbag2 import Reader

    state = bag_state(path)
    if state == "not_a_bag":
        raise BagError(path, "not a rosbag2 bag: no metadata.yaml and no .mcap/.db3 file")
    if state == "complete":
        custom = {}
        if path.is_dir():
            import yaml

            meta_file = path / "metadata.yaml"
            try:
                doc = yaml.safe_load(meta_file.read_bytes())
                custom = doc["rosbag2_bagfile_information"].get("custom_data") or {}
                if not isinstance(custom, dict):
                    raise TypeError("custom_data is not a mapping")
            except (yaml.YAMLError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
                raise BagError(meta_file, f"unreadable bag metadata: {type(e).__name__}: "
                                          f"{str(e)[:200]}") from None
        reader = Reader(path)
        try:
            reader.open()
        except Exception as e:  # noqa: BLE001 - rosbags raises several kinds
            files = ", ".join(str(f) for f in _storage_files(path)) if path.is_dir() else path
            raise BagError(path, f"cannot open bag ({files}): {type(e).__name__}: "
                                 f"{str(e)[:300]} (truncated or corrupt?)") from None
        conns = [(c.topic, c.msgtype) for c in reader.connections]

        def it():
            try:
                for c, _, raw in reader.messages():
                    yield c.topic, c.msgtype, raw
            finally:
                reader.close()
        return True, custom, conns, it(), ""
    # incomplete: the recorder (or ros2 bag record) stopped before writing metadata.yaml
    channels: dict = {}
    msgs: list = []
    notes = []
    for f in _storage_files(path):
        try:
            if f.stat().st_size == 0:
                notes.append(f"{f.name}: empty file")
            elif f.suffix == ".mcap":
                ch, ms, note = scan_mcap(f)
                base = len(channels) * 1000
                channels.update({base + k: v for k, v in ch.items()})
                msgs += [(base + c, t, d) for c, t, d in ms if c in ch]
                if note:
                    notes.append(f"{f.name}: {note}")
            else:
                with Reader(f) as r:
                    base = len(channels) * 1000
                    for c in r.connections:
                        channels[base + c.id] = (c.topic, c.msgtype)
                    msgs += [(base + c.id, t, d) for c, t, d in r.messages()]
        except Exception as e:  # noqa: BLE001
            raise BagError(f, f"incomplete bag, unreadable: {type(e).__name__}: "
                              f"{str(e)[:300]}") from None
    msgs.sort(key=lambda m: m[1])
    conns = sorted(set(channels.values()))
    return False, {}, conns, ((channels[c][0], channels[c][1], d) for c, _, d in msgs), \
        "; ".join(notes)


def _match_topics(path: Path, conns: list[tuple[str, str]], namespace: str | None,
                  complete: bool = True, robot: str | None = None) -> dict:
    """Relative topic -> absolute topic name in the bag, checking types.

    `namespace`: only that namespace's topics. `robot`: when several namespaces' topics look
    like one (a `ros2 bag record -a` of a shared domain), that robot's.
    """
    wanted = {**STEP_TOPICS, IMAGE: IMAGE_TYPE}
    found: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for topic, msgtype in sorted(set(conns)):
        name = topic.strip("/")
        for rel in wanted:
            if namespace is not None:
                ok = topic == bag_topic(namespace, rel)
            else:
                ok = name == rel or name.endswith("/" + rel)
            if ok:
                found[rel].append((topic, msgtype))
    mapping = {}
    for rel, hits in found.items():
        names = sorted({t for t, _ in hits})
        if len(names) > 1 and robot and bag_topic(robot, rel) in names:
            names = [bag_topic(robot, rel)]
            hits = [h for h in hits if h[0] == names[0]]
        if len(names) > 1:
            raise SharedBagError(path, f"several topics look like '{rel}': {names} (several "
                                       f"robots on one domain); choose one with `train "
                                       f"--robot-name NAME` (robot=NAME in load_episodes)")
        bad = [ty for _, ty in hits if ty != wanted[rel]]
        if bad:
            raise BagError(path, f"topic {names[0]} has type {bad[0]}, expected {wanted[rel]}")
        mapping[rel] = names[0]
    missing = [t for t in REQUIRED_TOPICS if t not in mapping]
    if missing:
        have = sorted({t for t, _ in conns})
        if not complete and not have:
            raise BagError(path, "incomplete bag (recording stopped mid-episode) with nothing "
                                 "flushed to it")
        raise BagError(path, f"missing topics {missing} (a control tick needs "
                             f"{list(REQUIRED_TOPICS)}); the bag has {have or 'no topics'}")
    return mapping


def _image_array(msg) -> np.ndarray:
    h, w, step, enc = int(msg.height), int(msg.width), int(msg.step), msg.encoding.lower()
    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8uc1": 1, "8uc3": 3}
    if enc not in channels:
        raise ValueError(f"unsupported image encoding {msg.encoding!r}")
    c = channels[enc]
    buf = np.asarray(msg.data, dtype=np.uint8)
    if h * step > buf.size or step < w * c:
        raise ValueError(f"image data of {buf.size} bytes does not fit {w}x{h} step {step}")
    img = buf[:h * step].reshape(h, step)[:, :w * c].reshape(h, w, c)
    if c == 1:
        img = np.repeat(img, 3, axis=2)
    elif enc.startswith("bgr"):
        img = img[:, :, 2::-1]
    return np.ascontiguousarray(img[:, :, :3])


def _preceding(ref: np.ndarray, stamps: np.ndarray) -> np.ndarray:
    """Index into sorted `ref` of the nearest stamp <= each of `stamps` (0 before the first)."""
    return np.clip(np.searchsorted(ref, stamps, side="right") - 1, 0, len(ref) - 1)


@dataclass
class _Parsed:
    """Everything read from one bag, before it is cut into episodes."""

    complete: bool
    custom: dict
    per: dict
    image_raw: list
    events: list
    state_names: list | None
    action_names: list | None
    issues: list


def _parse_bag(path: Path, action_names, images: bool, namespace, robot=None) -> _Parsed:
    path = Path(path)
    if not path.exists():
        raise BagError(path, "does not exist")
    complete, custom, conns, messages, note = _open_messages(path)
    mapping = _match_topics(path, conns, namespace, complete, robot)
    role = {v: k for k, v in mapping.items()}
    wanted = {OBSERVATION, ACTION_ROBOT, ACTION_HUMAN, INTERVENTION, EE_POSE, EPISODE}
    if images:
        wanted.add(IMAGE)
    issues: list[str] = [note] if note else []
    per: dict[str, dict[int, Any]] = defaultdict(dict)
    dup: Counter = Counter()
    events: list[dict] = []
    image_raw: list[tuple[int, Any]] = []
    state_names = None
    names = list(action_names) if action_names is not None else None
    try:
        for i, (topic, msgtype, raw) in enumerate(messages):
            rel = role.get(topic)
            if rel not in wanted:
                continue
            try:
                msg = deserialize(raw, msgtype)[0]
            except ValueError as e:
                raise BagError(path, f"message {i} on {topic}: {e}") from None
            if rel == EPISODE:
                try:
                    events.append(json.loads(msg.data))
                except ValueError:
                    issues.append("an undecodable episode event")
                continue
            stamp = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
            if rel == IMAGE:
                image_raw.append((stamp, msg))
                continue
            if stamp in per[rel]:
                dup[rel] += 1
                continue
            if rel == OBSERVATION:
                if state_names is None:
                    state_names = list(msg.name)
                if list(msg.name) != state_names:
                    raise BagError(path, f"{topic} changes dimension names within the episode: "
                                         f"{state_names} then {list(msg.name)}")
                pos = np.asarray(msg.position, dtype=np.float64)
                if len(pos) != len(state_names):
                    raise BagError(path, f"{topic}: {len(pos)} values for {len(state_names)} "
                                         "names")
                per[rel][stamp] = pos
            elif rel in (ACTION_ROBOT, ACTION_HUMAN):
                if names is None:
                    names = list(msg.name)
                index = {n: j for j, n in enumerate(msg.name)}
                if any(n not in index for n in names):
                    missing = [n for n in names if n not in index]
                    raise BagError(path, f"{topic} lacks action dimensions {missing}; "
                                         f"has {list(msg.name)}")
                pos = np.asarray(msg.position, dtype=np.float64)
                if len(pos) != len(msg.name):
                    raise BagError(path, f"{topic}: {len(pos)} values for {len(msg.name)} names")
                per[rel][stamp] = pos[[index[n] for n in names]]
            elif rel == INTERVENTION:
                values = dict(zip(msg.name, np.asarray(msg.position, dtype=float)))
                if "nu" not in values:
                    raise BagError(path, f"{topic} has no 'nu' flag; has {list(msg.name)}")
                per[rel][stamp] = tuple(bool(values.get(n, 0.0) > 0.5) for n in FLAG_NAMES)
            elif rel == EE_POSE:
                p = msg.pose.position
                per[rel][stamp] = np.array([p.x, p.y, p.z], dtype=np.float64)
    except BagError:
        raise
    except Exception as e:  # noqa: BLE001 - storage-level failure while iterating
        raise BagError(path, f"cannot read messages: {type(e).__name__}: {str(e)[:300]} "
                             "(truncated or corrupt?)") from None
    for rel, n in dup.items():
        issues.append(f"{n} duplicate stamps on {rel} (first kept)")
    return _Parsed(complete, custom, per, image_raw, events, state_names, names, issues)


def _stamp_of(event: dict) -> int | None:
    s = event.get("stamp_ns")
    return int(s) if isinstance(s, (int, float)) and not isinstance(s, bool) else None


def _intervals(parsed: _Parsed) -> list[tuple[float, float, list[dict]]]:
    """Return [(first stamp, last stamp, events)] of the episodes in a bag.

    One for this package's bags (their metadata says where the episode starts and ends); one per
    start event in a `ros2 bag record` of a whole session; the whole bag when it has no episode
    events.
    """
    meta = _decode_custom(parsed.custom)
    lo, hi = meta.get("start_stamp_ns"), meta.get("end_stamp_ns")
    if FORMAT_KEY in meta:
        return [(lo if isinstance(lo, int) else -math.inf,
                 hi if isinstance(hi, int) else math.inf, parsed.events)]
    starts = sorted((e for e in parsed.events if e.get("event") == "start"
                     and _stamp_of(e) is not None), key=_stamp_of)
    if len(starts) <= 1:
        lo = _stamp_of(starts[0]) if starts else -math.inf
        ends = [e for e in parsed.events if e.get("event") == "end" and _stamp_of(e) is not None
                and _stamp_of(e) >= lo]
        return [(lo, _stamp_of(ends[0]) if ends else math.inf, parsed.events)]
    out = []
    for i, start in enumerate(starts):
        lo = _stamp_of(start)
        nxt = _stamp_of(starts[i + 1]) - 1 if i + 1 < len(starts) else math.inf
        end = next((e for e in parsed.events if e.get("event") == "end"
                    and e.get("episode") == start.get("episode")
                    and _stamp_of(e) is not None and lo <= _stamp_of(e) <= nxt), None)
        out.append((lo, _stamp_of(end) if end else nxt, [start] + ([end] if end else [])))
    return out


def read_bag_episodes(path: os.PathLike | str, action_names: Sequence[str] | None = None, *,
                      images: bool = True, image_size: tuple[int, int] | None = None,
                      namespace: str | None = None, robot: str | None = None,
                      ) -> list[EpisodeData]:
    """Read the episodes in one bag.

    One for this package's bags, one per episode start event in a `ros2 bag record` of a whole
    session (or the whole bag when it has no episode events).

    A tick is a header stamp present on `observation`, `action_robot` and `intervention` within
    the episode's stamps; a_h is taken exactly where nu=1 (a tick with nu=1 and no a_h is dropped
    and reported, an a_h where nu=0 is ignored and reported: see `.issues`). `images=False` skips
    the camera; `image_size=(h, w)` resizes the aligned frames. An incomplete bag (no
    metadata.yaml) is read as far as it was flushed, with `complete=False`. Raises BagError
    naming the bag.
    """
    path = Path(path)
    parsed = _parse_bag(path, action_names, images, namespace, robot)
    intervals = _intervals(parsed)
    episodes, empty = [], 0
    for i, (lo, hi, events) in enumerate(intervals):
        # this episode's share of the bag: from its start to the next episode's start
        own = (-math.inf if i == 0 else lo,
               intervals[i + 1][0] if i + 1 < len(intervals) else math.inf)
        try:
            ep = _assemble(path, parsed, lo, hi, image_size, own)
        except BagError:
            if len(intervals) == 1:
                raise
            empty += 1
            continue
        ep.metadata = _episode_metadata(path, parsed.complete, parsed.custom, events, ep)
        if len(intervals) > 1:
            ep.metadata["bag_episode_index"] = i
        episodes.append(ep)
    if not episodes:
        raise BagError(path, f"none of its {len(intervals)} episodes has a complete control tick")
    if empty:
        episodes[0].issues.append(f"{empty} episodes in this bag without complete ticks skipped")
    return episodes


def read_episode(path: os.PathLike | str, action_names: Sequence[str] | None = None, *,
                 images: bool = True, image_size: tuple[int, int] | None = None,
                 namespace: str | None = None, robot: str | None = None) -> EpisodeData:
    """Read a one-episode bag (see `read_bag_episodes` for what is read and how)."""
    episodes = read_bag_episodes(path, action_names, images=images, image_size=image_size,
                                 namespace=namespace, robot=robot)
    if len(episodes) > 1:
        raise BagError(path, f"holds {len(episodes)} episodes (several episode start events); "
                             "read it with read_bag_episodes() or load_episodes()")
    return episodes[0]


def _assemble(path: Path, parsed: _Parsed, lo: float, hi: float,
              image_size: tuple[int, int] | None,
              own: tuple[float, float] = (-math.inf, math.inf)) -> EpisodeData:
    """Return the ticks with stamps in [lo, hi], aligned.

    `own`: the part of the bag that is this episode's (in a bag of several episodes, up to the
    next one's start); observations there but outside [lo, hi] are reported.
    """
    per, complete, names = parsed.per, parsed.complete, parsed.action_names
    issues = list(parsed.issues)

    def inside(d: dict) -> dict:
        return {s: v for s, v in d.items() if lo <= s <= hi}

    obs, ar, iv, ah = (inside(per[OBSERVATION]), inside(per[ACTION_ROBOT]),
                       inside(per[INTERVENTION]), inside(per[ACTION_HUMAN]))
    outside = sum(1 for s in per[OBSERVATION] if own[0] <= s < own[1] and not lo <= s <= hi)
    if outside and math.isfinite(hi - lo):
        issues.append(f"{outside} observations outside the episode's stamps (ignored)")
    common = sorted(set(obs) & set(ar) & set(iv))
    for rel, d in ((OBSERVATION, obs), (ACTION_ROBOT, ar), (INTERVENTION, iv)):
        n = len(set(d) - set(common))
        if n:
            issues.append(f"{n} {rel} stamps without the rest of their tick (ignored)")
    no_ah = [s for s in common if iv[s][0] and s not in ah]
    if no_ah:
        issues.append(f"{len(no_ah)} ticks with nu=1 but no action_human (dropped)")
    extra_ah = [s for s in ah if s not in iv or not iv[s][0]]
    if extra_ah:
        issues.append(f"{len(extra_ah)} action_human messages at ticks without nu=1 (ignored)")
    ticks = [s for s in common if not (iv[s][0] and s not in ah)]
    if not ticks:
        kind = "incomplete bag (recording stopped mid-episode) with" if not complete else "bag has"
        raise BagError(path, f"{kind} no complete control ticks (observation, action_robot and "
                             "intervention with equal stamps)")
    A = len(names or [])
    stamps = np.array(ticks, dtype=np.int64)
    flags = np.array([iv[s] for s in ticks], dtype=bool).reshape(len(ticks), len(FLAG_NAMES))
    nu = flags[:, 0]
    a_h = np.full((len(ticks), A), np.nan)
    for i, s in enumerate(ticks):
        if nu[i]:
            a_h[i] = ah[s]
    data = EpisodeData(
        path=path, complete=complete, metadata={}, state=np.stack([obs[s] for s in ticks]),
        state_names=parsed.state_names or [], a_r=np.stack([ar[s] for s in ticks]).reshape(-1, A),
        a_h=a_h, action_names=names or [], nu=nu, hold=flags[:, 1], estop=flags[:, 2],
        stamps=stamps, issues=issues)
    if per[EE_POSE]:
        ee_stamps = np.array(sorted(per[EE_POSE]), dtype=np.int64)
        data.ee_pos = np.stack([per[EE_POSE][s] for s in ee_stamps])[_preceding(ee_stamps, stamps)]
    image_raw = sorted((x for x in parsed.image_raw if lo <= x[0] <= hi), key=lambda x: x[0])
    if image_raw:
        img_stamps = np.array([s for s, _ in image_raw], dtype=np.int64)
        idx = _preceding(img_stamps, stamps)
        try:
            frames = {j: _image_array(image_raw[j][1]) for j in sorted(set(idx.tolist()))}
            if image_size is not None:
                import cv2

                h, w = image_size
                frames = {j: cv2.resize(f, (int(w), int(h)), interpolation=cv2.INTER_AREA)
                          for j, f in frames.items()}
            data.images = np.stack([frames[j] for j in idx])
            data.image_stamps = img_stamps[idx]
        except ValueError as e:
            raise BagError(path, f"camera images: {e}") from None
    return data


def _episode_metadata(path: Path, complete: bool, custom: dict, events: list[dict],
                      data: EpisodeData) -> dict:
    meta = _decode_custom(custom)
    ours = FORMAT_KEY in meta
    start = next((e for e in events if e.get("event") == "start"), {})
    end = next((e for e in reversed(events) if e.get("event") == "end"), {})
    parent = path.parent if path.is_dir() or path.suffix in STORAGE_SUFFIXES else path
    m = ITER_RE.match(parent.name)
    derived = {
        "iteration": int(m.group(1)) if m else start.get("iteration"),
        "episode": start.get("episode"),
        "success": end.get("success") if isinstance(end.get("success"), bool) else None,
        "end_reason": end.get("reason") if end else ("crash" if not complete else None),
    }
    for k, v in derived.items():
        meta.setdefault(k, v)
    meta.update({
        "source": "mile_ros" if ours else "external", "complete": complete, "path": str(path),
        "read_ticks": len(data), "read_interventions": data.interventions,
        "read_rate_hz": round(data.achieved_rate_hz, 3),
        "state_names": meta.get("state_names") or data.state_names,
        "action_names": data.action_names,
    })
    if not ours:
        meta.update(ticks=len(data), intervention_count=data.interventions)
    return meta
