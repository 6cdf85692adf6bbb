"""What every camera source shares: the source names, the start-up error and the parameter checks.

A source has `read()` (the next frame, uint8 RGB [height, width, 3], or None) and `close()`.
An unavailable device or file is a start-up error (`CameraUnavailable`) naming the `device` value.
"""
from __future__ import annotations

from mile_ros.params import ConfigError

SOURCES = ("sim", "opencv")


class CameraUnavailable(ConfigError):
    """The camera device or video file cannot be opened or read."""


def check_params(p: dict) -> None:
    if p["source"] not in SOURCES:
        raise ConfigError(f"camera parameter 'source' must be one of {SOURCES}, "
                          f"got {p['source']!r}")
    for name in ("width", "height"):
        if not 1 <= p[name] <= 8192:
            raise ConfigError(f"camera parameter '{name}' must be in [1, 8192], got {p[name]}")
    if not p["rate_hz"] > 0:
        raise ConfigError(f"camera parameter 'rate_hz' must be > 0, got {p['rate_hz']}")
