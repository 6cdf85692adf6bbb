"""ament_python package that also installs with pip (`pip install -e .[sim,bench]`)."""
import ast
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "mile_ros"


def node_names() -> list[str]:
    """Return `NODES` of mile_ros/nodes/__init__.py, the one list of the package's nodes.

    It is read, not imported: setup.py must not import the package.
    """
    tree = ast.parse((Path(__file__).parent / PACKAGE / "nodes" / "__init__.py").read_text())
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and [t.id for t in stmt.targets] == ["NODES"]:
            return list(ast.literal_eval(stmt.value))
    raise RuntimeError("mile_ros/nodes/__init__.py defines no NODES")


NODES = node_names()

setup(
    name="mile-ros",
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, PACKAGE + ".*"]),
    package_data={PACKAGE + ".description": ["*.yaml"]},   # the wx250s kinematics facts
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/launch", glob("launch/*.launch.py")),
        ("share/" + PACKAGE + "/config", glob("config/*.yaml")),
    ],
    python_requires=">=3.10",
    # torch is pinned by the set-up script (.ci/setup) so that pip takes the CPU wheel; ROS 2
    # Python packages come from the ROS distribution, or from PyPI through the `ros` extra.
    install_requires=["numpy", "pyyaml", "tqdm", "matplotlib", "scipy", "rosbags>=0.11,<0.12",
                      "opencv-python-headless", "pygame", "mujoco"],
    extras_require={
        "ros": ["ros-rclpy", "ros-rmw-fastrtps-cpp", "ros-std-msgs", "ros-sensor-msgs",
                "ros-geometry-msgs"],
        "bench": ["metaworld", "packaging", "gymnasium", "box2d"],
        "test": ["pytest", "ruff>=0.17,<0.18"],
    },
    zip_safe=True,
    maintainer="mile_ros developers",
    description="MILE intervention learning on an Interbotix WidowX 250 6DOF with ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [f"{n} = {PACKAGE}.nodes.{n}:main" for n in NODES]
        + ["mile-ros = mile_ros.cli:main"],
    },
)
