"""The simulated WidowX (mile_ros.sim.widowx.WidowXTask) as an arm backend.

It owns episodes (reset, success, timeout) and knows the scripted expert's action, which only the
simulated person is told about.
"""
from __future__ import annotations

import numpy as np

from mile_ros.arms.base import StepOutcome


class SimArm:
    owns_episodes = True
    has_expert = True
    publishes_joint_states = True

    def __init__(self, p: dict):
        from mile_ros.sim.widowx import WidowXTask

        self.task = WidowXTask(seed=p["seed"], control_rate_hz=p["control_rate_hz"],
                               max_ee_step_m=p["max_ee_step_m"],
                               workspace_min_m=list(p["workspace_min_m"]),
                               workspace_max_m=list(p["workspace_max_m"]),
                               episode_timeout_s=p["episode_timeout_s"])
        self.observation_names = list(self.task.observation_names)
        self.action_names = list(self.task.action_names)
        self.joint_names = list(self.task.joint_names)
        self._obs = None

    def reset(self, seed: int) -> None:
        self._obs, _ = self.task.reset(seed=seed)

    def observation(self) -> np.ndarray:
        return np.asarray(self._obs, dtype=np.float64)

    def apply(self, action: np.ndarray | None) -> StepOutcome:
        """One control tick; None holds (arm and gripper targets unchanged)."""
        if action is None:
            self._obs, _, terminated, truncated, info = self.task.hold()
        else:
            self._obs, _, terminated, truncated, info = self.task.step(np.asarray(action))
        success = bool(info.get("success", False))
        if terminated or truncated or success:
            return StepOutcome(True, success, "success" if success else "timeout")
        return StepOutcome()

    def expert_action(self) -> np.ndarray:
        return np.asarray(self.task.expert_action(), dtype=np.float64)

    def joint_positions(self) -> np.ndarray:
        return np.asarray(self.task.joint_positions(), dtype=np.float64)

    def ee_pose(self):
        return self.task.ee_pose()

    def close(self) -> None:
        self.task.close()
