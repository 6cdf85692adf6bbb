"""Serving a policy.

A loaded checkpoint (or the simulated task's initial policy) behind one runner interface
(`reset()`, `step(state, image=None)`), and the checks a new policy must pass before it may replace
the running one. ROS-free; the policy server node drives it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mile_ros.learning.specs import FrameStacker

INITIAL_TASK = "widowx"


class StackedRunner:
    """Frame-stacking runner for a policy with `.act(stacked_obs)`.

    The frames are stacked by learning.specs.FrameStacker.
    """

    def __init__(self, act, frame_stack: int):
        self.act, self.stacker = act, FrameStacker(frame_stack)

    def reset(self) -> None:
        self.stacker.clear()

    def step(self, state, image=None):
        return self.act(self.stacker.step(state))


class ModelRunner:
    """A MileModel's PolicyRunner with the configured sampling mode.

    A camera frame of another size than the policy's (height, width) `image_hw` is resized to
    it as the trainer resizes recorded frames (learning.observations.resize).
    """

    def __init__(self, runner, deterministic: bool, image_hw: tuple | None = None):
        self.runner, self.deterministic, self.image_hw = runner, deterministic, image_hw

    def reset(self) -> None:
        self.runner.reset()

    def step(self, state, image=None):
        if image is not None and self.image_hw and tuple(np.shape(image)[:2]) != self.image_hw:
            from mile_ros.learning.observations import resize

            image = resize(np.asarray(image, np.uint8)[None], *self.image_hw)[0]
        return self.runner.step(state, image, deterministic=self.deterministic)


@dataclass
class LoadedPolicy:
    id: str
    state_names: list[str]
    action_names: list[str]
    make_runner: object            # () -> runner with reset() and step(state, image=None)
    uses_image: bool = False
    source: str = ""
    image_shape: tuple | None = None   # (height, width) of the camera frames it takes, if any
    created: float | None = None       # when the trainer saved it (unix s); None: built here


def _checkpoint_id(path: Path) -> str:
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        manifest = {}
    for key in ("id", "checkpoint_id"):
        if manifest.get(key):
            return str(manifest[key])
    return path.name


def load_policy_dir(path: str | Path, deterministic: bool = True) -> LoadedPolicy:
    """Load a MILE checkpoint directory as a LoadedPolicy.

    Raises CheckpointError, a ValueError, on problems.
    """
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"no checkpoint directory at {path}")
    from mile_ros.learning.checkpoint import load_checkpoint

    model = load_checkpoint(path)
    policy_id = getattr(model, "checkpoint_id", None) or _checkpoint_id(path)
    policy = policy_from_model(model, policy_id, deterministic, source=str(path))
    created = (getattr(model, "manifest", None) or {}).get("created_unix")
    policy.created = float(created) if isinstance(created, (int, float)) else None
    return policy


def policy_from_model(model, policy_id: str, deterministic: bool = True,
                      source: str = "") -> LoadedPolicy:
    """Serve a MileModel held in memory as a LoadedPolicy named `policy_id`."""
    shape = model.obs_spec.image_shape

    def make_runner():
        return ModelRunner(model.runner(), deterministic, tuple(shape[:2]) if shape else None)
    return LoadedPolicy(id=policy_id, state_names=list(model.obs_spec.state_names),
                        action_names=list(model.action_spec.names), make_runner=make_runner,
                        uses_image=shape is not None, source=source,
                        image_shape=tuple(shape[:2]) if shape else None)


def initial_policy(seed: int, deterministic: bool = True) -> LoadedPolicy:
    """Return the simulated WidowX task's initial policy.

    Built by mile_ros.sim.initial, cached per seed.
    """
    from mile_ros.sim.initial import widowx_initial_policy

    policy, state_names, action_names, cfg = widowx_initial_policy(seed)
    rng = np.random.default_rng(seed)

    def act(stacked):
        return policy.act(stacked, deterministic=deterministic, rng=rng)
    return LoadedPolicy(id=f"initial:{INITIAL_TASK}:seed{seed}", state_names=state_names,
                        action_names=action_names,
                        make_runner=lambda: StackedRunner(act, cfg.frame_stack),
                        source="mile_ros.sim.initial initial policy")


def _id_in_archive(data: bytes) -> str:
    """Best effort: the id in a checkpoint archive's manifest, to name a refused checkpoint."""
    import io
    import tarfile

    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.endswith("/manifest.json"):
                    return str(json.loads(tar.extractfile(member).read())["id"])
    except Exception:  # noqa: BLE001 - unreadable: described by the refusal reason instead
        pass
    return f"<{len(data)} bytes>"


def check_not_older(new: LoadedPolicy, *have: LoadedPolicy | None) -> None:
    """Raise ValueError when `new` was saved before a policy the server runs or holds pending.

    A restarted server, or one that takes the history of several publishers (a checkpoint store
    and a trainer), never goes back to an older checkpoint. A policy built here (the initial
    one) is older than any checkpoint.
    """
    newest = max((p for p in have if p is not None and p.created is not None),
                 key=lambda p: p.created, default=None)
    if newest is not None and (new.created is None or new.created < newest.created):
        raise ValueError(f"older than {newest.id}, which it already has: a policy server never "
                         f"goes back to an older checkpoint (to roll back: restart it with "
                         f"checkpoint:=<that directory>, and point the checkpoint store's "
                         f"latest at it)")


def check_compatible(new: LoadedPolicy, old: LoadedPolicy, observation_names=None) -> None:
    """Raise ValueError when `new` cannot replace `old` on this graph."""
    if new.action_names != old.action_names:
        raise ValueError(f"action names {new.action_names} differ from the running policy's "
                         f"{old.action_names}")
    names = observation_names or old.state_names
    missing = [n for n in new.state_names if n not in names]
    if missing:
        raise ValueError(f"needs observation dimensions {missing} that the arm does not publish "
                         f"(it publishes {list(names)})")
    runner = new.make_runner()  # one trial step: shapes, finiteness
    a = np.asarray(runner.step(np.zeros(len(new.state_names)),
                               np.zeros((8, 8, 3), np.uint8) if new.uses_image else None))
    if a.shape != (len(new.action_names),):
        raise ValueError(f"policy returns shape {a.shape}, expected ({len(new.action_names)},)")


@dataclass
class PolicyCounts:
    steps: int = 0
    nonfinite: int = 0
    clipped: int = 0
    obs_mismatch: int = 0
    no_image: int = 0
    errors: int = 0
    step_s: list = field(default_factory=list)

    def summary(self) -> str:
        t = np.asarray(self.step_s[-1000:]) * 1e3
        lat = (f" inference p50={np.median(t):.2f} ms p99={np.percentile(t, 99):.2f} ms"
               if len(t) else "")
        return (f"steps={self.steps} nonfinite(not published)={self.nonfinite} "
                f"clipped={self.clipped} obs_mismatch={self.obs_mismatch} "
                f"no_image={self.no_image} errors={self.errors}{lat}")
