"""`mile-ros demo --compare NAME`: a baseline trained on the demo's own bags, beside MILE.

Every iteration, after MILE is trained, each named baseline (mile_ros.learning.baselines: the
rules the paper's benchmark runs) is trained on every bag recorded so far -- the very data MILE
learned from, collected by MILE's policies -- from the initial policy, as the benchmark refits
its baselines, with the demo's training budget and seed. It is evaluated alone on the demo's
fixed evaluation seeds, so the table compares MILE and the baseline on one data set and one set
of episodes. The baseline never drives the robot: it is trained and evaluated off-line (ROS-free).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mile_ros.learning.baselines import BASELINES, BaselineConfig

NAMES = tuple(BASELINES)


def check_names(names: list[str]) -> list[str]:
    """Return `names` without repeats; ValueError naming --compare for an unknown one."""
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ValueError(f"--compare: unknown baseline(s) {', '.join(unknown)}; "
                         f"known: {', '.join(NAMES)}")
    return list(dict.fromkeys(names))


def with_executed(arrays: dict) -> dict:
    """Add `executed` to episode arrays: a_h where the person was in control, a_r elsewhere."""
    nu = np.asarray(arrays["nu"], bool)
    a_h = np.nan_to_num(np.asarray(arrays["a_h"], np.float64))
    return {**arrays, "executed": np.where(nu[:, None], a_h, np.asarray(arrays["a_r"]))}


def bag_arrays(bag_dirs: list[Path], obs_spec) -> list[dict]:
    """Load the training arrays of every episode in `bag_dirs` and the iter* folders before."""
    from mile_ros.learning import observations as obs
    from mile_ros.tools import train as trainer

    size = obs_spec.image_shape[0] if obs_spec.image_shape else None
    episodes, _report = trainer.load_data([str(d) for d in bag_dirs], image_size=size,
                                          progress=False, say=lambda _m: None)
    return [with_executed(a) for a in obs.training_episodes(episodes, obs_spec)]


def train_baseline(name: str, bag_dirs: list[Path], initial, seed: int, epochs_scale: float,
                   settings: dict, demos: list[dict] | None = None):
    """Train baseline `name` from the `initial` MileModel on the bags so far; a MileModel.

    `demos`: expert demonstrations {"state", "action"} (the baseline's D0; none in the demo).
    """
    from mile_ros.learning import MileConfig
    from mile_ros.tools import train as trainer

    config = trainer.scaled_config(MileConfig, seed=seed, epochs_scale=epochs_scale, c=None,
                                   settings=settings)
    episodes = bag_arrays(bag_dirs, initial.obs_spec)
    return BASELINES[name](initial, episodes, demos or [], BaselineConfig(), config)
