"""Episode bags, lowest layer: the bag format's constants, BagError, and CDR (de)serialization.

A bag is rosbag2 version 8 (opens on Humble and later) in MCAP storage by default, sqlite3 as an
option; this package's bags carry `FORMAT_KEY` in their custom metadata. Messages are CDR, parsed
with the ROS 2 Humble typestore of the pure-Python `rosbags` library.

rclpy serializes a JointState whose arrays are empty with trailing padding that
`Typestore.deserialize_cdr` rejects; `deserialize` therefore tolerates trailing padding, and
`clean_cdr` returns the message without it, so that bags written from it are clean for any reader.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

from mile_ros.interfaces import IMAGE, IMAGE_TYPE, STEP_TOPICS

FORMAT_VERSION = 1
BAG_VERSION = 8                         # version 9 metadata does not open on Humble
STORAGES = ("mcap", "sqlite3")
STORAGE_SUFFIXES = (".mcap", ".db3")
FORMAT_KEY = "mile_ros_format"          # custom-metadata key that marks this package's bags
HEADER_TYPES = {"sensor_msgs/msg/JointState", "sensor_msgs/msg/Image",
                "geometry_msgs/msg/PoseStamped"}


class BagError(ValueError):
    """A bag (or directory of bags) that cannot be used; the message names the file and problem."""

    def __init__(self, path: os.PathLike | str, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


_TYPESTORE = None


def typestore():
    """Rosbags typestore of ROS 2 Humble (message definitions common to Humble and later)."""
    global _TYPESTORE
    if _TYPESTORE is None:
        from rosbags.typesys import Stores, get_typestore

        _TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)
    return _TYPESTORE


def warm_up(typenames) -> None:
    """Build the (de)serializers of these types now; rosbags builds each on first use (~15 ms)."""
    for typename in set(typenames):
        typestore().get_msgdef(typename)


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


def _qos(offered: dict | None = None):
    """Return a topic's offered QoS as recorded in the bag's metadata.

    `offered`: the publisher's {history, depth, reliability, durability} (ROS's enum values, as
    the recorder reads them from the graph); without it, reliable, volatile, keep last 10 (what
    the graph's publishers use for every topic but the transient-local ones).
    """
    from rosbags.interfaces import (
        Qos,
        QosDurability,
        QosHistory,
        QosLiveliness,
        QosReliability,
        QosTime,
    )

    zero = QosTime(0, 0)
    o = offered or {}
    return Qos(QosHistory(o.get("history", QosHistory.KEEP_LAST)), int(o.get("depth", 10)),
               QosReliability(o.get("reliability", QosReliability.RELIABLE)),
               QosDurability(o.get("durability", QosDurability.VOLATILE)), zero, zero,
               QosLiveliness.AUTOMATIC, zero, False)


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
