"""The real WidowX through interbotix_xs_modules' InterbotixManipulatorXS (imported only when selected).

Every command returns at once: an end-effector delta becomes a joint target (the package's own
IK, seeded with the last commanded joints and keeping their orientation, checked against the
joint limits and a joint speed bound) sent with `set_joint_positions(..., blocking=False)` and one
constant moving time (so no motor register is rewritten per tick), and the gripper gets a single
grasp/release with delay 0 when its sign changes. Holding = sending nothing.
"""
from __future__ import annotations

import numpy as np

from mile_ros.arms.base import ACTION_NAMES, StepOutcome
from mile_ros.params import ConfigError


def rotation_to_quaternion(r: np.ndarray) -> np.ndarray:
    """3x3 rotation matrix -> unit quaternion (w, x, y, z)."""
    w = np.sqrt(max(0.0, 1.0 + r[0, 0] + r[1, 1] + r[2, 2])) / 2
    x = np.copysign(np.sqrt(max(0.0, 1.0 + r[0, 0] - r[1, 1] - r[2, 2])) / 2, r[2, 1] - r[1, 2])
    y = np.copysign(np.sqrt(max(0.0, 1.0 - r[0, 0] + r[1, 1] - r[2, 2])) / 2, r[0, 2] - r[2, 0])
    z = np.copysign(np.sqrt(max(0.0, 1.0 - r[0, 0] - r[1, 1] + r[2, 2])) / 2, r[1, 0] - r[0, 1])
    q = np.array([w, x, y, z])
    return q / np.linalg.norm(q)


class InterbotixArm:
    """The real WidowX through interbotix_xs_modules (the xs_sdk driver must be running).

    The driver publishes `/<robot_name>/joint_states` itself, so this backend does not. The
    observation is the end-effector position plus the left finger's position.
    """
    owns_episodes = False
    has_expert = False
    publishes_joint_states = False
    GRIPPER_THRESHOLD = 0.5  # |gripper| above this closes (+) or opens (-) the gripper
    MAX_JOINT_SPEED = 1.5    # rad/s: a joint target further than this x moving_time is refused

    def __init__(self, p: dict, robot_name: str, manipulator_cls=None):
        if manipulator_cls is None:
            try:
                from interbotix_xs_modules.xs_robot.arm import InterbotixManipulatorXS
            except ImportError as e:
                raise ConfigError(
                    "arm parameter 'backend' is 'interbotix' but interbotix_xs_modules cannot be "
                    f"imported ({e}); build mile_ros in the Interbotix workspace and source it, "
                    "or use backend 'sim'") from None
            manipulator_cls = InterbotixManipulatorXS
        from mile_ros.description.kinematics import load_kinematics

        self.kin = load_kinematics()
        self.moving_time = float(p["moving_time_s"])
        self.accel_time = self.moving_time / 2  # the driver requires accel <= moving / 2
        self.max_joint_step = self.MAX_JOINT_SPEED * self.moving_time
        self.max_step = float(p["max_ee_step_m"])
        self.ws_min = np.asarray(p["workspace_min_m"], dtype=np.float64)
        self.ws_max = np.asarray(p["workspace_max_m"], dtype=np.float64)
        # args=[]: the Interbotix core initialises the default rclpy context itself; it must not
        # re-read this process's --ros-args (the arm node keeps its own context).
        self.bot = manipulator_cls(robot_model=p["robot_model"], robot_name=robot_name,
                                   group_name="arm", gripper_name="gripper",
                                   moving_time=self.moving_time, accel_time=self.accel_time,
                                   args=[])
        self.joint_names = list(self.kin.arm_joints)
        self.finger = self.kin.gripper_joints[0]
        self.observation_names = ["ee_x", "ee_y", "ee_z", self.finger]
        self.action_names = list(ACTION_NAMES)
        self.gripper_state = 0  # +1 closed, -1 open, 0 unknown
        self.ik_failures = 0

    def _joint_state(self):
        return self.bot.core.robot_get_joint_states()

    def joint_positions(self) -> np.ndarray:
        js = self._joint_state()
        index = {n: i for i, n in enumerate(js.name)}
        return np.array([js.position[index[n]] for n in self.joint_names])

    def ee_pose(self):
        t = self.kin.fk(self.joint_positions())
        return t[:3, 3].copy(), rotation_to_quaternion(t[:3, :3])

    def observation(self) -> np.ndarray:
        js = self._joint_state()
        index = {n: i for i, n in enumerate(js.name)}
        q = np.array([js.position[index[n]] for n in self.joint_names])
        return np.concatenate([self.kin.fk(q)[:3, 3], [js.position[index[self.finger]]]])

    def apply(self, action) -> StepOutcome:
        """Send one command; None holds by sending nothing (the motors keep their last target)."""
        if action is not None:
            action = np.asarray(action, dtype=np.float64)
            self._apply_ee(action[:3])
            self._apply_gripper(float(action[3]))
        return StepOutcome()

    def _apply_ee(self, delta_unit: np.ndarray) -> None:
        if not np.any(delta_unit):
            return
        q_now = np.asarray(self.bot.arm.get_joint_commands(), dtype=np.float64)
        pose = self.kin.fk(q_now)
        target = np.clip(pose[:3, 3] + delta_unit * self.max_step, self.ws_min, self.ws_max)
        ik = self.kin.ik(target, q_init=q_now, target_rot=pose[:3, :3], max_iter=30)
        q = np.asarray(ik.q, dtype=np.float64)
        if (not ik.converged or np.any(q < self.kin.lower) or np.any(q > self.kin.upper)
                or np.max(np.abs(q - q_now)) > self.max_joint_step):
            self.ik_failures += 1  # unreachable or too fast: hold instead
            return
        self.bot.arm.set_joint_positions(q.tolist(), moving_time=self.moving_time,
                                         accel_time=self.accel_time, blocking=False)

    def _apply_gripper(self, g: float) -> None:
        want = 1 if g > self.GRIPPER_THRESHOLD else -1 if g < -self.GRIPPER_THRESHOLD else 0
        if want == 0 or want == self.gripper_state:
            return
        if want > 0:
            self.bot.gripper.grasp(delay=0.0)
        else:
            self.bot.gripper.release(delay=0.0)
        self.gripper_state = want

    def close(self) -> None:
        try:
            self.bot.shutdown()
        except Exception:  # noqa: BLE001 - the driver may already be gone
            pass
