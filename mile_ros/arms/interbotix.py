"""The real WidowX through interbotix_xs_modules' InterbotixManipulatorXS.

The upstream modules are imported only when this backend is selected.

Start-up (see `arms.interbotix_driver` for the upstream facts): rclpy's default context is
initialised without this process's --ros-args, the Interbotix node gets its own name
(`arm_interbotix`, in the robot namespace), the driver's services are waited for at most
`driver_timeout_s`, `robot_startup()` keeps the joint states flowing, and the profile registers
are written once from `moving_time_s` (accel = moving / 2). `close()` calls `robot_shutdown()`.

Every command returns at once: an end-effector delta becomes a joint target (the package's own
IK, seeded with the last commanded joints and keeping their orientation, checked against the
joint limits and a joint speed bound) sent with `set_joint_positions(..., blocking=False)` and one
constant moving time (so no motor register is rewritten per tick), and the gripper gets a single
grasp/release with delay 0 when its sign changes. Holding = sending nothing. A command refused
(here or by the driver) holds, is counted in `ik_refusals` and logged at most every
`REFUSAL_LOG_PERIOD_S`.
"""
from __future__ import annotations

import math

import numpy as np

from mile_ros.arms.base import ACTION_NAMES, StepOutcome
from mile_ros.arms.interbotix_driver import (
    NODE_NAME,
    InterbotixApi,
    check_group_modes,
    driver_namespace,
    init_default_context,
    load_api,
    profile_message,
    profile_ms,
    wait_for_driver,
    write_profile,
)


def rotation_to_quaternion(r: np.ndarray) -> np.ndarray:
    """3x3 rotation matrix -> unit quaternion (w, x, y, z)."""
    w = np.sqrt(max(0.0, 1.0 + r[0, 0] + r[1, 1] + r[2, 2])) / 2
    x = np.copysign(np.sqrt(max(0.0, 1.0 + r[0, 0] - r[1, 1] - r[2, 2])) / 2, r[2, 1] - r[1, 2])
    y = np.copysign(np.sqrt(max(0.0, 1.0 - r[0, 0] + r[1, 1] - r[2, 2])) / 2, r[0, 2] - r[2, 0])
    z = np.copysign(np.sqrt(max(0.0, 1.0 - r[0, 0] - r[1, 1] + r[2, 2])) / 2, r[1, 0] - r[0, 1])
    q = np.array([w, x, y, z])
    return q / np.linalg.norm(q)


class Throttle:
    """Passes one message per `period_s` of `clock()` (seconds) and says how many it held back."""

    def __init__(self, emit, period_s: float, clock):
        self.emit, self.period_s, self.clock = emit, period_s, clock
        self.next_at, self.held = -math.inf, 0

    def __call__(self, text: str) -> None:
        now = self.clock()
        if now < self.next_at:
            self.held += 1
            return
        self.emit(text + (f" (+{self.held} more since the last report)" if self.held else ""))
        self.held, self.next_at = 0, now + self.period_s


class InterbotixArm:
    """The real WidowX through interbotix_xs_modules (the xs_sdk driver must be running).

    The driver publishes `/<robot_name>/joint_states` itself, so this backend does not. The
    observation is the end-effector position plus the left finger's position. `api` replaces the
    upstream modules (tests); `logger` (rclpy or `logging` style) defaults to the Interbotix
    node's.
    """

    owns_episodes = False
    has_expert = False
    publishes_joint_states = False
    GRIPPER_THRESHOLD = 0.5  # |gripper| above this closes (+) or opens (-) the gripper
    MAX_JOINT_SPEED = 1.5    # rad/s: a joint target further than this x moving_time is refused
    REFUSAL_LOG_PERIOD_S = 5.0

    def __init__(self, p: dict, robot_name: str, api: InterbotixApi | None = None, logger=None):
        self.api = api or load_api()
        from mile_ros.description.kinematics import load_kinematics

        self.kin = load_kinematics()
        self._read_params(p)
        self.namespace = driver_namespace(robot_name, self.robot_model)
        self.joint_names = list(self.kin.arm_joints)
        self.finger = self.kin.gripper_joints[0]
        self.observation_names = ["ee_x", "ee_y", "ee_z", self.finger]
        self.action_names = list(ACTION_NAMES)
        self.gripper_state = 0  # +1 closed, -1 open, 0 unknown
        self.ik_refusals = 0
        self.node, self.bot = self._bring_up(float(p["driver_timeout_s"]))
        self.log = logger or self.node.get_logger()
        clock = self.node.get_clock()
        self._refusal_log = Throttle(self.log.warning, self.REFUSAL_LOG_PERIOD_S,
                                     lambda: clock.now().nanoseconds * 1e-9)
        self._start_profile()

    def _read_params(self, p: dict) -> None:
        self.robot_model = p["robot_model"]
        self.moving_time = float(p["moving_time_s"])
        self.accel_time = self.moving_time / 2  # the driver requires accel <= moving / 2
        self.max_joint_step = self.MAX_JOINT_SPEED * self.moving_time
        self.max_step = float(p["max_ee_step_m"])
        self.ws_min = np.asarray(p["workspace_min_m"], dtype=np.float64)
        self.ws_max = np.asarray(p["workspace_max_m"], dtype=np.float64)

    # --- start-up and shutdown -------------------------------------------------------------------
    def _bring_up(self, timeout_s: float):
        """Return (node, bot): our own node in a clean default context, and its manipulator.

        The driver is waited for, the manipulator built on that node and its executor started.
        """
        init_default_context()
        node = self.api.create_node(node_name=NODE_NAME, namespace="/" + self.namespace)
        try:
            wait_for_driver(node, self.namespace, self.robot_model, timeout_s)
            bot = self._construct(node)
            check_group_modes(bot.arm.group_info, self.namespace, self.robot_model)
        except BaseException:
            node.destroy_node()
            raise
        self.api.robot_startup(node)
        return node, bot

    def _construct(self, node):
        return self.api.manipulator_cls(
            robot_model=self.robot_model, robot_name=self.namespace, group_name="arm",
            gripper_name="gripper", moving_time=self.moving_time, accel_time=self.accel_time,
            node_name=NODE_NAME, node=node)

    def _start_profile(self) -> None:
        """Write Profile_Velocity / Profile_Acceleration once and log what the motors then hold.

        The constructor does not write them.
        """
        wanted = profile_ms(self.moving_time, self.accel_time)
        try:
            ok, line = profile_message(wanted, write_profile(self.bot.core, wanted))
        except BaseException:
            self.close()
            raise
        (self.log.info if ok else self.log.warning)(line)
        self.profile_ms = wanted

    def close(self) -> None:
        node, self.node = self.node, None
        if node is None:
            return
        try:
            self.api.robot_shutdown(node)
        except Exception as e:  # noqa: BLE001 - e.g. Ctrl-C already shut the default context down
            self.log.info(f"arm: Interbotix shutdown: {type(e).__name__}: {e}")

    # --- state -----------------------------------------------------------------------------------
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

    # --- commands --------------------------------------------------------------------------------
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
        q, reason = self._solve(q_now, delta_unit)
        if reason is None and not self.bot.arm.set_joint_positions(
                q.tolist(), moving_time=self.moving_time, accel_time=self.accel_time,
                blocking=False):
            reason = "the driver refused it (outside its joint position or velocity limits)"
        if reason is not None:
            self._refuse(reason)

    def _solve(self, q_now: np.ndarray, delta_unit: np.ndarray):
        """(joint target, None) or (target, why it must not be sent)."""
        pose = self.kin.fk(q_now)
        target = np.clip(pose[:3, 3] + delta_unit * self.max_step, self.ws_min, self.ws_max)
        ik = self.kin.ik(target, q_init=q_now, target_rot=pose[:3, :3], max_iter=30)
        q = np.asarray(ik.q, dtype=np.float64)
        if not ik.converged:
            return q, "no IK solution"
        if np.any(q < self.kin.lower) or np.any(q > self.kin.upper):
            return q, "IK solution outside the joint limits"
        step = float(np.max(np.abs(q - q_now)))
        if step > self.max_joint_step:
            return q, (f"joint step {step:.3f} rad > {self.max_joint_step:.3f} rad "
                       f"({self.MAX_JOINT_SPEED} rad/s x moving_time_s)")
        return q, None

    def _refuse(self, reason: str) -> None:
        """Hold instead (nothing sent); counted, and logged at a limited rate."""
        self.ik_refusals += 1
        self._refusal_log(f"arm: end-effector command refused, holding: {reason} "
                          f"({self.ik_refusals} refused so far)")

    def _apply_gripper(self, g: float) -> None:
        want = 1 if g > self.GRIPPER_THRESHOLD else -1 if g < -self.GRIPPER_THRESHOLD else 0
        if want == 0 or want == self.gripper_state:
            return
        if want > 0:
            self.bot.gripper.grasp(delay=0.0)
        else:
            self.bot.gripper.release(delay=0.0)
        self.gripper_state = want
