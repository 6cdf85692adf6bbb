"""Small file helpers shared by the bag, checkpoint and report writers."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def fsync_path(path) -> None:
    """fsync a file or directory, best effort (some filesystems refuse it on directories)."""
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
