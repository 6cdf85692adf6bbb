"""The file and JSON helpers every writer uses.

Bags, checkpoints, reports, results: fsync, atomic write, JSON conversion.
"""
from __future__ import annotations

import math
import os
import uuid
from pathlib import Path

import numpy as np


def fsync_path(path) -> None:
    """Fsync a file or directory, best effort (some filesystems refuse it on directories)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def json_default(v):
    """`json.dumps(default=...)` for numpy scalars/arrays, tuples, sets and paths."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (np.ndarray, tuple, set)):
        return list(v)
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"not JSON serializable: {type(v).__name__}")


def to_json(x):
    """Convert `x` to strict JSON values.

    Numpy scalars and arrays as numbers and lists, paths and unknown objects as strings,
    non-finite floats as None (JSON has no NaN).
    """
    if isinstance(x, dict):
        return {str(k): to_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set, np.ndarray)):
        return [to_json(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


def atomic_write(path, data: str | bytes, durable: bool = False) -> Path:
    """Write `data` to `path` through a temporary file in the same directory and a rename.

    A reader sees the old content or the new, never a part. `durable`: fsync the file before the
    rename and the directory after it (survives a power cut).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_path(path.parent)
    return path
