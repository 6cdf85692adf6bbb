"""The Interbotix backend against a stand-in of the upstream Python API.

Start-up, the motion profile, commands (non-blocking, constant moving time, inside the limits),
refusals, shutdown.

The stand-in follows the upstream source read from Interbotix/interbotix_ros_toolboxes, branch
`humble`: interbotix_xs_toolbox/interbotix_xs_modules/interbotix_xs_modules/xs_robot/arm.py,
core.py, gripper.py and interbotix_common_toolbox/interbotix_common_modules/
interbotix_common_modules/common_robot/robot.py; the driver's default profile is from
Interbotix/interbotix_ros_manipulators, branch `humble`,
interbotix_ros_xsarms/interbotix_xsarm_control/config/modes.yaml (arm: time profile 2000/300 ms).
Semantics kept:
- `create_interbotix_global_node(node_name='interbotix_robot_manipulation')` calls `rclpy.init()`
  (from `sys.argv`: its `--ros-args` remaps) only when `rclpy.ok()` is false; one global node,
  which the core creates when given no `node`. The core waits for
  `/<robot_name>/set_operating_modes` forever (None -> robot_model, '' -> the root namespace):
  here that wait fails the test instead.
- `robot_get_joint_states()` is a deep copy of the last JointState received; the node is spun only
  until the first one, so it is a snapshot until `robot_startup()` starts the executor thread.
- Profile registers change only by `core.robot_set_motor_registers` or `set_trajectory_time` with
  a value unlike the stored one; the constructor stores moving/accel time (no write).
- `InterbotixManipulatorXS` has no `shutdown()` (galactic only); `robot_shutdown(node)` destroys
  the node, shuts the default context down and joins the executor thread.
- `arm.set_joint_positions` returns False and sends nothing outside the position or velocity
  limits (|q - joint_commands| / stored moving_time, q truncated to 3 decimals), else True.
- Blocking waits (a blocking arm move, the gripper's `delay`, the gripper constructor's 0.5 s) go
  through the node clock's `sleep_for`, never `time.sleep`.
"""
import copy
import sys
import time
import types
from types import SimpleNamespace

import numpy as np
import pytest
import rclpy
import yaml
from rclpy.duration import Duration

from mile_ros import params
from mile_ros.arms import InterbotixArm, make_backend
from mile_ros.arms.interbotix import rotation_to_quaternion
from mile_ros.description.kinematics import load_kinematics
from mile_ros.params import ConfigError

KIN = load_kinematics()
START = KIN.ik(np.array([0.25, 0.0, 0.20])).q
SERVICES = ("set_operating_modes", "set_motor_pid_gains", "set_motor_registers",
            "get_motor_registers", "get_robot_info", "torque_enable", "reboot_motors")
VELOCITY_LIMIT = np.pi          # the wx250s URDF's joint velocity limits (rad/s)
FINGER_LIMITS = (0.015, 0.037)  # left finger (m)


class FakeDefaultContext:
    """rclpy.ok / init / shutdown on the default context (patched into rclpy for each test)."""

    def __init__(self):
        self.up, self.args, self.inits = False, None, 0

    def ok(self, context=None):
        return self.up

    def init(self, args=None, context=None, **kwargs):
        if self.up:
            raise RuntimeError("Context.init() must only be called once")
        self.up, self.args = True, list(sys.argv if args is None else args)
        self.inits += 1

    def shutdown(self, context=None):
        if not self.up:
            raise RuntimeError("Context must be initialized before it can be shutdown")
        self.up = False

    def remap(self, key):
        """`-r key:=value` among the context's --ros-args (global remaps rename every node)."""
        args = self.args or []
        ros = args[args.index("--ros-args") + 1:] if "--ros-args" in args else []
        rules = [r for flag, r in zip(ros, ros[1:]) if flag in ("-r", "--remap")]
        return next((r.split(":=", 1)[1] for r in rules if r.startswith(key + ":=")), None)


class FakeClock:
    """The node clock: sleep_for advances it at once and records the wait."""

    def __init__(self):
        self.ns, self.sleeps = 0, []

    def now(self):
        return SimpleNamespace(nanoseconds=self.ns)

    def sleep_for(self, duration):
        self.sleeps.append(duration.nanoseconds * 1e-9)
        self.ns += duration.nanoseconds
        return True


class Driver:
    """The xs_sdk node and its motors: services, joint states, registers, commands."""

    def __init__(self, ns="/wx250s", up_after_s=0.0, velocity_limit=VELOCITY_LIMIT,
                 profile_type="time"):
        self.ns, self.up_after_ns = ns, int(up_after_s * 1e9)
        self.q, self.finger = START.copy(), 0.03
        self.registers = {"Profile_Velocity": 2000, "Profile_Acceleration": 300}   # modes.yaml
        self.register_writes, self.group_commands, self.single_commands = [], [], []
        self.velocity_limit, self.profile_type = velocity_limit, profile_type

    def services(self, now_ns):
        return [f"{self.ns}/{s}" for s in SERVICES] if now_ns >= self.up_after_ns else []

    def joint_state(self):
        names = list(KIN.arm_joints) + list(KIN.gripper_joints)
        return SimpleNamespace(name=names, position=[*self.q, self.finger, -self.finger],
                               velocity=[0.0] * 8, effort=[0.0] * 8)


class Logger(list):
    """An rclpy logger that keeps (level, text)."""

    def info(self, text, **kw):
        self.append(("info", text))

    def warning(self, text, **kw):
        self.append(("warning", text))

    error = debug = warning


class FakeNode:
    """InterbotixRobotNode: name after the default context's global remaps, clock, graph."""

    def __init__(self, world, node_name, namespace):
        if not world.rclpy.ok():
            raise RuntimeError("rclpy.init() has not been called")
        self.world, self.destroyed, self.spinning = world, False, False
        self.name = world.rclpy.remap("__node") or node_name
        self.namespace = world.rclpy.remap("__ns") or namespace or "/"
        self.context = SimpleNamespace(ok=world.rclpy.ok)
        self.logger = Logger()

    @property
    def full_name(self):
        return f"{self.namespace.rstrip('/')}/{self.name}"

    def get_clock(self):
        return self.world.clock

    def get_logger(self):
        return self.logger

    def get_service_names_and_types(self):
        return [(s, ["interbotix_xs_msgs/srv/X"]) for s in self.world.driver.services(
            self.world.clock.ns)]

    def count_publishers(self, topic):
        return int(topic == f"{self.world.driver.ns}/joint_states"
                   and bool(self.world.driver.services(self.world.clock.ns)))

    def destroy_node(self):
        self.destroyed = True


class RobotModule:
    """interbotix_common_modules.common_robot.robot (module-level globals -> attributes)."""

    def __init__(self, world):
        self.world, self.global_node, self.up, self.calls = world, None, False, []

    def create_interbotix_global_node(self, node_name="interbotix_robot_manipulation",
                                      namespace=None):
        if self.global_node is not None:
            raise RuntimeError("Tried to create an Interbotix global node but one already exists.")
        if not rclpy.ok():
            rclpy.init()   # upstream: rclpy.init(*args, **kwargs) with no args -> sys.argv
        self.global_node = FakeNode(self.world, node_name, namespace)
        return self.global_node

    def robot_startup(self, node=None, node_name="interbotix_robot_manipulation", namespace=None):
        node = node or self.global_node
        if self.up:
            raise RuntimeError("Startup has already been requested.")
        self.up, node.spinning = True, True
        self.calls.append(("robot_startup", node))

    def robot_shutdown(self, node=None):
        node = node or self.global_node
        self.calls.append(("robot_shutdown", node))
        node.destroy_node()
        rclpy.shutdown()
        node.spinning = False
        if not self.up:    # __interbotix_execution_thread.join() on a thread never started
            raise NameError("name '__interbotix_execution_thread' is not defined")


class FakeCore:
    def __init__(self, world, robot_model, robot_name, node):
        self.world, self.driver = world, world.driver
        robot_name = robot_model if robot_name is None else robot_name
        self.ns = "" if robot_name == "" else f"/{robot_name}"
        self.robot_node = node or world.robot.create_interbotix_global_node()
        services = dict(self.robot_node.get_service_names_and_types())
        if f"{self.ns}/set_operating_modes" not in services:
            raise AssertionError(f"upstream waits for '{self.ns}/set_operating_modes' forever")
        self.joint_states = self.driver.joint_state()   # spun until the first joint state

    def get_node(self):
        return self.robot_node

    def robot_get_joint_states(self):
        if self.robot_node.spinning:                     # the subscription callback runs
            self.joint_states = self.driver.joint_state()
        return copy.deepcopy(self.joint_states)

    def robot_set_motor_registers(self, cmd_type, name, reg, value):
        self.driver.registers[reg] = value
        self.driver.register_writes.append((cmd_type, name, reg, value))

    def robot_get_motor_registers(self, cmd_type, name, reg):
        return [self.driver.registers[reg]] * len(KIN.arm_joints)


class FakeArm:
    """InterbotixArmXSInterface."""

    def __init__(self, core, group_name, moving_time, accel_time):
        self.core, self.group_name = core, group_name
        self.moving_time, self.accel_time = moving_time, accel_time
        d = core.driver
        self.group_info = SimpleNamespace(
            num_joints=6, joint_names=list(KIN.arm_joints), mode="position",
            profile_type=d.profile_type, joint_lower_limits=list(KIN.lower),
            joint_upper_limits=list(KIN.upper), joint_velocity_limits=[d.velocity_limit] * 6)
        js = core.joint_states
        self.joint_commands = [js.position[js.name.index(n)] for n in KIN.arm_joints]
        self.set_trajectory_time(self.moving_time, self.accel_time)   # equal: writes nothing

    def set_trajectory_time(self, moving_time=None, accel_time=None):
        for attr, reg, value in (("moving_time", "Profile_Velocity", moving_time),
                                 ("accel_time", "Profile_Acceleration", accel_time)):
            if value is not None and value != getattr(self, attr):   # only a changed value
                setattr(self, attr, value)
                self.core.robot_set_motor_registers("group", self.group_name, reg,
                                                    int(value * 1000))

    def _check_joint_limits(self, positions):
        info, theta = self.group_info, [int(x * 1000) / 1000.0 for x in positions]
        return all(lo <= t <= hi and abs(t - c) / self.moving_time <= v for t, c, lo, hi, v in zip(
            theta, self.joint_commands, info.joint_lower_limits, info.joint_upper_limits,
            info.joint_velocity_limits))

    def set_joint_positions(self, joint_positions, moving_time=None, accel_time=None,
                            blocking=True):
        if not self._check_joint_limits(joint_positions):
            return False
        self.set_trajectory_time(moving_time, accel_time)
        self.joint_commands = list(joint_positions)
        self.core.driver.group_commands.append({"cmd": list(joint_positions), "blocking": blocking,
                                                "moving_time": moving_time,
                                                "accel_time": accel_time})
        self.core.driver.q = np.array(joint_positions, dtype=float)  # the motors get there
        if blocking:
            self.core.get_node().get_clock().sleep_for(Duration(seconds=self.moving_time))
        return True

    def get_joint_commands(self):
        return list(self.joint_commands)

    def set_ee_cartesian_trajectory(self, *args, **kwargs):   # sleeps in the real module
        raise AssertionError("set_ee_cartesian_trajectory blocks the control loop")


class FakeGripper:
    """InterbotixGripperXSInterface (PWM effort, limits checked on core.joint_states)."""

    def __init__(self, core, gripper_pressure=0.5, lower=150, upper=350):
        self.core, self.value = core, lower + gripper_pressure * (upper - lower)
        core.get_node().get_clock().sleep_for(Duration(seconds=0.5))   # the constructor's own wait

    def _controller(self, effort, delay):
        finger = self.core.joint_states.position[self.core.joint_states.name.index("left_finger")]
        if ((effort > 0 and finger < FINGER_LIMITS[1])
                or (effort < 0 and finger > FINGER_LIMITS[0])):
            self.core.driver.single_commands.append(effort)
            self.core.get_node().get_clock().sleep_for(Duration(seconds=delay))

    def release(self, delay=1.0):
        self._controller(self.value, delay)

    def grasp(self, delay=1.0):
        self._controller(-self.value, delay)


class FakeManipulator:
    """InterbotixManipulatorXS: the upstream signature; no shutdown() method."""

    world = None
    instances = None   # one list per World

    def __init__(self, robot_model, group_name="arm", gripper_name="gripper", robot_name=None,
                 moving_time=2.0, accel_time=0.3, gripper_pressure=0.5,
                 gripper_pressure_lower_limit=150, gripper_pressure_upper_limit=350,
                 topic_joint_states="joint_states", logging_level=None,
                 node_name="robot_manipulation", node=None, iterative_update_fk=True, args=None):
        self.init_kwargs = {"robot_model": robot_model, "robot_name": robot_name, "node": node,
                            "moving_time": moving_time, "accel_time": accel_time, "args": args}
        self.core = FakeCore(self.world, robot_model, robot_name, node)
        self.arm = FakeArm(self.core, group_name, moving_time, accel_time)
        self.gripper = FakeGripper(self.core, gripper_pressure, gripper_pressure_lower_limit,
                                   gripper_pressure_upper_limit)
        self.instances.append(self)


class World:
    """One process's view: the default context, the node clock, the driver, the modules."""

    def __init__(self, monkeypatch, driver=None):
        self.rclpy, self.clock, self.driver = FakeDefaultContext(), FakeClock(), driver or Driver()
        self.robot = RobotModule(self)
        self.manipulator_cls = type("InterbotixManipulatorXS", (FakeManipulator,),
                                    {"world": self, "instances": []})
        for name in ("ok", "init", "shutdown"):
            monkeypatch.setattr(rclpy, name, getattr(self.rclpy, name))
        self._install(monkeypatch)

    def _install(self, monkeypatch):
        for name in ("interbotix_xs_modules.xs_robot.arm",
                     "interbotix_common_modules.common_robot.robot"):
            for i in range(name.count(".") + 1):    # the module, then its packages
                package = name.rsplit(".", i)[0]
                monkeypatch.setitem(sys.modules, package, types.ModuleType(package))
        sys.modules["interbotix_xs_modules.xs_robot.arm"].InterbotixManipulatorXS = \
            self.manipulator_cls
        for name in ("create_interbotix_global_node", "robot_startup", "robot_shutdown"):
            setattr(sys.modules["interbotix_common_modules.common_robot.robot"], name,
                    getattr(self.robot, name))

    @property
    def bot(self):
        return self.manipulator_cls.instances[-1]


def arm_params(**overrides):
    return params.resolve("arm", [], {"backend": "interbotix", **overrides})


@pytest.fixture
def make_world(monkeypatch):
    return lambda driver=None: World(monkeypatch, driver)


@pytest.fixture
def world(make_world):
    return make_world()


@pytest.fixture
def no_sleep(monkeypatch):
    def forbidden(seconds):
        raise AssertionError(f"the backend slept {seconds} s on the control path")
    monkeypatch.setattr(time, "sleep", forbidden)


@pytest.fixture
def backend(world, no_sleep):
    b = InterbotixArm(arm_params(), "wx250s")
    world.clock.sleeps.clear()    # start-up waits (the gripper's 0.5 s) are upstream's own
    return b


# --- start-up ------------------------------------------------------------------------------------
def test_constructed_with_constant_timing_in_the_robot_namespace(make_world):
    w = make_world(Driver(ns="/lab_arm"))
    b = InterbotixArm(arm_params(moving_time_s=0.3), "lab_arm")
    init = w.bot.init_kwargs
    assert init["robot_model"] == "wx250s" and init["robot_name"] == "lab_arm"
    assert init["moving_time"] == pytest.approx(0.3)
    assert 0 < init["accel_time"] <= init["moving_time"] / 2   # the driver's own rule
    assert init["node"] is b.node and w.bot.core.ns == "/lab_arm"


def test_joint_states_follow_the_driver_after_startup(backend, world):
    # upstream spins the node only until the first joint state: without robot_startup() the
    # backend would read that first message for ever
    moved = START + np.array([0.2, -0.1, 0.1, 0.0, 0.1, 0.0])
    world.driver.q, world.driver.finger = moved, 0.02       # someone pushed the arm
    np.testing.assert_allclose(backend.joint_positions(), moved)
    obs = backend.observation()
    np.testing.assert_allclose(obs[:3], KIN.fk(moved)[:3, 3], atol=1e-9)
    assert obs[3] == pytest.approx(0.02)
    assert world.robot.calls == [("robot_startup", world.robot.global_node)]


def test_default_context_is_initialised_without_this_process_ros_args(world, monkeypatch):
    # the arm node runs as `arm --ros-args -r __node:=arm -r __ns:=/wx250s`: upstream's
    # rclpy.init() would read those and name the Interbotix node /wx250s/arm as well
    monkeypatch.setattr(sys, "argv", ["/ws/lib/mile_ros/arm", "--ros-args", "-r", "__node:=arm",
                                      "-r", "__ns:=/wx250s", "--params-file", "/tmp/p.yaml"])
    b = InterbotixArm(arm_params(), "wx250s")
    assert world.rclpy.args == ["/ws/lib/mile_ros/arm"] and world.rclpy.inits == 1
    assert b.node.full_name == "/wx250s/arm_interbotix"


def test_an_initialised_default_context_is_left_alone(world):
    rclpy.init(args=["other"])
    InterbotixArm(arm_params(), "wx250s")
    assert world.rclpy.inits == 1 and world.rclpy.args == ["other"]


def test_root_namespace_falls_back_to_the_robot_model(world):
    # robot_name '' makes upstream wait for '/set_operating_modes' (root namespace) forever
    b = InterbotixArm(arm_params(), "")
    assert world.bot.core.ns == "/wx250s" and b.node.full_name == "/wx250s/arm_interbotix"


def test_missing_driver_is_a_config_error_after_the_timeout(make_world):
    w = make_world(Driver(up_after_s=1e9))
    with pytest.raises(ConfigError) as e:
        InterbotixArm(arm_params(driver_timeout_s=3.0), "wx250s")
    text = str(e.value)
    assert all(f in text for f in ("'driver_timeout_s'", "/wx250s/set_operating_modes",
                                   "/wx250s/joint_states"))
    assert "xsarm_control.launch.py robot_model:=wx250s robot_name:=wx250s mode_configs:=" in text
    assert 3.0 <= w.clock.ns * 1e-9 < 3.5                    # waited through the node clock
    assert w.robot.global_node.destroyed and not w.manipulator_cls.instances


def test_a_driver_that_comes_up_late_is_waited_for(make_world):
    w = make_world(Driver(up_after_s=2.0))
    InterbotixArm(arm_params(driver_timeout_s=10.0), "wx250s")
    assert 2.0 <= w.clock.ns * 1e-9 < 3.0 and w.manipulator_cls.instances


def test_driver_without_a_time_profile_is_refused(make_world):
    w = make_world(Driver(profile_type="velocity"))
    with pytest.raises(ConfigError, match="profile_type 'velocity'.*mode_configs"):
        InterbotixArm(arm_params(), "wx250s")
    assert w.driver.registers == {"Profile_Velocity": 2000, "Profile_Acceleration": 300}
    assert w.robot.global_node.destroyed


# --- the motion profile --------------------------------------------------------------------------
@pytest.mark.parametrize("moving_time_s, velocity_ms, accel_ms", [(0.2, 200, 100),
                                                                  (0.3, 300, 150)])
def test_motion_profile_is_written_once_at_startup(world, moving_time_s, velocity_ms, accel_ms):
    b = InterbotixArm(arm_params(moving_time_s=moving_time_s), "wx250s")
    assert world.driver.registers == {"Profile_Velocity": velocity_ms,
                                      "Profile_Acceleration": accel_ms}
    assert world.driver.register_writes == [("group", "arm", "Profile_Velocity", velocity_ms),
                                            ("group", "arm", "Profile_Acceleration", accel_ms)]
    lines = [t for level, t in world.robot.global_node.logger if "Profile_Velocity" in t]
    assert lines == [f"arm: Interbotix motion profile in force on group 'arm': Profile_Velocity "
                     f"{velocity_ms} ms, Profile_Acceleration {accel_ms} ms (moving_time_s; the "
                     f"driver's default modes.yaml has 2000/300)"]
    for _ in range(5):
        b.apply(np.array([0.5, 0.0, 0.0, 0.0]))
    assert len(world.driver.group_commands) == 5 and len(world.driver.register_writes) == 2


def test_shipped_mode_config_matches_the_default_moving_time():
    root = params.default_file().parent
    ours = yaml.safe_load((root / "modes_mile.yaml").read_text())
    arm = ours["groups"]["arm"]
    moving_ms = round(arm_params()["moving_time_s"] * 1000)
    assert set(ours) == {"groups", "singles"} and set(ours["singles"]) == {"gripper"}
    assert arm == {"operating_mode": "position", "profile_type": "time",
                   "profile_velocity": moving_ms, "profile_acceleration": moving_ms // 2,
                   "torque_enable": True}
    assert ours["singles"]["gripper"]["operating_mode"] == "pwm"


# --- commands ------------------------------------------------------------------------------------
def test_ee_delta_becomes_one_nonblocking_joint_command(backend, world):
    p0 = KIN.fk(START)
    backend.apply(np.array([1.0, 0.0, -0.5, 0.0]))
    (call,) = world.driver.group_commands
    assert call["blocking"] is False
    assert call["moving_time"] == pytest.approx(0.2) and call["accel_time"] == pytest.approx(0.1)
    q = np.array(call["cmd"])
    assert np.all(q >= KIN.lower) and np.all(q <= KIN.upper)
    p1 = KIN.fk(q)
    np.testing.assert_allclose(p1[:3, 3] - p0[:3, 3], [0.015, 0.0, -0.0075], atol=2e-4)
    np.testing.assert_allclose(p1[:3, :3], p0[:3, :3], atol=2e-3)   # orientation kept
    assert len(world.driver.register_writes) == 2                    # the start-up ones only
    assert world.clock.sleeps == []                                  # no blocking wait


def test_workspace_is_never_left(backend, world):
    p = arm_params()
    lo, hi = np.array(p["workspace_min_m"]), np.array(p["workspace_max_m"])
    for _ in range(40):   # push down and outwards for 40 ticks (0.6 m of commands)
        backend.apply(np.array([1.0, 0.0, -1.0, 0.0]))
    calls = world.driver.group_commands
    assert len(calls) >= 10
    for call in calls:
        q = np.array(call["cmd"])
        assert np.all(q >= KIN.lower) and np.all(q <= KIN.upper)
        pos = KIN.fk(q)[:3, 3]
        assert np.all(pos >= lo - 1e-3) and np.all(pos <= hi + 1e-3), pos
        assert call["blocking"] is False and call["moving_time"] == pytest.approx(0.2)
    final = KIN.fk(world.driver.q)[:3, 3]
    assert final[2] == pytest.approx(lo[2], abs=2e-3)   # pinned at the floor of the box


def test_too_fast_joint_motion_is_refused_not_sent(world, no_sleep):
    b = InterbotixArm(arm_params(max_ee_step_m=0.3), "wx250s")
    b.apply(np.array([1.0, 1.0, 0.0, 0.0]))   # 0.2 m across in one tick: joints would jump
    assert b.ik_refusals == 1
    assert not world.driver.group_commands


def test_gripper_commands_without_delay_and_only_on_change(backend, world):
    for g in (1.0, 0.9, 0.2, -0.2, -1.0, -0.7, 1.0):
        backend.apply(np.array([0.0, 0.0, 0.0, g]))
    assert world.driver.single_commands == [-250.0, 250.0, -250.0]   # grasp, release, grasp
    assert world.clock.sleeps == [0.0, 0.0, 0.0]                      # delay 0: no wait
    assert not world.driver.group_commands   # zero EE delta: no arm command


def test_hold_sends_nothing(backend, world):
    backend.apply(None)
    assert not world.driver.group_commands and not world.driver.single_commands


def test_observation_and_pose_come_from_the_driver_joint_states(backend):
    assert backend.observation_names == ["ee_x", "ee_y", "ee_z", "left_finger"]
    obs = backend.observation()
    np.testing.assert_allclose(obs[:3], KIN.fk(START)[:3, 3], atol=1e-9)
    assert obs[3] == pytest.approx(0.03)
    pos, quat = backend.ee_pose()
    np.testing.assert_allclose(pos, obs[:3])
    assert np.linalg.norm(quat) == pytest.approx(1.0)
    assert backend.publishes_joint_states is False   # xs_sdk publishes /<robot>/joint_states


# --- refusals ------------------------------------------------------------------------------------
def test_refusals_are_counted_and_logged_at_a_limited_rate(world):
    b = InterbotixArm(arm_params(max_ee_step_m=0.3), "wx250s")
    for _ in range(4):
        b.apply(np.array([1.0, 1.0, 0.0, 0.0]))
    world.clock.ns += int(5.0 * 1e9)            # rate-limited on the node clock: 5 s later
    b.apply(np.array([1.0, 1.0, 0.0, 0.0]))
    lines = [t for level, t in world.robot.global_node.logger
             if level == "warning" and "refused" in t]
    assert len(lines) == 2 and b.ik_refusals == 5
    assert "refused, holding: " in lines[0] and "1 refused so far" in lines[0]
    assert "5 refused so far" in lines[1] and "+3 more" in lines[1]


def test_a_command_the_driver_refuses_counts_as_a_refusal(make_world):
    w = make_world(Driver(velocity_limit=0.01))   # every step is too fast for it
    b = InterbotixArm(arm_params(), "wx250s")
    b.apply(np.array([1.0, 0.0, 0.0, 0.0]))
    assert not w.driver.group_commands
    assert any("driver refused" in t for _, t in w.robot.global_node.logger)
    assert b.ik_refusals == 1


# --- shutdown ------------------------------------------------------------------------------------
def test_close_shuts_the_interbotix_api_down(backend, world):
    assert not hasattr(world.bot, "shutdown")   # galactic only
    backend.close()
    assert ("robot_shutdown", world.robot.global_node) in world.robot.calls
    assert world.robot.global_node.destroyed and not world.rclpy.ok()
    backend.close()                             # a second close does nothing
    assert [c for c, _ in world.robot.calls] == ["robot_startup", "robot_shutdown"]


def test_close_after_ctrl_c_shut_the_default_context_down(backend, world):
    world.rclpy.shutdown()                      # rclpy's SIGINT handler got there first
    backend.close()                             # rclpy.shutdown() raises inside: not fatal
    assert world.robot.global_node.destroyed


# --- selection -----------------------------------------------------------------------------------
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


def test_selected_backend_imports_the_interbotix_module(world):
    b = make_backend(arm_params(), "wx250s")
    assert isinstance(b.bot, world.manipulator_cls)


def test_missing_interbotix_module_is_a_clear_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "interbotix_xs_modules", None)   # import fails
    with pytest.raises(ConfigError, match="'backend'.*interbotix_xs_modules"):
        make_backend(arm_params(), "wx250s")


def test_sim_backend_does_not_import_interbotix():
    assert ("interbotix_xs_modules" not in sys.modules
            or sys.modules["interbotix_xs_modules"] is None)
    with pytest.raises(ConfigError, match="'backend'"):
        make_backend({**arm_params(), "backend": "gazebo"}, "wx250s")
