"""Loading episodes for training: every episode under directories of bags, with a report.

`load_episodes` finds the bags (`index`), reads each (`reader`), skips or refuses bad ones, and
checks that all episodes share their state and action names. A bag of a shared domain (`ros2 bag
record -a` of several robots) is read for the robot(s) named.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from mile_ros.bags.codec import BagError
from mile_ros.bags.index import _find
from mile_ros.bags.reader import EpisodeData, SharedBagError, log, read_bag_episodes


def _robots_episodes(path: Path, robot: str | Sequence[str] | None, action_names, **kw,
                     ) -> list[EpisodeData]:
    """Return one bag's episodes; of a shared-domain bag, each named robot's in turn.

    With one name (or none) this is `read_bag_episodes`. With several, a bag of one robot's
    topics is read as it is, and a bag of several robots' topics once per named robot it holds
    (its episodes' metadata names the robot: `robot_name`); one that holds none of them raises
    the SharedBagError that names its topics.
    """
    if robot is None or isinstance(robot, str):
        return read_bag_episodes(path, action_names, robot=robot, **kw)
    try:
        return read_bag_episodes(path, action_names, **kw)
    except SharedBagError as shared:
        out = []
        for name in robot:
            try:
                episodes = read_bag_episodes(path, action_names, robot=name, **kw)
            except SharedBagError:          # not one of this bag's robots
                continue
            for ep in episodes:
                ep.metadata["robot_name"] = name
            out += episodes
        if not out:
            raise shared from None
        return out


def load_episodes(dirs, only: bool = False, skip_bad: bool = False, *,
                  include_incomplete: bool = False, action_names: Sequence[str] | None = None,
                  images: bool = True, image_size: tuple[int, int] | None = None,
                  namespace: str | None = None, robot: str | Sequence[str] | None = None,
                  progress: bool = False) -> tuple[list[EpisodeData], dict]:
    """Every episode under `dirs` (and the earlier iter* beside them unless `only`).

    Returns (episodes, report): report has `bags_found`, `episodes`, `ticks`, `interventions`,
    `used` [paths], `skipped` [(path, reason)], `issues` {path: [..]}, `low_rate` [paths], `dirs`.
    A bad bag or a directory without bags raises BagError naming it; `skip_bad=True` skips it with
    a warning instead. Incomplete bags (recording stopped mid-episode) are always skipped with a
    warning unless `include_incomplete=True`. All episodes must share state and action names.
    `robot`: in a bag holding several robots' topics (one domain), read that robot's; several
    names: each named robot's episodes in such a bag (one bag, several robots' episodes), while a
    bag of one robot's topics is read once whatever the names.
    """
    bags, problems = _find(dirs, include_earlier_iters=not only)
    report: dict[str, Any] = {"dirs": [str(d) for d in ([dirs] if isinstance(
        dirs, (str, os.PathLike)) else dirs)], "bags_found": len(bags), "used": [],
        "skipped": [], "issues": {}, "low_rate": []}

    def bad(p: Path, reason: str, error: BagError | None = None) -> None:
        if not skip_bad:
            raise error or BagError(p, reason)
        log.warning(f"skipping {p}: {reason}")
        report["skipped"].append((str(p), reason))

    for p, reason in problems:
        bad(p, reason)
    episodes: list[EpisodeData] = []
    iterator: Iterable[Path] = bags
    if progress:
        from tqdm import tqdm

        iterator = tqdm(bags, desc="reading bags", unit="bag")
    for p in iterator:
        try:
            bag_episodes = _robots_episodes(p, robot, action_names, images=images,
                                            image_size=image_size, namespace=namespace)
        except BagError as e:
            if e.problem.startswith("incomplete bag (recording stopped"):
                log.warning(f"skipping {p}: incomplete bag (recording stopped mid-episode), "
                            f"nothing recoverable: {e.problem}")
                report["skipped"].append((str(p), f"incomplete: {e.problem}"))
                continue
            bad(p, e.problem, e)
            continue
        if not bag_episodes[0].complete and not include_incomplete:
            reason = (f"incomplete bag (recording stopped mid-episode; {len(bag_episodes[0])} "
                      "ticks recoverable with include_incomplete=True)")
            log.warning(f"skipping {p}: {reason}")
            report["skipped"].append((str(p), reason))
            continue
        first = episodes[0] if episodes else bag_episodes[0]
        mismatch = next((f"{what} {getattr(ep, what)} differ from {getattr(first, what)} in "
                         f"{first.path}" for ep in bag_episodes
                         for what in ("state_names", "action_names")
                         if getattr(ep, what) != getattr(first, what)), None)
        if mismatch:
            bad(p, mismatch)
            continue
        episodes += bag_episodes
        report["used"].append(str(p))
        issues = [i for ep in bag_episodes for i in ep.issues]
        if issues:
            report["issues"][str(p)] = issues
        if any(ep.metadata.get("low_rate") for ep in bag_episodes):
            report["low_rate"].append(str(p))
    report.update(episodes=len(episodes), ticks=int(sum(len(e) for e in episodes)),
                  interventions=int(sum(e.interventions for e in episodes)))
    return episodes, report
