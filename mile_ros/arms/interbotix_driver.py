"""Bringing up the Interbotix Python API (interbotix_ros_toolboxes, humble) beside the xs_sdk.

Upstream facts this module works with (read from `xs_robot/core.py`, `xs_robot/arm.py` and
`common_robot/robot.py`):

- `create_interbotix_global_node()` calls `rclpy.init()` on the *default* context only when
  `rclpy.ok()` is false, and then without arguments, i.e. from `sys.argv`: this process's
  `--ros-args` remaps (`__node:=arm`, `__ns:=...`) would apply to the Interbotix node too.
  `init_default_context` initialises it first with the program name only.
- The core waits for `/<robot_name>/set_operating_modes` forever (`robot_name` '' means the root
  namespace): `wait_for_driver` gives up after a timeout with the services it did not find.
- The constructor spins its node only until the first joint state; `robot_startup(node)` starts the
  executor thread that keeps joint states (and the gripper's limit timer) going;
  `robot_shutdown(node)` destroys the node, shuts the default context down and joins that thread.
- The constructor stores `moving_time`/`accel_time` without writing the motors' profile registers,
  so `write_profile` writes them once (`core.robot_set_motor_registers`) and reads them back.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable

from mile_ros.params import ConfigError

# the Interbotix node, beside the arm node in the robot namespace
NODE_NAME = "arm_interbotix"
DRIVER_SERVICES = ("set_operating_modes", "set_motor_pid_gains", "set_motor_registers",
                   "get_motor_registers", "get_robot_info", "torque_enable", "reboot_motors")
PROFILE_REGISTERS = ("Profile_Velocity", "Profile_Acceleration")
DRIVER_DEFAULT_PROFILE_MS = (2000, 300)  # xsarm_control's own config/modes.yaml
POLL_S = 0.1


@dataclass
class InterbotixApi:
    """The upstream entry points the backend calls (tests inject stand-ins)."""

    manipulator_cls: Any          # interbotix_xs_modules.xs_robot.arm.InterbotixManipulatorXS
    create_node: Callable         # common_robot.robot.create_interbotix_global_node
    robot_startup: Callable       # common_robot.robot.robot_startup
    robot_shutdown: Callable      # common_robot.robot.robot_shutdown


def load_api() -> InterbotixApi:
    """Import the Interbotix modules the way upstream demos do (xsarm_joy's xsarm_robot.py)."""
    try:
        from interbotix_common_modules.common_robot.robot import (
            create_interbotix_global_node,
            robot_shutdown,
            robot_startup,
        )
        from interbotix_xs_modules.xs_robot.arm import InterbotixManipulatorXS
    except ImportError as e:
        raise ConfigError(
            "arm parameter 'backend' is 'interbotix' but interbotix_xs_modules / "
            f"interbotix_common_modules cannot be imported ({e}); build mile_ros in the "
            "Interbotix workspace and source it, or use backend 'sim'") from None
    return InterbotixApi(InterbotixManipulatorXS, create_interbotix_global_node,
                         robot_startup, robot_shutdown)


def init_default_context() -> bool:
    """Initialise rclpy's default context with no --ros-args, as upstream decides.

    Only when `rclpy.ok()` is false. Returns whether it was initialised here.
    """
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    if rclpy.ok():
        return False
    # No rclpy signal handlers: SIGINT/SIGTERM belong to the node runtime, which stops the arm's
    # loop before anything is shut down (rclpy's would shut the contexts down under it).
    rclpy.init(args=[sys.argv[0] if sys.argv else "mile_ros"],
               signal_handler_options=SignalHandlerOptions.NO)
    return True


def driver_namespace(robot_name: str, robot_model: str) -> str:
    """Return the xs_sdk's namespace: the arm node's, or `robot_model` in the root namespace.

    `robot_model` is xsarm_control's default robot_name; it is used when the arm node runs in
    the root namespace.
    """
    return robot_name.strip("/") or robot_model


def driver_command(ns: str, robot_model: str) -> str:
    return (f"ros2 launch interbotix_xsarm_control xsarm_control.launch.py "
            f"robot_model:={robot_model} robot_name:={ns} "
            "mode_configs:=$(ros2 pkg prefix --share mile_ros)/config/modes_mile.yaml")


def missing_driver_endpoints(node, ns: str) -> list[str]:
    """Return what the core would wait for and the graph does not have yet."""
    have = {name for name, _ in node.get_service_names_and_types()}
    missing = [f"/{ns}/{s}" for s in DRIVER_SERVICES if f"/{ns}/{s}" not in have]
    if node.count_publishers(f"/{ns}/joint_states") == 0:
        missing.append(f"/{ns}/joint_states (no publisher)")
    return missing


def wait_for_driver(node, ns: str, robot_model: str, timeout_s: float) -> None:
    """Return once the driver's services and joint states are in the graph.

    Raise a ConfigError after `timeout_s` (polled through the node's clock); KeyboardInterrupt
    if rclpy shuts down first.
    """
    from rclpy.duration import Duration

    clock = node.get_clock()
    give_up = clock.now().nanoseconds + int(timeout_s * 1e9)
    while node.context.ok():
        missing = missing_driver_endpoints(node, ns)
        if not missing:
            return
        if clock.now().nanoseconds >= give_up:
            raise ConfigError(driver_missing_message(ns, robot_model, timeout_s, missing))
        clock.sleep_for(Duration(seconds=POLL_S))
    raise KeyboardInterrupt("rclpy shut down while waiting for the Interbotix driver")


def driver_missing_message(ns: str, robot_model: str, timeout_s: float, missing) -> str:
    return (f"arm parameter 'driver_timeout_s' ({timeout_s:g} s): no Interbotix xs_sdk driver "
            f"under '/{ns}' (missing {', '.join(missing)}). Start the driver first, in the arm "
            f"node's namespace (launch argument robot_name; the root namespace falls back to "
            f"'robot_model' {robot_model!r}): {driver_command(ns, robot_model)}")


def check_group_modes(group_info, ns: str, robot_model: str) -> None:
    """Refuse a driver whose 'arm' group is not position-controlled with a time-based profile.

    Profile_Velocity / Profile_Acceleration are then not times in ms.
    """
    mode, profile = group_info.mode, group_info.profile_type
    if mode != "position" or profile != "time":
        raise ConfigError(
            f"the Interbotix driver runs group 'arm' with operating_mode {mode!r} and "
            f"profile_type {profile!r}; mile_ros needs 'position' and 'time' (driver launch "
            f"argument mode_configs): {driver_command(ns, robot_model)}")


def profile_ms(moving_time_s: float, accel_time_s: float) -> dict[str, int]:
    return {"Profile_Velocity": int(round(moving_time_s * 1000)),
            "Profile_Acceleration": int(round(accel_time_s * 1000))}


def write_profile(core, wanted: dict[str, int]) -> dict[str, list[int]]:
    """Write the arm group's profile registers once and read back what the motors hold."""
    for reg in PROFILE_REGISTERS:
        core.robot_set_motor_registers("group", "arm", reg, wanted[reg])
    return {reg: [int(v) for v in core.robot_get_motor_registers("group", "arm", reg)]
            for reg in PROFILE_REGISTERS}


def profile_message(wanted: dict[str, int], read: dict[str, list[int]]) -> tuple[bool, str]:
    """(whether every motor holds the wanted values, one line saying what is in force)."""
    ok = all(bool(read[r]) and set(read[r]) == {wanted[r]} for r in PROFILE_REGISTERS)
    held = ", ".join(f"{r} {_values(read[r])} ms" for r in PROFILE_REGISTERS)
    default = "/".join(str(v) for v in DRIVER_DEFAULT_PROFILE_MS)
    if ok:
        return True, (f"arm: Interbotix motion profile in force on group 'arm': {held} "
                      f"(moving_time_s; the driver's default modes.yaml has {default})")
    want = ", ".join(f"{r} {wanted[r]} ms" for r in PROFILE_REGISTERS)
    return False, f"arm: Interbotix motors report {held}, not the {want} written"


def _values(values: list[int]) -> str:
    distinct = sorted(set(values))
    return str(distinct[0]) if len(distinct) == 1 else "/".join(str(v) for v in distinct)
