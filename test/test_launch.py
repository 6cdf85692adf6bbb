"""launch/collect.launch.py under a stand-in of `launch` / `launch_ros`.

Neither can be installed here. For every combination of arguments it must start exactly the
nodes, with exactly the parameters, that `mile-ros collect` starts, and refuse a bad argument
before any node starts.

The stand-in follows the upstream code wherever the launch file depends on it; read on the
humble, jazzy and rolling branches of ros2/launch and ros2/launch_ros (identical on all three
unless a distro is named):
- launch/launch/launch_service.py (`run_async`): the entities are visited in order and a Node's
  process is started as its action executes, so an error in a later action leaves the earlier
  nodes started. An exception raised by an action or an event handler is logged as
  "Caught exception in launch (see debug for traceback): <message>", shuts the launch down with
  that message as the reason, and makes `run()` return 1 -- which `ros2 launch` returns
  (ros2launch/api/api.py `launch_a_launch_file`). Nothing else makes it non-zero: a process's
  own exit status never reaches the return code.
- launch/launch/actions/include_launch_description.py: every `name:=value` argument becomes a
  launch configuration, declared or not (an undeclared one is accepted silently).
- launch/launch/actions/declare_launch_argument.py: the default is set in `execute()`, and
  `choices` are checked there (exact string match; a default outside them is refused already by
  the constructor), so a bad value is refused before any later action runs.
- launch/launch/utilities/type_utils.py (`coerce_to_type`, used by ParameterValue through
  `perform_typed_substitution`): int and float are `int(text)` / `float(text)`; bool is YAML
  true/false on humble, and jazzy and rolling also map '1' / '0' first; no type: YAML rules.
- launch/launch/conditions/evaluate_condition_expression_impl.py: IfCondition strips and
  lower-cases, then accepts exactly true/1/false/0, anything else is an error.
- launch_ros/launch_ros/utilities/evaluate_parameters.py (`evaluate_parameter_dict`): a bare
  substitution as a parameter value is read with `yaml.safe_load` ('' stays '').
- launch/launch/event_handlers/on_process_exit.py, events/process/process_exited.py:
  `on_exit` is a list of entities or a callable (event, context); the event has `returncode`.
  launch/launch/launch_context.py: `is_shutdown` is true once a shutdown has begun.
"""
import importlib.util
import os
import sys
import tempfile
import types
from pathlib import Path

import pytest
import yaml

from mile_ros import params
from mile_ros.tools import collect

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = ROOT / "launch" / "collect.launch.py"
DISTROS = ("humble", "jazzy", "rolling")


# --- the stand-in ----------------------------------------------------------------------------
class SubstitutionFailure(Exception):
    pass


class InvalidConditionExpressionError(Exception):
    pass


class Context:
    def __init__(self, configurations, distro):
        self.launch_configurations = dict(configurations)
        self.distro = distro
        self.is_shutdown = False


def perform(value, context):
    """Evaluate a substitution, a list of them (concatenated), or a plain value (as is)."""
    if isinstance(value, (list, tuple)) and any(hasattr(v, "perform") for v in value):
        return "".join(str(perform(v, context)) for v in value)
    if hasattr(value, "perform"):
        return value.perform(context)
    return value


def is_substitution(value):
    return hasattr(value, "perform") or (
        isinstance(value, (list, tuple)) and any(hasattr(v, "perform") for v in value))


class LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        if self.name not in context.launch_configurations:
            raise SubstitutionFailure(f"launch configuration '{self.name}' does not exist")
        return context.launch_configurations[self.name]


class PythonExpression:
    def __init__(self, expression):
        self.expression = expression

    def perform(self, context):
        return str(eval(perform(self.expression, context)))  # as launch does


class IfCondition:
    def __init__(self, predicate):
        self.predicate = predicate

    def evaluate(self, context):
        text = str(perform(self.predicate, context)).strip().lower()
        if text not in ("true", "1", "false", "0"):
            raise InvalidConditionExpressionError(
                f"Unexpected condition expression '{text}', expected one of true, 1, false, 0")
        return text in ("true", "1")


class UnlessCondition(IfCondition):
    def evaluate(self, context):
        return not super().evaluate(context)


def _as_yaml(text):
    if not text:
        return text
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"Failed to convert '{text}': yaml.safe_load() failed\n{e}") from None
    scalars = (bool, int, float, str)
    if not (isinstance(value, scalars) or (isinstance(value, list) and value and
                                           all(type(v) is type(value[0]) for v in value))):
        raise ValueError(f"Failed to convert '{text}': output type is not allowed, "
                         f"got {type(value)}")
    return value


def coerce_to_type(text, value_type, distro):
    """launch.utilities.type_utils.coerce_to_type for the scalar types."""
    if value_type is None:
        return _as_yaml(text)
    if value_type is str:
        return text
    if value_type in (int, float):
        return value_type(text)            # raises ValueError
    assert value_type is bool, value_type
    if distro != "humble":                 # jazzy, rolling: '1' and '0' are bools too
        text = {"1": "true", "0": "false"}.get(text, text)
    value = _as_yaml(text)
    if isinstance(value, bool):
        return value
    raise ValueError(f"Cannot convert value '{text}' to '{bool}'")


class ParameterValue:
    def __init__(self, value, *, value_type=None):
        self.value, self.value_type = value, value_type

    def evaluate(self, context):
        if not is_substitution(self.value):
            return self.value
        return coerce_to_type(perform(self.value, context), self.value_type, context.distro)


def evaluate_parameter(value, context):
    """Evaluate a value of a parameter dict, as launch_ros's evaluate_parameter_dict reads it."""
    if isinstance(value, ParameterValue):
        return value.evaluate(context)
    if is_substitution(value):
        return _as_yaml(perform(value, context)) or ""
    return value


class Action:
    def __init__(self, *, condition=None):
        self.condition = condition

    def execute(self, run):
        return []


class DeclareLaunchArgument(Action):
    def __init__(self, name, *, default_value=None, description=None, choices=None, **kw):
        super().__init__(**kw)
        if choices is not None and len(choices) == 0:
            raise RuntimeError("Provided choices arg is empty. "
                               "Use None to ignore the choice list.")
        if (choices is not None and isinstance(default_value, str)
                and default_value not in choices):
            raise RuntimeError(f'Provided default_value "{default_value}" is not in provided '
                               f'choices "{choices}".')
        self.name, self.default_value = name, default_value
        self.description, self.choices = description, choices

    def execute(self, run):
        configurations = run.context.launch_configurations
        if self.name not in configurations:
            if self.default_value is None:
                raise RuntimeError(f'Required launch argument "{self.name}" was not provided.')
            configurations[self.name] = str(perform(self.default_value, run.context))
        value = configurations[self.name]
        if self.choices is not None and value not in self.choices:
            raise RuntimeError(f'Argument "{self.name}" provided value "{value}" is not valid. '
                               f'Valid options are: {self.choices}')
        return []


class OpaqueFunction(Action):
    def __init__(self, *, function, args=None, kwargs=None, **kw):
        super().__init__(**kw)
        self.function, self.args, self.kwargs = function, list(args or []), dict(kwargs or {})

    def execute(self, run):
        return self.function(run.context, *self.args, **self.kwargs)


class LogInfo(Action):
    def __init__(self, *, msg, **kw):
        super().__init__(**kw)
        self.msg = msg

    def execute(self, run):
        run.log.append(("INFO", str(perform(self.msg, run.context))))
        return []


class Node(Action):
    def __init__(self, *, package, executable, name=None, namespace=None, parameters=(),
                 output=None, emulate_tty=False, arguments=None, remappings=None, **kw):
        super().__init__(**kw)
        self.package, self.executable, self.name = package, executable, name
        self.namespace, self.parameters = namespace, list(parameters)
        self.remappings = remappings

    def _layer(self, layer, context):
        raw = {}
        if isinstance(layer, (str, Path)):   # a parameter file, as the node's rcl would read it
            doc = yaml.safe_load(Path(layer).read_text())
            matching = [k for k in doc if k in (f"/**/{self.name}", "/**")]
            assert matching, f"{layer} has no section that matches a namespaced {self.name}"
            for key in matching:
                flatten("", doc[key]["ros__parameters"], raw)
            return raw
        flatten("", layer, raw)
        return {k: evaluate_parameter(v, context) for k, v in raw.items()}

    def execute(self, run):
        flat = {}
        for layer in self.parameters:        # every value is evaluated before the process starts
            flat.update(self._layer(layer, run.context))
        assert self.name not in run.started, f"node {self.name} started twice"
        run.started[self.name] = (perform(self.namespace, run.context), self.executable,
                                  self.package, flat)
        run.actions[self.name] = self
        return []


class Shutdown:
    def __init__(self, *, reason="reason not given"):
        self.reason = reason


class ProcessExited:
    def __init__(self, *, action, returncode):
        self.action, self.returncode = action, returncode


class EmitEvent(Action):
    def __init__(self, *, event, **kw):
        super().__init__(**kw)
        self.event = event

    def execute(self, run):
        if isinstance(self.event, Shutdown):
            run.shutdown(self.event.reason)
        return []


class OnProcessExit:
    def __init__(self, *, target_action, on_exit):
        self.target_action, self.on_exit = target_action, on_exit

    def handle(self, event, context):
        if event.action is not self.target_action:
            return []
        if callable(self.on_exit):
            return self.on_exit(event, context) or []
        return self.on_exit


class RegisterEventHandler(Action):
    def __init__(self, event_handler, **kw):
        super().__init__(**kw)
        self.event_handler = event_handler

    def execute(self, run):
        run.handlers.append(self.event_handler)
        return []


class LaunchDescription:
    def __init__(self, entities):
        self.entities = list(entities)


class LaunchRun:
    """What `ros2 launch` does with a launch description and its name:=value arguments."""

    def __init__(self, description, arguments=None, distro="humble"):
        self.context = Context(arguments or {}, distro)  # undeclared ones accepted silently
        self.started = {}   # node name -> (namespace, executable, package, parameters), in order
        self.actions, self.handlers, self.log, self.shutdown_reasons = {}, [], [], []
        self.return_code, self.error = 0, None
        self._guarded(self._visit, description.entities)

    def _visit(self, entities):
        for entity in entities:
            if isinstance(entity, LaunchDescription):
                self._visit(entity.entities)
            elif entity.condition is None or entity.condition.evaluate(self.context):
                self._visit(entity.execute(self) or [])

    def _guarded(self, step, *args):
        try:
            step(*args)
        except Exception as exc:  # noqa: BLE001 - as LaunchService.run_async
            self.error = exc
            message = f"Caught exception in launch (see debug for traceback): {exc}"
            self.log.append(("ERROR", message))
            self.shutdown(message)
            self.return_code = 1

    def shutdown(self, reason):
        self.shutdown_reasons.append(reason)
        self.context.is_shutdown = True

    def process_exited(self, name, returncode):
        """Report that node `name`'s process exited: run the handlers registered for it."""
        event = ProcessExited(action=self.actions[name], returncode=returncode)
        for handler in list(self.handlers):
            self._guarded(lambda h: self._visit(h.handle(event, self.context)), handler)
        return self


def _module(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    return m


@pytest.fixture(autouse=True)
def _cache_home(tmp_path, monkeypatch):
    """Whatever the launch file keeps for the user goes under this test's own directory."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def launch_file(monkeypatch):
    """Load the launch file with the stand-in modules injected."""
    stand_ins = {
        "launch": _module("launch", LaunchDescription=LaunchDescription),
        "launch.actions": _module("launch.actions", DeclareLaunchArgument=DeclareLaunchArgument,
                                  EmitEvent=EmitEvent, RegisterEventHandler=RegisterEventHandler,
                                  OpaqueFunction=OpaqueFunction, LogInfo=LogInfo),
        "launch.conditions": _module("launch.conditions", IfCondition=IfCondition,
                                     UnlessCondition=UnlessCondition),
        "launch.event_handlers": _module("launch.event_handlers", OnProcessExit=OnProcessExit),
        "launch.events": _module("launch.events", Shutdown=Shutdown),
        "launch.events.process": _module("launch.events.process", ProcessExited=ProcessExited),
        "launch.substitutions": _module("launch.substitutions",
                                        LaunchConfiguration=LaunchConfiguration,
                                        PythonExpression=PythonExpression),
        "launch_ros": _module("launch_ros"),
        "launch_ros.actions": _module("launch_ros.actions", Node=Node),
        "launch_ros.parameter_descriptions": _module("launch_ros.parameter_descriptions",
                                                     ParameterValue=ParameterValue),
        "ament_index_python": _module("ament_index_python"),
        "ament_index_python.packages": _module(
            "ament_index_python.packages",
            get_package_share_directory=lambda pkg: str(ROOT) if pkg == "mile_ros" else
            (_ for _ in ()).throw(LookupError(pkg))),
    }
    for name, module in stand_ins.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("collect_launch_under_test", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def flatten(prefix, value, out):
    if isinstance(value, dict):
        for k, v in value.items():
            flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def evaluate(description, arguments, distro="humble"):
    """Return {node name: (namespace, executable, package, flat parameters)}.

    Raises what launch would have reported.
    """
    run = LaunchRun(description, arguments, distro)
    if run.error is not None:
        raise run.error
    return run.started


# --- the tests ------------------------------------------------------------------------------
def test_declares_the_documented_arguments(launch_file):
    description = launch_file.generate_launch_description()
    names = {e.name for e in description.entities if isinstance(e, DeclareLaunchArgument)}
    assert names == {"robot_name", "sim", "camera", "out", "iteration", "episodes",
                     "realtime_factor"}


@pytest.mark.parametrize("distro", DISTROS)
@pytest.mark.parametrize("sim", [True, False])
@pytest.mark.parametrize("camera", [True, False])
@pytest.mark.parametrize("rate", [None, "0", "2.5"])
def test_same_nodes_and_parameters_as_mile_ros_collect(launch_file, sim, camera, distro, rate):
    arguments = {"robot_name": "lab_arm", "sim": str(sim).lower(), "camera": str(camera).lower(),
                 "out": "runs/x", "iteration": "3", "episodes": "7",
                 **({"realtime_factor": rate} if rate is not None else {})}
    started = evaluate(launch_file.generate_launch_description(), arguments, distro)

    expected_nodes = collect.graph_nodes(sim, camera)
    assert sorted(started) == sorted(expected_nodes)
    overrides = collect.node_overrides(sim, camera, "runs/x", 3, 7,
                                       None if rate is None else float(rate))
    for name in expected_nodes:
        namespace, executable, package, flat = started[name]
        assert (namespace, executable, package) == ("lab_arm", name, "mile_ros")
        # what `mile-ros collect` passes to the node, after validation of every value
        assert flat == params.resolve(name, [], overrides[name]), name
        assert params.resolve(name, [], flat) == flat   # and it is valid as it stands


def test_lockstep_sim_lets_the_arbiter_wait_for_a_slow_policy():
    lockstep = collect.node_overrides(True, False, "runs/x", 1, 2, realtime_factor=0.0)
    assert lockstep["arbiter"]["a_r_timeout_s"] == collect.LOCKSTEP_A_R_TIMEOUT_S
    arm = params.resolve("arm", [], lockstep["arm"])
    assert 0 < collect.LOCKSTEP_A_R_TIMEOUT_S < arm["lockstep_timeout_s"]
    for rate in (None, 1.0):   # the wall clock and the real robot keep one control period
        over = collect.node_overrides(True, False, "x", 1, 2, rate)
        assert "a_r_timeout_s" not in over["arbiter"]
    assert "a_r_timeout_s" not in collect.node_overrides(False, False, "x", 1, 2, 0.0)["arbiter"]
    assert params.resolve("arbiter")["a_r_timeout_s"] == 0.0


def test_mile_ros_collect_command_lines_match_the_launch_node_names(tmp_path):
    graph = collect.Graph(collect.graph_nodes(True, True), "lab_arm", tmp_path / "p.yaml",
                          tmp_path)
    for name in graph.nodes:
        cmd = graph.command(name)
        assert cmd[1:3] == ["-m", f"mile_ros.nodes.{name}"]
        assert ["-r", "__ns:=/lab_arm", "-r", f"__node:={name}"] == cmd[4:8]
        assert cmd[-2:] == ["--params-file", str(tmp_path / "p.yaml")]


def test_defaults_start_the_real_robot_graph(launch_file):
    started = evaluate(launch_file.generate_launch_description(), {})
    assert "joystick" in started and "sim_human" not in started and "camera" not in started
    assert started["arm"][3]["backend"] == "interbotix"
    assert started["arbiter"][3]["episode_buttons"] is True    # episodes from the controller
    assert started["arbiter"][3]["joy_sync"] is False
    assert started["arm"][0] == "wx250s"


def test_arm_exit_shuts_the_launch_down(launch_file):
    run = LaunchRun(launch_file.generate_launch_description(), {"sim": "true"})
    run.process_exited("arm", 0)
    assert run.shutdown_reasons == ["the arm finished its episodes"]
    assert run.return_code == 0


@pytest.mark.parametrize("returncode", [2, 1, -11])
def test_a_failing_arm_is_reported_and_the_launch_exits_non_zero(launch_file, returncode):
    run = LaunchRun(launch_file.generate_launch_description(), {"sim": "false"})
    run.process_exited("arm", returncode)   # e.g. 2: interbotix_xs_modules is not installed
    assert run.return_code == 1
    errors = [text for level, text in run.log if level == "ERROR"]
    assert errors and f"exit status {returncode}" in errors[0] and "arm" in errors[0]
    assert (len(run.shutdown_reasons) == 1
            and f"exit status {returncode}" in run.shutdown_reasons[0])
    assert "finished its episodes" not in run.shutdown_reasons[0]


def test_an_arm_stopped_by_the_shutdown_does_not_fail_the_launch(launch_file):
    run = LaunchRun(launch_file.generate_launch_description(), {"sim": "false"})
    run.shutdown("ctrl-c was pressed")
    run.process_exited("arm", -15)   # SIGTERM, 5 s after SIGINT
    assert run.return_code == 0
    assert any("exit status -15" in text for _, text in run.log)


@pytest.mark.parametrize("distro", DISTROS)
@pytest.mark.parametrize("name, value", [
    ("sim", "maybe"), ("sim", "yes"), ("camera", "on"), ("episodes", "2.5"), ("episodes", "-1"),
    ("iteration", "x"), ("iteration", ""), ("realtime_factor", "-1"),
    ("realtime_factor", "fast"), ("realtime_factor", "nan")])
def test_a_bad_argument_is_refused_before_any_node_starts(launch_file, distro, name, value):
    run = LaunchRun(launch_file.generate_launch_description(), {"sim": "true", name: value},
                    distro)
    assert run.started == {}, f"{name}:={value} started {list(run.started)}"
    assert run.return_code == 1
    assert f"{name}" in str(run.error) and f'"{value}"' in str(run.error)


def _choices(description, name):
    return next(e.choices for e in description.entities
                if isinstance(e, DeclareLaunchArgument) and e.name == name)


@pytest.mark.parametrize("distro", DISTROS)
@pytest.mark.parametrize("name", ["sim", "camera"])
def test_every_offered_bool_spelling_works_on_every_distro(launch_file, distro, name):
    description = launch_file.generate_launch_description()
    choices = _choices(description, name)
    assert {"true", "false"} <= set(choices)
    for text in choices:
        canonical = "true" if text.lower() in ("true", "1") else "false"
        assert text.lower() in ("true", "1", "false", "0"), text
        other = {"camera": "true"} if name == "sim" else {"sim": "true"}
        assert (evaluate(description, {name: text, **other}, distro)
                == evaluate(description, {name: canonical, **other}, distro)), text


def _parameter_files(description):
    return {layer for e in description.entities if isinstance(e, Node)
            for layer in e.parameters if isinstance(layer, (str, Path))}


def test_no_parameter_file_is_left_in_the_temp_dir(launch_file, tmp_path, monkeypatch):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    files = set()
    for _ in range(3):     # three launches share one file, kept in the user's cache
        files |= _parameter_files(launch_file.generate_launch_description())
    assert list(tmp.iterdir()) == []
    assert len(files) == 1
    (path,) = files
    assert Path(path).parent == tmp_path / "cache" / "mile_ros"
    assert [p.name for p in Path(path).parent.iterdir()] == [Path(path).name]


def test_a_damaged_cached_parameter_file_is_rewritten(launch_file):
    (path,) = _parameter_files(launch_file.generate_launch_description())
    Path(path).write_text("garbage: [")
    assert _parameter_files(launch_file.generate_launch_description()) == {path}
    assert evaluate(launch_file.generate_launch_description(), {"sim": "true"})   # reads it


def test_without_a_writable_cache_the_file_goes_to_a_per_user_temp_folder(
        launch_file, tmp_path, monkeypatch):
    (tmp_path / "not_a_folder").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not_a_folder"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    (path,) = _parameter_files(launch_file.generate_launch_description())
    assert Path(path).parent == tmp_path / f"mile_ros-{os.getuid()}"
    assert _parameter_files(launch_file.generate_launch_description()) == {path}


# --- the stand-in follows upstream ----------------------------------------------------------
def _node(name, **parameters):
    return Node(package="p", executable=name, name=name, namespace="ns", parameters=[parameters])


def test_stand_in_starts_nodes_in_order_and_a_late_bad_value_leaves_the_early_ones():
    bad = ParameterValue(LaunchConfiguration("n"), value_type=int)
    run = LaunchRun(LaunchDescription([
        DeclareLaunchArgument("n", default_value="1"), _node("first"), _node("second", n=bad),
        _node("third")]), {"n": "2.5", "typo": "x"})   # an undeclared argument: no complaint
    assert list(run.started) == ["first"]
    assert run.return_code == 1 and "invalid literal for int()" in run.log[-1][1]
    assert run.shutdown_reasons == [run.log[-1][1]]


def test_stand_in_choices_refuse_before_anything_starts():
    description = LaunchDescription([
        _node("first"), DeclareLaunchArgument("b", default_value="x", choices=["x", "y"])])
    run = LaunchRun(description, {"b": "z"})
    assert list(run.started) == ["first"] and 'Argument "b" provided value "z"' in str(run.error)
    with pytest.raises(RuntimeError, match="not in provided choices"):
        DeclareLaunchArgument("b", default_value="z", choices=["x", "y"])


@pytest.mark.parametrize("distro, text, value", [
    ("humble", "true", True), ("humble", "False", False), ("humble", "1", ValueError),
    ("jazzy", "1", True), ("rolling", "0", False), ("jazzy", "maybe", ValueError)])
def test_stand_in_bool_coercion_per_distro(distro, text, value):
    if value is ValueError:
        with pytest.raises(ValueError):
            coerce_to_type(text, bool, distro)
    else:
        assert coerce_to_type(text, bool, distro) is value


def test_stand_in_numbers_are_read_with_int_and_float():
    assert coerce_to_type(" 7", int, "humble") == 7
    with pytest.raises(ValueError):
        coerce_to_type("2.5", int, "jazzy")
    assert coerce_to_type("2", float, "humble") == 2.0
