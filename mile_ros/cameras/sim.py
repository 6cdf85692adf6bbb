"""The simulated WidowX's workspace camera (MuJoCo offscreen render).

The arm node runs the simulation in another process, so this source mirrors the state the arm
publishes (joint_states: joints and fingers; observation: block position and hole) into its own
copy of the scene and renders that, stamped with the observation's stamp; a frame comes only when
a new state has come in, and, when the joints come stamped, only once the joints and the
observation of one tick are both in. The block is drawn upright (its orientation is not in the
observation).
"""
from __future__ import annotations

import os
import sys

import numpy as np

from mile_ros.cameras.base import CameraUnavailable


class SimSource:
    """Renders the simulated scene in the state the arm node last published."""

    def __init__(self, width: int, height: int):
        if sys.platform.startswith("linux"):
            os.environ.setdefault("MUJOCO_GL", "egl")
        from mile_ros.sim.widowx import WidowXTask

        self.size = (int(width), int(height))
        self.task = WidowXTask()
        try:
            self.task.render(*self.size)       # fails early (bad size, no GL) at start-up
        except Exception as e:  # noqa: BLE001 - any renderer failure is a start-up error
            self.task.close()
            raise CameraUnavailable(f"camera source 'sim': cannot render {width}x{height}: {e} "
                                    f"(headless Linux needs MUJOCO_GL=egl and Mesa EGL)") from None
        self.task.close()   # a GL context belongs to its thread: the first read() makes a new one
        self.stamp_ns: int | None = None       # of the state mirrored and not yet rendered
        self.joints_ns: int | None = None      # of the joints mirrored (None: not stamped)

    def warm_up(self) -> None:
        """Render once in the calling thread, so that its first frame is not a context's first."""
        self.task.render(*self.size)

    def set_joints(self, names, positions, stamp_ns: int | None = None) -> None:
        data = self.task.data
        for name, q in zip(names, positions):
            if name in self.task.joint_names and np.isfinite(q):
                data.joint(name).qpos[0] = q
        self.joints_ns = stamp_ns

    def set_observation(self, names, values, stamp_ns: int) -> None:
        v = dict(zip(names, values))
        if all(k in v for k in ("block_x", "block_y", "block_z")):
            self.task.data.joint("block").qpos[:7] = [v["block_x"], v["block_y"], v["block_z"],
                                                       1.0, 0.0, 0.0, 0.0]
        if "hole_x" in v and "hole_y" in v:
            self.task.model.body("sorter").pos[:2] = [v["hole_x"], v["hole_y"]]
        self.stamp_ns = stamp_ns

    def read(self) -> tuple[int, np.ndarray] | None:
        """(stamp, RGB frame) of the newest mirrored state, once per state."""
        if self.stamp_ns is None or self.joints_ns not in (None, self.stamp_ns):
            return None
        import mujoco

        mujoco.mj_forward(self.task.model, self.task.data)
        stamp, self.stamp_ns = self.stamp_ns, None
        return stamp, self.task.render(*self.size)

    def close(self) -> None:
        self.task.close()
