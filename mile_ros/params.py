"""Node parameters from `config/*.yaml` (ROS 2 `node_name: ros__parameters:` form).

The shipped `config/collect.yaml` is the single source of truth: it names every parameter of every
node, and the type of its default is the parameter's type. A user file or command-line override
may only change values; an unknown name or a value of the wrong type is a `ConfigError` that names
the node, the parameter and the file it came from.

ROS-free: `resolve()` works on plain dicts, so `mile-ros collect` validates the configuration
before it starts any process, and the nodes call `declare_node_parameters()` to do the same
through rclpy.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml

DEFAULT_FILE = "collect.yaml"
# Values several nodes need, declared once in the YAML under the node that owns them:
# {(node, parameter): (owner, owner's parameter)}. Unless a file or override sets it for the node
# itself, the node gets the owner's value from the same files.
SHARED = {("arbiter", "control_rate_hz"): ("arm", "control_rate_hz"),
          ("recorder", "control_rate_hz"): ("arm", "control_rate_hz"),
          ("sim_human", "control_rate_hz"): ("arm", "control_rate_hz")}
# The executors a control-path node can spin on (mile_ros.nodes._runtime.executor_factory).
EXECUTORS = ("auto", "events", "single")
# The simulated person's belief about the robot (sim_human mental_model; sim/person_driver.py).
MENTAL_MODELS = ("initial", "policy")
# String parameters with a fixed set of values: {(node, parameter): the values}.
CHOICES = {("arbiter", "executor"): EXECUTORS, ("arm", "executor"): EXECUTORS,
           ("policy_server", "executor"): EXECUTORS,
           ("sim_human", "mental_model"): MENTAL_MODELS}


class ConfigError(ValueError):
    """A configuration problem a person must fix; the message names what and where."""


def config_dir() -> Path:
    """Where the shipped YAML lives: the ament share dir, the pip prefix, or the source tree."""
    candidates = []
    try:  # a colcon workspace or a ROS distribution
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("mile_ros")) / "config")
    except Exception:  # noqa: BLE001 - ament index absent or package not indexed
        pass
    candidates.append(Path(__file__).resolve().parents[1] / "config")  # source / editable install
    candidates.append(Path(sys.prefix) / "share" / "mile_ros" / "config")  # pip data_files
    for c in candidates:
        if (c / DEFAULT_FILE).is_file():
            return c
    raise ConfigError(f"cannot find the shipped {DEFAULT_FILE}; looked in: "
                      + ", ".join(str(c) for c in candidates))


def default_file() -> Path:
    return config_dir() / DEFAULT_FILE


def _flatten(prefix: str, value: Any, out: dict) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def read_param_file(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """{node_name: {flat.param.name: value}} from a ROS 2 parameter file."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"parameter file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping of node names, got {type(doc).__name__}")
    nodes: dict[str, dict[str, Any]] = {}
    for node, section in doc.items():
        name = str(node).strip("/").split("/")[-1]  # '/robot/arm' or '/**' style keys
        if not isinstance(section, dict) or "ros__parameters" not in section:
            raise ConfigError(f"{path}: section '{node}' has no 'ros__parameters' mapping")
        flat: dict[str, Any] = {}
        _flatten("", section["ros__parameters"] or {}, flat)
        nodes.setdefault(name, {}).update(flat)
    return nodes


def with_shared(nodes: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`nodes` with every SHARED parameter filled in from its owner where it is not set."""
    out = {n: dict(v) for n, v in nodes.items()}
    for (node, name), (owner, owner_name) in SHARED.items():
        if node in out and owner_name in out.get(owner, {}):
            out[node].setdefault(name, out[owner][owner_name])
    return out


def defaults() -> dict[str, dict[str, Any]]:
    """Return the shipped parameters of every node, SHARED ones filled in."""
    return with_shared(read_param_file(default_file()))


def _type_name(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        inner = {_type_name(x) for x in v}
        if inner <= {"int", "float"} and "float" in inner:
            return "float[]"
        return (inner.pop() + "[]") if len(inner) == 1 else "list"
    return type(v).__name__


def coerce(node: str, name: str, value: Any, default: Any, source: str) -> Any:
    """Check `value` against the type of `default` and CHOICES; ints are accepted as floats."""
    value = _coerce_type(node, name, value, default, source)
    allowed = CHOICES.get((node, name))
    if allowed is not None and value not in allowed:
        raise ConfigError(f"{source}: parameter '{name}' of node '{node}' must be one of "
                          f"{', '.join(allowed)}, got {value!r}")
    return value


def _coerce_type(node: str, name: str, value: Any, default: Any, source: str) -> Any:
    want, got = _type_name(default), _type_name(value)
    if want == got:
        return value
    if want == "float" and got == "int":
        return float(value)
    if want == "string" and got in ("int", "float"):  # `-p device:=0` arrives as an int
        return str(value)
    if want == "float[]" and got in ("int[]", "float[]"):
        return [float(x) for x in value]
    if want.endswith("[]") and value == []:
        return []
    raise ConfigError(f"{source}: parameter '{name}' of node '{node}' must be {want}, "
                      f"got {value!r} ({got})")


def resolve(node: str, files: list[str | os.PathLike] = (), overrides: dict | None = None,
            ) -> dict[str, Any]:
    """Defaults for `node`, updated from parameter files then `overrides`, all validated."""
    base = defaults()
    if node not in base:
        raise ConfigError(f"unknown node '{node}'; known: {', '.join(sorted(base))}")
    params = dict(base[node])
    layers = [(str(f), read_param_file(f).get(node, {})) for f in files]
    layers.append(("command line", overrides or {}))
    for source, values in layers:
        for name, value in values.items():
            if name not in params:
                raise ConfigError(f"{source}: unknown parameter '{name}' for node '{node}'; "
                                  f"known: {', '.join(sorted(params))}")
            params[name] = coerce(node, name, value, base[node][name], source)
    set_here = {name for _, values in layers for name in values}
    for (shared_node, name), (owner, owner_name) in SHARED.items():
        if shared_node == node and name not in set_here:
            params[name] = resolve(owner, files)[owner_name]
    return params


def _is_builtin(name: str) -> bool:
    """Parameters rclpy declares on every node."""
    return name in ("use_sim_time", "start_type_description_service") or name.startswith(
        "qos_overrides.")


def declare_node_parameters(node, node_name: str | None = None) -> dict[str, Any]:
    """Declare every shipped parameter of this node on an rclpy node and return their values.

    The node must be created with `automatically_declare_parameters_from_overrides=True` so that
    names given in a parameter file or on the command line can be checked against the shipped set.
    """
    node_name = node_name or node.get_name()
    base = defaults()
    if node_name not in base:
        raise ConfigError(f"no parameters are shipped for node '{node_name}'")
    shipped = base[node_name]
    given = {name: p.value for name, p in node._parameters.items()  # noqa: SLF001
             if not _is_builtin(name)}
    for name in given:
        if name not in shipped:
            raise ConfigError(f"unknown parameter '{name}' for node '{node_name}' "
                              f"(from --ros-args / params file); "
                              f"known: {', '.join(sorted(shipped))}")
    values = {}
    for name, default in shipped.items():
        if name in given:
            values[name] = coerce(node_name, name, given[name], default, "--ros-args")
        else:
            node.declare_parameter(name, default)
            values[name] = default
    return values


def ros_params_file(node_values: dict[str, dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write {node: {flat.name: value}} back as a ROS 2 parameter file (flat dotted names)."""
    path = Path(path)
    doc = {f"/**/{n}": {"ros__parameters": dict(v)} for n, v in node_values.items()}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path
