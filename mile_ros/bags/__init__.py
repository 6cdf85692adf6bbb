"""Episode bags: writing and reading rosbag2 episodes with the pure-Python `rosbags` library.

ROS-free. One bag per episode under `<out>/iter<N>/episode_<index>_<utc>/`, rosbag2 version 8
(opens on Humble and later), MCAP storage by default, sqlite3 as an option. The episode's metadata
goes into the bag's custom metadata, which rosbags writes only at close, together with
`metadata.yaml` (written last, atomically): a bag directory without `metadata.yaml` is an episode
cut short by a crash (or a failed write), and its messages flushed so far can still be read
(`read_episode` returns it with `complete=False`; `load_episodes` skips it with a warning unless
asked to use it).

Parts:
- `EpisodeBagWriter`: one bag; `.write(topic, msg, stamp_ns)`, `.flush()`, `.close(metadata)`.
- `EpisodeRecorder`: the recorder node's core. Callbacks hand it serialized messages
  (`submit`, never blocks); a writer thread routes them by header stamp into the episode opened and
  closed by `episode` events, measures the tick rate, and survives write failures.
- `find_episode_bags`, `read_episode` -> `EpisodeData`, `read_bag_episodes`, `load_episodes`: for
  the trainer and tools; they also read bags of the same topics recorded by `ros2 bag record`
  (absolute topic names, no custom metadata, sqlite3 or mcap, one session split at the episode
  events it holds).

rclpy serializes a JointState whose arrays are empty with trailing padding that
`Typestore.deserialize_cdr` rejects; messages are therefore parsed with a tolerant deserializer,
and the writer trims the padding so that bags it writes are clean for any reader.
"""
from __future__ import annotations

import json
import logging
import math
import os
import queue
import re
import struct
import threading
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from mile_ros.interfaces import (ACTION_HUMAN, ACTION_ROBOT, EE_POSE, EPISODE, FLAG_NAMES, IMAGE,
                         IMAGE_TYPE, INTERVENTION, OBSERVATION, STEP_TOPICS, parse_episode_event)
from mile_ros.params import ConfigError
from mile_ros._io import json_default as _json_default, fsync_path as _fsync

FORMAT_VERSION = 1
BAG_VERSION = 8                         # version 9 metadata does not open on Humble
STORAGES = ("mcap", "sqlite3")
STORAGE_SUFFIXES = (".mcap", ".db3")
FORMAT_KEY = "mile_ros_format"          # custom-metadata key that marks this package's bags
SIDECAR_LOG = "recorder_log.jsonl"
REQUIRED_TOPICS = (OBSERVATION, ACTION_ROBOT, INTERVENTION)   # what a tick needs
HEADER_TYPES = {"sensor_msgs/msg/JointState", "sensor_msgs/msg/Image",
                "geometry_msgs/msg/PoseStamped"}
ITER_RE = re.compile(r"^iter(\d+)$")

log = logging.getLogger("mile_ros.bags")


class BagError(ValueError):
    """A bag (or directory of bags) that cannot be used; the message names the file and problem."""

    def __init__(self, path: os.PathLike | str, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


# --- serialization --------------------------------------------------------------------------
_TYPESTORE = None


def typestore():
    """rosbags typestore of ROS 2 Humble (message definitions common to Humble and later)."""
    global _TYPESTORE
    if _TYPESTORE is None:
        from rosbags.typesys import Stores, get_typestore

        _TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)
    return _TYPESTORE


def deserialize(raw: bytes | memoryview, typename: str) -> tuple[Any, int]:
    """(message, bytes used) from CDR, ignoring trailing padding; ValueError when malformed."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] not in (0, 1):
        raise ValueError(f"not CDR data for {typename} (bad encapsulation header)")
    ts = typestore()
    msgdef = ts.get_msgdef(typename)
    func = msgdef.deserialize_cdr_le if raw[1] else msgdef.deserialize_cdr_be
    try:
        msg, pos = func(memoryview(raw)[4:], 0, msgdef.cls, ts)
    except (struct.error, UnicodeDecodeError, ValueError, IndexError, TypeError) as e:
        raise ValueError(f"malformed {typename}: {type(e).__name__}: {e}") from None
    if pos + 4 > len(raw):
        raise ValueError(f"truncated {typename}")
    return msg, pos + 4


def clean_cdr(raw: bytes | memoryview, typename: str) -> tuple[bytes | memoryview, Any]:
    """CDR bytes without trailing padding (any reader accepts them), and the parsed message."""
    msg, used = deserialize(raw, typename)
    return (raw[:used] if used + 3 < len(raw) else raw), msg


def header_stamp_ns(raw: bytes | memoryview) -> int | None:
    """Header stamp of a CDR message whose first field is std_msgs/Header."""
    if len(raw) < 12:
        return None
    sec, nsec = struct.unpack_from("<iI" if raw[1] else ">iI", raw, 4)
    return sec * 1_000_000_000 + nsec


def _qos():
    """The publishers' QoS as recorded in metadata (reliable, volatile, keep last 10)."""
    from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness,
                                    QosReliability, QosTime)

    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, 10, QosReliability.RELIABLE, QosDurability.VOLATILE, zero,
               zero, QosLiveliness.AUTOMATIC, zero, False)


def _to_cdr(msg: Any, typename: str) -> bytes | memoryview:
    if isinstance(msg, (bytes, bytearray, memoryview)):
        return msg
    if hasattr(msg, "__msgtype__"):                      # a rosbags typestore message
        return typestore().serialize_cdr(msg, typename)
    if hasattr(type(msg), "get_fields_and_field_types"):  # an rclpy message
        from rclpy.serialization import serialize_message

        return serialize_message(msg)
    raise TypeError(f"cannot serialize {type(msg).__name__} as {typename}")


def topic_types(record_images: bool = True) -> dict[str, str]:
    """Relative topic name -> ROS type of everything an episode bag holds."""
    return {**STEP_TOPICS, **({IMAGE: IMAGE_TYPE} if record_images else {})}


def bag_topic(namespace: str, topic: str) -> str:
    """Absolute topic name as `ros2 bag record` would store it."""
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    return f"{ns}/{topic}"


def _json_custom(metadata: dict) -> dict[str, str]:
    return {str(k): json.dumps(v, default=_json_default) for k, v in metadata.items()}






# --- writing --------------------------------------------------------------------------------
class EpisodeBagWriter:
    """One episode bag (rosbag2 v8). Opening creates the directory; it refuses an existing one.

    `write(topic, msg, stamp_ns)`: `topic` relative (`observation`, `camera/image_raw`, ...),
    `msg` CDR bytes, an rclpy message or a rosbags message; `stamp_ns` the log time.
    `flush()` pushes what was written so far to the file (a crash then loses only what came
    after). `close(metadata)` writes the custom metadata and `metadata.yaml`, last.
    """

    def __init__(self, path: os.PathLike | str, storage: str = "mcap", record_images: bool = True,
                 namespace: str = "", fsync: bool = True):
        from rosbags.rosbag2 import StoragePlugin, Writer

        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
        self.path = Path(path)
        self.storage = storage
        self.topics = topic_types(record_images)
        self.counts: Counter = Counter()
        self.closed = False
        self._fsync = fsync
        self._writer = Writer(self.path, version=BAG_VERSION,
                              storage_plugin=StoragePlugin.MCAP if storage == "mcap"
                              else StoragePlugin.SQLITE3)
        self._writer.open()
        self._connections = {
            t: self._writer.add_connection(bag_topic(namespace, t), typename,
                                           typestore=typestore(), offered_qos_profiles=[_qos()])
            for t, typename in self.topics.items()}

    def write(self, topic: str, msg: Any, stamp_ns: int, clean: bool = True) -> None:
        """`clean`: trim rclpy's trailing padding (parses the message; images are left as is)."""
        if topic not in self._connections:
            raise ValueError(f"topic '{topic}' is not recorded; recorded: {sorted(self.topics)}")
        typename = self.topics[topic]
        data = _to_cdr(msg, typename)
        if clean and typename != IMAGE_TYPE:
            data = clean_cdr(data, typename)[0]
        self._writer.write(self._connections[topic], int(stamp_ns), data)
        self.counts[topic] += 1

    def flush(self) -> None:
        """Make everything written so far readable after a crash (reaches into rosbags' storage)."""
        storage = self._writer.storage
        if storage is None:
            return
        if hasattr(storage, "close_chunk") and hasattr(storage, "chunk"):   # MCAP
            if storage.chunk.msgs:
                storage.close_chunk()
            storage.bio.flush()
        elif hasattr(storage, "conn"):                                       # sqlite3
            storage.conn.commit()

    def close(self, metadata: dict | None = None) -> Path:
        for key, value in _json_custom({FORMAT_KEY: FORMAT_VERSION, **(metadata or {})}).items():
            self._writer.set_custom_data(key, value)
        self._writer.close()
        self.closed = True
        if self._fsync:
            for f in self.path.iterdir():
                _fsync(f)
            _fsync(self.path)
        return self.path

    def abort(self) -> None:
        """Stop writing without metadata (the bag stays recognisably incomplete)."""
        if not self.closed:
            self.closed = True
            try:
                self._writer.abort()
            except Exception:  # noqa: BLE001 - already failing; leave what is on disk
                pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        elif not self.closed:
            self.close()
        return False


def iteration_dir(out: os.PathLike | str, iteration: int) -> tuple[Path, int]:
    """`<out>/iter<N>`; an `out` that already ends in `iter<M>` is used as is (iteration M)."""
    out = Path(out)
    m = ITER_RE.match(out.name)
    if m:
        return out, int(m.group(1))
    return out / f"iter{int(iteration)}", int(iteration)


def check_writable(directory: Path, param: str = "out") -> None:
    """Create `directory` and prove it writable, or raise ConfigError naming it."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write_test_{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"output directory '{directory}' (parameter '{param}') is not "
                          f"writable: {e.strerror or e}") from None


def episode_bag_name(episode: int, when: datetime | None = None) -> str:
    when = when or datetime.now(timezone.utc)
    return f"episode_{int(episode):04d}_{when.strftime('%Y%m%dT%H%M%S')}Z"


@dataclass
class _Episode:
    """State of one episode being recorded (writer thread only)."""
    index: int
    path: Path
    start_event: dict
    start_stamp: int | None
    writer: EpisodeBagWriter | None = None
    end_event: dict | None = None
    end_stamp: int | None = None
    end_reason: str | None = None
    close_at: float = 0.0                               # earliest close (monotonic)
    close_by: float = 0.0                               # latest close, whatever still arrives
    topics_seen: set = field(default_factory=set)
    max_lag_s: dict = field(default_factory=dict)       # topic -> max (arrival - header stamp)
    failed: str | None = None
    errors: list = field(default_factory=list)
    tick_bits: dict = field(default_factory=dict)      # stamp -> bits obs=1, a_r=2, nu=4
    flags: dict = field(default_factory=dict)          # stamp -> (nu, hold, estop)
    state_names: list | None = None
    action_names: list | None = None
    checkpoint_ids: list = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    opened_utc: str = ""
    end_checkpoint: str | None = None


_TICK_BITS = {OBSERVATION: 1, ACTION_ROBOT: 2, INTERVENTION: 4}


class EpisodeRecorder:
    """Records episodes into `<out>/iter<N>/`: the ROS-free core of the recorder node.

    `submit(topic, raw_cdr)` is called from subscription callbacks: it only enqueues (it never
    blocks, and drops with a count when `max_queue_bytes` are waiting). A writer thread:
    - opens a bag on an `episode` start event; a message belongs to the episode whose
      [start stamp, end stamp] holds its header stamp. Messages are routed `reorder_window_s`
      after they arrive, and a bag is closed after its end event only once every topic has moved
      past the end stamp or gone quiet for `close_grace_s` (at most `max_close_wait_s`): DDS keeps
      no order across topics, and under load images may lag the episode events by a second;
    - flushes the open bag every `flush_period_s`: a crash loses at most the last
      `reorder_window_s + flush_period_s` of the episode in progress, never an earlier episode;
    - on a write failure (disk full, ...) marks the episode failed-to-record, reports it through
      `on_event` and the log, drops the rest of that episode and goes on with the next one.
    `close(reason)` closes the open episode with that end reason and stops the thread.
    """

    RECENT_KEEP_S = 10.0          # keep this much for a start event that arrives late
    RECENT_KEEP_BYTES = 256 << 20

    def __init__(self, out: os.PathLike | str, iteration: int = 1, *, storage: str = "mcap",
                 record_images: bool = True, control_rate_hz: float = 20.0,
                 min_rate_fraction: float = 0.9, robot_name: str = "", namespace: str = "",
                 flush_period_s: float = 1.0, close_grace_s: float = 0.5,
                 reorder_window_s: float = 3.5, max_close_wait_s: float = 10.0,
                 max_queue_bytes: int = 1 << 30, fsync: bool = True,
                 on_event: Callable[[dict], None] | None = None, logger=None,
                 writer_factory: Callable[..., EpisodeBagWriter] = EpisodeBagWriter):
        if storage not in STORAGES:
            raise ConfigError(f"parameter 'storage' must be one of {STORAGES}, got {storage!r}")
        if not control_rate_hz > 0:
            raise ConfigError(f"parameter 'control_rate_hz' must be > 0, got {control_rate_hz}")
        if not 0.0 <= min_rate_fraction <= 1.0:
            raise ConfigError("parameter 'min_rate_fraction' must be in [0, 1], "
                              f"got {min_rate_fraction}")
        if not flush_period_s > 0:
            raise ConfigError(f"parameter 'flush_period_s' must be > 0, got {flush_period_s}")
        if not reorder_window_s >= 0:
            raise ConfigError(f"parameter 'reorder_window_s' must be >= 0, got {reorder_window_s}")
        self.dir, self.iteration = iteration_dir(out, iteration)
        check_writable(self.dir)
        self.storage, self.record_images, self.namespace = storage, record_images, namespace
        self.robot_name = robot_name
        self.control_rate_hz, self.min_rate_fraction = float(control_rate_hz), min_rate_fraction
        self.flush_period_s, self.close_grace_s = flush_period_s, close_grace_s
        self.reorder_window_s, self.max_close_wait_s = reorder_window_s, max_close_wait_s
        self.max_queue_bytes, self.fsync = max_queue_bytes, fsync
        self.on_event, self.log = on_event, logger or log
        self.writer_factory = writer_factory
        self.topics = topic_types(record_images)
        self.received: Counter = Counter()      # per topic, counted in submit()
        self.written: Counter = Counter()       # per topic, written into some bag
        self.dropped: Counter = Counter()       # per reason
        self.episodes: list[dict] = []          # summaries of finished episodes (closed/failed)
        self.checkpoint_id: str | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._queued_bytes = 0
        self._queued_items = self._done_items = 0
        self.peak_queue_bytes = 0
        self._submitted: Counter = Counter()    # per topic: accepted by submit()
        self._routed: Counter = Counter()       # per topic: routed by the writer thread
        self._last_submit: dict[str, float] = {}
        self._watermark: dict[str, int] = {}     # per topic: latest header stamp routed
        self._lock = threading.Lock()
        self._current: _Episode | None = None
        self._closing: list[_Episode] = []
        # the last RECENT_KEEP_S of messages, [topic, raw, recv_ns, stamp, episode or None]: a start
        # event that arrives late claims those with stamps from its start, wherever they went
        self._recent: deque = deque()
        self._recent_bytes = 0
        self._closed: deque = deque(maxlen=20)  # (start, end) stamps of recently closed episodes
        self._pending: deque = deque()          # (monotonic arrival, item) held for reordering
        self._next_flush = time.monotonic() + flush_period_s
        self._stopped = False
        self.incomplete_found = self._report_incomplete()
        self._thread = threading.Thread(target=self._run, name="episode-bag-writer", daemon=True)
        self._thread.start()

    # -- called from any thread --
    def submit(self, topic: str, raw: bytes | memoryview, recv_ns: int | None = None) -> bool:
        self.received[topic] += 1
        if topic not in self.topics:
            self.dropped["unknown_topic"] += 1
            return False
        size = len(raw)
        with self._lock:
            if self._stopped or self._queued_bytes + size > self.max_queue_bytes:
                self.dropped["queue_full" if not self._stopped else "after_close"] += 1
                return False
            self._queued_bytes += size
            self.peak_queue_bytes = max(self.peak_queue_bytes, self._queued_bytes)
            self._submitted[topic] += 1
            self._last_submit[topic] = time.monotonic()
        self._put(("msg", topic, raw, time.time_ns() if recv_ns is None else recv_ns))
        return True

    def policy_active(self, text: str) -> None:
        """A `policy/active` message (JSON {id, state, reason})."""
        self._put(("active", text))

    def _put(self, item) -> None:
        with self._lock:
            self._queued_items += 1
        self._queue.put(item)

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def close(self, reason: str = "shutdown", timeout: float = 60.0) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._queue.put(("stop", reason))
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.log.error(f"recorder: writer thread did not finish within {timeout} s")

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until the queue is drained and no episode is closing (tests, tools)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._done_items == self._queued_items and not self._closing and not self._pending:
                return True
            time.sleep(0.01)
        return False

    # -- writer thread --
    def _run(self) -> None:
        while True:
            now = time.monotonic()
            deadlines = [self._next_flush] + [max(e.close_at, now + 0.05) for e in self._closing]
            if self._pending:
                deadlines.append(self._pending[0][0] + self.reorder_window_s)
            try:
                item = self._queue.get(timeout=max(0.0, min(deadlines) - time.monotonic()))
            except queue.Empty:
                item = None
            if item is not None and item[0] == "stop":
                self._guarded(self._route_pending, True)
                self._guarded(self._stop, item[1])
                return
            if item is not None:
                if item[0] == "msg" and item[1] != EPISODE:
                    self._pending.append((time.monotonic(), item))   # routed a little later
                else:
                    self._guarded(self._handle_now, item)
            self._guarded(self._route_pending)
            self._guarded(self._timers)

    def _guarded(self, func, *args) -> None:
        try:
            func(*args)
        except Exception as e:  # noqa: BLE001 - the writer thread must survive anything
            self.log.error(f"recorder: unexpected error: {type(e).__name__}: {e}")
            self.dropped["internal_error"] += 1

    def _release(self, item) -> None:
        with self._lock:
            self._queued_bytes -= len(item[2])

    def _handle_now(self, item) -> None:
        """Episode events and policy/active act at once, ahead of the messages still held."""
        try:
            if item[0] == "active":
                self._on_active(item[1])
            else:
                self._release(item)
                self._on_episode_message(item[2], item[3])
        finally:
            self._done_items += 1

    def _route_pending(self, everything: bool = False) -> None:
        """Route messages held for `reorder_window_s`: an episode event published before them on
        another topic may arrive after them, and must take effect first."""
        due = time.monotonic() - self.reorder_window_s
        while self._pending and (everything or self._pending[0][0] <= due):
            _, item = self._pending.popleft()
            try:
                self._release(item)
                self._route(*item[1:])
            finally:
                self._routed[item[1]] += 1
                self._done_items += 1

    def _timers(self) -> None:
        now = time.monotonic()
        for ep in [e for e in self._closing if self._ready_to_close(e, now)]:
            self._closing.remove(ep)
            self._finish(ep)
        if now >= self._next_flush:
            self._next_flush = now + self.flush_period_s
            for ep in self._open_episodes():
                if ep.writer is not None and not ep.failed:
                    try:
                        ep.writer.flush()
                    except Exception as e:  # noqa: BLE001
                        self._fail(ep, e)

    def _ready_to_close(self, ep: _Episode, now: float) -> bool:
        """Every topic of the episode has moved past its end stamp, or has gone quiet with
        nothing left to route (a topic may lag far behind the episode events under load)."""
        if now < ep.close_at:
            return False
        if now >= ep.close_by:
            return True
        for topic in ep.topics_seen:
            past_end = self._watermark.get(topic, -1) > ep.end_stamp
            quiet = (self._routed[topic] >= self._submitted[topic]
                     and now - self._last_submit.get(topic, 0.0) >= self.close_grace_s)
            if not (past_end or quiet):
                return False
        return True

    def _open_episodes(self) -> list[_Episode]:
        return self._closing + ([self._current] if self._current else [])

    def _on_active(self, text: str) -> None:
        try:
            data = json.loads(text)
        except ValueError:
            return
        if isinstance(data, dict) and data.get("state") == "active" and data.get("id"):
            self.checkpoint_id = str(data["id"])
            if self._current and self.checkpoint_id not in self._current.checkpoint_ids:
                self._current.checkpoint_ids.append(self.checkpoint_id)

    def _route(self, topic: str, raw, recv_ns: int) -> None:
        if topic == EPISODE:
            self._on_episode_message(raw, recv_ns)
            return
        stamp = header_stamp_ns(raw) if self.topics[topic] in HEADER_TYPES else None
        if stamp is not None and stamp > self._watermark.get(topic, -1):
            self._watermark[topic] = stamp
        target = self._target(stamp)
        if target is not None:
            self._write(target, topic, raw, recv_ns, stamp)
        if stamp is not None and (target is not None or self._current is None):
            self._recent.append([topic, raw, recv_ns, stamp, target])
            self._recent_bytes += len(raw)
            while self._recent and (self._recent[0][2] < recv_ns - self.RECENT_KEEP_S * 1e9
                                    or self._recent_bytes > self.RECENT_KEEP_BYTES):
                old = self._recent.popleft()
                self._recent_bytes -= len(old[1])
                if old[4] is None:
                    self.dropped["outside_episode"] += 1
        if target is not None or self._current is None:
            return
        if stamp is not None and any(lo <= stamp <= hi for lo, hi in self._closed):
            self.dropped["late"] += 1        # its episode's bag was already closed
        else:
            self.dropped["outside_episode"] += 1

    def _target(self, stamp: int | None) -> _Episode | None:
        ep = self._current
        if ep is not None and (stamp is None or ep.start_stamp is None or stamp >= ep.start_stamp):
            return ep
        for ep in reversed(self._closing):
            if stamp is not None and stamp <= ep.end_stamp and (
                    ep.start_stamp is None or stamp >= ep.start_stamp):
                return ep
        return None

    def _on_episode_message(self, raw, recv_ns: int) -> None:
        try:
            event = parse_episode_event(deserialize(raw, STEP_TOPICS[EPISODE])[0].data)
        except ValueError as e:
            self.log.warning(f"recorder: ignoring a malformed episode event: {e}")
            if self._current:
                self._current.errors.append(f"malformed episode event: {e}")
            self.dropped["bad_event"] += 1
            return
        stamp = event.get("stamp_ns")
        stamp = int(stamp) if isinstance(stamp, (int, float)) else None
        if event["event"] == "start":
            if self._current is not None:    # a start without an end: close what is open
                prev = self._current
                self._end(prev, None, "restarted", stamp - 1 if stamp is not None else None)
            self._start(event, stamp)
            if stamp is not None:
                self._current.max_lag_s["episode_start"] = (recv_ns - stamp) * 1e-9
            self._write(self._current, EPISODE, raw, recv_ns, None)
        else:
            ep = self._current
            if ep is None or int(event["episode"]) != ep.index:
                self.log.warning(f"recorder: end event for episode {event['episode']} without a "
                                 "matching start; ignored")
                self.dropped["bad_event"] += 1
                return
            self._write(ep, EPISODE, raw, recv_ns, None)
            if stamp is not None:
                ep.max_lag_s["episode_end"] = (recv_ns - stamp) * 1e-9
            self._end(ep, event, str(event.get("reason") or "end"), stamp)

    def _start(self, event: dict, stamp: int | None) -> None:
        index = int(event["episode"])
        name = episode_bag_name(index)
        path = self.dir / name
        n = 1
        while path.exists():
            path, n = self.dir / f"{name}_{n}", n + 1
        ep = _Episode(index=index, path=path, start_event=event, start_stamp=stamp,
                      opened_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        if self.checkpoint_id:
            ep.checkpoint_ids.append(self.checkpoint_id)
        it = event.get("iteration")
        if it is not None and it != self.iteration:
            ep.errors.append(f"start event says iteration {it}; recorded as iteration "
                             f"{self.iteration} (the directory's)")
        self._current = ep
        try:
            ep.writer = self.writer_factory(path, storage=self.storage,
                                            record_images=self.record_images,
                                            namespace=self.namespace, fsync=self.fsync)
        except Exception as e:  # noqa: BLE001
            self._fail(ep, e)
        self.log.info(f"recorder: episode {index} -> {path}")
        for entry in self._recent:        # messages of this episode that came before its start
            topic, raw, recv_ns, s, went_to = entry
            if stamp is not None and s >= stamp and went_to is not ep:
                self._write(ep, topic, raw, recv_ns, s)
                entry[4] = ep

    def _end(self, ep: _Episode, event: dict | None, reason: str, stamp: int | None) -> None:
        ep.end_event, ep.end_reason = event, reason
        if stamp is None:
            stamp = max(ep.tick_bits) if ep.tick_bits else (ep.start_stamp or 0)
        ep.end_stamp = stamp
        ep.close_at = time.monotonic() + self.reorder_window_s
        ep.close_by = ep.close_at + self.max_close_wait_s
        if self.checkpoint_id and self.checkpoint_id not in ep.checkpoint_ids:
            ep.checkpoint_ids.append(self.checkpoint_id)
        ep.end_checkpoint = self.checkpoint_id
        self._current = None
        self._closing.append(ep)

    def _write(self, ep: _Episode, topic: str, raw, recv_ns: int, stamp: int | None) -> None:
        if stamp is not None:
            ep.topics_seen.add(topic)
            lag = (recv_ns - stamp) * 1e-9
            if lag > ep.max_lag_s.get(topic, -1e9):
                ep.max_lag_s[topic] = lag
        if ep.failed:
            ep.dropped[topic] += 1
            self.dropped["record_failed"] += 1
            return
        data, msg = raw, None
        if topic != IMAGE:                     # small messages: parse, trim padding, keep stats
            try:
                data, msg = clean_cdr(raw, self.topics[topic])
            except (ValueError, KeyError) as e:
                if len(ep.errors) < 20:
                    ep.errors.append(f"{topic}: undecodable message written as received: {e}")
        try:
            ep.writer.write(topic, data, recv_ns, clean=False)
        except Exception as e:  # noqa: BLE001 - disk full, I/O error, ...
            self._fail(ep, e)
            ep.dropped[topic] += 1
            self.dropped["record_failed"] += 1
            return
        self.written[topic] += 1
        if msg is not None:
            self._observe(ep, topic, msg, stamp)

    def _observe(self, ep: _Episode, topic: str, msg, stamp: int | None) -> None:
        bit = _TICK_BITS.get(topic)
        if bit is None or stamp is None:
            return
        ep.tick_bits[stamp] = ep.tick_bits.get(stamp, 0) | bit
        if topic == OBSERVATION and ep.state_names is None:
            ep.state_names = list(msg.name)
        elif topic == ACTION_ROBOT and ep.action_names is None:
            ep.action_names = list(msg.name)
        elif topic == INTERVENTION:
            values = dict(zip(msg.name, np.asarray(msg.position, dtype=float)))
            ep.flags[stamp] = tuple(bool(values.get(n, 0.0) > 0.5) for n in FLAG_NAMES)

    def _fail(self, ep: _Episode, error: Exception) -> None:
        if ep.failed:
            return
        ep.failed = f"{type(error).__name__}: {error}"
        if ep.writer is not None:
            ep.writer.abort()
        self.log.error(f"recorder: episode {ep.index} FAILED TO RECORD ({ep.failed}); "
                       f"bag {ep.path} is incomplete; recording goes on with the next episode")
        self._emit({"event": "record_failed", "episode": ep.index, "path": str(ep.path),
                    "error": ep.failed})

    def _finish(self, ep: _Episode) -> None:
        self._closed.append((ep.start_stamp if ep.start_stamp is not None else -math.inf,
                             ep.end_stamp))
        meta = self._metadata(ep)
        if not ep.failed:
            try:
                ep.writer.close(meta)
            except Exception as e:  # noqa: BLE001
                self._fail(ep, e)
        summary = {"event": "episode_failed" if ep.failed else "episode_recorded",
                   "path": str(ep.path), **{k: meta[k] for k in SUMMARY_KEYS}}
        if ep.failed:
            summary["error"] = ep.failed
            summary["dropped_messages"] = dict(ep.dropped)
        self.episodes.append(summary)
        text = (f"{meta['ticks']} ticks, {meta['intervention_count']} interventions, "
                f"{meta['achieved_rate_hz']:.1f} Hz{' (LOW RATE)' if meta['low_rate'] else ''} "
                f"-> {ep.path.name}")
        if ep.failed:     # separate calls: rclpy's logger wants one severity per call site
            self.log.error(f"recorder: episode {ep.index} failed to record: {text}")
        else:
            self.log.info(f"recorder: episode {ep.index} recorded: {text}")
        self._emit(summary)

    def _metadata(self, ep: _Episode) -> dict:
        lo = ep.start_stamp if ep.start_stamp is not None else -math.inf
        hi = ep.end_stamp if ep.end_stamp is not None else math.inf
        bits = {s: b for s, b in ep.tick_bits.items() if lo <= s <= hi}
        ticks = sorted(s for s, b in bits.items() if b == 7)
        obs = sorted(s for s, b in bits.items() if b & 1)
        flags = [ep.flags[s] for s in ticks]
        nu = [f[0] for f in flags]
        flag_stamps = sorted(s for s in ep.flags if lo <= s <= hi)
        estops = [s for i, s in enumerate(flag_stamps)
                  if ep.flags[s][2] and (i == 0 or not ep.flags[flag_stamps[i - 1]][2])]
        event_rate = ep.start_event.get("control_rate_hz")
        rate = float(event_rate) if isinstance(event_rate, (int, float)) and event_rate > 0 \
            else self.control_rate_hz
        achieved = (len(obs) - 1) / ((obs[-1] - obs[0]) * 1e-9) if len(obs) > 1 and \
            obs[-1] > obs[0] else 0.0
        end = ep.end_event or {}
        success = end.get("success")
        return {
            "iteration": self.iteration, "episode": ep.index, "robot_name": self.robot_name,
            "success": success if isinstance(success, bool) else None,
            "end_reason": ep.end_reason, "start_stamp_ns": ep.start_stamp,
            "end_stamp_ns": ep.end_stamp, "seed": ep.start_event.get("seed"),
            "ticks": len(ticks), "observations": len(obs),
            "incomplete_ticks": len(bits) - len(ticks),
            "stray_ticks_outside_stamps": len(ep.tick_bits) - len(bits),
            "intervention_count": int(sum(nu)),
            "intervention_rate": float(np.mean(nu)) if nu else 0.0,
            "takeover_count": int(sum(1 for i, v in enumerate(nu)
                                      if v and (i == 0 or not nu[i - 1]))),
            "hold_ticks": int(sum(f[1] for f in flags)),
            "estop_events": estops, "estop_count": len(estops),
            "policy_checkpoint_id": ep.end_checkpoint or self.checkpoint_id,
            "policy_checkpoint_ids": ep.checkpoint_ids,
            "control_rate_hz": rate, "achieved_rate_hz": round(achieved, 3),
            "min_rate_fraction": self.min_rate_fraction,
            "low_rate": bool(len(obs) > 1 and achieved < self.min_rate_fraction * rate),
            "state_names": ep.state_names or [], "action_names": ep.action_names or [],
            "flag_names": list(FLAG_NAMES),
            "message_counts": dict(ep.writer.counts) if ep.writer else {},
            "record_errors": ep.errors + ([ep.failed] if ep.failed else []),
            "dropped_messages": sum(ep.dropped.values()),
            "max_arrival_lag_s": {k: round(v, 4) for k, v in sorted(ep.max_lag_s.items())},
            "record_images": self.record_images, "storage": self.storage,
            "start_event": ep.start_event, "end_event": ep.end_event,
            "opened_utc": ep.opened_utc,
            "closed_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    def _stop(self, reason: str) -> None:
        if self._current is not None:
            self._end(self._current, None, reason, None)
        for ep in list(self._closing):
            self._closing.remove(ep)
            self._finish(ep)
        self.dropped["outside_episode"] += sum(1 for e in self._recent if e[4] is None)
        self._recent.clear()
        self._recent_bytes = 0
        self._emit({"event": "recorder_stopped", "reason": reason, "received": dict(self.received),
                    "written": dict(self.written), "dropped": dict(self.dropped),
                    "peak_queue_bytes": self.peak_queue_bytes})

    def _emit(self, event: dict) -> None:
        try:
            with (self.dir / SIDECAR_LOG).open("a") as f:
                f.write(json.dumps({"utc": datetime.now(timezone.utc).isoformat(
                    timespec="seconds"), **event}, default=_json_default) + "\n")
        except OSError as e:
            self.log.warning(f"recorder: cannot append to {self.dir / SIDECAR_LOG}: {e}")
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception as e:  # noqa: BLE001 - a reporting problem must not stop recording
                self.log.warning(f"recorder: status report failed: {e}")

    def _report_incomplete(self) -> list[Path]:
        found = [p for p in _bags_in(self.dir) if bag_state(p) == "incomplete"]
        for p in found:
            self.log.warning(f"recorder: {p} is INCOMPLETE (no metadata.yaml: its recording "
                             "stopped mid-episode); the trainer skips it")
        return found


SUMMARY_KEYS = ("iteration", "episode", "success", "end_reason", "ticks", "intervention_count",
                "achieved_rate_hz", "low_rate", "policy_checkpoint_id", "message_counts",
                "record_errors")


# --- tolerant reading of unfinished bags ----------------------------------------------------
def _decompress(data: bytes, compression: str) -> bytes:
    if compression == "":
        return data
    if compression == "zstd":
        try:
            from compression import zstd  # type: ignore[import-not-found]
        except ImportError:
            from backports import zstd  # type: ignore[no-redef]
        return zstd.decompress(data)
    if compression == "lz4":
        import lz4.frame

        return lz4.frame.decompress(data)
    raise ValueError(f"unsupported MCAP chunk compression {compression!r}")


def scan_mcap(path: Path) -> tuple[dict[int, tuple[str, str]], list[tuple[int, int, bytes]], str]:
    """Read an MCAP file front to back, stopping quietly at a truncated tail.

    Returns (channels {id: (topic, type)}, messages [(channel id, log time, data)], note).
    Needs no summary or footer, so it reads what a killed writer flushed.
    """
    data = path.read_bytes()
    if len(data) <= 8 and b"\x89MCAP0\r\n".startswith(data):
        return {}, [], "nothing was flushed to the file"
    if data[:8] != b"\x89MCAP0\r\n":
        raise ValueError("not an MCAP file (bad magic)")
    schemas: dict[int, str] = {}
    channels: dict[int, tuple[str, str]] = {}
    messages: list[tuple[int, int, bytes]] = []

    def string(buf, pos):
        (n,) = struct.unpack_from("<I", buf, pos)
        return bytes(buf[pos + 4:pos + 4 + n]).decode(), pos + 4 + n

    def records(buf, pos, end):
        while pos + 9 <= end:
            op, size = struct.unpack_from("<BQ", buf, pos)
            if pos + 9 + size > end:
                return pos, "truncated record at the end"
            body = memoryview(buf)[pos + 9:pos + 9 + size]
            pos += 9 + size
            if op == 0x03:
                (sid,) = struct.unpack_from("<H", body, 0)
                schemas[sid] = string(body, 2)[0]
            elif op == 0x04:
                cid, sid = struct.unpack_from("<HH", body, 0)
                topic, _ = string(body, 4)
                channels[cid] = (topic, schemas.get(sid, ""))
            elif op == 0x05:
                cid, _, log_time = struct.unpack_from("<HIQ", body, 0)
                messages.append((cid, log_time, bytes(body[22:])))
            elif op == 0x06:
                _, _, raw_size, _ = struct.unpack_from("<QQQI", body, 0)
                compression, p = string(body, 28)
                (n,) = struct.unpack_from("<Q", body, p)
                inner = _decompress(bytes(body[p + 8:p + 8 + n]), compression)
                records(inner, 0, len(inner))
            elif op == 0x02:                            # footer: the file is complete
                return pos, ""
        return pos, "" if pos == end else "truncated record at the end"

    _, note = records(data, 8, len(data))
    return channels, messages, note


# --- reading --------------------------------------------------------------------------------
def _storage_files(path: Path) -> list[Path]:
    return sorted(f for f in path.iterdir() if f.suffix in STORAGE_SUFFIXES and f.is_file())


def bag_state(path: Path) -> str:
    """'complete' (metadata.yaml present), 'incomplete' (storage files only) or 'not_a_bag'."""
    path = Path(path)
    if path.is_file():
        return "complete" if path.suffix in STORAGE_SUFFIXES else "not_a_bag"
    if not path.is_dir():
        return "not_a_bag"
    if (path / "metadata.yaml").is_file():
        return "complete"
    if any(p.is_dir() for p in path.iterdir()):      # a directory of bags, not a bag
        return "not_a_bag"
    return "incomplete" if _storage_files(path) else "not_a_bag"


def _natural_key(p: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def _bags_in(directory: Path) -> list[Path]:
    """Bag candidates directly inside `directory`: sub-directories (not iter*) and loose files."""
    if not directory.is_dir():
        return []
    out = []
    for p in sorted(directory.iterdir(), key=_natural_key):
        if p.name.startswith("."):
            continue
        if p.is_dir() and not ITER_RE.match(p.name):
            out.append(p)
        elif p.is_file() and p.suffix in STORAGE_SUFFIXES:
            out.append(p)
    return out


def _iter_dirs(directory: Path) -> list[Path]:
    dirs = [p for p in directory.iterdir() if p.is_dir() and ITER_RE.match(p.name)]
    return sorted(dirs, key=lambda p: int(ITER_RE.match(p.name).group(1)))


def _find(dirs, include_earlier_iters: bool) -> tuple[list[Path], list[tuple[Path, str]]]:
    if isinstance(dirs, (str, os.PathLike)):
        dirs = [dirs]
    bags: list[Path] = []
    problems: list[tuple[Path, str]] = []
    for d in map(Path, dirs):
        if not d.exists():
            problems.append((d, "does not exist"))
            continue
        if bag_state(d) != "not_a_bag":
            bags.append(d)
            continue
        if not d.is_dir():
            problems.append((d, "is neither a bag nor a directory of bags"))
            continue
        groups: list[Path] = []
        m = ITER_RE.match(d.name)
        if m and include_earlier_iters:
            groups += [p for p in _iter_dirs(d.parent)
                       if int(ITER_RE.match(p.name).group(1)) < int(m.group(1))]
        groups.append(d)
        groups += _iter_dirs(d)                              # a run directory holding iter*/
        found = [b for g in groups for b in _bags_in(g)]
        if not found:
            problems.append((d, "no episode bags in this directory"))
        bags += found
    seen, unique = set(), []
    for b in bags:
        key = b.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(b)
    return unique, problems


def find_episode_bags(dirs, include_earlier_iters: bool = True) -> list[Path]:
    """Episode bags under `dirs`, in order (iteration, then episode).

    A directory may be a bag, a directory of bags (`iter3`), or a run directory holding `iter*`.
    Given `.../iter3`, the earlier `iter1`, `iter2` beside it come too unless
    `include_earlier_iters=False`. Raises BagError for a missing path or one with no bags.
    """
    bags, problems = _find(dirs, include_earlier_iters)
    if problems:
        raise BagError(*problems[0])
    return bags


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
        return float((len(s) - 1) / ((s[-1] - s[0]) * 1e-9)) if len(s) > 1 and s[-1] > s[0] else 0.0

    def to_dict(self) -> dict:
        """The learning core's episode dict: state, a_r, a_h, nu (+ image, ee_pos when read)."""
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
                  complete: bool = True) -> dict:
    """Relative topic -> absolute topic name in the bag, checking types."""
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
        if len(names) > 1:
            raise BagError(path, f"several topics look like '{rel}': {names}; pass namespace=")
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


def _parse_bag(path: Path, action_names, images: bool, namespace) -> _Parsed:
    path = Path(path)
    if not path.exists():
        raise BagError(path, "does not exist")
    complete, custom, conns, messages, note = _open_messages(path)
    mapping = _match_topics(path, conns, namespace, complete)
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
    """[(first stamp, last stamp, events)] of the episodes in a bag: one for this package's bags
    (their metadata says where the episode starts and ends); one per start event in a
    `ros2 bag record` of a whole session; the whole bag when it has no episode events."""
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
                      namespace: str | None = None) -> list[EpisodeData]:
    """The episodes in one bag: one for this package's bags, one per episode start event in a
    `ros2 bag record` of a whole session (or the whole bag when it has no episode events).

    A tick is a header stamp present on `observation`, `action_robot` and `intervention` within
    the episode's stamps; a_h is taken exactly where nu=1 (a tick with nu=1 and no a_h is dropped
    and reported, an a_h where nu=0 is ignored and reported: see `.issues`). `images=False` skips
    the camera; `image_size=(h, w)` resizes the aligned frames. An incomplete bag (no
    metadata.yaml) is read as far as it was flushed, with `complete=False`. Raises BagError
    naming the bag.
    """
    path = Path(path)
    parsed = _parse_bag(path, action_names, images, namespace)
    intervals = _intervals(parsed)
    episodes, empty = [], 0
    for i, (lo, hi, events) in enumerate(intervals):
        try:
            ep = _assemble(path, parsed, lo, hi, image_size)
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
                 namespace: str | None = None) -> EpisodeData:
    """Read a one-episode bag (see `read_bag_episodes` for what is read and how)."""
    episodes = read_bag_episodes(path, action_names, images=images, image_size=image_size,
                                 namespace=namespace)
    if len(episodes) > 1:
        raise BagError(path, f"holds {len(episodes)} episodes (several episode start events); "
                             "read it with read_bag_episodes() or load_episodes()")
    return episodes[0]


def _assemble(path: Path, parsed: _Parsed, lo: float, hi: float,
              image_size: tuple[int, int] | None) -> EpisodeData:
    """The ticks with stamps in [lo, hi], aligned."""
    per, complete, names = parsed.per, parsed.complete, parsed.action_names
    issues = list(parsed.issues)

    def inside(d: dict) -> dict:
        return {s: v for s, v in d.items() if lo <= s <= hi}

    obs, ar, iv, ah = (inside(per[OBSERVATION]), inside(per[ACTION_ROBOT]),
                       inside(per[INTERVENTION]), inside(per[ACTION_HUMAN]))
    outside = len(per[OBSERVATION]) - len(obs)
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


def load_episodes(dirs, only: bool = False, skip_bad: bool = False, *,
                  include_incomplete: bool = False, action_names: Sequence[str] | None = None,
                  images: bool = True, image_size: tuple[int, int] | None = None,
                  namespace: str | None = None, progress: bool = False,
                  ) -> tuple[list[EpisodeData], dict]:
    """Every episode under `dirs` (and the earlier iter* beside them unless `only`).

    Returns (episodes, report): report has `bags_found`, `episodes`, `ticks`, `interventions`,
    `used` [paths], `skipped` [(path, reason)], `issues` {path: [..]}, `low_rate` [paths], `dirs`.
    A bad bag or a directory without bags raises BagError naming it; `skip_bad=True` skips it with a
    warning instead. Incomplete bags (recording stopped mid-episode) are always skipped with a
    warning unless `include_incomplete=True`. All episodes must share state and action names.
    """
    bags, problems = _find(dirs, include_earlier_iters=not only)
    report: dict[str, Any] = {"dirs": [str(d) for d in ([dirs] if isinstance(
        dirs, (str, os.PathLike)) else dirs)], "bags_found": len(bags), "used": [],
        "skipped": [], "issues": {}, "low_rate": []}

    def bad(p: Path, reason: str, error: BagError | None = None) -> None:
        if not skip_bad:
            raise error or BagError(p, reason)
        log.warning(f"skipping {p}: {reason}")
        report["skipped"].append((str(p), reason))

    for p, reason in problems:
        bad(p, reason)
    episodes: list[EpisodeData] = []
    iterator: Iterable[Path] = bags
    if progress:
        from tqdm import tqdm

        iterator = tqdm(bags, desc="reading bags", unit="bag")
    for p in iterator:
        try:
            bag_episodes = read_bag_episodes(p, action_names, images=images,
                                             image_size=image_size, namespace=namespace)
        except BagError as e:
            if e.problem.startswith("incomplete bag (recording stopped"):
                log.warning(f"skipping {p}: incomplete bag (recording stopped mid-episode), "
                            f"nothing recoverable: {e.problem}")
                report["skipped"].append((str(p), f"incomplete: {e.problem}"))
                continue
            bad(p, e.problem, e)
            continue
        if not bag_episodes[0].complete and not include_incomplete:
            reason = (f"incomplete bag (recording stopped mid-episode; {len(bag_episodes[0])} "
                      "ticks recoverable with include_incomplete=True)")
            log.warning(f"skipping {p}: {reason}")
            report["skipped"].append((str(p), reason))
            continue
        first = episodes[0] if episodes else bag_episodes[0]
        mismatch = next((f"{what} {getattr(ep, what)} differ from {getattr(first, what)} in "
                         f"{first.path}" for ep in bag_episodes
                         for what in ("state_names", "action_names")
                         if getattr(ep, what) != getattr(first, what)), None)
        if mismatch:
            bad(p, mismatch)
            continue
        episodes += bag_episodes
        report["used"].append(str(p))
        issues = [i for ep in bag_episodes for i in ep.issues]
        if issues:
            report["issues"][str(p)] = issues
        if any(ep.metadata.get("low_rate") for ep in bag_episodes):
            report["low_rate"].append(str(p))
    report.update(episodes=len(episodes), ticks=int(sum(len(e) for e in episodes)),
                  interventions=int(sum(e.interventions for e in episodes)))
    return episodes, report
