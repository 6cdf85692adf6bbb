"""The contract every arm backend meets, and the checks shared by all of them.

Backends take actions already checked by the arm node (finite, each dimension in [-1, 1], named by
`ACTION_NAMES` = [dx, dy, dz, gripper]) and keep the end effector inside the workspace box and the
joints inside their limits. `apply(None)` holds. Flags say what the node must do itself:
`owns_episodes` (the backend decides when an episode ends: the simulated task), `has_expert` (it
can tell the scripted expert's action, published only to the simulated person) and
`publishes_joint_states` (the Interbotix driver publishes them itself).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from mile_ros.params import ConfigError

ACTION_NAMES = ["dx", "dy", "dz", "gripper"]


@dataclass
class StepOutcome:
    done: bool = False
    success: bool | None = None
    reason: str = ""


def check_arm_params(p: dict) -> None:
    """Value checks the YAML types cannot express; each error names the parameter."""
    for name in ("workspace_min_m", "workspace_max_m"):
        if len(p[name]) != 3:
            raise ConfigError(f"arm parameter '{name}' needs 3 values (x, y, z), got {p[name]}")
    lo, hi = np.asarray(p["workspace_min_m"]), np.asarray(p["workspace_max_m"])
    if not np.all(lo < hi):
        raise ConfigError(f"arm parameters 'workspace_min_m' {lo.tolist()} must be below "
                          f"'workspace_max_m' {hi.tolist()} in every axis")
    for name in ("control_rate_hz", "max_ee_step_m", "episode_timeout_s", "moving_time_s",
                 "lockstep_timeout_s", "driver_timeout_s"):
        if not p[name] > 0:
            raise ConfigError(f"arm parameter '{name}' must be > 0, got {p[name]}")
    if not p["startup_timeout_s"] >= 0:
        raise ConfigError(f"arm parameter 'startup_timeout_s' must be >= 0, "
                          f"got {p['startup_timeout_s']}")
    if not p["realtime_factor"] >= 0:
        raise ConfigError(f"arm parameter 'realtime_factor' must be >= 0 (0 = lockstep), "
                          f"got {p['realtime_factor']}")
    if p["episodes"] < 0:
        raise ConfigError(f"arm parameter 'episodes' must be >= 0 (0 = no limit), "
                          f"got {p['episodes']}")


class ArmBackend(Protocol):
    """What the arm node drives (`arms.sim.SimArm`, `arms.interbotix.InterbotixArm`)."""

    owns_episodes: bool
    has_expert: bool
    publishes_joint_states: bool
    observation_names: Sequence[str]
    action_names: Sequence[str]
    joint_names: Sequence[str]

    def observation(self) -> np.ndarray: ...

    def apply(self, action: np.ndarray | None) -> StepOutcome: ...

    def joint_positions(self) -> np.ndarray: ...

    def ee_pose(self): ...

    def close(self) -> None: ...
