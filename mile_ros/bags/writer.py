"""Episode bags, writing: `EpisodeBagWriter` writes one episode bag; output-directory helpers.

`EpisodeBagWriter(path)` creates the bag directory (it refuses an existing one); the episode's
metadata goes, as JSON values, into the bag's custom metadata, which rosbags writes only at close,
together with `metadata.yaml` (written last): a bag directory without `metadata.yaml` is an
episode cut short by a crash (or a failed write).
"""
from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mile_ros._io import fsync_path as _fsync
from mile_ros._io import json_default as _json_default
from mile_ros.bags.codec import (
    BAG_VERSION,
    FORMAT_KEY,
    FORMAT_VERSION,
    STORAGES,
    BagError,
    _qos,
    _to_cdr,
    bag_topic,
    clean_cdr,
    topic_types,
    typestore,
)
from mile_ros.interfaces import IMAGE_TYPE
from mile_ros.params import ConfigError


def _json_custom(metadata: dict) -> dict[str, str]:
    return {str(k): json.dumps(v, default=_json_default) for k, v in metadata.items()}


class EpisodeBagWriter:
    """One episode bag (rosbag2 v8). Opening creates the directory; it refuses an existing one.

    `write(topic, msg, stamp_ns)`: `topic` relative (`observation`, `camera/image_raw`, ...),
    `msg` CDR bytes, an rclpy message or a rosbags message; `stamp_ns` the log time.
    `flush()` pushes what was written so far to the file (a crash then loses only what came
    after). `close(metadata)` writes the custom metadata and `metadata.yaml`, last.
    """

    def __init__(self, path: os.PathLike | str, storage: str = "mcap", record_images: bool = True,
                 namespace: str = "", fsync: bool = True, qos: dict | None = None):
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
                                           typestore=typestore(),
                                           offered_qos_profiles=[_qos((qos or {}).get(t))])
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

    def can_flush(self) -> bool:
        """Whether this rosbags version's open storage is the one `flush()` knows how to push."""
        storage = self._writer.storage
        mcap = all(hasattr(storage, a) for a in ("close_chunk", "chunk", "bio"))
        return mcap if self.storage == "mcap" else hasattr(storage, "conn")

    def flush(self) -> None:
        """Make everything written so far readable after a crash.

        Reaches into rosbags' storage (the supported rosbags range is pinned in setup.py);
        `check_flush_support` refuses a version it does not fit at start-up.
        """
        storage = self._writer.storage
        if storage is None:
            return
        if not self.can_flush():
            raise BagError(self.path, flush_unsupported(self.storage))
        if self.storage == "mcap":
            if storage.chunk.msgs:
                storage.close_chunk()
            storage.bio.flush()
        else:
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


def flush_unsupported(storage: str) -> str:
    """Say why this rosbags cannot be used to record, with the supported range."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        have = version("rosbags")
    except PackageNotFoundError:
        have = "unknown"
    return (f"rosbags {have} cannot flush an open {storage} bag the way mile_ros does (supported: "
            f"rosbags >=0.11,<0.12): a crash would lose the whole episode in progress; install "
            f"a supported rosbags")


def check_flush_support(storage: str) -> None:
    """Refuse to start recording (ConfigError) with a rosbags whose open bags cannot be flushed."""
    with tempfile.TemporaryDirectory(prefix="mile_ros_flush_probe_") as d:
        writer = EpisodeBagWriter(Path(d) / "probe", storage=storage, record_images=False,
                                  fsync=False)
        try:
            if not writer.can_flush():
                raise ConfigError(f"recorder parameter 'storage' ({storage}): "
                                  + flush_unsupported(storage))
        finally:
            writer.abort()
