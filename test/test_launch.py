"""launch/collect.launch.py under a minimal stand-in of `launch` / `launch_ros` (neither can be
installed here): for every combination of arguments it must start exactly the nodes, with exactly
the parameters, that `mile-ros collect` starts."""
import importlib.util
import sys
import types
from pathlib import Path

import pytest
import yaml

from mile_ros import params

from mile_ros.tools import collect

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = ROOT / "launch" / "collect.launch.py"


# --- the stand-in ----------------------------------------------------------------------------
class Context:
    def __init__(self, configurations):
        self.launch_configurations = dict(configurations)


def perform(value, context):
    """Evaluate a substitution, a list of them (concatenated), or a plain value (as is)."""
    if isinstance(value, (list, tuple)) and any(hasattr(v, "perform") for v in value):
        return "".join(str(perform(v, context)) for v in value)
    if hasattr(value, "perform"):
        return value.perform(context)
    return value


class LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        if self.name not in context.launch_configurations:
            raise KeyError(f"launch argument '{self.name}' was never declared")
        return context.launch_configurations[self.name]


class PythonExpression:
    def __init__(self, expression):
        self.expression = expression

    def perform(self, context):
        return str(eval(perform(self.expression, context)))  # as launch does


def _truthy(text):
    text = str(text).strip().lower()
    if text not in ("true", "false", "1", "0"):
        raise ValueError(f"condition expects true/false/1/0, got {text!r}")
    return text in ("true", "1")


class IfCondition:
    def __init__(self, predicate):
        self.predicate = predicate

    def evaluate(self, context):
        return _truthy(perform(self.predicate, context))


class UnlessCondition(IfCondition):
    def evaluate(self, context):
        return not super().evaluate(context)


class ParameterValue:
    def __init__(self, value, *, value_type=None):
        self.value, self.value_type = value, value_type

    def perform(self, context):
        text = perform(self.value, context)
        if self.value_type is str:
            return str(text)
        value = yaml.safe_load(text)
        if self.value_type is not None and not isinstance(value, self.value_type):
            raise TypeError(f"{text!r} is not a {self.value_type.__name__}")
        return value


class DeclareLaunchArgument:
    def __init__(self, name, default_value=None, description=""):
        self.name, self.default_value, self.description = name, default_value, description


class Node:
    def __init__(self, *, package, executable, name=None, namespace=None, parameters=(),
                 condition=None, output=None, emulate_tty=False, arguments=None, remappings=None):
        self.package, self.executable, self.name = package, executable, name
        self.namespace, self.parameters, self.condition = namespace, list(parameters), condition
        self.remappings = remappings


class Shutdown:
    def __init__(self, reason=""):
        self.reason = reason


class EmitEvent:
    def __init__(self, *, event):
        self.event = event


class OnProcessExit:
    def __init__(self, *, target_action, on_exit):
        self.target_action, self.on_exit = target_action, on_exit


class RegisterEventHandler:
    def __init__(self, event_handler):
        self.event_handler = event_handler


class LaunchDescription:
    def __init__(self, entities):
        self.entities = list(entities)


def _module(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    return m


@pytest.fixture
def launch_file(monkeypatch):
    """Load the launch file with the stand-in modules injected."""
    stand_ins = {
        "launch": _module("launch", LaunchDescription=LaunchDescription),
        "launch.actions": _module("launch.actions", DeclareLaunchArgument=DeclareLaunchArgument,
                                  EmitEvent=EmitEvent, RegisterEventHandler=RegisterEventHandler),
        "launch.conditions": _module("launch.conditions", IfCondition=IfCondition,
                                     UnlessCondition=UnlessCondition),
        "launch.event_handlers": _module("launch.event_handlers", OnProcessExit=OnProcessExit),
        "launch.events": _module("launch.events", Shutdown=Shutdown),
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


def evaluate(description, arguments):
    """{node name: (namespace, executable, flat parameters)} for the given launch arguments."""
    declared = {e.name: e.default_value for e in description.entities
                if isinstance(e, DeclareLaunchArgument)}
    unknown = set(arguments) - set(declared)
    assert not unknown, f"arguments not declared by the launch file: {unknown}"
    context = Context({**declared, **arguments})
    started = {}
    for e in description.entities:
        if not isinstance(e, Node) or (e.condition and not e.condition.evaluate(context)):
            continue
        flat = {}
        for layer in e.parameters:
            raw = {}
            if isinstance(layer, str):   # a parameter file, as the node's rcl would read it
                doc = yaml.safe_load(Path(layer).read_text())
                matching = [k for k in doc if k in (f"/**/{e.name}", "/**")]
                assert matching, f"{layer} has no section that matches a namespaced {e.name}"
                for key in matching:
                    flatten("", doc[key]["ros__parameters"], raw)
            else:
                flatten("", layer, raw)
            flat.update({k: perform(v, context) for k, v in raw.items()})
        assert e.name not in started, f"node {e.name} started twice"
        started[e.name] = (perform(e.namespace, context), e.executable, e.package, flat)
    return started


# --- the tests ------------------------------------------------------------------------------
def test_declares_the_documented_arguments(launch_file):
    description = launch_file.generate_launch_description()
    names = {e.name for e in description.entities if isinstance(e, DeclareLaunchArgument)}
    assert names == {"robot_name", "sim", "camera", "out", "iteration", "episodes"}


@pytest.mark.parametrize("sim", [True, False])
@pytest.mark.parametrize("camera", [True, False])
def test_same_nodes_and_parameters_as_mile_ros_collect(launch_file, sim, camera):
    arguments = {"robot_name": "lab_arm", "sim": str(sim).lower(), "camera": str(camera).lower(),
                 "out": "runs/x", "iteration": "3", "episodes": "7"}
    started = evaluate(launch_file.generate_launch_description(), arguments)

    expected_nodes = collect.graph_nodes(sim, camera)
    assert sorted(started) == sorted(expected_nodes)
    overrides = collect.node_overrides(sim, camera, "runs/x", 3, 7)
    for name in expected_nodes:
        namespace, executable, package, flat = started[name]
        assert (namespace, executable, package) == ("lab_arm", name, "mile_ros")
        # what `mile-ros collect` passes to the node, after validation of every value
        assert flat == params.resolve(name, [], overrides[name]), name
        assert params.resolve(name, [], flat) == flat   # and it is valid as it stands


def test_mile_ros_collect_command_lines_match_the_launch_node_names(tmp_path):
    graph = collect.Graph(collect.graph_nodes(True, True), "lab_arm", tmp_path / "p.yaml", tmp_path)
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
    description = launch_file.generate_launch_description()
    handlers = [e.event_handler for e in description.entities if isinstance(e, RegisterEventHandler)]
    assert len(handlers) == 1
    assert handlers[0].target_action.name == "arm"
    assert isinstance(handlers[0].on_exit[0].event, Shutdown)


def test_bad_boolean_argument_is_refused(launch_file):
    with pytest.raises((ValueError, TypeError)):  # not silently read as false
        evaluate(launch_file.generate_launch_description(), {"sim": "maybe"})
