"""Parameters: the shipped YAML is the only source of names, types and defaults."""
import subprocess
import sys

import pytest
import yaml

from mile_ros import params
from mile_ros.params import ConfigError


def test_shipped_file_has_every_node():
    nodes = params.defaults()
    for name in ("arm", "camera", "joystick", "arbiter", "policy_server", "recorder", "sim_human"):
        assert name in nodes and nodes[name], name


def test_resolve_layers_and_coerces_int_to_float(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text(yaml.safe_dump({"arm": {"ros__parameters": {"control_rate_hz": 30}}}))
    values = params.resolve("arm", [f], {"seed": 7})
    assert values["control_rate_hz"] == 30.0 and isinstance(values["control_rate_hz"], float)
    assert values["seed"] == 7
    assert values["backend"] == params.defaults()["arm"]["backend"]


def test_unknown_parameter_names_node_parameter_and_file(tmp_path):
    f = tmp_path / "typo.yaml"
    f.write_text(yaml.safe_dump({"arm": {"ros__parameters": {"control_rate": 30.0}}}))
    with pytest.raises(ConfigError) as e:
        params.resolve("arm", [f])
    assert "control_rate" in str(e.value) and "arm" in str(e.value) and str(f) in str(e.value)


def test_wrong_type_is_refused():
    with pytest.raises(ConfigError, match="control_rate_hz.*must be float"):
        params.resolve("arm", overrides={"control_rate_hz": "fast"})
    with pytest.raises(ConfigError, match="seed.*must be int"):
        params.resolve("arm", overrides={"seed": 1.5})


def test_nested_parameters_flatten_to_dotted_names():
    arbiter = params.defaults()["arbiter"]
    assert "buttons.takeover" in arbiter and "axes.dx" in arbiter


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        params.read_param_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("arm: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        params.read_param_file(bad)
    nosection = tmp_path / "nosection.yaml"
    nosection.write_text(yaml.safe_dump({"arm": {"control_rate_hz": 1.0}}))
    with pytest.raises(ConfigError, match="ros__parameters"):
        params.read_param_file(nosection)


def test_ros_params_file_round_trip(tmp_path):
    written = params.ros_params_file({"arm": params.resolve("arm")}, tmp_path / "out.yaml")
    assert params.read_param_file(written)["arm"] == params.resolve("arm")


def _declare_in_subprocess(ros_args):
    """Run rclpy's own parameter parsing in a fresh process and declare through params.py."""
    code = (
        "import sys, rclpy\n"
        "from rclpy.node import Node\n"
        "from mile_ros import params\n"
        "rclpy.init(args=['--ros-args'] + sys.argv[1:])\n"
        "node = Node('arm', automatically_declare_parameters_from_overrides=True)\n"
        "try:\n"
        "    v = params.declare_node_parameters(node)\n"
        "    print('OK', v['control_rate_hz'], node.get_parameter('seed').value)\n"
        "except params.ConfigError as e:\n"
        "    print('ERR', e)\n"
        "rclpy.shutdown()\n")
    out = subprocess.run([sys.executable, "-c", code, *ros_args], capture_output=True,
                         text=True, timeout=60)
    return out.stdout.strip()


def test_rclpy_node_declares_shipped_parameters(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({"/**/arm": {"ros__parameters": {"control_rate_hz": 50.0}}}))
    assert _declare_in_subprocess(["--params-file", str(f)]) == "OK 50.0 0"
    out = _declare_in_subprocess(["-p", "rate:=3.0"])
    assert out.startswith("ERR") and "'rate'" in out


def test_number_given_for_a_string_parameter_becomes_a_string():
    # `ros2 run ... -p device:=0` types the value as an int; the camera's device is a string
    assert params.resolve("camera", overrides={"device": 0})["device"] == "0"


def test_control_rate_is_declared_once_and_shared(tmp_path):
    """The arm owns control_rate_hz; the arbiter and recorder take it unless they set their own."""
    shipped = yaml.safe_load(params.default_file().read_text())
    assert [n for n, s in shipped.items() if "control_rate_hz" in s["ros__parameters"]] == ["arm"]
    assert not any("action_names" in shipped[n]["ros__parameters"] for n in ("arm", "recorder"))
    f = tmp_path / "lab.yaml"
    f.write_text(yaml.safe_dump({"arm": {"ros__parameters": {"control_rate_hz": 30.0}}}))
    assert params.resolve("arbiter", [f])["control_rate_hz"] == 30.0
    assert params.resolve("recorder", [f])["control_rate_hz"] == 30.0
    assert params.resolve("arbiter")["control_rate_hz"] == 20.0
    assert params.resolve("arbiter", [f], {"control_rate_hz": 10.0})["control_rate_hz"] == 10.0


def test_executor_is_one_of_its_values(tmp_path):
    """The control path's `executor` (arm, arbiter): auto | events | single, nothing else."""
    for node in ("arm", "arbiter"):
        assert params.resolve(node)["executor"] == "auto"
        assert params.resolve(node, overrides={"executor": "single"})["executor"] == "single"
    f = tmp_path / "lab.yaml"
    f.write_text(yaml.safe_dump({"arbiter": {"ros__parameters": {"executor": "multi"}}}))
    with pytest.raises(ConfigError, match=f"{f}: parameter 'executor' of node 'arbiter' must be "
                                          "one of auto, events, single, got 'multi'"):
        params.resolve("arbiter", [f])
