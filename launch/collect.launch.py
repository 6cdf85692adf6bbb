r"""The collection graph: arm, arbiter, policy_server, recorder, the person's side, a camera.

The person's side is the PS3 joystick node on a real robot, the simulated person in simulation;
the camera is started when asked.

    ros2 launch mile_ros collect.launch.py robot_name:=wx250s sim:=false camera:=true \
        out:=runs/lab iteration:=3
    ros2 launch mile_ros collect.launch.py sim:=true realtime_factor:=0 episodes:=8

Parameters: the installed config/collect.yaml (one section per node), with these overrides from
the arguments -- the same nodes and parameters as `mile-ros collect` (mile_ros/tools/collect.py):
  arm.backend      sim | interbotix (from `sim`)       arm.episodes       `episodes`
  recorder.out     `out`                               recorder.iteration `iteration`
  camera.source    sim | opencv (from `sim`)           arbiter.joy_sync   `sim`
  arbiter.episode_buttons  not `sim` (a real robot's episodes start and end on the controller)
  policy_server.allow_unsigned  true when `sim` (unsigned checkpoints: the simulated default);
                   otherwise the YAML's own value (false as shipped: signed checkpoints only)
  policy_server.image_sync  `sim` and `camera` (an image policy waits for its tick's frame)
  arm.realtime_factor  `realtime_factor` (sim: 1.0 the wall clock, 0 lockstep; default the YAML's)
  arbiter.a_r_timeout_s  0.9 s (LOCKSTEP_A_R_TIMEOUT_S) when `sim` and `realtime_factor` 0: the
                   arm waits for each command, so a late a_r delays the tick instead of holding
                   it; otherwise the YAML's own value
`sim` and `camera` take true/false (also True/False, 1/0); `episodes` and `iteration` whole
numbers >= 0, `realtime_factor` a number >= 0. A bad value is refused, with the argument
named, before any node starts.
When the arm stops after `episodes` episodes (sim), the whole launch shuts down; when the arm
fails (a non-zero exit status), the launch shuts down with an error naming the status and exits 1.
The namespaced copy of the parameter file is kept in ~/.cache/mile_ros ($XDG_CACHE_HOME). The
override dicts below are written by launch_ros itself to launch_params_* files in the temp
directory, which it never deletes (launch_ros/actions/node.py, humble to rolling).
Uses only launch / launch_ros API common to Humble, Jazzy and Rolling.
"""
import hashlib
import os
import tempfile

import yaml
from ament_index_python.packages import get_package_share_directory
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    LogInfo,
    OpaqueFunction,
    RegisterEventHandler,
)
from launch.conditions import IfCondition, UnlessCondition
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription
from mile_ros.params import SHARED
from mile_ros.tools.collect import LOCKSTEP_A_R_TIMEOUT_S

PACKAGE = "mile_ros"
# The spellings of a boolean argument: what IfCondition accepts on every distro. Parameters never
# see them as typed: humble's ParameterValue(value_type=bool) refuses '1' and '0' (jazzy and
# rolling accept them), so bool parameters are given 'true' / 'false' (see `_when_sim`).
BOOL_CHOICES = ["true", "false", "True", "False", "1", "0"]
WHOLE_NUMBERS = ("episodes", "iteration")  # int parameters: checked before any node starts
NUMBERS = ("realtime_factor",)              # float parameters >= 0: likewise


def _number_ok(text: str, kind) -> bool:
    try:
        return kind(text) >= 0   # int() / float(), as ParameterValue(value_type=...) reads it
    except ValueError:
        return False


def _check_numbers(context):
    """Refuse a bad `episodes`, `iteration` or `realtime_factor` before the first node starts.

    A node's ParameterValue would refuse it only when that node is reached, after the earlier
    ones.
    """
    for names, kind, what in ((WHOLE_NUMBERS, int, "a whole number"),
                              (NUMBERS, float, "a number")):
        for name in names:
            text = context.launch_configurations[name]
            if not _number_ok(text, kind):
                raise RuntimeError(f'Argument "{name}" provided value "{text}" is not valid: '
                                   f"expected {what} >= 0")
    return []


def _on_arm_exit(event, context):
    """End the launch on the arm's exit: it has finished its episodes (status 0), or it failed.

    A failure is raised: launch logs it as an error, shuts down with it as the reason, and
    `ros2 launch` exits 1. On humble, jazzy and rolling alike (launch_service.py, run_async) an
    exception in an action or event handler is the only thing that makes the launch exit
    non-zero; a process's own exit status never reaches it.
    """
    if event.returncode == 0:
        return [EmitEvent(event=Shutdown(reason="the arm finished its episodes"))]
    failure = f"the arm failed with exit status {event.returncode} (its output above says why)"
    if context.is_shutdown:  # stopped with the others (Ctrl-C): not what ended the launch
        return [LogInfo(msg=f"{failure}, while the launch was shutting down")]
    raise RuntimeError(failure)


def _when_sim(if_true, if_false, *also):
    """'if_true' when the `sim` argument is true (as IfCondition reads it), else 'if_false'.

    `also`: other boolean arguments that must be true as well.
    """
    parts = [f"'{if_true}' if '", LaunchConfiguration("sim"), "'.lower() in ('true', '1')"]
    for name in also:
        parts += [" and '", LaunchConfiguration(name), "'.lower() in ('true', '1')"]
    return PythonExpression([*parts, f" else '{if_false}'"])


def _cache_dir():
    """Return the user's cache folder for this package.

    Where that cannot be written: a per-user folder in the temp directory.
    """
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    for folder in (os.path.join(cache, PACKAGE),
                   os.path.join(tempfile.gettempdir(), f"{PACKAGE}-{os.getuid()}")):
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            return folder
    raise OSError(f"no writable folder for the parameter file: tried {cache}/{PACKAGE} and "
                  f"{tempfile.gettempdir()}")


def _write_atomically(path, text):
    """Replace `path` in one step: a node starting meanwhile reads the old or the new file."""
    fd, partial = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".partial-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(partial, path)
    except BaseException:
        os.unlink(partial)
        raise


def _for_any_namespace(config):
    """Return a copy of the parameter file whose sections match the nodes in any namespace.

    The sections are `/**/arm` rather than `arm`, which would match only `/arm`; values keep the
    file's own YAML types. One file per content in the user's cache, rewritten by every launch
    rather than a new temp file each time (nothing deletes those: the nodes read it after this
    returns).
    """
    with open(config) as f:
        sections = yaml.safe_load(f)
    for (node, name), (owner, owner_name) in SHARED.items():   # declared once, under the owner
        sections[node]["ros__parameters"].setdefault(
            name, sections[owner]["ros__parameters"][owner_name])
    text = yaml.safe_dump({f"/**/{name}": section for name, section in sections.items()},
                          sort_keys=False)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = os.path.join(_cache_dir(), f"collect-{digest}.yaml")
    _write_atomically(path, text)
    return path


def generate_launch_description():
    shipped = os.path.join(get_package_share_directory(PACKAGE), "config", "collect.yaml")
    config = _for_any_namespace(shipped)
    with open(shipped) as f:   # a real robot keeps the file's own allow_unsigned
        sections = yaml.safe_load(f)
    shipped_allow_unsigned = bool(sections["policy_server"]["ros__parameters"]["allow_unsigned"])
    shipped_rate = float(sections["arm"]["ros__parameters"]["realtime_factor"])
    shipped_a_r_timeout = float(sections["arbiter"]["ros__parameters"]["a_r_timeout_s"])

    def node(name, overrides=None, **kwargs):
        parameters = [config]
        if overrides:
            parameters.append(overrides)
        return Node(package=PACKAGE, executable=name, name=name,
                    namespace=LaunchConfiguration("robot_name"), parameters=parameters,
                    output="screen", emulate_tty=True, **kwargs)

    sim = LaunchConfiguration("sim")
    rate = LaunchConfiguration("realtime_factor")
    arm = node("arm", {"backend": _when_sim("sim", "interbotix"),
                       "episodes": ParameterValue(LaunchConfiguration("episodes"),
                                                  value_type=int),
                       "realtime_factor": ParameterValue(rate, value_type=float)})
    # lockstep sim: a late a_r delays the tick (the arm waits for it) rather than holding it
    lockstep = PythonExpression([f"'{LOCKSTEP_A_R_TIMEOUT_S}' if '", sim,
                                 "'.lower() in ('true', '1') and float('", rate,
                                 f"') == 0 else '{shipped_a_r_timeout}'"])
    return LaunchDescription([
        DeclareLaunchArgument("robot_name", default_value="wx250s",
                              description="namespace of every node and topic"),
        DeclareLaunchArgument("sim", default_value="false", choices=BOOL_CHOICES,
                              description="true: simulated WidowX and simulated person"),
        DeclareLaunchArgument("camera", default_value="false", choices=BOOL_CHOICES,
                              description="true: start the camera node (and record images)"),
        DeclareLaunchArgument("out", default_value="runs/collect",
                              description="bags go to <out>/iter<iteration>/"),
        DeclareLaunchArgument("iteration", default_value="1", description="iteration number"),
        DeclareLaunchArgument("episodes", default_value="0",
                              description="sim: stop after this many episodes (0: no limit)"),
        DeclareLaunchArgument("realtime_factor", default_value=str(shipped_rate),
                              description="sim: 1.0 = the wall clock, 0 = lockstep (as fast "
                                          "as the graph answers)"),
        OpaqueFunction(function=_check_numbers),   # before the first node
        node("recorder", {"out": ParameterValue(LaunchConfiguration("out"), value_type=str),
                          "iteration": ParameterValue(LaunchConfiguration("iteration"),
                                                      value_type=int)}),
        node("arbiter", {"joy_sync": ParameterValue(_when_sim("true", "false"),
                                                    value_type=bool),
                         "episode_buttons": ParameterValue(_when_sim("false", "true"),
                                                           value_type=bool),
                         "a_r_timeout_s": ParameterValue(lockstep, value_type=float)}),
        node("policy_server", {"allow_unsigned": ParameterValue(
            _when_sim("true", str(shipped_allow_unsigned).lower()), value_type=bool),
            "image_sync": ParameterValue(_when_sim("true", "false", "camera"),
                                         value_type=bool)}),
        node("sim_human", condition=IfCondition(sim)),
        node("joystick", condition=UnlessCondition(sim)),
        node("camera", {"source": _when_sim("sim", "opencv")},
             condition=IfCondition(LaunchConfiguration("camera"))),
        arm,
        RegisterEventHandler(OnProcessExit(target_action=arm, on_exit=_on_arm_exit)),
    ])
