"""The Interbotix backend against a recording stand-in of InterbotixManipulatorXS: every command is
non-blocking, uses one constant moving time, stays inside the joint limits and the workspace, and
the gripper never sleeps. The real module is imported only when the backend is selected."""
import sys
import time
import types
from types import SimpleNamespace

import numpy as np
import pytest

from mile_ros import params

from mile_ros.arms.interbotix import rotation_to_quaternion
from mile_ros.arms import InterbotixArm, make_backend
from mile_ros.params import ConfigError
from mile_ros.description.kinematics import load_kinematics

KIN = load_kinematics()
START = KIN.ik(np.array([0.25, 0.0, 0.20])).q


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, name, **kwargs):
        self.calls.append((name, kwargs))

    def named(self, name):
        return [kw for n, kw in self.calls if n == name]


class StandInArm:
    """The arm part of InterbotixManipulatorXS, with the real call signatures."""

    def __init__(self, bot):
        self.bot = bot

    def get_joint_commands(self):
        return list(self.bot.q)

    def set_joint_positions(self, joint_positions, moving_time=None, accel_time=None,
                            blocking=True):
        self.bot.rec("set_joint_positions", joint_positions=list(joint_positions),
                     moving_time=moving_time, accel_time=accel_time, blocking=blocking)
        self.bot.q = np.array(joint_positions, dtype=float)
        return True

    def set_ee_cartesian_trajectory(self, *args, **kwargs):  # sleeps in the real module
        self.bot.rec("set_ee_cartesian_trajectory", args=args, **kwargs)
        return True

    def set_trajectory_time(self, moving_time=None, accel_time=None):  # register writes
        self.bot.rec("set_trajectory_time", moving_time=moving_time, accel_time=accel_time)


class StandInGripper:
    def __init__(self, bot):
        self.bot = bot

    def grasp(self, delay=1.0):
        self.bot.rec("grasp", delay=delay)

    def release(self, delay=1.0):
        self.bot.rec("release", delay=delay)


class StandInManipulator:
    instances = []

    def __init__(self, robot_model, group_name="arm", gripper_name="gripper", robot_name=None,
                 moving_time=2.0, accel_time=0.3, gripper_pressure=0.5, args=None, **kwargs):
        self.rec = Recorder()
        self.rec("__init__", robot_model=robot_model, robot_name=robot_name,
                 moving_time=moving_time, accel_time=accel_time, args=args)
        self.q = START.copy()
        self.finger = 0.03
        self.arm, self.gripper = StandInArm(self), StandInGripper(self)
        self.core = SimpleNamespace(robot_get_joint_states=self._joint_states)
        StandInManipulator.instances.append(self)

    def _joint_states(self):
        names = list(KIN.arm_joints) + list(KIN.gripper_joints)
        return SimpleNamespace(name=names, position=[*self.q, self.finger, -self.finger])

    def shutdown(self):
        self.rec("shutdown")


def arm_params(**overrides):
    return params.resolve("arm", [], {"backend": "interbotix", **overrides})


@pytest.fixture
def no_sleep(monkeypatch):
    def forbidden(seconds):
        raise AssertionError(f"the backend slept {seconds} s on the control path")
    monkeypatch.setattr(time, "sleep", forbidden)


@pytest.fixture
def backend(no_sleep):
    return InterbotixArm(arm_params(), "wx250s", manipulator_cls=StandInManipulator)


def test_constructed_with_constant_timing_and_no_ros_args():
    b = InterbotixArm(arm_params(moving_time_s=0.3), "lab_arm", manipulator_cls=StandInManipulator)
    (init,) = b.bot.rec.named("__init__")
    assert init["robot_model"] == "wx250s" and init["robot_name"] == "lab_arm"
    assert init["moving_time"] == pytest.approx(0.3)
    assert 0 < init["accel_time"] <= init["moving_time"] / 2   # the driver's own rule
    assert init["args"] == []   # must not re-parse this process's --ros-args


def test_ee_delta_becomes_one_nonblocking_joint_command(backend):
    p0 = KIN.fk(START)
    backend.apply(np.array([1.0, 0.0, -0.5, 0.0]))
    (call,) = backend.bot.rec.named("set_joint_positions")
    assert call["blocking"] is False
    assert call["moving_time"] == pytest.approx(0.2) and call["accel_time"] == pytest.approx(0.1)
    q = np.array(call["joint_positions"])
    assert np.all(q >= KIN.lower) and np.all(q <= KIN.upper)
    p1 = KIN.fk(q)
    np.testing.assert_allclose(p1[:3, 3] - p0[:3, 3], [0.015, 0.0, -0.0075], atol=2e-4)
    np.testing.assert_allclose(p1[:3, :3], p0[:3, :3], atol=2e-3)   # orientation kept
    assert not backend.bot.rec.named("set_trajectory_time")          # no register rewrites
    assert not backend.bot.rec.named("set_ee_cartesian_trajectory")  # the sleeping API


def test_workspace_is_never_left(backend):
    p = arm_params()
    lo, hi = np.array(p["workspace_min_m"]), np.array(p["workspace_max_m"])
    for _ in range(40):   # push down and outwards for 40 ticks (0.6 m of commands)
        backend.apply(np.array([1.0, 0.0, -1.0, 0.0]))
    calls = backend.bot.rec.named("set_joint_positions")
    assert len(calls) >= 10
    for call in calls:
        q = np.array(call["joint_positions"])
        assert np.all(q >= KIN.lower) and np.all(q <= KIN.upper)
        pos = KIN.fk(q)[:3, 3]
        assert np.all(pos >= lo - 1e-3) and np.all(pos <= hi + 1e-3), pos
        assert call["blocking"] is False and call["moving_time"] == pytest.approx(0.2)
    final = KIN.fk(backend.bot.q)[:3, 3]
    assert final[2] == pytest.approx(lo[2], abs=2e-3)   # pinned at the floor of the box


def test_too_fast_joint_motion_is_refused_not_sent(no_sleep):
    b = InterbotixArm(arm_params(max_ee_step_m=0.3), "wx250s", manipulator_cls=StandInManipulator)
    b.apply(np.array([1.0, 1.0, 0.0, 0.0]))   # 0.2 m across in one tick: joints would jump
    assert b.ik_failures == 1
    assert not b.bot.rec.named("set_joint_positions")


def test_gripper_commands_without_delay_and_only_on_change(backend):
    for g in (1.0, 0.9, 0.2, -0.2, -1.0, -0.7, 1.0):
        backend.apply(np.array([0.0, 0.0, 0.0, g]))
    names = [n for n, _ in backend.bot.rec.calls if n in ("grasp", "release")]
    assert names == ["grasp", "release", "grasp"]
    assert all(kw["delay"] == 0.0 for n, kw in backend.bot.rec.calls if n in ("grasp", "release"))
    assert not backend.bot.rec.named("set_joint_positions")   # zero EE delta: no arm command


def test_hold_sends_nothing(backend):
    before = len(backend.bot.rec.calls)
    backend.apply(None)
    assert len(backend.bot.rec.calls) == before


def test_observation_and_pose_come_from_the_driver_joint_states(backend):
    assert backend.observation_names == ["ee_x", "ee_y", "ee_z", "left_finger"]
    obs = backend.observation()
    np.testing.assert_allclose(obs[:3], KIN.fk(START)[:3, 3], atol=1e-9)
    assert obs[3] == pytest.approx(0.03)
    pos, quat = backend.ee_pose()
    np.testing.assert_allclose(pos, obs[:3])
    assert np.linalg.norm(quat) == pytest.approx(1.0)
    assert backend.publishes_joint_states is False   # xs_sdk publishes /<robot>/joint_states


def test_rotation_to_quaternion_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        w, x, y, z = q
        r = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                      [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                      [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
        out = rotation_to_quaternion(r)
        assert min(np.abs(out - q).max(), np.abs(out + q).max()) < 1e-9


def test_selected_backend_imports_the_interbotix_module(monkeypatch):
    module = types.ModuleType("interbotix_xs_modules.xs_robot.arm")
    module.InterbotixManipulatorXS = StandInManipulator
    for name in ("interbotix_xs_modules", "interbotix_xs_modules.xs_robot"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "interbotix_xs_modules.xs_robot.arm", module)
    b = make_backend(arm_params(), "wx250s")
    assert isinstance(b.bot, StandInManipulator)


def test_missing_interbotix_module_is_a_clear_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "interbotix_xs_modules", None)   # import fails
    with pytest.raises(ConfigError, match="'backend'.*interbotix_xs_modules"):
        make_backend(arm_params(), "wx250s")


def test_sim_backend_does_not_import_interbotix():
    assert "interbotix_xs_modules" not in sys.modules or sys.modules["interbotix_xs_modules"] is None
    with pytest.raises(ConfigError, match="'backend'"):
        make_backend({**arm_params(), "backend": "gazebo"}, "wx250s")
