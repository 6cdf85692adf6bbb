"""Episode bags, recording: `EpisodeRecorder`, the ROS-free threaded core of the recorder node.

Subscription callbacks hand it serialized messages (`submit`, never blocks); a writer thread routes
them by header stamp into the episode bag opened and closed by `episode` events, measures the tick
rate, and survives write failures. Each episode's summary, and each failure, is appended to
`<out>/iter<N>/recorder_log.jsonl` (`SIDECAR_LOG`).
"""
from __future__ import annotations

import json
import logging
import math
import os
import queue
import threading
import time
from collections import Counter, deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from mile_ros._io import json_default as _json_default
from mile_ros.bags.codec import (
    HEADER_TYPES,
    STORAGES,
    clean_cdr,
    deserialize,
    header_stamp_ns,
    topic_types,
    warm_up,
)
from mile_ros.bags.episode import _TICK_BITS, _Episode, episode_metadata
from mile_ros.bags.index import _bags_in, bag_state
from mile_ros.bags.writer import (
    EpisodeBagWriter,
    check_flush_support,
    check_writable,
    episode_bag_name,
)
from mile_ros.interfaces import (
    ACTION_HUMAN,
    ACTION_ROBOT,
    ACTIVE,
    ARM_REFUSED,
    COMMAND,
    EE_POSE,
    EPISODE,
    FLAG_NAMES,
    IMAGE,
    INTERVENTION,
    JOINT_STATES,
    OBSERVATION,
    STEP_TOPICS,
    parse_episode_event,
    parse_policy_answer,
)
from mile_ros.params import ConfigError
from mile_ros.runs import iteration_dir

SIDECAR_LOG = "recorder_log.jsonl"
# topics published once per control tick, stamped with the tick
TICK_TOPICS = (OBSERVATION, ACTION_ROBOT, INTERVENTION, COMMAND, EE_POSE, JOINT_STATES,
               ARM_REFUSED)

log = logging.getLogger("mile_ros.bags")     # one logger for the whole of mile_ros.bags


class EpisodeRecorder:
    """Records episodes into `<out>/iter<N>/`: the ROS-free core of the recorder node.

    `submit(topic, raw_cdr)` is called from subscription callbacks: it only enqueues (it never
    blocks, and drops with a count when `max_queue_bytes` are waiting). A writer thread:
    - opens a bag on an `episode` start event; a message belongs to the episode whose
      [start stamp, end stamp] holds its header stamp. Messages are routed `reorder_window_s`
      after they arrive (an episode event published before them on another topic may arrive
      after them), except those an episode's end event has already claimed: from the end event
      on, messages stamped up to its end stamp are routed at once, and the bag is sealed
      (metadata written, fsynced) as soon as every tick up to the end stamp is complete (no
      fixed wait: at once when the end event comes last), waiting at most `close_grace_s` for
      what cannot be known to come and `max_close_wait_s` for what is known to be missing, so an
      episode that has ended survives a crash of the recorder a tick later. DDS keeps no order
      across topics, and under load images may lag the episode events by a second;
    - flushes the open bag every `flush_period_s`: a crash loses at most the last
      `reorder_window_s + flush_period_s` of the episode in progress (the shipped window is 0),
      never an earlier episode;
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
                 reorder_window_s: float = 0.0, max_close_wait_s: float = 10.0,
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
        if writer_factory is EpisodeBagWriter:
            check_flush_support(storage)       # before anything is recorded
        self.storage, self.record_images, self.namespace = storage, record_images, namespace
        self.robot_name = robot_name
        self.control_rate_hz, self.min_rate_fraction = float(control_rate_hz), min_rate_fraction
        self.flush_period_s, self.close_grace_s = flush_period_s, close_grace_s
        self.reorder_window_s, self.max_close_wait_s = reorder_window_s, max_close_wait_s
        self.max_queue_bytes, self.fsync = max_queue_bytes, fsync
        self.on_event, self.log = on_event, logger or log
        self.writer_factory = writer_factory
        self.topics = topic_types(record_images)
        warm_up(self.topics.values())           # not at the end of the first episode
        self.received: Counter = Counter()      # per topic, counted in submit()
        self.written: Counter = Counter()       # per topic, written into some bag
        self.dropped: Counter = Counter()       # per reason
        self.episodes: list[dict] = []          # summaries of finished episodes (closed/failed)
        self.checkpoint_id: str | None = None
        self.publisher_qos: dict[str, dict] = {}   # topic -> its publisher's QoS (the node's)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._queued_bytes = 0
        self._queued_items = self._done_items = 0
        self.peak_queue_bytes = 0
        self._submitted: Counter = Counter()    # per topic: accepted by submit()
        self._routed: Counter = Counter()       # per topic: routed by the writer thread
        self._last_submit: dict[str, float] = {}
        self._watermark: dict[str, int] = {}     # per topic: latest header stamp routed
        self._arrived: dict[str, int] = {}       # per topic: latest header stamp taken from DDS
        self._lock = threading.Lock()
        self._current: _Episode | None = None
        self._closing: list[_Episode] = []
        # the last RECENT_KEEP_S of messages, [topic, raw, recv_ns, stamp, episode or None]: a
        # start event that arrives late claims those with stamps from its start, wherever they went
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
        """Take a `policy/active` message (JSON {id, state, reason})."""
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
                if item[0] == "msg" and item[1] != EPISODE and not self._claimed(item):
                    self._pending.append((time.monotonic(), item))   # routed a little later
                elif item[0] == "msg" and item[1] != EPISODE:
                    self._guarded(self._route_item, item)
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
        """Route messages held for `reorder_window_s`.

        An episode event published before them on another topic may arrive after them, and must
        take effect first.
        """
        due = time.monotonic() - self.reorder_window_s
        while self._pending and (everything or self._pending[0][0] <= due):
            self._route_item(self._pending.popleft()[1])

    def _route_item(self, item) -> None:
        try:
            self._release(item)
            self._route(*item[1:])
        finally:
            self._routed[item[1]] += 1
            self._done_items += 1

    def _stamp_of(self, item) -> int | None:
        """Return the header stamp of a held message (None for types without a header)."""
        topic, raw = item[1], item[2]
        return header_stamp_ns(raw) if self.topics.get(topic) in HEADER_TYPES else None

    def _claimed(self, item) -> bool:
        """Whether an ended episode waits for this message (stamped up to its end stamp)."""
        stamp = self._stamp_of(item)
        if stamp is not None and stamp > self._arrived.get(item[1], -1):
            self._arrived[item[1]] = stamp
        return stamp is not None and any(stamp <= e.end_stamp for e in self._closing)

    def _route_claimed(self, end_stamp: int) -> None:
        """Route at once every held message stamped up to `end_stamp` (its episode has ended)."""
        keep = deque()
        for arrival, item in self._pending:
            stamp = self._stamp_of(item)
            if stamp is not None and stamp <= end_stamp:
                self._route_item(item)
            else:
                keep.append((arrival, item))
        self._pending = keep

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
        """Return whether every topic of the episode is past its end stamp or quiet.

        Each topic has moved past its end stamp, or has gone quiet with nothing left to route (a
        topic may lag far behind the episode events under load).
        """
        if now < ep.close_at:
            return False
        if now >= ep.close_by:
            return True
        if ep.sealed_early:
            return all(self._sealed_topic_done(ep, topic, now) for topic in self._awaited(ep))
        for topic in self._awaited(ep):
            past_end = self._watermark.get(topic, -1) > ep.end_stamp
            quiet = (self._routed[topic] >= self._submitted[topic]
                     and now - self._last_submit.get(topic, 0.0) >= self.close_grace_s)
            if not (past_end or quiet):
                return False
        return True

    def _awaited(self, ep: _Episode) -> set:
        """Return the topics seen in the episode, and a_h once a tick in it says nu=1."""
        return ep.topics_seen | {ACTION_HUMAN for s, f in ep.flags.items()
                                 if f[0] and (ep.start_stamp or 0) <= s <= ep.end_stamp}

    def _sealed_topic_done(self, ep: _Episode, topic: str, now: float) -> bool:
        """Whether an ended episode has everything of `topic` up to its end stamp.

        Per topic, messages arrive in stamp order, so a topic that has reached the end stamp is
        complete. A topic stamped with the control ticks is complete at the episode's last tick
        once no later tick can come: once the observations have reached the end stamp (the arm
        and the arbiter stamp an end event with a tick whose observation came before it), or
        `close_grace_s` after the end was taken (an end stamped between ticks). a_h once every
        tick whose flags say nu=1 has one; any other topic once quiet for `close_grace_s`.
        """
        arrived = self._arrived.get(topic, -1)
        if arrived >= ep.end_stamp:
            return True
        if topic == ACTION_HUMAN:
            return self._sealed_topic_done(ep, INTERVENTION, now) and all(
                s in ep.human_stamps for s, f in ep.flags.items()
                if f[0] and ep.start_stamp is not None and ep.start_stamp <= s <= ep.end_stamp)
        if topic in TICK_TOPICS:
            last_tick = max((s for s in ep.tick_bits if s <= ep.end_stamp), default=None)
            known = (self._arrived.get(OBSERVATION, -1) >= ep.end_stamp
                     or now - ep.ended_at >= self.close_grace_s)
            return last_tick is not None and arrived >= last_tick and known
        return now - max(self._last_submit.get(topic, 0.0), ep.ended_at) >= self.close_grace_s

    def _open_episodes(self) -> list[_Episode]:
        return self._closing + ([self._current] if self._current else [])

    def _on_active(self, text: str) -> None:
        data = parse_policy_answer(text)
        if data is not None and data["state"] == ACTIVE and data.get("id"):
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
                                            namespace=self.namespace, fsync=self.fsync,
                                            qos=dict(self.publisher_qos))
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
        ep.sealed_early = event is not None      # an end event: the episode's stamps are known
        ep.ended_at = time.monotonic()
        ep.close_at = time.monotonic() + (0.0 if ep.sealed_early else self.reorder_window_s)
        ep.close_by = ep.close_at + self.max_close_wait_s
        if ep.sealed_early:
            self._route_claimed(stamp)
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
        if topic == ACTION_HUMAN and stamp is not None:
            ep.human_stamps.add(stamp)
        if msg is not None:
            self._observe(ep, topic, msg, stamp)

    def _observe(self, ep: _Episode, topic: str, msg, stamp: int | None) -> None:
        bit = _TICK_BITS.get(topic)
        if topic == ARM_REFUSED and stamp is not None:
            ep.refused[stamp] = bool(np.any(np.asarray(msg.position, dtype=float) > 0.5))
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
        meta = episode_metadata(ep, self)
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
                "record_errors", "ik_refusals")
