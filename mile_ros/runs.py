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
    m = ITER_RE.match(out.name)
    if m:
        return out, int(m.group(1))
    return out / f"iter{int(iteration)}", int(iteration)
