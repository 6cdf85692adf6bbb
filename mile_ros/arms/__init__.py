"""Arm backends behind one contract (`base.ArmBackend`): the simulated WidowX and the real one.

- `sim.SimArm`: the MuJoCo WidowX task.
- `interbotix.InterbotixArm`: the real arm through interbotix_xs_modules.
- `interbotix_driver`: bringing the Interbotix Python API up and down around the xs_sdk driver.
"""
from __future__ import annotations

from mile_ros.arms.base import ACTION_NAMES, ArmBackend, StepOutcome, check_arm_params
from mile_ros.arms.interbotix import InterbotixArm
from mile_ros.arms.sim import SimArm
from mile_ros.params import ConfigError

__all__ = ["ACTION_NAMES", "ArmBackend", "StepOutcome", "check_arm_params", "make_backend",
           "SimArm", "InterbotixArm"]


def make_backend(p: dict, robot_name: str):
    if p["backend"] == "sim":
        return SimArm(p)
    if p["backend"] == "interbotix":
        return InterbotixArm(p, robot_name)
    raise ConfigError(f"arm parameter 'backend' must be 'sim' or 'interbotix', "
                      f"got {p['backend']!r}")
