"""Episode bags, writing: `EpisodeBagWriter` writes one episode bag; output-directory helpers.

`EpisodeBagWriter(path)` creates the bag directory (it refuses an existing one); the episode's
metadata goes, as JSON values, into the bag's custom metadata, which is written only at close,
together with `metadata.yaml` (written last): a bag directory without `metadata.yaml` is an
episode cut short by a crash (or a failed write).

Closing (sealing) writes what rosbags' `Writer.close` writes, but with libyaml instead of
rosbags' pure-Python YAML emitter, which took 80-450 ms per bag on a loaded 2-core machine
(libyaml: about 1 ms): a bag is sealed within a control tick of its end. With another rosbags than
the one `_seal` knows (the pinned range), rosbags' own close does it, slower.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from datetime import datetime, timezone
from io import StringIO
from pathlib import Path
from typing import Any

import yaml

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
        try:                                   # rendered now, not when the episode is sealed
            self._qos_texts = {c.id: _qos_text(c.ext.offered_qos_profiles)
                               for c in self._connections.values()}
        except AttributeError:                 # another rosbags: its own close
            self._qos_texts = None

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
        """Make everything written so far readable after a crash (with `fsync`: a power cut).

        Reaches into rosbags' storage (the supported rosbags range is pinned in setup.py);
        `check_flush_support` refuses a version it does not fit at start-up. The fsync here also
        keeps the one at the seal short: it has at most one flush period of data left to write.
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
            if self._fsync:
                os.fsync(storage.bio.fileno())
        else:
            storage.conn.commit()              # sqlite syncs its own commits

    def close(self, metadata: dict | None = None) -> Path:
        """Write the metadata and `metadata.yaml` (last); with `fsync`, durably.

        With `fsync`, before this returns: the storage file is fsynced before `metadata.yaml`
        appears, `metadata.yaml` is fsynced before its rename into place, then the bag's directory
        and the directory holding it: an episode declared recorded survives a power cut.
        """
        for key, value in _json_custom({FORMAT_KEY: FORMAT_VERSION, **(metadata or {})}).items():
            self._writer.set_custom_data(key, value)
        if not self._seal():
            self._writer.close()               # another rosbags: its own (slower) close
            if self._fsync:
                for f in sorted(self.path.iterdir()):
                    _fsync(f)
        self.closed = True
        if self._fsync:
            _fsync(self.path)
            _fsync(self.path.parent)
        return self.path

    def _seal(self) -> bool:
        """Do what rosbags 0.11's `Writer.close` does (uncompressed), with libyaml; or nothing.

        Returns False, having changed nothing, when this rosbags' writer is not the one it knows.
        """
        from rosbags.interfaces import ConnectionExtRosbag2

        w = self._writer
        try:
            if (self._qos_texts is None or w.compression_mode.name != "NONE"
                    or w.version != BAG_VERSION):
                return False
            storage, metapath = w.storage, w.metapath
            info = _bag_info(w, storage.path.name, ConnectionExtRosbag2, self._qos_texts)
            close = storage.close
        except AttributeError:
            return False
        close(w.version, _yaml(info).strip())
        w.storage = None
        if self._fsync:
            _fsync(storage.path)
        tmp = metapath.with_suffix(".yaml.tmp")
        with open(tmp, "w", encoding="utf8") as f:
            f.write(_yaml({"rosbag2_bagfile_information": info}))
            if self._fsync:
                f.flush()
                os.fsync(f.fileno())
        tmp.replace(metapath)
        return True

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


_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)    # libyaml when PyYAML has it


def _yaml(data) -> str:
    stream = StringIO()
    yaml.dump(data, stream, Dumper=_DUMPER, default_flow_style=False, sort_keys=False)
    return stream.getvalue()


def _qos_text(profiles) -> str:
    """Return a topic's offered QoS profiles as rosbag2 v8 metadata holds them (a YAML string)."""
    return _yaml([{
        "history": q.history.value, "depth": q.depth, "reliability": q.reliability.value,
        "durability": q.durability.value,
        "deadline": {"sec": q.deadline.sec, "nsec": q.deadline.nsec},
        "lifespan": {"sec": q.lifespan.sec, "nsec": q.lifespan.nsec},
        "liveliness": q.liveliness.value,
        "liveliness_lease_duration": {"sec": q.liveliness_lease_duration.sec,
                                      "nsec": q.liveliness_lease_duration.nsec},
        "avoid_ros_namespace_conventions": q.avoid_ros_namespace_conventions,
    } for q in profiles]).strip() if profiles else ""


def _bag_info(w, file_name: str, ext_type, qos_texts: dict) -> dict:
    """Return the `rosbag2_bagfile_information` of rosbags writer `w`, as its close builds it.

    `qos_texts`: connection id -> `_qos_text` of its offered QoS.
    """
    duration, start = max(0, w.max_timestamp - w.min_timestamp), w.min_timestamp
    count = sum(w.counts.values())
    return {
        "version": w.version, "storage_identifier": w.storage_plugin.name.lower(),
        "relative_file_paths": [file_name], "duration": {"nanoseconds": duration},
        "starting_time": {"nanoseconds_since_epoch": start}, "message_count": count,
        "topics_with_message_count": [
            {"topic_metadata": {"name": c.topic, "type": c.msgtype,
                                "serialization_format": c.ext.serialization_format,
                                "offered_qos_profiles": qos_texts[c.id],
                                "type_description_hash": c.digest},
             "message_count": w.counts[c.id]}
            for c in w.connections if isinstance(c.ext, ext_type)],
        "compression_format": "", "compression_mode": "",
        "files": [{"path": file_name, "starting_time": {"nanoseconds_since_epoch": start},
                   "duration": {"nanoseconds": duration}, "message_count": count}],
        "custom_data": w.custom_data or None, "ros_distro": "rosbags",
    }


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
    """Refuse to start recording (ConfigError) with a rosbags whose open bags cannot be flushed.

    The probe bag is then sealed, so that the first episode's seal finds everything built.
    """
    with tempfile.TemporaryDirectory(prefix="mile_ros_flush_probe_") as d:
        writer = EpisodeBagWriter(Path(d) / "probe", storage=storage, record_images=False,
                                  fsync=False)
        try:
            if not writer.can_flush():
                raise ConfigError(f"recorder parameter 'storage' ({storage}): "
                                  + flush_unsupported(storage))
            writer.close({})
        finally:
            writer.abort()
