"""Run directories: the one place for the `<out>/iterN` naming.

A run directory `<out>` holds one folder per training iteration, `iter1`, `iter2`, ...; the
recorder writes an iteration's episode bags into `<out>/iter<N>/`, and the bag readers find
earlier iterations beside a given `iter<N>` by this same rule.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

ITER_RE = re.compile(r"^iter(\d+)$")      # an iteration folder's name; group 1 is N


def iteration_dir(out: os.PathLike | str, iteration: int) -> tuple[Path, int]:
    """`<out>/iter<N>`; an `out` that already ends in `iter<M>` is used as is (iteration M)."""
    out = Path(out)
    n = iteration_of(out)
    if n is not None:
        return out, n
    return out / iteration_name(iteration), int(iteration)


def iteration_name(iteration: int) -> str:
    """Return the folder name of iteration N: `iter<N>`."""
    return f"iter{int(iteration)}"


def iteration_of(path: os.PathLike | str) -> int | None:
    """N when `path` is an `iter<N>` folder, else None."""
    m = ITER_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


def split_out(out: os.PathLike | str, iteration: int) -> tuple[Path, int]:
    """`DIR/iter<N>` -> (DIR, N); any other DIR -> (DIR, iteration)."""
    path = Path(out)
    n = iteration_of(path)
    return (path.parent, n) if n is not None else (path, int(iteration))


def checkpoints_dir(bags: os.PathLike | str) -> Path:
    """Return where checkpoints trained on `bags` go.

    `<out>/checkpoints` beside the `iter<N>` folders (`bags` is `<out>/iter<N>`, a bag inside one,
    or any other directory D -> `D/checkpoints`).
    """
    first = Path(bags)
    if iteration_of(first) is not None:
        return first.parent / "checkpoints"
    if first.is_file() or (first / "metadata.yaml").is_file():     # a single bag
        first = first.parent
        if iteration_of(first) is not None:
            return first.parent / "checkpoints"
    return first / "checkpoints"
