"""What a policy sees and does: observation and action specs, normalisation, frame stacking.

Frame stacking (the one rule used by training, serving, the benchmark and the evaluation): the
current state first, then the k-1 previous ones, an episode's start padded with its first state;
`FRAME_STACK` (4: the current state and the previous three, as the paper) is the default.
Normalisation: per-dimension mean/std of the raw state, stored with the model.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

FRAME_STACK = 4   # the paper's state stacking: the current state and the previous three


_ACTION_TOL = 1e-3


@dataclass(frozen=True)
class ObsSpec:
    """Observation layout: named state dimensions, frame stack depth, optional camera image."""

    state_names: tuple
    frame_stack: int = FRAME_STACK
    image_shape: tuple | None = None

    def __post_init__(self):
        names = tuple(str(n) for n in self.state_names)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"state_names must be non-empty and unique, got {list(names)}")
        object.__setattr__(self, "state_names", names)
        if int(self.frame_stack) < 1:
            raise ValueError(f"frame_stack must be >= 1, got {self.frame_stack}")
        object.__setattr__(self, "frame_stack", int(self.frame_stack))
        if self.image_shape is not None:
            shape = tuple(int(v) for v in self.image_shape)
            if len(shape) != 3 or shape[2] != 3:
                raise ValueError(f"image_shape must be (H, W, 3), got {self.image_shape}")
            object.__setattr__(self, "image_shape", shape)

    @property
    def state_dim(self) -> int:
        return len(self.state_names)

    @property
    def stacked_dim(self) -> int:
        return self.state_dim * self.frame_stack

    def to_dict(self) -> dict:
        return {"state_names": list(self.state_names), "frame_stack": self.frame_stack,
                "image_shape": None if self.image_shape is None else list(self.image_shape)}

    @classmethod
    def from_dict(cls, d: dict) -> "ObsSpec":
        return cls(d["state_names"], d.get("frame_stack", 4), d.get("image_shape"))


@dataclass(frozen=True)
class ActionSpec:
    """Actions: kind "continuous" or "discrete".

    "continuous": one name per dimension, values in [-1, 1]. "discrete": n classes; names: one
    label for the action variable or one per class.
    """

    names: tuple
    kind: str = "continuous"
    n: int | None = None

    def __post_init__(self):
        names = tuple(str(n) for n in self.names)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"action names must be non-empty and unique, got {list(names)}")
        object.__setattr__(self, "names", names)
        if self.kind not in ("continuous", "discrete"):
            raise ValueError(f"action kind must be 'continuous' or 'discrete', got {self.kind!r}")
        if self.kind == "discrete":
            if self.n is None or int(self.n) < 2:
                raise ValueError(f"a discrete ActionSpec needs n >= 2 classes, got n={self.n}")
            if len(names) not in (1, int(self.n)):
                raise ValueError(f"discrete action names must be 1 label or {self.n}, "
                                 f"got {len(names)}")
            object.__setattr__(self, "n", int(self.n))
        elif self.n not in (None, len(names)):
            raise ValueError(f"continuous action n must be None or len(names)={len(names)}, "
                             f"got {self.n}")
        else:
            object.__setattr__(self, "n", None)

    @property
    def continuous(self) -> bool:
        return self.kind == "continuous"

    @property
    def dim(self) -> int:
        return len(self.names) if self.continuous else 1

    def to_dict(self) -> dict:
        return {"names": list(self.names), "kind": self.kind, "n": self.n}

    @classmethod
    def from_dict(cls, d: dict) -> "ActionSpec":
        return cls(d["names"], d.get("kind", "continuous"), d.get("n"))


@dataclass
class Normalizer:
    """Per-dimension (x - mean) / std of the raw state, applied to every stacked frame."""

    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self):
        self.mean = np.asarray(self.mean, dtype=np.float64).reshape(-1)
        self.std = np.asarray(self.std, dtype=np.float64).reshape(-1)
        if self.mean.shape != self.std.shape or not (np.isfinite(self.mean).all()
                                                     and np.isfinite(self.std).all()
                                                     and (self.std > 0).all()):
            raise ValueError("normalizer needs finite mean and positive std of equal length")

    @classmethod
    def fit(cls, states: np.ndarray) -> "Normalizer":
        states = np.asarray(states, dtype=np.float64)
        std = states.std(0)
        return cls(states.mean(0), np.where(std > 1e-6, std, 1.0))

    def __call__(self, stacked: np.ndarray) -> np.ndarray:
        k = stacked.shape[-1] // self.mean.shape[0]
        return ((stacked - np.tile(self.mean, k)) / np.tile(self.std, k)).astype(np.float32)

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalizer":
        return cls(d["mean"], d["std"])


def stack_frames(states, k: int = FRAME_STACK) -> np.ndarray:
    """[T, S] -> [T, k*S]: row t is (s_t, s_{t-1}, ..., s_{t-k+1}), padded with s_0."""
    states = np.asarray(states)
    if states.ndim != 2 or states.shape[0] == 0:
        raise ValueError(f"states must have shape [T, S] with T >= 1, got {states.shape}")
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    t = np.arange(states.shape[0])
    return np.concatenate([states[np.maximum(t - j, 0)] for j in range(int(k))], axis=1)


class FrameStacker:
    """The online form of `stack_frames`: push one state per tick, get the stacked row.

    `stack_frames(states, k)[t]` equals the row returned for tick t after `reset(states[0])` and
    `push(states[1..t])`. A runner that has not seen a state yet starts with `step(state)`.
    """

    def __init__(self, k: int = FRAME_STACK):
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = int(k)
        self._frames: deque = deque(maxlen=self.k)

    def clear(self) -> None:
        self._frames.clear()

    def reset(self, state) -> np.ndarray:
        self._frames.clear()
        self._frames.extend([np.asarray(state, dtype=np.float64)] * self.k)
        return self.stacked()

    def push(self, state) -> np.ndarray:
        self._frames.appendleft(np.asarray(state, dtype=np.float64))
        return self.stacked()

    def step(self, state) -> np.ndarray:
        """`reset(state)` on the first tick after `clear()`, `push(state)` after that."""
        return self.push(state) if self._frames else self.reset(state)

    def stacked(self) -> np.ndarray:
        return np.concatenate(list(self._frames))
