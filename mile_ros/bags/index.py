"""Episode bags, finding: which paths are bags, in which state, and where a run's bags are.

A bag is a rosbag2 directory (`metadata.yaml` plus `.mcap`/`.db3` storage files) or a loose
storage file. A bag directory with storage files but no `metadata.yaml` is incomplete: its
recording stopped mid-episode; `scan_mcap` reads what such an MCAP file had flushed. Bags are
found in a directory of bags (`iter3`), in a run directory holding `iter*`, or given directly,
and are ordered naturally (iteration, then episode).
"""
from __future__ import annotations

import os
import re
import struct
from pathlib import Path

from mile_ros.bags.codec import STORAGE_SUFFIXES, BagError
from mile_ros.runs import ITER_RE


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


def _storage_files(path: Path) -> list[Path]:
    return sorted(f for f in path.iterdir() if f.suffix in STORAGE_SUFFIXES and f.is_file())


def bag_state(path: Path) -> str:
    """Return 'complete', 'incomplete' or 'not_a_bag'.

    Complete: metadata.yaml present and not empty. Incomplete: storage files only, or an empty
    metadata.yaml (a power cut after its rename): its recording stopped before it was sealed.
    """
    path = Path(path)
    if path.is_file():
        return "complete" if path.suffix in STORAGE_SUFFIXES else "not_a_bag"
    if not path.is_dir():
        return "not_a_bag"
    meta = path / "metadata.yaml"
    if meta.is_file() and meta.stat().st_size > 0:   # empty: cut by a power loss after rename
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
