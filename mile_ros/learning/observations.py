"""Training observations from recorded episodes (mile_ros.bags.EpisodeData). ROS-free.

Two configurations (the paper: stacked states in simulation, camera + end effector on the robot):
- state: the recorded `observation` vector, stacked over FRAME_STACK ticks (current first) by the
  learning core;
- image: the camera frame at each tick (resized to `image_size` px square) plus the end-effector
  position taken from the same `observation` vector (IMAGE_STATE_NAMES), so the policy server can
  feed the policy from what the arm publishes. No frame stacking.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from mile_ros.learning.specs import FRAME_STACK

IMAGE_STATE_NAMES = ("ee_x", "ee_y", "ee_z")
DEFAULT_IMAGE_SIZE = 64


class ObservationError(ValueError):
    """Episodes that cannot give the configured observations; names the bag and what is missing."""


def obs_spec(state_names: Sequence[str], image_size: int | None = None):
    """Return the learning core's ObsSpec for state (image_size None) or image observations."""
    from mile_ros.learning.specs import ObsSpec

    if image_size is None:
        return ObsSpec(state_names=list(state_names), frame_stack=FRAME_STACK)
    missing = [n for n in IMAGE_STATE_NAMES if n not in state_names]
    if missing:
        raise ObservationError(f"image policies need the end-effector position {missing} in the "
                               f"`observation` vector; it has {list(state_names)}")
    return ObsSpec(state_names=list(IMAGE_STATE_NAMES), frame_stack=1,
                   image_shape=(int(image_size), int(image_size), 3))


def action_spec(action_names: Sequence[str]):
    from mile_ros.learning.specs import ActionSpec

    return ActionSpec(names=list(action_names), kind="continuous")


def episode_arrays(episode, spec) -> dict:
    """One EpisodeData -> the core's episode dict for `spec`.

    See mile_ros.learning.loop.prepare_episodes.
    """
    index = {n: i for i, n in enumerate(episode.state_names)}
    missing = [n for n in spec.state_names if n not in index]
    if missing:
        raise ObservationError(f"{episode.path}: observation lacks {missing}; "
                               f"has {list(episode.state_names)}")
    state = np.asarray(episode.state, dtype=np.float64)[:, [index[n] for n in spec.state_names]]
    out = {"state": state, "a_r": np.asarray(episode.a_r, dtype=np.float64),
           "a_h": np.asarray(episode.a_h, dtype=np.float64), "nu": np.asarray(episode.nu, bool)}
    if spec.image_shape is not None:
        images = episode.images
        if images is None or len(images) != len(state):
            raise ObservationError(f"{episode.path}: no camera images on camera/image_raw "
                                   "(record with the camera node, or train without --image)")
        h, w = spec.image_shape[:2]
        if images.shape[1:3] != (h, w):
            images = resize(images, h, w)
        out["image"] = np.ascontiguousarray(images, dtype=np.uint8)
    return out


def resize(images: np.ndarray, h: int, w: int) -> np.ndarray:
    import cv2

    return np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in images])


def training_episodes(episodes, spec) -> list[dict]:
    return [episode_arrays(e, spec) for e in episodes]


def data_counts(arrays: list[dict]) -> dict:
    ticks = int(sum(len(e["nu"]) for e in arrays))
    interventions = int(sum(int(e["nu"].sum()) for e in arrays))
    return {"episodes": len(arrays), "ticks": ticks, "interventions": interventions,
            "intervention_rate": interventions / ticks if ticks else 0.0}
